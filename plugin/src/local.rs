//! `kubectl-debug local docker://NAME_OR_ID` or `local containerd://ID`: debug a container on
//! this machine with no cluster.
//!
//! The agent runs inside this process and serves this one session over an in-memory pipe, so
//! the path is the agent's own (same checks, same container spec, same relay, same cleanup) and
//! no port is opened on the machine.

use anyhow::Context as _;
use kdbg_agent::config::{
    DEFAULT_COMMAND, DEFAULT_CONTAINERD_ENDPOINT, DEFAULT_DOCKER_ENDPOINT, DEFAULT_IMAGE, Defaults,
};
use kdbg_agent::request::DebugRequest;
use kdbg_relay::ExitStatus;
use kdbg_runtimes::containerd::ContainerdOptions;
use kdbg_runtimes::registry::Auths;
use kdbg_runtimes::{
    AnyRuntime, ContainerdRuntime, DockerRuntime, PullPolicy, RuntimeKind, TargetRef,
};

use crate::cli::Local;
use crate::{attach, pull};

impl Local {
    /// Runs the session.
    pub async fn run(self) -> anyhow::Result<ExitStatus> {
        let target: TargetRef = self.target.parse().map_err(anyhow::Error::msg)?;
        let (stdin, tty) = attach::interactive(self.debug.stdin, self.debug.tty);
        let mut request = DebugRequest {
            target,
            image: self.debug.image,
            command: self.debug.command,
            stdin,
            stdout: true,
            stderr: !tty,
            tty,
            name: self.debug.name,
            retain: self.debug.retain,
            pull_policy: self.debug.pull_policy,
            pod_namespace: None,
            pod_name: None,
            user: std::env::var("USER").ok().filter(|u| !u.is_empty()),
        };
        if let Some(address) = &self.agent {
            let connect = || async {
                let stream = tokio::net::TcpStream::connect(address).await.with_context(|| {
                    format!("reaching the kubectl-debug agent at {address}: is it running there, and is the port open?")
                })?;
                stream.set_nodelay(true)?;
                anyhow::Ok(stream)
            };
            if let Some(pull) = pull::wanted(&request) {
                pull::run(connect().await?, address, &pull).await?;
                request.pull_policy = PullPolicy::IfNotPresent;
            }
            return attach::run(connect().await?, address, &request).await;
        }
        let runtime = match request.target.kind {
            RuntimeKind::Docker => {
                let endpoint = self
                    .runtime_endpoint
                    .or_else(|| {
                        std::env::var("DOCKER_HOST")
                            .ok()
                            .filter(|h| h.starts_with("unix://"))
                    })
                    .unwrap_or_else(|| DEFAULT_DOCKER_ENDPOINT.to_owned());
                let runtime = DockerRuntime::connect(&endpoint)
                    .await
                    .map_err(|e| anyhow::anyhow!(kdbg_agent::chain(&e)))
                    .with_context(|| {
                        format!("reaching Docker at {endpoint}: start dockerd, or point --runtime-endpoint or DOCKER_HOST at its socket")
                    })?;
                AnyRuntime::Docker(runtime)
            }
            RuntimeKind::Containerd => {
                let endpoint = self
                    .runtime_endpoint
                    .or_else(|| {
                        std::env::var("CONTAINERD_ADDRESS")
                            .ok()
                            .filter(|a| !a.is_empty())
                    })
                    .unwrap_or_else(|| DEFAULT_CONTAINERD_ENDPOINT.to_owned());
                let mut options = ContainerdOptions::new(&endpoint);
                options.namespace = self.containerd_namespace;
                options.insecure_registries = self.insecure_registry;
                if let Some(path) = &self.registry_auth {
                    options.auths = Auths::load(path)
                        .map_err(anyhow::Error::msg)
                        .context("fix or drop --registry-auth")?;
                }
                let runtime = ContainerdRuntime::connect_with(options)
                    .await
                    .map_err(|e| anyhow::anyhow!(kdbg_agent::chain(&e)))
                    .with_context(|| {
                        format!("reaching containerd at {endpoint}: start containerd, or point --runtime-endpoint or CONTAINERD_ADDRESS at its socket")
                    })?;
                AnyRuntime::Containerd(runtime)
            }
        };
        let defaults = Defaults {
            image: DEFAULT_IMAGE.to_owned(),
            command: vec![DEFAULT_COMMAND.to_owned()],
        };
        let agent = kdbg_agent::agent(runtime, defaults);
        let connect = || {
            let (ours, theirs) = tokio::io::duplex(256 * 1024);
            tokio::spawn(agent.clone().serve_connection(theirs, "local".into()));
            ours
        };
        let outcome = async {
            if let Some(pull) = pull::wanted(&request) {
                pull::run(connect(), "local", &pull).await?;
                request.pull_policy = PullPolicy::IfNotPresent;
            }
            attach::run(connect(), "local", &request).await
        }
        .await;
        // The session is over (or never started): let the agent finish its cleanup.
        agent.tracker.close();
        agent.tracker.wait().await;
        outcome
    }
}
