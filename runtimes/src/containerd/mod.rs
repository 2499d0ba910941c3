//! The containerd backend, through containerd-client (gRPC over containerd's socket).
//!
//! Targets are the pods' containers in the configured namespace (`k8s.io` on Kubernetes
//! nodes); their running task's PID gives the `/proc/<pid>/ns/*` paths a debug container
//! joins. Debug containers live in [`DEBUG_NAMESPACE`] and never touch the pods' containers.
//!
//! containerd 1.x has no server-side pull, so images are pulled here ([`image`]): manifests and
//! blobs from the registry ([`registry`], with [`credentials`] and the OCI image model of
//! [`oci_image`]) into containerd's content store, layers unpacked into the snapshotter by
//! containerd's diff service. A container is a snapshot prepared on the image's top layer plus
//! an OCI runtime spec ([`runtime_spec`]); its task's stdio goes through FIFOs ([`stdio`]).
//! Everything is created under a lease, so an agent dying half-way leaves nothing containerd
//! keeps for long.

mod container;
pub mod credentials;
pub mod hosts;
mod image;
mod lease;
mod oci_image;
mod process;
pub mod registry;
pub mod runtime_spec;
pub(crate) mod stdio;
mod target_files;
mod target_image;
mod task;

pub use credentials::{Auths, Credentials, CredentialsError};
pub use oci_image::node_platform;
pub use runtime_spec::SpecError;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use containerd_client::services::v1::GetNamespaceRequest;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::namespaces_client::NamespacesClient;
use containerd_client::services::v1::version_client::VersionClient;
use containerd_client::services::v1::{
    Container, DeleteContainerRequest, GetContainerRequest, ListContainersRequest,
};
use containerd_client::tonic::metadata::MetadataValue;
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request};
use kdbg_relay::TerminalSize;
use tokio::sync::{Mutex, mpsc};

use self::registry::Registry;
use crate::{
    Created, DebugContainer, DebugSpec, Error, ImageConfig, Process, ProcessSpec, PullPolicy,
    PullProgress, Runtime, TargetInfo, TargetRef, label,
};

/// The containerd namespace debug containers (and their images) live in, apart from the pods'.
pub const DEBUG_NAMESPACE: &str = "kubectl-debug";
/// The namespace Kubernetes' containers live in.
pub const KUBERNETES_NAMESPACE: &str = "k8s.io";
/// containerd's snapshotter unless configured otherwise.
pub const DEFAULT_SNAPSHOTTER: &str = "overlayfs";
/// Where the debug containers' FIFOs are made unless configured otherwise. containerd's shim
/// opens them by path, so the agent and the node must see the same directory.
pub const DEFAULT_FIFO_DIR: &str = "/run/kubectl-debug/fifo";
/// The shim that runs debug containers.
const RUNC_SHIM: &str = "io.containerd.runc.v2";

/// How to reach containerd and where things go.
#[derive(Debug, Clone)]
pub struct ContainerdOptions {
    /// The socket, a path (`unix://` accepted).
    pub endpoint: String,
    /// The namespace the targets live in.
    pub namespace: String,
    /// The snapshotter images are unpacked into.
    pub snapshotter: String,
    /// Registries (`host[:port]`) spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Registry credentials.
    pub auths: Auths,
    /// Where FIFOs are made.
    pub fifo_dir: PathBuf,
    /// The namespace of the debug containers: [`DEBUG_NAMESPACE`], or Docker's `moby` when
    /// this client only runs processes in a Docker engine's containers.
    pub debug_namespace: String,
    /// The node's registry host configuration (mirrors) and the agent's own.
    pub hosts: hosts::HostsSources,
    /// Sessions' processes are started by each debug container's own `kdbg-init hold`
    /// (its spawner, in `<fifo_dir>/<container>/spawn`) rather than exec'd: see
    /// [`crate::spawn`]. Off: every session is exec'd through containerd.
    pub spawner: bool,
}

