//! Container runtimes behind one trait.
//!
//! The agent creates debug containers through [`Runtime`]: resolve the target, make sure the
//! image is there, create a container joining the target's namespaces, attach its stdio, start
//! it, follow it, and remove it. [`AnyRuntime`] is the enum the agent holds: [`docker`] talks
//! to a Docker engine through bollard (and a raw attach), [`containerd`] to containerd through
//! containerd-client (pulling images on the client side), and, with the `fake` feature, the
//! in-tree fake records calls and scripts output for the agent's tests. [`reference`] parses
//! image references for both. Nothing here knows Kubernetes: pod names arrive as labels.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use kdbg_relay::TerminalSize;
use kdbg_relay::session::{BoxRead, BoxWrite};
use tokio::sync::mpsc;

pub mod containerd;
pub mod docker;
mod docker_attach;
mod error;
#[cfg(feature = "fake")]
pub mod fake;
pub mod reference;
pub mod seccomp;

pub use containerd::ContainerdRuntime;
pub use containerd::registry::RegistryError;
pub use docker::DockerRuntime;
pub use error::{Error, PullError};
pub use reference::{InvalidReference, Reference};
pub use seccomp::seccomp_profile;

#[cfg(feature = "fake")]
pub use fake::FakeRuntime;

/// Spells a label key: the one prefix, defined here only, plus a name.
macro_rules! label_key {
    ($name:literal) => {
        concat!("debug.kubectl-debug.io/", $name)
    };
}

/// The prefix of every label this project puts on a debug container.
pub const LABEL_PREFIX: &str = label_key!("");

/// The label keys, each [`LABEL_PREFIX`] + a name.
pub mod label {
    /// The session that created the container.
    pub const SESSION: &str = label_key!("session");
    /// The target container, as `<runtime>://<id>`.
    pub const TARGET: &str = label_key!("target");
    /// The target pod's namespace.
    pub const POD_NAMESPACE: &str = label_key!("pod-namespace");
    /// The target pod's name.
    pub const POD_NAME: &str = label_key!("pod-name");
    /// Who asked for the session.
    pub const USER: &str = label_key!("user");
    /// When the container was created, in seconds since the Unix epoch.
    pub const CREATED_AT: &str = label_key!("created-at");
    /// `true` when the container is kept after the session.
    pub const RETAIN: &str = label_key!("retain");
    /// The process that created the container, `<boot id>/<pid>/<start time>`: while it
    /// lives, the container is its to clean up; once it is gone, any agent's reaper may.
    pub const OWNER: &str = label_key!("owner");
    /// The image as the user named it (runtimes may normalise the container's own).
    pub const IMAGE: &str = label_key!("image");
    /// containerd: the exit code of the container's main process, kept once its task is
    /// deleted.
    pub const EXIT_CODE: &str = label_key!("exit-code");
    /// Set when the container gives its user the node itself, saying why (its target shares
    /// the node's namespaces, or its profile grants node-level power): every later use of it
    /// (attach, rm, list, watch, its recordings) needs the node-level permission too.
    pub const NODE_LEVEL: &str = label_key!("node-level");
}

/// Capabilities a debug container gets beyond the runtime's defaults, on every backend:
/// enough for `strace`, `gdb` and `nsenter`, like the peers.
pub const DEBUG_CAPABILITIES: [&str; 2] = ["SYS_PTRACE", "SYS_ADMIN"];

/// What a debug container may do, chosen per session like `kubectl debug --profile`; the
/// agent's policy says which profiles are allowed and which is the default.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// SYS_PTRACE: strace, gdb, reading other processes' /proc. The default, as
    /// `kubectl debug`'s.
    #[default]
    General,
    /// NET_ADMIN and NET_RAW: tcpdump, ip, iptables in the target's network.
    Netadmin,
    /// SYS_PTRACE and SYS_ADMIN (nsenter, and bpf and perf tracing), mounts refused: power
    /// over the node, not only the pod ([`Profile::node_level`]).
    Sysadmin,
    /// No capability beyond the runtime's defaults.
    Restricted,
}

