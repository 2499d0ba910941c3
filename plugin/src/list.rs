//! `kubectl-debug list [POD] [-n NS | -A] [-o wide|json|yaml]`: the debug containers, which
//! Kubernetes does not see, asked of the agents of the nodes concerned in parallel.
//!
//! With a pod, its node's agent is asked for the pod's; otherwise every node that runs pods in
//! scope (the namespace, or with `-A` every namespace) is asked, at most [`PARALLEL`] at once.
//! An agent that cannot be reached is a warning naming its node, not a failure of the list:
//! the list fails only when no agent answered.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kdbg_api::{ContainerItem, PodScope};
use kube::Api;
use kube::api::ListParams;
use serde::Serialize;

use crate::cli::{Global, ListArgs, Output};
use crate::client::AgentClient;
use crate::cluster::Cluster;
use crate::pod;

/// Agents asked at once: enough for a large cluster's nodes in one round, bounded so that a
/// very large one does not open thousands of connections at once.
pub const PARALLEL: usize = 128;

/// A debug container as `list` shows it: the fields of the table, in camelCase for `-o
/// json|yaml`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// The target pod's namespace.
    pub namespace: String,
    /// The target pod.
    pub pod: String,
    /// The debug container's name.
    pub name: String,
    /// Its image.
    pub image: String,
    /// `Running`, `Idle`, `Exited (CODE)` or `Orphaned`.
    pub status: String,
    /// How long ago it was created, like kubectl's AGE.
    pub age: String,
    /// Whether it is kept after its sessions.
    pub retained: bool,
    /// Its node.
    pub node: String,
    /// The container it joins.
    pub target: String,
    /// Who created it.
    pub user: String,
    /// The sessions attached now, comma-separated.
    pub session: String,
    /// How many watch those sessions (`kubectl-debug watch`).
    pub watchers: usize,
    /// The pod the target pod is a copy of (`--fork --retain`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy_of: Option<String>,
}

impl Row {
    /// The row of `item` on `node`.
    pub fn new(item: ContainerItem, node: &str) -> Row {
        let none = || "<none>".to_owned();
        // A debug container of the node itself shows as the user names it: node/NAME.
        let of_node = match item.target.parse::<kdbg_api::Target>() {
            Ok(kdbg_api::Target::Node(node)) => Some(format!("node/{node}")),
            _ => None,
        };
        Row {
            namespace: item.namespace.unwrap_or_else(none),
            pod: item.pod.or(of_node).unwrap_or_else(none),
            name: item.name,
            image: item.image,
            status: item.status.to_string(),
            age: age(item.created),
            retained: item.retained,
            node: node.to_owned(),
            target: item.target,
            user: item.user.unwrap_or_else(none),
            session: item.sessions.join(","),
            watchers: item.watchers,
            copy_of: None,
        }
    }
}

