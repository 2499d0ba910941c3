//! The node agent: creates debug containers through the node's runtime and relays their
//! terminals over the relay's WebSocket.
//!
//! - [`config`] (with [`duration`]): the YAML configuration;
//! - [`session`]: one debug session, from its container's creation to its cleanup;
//! - [`containers`]: the node's debug containers, listed, removed, and reaped;
//! - [`owner`]: which process owns a debug container;
//! - [`init`]: `kdbg-init`, which every debug container runs;
//! - [`recordings`]: sessions recorded on the node, listed, fetched and expired;
//! - [`watch`]: terminal sessions' screens, for watchers;
//! - [`metrics`]: what `/metrics` shows;
//! - [`server`]: the HTTP server: accepting, routing, WebSocket upgrades;
//! - [`endpoints`]: what each endpoint does, and who may call it ([`endpoints::guard`]);
//! - [`Agent`]: the state they share.

pub mod admission;
pub mod auth;
pub mod config;
pub mod containers;
pub mod duration;
pub mod endpoints;
pub mod init;
pub mod metrics;
pub mod owner;
pub mod record;
pub mod recordings;
pub mod server;
pub mod session;
mod state;
pub mod tls;
pub mod watch;

use std::sync::Arc;

use kdbg_runtimes::containerd::{ContainerdOptions, KUBERNETES_NAMESPACE};
use kdbg_runtimes::{AnyRuntime, ContainerdRuntime, DockerRuntime};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use state::Agent;

pub use kdbg_api::error_chain as chain;

/// Connects to the runtime a configuration names; with `kind: auto`, to the first of
/// [`config::AUTO_PROBE`] whose socket exists and answers.
pub async fn connect_runtime(
    config: &config::RuntimeConfig,
) -> Result<AnyRuntime, kdbg_runtimes::Error> {
    use config::RuntimeKindConfig as Kind;
    let endpoint = config.endpoint.clone();
    match config.kind {
        Kind::Docker => {
            connect_one(
                config,
                Kind::Docker,
                endpoint
                    .as_deref()
                    .unwrap_or(config::DEFAULT_DOCKER_ENDPOINT),
            )
            .await
        }
        Kind::Containerd => {
            connect_one(
                config,
                Kind::Containerd,
                endpoint
                    .as_deref()
                    .unwrap_or(config::DEFAULT_CONTAINERD_ENDPOINT),
            )
            .await
        }
        Kind::Auto => detect_runtime(config, &config::AUTO_PROBE).await,
    }
}

/// Connects to the first of `candidates` whose socket exists and answers, and logs the
/// choice; the error lists what each candidate said.
pub async fn detect_runtime(
    config: &config::RuntimeConfig,
    candidates: &[(config::RuntimeKindConfig, &str)],
) -> Result<AnyRuntime, kdbg_runtimes::Error> {
    let mut tried = Vec::new();
    for &(kind, socket) in candidates {
        let path = socket.strip_prefix("unix://").unwrap_or(socket);
        if !std::path::Path::new(path).exists() {
            tried.push(format!("{socket}: absent"));
            continue;
        }
        let runtime = match connect_one(config, kind, socket).await {
            Ok(runtime) => runtime,
            Err(e) => {
                tried.push(format!("{socket}: {}", chain(&e)));
                continue;
            }
        };
        if let AnyRuntime::Containerd(containerd) = &runtime {
            let namespace = config.namespace.as_deref().unwrap_or(KUBERNETES_NAMESPACE);
            match containerd.has_target_namespace().await {
                Ok(true) => {}
                Ok(false) => {
                    tried.push(format!(
                        "{socket}: answers, but has no namespace {namespace:?} (Docker's own containerd?)"
                    ));
                    continue;
                }
                Err(e) => {
                    tried.push(format!("{socket}: {}", chain(&e)));
                    continue;
                }
            }
        } else if config.namespace.is_some()
            || config.snapshotter.is_some()
            || !config.insecure_registries.is_empty()
            || config.registry_auth.is_some()
            || config.config_path.is_some()
            || config.k3s_registries.is_some()
            || !config.mirrors.0.is_empty()
        {
            tracing::warn!(
                endpoint = socket,
                "runtime.kind auto chose Docker: the containerd-only keys of runtime are not used"
            );
        }
        tracing::info!(runtime = ?kind, endpoint = socket, "runtime.kind auto chose this runtime");
        return Ok(runtime);
    }
    Err(kdbg_runtimes::Error::Connect {
        runtime: "auto-detected",
        endpoint: "the usual sockets".into(),
        source: format!(
            "none answered ({}); mount the node's runtime socket into the agent, or set runtime.kind and runtime.endpoint",
            tried.join("; ")
        )
        .into(),
    })
}

