//! On-demand agents ("agentless mode"): with no agent on the target's node (or with
//! `--agentless=always`), the plugin starts one as a pod pinned to that node for its
//! sessions, reaches it through the API server's port-forward, and deletes it when done.
//!
//! The pod is built from the DaemonSet's own manifest (`deploy/base/`, embedded here): the
//! same image, host PID namespace, runtime socket, shared paths and security context, so an
//! on-demand agent is never more powerful than the DaemonSet's. What differs: it runs on one
//! node (`nodeName`), once (`restartPolicy: Never`), without a service account, ports or
//! probes; it listens on its pod's loopback only (only a port-forward, which the API server
//! authorises as `pods/portforward` on it, reaches it); it admits one bearer token, whose
//! SHA-256 alone is in its spec; and it exits by itself a minute after its last session
//! (`lifecycle.exitWhenIdle`), removing its debug containers; a plugin killed with SIGKILL
//! leaves its pod to the plugin's watchdog ([`crate::cleanup`]), which deletes it.

use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kdbg_api::RuntimeKind;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};

use crate::client::{AgentClient, Transport};

mod spec;

pub use spec::*;

/// The label every agent pod carries (the DaemonSet's selector).
pub const NAME_LABEL: (&str, &str) = ("app.kubernetes.io/name", "kubectl-debug-agent");
/// The label that tells on-demand agents from the DaemonSet's.
pub const COMPONENT_LABEL: (&str, &str) = ("app.kubernetes.io/component", "on-demand");
/// The annotation naming who started an on-demand agent.
pub const USER_ANNOTATION: &str = "debug.kubectl-debug.io/user";
/// The port an on-demand agent listens on, on its pod's loopback.
pub const PORT: u16 = kdbg_api::DEFAULT_PORT;
/// How long an on-demand agent waits after its last session before it exits, unless the
/// plugin configuration says (`agentExitWhenIdle`).
pub const EXIT_WHEN_IDLE: Duration = Duration::from_secs(60);

/// A fresh token and its SHA-256 (hex): the token is presented, the hash goes in the spec.
fn token() -> anyhow::Result<(String, String)> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow!("the system's random source failed"))?;
    let token = hex(&bytes);
    let hash = hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref());
    Ok((token, hash))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Five random lowercase letters and digits, for a pod's name.
pub fn suffix() -> String {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 5];
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    bytes
        .iter()
        .map(|b| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[usize::from(*b) % 36]))
        .collect()
}

