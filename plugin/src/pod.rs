//! `kubectl-debug POD`: find the pod and its container through the Kubernetes API, reach the
//! agent on the pod's node, and carry the terminal there.

use anyhow::{Context as _, anyhow, bail};
use k8s_openapi::api::core::v1::{ContainerState, Pod};
use kdbg_api::TargetRef;
use kdbg_relay::ExitStatus;
use kube::{Api, Client};

use crate::attach;
use crate::cli::{AttachArgs, DebugOpts, Global};
use crate::client::Refused;
use crate::cluster::Cluster;
use crate::pullsecrets::PullSecrets;
/// The annotation kubectl reads for the default container of a pod.
const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";

/// The container to debug, as the cluster describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodTarget {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The container's name.
    pub container: String,
    /// The container's runtime ID.
    pub target: TargetRef,
    /// The node's name.
    pub node: String,
    /// The node's IP, where its agent listens.
    pub host_ip: String,
    /// The pod's `imagePullSecrets`, by name.
    pub image_pull_secrets: Vec<String>,
    /// The pod's service account (`default` when it names none).
    pub service_account: Option<String>,
}

impl PodTarget {
    /// Where a pull for a debug container in this pod may find its credential: the secrets
    /// `asked` for, then the pod's, then its service account's.
    pub fn pull_secrets(&self, client: Client, asked: &[String]) -> PullSecrets {
        PullSecrets::new(
            client,
            &self.namespace,
            asked,
            &self.image_pull_secrets,
            self.service_account.clone(),
        )
    }
}

/// Finds the pod and the container to join. Errors say what is wrong and what to do.
pub async fn resolve(
    client: Client,
    namespace: &str,
    name: &str,
    container: Option<&str>,
) -> anyhow::Result<PodTarget> {
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    let pod = pods
        .get_opt(name)
        .await
        .with_context(|| format!("getting pod \"{name}\" in namespace \"{namespace}\""))?
        .ok_or_else(|| anyhow!("pods \"{name}\" not found in namespace \"{namespace}\""))?;
    target_of(&pod, namespace, name, container)
}

/// The container of `pod` to join; pure, so every refusal is tested without a cluster.
pub fn target_of(
    pod: &Pod,
    namespace: &str,
    name: &str,
    container: Option<&str>,
) -> anyhow::Result<PodTarget> {
    let status = pod.status.clone().unwrap_or_default();
    let phase = status.phase.clone().unwrap_or_else(|| "Unknown".into());
    if phase != "Running" {
        let why = status
            .reason
            .clone()
            .or_else(|| {
                status
                    .conditions
                    .iter()
                    .flatten()
                    .find_map(|c| (c.status == "False").then(|| c.reason.clone()).flatten())
            })
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        let fork = if phase == "Failed" || phase == "Succeeded" {
            "; debug a copy of it whose container holds still with --fork"
        } else {
            ""
        };
        bail!("pod \"{name}\" is {phase}{why}: no debug container can join it until it runs{fork}");
    }
    let chosen = choose(pod, name, container)?;
    let container_status = status
        .container_statuses
        .iter()
        .flatten()
        .find(|s| s.name == chosen)
        .ok_or_else(|| {
            anyhow!(
                "container \"{chosen}\" of pod \"{name}\" has no status yet; wait for it to start"
            )
        })?;
    let running = container_status
        .state
        .as_ref()
        .is_some_and(|s| s.running.is_some());
    if !running {
        let last = container_status
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .map(|t| {
                format!(
                    "; it last exited with code {} ({}), {} restarts",
                    t.exit_code,
                    t.reason.as_deref().unwrap_or("no reason given"),
                    container_status.restart_count
                )
            })
            .unwrap_or_default();
        bail!(
            "container \"{chosen}\" of pod \"{name}\" is {}{last}: a debug container can only join a running container; debug a copy of the pod whose container holds still with --fork",
            describe(container_status.state.as_ref())
        );
    }
    let id = container_status.container_id.as_deref().ok_or_else(|| {
        anyhow!("container \"{chosen}\" of pod \"{name}\" has no containerID yet")
    })?;
    let target: TargetRef = id.parse().map_err(anyhow::Error::msg)?;
    let host_ip = status
        .host_ip
        .clone()
        .ok_or_else(|| anyhow!("pod \"{name}\" has no hostIP: it is not on a node yet"))?;
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_else(|| host_ip.clone());
    let spec = pod.spec.as_ref();
    Ok(PodTarget {
        namespace: namespace.to_owned(),
        pod: name.to_owned(),
        container: chosen,
        target,
        node,
        host_ip,
        image_pull_secrets: spec
            .and_then(|s| s.image_pull_secrets.as_ref())
            .into_iter()
            .flatten()
            .map(|r| r.name.clone())
            .collect(),
        service_account: Some(
            spec.and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".to_owned()),
        ),
    })
}

