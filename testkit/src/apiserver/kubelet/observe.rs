//! A pod worker following its containers: what the engine says of them, restarts per the
//! restart policy (with the kubelet's crash back-off), and the end on deletion.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated};

use super::runtime::Seen;
use super::{Backoff, MAX_GRACE, Worker, waiting};
use crate::apiserver::events::Type;

impl Worker {
    /// Asks the engine about the running containers and follows what it says.
    pub(super) fn observe(&mut self) {
        let ids: Vec<String> = self
            .slots
            .iter()
            .filter(|s| !s.done)
            .filter_map(|s| s.current.clone())
            .collect();
        let found = self.kubelet().runtime.observe(&ids);
        let scheme = self.kubelet().scheme();
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            let Some(id) = slot.current.clone().filter(|_| !slot.done) else {
                continue;
            };
            let container_id = Some(format!("{scheme}://{id}"));
            let Some(c) = found.get(&id) else {
                let gone = ContainerStateTerminated {
                    exit_code: 137,
                    reason: Some("ContainerStatusUnknown".into()),
                    message: Some(
                        "The container could not be located when the pod was terminated".into(),
                    ),
                    container_id,
                    ..ContainerStateTerminated::default()
                };
                self.exited(i, gone);
                continue;
            };
            slot.image_id = c.image_id.clone();
            match &c.state {
                Seen::Created => {}
                Seen::Running(running) => {
                    slot.state = ContainerState {
                        running: Some(running.clone()),
                        ..ContainerState::default()
                    };
                }
                Seen::Exited(ended) => {
                    let ended = ContainerStateTerminated {
                        container_id,
                        ..ended.clone()
                    };
                    self.exited(i, ended);
                }
            }
        }
    }

    /// Container `i` ended as `ended`: it is restarted, or stays ended, per the restart policy
    /// (an init container that completed is never run again).
    fn exited(&mut self, i: usize, ended: ContainerStateTerminated) {
        let policy = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone());
        let completed_init = i < self.inits && ended.exit_code == 0;
        let restart = match policy.as_deref() {
            _ if completed_init => false,
            Some("Never") => false,
            Some("OnFailure") => ended.exit_code != 0,
            _ => true,
        };
        let slot = &mut self.slots[i];
        if !restart {
            slot.state = ContainerState {
                terminated: Some(ended),
                ..ContainerState::default()
            };
            slot.done = true;
            return;
        }
        if slot
            .started
            .is_some_and(|s| s.elapsed() > Duration::from_secs(600))
        {
            slot.crash_backoff = Backoff::new(true);
        }
        let delay = slot.crash_backoff.next();
        if let Some(old) = slot.previous.take() {
            self.shared.kubelet.runtime.remove(&[&old]);
        }
        slot.previous = slot.current.take();
        slot.last = Some(ended.clone());
        slot.retry_at = Some(Instant::now() + delay);
        slot.state = ContainerState {
            terminated: Some(ended),
            ..ContainerState::default()
        };
        if delay > Duration::ZERO {
            let name = slot.spec.name.clone();
            let (namespace, pod) = &self.key;
            let message = format!(
                "back-off {}s restarting failed container={name} pod={pod}_{namespace}({})",
                delay.as_secs(),
                self.uid
            );
            slot.state = waiting("CrashLoopBackOff", Some(message));
            let said = format!(
                "Back-off restarting failed container {name} in pod {pod}_{namespace}({})",
                self.uid
            );
            self.event(Type::Warning, "BackOff", Some(&name), said);
        }
    }

    /// Stops the containers within `grace` seconds, removes them, the sandbox and the
    /// volumes, then the pod.
    pub(super) fn terminate(self, grace: u32) {
        let running: Vec<(String, String)> = self
            .slots
            .iter()
            .filter(|s| s.state.running.is_some())
            .filter_map(|s| Some((s.spec.name.clone(), s.current.clone()?)))
            .collect();
        for (name, _) in &running {
            self.event(
                Type::Normal,
                "Killing",
                Some(name),
                format!("Stopping container {name}"),
            );
        }
        if grace > 0 && !running.is_empty() {
            let ids: Vec<&str> = running.iter().map(|(_, id)| id.as_str()).collect();
            self.kubelet().runtime.stop(&ids, grace.min(MAX_GRACE));
        }
        let all: Vec<&str> = self
            .slots
            .iter()
            .flat_map(|s| [s.current.as_deref(), s.previous.as_deref()])
            .chain([self.sandbox.as_ref().map(|s| s.id.as_str())])
            .flatten()
            .collect();
        self.kubelet().runtime.remove(&all);
        let _ = std::fs::remove_dir_all(self.kubelet().dir.join(&self.uid));
        self.kubelet().pods.lock().unwrap().remove(&self.uid);
        self.shared
            .store
            .lock()
            .unwrap()
            .remove_pod(&self.key, Some(&self.uid));
    }
}
