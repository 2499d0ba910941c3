//! The debug containers on this node: listed with their status, removed on request, and reaped
//! when nobody needs them any more.
//!
//! Status: `Running` while a session of this agent is attached, `Idle` when the container runs
//! with none (a retained one between sessions), `Exited (CODE)`, and `Orphaned` once its target
//! container is gone (the pod was deleted or restarted), whatever else it is.
//!
//! The reaper runs when the agent starts and every `lifecycle.reapInterval`. It removes, and
//! logs with the reason:
//! - unretained containers no session owns: their owner ([`crate::owner`]) is gone (an agent
//!   that was killed, a `local` killed with SIGKILL), or it is this agent and their session is
//!   over (a removal that failed); those of an owner in another PID namespace, which this
//!   agent cannot judge, only once their target has been gone for `lifecycle.orphanMaxAge`;
//! - retained containers orphaned for longer than `lifecycle.orphanMaxAge` (counted from when
//!   this agent first saw them orphaned);
//! - retained containers older than `lifecycle.retainedMaxAge` (unless 0).

use std::collections::HashMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use kdbg_api::{ContainerItem, ContainerStatus, PodScope};
use kdbg_runtimes::{ContainerState, DebugContainer, Error, Runtime, Target, label};
use tracing::{info, warn};

use crate::Agent;
use crate::owner::Liveness;

/// Our debug container named `name` (or with that ID).
pub async fn find(agent: &Agent, name: &str) -> Result<DebugContainer, Error> {
    agent
        .runtime
        .list()
        .await?
        .into_iter()
        .find(|c| c.name == name || c.id == name)
        .ok_or_else(|| Error::ContainerNotFound {
            name: name.to_owned(),
        })
}

fn label<'a>(c: &'a DebugContainer, key: &str) -> Option<&'a str> {
    c.labels.get(key).map(String::as_str)
}

fn in_scope(c: &DebugContainer, scope: &PodScope) -> bool {
    scope.includes(
        label(c, label::POD_NAMESPACE),
        label(c, label::POD_NAME),
        label(c, label::NODE),
    )
}

/// Whether the target of `c` is gone (not found, or not running); the node never is.
async fn orphaned(agent: &Agent, c: &DebugContainer) -> bool {
    let target = match label(c, label::TARGET).and_then(|t| t.parse::<Target>().ok()) {
        Some(Target::Container(target)) => target,
        Some(Target::Node(_)) => return false,
        None => return true,
    };
    matches!(
        agent.runtime.check_target(&target).await,
        Err(Error::TargetNotFound { .. } | Error::TargetNotRunning { .. })
    )
}

/// The debug containers in `scope`.
pub async fn find_all(agent: &Agent, scope: &PodScope) -> Result<Vec<DebugContainer>, Error> {
    Ok(agent
        .runtime
        .list()
        .await?
        .into_iter()
        .filter(|c| in_scope(c, scope))
        .collect())
}

/// The debug containers in `scope`, as `list` shows them, whoever asks (the endpoint leaves
/// out node-level ones for callers not allowed the node).
pub async fn list(agent: &Agent, scope: &PodScope) -> Result<Vec<ContainerItem>, Error> {
    let found = find_all(agent, scope).await?;
    Ok(items(agent, &found).await)
}

/// Debug containers `found`, as `list` shows them.
pub async fn items(agent: &Agent, found: &[DebugContainer]) -> Vec<ContainerItem> {
    let items = found.iter().map(|c| async move {
        let sessions = agent.live.sessions(&c.id);
        let watchers = agent.live.watchers(&c.id);
        let status = if orphaned(agent, c).await {
            ContainerStatus::Orphaned
        } else {
            match &c.state {
                ContainerState::Running if sessions.is_empty() => ContainerStatus::Idle,
                ContainerState::Running => ContainerStatus::Running,
                ContainerState::Exited { code, oom_killed } => ContainerStatus::Exited {
                    code: *code,
                    oom_killed: *oom_killed,
                },
                ContainerState::Created => ContainerStatus::Created,
                ContainerState::Other(_) => ContainerStatus::Idle,
            }
        };
        ContainerItem {
            watchers,
            ..item(c, status, sessions)
        }
    });
    join_all(items).await
}

