//! The cluster: a Kubernetes client read from the kubeconfig the way kubectl reads it, and the
//! node agents reached the way `--connect` says: through the API server (a port-forward to the
//! node's agent pod, the default: nothing but the API server needs to be reachable), or
//! straight to the node's IP.

use anyhow::{Context as _, anyhow};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};

use crate::cli::{Agentless, Connect, Global};
use crate::client::{AgentClient, Transport};

/// A cluster and how to reach its agents.
pub struct Cluster {
    /// The Kubernetes client.
    pub client: Client,
    /// The namespace to use (`-n`, else the context's, else `default`).
    pub namespace: String,
    global: Global,
    /// The user's bearer token, which agents review with the cluster.
    bearer: Option<String>,
    /// The user's client certificate, which agents verify against the cluster's client CA.
    identity: Option<crate::credentials::Identity>,
    /// Trust for agents' certificates, once looked up (`None` inside: plain HTTP).
    agent_ca: tokio::sync::OnceCell<Option<std::sync::Arc<rustls::ClientConfig>>>,
}

/// The ConfigMap (in the agents' namespace) whose `ca.crt` is the CA of agents' certificates.
pub const AGENT_CA_CONFIGMAP: &str = "kubectl-debug-agent-ca";

/// The API server the kubeconfig names (`HOST:PORT`), once read: for the message when it
/// cannot be reached.
pub static SERVER: std::sync::OnceLock<String> = std::sync::OnceLock::new();

