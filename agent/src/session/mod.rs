//! One debug session: prepare it (before the WebSocket upgrade, so problems become HTTP
//! errors), relay its process's stdio, and clean up.
//!
//! A debug container's main process holds it (`kdbg-init hold`); a session is a process exec'd
//! into it (`kdbg-init run`), so a retained container outlives its sessions and `attach` opens
//! new ones in it. When a session ends before its process does (the client left or vanished,
//! or it was idle too long), the process gets SIGTERM, then SIGKILL after
//! `lifecycle.stopGrace`. A container is removed when its last session ends, unless retained.

mod container;
mod live;
mod run;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kdbg_api::DebugRequest;
use kdbg_recordings::{Header, Metadata};
use kdbg_runtimes::{Error, ProcessSpec, Runtime, Stdio, Target};
use tracing::{debug, info, warn};

use crate::Agent;
use crate::recordings::Opened;
use container::{Found, create, reopen, user_of};

pub use live::{Entry, Live, NoScreen};
pub use run::{Summary, run};

/// SIGTERM.
const SIGTERM: i32 = 15;
/// How long, past its grace, a stopped session's process may take to be gone.
const STOP_SLACK: Duration = Duration::from_secs(5);
/// How soon a stopping session's process is sent SIGTERM again while it runs: a process
/// started a moment ago may not be there yet to take the first one (Docker answers the start
/// of an exec before the process runs). The pause doubles up to [`RESIGNAL_MAX`].
const RESIGNAL: Duration = Duration::from_millis(200);
const RESIGNAL_MAX: Duration = Duration::from_secs(2);

/// A new session ID: unique on this node for the agent's life, and unlikely to repeat across
/// restarts (it starts from the clock).
pub fn new_session_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{:04x}", now.as_millis(), n & 0xffff)
}

/// Why a session could not be prepared: an HTTP status and what to tell the user.
#[derive(Debug)]
pub struct Refusal {
    /// The HTTP status code.
    pub code: u16,
    /// The message, with its causes.
    pub message: String,
    /// The `metav1.Status` reason, where a client acts on it ([`kdbg_api::reason`]); else
    /// the status code's name.
    pub reason: Option<&'static str>,
}

impl Refusal {
    /// A refusal with `code` and `message`.
    pub fn new(code: u16, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
            reason: None,
        }
    }

    /// The decision the audit log records: `image absent` when the image is not on the node
    /// (the plugin's first try under IfNotPresent, which it follows with a pull), else
    /// `denied`.
    pub fn decision(&self) -> &'static str {
        if self.reason == Some(kdbg_api::reason::IMAGE_ABSENT) {
            "image absent"
        } else {
            "denied"
        }
    }
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Refusal {
        let code = match &e {
            Error::TargetNotFound { .. } | Error::ContainerNotFound { .. } => 404,
            Error::TargetNotRunning { .. } | Error::NameTaken { .. } => 409,
            Error::WrongRuntime { .. } | Error::ImageAbsent { .. } => 400,
            Error::Pull { .. } => 502,
            Error::Connect { .. } => 503,
            Error::Call { .. } | Error::TargetImage { .. } => 500,
        };
        let reason = match e {
            Error::ImageAbsent { .. } => Some(kdbg_api::reason::IMAGE_ABSENT),
            Error::TargetNotRunning { .. } => Some(kdbg_api::reason::TARGET_NOT_RUNNING),
            _ => None,
        };
        Refusal {
            reason,
            ..Refusal::new(code, crate::chain(&e))
        }
    }
}

/// A started session process, not yet relayed. Dropping it (the client went away before the
/// upgrade) stops the process and removes the container if that was its only session and it
/// is not retained, so no path leaks one.
pub struct Prepared {
    agent: Arc<Agent>,
    /// The container's ID and name.
    container: String,
    name: String,
    retain: bool,
    target: Target,
    session: String,
    /// The process's runtime ID.
    process: String,
    stdio: Option<Stdio>,
    /// Whether the session has a terminal.
    tty: bool,
    /// The client's terminal size at the start, if it said.
    size: Option<kdbg_relay::TerminalSize>,
    /// The recording's file, if the session is recorded.
    recording: Option<Opened>,
    /// Who debugs what: for the recording and the live view.
    header: Header,
    /// Things to tell the user.
    pub warnings: Vec<String>,
    armed: bool,
}

