//! `kubectl-debug local docker://NAME_OR_ID` or `local containerd://ID`: debug a container on
//! this machine with no cluster.
//!
//! The agent runs inside this process and serves this one session over an in-memory pipe, so
//! the path is the agent's own (same runtime construction, same checks, same container spec,
//! same relay, same cleanup) and no port is opened on the machine. With `--agent HOST:PORT`,
//! a running agent is used instead.

use anyhow::Context as _;
use kdbg_agent::config::{
    DEFAULT_COMMAND, DEFAULT_CONTAINERD_ENDPOINT, DEFAULT_DOCKER_ENDPOINT, DEFAULT_IMAGE, Defaults,
    RuntimeConfig, RuntimeKindConfig,
};
use kdbg_api::{RuntimeKind, TargetRef};
use kdbg_relay::ExitStatus;

use crate::attach;
use crate::cli::Local;
use crate::client::{AgentClient, Transport};

impl Local {
    /// Runs the session.
    pub async fn run(self) -> anyhow::Result<ExitStatus> {
        let target: TargetRef = self.target.parse().map_err(anyhow::Error::msg)?;
        let request = self.debug.clone().request(target.clone());
        if let Some(address) = &self.agent {
            let client = AgentClient::new(Transport::Tcp {
                address: address.clone(),
                node: None,
            });
            return attach::debug(&client, request).await;
        }
        let agent = self.in_process_agent(target.kind).await?;
        let client = AgentClient::new(Transport::InProcess(agent.clone()));
        let outcome = attach::debug(&client, request).await;
        // The session is over (or never started): let the agent finish its cleanup.
        agent.tracker.close();
        agent.tracker.wait().await;
        outcome
    }

    /// An agent in this process, on the runtime of `kind` that the flags (else the
    /// environment, else the usual socket) point at.
    async fn in_process_agent(
        &self,
        kind: RuntimeKind,
    ) -> anyhow::Result<std::sync::Arc<kdbg_agent::Agent>> {
        let (config_kind, env, default, flag_hint) = match kind {
            RuntimeKind::Docker => (
                RuntimeKindConfig::Docker,
                "DOCKER_HOST",
                DEFAULT_DOCKER_ENDPOINT,
                "start dockerd, or point --runtime-endpoint or DOCKER_HOST at its socket",
            ),
            RuntimeKind::Containerd => (
                RuntimeKindConfig::Containerd,
                "CONTAINERD_ADDRESS",
                DEFAULT_CONTAINERD_ENDPOINT,
                "start containerd, or point --runtime-endpoint or CONTAINERD_ADDRESS at its socket",
            ),
        };
        let endpoint = self
            .runtime_endpoint
            .clone()
            .or_else(|| {
                std::env::var(env)
                    .ok()
                    .filter(|e| !e.is_empty())
                    // DOCKER_HOST may name a TCP engine, which this tool does not speak.
                    .filter(|e| kind != RuntimeKind::Docker || e.starts_with("unix://"))
            })
            .unwrap_or_else(|| default.to_owned());
        let mut config = RuntimeConfig::new(config_kind);
        config.endpoint = Some(endpoint.clone());
        if kind == RuntimeKind::Containerd {
            config.namespace = Some(self.containerd_namespace.clone());
            config.insecure_registries = self.insecure_registry.clone();
            config.registry_auth = self.registry_auth.clone();
            config
                .load_credentials()
                .context("fix or drop --registry-auth")?;
        }
        let runtime = kdbg_agent::connect_runtime(&config)
            .await
            .map_err(|e| anyhow::anyhow!("{}; {flag_hint}", kdbg_agent::chain(&e)))?;
        let defaults = Defaults {
            image: DEFAULT_IMAGE.to_owned(),
            command: vec![DEFAULT_COMMAND.to_owned()],
        };
        Ok(kdbg_agent::agent(runtime, defaults))
    }
}
