//! Running a prepared session: relaying its process's stdio, recording it and keeping its
//! screen for watchers, and telling the user how it ended.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kdbg_relay::session::{ExitFuture, ServerIo};
use kdbg_relay::{Config as RelayConfig, ExitStatus, Protocol, ServerEnd, Tap, WebSocketStream};
use kdbg_runtimes::{ContainerState, Error, Runtime, Target};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::Prepared;
use crate::Agent;
use crate::watch::Screen;

/// How a session ended, for the audit log.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// `completed`, `client_left`, `idle` or `failed`.
    pub outcome: &'static str,
    /// The process's status as the client was told it (exit code, or why it ended).
    pub status: String,
    /// Bytes to the client.
    pub bytes_out: u64,
    /// Bytes from the client (stdin).
    pub bytes_in: u64,
}

/// Relays the prepared session over `ws` until its process ends or the client leaves, then
/// ends it. The agent's shutdown ends the session early with a status that says so. A
/// recorded session is recorded, and a terminal session's screen is kept for watchers.
/// Says how it ended.
pub async fn run<S>(mut prepared: Prepared, ws: WebSocketStream<S>, protocol: Protocol) -> Summary
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let agent = prepared.agent.clone();
    let tap = observe(&mut prepared);
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
    // The process gets the client's size at once, not after its first resize message.
    if prepared.size.is_some() {
        size_tx.send_replace(prepared.size);
    }
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
    let runtime = crate::metrics::Runtime {
        runtime: agent.runtime.name().to_owned(),
    };
    agent.metrics.sessions_active.get_or_create(&runtime).inc();
    let mut summary = Summary::default();
    let outcome = match kdbg_relay::serve(ws, protocol, io, &config).await {
        Ok(done) => {
            summary.bytes_out = done.stats.bytes_sent;
            summary.bytes_in = done.stats.bytes_received;
            let metrics = &agent.metrics;
            let count = |direction: &str, bytes: u64| {
                metrics
                    .bytes
                    .get_or_create(&crate::metrics::Direction {
                        direction: direction.into(),
                    })
                    .inc_by(bytes);
            };
            count("output", done.stats.bytes_sent);
            count("stdin", done.stats.bytes_received);
            match done.outcome {
                ServerEnd::Completed(status) => {
                    info!(?status, "debug session completed");
                    summary.status = format!("{status:?}");
                    "completed"
                }
                ServerEnd::ClientLeft => {
                    info!("client left; ending the debug session");
                    "client_left"
                }
                ServerEnd::Idle => {
                    info!("debug session idle too long; ended");
                    "idle"
                }
                ServerEnd::ProtocolViolation(why) => {
                    warn!(%why, "debug session ended: the client broke the protocol");
                    summary.status = why;
                    "protocol_violation"
                }
            }
        }
        Err(e) => {
            warn!(error = %crate::chain(&e), "debug session failed");
            "failed"
        }
    };
    agent.metrics.sessions_active.get_or_create(&runtime).dec();
    agent
        .metrics
        .sessions
        .get_or_create(&crate::metrics::Ended {
            runtime: runtime.runtime,
            outcome: outcome.into(),
        })
        .inc();
    resizer.abort();
    prepared.finish(process_ended.load(Ordering::Acquire)).await;
    summary.outcome = outcome;
    summary
}

/// How a session's process ended, as the user should hear it: its exit code, and when its
/// container was killed or its target went away, what happened.
async fn exit_status(
    agent: &Agent,
    id: &str,
    name: &str,
    target: &Target,
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
    // The node does not go away under its own debug container.
    let checked = match target {
        Target::Container(target) => agent.runtime.check_target(target).await.map(|_| ()),
        Target::Node(_) => Ok(()),
    };
    match checked {
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

/// The session's tap, if anything observes it: its recorder, and its screen for watchers.
fn observe(prepared: &mut Prepared) -> Option<Tap> {
    if prepared.recording.is_none() && !prepared.tty {
        return None;
    }
    let agent = &prepared.agent;
    // With the client's size at the start, a recording's header has it before any resize.
    let tap = Tap::new(prepared.size);
    if let Some(recording) = prepared.recording.take() {
        agent
            .recordings
            .start(recording, &tap, prepared.header.clone(), prepared.tty);
    }
    if prepared.tty {
        match Screen::keep(&tap, prepared.header.clone()) {
            Ok(screen) => agent
                .live
                .set_screen(&prepared.container, &prepared.session, screen),
            Err(e) => warn!(error = %e, "live view unavailable for this session"),
        }
    }
    Some(tap)
}
