//! The agent's state: the runtime, the settings it was started with, and what its sessions,
//! connections and reaper share.

use std::sync::Arc;
use std::time::Duration;

use kdbg_runtimes::{AnyRuntime, Runtime};
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
}
