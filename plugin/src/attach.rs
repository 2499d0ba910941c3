//! Carrying the user's terminal to a debug session: the session's preparation (the image
//! first, with progress), the terminal's raw mode and size, and the relay's client side over
//! the user's stdio. Every verb that opens a session (`POD`, `local`) comes through [`debug`].

use std::path::Path;

use anyhow::Context as _;
use kdbg_agent::record::{self, Outcome, RecordOptions};
use kdbg_api::{DebugRequest, PullPolicy, TargetRef};
use kdbg_recordings::{Format, Header, Metadata};
use kdbg_relay::{ClientIo, Config, ExitStatus, Tap};

use crate::cli::{DebugOpts, SessionOpts};
use crate::client::{AgentClient, Refused, Session};
use crate::localio;
use crate::{pull, terminal};

/// Decides `-i`/`-t` like `kubectl exec`: on a terminal with neither flag, both; `-t` without
/// a terminal on stdin is dropped with a warning.
pub fn interactive(stdin: bool, tty: bool) -> (bool, bool) {
    let on_terminal = terminal::stdin_is_terminal();
    if !stdin && !tty {
        return (on_terminal, on_terminal);
    }
    if tty && !on_terminal {
        eprintln!("Unable to use a TTY - input is not a terminal or the right kind of file");
        return (stdin, false);
    }
    (stdin || tty, tty)
}

/// Opens the session of a new debug container whose image may need a pull, showing the pull's
/// progress. With `IfNotPresent` the session is opened with `Never` first: a present image
/// (the common case) costs no request more than the session; an absent one is refused with
/// [`kdbg_api::reason::IMAGE_ABSENT`] before anything is created, then pulled, and the
/// session opened again. `Always` pulls first.
pub(crate) async fn open_pulling(
    client: &AgentClient,
    request: &mut DebugRequest,
) -> anyhow::Result<Session> {
    if request.pull_policy == PullPolicy::IfNotPresent {
        let present = DebugRequest {
            pull_policy: PullPolicy::Never,
            ..request.clone()
        };
        match client.open_session(&present).await {
            Err(e) if Refused::image_absent(&e) => {}
            opened => return opened,
        }
    }
    if let Some(wanted) = pull::wanted(request) {
        pull::run(client, &wanted).await?;
    }
    // Present now: the session must not pull it again.
    request.pull_policy = PullPolicy::IfNotPresent;
    client.open_session(request).await
}

/// Runs a debug session for `request` on the agent `client` reaches: makes sure the image is
/// there (showing the pull) unless the session is in an existing container, then opens the
/// session and carries the terminal until the remote command ends. Returns its exit status.
/// When the container is kept after the session, `kept` says (on stderr) how to come back to
/// it and how to remove it, given its name. With `record_local`, the session is also recorded
/// in that file (asciicast v2), which must not exist yet.
pub async fn debug(
    client: &AgentClient,
    mut request: DebugRequest,
    record_local: Option<&Path>,
    kept: &dyn Fn(&str) -> String,
) -> anyhow::Result<ExitStatus> {
    // The file first: a session is not started for a recording that cannot be written.
    let recording = record_local
        .map(|path| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .map(|file| (file, path))
                .with_context(|| {
                    format!(
                        "creating {} for --record-local (it must not exist yet; choose another name)",
                        path.display()
                    )
                })
        })
        .transpose()?;
    let session = if request.container.is_none() && request.pull_policy != PullPolicy::Never {
        open_pulling(client, &mut request).await?
    } else {
        client.open_session(&request).await?
    };
    let name = session.container.clone();
    if let Some(node) = &session.recorded_on {
        eprintln!(
            "This session is recorded by the kubectl-debug agent on node {node} (session {}).",
            session.id.as_deref().unwrap_or("?")
        );
    }
    let recorder = recording.map(|(file, path)| {
        let tap = Tap::new(request.size);
        let options = RecordOptions {
            format: Format::V2,
            max_bytes: None,
            header: local_header(&request, &session),
            tty: request.tty,
            input: false,
            path: path.to_owned(),
        };
        let recorder = record::spawn(&tap, file, options, |_| {});
        (tap, recorder, path)
    });
    let (tap, recorder) = match recorder {
        Some((tap, Ok(thread), path)) => (Some(tap), Some((thread, path))),
        Some((_, Err(e), path)) => {
            return Err(e).with_context(|| format!("starting to record into {}", path.display()));
        }
        None => (None, None),
    };
    let status = carry(session, &request, tap).await;
    if let Some((thread, path)) = recorder {
        // The recorder ends with the session; it is on its own thread.
        let outcome = tokio::task::spawn_blocking(move || thread.join())
            .await
            .ok()
            .and_then(Result::ok);
        match outcome {
            Some(Outcome::Complete) => eprintln!("Recording saved to {}.", path.display()),
            Some(Outcome::Incomplete(why)) => {
                eprintln!(
                    "Warning: recording {} is incomplete: {why}.",
                    path.display()
                )
            }
            None => eprintln!(
                "Warning: recording {} is incomplete: its recorder failed.",
                path.display()
            ),
        }
    }
    let status = status?;
    if (request.retain || request.container.is_some())
        && let Some(name) = name
    {
        eprintln!("{}", kept(&name));
    }
    Ok(status)
}