impl Profile {
    /// Every profile.
    pub const ALL: [Profile; 4] = [
        Profile::General,
        Profile::Netadmin,
        Profile::Sysadmin,
        Profile::Restricted,
    ];

    /// Its name, as `--profile` and the agent's YAML spell it.
    pub fn name(self) -> &'static str {
        match self {
            Profile::General => "general",
            Profile::Netadmin => "netadmin",
            Profile::Sysadmin => "sysadmin",
            Profile::Restricted => "restricted",
        }
    }

    /// Why the profile gives power over the node itself, beyond the target's pod, if it
    /// does: `sysadmin`'s CAP_SYS_ADMIN, `bpf` and `perf_event_open` reach every process
    /// on the node (a tracing program reads any process's memory).
    pub fn node_level(self) -> Option<&'static str> {
        (self == Profile::Sysadmin).then_some(
            "profile sysadmin grants CAP_SYS_ADMIN, bpf and perf_event_open, which reach every process on the node",
        )
    }

    /// The capabilities it adds to the runtime's defaults.
    pub fn capabilities(self) -> &'static [&'static str] {
        match self {
            Profile::General => &["SYS_PTRACE"],
            Profile::Netadmin => &["NET_ADMIN", "NET_RAW"],
            Profile::Sysadmin => &DEBUG_CAPABILITIES,
            Profile::Restricted => &[],
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                format!("unknown profile {s:?}; the profiles are general, netadmin, sysadmin and restricted")
            })
    }
}

/// Which runtime a container ID belongs to, as in a pod's `containerID` (`docker://...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    /// Docker Engine.
    Docker,
    /// containerd.
    Containerd,
}

impl RuntimeKind {
    /// The scheme in `containerID` URLs.
    pub fn scheme(self) -> &'static str {
        match self {
            RuntimeKind::Docker => "docker",
            RuntimeKind::Containerd => "containerd",
        }
    }
}

/// A target container: `<runtime>://<id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRef {
    /// The runtime that runs it.
    pub kind: RuntimeKind,
    /// Its ID (or, for Docker, a name).
    pub id: String,
}

impl fmt::Display for TargetRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.kind.scheme(), self.id)
    }
}

impl FromStr for TargetRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (scheme, id) = s.split_once("://").ok_or_else(|| {
            format!("target {s:?} is not <runtime>://<id>, e.g. docker://3f4e... or containerd://3f4e...")
        })?;
        let kind = match scheme {
            "docker" => RuntimeKind::Docker,
            "containerd" => RuntimeKind::Containerd,
            other => {
                return Err(format!(
                    "target {s:?} names runtime {other:?}; supported: docker, containerd"
                ));
            }
        };
        // Docker's names and IDs and containerd's IDs alike: a letter or digit, then
        // letters, digits, '_', '.', '-'.
        let valid = id.len() <= 255
            && id.starts_with(|c: char| c.is_ascii_alphanumeric())
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !valid {
            return Err(format!(
                "target {s:?} has no valid container ID after {scheme}:// (letters, digits, '_', '.', '-', starting with a letter or digit)"
            ));
        }
        Ok(TargetRef {
            kind,
            id: id.to_owned(),
        })
    }
}

/// When to pull the debug image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Pull every time.
    Always,
    /// Pull only when the image is absent.
    #[default]
    IfNotPresent,
    /// Never pull; fail when the image is absent.
    Never,
}

impl FromStr for PullPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "Always" => Ok(PullPolicy::Always),
            "IfNotPresent" => Ok(PullPolicy::IfNotPresent),
            "Never" => Ok(PullPolicy::Never),
            other => Err(format!(
                "pull policy {other:?} is not one of Always, IfNotPresent, Never"
            )),
        }
    }
}

