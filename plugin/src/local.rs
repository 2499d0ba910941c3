//! `kubectl-debug local ...`: debug containers on this machine with no cluster.
//!
//! The agent runs inside this process and serves its sessions over in-memory pipes, so the
//! path is the agent's own (same runtime construction, same checks, same container spec, same
//! relay, same cleanup) and no port is opened on the machine; its reaper runs first, so what
//! an earlier `local` killed with SIGKILL left goes now. With `--agent HOST:PORT`, a running
//! agent is used instead.

use std::sync::Arc;

use anyhow::bail;
use kdbg_agent::Settings;
use kdbg_agent::config::{
    DEFAULT_CONTAINERD_ENDPOINT, DEFAULT_DOCKER_ENDPOINT, RuntimeConfig, RuntimeKindConfig,
};
use kdbg_api::{PodScope, RuntimeKind, TargetRef};
use kdbg_relay::ExitStatus;

use crate::cli::{
    Local, LocalAttach, LocalList, LocalRm, LocalRuntime, LocalRuntimeKind, LocalVerb,
};
use crate::client::{AgentClient, Transport};
use crate::{attach, list, rm};

impl Local {
    /// Runs the verb.
    pub async fn run(self) -> anyhow::Result<ExitStatus> {
        match self.verb {
            Some(LocalVerb::List(args)) => list_verb(args).await.map(|()| ExitStatus::Code(0)),
            Some(LocalVerb::Attach(args)) => attach_verb(args).await,
            Some(LocalVerb::Rm(args)) => rm_verb(args).await.map(|()| ExitStatus::Code(0)),
            None => {
                let target = self.target.expect("clap requires TARGET without a verb");
                let target: TargetRef = target.parse().map_err(anyhow::Error::msg)?;
                let record_local = self.debug.record.record_local.clone();
                let request = self.debug.request(target.clone());
                let client = Client::for_kind(&self.runtime, target.kind).await?;
                let debugged = attach::debug(
                    &client.agent,
                    request,
                    record_local.as_deref(),
                    &kept(&target),
                )
                .await;
                client.finish(debugged).await
            }
        }
    }
}

/// What `local` says of a kept container.
fn kept(target: &TargetRef) -> impl Fn(&str) -> String + '_ {
    move |name| {
        format!(
            "Debug container {name} is kept, with its files. Come back with: kubectl-debug local attach {target} {name}\nRemove it with: kubectl-debug local rm {name}"
        )
    }
}

async fn attach_verb(args: LocalAttach) -> anyhow::Result<ExitStatus> {
    let target: TargetRef = args.target.parse().map_err(anyhow::Error::msg)?;
    let record_local = args.session.record.record_local.clone();
    let mut request = args.session.request(&args.name);
    request.target = Some(target.clone());
    let client = Client::for_kind(&args.runtime, target.kind).await?;
    let debugged = attach::debug(
        &client.agent,
        request,
        record_local.as_deref(),
        &kept(&target),
    )
    .await;
    client.finish(debugged).await
}

async fn list_verb(args: LocalList) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for client in Client::every(&args.runtime, args.runtime_kind).await? {
        rows.extend(list::one_agent(&client.agent, client.node).await?);
        client.finish(Ok(())).await?;
    }
    if rows.is_empty() && args.output.is_none() {
        eprintln!("No debug containers found.");
        return Ok(());
    }
    list::print(&rows, args.output, false)
}

async fn rm_verb(args: LocalRm) -> anyhow::Result<()> {
    let clients = Client::every(&args.runtime, args.runtime_kind).await?;
    let mut left: Vec<String> = args.names.clone();
    for client in clients {
        let here: Vec<String> = list::one_agent(&client.agent, client.node)
            .await?
            .into_iter()
            .map(|row| row.name)
            .filter(|name| left.contains(name))
            .collect();
        rm::remove(
            &client.agent,
            &here,
            &PodScope::default(),
            false,
            "this machine",
        )
        .await?;
        left.retain(|name| !here.contains(name));
        client.finish(Ok(())).await?;
    }
    if !left.is_empty() && !args.ignore_not_found {
        bail!(
            "debug container(s) {} not found on this machine; `kubectl-debug local list` shows what exists (--ignore-not-found ignores this)",
            left.join(", ")
        );
    }
    Ok(())
}

