//! The containerd backend, through containerd-client (gRPC over containerd's socket).
//!
//! So far this reaches containerd and reads its targets: a pod's container in the configured
//! namespace (`k8s.io` on Kubernetes nodes), its task's state and PID (the PID gives the
//! `/proc/<pid>/ns/*` paths a debug container joins), and the debug containers in our own
//! namespace. Creating debug containers (client-side image pull, snapshots, the OCI spec,
//! FIFOs, tasks) comes next; until then [`ContainerdRuntime`] does not implement
//! [`crate::Runtime`] and the agent refuses `runtime.kind: containerd`.

use std::collections::BTreeMap;

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::version_client::VersionClient;
use containerd_client::services::v1::{GetContainerRequest, GetRequest, ListContainersRequest};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request};
use containerd_client::types::v1::Status as TaskStatus;
use containerd_client::with_namespace;

use crate::{DebugContainer, Error, RuntimeKind, TargetRef, label};

/// The containerd namespace debug containers live in, apart from the pods' containers.
pub const DEBUG_NAMESPACE: &str = "kubectl-debug";
/// The namespace Kubernetes' containers live in.
pub const KUBERNETES_NAMESPACE: &str = "k8s.io";

/// A containerd reached over its socket.
#[derive(Debug, Clone)]
pub struct ContainerdRuntime {
    channel: Channel,
    endpoint: String,
    /// Where the targets live.
    namespace: String,
    /// containerd's version, as it reports it.
    version: String,
}

fn call(
    operation: &'static str,
    object: impl Into<String>,
) -> impl FnOnce(containerd_client::tonic::Status) -> Error {
    let object = object.into();
    move |e| Error::Call {
        operation,
        object,
        source: Box::new(e),
    }
}

impl ContainerdRuntime {
    /// Connects to containerd at `endpoint` (a path, `unix://` accepted), with targets in
    /// `namespace`, and asks its version to prove it answers.
    pub async fn connect(endpoint: &str, namespace: &str) -> Result<ContainerdRuntime, Error> {
        let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
        let fail = |source: Box<dyn std::error::Error + Send + Sync>| Error::Connect {
            runtime: "containerd",
            endpoint: endpoint.to_owned(),
            source,
        };
        let channel = containerd_client::connect(path)
            .await
            .map_err(|e| fail(Box::new(e)))?;
        let version = VersionClient::new(channel.clone())
            .version(())
            .await
            .map_err(|e| fail(Box::new(e)))?
            .into_inner()
            .version;
        Ok(ContainerdRuntime {
            channel,
            endpoint: endpoint.to_owned(),
            namespace: namespace.to_owned(),
            version,
        })
    }

    /// containerd's version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The PID of `target`'s running task, after checking it can be joined.
    pub async fn target_pid(&self, target: &TargetRef) -> Result<u32, Error> {
        if target.kind != RuntimeKind::Containerd {
            return Err(Error::WrongRuntime {
                target: target.clone(),
                runtime: "containerd",
            });
        }
        let found = ContainersClient::new(self.channel.clone())
            .get(with_namespace!(
                GetContainerRequest {
                    id: target.id.clone()
                },
                self.namespace.as_str()
            ))
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
            .get(with_namespace!(
                GetRequest {
                    container_id: target.id.clone(),
                    exec_id: String::new(),
                },
                self.namespace.as_str()
            ))
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

    /// The debug containers in [`DEBUG_NAMESPACE`].
    pub async fn list(&self) -> Result<Vec<DebugContainer>, Error> {
        let request = ListContainersRequest {
            filters: vec![format!("labels.\"{}\"", label::SESSION)],
        };
        let found = ContainersClient::new(self.channel.clone())
            .list(with_namespace!(request, DEBUG_NAMESPACE))
            .await
            .map_err(call("listing debug containers on", self.endpoint.clone()))?
            .into_inner()
            .containers;
        Ok(found
            .into_iter()
            .map(|c| DebugContainer {
                name: c.id.clone(),
                id: c.id,
                image: c.image,
                state: String::new(),
                labels: c.labels.into_iter().collect::<BTreeMap<_, _>>(),
            })
            .collect())
    }
}
