//! Pod Security admission, as the API server enforces it on a namespace labelled
//! `pod-security.kubernetes.io/enforce`: the checks of the Pod Security Standards that the
//! plugin's pods meet or fail (host namespaces, hostPath volumes, privileged, capabilities,
//! privilege escalation, non-root, seccomp), in the words and order of
//! `k8s.io/pod-security-admission/policy` (checks ordered by ID, restricted checks overriding
//! their baseline counterparts).

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};

/// The namespace label that names the enforced level.
pub const ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";

/// A Pod Security Standards level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodSecurity {
    /// Anything goes.
    Privileged,
    /// No host namespaces, hostPath volumes, privileged containers or added capabilities
    /// beyond the default set.
    Baseline,
    /// Baseline, and non-root, no privilege escalation, every capability dropped, a seccomp
    /// profile, only ephemeral and projected volume types.
    Restricted,
}

impl PodSecurity {
    /// As the namespace label spells it.
    pub fn label(self) -> &'static str {
        match self {
            PodSecurity::Privileged => "privileged",
            PodSecurity::Baseline => "baseline",
            PodSecurity::Restricted => "restricted",
        }
    }

    fn from_label(label: &str) -> Option<PodSecurity> {
        [
            PodSecurity::Privileged,
            PodSecurity::Baseline,
            PodSecurity::Restricted,
        ]
        .into_iter()
        .find(|l| l.label() == label)
    }
}

/// The capabilities baseline lets a container add.
const BASELINE_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Volume types restricted allows.
fn restricted_allows(volume: &k8s_openapi::api::core::v1::Volume) -> bool {
    volume.config_map.is_some()
        || volume.csi.is_some()
        || volume.downward_api.is_some()
        || volume.empty_dir.is_some()
        || volume.ephemeral.is_some()
        || volume.persistent_volume_claim.is_some()
        || volume.projected.is_some()
        || volume.secret.is_some()
}

/// The API server's refusal of `pod` under namespace labels `labels`, if it refuses it:
/// `pods "x" is forbidden: violates PodSecurity "baseline:latest": ...`.
pub(crate) fn refusal(
    labels: Option<&std::collections::BTreeMap<String, String>>,
    pod: &Pod,
) -> Option<String> {
    let labels = labels?;
    let level = PodSecurity::from_label(labels.get(ENFORCE_LABEL)?)?;
    let version = labels
        .get("pod-security.kubernetes.io/enforce-version")
        .map_or("latest", String::as_str);
    let spec = pod.spec.as_ref()?;
    let violations = violations(level, spec);
    if violations.is_empty() {
        return None;
    }
    Some(format!(
        "pods \"{}\" is forbidden: violates PodSecurity \"{}:{version}\": {}",
        pod.metadata.name.as_deref().unwrap_or_default(),
        level.label(),
        violations.join(", ")
    ))
}

