//! The test containerd under the stand-in's kubelet, making a pod as containerd's CRI plugin
//! makes one, in namespace `k8s.io`: a sandbox container (the test image, sleeping) holds the
//! pod's own network namespace (loopback only, brought up as the CNI loopback plugin does),
//! UTS namespace (the pod's hostname) and IPC namespace; each container joins them. IDs are
//! random, as the plugin's; the `io.kubernetes.*` labels name the pod and container (the
//! agent checks them), the stand-in's own labels find what it made, to remove it.
//!
//! Containers are made with `ctr containers create` and started with `ctr tasks start`,
//! their output going to a file per container ([`Runtime::log_file`]) through a logging
//! binary ([`LOGGER`]); what `ctr` cannot say goes through containerd's API ([`api`]): the
//! user, groups and capabilities written into the runtime spec ([`spec::patch`]), and a
//! task's state with its exit status and time. A container's start time is when its task
//! started, as the CRI plugin records it.
//!
//! Not modelled: OOM kills (reported as errors), `tty`/`stdin`, log timestamps.

mod api;
mod spec;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use containerd_client::types::v1::Status;
use k8s_openapi::api::core::v1::{Container, ContainerStateRunning, ContainerStateTerminated};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kdbg_runtimes::containerd::runtime_spec::ImageConfig;
use serde_json::Value;

use self::api::{Api, Found};
use super::runtime::{Observed, Runtime, Sandbox, Seen};
use crate::apiserver::docker::{Naming, SERVER_LABEL, loopback_registry};
use crate::apiserver::setup::Bind;
use crate::apiserver::store::{now, random};

/// How a container of ours came to be started.
#[derive(Debug, Clone)]
enum Start {
    At(Time),
    Failed(String),
}

/// What the stand-in remembers of a container it made.
#[derive(Debug, Clone, Default)]
struct Made {
    image_id: String,
    start: Option<Start>,
}

/// The containers' log driver, containerd's `binary://` logging: the shim hands it the
/// container's stdout and stderr pipes (fds 3 and 4) and waits until fd 5 is closed. The
/// shim's own `file://` logging loses the output of a process that exits at once now and then
/// (containerd 1.6: measured with `ctr run --log-uri file://` of an image whose entrypoint
/// prints one line and exits, 1 empty log in 20 on an idle machine, 8 in 20 under load; none
/// in 40 through this driver), which is when a user reads `kubectl logs` most.
const LOGGER: &str = r#"#!/bin/sh
# The stand-in's log driver: appends the container's stdout (fd 3) and stderr (fd 4) to
# $1/$CONTAINER_ID.log; closing fd 5 tells the shim it is ready.
exec 5>&-
cat <&3 >>"$1/$CONTAINER_ID.log" &
cat <&4 >>"$1/$CONTAINER_ID.log"
wait
"#;

/// The test containerd, through `ctr` and its API.
pub(crate) struct Containerd {
    socket: String,
    /// Where the containers' output goes, one file each.
    logs: PathBuf,
    /// Held while the log driver is written.
    writing_logger: Mutex<()>,
    made: Mutex<HashMap<String, Made>>,
}

impl Containerd {
    /// containerd at the test world's socket; logs under `logs`.
    pub fn new(logs: PathBuf) -> Containerd {
        Containerd {
            socket: crate::containerd_socket(),
            logs,
            writing_logger: Mutex::default(),
            made: Mutex::default(),
        }
    }

