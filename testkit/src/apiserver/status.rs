//! A run pod's status as the kubelet reports it: init and regular container statuses, the
//! phase by the kubelet's own rules (`getPhase`), conditions with their transition times, IPs.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::kubelet::{ContainerView, View};
use super::store::now;

/// The status of the pod `view` shows.
pub(crate) fn of(view: View<'_>) -> PodStatus {
    let init = statuses(&view.init_containers, true, view.scheme);
    let statuses = statuses(&view.containers, false, view.scheme);
    let restart_policy = view
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    let phase = phase(&init, &statuses, restart_policy);
    let unready: Vec<&str> = statuses
        .iter()
        .filter(|s| !s.ready)
        .map(|s| s.name.as_str())
        .collect();
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
    let not_ready = match phase {
        "Succeeded" => ("PodCompleted", String::new()),
        "Failed" => ("PodFailed", String::new()),
        _ => (
            "ContainersNotReady",
            format!("containers with unready status: [{}]", unready.join(" ")),
        ),
    };
    let ready = unready.is_empty() && !statuses.is_empty();
    let conditions = vec![
        condition("PodReadyToStartContainers", view.sandbox, None),
        initialized(&init, &statuses, &mut condition),
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
        init_container_statuses: (!init.is_empty()).then_some(init),
        container_statuses: Some(statuses),
        qos_class: Some(qos_class(view.pod)),
        ..PodStatus::default()
    }
}

/// The statuses of `containers`, init containers if `init`: one of those is ready once it
/// completed (the prober manager's rule), a regular one while it runs; their IDs under
/// `scheme` (`docker`, `containerd`).
fn statuses(containers: &[ContainerView<'_>], init: bool, scheme: &str) -> Vec<ContainerStatus> {
    containers
        .iter()
        .map(|c| {
            let running = c.state.running.is_some();
            let completed = c
                .state
                .terminated
                .as_ref()
                .is_some_and(|t| t.exit_code == 0);
            ContainerStatus {
                name: c.spec.name.clone(),
                image: c.spec.image.clone().unwrap_or_default(),
                image_id: c.image_id.to_owned(),
                container_id: c.id.map(|id| format!("{scheme}://{id}")),
                ready: if init { completed } else { running },
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
        .collect()
}

/// The Initialized condition, by the kubelet's `GeneratePodInitializedCondition`: true once
/// every init container completed, or any regular container started.
fn initialized(
    init: &[ContainerStatus],
    statuses: &[ContainerStatus],
    condition: &mut impl FnMut(&'static str, bool, Option<(&str, String)>) -> PodCondition,
) -> PodCondition {
    let incomplete: Vec<&str> = init
        .iter()
        .filter(|s| {
            let ended = s.state.as_ref().and_then(|st| st.terminated.as_ref());
            ended.is_none_or(|t| t.exit_code != 0)
        })
        .map(|s| s.name.as_str())
        .collect();
    let started = statuses.iter().any(|s| {
        let state = s.state.clone().unwrap_or_default();
        let last = s.last_state.as_ref().and_then(|l| l.terminated.as_ref());
        state.running.is_some() || state.terminated.is_some() || last.is_some()
    });
    let message = format!(
        "containers with incomplete status: [{}]",
        incomplete.join(" ")
    );
    condition(
        "Initialized",
        incomplete.is_empty() || started,
        Some(("ContainersNotInitialized", message)),
    )
}

/// How a container stands, for [`phase`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    Waiting,
    Running,
    /// Ended (now, or before its restart): with exit code 0?
    Stopped {
        succeeded: bool,
    },
}

fn standing(s: &ContainerStatus) -> Standing {
    let state = s.state.clone().unwrap_or_default();
    let last = s.last_state.as_ref().and_then(|l| l.terminated.as_ref());
    if state.running.is_some() {
        Standing::Running
    } else if let Some(ended) = &state.terminated {
        Standing::Stopped {
            succeeded: ended.exit_code == 0,
        }
    } else if let Some(ended) = last {
        Standing::Stopped {
            succeeded: ended.exit_code == 0,
        }
    } else {
        Standing::Waiting
    }
}

/// The kubelet's `getPhase`: over the init containers (one that failed fails a pod that is
/// never restarted; one yet to complete keeps it Pending), then the regular ones.
fn phase(
    init: &[ContainerStatus],
    statuses: &[ContainerStatus],
    restart_policy: &str,
) -> &'static str {
    let (mut pending_init, mut failed_init) = (0, 0);
    for s in init {
        match standing(s) {
            Standing::Stopped { succeeded: true } => {}
            Standing::Stopped { succeeded: false } => failed_init += 1,
            Standing::Waiting | Standing::Running => pending_init += 1,
        }
    }
    let (mut waiting, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in statuses {
        match standing(s) {
            Standing::Waiting => waiting += 1,
            Standing::Running => running += 1,
            Standing::Stopped { succeeded: ok } => {
                stopped += 1;
                // A container waiting to restart counts as stopped, not as succeeded.
                let now = s.state.as_ref().is_some_and(|st| st.terminated.is_some());
                if ok && now {
                    succeeded += 1;
                }
            }
        }
    }
    match () {
        _ if failed_init > 0 && restart_policy == "Never" => "Failed",
        _ if pending_init > 0 => "Pending",
        _ if waiting > 0 => "Pending",
        _ if running > 0 => "Running",
        _ if stopped > 0 && restart_policy == "Always" => "Running",
        _ if stopped > 0 && stopped == succeeded => "Succeeded",
        _ if stopped > 0 && restart_policy == "Never" => "Failed",
        _ if stopped > 0 => "Running",
        _ => "Pending",
    }
}

/// BestEffort without requests or limits, Guaranteed when every container's (init ones'
/// too) limits equal its requests (or stand for them), else Burstable.
pub(crate) fn qos_class(pod: &k8s_openapi::api::core::v1::Pod) -> String {
    let containers = pod
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers));
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
        let one = std::slice::from_ref;
        assert_eq!(phase(&[], one(&creating), "Always"), "Pending");
        assert_eq!(
            phase(&[], &[running.clone(), ok.clone()], "Never"),
            "Running"
        );
        assert_eq!(phase(&[], one(&ok), "Never"), "Succeeded");
        assert_eq!(phase(&[], &[ok.clone(), bad.clone()], "Never"), "Failed");
        assert_eq!(phase(&[], one(&bad), "OnFailure"), "Running");
        assert_eq!(phase(&[], one(&bad), "Always"), "Running");
        assert_eq!(phase(&[], one(&backoff), "Always"), "Running");
        // Init containers: running or yet to run, the pod is Pending; one failed fails a pod
        // never restarted, and keeps another Pending while it is retried.
        let initializing = status(
            serde_json::json!({"waiting": {"reason": "PodInitializing"}}),
            serde_json::json!({}),
        );
        assert_eq!(
            phase(one(&running), one(&initializing), "Always"),
            "Pending"
        );
        assert_eq!(
            phase(
                &[ok.clone(), initializing.clone()],
                one(&initializing),
                "Never"
            ),
            "Pending"
        );
        assert_eq!(phase(one(&bad), one(&initializing), "Never"), "Failed");
        assert_eq!(
            phase(one(&backoff), one(&initializing), "OnFailure"),
            "Pending"
        );
        assert_eq!(phase(one(&ok), one(&running), "Never"), "Running");
    }
}
