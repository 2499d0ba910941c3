//! `kubectl-debug node/NAME`: a debug container in a node's own pid, network, IPC and UTS
//! namespaces with the node's root filesystem at `/host`, like `kubectl debug node/NAME`; and
//! `list`, `attach`, `rm` with `node/NAME` in place of a pod. The node is found through the
//! Kubernetes API, its agent as a pod's is; the agent asks the cluster whether the user may
//! `create nodes/proxy` on it.

use anyhow::{Context as _, anyhow, bail};
use k8s_openapi::api::core::v1::Node;
use kdbg_api::{DebugRequest, PodScope, RuntimeKind, TargetRef};
use kdbg_relay::ExitStatus;
use kube::{Api, Client};

use crate::attach;
use crate::cli::{AttachArgs, DebugOpts, Global};
use crate::client::AgentClient;
use crate::cluster::Cluster;

/// The node `arg` names, if it is written `node/NAME` (or `nodes/NAME`), as kubectl writes it.
pub fn named(arg: &str) -> Option<&str> {
    arg.strip_prefix("node/")
        .or_else(|| arg.strip_prefix("nodes/"))
}

/// A node, as the cluster describes it: what reaching its agent needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHome {
    /// Its name.
    pub name: String,
    /// Its InternalIP (else its first address), where its agent listens.
    pub ip: String,
    /// Its runtime, from `status.nodeInfo.containerRuntimeVersion`.
    pub runtime: Option<RuntimeKind>,
}

/// Finds node `name`; an unknown one is an error naming it and how to list the nodes.
pub async fn find(client: Client, name: &str) -> anyhow::Result<NodeHome> {
    let nodes: Api<Node> = Api::all(client);
    let node = nodes
        .get_opt(name)
        .await
        .with_context(|| format!("getting node \"{name}\""))?
        .ok_or_else(|| {
            anyhow!("nodes \"{name}\" not found; kubectl get nodes lists the cluster's nodes")
        })?;
    home_of(&node, name)
}

/// Where node `node` (named `name`) is; pure, so it is tested without a cluster.
pub fn home_of(node: &Node, name: &str) -> anyhow::Result<NodeHome> {
    let status = node.status.clone().unwrap_or_default();
    let addresses = status.addresses.unwrap_or_default();
    let ip = addresses
        .iter()
        .find(|a| a.type_ == "InternalIP")
        .or_else(|| addresses.first())
        .map(|a| a.address.clone())
        .ok_or_else(|| {
            anyhow!("node \"{name}\" has no address in its status: its kubelet has not reported")
        })?;
    let runtime = status
        .node_info
        .and_then(|i| {
            // `containerd://1.7.2` or `docker://24.0.7`: the scheme is the runtime.
            let scheme = i.container_runtime_version.split_once("://")?.0.to_owned();
            format!("{scheme}://node").parse::<TargetRef>().ok()
        })
        .map(|t| t.kind);
    Ok(NodeHome {
        name: name.to_owned(),
        ip,
        runtime,
    })
}

/// The scope of the node's own debug containers.
pub fn scope(node: &str) -> PodScope {
    PodScope {
        node: Some(node.to_owned()),
        ..PodScope::default()
    }
}

/// The agent on `home`, as `--agentless` says.
async fn agent(cluster: &Cluster, home: &NodeHome) -> anyhow::Result<AgentClient> {
    cluster.agent_on(&home.name, &home.ip, home.runtime).await
}

/// Runs `kubectl-debug node/NAME`.
pub async fn run(
    global: &Global,
    node: &str,
    container: Option<&str>,
    opts: DebugOpts,
) -> anyhow::Result<ExitStatus> {
    if let Some(container) = container {
        bail!(
            "-c {container}: node/{node} is the node itself, not a pod: it has no containers to choose"
        );
    }
    if opts.fork.fork {
        bail!("--fork copies a pod: node/{node} is a node; debug it without --fork");
    }
    let cluster = Cluster::connect(global).await?;
    let home = find(cluster.client.clone(), node).await?;
    let record_local = opts.record.record_local.clone();
    let asked = opts.image_pull_secrets.clone();
    let request = opts.request_joining(None, Some(home.name.clone()));
    // A node has no pod: only the secrets asked for, in the current namespace.
    let secrets = crate::pullsecrets::PullSecrets::new(
        cluster.client.clone(),
        &cluster.namespace,
        &asked,
        &[],
        None,
    );
    session(
        &cluster,
        &home,
        request,
        record_local.as_deref(),
        Some(secrets),
    )
    .await
}

/// Runs `kubectl-debug attach node/NAME CONTAINER`.
pub async fn attach(global: &Global, node: &str, args: AttachArgs) -> anyhow::Result<ExitStatus> {
    let cluster = Cluster::connect(global).await?;
    let home = find(cluster.client.clone(), node).await?;
    let record_local = args.session.record.record_local.clone();
    let mut request: DebugRequest = args.session.request(&args.name);
    request.node = Some(home.name.clone());
    session(&cluster, &home, request, record_local.as_deref(), None).await
}

/// A session on node `home`'s agent, as `request` asks.
async fn session(
    cluster: &Cluster,
    home: &NodeHome,
    request: DebugRequest,
    record_local: Option<&std::path::Path>,
    secrets: Option<crate::pullsecrets::PullSecrets>,
) -> anyhow::Result<ExitStatus> {
    let mut agent = agent(cluster, home).await?;
    if let Some(secrets) = secrets {
        agent = agent.with_pull_secrets(secrets);
    }
    let written = format!("node/{}", home.name);
    attach::debug(
        &agent,
        request,
        record_local,
        &attach::kept_in_pod(&written),
    )
    .await
}

/// The node's agent and its scope, for `rm node/NAME`.
pub async fn reach(cluster: &Cluster, node: &str) -> anyhow::Result<(AgentClient, PodScope)> {
    let home = find(cluster.client.clone(), node).await?;
    Ok((agent(cluster, &home).await?, scope(&home.name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_written_as_kubectl_writes_them() {
        assert_eq!(named("node/worker-1"), Some("worker-1"));
        assert_eq!(named("nodes/worker-1"), Some("worker-1"));
        assert_eq!(named("worker-1"), None);
        assert_eq!(named("pod/node"), None);
    }

    #[test]
    fn a_node_says_where_its_agent_is_and_its_runtime() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1"},
            "status": {
                "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.5"}],
                "nodeInfo": {"containerRuntimeVersion": "containerd://1.7.2", "kubeletVersion": "", "kubeProxyVersion": "",
                    "operatingSystem": "linux", "architecture": "amd64", "kernelVersion": "", "osImage": "",
                    "machineID": "", "systemUUID": "", "bootID": ""}
            }
        }))
        .unwrap();
        let home = home_of(&node, "n1").unwrap();
        assert_eq!(home.ip, "10.0.0.5");
        assert_eq!(home.runtime, Some(RuntimeKind::Containerd));
        let bare: Node =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "n2"}})).unwrap();
        let err = home_of(&bare, "n2").unwrap_err().to_string();
        assert!(err.contains("node \"n2\" has no address"), "{err}");
    }
}