impl PullPolicy {
    /// Whether `image` must be pulled, given whether it is `present`; with `Never`, an absent
    /// image is an error. Both backends decide here.
    pub fn needs_pull(self, image: &str, present: bool) -> Result<bool, Error> {
        match self {
            PullPolicy::Always => Ok(true),
            PullPolicy::IfNotPresent => Ok(!present),
            PullPolicy::Never if present => Ok(false),
            PullPolicy::Never => Err(Error::ImageAbsent {
                image: image.to_owned(),
            }),
        }
    }
}

impl fmt::Display for PullPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        })
    }
}

/// What to create: a debug container that joins `target` and holds it with
/// [`init::hold_args`] as its main process, so that it outlives its sessions' processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugSpec {
    /// The container whose namespaces the debug container joins.
    pub target: TargetRef,
    /// The tools image.
    pub image: String,
    /// The container's name: unique among the runtime's containers.
    pub name: String,
    /// Labels, keys from [`label`].
    pub labels: BTreeMap<String, String>,
    /// Where `kdbg-init` is on the node; mounted read-only at [`init::PATH`].
    pub init: PathBuf,
    /// What it may do.
    pub profile: Profile,
}

/// A session's process in a debug container: `command` run by [`init::run_args`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    /// The session's ID: how [`Runtime::signal`] finds the process.
    pub session: String,
    /// The command and its arguments; not empty.
    pub command: Vec<String>,
    /// Allocate a terminal (stdout and stderr then merge).
    pub tty: bool,
    /// Attach stdin.
    pub stdin: bool,
    /// Attach stdout.
    pub stdout: bool,
    /// Attach stderr (ignored with a tty).
    pub stderr: bool,
    /// How long the process gets between SIGTERM and SIGKILL when the session is stopped.
    pub grace: Duration,
}

/// The contract with `kdbg-init`, the small init every debug container runs (the agent
/// provides the binary; see `agent/init/kdbg-init.rs`).
pub mod init {
    use std::time::Duration;

    /// Where it is in every debug container.
    pub const PATH: &str = "/.kubectl-debug/init";

    /// The main process of a debug container: holds it until SIGTERM.
    pub fn hold_args() -> Vec<String> {
        vec![PATH.into(), "hold".into()]
    }

    /// A session's process: `command` under a subreaper that reaps and kills what the session
    /// leaves, and stops it with SIGTERM then SIGKILL after `grace`.
    pub fn run_args(session: &str, grace: Duration, command: &[String]) -> Vec<String> {
        let mut args = vec![
            PATH.into(),
            "run".into(),
            "--session".into(),
            session.into(),
            "--grace".into(),
            grace.as_secs().to_string(),
            "--".into(),
        ];
        args.extend_from_slice(command);
        args
    }

    /// Sends `signal` to session `session`'s process.
    pub fn signal_args(session: &str, signal: i32) -> Vec<String> {
        vec![
            PATH.into(),
            "signal".into(),
            session.into(),
            signal.to_string(),
        ]
    }
}

/// One line of image pull progress.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PullProgress {
    /// The layer or object concerned, if any.
    pub id: Option<String>,
    /// What happens, e.g. `Downloading`, `Pull complete`.
    pub status: String,
    /// Bytes done and in all, when known.
    pub current: Option<u64>,
    /// Bytes in all, when known.
    pub total: Option<u64>,
}

/// A created debug container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// Its ID.
    pub id: String,
    /// Things the user should know, e.g. that IPC could not be shared.
    pub warnings: Vec<String>,
}

/// The attached stdio of a process.
#[derive(Default)]
pub struct Stdio {
    /// Its stdin.
    pub stdin: Option<BoxWrite>,
    /// Its stdout (with a tty: the terminal).
    pub stdout: Option<BoxRead>,
    /// Its stderr (never with a tty).
    pub stderr: Option<BoxRead>,
}

