//! A pod worker bringing a pod up: its volumes and sandbox, then each container's image (per
//! the pull policy, with the kubelet's pull back-off), configuration and start.

use std::time::{Duration, Instant};

use super::{Backoff, RETRY, Worker, waiting};
use crate::apiserver::docker;
use crate::apiserver::events::Type;
use crate::apiserver::setup;
use crate::apiserver::store::now;

impl Worker {
    /// Volumes, then the sandbox; `false` while they are not there.
    pub(super) fn set_up(&mut self) -> bool {
        if self.retry_setup_at.is_some_and(|at| Instant::now() < at) {
            return false;
        }
        self.retry_setup_at = Some(Instant::now() + RETRY);
        if self.pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
            let message = "Failed to create pod sandbox: the stand-in runs no pod in the host's network namespace (hostNetwork=true)";
            self.event(
                Type::Warning,
                "FailedCreatePodSandBox",
                None,
                message.into(),
            );
            return false;
        }
        if self.volumes.is_none() {
            let maps = self.shared.store.lock().unwrap().config_maps.clone();
            let dir = self.kubelet().dir.join(&self.uid);
            match setup::volumes(&self.pod, &dir, &maps) {
                Ok(ready) => self.volumes = Some(ready),
                Err((volume, why)) => {
                    let message =
                        format!("MountVolume.SetUp failed for volume \"{volume}\" : {why}");
                    self.event(Type::Warning, "FailedMount", None, message);
                    return false;
                }
            }
        }
        let sandbox = match self.kubelet().runtime.run_sandbox(&self.naming()) {
            Ok(sandbox) => sandbox,
            Err(e) => {
                let message = format!("Failed to create pod sandbox: {e}");
                self.event(Type::Warning, "FailedCreatePodSandBox", None, message);
                return false;
            }
        };
        if self.kubelet().stopped() {
            self.kubelet().runtime.remove(&[&sandbox.id]);
            return false;
        }
        if let Some(handle) = self.kubelet().pods.lock().unwrap().get_mut(&self.uid) {
            handle.sandbox = sandbox.pid.map(|pid| (sandbox.id.clone(), pid));
        }
        self.sandbox = Some(sandbox);
        self.pod_ip = Some(self.shared.store.lock().unwrap().next_pod_ip());
        self.start_time = Some(now());
        true
    }

    /// Starts container `i` if it is due to start.
    pub(super) fn start(&mut self, i: usize) {
        let slot = &self.slots[i];
        if slot.current.is_some() || slot.done {
            return;
        }
        let name = slot.spec.name.clone();
        if slot.retry_at.is_some_and(|at| Instant::now() < at) {
            return self.back_off_pulling(i);
        }
        self.slots[i].retry_at = None;
        let Some(image_id) = self.ensure_image(i) else {
            return;
        };
        self.slots[i].image_id = image_id;
        let maps = self.shared.store.lock().unwrap().config_maps.clone();
        let pod_ip = self.pod_ip.clone().unwrap_or_default();
        let env = match setup::env(&self.pod, &self.slots[i].spec, &pod_ip, &maps) {
            Ok(env) => env,
            Err(why) => return self.refuse(i, "CreateContainerConfigError", why),
        };
        let mut spec = self.slots[i].spec.clone();
        for list in [&mut spec.command, &mut spec.args].into_iter().flatten() {
            for arg in list.iter_mut() {
                *arg = setup::expand(arg, &env);
            }
        }
        let binds = setup::binds(&spec, self.volumes.as_ref().expect("volumes are set up"));
        let sandbox = self.sandbox.clone().expect("a sandbox is set up");
        let attempt = self.slots[i].created;
        let runtime = &self.kubelet().runtime;
        let made = runtime.create(&self.naming(), &spec, attempt, &sandbox, &env, &binds);
        let id = match made {
            Ok(id) => id,
            Err(why) => return self.refuse(i, "CreateContainerError", why),
        };
        if self.kubelet().stopped() {
            self.kubelet().runtime.remove(&[&id]);
            return;
        }
        let slot = &mut self.slots[i];
        slot.created += 1;
        slot.current = Some(id.clone());
        slot.started = Some(Instant::now());
        slot.pull_error = None;
        let container = Some(name.as_str());
        self.event(
            Type::Normal,
            "Created",
            container,
            format!("Created container: {name}"),
        );
        match self.kubelet().runtime.start(&id) {
            Ok(_) => self.event(
                Type::Normal,
                "Started",
                container,
                format!("Started container {name}"),
            ),
            Err(why) => self.event(Type::Warning, "Failed", container, format!("Error: {why}")),
        }
    }

    /// Container `i` waits for its next pull: a second after ErrImagePull, the kubelet says
    /// ImagePullBackOff.
    fn back_off_pulling(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        let Some((since, why)) = &slot.pull_error else {
            return;
        };
        let reason = slot
            .state
            .waiting
            .as_ref()
            .and_then(|w| w.reason.as_deref());
        if since.elapsed() < Duration::from_secs(1) || reason != Some("ErrImagePull") {
            return;
        }
        let (name, image) = (
            slot.spec.name.clone(),
            slot.spec.image.clone().unwrap_or_default(),
        );
        let message = format!("Back-off pulling image \"{image}\": ErrImagePull: {why}");
        slot.state = waiting("ImagePullBackOff", Some(message));
        let container = Some(name.as_str());
        self.event(
            Type::Normal,
            "BackOff",
            container,
            format!("Back-off pulling image \"{image}\""),
        );
        self.event(
            Type::Warning,
            "Failed",
            container,
            "Error: ImagePullBackOff".into(),
        );
    }

    /// Container `i` cannot be created (`reason`: `why`): it waits, and is tried again.
    fn refuse(&mut self, i: usize, reason: &str, why: String) {
        let slot = &mut self.slots[i];
        let name = slot.spec.name.clone();
        slot.state = waiting(reason, Some(why.clone()));
        slot.retry_at = Some(Instant::now() + RETRY);
        self.event(
            Type::Warning,
            "Failed",
            Some(&name),
            format!("Error: {why}"),
        );
    }

    /// The image of container `i`, per its pull policy: its ID, or `None` (the container
    /// waits, saying why).
    fn ensure_image(&mut self, i: usize) -> Option<String> {
        let spec = &self.slots[i].spec;
        let (name, image) = (spec.name.clone(), spec.image.clone().unwrap_or_default());
        let policy = spec.image_pull_policy.clone().unwrap_or_default();
        let present = self.kubelet().runtime.image(&image);
        let container = Some(name.as_str());
        match (policy.as_str(), present) {
            ("Never" | "IfNotPresent", Ok(id)) => {
                let message = format!("Container image \"{image}\" already present on machine");
                self.event(Type::Normal, "Pulled", container, message);
                return Some(id);
            }
            ("Never", Err(_)) => {
                let message =
                    format!("Container image \"{image}\" is not present with pull policy of Never");
                self.event(
                    Type::Warning,
                    "ErrImageNeverPull",
                    container,
                    message.clone(),
                );
                let slot = &mut self.slots[i];
                slot.state = waiting("ErrImageNeverPull", Some(message));
                slot.retry_at = Some(Instant::now() + RETRY);
                return None;
            }
            _ => {}
        }
        self.event(
            Type::Normal,
            "Pulling",
            container,
            format!("Pulling image \"{image}\""),
        );
        let began = Instant::now();
        let pulled = if docker::loopback_registry(&image) {
            self.kubelet().runtime.pull(&image)
        } else {
            Err(format!(
                "image {image:?} is not on the test engine, and the stand-in pulls only from registries on loopback (127.0.0.1:PORT/...)"
            ))
        };
        match pulled {
            Ok((id, size)) => {
                let took = format!("{:.3}s", began.elapsed().as_secs_f64());
                let message = format!(
                    "Successfully pulled image \"{image}\" in {took} ({took} including waiting). Image size: {size} bytes."
                );
                self.event(Type::Normal, "Pulled", container, message);
                self.slots[i].pull_backoff = Backoff::new(false);
                Some(id)
            }
            Err(why) => {
                self.event(
                    Type::Warning,
                    "Failed",
                    container,
                    format!("Failed to pull image \"{image}\": {why}"),
                );
                self.event(
                    Type::Warning,
                    "Failed",
                    container,
                    "Error: ErrImagePull".into(),
                );
                let slot = &mut self.slots[i];
                slot.state = waiting("ErrImagePull", Some(why.clone()));
                slot.retry_at = Some(Instant::now() + slot.pull_backoff.next());
                slot.pull_error = Some((Instant::now(), why));
                None
            }
        }
    }
}
