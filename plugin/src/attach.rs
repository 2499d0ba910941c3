//! Carrying the user's terminal to a debug session: the session's preparation (the image
//! first, with progress), the terminal's raw mode and size, and the relay's client side over
//! the user's stdio. Every verb that opens a session (`POD`, `local`) comes through [`debug`].

use anyhow::Context as _;
use kdbg_api::{DebugRequest, PullPolicy, TargetRef};
use kdbg_relay::{ClientIo, Config, ExitStatus};

use crate::cli::{DebugOpts, SessionOpts};
use crate::client::{AgentClient, Session};
use crate::output::ThreadWriter;
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

/// Runs a debug session for `request` on the agent `client` reaches: makes sure the image is
/// there (showing the pull) unless the session is in an existing container, then opens the
/// session and carries the terminal until the remote command ends. Returns its exit status.
/// When the container is kept after the session, `kept` says (on stderr) how to come back to
/// it and how to remove it, given its name.
pub async fn debug(
    client: &AgentClient,
    mut request: DebugRequest,
    kept: &dyn Fn(&str) -> String,
) -> anyhow::Result<ExitStatus> {
    if request.container.is_none()
        && let Some(wanted) = pull::wanted(&request)
    {
        pull::run(client, &wanted).await?;
        // Present now: the session must not pull it again.
        request.pull_policy = PullPolicy::IfNotPresent;
    }
    let session = client.open_session(&request).await?;
    let name = session.container.clone();
    let status = carry(session, &request).await?;
    if (request.retain || request.container.is_some())
        && let Some(name) = name
    {
        eprintln!("{}", kept(&name));
    }
    Ok(status)
}

/// Carries the user's terminal (or pipes) over an opened session.
pub async fn carry(session: Session, request: &DebugRequest) -> anyhow::Result<ExitStatus> {
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
        stdin: request
            .stdin
            .then(|| Box::pin(tokio::io::stdin()) as kdbg_relay::session::BoxRead),
        stdout: Some(Box::pin(ThreadWriter::stdout())),
        stderr: (!request.tty).then(|| Box::pin(ThreadWriter::stderr()) as _),
        resize: if request.tty {
            Some(terminal::sizes().context("watching the terminal's size")?)
        } else {
            None
        },
        tap: None,
    };
    let done = kdbg_relay::attach(session.ws, session.protocol, io, &Config::default()).await?;
    Ok(done.outcome)
}

impl DebugOpts {
    /// The debug request these options make for `target`, with `-i`/`-t` decided as
    /// [`interactive`] says.
    pub fn request(self, target: TargetRef) -> DebugRequest {
        let (stdin, tty) = interactive(self.stdin, self.tty);
        DebugRequest {
            target: Some(target),
            container: None,
            image: self.image,
            command: self.command,
            stdin,
            stdout: true,
            stderr: !tty,
            tty,
            name: self.name,
            retain: self.retain,
            pull_policy: self.pull_policy,
            pod_namespace: None,
            pod_name: None,
            user: std::env::var("USER").ok().filter(|u| !u.is_empty()),
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
            image: None,
            command: self.command,
            stdin,
            stdout: true,
            stderr: !tty,
            tty,
            name: None,
            retain: false,
            pull_policy: PullPolicy::Never,
            pod_namespace: None,
            pod_name: None,
            user: std::env::var("USER").ok().filter(|u| !u.is_empty()),
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