/// A started session process.
pub struct Process {
    /// The runtime's ID of it (an exec ID), for [`Runtime::resize`] and [`Runtime::wait`].
    pub id: String,
    /// Its stdio.
    pub stdio: Stdio,
}

/// Where a debug container is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// Created, never started.
    Created,
    /// Its main process runs.
    Running,
    /// Its main process has ended.
    Exited {
        /// Its exit code.
        code: i64,
        /// The kernel killed it for want of memory.
        oom_killed: bool,
    },
    /// Something else the runtime says (paused, being removed...).
    Other(String),
}

/// A debug container as the runtime sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugContainer {
    /// Its ID.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its image.
    pub image: String,
    /// Its state.
    pub state: ContainerState,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

/// What the runtime says of a target container that can be joined.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetInfo {
    /// Its labels: the kubelet's `io.kubernetes.pod.namespace` and `io.kubernetes.pod.name`
    /// say which pod it belongs to; ours say it is a debug container.
    pub labels: BTreeMap<String, String>,
    /// Its main process on the node, when the runtime says.
    pub pid: Option<u32>,
}

/// A container runtime.
///
/// # Cancel safety
/// None of these futures should be dropped half-way in the normal course: an operation dropped
/// after the runtime acted leaves what it made, and [`Runtime::remove`] is how to clean up.
pub trait Runtime: Send + Sync {
    /// Checks that `target` can be joined; says what it is.
    fn check_target(
        &self,
        target: &TargetRef,
    ) -> impl Future<Output = Result<TargetInfo, Error>> + Send;

