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

pub mod credentials;
mod image;
mod oci_image;
pub mod registry;
pub mod runtime_spec;
mod stdio;
mod target_files;

pub use credentials::{Auths, Credentials, CredentialsError};

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use containerd_client::services::v1::GetNamespaceRequest;
use containerd_client::services::v1::container::Runtime as ContainerRuntime;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::namespaces_client::NamespacesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
};
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::version_client::VersionClient;
use containerd_client::services::v1::{
    CloseIoRequest, Container, CreateContainerRequest, CreateRequest as CreateLeaseRequest,
    CreateTaskRequest, DeleteContainerRequest, DeleteRequest as DeleteLeaseRequest,
    DeleteTaskRequest, GetContainerRequest, GetRequest, KillRequest, ListContainersRequest,
    ResizePtyRequest, StartRequest, WaitRequest,
};
use containerd_client::tonic::metadata::MetadataValue;
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request};
use containerd_client::types::v1::Status as TaskStatus;
use kdbg_relay::TerminalSize;
use tokio::sync::{Mutex, mpsc};

use self::registry::Registry;
use crate::{
    Created, DebugContainer, DebugSpec, Error, PullPolicy, PullProgress, Runtime, RuntimeKind,
    Stdio, TargetRef, label,
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
/// How long a lease outlives an agent that died holding it.
const LEASE_TTL: Duration = Duration::from_secs(3600);
/// How long to wait for a task to stop after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(10);

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
        }
    }
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
    /// The target PID each created container is to join, checked again once it has joined.
    joined: Arc<Mutex<HashMap<String, u32>>>,
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
    Error::Call {
        operation: "creating debug container (the name is taken; choose another with --name, or remove the old one)",
        object: id.to_owned(),
        source: Box::new(StatusMessage(e)),
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

/// `t` as RFC 3339 UTC, e.g. `2026-11-27T09:18:04Z`.
fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
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
        let registry = Registry::new(options.insecure_registries.clone(), options.auths.clone());
        Ok(ContainerdRuntime {
            channel,
            options: Arc::new(options),
            registry,
            version,
            pulls: Arc::default(),
            joined: Arc::default(),
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

    /// A request in [`DEBUG_NAMESPACE`], under `lease` if given.
    fn request<T>(&self, message: T, lease: Option<&str>) -> Request<T> {
        let mut request = Request::new(message);
        let metadata = request.metadata_mut();
        metadata.insert(
            "containerd-namespace",
            MetadataValue::from_static(DEBUG_NAMESPACE),
        );
        if let Some(lease) = lease.and_then(|l| MetadataValue::try_from(l).ok()) {
            metadata.insert("containerd-lease", lease);
        }
        request
    }

    /// A request in the targets' namespace.
    fn target_request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Ok(ns) = MetadataValue::try_from(self.options.namespace.as_str()) {
            request.metadata_mut().insert("containerd-namespace", ns);
        }
        request
    }

    /// Creates a lease that keeps what is made under it from containerd's garbage collector,
    /// and expires on its own should we die before deleting it.
    async fn lease(&self, purpose: &'static str) -> Result<String, Error> {
        let id = format!("kubectl-debug-{purpose}-{}", unique());
        let expire = rfc3339(SystemTime::now() + LEASE_TTL);
        let request = CreateLeaseRequest {
            id: id.clone(),
            labels: HashMap::from([("containerd.io/gc.expire".to_owned(), expire)]),
        };
        LeasesClient::new(self.channel.clone())
            .create(self.request(request, None))
            .await
            .map_err(call("creating a containerd lease for", purpose))?;
        Ok(id)
    }

    /// Ends a lease; what it held stays if something else references it.
    async fn end_lease(&self, lease: &str) {
        let request = DeleteLeaseRequest {
            id: lease.to_owned(),
            sync: false,
        };
        if let Err(e) = LeasesClient::new(self.channel.clone())
            .delete(self.request(request, None))
            .await
        {
            tracing::warn!(lease, error = %StatusMessage(e), "deleting containerd lease; it expires on its own");
        }
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
    async fn task_state(&self, id: &str) -> String {
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

    /// Prepares the container's snapshot and creates the container, under `lease`; returns
    /// the target's PID the container will join. The snapshot is the name's reservation:
    /// nothing of the container's is written before it succeeds, so a taken name never
    /// touches the container that has it.
    async fn create_under(&self, spec: &DebugSpec, id: &str, lease: &str) -> Result<u32, Error> {
        let pid = self.target_pid(&spec.target).await?;
        let local = self.local_image(&spec.image).await?;
        let mut runtime_spec =
            runtime_spec::runtime_spec(spec, &local.config, pid).map_err(|message| {
                Error::Call {
                    operation: "building the debug container's spec for",
                    object: spec.target.to_string(),
                    source: message.into(),
                }
            })?;
        runtime_spec["linux"]["cgroupsPath"] = format!("/{DEBUG_NAMESPACE}/{id}").into();
        let prepared = SnapshotsClient::new(self.channel.clone())
            .prepare(self.request(
                PrepareSnapshotRequest {
                    snapshotter: self.options.snapshotter.clone(),
                    key: id.to_owned(),
                    parent: local.chain_id.clone(),
                    labels: HashMap::new(),
                },
                Some(lease),
            ))
            .await;
        match prepared {
            Ok(_) => {}
            Err(e) if e.code() == Code::AlreadyExists => return Err(name_taken(id, e)),
            Err(e) => return Err(call("preparing the filesystem of debug container", id)(e)),
        }
        let made = self
            .make_container(spec, id, lease, pid, &local.name, runtime_spec)
            .await;
        if made.is_err() {
            self.remove_filesystem(id).await;
        }
        made.map(|()| pid)
    }

    /// The container's directory (FIFOs, copied files) and the container itself, once its
    /// snapshot is prepared.
    async fn make_container(
        &self,
        spec: &DebugSpec,
        id: &str,
        lease: &str,
        pid: u32,
        image: &str,
        mut runtime_spec: serde_json::Value,
    ) -> Result<(), Error> {
        // No container of ours has this name (its snapshot would exist): a directory left by
        // an agent that died is stale.
        let dir = self.options.fifo_dir.join(id);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&self.options.fifo_dir)
            .and_then(|()| std::fs::create_dir(&dir))
            .and_then(|()| {
                std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            })
            .map_err(|e| Error::Call {
                operation: "making the directory of debug container",
                object: format!("{id} in {}", dir.display()),
                source: Box::new(e),
            })?;
        // Copies of the target's name-resolution files, so names resolve as it resolves them.
        if let Some(mounts) = runtime_spec["mounts"].as_array_mut() {
            for (copy, destination) in target_files::copy_name_resolution(pid, &dir) {
                mounts.push(serde_json::json!({
                    "destination": destination, "type": "bind",
                    "source": copy, "options": ["rbind", "ro"]
                }));
            }
        }
        let container = Container {
            id: id.to_owned(),
            labels: spec.labels.clone().into_iter().collect(),
            image: image.to_owned(),
            runtime: Some(ContainerRuntime {
                name: RUNC_SHIM.to_owned(),
                options: None,
            }),
            spec: Some(prost_types::Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
                value: serde_json::to_vec(&runtime_spec).unwrap_or_default(),
            }),
            snapshotter: self.options.snapshotter.clone(),
            snapshot_key: id.to_owned(),
            ..Container::default()
        };
        ContainersClient::new(self.channel.clone())
            .create(self.request(
                CreateContainerRequest {
                    container: Some(container),
                },
                Some(lease),
            ))
            .await
            .map(|_| ())
            .map_err(|e| {
                if e.code() == Code::AlreadyExists {
                    name_taken(id, e)
                } else {
                    call("creating debug container", id)(e)
                }
            })
    }

    /// Removes a container's snapshot and directory (what exists of them).
    async fn remove_filesystem(&self, id: &str) {
        let removed = SnapshotsClient::new(self.channel.clone())
            .remove(self.request(
                RemoveSnapshotRequest {
                    snapshotter: self.options.snapshotter.clone(),
                    key: id.to_owned(),
                },
                None,
            ))
            .await;
        if let Err(e) = gone_ok(removed) {
            tracing::warn!(container = id, error = %StatusMessage(e), "removing the snapshot of a debug container");
        }
        let dir = self.options.fifo_dir.join(id);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(dir = %dir.display(), error = %e, "removing the directory of a debug container");
            }
            _ => {}
        }
    }

    /// Stops the task (if any): SIGTERM, then SIGKILL if it has not stopped after `grace`
    /// (no SIGTERM with no grace); waits, bounded, for it to stop; then deletes it.
    async fn delete_task(&self, id: &str, grace: Duration) -> Result<(), Error> {
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
    async fn kill_and_wait(
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

impl Runtime for ContainerdRuntime {
    async fn check_target(&self, target: &TargetRef) -> Result<(), Error> {
        self.target_pid(target).await.map(|_| ())
    }

    async fn ensure_image(
        &self,
        image: &str,
        policy: PullPolicy,
        progress: Option<mpsc::Sender<PullProgress>>,
    ) -> Result<(), Error> {
        let key = crate::Reference::parse(image)
            .map(|r| r.to_string())
            .unwrap_or_else(|_| image.to_owned());
        let lock = self.pulls.lock().await.entry(key).or_default().clone();
        let _one_at_a_time = lock.lock().await;
        let lease = self.lease("pull").await?;
        let result = self
            .ensure_image_under(image, policy, progress, &lease)
            .await;
        self.end_lease(&lease).await;
        result
    }

    async fn create(&self, spec: &DebugSpec) -> Result<Created, Error> {
        let id = spec
            .name
            .clone()
            .unwrap_or_else(|| format!("kdbg-{}", unique()));
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
        let pid = result?;
        self.joined.lock().await.insert(id.clone(), pid);
        Ok(Created {
            id,
            warnings: Vec::new(),
        })
    }

    async fn attach(&self, id: &str, spec: &DebugSpec) -> Result<Stdio, Error> {
        let dir = self.options.fifo_dir.join(id);
        let close_stdin: stdio::CloseStdin = {
            let runtime = self.clone();
            let id = id.to_owned();
            Box::new(move || {
                let Ok(handle) = tokio::runtime::Handle::try_current() else {
                    return;
                };
                handle.spawn(async move {
                    let request = runtime.request(
                        CloseIoRequest {
                            container_id: id.clone(),
                            exec_id: String::new(),
                            stdin: true,
                        },
                        None,
                    );
                    if let Err(e) = TasksClient::new(runtime.channel.clone())
                        .close_io(request)
                        .await
                    {
                        tracing::debug!(container = id, error = %StatusMessage(e), "closing stdin");
                    }
                });
            })
        };
        let fifos = stdio::Fifos::open(&dir, spec, close_stdin).map_err(|e| Error::Call {
            operation: "making the stdio FIFOs of debug container",
            object: format!("{id} in {}", dir.display()),
            source: Box::new(e),
        })?;
        let mounts = SnapshotsClient::new(self.channel.clone())
            .mounts(self.request(
                MountsRequest {
                    snapshotter: self.options.snapshotter.clone(),
                    key: id.to_owned(),
                },
                None,
            ))
            .await
            .map_err(call("reading the filesystem mounts of debug container", id))?
            .into_inner()
            .mounts;
        let (paths, opened) = fifos.into_parts();
        TasksClient::new(self.channel.clone())
            .create(self.request(
                CreateTaskRequest {
                    container_id: id.to_owned(),
                    rootfs: mounts,
                    stdin: paths.stdin,
                    stdout: paths.stdout,
                    stderr: paths.stderr,
                    terminal: spec.tty,
                    ..CreateTaskRequest::default()
                },
                None,
            ))
            .await
            .map_err(call("creating the task of debug container", id))?;
        // runc joined /proc/<pid>/ns/* just now: if the target exited since `create` and its
        // PID went to another process, those were not the target's namespaces.
        let expected = self.joined.lock().await.get(id).copied();
        let now = self.target_pid(&spec.target).await;
        if expected.is_none() || now.as_ref().ok() != expected.as_ref() {
            let _ = self.delete_task(id, Duration::ZERO).await;
            return Err(match now {
                Err(e) => e,
                Ok(_) => Error::TargetNotRunning {
                    target: spec.target.clone(),
                    state: "restarted while the debug container was being created".into(),
                },
            });
        }
        // The shim holds its ends now; ours alone decide when a stream ends.
        Ok(opened.release_keepalives())
    }

    async fn start(&self, id: &str) -> Result<(), Error> {
        TasksClient::new(self.channel.clone())
            .start(self.request(
                StartRequest {
                    container_id: id.to_owned(),
                    exec_id: String::new(),
                },
                None,
            ))
            .await
            .map(|_| ())
            .map_err(call("starting debug container", id))
    }

    async fn resize(&self, id: &str, size: TerminalSize) -> Result<(), Error> {
        TasksClient::new(self.channel.clone())
            .resize_pty(self.request(
                ResizePtyRequest {
                    container_id: id.to_owned(),
                    exec_id: String::new(),
                    width: u32::from(size.cols),
                    height: u32::from(size.rows),
                },
                None,
            ))
            .await
            .map(|_| ())
            .map_err(call("resizing the terminal of debug container", id))
    }

    async fn wait(&self, id: &str) -> Result<i64, Error> {
        let exit = TasksClient::new(self.channel.clone())
            .wait(self.request(
                WaitRequest {
                    container_id: id.to_owned(),
                    exec_id: String::new(),
                },
                None,
            ))
            .await
            .map_err(call("waiting for debug container", id))?
            .into_inner()
            .exit_status;
        Ok(i64::from(exit))
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), Error> {
        // The task and its shim go, and the container's directory (FIFOs, copied files) with
        // them, since no process of it runs again; the container and its snapshot stay.
        self.delete_task(id, grace).await?;
        let _ = std::fs::remove_dir_all(self.options.fifo_dir.join(id));
        self.joined.lock().await.remove(id);
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), Error> {
        self.delete_task(id, Duration::ZERO).await?;
        gone_ok(
            ContainersClient::new(self.channel.clone())
                .delete(self.request(DeleteContainerRequest { id: id.to_owned() }, None))
                .await,
        )
        .map_err(call("removing debug container", id))?;
        self.remove_filesystem(id).await;
        self.joined.lock().await.remove(id);
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
            list.push(DebugContainer {
                name: c.id.clone(),
                state: self.task_state(&c.id).await,
                id: c.id,
                image: c.image,
                labels: c.labels.into_iter().collect::<BTreeMap<_, _>>(),
            });
        }
        Ok(list)
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

    #[test]
    fn lease_expiry_is_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_771_084);
        assert_eq!(rfc3339(t), "2026-11-27T09:18:04Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_825_600);
        assert_eq!(rfc3339(leap), "2000-02-29T12:00:00Z");
    }
}
