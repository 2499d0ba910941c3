//! Target containers, on Docker and in containerd's `k8s.io` namespace, removed when dropped.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::*;

/// A target container, removed when dropped.
pub struct Target {
    /// Its container name, unique to this test process.
    pub name: String,
}

impl Target {
    /// A target running `sh -c script`, with no network.
    pub fn start(script: &str) -> Target {
        Target::start_with(&[], script)
    }

    /// A target with more `docker run` options (labels, `--pid host`...).
    pub fn start_with(options: &[&str], script: &str) -> Target {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "kdbg-e2e-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let image = image();
        let mut args = vec!["run", "-d", "--name", &name, "--network", "none"];
        args.extend_from_slice(options);
        args.extend([image.as_str(), "sh", "-c", script]);
        docker(&args);
        Target { name }
    }

    /// As the plugin's `local` verbs name it: `docker://<name>`.
    pub fn reference(&self) -> String {
        format!("docker://{}", self.name)
    }

    /// As a pod's status names it: `docker://<full ID>`.
    pub fn pod_reference(&self) -> String {
        format!("docker://{}", container_id(&self.name))
    }

    /// Debug containers still present for this target, named by its name or its ID.
    pub fn leftovers(&self) -> Vec<String> {
        let mut found = Vec::new();
        for reference in [self.reference(), self.pod_reference()] {
            let filter = format!("label={LABEL_TARGET}={reference}");
            let out = docker(&["ps", "-aq", "--filter", &filter]);
            found.extend(
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .map(str::to_owned),
            );
        }
        found
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = Command::new("/usr/bin/docker")
            .args(["rm", "-f", &self.name])
            .env("DOCKER_HOST", docker_host())
            .output();
    }
}

/// A target container in containerd's `k8s.io` namespace, as a pod's would be; removed
/// when dropped.
pub struct CtdTarget {
    /// Its container ID, unique to this test process.
    pub id: String,
}

impl CtdTarget {
    /// A target running `sh -c script`.
    pub fn start(script: &str) -> CtdTarget {
        CtdTarget::start_with(&[], script)
    }

    /// A target with more `ctr run` options (`--label`, `--with-ns`...).
    pub fn start_with(options: &[&str], script: &str) -> CtdTarget {
        static N: AtomicUsize = AtomicUsize::new(0);
        let id = format!(
            "kdbg-ctd-e2e-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let image = ctd_image();
        let mut args = vec!["run", "-d"];
        args.extend_from_slice(options);
        args.extend([image.as_str(), id.as_str(), "sh", "-c", script]);
        let out = ctr("k8s.io", &args);
        assert!(out.status.success(), "ctr run: {}", text(&out.stderr));
        CtdTarget { id }
    }

    /// As a pod's status and the plugin's `local` verbs name it: `containerd://<ID>`.
    pub fn reference(&self) -> String {
        format!("containerd://{}", self.id)
    }

    /// Debug containers still present for this target.
    pub fn leftovers(&self) -> Vec<String> {
        let filter = format!("labels.\"{LABEL_TARGET}\"==\"{}\"", self.reference());
        let out = ctr(DEBUG_NAMESPACE, &["containers", "ls", "-q", &filter]);
        assert!(
            out.status.success(),
            "ctr containers ls: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    /// Kills the target's task and waits until it has stopped.
    pub fn stop(&self) {
        kill_task("k8s.io", &self.id);
    }
}

/// Kills task `id` of containerd's `namespace` with SIGKILL and waits (at most
/// [`READY_BOUND`]) until it has stopped, as deleting it needs.
pub fn kill_task(namespace: &str, id: &str) {
    ctr(namespace, &["task", "kill", "-s", "KILL", id]);
    eventually(READY_BOUND, &format!("task {id} to stop"), || {
        task_stopped(namespace, id)
    });
}

/// Whether task `id` of containerd's `namespace` has stopped, or is not there at all.
pub(crate) fn task_stopped(namespace: &str, id: &str) -> bool {
    let out = ctr(namespace, &["task", "ls"]);
    out.status.success()
        && text(&out.stdout)
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .is_none_or(|l| l.contains("STOPPED"))
}

impl Drop for CtdTarget {
    fn drop(&mut self) {
        let _ = ctr("k8s.io", &["task", "kill", "-s", "KILL", &self.id]);
        let _ = ctr("k8s.io", &["task", "delete", "-f", &self.id]);
        let _ = ctr("k8s.io", &["container", "delete", &self.id]);
    }
}