/// An agent client for `local`: a running agent's, or one in this process.
struct Client {
    agent: AgentClient,
    /// The in-process agent, to wait for at the end.
    local: Option<Arc<kdbg_agent::Agent>>,
    /// What `list` shows as the node.
    node: &'static str,
}

impl Client {
    /// The client for a target of runtime `kind`.
    async fn for_kind(runtime: &LocalRuntime, kind: RuntimeKind) -> anyhow::Result<Client> {
        if let Some(address) = &runtime.agent {
            return Ok(Client {
                agent: AgentClient::new(Transport::Tcp {
                    address: address.clone(),
                    node: None,
                }),
                local: None,
                node: "agent",
            });
        }
        let agent = in_process_agent(runtime, kind).await?;
        Ok(Client {
            agent: AgentClient::new(Transport::InProcess(agent.clone())),
            local: Some(agent),
            node: "local",
        })
    }

    /// The clients for `local list` and `local rm`: the running agent's, or one for `only`,
    /// or one for every runtime of this machine that answers.
    async fn every(
        runtime: &LocalRuntime,
        only: Option<LocalRuntimeKind>,
    ) -> anyhow::Result<Vec<Client>> {
        let kinds = match only {
            _ if runtime.agent.is_some() => vec![RuntimeKind::Docker],
            Some(LocalRuntimeKind::Docker) => vec![RuntimeKind::Docker],
            Some(LocalRuntimeKind::Containerd) => vec![RuntimeKind::Containerd],
            None => vec![RuntimeKind::Docker, RuntimeKind::Containerd],
        };
        let mut clients = Vec::new();
        let mut errors = Vec::new();
        for kind in kinds {
            match Client::for_kind(runtime, kind).await {
                Ok(client) => clients.push(client),
                Err(e) => errors.push(e),
            }
        }
        if clients.is_empty() {
            let reasons: Vec<String> = errors
                .iter()
                .map(|e| kdbg_api::error_chain(e.as_ref()))
                .collect();
            bail!("no container runtime answered: {}", reasons.join("; "));
        }
        Ok(clients)
    }

    /// Lets the in-process agent finish its cleanup, then gives `outcome`.
    async fn finish<T>(&self, outcome: anyhow::Result<T>) -> anyhow::Result<T> {
        if let Some(agent) = &self.local {
            agent.settle().await;
        }
        outcome
    }
}

/// An agent in this process, on the runtime of `kind` that the flags (else the environment,
/// else the usual socket) point at.
async fn in_process_agent(
    runtime: &LocalRuntime,
    kind: RuntimeKind,
) -> anyhow::Result<Arc<kdbg_agent::Agent>> {
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
    let endpoint = runtime
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
    config.endpoint = Some(endpoint);
    if kind == RuntimeKind::Containerd {
        config.namespace = Some(runtime.containerd_namespace.clone());
        config.insecure_registries = runtime.insecure_registry.clone();
        config.registry_auth = runtime.registry_auth.clone();
        config.load_credentials().map_err(|e| {
            anyhow::anyhow!("{}; fix or drop --registry-auth", kdbg_agent::chain(&e))
        })?;
    }
    let connected = kdbg_agent::connect_runtime(&config)
        .await
        .map_err(|e| anyhow::anyhow!("{}; {flag_hint}", kdbg_agent::chain(&e)))?;
    let settings = Settings {
        init_dir: config.init_dir.clone(),
        ..Settings::default()
    };
    let agent = kdbg_agent::agent(connected, settings)?;
    // What an earlier `local` that was killed left behind goes now.
    kdbg_agent::containers::reap(&agent).await;
    Ok(agent)
}
