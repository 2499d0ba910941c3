//! The Docker Engine backend, through bollard.
//!
//! A debug container joins its target with `container:<id>` pid and network modes, and its IPC
//! namespace when the target's is `shareable` (Kubernetes pod sandboxes are) or the one the
//! target joined (`container:<sandbox>`: a pod's containers, as cri-dockerd makes them); a
//! plain `docker run` container's is private, and then the session goes on without it and
//! says so. It gets SYS_PTRACE and SYS_ADMIN, like the peers, so `strace`, `gdb` and `nsenter`
//! work. A debug container of the node itself ([`Target::Node`]) has pid, network, IPC and UTS
//! mode `host` and the node's `/` bound read-write at [`crate::HOST_ROOT`], as `kubectl debug
//! node/`'s has; its capabilities and seccomp filter are its profile's, as any other's.
//!
//! The container's main process is `kdbg-init hold`; each session is a process exec'd into
//! it, its stdio attached as it starts, so no output is lost (see [`crate::docker_attach`]
//! for why that part does not go through bollard).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as BollardError;
use bollard::exec::{CreateExecOptions, StartExecOptions};
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, HostConfig, HostConfigLogConfig,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, ResizeExecOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::StreamExt;
use kdbg_relay::TerminalSize;
use tokio::sync::mpsc;
use tracing::debug;

use crate::containerd::{ContainerdOptions, ContainerdRuntime};
use crate::docker_attach::Ended;
use crate::{
    ContainerState, Created, DebugContainer, DebugSpec, Error, ImageConfig, Process, ProcessSpec,
    PullError, PullPolicy, PullProgress, Reference, Runtime, RuntimeKind, Stdio, Target,
    TargetInfo, TargetRef, init, label,
};

/// Seconds bollard waits for one API call.
const CALL_TIMEOUT_SECS: u64 = 120;

/// How soon an exec whose output has ended is asked again whether it has exited (doubling
/// each time, up to [`EXEC_POLL_MAX`]).
const EXEC_POLL: Duration = Duration::from_millis(20);
/// The longest pause between two such questions.
const EXEC_POLL_MAX: Duration = Duration::from_secs(1);

/// The exec'd processes whose end is awaited, by exec ID.
type Execs = Arc<Mutex<HashMap<String, Ended>>>;

/// A Docker Engine reached over its unix socket.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    docker: Docker,
    endpoint: String,
    /// The socket's path, for the raw exec connections.
    socket: String,
    execs: Execs,
    /// The engine's own containerd (namespace `moby`), when reachable: sessions' processes
    /// are started there, with FIFOs of ours, so their bytes do not cross dockerd.
    direct: Option<Arc<ContainerdRuntime>>,
    /// Where on the node the debug containers' spawner directories are made (one per
    /// container, by name), when sessions are started by the containers' own `kdbg-init`
    /// (see [`crate::spawn`]); `None`: exec'd.
    spawn_root: Option<std::path::PathBuf>,
    /// Sessions started by their containers' spawners.
    spawner: crate::spawn::Spawner,
    /// The spawner directory of each container seen, by the ID or name it was asked by
    /// (`None`: it has none).
    spawn_dirs: Arc<Mutex<HashMap<String, Option<std::path::PathBuf>>>>,
}

/// The containerd namespace Docker keeps its containers in.
pub const MOBY_NAMESPACE: &str = "moby";

/// Where a Docker engine's containerd listens, tried in order when not configured: the
/// system's (Debian, most distributions), then the one dockerd starts itself.
pub const ENGINE_CONTAINERD_SOCKETS: [&str; 2] = [
    "/run/containerd/containerd.sock",
    "/var/run/docker/containerd/containerd.sock",
];

fn call(operation: &'static str, object: impl Into<String>) -> impl FnOnce(BollardError) -> Error {
    let object = object.into();
    move |e| Error::Call {
        operation,
        object,
        source: Box::new(e),
    }
}

