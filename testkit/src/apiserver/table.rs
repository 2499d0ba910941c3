//! Server-side printing: the `meta.k8s.io/v1` `Table` that `kubectl get` asks for
//! (`Accept: application/json;as=Table;...`), with the API server's columns and cells for
//! pods, events, namespaces, secrets and service accounts
//! (`pkg/printers/internalversion/printers.go`); kubectl prints
//! only what the server puts in the table.

use k8s_openapi::api::core::v1::{Event, Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde_json::{Value, json};

/// Whether a request's `Accept` header asks for a table.
pub(crate) fn asked(req: &hyper::Request<hyper::body::Incoming>) -> bool {
    req.headers()
        .get_all(hyper::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("as=Table"))
}

/// A column: name, and whether only `-o wide` shows it.
type Column = (&'static str, bool);

const POD: [Column; 9] = [
    ("Name", false),
    ("Ready", false),
    ("Status", false),
    ("Restarts", false),
    ("Age", false),
    ("IP", true),
    ("Node", true),
    ("Nominated Node", true),
    ("Readiness Gates", true),
];
const EVENT: [Column; 10] = [
    ("Last Seen", false),
    ("Type", false),
    ("Reason", false),
    ("Object", false),
    ("Subobject", true),
    ("Source", true),
    ("Message", false),
    ("First Seen", true),
    ("Count", true),
    ("Name", true),
];
const NAMESPACE: [Column; 3] = [("Name", false), ("Status", false), ("Age", false)];
const SECRET: [Column; 4] = [
    ("Name", false),
    ("Type", false),
    ("Data", false),
    ("Age", false),
];
const SERVICE_ACCOUNT: [Column; 3] = [("Name", false), ("Secrets", false), ("Age", false)];

/// The table of `items`, each row carrying its object's metadata (or, with
/// `includeObject=Object` in `query`, the object).
fn table(
    columns: &[Column],
    rows: Vec<(Vec<Value>, Value, &ObjectMeta)>,
    revision: u64,
    query: &str,
) -> Value {
    let whole = query.contains("includeObject=Object");
    let definitions: Vec<Value> = columns
        .iter()
        .map(|(name, wide)| {
            let format = if *name == "Name" { "name" } else { "" };
            json!({"name": name, "type": "string", "format": format, "description": "", "priority": i32::from(*wide)})
        })
        .collect();
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|(cells, object, meta)| {
            let object = if whole {
                object
            } else {
                json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta})
            };
            json!({"cells": cells, "object": object})
        })
        .collect();
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": revision.to_string()},
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

/// Pods as `kubectl get pods` shows them.
pub(crate) fn pods(pods: &[Pod], revision: u64, query: &str) -> Value {
    let rows = pods
        .iter()
        .map(|p| {
            (
                pod_cells(p),
                serde_json::to_value(p).unwrap_or_default(),
                &p.metadata,
            )
        })
        .collect();
    table(&POD, rows, revision, query)
}

