//! The stand-in's kubelet: runs the pods bound (or, having no `nodeName`, scheduled) to the
//! stand-in's node as real containers, on the test Docker engine ([`super::docker`]) or the
//! test containerd ([`containerd`]) as the stand-in says ([`super::NodeRuntime`]), through
//! [`runtime::Runtime`]; and keeps their status following the containers, as the kubelet's
//! pod workers do: one thread per pod, which binds it, prepares its volumes and sandbox, runs
//! the init containers one at a time, each to completion, then pulls images per the pull
//! policy, creates and starts each container, polls the engine, restarts containers per the
//! restart policy (with the kubelet's crash back-off), records Events, and on deletion stops
//! the containers within the grace period and removes them and then the pod.
//!
//! An init container is made as a regular one (same volumes, so the same emptyDir directory,
//! the sandbox's network namespace, the kubelet's labels). It is never run again once it
//! completed; one that fails is retried with the crash back-off, unless the restart policy is
//! `Never`: then the pod fails and nothing more of it runs.
//!
//! Not modelled: ephemeral containers, sidecars (init containers with `restartPolicy: Always`
//! run as plain init containers), probes (a running container is ready), resources, hostPort,
//! image pull secrets, a sandbox that dies (it is not re-made).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateTerminated, ContainerStateWaiting, Pod,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::docker::Naming;
use super::events::{Happening, Reporter, Type};
use super::setup;
use super::status::Transitions;
use super::store::{Key, key_of};
use super::{NodeRuntime, Shared};

mod containerd;
mod observe;
mod runtime;
mod start;

use self::runtime::{Runtime, Sandbox};

/// How often a pod worker asks the engine about its containers.
const POLL: Duration = Duration::from_millis(200);
/// The longest a deletion waits for containers to stop before killing them.
const MAX_GRACE: u32 = 30;
/// How long a failed setup step (volumes, sandbox, config) waits before it is tried again.
const RETRY: Duration = Duration::from_secs(2);

/// What a pod worker is told.
pub(crate) enum Command {
    /// Stop the containers within `grace` seconds, remove everything, then the pod.
    Delete { grace: u32 },
}

struct Handle {
    commands: Sender<Command>,
    thread: JoinHandle<()>,
    /// The sandbox's ID and main process: its network namespace is the pod's.
    sandbox: Option<(String, u32)>,
}

/// The stand-in's node agent.
pub(crate) struct Kubelet {
    /// This stand-in's value of [`super::SERVER_LABEL`] on what it makes.
    server: String,
    /// What runs the containers.
    runtime: Box<dyn Runtime>,
    /// The runtime's version, once asked.
    version: OnceLock<String>,
    /// Where pods' emptyDir and configMap volumes live.
    dir: PathBuf,
    stopped: AtomicBool,
    used: AtomicBool,
    pods: Mutex<HashMap<String, Handle>>,
}

impl Kubelet {
    pub fn new(server: String, runtime: NodeRuntime) -> Kubelet {
        let dir = std::env::temp_dir().join(format!("kdbg-standin-{server}"));
        let runtime: Box<dyn Runtime> = match runtime {
            NodeRuntime::Docker => Box::new(runtime::Docker),
            NodeRuntime::Containerd => Box::new(containerd::Containerd::new(dir.join("logs"))),
        };
        Kubelet {
            server,
            runtime,
            version: OnceLock::new(),
            dir,
            stopped: AtomicBool::new(false),
            used: AtomicBool::new(false),
            pods: Mutex::default(),
        }
    }

    /// Whether `pod` is (or will be scheduled) on this kubelet's node.
    pub fn runs(pod: &Pod) -> bool {
        pod.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_none_or(|n| n == super::NODE)
    }

    /// Starts the worker of `pod`, just created.
    pub fn admit(&self, shared: &Arc<Shared>, pod: Pod) {
        self.used.store(true, Ordering::SeqCst);
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let (commands, received) = std::sync::mpsc::channel();
        let worker = Worker::new(shared.clone(), pod, received);
        let thread = std::thread::Builder::new()
            .name(format!("kubelet-{uid}"))
            .spawn(move || worker.run())
            .expect("a kubelet thread");
        let handle = Handle {
            commands,
            thread,
            sandbox: None,
        };
        self.pods.lock().unwrap().insert(uid, handle);
    }

    /// Tells the worker of pod `uid` to delete it; `false` if it has none.
    pub fn delete(&self, uid: &str, grace: u32) -> bool {
        let pods = self.pods.lock().unwrap();
        pods.get(uid)
            .is_some_and(|h| h.commands.send(Command::Delete { grace }).is_ok())
    }

    /// The ID and main process of pod `uid`'s sandbox, whose network namespace is the pod's.
    pub fn sandbox(&self, uid: &str) -> Option<(String, u32)> {
        self.pods.lock().unwrap().get(uid)?.sandbox.clone()
    }

    /// Whether pod `uid` has a worker.
    pub fn has(&self, uid: &str) -> bool {
        self.pods.lock().unwrap().contains_key(uid)
    }

