//! The on-demand agent's pod and configuration, built from the DaemonSet's own manifest.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{HostPathVolumeSource, Pod, Volume, VolumeMount};
use kdbg_api::RuntimeKind;

use super::{COMPONENT_LABEL, NAME_LABEL, PORT, USER_ANNOTATION};

/// The DaemonSet's manifest: the one source of both agents' pods.
pub(super) const DAEMONSET: &str = include_str!("../../../deploy/base/daemonset.yaml");

/// The runtime of a node, as the on-demand agent must drive it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRuntime {
    /// Docker Engine (cri-dockerd).
    Docker,
    /// containerd.
    Containerd,
    /// k3s's own containerd.
    K3s,
}

impl NodeRuntime {
    /// The name the plugin configuration's `agentRuntimeSockets` uses.
    pub fn name(self) -> &'static str {
        match self {
            NodeRuntime::Docker => "docker",
            NodeRuntime::Containerd => "containerd",
            NodeRuntime::K3s => "k3s",
        }
    }

    /// Where its socket is on a node, as `deploy/overlays/` put it for the DaemonSet.
    pub fn default_socket(self) -> &'static str {
        match self {
            NodeRuntime::Docker => "/var/run/docker.sock",
            NodeRuntime::Containerd => "/run/containerd/containerd.sock",
            NodeRuntime::K3s => "/run/k3s/containerd/containerd.sock",
        }
    }

    /// The runtime of the target's container (`hint`, its ID's scheme: what the agent must
    /// drive to join it), told k3s's containerd or not by the node's
    /// `status.nodeInfo.containerRuntimeVersion` (e.g. `containerd://1.7.2-k3s1`); without a
    /// target, the node's runtime; without either, containerd.
    pub fn of(runtime_version: Option<&str>, hint: Option<RuntimeKind>) -> NodeRuntime {
        let k3s =
            runtime_version.is_some_and(|v| v.starts_with("containerd://") && v.contains("k3s"));
        match (hint, runtime_version) {
            (Some(RuntimeKind::Docker), _) => NodeRuntime::Docker,
            (Some(RuntimeKind::Containerd), _) if k3s => NodeRuntime::K3s,
            (Some(RuntimeKind::Containerd), _) => NodeRuntime::Containerd,
            (None, Some(v)) if v.starts_with("docker://") => NodeRuntime::Docker,
            (None, _) if k3s => NodeRuntime::K3s,
            (None, _) => NodeRuntime::Containerd,
        }
    }
}

/// Where k3s's containerd reads its registry host configuration (written by k3s from
/// `/etc/rancher/k3s/registries.yaml`).
pub const K3S_REGISTRY_HOSTS: &str = "/var/lib/rancher/k3s/agent/etc/containerd/certs.d";

/// Where a Docker engine's own containerd may listen, mounted read-only into an on-demand
/// agent on a Docker node, by volume name: as the Docker overlay of `deploy/` does.
pub const ENGINE_CONTAINERD_DIRS: [(&str, &str); 2] = [
    ("engine-containerd", "/run/containerd"),
    ("engine-containerd-docker", "/var/run/docker/containerd"),
];

/// What the user chose for on-demand agents (flags, else the plugin configuration).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The agent's image; default: the DaemonSet's image name with this plugin's version.
    pub image: Option<String>,
    /// Its pull policy; default: the DaemonSet's.
    pub pull_policy: Option<String>,
    /// Its resources; default: the DaemonSet's.
    pub resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
    /// Runtime sockets on nodes where they are not where `deploy/` expects them, by runtime
    /// name (`docker`, `containerd`, `k3s`).
    pub sockets: BTreeMap<String, String>,
    /// How long the pod may take to serve.
    pub start_timeout: Duration,
    /// How long the agent waits after its last session before it exits.
    pub exit_when_idle: Duration,
}

/// `kubectl-debug-agent-<node>-<5 random>`, within 63 characters, as DNS-1123 allows.
pub fn pod_name(node: &str, suffix: &str) -> String {
    let mut node: String = node
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let room = 63 - "kubectl-debug-agent--".len() - suffix.len();
    node.truncate(room);
    let node = node.trim_matches('-');
    if node.is_empty() {
        format!("kubectl-debug-agent-{suffix}")
    } else {
        format!("kubectl-debug-agent-{node}-{suffix}")
    }
}

/// The on-demand agent's configuration (JSON, which YAML reads): the DaemonSet's, listening
/// on loopback, with token authentication and an idle exit.
pub fn agent_config(
    runtime: NodeRuntime,
    socket: &str,
    token_sha256: &str,
    user: &str,
    exit_when_idle: Duration,
) -> String {
    let mut runtime_config = serde_json::json!({
        "kind": if runtime == NodeRuntime::Docker { "docker" } else { "containerd" },
        "endpoint": format!("unix://{socket}"),
        "initDir": "/run/kubectl-debug/init",
    });
    if runtime != NodeRuntime::Docker {
        runtime_config["namespace"] = "k8s.io".into();
        runtime_config["fifoDir"] = "/run/kubectl-debug/fifo".into();
    }
    serde_json::json!({
        "listen": format!("127.0.0.1:{PORT}"),
        "runtime": runtime_config,
        "recordings": {"dir": "/var/lib/kubectl-debug/recordings", "mode": "off"},
        "log": {"format": "json"},
        "auth": {"mode": "token", "tokenSha256": token_sha256, "user": user},
        "lifecycle": {"exitWhenIdle": format!("{}s", exit_when_idle.as_secs().max(1))},
        "policy": {
            "profiles": {"allowed": ["general", "netadmin", "sysadmin", "restricted"], "default": "general"},
            "maxSessions": {"total": 10, "perUser": 10, "perTarget": 5},
        },
    })
    .to_string()
}

