//! The node agent: creates debug containers through the node's runtime and relays their
//! terminals over the relay's WebSocket.
//!
//! - [`config`]: the YAML configuration;
//! - [`request`]: the query of a debug request;
//! - [`session`]: one debug session, from container creation to cleanup;
//! - [`server`]: the HTTP endpoints.

pub mod config;
pub mod request;
pub mod server;
pub mod session;

use std::sync::Arc;

use kdbg_runtimes::{AnyRuntime, DockerRuntime};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use server::Agent;

/// An error and its causes on one line, `outer: inner: innermost`.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// Connects to the runtime a configuration names.
pub async fn connect_runtime(
    config: &config::RuntimeConfig,
) -> Result<AnyRuntime, kdbg_runtimes::Error> {
    match config.kind {
        config::RuntimeKindConfig::Docker => Ok(AnyRuntime::Docker(
            DockerRuntime::connect(&config.endpoint).await?,
        )),
        config::RuntimeKindConfig::Containerd => Err(kdbg_runtimes::Error::Connect {
            runtime: "containerd",
            endpoint: config.endpoint.clone(),
            source: "the containerd backend is not built yet; use runtime.kind: docker".into(),
        }),
    }
}

/// A new agent over `runtime`.
pub fn agent(runtime: AnyRuntime, defaults: config::Defaults) -> Arc<Agent> {
    Arc::new(Agent {
        runtime,
        defaults,
        shutdown: CancellationToken::new(),
        tracker: TaskTracker::new(),
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