impl Prepared {
    /// The container's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the agent records the session.
    pub fn recorded(&self) -> bool {
        self.recording.is_some()
    }

    /// Where the agent records the session, if it does.
    pub fn recording_path(&self) -> Option<String> {
        self.recording
            .as_ref()
            .map(|r| r.path().display().to_string())
    }

    /// Ends the session: stops its process unless it ended, and removes the container when
    /// no session is left in it and it is not retained.
    async fn finish(mut self, process_ended: bool) {
        self.armed = false;
        end(
            &self.agent,
            &self.container,
            &self.session,
            &self.process,
            self.retain,
            process_ended,
        )
        .await;
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let agent = self.agent.clone();
        let (container, session, process) = (
            std::mem::take(&mut self.container),
            std::mem::take(&mut self.session),
            std::mem::take(&mut self.process),
        );
        let retain = self.retain;
        if tokio::runtime::Handle::try_current().is_ok() {
            let tracker = agent.tracker.clone();
            tracker.spawn(async move {
                end(&agent, &container, &session, &process, retain, false).await;
            });
        }
    }
}

/// Stops a session's process (unless it ended), forgets the session, and removes its
/// container if nothing else needs it.
async fn end(
    agent: &Agent,
    container: &str,
    session: &str,
    process: &str,
    retain: bool,
    process_ended: bool,
) {
    let runtime = &agent.runtime;
    if !process_ended {
        let grace = agent.lifecycle.stop_grace.0 + STOP_SLACK;
        let deadline = tokio::time::Instant::now() + grace;
        let waiting = runtime.wait(container, process);
        tokio::pin!(waiting);
        let mut pause = RESIGNAL;
        let mut warned = false;
        let ended = loop {
            // SIGTERM; kdbg-init sends SIGKILL after the grace, and takes a repeated SIGTERM
            // as the same request.
            if let Err(e) = runtime.signal(container, session, SIGTERM).await
                && !std::mem::replace(&mut warned, true)
            {
                warn!(container, error = %crate::chain(&e), "stopping the session's process");
            }
            let until = (tokio::time::Instant::now() + pause).min(deadline);
            match tokio::time::timeout_at(until, &mut waiting).await {
                Ok(ended) => break Some(ended),
                Err(_) if until >= deadline => break None,
                Err(_) => pause = (pause * 2).min(RESIGNAL_MAX),
            }
        };
        match ended {
            Some(Ok(code)) => debug!(container, code, "session process stopped"),
            Some(Err(e)) => {
                debug!(container, error = %crate::chain(&e), "waiting for the stopped process")
            }
            None => warn!(
                container,
                "session process still running {grace:?} after SIGTERM"
            ),
        }
    }
    let left = agent.live.remove(container, session);
    if retain {
        info!(
            container,
            "session over; the container is retained as asked"
        );
    } else if left == 0 {
        match runtime.remove(container).await {
            Ok(()) => debug!(container, "debug container removed"),
            Err(e) => warn!(container, error = %crate::chain(&e), "removing debug container"),
        }
    }
}

/// Prepares a session: in a new debug container, or (with `request.container`) in an
/// existing retained one. Everything that can go wrong because of the request goes wrong
/// here, before the upgrade. When the agent starts shutting down meanwhile (it removes the
/// containers it made, this one too), the refusal says so rather than what that broke.
pub async fn prepare(
    agent: &Arc<Agent>,
    request: &DebugRequest,
    session: &str,
) -> Result<Prepared, Refusal> {
    let prepared = prepare_unless_stopped(agent, request, session).await;
    match prepared {
        Err(_) if agent.shutdown.is_cancelled() => Err(Refusal::new(
            503,
            "the kubectl-debug agent on this node is shutting down; try again when it is back",
        )),
        other => other,
    }
}

