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
use crate::{Error, RuntimeKind, TargetRef};

/// How long to wait for a task to stop after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(10);

impl ContainerdRuntime {
    /// The PID of `target`'s running task, after checking it can be joined.
    pub async fn target_pid(&self, target: &TargetRef) -> Result<u32, Error> {
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
        match found {
            Ok(_) => {}
            Err(e) if e.code() == Code::NotFound => {
                return Err(Error::TargetNotFound {
                    target: target.clone(),
                });
            }
            Err(e) => return Err(call("looking up target container", target.to_string())(e)),
        }
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
        Ok(process.pid)
    }

    /// The state of a debug container's task: `running`, `stopped`, ..., or `created` when
    /// it has none.
    pub(super) async fn task_state(&self, id: &str) -> String {
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
            Ok(Some(p)) => TaskStatus::try_from(p.status)
                .unwrap_or(TaskStatus::Unknown)
                .as_str_name()
                .to_lowercase(),
            Ok(None) | Err(_) => "created".into(),
        }
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
}