impl ContainerdOptions {
    /// Options with the defaults for everything but the endpoint.
    pub fn new(endpoint: &str) -> ContainerdOptions {
        ContainerdOptions {
            endpoint: endpoint.to_owned(),
            namespace: KUBERNETES_NAMESPACE.to_owned(),
            snapshotter: DEFAULT_SNAPSHOTTER.to_owned(),
            insecure_registries: Vec::new(),
            auths: Auths::default(),
            fifo_dir: PathBuf::from(DEFAULT_FIFO_DIR),
            debug_namespace: DEBUG_NAMESPACE.to_owned(),
            spawner: true,
            // Where containerd's own client looks, and k3s's file: read if they exist.
            hosts: hosts::HostsSources {
                config_path: Some(PathBuf::from(hosts::DEFAULT_CONFIG_PATH)),
                k3s_registries: Some(PathBuf::from(hosts::K3S_REGISTRIES)),
                mirrors: hosts::MirrorsConfig::default(),
            },
        }
    }
}

/// Which containerd namespace a request is in: ours ([`DEBUG_NAMESPACE`]) or the targets'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Space {
    /// [`DEBUG_NAMESPACE`]: debug containers and their images.
    Debug,
    /// The targets' namespace ([`ContainerdOptions::namespace`]).
    Targets,
}

/// A containerd reached over its socket.
#[derive(Debug, Clone)]
pub struct ContainerdRuntime {
    channel: Channel,
    options: Arc<ContainerdOptions>,
    registry: Registry,
    /// containerd's version, as it reports it.
    version: String,
    /// One pull at a time per image: two sessions wanting the same image share the download,
    /// and content writes never contend for the same ref; other images are not held up.
    pulls: Arc<Mutex<HashMap<String, Arc<Mutex<()>>>>>,
    /// Processes whose output we still read, by `<container>/<exec ID>`: told when our
    /// readers are gone (see [`process::Outputs`]).
    outputs: process::Outputs,
    /// Started processes' exits, awaited from before they started.
    exits: process::Exits,
    /// Sessions started by their containers' spawners.
    spawner: crate::spawn::Spawner,
}

/// Maps a gRPC error to ours, naming the operation and the object.
fn call(
    operation: &'static str,
    object: impl Into<String>,
) -> impl FnOnce(containerd_client::tonic::Status) -> Error {
    let object = object.into();
    move |e| Error::Call {
        operation,
        object,
        source: Box::new(StatusMessage(e)),
    }
}

/// A gRPC status shown as containerd's message (tonic's own `Display` adds its metadata).
#[derive(Debug)]
struct StatusMessage(containerd_client::tonic::Status);

impl std::fmt::Display for StatusMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({:?})", self.0.message(), self.0.code())
    }
}

impl std::error::Error for StatusMessage {}

/// The error for a debug container name that is in use.
fn name_taken(id: &str, e: containerd_client::tonic::Status) -> Error {
    Error::NameTaken {
        name: id.to_owned(),
        source: Box::new(StatusMessage(e)),
    }
}

/// "Not found" as [`Error::ContainerNotFound`], anything else as a failed `operation`.
fn not_found_or(id: &str, e: containerd_client::tonic::Status, operation: &'static str) -> Error {
    if e.code() == Code::NotFound {
        Error::ContainerNotFound {
            name: id.to_owned(),
        }
    } else {
        call(operation, id)(e)
    }
}

/// Ignores "not found": removing what is already gone succeeds.
fn gone_ok<T>(
    result: Result<T, containerd_client::tonic::Status>,
) -> Result<(), containerd_client::tonic::Status> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Code::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// A unique enough suffix for IDs and refs: the clock and the process.
fn unique() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{:x}{:x}{:04x}",
        now.as_secs(),
        now.subsec_nanos(),
        std::process::id() & 0xffff
    )
}

/// containerd's identifier rule: `[A-Za-z0-9]+([._-][A-Za-z0-9]+)*`, at most 76 characters.
fn valid_id(id: &str) -> bool {
    id.len() <= 76
        && id
            .split(['.', '_', '-'])
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric()))
}

impl ContainerdRuntime {
    /// Connects to containerd at `endpoint` (a path, `unix://` accepted), with targets in
    /// `namespace` and defaults for the rest, and asks its version to prove it answers.
    pub async fn connect(endpoint: &str, namespace: &str) -> Result<ContainerdRuntime, Error> {
        let mut options = ContainerdOptions::new(endpoint);
        options.namespace = namespace.to_owned();
        ContainerdRuntime::connect_with(options).await
    }