impl Cluster {
    /// A client and the namespace to use, read from kubeconfig the way kubectl does
    /// (`--kubeconfig`, else `KUBECONFIG`, else `~/.kube/config`; `--context`, else the
    /// current context; `-n`, else the context's namespace, else `default`).
    /// Reads the kubeconfig as kubectl does, and makes the cluster's client.
    pub async fn connect(global: &Global) -> anyhow::Result<Cluster> {
        let options = KubeConfigOptions {
            context: global.context.clone(),
            cluster: None,
            user: None,
        };
        let config = match &global.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path)
                    .with_context(|| format!("reading kubeconfig {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &options).await
            }
            None => kube::Config::from_kubeconfig(&options).await,
        }
        .context("loading the kubeconfig (set --kubeconfig or KUBECONFIG, or choose --context)")?;
        let namespace = global
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let url = &config.cluster_url;
        let _ = SERVER.set(format!(
            "{}:{}",
            url.host().unwrap_or_default(),
            url.port_u16().unwrap_or(match url.scheme_str() {
                Some("http") => 80,
                _ => 443,
            })
        ));
        crate::cleanup::connected(global.kubeconfig.clone(), global.context.clone());
        let bearer = crate::credentials::bearer(&config.auth_info)?;
        let identity = crate::credentials::identity(&config.auth_info)?;
        let client = Client::try_from(config).context("building the Kubernetes client")?;
        Ok(Cluster {
            client,
            namespace,
            global: global.clone(),
            bearer,
            identity,
            agent_ca: tokio::sync::OnceCell::new(),
        })
    }

    /// Trust for agents' certificates: `--agent-ca` (or the plugin config's `agentCA`), else
    /// the agents' CA ConfigMap; neither: `None`, plain HTTP.
    async fn agent_ca(&self) -> anyhow::Result<Option<std::sync::Arc<rustls::ClientConfig>>> {
        self.agent_ca
            .get_or_try_init(|| async {
                if let Some(path) = &self.global.agent_ca {
                    return crate::credentials::trusting_file(path, self.identity.as_ref())
                        .map(Some);
                }
                let namespace = self.global.agent_namespace();
                let maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
                    Api::namespaced(self.client.clone(), namespace);
                let found = match maps.get_opt(AGENT_CA_CONFIGMAP).await {
                    Ok(found) => found,
                    // Not allowed to read it, or no such API: as if there were none.
                    Err(kube::Error::Api(_)) => None,
                    Err(e) => {
                        return Err(e).with_context(|| {
                            format!("reading ConfigMap {namespace}/{AGENT_CA_CONFIGMAP}")
                        });
                    }
                };
                let pem = found
                    .and_then(|m| m.data)
                    .and_then(|mut d| d.remove("ca.crt"));
                match pem {
                    Some(pem) => crate::credentials::trusting(
                        pem.as_bytes(),
                        &format!("ConfigMap {namespace}/{AGENT_CA_CONFIGMAP} (ca.crt)"),
                        self.identity.as_ref(),
                    )
                    .map(Some),
                    None => Ok(None),
                }
            })
            .await
            .cloned()
    }

    /// The client of the agent on node `node` (whose IP is `host_ip`), as `--agentless` says:
    /// its DaemonSet agent, else (`auto`) or anyway (`always`) one started on demand.
    /// `hint` is the runtime of a container on the node, when the caller knows one.
    pub async fn agent_on(
        &self,
        node: &str,
        host_ip: &str,
        hint: Option<kdbg_api::RuntimeKind>,
    ) -> anyhow::Result<AgentClient> {
        match self.global.agentless() {
            Agentless::Always => self.on_demand(node, hint).await,
            Agentless::Never => self.daemonset_agent(node, host_ip).await.map_err(|e| {
                if e.is::<NoAgent>() {
                    e.context("or start one for this command with --agentless")
                } else {
                    e
                }
            }),
            Agentless::Auto => match self.daemonset_agent(node, host_ip).await {
                Err(e) if e.is::<NoAgent>() => self.on_demand(node, hint).await,
                other => other,
            },
        }
    }

    /// Whether agents are started on demand (`--agentless`).
    pub fn agentless(&self) -> Agentless {
        self.global.agentless()
    }

    /// The node's DaemonSet agent, if it has one ([`NoAgent`] if not).
    pub async fn existing_agent_on(
        &self,
        node: &str,
        host_ip: &str,
    ) -> anyhow::Result<AgentClient> {
        self.daemonset_agent(node, host_ip).await
    }

    /// An agent started on demand on `node`.
    async fn on_demand(
        &self,
        node: &str,
        hint: Option<kdbg_api::RuntimeKind>,
    ) -> anyhow::Result<AgentClient> {
        let settings = crate::ondemand::Settings {
            image: self.global.agent_image.clone(),
            pull_policy: self.global.agent_image_pull_policy.clone(),
            resources: self.global.agent_resources.clone(),
            sockets: self.global.agent_runtime_sockets.clone(),
            start_timeout: self
                .global
                .agent_start_timeout
                .unwrap_or(std::time::Duration::from_secs(120)),
            exit_when_idle: self
                .global
                .agent_exit_when_idle
                .unwrap_or(crate::ondemand::EXIT_WHEN_IDLE),
        };
        let user = crate::ondemand::user_name(
            self.global.kubeconfig.as_deref(),
            self.global.context.as_deref(),
        );
        crate::ondemand::start(
            self.client.clone(),
            self.global.agent_namespace(),
            node,
            hint,
            &settings,
            &user,
        )
        .await
    }

    /// The node's DaemonSet agent.
    async fn daemonset_agent(&self, node: &str, host_ip: &str) -> anyhow::Result<AgentClient> {
        let port = self.global.agent_port();
        let ca = self.agent_ca().await?;
        let tls = |name: rustls::pki_types::ServerName<'static>| {
            ca.clone()
                .map(|config| crate::credentials::AgentTls { config, name })
        };
        if self.global.connect() == Connect::Direct {
            let name = rustls::pki_types::ServerName::try_from(host_ip.to_owned())
                .with_context(|| format!("node {node}'s IP {host_ip:?} as a TLS name"))?;
            return Ok(AgentClient::new(Transport::Tcp {
                address: format!("{host_ip}:{port}"),
                node: Some(node.to_owned()),
            })
            .with_access(self.bearer.clone(), tls(name)));
        }
        let namespace = self.global.agent_namespace();
        let selector = self.global.agent_selector();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let listed = pods
            .list(
                &ListParams::default()
                    .labels(selector)
                    .fields(&format!("spec.nodeName={node}")),
            )
            .await
            .with_context(|| {
                format!(
                    "finding the kubectl-debug agent of node \"{node}\" (pods labelled {selector} in namespace {namespace}); or reach agents by node IP with --connect direct"
                )
            })?;
        // On-demand agents (of other users, too) are not the node's agent.
        let daemon: Vec<Pod> = listed
            .items
            .into_iter()
            .filter(|p| {
                p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(crate::ondemand::COMPONENT_LABEL.0))
                    .is_none_or(|c| c != crate::ondemand::COMPONENT_LABEL.1)
            })
            .collect();
        let pod = pick(&daemon, node, namespace, selector)?;
        let name =
            rustls::pki_types::ServerName::try_from(crate::credentials::service_name(namespace))
                .context("the agents' TLS name")?;
        Ok(AgentClient::new(Transport::PortForward {
            pods: Box::new(pods),
            pod,
            port,
            node: node.to_owned(),
        })
        .with_access(self.bearer.clone(), tls(name)))
    }
}

