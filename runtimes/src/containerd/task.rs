//! Tasks: a target's running task (whose PID gives the namespaces a debug container joins),
//! and a debug container's task, stopped gracefully and deleted.

use std::time::Duration;

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    DeleteTaskRequest, GetContainerRequest, GetRequest, KillRequest, WaitRequest,
};
use containerd_client::tonic::Code;
use containerd_client::types::v1::Status as TaskStatus;

use super::{ContainerdRuntime, call, gone_ok};
use crate::{ContainerState, Error, RuntimeKind, Target, TargetRef, label};

/// A process whose namespaces are the node's: the kernel's `kthreadd` (PID 2), which always
/// lives in the initial namespaces, when it is there to see (the agent runs in the node's PID
/// namespace, hostPID); else PID 1, the node's init (which may refuse to be joined or
/// inspected, as some sandboxes' does).
pub fn node_pid() -> u32 {
    match std::fs::read_to_string("/proc/2/comm") {
        Ok(comm) if comm.trim() == "kthreadd" => 2,
        _ => 1,
    }
}

/// How long to wait for a task to stop after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(10);

impl ContainerdRuntime {
    /// The PID whose namespaces a debug container of `target` joins: its running task's
    /// (checked as [`Self::target_pid`] does), or for the node, [`node_pid`].
    pub async fn pid_to_join(&self, target: &Target) -> Result<u32, Error> {
        match target {
            Target::Container(target) => self.target_pid(target).await,
            Target::Node(_) => Ok(node_pid()),
        }
    }

    /// The PID of `target`'s running task, after checking it can be joined.
    pub async fn target_pid(&self, target: &TargetRef) -> Result<u32, Error> {
        let info = self.target_info(target).await?;
        Ok(info.pid.unwrap_or_default())
    }

    /// The labels and main process of `target`, if it runs.
    pub async fn target_info(&self, target: &TargetRef) -> Result<crate::TargetInfo, Error> {
        if target.kind != RuntimeKind::Containerd {
            return Err(Error::WrongRuntime {
                target: target.clone(),
                runtime: "containerd",
            });
        }
        let found = ContainersClient::new(self.channel.clone())
            .get(self.target_request(GetContainerRequest {
                id: target.id.clone(),
            }))
            .await;
        let labels = match found {
            Ok(found) => found
                .into_inner()
                .container
                .map(|c| c.labels.into_iter().collect())
                .unwrap_or_default(),
            Err(e) if e.code() == Code::NotFound => {
                return Err(Error::TargetNotFound {
                    target: target.clone(),
                });
            }
            Err(e) => return Err(call("looking up target container", target.to_string())(e)),
        };
        let task = TasksClient::new(self.channel.clone())
            .get(self.target_request(GetRequest {
                container_id: target.id.clone(),
                exec_id: String::new(),
            }))
            .await;
        let process = match task {
            Ok(response) => response.into_inner().process,
            // A container without a task was never started, or its task is gone.
            Err(e) if e.code() == Code::NotFound => None,
            Err(e) => return Err(call("looking up the task of", target.to_string())(e)),
        };
        let Some(process) = process else {
            return Err(Error::TargetNotRunning {
                target: target.clone(),
                state: "created, with no task".into(),
            });
        };
        let status = TaskStatus::try_from(process.status).unwrap_or(TaskStatus::Unknown);
        if status != TaskStatus::Running {
            return Err(Error::TargetNotRunning {
                target: target.clone(),
                state: status.as_str_name().to_lowercase(),
            });
        }
        Ok(crate::TargetInfo {
            labels,
            pid: Some(process.pid),
        })
    }

    /// The status of a container's task and its exit code, or `None` when it has no task.
    pub(super) async fn task_status(&self, id: &str) -> Result<Option<(TaskStatus, u32)>, Error> {
        let task = TasksClient::new(self.channel.clone())
            .get(self.request(
                GetRequest {
                    container_id: id.to_owned(),
                    exec_id: String::new(),
                },
                None,
            ))
            .await;
        match task.map(|r| r.into_inner().process) {
            Ok(Some(p)) => Ok(Some((
                TaskStatus::try_from(p.status).unwrap_or(TaskStatus::Unknown),
                p.exit_status,
            ))),
            Ok(None) => Ok(None),
            Err(e) if e.code() == Code::NotFound => Ok(None),
            Err(e) => Err(call("looking up the task of debug container", id)(e)),
        }
    }

