//! The container runtime under the stand-in's kubelet, as the kubelet's CRI is: what a pod
//! worker asks of it (a sandbox, images, containers made, started, observed, stopped and
//! removed), with the test Docker engine ([`Docker`], as cri-dockerd) and the test containerd
//! ([`super::containerd::Containerd`], as its CRI plugin) behind it.

use std::collections::HashMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, ContainerStateRunning, ContainerStateTerminated};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::apiserver::docker::{self, Inspected, Naming, SERVER_LABEL};
use crate::apiserver::setup::Bind;

/// A pod's sandbox: the container holding the pod's namespaces, and its main process.
#[derive(Debug, Clone)]
pub(crate) struct Sandbox {
    pub id: String,
    pub pid: Option<u32>,
}

/// What the runtime says of one of a pod's containers.
#[derive(Debug, Clone)]
pub(crate) struct Observed {
    /// The image, as the pod's status names it (`docker://sha256:...`, `repo@sha256:...`).
    pub image_id: String,
    pub state: Seen,
}

/// A container's state as the runtime has it.
#[derive(Debug, Clone)]
pub(crate) enum Seen {
    /// Made, not started yet.
    Created,
    Running(ContainerStateRunning),
    /// Ended (or never started): its `container_id` is the worker's to fill in.
    Exited(ContainerStateTerminated),
}

/// A container runtime, as the kubelet's CRI client sees one. Errors are the runtime's
/// words, one line, as the kubelet quotes them in Events and waiting reasons.
pub(crate) trait Runtime: Send + Sync {
    /// The scheme of the pod status's container IDs: `docker`, `containerd`.
    fn scheme(&self) -> &'static str;
    /// The node's `containerRuntimeVersion` (`docker://28.1.1`, `containerd://1.6.20`).
    fn version(&self) -> String;
    /// Makes and starts the sandbox of the pod `naming` names.
    fn run_sandbox(&self, naming: &Naming<'_>) -> Result<Sandbox, String>;
    /// The ID of `image` (as a pod's spec names it) if the runtime has it.
    fn image(&self, image: &str) -> Result<String, String>;
    /// Pulls `image` (from a loopback registry): its ID and size in bytes.
    fn pull(&self, image: &str) -> Result<(String, u64), String>;
    /// Makes `container` (env and binds resolved, command and args expanded) at `attempt`,
    /// joining `sandbox`: its ID.
    fn create(
        &self,
        naming: &Naming<'_>,
        container: &Container,
        attempt: u32,
        sandbox: &Sandbox,
        env: &[(String, String)],
        binds: &[Bind],
    ) -> Result<String, String>;
    /// Starts container `id`.
    fn start(&self, id: &str) -> Result<(), String>;
    /// The containers of `ids` that exist, by ID.
    fn observe(&self, ids: &[String]) -> HashMap<String, Observed>;
    /// Stops the containers of `ids`, killing them after `grace` seconds.
    fn stop(&self, ids: &[&str], grace: u32);
    /// Removes the containers of `ids`, running or not, and all they hold.
    fn remove(&self, ids: &[&str]);
    /// Removes everything the stand-in `server` made.
    fn remove_all(&self, server: &str);
    /// The file holding container `id`'s output, for a runtime that logs to files.
    fn log_file(&self, _id: &str) -> Option<PathBuf> {
        None
    }
    /// Whether container `id`'s main process runs.
    fn running(&self, id: &str) -> bool {
        let ids = [id.to_owned()];
        matches!(
            self.observe(&ids).get(id).map(|o| &o.state),
            Some(Seen::Running(_))
        )
    }
}

/// The test Docker engine, making pods as cri-dockerd does ([`docker`]).
pub(crate) struct Docker;

impl Runtime for Docker {
    fn scheme(&self) -> &'static str {
        "docker"
    }

    fn version(&self) -> String {
        let version = crate::world_missing()
            .is_none()
            .then(|| docker::docker(["version", "--format", "{{.Server.Version}}"]).ok())
            .flatten()
            .unwrap_or_else(|| "unknown".into());
        format!("docker://{version}")
    }

