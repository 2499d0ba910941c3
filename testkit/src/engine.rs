//! One scenario, both engines: what a lifecycle test needs of the engine under it, for Docker
//! and for containerd.

use std::process::Command;

use super::{
    Agent, CtdTarget, DEBUG_NAMESPACE, READY_BOUND, Target, ctr, docker, docker_host, task_stopped,
    text, within,
};

/// A target container of some engine.
pub trait Targeted {
    /// As a pod's status names it (`docker://<ID>`, `containerd://<ID>`).
    fn pod_reference(&self) -> String;
    /// The debug containers joined to it that exist.
    fn leftovers(&self) -> Vec<String>;
    /// Stops it, as a crash would.
    fn stop(&self);
    /// Removes it, as a deleted pod's.
    fn delete(&self);
    /// Its main process's PID on this machine.
    fn pid(&self) -> u32;
}

/// The kubelet's labels of container `app` of pod `namespace/pod`, as `key=value`.
fn pod_labels(namespace: &str, pod: &str) -> [String; 3] {
    [
        format!("io.kubernetes.pod.namespace={namespace}"),
        format!("io.kubernetes.pod.name={pod}"),
        "io.kubernetes.container.name=app".to_owned(),
    ]
}

/// A real engine.
pub trait Engine {
    /// `docker` or `containerd`.
    fn name(&self) -> &'static str;
    /// A target running `script`.
    fn target(&self, script: &str) -> Box<dyn Targeted>;
    /// A target running `script` labelled by the kubelet as a container of pod
    /// `namespace/pod`, in the node's PID namespace if `host_pid`.
    fn pod_target(
        &self,
        namespace: &str,
        pod: &str,
        host_pid: bool,
        script: &str,
    ) -> Box<dyn Targeted>;
    /// An agent on this engine with `extra` top-level YAML in its configuration.
    fn agent(&self, extra: &str) -> Agent;
    /// Kills debug container `id`'s main process, as `docker kill` or `ctr task kill` would.
    fn kill(&self, id: &str);
    /// Whether debug container `id` exists, and whether its main process runs.
    fn state(&self, id: &str) -> Option<bool>;
    /// Removes debug container `id`, if a test left it.
    fn remove(&self, id: &str);
    /// How many retained debug containers the engine holds (any agent's).
    fn retained(&self) -> usize;
}

/// The test Docker engine.
pub struct DockerEngine;

impl Targeted for Target {
    fn pod_reference(&self) -> String {
        Target::pod_reference(self)
    }
    fn leftovers(&self) -> Vec<String> {
        Target::leftovers(self)
    }
    fn stop(&self) {
        docker(&["kill", &self.name]);
    }
    fn delete(&self) {
        docker(&["rm", "-f", &self.name]);
    }
    fn pid(&self) -> u32 {
        let out = docker(&["inspect", "-f", "{{.State.Pid}}", &self.name]);
        text(&out.stdout).trim().parse().unwrap()
    }
}

impl Engine for DockerEngine {
    fn name(&self) -> &'static str {
        "docker"
    }
    fn target(&self, script: &str) -> Box<dyn Targeted> {
        Box::new(Target::start(script))
    }
    fn pod_target(
        &self,
        namespace: &str,
        pod: &str,
        host_pid: bool,
        script: &str,
    ) -> Box<dyn Targeted> {
        let labels = pod_labels(namespace, pod);
        let mut options = vec![
            "--label", &labels[0], "--label", &labels[1], "--label", &labels[2],
        ];
        if host_pid {
            options.extend(["--pid", "host"]);
        }
        Box::new(Target::start_with(&options, script))
    }
    fn agent(&self, extra: &str) -> Agent {
        Agent::docker_with(extra)
    }
    fn kill(&self, id: &str) {
        docker(&["kill", id]);
    }
    fn state(&self, id: &str) -> Option<bool> {
        let out = Command::new("/usr/bin/docker")
            .args(["inspect", "-f", "{{.State.Running}}", id])
            .env("DOCKER_HOST", docker_host())
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| text(&out.stdout).trim() == "true")
    }
    fn remove(&self, id: &str) {
        let _ = Command::new("/usr/bin/docker")
            .args(["rm", "-f", id])
            .env("DOCKER_HOST", docker_host())
            .output();
    }
    fn retained(&self) -> usize {
        let filter = format!("label={}=true", kdbg_runtimes::label::RETAIN);
        let out = docker(&["ps", "-aq", "--filter", &filter]);
        text(&out.stdout).split_whitespace().count()
    }
}

