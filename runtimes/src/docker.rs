//! The Docker Engine backend, through bollard.
//!
//! A debug container joins its target with `container:<id>` pid and network modes, and ipc mode
//! when the target's IPC namespace is `shareable` (Kubernetes pod sandboxes are; a plain
//! `docker run` container is not, and then the session goes on without it and says so). It gets
//! SYS_PTRACE and SYS_ADMIN, like the peers, so `strace`, `gdb` and `nsenter` work.
//!
//! Stdio is attached before the container starts, so no output is lost (see
//! [`crate::docker_attach`] for why that part does not go through bollard).

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, HostConfig, HostConfigLogConfig,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, ResizeContainerTTYOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::StreamExt;
use kdbg_relay::TerminalSize;
use tokio::sync::mpsc;
use tracing::debug;

use crate::{
    Created, DEBUG_CAPABILITIES, DebugContainer, DebugSpec, Error, PullError, PullPolicy,
    PullProgress, Reference, Runtime, RuntimeKind, Stdio, TargetRef, label,
};

/// Seconds bollard waits for one API call.
const CALL_TIMEOUT_SECS: u64 = 120;

/// A Docker Engine reached over its unix socket.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    docker: Docker,
    endpoint: String,
    /// The socket's path, for the raw attach connection.
    socket: String,
}

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
        })
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
    ) -> Result<(), Error> {
        let fail = |source| Error::Pull {
            image: image.to_owned(),
            source,
        };
        let reference = Reference::parse(image).map_err(|e| fail(e.into()))?;
        let options = match &reference.digest {
            Some(digest) => CreateImageOptionsBuilder::new()
                .from_image(&format!("{}@{digest}", reference.name()))
                .build(),
            None => CreateImageOptionsBuilder::new()
                .from_image(&reference.name())
                .tag(reference.object())
                .build(),
        };
        let mut stream = self.docker.create_image(Some(options), None, None);
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| fail(PullError::Engine(engine_message(&e))))?;
            if let Some(detail) = info.error_detail {
                let message = detail.message.unwrap_or_else(|| "unknown error".into());
                return Err(fail(PullError::Engine(message)));
            }
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