async fn connect_one(
    config: &config::RuntimeConfig,
    kind: config::RuntimeKindConfig,
    endpoint: &str,
) -> Result<AnyRuntime, kdbg_runtimes::Error> {
    let fifo_dir = config
        .fifo_dir
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from(kdbg_runtimes::containerd::DEFAULT_FIFO_DIR));
    if kind == config::RuntimeKindConfig::Docker {
        let mut docker = DockerRuntime::connect(endpoint).await?;
        if config.spawner {
            docker = docker.with_spawner(&fifo_dir.join("spawn"));
        }
        let docker = match config.engine_containerd.as_deref() {
            Some("off") => {
                tracing::info!(
                    "sessions on Docker go through dockerd's exec (runtime.engineContainerd: off)"
                );
                docker
            }
            socket => docker.through_containerd(socket, &fifo_dir).await,
        };
        return Ok(AnyRuntime::Docker(docker));
    }
    let mut options = ContainerdOptions::new(endpoint);
    if let Some(namespace) = &config.namespace {
        options.namespace.clone_from(namespace);
    }
    if let Some(snapshotter) = &config.snapshotter {
        options.snapshotter.clone_from(snapshotter);
    }
    options.fifo_dir = fifo_dir;
    options.spawner = config.spawner;
    options
        .insecure_registries
        .clone_from(&config.insecure_registries);
    options.auths = config.credentials.clone();
    if let Some(path) = &config.config_path {
        options.hosts.config_path = Some(path.clone());
    }
    if let Some(path) = &config.k3s_registries {
        options.hosts.k3s_registries = Some(path.clone());
    }
    options.hosts.mirrors = config.mirrors.clone();
    Ok(AnyRuntime::Containerd(
        ContainerdRuntime::connect_with(options).await?,
    ))
}

/// What an agent needs besides its runtime.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// What sessions run by default.
    pub defaults: config::Defaults,
    /// When sessions and containers end.
    pub lifecycle: config::Lifecycle,
    /// Where to put `kdbg-init`.
    pub init_dir: std::path::PathBuf,
    /// Whether and how sessions are recorded.
    pub recordings: config::Recordings,
    /// The node's name, for recordings and messages; [`node_name`] when empty.
    pub node: String,
    /// Who callers are and what they may do; `None`: anyone may do anything (`auth.mode:
    /// none`, and `local`).
    pub auth: Option<Arc<auth::Authenticator>>,
    /// What sessions may ask for.
    pub policy: config::Policy,
    /// What one connection may hold.
    pub limits: config::Limits,
    /// The listener's TLS; `None`: plain HTTP.
    pub tls: Option<Arc<tls::Tls>>,
}

/// This node's name: `NODE_NAME` (a DaemonSet sets it from `spec.nodeName`), else the host
/// name.
pub fn node_name() -> String {
    std::env::var("NODE_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

impl Settings {
    /// The settings a configuration file gives.
    pub fn from_config(config: &config::Config) -> Settings {
        Settings {
            defaults: config.defaults.clone(),
            lifecycle: config.lifecycle,
            init_dir: config.runtime.init_dir.clone(),
            recordings: config.recordings.clone(),
            node: String::new(),
            auth: None,
            policy: config.policy.clone(),
            limits: config.limits,
            tls: None,
        }
    }
}

/// A new agent over `runtime`, with `kdbg-init` put in place.
pub fn agent(runtime: AnyRuntime, settings: Settings) -> Result<Arc<Agent>, init::InstallError> {
    let init = init::install_own(&settings.init_dir)?;
    Ok(Arc::new(Agent {
        runtime,
        defaults: settings.defaults,
        lifecycle: settings.lifecycle,
        init,
        owner: owner::this_process(),
        shutdown: CancellationToken::new(),
        tracker: TaskTracker::new(),
        live: session::Live::default(),
        orphans: containers::Orphans::default(),
        recordings: recordings::Recordings::new(settings.recordings),
        metrics: metrics::Metrics::new(),
        node: if settings.node.is_empty() {
            node_name()
        } else {
            settings.node
        },
        auth: settings.auth,
        policy: settings.policy,
        limits: settings.limits,
        sessions: Arc::default(),
        retaining: tokio::sync::Mutex::new(()),
        tls: settings.tls,
        activity: state::Activity::default(),
    }))
}

/// Starts an agent on `listener` in the background, with its reaper; returns it (for
/// shutdown) and the task that accepts connections.
pub fn spawn(
    runtime: AnyRuntime,
    settings: Settings,
    listener: TcpListener,
) -> Result<(Arc<Agent>, tokio::task::JoinHandle<()>), init::InstallError> {
    let agent = agent(runtime, settings)?;
    agent.tracker.spawn(agent.clone().reap_periodically());
    let task = tokio::spawn(agent.clone().serve(listener));
    Ok((agent, task))
}