    /// Connects with `options`.
    pub async fn connect_with(options: ContainerdOptions) -> Result<ContainerdRuntime, Error> {
        let endpoint = options.endpoint.clone();
        let path = endpoint.strip_prefix("unix://").unwrap_or(&endpoint);
        let fail = |source: Box<dyn std::error::Error + Send + Sync>| Error::Connect {
            runtime: "containerd",
            endpoint: endpoint.clone(),
            source,
        };
        let channel = containerd_client::connect(path)
            .await
            .map_err(|e| fail(Box::new(e)))?;
        let version = VersionClient::new(channel.clone())
            .version(())
            .await
            .map_err(|e| fail(Box::new(StatusMessage(e))))?
            .into_inner()
            .version;
        let registry = Registry::new(
            options.insecure_registries.clone(),
            options.auths.clone(),
            options.hosts.clone(),
        );
        Ok(ContainerdRuntime {
            channel,
            options: Arc::new(options),
            registry,
            version,
            pulls: Arc::default(),
            outputs: process::Outputs::default(),
            exits: process::Exits::default(),
            spawner: crate::spawn::Spawner::default(),
        })
    }

    /// Whether the targets' namespace exists in this containerd. Docker's own containerd
    /// answers on the usual socket too, but has no `k8s.io`: this tells them apart.
    pub async fn has_target_namespace(&self) -> Result<bool, Error> {
        let got = NamespacesClient::new(self.channel.clone())
            .get(Request::new(GetNamespaceRequest {
                name: self.options.namespace.clone(),
            }))
            .await;
        match got {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Code::NotFound => Ok(false),
            Err(e) => Err(call("looking up namespace", self.options.namespace.clone())(e)),
        }
    }

    /// containerd's version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// A request in the debug containers' namespace ([`DEBUG_NAMESPACE`]), under `lease` if
    /// given.
    fn request<T>(&self, message: T, lease: Option<&str>) -> Request<T> {
        let mut request = Request::new(message);
        let metadata = request.metadata_mut();
        let namespace = MetadataValue::try_from(self.options.debug_namespace.as_str())
            .unwrap_or(MetadataValue::from_static(DEBUG_NAMESPACE));
        metadata.insert("containerd-namespace", namespace);
        if let Some(lease) = lease.and_then(|l| MetadataValue::try_from(l).ok()) {
            metadata.insert("containerd-lease", lease);
        }
        request
    }

    /// A request in namespace `space`.
    fn request_in<T>(&self, space: Space, message: T) -> Request<T> {
        match space {
            Space::Debug => self.request(message, None),
            Space::Targets => self.target_request(message),
        }
    }

    /// A request in the targets' namespace.
    fn target_request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Ok(ns) = MetadataValue::try_from(self.options.namespace.as_str()) {
            request.metadata_mut().insert("containerd-namespace", ns);
        }
        request
    }
}

impl Runtime for ContainerdRuntime {
    async fn check_target(&self, target: &TargetRef) -> Result<TargetInfo, Error> {
        self.target_info(target).await
    }

    async fn ensure_image(
        &self,
        image: &str,
        policy: PullPolicy,
        progress: Option<mpsc::Sender<PullProgress>>,
        options: crate::PullOptions<'_>,
    ) -> Result<(), Error> {
        let key = crate::Reference::parse(image)
            .map(|r| r.to_string())
            .unwrap_or_else(|_| image.to_owned());
        let lock = self.pulls.lock().await.entry(key).or_default().clone();
        let _one_at_a_time = lock.lock().await;
        let lease = self.lease("pull").await?;
        let result = self
            .ensure_image_under(image, policy, progress, options, &lease)
            .await;
        self.end_lease(&lease).await;
        result
    }

    async fn create(&self, spec: &DebugSpec) -> Result<Created, Error> {
        let id = spec.name.clone();
        // The ID names a directory on the node too: only containerd's identifiers pass.
        if !valid_id(&id) {
            return Err(Error::Call {
                operation: "creating debug container",
                object: id,
                source: "containerd names are letters and digits, separated by single '.', '_' or '-', at most 76 characters; choose another --name".into(),
            });
        }
        let lease = self.lease("create").await?;
        let result = self.create_under(spec, &id, &lease).await;
        // The container now holds its snapshot; the lease only covered the making.
        self.end_lease(&lease).await;
        result?;
        Ok(Created {
            id,
            warnings: Vec::new(),
        })
    }