    fn run_sandbox(&self, naming: &Naming<'_>) -> Result<Sandbox, String> {
        let id = docker::docker(naming.sandbox(&crate::image()))?;
        let pid = docker::inspect(std::slice::from_ref(&id))
            .get(&id)
            .map(|c| c.state.pid);
        Ok(Sandbox { id, pid })
    }

    fn image(&self, image: &str) -> Result<String, String> {
        docker::docker(["image", "inspect", "--format", "{{.Id}}", image])
    }

    fn pull(&self, image: &str) -> Result<(String, u64), String> {
        let found = docker::docker(["pull", "--quiet", image]).and_then(|_| {
            docker::docker(["image", "inspect", "--format", "{{.Id}} {{.Size}}", image])
        })?;
        let (id, size) = found.split_once(' ').unwrap_or((&found, "0"));
        Ok((id.to_owned(), size.parse().unwrap_or(0)))
    }

    fn create(
        &self,
        naming: &Naming<'_>,
        container: &Container,
        attempt: u32,
        sandbox: &Sandbox,
        env: &[(String, String)],
        binds: &[Bind],
    ) -> Result<String, String> {
        let mounts: Vec<String> = binds.iter().map(Bind::volume).collect();
        docker::docker(naming.container(container, attempt, &sandbox.id, env, &mounts))
    }

    fn start(&self, id: &str) -> Result<(), String> {
        docker::docker(["start", id]).map(drop)
    }

    fn observe(&self, ids: &[String]) -> HashMap<String, Observed> {
        docker::inspect(ids)
            .into_iter()
            .map(|(id, c)| (id, observed(&c)))
            .collect()
    }

    fn stop(&self, ids: &[&str], grace: u32) {
        let time = grace.to_string();
        let _ = docker::docker(["stop", "--time", &time].iter().chain(ids));
    }

    fn remove(&self, ids: &[&str]) {
        if !ids.is_empty() {
            let _ = docker::docker(["rm", "-f"].iter().chain(ids));
        }
    }

    fn remove_all(&self, server: &str) {
        let filter = format!("label={SERVER_LABEL}={server}");
        if let Ok(ids) = docker::docker(["ps", "-aq", "--filter", &filter])
            && !ids.is_empty()
        {
            let _ = docker::docker(["rm", "-f"].into_iter().chain(ids.lines()));
        }
    }
}

/// What `docker inspect` says of a container, as the kubelet reads it.
fn observed(c: &Inspected) -> Observed {
    let image_id = format!("docker://{}", c.image);
    let state = &c.state;
    let started_at = time(&state.started_at);
    if state.running || state.status == "paused" || state.status == "restarting" {
        let running = ContainerStateRunning { started_at };
        return Observed {
            image_id,
            state: Seen::Running(running),
        };
    }
    if state.status == "created" && state.error.is_empty() {
        return Observed {
            image_id,
            state: Seen::Created,
        };
    }
    let reason = if state.oom_killed {
        "OOMKilled"
    } else if !state.error.is_empty() && started_at.is_none() {
        "StartError"
    } else if state.exit_code == 0 {
        "Completed"
    } else {
        "Error"
    };
    let ended = ContainerStateTerminated {
        exit_code: state.exit_code,
        reason: Some(reason.into()),
        message: (!state.error.is_empty()).then(|| state.error.clone()),
        started_at,
        finished_at: time(&state.finished_at),
        ..ContainerStateTerminated::default()
    };
    Observed {
        image_id,
        state: Seen::Exited(ended),
    }
}

/// A Docker timestamp (RFC 3339, nanoseconds; the zero time when unset) as the API's.
fn time(docker: &str) -> Option<Time> {
    let t: k8s_openapi::jiff::Timestamp = docker.parse().ok()?;
    (t.as_second() > 0).then_some(Time(t))
}