    /// The node's `containerRuntimeVersion`.
    pub fn runtime_version(&self) -> &str {
        self.version.get_or_init(|| self.runtime.version())
    }

    /// This stand-in's value of [`super::SERVER_LABEL`] on what it makes.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The scheme of the containers' IDs in pod statuses (`docker`, `containerd`).
    pub fn scheme(&self) -> &'static str {
        self.runtime.scheme()
    }

    /// The file holding the output of container `id` (as a pod's status names it, without
    /// its scheme), where the runtime logs to files.
    pub fn log_file(&self, id: &str) -> Option<PathBuf> {
        self.runtime.log_file(id)
    }

    /// Whether container `id`'s main process runs.
    pub fn running(&self, id: &str) -> bool {
        self.runtime.running(id)
    }

    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Stops every worker and removes every container and volume this kubelet made.
    pub fn shutdown(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let handles: Vec<Handle> = self.pods.lock().unwrap().drain().map(|(_, h)| h).collect();
        if !self.used.load(Ordering::SeqCst) {
            return;
        }
        self.remove_all();
        // Workers see the closed channel after what they are doing; what they made meanwhile
        // they remove themselves, seeing `stopped`.
        let threads: Vec<JoinHandle<()>> = handles.into_iter().map(|h| h.thread).collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && threads.iter().any(|t| !t.is_finished()) {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.remove_all();
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    fn remove_all(&self) {
        self.runtime.remove_all(self.server());
    }
}

/// Back-off between attempts, as the kubelet's (10 s doubling to 5 min), optionally with an
/// immediate first retry (a container's first restart is).
struct Backoff {
    next: Option<Duration>,
    first_free: bool,
}

impl Backoff {
    fn new(first_free: bool) -> Backoff {
        Backoff {
            next: None,
            first_free,
        }
    }

    fn next(&mut self) -> Duration {
        let initial = Duration::from_secs(10);
        let (now, next) = match self.next {
            None if self.first_free => (Duration::ZERO, initial),
            None => (initial, initial * 2),
            Some(d) => (d, (d * 2).min(Duration::from_secs(300))),
        };
        self.next = Some(next);
        now
    }
}

/// One container of the pod (init or regular), across its restarts.
struct Slot {
    spec: Container,
    /// The engine's container now, and the one before (`kubectl logs --previous`).
    current: Option<String>,
    previous: Option<String>,
    created: u32,
    state: ContainerState,
    last: Option<ContainerStateTerminated>,
    image_id: String,
    retry_at: Option<Instant>,
    pull_backoff: Backoff,
    crash_backoff: Backoff,
    /// When the last pull failed, and why: a second later the kubelet says ImagePullBackOff.
    pull_error: Option<(Instant, String)>,
    started: Option<Instant>,
    /// Ended for good (its restart policy says so).
    done: bool,
}

impl Slot {
    fn new(spec: &Container, state: ContainerState) -> Slot {
        Slot {
            spec: spec.clone(),
            current: None,
            previous: None,
            created: 0,
            state,
            last: None,
            image_id: String::new(),
            retry_at: None,
            pull_backoff: Backoff::new(false),
            crash_backoff: Backoff::new(true),
            pull_error: None,
            started: None,
            done: false,
        }
    }

    fn view(&self) -> ContainerView<'_> {
        ContainerView {
            spec: &self.spec,
            id: self.current.as_deref().or(self.previous.as_deref()),
            image_id: &self.image_id,
            restarts: self.created.saturating_sub(1) as i32,
            state: &self.state,
            last: self.last.as_ref(),
        }
    }
}

/// How far a pod's init containers have got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Init {
    /// Init container `i` is the one to run, or runs.
    Running(usize),
    /// Every init container completed: the regular containers run.
    Done,
    /// One failed for good (restart policy `Never`): nothing more of the pod runs.
    Failed,
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_owned()),
            message,
        }),
        ..ContainerState::default()
    }
}

/// One pod's worker.
struct Worker {
    shared: Arc<Shared>,
    key: Key,
    uid: String,
    pod: Pod,
    commands: Receiver<Command>,
    sandbox: Option<Sandbox>,
    pod_ip: Option<String>,
    start_time: Option<Time>,
    volumes: Option<HashMap<String, setup::Ready>>,
    retry_setup_at: Option<Instant>,
    /// The init containers, in order, then the regular ones.
    slots: Vec<Slot>,
    /// How many of `slots` are init containers.
    inits: usize,
    /// Each condition's status and when it last changed.
    conditions: Transitions,
}

