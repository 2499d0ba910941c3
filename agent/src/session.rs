//! One debug session: prepare the container (before the WebSocket upgrade, so problems become
//! HTTP errors), then start it, relay its stdio, and clean it up.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kdbg_relay::session::{ExitFuture, ServerIo};
use kdbg_relay::{Config as RelayConfig, ExitStatus, Protocol, ServerEnd, WebSocketStream};
use kdbg_runtimes::{AnyRuntime, DebugSpec, Runtime, Stdio, label};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Defaults;
use kdbg_api::DebugRequest;

/// How long a retained container's process gets between SIGTERM and SIGKILL when its session
/// ends before it does.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

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

/// The container spec for a request.
pub fn spec_for(request: &DebugRequest, defaults: &Defaults, session: &str) -> DebugSpec {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut labels = BTreeMap::from([
        (label::SESSION.to_owned(), session.to_owned()),
        (label::TARGET.to_owned(), request.target.to_string()),
        (label::CREATED_AT.to_owned(), now.to_string()),
        (label::RETAIN.to_owned(), request.retain.to_string()),
        (
            label::USER.to_owned(),
            request.user.clone().unwrap_or_else(|| "unknown".into()),
        ),
    ]);
    if let Some(ns) = &request.pod_namespace {
        labels.insert(label::POD_NAMESPACE.to_owned(), ns.clone());
    }
    if let Some(pod) = &request.pod_name {
        labels.insert(label::POD_NAME.to_owned(), pod.clone());
    }
    DebugSpec {
        target: request.target.clone(),
        image: request
            .image
            .clone()
            .unwrap_or_else(|| defaults.image.clone()),
        command: if request.command.is_empty() {
            defaults.command.clone()
        } else {
            request.command.clone()
        },
        tty: request.tty,
        stdin: request.stdin,
        stdout: request.stdout,
        stderr: request.stderr && !request.tty,
        name: request.name.clone(),
        labels,
    }
}

/// The debug containers this agent created whose sessions have not finished, with whether each
/// is retained. Shutdown removes the unretained ones, whatever their clients do.
#[derive(Debug, Clone, Default)]
pub struct Live(Arc<Mutex<HashMap<String, bool>>>);

impl Live {
    fn add(&self, id: &str, retain: bool) {
        self.lock().insert(id.to_owned(), retain);
    }

    fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// The live containers that are not retained.
    pub fn unretained(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, retain)| !**retain)
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, bool>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A created, attached, not yet started debug container. Dropping it removes the container
/// (unless retained), so no error path leaks one.
pub struct Prepared {
    runtime: AnyRuntime,
    live: Live,
    id: String,
    retain: bool,
    stdio: Option<Stdio>,
    /// Things to tell the user.
    pub warnings: Vec<String>,
    armed: bool,
}

impl Prepared {
    /// The container's ID.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Removes the container now (unless retained) and disarms the drop guard.
    async fn finish(mut self) {
        self.armed = false;
        self.live.remove(&self.id);
        if self.retain {
            // The session's process stops, whether it ended or its client left; the container
            // and its filesystem stay, the same on every runtime.
            info!(container = %self.id, "session over; container retained as asked");
            if let Err(e) = self.runtime.stop(&self.id, STOP_GRACE).await {
                warn!(container = %self.id, error = %crate::chain(&e), "stopping the retained container's process");
            }
            return;
        }
        match self.runtime.remove(&self.id).await {
            Ok(()) => debug!(container = %self.id, "debug container removed"),
            Err(e) => {
                warn!(container = %self.id, error = %crate::chain(&e), "removing debug container")
            }
        }
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.live.remove(&self.id);
        if self.retain {
            return;
        }
        let runtime = self.runtime.clone();
        let id = std::mem::take(&mut self.id);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(e) = runtime.remove(&id).await {
                    warn!(container = %id, error = %crate::chain(&e), "removing debug container");
                }
            });
        }
    }
}