/// `created` (seconds since the epoch) as kubectl shows ages: `45s`, `12m`, `3h`, `5d`.
pub fn age(created: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let secs = now.saturating_sub(created);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// The agents to ask for things of a pod, a namespace, or with `-A` every namespace.
pub struct Asked {
    /// The cluster.
    pub cluster: Cluster,
    /// The namespace (the kubeconfig context's, or `-n`).
    pub namespace: String,
    /// The nodes to ask, by name, with their IPs.
    pub nodes: BTreeMap<String, String>,
    /// What to ask each agent for.
    pub scope: PodScope,
    /// Where each pod runs: (namespace, pod) -> node.
    pub homes: BTreeMap<(String, String), String>,
    /// The copies `--fork` made: (namespace, pod) -> the pod it is a copy of.
    pub copies: BTreeMap<(String, String), String>,
}

impl Asked {
    /// The agents concerned by `pod`, or the namespace, or every namespace.
    pub async fn resolve(
        global: &Global,
        pod: Option<&str>,
        all_namespaces: bool,
    ) -> anyhow::Result<Asked> {
        let cluster = Cluster::connect(global).await?;
        let (client, namespace) = (cluster.client.clone(), cluster.namespace.clone());
        let mut homes = BTreeMap::new();
        let mut copies = BTreeMap::new();
        if let Some(node) = pod.and_then(crate::node::named) {
            let home = crate::node::find(client, node).await?;
            return Ok(Asked {
                cluster,
                namespace,
                scope: crate::node::scope(&home.name),
                nodes: BTreeMap::from([(home.name, home.ip)]),
                homes,
                copies,
            });
        }
        if let Some(name) = pod {
            let name = pod::pod_name(name);
            let home = pod::node_of(client, &namespace, name).await?;
            if let Some(original) = home.copy_of {
                copies.insert((namespace.clone(), name.to_owned()), original);
            }
            let scope = PodScope {
                namespace: Some(namespace.clone()),
                pod: Some(name.to_owned()),
                node: None,
            };
            return Ok(Asked {
                cluster,
                namespace,
                nodes: BTreeMap::from([(home.node, home.ip)]),
                scope,
                homes,
                copies,
            });
        }
        let pods: Api<Pod> = if all_namespaces {
            Api::all(client)
        } else {
            Api::namespaced(client, &namespace)
        };
        let listed =
            pods.list(&ListParams::default())
                .await
                .with_context(|| match all_namespaces {
                    true => "listing the pods of every namespace".to_owned(),
                    false => format!("listing the pods of namespace \"{namespace}\""),
                })?;
        let mut nodes = BTreeMap::new();
        for p in &listed.items {
            let Some(ip) = p.status.as_ref().and_then(|s| s.host_ip.clone()) else {
                continue;
            };
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or(ip.clone());
            let key = (
                p.metadata.namespace.clone().unwrap_or_default(),
                p.metadata.name.clone().unwrap_or_default(),
            );
            if let Some(original) = crate::fork::copy_of(p) {
                copies.insert(key.clone(), original);
            }
            homes.insert(key, node.clone());
            nodes.insert(node, ip);
        }
        let scope = PodScope {
            namespace: (!all_namespaces).then(|| namespace.clone()),
            ..PodScope::default()
        };
        Ok(Asked {
            cluster,
            namespace,
            nodes,
            scope,
            homes,
            copies,
        })
    }

    /// Asks every node's agent with `ask`, in parallel ([`PARALLEL`] at once); returns each
    /// answer with its node. An agent that fails is a warning naming its node and `what` it
    /// did not give; it is an error only when none answered.
    pub async fn each<'a, T, F, Fut>(
        &'a self,
        what: &str,
        ask: F,
    ) -> anyhow::Result<Vec<(&'a String, T)>>
    where
        F: Fn(AgentClient) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<T>>,
    {
        let ask = &ask;
        // Agents are started on demand for one node (one pod's), or for many only when the
        // user said --agentless=always: a list is no reason to start a pod on every node.
        let start =
            self.nodes.len() == 1 || self.cluster.agentless() == crate::cli::Agentless::Always;
        let asked = futures_util::stream::iter(self.nodes.iter().map(|(node, ip)| async move {
            let agent = if start {
                self.cluster.agent_on(node, ip, None).await
            } else {
                self.cluster.existing_agent_on(node, ip).await
            };
            let answer = match agent {
                Ok(agent) => ask(agent).await,
                Err(e) => Err(e),
            };
            (node, answer)
        }))
        .buffer_unordered(PARALLEL)
        .collect::<Vec<_>>()
        .await;
        let mut answers = Vec::new();
        let mut failures = 0;
        let mut without = Vec::new();
        for (node, answer) in asked {
            match answer {
                Ok(answer) => answers.push((node, answer)),
                Err(e) if e.is::<crate::cluster::NoAgent>() => without.push(node.as_str()),
                Err(e) => {
                    let reason = kdbg_api::error_chain(e.as_ref());
                    eprintln!("warning: node {node}: {what} not listed: {reason}");
                    failures += 1;
                }
            }
        }
        if !without.is_empty() {
            eprintln!(
                "warning: {} not asked: no kubectl-debug agent runs there; --agentless=always starts one on each for this command",
                match without.as_slice() {
                    [one] => format!("node {one}"),
                    many => format!("nodes {}", many.join(", ")),
                }
            );
        }
        if answers.is_empty() && failures > 0 {
            bail!(
                "no kubectl-debug agent answered ({failures} nodes asked); check that the agent DaemonSet runs"
            );
        }
        Ok(answers)
    }
}

/// Runs `kubectl-debug list`.
pub async fn run(global: &Global, args: ListArgs) -> anyhow::Result<()> {
    let asked = Asked::resolve(global, args.pod.as_deref(), args.all_namespaces).await?;
    let rows = ask(&asked).await?;
    let namespace = &asked.namespace;
    if rows.is_empty() && args.output.is_none_or(|o| o == Output::Wide) {
        match (&args.pod, args.all_namespaces) {
            (Some(node), _) if crate::node::named(node).is_some() => {
                eprintln!("No debug containers found for {node}.")
            }
            (Some(pod), _) => {
                eprintln!("No debug containers found for pod {pod} in namespace {namespace}.")
            }
            (None, true) => eprintln!("No debug containers found."),
            (None, false) => eprintln!("No debug containers found in namespace {namespace}."),
        }
        return Ok(());
    }
    print(&rows, args.output, args.all_namespaces)
}

/// Asks each node's agent for the debug containers in scope, in parallel. A container two
/// agents report (nodes sharing one runtime, as in a lab) is shown once, on its pod's node
/// when known.
async fn ask(asked: &Asked) -> anyhow::Result<Vec<Row>> {
    let scope = &asked.scope;
    let answers = asked
        .each("its debug containers are", |agent| async move {
            agent.list(scope).await
        })
        .await?;
    let mut found: BTreeMap<String, (ContainerItem, &String)> = BTreeMap::new();
    for (node, items) in answers {
        for item in items {
            let home = item
                .namespace
                .clone()
                .zip(item.pod.clone())
                .and_then(|key| asked.homes.get(&key));
            let keep = match found.get(&item.id) {
                None => true,
                Some(_) => home == Some(node),
            };
            if keep {
                found.insert(item.id.clone(), (item, node));
            }
        }
    }
    let mut rows: Vec<Row> = found
        .into_values()
        .map(|(item, node)| Row::new(item, node))
        .collect();
    for row in &mut rows {
        let key = (row.namespace.clone(), row.pod.clone());
        row.copy_of = asked.copies.get(&key).cloned();
    }
    rows.sort_by(|a, b| (&a.namespace, &a.pod, &a.name).cmp(&(&b.namespace, &b.pod, &b.name)));
    Ok(rows)
}

/// Lists the debug containers of one agent (`local list`), as `list` shows them.
pub async fn one_agent(agent: &AgentClient, node: &str) -> anyhow::Result<Vec<Row>> {
    Ok(agent
        .list(&PodScope::default())
        .await?
        .into_iter()
        .map(|item| Row::new(item, node))
        .collect())
}

/// Prints `rows` as `output` says; `namespaces` adds the NAMESPACE column.
pub fn print(rows: &[Row], output: Option<Output>, namespaces: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match output {
        Some(Output::Json | Output::Yaml) => print_items(rows, output)?,
        table => {
            let wide = table == Some(Output::Wide);
            let mut header = Vec::new();
            if namespaces {
                header.push("NAMESPACE");
            }
            header.extend(["POD", "NAME", "IMAGE", "STATUS", "AGE", "RETAINED", "NODE"]);
            if wide {
                header.extend(["TARGET", "USER", "SESSION", "WATCHERS", "COPY-OF"]);
            }
            let mut lines = vec![header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>()];
            for row in rows {
                let mut cells = Vec::new();
                if namespaces {
                    cells.push(row.namespace.clone());
                }
                cells.extend([
                    row.pod.clone(),
                    row.name.clone(),
                    row.image.clone(),
                    row.status.clone(),
                    row.age.clone(),
                    row.retained.to_string(),
                    row.node.clone(),
                ]);
                if wide {
                    let session = if row.session.is_empty() {
                        "<none>".to_owned()
                    } else {
                        row.session.clone()
                    };
                    cells.extend([
                        row.target.clone(),
                        row.user.clone(),
                        session,
                        row.watchers.to_string(),
                        row.copy_of.clone().unwrap_or_else(|| "<none>".into()),
                    ]);
                }
                lines.push(cells);
            }
            write_table(&mut out, &lines)?;
        }
    }
    Ok(())
}

/// Prints `{"items": rows}` as JSON or YAML, as `output` says.
pub fn print_items<T: Serialize>(rows: &[T], output: Option<Output>) -> anyhow::Result<()> {
    #[derive(Serialize)]
    struct Items<'a, T> {
        items: &'a [T],
    }
    let mut out = std::io::stdout().lock();
    if output == Some(Output::Yaml) {
        let text = serde_saphyr::to_string(&Items { items: rows })
            .map_err(|e| anyhow!("writing YAML: {e}"))?;
        out.write_all(text.as_bytes())?;
    } else {
        serde_json::to_writer_pretty(&mut out, &Items { items: rows })?;
        writeln!(out)?;
    }
    Ok(())
}

/// Columns aligned like kubectl's: each as wide as its widest cell, three spaces apart.
pub fn write_table(out: &mut impl Write, lines: &[Vec<String>]) -> std::io::Result<()> {
    let columns = lines.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for line in lines {
        let mut text = String::new();
        for (c, cell) in line.iter().enumerate() {
            if c + 1 == columns {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}   ", width = widths[c]));
            }
        }
        writeln!(out, "{}", text.trim_end())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectls() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(age(now - 5), "5s");
        assert_eq!(age(now - 600), "10m");
        assert_eq!(age(now - 3 * 3600), "3h");
        assert_eq!(age(now - 5 * 86_400), "5d");
    }

    #[test]
    fn tables_align_their_columns() {
        let lines = vec![
            vec!["POD".to_owned(), "NAME".to_owned(), "STATUS".to_owned()],
            vec![
                "web-1".to_owned(),
                "web-1-dbg-abcde".to_owned(),
                "Running".to_owned(),
            ],
        ];
        let mut out = Vec::new();
        write_table(&mut out, &lines).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POD     NAME              STATUS\nweb-1   web-1-dbg-abcde   Running\n"
        );
    }
}