/// The container of `pod` (named `name`) to debug: `container`, else the one the
/// `kubectl.kubernetes.io/default-container` annotation names, else the first (saying so on
/// stderr, like kubectl, when there are several).
pub fn choose(pod: &Pod, name: &str, container: Option<&str>) -> anyhow::Result<String> {
    let names: Vec<String> = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| c.name.clone())
        .collect();
    let chosen = match container {
        Some(c) => {
            if !names.iter().any(|n| n == c) {
                bail!(
                    "container \"{c}\" not found in pod \"{name}\"; its containers: {}",
                    names.join(", ")
                );
            }
            c.to_owned()
        }
        None => {
            let annotated = pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CONTAINER_ANNOTATION))
                .filter(|c| names.contains(c));
            let first = annotated
                .or(names.first())
                .ok_or_else(|| anyhow!("pod \"{name}\" has no containers"))?
                .clone();
            if names.len() > 1 && annotated.is_none() {
                eprintln!(
                    "Defaulted container \"{first}\" out of: {}",
                    names.join(", ")
                );
            }
            first
        }
    };
    Ok(chosen)
}

fn describe(state: Option<&ContainerState>) -> String {
    let Some(state) = state else {
        return "in an unknown state".into();
    };
    if let Some(w) = &state.waiting {
        return format!(
            "waiting ({})",
            w.reason.as_deref().unwrap_or("no reason given")
        );
    }
    if let Some(t) = &state.terminated {
        return format!(
            "terminated ({}, exit code {})",
            t.reason.as_deref().unwrap_or("no reason given"),
            t.exit_code
        );
    }
    "in an unknown state".into()
}

/// A pod name as the user wrote it: `NAME` or `pod/NAME` (for pods named like a verb).
pub fn pod_name(arg: &str) -> &str {
    arg.strip_prefix("pod/")
        .or_else(|| arg.strip_prefix("pods/"))
        .unwrap_or(arg)
}

/// Runs `kubectl-debug POD`.
pub async fn run(
    global: &Global,
    pod: &str,
    container: Option<&str>,
    opts: DebugOpts,
) -> anyhow::Result<ExitStatus> {
    if let Some(node) = crate::node::named(pod) {
        return crate::node::run(global, node, container, opts).await;
    }
    let pod = pod_name(pod);
    let cluster = Cluster::connect(global).await?;
    let (found, forked) = if opts.fork.fork {
        let forked = crate::fork::resolve(&cluster, global, pod, container, &opts).await?;
        (forked.copy.clone(), Some(forked))
    } else {
        let found = resolve(cluster.client.clone(), &cluster.namespace, pod, container).await?;
        (found, None)
    };
    let record_local = opts.record.record_local.clone();
    let asked = opts.image_pull_secrets.clone();
    let mut request = opts.request(found.target.clone());
    request.pod_namespace = Some(found.namespace.clone());
    request.pod_name = Some(found.pod.clone());
    request.pod_container = Some(found.container.clone());
    let agent = cluster
        .agent_on(&found.node, &found.host_ip, Some(found.target.kind))
        .await?
        .with_pull_secrets(found.pull_secrets(cluster.client.clone(), &asked));
    if let Some(forked) = &forked {
        // Once the agent is reached: it reads the image's config when the pod sets no command.
        forked.say_original(&agent).await;
    }
    let debugged = attach::debug(
        &agent,
        request,
        record_local.as_deref(),
        &attach::kept_in_pod(&found.pod),
    )
    .await;
    match debugged {
        // It stopped between the pod's status and the agent: what the pod says now.
        Err(e) if forked.is_none() && Refused::target_not_running(&e) => {
            let now = resolve(
                cluster.client.clone(),
                &found.namespace,
                &found.pod,
                Some(&found.container),
            )
            .await;
            Err(stopped_meanwhile(&found, now, e))
        }
        other => other,
    }
}