/// The agent's image: `configured`, else the DaemonSet's image name with this plugin's
/// version.
pub fn agent_image(configured: Option<&str>) -> String {
    if let Some(image) = configured {
        return image.to_owned();
    }
    let image = DAEMONSET
        .lines()
        .find_map(|l| l.trim().strip_prefix("image:"))
        .map(str::trim)
        .unwrap_or("kubectl-debug-agent");
    let name = image.rsplit_once(':').map_or(image, |(n, _)| n);
    format!("{name}:{}", env!("CARGO_PKG_VERSION"))
}

/// The on-demand agent's pod for `node`, from the DaemonSet's pod template.
#[allow(clippy::too_many_arguments)]
pub fn pod(
    settings: &Settings,
    namespace: &str,
    name: &str,
    node: &str,
    runtime: NodeRuntime,
    token_sha256: &str,
    user: &str,
) -> anyhow::Result<Pod> {
    let daemonset: DaemonSet =
        serde_saphyr::from_str(DAEMONSET).context("reading the embedded DaemonSet manifest")?;
    let template = daemonset
        .spec
        .map(|s| s.template)
        .ok_or_else(|| anyhow!("the embedded DaemonSet has no pod template"))?;
    let mut spec = template
        .spec
        .ok_or_else(|| anyhow!("the embedded DaemonSet's template has no spec"))?;
    let socket = settings
        .sockets
        .get(runtime.name())
        .cloned()
        .unwrap_or_else(|| runtime.default_socket().to_owned());
    spec.node_name = Some(node.to_owned());
    spec.restart_policy = Some("Never".into());
    // No access to the cluster: the port-forward is its callers' authorisation.
    spec.service_account_name = None;
    spec.automount_service_account_token = Some(false);
    // system-node-critical is for kube-system; an on-demand pod is one user's.
    spec.priority_class_name = None;
    spec.host_network = Some(false);
    // As the DaemonSet's, on every runtime: an agent tells live owners of debug containers
    // (other agents' sessions) from dead ones by their PIDs, and a target that shares the
    // node's namespaces from one that does not, both only in the node's PID namespace.
    spec.host_pid = Some(true);
    spec.termination_grace_period_seconds = Some(30);
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    volumes.retain(|v| v.name != "config");
    // Docker pulls with its own mirrors; its sessions start through the engine's own
    // containerd (the system's, or dockerd's), mounted read-only in their place. k3s's
    // containerd reads the hosts.toml files k3s writes under its own config_path, seen by
    // the agent at containerd's usual one.
    if runtime == NodeRuntime::Docker {
        volumes.retain(|v| v.name != "registry-hosts");
        for (name, path) in ENGINE_CONTAINERD_DIRS {
            volumes.push(Volume {
                name: name.to_owned(),
                host_path: Some(HostPathVolumeSource {
                    path: path.to_owned(),
                    type_: Some("DirectoryOrCreate".to_owned()),
                }),
                ..Volume::default()
            });
        }
    }
    for volume in volumes.iter_mut() {
        let Some(host_path) = &mut volume.host_path else {
            continue;
        };
        match volume.name.as_str() {
            "runtime-socket" => host_path.path.clone_from(&socket),
            "registry-hosts" if runtime == NodeRuntime::K3s => {
                host_path.path = K3S_REGISTRY_HOSTS.to_owned();
            }
            _ => {}
        }
    }
    let container = spec
        .containers
        .first_mut()
        .ok_or_else(|| anyhow!("the embedded DaemonSet has no container"))?;
    container.image = Some(agent_image(settings.image.as_deref()));
    if let Some(policy) = &settings.pull_policy {
        container.image_pull_policy = Some(policy.clone());
    }
    if let Some(resources) = &settings.resources {
        container.resources = Some(resources.clone());
    }
    container.args = Some(vec![
        "--config-yaml".into(),
        agent_config(
            runtime,
            &socket,
            token_sha256,
            user,
            settings.exit_when_idle,
        ),
    ]);
    container.ports = None;
    container.readiness_probe = None;
    container.liveness_probe = None;
    if let Some(mounts) = &mut container.volume_mounts {
        mounts.retain(|m| m.name != "config");
        if runtime == NodeRuntime::Docker {
            mounts.retain(|m| m.name != "registry-hosts");
            for (name, path) in ENGINE_CONTAINERD_DIRS {
                mounts.push(VolumeMount {
                    name: name.to_owned(),
                    mount_path: path.to_owned(),
                    read_only: Some(true),
                    ..VolumeMount::default()
                });
            }
        }
        for mount in mounts.iter_mut() {
            if mount.name == "runtime-socket" {
                mount.mount_path.clone_from(&socket);
            }
        }
    }
    Ok(Pod {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([
                (NAME_LABEL.0.to_owned(), NAME_LABEL.1.to_owned()),
                (COMPONENT_LABEL.0.to_owned(), COMPONENT_LABEL.1.to_owned()),
            ])),
            annotations: Some(BTreeMap::from([(
                USER_ANNOTATION.to_owned(),
                user.to_owned(),
            )])),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    })
}