/// What the engine said about a failed call, without bollard's wrapping.
fn engine_message(e: &BollardError) -> String {
    match e {
        BollardError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

impl Runtime for DockerRuntime {
    async fn check_target(&self, target: &TargetRef) -> Result<(), Error> {
        if target.kind != RuntimeKind::Docker {
            return Err(Error::WrongRuntime {
                target: target.clone(),
                runtime: "docker",
            });
        }
        let info = match self.docker.inspect_container(&target.id, None).await {
            Ok(info) => info,
            Err(e) if is_not_found(&e) => {
                return Err(Error::TargetNotFound {
                    target: target.clone(),
                });
            }
            Err(e) => return Err(call("inspecting target container", target.to_string())(e)),
        };
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
        Ok(())
    }

    async fn ensure_image(
        &self,
        image: &str,
        policy: PullPolicy,
        progress: Option<mpsc::Sender<PullProgress>>,
    ) -> Result<(), Error> {
        if policy.needs_pull(image, self.image_present(image).await?)? {
            self.pull(image, progress).await?;
        }
        Ok(())
    }

    async fn create(&self, spec: &DebugSpec) -> Result<Created, Error> {
        let target = &spec.target.id;
        let info = self
            .docker
            .inspect_container(target, None)
            .await
            .map_err(call("inspecting target container", spec.target.to_string()))?;
        // Use the full ID: a name may be reused while we run.
        let target_id = info.id.unwrap_or_else(|| target.clone());
        let ipc_shareable = info
            .host_config
            .and_then(|h| h.ipc_mode)
            .is_some_and(|m| m == "shareable");
        let mut warnings = Vec::new();
        if !ipc_shareable {
            warnings.push(format!(
                "target {} does not share its IPC namespace (ipc mode is not \"shareable\"); \
                 the debug container has its own, so ipcs will not show the target's",
                spec.target
            ));
        }
        let join = format!("container:{target_id}");
        let labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            // The user's command replaces the image's entrypoint and cmd (the daemon then
            // takes neither from the image), as on containerd.
            entrypoint: (!spec.command.is_empty()).then(|| spec.command.clone()),
            tty: Some(spec.tty),
            open_stdin: Some(spec.stdin),
            stdin_once: Some(spec.stdin),
            attach_stdin: Some(spec.stdin),
            attach_stdout: Some(spec.stdout),
            attach_stderr: Some(spec.stderr && !spec.tty),
            labels: Some(labels),
            host_config: Some(HostConfig {
                pid_mode: Some(join.clone()),
                network_mode: Some(join.clone()),
                ipc_mode: ipc_shareable.then_some(join),
                cap_add: Some(DEBUG_CAPABILITIES.map(String::from).to_vec()),
                // Docker's own profile allows mounts once SYS_ADMIN is added; ours does not.
                security_opt: Some(vec![format!("seccomp={}", crate::seccomp_profile())]),
                // No logging driver: a debug session's output is the user's, not the node's
                // logs (recording is a separate, opt-in feature), and json-file logging
                // slowed attach output to a third of `docker exec`'s.
                log_config: Some(HostConfigLogConfig {
                    typ: Some("none".into()),
                    config: None,
                }),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        };
        let mut options = CreateContainerOptionsBuilder::new();
        if let Some(name) = &spec.name {
            options = options.name(name);
        }
        let created = self
            .docker
            .create_container(Some(options.build()), body)
            .await
            .map_err(|e| match &e {
                BollardError::DockerResponseServerError {
                    status_code: 409, ..
                } => Error::Call {
                    operation: "creating debug container (the name is taken; choose another with --name, or remove the old one)",
                    object: spec.name.clone().unwrap_or_default(),
                    source: Box::new(e),
                },
                _ => call("creating debug container for", spec.target.to_string())(e),
            })?;
        for w in created.warnings {
            warnings.push(w);
        }
        Ok(Created {
            id: created.id,
            warnings,
        })
    }

    async fn attach(&self, id: &str, spec: &DebugSpec) -> Result<Stdio, Error> {
        let version = self.docker.client_version();
        let streams = crate::docker_attach::Streams {
            stdin: spec.stdin,
            stdout: spec.stdout,
            stderr: spec.stderr,
            tty: spec.tty,
        };
        let attached = crate::docker_attach::attach(
            &self.socket,
            &format!("{}.{}", version.major_version, version.minor_version),
            id,
            streams,
        )
        .await
        .map_err(|e| Error::Call {
            operation: "attaching to debug container",
            object: id.to_owned(),
            source: Box::new(e),
        })?;
        Ok(Stdio {
            stdin: attached.stdin,
            stdout: attached.stdout,
            stderr: attached.stderr,
        })
    }

    async fn start(&self, id: &str) -> Result<(), Error> {
        self.docker
            .start_container(id, None)
            .await
            .map_err(call("starting debug container", id))
    }

    async fn resize(&self, id: &str, size: TerminalSize) -> Result<(), Error> {
        let options = ResizeContainerTTYOptionsBuilder::new()
            .h(i32::from(size.rows))
            .w(i32::from(size.cols))
            .build();
        self.docker
            .resize_container_tty(id, options)
            .await
            .map_err(call("resizing the terminal of debug container", id))
    }

    async fn wait(&self, id: &str) -> Result<i64, Error> {
        let mut stream = self.docker.wait_container(id, None);
        match stream.next().await {
            Some(Ok(response)) => Ok(response.status_code),
            // bollard reports a non-zero exit as an error carrying the code.
            Some(Err(BollardError::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(call("waiting for debug container", id)(e)),
            None => Err(Error::Call {
                operation: "waiting for debug container",
                object: id.to_owned(),
                source: "the engine ended the wait without an exit code".into(),
            }),
        }
    }

    async fn remove(&self, id: &str) -> Result<(), Error> {
        let options = RemoveContainerOptionsBuilder::new().force(true).build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            // Already being removed by an earlier call.
            Err(BollardError::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(call("removing debug container", id)(e)),
        }
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
        Ok(found
            .into_iter()
            .map(|c| DebugContainer {
                id: c.id.unwrap_or_default(),
                name: c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .map(|n| n.trim_start_matches('/').to_owned())
                    .unwrap_or_default(),
                image: c.image.unwrap_or_default(),
                state: c.state.map(|s| s.to_string()).unwrap_or_default(),
                labels: c.labels.unwrap_or_default().into_iter().collect(),
            })
            .collect())
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