/// The kubelet-facing summary of `printPod`: ready count, reason, restarts.
fn pod_cells(pod: &Pod) -> Vec<Value> {
    let status = pod.status.clone().unwrap_or_default();
    let total = pod.spec.as_ref().map_or(0, |s| s.containers.len());
    let mut reason = status
        .reason
        .clone()
        .or(status.phase.clone())
        .unwrap_or_default();
    let (mut ready, mut restarts, mut running) = (0, 0, false);
    let mut last_restart: Option<Time> = None;
    // printPod's pass over the init containers: the first that has not completed names the
    // pod's state (Init:Error, Init:CrashLoopBackOff, Init:1/2).
    let inits = pod
        .spec
        .as_ref()
        .map_or(0, |s| s.init_containers.iter().flatten().count());
    let mut initializing = false;
    for (i, c) in status.init_container_statuses.iter().flatten().enumerate() {
        restarts += c.restart_count;
        if let Some(ended) = c.last_state.as_ref().and_then(|l| l.terminated.as_ref())
            && let Some(at) = &ended.finished_at
            && last_restart.as_ref().is_none_or(|l| l.0 < at.0)
        {
            last_restart = Some(at.clone());
        }
        let state = c.state.clone().unwrap_or_default();
        let waiting = state
            .waiting
            .and_then(|w| w.reason)
            .filter(|r| !r.is_empty());
        reason = match (state.terminated, waiting) {
            (Some(ended), _) if ended.exit_code == 0 => continue,
            (Some(ended), _) => match ended.reason.filter(|r| !r.is_empty()) {
                Some(r) => format!("Init:{r}"),
                None if ended.signal.unwrap_or(0) != 0 => {
                    format!("Init:Signal:{}", ended.signal.unwrap_or(0))
                }
                None => format!("Init:ExitCode:{}", ended.exit_code),
            },
            (None, Some(r)) if r != "PodInitializing" => format!("Init:{r}"),
            _ => format!("Init:{i}/{inits}"),
        };
        initializing = true;
        break;
    }
    let initialized = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Initialized" && c.status == "True");
    // Until initialized, the regular containers say nothing.
    if !initializing || initialized {
        restarts = 0;
        for c in status.container_statuses.iter().flatten().rev() {
            restarts += c.restart_count;
            if let Some(ended) = c.last_state.as_ref().and_then(|l| l.terminated.as_ref())
                && let Some(at) = &ended.finished_at
                && last_restart.as_ref().is_none_or(|l| l.0 < at.0)
            {
                last_restart = Some(at.clone());
            }
            let state = c.state.clone().unwrap_or_default();
            if let Some(r) = state
                .waiting
                .and_then(|w| w.reason)
                .filter(|r| !r.is_empty())
            {
                reason = r;
            } else if let Some(ended) = state.terminated {
                reason = match ended.reason.filter(|r| !r.is_empty()) {
                    Some(r) => r,
                    None if ended.signal.unwrap_or(0) != 0 => {
                        format!("Signal:{}", ended.signal.unwrap_or(0))
                    }
                    None => format!("ExitCode:{}", ended.exit_code),
                };
            } else if c.ready && state.running.is_some() {
                running = true;
                ready += 1;
            }
        }
    }
    if reason == "Completed" && running {
        let has_ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        reason = if has_ready { "Running" } else { "NotReady" }.into();
    }
    let terminal = matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"));
    if pod.metadata.deletion_timestamp.is_some() && !terminal {
        reason = "Terminating".into();
    }
    let restarts = match (restarts, last_restart) {
        (0, _) | (_, None) => restarts.to_string(),
        (n, Some(at)) => format!("{n} ({} ago)", age(Some(&at))),
    };
    let ip = status.pod_ips.iter().flatten().next().map(|i| i.ip.clone());
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let none = |v: Option<String>| {
        v.filter(|s| !s.is_empty())
            .unwrap_or_else(|| "<none>".into())
    };
    vec![
        json!(pod.metadata.name.clone().unwrap_or_default()),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts),
        json!(age(pod.metadata.creation_timestamp.as_ref())),
        json!(none(ip)),
        json!(none(node)),
        json!(none(status.nominated_node_name.clone())),
        json!("<none>"),
    ]
}

/// Events as `kubectl get events` shows them.
pub(crate) fn events(events: &[&Event], revision: u64, query: &str) -> Value {
    let rows = events
        .iter()
        .map(|e| {
            let first = age(e.first_timestamp.as_ref());
            let mut last = age(e.last_timestamp.as_ref().or(e.first_timestamp.as_ref()));
            let count = e.count.unwrap_or(1);
            if count > 1 {
                last = format!("{last} (x{count} over {first})");
            }
            let object = &e.involved_object;
            let kind = object.kind.clone().unwrap_or_default().to_lowercase();
            let target = match object.name.as_deref() {
                Some(name) if !name.is_empty() => format!("{kind}/{name}"),
                _ => kind,
            };
            let source = e.source.clone().unwrap_or_default();
            let source = [source.component, source.host]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", ");
            let cells = vec![
                json!(last),
                json!(e.type_.clone().unwrap_or_default()),
                json!(e.reason.clone().unwrap_or_default()),
                json!(target),
                json!(object.field_path.clone().unwrap_or_default()),
                json!(source),
                json!(e.message.clone().unwrap_or_default().trim()),
                json!(first),
                json!(count),
                json!(e.metadata.name.clone().unwrap_or_default()),
            ];
            (
                cells,
                serde_json::to_value(e).unwrap_or_default(),
                &e.metadata,
            )
        })
        .collect();
    table(&EVENT, rows, revision, query)
}