/// Who the user is, as far as the kubeconfig says (its current context's user entry), for
/// the pod's annotation and the agent's audit lines.
pub fn user_name(kubeconfig: Option<&std::path::Path>, context: Option<&str>) -> String {
    let config = match kubeconfig {
        Some(path) => kube::config::Kubeconfig::read_from(path).ok(),
        None => kube::config::Kubeconfig::read().ok(),
    };
    config
        .and_then(|c| {
            let name = context
                .map(str::to_owned)
                .or_else(|| c.current_context.clone())?;
            c.contexts
                .iter()
                .find(|n| n.name == name)
                .and_then(|n| n.context.as_ref())
                .and_then(|c| c.user.clone())
        })
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// Starts an on-demand agent on `node` and returns its client, once it serves.
pub async fn start(
    client: kube::Client,
    namespace: &str,
    node: &str,
    hint: Option<RuntimeKind>,
    settings: &Settings,
    user: &str,
) -> anyhow::Result<AgentClient> {
    let began = Instant::now();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    remove_finished(&pods).await;
    let nodes: Api<Node> = Api::all(client.clone());
    let version = nodes.get_opt(node).await.ok().flatten().and_then(|n| {
        n.status
            .and_then(|s| s.node_info)
            .map(|i| i.container_runtime_version)
    });
    let runtime = NodeRuntime::of(version.as_deref(), hint);
    let (token, hash) = token()?;
    let name = pod_name(node, &suffix());
    let spec = pod(settings, namespace, &name, node, runtime, &hash, user)?;
    let image = spec
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let created = pods
        .create(&PostParams::default(), &spec)
        .await
        .map_err(|e| create_refused(e, namespace))?;
    crate::cleanup::remember(pods.clone(), &created, "the on-demand agent's pod");
    tracing::info!(
        pod = name.as_str(),
        ms = began.elapsed().as_millis() as u64,
        "on-demand agent: pod created"
    );
    eprintln!("starting an agent on node {node} (pod {namespace}/{name})...");
    let agent = AgentClient::new(Transport::PortForward {
        pods: Box::new(pods.clone()),
        pod: name.clone(),
        port: PORT,
        node: node.to_owned(),
    })
    .with_access(Some(token), None);
    match wait(
        &pods,
        &client,
        namespace,
        &name,
        &image,
        &agent,
        settings.start_timeout,
    )
    .await
    {
        Ok(()) => Ok(agent),
        Err(e) => {
            crate::cleanup::delete_now(&pods, namespace, &name).await;
            Err(e)
        }
    }
}

/// Waits until the pod's agent answers, or says why it will not.
async fn wait(
    pods: &Api<Pod>,
    client: &kube::Client,
    namespace: &str,
    name: &str,
    image: &str,
    agent: &AgentClient,
    limit: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let pod = pods
            .get_opt(name)
            .await
            .with_context(|| format!("reading the on-demand agent's pod {namespace}/{name}"))?
            .ok_or_else(|| {
                anyhow!("the on-demand agent's pod {namespace}/{name} was deleted while it started")
            })?;
        let status = pod.status.unwrap_or_default();
        let phase = status.phase.unwrap_or_else(|| "Pending".into());
        let container = status
            .container_statuses
            .iter()
            .flatten()
            .next()
            .and_then(|c| c.state.clone());
        if let Some(waiting) = container.as_ref().and_then(|s| s.waiting.as_ref()) {
            let reason = waiting.reason.clone().unwrap_or_default();
            if matches!(
                reason.as_str(),
                "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull"
            ) {
                let said = warning_event(client, namespace, name).await;
                bail!(
                    "the on-demand agent's image {image} could not be pulled on the node ({reason}{}); push it where the nodes can pull it, or name another with --agent-image (plugin config agentImage)",
                    said.map(|s| format!(": {s}")).unwrap_or_default()
                );
            }
            if reason == "CreateContainerConfigError" || reason == "CreateContainerError" {
                bail!(
                    "the on-demand agent's container could not be created ({reason}: {}); see kubectl -n {namespace} describe pod {name}",
                    waiting.message.clone().unwrap_or_default()
                );
            }
        }
        if phase == "Failed" || phase == "Succeeded" {
            let why = container
                .and_then(|s| s.terminated)
                .map(|t| {
                    format!(
                        " (exit code {}{})",
                        t.exit_code,
                        t.message.map(|m| format!(": {m}")).unwrap_or_default()
                    )
                })
                .unwrap_or_default();
            bail!(
                "the on-demand agent's pod {namespace}/{name} ended before it served: {phase}{why}; see kubectl -n {namespace} logs {name}"
            );
        }
        if phase != last {
            tracing::info!(
                pod = name,
                phase,
                ms = started.elapsed().as_millis() as u64,
                "on-demand agent: pod phase"
            );
            last = phase;
        }
        if last == "Running" && agent.version().await.is_ok() {
            tracing::info!(
                pod = name,
                ms = started.elapsed().as_millis() as u64,
                "on-demand agent: serving"
            );
            return Ok(());
        }
        if started.elapsed() >= limit {
            let said = warning_event(client, namespace, name).await;
            bail!(
                "the on-demand agent's pod {namespace}/{name} did not serve within {limit:?} (--agent-start-timeout): it is {last}{}; see kubectl -n {namespace} describe pod {name}",
                said.map(|s| format!(" ({s})")).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The pod's latest Warning event, as `kubectl describe` shows it.
pub async fn warning_event(client: &kube::Client, namespace: &str, name: &str) -> Option<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let listed = events
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .ok()?;
    listed
        .items
        .into_iter()
        .rfind(|e| e.type_.as_deref() == Some("Warning"))
        .map(|e| {
            format!(
                "{}: {}",
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default()
            )
        })
}

/// Why the API server refused the pod, with the way out.
fn create_refused(e: kube::Error, namespace: &str) -> anyhow::Error {
    let kube::Error::Api(status) = &e else {
        return anyhow::Error::new(e).context(format!(
            "creating an on-demand agent pod in namespace {namespace}"
        ));
    };
    let message = status.message.clone();
    let hint = if status.code == 404 && message.contains("namespaces") {
        format!(
            "namespace {namespace} does not exist: create it with kubectl apply -k deploy/agentless (from kubectl-debug's source), or name another with --agent-namespace"
        )
    } else if message.contains("PodSecurity") {
        format!(
            "namespace {namespace} does not admit privileged pods: label it pod-security.kubernetes.io/enforce=privileged (deploy/agentless does)"
        )
    } else if status.code == 403 {
        format!(
            "you may not start an on-demand agent: it needs create, get and delete on pods and create on pods/portforward in namespace {namespace} (the Role in deploy/agentless); or ask for the agent DaemonSet"
        )
    } else {
        format!("the API server refused the on-demand agent's pod in namespace {namespace}")
    };
    anyhow!("{hint} ({message})")
}

/// Deletes finished on-demand pods of earlier runs (best effort: another user's may not be
/// ours to delete).
async fn remove_finished(pods: &Api<Pod>) {
    let selector = format!(
        "{}={},{}={}",
        NAME_LABEL.0, NAME_LABEL.1, COMPONENT_LABEL.0, COMPONENT_LABEL.1
    );
    let Ok(listed) = pods.list(&ListParams::default().labels(&selector)).await else {
        return;
    };
    for pod in listed.items {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed"))
            && let Some(name) = pod.metadata.name
        {
            let _ = pods.delete(&name, &DeleteParams::default()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            start_timeout: Duration::from_secs(120),
            exit_when_idle: EXIT_WHEN_IDLE,
            ..Settings::default()
        }
    }

    #[test]
    fn names_fit_kubernetes() {
        let long = "ip-10-0-12-34.eu-west-1.compute.internal.example.com.very-long";
        let name = pod_name(long, "ab12c");
        assert!(name.len() <= 63, "{name}");
        assert!(name.starts_with("kubectl-debug-agent-ip-10-0-12-34-eu-west-1"));
        assert!(name.ends_with("-ab12c"), "{name}");
        assert_eq!(
            pod_name("Node_1", "x1y2z"),
            "kubectl-debug-agent-node-1-x1y2z"
        );
        let s = suffix();
        assert_eq!(s.len(), 5);
        assert!(
            s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
    }

    #[test]
    fn the_runtime_comes_from_the_target_else_the_node() {
        assert_eq!(
            NodeRuntime::of(Some("containerd://1.7.2-k3s1"), None),
            NodeRuntime::K3s
        );
        assert_eq!(
            NodeRuntime::of(Some("containerd://1.7.2"), Some(RuntimeKind::Docker)),
            NodeRuntime::Docker,
            "the target's own runtime wins"
        );
        assert_eq!(
            NodeRuntime::of(
                Some("containerd://1.7.2-k3s1"),
                Some(RuntimeKind::Containerd)
            ),
            NodeRuntime::K3s
        );
        assert_eq!(
            NodeRuntime::of(Some("docker://24.0.5"), None),
            NodeRuntime::Docker
        );
        assert_eq!(
            NodeRuntime::of(None, Some(RuntimeKind::Docker)),
            NodeRuntime::Docker
        );
        assert_eq!(NodeRuntime::of(None, None), NodeRuntime::Containerd);
    }

    #[test]
    fn the_sockets_are_where_deploy_puts_them() {
        let docker = include_str!("../../deploy/overlays/docker/kustomization.yaml");
        let k3s = include_str!("../../deploy/overlays/k3s/kustomization.yaml");
        assert!(docker.contains(NodeRuntime::Docker.default_socket()));
        assert!(k3s.contains(NodeRuntime::K3s.default_socket()));
        assert!(DAEMONSET.contains(NodeRuntime::Containerd.default_socket()));
    }

    #[test]
    fn the_pod_is_the_daemonsets_on_one_node_with_one_token_and_no_port() {
        let hash = "ab".repeat(32);
        let pod = pod(
            &settings(),
            "kubectl-debug",
            "kubectl-debug-agent-n1-abcde",
            "n1",
            NodeRuntime::Containerd,
            &hash,
            "alice",
        )
        .unwrap();
        let labels = pod.metadata.labels.clone().unwrap();
        assert_eq!(labels["app.kubernetes.io/name"], "kubectl-debug-agent");
        assert_eq!(labels["app.kubernetes.io/component"], "on-demand");
        assert_eq!(
            pod.metadata.annotations.clone().unwrap()[USER_ANNOTATION],
            "alice"
        );
        let spec = pod.spec.unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("n1"));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.host_network, Some(false));
        assert_eq!(spec.host_pid, Some(true));
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert!(spec.service_account_name.is_none() && spec.priority_class_name.is_none());
        assert!(
            spec.tolerations
                .unwrap()
                .iter()
                .any(|t| t.operator.as_deref() == Some("Exists"))
        );
        let volumes = spec.volumes.unwrap();
        assert!(volumes.iter().all(|v| v.name != "config"));
        let socket = volumes.iter().find(|v| v.name == "runtime-socket").unwrap();
        assert_eq!(
            socket.host_path.as_ref().unwrap().path,
            "/run/containerd/containerd.sock"
        );
        let container = &spec.containers[0];
        assert!(
            container.ports.is_none(),
            "nothing but a port-forward reaches it"
        );
        assert!(container.readiness_probe.is_none() && container.liveness_probe.is_none());
        assert_eq!(
            container.image.as_deref(),
            Some(concat!("kubectl-debug-agent:", env!("CARGO_PKG_VERSION")))
        );
        let caps = container
            .security_context
            .as_ref()
            .unwrap()
            .capabilities
            .as_ref()
            .unwrap();
        assert_eq!(
            caps.drop.as_deref(),
            Some(&["ALL".to_owned()][..]),
            "no more power than the DaemonSet's"
        );
        let args = container.args.clone().unwrap();
        assert_eq!(args[0], "--config-yaml");
        let config: serde_json::Value = serde_json::from_str(&args[1]).unwrap();
        assert_eq!(config["listen"], "127.0.0.1:10027");
        assert_eq!(config["auth"]["mode"], "token");
        assert_eq!(config["auth"]["tokenSha256"], hash.as_str());
        assert_eq!(config["lifecycle"]["exitWhenIdle"], "60s");
        assert_eq!(
            config["runtime"]["endpoint"],
            "unix:///run/containerd/containerd.sock"
        );
    }

    #[test]
    fn the_nodes_registry_mirrors_are_mounted_read_only_where_containerd_reads_them() {
        let hash = "ab".repeat(32);
        let hosts_of = |runtime| {
            let pod = pod(&settings(), "ns", "p", "n1", runtime, &hash, "alice").unwrap();
            let spec = pod.spec.unwrap();
            let volume = spec
                .volumes
                .unwrap()
                .into_iter()
                .find(|v| v.name == "registry-hosts")
                .map(|v| v.host_path.unwrap().path);
            let mount = spec.containers[0]
                .volume_mounts
                .clone()
                .unwrap()
                .into_iter()
                .find(|m| m.name == "registry-hosts")
                .map(|m| (m.mount_path, m.read_only));
            (volume, mount)
        };
        let at = Some(("/etc/containerd/certs.d".to_owned(), Some(true)));
        assert_eq!(
            hosts_of(NodeRuntime::Containerd),
            (Some("/etc/containerd/certs.d".to_owned()), at.clone())
        );
        assert_eq!(
            hosts_of(NodeRuntime::K3s),
            (Some(K3S_REGISTRY_HOSTS.to_owned()), at)
        );
        assert_eq!(hosts_of(NodeRuntime::Docker), (None, None));
        // On Docker, the engine's containerd in their place, read-only, as the overlay has it.
        let docker = pod(
            &settings(),
            "ns",
            "p",
            "n1",
            NodeRuntime::Docker,
            &hash,
            "alice",
        )
        .unwrap();
        let spec = docker.spec.unwrap();
        let overlay = include_str!("../../deploy/overlays/docker/kustomization.yaml");
        for (name, path) in ENGINE_CONTAINERD_DIRS {
            let volume = spec
                .volumes
                .as_ref()
                .unwrap()
                .iter()
                .find(|v| v.name == name)
                .unwrap();
            assert_eq!(volume.host_path.as_ref().unwrap().path, path);
            let mount = spec.containers[0]
                .volume_mounts
                .as_ref()
                .unwrap()
                .iter()
                .find(|m| m.name == name)
                .unwrap();
            assert_eq!(
                (mount.mount_path.as_str(), mount.read_only),
                (path, Some(true))
            );
            assert!(overlay.contains(name) && overlay.contains(path), "{name}");
        }
        let k3s = include_str!("../../deploy/overlays/k3s/kustomization.yaml");
        assert!(k3s.contains("volumes/4/hostPath/path") && k3s.contains(K3S_REGISTRY_HOSTS));
    }

    #[test]
    fn the_agent_takes_its_configuration() {
        for runtime in [
            NodeRuntime::Docker,
            NodeRuntime::Containerd,
            NodeRuntime::K3s,
        ] {
            let text = agent_config(
                runtime,
                runtime.default_socket(),
                &"0f".repeat(32),
                "alice",
                EXIT_WHEN_IDLE,
            );
            let config = kdbg_agent::config::Config::parse(&text)
                .unwrap_or_else(|e| panic!("{runtime:?}: {e}: {text}"));
            assert!(config.listen.ip().is_loopback());
        }
    }

    #[test]
    fn a_configured_socket_and_image_are_used() {
        let mut settings = settings();
        settings
            .sockets
            .insert("docker".into(), "/srv/docker.sock".into());
        settings.image = Some("registry.local/agent:1".into());
        settings.pull_policy = Some("Never".into());
        let pod = pod(
            &settings,
            "ns",
            "p",
            "n1",
            NodeRuntime::Docker,
            &"00".repeat(32),
            "bob",
        )
        .unwrap();
        let spec = pod.spec.unwrap();
        assert_eq!(spec.host_pid, Some(true), "as the DaemonSet's");
        let container = &spec.containers[0];
        assert_eq!(container.image.as_deref(), Some("registry.local/agent:1"));
        assert_eq!(container.image_pull_policy.as_deref(), Some("Never"));
        let mount = container
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "runtime-socket")
            .unwrap();
        assert_eq!(mount.mount_path, "/srv/docker.sock");
    }
}
