//! A debug container: its snapshot prepared on the image's top layer (which reserves its
//! name), its directory for FIFOs and copied files, and the container record with its OCI
//! runtime spec.

use std::collections::HashMap;
use std::time::Duration;

use containerd_client::services::v1::container::Runtime as ContainerRuntime;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
};
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, GetContainerRequest, StartRequest,
    UpdateContainerRequest,
};
use containerd_client::tonic::Code;
use containerd_client::types::v1::Status as TaskStatus;

/// The type URL of an OCI runtime spec in containerd's API.
const SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

use super::{
    ContainerdRuntime, DEBUG_NAMESPACE, RUNC_SHIM, StatusMessage, call, gone_ok, name_taken,
    not_found_or, runtime_spec, target_files,
};
use crate::{DebugSpec, Error, Target, init, label};

impl ContainerdRuntime {
    /// Prepares the container's snapshot and creates the container, under `lease`; returns
    /// the target's PID the container will join. The snapshot is the name's reservation:
    /// nothing of the container's is written before it succeeds, so a taken name never
    /// touches the container that has it.
    pub(super) async fn create_under(
        &self,
        spec: &DebugSpec,
        id: &str,
        lease: &str,
    ) -> Result<u32, Error> {
        let pid = self.pid_to_join(&spec.target).await?;
        let local = self
            .local_image(&spec.image, spec.platform.as_ref())
            .await?;
        let mut runtime_spec =
            runtime_spec::runtime_spec(&spec.init, &local.config, pid, spec.profile).map_err(
                |why| Error::Call {
                    operation: "building the debug container's spec for",
                    object: spec.target.to_string(),
                    source: why.into(),
                },
            )?;
        runtime_spec["linux"]["cgroupsPath"] = format!("/{DEBUG_NAMESPACE}/{id}").into();
        if let crate::Target::Node(_) = spec.target {
            runtime_spec::mount_host_root(&mut runtime_spec);
        }
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

    /// Where the spawner of container `id` listens, on the node (see [`crate::spawn`]).
    pub(super) fn spawn_dir(&self, id: &str) -> std::path::PathBuf {
        self.options.fifo_dir.join(id).join("spawn")
    }

    /// The container's directory (FIFOs, copied files) and the container itself, once its
    /// snapshot is prepared.
    pub(super) async fn make_container(
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
        if self.options.spawner {
            let spawn_dir = self.spawn_dir(id);
            crate::spawn::make_dir(id, &spawn_dir)?;
            if let Some(mounts) = runtime_spec["mounts"].as_array_mut() {
                mounts.push(serde_json::json!({
                    "destination": init::SPAWN_DIR, "type": "bind",
                    "source": spawn_dir.display().to_string(),
                    "options": ["rbind", "rw", "nosuid", "nodev", "noexec"]
                }));
            }
        }
        // Copies of the target's name-resolution files, so names resolve as it resolves them
        // (copied again whenever the container starts, see `start_holder`).
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
                type_url: SPEC_TYPE.into(),
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

    /// Starts the container's main process (`kdbg-init hold`) in a new task, joining its
    /// target as it is now: a target that restarted since has another PID, so the spec is
    /// pointed at it, and the target's name-resolution files are copied again.
    pub(super) async fn start_holder(&self, id: &str) -> Result<(), Error> {
        match self.task_status(id).await? {
            Some((TaskStatus::Running, _)) => return Ok(()),
            // An ended task (or one never started) goes; a new one is made.
            Some(_) => self.delete_task(id, Duration::ZERO).await?,
            None => {}
        }
        let mut containers = ContainersClient::new(self.channel.clone());
        let container = containers
            .get(self.request(GetContainerRequest { id: id.to_owned() }, None))
            .await
            .map_err(|e| not_found_or(id, e, "looking up debug container"))?
            .into_inner()
            .container
            .ok_or_else(|| Error::ContainerNotFound {
                name: id.to_owned(),
            })?;
        let target: Target = container
            .labels
            .get(label::TARGET)
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| Error::Call {
                operation: "starting debug container",
                object: id.to_owned(),
                source: "it has no target label".into(),
            })?;
        let pid = self.pid_to_join(&target).await?;
        let mut spec: serde_json::Value = container
            .spec
            .as_ref()
            .and_then(|s| serde_json::from_slice(&s.value).ok())
            .ok_or_else(|| Error::Call {
                operation: "starting debug container",
                object: id.to_owned(),
                source: "its OCI spec cannot be read".into(),
            })?;
        let dir = self.options.fifo_dir.join(id);
        std::fs::create_dir_all(&dir)
            .and_then(|()| {
                std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            })
            .map_err(|e| Error::Call {
                operation: "making the directory of debug container",
                object: format!("{id} in {}", dir.display()),
                source: Box::new(e),
            })?;
        target_files::copy_name_resolution(pid, &dir);
        // The node may have restarted since (the directory is on a tmpfs): the spawner's
        // directory, which a bind mount needs, again.
        let spawner_mounted = spec["mounts"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["destination"] == init::SPAWN_DIR));
        if spawner_mounted {
            let spawn_dir = self.spawn_dir(id);
            crate::spawn::make_dir(id, &spawn_dir)?;
        }
        if runtime_spec::joined_pid(&spec) != Some(pid) {
            runtime_spec::join(&mut spec, pid);
            let mut updated = container.clone();
            updated.spec = Some(prost_types::Any {
                type_url: SPEC_TYPE.into(),
                value: serde_json::to_vec(&spec).unwrap_or_default(),
            });
            containers
                .update(self.request(
                    UpdateContainerRequest {
                        container: Some(updated),
                        update_mask: Some(prost_types::FieldMask {
                            paths: vec!["spec".into()],
                        }),
                    },
                    None,
                ))
                .await
                .map_err(call(
                    "pointing debug container at its target's namespaces",
                    id,
                ))?;
        }
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
        let mut tasks = TasksClient::new(self.channel.clone());
        tasks
            .create(self.request(
                CreateTaskRequest {
                    container_id: id.to_owned(),
                    rootfs: mounts,
                    ..CreateTaskRequest::default()
                },
                None,
            ))
            .await
            .map_err(call("creating the task of debug container", id))?;
        // runc joined /proc/<pid>/ns/* just now: if the target exited meanwhile and its PID
        // went to another process, those were not the target's namespaces.
        match (self.pid_to_join(&target).await, target) {
            (Ok(now), _) if now == pid => {}
            (now, target) => {
                let _ = self.delete_task(id, Duration::ZERO).await;
                return Err(match (now, target) {
                    (Err(e), _) => e,
                    (Ok(_), Target::Container(target)) => Error::TargetNotRunning {
                        target,
                        state: "restarted while the debug container was starting".into(),
                    },
                    (Ok(_), Target::Node(node)) => Error::Call {
                        operation: "starting debug container",
                        object: id.to_owned(),
                        source: format!("node {node}'s init changed PID").into(),
                    },
                });
            }
        }
        tasks
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

    /// Removes a container's snapshot and directory (what exists of them).
    pub(super) async fn remove_filesystem(&self, id: &str) {
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
}