fn item(c: &DebugContainer, status: ContainerStatus, sessions: Vec<String>) -> ContainerItem {
    let text = |key| label(c, key).map(str::to_owned);
    ContainerItem {
        name: c.name.clone(),
        id: c.id.clone(),
        image: text(label::IMAGE).unwrap_or_else(|| c.image.clone()),
        status,
        created: label(c, label::CREATED_AT)
            .and_then(|t| t.parse().ok())
            .unwrap_or_default(),
        retained: label(c, label::RETAIN) == Some("true"),
        target: text(label::TARGET).unwrap_or_default(),
        namespace: text(label::POD_NAMESPACE),
        pod: text(label::POD_NAME),
        user: text(label::USER),
        session: text(label::SESSION).unwrap_or_default(),
        sessions,
        watchers: 0,
    }
}

/// Our debug container `name`, which must be in `scope`.
pub async fn find_in(agent: &Agent, name: &str, scope: &PodScope) -> Result<DebugContainer, Error> {
    let found = find(agent, name).await?;
    if !in_scope(&found, scope) {
        // Not the pod's: as if it did not exist, so one pod's users cannot reach another's.
        return Err(Error::ContainerNotFound {
            name: name.to_owned(),
        });
    }
    Ok(found)
}

/// Removes our debug container `found`; returns what it was.
pub async fn remove(agent: &Agent, found: &DebugContainer) -> Result<ContainerItem, Error> {
    let removed = item(
        found,
        ContainerStatus::Exited {
            code: 0,
            oom_killed: false,
        },
        agent.live.sessions(&found.id),
    );
    agent.runtime.remove(&found.id).await?;
    info!(container = %found.name, "debug container removed on request");
    Ok(removed)
}

/// When the reaper first saw each container orphaned.
pub type Orphans = std::sync::Mutex<HashMap<String, Instant>>;

/// One pass of the reaper.
pub async fn reap(agent: &Agent) {
    let found = match agent.runtime.list().await {
        Ok(found) => found,
        Err(e) => {
            warn!(error = %crate::chain(&e), "reaper: listing debug containers");
            return;
        }
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut seen = Vec::new();
    for c in &found {
        seen.push(c.id.clone());
        if !agent.live.sessions(&c.id).is_empty() {
            continue;
        }
        let reason = if label(c, label::RETAIN) != Some("true") {
            let owner = label(c, label::OWNER).unwrap_or_default();
            let liveness = if owner == agent.owner {
                Liveness::Gone
            } else {
                crate::owner::liveness(owner)
            };
            match liveness {
                // Another live agent's (or `local`'s) session.
                Liveness::Alive => continue,
                Liveness::Gone => {
                    "no session owns it (what created it is gone, or its session is over)"
                        .to_owned()
                }
                // Another PID namespace's agent, alive or not: only a target gone for long
                // says the container is nobody's.
                Liveness::Unknown => match orphaned_for_long(agent, c).await {
                    Some(reason) => reason,
                    None => continue,
                },
            }
        } else if let Some(reason) = expired(agent, c, now).await {
            reason
        } else {
            continue;
        };
        match agent.runtime.remove(&c.id).await {
            Ok(()) => {
                info!(container = %c.name, target = ?label(c, label::TARGET), "reaped debug container: {reason}")
            }
            Err(e) => {
                warn!(container = %c.name, error = %crate::chain(&e), "reaper: removing debug container")
            }
        }
    }
    // Forget orphans that are gone.
    lock(&agent.orphans).retain(|id, _| seen.contains(id));
}

/// Why retained container `c` has lived long enough, if it has.
async fn expired(agent: &Agent, c: &DebugContainer, now: u64) -> Option<String> {
    let lifecycle = &agent.lifecycle;
    let created: u64 = label(c, label::CREATED_AT)?.parse().ok()?;
    let max_age = lifecycle.retained_max_age.0;
    if !max_age.is_zero() && now.saturating_sub(created) > max_age.as_secs() {
        return Some(format!(
            "retained longer than lifecycle.retainedMaxAge ({})",
            lifecycle.retained_max_age
        ));
    }
    orphaned_for_long(agent, c).await
}

/// Why container `c` is nobody's, if its target has been gone for longer than
/// `lifecycle.orphanMaxAge` (counted from when this agent first saw it gone).
async fn orphaned_for_long(agent: &Agent, c: &DebugContainer) -> Option<String> {
    let lifecycle = &agent.lifecycle;
    if orphaned(agent, c).await {
        let first = *lock(&agent.orphans)
            .entry(c.id.clone())
            .or_insert_with(Instant::now);
        if first.elapsed() >= lifecycle.orphan_max_age.0 {
            return Some(format!(
                "its target is gone, for longer than lifecycle.orphanMaxAge ({})",
                lifecycle.orphan_max_age
            ));
        }
    } else {
        lock(&agent.orphans).remove(&c.id);
    }
    None
}

fn lock(orphans: &Orphans) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
    orphans
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