async fn prepare_unless_stopped(
    agent: &Arc<Agent>,
    request: &DebugRequest,
    session: &str,
) -> Result<Prepared, Refusal> {
    let command = if request.command.is_empty() {
        agent.defaults.command.clone()
    } else {
        request.command.clone()
    };
    let mut process = ProcessSpec {
        session: session.to_owned(),
        command,
        tty: request.tty,
        stdin: request.stdin,
        stdout: request.stdout,
        stderr: request.stderr && !request.tty,
        grace: agent.lifecycle.stop_grace.0,
        target_pid: None,
        chroot: request.chroot,
    };
    let (found, recording) = match &request.container {
        None => {
            let target = request.joins().ok_or_else(|| {
                Refusal::new(
                    400,
                    "query parameter target (or node) is required for a new debug container",
                )
            })?;
            // The recording's file first: a session that must be recorded and cannot be is
            // refused before anything is created.
            let recording = agent
                .recordings
                .open(request, &target, session, &agent.node)?;
            (create(agent, request, target, session).await?, recording)
        }
        Some(name) => {
            let found = reopen(agent, request, name).await?;
            let recording = agent
                .recordings
                .open(request, &found.target, session, &agent.node)?;
            (found, recording)
        }
    };
    // `/target` and `--chroot` go through the target's main process, numbered as the pid
    // namespace the debug container shares with it numbers it: 1 in a namespace of its own,
    // its node PID in the node's (hostPID), another in a pod's shared one.
    process.target_pid = found
        .verified
        .as_ref()
        .and_then(|info| info.pid)
        .and_then(kdbg_runtimes::init::pid_in_own_namespace);
    agent.live.add(
        &Entry {
            id: &found.id,
            name: &found.name,
            retain: found.retain,
            namespace: request.pod_namespace.as_deref(),
            pod: request.pod_name.as_deref(),
            node_level: found.node_level.as_deref(),
        },
        session,
    );
    let header = header(agent, request, &found, session, &process.command);
    let mut prepared = Prepared {
        agent: agent.clone(),
        container: found.id,
        name: found.name,
        retain: found.retain,
        target: found.target,
        session: session.to_owned(),
        process: String::new(),
        stdio: None,
        tty: request.tty,
        size: request.size.filter(|_| request.tty),
        recording,
        header,
        warnings: found.warnings,
        armed: false,
    };
    match agent.runtime.exec(&prepared.container, &process).await {
        Ok(started) => {
            prepared.process = started.id;
            prepared.stdio = Some(started.stdio);
            prepared.armed = true;
            Ok(prepared)
        }
        Err(e) => {
            // No process runs: only the container may need removing.
            prepared.finish(true).await;
            Err(e.into())
        }
    }
}

/// The header of the session's recording and live view: who debugs what, where. The pod
/// and the target container are what the runtime's labels of the target say (the kubelet's),
/// else the target's ID; the request's `podContainer` is the client's word and is not used.
/// (With authentication, the request's pod was checked against those labels already.)
fn header(
    agent: &Agent,
    request: &DebugRequest,
    found: &Found,
    session: &str,
    command: &[String],
) -> Header {
    let label = |key: &str| {
        found
            .verified
            .as_ref()
            .and_then(|info| info.labels.get(key))
            .cloned()
    };
    let pod_labels =
        label(crate::admission::POD_NAMESPACE_LABEL).zip(label(crate::admission::POD_NAME_LABEL));
    let (namespace, pod) = match pod_labels {
        Some((namespace, pod)) => (Some(namespace), Some(pod)),
        None => (request.pod_namespace.clone(), request.pod_name.clone()),
    };
    let metadata = Metadata {
        pod,
        namespace,
        target: Some(
            label(crate::admission::CONTAINER_NAME_LABEL)
                .unwrap_or_else(|| found.target.to_string()),
        ),
        image: Some(found.image.clone()),
        user: Some(user_of(request).to_owned()),
        session_id: Some(session.to_owned()),
        node: Some(agent.node.clone()),
        node_level: found.node_level.clone(),
    };
    let mut env = BTreeMap::new();
    if request.tty {
        env.insert("TERM".to_owned(), "xterm".to_owned());
    }
    if let Some(shell) = command.first().filter(|c| c.ends_with("sh")) {
        env.insert("SHELL".to_owned(), shell.clone());
    }
    Header {
        timestamp: Some(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
        ),
        command: Some(command.join(" ")),
        title: metadata.title().or_else(|| {
            Some(format!(
                "{} by {}",
                metadata.target.as_deref().unwrap_or("?"),
                user_of(request)
            ))
        }),
        env,
        metadata,
        ..Header::new(0, 0)
    }
}