    /// Makes sure `image` is present, pulling it as `policy` says, reporting progress.
    fn ensure_image(
        &self,
        image: &str,
        policy: PullPolicy,
        progress: Option<mpsc::Sender<PullProgress>>,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Creates (does not start) a debug container.
    fn create(&self, spec: &DebugSpec) -> impl Future<Output = Result<Created, Error>> + Send;

    /// Starts the container's main process, or starts it again (a retained container whose
    /// main process ended), joining its target as it is now.
    fn start(&self, id: &str) -> impl Future<Output = Result<(), Error>> + Send;

    /// Starts a session's process in a running container, its stdio attached before it runs.
    fn exec(
        &self,
        id: &str,
        process: &ProcessSpec,
    ) -> impl Future<Output = Result<Process, Error>> + Send;

    /// Resizes the terminal of process `exec` of container `id`.
    fn resize(
        &self,
        id: &str,
        exec: &str,
        size: TerminalSize,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Waits for process `exec` of container `id` to end and returns its exit code, then frees
    /// what the runtime held for it.
    fn wait(&self, id: &str, exec: &str) -> impl Future<Output = Result<i64, Error>> + Send;

    /// Sends `signal` to the process of session `session` in container `id`.
    fn signal(
        &self,
        id: &str,
        session: &str,
        signal: i32,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// The container as the runtime sees it now.
    fn inspect(&self, id: &str) -> impl Future<Output = Result<DebugContainer, Error>> + Send;

    /// Stops the container's main process (and so every process of it), keeping the container
    /// and its filesystem: SIGTERM, then SIGKILL after `grace`. A container stopped already is
    /// not an error.
    fn stop(&self, id: &str, grace: Duration) -> impl Future<Output = Result<(), Error>> + Send;

    /// Stops and removes the container. Removing one that is already gone is not an error.
    fn remove(&self, id: &str) -> impl Future<Output = Result<(), Error>> + Send;

    /// The debug containers of this runtime (those carrying [`label::SESSION`]).
    fn list(&self) -> impl Future<Output = Result<Vec<DebugContainer>, Error>> + Send;
}

/// The runtimes an agent can hold.
#[derive(Debug, Clone)]
pub enum AnyRuntime {
    /// Docker Engine.
    Docker(DockerRuntime),
    /// containerd.
    Containerd(ContainerdRuntime),
    /// The in-tree fake, for tests (cargo feature `fake`).
    #[cfg(feature = "fake")]
    Fake(FakeRuntime),
}

impl AnyRuntime {
    /// The runtime's name: `docker`, `containerd` (or `fake`).
    pub fn name(&self) -> &'static str {
        match self {
            AnyRuntime::Docker(_) => "docker",
            AnyRuntime::Containerd(_) => "containerd",
            #[cfg(feature = "fake")]
            AnyRuntime::Fake(_) => "fake",
        }
    }
}

macro_rules! delegate {
    ($self:ident, $r:ident => $call:expr) => {
        match $self {
            AnyRuntime::Docker($r) => $call.await,
            AnyRuntime::Containerd($r) => $call.await,
            #[cfg(feature = "fake")]
            AnyRuntime::Fake($r) => $call.await,
        }
    };
}

impl Runtime for AnyRuntime {
    async fn check_target(&self, target: &TargetRef) -> Result<TargetInfo, Error> {
        delegate!(self, r => r.check_target(target))
    }
    async fn ensure_image(
        &self,
        image: &str,
        policy: PullPolicy,
        progress: Option<mpsc::Sender<PullProgress>>,
    ) -> Result<(), Error> {
        delegate!(self, r => r.ensure_image(image, policy, progress))
    }
    async fn create(&self, spec: &DebugSpec) -> Result<Created, Error> {
        delegate!(self, r => r.create(spec))
    }
    async fn start(&self, id: &str) -> Result<(), Error> {
        delegate!(self, r => r.start(id))
    }
    async fn exec(&self, id: &str, process: &ProcessSpec) -> Result<Process, Error> {
        delegate!(self, r => r.exec(id, process))
    }
    async fn resize(&self, id: &str, exec: &str, size: TerminalSize) -> Result<(), Error> {
        delegate!(self, r => r.resize(id, exec, size))
    }
    async fn wait(&self, id: &str, exec: &str) -> Result<i64, Error> {
        delegate!(self, r => r.wait(id, exec))
    }
    async fn signal(&self, id: &str, session: &str, signal: i32) -> Result<(), Error> {
        delegate!(self, r => r.signal(id, session, signal))
    }
    async fn inspect(&self, id: &str) -> Result<DebugContainer, Error> {
        delegate!(self, r => r.inspect(id))
    }
    async fn stop(&self, id: &str, grace: Duration) -> Result<(), Error> {
        delegate!(self, r => r.stop(id, grace))
    }
    async fn remove(&self, id: &str) -> Result<(), Error> {
        delegate!(self, r => r.remove(id))
    }
    async fn list(&self) -> Result<Vec<DebugContainer>, Error> {
        delegate!(self, r => r.list())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_print() {
        let t: TargetRef = "docker://abc123".parse().unwrap();
        assert_eq!(t.kind, RuntimeKind::Docker);
        assert_eq!(t.to_string(), "docker://abc123");
        let t: TargetRef = "containerd://x".parse().unwrap();
        assert_eq!(t.kind, RuntimeKind::Containerd);
        for bad in ["abc", "cri-o://x", "docker://", "docker://a/b"] {
            assert!(bad.parse::<TargetRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn pull_policies_parse_and_decide() {
        assert_eq!("Never".parse::<PullPolicy>().unwrap(), PullPolicy::Never);
        assert!("never".parse::<PullPolicy>().is_err());
        assert_eq!(PullPolicy::default(), PullPolicy::IfNotPresent);
        let decide = |policy: PullPolicy, present| policy.needs_pull("tools:1", present);
        assert!(decide(PullPolicy::Always, true).unwrap());
        assert!(decide(PullPolicy::IfNotPresent, false).unwrap());
        assert!(!decide(PullPolicy::IfNotPresent, true).unwrap());
        assert!(!decide(PullPolicy::Never, true).unwrap());
        let absent = decide(PullPolicy::Never, false).unwrap_err().to_string();
        assert!(
            absent.contains("tools:1") && absent.contains("Never"),
            "{absent}"
        );
    }
}
