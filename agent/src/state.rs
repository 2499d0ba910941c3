//! The agent's state: the runtime, the settings it was started with, and what its sessions,
//! connections and reaper share; and its activity, which tells an agent with
//! `lifecycle.exitWhenIdle` when to go.

use std::sync::Arc;
use std::time::Duration;

use kdbg_runtimes::{AnyRuntime, Runtime};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::{Defaults, Lifecycle};
use crate::{containers, recordings, session};

/// The agent: everything its endpoints, sessions and reaper share. Built in one place,
/// [`crate::agent`]; its fields are the crate's own.
pub struct Agent {
    /// The node's runtime.
    pub(crate) runtime: AnyRuntime,
    /// What sessions run by default.
    pub(crate) defaults: Defaults,
    /// When sessions and containers end.
    pub(crate) lifecycle: Lifecycle,
    /// Where `kdbg-init` is on the node.
    pub(crate) init: std::path::PathBuf,
    /// This process as the owner of the containers it creates.
    pub(crate) owner: String,
    /// Cancelled when the agent stops.
    pub(crate) shutdown: CancellationToken,
    /// Every connection and session, so shutdown can wait for them.
    pub(crate) tracker: TaskTracker,
    /// The containers with sessions of this agent, and those sessions.
    pub(crate) live: session::Live,
    /// When the reaper first saw each orphaned container.
    pub(crate) orphans: containers::Orphans,
    /// The node's recordings.
    pub(crate) recordings: recordings::Recordings,
    /// The node's name.
    pub(crate) node: String,
    /// What `/metrics` shows.
    pub(crate) metrics: crate::metrics::Metrics,
    /// Who callers are and what they may do; `None`: anyone may do anything.
    pub(crate) auth: Option<Arc<crate::auth::Authenticator>>,
    /// What sessions may ask for.
    pub(crate) policy: crate::config::Policy,
    /// What one connection may hold.
    pub(crate) limits: crate::config::Limits,
    /// The sessions running, against `policy.maxSessions`.
    pub(crate) sessions: Arc<crate::admission::Sessions>,
    /// Held while a retained container is counted against `policy.maxRetained*` and created,
    /// so concurrent requests cannot both take the last place.
    pub(crate) retaining: tokio::sync::Mutex<()>,
    /// The listener's TLS; `None`: plain HTTP.
    pub(crate) tls: Option<Arc<crate::tls::Tls>>,
    /// The connections open, and since when none is.
    pub(crate) activity: Activity,
}

impl Agent {
    /// Stops the agent: tells every session, removes every unretained debug container it
    /// created (first, so their output ends and sessions can send their status at once), waits
    /// at most `grace` for sessions to finish, then removes what is left whatever the clients
    /// do. Retained containers stay.
    pub async fn stop(&self, grace: Duration) {
        self.shutdown.cancel();
        self.tracker.close();
        self.remove_unretained(grace).await;
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            warn!("sessions still running after {grace:?}; removing their containers and exiting");
        }
        self.remove_unretained(grace).await;
    }

    /// Removes the live containers that are not retained, in parallel, waiting at most `limit`.
    async fn remove_unretained(&self, limit: Duration) {
        let ids = self.live.unretained();
        if ids.is_empty() {
            return;
        }
        let removals = ids.iter().map(|id| async move {
            match self.runtime.remove(id).await {
                Ok(()) => info!(container = %id, "debug container removed at shutdown"),
                Err(e) => warn!(container = %id, error = %crate::chain(&e), "removing debug container at shutdown"),
            }
        });
        if tokio::time::timeout(limit, futures_util::future::join_all(removals))
            .await
            .is_err()
        {
            warn!(containers = ?ids, "removing debug containers took longer than {limit:?}");
        }
    }

    /// Runs the reaper (and the recordings' retention) now, then every
    /// `lifecycle.reapInterval` until shutdown.
    pub async fn reap_periodically(self: Arc<Self>) {
        let every = self.lifecycle.reap_interval.0.max(Duration::from_secs(1));
        loop {
            containers::reap(&self).await;
            if self.recordings.config().mode != crate::config::RecordingMode::Off {
                let agent = self.clone();
                let _ =
                    tokio::task::spawn_blocking(move || agent.recordings.enforce_retention()).await;
            }
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = self.shutdown.cancelled() => return,
            }
        }
    }

    /// The node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Tells every session and the accept loop that the agent stops (without waiting; see
    /// [`Agent::stop`]).
    pub fn cancel(&self) {
        self.shutdown.cancel();
    }

    /// Takes no more sessions and waits for those running to finish their cleanup (`local`,
    /// whose in-process agent ends with its one session).
    pub async fn settle(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Resolves once no connection accepted on the listener has been open for `after`
    /// (counted from when the agent was made and from when the last one closed); never when
    /// `after` is zero (`lifecycle.exitWhenIdle: 0`). A session is a WebSocket connection, so
    /// a running session, a watcher, a pull's stream, or a kept-alive connection with nothing
    /// to say keeps the agent busy while it is open. The caller then stops the agent
    /// ([`Agent::stop`]).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub async fn idle_for(&self, after: Duration) {
        self.activity.idle_for(after).await;
    }
}

