//! The manifests in `deploy/`, rendered by the real `kubectl kustomize` (the base and every
//! overlay), read into Kubernetes' typed objects with unknown fields rejected, and checked for
//! what the agent needs and what it must never have (a hostPort, the host's network).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde::de::DeserializeOwned;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// `kubectl kustomize DIR`, split into documents.
fn render(dir: &Path) -> Vec<serde_json::Value> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl (installed by scripts/test-world)");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.split("\n---\n")
        .map(|doc| serde_saphyr::from_str::<serde_json::Value>(doc).unwrap())
        .collect()
}

/// `doc` as a `T`, failing on any field `T` does not have.
fn typed<T: DeserializeOwned>(doc: &serde_json::Value) -> T {
    let mut unknown = Vec::new();
    let value: T = serde_ignored::deserialize(doc.clone(), |path| unknown.push(path.to_string()))
        .unwrap_or_else(|e| panic!("{e}: {doc}"));
    assert!(
        unknown.is_empty(),
        "unknown fields {unknown:?} in {}",
        doc["kind"]
    );
    value
}

struct Rendered {
    daemonset: DaemonSet,
    config: ConfigMap,
    cluster_roles: Vec<ClusterRole>,
}

fn check(dir: &Path) -> Rendered {
    let docs = render(dir);
    let kinds: BTreeSet<String> = docs
        .iter()
        .map(|d| d["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet",
            "Namespace",
            "Role",
            "RoleBinding",
            "ServiceAccount"
        ]
        .map(String::from)
        .into(),
        "{}",
        dir.display()
    );
    let mut daemonset = None;
    let mut config = None;
    let mut cluster_roles = Vec::new();
    for doc in &docs {
        match doc["kind"].as_str().unwrap() {
            "Namespace" => {
                let ns: Namespace = typed(doc);
                assert_eq!(ns.metadata.name.as_deref(), Some("kubectl-debug"));
            }
            "ServiceAccount" => {
                let _: ServiceAccount = typed(doc);
            }
            "ConfigMap" => config = Some(typed::<ConfigMap>(doc)),
            "ClusterRole" => cluster_roles.push(typed::<ClusterRole>(doc)),
            "ClusterRoleBinding" => {
                let binding: ClusterRoleBinding = typed(doc);
                let subject = &binding.subjects.unwrap()[0];
                assert_eq!(subject.name, "kubectl-debug-agent");
                assert_eq!(subject.namespace.as_deref(), Some("kubectl-debug"));
            }
            "Role" => {
                let role: Role = typed(doc);
                assert_eq!(role.metadata.namespace.as_deref(), Some("kubectl-debug"));
            }
            "RoleBinding" => {
                // The one thing the agent may read: the cluster's client CA, for client
                // certificates (auth.clientCAFile unset), through the built-in Role.
                let binding: RoleBinding = typed(doc);
                assert_eq!(binding.metadata.namespace.as_deref(), Some("kube-system"));
                assert_eq!(binding.role_ref.kind, "Role");
                assert_eq!(
                    binding.role_ref.name,
                    "extension-apiserver-authentication-reader"
                );
                let subject = &binding.subjects.unwrap()[0];
                assert_eq!(subject.name, "kubectl-debug-agent");
                assert_eq!(subject.namespace.as_deref(), Some("kubectl-debug"));
            }
            "DaemonSet" => daemonset = Some(typed::<DaemonSet>(doc)),
            other => panic!("unexpected {other}"),
        }
    }
    Rendered {
        daemonset: daemonset.unwrap(),
        config: config.unwrap(),
        cluster_roles,
    }
}

