//! A run pod's status as the kubelet reports it: container statuses, the phase by the
//! kubelet's own rules (`getPhase`), conditions with their transition times, IPs.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::kubelet::View;
use super::store::now;

/// The status of the pod `view` shows.
pub(crate) fn of(view: View<'_>) -> PodStatus {
    let statuses: Vec<ContainerStatus> = view
        .containers
        .iter()
        .map(|c| {
            let running = c.state.running.is_some();
            ContainerStatus {
                name: c.spec.name.clone(),
                image: c.spec.image.clone().unwrap_or_default(),
                image_id: c.image_id.to_owned(),
                container_id: c.id.map(|id| format!("docker://{id}")),
                ready: running,
                started: Some(running),
                restart_count: c.restarts,
                state: Some(c.state.clone()),
                last_state: Some(ContainerState {
                    terminated: c.last.cloned(),
                    ..ContainerState::default()
                }),
                ..ContainerStatus::default()
            }
        })
        .collect();
    let restart_policy = view
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    let phase = phase(&statuses, restart_policy);
    let unready: Vec<&str> = statuses
        .iter()
        .filter(|s| !s.ready)
        .map(|s| s.name.as_str())
        .collect();
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let conditions = view.conditions;
    let mut condition = |type_: &'static str, status: bool, why: Option<(&str, String)>| {
        let entry = conditions.entry(type_).or_insert_with(|| (status, now()));
        if entry.0 != status {
            *entry = (status, now());
        }
        let (reason, message) = why.filter(|_| !status).unzip();
        PodCondition {
            type_: type_.to_owned(),
            status: if status { "True" } else { "False" }.to_owned(),
            last_transition_time: Some(entry.1.clone()),
            reason: reason.map(str::to_owned),
            message,
            ..PodCondition::default()
        }
    };
    let not_ready = if terminal {
        ("PodCompleted", String::new())
    } else {
        (
            "ContainersNotReady",
            format!("containers with unready status: [{}]", unready.join(" ")),
        )
    };
    let ready = unready.is_empty() && !statuses.is_empty();
    let conditions = vec![
        condition("PodReadyToStartContainers", view.sandbox, None),
        condition("Initialized", true, None),
        condition("Ready", ready, Some(not_ready.clone())),
        condition("ContainersReady", ready, Some(not_ready)),
        condition("PodScheduled", true, None),
    ];
    let conditions = conditions
        .into_iter()
        .map(|mut c| {
            if c.message.as_deref() == Some("") {
                c.message = None;
            }
            c
        })
        .collect();
    PodStatus {
        phase: Some(phase.to_owned()),
        conditions: Some(conditions),
        host_ip: Some(super::NODE_IP.to_owned()),
        host_ips: Some(vec![HostIP {
            ip: super::NODE_IP.to_owned(),
        }]),
        pod_ip: view.pod_ip.map(str::to_owned),
        pod_ips: view.pod_ip.map(|ip| vec![PodIP { ip: ip.to_owned() }]),
        start_time: view.start_time.cloned(),
        container_statuses: Some(statuses),
        qos_class: Some(qos_class(view.pod)),
        ..PodStatus::default()
    }
}

/// The kubelet's `getPhase` over regular containers.
fn phase(statuses: &[ContainerStatus], restart_policy: &str) -> &'static str {
    let (mut waiting, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in statuses {
        let state = s.state.clone().unwrap_or_default();
        if state.running.is_some() {
            running += 1;
        } else if let Some(ended) = &state.terminated {
            stopped += 1;
            if ended.exit_code == 0 {
                succeeded += 1;
            }
        } else if s
            .last_state
            .as_ref()
            .is_some_and(|l| l.terminated.is_some())
        {
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    match () {
        _ if waiting > 0 => "Pending",
        _ if running > 0 => "Running",
        _ if stopped > 0 && restart_policy == "Always" => "Running",
        _ if stopped > 0 && stopped == succeeded => "Succeeded",
        _ if stopped > 0 && restart_policy == "Never" => "Failed",
        _ if stopped > 0 => "Running",
        _ => "Pending",
    }
}

/// BestEffort without requests or limits, Guaranteed when every container's limits equal
/// its requests (or stand for them), else Burstable.
pub(crate) fn qos_class(pod: &k8s_openapi::api::core::v1::Pod) -> String {
    let containers = pod.spec.iter().flat_map(|s| &s.containers);
    let resources: Vec<_> = containers
        .map(|c| c.resources.clone().unwrap_or_default())
        .collect();
    let none =
        |r: &Option<std::collections::BTreeMap<_, _>>| r.as_ref().is_none_or(|m| m.is_empty());
    if resources
        .iter()
        .all(|r| none(&r.requests) && none(&r.limits))
    {
        return "BestEffort".into();
    }
    let guaranteed = resources.iter().all(|r| {
        let limits = r.limits.clone().unwrap_or_default();
        let requests = r.requests.clone().unwrap_or_default();
        ["cpu", "memory"].iter().all(|k| {
            limits.contains_key(*k) && requests.get(*k).is_none_or(|q| Some(q) == limits.get(*k))
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
    .into()
}

/// Conditions' last transition times, by type.
pub(crate) type Transitions = HashMap<&'static str, (bool, Time)>;

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: serde_json::Value, last: serde_json::Value) -> ContainerStatus {
        serde_json::from_value(serde_json::json!({
            "name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": state, "lastState": last
        }))
        .unwrap()
    }

    #[test]
    fn the_phase_follows_the_kubelets_rules() {
        let running = status(serde_json::json!({"running": {}}), serde_json::json!({}));
        let ok = status(
            serde_json::json!({"terminated": {"exitCode": 0}}),
            serde_json::json!({}),
        );
        let bad = status(
            serde_json::json!({"terminated": {"exitCode": 3}}),
            serde_json::json!({}),
        );
        let creating = status(
            serde_json::json!({"waiting": {"reason": "ContainerCreating"}}),
            serde_json::json!({}),
        );
        let backoff = status(
            serde_json::json!({"waiting": {"reason": "CrashLoopBackOff"}}),
            serde_json::json!({"terminated": {"exitCode": 1}}),
        );
        assert_eq!(phase(&[creating], "Always"), "Pending");
        assert_eq!(phase(&[running.clone(), ok.clone()], "Never"), "Running");
        assert_eq!(phase(std::slice::from_ref(&ok), "Never"), "Succeeded");
        assert_eq!(phase(&[ok, bad.clone()], "Never"), "Failed");
        assert_eq!(phase(std::slice::from_ref(&bad), "OnFailure"), "Running");
        assert_eq!(phase(&[bad], "Always"), "Running");
        assert_eq!(phase(&[backoff], "Always"), "Running");
    }
}