    /// The log driver, written beside the logs once.
    fn logger(&self) -> Result<PathBuf, String> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.logs.with_file_name("logger");
        let _writing = self.writing_logger.lock().unwrap();
        if !path.exists() {
            std::fs::create_dir_all(&self.logs)
                .and_then(|()| {
                    let aside = path.with_extension("new");
                    std::fs::write(&aside, LOGGER)?;
                    std::fs::set_permissions(&aside, std::fs::Permissions::from_mode(0o755))?;
                    std::fs::rename(&aside, &path)
                })
                .map_err(|e| format!("writing the log driver {}: {e}", path.display()))?;
        }
        Ok(path)
    }

    /// `ctr` in namespace `k8s.io`: its stdout, or why it failed (its stderr, one line).
    fn ctr<I, S>(&self, args: I) -> Result<String, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let out = Command::new("ctr")
            .args(["--address", &self.socket, "--namespace", "k8s.io"])
            .args(args)
            .output()
            .map_err(|e| format!("running ctr: {e}"))?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned());
        }
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        Err(lines.join(" ").trim_start_matches("ctr: ").to_owned())
    }

    fn api(&self) -> Result<Api, String> {
        Api::connect(&self.socket)
    }

    /// The target (manifest or index) digest and media type of image `reference`.
    fn target(&self, reference: &str) -> Result<(String, String), String> {
        let listed = self.ctr(["images", "ls", &format!("name=={reference}")])?;
        // REF TYPE DIGEST SIZE PLATFORMS LABELS
        let line = listed
            .lines()
            .skip(1)
            .find(|l| l.split_whitespace().next() == Some(reference));
        let mut fields = line
            .ok_or_else(|| format!("image {reference:?}: not found"))?
            .split_whitespace();
        let media_type = fields.nth(1).unwrap_or_default().to_owned();
        let digest = fields.next().unwrap_or_default().to_owned();
        Ok((digest, media_type))
    }

    /// A blob of containerd's content store, as JSON.
    fn content(&self, digest: &str) -> Result<Value, String> {
        let blob = self.ctr(["content", "get", digest])?;
        serde_json::from_str(&blob).map_err(|e| format!("blob {digest}: {e}"))
    }

    /// The manifest of image `reference` for this machine's platform.
    fn manifest(&self, reference: &str) -> Result<Value, String> {
        let (digest, _) = self.target(reference)?;
        let found = self.content(&digest)?;
        let Some(manifests) = found["manifests"].as_array() else {
            return Ok(found);
        };
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let chosen = manifests
            .iter()
            .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == arch);
        let digest = chosen.and_then(|m| m["digest"].as_str());
        self.content(digest.ok_or_else(|| format!("image {reference:?}: no linux/{arch}"))?)
    }

    /// The config of image `reference`: its entrypoint and cmd.
    fn image_config(&self, reference: &str) -> Result<ImageConfig, String> {
        let manifest = self.manifest(reference)?;
        let digest = manifest["config"]["digest"].as_str().unwrap_or_default();
        let blob = self.ctr(["content", "get", digest])?;
        ImageConfig::from_image_config(blob.as_bytes()).map_err(|e| e.to_string())
    }

    /// Makes container `id` from image `reference` with `options`, running `args` (the
    /// image's entrypoint and cmd if none), then writes `patch`'s changes to its spec.
    fn make(
        &self,
        id: &str,
        reference: &str,
        options: &[String],
        args: &[String],
        patch: impl FnOnce(&mut Value) -> bool,
    ) -> Result<(), String> {
        let mut create: Vec<&str> = vec!["containers", "create"];
        create.extend(options.iter().map(String::as_str));
        create.extend([reference, id]);
        if !args.is_empty() {
            create.push("--");
            create.extend(args.iter().map(String::as_str));
        }
        self.ctr(&create)?;
        let patched = self.api().and_then(|api| {
            let mut spec = api.spec(id).map_err(Option::unwrap_or_default)?;
            if patch(&mut spec) {
                api.set_spec(id, &spec)?;
            }
            Ok(())
        });
        if let Err(why) = patched {
            self.remove(&[id]);
            return Err(why);
        }
        Ok(())
    }

    /// Waits (at most `bound`) until none of the tasks of `ids` runs: those still running.
    fn wait_stopped<'a>(&self, ids: &[&'a str], bound: Duration) -> Vec<&'a str> {
        let deadline = Instant::now() + bound;
        loop {
            let running: Vec<&str> = match self.api() {
                Ok(api) => ids
                    .iter()
                    .copied()
                    .filter(|id| {
                        matches!(api.find(id), Ok(Found::Task(t)) if t.status != Status::Stopped)
                    })
                    .collect(),
                Err(_) => ids.to_vec(),
            };
            if running.is_empty() || Instant::now() >= deadline {
                return running;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill(&self, ids: &[&str], signal: &str) {
        for id in ids {
            let _ = self.ctr(["tasks", "kill", "--signal", signal, id]);
        }
    }

    fn observed(&self, api: &Api, id: &str) -> Option<Observed> {
        let made = self
            .made
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .unwrap_or_default();
        let started_at = match &made.start {
            Some(Start::At(t)) => Some(t.clone()),
            _ => None,
        };
        let state = match api.find(id).ok()? {
            Found::Gone => return None,
            Found::NoTask => match made.start {
                Some(Start::Failed(why)) => Seen::Exited(ContainerStateTerminated {
                    exit_code: 128,
                    reason: Some("StartError".into()),
                    message: Some(why),
                    ..ContainerStateTerminated::default()
                }),
                _ => Seen::Created,
            },
            Found::Task(task) => match task.status {
                Status::Running | Status::Paused | Status::Pausing => {
                    Seen::Running(ContainerStateRunning { started_at })
                }
                Status::Stopped => {
                    let exit_code = i32::try_from(task.exit_status).unwrap_or(i32::MAX);
                    let reason = if exit_code == 0 { "Completed" } else { "Error" };
                    Seen::Exited(ContainerStateTerminated {
                        exit_code,
                        reason: Some(reason.into()),
                        started_at,
                        finished_at: task.exited_at,
                        ..ContainerStateTerminated::default()
                    })
                }
                Status::Created | Status::Unknown => Seen::Created,
            },
        };
        Some(Observed {
            image_id: made.image_id,
            state,
        })
    }
}

/// A new container ID, 64 hex digits as the CRI plugin's.
fn new_id() -> String {
    (0..4).map(|_| format!("{:016x}", random())).collect()
}

impl Runtime for Containerd {
    fn scheme(&self) -> &'static str {
        "containerd"
    }

    fn version(&self) -> String {
        // "Server:\n  Version:  1.6.20~ds1\n  Revision: ..."
        let said = self.ctr(["version"]).unwrap_or_default();
        let server = said.split("Server:").nth(1).unwrap_or_default();
        let version = server
            .lines()
            .find_map(|l| l.trim().strip_prefix("Version:"))
            .map_or("unknown", str::trim);
        format!("containerd://{version}")
    }

    fn run_sandbox(&self, naming: &Naming<'_>) -> Result<Sandbox, String> {
        let image = crate::ctd_image();
        if self.target(&image).is_err() {
            self.pull(&image)?;
        }
        let id = new_id();
        let mut options = vec!["--cap-add".to_owned(), "CAP_NET_ADMIN".to_owned()];
        let mut labels = naming.labels_of("POD");
        labels.push(("io.cri-containerd.kind", "sandbox".into()));
        for (key, value) in labels {
            options.extend(["--label".into(), format!("{key}={value}")]);
        }
        let args = ["sh", "-c", "ip link set lo up && exec sleep infinity"].map(String::from);
        self.make(&id, &image, &options, &args, |s| {
            spec::hostname(s, naming.pod);
            true
        })?;
        if let Err(why) = self.ctr(["tasks", "start", "--detach=true", "--null-io=true", &id]) {
            self.remove(&[&id]);
            return Err(why);
        }
        let pid = match self.api()?.find(&id)? {
            Found::Task(task) => Some(task.pid),
            _ => None,
        };
        Ok(Sandbox { id, pid })
    }

    fn image(&self, image: &str) -> Result<String, String> {
        let reference = spec::reference(image);
        let (digest, _) = self.target(&reference)?;
        Ok(format!("{}@{digest}", spec::repository(&reference)))
    }

    fn pull(&self, image: &str) -> Result<(String, u64), String> {
        let reference = spec::reference(image);
        // Plain HTTP: the test world's registries are on loopback, and only those are pulled.
        if !loopback_registry(&reference) {
            return Err(format!("{reference}: not a loopback registry"));
        }
        self.ctr(["images", "pull", "--plain-http", &reference])?;
        let manifest = self.manifest(&reference)?;
        let sizes = manifest["layers"].as_array().into_iter().flatten();
        let size = sizes.filter_map(|l| l["size"].as_u64()).sum();
        Ok((self.image(image)?, size))
    }

    fn create(
        &self,
        naming: &Naming<'_>,
        container: &Container,
        _attempt: u32,
        sandbox: &Sandbox,
        env: &[(String, String)],
        binds: &[Bind],
    ) -> Result<String, String> {
        let image = container.image.clone().unwrap_or_default();
        let reference = spec::reference(&image);
        let config = if spec::needs_entrypoint(container) {
            Some(self.image_config(&reference)?)
        } else {
            None
        };
        let args = spec::process_args(container, config.as_ref());
        let mut labels = naming.labels_of(&container.name);
        labels.push(("io.cri-containerd.kind", "container".into()));
        let node = std::process::id();
        let options = spec::options(naming.pod, container, &labels, sandbox, env, binds, node);
        let id = new_id();
        self.make(&id, &reference, &options, &args, |s| {
            spec::patch(s, naming.pod, container)
        })?;
        let made = Made {
            image_id: self.image(&image).unwrap_or_default(),
            start: None,
        };
        self.made.lock().unwrap().insert(id.clone(), made);
        Ok(id)
    }

    fn start(&self, id: &str) -> Result<(), String> {
        let logger = self.logger()?;
        let uri = format!("binary://{}?{}", logger.display(), self.logs.display());
        let started = self.ctr(["tasks", "start", "--detach=true", "--log-uri", &uri, id]);
        let start = match &started {
            Ok(_) => Start::At(now()),
            Err(why) => Start::Failed(why.clone()),
        };
        if let Some(made) = self.made.lock().unwrap().get_mut(id) {
            made.start = Some(start);
        }
        started.map(drop)
    }

    fn observe(&self, ids: &[String]) -> HashMap<String, Observed> {
        let Ok(api) = self.api() else {
            return HashMap::new();
        };
        ids.iter()
            .filter_map(|id| Some((id.clone(), self.observed(&api, id)?)))
            .collect()
    }

    fn stop(&self, ids: &[&str], grace: u32) {
        self.kill(ids, "SIGTERM");
        let left = self.wait_stopped(ids, Duration::from_secs(grace.into()));
        self.kill(&left, "SIGKILL");
    }

    fn remove(&self, ids: &[&str]) {
        self.kill(ids, "SIGKILL");
        self.wait_stopped(ids, Duration::from_secs(5));
        for id in ids {
            let _ = self.ctr(["tasks", "delete", "--force=true", id]);
            // With its snapshot.
            let _ = self.ctr(["containers", "delete", id]);
            let _ = std::fs::remove_file(self.logs.join(format!("{id}.log")));
            self.made.lock().unwrap().remove(*id);
        }
    }

    fn remove_all(&self, server: &str) {
        let filter = format!("labels.\"{SERVER_LABEL}\"==\"{server}\"");
        if let Ok(ids) = self.ctr(["containers", "ls", "--quiet", &filter]) {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            self.remove(&ids);
        }
    }

    fn log_file(&self, id: &str) -> Option<PathBuf> {
        Some(self.logs.join(format!("{id}.log")))
    }
}