/// The header of a `--record-local` recording.
fn local_header(request: &DebugRequest, session: &Session) -> Header {
    let metadata = Metadata {
        pod: request.pod_name.clone(),
        namespace: request.pod_namespace.clone(),
        target: request
            .pod_container
            .clone()
            .or_else(|| request.target.as_ref().map(ToString::to_string))
            .or_else(|| request.container.clone()),
        image: request.image.clone(),
        user: request.user.clone(),
        session_id: session.id.clone(),
        node: session.node.clone(),
        node_level: None,
    };
    let mut env = std::collections::BTreeMap::new();
    if request.tty {
        env.insert("TERM".to_owned(), "xterm".to_owned());
    }
    Header {
        timestamp: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs()),
        command: (!request.command.is_empty()).then(|| request.command.join(" ")),
        title: metadata.title(),
        env,
        metadata,
        ..Header::default()
    }
}

/// Carries the user's terminal (or pipes) over an opened session; `tap` shows it to a
/// recorder.
pub async fn carry(
    session: Session,
    request: &DebugRequest,
    tap: Option<Tap>,
) -> anyhow::Result<ExitStatus> {
    for warning in &session.warnings {
        eprintln!("Warning: {warning}");
    }
    // Raw mode for the session only; the guard restores the terminal on every way out.
    let _raw = if request.tty {
        Some(terminal::RawMode::enter().context("putting the terminal in raw mode")?)
    } else {
        None
    };
    let io = ClientIo {
        stdin: request.stdin.then(localio::stdin),
        stdout: Some(localio::stdout()),
        stderr: (!request.tty).then(localio::stderr),
        resize: if request.tty {
            Some(terminal::sizes().context("watching the terminal's size")?)
        } else {
            None
        },
        tap,
    };
    let done = kdbg_relay::attach(session.ws, session.protocol, io, &Config::default()).await?;
    Ok(done.outcome)
}

impl DebugOpts {
    /// The debug request these options make for `target`, with `-i`/`-t` decided as
    /// [`interactive`] says.
    pub fn request(self, target: TargetRef) -> DebugRequest {
        self.request_joining(Some(target), None)
    }

    /// The debug request these options make for `target`, or for node `node` itself
    /// (`node/NAME`).
    pub fn request_joining(self, target: Option<TargetRef>, node: Option<String>) -> DebugRequest {
        let (stdin, tty) = interactive(self.stdin, self.tty);
        DebugRequest {
            target,
            container: None,
            node,
            image: self.image,
            command: self.command,
            stdin,
            stdout: true,
            stderr: !tty,
            tty,
            name: self.name,
            retain: self.retain.unwrap_or(false),
            pull_policy: self.pull_policy.unwrap_or_default(),
            platform: self.platform,
            pod_namespace: None,
            pod_name: None,
            pod_container: None,
            user: std::env::var("USER").ok().filter(|u| !u.is_empty()),
            record: self.record.record.unwrap_or(false),
            profile: self.profile,
            chroot: self.chroot,
            // The terminal's size now: the process starts with it, and a recording's header.
            size: tty.then(terminal::size).flatten(),
        }
    }
}

impl SessionOpts {
    /// The request of a new session in existing debug container `name`.
    pub fn request(self, name: &str) -> DebugRequest {
        let (stdin, tty) = interactive(self.stdin, self.tty);
        DebugRequest {
            target: None,
            container: Some(name.to_owned()),
            node: None,
            image: None,
            command: self.command,
            stdin,
            stdout: true,
            stderr: !tty,
            tty,
            name: None,
            retain: false,
            pull_policy: PullPolicy::Never,
            platform: None,
            pod_namespace: None,
            pod_name: None,
            pod_container: None,
            user: std::env::var("USER").ok().filter(|u| !u.is_empty()),
            record: self.record.record.unwrap_or(false),
            profile: None,
            chroot: self.chroot,
            size: tty.then(terminal::size).flatten(),
        }
    }
}

/// What `kept` of [`debug`] says for a container of a pod.
pub fn kept_in_pod(pod: &str) -> impl Fn(&str) -> String + '_ {
    move |name| {
        format!(
            "Debug container {name} is kept, with its files. Come back with: kubectl-debug attach {pod} {name}\nRemove it with: kubectl-debug rm {pod} {name}"
        )
    }
}
