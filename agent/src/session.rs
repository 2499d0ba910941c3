//! One debug session: prepare it (before the WebSocket upgrade, so problems become HTTP
//! errors), relay its process's stdio, and clean up.
//!
//! A debug container's main process holds it (`kdbg-init hold`); a session is a process exec'd
//! into it (`kdbg-init run`), so a retained container outlives its sessions and `attach` opens
//! new ones in it. When a session ends before its process does (the client left or vanished,
//! or it was idle too long), the process gets SIGTERM, then SIGKILL after
//! `lifecycle.stopGrace`. A container is removed when its last session ends, unless retained.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kdbg_api::DebugRequest;
use kdbg_relay::session::{ExitFuture, ServerIo};
use kdbg_relay::{Config as RelayConfig, ExitStatus, Protocol, ServerEnd, Tap, WebSocketStream};
use kdbg_runtimes::{
    ContainerState, DebugSpec, Error, ProcessSpec, Runtime, Stdio, TargetRef, label,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::server::Agent;

/// SIGTERM.
const SIGTERM: i32 = 15;
/// How long, past its grace, a stopped session's process may take to be gone.
const STOP_SLACK: Duration = Duration::from_secs(5);
/// Attempts at a free generated name.
const NAME_ATTEMPTS: usize = 3;

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

/// The containers this agent has sessions in, with those sessions.
#[derive(Debug, Clone, Default)]
pub struct Live(Arc<Mutex<HashMap<String, LiveContainer>>>);

#[derive(Debug)]
struct LiveContainer {
    retain: bool,
    /// Session ID -> user.
    sessions: BTreeMap<String, String>,
}

impl Live {
    fn add(&self, id: &str, retain: bool, session: &str, user: &str) {
        self.lock()
            .entry(id.to_owned())
            .or_insert_with(|| LiveContainer {
                retain,
                sessions: BTreeMap::new(),
            })
            .sessions
            .insert(session.to_owned(), user.to_owned());
    }

    /// Ends a session; returns how many sessions its container still has.
    fn remove(&self, id: &str, session: &str) -> usize {
        let mut live = self.lock();
        let Some(container) = live.get_mut(id) else {
            return 0;
        };
        container.sessions.remove(session);
        let left = container.sessions.len();
        if left == 0 {
            live.remove(id);
        }
        left
    }

    /// The sessions attached to container `id`.
    pub fn sessions(&self, id: &str) -> Vec<String> {
        self.lock()
            .get(id)
            .map(|c| c.sessions.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The containers with sessions that are not retained.
    pub fn unretained(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, c)| !c.retain)
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, LiveContainer>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Why a session could not be prepared: an HTTP status and what to tell the user.
#[derive(Debug)]
pub struct Refusal {
    /// The HTTP status code.
    pub code: u16,
    /// The message, with its causes.
    pub message: String,
}

impl Refusal {
    fn new(code: u16, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
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
            Error::Call { .. } => 500,
        };
        Refusal::new(code, crate::chain(&e))
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
    target: TargetRef,
    session: String,
    /// The process's runtime ID.
    process: String,
    stdio: Option<Stdio>,
    /// Things to tell the user.
    pub warnings: Vec<String>,
    armed: bool,
}

impl Prepared {
    /// The container's name.
    pub fn name(&self) -> &str {
        &self.name
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
        // SIGTERM; kdbg-init sends SIGKILL after the grace.
        if let Err(e) = runtime.signal(container, session, SIGTERM).await {
            warn!(container, error = %crate::chain(&e), "stopping the session's process");
        }
        let grace = agent.lifecycle.stop_grace.0 + STOP_SLACK;
        match tokio::time::timeout(grace, runtime.wait(container, process)).await {
            Ok(Ok(code)) => debug!(container, code, "session process stopped"),
            Ok(Err(e)) => {
                debug!(container, error = %crate::chain(&e), "waiting for the stopped process")
            }
            Err(_) => warn!(
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

/// The labels of a new debug container.
fn labels(
    agent: &Agent,
    request: &DebugRequest,
    target: &TargetRef,
    image: &str,
    session: &str,
) -> BTreeMap<String, String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut labels = BTreeMap::from([
        (label::SESSION.to_owned(), session.to_owned()),
        (label::TARGET.to_owned(), target.to_string()),
        (label::CREATED_AT.to_owned(), now.to_string()),
        (label::RETAIN.to_owned(), request.retain.to_string()),
        (label::USER.to_owned(), user_of(request).to_owned()),
        (label::OWNER.to_owned(), agent.owner.clone()),
        (label::IMAGE.to_owned(), image.to_owned()),
    ]);
    if let Some(ns) = &request.pod_namespace {
        labels.insert(label::POD_NAMESPACE.to_owned(), ns.clone());
    }
    if let Some(pod) = &request.pod_name {
        labels.insert(label::POD_NAME.to_owned(), pod.clone());
    }
    labels
}

fn user_of(request: &DebugRequest) -> &str {
    request.user.as_deref().unwrap_or("unknown")
}

/// A generated container name: `<pod>-dbg-<5 random>`, or `dbg-<target>-<5 random>` without
/// a pod; within the runtimes' limits.
fn generated_name(request: &DebugRequest, target: &TargetRef) -> String {
    use rand::Rng as _;
    let mut rng = rand::rng();
    let suffix: String = (0..5)
        .map(|_| {
            let c = rng.random_range(0..36u8);
            char::from(if c < 10 { b'0' + c } else { b'a' + c - 10 })
        })
        .collect();
    let stem = match &request.pod_name {
        Some(pod) => format!("{}-dbg", pod.chars().take(50).collect::<String>()),
        None => format!("dbg-{}", target.id.chars().take(12).collect::<String>()),
    };
    // Letters and digits, single dashes between them: what every runtime accepts.
    let mut clean = String::with_capacity(stem.len());
    for c in stem.chars() {
        if c.is_ascii_alphanumeric() {
            clean.push(c.to_ascii_lowercase());
        } else if !clean.ends_with('-') {
            clean.push('-');
        }
    }
    let stem = clean;
    format!("{}-{suffix}", stem.trim_matches('-'))
}

/// Prepares a session: in a new debug container, or (with `request.container`) in an
/// existing retained one. Everything that can go wrong because of the request goes wrong
/// here, before the upgrade.
pub async fn prepare(
    agent: &Arc<Agent>,
    request: &DebugRequest,
    session: &str,
) -> Result<Prepared, Refusal> {
    let command = if request.command.is_empty() {
        agent.defaults.command.clone()
    } else {
        request.command.clone()
    };
    let process = ProcessSpec {
        session: session.to_owned(),
        command,
        tty: request.tty,
        stdin: request.stdin,
        stdout: request.stdout,
        stderr: request.stderr && !request.tty,
        grace: agent.lifecycle.stop_grace.0,
    };
    let (container, name, retain, target, warnings) = match &request.container {
        None => create(agent, request, session).await?,
        Some(name) => {
            let found = reopen(agent, request, name).await?;
            (found.0, name.clone(), true, found.1, Vec::new())
        }
    };
    agent
        .live
        .add(&container, retain, session, user_of(request));
    let mut prepared = Prepared {
        agent: agent.clone(),
        container,
        name,
        retain,
        target,
        session: session.to_owned(),
        process: String::new(),
        stdio: None,
        warnings,
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

/// Creates and starts a new debug container for `request`; returns its ID, name, whether it
/// is retained, its target and warnings.
async fn create(
    agent: &Agent,
    request: &DebugRequest,
    session: &str,
) -> Result<(String, String, bool, TargetRef, Vec<String>), Refusal> {
    let runtime = &agent.runtime;
    let target = request.target.clone().ok_or_else(|| {
        Refusal::new(
            400,
            "query parameter target is required for a new debug container",
        )
    })?;
    runtime.check_target(&target).await?;
    let image = request
        .image
        .clone()
        .unwrap_or_else(|| agent.defaults.image.clone());
    runtime
        .ensure_image(&image, request.pull_policy, None)
        .await?;
    let mut spec = DebugSpec {
        target: target.clone(),
        image: image.clone(),
        name: String::new(),
        labels: labels(agent, request, &target, &image, session),
        init: agent.init.clone(),
    };
    let mut attempt = 0;
    let created = loop {
        attempt += 1;
        spec.name = match &request.name {
            Some(name) => name.clone(),
            None => generated_name(request, &target),
        };
        match runtime.create(&spec).await {
            Ok(created) => break created,
            // A generated name that was taken: another one.
            Err(Error::NameTaken { .. }) if request.name.is_none() && attempt < NAME_ATTEMPTS => {}
            Err(e) => return Err(e.into()),
        }
    };
    if let Err(e) = runtime.start(&created.id).await {
        let _ = runtime.remove(&created.id).await;
        return Err(e.into());
    }
    Ok((
        created.id,
        spec.name,
        request.retain,
        target,
        created.warnings,
    ))
}

/// Finds retained debug container `name` for an `attach` and makes sure it runs; returns its
/// ID and target.
async fn reopen(
    agent: &Agent,
    request: &DebugRequest,
    name: &str,
) -> Result<(String, TargetRef), Refusal> {
    let runtime = &agent.runtime;
    let found = crate::containers::find(agent, name).await?;
    let labels = &found.labels;
    let in_pod = |key: &str, asked: &Option<String>| {
        asked
            .as_deref()
            .is_none_or(|asked| labels.get(key).map(String::as_str) == Some(asked))
    };
    if !in_pod(label::POD_NAMESPACE, &request.pod_namespace)
        || !in_pod(label::POD_NAME, &request.pod_name)
    {
        return Err(Refusal::new(
            404,
            format!(
                "debug container {name:?} not found for pod {}/{}; kubectl-debug list shows the pod's",
                request.pod_namespace.as_deref().unwrap_or("-"),
                request.pod_name.as_deref().unwrap_or("-")
            ),
        ));
    }
    if labels.get(label::RETAIN).map(String::as_str) != Some("true") {
        return Err(Refusal::new(
            409,
            format!(
                "debug container {name:?} is not retained: only retained containers (--retain) can be attached to"
            ),
        ));
    }
    let target: TargetRef = labels
        .get(label::TARGET)
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| {
            Refusal::new(500, format!("debug container {name:?} has no target label"))
        })?;
    if request.target.as_ref().is_some_and(|t| *t != target) {
        return Err(Refusal::new(
            400,
            format!(
                "debug container {name:?} joins {target}, not {}",
                request
                    .target
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            ),
        ));
    }
    if found.state != ContainerState::Running {
        if let Err(e) = runtime.check_target(&target).await {
            return Err(Refusal::new(
                409,
                format!(
                    "debug container {name:?} is orphaned: {}; remove it with kubectl-debug rm",
                    crate::chain(&e)
                ),
            ));
        }
        runtime.start(&found.id).await?;
    }
    Ok((found.id, target))
}

/// Relays the prepared session over `ws` until its process ends or the client leaves, then
/// ends it. `shutdown` ends the session early with a status that says the agent is stopping;
/// `tap` shows the session to observers.
pub async fn run<S>(
    mut prepared: Prepared,
    ws: WebSocketStream<S>,
    protocol: Protocol,
    tap: Option<Tap>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let agent = prepared.agent.clone();
    let stdio = prepared.stdio.take().unwrap_or_default();
    let process_ended = Arc::new(AtomicBool::new(false));
    let exit: ExitFuture = {
        let (agent, ended) = (agent.clone(), process_ended.clone());
        let (id, name, process, target) = (
            prepared.container.clone(),
            prepared.name.clone(),
            prepared.process.clone(),
            prepared.target.clone(),
        );
        Box::pin(async move {
            tokio::select! {
                biased;
                () = agent.shutdown.cancelled() => ExitStatus::Failure {
                    reason: "ServiceUnavailable".into(),
                    message: "the kubectl-debug agent on this node is shutting down; the session ended".into(),
                },
                code = agent.runtime.wait(&id, &process) => {
                    ended.store(true, Ordering::Release);
                    exit_status(&agent, &id, &name, &target, code).await
                }
            }
        })
    };
    // Terminal sizes: only the latest matters, so a slow runtime call never queues them up.
    let (size_tx, mut size_rx) = watch::channel(None);
    let resizer = {
        let runtime = agent.runtime.clone();
        let (id, process) = (prepared.container.clone(), prepared.process.clone());
        tokio::spawn(async move {
            while size_rx.changed().await.is_ok() {
                let Some(size) = *size_rx.borrow_and_update() else {
                    continue;
                };
                if let Err(e) = runtime.resize(&id, &process, size).await {
                    debug!(error = %crate::chain(&e), "resizing terminal");
                }
            }
        })
    };
    let io = ServerIo {
        stdin: stdio.stdin,
        stdout: stdio.stdout,
        stderr: stdio.stderr,
        on_resize: Some(Box::new(move |size| {
            size_tx.send_replace(Some(size));
        })),
        exit,
        tap,
    };
    let lifecycle = &agent.lifecycle;
    let config = RelayConfig {
        peer_timeout: lifecycle.peer_timeout.0,
        idle_timeout: (!lifecycle.idle_timeout.0.is_zero()).then_some(lifecycle.idle_timeout.0),
        ..RelayConfig::default()
    };
    match kdbg_relay::serve(ws, protocol, io, &config).await {
        Ok(done) => match done.outcome {
            ServerEnd::Completed(status) => info!(?status, "debug session completed"),
            ServerEnd::ClientLeft => info!("client left; ending the debug session"),
            ServerEnd::Idle => info!("debug session idle too long; ended"),
        },
        Err(e) => warn!(error = %crate::chain(&e), "debug session failed"),
    }
    resizer.abort();
    prepared.finish(process_ended.load(Ordering::Acquire)).await;
}

/// How a session's process ended, as the user should hear it: its exit code, and when its
/// container was killed or its target went away, what happened.
async fn exit_status(
    agent: &Agent,
    id: &str,
    name: &str,
    target: &TargetRef,
    code: Result<i64, Error>,
) -> ExitStatus {
    let code = match code {
        Ok(code) => code,
        Err(e) => {
            return ExitStatus::Failure {
                reason: "InternalError".into(),
                message: crate::chain(&e),
            };
        }
    };
    let byte = u8::try_from(code).unwrap_or(255);
    if (0..128).contains(&code) {
        return ExitStatus::Code(byte);
    }
    // Killed by a signal: the user's doing, or its container's end?
    let ended = |reason: &str, message: String| ExitStatus::Ended {
        code: byte,
        reason: reason.into(),
        message,
    };
    // The runtime may not have seen the container's end yet when its process's end is known.
    let mut inspected = agent.runtime.inspect(id).await;
    for _ in 0..5 {
        if !matches!(&inspected, Ok(c) if c.state == ContainerState::Running) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        inspected = agent.runtime.inspect(id).await;
    }
    if let Ok(c) = &inspected
        && let ContainerState::Exited {
            oom_killed: true, ..
        } = c.state
    {
        return ended(
            "Killed",
            format!("debug container {name} was killed (OOMKilled): it ran out of memory"),
        );
    }
    match agent.runtime.check_target(target).await {
        Err(Error::TargetNotFound { .. }) => {
            return ended(
                "TargetGone",
                format!(
                    "target container {target} is gone (its pod was deleted, or the container restarted): the debug session ended"
                ),
            );
        }
        Err(Error::TargetNotRunning { state, .. }) => {
            return ended(
                "TargetGone",
                format!(
                    "target container {target} is {state} (it crashed or was stopped): the debug session ended"
                ),
            );
        }
        _ => {}
    }
    match inspected {
        Ok(c) if c.state == ContainerState::Running => ExitStatus::Code(byte),
        Err(Error::ContainerNotFound { .. }) => ended(
            "Removed",
            format!(
                "debug container {name} was removed (kubectl-debug rm, or its retention ran out)"
            ),
        ),
        _ => ended(
            "Killed",
            format!("debug container {name} was killed (exit code {code})"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_suit_every_runtime_and_differ() {
        let mut request = DebugRequest::from_query("target=docker://abc&stdout=1").unwrap();
        request.pod_name = Some("web.v2--x_".repeat(10));
        let target = request.target.clone().unwrap();
        let names: Vec<String> = (0..50).map(|_| generated_name(&request, &target)).collect();
        for name in &names {
            assert!(name.len() <= 63, "{name}");
            let parts: Vec<&str> = name.split('-').collect();
            assert!(
                parts
                    .iter()
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric())),
                "{name}"
            );
        }
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
        request.pod_name = None;
        assert!(generated_name(&request, &target).starts_with("dbg-abc-"));
    }
}