/// The test containerd.
pub struct ContainerdEngine;

impl Targeted for CtdTarget {
    fn pod_reference(&self) -> String {
        self.reference()
    }
    fn leftovers(&self) -> Vec<String> {
        CtdTarget::leftovers(self)
    }
    fn stop(&self) {
        CtdTarget::stop(self);
    }
    fn delete(&self) {
        let _ = ctr("k8s.io", &["task", "kill", "-s", "KILL", &self.id]);
        let _ = ctr("k8s.io", &["task", "delete", "-f", &self.id]);
        let _ = ctr("k8s.io", &["container", "delete", &self.id]);
    }
    fn pid(&self) -> u32 {
        let out = ctr("k8s.io", &["task", "ls"]);
        text(&out.stdout)
            .lines()
            .find(|l| l.starts_with(&format!("{} ", self.id)))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
            .expect("the target's task")
    }
}

impl Engine for ContainerdEngine {
    fn name(&self) -> &'static str {
        "containerd"
    }
    fn target(&self, script: &str) -> Box<dyn Targeted> {
        Box::new(CtdTarget::start(script))
    }
    fn pod_target(
        &self,
        namespace: &str,
        pod: &str,
        host_pid: bool,
        script: &str,
    ) -> Box<dyn Targeted> {
        let labels = pod_labels(namespace, pod);
        let mut options = vec![
            "--label", &labels[0], "--label", &labels[1], "--label", &labels[2],
        ];
        if host_pid {
            // kthreadd is in the node's namespaces (PID 1 here may refuse to be inspected).
            options.extend(["--with-ns", "pid:/proc/2/ns/pid"]);
        }
        Box::new(CtdTarget::start_with(&options, script))
    }
    fn agent(&self, extra: &str) -> Agent {
        let fifos = crate::Scratch::new("life-fifo");
        Agent::containerd_with(&fifos, extra).keeping(fifos)
    }
    fn kill(&self, id: &str) {
        let out = ctr(DEBUG_NAMESPACE, &["task", "kill", "-s", "KILL", id]);
        assert!(out.status.success(), "ctr task kill: {}", text(&out.stderr));
    }
    fn state(&self, id: &str) -> Option<bool> {
        let containers = text(&ctr(DEBUG_NAMESPACE, &["containers", "ls", "-q"]).stdout);
        if !containers.lines().any(|l| l.trim() == id) {
            return None;
        }
        let tasks = text(&ctr(DEBUG_NAMESPACE, &["tasks", "ls"]).stdout);
        Some(
            tasks
                .lines()
                .any(|l| l.starts_with(&format!("{id} ")) && l.contains("RUNNING")),
        )
    }
    fn remove(&self, id: &str) {
        let _ = ctr(DEBUG_NAMESPACE, &["tasks", "kill", "-s", "KILL", id]);
        // Best effort, as a test's cleanup: `delete -f` below deals with a task still running.
        let _ = within(READY_BOUND, || task_stopped(DEBUG_NAMESPACE, id));
        let _ = ctr(DEBUG_NAMESPACE, &["tasks", "delete", "-f", id]);
        let _ = ctr(DEBUG_NAMESPACE, &["containers", "delete", id]);
    }
    fn retained(&self) -> usize {
        let filter = format!("labels.\"{}\"==\"true\"", kdbg_runtimes::label::RETAIN);
        let out = ctr(DEBUG_NAMESPACE, &["containers", "ls", "-q", &filter]);
        text(&out.stdout).split_whitespace().count()
    }
}
