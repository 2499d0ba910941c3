//! `kubectl-debug version [--client] [-o json|yaml]`: the plugin's version, and the agent's of
//! every node that runs pods (asked in parallel, as `list -A` asks).

use serde::Serialize;

use crate::cli::{Output, VersionArgs};
use crate::list::{Asked, print_items, write_table};

/// One agent's version, as shown.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Agent {
    node: String,
    version: String,
    runtime: String,
}

/// Runs `version`.
pub async fn run(args: VersionArgs) -> anyhow::Result<()> {
    let plugin = env!("CARGO_PKG_VERSION");
    if args.client {
        match args.output {
            Some(Output::Json | Output::Yaml) => {
                println!("{}", serde_json::json!({ "clientVersion": plugin }));
            }
            _ => println!("kubectl-debug {plugin}"),
        }
        return Ok(());
    }
    let asked = Asked::resolve(&args.global, None, true).await?;
    let answers = asked
        .each(
            "its version is",
            |agent| async move { agent.version().await },
        )
        .await?;
    let mut agents: Vec<Agent> = answers
        .into_iter()
        .map(|(node, info)| Agent {
            node: node.clone(),
            version: info.version,
            runtime: info.runtime,
        })
        .collect();
    agents.sort_by(|a, b| a.node.cmp(&b.node));
    match args.output {
        Some(Output::Json) => {
            let doc = serde_json::json!({ "clientVersion": plugin, "agents": agents });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        Some(Output::Yaml) => print_items(&agents, args.output)?,
        _ => {
            println!("kubectl-debug {plugin}");
            let mut lines = vec![vec![
                "NODE".to_owned(),
                "AGENT".to_owned(),
                "RUNTIME".to_owned(),
            ]];
            lines.extend(
                agents
                    .into_iter()
                    .map(|a| vec![a.node, a.version, a.runtime]),
            );
            write_table(&mut std::io::stdout().lock(), &lines)?;
        }
    }
    Ok(())
}
