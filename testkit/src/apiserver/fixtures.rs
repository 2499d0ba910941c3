//! Pods a test registers as they would be in a cluster, pointing at containers it started:
//! the agent DaemonSet's pod and Running pods on the stand-in's node.

use k8s_openapi::api::core::v1::Pod;

use super::NODE;

/// The namespace and labels of kubectl-debug's agent DaemonSet, as `deploy/` makes them.
pub const AGENT_NAMESPACE: &str = "kubectl-debug";
/// See [`AGENT_NAMESPACE`].
pub const AGENT_LABEL: (&str, &str) = ("app.kubernetes.io/name", "kubectl-debug-agent");

/// The agent pod of node `node`, whose pod IP is `ip` (port-forwards reach the agent there),
/// ready or not.
pub fn agent_pod(node: &str, ip: &str, ready: bool) -> Pod {
    let mut pod = pod_on_node(
        AGENT_NAMESPACE,
        &format!("kubectl-debug-agent-{node}"),
        &[("agent", "docker://stand-in-agent", ready)],
        node,
        ip,
    );
    pod.metadata.labels = Some([(AGENT_LABEL.0.to_owned(), AGENT_LABEL.1.to_owned())].into());
    if !ready {
        let status = pod.status.as_mut().expect("a status");
        status.phase = Some("Pending".into());
        status.conditions = Some(vec![serde_json::from_value(serde_json::json!(
            {"type": "Ready", "status": "False", "reason": "ContainersNotReady", "message": "containers with unready status: [agent]"}
        )).expect("a condition")]);
    }
    pod
}

/// A Running pod on node `stand-in-node` (hostIP 127.0.0.1) whose containers are the given
/// `(name, runtime ID URL, running)` triples.
pub fn running_pod(namespace: &str, name: &str, containers: &[(&str, &str, bool)]) -> Pod {
    pod_on_node(namespace, name, containers, NODE, super::NODE_IP)
}

/// The same on node `node` whose IP is `host_ip`.
pub fn pod_on_node(
    namespace: &str,
    name: &str,
    containers: &[(&str, &str, bool)],
    node: &str,
    host_ip: &str,
) -> Pod {
    let specs: Vec<_> = containers
        .iter()
        .map(|(c, _, _)| serde_json::json!({"name": c, "image": "stand-in"}))
        .collect();
    let statuses: Vec<_> = containers
        .iter()
        .map(|(c, id, running)| {
            let state = if *running {
                serde_json::json!({"running": {"startedAt": "2026-11-27T00:00:00Z"}})
            } else {
                serde_json::json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off restarting"}})
            };
            serde_json::json!({
                "name": c, "containerID": id, "image": "stand-in", "imageID": "",
                "ready": running, "restartCount": 0, "started": running, "state": state
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{namespace}-{name}")},
        "spec": {"nodeName": node, "containers": specs},
        "status": {
            "phase": "Running", "hostIP": host_ip, "podIP": host_ip,
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": statuses
        }
    }))
    .expect("a valid Pod")
}