/// The error for target `found`, which the agent found not running, given what its pod
/// says `now`: the pod's own reason when it has one (a crash loop, with its last exit), else
/// the agent's; both with the way out.
fn stopped_meanwhile(
    found: &PodTarget,
    now: anyhow::Result<PodTarget>,
    agent_said: anyhow::Error,
) -> anyhow::Error {
    let (container, pod) = (&found.container, &found.pod);
    match now {
        // The pod's status says why, and what to do.
        Err(now) => now,
        Ok(again) if again.target != found.target => anyhow!(
            "container \"{container}\" of pod \"{pod}\" restarted while its debug container was being made (it may be crash-looping): run kubectl-debug again, or debug a copy of the pod whose container holds still with --fork"
        ),
        Ok(_) => anyhow!(
            "{agent_said:#} (container \"{container}\" of pod \"{pod}\"; its pod's status has not caught up): run kubectl-debug again once it runs, or if it keeps stopping, debug a copy of the pod whose container holds still with --fork"
        ),
    }
}

/// Where a pod is: what the verbs that reach its node's agent need of it.
#[derive(Debug, Clone)]
pub struct Home {
    /// Its node's name.
    pub node: String,
    /// Its node's IP.
    pub ip: String,
    /// The runtime of its containers, when their IDs say (for an agent started on demand).
    pub runtime: Option<kdbg_api::RuntimeKind>,
    /// The pod it is a copy of, if `--fork` made it.
    pub copy_of: Option<String>,
}

/// Where pod `name` is (it may not be running, and its containers may be gone: a retained
/// debug container outlives them).
pub async fn node_of(client: Client, namespace: &str, name: &str) -> anyhow::Result<Home> {
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    let pod = pods
        .get_opt(name)
        .await
        .with_context(|| format!("getting pod \"{name}\" in namespace \"{namespace}\""))?
        .ok_or_else(|| anyhow!("pods \"{name}\" not found in namespace \"{namespace}\""))?;
    let host_ip = pod
        .status
        .as_ref()
        .and_then(|s| s.host_ip.clone())
        .ok_or_else(|| anyhow!("pod \"{name}\" has no hostIP: it is not on a node"))?;
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_else(|| host_ip.clone());
    let runtime = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.container_id.as_deref())
        .find_map(|id| id.parse::<kdbg_api::TargetRef>().ok())
        .map(|t| t.kind);
    Ok(Home {
        node,
        ip: host_ip,
        runtime,
        copy_of: crate::fork::copy_of(&pod),
    })
}

