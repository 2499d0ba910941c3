//! One debug session: prepare it (before the WebSocket upgrade, so problems become HTTP
//! errors), relay its process's stdio, and clean up.
//!
//! A debug container's main process holds it (`kdbg-init hold`); a session is a process exec'd
//! into it (`kdbg-init run`), so a retained container outlives its sessions and `attach` opens
//! new ones in it. When a session ends before its process does (the client left or vanished,
//! or it was idle too long), the process gets SIGTERM, then SIGKILL after
//! `lifecycle.stopGrace`. A container is removed when its last session ends, unless retained.

mod live;
mod run;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kdbg_api::DebugRequest;
use kdbg_recordings::{Header, Metadata};
use kdbg_runtimes::{
    ContainerState, DebugSpec, Error, ProcessSpec, Runtime, Stdio, TargetInfo, TargetRef, label,
};
use tracing::{debug, info, warn};

use crate::recordings::Opened;
use crate::server::Agent;

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
            Error::Call { .. } => 500,
        };
        let reason =
            matches!(e, Error::ImageAbsent { .. }).then_some(kdbg_api::reason::IMAGE_ABSENT);
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
    target: TargetRef,
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

/// The labels of a new debug container.
fn labels(
    agent: &Agent,
    request: &DebugRequest,
    target: &TargetRef,
    image: &str,
    session: &str,
    node_level: Option<&str>,
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
    if let Some(why) = node_level {
        labels.insert(label::NODE_LEVEL.to_owned(), why.to_owned());
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
    let process = ProcessSpec {
        session: session.to_owned(),
        command,
        tty: request.tty,
        stdin: request.stdin,
        stdout: request.stdout,
        stderr: request.stderr && !request.tty,
        grace: agent.lifecycle.stop_grace.0,
    };
    let (found, recording) = match &request.container {
        None => {
            let target = request.target.clone().ok_or_else(|| {
                Refusal::new(
                    400,
                    "query parameter target is required for a new debug container",
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

/// A session's debug container, new or found.
struct Found {
    id: String,
    name: String,
    retain: bool,
    target: TargetRef,
    image: String,
    warnings: Vec<String>,
    /// What the runtime says of the target (its labels), when it could be asked: what the
    /// recording and the audit line name, never the client's word.
    verified: Option<TargetInfo>,
    /// Why the container gives the node itself, if it does ([`label::NODE_LEVEL`]).
    node_level: Option<String>,
}

/// Creates and starts a new debug container for `request`.
async fn create(
    agent: &Agent,
    request: &DebugRequest,
    target: TargetRef,
    session: &str,
) -> Result<Found, Refusal> {
    let runtime = &agent.runtime;
    let verified = runtime.check_target(&target).await?;
    let image = request
        .image
        .clone()
        .unwrap_or_else(|| agent.defaults.image.clone());
    let profile = request.profile.unwrap_or_default();
    // What the container will join, as the runtime says, and what its profile grants: kept
    // in its labels, so every later use of it is checked against it.
    let node_level = crate::admission::node_level(&verified)
        .or_else(|| crate::admission::profile_node_level(profile));
    runtime
        .ensure_image(&image, request.pull_policy, None)
        .await?;
    let mut spec = DebugSpec {
        target: target.clone(),
        image: image.clone(),
        name: String::new(),
        labels: labels(
            agent,
            request,
            &target,
            &image,
            session,
            node_level.as_deref(),
        ),
        init: agent.init.clone(),
        profile,
    };
    // A retained container is counted against the node's limits and created under one lock.
    let _retaining = if request.retain {
        let held = agent.retaining.lock().await;
        check_retained(agent, user_of(request)).await?;
        Some(held)
    } else {
        None
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
    Ok(Found {
        id: created.id,
        name: spec.name,
        retain: request.retain,
        target,
        image,
        warnings: created.warnings,
        verified: Some(verified),
        node_level,
    })
}

/// Refuses one more retained container for `user` past `policy.maxRetainedPerUser`, or on
/// the node past `policy.maxRetainedPerNode`: retained containers are kept for days by
/// default, so without a limit one user could fill a node with them.
async fn check_retained(agent: &Agent, user: &str) -> Result<(), Refusal> {
    let retained: Vec<_> = agent
        .runtime
        .list()
        .await?
        .into_iter()
        .filter(|c| c.labels.get(label::RETAIN).map(String::as_str) == Some("true"))
        .collect();
    let of_user = retained
        .iter()
        .filter(|c| c.labels.get(label::USER).map(String::as_str) == Some(user))
        .count();
    let policy = &agent.policy;
    let full = if of_user >= policy.max_retained_per_user {
        format!(
            "user \"{user}\" has {of_user} retained debug containers on node {}, the limit (policy.maxRetainedPerUser: {})",
            agent.node, policy.max_retained_per_user
        )
    } else if retained.len() >= policy.max_retained_per_node {
        format!(
            "node {} has {} retained debug containers, the limit (policy.maxRetainedPerNode: {})",
            agent.node,
            retained.len(),
            policy.max_retained_per_node
        )
    } else {
        return Ok(());
    };
    Err(Refusal::new(
        429,
        format!(
            "Too many retained containers: {full}; remove those you no longer need with kubectl-debug rm (kubectl-debug list shows them), or debug without --retain"
        ),
    ))
}

/// Finds retained debug container `name` for an `attach` and makes sure it runs.
async fn reopen(agent: &Agent, request: &DebugRequest, name: &str) -> Result<Found, Refusal> {
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
    let verified = runtime.check_target(&target).await;
    if found.state != ContainerState::Running {
        if let Err(e) = &verified {
            return Err(Refusal::new(
                409,
                format!(
                    "debug container {name:?} is orphaned: {}; remove it with kubectl-debug rm",
                    crate::chain(e)
                ),
            ));
        }
        runtime.start(&found.id).await?;
    }
    let node_level = crate::admission::debug_container_node_level(labels, verified.as_ref().ok());
    Ok(Found {
        image: labels
            .get(label::IMAGE)
            .cloned()
            .unwrap_or_else(|| found.image.clone()),
        id: found.id,
        name: name.to_owned(),
        retain: true,
        target,
        warnings: Vec::new(),
        verified: verified.ok(),
        node_level,
    })
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