impl Worker {
    fn new(shared: Arc<Shared>, pod: Pod, commands: Receiver<Command>) -> Worker {
        let spec = pod.spec.clone().unwrap_or_default();
        let inits = spec.init_containers.unwrap_or_default();
        // Until it is made, a container waits as the kubelet says: PodInitializing in a pod
        // with init containers (the init containers too), else ContainerCreating.
        let reason = if inits.is_empty() {
            "ContainerCreating"
        } else {
            "PodInitializing"
        };
        let slots = inits
            .iter()
            .chain(&spec.containers)
            .map(|c| Slot::new(c, waiting(reason, None)))
            .collect();
        Worker {
            shared,
            key: key_of(&pod),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            pod,
            commands,
            sandbox: None,
            pod_ip: None,
            start_time: None,
            volumes: None,
            retry_setup_at: None,
            slots,
            inits: inits.len(),
            conditions: HashMap::new(),
        }
    }

    fn run(mut self) {
        self.bind();
        loop {
            if self.kubelet().stopped() {
                return;
            }
            self.sync();
            match self.commands.recv_timeout(POLL) {
                Ok(Command::Delete { grace }) => return self.terminate(grace),
                // Removed from the API behind the kubelet's back (a test's `remove_pod`).
                Err(RecvTimeoutError::Timeout) if !self.exists() => return self.terminate(0),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Whether the API still has this pod.
    fn exists(&self) -> bool {
        let store = self.shared.store.lock().unwrap();
        let pod = store.pods.get(&self.key);
        pod.is_some_and(|p| p.metadata.uid.as_deref() == Some(self.uid.as_str()))
    }

    fn kubelet(&self) -> &Kubelet {
        &self.shared.kubelet
    }

    fn naming(&self) -> Naming<'_> {
        Naming {
            pod: &self.pod,
            server: &self.kubelet().server,
        }
    }

    fn event(&self, type_: Type, reason: &str, container: Option<&str>, message: String) {
        let what = Happening::kubelet(type_, reason, container, message);
        self.shared.store.lock().unwrap().record(&self.pod, what);
    }

    /// The scheduler's part: a pod without a node is bound to this one.
    fn bind(&mut self) {
        let spec = self.pod.spec.get_or_insert_default();
        if spec.node_name.is_some() {
            return;
        }
        spec.node_name = Some(super::NODE.to_owned());
        let mut store = self.shared.store.lock().unwrap();
        store.update_pod(&self.key, &self.uid, |pod| {
            pod.spec.get_or_insert_default().node_name = Some(super::NODE.to_owned());
            true
        });
        let (namespace, name) = &self.key;
        let message = format!(
            "Successfully assigned {namespace}/{name} to {}",
            super::NODE
        );
        store.record(
            &self.pod,
            Happening {
                reporter: Reporter::Scheduler,
                type_: Type::Normal,
                reason: "Scheduled",
                message,
                container: None,
            },
        );
    }

    fn sync(&mut self) {
        if self.sandbox.is_some() || self.set_up() {
            match self.init() {
                Init::Running(i) => self.start(i),
                Init::Done => {
                    for i in self.inits..self.slots.len() {
                        self.start(i);
                    }
                }
                Init::Failed => {}
            }
            self.observe();
        }
        self.publish();
    }

    /// How far the init containers have got.
    fn init(&self) -> Init {
        for (i, slot) in self.slots[..self.inits].iter().enumerate() {
            if !slot.done {
                return Init::Running(i);
            }
            if slot
                .state
                .terminated
                .as_ref()
                .is_none_or(|t| t.exit_code != 0)
            {
                return Init::Failed;
            }
        }
        Init::Done
    }

    /// Writes the pod's status, if it changed.
    fn publish(&mut self) {
        let status = super::status::of(self.view());
        let mut store = self.shared.store.lock().unwrap();
        store.update_pod(&self.key, &self.uid, |pod| {
            if pod.status.as_ref() == Some(&status) {
                return false;
            }
            pod.status = Some(status);
            true
        });
    }
}

/// What [`super::status`] reads of a worker.
pub(crate) struct View<'a> {
    pub pod: &'a Pod,
    /// The scheme of container IDs: `docker`, `containerd`.
    pub scheme: &'static str,
    pub sandbox: bool,
    pub pod_ip: Option<&'a str>,
    pub start_time: Option<&'a Time>,
    pub init_containers: Vec<ContainerView<'a>>,
    pub containers: Vec<ContainerView<'a>>,
    pub conditions: &'a mut Transitions,
}

/// What [`super::status`] reads of a container.
pub(crate) struct ContainerView<'a> {
    pub spec: &'a Container,
    pub id: Option<&'a str>,
    pub image_id: &'a str,
    pub restarts: i32,
    pub state: &'a ContainerState,
    pub last: Option<&'a ContainerStateTerminated>,
}

impl Worker {
    /// What the status is made of.
    fn view(&mut self) -> View<'_> {
        let (init, regular) = self.slots.split_at(self.inits);
        View {
            pod: &self.pod,
            scheme: self.shared.kubelet.scheme(),
            sandbox: self.sandbox.is_some(),
            pod_ip: self.pod_ip.as_deref(),
            start_time: self.start_time.as_ref(),
            init_containers: init.iter().map(Slot::view).collect(),
            containers: regular.iter().map(Slot::view).collect(),
            conditions: &mut self.conditions,
        }
    }
}