fn is_not_found(e: &BollardError) -> bool {
    matches!(
        e,
        BollardError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl DockerRuntime {
    /// Target `target` as Docker describes it; a target of another runtime, or one Docker
    /// does not have, is an error naming it.
    async fn inspect_target(
        &self,
        target: &TargetRef,
    ) -> Result<bollard::models::ContainerInspectResponse, Error> {
        if target.kind != RuntimeKind::Docker {
            return Err(Error::WrongRuntime {
                target: target.clone(),
                runtime: "docker",
            });
        }
        match self.docker.inspect_container(&target.id, None).await {
            Ok(info) => Ok(info),
            Err(e) if is_not_found(&e) => Err(Error::TargetNotFound {
                target: target.clone(),
            }),
            Err(e) => Err(call("inspecting target container", target.to_string())(e)),
        }
    }

    /// Connects to the engine at `endpoint` (`unix:///path` or a plain path) and settles on
    /// the API version both sides speak (Debian's dockerd 20.10 speaks 1.41).
    pub async fn connect(endpoint: &str) -> Result<DockerRuntime, Error> {
        let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
        let fail = |e: BollardError| Error::Connect {
            runtime: "docker",
            endpoint: endpoint.to_owned(),
            source: Box::new(e),
        };
        let docker =
            Docker::connect_with_unix(path, CALL_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
                .map_err(fail)?
                .negotiate_version()
                .await
                .map_err(fail)?;
        debug!(endpoint, version = ?docker.client_version(), "connected to Docker");
        Ok(DockerRuntime {
            docker,
            endpoint: endpoint.to_owned(),
            socket: path.to_owned(),
            execs: Execs::default(),
            direct: None,
            spawn_root: None,
            spawner: crate::spawn::Spawner::default(),
            spawn_dirs: Arc::default(),
        })
    }

    /// The same engine, its debug containers made with a spawner directory under `root`
    /// (which the node must see at the same path), so that sessions' processes are started by
    /// the containers' own `kdbg-init` ([`crate::spawn`]) rather than exec'd.
    pub fn with_spawner(mut self, root: &std::path::Path) -> DockerRuntime {
        self.spawn_root = Some(root.to_owned());
        self
    }

    /// The spawner directory of container `id` on the node, if it has one: the source of its
    /// mount at [`init::SPAWN_DIR`], under [`DockerRuntime::spawn_root`].
    async fn spawn_dir(&self, id: &str) -> Option<std::path::PathBuf> {
        let root = self.spawn_root.as_ref()?;
        if let Some(known) = lock(&self.spawn_dirs).get(id) {
            return known.clone();
        }
        let info = self.docker.inspect_container(id, None).await.ok()?;
        let dir = info
            .mounts
            .unwrap_or_default()
            .into_iter()
            .find(|m| m.destination.as_deref() == Some(init::SPAWN_DIR))
            .and_then(|m| m.source)
            .map(std::path::PathBuf::from)
            // Only ever one of ours.
            .filter(|source| source.parent() == Some(root.as_path()));
        lock(&self.spawn_dirs).insert(id.to_owned(), dir.clone());
        dir
    }

    /// Forgets the containers removed behind the agent's back (`docker rm -f`): their
    /// cached spawner directories, and the directories themselves under the spawner root,
    /// given the debug containers that exist. A directory younger than a minute is left: its
    /// container may be being made.
    fn forget_removed(&self, existing: &[DebugContainer]) {
        let Some(root) = &self.spawn_root else {
            return;
        };
        let known = |key: &str| existing.iter().any(|c| c.id == key || c.name == key);
        lock(&self.spawn_dirs).retain(|key, _| known(key));
        let Ok(entries) = std::fs::read_dir(root) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let young = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(60));
            if !young && !name.to_str().is_some_and(known) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }

    /// The same engine, its sessions' processes started through its own containerd
    /// (`endpoint`, else the first of [`ENGINE_CONTAINERD_SOCKETS`] that answers and has
    /// namespace `moby`), with their FIFOs in `fifo_dir`, which the node must see at the same
    /// path. When none does, sessions go through dockerd's exec, and the log says why, once.
    pub async fn through_containerd(
        mut self,
        endpoint: Option<&str>,
        fifo_dir: &std::path::Path,
    ) -> DockerRuntime {
        let candidates: Vec<&str> = match endpoint {
            Some(endpoint) => vec![endpoint],
            None => ENGINE_CONTAINERD_SOCKETS.to_vec(),
        };
        let mut tried = Vec::new();
        for socket in candidates {
            let mut options = ContainerdOptions::new(socket);
            options.namespace = MOBY_NAMESPACE.to_owned();
            options.debug_namespace = MOBY_NAMESPACE.to_owned();
            options.fifo_dir = fifo_dir.to_owned();
            match ContainerdRuntime::connect_with(options).await {
                Ok(client) => match client.has_target_namespace().await {
                    Ok(true) => {
                        tracing::info!(
                            containerd = socket,
                            "sessions on Docker are started through the engine's containerd"
                        );
                        self.direct = Some(Arc::new(client));
                        return self;
                    }
                    Ok(false) => tried.push(format!("{socket}: no namespace {MOBY_NAMESPACE}")),
                    Err(e) => tried.push(format!("{socket}: {e}")),
                },
                Err(e) => tried.push(format!("{socket}: {e}")),
            }
        }
        tracing::warn!(
            tried = tried.join("; "),
            "the engine's containerd cannot be reached: sessions go through dockerd's exec, whose copy costs throughput (mount the engine's containerd socket, or set runtime.engineContainerd)"
        );
        self
    }

    /// Whether sessions' processes are started through the engine's containerd.
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// The container's full ID, as containerd knows it (`id` may be a name).
    async fn full_id(&self, id: &str) -> Result<String, Error> {
        if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(id.to_owned());
        }
        match self.docker.inspect_container(id, None).await {
            Ok(info) => Ok(info.id.unwrap_or_else(|| id.to_owned())),
            Err(e) if is_not_found(&e) => Err(Error::ContainerNotFound {
                name: id.to_owned(),
            }),
            Err(e) => Err(call("inspecting debug container", id)(e)),
        }
    }

    async fn image_present(&self, image: &str) -> Result<bool, Error> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(call("inspecting image", image)(e)),
        }
    }

    async fn pull(
        &self,
        image: &str,
        progress: Option<mpsc::Sender<PullProgress>>,
        options: crate::PullOptions<'_>,
    ) -> Result<(), Error> {
        let credential = options.credential;
        let platform = options
            .platform
            .map(ToString::to_string)
            .unwrap_or_default();
        let fail = |source| Error::Pull {
            image: image.to_owned(),
            source,
        };
        // What the engine said, with which credential was sent when it is about credentials.
        let engine = |said: String| {
            if crate::error::says_unauthorized(&said) {
                PullError::Refused {
                    said,
                    sent: credential.map(crate::RegistryCredential::described),
                }
            } else {
                PullError::Engine(said)
            }
        };
        let reference = Reference::parse(image).map_err(|e| fail(e.into()))?;
        let options = match &reference.digest {
            Some(digest) => CreateImageOptionsBuilder::new()
                .from_image(&format!("{}@{digest}", reference.name()))
                .platform(&platform)
                .build(),
            None => CreateImageOptionsBuilder::new()
                .from_image(&reference.name())
                .tag(reference.object())
                .platform(&platform)
                .build(),
        };
        // The engine's X-Registry-Auth header, for this pull only.
        let auth = credential.map(|c| DockerCredentials {
            username: Some(c.username.clone()),
            password: Some(c.password.clone()),
            serveraddress: Some(reference.registry.clone()),
            ..DockerCredentials::default()
        });
        let mut stream = self.docker.create_image(Some(options), None, auth.clone());
        while let Some(item) = stream.next().await {
            let failed = match item {
                Ok(info) => match info.error_detail {
                    Some(detail) => Err(detail.message.unwrap_or_else(|| "unknown error".into())),
                    None => Ok(info),
                },
                Err(e) => Err(engine_message(&e)),
            };
            let info = match failed {
                Ok(info) => info,
                // The engine does not say what the index has: the registry, through it, does.
                Err(said) if said.contains("no matching manifest") => {
                    let wanted = options_platform(&platform);
                    return Err(fail(self.platforms_of(image, auth, wanted, said).await));
                }
                Err(said) => return Err(fail(engine(said))),
            };
            if let Some(tx) = &progress {
                let detail = info.progress_detail.unwrap_or_default();
                let line = PullProgress {
                    id: info.id,
                    status: info.status.unwrap_or_default(),
                    current: detail.current.and_then(|n| u64::try_from(n).ok()),
                    total: detail.total.and_then(|n| u64::try_from(n).ok()),
                };
                // Progress is advisory: a gone or slow listener never fails the pull.
                let _ = tx.try_send(line);
            }
        }
        Ok(())
    }
}