/// Namespaces as `kubectl get namespaces` shows them.
pub(crate) fn namespaces(namespaces: &[&Namespace], revision: u64, query: &str) -> Value {
    let rows = namespaces
        .iter()
        .map(|n| {
            let phase = n
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default();
            let cells = vec![
                json!(n.metadata.name.clone().unwrap_or_default()),
                json!(phase),
                json!(age(n.metadata.creation_timestamp.as_ref())),
            ];
            (
                cells,
                serde_json::to_value(n).unwrap_or_default(),
                &n.metadata,
            )
        })
        .collect();
    table(&NAMESPACE, rows, revision, query)
}

/// Secrets as `kubectl get secrets` shows them.
pub(crate) fn secrets(secrets: &[&Secret], revision: u64, query: &str) -> Value {
    let rows = secrets
        .iter()
        .map(|s| {
            let cells = vec![
                json!(s.metadata.name.clone().unwrap_or_default()),
                json!(s.type_.clone().unwrap_or_default()),
                json!(s.data.as_ref().map_or(0, |d| d.len())),
                json!(age(s.metadata.creation_timestamp.as_ref())),
            ];
            (
                cells,
                serde_json::to_value(s).unwrap_or_default(),
                &s.metadata,
            )
        })
        .collect();
    table(&SECRET, rows, revision, query)
}

/// Service accounts as `kubectl get serviceaccounts` shows them.
pub(crate) fn service_accounts(accounts: &[&ServiceAccount], revision: u64, query: &str) -> Value {
    let rows = accounts
        .iter()
        .map(|a| {
            let cells = vec![
                json!(a.metadata.name.clone().unwrap_or_default()),
                json!(a.secrets.as_ref().map_or(0, |s| s.len())),
                json!(age(a.metadata.creation_timestamp.as_ref())),
            ];
            (
                cells,
                serde_json::to_value(a).unwrap_or_default(),
                &a.metadata,
            )
        })
        .collect();
    table(&SERVICE_ACCOUNT, rows, revision, query)
}

/// How long ago `at` was, as kubectl words it (`duration.HumanDuration`); `<unknown>` if never.
fn age(at: Option<&Time>) -> String {
    let Some(at) = at else {
        return "<unknown>".into();
    };
    let now = super::store::now().0.as_second();
    human(now - at.0.as_second())
}

fn human(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    let s = seconds.max(0);
    let (minutes, hours) = (s / 60, s / 3600);
    let with = |big: i64, unit: &str, small: i64, small_unit: &str| {
        if small == 0 {
            format!("{big}{unit}")
        } else {
            format!("{big}{unit}{small}{small_unit}")
        }
    };
    match () {
        _ if s < 120 => format!("{s}s"),
        _ if minutes < 10 => with(minutes, "m", s % 60, "s"),
        _ if minutes < 180 => format!("{minutes}m"),
        _ if hours < 8 => with(hours, "h", minutes % 60, "m"),
        _ if hours < 48 => format!("{hours}h"),
        _ if hours < 24 * 8 => with(hours / 24, "d", hours % 24, "h"),
        _ if hours < 24 * 365 * 2 => format!("{}d", hours / 24),
        _ if hours < 24 * 365 * 8 => with(hours / 24 / 365, "y", (hours / 24) % 365, "d"),
        _ => format!("{}y", hours / 24 / 365),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ages_read_as_kubectl_writes_them() {
        let cases = [
            (5, "5s"),
            (119, "119s"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600 + 60, "3h1m"),
            (9 * 3600, "9h"),
            (50 * 3600, "2d2h"),
        ];
        for (seconds, said) in cases {
            assert_eq!(super::human(seconds), said);
        }
    }
}