#[test]
fn the_base_and_every_overlay_render_into_typed_objects_the_agent_can_run_with() {
    let mut sockets = BTreeSet::new();
    for dir in ["", "overlays/containerd", "overlays/docker", "overlays/k3s"] {
        let rendered = check(&deploy().join(dir));
        let ds = &rendered.daemonset;
        assert_eq!(ds.metadata.namespace.as_deref(), Some("kubectl-debug"));
        let template = ds.spec.as_ref().unwrap().template.clone();
        let labels = template.metadata.unwrap().labels.unwrap();
        assert_eq!(labels["app.kubernetes.io/name"], "kubectl-debug-agent");
        let pod = template.spec.unwrap();
        assert_ne!(pod.host_network, Some(true), "{dir}: no host network");
        let container = &pod.containers[0];
        let ports = container.ports.clone().unwrap();
        assert_eq!(ports[0].container_port, 10027);
        assert_eq!(ports[0].name.as_deref(), Some("agent"));
        assert!(
            ports.iter().all(|p| p.host_port.is_none()),
            "{dir}: no hostPort"
        );
        for probe in [&container.readiness_probe, &container.liveness_probe] {
            let get = probe.clone().unwrap().http_get.unwrap();
            assert_eq!(get.path.as_deref(), Some("/healthz"));
        }
        let security = container.security_context.clone().unwrap();
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_ne!(security.privileged, Some(true));
        assert!(container.resources.as_ref().unwrap().limits.is_some());
        assert!(
            pod.tolerations
                .unwrap()
                .iter()
                .any(|t| t.operator.as_deref() == Some("Exists"))
        );
        // The agent's configuration, as the ConfigMap holds it, is one the agent accepts, and
        // the paths it shares with the node's runtime are mounted at the same paths.
        let yaml = &rendered.config.data.unwrap()["agent.yaml"];
        let agent = kdbg_agent::config::Config::parse(yaml)
            .unwrap_or_else(|e| panic!("{dir}: agent.yaml: {e}"));
        // Secure as shipped: TLS from the Secret mounted beside the config, callers reviewed
        // by the cluster with the agent's service account, which may create reviews and no more.
        let tls = agent.tls.clone().expect("tls in the shipped agent.yaml");
        assert!(tls.cert_file.starts_with("/etc/kubectl-debug/tls"), "{dir}");
        assert!(!agent.insecure, "{dir}");
        assert_eq!(agent.auth.mode, kdbg_agent::config::AuthMode::Kubernetes);
        assert_eq!(pod.automount_service_account_token, Some(true));
        let own = rendered
            .cluster_roles
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some("kubectl-debug-agent"))
            .expect("the agent's ClusterRole");
        let granted: BTreeSet<String> = own
            .rules
            .iter()
            .flatten()
            .flat_map(|r| {
                let verbs = r.verbs.clone();
                r.resources
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .flat_map(move |res| {
                        verbs
                            .iter()
                            .map(move |v| format!("{v} {res}"))
                            .collect::<Vec<_>>()
                    })
            })
            .collect();
        assert_eq!(
            granted,
            ["create subjectaccessreviews", "create tokenreviews"]
                .map(String::from)
                .into(),
            "{dir}: the agent may create reviews, nothing else"
        );
        let mounts = container.volume_mounts.clone().unwrap();
        let volumes = pod.volumes.unwrap();
        let host_path = |mount: &str| {
            let m = mounts
                .iter()
                .find(|m| mount.starts_with(&m.mount_path))
                .unwrap_or_else(|| panic!("{dir}: nothing mounted at {mount}"));
            let v = volumes.iter().find(|v| v.name == m.name).unwrap();
            let host = v.host_path.clone().expect("a hostPath").path;
            format!("{host}{}", &mount[m.mount_path.len()..])
        };
        let init = agent.runtime.init_dir.display().to_string();
        assert_eq!(
            host_path(&init),
            init,
            "{dir}: kdbg-init at the node's path"
        );
        if let Some(fifo) = &agent.runtime.fifo_dir {
            let fifo = fifo.display().to_string();
            assert_eq!(host_path(&fifo), fifo, "{dir}: FIFOs at the node's path");
        }
        let endpoint = agent.runtime.endpoint.clone().unwrap();
        sockets.insert(host_path(endpoint.trim_start_matches("unix://")));
        let recordings = agent.recordings.dir.display().to_string();
        assert_eq!(host_path(&recordings), recordings);
        let containerd = matches!(
            agent.runtime.kind,
            kdbg_agent::config::RuntimeKindConfig::Containerd
        );
        assert_eq!(
            pod.host_pid,
            Some(containerd),
            "{dir}: hostPID for containerd"
        );
    }
    assert_eq!(
        sockets,
        [
            "/run/containerd/containerd.sock",
            "/run/k3s/containerd/containerd.sock",
            "/var/run/docker.sock"
        ]
        .map(String::from)
        .into()
    );
}

/// deploy/agentless: what a user needs for on-demand agents, and nothing more: the
/// namespace admitted for privileged pods, a Role for pods (create, get, list, delete),
/// pods/portforward (create) and events (list) there, and reading nodes.
#[test]
fn the_agentless_manifests_grant_what_an_on_demand_agent_needs() {
    let docs = render(&deploy().join("agentless"));
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Namespace", "Role", "ClusterRole"], "{kinds:?}");
    let namespace: Namespace = typed(&docs[0]);
    assert_eq!(namespace.metadata.name.as_deref(), Some("kubectl-debug"));
    let labels = namespace.metadata.labels.unwrap();
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "privileged");
    let nodes: ClusterRole = typed(&docs[2]);
    let rules = nodes.rules.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["nodes".to_owned()][..])
    );
    assert_eq!(rules[0].verbs, ["get"]);
    let role: Role = typed(&docs[1]);
    assert_eq!(role.metadata.namespace.as_deref(), Some("kubectl-debug"));
    let grants: BTreeSet<(String, String)> = role
        .rules
        .unwrap()
        .into_iter()
        .flat_map(|r| {
            let resources = r.resources.unwrap_or_default();
            r.verbs.into_iter().flat_map(move |v| {
                resources
                    .clone()
                    .into_iter()
                    .map(move |res| (res, v.clone()))
            })
        })
        .collect();
    let want: BTreeSet<(String, String)> = [
        ("pods", "create"),
        ("pods", "get"),
        ("pods", "list"),
        ("pods", "delete"),
        ("pods/portforward", "create"),
        ("events", "list"),
    ]
    .into_iter()
    .map(|(r, v)| (r.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(grants, want);
}