/// The platform a pull asked for: `--platform`'s, else the node's.
fn options_platform(asked: &str) -> String {
    if asked.is_empty() {
        crate::containerd::node_platform().to_string()
    } else {
        asked.to_owned()
    }
}

impl DockerRuntime {
    /// The error for an image without platform `wanted`: the platforms its index lists, as
    /// the registry tells the engine, or the engine's own message when it cannot say.
    async fn platforms_of(
        &self,
        image: &str,
        auth: Option<DockerCredentials>,
        wanted: String,
        said: String,
    ) -> PullError {
        match self.docker.inspect_registry_image(image, auth).await {
            Ok(found) if !found.platforms.is_empty() => PullError::NoPlatform {
                wanted,
                offered: found
                    .platforms
                    .iter()
                    .map(|p| {
                        let mut name = format!(
                            "{}/{}",
                            p.os.as_deref().unwrap_or("?"),
                            p.architecture.as_deref().unwrap_or("?")
                        );
                        if let Some(variant) = p.variant.as_deref().filter(|v| !v.is_empty()) {
                            name.push('/');
                            name.push_str(variant);
                        }
                        name
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            },
            _ => PullError::Engine(said),
        }
    }
}

/// What the engine said about a failed call, without bollard's wrapping.
fn engine_message(e: &BollardError) -> String {
    match e {
        BollardError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

impl Runtime for DockerRuntime {
    async fn check_target(&self, target: &TargetRef) -> Result<TargetInfo, Error> {
        let info = self.inspect_target(target).await?;
        let state = info.state.unwrap_or_default();
        if state.running != Some(true) || state.paused == Some(true) {
            let status = state
                .status
                .map_or_else(|| "unknown".to_owned(), |s| status_name(s).to_owned());
            return Err(Error::TargetNotRunning {
                target: target.clone(),
                state: status,
            });
        }
        Ok(TargetInfo {
            labels: info
                .config
                .and_then(|c| c.labels)
                .map(|l| l.into_iter().collect())
                .unwrap_or_default(),
            pid: state
                .pid
                .and_then(|p| u32::try_from(p).ok())
                .filter(|p| *p > 0),
        })
    }

    async fn ensure_image(
        &self,
        image: &str,
        policy: PullPolicy,
        progress: Option<mpsc::Sender<PullProgress>>,
        options: crate::PullOptions<'_>,
    ) -> Result<(), Error> {
        if crate::needs_pull(policy, image, self.image_present(image).await?)? {
            self.pull(image, progress, options).await?;
        }
        Ok(())
    }

    async fn create(&self, spec: &DebugSpec) -> Result<Created, Error> {
        let mut binds = vec![format!("{}:{}:ro", spec.init.display(), init::PATH)];
        let spawn_dir = self.spawn_root.as_ref().map(|root| root.join(&spec.name));
        if let Some(dir) = &spawn_dir {
            // Made afresh: a directory of this name is a removed container's.
            let _ = std::fs::remove_dir_all(dir);
            crate::spawn::make_dir(&spec.name, dir)?;
            binds.push(format!("{}:{}:rw", dir.display(), init::SPAWN_DIR));
        }
        let mut warnings = Vec::new();
        let (join, ipc, uts) = match &spec.target {
            // The node's own namespaces, and its root filesystem read-write at /host, as
            // `kubectl debug node/` gives them.
            Target::Node(_) => {
                binds.push(format!("/:{}", crate::HOST_ROOT));
                let host = || Some("host".to_owned());
                ("host".to_owned(), host(), host())
            }
            Target::Container(target) => {
                let target = &target.id;
                let info = self
                    .docker
                    .inspect_container(target, None)
                    .await
                    .map_err(call("inspecting target container", spec.target.to_string()))?;
                // Use the full ID: a name may be reused while we run.
                let target_id = info.id.unwrap_or_else(|| target.clone());
                let ipc_mode = info.host_config.and_then(|h| h.ipc_mode);
                let ipc = ipc_join(&target_id, ipc_mode.as_deref());
                if ipc.is_none() {
                    warnings.push(format!(
                        "target {} does not share its IPC namespace (ipc mode is not \"shareable\"); \
                         the debug container has its own, so ipcs will not show the target's",
                        spec.target
                    ));
                }

                (format!("container:{target_id}"), ipc, None)
            }
        };
        let labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            // The main process holds the container; sessions are processes exec'd into it.
            entrypoint: Some(init::hold_args()),
            labels: Some(labels),
            host_config: Some(HostConfig {
                pid_mode: Some(join.clone()),
                network_mode: Some(join.clone()),
                ipc_mode: ipc,
                uts_mode: uts,
                binds: Some(binds),
                cap_add: Some(
                    spec.profile
                        .capabilities()
                        .iter()
                        .map(|c| (*c).to_owned())
                        .collect(),
                ),
                // Ours, an allow-list like Docker's default, the same on every backend (Docker's
                // own would allow mounts once SYS_ADMIN is added; ours does not).
                security_opt: Some(vec![format!(
                    "seccomp={}",
                    crate::seccomp_profile(spec.profile)
                )]),
                // No logging driver: a debug session's output is the user's, not the node's
                // logs (recording is a separate feature), and json-file logging slowed output
                // to a third of `docker exec`'s.
                log_config: Some(HostConfigLogConfig {
                    typ: Some("none".into()),
                    config: None,
                }),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        };
        let platform = spec
            .platform
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        let options = CreateContainerOptionsBuilder::new()
            .name(&spec.name)
            .platform(&platform)
            .build();
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| match &e {
                BollardError::DockerResponseServerError {
                    status_code: 409, ..
                } => Error::NameTaken {
                    name: spec.name.clone(),
                    source: Box::new(e),
                },
                _ => call("creating debug container for", spec.target.to_string())(e),
            })?;
        warnings.extend(created.warnings);
        if spawn_dir.is_some() {
            lock(&self.spawn_dirs).insert(created.id.clone(), spawn_dir);
        }
        Ok(Created {
            id: created.id,
            warnings,
        })
    }

    async fn start(&self, id: &str) -> Result<(), Error> {
        match self.docker.start_container(id, None).await {
            Ok(()) => Ok(()),
            // Running already.
            Err(BollardError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(call("starting debug container", id)(e)),
        }
    }

    async fn exec(&self, id: &str, process: &ProcessSpec) -> Result<Process, Error> {
        if let Some(dir) = self.spawn_dir(id).await
            && let Some(spawned) = self.spawner.spawn(&dir, id, process).await
        {
            return spawned;
        }
        if let Some(direct) = &self.direct {
            let full = self.full_id(id).await?;
            return direct.exec_process(&full, process).await;
        }
        let mut env = init::run_env(process);
        if process.tty {
            env.push("TERM=xterm".to_owned());
        }
        let options = CreateExecOptions {
            attach_stdin: Some(process.stdin),
            attach_stdout: Some(process.stdout),
            attach_stderr: Some(process.stderr && !process.tty),
            tty: Some(process.tty),
            env: Some(env),
            cmd: Some(init::run_args(process)),
            ..CreateExecOptions::default()
        };
        let exec = self
            .docker
            .create_exec(id, options)
            .await
            .map_err(call("starting a process in debug container", id))?
            .id;
        let version = self.docker.client_version();
        let streams = crate::docker_attach::Streams {
            stdin: process.stdin,
            stdout: process.stdout,
            stderr: process.stderr,
            tty: process.tty,
        };
        let ended = crate::docker_attach::Ended::default();
        let attached = crate::docker_attach::start_exec(
            &self.socket,
            &format!("{}.{}", version.major_version, version.minor_version),
            &exec,
            streams,
            ended.clone(),
        )
        .await
        .map_err(|e| Error::Call {
            operation: "attaching to a process of debug container",
            object: id.to_owned(),
            source: Box::new(e),
        })?;
        lock(&self.execs).insert(exec.clone(), ended);
        Ok(Process {
            id: exec,
            stdio: Stdio {
                stdin: attached.stdin,
                stdout: attached.stdout,
                stderr: attached.stderr,
            },
        })
    }

    async fn resize(&self, id: &str, exec: &str, size: TerminalSize) -> Result<(), Error> {
        if let Some(resized) = self.spawner.resize(exec, size) {
            return resized.map_err(|e| Error::Call {
                operation: "resizing the terminal of debug container",
                object: id.to_owned(),
                source: Box::new(e),
            });
        }
        if let Some(direct) = &self.direct {
            return direct
                .resize_process(&self.full_id(id).await?, exec, size)
                .await;
        }
        let options = ResizeExecOptionsBuilder::new()
            .h(i32::from(size.rows))
            .w(i32::from(size.cols))
            .build();
        self.docker
            .resize_exec(exec, options)
            .await
            .map_err(call("resizing the terminal of debug container", id))
    }

    async fn wait(&self, id: &str, exec: &str) -> Result<i64, Error> {
        if let Some(code) = self.spawner.wait(exec).await {
            return Ok(code);
        }
        if let Some(direct) = &self.direct {
            return direct.wait_process(&self.full_id(id).await?, exec).await;
        }
        // Docker cannot wait for an exec: its output ends when it does, then it is asked. A
        // container that dies (killed, or its target gone) may leave the exec's stream open,
        // so its end is watched too.
        let ended = lock(&self.execs).get(exec).cloned();
        let output_end = async {
            match &ended {
                Some(ended) => ended.wait().await,
                None => std::future::pending().await,
            }
        };
        let container_end = async {
            let mut waiting = self.docker.wait_container(id, None);
            let _ = waiting.next().await;
        };
        tokio::pin!(container_end);
        let mut container_gone = false;
        tokio::select! {
            () = output_end => {}
            () = &mut container_end => container_gone = true,
        }
        let mut pause = EXEC_POLL;
        let code = loop {
            let inspected = match self.docker.inspect_exec(exec).await {
                Ok(inspected) => inspected,
                // The engine forgets the execs of a container that stopped: it was killed.
                Err(e) if is_not_found(&e) => break 137,
                Err(e) => return Err(call("waiting for a process of debug container", id)(e)),
            };
            if inspected.running != Some(true) {
                break inspected.exit_code.unwrap_or(-1);
            }
            if container_gone {
                // The engine has not caught up with a process that died with its container.
                if pause >= EXEC_POLL_MAX {
                    break 137;
                }
                tokio::time::sleep(pause).await;
            } else {
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = &mut container_end => container_gone = true,
                }
            }
            pause = (pause * 2).min(EXEC_POLL_MAX);
        };
        if let Some(ended) = lock(&self.execs).remove(exec) {
            ended.process_gone();
        }
        Ok(code)
    }

    async fn signal(&self, id: &str, session: &str, signal: i32) -> Result<(), Error> {
        if self.spawner.signal(session, signal) {
            return Ok(());
        }
        if let Some(direct) = &self.direct {
            return match self.full_id(id).await {
                Ok(full) => direct.signal_process(&full, session, signal).await,
                // Gone: its processes are gone already.
                Err(Error::ContainerNotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            };
        }
        // Docker has no call to signal an exec'd process: kdbg-init finds it and does.
        let options = CreateExecOptions {
            cmd: Some(init::signal_args(session, signal)),
            ..CreateExecOptions::default()
        };
        let exec = match self.docker.create_exec(id, options).await {
            Ok(created) => created.id,
            // Not running: its processes are gone already.
            Err(BollardError::DockerResponseServerError {
                status_code: 409, ..
            }) => return Ok(()),
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(call("signalling a process of debug container", id)(e)),
        };
        self.docker
            .start_exec(
                &exec,
                Some(StartExecOptions {
                    detach: true,
                    ..StartExecOptions::default()
                }),
            )
            .await
            .map(|_| ())
            .map_err(call("signalling a process of debug container", id))
    }

    async fn inspect(&self, id: &str) -> Result<DebugContainer, Error> {
        let info = match self.docker.inspect_container(id, None).await {
            Ok(info) => info,
            Err(e) if is_not_found(&e) => {
                return Err(Error::ContainerNotFound {
                    name: id.to_owned(),
                });
            }
            Err(e) => return Err(call("inspecting debug container", id)(e)),
        };
        let state = info.state.unwrap_or_default();
        let config = info.config.unwrap_or_default();
        Ok(DebugContainer {
            id: info.id.unwrap_or_else(|| id.to_owned()),
            name: info
                .name
                .map(|n| n.trim_start_matches('/').to_owned())
                .unwrap_or_default(),
            image: config.image.unwrap_or_default(),
            state: container_state(
                state.status,
                state.exit_code.unwrap_or_default(),
                state.oom_killed == Some(true),
            ),
            labels: config.labels.unwrap_or_default().into_iter().collect(),
        })
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), Error> {
        let options = StopContainerOptionsBuilder::new()
            .t(i32::try_from(grace.as_secs()).unwrap_or(i32::MAX))
            .build();
        match self.docker.stop_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            // Stopped already (304), or gone.
            Err(BollardError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(call("stopping debug container", id)(e)),
        }
    }

    async fn remove(&self, id: &str) -> Result<(), Error> {
        let spawn_dir = self.spawn_dir(id).await;
        let options = RemoveContainerOptionsBuilder::new().force(true).build();
        let removed = self.docker.remove_container(id, Some(options)).await;
        if removed.is_ok() || removed.as_ref().is_err_and(is_not_found) {
            lock(&self.spawn_dirs).remove(id);
            if let Some(dir) = spawn_dir {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        match removed {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            // Already being removed by an earlier call.
            Err(BollardError::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(call("removing debug container", id)(e)),
        }
    }

    async fn list(&self) -> Result<Vec<DebugContainer>, Error> {
        let filters = HashMap::from([("label", vec![label::SESSION])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let found = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(call("listing debug containers on", self.endpoint.clone()))?;
        let mut list = Vec::with_capacity(found.len());
        for c in found.into_iter().filter(made_by_an_agent) {
            // The summary has no exit code: running ones need no more, others are inspected.
            let running = c.state.as_ref().is_some_and(|s| s.to_string() == "running");
            let id = c.id.unwrap_or_default();
            if !running {
                match self.inspect(&id).await {
                    Ok(inspected) => list.push(inspected),
                    Err(Error::ContainerNotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
                continue;
            }
            list.push(DebugContainer {
                id,
                name: c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .map(|n| n.trim_start_matches('/').to_owned())
                    .unwrap_or_default(),
                image: c.image.unwrap_or_default(),
                state: ContainerState::Running,
                labels: c.labels.unwrap_or_default().into_iter().collect(),
            });
        }
        self.forget_removed(&list);
        Ok(list)
    }

    async fn image_config(&self, target: &TargetRef) -> Result<ImageConfig, Error> {
        let info = self.inspect_target(target).await?;
        // Its image by ID: the name it was made with may have moved to another image since
        // (a tag pushed again); the name is only what errors and the answer show.
        let name = info.config.and_then(|c| c.image).filter(|n| !n.is_empty());
        let fail =
            |image: &str, source: Box<dyn std::error::Error + Send + Sync>| Error::TargetImage {
                target: target.clone(),
                image: image.to_owned(),
                source,
            };
        let Some(id) = info.image.filter(|i| !i.is_empty()) else {
            let image = name.unwrap_or_else(|| "(unnamed)".into());
            return Err(fail(
                &image,
                "the engine names no image for the container".into(),
            ));
        };
        let shown = name.unwrap_or_else(|| id.clone());
        let inspected = self.docker.inspect_image(&id).await.map_err(|e| {
            let why: Box<dyn std::error::Error + Send + Sync> = if is_not_found(&e) {
                format!("the engine no longer has image {id}; pull {shown} on the node again")
                    .into()
            } else {
                Box::new(e)
            };
            fail(&shown, why)
        })?;
        let config = inspected.config.unwrap_or_default();
        Ok(ImageConfig::new(
            shown,
            config.entrypoint,
            config.cmd,
            config.working_dir,
            config.user,
        ))
    }
}

fn lock<T>(map: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    map.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Our state from the engine's.
fn container_state(
    status: Option<ContainerStateStatusEnum>,
    exit_code: i64,
    oom_killed: bool,
) -> ContainerState {
    match status {
        Some(ContainerStateStatusEnum::CREATED) => ContainerState::Created,
        Some(ContainerStateStatusEnum::RUNNING) => ContainerState::Running,
        Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD) => {
            ContainerState::Exited {
                code: exit_code,
                oom_killed,
            }
        }
        Some(other) => ContainerState::Other(status_name(other).to_owned()),
        None => ContainerState::Other("unknown".into()),
    }
}

fn status_name(status: ContainerStateStatusEnum) -> &'static str {
    match status {
        ContainerStateStatusEnum::CREATED => "created",
        ContainerStateStatusEnum::RUNNING => "running",
        ContainerStateStatusEnum::PAUSED => "paused",
        ContainerStateStatusEnum::RESTARTING => "restarting",
        ContainerStateStatusEnum::REMOVING => "being removed",
        ContainerStateStatusEnum::EXITED => "exited",
        ContainerStateStatusEnum::DEAD => "dead",
        ContainerStateStatusEnum::STOPPING => "stopping",
        ContainerStateStatusEnum::EMPTY => "in an unknown state",
    }
}

/// Whether listed container `c` is a debug container an agent made, not one that only
/// carries our labels: Docker copies an image's `LABEL`s onto its containers, so a pod's
/// container (cri-dockerd's `io.kubernetes.*` labels) made from an image labelled like ours
/// would otherwise be listed, attached to and counted against the retained limits. Ours
/// have the init bind-mounted at [`init::PATH`] and no kubelet labels.
fn made_by_an_agent(c: &bollard::models::ContainerSummary) -> bool {
    let kubelets = c
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key("io.kubernetes.container.name"));
    let init = c
        .mounts
        .iter()
        .flatten()
        .any(|m| m.destination.as_deref() == Some(init::PATH));
    init && !kubelets
}

/// The ipc mode that joins target `target_id`'s IPC namespace, whose own mode is `mode`: the
/// target's when it is `shareable` (a pod sandbox), the container it joined when it joined one
/// (`container:<sandbox>`, a pod's container as cri-dockerd makes it); none otherwise.
fn ipc_join(target_id: &str, mode: Option<&str>) -> Option<String> {
    match mode? {
        "shareable" => Some(format!("container:{target_id}")),
        joined if joined.starts_with("container:") => Some(joined.to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod ipc_tests {
    use super::ipc_join;

    #[test]
    fn the_ipc_namespace_joined_is_the_targets() {
        assert_eq!(
            ipc_join("t1", Some("shareable")).as_deref(),
            Some("container:t1")
        );
        assert_eq!(
            ipc_join("t1", Some("container:sandbox")).as_deref(),
            Some("container:sandbox")
        );
        for other in [Some("private"), Some("host"), Some(""), None] {
            assert_eq!(ipc_join("t1", other), None, "{other:?}");
        }
    }
}