/// Every check `spec` fails at `level`, as `reason (detail)`.
fn violations(level: PodSecurity, spec: &PodSpec) -> Vec<String> {
    if level == PodSecurity::Privileged {
        return Vec::new();
    }
    let restricted = level == PodSecurity::Restricted;
    let containers: Vec<&Container> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .collect();
    let context = |c: &&Container| c.security_context.clone().unwrap_or_default();
    let names = |pick: &dyn Fn(&&Container) -> bool| -> Vec<String> {
        containers
            .iter()
            .filter(|c| pick(c))
            .map(|c| c.name.clone())
            .collect()
    };
    let pod_context = spec.security_context.clone().unwrap_or_default();
    let mut found = Vec::new();
    let mut fail = |reason: &str, details: Vec<String>| {
        if !details.is_empty() {
            found.push(format!("{reason} ({})", details.join("; ")));
        }
    };

    if restricted {
        let bad = names(&|c| context(c).allow_privilege_escalation != Some(false));
        fail(
            "allowPrivilegeEscalation != false",
            nonempty(&bad, |b| {
                format!(
                    "{} must set securityContext.allowPrivilegeEscalation=false",
                    subjects("container", b)
                )
            }),
        );
    }
    let added = |c: &&Container| -> Vec<String> {
        context(c)
            .capabilities
            .and_then(|caps| caps.add)
            .unwrap_or_default()
    };
    if restricted {
        let undropped = names(&|c| {
            !context(c)
                .capabilities
                .and_then(|caps| caps.drop)
                .is_some_and(|d| d.iter().any(|d| d == "ALL"))
        });
        let (adders, caps) = adding(&containers, &added, &["NET_BIND_SERVICE"]);
        let mut details = nonempty(&undropped, |b| {
            format!(
                "{} must set securityContext.capabilities.drop=[\"ALL\"]",
                subjects("container", b)
            )
        });
        details.extend(nonempty(&adders, |b| {
            format!(
                "{} must not include {} in securityContext.capabilities.add",
                subjects("container", b),
                quoted(&caps)
            )
        }));
        fail("unrestricted capabilities", details);
    } else {
        let (adders, caps) = adding(&containers, &added, &BASELINE_CAPABILITIES);
        fail(
            "non-default capabilities",
            nonempty(&adders, |b| {
                format!(
                    "{} must not include {} in securityContext.capabilities.add",
                    subjects("container", b),
                    quoted(&caps)
                )
            }),
        );
    }
    let hosts: Vec<&str> = [
        (spec.host_network, "hostNetwork=true"),
        (spec.host_pid, "hostPID=true"),
        (spec.host_ipc, "hostIPC=true"),
    ]
    .into_iter()
    .filter(|(on, _)| *on == Some(true))
    .map(|(_, what)| what)
    .collect();
    if !hosts.is_empty() {
        fail("host namespaces", vec![hosts.join(", ")]);
    }
    let volumes = spec.volumes.iter().flatten();
    let host_paths: Vec<String> = volumes
        .clone()
        .filter(|v| v.host_path.is_some())
        .map(|v| v.name.clone())
        .collect();
    if !restricted {
        fail(
            "hostPath volumes",
            nonempty(&host_paths, |b| subjects("volume", b)),
        );
    }
    let ports: Vec<(String, String)> = containers
        .iter()
        .flat_map(|c| {
            c.ports
                .iter()
                .flatten()
                .filter_map(|p| p.host_port.filter(|&h| h != 0))
                .map(|h| (c.name.clone(), h.to_string()))
        })
        .collect();
    if !ports.is_empty() {
        let mut who: Vec<String> = ports.iter().map(|(c, _)| c.clone()).collect();
        who.dedup();
        let numbers: Vec<String> = ports.into_iter().map(|(_, p)| p).collect();
        let verb = if who.len() == 1 {
            "uses hostPort"
        } else {
            "use hostPorts"
        };
        fail(
            "hostPort",
            vec![format!(
                "{} {verb} {}",
                subjects("container", &who),
                numbers.join(", ")
            )],
        );
    }
    let privileged = names(&|c| context(c).privileged == Some(true));
    fail(
        "privileged",
        nonempty(&privileged, |b| {
            format!(
                "{} must not set securityContext.privileged=true",
                subjects("container", b)
            )
        }),
    );
    if restricted {
        let bad: Vec<String> = volumes
            .clone()
            .filter(|v| !restricted_allows(v))
            .map(|v| v.name.clone())
            .collect();
        let types: Vec<String> = volumes
            .filter(|v| !restricted_allows(v))
            .map(|v| volume_type(v).to_owned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let uses = if bad.len() == 1 { "uses" } else { "use" };
        let kind = if types.len() == 1 {
            "restricted volume type"
        } else {
            "restricted volume types"
        };
        fail(
            "restricted volume types",
            nonempty(&bad, |b| {
                format!("{} {uses} {kind} {}", subjects("volume", b), quoted(&types))
            }),
        );
        let pod_non_root = pod_context.run_as_non_root == Some(true);
        let bad = names(&|c| {
            let own = context(c).run_as_non_root;
            own != Some(true) && !(own.is_none() && pod_non_root)
        });
        fail(
            "runAsNonRoot != true",
            nonempty(&bad, |b| {
                format!(
                    "pod or {} must set securityContext.runAsNonRoot=true",
                    subjects("container", b)
                )
            }),
        );
        let mut details = Vec::new();
        if pod_context.run_as_user == Some(0) {
            details.push("pod must not set runAsUser=0".to_owned());
        }
        let root = names(&|c| context(c).run_as_user == Some(0));
        details.extend(nonempty(&root, |b| {
            format!("{} must not set runAsUser=0", subjects("container", b))
        }));
        fail("runAsUser=0", details);
        let pod_profile = pod_context.seccomp_profile.map(|p| p.type_);
        let good = |t: Option<&str>| matches!(t, Some("RuntimeDefault" | "Localhost"));
        let bad = names(&|c| {
            let own = context(c).seccomp_profile.map(|p| p.type_);
            !(good(own.as_deref()) || (own.is_none() && good(pod_profile.as_deref())))
        });
        fail(
            "seccompProfile",
            nonempty(&bad, |b| {
                format!(
                    "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
                    subjects("container", b)
                )
            }),
        );
    } else {
        let mut details = Vec::new();
        if pod_context.seccomp_profile.map(|p| p.type_).as_deref() == Some("Unconfined") {
            details.push(
                "pod must not set securityContext.seccompProfile.type to \"Unconfined\"".into(),
            );
        }
        let bad = names(&|c| {
            context(c).seccomp_profile.map(|p| p.type_).as_deref() == Some("Unconfined")
        });
        details.extend(nonempty(&bad, |b| {
            format!(
                "{} must not set securityContext.seccompProfile.type to \"Unconfined\"",
                subjects("container", b)
            )
        }));
        fail("seccompProfile", details);
    }
    found
}

/// The containers that add capabilities outside `allowed`, and those capabilities.
fn adding(
    containers: &[&Container],
    added: &dyn Fn(&&Container) -> Vec<String>,
    allowed: &[&str],
) -> (Vec<String>, Vec<String>) {
    let mut who = Vec::new();
    let mut caps = std::collections::BTreeSet::new();
    for c in containers {
        let bad: Vec<String> = added(c)
            .into_iter()
            .filter(|cap| !allowed.contains(&cap.as_str()))
            .collect();
        if !bad.is_empty() {
            who.push(c.name.clone());
            caps.extend(bad);
        }
    }
    (who, caps.into_iter().collect())
}

fn nonempty(names: &[String], detail: impl Fn(&[String]) -> String) -> Vec<String> {
    if names.is_empty() {
        Vec::new()
    } else {
        vec![detail(names)]
    }
}

/// `container "a"` or `containers "a", "b"`.
fn subjects(noun: &str, names: &[String]) -> String {
    let plural = if names.len() == 1 { "" } else { "s" };
    format!("{noun}{plural} {}", quoted(names))
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn volume_type(v: &k8s_openapi::api::core::v1::Volume) -> &'static str {
    let value = serde_json::to_value(v).unwrap_or_default();
    let types = [
        "hostPath",
        "nfs",
        "iscsi",
        "rbd",
        "cephfs",
        "glusterfs",
        "gcePersistentDisk",
        "awsElasticBlockStore",
        "azureDisk",
        "azureFile",
        "cinder",
        "fc",
        "flexVolume",
        "flocker",
        "gitRepo",
        "photonPersistentDisk",
        "portworxVolume",
        "quobyte",
        "scaleIO",
        "storageos",
        "vsphereVolume",
        "image",
    ];
    types
        .into_iter()
        .find(|t| value.get(t).is_some())
        .unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent_like() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "agent"},
            "spec": {
                "hostPID": true,
                "containers": [{"name": "agent", "image": "a", "securityContext": {
                    "runAsUser": 0, "allowPrivilegeEscalation": false,
                    "capabilities": {"drop": ["ALL"], "add": ["SYS_PTRACE", "CHOWN"]}}}],
                "volumes": [
                    {"name": "runtime-socket", "hostPath": {"path": "/run/x.sock"}},
                    {"name": "shared", "hostPath": {"path": "/run/kubectl-debug"}},
                    {"name": "scratch", "emptyDir": {}}
                ]
            }
        }))
        .unwrap()
    }

    #[test]
    fn baseline_refuses_what_the_api_server_refuses_in_its_words() {
        let labels = [(ENFORCE_LABEL.to_owned(), "baseline".to_owned())].into();
        assert_eq!(
            refusal(Some(&labels), &agent_like()).unwrap(),
            "pods \"agent\" is forbidden: violates PodSecurity \"baseline:latest\": \
             non-default capabilities (container \"agent\" must not include \"SYS_PTRACE\" in \
             securityContext.capabilities.add), host namespaces (hostPID=true), hostPath \
             volumes (volumes \"runtime-socket\", \"shared\")"
        );
        let privileged = [(ENFORCE_LABEL.to_owned(), "privileged".to_owned())].into();
        assert_eq!(refusal(Some(&privileged), &agent_like()), None);
        assert_eq!(refusal(None, &agent_like()), None);
    }

    #[test]
    fn restricted_overrides_baseline_checks() {
        let labels = [(ENFORCE_LABEL.to_owned(), "restricted".to_owned())].into();
        let refusal = refusal(Some(&labels), &agent_like()).unwrap();
        for part in [
            "unrestricted capabilities (container \"agent\" must not include \"CHOWN\", \
             \"SYS_PTRACE\" in securityContext.capabilities.add)",
            "host namespaces (hostPID=true)",
            "restricted volume types (volumes \"runtime-socket\", \"shared\" use restricted \
             volume type \"hostPath\")",
            "runAsUser=0 (container \"agent\" must not set runAsUser=0)",
            "runAsNonRoot != true (pod or container \"agent\" must set \
             securityContext.runAsNonRoot=true)",
        ] {
            assert!(refusal.contains(part), "{part} in {refusal}");
        }
        assert!(!refusal.contains("non-default capabilities"), "{refusal}");
        assert!(!refusal.contains("hostPath volumes"), "{refusal}");
    }
}
