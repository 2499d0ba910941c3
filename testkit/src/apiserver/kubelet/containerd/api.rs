//! What the stand-in asks containerd over its gRPC API, where `ctr` says too little: a task's
//! state with its exit status and time (`ctr task ls` shows neither), and a container's
//! runtime spec read and written back.

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{GetContainerRequest, GetRequest, UpdateContainerRequest};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request};
use containerd_client::types::v1::Status;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;

/// The namespace the pods' containers live in.
const NAMESPACE: &str = "k8s.io";

/// A container's task, as containerd's Tasks service has it.
#[derive(Debug, Clone)]
pub(crate) struct Task {
    pub status: Status,
    pub pid: u32,
    pub exit_status: u32,
    pub exited_at: Option<Time>,
}

/// What containerd has of a container.
#[derive(Debug, Clone)]
pub(crate) enum Found {
    /// No such container.
    Gone,
    /// The container, without a task.
    NoTask,
    Task(Task),
}

/// A connection to containerd at `socket`, for one worker's question at a time: a runtime of
/// its own, so that it serves the kubelet's threads and never nests in the API server's.
pub(crate) struct Api {
    runtime: tokio::runtime::Runtime,
    channel: Channel,
}

fn request<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("containerd-namespace", NAMESPACE.parse().expect("ASCII"));
    request
}

impl Api {
    /// Connects to containerd at `socket`.
    pub fn connect(socket: &str) -> Result<Api, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("a runtime for containerd's API: {e}"))?;
        let channel = runtime
            .block_on(containerd_client::connect(socket))
            .map_err(|e| format!("connecting to containerd at {socket}: {e}"))?;
        Ok(Api { runtime, channel })
    }

    /// Container `id`'s task, if it has one and exists.
    pub fn find(&self, id: &str) -> Result<Found, String> {
        let get = GetRequest {
            container_id: id.to_owned(),
            exec_id: String::new(),
        };
        let got = self
            .runtime
            .block_on(TasksClient::new(self.channel.clone()).get(request(get)));
        match got.map(|r| r.into_inner().process) {
            Ok(Some(p)) => Ok(Found::Task(Task {
                status: Status::try_from(p.status).unwrap_or(Status::Unknown),
                pid: p.pid,
                exit_status: p.exit_status,
                exited_at: p.exited_at.and_then(|t| {
                    let t = k8s_openapi::jiff::Timestamp::new(t.seconds, t.nanos).ok()?;
                    (t.as_second() > 0).then_some(Time(t))
                }),
            })),
            Ok(None) => Ok(Found::NoTask),
            Err(e) if e.code() == Code::NotFound => match self.spec(id) {
                Ok(_) => Ok(Found::NoTask),
                Err(None) => Ok(Found::Gone),
                Err(Some(e)) => Err(e),
            },
            Err(e) => Err(format!("getting the task of {id}: {}", e.message())),
        }
    }

    /// Container `id`'s runtime spec: `Err(None)` if there is no such container.
    pub fn spec(&self, id: &str) -> Result<Value, Option<String>> {
        let get = GetContainerRequest { id: id.to_owned() };
        let got = self
            .runtime
            .block_on(ContainersClient::new(self.channel.clone()).get(request(get)));
        let container = match got {
            Ok(r) => r.into_inner().container.unwrap_or_default(),
            Err(e) if e.code() == Code::NotFound => return Err(None),
            Err(e) => return Err(Some(format!("getting container {id}: {}", e.message()))),
        };
        let spec = container.spec.unwrap_or_default();
        serde_json::from_slice(&spec.value)
            .map_err(|e| Some(format!("the runtime spec of {id}: {e}")))
    }

    /// Writes `spec` as container `id`'s runtime spec.
    pub fn set_spec(&self, id: &str, spec: &Value) -> Result<(), String> {
        let get = GetContainerRequest { id: id.to_owned() };
        let mut containers = ContainersClient::new(self.channel.clone());
        self.runtime.block_on(async {
            let got = containers.get(request(get)).await;
            let mut container = got
                .map_err(|e| format!("getting container {id}: {}", e.message()))?
                .into_inner()
                .container
                .unwrap_or_default();
            let mut any = container.spec.unwrap_or_default();
            any.value = serde_json::to_vec(spec).map_err(|e| e.to_string())?;
            container.spec = Some(any);
            let update = UpdateContainerRequest {
                container: Some(container),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["spec".into()],
                }),
            };
            containers
                .update(request(update))
                .await
                .map(drop)
                .map_err(|e| format!("updating container {id}: {}", e.message()))
        })
    }
}