/// Checks the target, makes sure the image is there, creates the debug container and attaches
/// its stdio. Everything that can go wrong because of the request goes wrong here.
pub async fn prepare(
    runtime: &AnyRuntime,
    live: &Live,
    spec: &DebugSpec,
    request: &DebugRequest,
) -> Result<Prepared, kdbg_runtimes::Error> {
    runtime.check_target(&spec.target).await?;
    runtime
        .ensure_image(&spec.image, request.pull_policy, None)
        .await?;
    let created = runtime.create(spec).await?;
    live.add(&created.id, request.retain);
    let mut prepared = Prepared {
        runtime: runtime.clone(),
        live: live.clone(),
        id: created.id,
        retain: request.retain,
        stdio: None,
        warnings: created.warnings,
        armed: true,
    };
    match runtime.attach(&prepared.id, spec).await {
        Ok(stdio) => prepared.stdio = Some(stdio),
        Err(e) => {
            // A container that never ran is of no use, retained or not: remove it now, not in
            // the background, so a short-lived caller (`local`) does not exit before it is gone.
            prepared.retain = false;
            prepared.finish().await;
            return Err(e);
        }
    }
    Ok(prepared)
}

/// Starts the prepared container and relays it over `ws` until it ends or the client leaves,
/// then removes it unless retained. `shutdown` ends the session early with a status that says
/// the agent is stopping.
pub async fn run<S>(
    mut prepared: Prepared,
    ws: WebSocketStream<S>,
    protocol: Protocol,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let runtime = prepared.runtime.clone();
    let id = prepared.id.clone();
    let stdio = prepared.stdio.take().unwrap_or_default();
    let started = runtime.start(&id).await;
    let exit: ExitFuture = match started {
        Ok(()) => {
            let runtime = runtime.clone();
            let id = id.clone();
            Box::pin(async move {
                tokio::select! {
                    // Shutdown removes the container too: say why it ended, not how.
                    biased;
                    () = shutdown.cancelled() => ExitStatus::Failure {
                        reason: "ServiceUnavailable".into(),
                        message: "the kubectl-debug agent on this node is shutting down; the debug container is removed".into(),
                    },
                    code = runtime.wait(&id) => exit_status(code),
                }
            })
        }
        Err(e) => {
            let message = crate::chain(&e);
            warn!(container = %id, error = %message, "starting debug container");
            Box::pin(async move {
                ExitStatus::Failure {
                    reason: "InternalError".into(),
                    message,
                }
            })
        }
    };
    // Terminal sizes: only the latest matters, so a slow runtime call never queues them up.
    let (size_tx, mut size_rx) = watch::channel(None);
    let resizer = {
        let runtime = runtime.clone();
        let id = id.clone();
        tokio::spawn(async move {
            while size_rx.changed().await.is_ok() {
                let Some(size) = *size_rx.borrow_and_update() else {
                    continue;
                };
                if let Err(e) = runtime.resize(&id, size).await {
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
        tap: None,
    };
    match kdbg_relay::serve(ws, protocol, io, &RelayConfig::default()).await {
        Ok(done) => match done.outcome {
            ServerEnd::Completed(status) => info!(?status, "debug session completed"),
            ServerEnd::ClientLeft => info!("client left; ending the debug session"),
        },
        Err(e) => warn!(error = %crate::chain(&e), "debug session failed"),
    }
    resizer.abort();
    prepared.finish().await;
}

fn exit_status(code: Result<i64, kdbg_runtimes::Error>) -> ExitStatus {
    match code {
        Ok(code) => match u8::try_from(code) {
            Ok(code) => ExitStatus::Code(code),
            Err(_) => ExitStatus::Failure {
                reason: "InternalError".into(),
                message: format!("debug container exited with code {code}, outside 0..=255"),
            },
        },
        Err(e) => ExitStatus::Failure {
            reason: "InternalError".into(),
            message: crate::chain(&e),
        },
    }
}