/// Runs `kubectl-debug attach POD NAME`.
pub async fn attach(global: &Global, args: AttachArgs) -> anyhow::Result<ExitStatus> {
    if let Some(node) = crate::node::named(&args.pod) {
        let node = node.to_owned();
        return crate::node::attach(global, &node, args).await;
    }
    let pod = pod_name(&args.pod);
    let cluster = Cluster::connect(global).await?;
    let namespace = cluster.namespace.clone();
    let home = node_of(cluster.client.clone(), &namespace, pod).await?;
    let record_local = args.session.record.record_local.clone();
    let mut request = args.session.request(&args.name);
    request.pod_namespace = Some(namespace);
    request.pod_name = Some(pod.to_owned());
    let agent = cluster.agent_on(&home.node, &home.ip, home.runtime).await?;
    attach::debug(
        &agent,
        request,
        record_local.as_deref(),
        &attach::kept_in_pod(pod),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    fn running_pod() -> serde_json::Value {
        serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "prod"},
            "spec": {"nodeName": "node-a", "containers": [{"name": "app"}, {"name": "sidecar"}]},
            "status": {
                "phase": "Running", "hostIP": "10.0.0.7",
                "containerStatuses": [
                    {"name": "app", "ready": true, "restartCount": 0, "image": "i", "imageID": "",
                     "containerID": "docker://abc", "state": {"running": {}}},
                    {"name": "sidecar", "ready": false, "restartCount": 3, "image": "i", "imageID": "",
                     "containerID": "docker://def",
                     "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
                ]
            }
        })
    }

    #[test]
    fn the_first_container_is_the_default() {
        let t = target_of(&pod(running_pod()), "prod", "web-1", None).unwrap();
        assert_eq!(t.container, "app");
        assert_eq!(t.target.to_string(), "docker://abc");
        assert_eq!(
            (t.node.as_str(), t.host_ip.as_str()),
            ("node-a", "10.0.0.7")
        );
    }

    #[test]
    fn refusals_name_the_object_and_the_reason() {
        let mut pending = running_pod();
        pending["status"]["phase"] = "Pending".into();
        pending["status"]["conditions"] = serde_json::json!([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]);
        let err = target_of(&pod(pending), "prod", "web-1", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "pod \"web-1\" is Pending (Unschedulable): no debug container can join it until it runs"
        );
        let err = target_of(&pod(running_pod()), "prod", "web-1", Some("db")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "container \"db\" not found in pod \"web-1\"; its containers: app, sidecar"
        );
        let mut crashing = running_pod();
        crashing["status"]["containerStatuses"][1]["lastState"] =
            serde_json::json!({"terminated": {"exitCode": 1, "reason": "Error"}});
        crashing["status"]["containerStatuses"][1]["restartCount"] = 4.into();
        let err = target_of(&pod(crashing), "prod", "web-1", Some("sidecar")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "container \"sidecar\" of pod \"web-1\" is waiting (CrashLoopBackOff); it last exited with code 1 (Error), 4 restarts: a debug container can only join a running container; debug a copy of the pod whose container holds still with --fork"
        );
        let mut failed = running_pod();
        failed["status"]["phase"] = "Failed".into();
        let err = target_of(&pod(failed), "prod", "web-1", None).unwrap_err();
        assert!(err.to_string().ends_with("with --fork"), "{err}");
    }

    #[test]
    fn a_target_stopped_after_it_was_found_is_explained_by_its_pod() {
        let found = target_of(&pod(running_pod()), "prod", "web-1", None).unwrap();
        let agent_said = || {
            anyhow!(
                "target container docker://abc is exited, not running: a debug container can only join a running container"
            )
        };
        // The pod says why now: its message, with --fork.
        let mut crashing = running_pod();
        crashing["status"]["containerStatuses"][0]["state"] =
            serde_json::json!({"waiting": {"reason": "CrashLoopBackOff"}});
        let now = target_of(&pod(crashing), "prod", "web-1", Some("app"));
        let err = stopped_meanwhile(&found, now, agent_said()).to_string();
        assert!(
            err.starts_with("container \"app\" of pod \"web-1\" is waiting (CrashLoopBackOff)")
                && err.ends_with("with --fork"),
            "{err}"
        );
        // It runs again, as another container: it restarted.
        let mut restarted = running_pod();
        restarted["status"]["containerStatuses"][0]["containerID"] = "docker://abd".into();
        let now = target_of(&pod(restarted), "prod", "web-1", Some("app"));
        let err = stopped_meanwhile(&found, now, agent_said()).to_string();
        assert!(
            err.contains("\"app\" of pod \"web-1\" restarted") && err.ends_with("with --fork"),
            "{err}"
        );
        // The pod has not caught up: the agent's words, the object and the way out.
        let now = target_of(&pod(running_pod()), "prod", "web-1", Some("app"));
        let err = stopped_meanwhile(&found, now, agent_said()).to_string();
        assert!(
            err.starts_with("target container docker://abc is exited")
                && err.contains("(container \"app\" of pod \"web-1\";")
                && err.ends_with("with --fork"),
            "{err}"
        );
    }

    #[test]
    fn the_default_container_annotation_is_honoured() {
        let mut annotated = running_pod();
        annotated["metadata"]["annotations"] =
            serde_json::json!({DEFAULT_CONTAINER_ANNOTATION: "sidecar"});
        let err = target_of(&pod(annotated), "prod", "web-1", None).unwrap_err();
        assert!(err.to_string().contains("\"sidecar\""), "{err}");
    }
}