/// A node without a DaemonSet agent: where `--agentless=auto` starts one on demand.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NoAgent(String);

/// The ready agent pod among `pods` (those of one node), or why there is none.
fn pick(pods: &[Pod], node: &str, namespace: &str, selector: &str) -> anyhow::Result<String> {
    let name = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
    let ready = |p: &Pod| {
        let status = p.status.as_ref();
        status.and_then(|s| s.phase.as_deref()) == Some("Running")
            && status
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    if let Some(pod) = pods.iter().find(|p| ready(p)) {
        return Ok(name(pod));
    }
    let Some(pod) = pods.first() else {
        return Err(anyhow::Error::new(NoAgent(format!(
            "no kubectl-debug agent runs on node \"{node}\" (no pod labelled {selector} in namespace {namespace}); install it with: kubectl apply -k deploy/ (from kubectl-debug's source), or name where it runs with --agent-namespace and --agent-selector"
        ))));
    };
    let status = pod.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or_else(|| "Unknown".into());
    let why = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready" && c.status != "True")
        .map(|c| {
            let reason = c.reason.clone().unwrap_or_default();
            match &c.message {
                Some(message) => format!(" ({reason}: {message})"),
                None => format!(" ({reason})"),
            }
        })
        .unwrap_or_default();
    Err(anyhow!(
        "the kubectl-debug agent on node \"{node}\" (pod {namespace}/{}) is not ready: {phase}{why}; see kubectl -n {namespace} describe pod {}",
        name(pod),
        name(pod)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn no_agent_and_an_unready_agent_say_what_to_do() {
        let err = pick(&[], "n1", "kubectl-debug", "app=a")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("no kubectl-debug agent runs on node \"n1\" (no pod labelled app=a in namespace kubectl-debug); install it with: kubectl apply -k"),
            "{err}"
        );
        let pending = pod(serde_json::json!({
            "metadata": {"name": "agent-x"},
            "status": {"phase": "Pending", "conditions": [
                {"type": "Ready", "status": "False", "reason": "ContainersNotReady", "message": "containers with unready status: [agent]"}
            ]}
        }));
        let err = pick(
            std::slice::from_ref(&pending),
            "n1",
            "kubectl-debug",
            "app=a",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("pod kubectl-debug/agent-x) is not ready: Pending (ContainersNotReady: containers with unready status: [agent])"),
            "{err}"
        );
        let mut running = pending;
        running.metadata.name = Some("agent-y".into());
        let status = running.status.as_mut().unwrap();
        status.phase = Some("Running".into());
        status.conditions.as_mut().unwrap()[0].status = "True".into();
        assert_eq!(pick(&[running], "n1", "ns", "s").unwrap(), "agent-y");
    }
}