    /// The state of a debug container with these labels: its task's, or, once a stopped
    /// task is deleted, what it recorded ([`label::EXIT_CODE`]).
    pub(super) async fn state(
        &self,
        id: &str,
        labels: &std::collections::HashMap<String, String>,
    ) -> Result<ContainerState, Error> {
        Ok(match self.task_status(id).await? {
            Some((TaskStatus::Running, _)) => ContainerState::Running,
            Some((TaskStatus::Created, _)) => ContainerState::Created,
            Some((TaskStatus::Stopped, code)) => ContainerState::Exited {
                code: i64::from(code),
                oom_killed: false,
            },
            Some((other, _)) => ContainerState::Other(other.as_str_name().to_lowercase()),
            None => match labels.get(label::EXIT_CODE).and_then(|c| c.parse().ok()) {
                Some(code) => ContainerState::Exited {
                    code,
                    oom_killed: false,
                },
                None => ContainerState::Created,
            },
        })
    }

    /// Stops the task (if any): SIGTERM, then SIGKILL if it has not stopped after `grace`
    /// (no SIGTERM with no grace); waits, bounded, for it to stop; then deletes it.
    pub(super) async fn delete_task(&self, id: &str, grace: Duration) -> Result<(), Error> {
        let mut signals = Vec::with_capacity(2);
        if !grace.is_zero() {
            signals.push((15, grace));
        }
        signals.push((9, KILL_WAIT));
        for (signal, wait_for) in signals {
            if self.kill_and_wait(id, signal, wait_for).await? {
                break;
            }
        }
        // The exit code goes with the task: the container keeps it in a label.
        if let Ok(Some((TaskStatus::Stopped, code))) = self.task_status(id).await {
            self.record_exit(id, code).await;
        }
        gone_ok(
            TasksClient::new(self.channel.clone())
                .delete(self.request(
                    DeleteTaskRequest {
                        container_id: id.to_owned(),
                    },
                    None,
                ))
                .await,
        )
        .map_err(call("deleting the task of debug container", id))
    }

    /// Sends `signal` to every process of the task and waits at most `wait_for` for it to
    /// stop. Returns whether it has (or there is no running task).
    pub(super) async fn kill_and_wait(
        &self,
        id: &str,
        signal: u32,
        wait_for: Duration,
    ) -> Result<bool, Error> {
        let mut tasks = TasksClient::new(self.channel.clone());
        let killed = tasks
            .kill(self.request(
                KillRequest {
                    container_id: id.to_owned(),
                    exec_id: String::new(),
                    signal,
                    all: true,
                },
                None,
            ))
            .await;
        match killed {
            Ok(_) => {}
            // No task, or one that is not running (created, or stopped already).
            Err(e) if matches!(e.code(), Code::NotFound | Code::FailedPrecondition) => {
                return Ok(true);
            }
            Err(e) => return Err(call("killing the task of debug container", id)(e)),
        }
        let wait = tasks.wait(self.request(
            WaitRequest {
                container_id: id.to_owned(),
                exec_id: String::new(),
            },
            None,
        ));
        Ok(tokio::time::timeout(wait_for, wait).await.is_ok())
    }

    /// Records a stopped task's exit code on its container.
    async fn record_exit(&self, id: &str, code: u32) {
        let container = containerd_client::services::v1::Container {
            id: id.to_owned(),
            labels: std::collections::HashMap::from([(
                label::EXIT_CODE.to_owned(),
                code.to_string(),
            )]),
            ..Default::default()
        };
        let updated = ContainersClient::new(self.channel.clone())
            .update(self.request(
                containerd_client::services::v1::UpdateContainerRequest {
                    container: Some(container),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec![format!("labels.{}", label::EXIT_CODE)],
                    }),
                },
                None,
            ))
            .await;
        if let Err(e) = updated {
            tracing::debug!(container = id, error = %super::StatusMessage(e), "recording the exit code");
        }
    }
}
