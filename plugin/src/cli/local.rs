//! `kubectl-debug local`: a container on this machine's runtime, through an agent in this
//! process (or one named with `--agent`), with no cluster.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{DebugOpts, Output, SessionOpts};

/// `kubectl-debug local`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Local {
    /// Another verb than debugging a container.
    #[command(subcommand)]
    pub verb: Option<LocalVerb>,
    /// The container, as docker://NAME_OR_ID or containerd://ID.
    #[arg(value_name = "TARGET", required = true)]
    pub target: Option<String>,
    /// Where the runtime is.
    #[command(flatten)]
    pub runtime: LocalRuntime,
    /// What to run.
    #[command(flatten)]
    pub debug: DebugOpts,
}

/// `local list`, `local attach`, `local rm`.
#[derive(Debug, Subcommand)]
pub enum LocalVerb {
    /// List the debug containers of this machine's runtimes (or of the agent at --agent).
    List(LocalList),
    /// Open a new session in a retained debug container of TARGET.
    Attach(LocalAttach),
    /// Remove debug containers.
    Rm(LocalRm),
}

/// `local list`.
#[derive(Debug, Args)]
pub struct LocalList {
    /// Only this runtime's (default: every runtime that answers).
    #[arg(long, value_enum)]
    pub runtime_kind: Option<LocalRuntimeKind>,
    /// Where the runtime is.
    #[command(flatten)]
    pub runtime: LocalRuntime,
    /// Output format.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Output>,
}

/// A runtime of this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LocalRuntimeKind {
    /// Docker Engine.
    Docker,
    /// containerd.
    Containerd,
}

/// `local attach`.
#[derive(Debug, Args)]
pub struct LocalAttach {
    /// The container the debug container joins, as docker://NAME_OR_ID or containerd://ID.
    #[arg(value_name = "TARGET")]
    pub target: String,
    /// The debug container (NAME from `local list`).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Where the runtime is.
    #[command(flatten)]
    pub runtime: LocalRuntime,
    /// How to run.
    #[command(flatten)]
    pub session: SessionOpts,
}

/// `local rm`.
#[derive(Debug, Args)]
pub struct LocalRm {
    /// The debug containers (NAMEs from `local list`).
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
    /// Only this runtime's (default: every runtime that answers).
    #[arg(long, value_enum)]
    pub runtime_kind: Option<LocalRuntimeKind>,
    /// Where the runtime is.
    #[command(flatten)]
    pub runtime: LocalRuntime,
    /// A name that is not there is not an error.
    #[arg(long)]
    pub ignore_not_found: bool,
}

/// Where `local` finds the runtime (or an agent).
#[derive(Debug, Args, Clone)]
pub struct LocalRuntime {
    /// The runtime's socket (default for Docker: $DOCKER_HOST, else
    /// unix:///var/run/docker.sock; for containerd: $CONTAINERD_ADDRESS, else
    /// /run/containerd/containerd.sock).
    #[arg(long, value_name = "ENDPOINT", conflicts_with = "agent")]
    pub runtime_endpoint: Option<String>,
    /// containerd: the namespace the target lives in (Kubernetes uses k8s.io).
    #[arg(
        long,
        value_name = "NAMESPACE",
        default_value = "k8s.io",
        conflicts_with = "agent"
    )]
    pub containerd_namespace: String,
    /// containerd: a registry (host[:port]) to pull from over plain HTTP; repeatable.
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "agent")]
    pub insecure_registry: Vec<String>,
    /// containerd: registry credentials, a Docker config.json (e.g. ~/.docker/config.json).
    #[arg(long, value_name = "FILE", conflicts_with = "agent")]
    pub registry_auth: Option<PathBuf>,
    /// Use the kubectl-debug agent at HOST:PORT instead of one inside this process (the
    /// container is then on that agent's machine).
    #[arg(long, value_name = "HOST:PORT")]
    pub agent: Option<String>,
}
