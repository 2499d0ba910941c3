//! `kubectl-debug recordings list [POD] [-n NS | -A] [-o wide|json]` and `recordings get
//! SESSION [-o FILE]`: the sessions the agents recorded, asked of the nodes concerned in
//! parallel (as `list` asks for debug containers).

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context as _, bail};
use kdbg_api::{PodScope, RecordingItem};
use serde::Serialize;

use crate::cli::{Global, Output, RecordingsGet, RecordingsList};
use crate::client::AgentClient;
use crate::list::{Asked, print_items, write_table};

/// A recording as `recordings list` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// What the agent said.
    #[serde(flatten)]
    pub item: RecordingItem,
    /// The node whose agent has it.
    pub node: String,
}

/// Runs `recordings list`.
pub async fn list(global: &Global, args: RecordingsList) -> anyhow::Result<()> {
    let asked = Asked::resolve(global, args.pod.as_deref(), args.all_namespaces).await?;
    let rows = ask(&asked).await?;
    if rows.is_empty() && args.output.is_none_or(|o| o == Output::Wide) {
        let namespace = &asked.namespace;
        match (&args.pod, args.all_namespaces) {
            (Some(pod), _) => {
                eprintln!("No recordings found for pod {pod} in namespace {namespace}.")
            }
            (None, true) => eprintln!("No recordings found."),
            (None, false) => eprintln!("No recordings found in namespace {namespace}."),
        }
        return Ok(());
    }
    match args.output {
        Some(Output::Json | Output::Yaml) => print_items(&rows, args.output),
        table => print(&rows, table == Some(Output::Wide), args.all_namespaces),
    }
}

async fn ask(asked: &Asked) -> anyhow::Result<Vec<Row>> {
    let scope = &asked.scope;
    let answers = asked
        .each("its recordings are", |agent| async move {
            agent.recordings(scope).await
        })
        .await?;
    let mut rows: Vec<Row> = answers
        .into_iter()
        .flat_map(|(node, items)| {
            items.into_iter().map(|item| Row {
                item,
                node: node.clone(),
            })
        })
        .collect();
    rows.sort_by(|a, b| (a.item.started, &a.item.session).cmp(&(b.item.started, &b.item.session)));
    rows.dedup_by(|a, b| a.item.session == b.item.session);
    Ok(rows)
}

fn print(rows: &[Row], wide: bool, namespaces: bool) -> anyhow::Result<()> {
    let mut header = vec!["SESSION"];
    if namespaces {
        header.push("NAMESPACE");
    }
    header.extend([
        "POD",
        "CONTAINER",
        "USER",
        "STARTED",
        "DURATION",
        "SIZE",
        "NODE",
    ]);
    if wide {
        header.extend(["FORMAT", "STATUS"]);
    }
    let none = || "<none>".to_owned();
    let mut lines = vec![header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>()];
    for row in rows {
        let item = &row.item;
        let mut cells = vec![item.session.clone()];
        if namespaces {
            cells.push(item.namespace.clone().unwrap_or_else(none));
        }
        cells.extend([
            item.pod.clone().unwrap_or_else(none),
            item.container.clone().unwrap_or_else(none),
            item.user.clone().unwrap_or_else(none),
            timestamp(item.started),
            duration(item.duration),
            size(item.size),
            row.node.clone(),
        ]);
        if wide {
            let status = match (item.live, item.incomplete) {
                (true, _) => "Recording",
                (false, true) => "Incomplete",
                (false, false) => "Complete",
            };
            cells.extend([item.format.clone(), status.to_owned()]);
        }
        lines.push(cells);
    }
    write_table(&mut std::io::stdout().lock(), &lines)?;
    Ok(())
}

/// Seconds since the epoch as `2026-11-30T07:12:03Z`.
pub fn timestamp(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rest = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Seconds as `45s`, `3m12s`, `2h5m`.
pub fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s => format!("{}h{}m", s / 3600, s % 3600 / 60),
    }
}

/// Bytes as `512B`, `12.3KiB`, `4.0MiB`, `1.2GiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 3] = ["KiB", "MiB", "GiB"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

/// Runs `recordings get`.
pub async fn get(global: &Global, args: RecordingsGet) -> anyhow::Result<()> {
    match &args.output {
        Some(path) => {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
            let fetched = fetch(global, &args.session, args.all_namespaces, &mut file).await;
            if fetched.is_err() {
                let _ = std::fs::remove_file(path);
            }
            let bytes = fetched?;
            eprintln!(
                "Recording of session {} saved to {} ({}).",
                args.session,
                path.display(),
                size(bytes)
            );
        }
        None => {
            let mut out = std::io::stdout();
            fetch(global, &args.session, args.all_namespaces, &mut out).await?;
            out.flush()?;
        }
    }
    Ok(())
}

/// Finds recording `session` on the agents of the namespace (every namespace with
/// `all_namespaces`) and writes it to `out`; returns its size.
pub async fn fetch(
    global: &Global,
    session: &str,
    all_namespaces: bool,
    out: &mut (dyn std::io::Write + Send),
) -> anyhow::Result<u64> {
    let asked = Asked::resolve(global, None, all_namespaces).await?;
    let rows = ask(&asked).await?;
    let Some(row) = rows.into_iter().find(|r| r.item.session == session) else {
        let place = if all_namespaces {
            "on any node".to_owned()
        } else {
            format!("for namespace {} (try -A)", asked.namespace)
        };
        bail!(
            "no recording of session {session} {place}; kubectl-debug recordings list shows the recordings"
        );
    };
    let ip = asked.nodes.get(&row.node).cloned().unwrap_or_default();
    let agent: AgentClient = asked.cluster.agent_on(&row.node, &ip, None).await?;
    let scope = PodScope {
        namespace: row.item.namespace.clone(),
        pod: row.item.pod.clone(),
        node: None,
    };
    agent.recording(session, &scope, out).await
}

/// Whether `arg` names a file (rather than a session).
pub fn is_file(arg: &str) -> bool {
    Path::new(arg).is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_read_like_kubectls() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp(1_796_022_723), "2026-11-30T07:12:03Z");
        assert_eq!(timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(duration(45), "45s");
        assert_eq!(duration(192), "3m12s");
        assert_eq!(duration(7500), "2h5m");
        assert_eq!(size(512), "512B");
        assert_eq!(size(12_595), "12.3KiB");
        assert_eq!(size(4 << 20), "4.0MiB");
    }
}
