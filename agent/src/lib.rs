//! The node agent: creates debug containers through the node's runtime and relays their
//! terminals over the relay's WebSocket.
//!
//! - [`config`]: the YAML configuration;
//! - [`session`]: one debug session, from container creation to cleanup;
//! - [`server`]: the HTTP endpoints.

pub mod config;
pub mod server;
pub mod session;

use std::sync::Arc;

use kdbg_runtimes::containerd::{ContainerdOptions, KUBERNETES_NAMESPACE};
use kdbg_runtimes::{AnyRuntime, ContainerdRuntime, DockerRuntime};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use server::Agent;

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
            || config.fifo_dir.is_some()
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
    if kind == config::RuntimeKindConfig::Docker {
        return Ok(AnyRuntime::Docker(DockerRuntime::connect(endpoint).await?));
    }
    let mut options = ContainerdOptions::new(endpoint);
    if let Some(namespace) = &config.namespace {
        options.namespace.clone_from(namespace);
    }
    if let Some(snapshotter) = &config.snapshotter {
        options.snapshotter.clone_from(snapshotter);
    }
    if let Some(dir) = &config.fifo_dir {
        options.fifo_dir.clone_from(dir);
    }
    options
        .insecure_registries
        .clone_from(&config.insecure_registries);
    options.auths = config.credentials.clone();
    Ok(AnyRuntime::Containerd(
        ContainerdRuntime::connect_with(options).await?,
    ))
}

/// A new agent over `runtime`.
pub fn agent(runtime: AnyRuntime, defaults: config::Defaults) -> Arc<Agent> {
    Arc::new(Agent {
        runtime,
        defaults,
        shutdown: CancellationToken::new(),
        tracker: TaskTracker::new(),
        live: session::Live::default(),
    })
}

/// Starts an agent on `listener` in the background; returns it (for shutdown) and the task.
pub fn spawn(
    runtime: AnyRuntime,
    defaults: config::Defaults,
    listener: TcpListener,
) -> (Arc<Agent>, tokio::task::JoinHandle<()>) {
    let agent = agent(runtime, defaults);
    let task = tokio::spawn(agent.clone().serve(listener));
    (agent, task)
}