    async fn start(&self, id: &str) -> Result<(), Error> {
        self.start_holder(id).await
    }

    async fn exec(&self, id: &str, process: &ProcessSpec) -> Result<Process, Error> {
        if self.options.spawner
            && let Some(spawned) = self.spawner.spawn(&self.spawn_dir(id), id, process).await
        {
            return spawned;
        }
        self.exec_process(id, process).await
    }

    async fn resize(&self, id: &str, exec: &str, size: TerminalSize) -> Result<(), Error> {
        if let Some(resized) = self.spawner.resize(exec, size) {
            return resized.map_err(|e| Error::Call {
                operation: "resizing the terminal of debug container",
                object: id.to_owned(),
                source: Box::new(e),
            });
        }
        self.resize_process(id, exec, size).await
    }

    async fn wait(&self, id: &str, exec: &str) -> Result<i64, Error> {
        if let Some(code) = self.spawner.wait(exec).await {
            return Ok(code);
        }
        self.wait_process(id, exec).await
    }

    async fn signal(&self, id: &str, session: &str, signal: i32) -> Result<(), Error> {
        if self.spawner.signal(session, signal) {
            return Ok(());
        }
        // A session's exec ID is its ID.
        self.signal_process(id, session, signal).await
    }

    async fn inspect(&self, id: &str) -> Result<DebugContainer, Error> {
        let container = ContainersClient::new(self.channel.clone())
            .get(self.request(GetContainerRequest { id: id.to_owned() }, None))
            .await
            .map_err(|e| not_found_or(id, e, "looking up debug container"))?
            .into_inner()
            .container
            .ok_or_else(|| Error::ContainerNotFound {
                name: id.to_owned(),
            })?;
        self.described(container).await
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), Error> {
        // The task and its shim go, and the container's directory (FIFOs, copied files) with
        // them; the container and its snapshot stay, and the exit code in a label.
        self.delete_task(id, grace).await?;
        let _ = std::fs::remove_dir_all(self.options.fifo_dir.join(id));
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), Error> {
        self.delete_task(id, Duration::ZERO).await?;
        self.outputs.forget_container(id);
        gone_ok(
            ContainersClient::new(self.channel.clone())
                .delete(self.request(DeleteContainerRequest { id: id.to_owned() }, None))
                .await,
        )
        .map_err(call("removing debug container", id))?;
        self.remove_filesystem(id).await;
        Ok(())
    }

    async fn list(&self) -> Result<Vec<DebugContainer>, Error> {
        let request = ListContainersRequest {
            filters: vec![format!("labels.\"{}\"", label::SESSION)],
        };
        let found = ContainersClient::new(self.channel.clone())
            .list(self.request(request, None))
            .await
            .map_err(call(
                "listing debug containers on",
                self.options.endpoint.clone(),
            ))?
            .into_inner()
            .containers;
        let mut list = Vec::with_capacity(found.len());
        for c in found {
            list.push(self.described(c).await?);
        }
        Ok(list)
    }

    async fn image_config(&self, target: &TargetRef) -> Result<ImageConfig, Error> {
        self.target_image_config(target).await
    }
}

impl ContainerdRuntime {
    /// A container record as [`DebugContainer`], with its task's state.
    async fn described(&self, c: Container) -> Result<DebugContainer, Error> {
        let state = self.state(&c.id, &c.labels).await?;
        Ok(DebugContainer {
            name: c.id.clone(),
            state,
            id: c.id,
            image: c.image,
            labels: c.labels.into_iter().collect::<BTreeMap<_, _>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_containerds_rule() {
        for good in ["kdbg-6b094e304f11764e4", "a", "a.b_c-d", "dup"] {
            assert!(valid_id(good), "{good}");
        }
        for bad in [
            "",
            "..",
            "a..b",
            "-a",
            "a-",
            "a/b",
            "../etc",
            &"a".repeat(77),
        ] {
            assert!(!valid_id(bad), "{bad}");
        }
    }
}
