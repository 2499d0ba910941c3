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
use std::future::Future;
use std::path::PathBuf;
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
pub mod init;
pub mod keyring;
pub mod label;
pub mod seccomp;
mod spawn;

pub use containerd::ContainerdRuntime;
pub use containerd::registry::RegistryError;
pub use docker::DockerRuntime;
pub use error::{Error, PullError};
pub use kdbg_model::{
    DEBUG_CAPABILITIES, ImageConfig, InvalidReference, InvalidValue, Platform, Profile, PullPolicy,
    PullProgress, Reference, RegistryCredential, RuntimeKind, Target, TargetRef, reference,
};
pub use label::LABEL_PREFIX;
pub use seccomp::seccomp_profile;

#[cfg(feature = "fake")]
pub use fake::FakeRuntime;

/// What to create: a debug container that joins `target` and holds it with
/// [`init::hold_args`] as its main process, so that it outlives its sessions' processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugSpec {
    /// The container whose namespaces the debug container joins, or the node: its pid,
    /// network, IPC and UTS namespaces, and its root filesystem at [`HOST_ROOT`].
    pub target: Target,
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
    /// The image's platform to run, when not the node's (`--platform`).
    pub platform: Option<Platform>,
}

/// How a pull is made beyond its image and policy.
#[derive(Debug, Clone, Copy, Default)]
pub struct PullOptions<'a> {
    /// A credential for this pull only (a pull secret's), kept nowhere; without it the
    /// runtime's own configured credentials apply.
    pub credential: Option<&'a RegistryCredential>,
    /// The platform to pull from an index, when not the node's.
    pub platform: Option<&'a Platform>,
}

/// Where a node debug container ([`Target::Node`]) has the node's root filesystem, read-write
/// (as `kubectl debug node/`'s).
pub const HOST_ROOT: &str = "/host";

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
    /// The target's main process as the debug container's (shared) pid namespace numbers
    /// it: `/target` is its `/proc/<pid>/root` ([`init::run_env`]); 1 when `None`.
    pub target_pid: Option<u32>,
    /// Run the command with the target's root as `/` (`kdbg-init run --chroot`).
    pub chroot: bool,
}

/// Whether `image` must be pulled under `policy`, given whether it is `present`; with
/// `Never`, an absent image is an error. Every backend decides here.
pub(crate) fn needs_pull(policy: PullPolicy, image: &str, present: bool) -> Result<bool, Error> {
    match policy {
        PullPolicy::Always => Ok(true),
        PullPolicy::IfNotPresent => Ok(!present),
        PullPolicy::Never if present => Ok(false),
        PullPolicy::Never => Err(Error::ImageAbsent {
            image: image.to_owned(),
        }),
    }
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

    /// Makes sure `image` is present (for `options.platform`, else the node's platform),
    /// pulling it as `policy` says with `options`, reporting progress.
    fn ensure_image(
        &self,
        image: &str,
        policy: PullPolicy,
        progress: Option<mpsc::Sender<PullProgress>>,
        options: PullOptions<'_>,
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

    /// What the image of target container `target` says to run (its config's `Entrypoint`,
    /// `Cmd`, `WorkingDir` and `User`): the image the container was made from, as the runtime
    /// holds it, not what the container runs now. The target need not be running.
    fn image_config(
        &self,
        target: &TargetRef,
    ) -> impl Future<Output = Result<ImageConfig, Error>> + Send;
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
        options: PullOptions<'_>,
    ) -> Result<(), Error> {
        delegate!(self, r => r.ensure_image(image, policy, progress, options))
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
    async fn image_config(&self, target: &TargetRef) -> Result<ImageConfig, Error> {
        delegate!(self, r => r.image_config(target))
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
        let decide = |policy: PullPolicy, present| needs_pull(policy, "tools:1", present);
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
