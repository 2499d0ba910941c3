//! `kubectl-debug rm POD NAME... | --all [--ignore-not-found]` and `local rm NAME...`:
//! remove debug containers. The agent removes only its own kind (our labels), and only the
//! named pod's; an unknown name is an error naming it (exit 1), unless `--ignore-not-found`.
//! `rm COPY --all` on a retained copy of a pod (`--fork --retain`) deletes the copy too.

use anyhow::bail;
use kdbg_api::PodScope;

use crate::cli::{Global, RmArgs};
use crate::client::{AgentClient, Refused};
use crate::pod;

/// Runs `kubectl-debug rm`.
pub async fn run(global: &Global, args: RmArgs) -> anyhow::Result<()> {
    let cluster = crate::cluster::Cluster::connect(global).await?;
    if let Some(node) = crate::node::named(&args.pod) {
        let (agent, scope) = crate::node::reach(&cluster, node).await?;
        return remove_asked(&agent, &scope, &args, &format!("node {node}"), "").await;
    }
    let name = pod::pod_name(&args.pod);
    let (client, namespace) = (cluster.client.clone(), cluster.namespace.clone());
    let home = pod::node_of(client, &namespace, name).await?;
    let agent = cluster.agent_on(&home.node, &home.ip, home.runtime).await?;
    let scope = PodScope {
        namespace: Some(namespace.clone()),
        pod: Some(name.to_owned()),
        node: None,
    };
    let place = format!(" in namespace {namespace}");
    remove_asked(&agent, &scope, &args, &format!("pod {name}"), &place).await?;
    if args.all && home.copy_of.is_some() {
        // With its debug containers gone, a kept copy is there for nothing else.
        let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
            kube::Api::namespaced(cluster.client.clone(), &namespace);
        match pods.delete(name, &kube::api::DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("deleting the copy {namespace}/{name} (kubectl delete pod {name} -n {namespace})")));
            }
        }
        println!("copy {name} deleted");
    }
    Ok(())
}

/// Removes what `args` names of `scope` (`whose` debug containers they are, `place` where,
/// for messages), or with `--all` every debug container the agent lists there. With
/// `--all`, one that is gone between the list and its removal (an unretained one its agent
/// was removing) is what was asked for.
async fn remove_asked(
    agent: &AgentClient,
    scope: &PodScope,
    args: &RmArgs,
    whose: &str,
    place: &str,
) -> anyhow::Result<()> {
    let names = if args.all {
        let listed: Vec<String> = agent
            .list(scope)
            .await?
            .into_iter()
            .map(|i| i.name)
            .collect();
        if listed.is_empty() {
            eprintln!("No debug containers found for {whose}{place}.");
        }
        listed
    } else {
        args.names.clone()
    };
    remove(
        agent,
        &names,
        scope,
        args.ignore_not_found || args.all,
        whose,
    )
    .await
}

/// Removes `names` through `agent`, printing `NAME removed` for each; the names that are not
/// there are one error at the end (unless `ignore_not_found`), after the others are removed.
pub async fn remove(
    agent: &AgentClient,
    names: &[String],
    scope: &PodScope,
    ignore_not_found: bool,
    whose: &str,
) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    for name in names {
        match agent.remove(name, scope).await {
            Ok(_) => println!("debug container {name} removed"),
            Err(e) if e.downcast_ref::<Refused>().is_some_and(|r| r.code == 404) => {
                missing.push(name.as_str());
            }
            Err(e) => return Err(e),
        }
    }
    if !missing.is_empty() && !ignore_not_found {
        bail!(
            "debug container(s) {} not found for {whose}; `list` shows what exists (--ignore-not-found ignores this)",
            missing.join(", ")
        );
    }
    Ok(())
}