/// How many connections are open, and since when none is: an agent with
/// `lifecycle.exitWhenIdle` exits when none has been for that long. Each connection holds a
/// [`Busy`] from its accept until its socket closes (a WebSocket's, after its upgrade, too).
#[derive(Debug)]
pub(crate) struct Activity(Arc<watch::Sender<Load>>);

#[derive(Debug, Clone, Copy)]
struct Load {
    open: usize,
    idle_since: Instant,
}

/// One open connection of [`Activity`], until dropped.
#[derive(Debug)]
pub(crate) struct Busy(Arc<watch::Sender<Load>>);

impl Default for Activity {
    fn default() -> Self {
        let load = Load {
            open: 0,
            idle_since: Instant::now(),
        };
        Activity(Arc::new(watch::Sender::new(load)))
    }
}

impl Activity {
    /// One more connection is open, until the guard is dropped.
    pub(crate) fn begin(&self) -> Busy {
        self.0.send_modify(|load| load.open += 1);
        Busy(self.0.clone())
    }

    /// See [`Agent::idle_for`].
    pub(crate) async fn idle_for(&self, after: Duration) {
        if after.is_zero() {
            return std::future::pending().await;
        }
        let mut changes = self.0.subscribe();
        loop {
            let load = *changes.borrow_and_update();
            if load.open == 0 {
                tokio::select! {
                    () = tokio::time::sleep_until(load.idle_since + after) => {
                        // A connection accepted as the time came counts.
                        if !changes.has_changed().unwrap_or(false) {
                            return;
                        }
                    }
                    _ = changes.changed() => {}
                }
            } else {
                // The sender lives as long as `self`: this never fails.
                let _ = changes.changed().await;
            }
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.send_modify(|load| {
            load.open -= 1;
            if load.open == 0 {
                load.idle_since = Instant::now();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER: Duration = Duration::from_millis(300);
    /// How late the idle time may be noticed on a busy machine.
    const SLACK: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn idle_counts_from_the_start_and_from_the_last_connection_closed() {
        let activity = Activity::default();
        let started = Instant::now();
        tokio::time::timeout(AFTER + SLACK, activity.idle_for(AFTER))
            .await
            .expect("idle from the start");
        assert!(started.elapsed() >= AFTER);

        let (first, second) = (activity.begin(), activity.begin());
        let idle = activity.idle_for(AFTER);
        tokio::pin!(idle);
        let busy = tokio::time::timeout(AFTER * 3, idle.as_mut()).await;
        assert!(busy.is_err(), "idle with two connections open");
        drop(first);
        let busy = tokio::time::timeout(AFTER * 3, idle.as_mut()).await;
        assert!(busy.is_err(), "idle with one connection open");
        drop(second);
        let closed = Instant::now();
        tokio::time::timeout(AFTER + SLACK, idle)
            .await
            .expect("idle once the last connection closed");
        assert!(closed.elapsed() >= AFTER, "counted from the close");
    }

    #[tokio::test]
    async fn zero_is_never() {
        let activity = Activity::default();
        let never = activity.idle_for(Duration::ZERO);
        assert!(tokio::time::timeout(AFTER * 2, never).await.is_err());
    }
}
