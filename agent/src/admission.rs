//! What the agent checks before it creates anything, after the caller is known: that the
//! target really is the named pod's, that it does not share the node's namespaces (unless
//! the caller may debug the node), and the node's policy (images, profiles, how many
//! sessions).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use kdbg_runtimes::{Profile, TargetInfo, TargetRef, label};

use crate::auth::Access;
use crate::config::{MaxSessions, Policy, image_matches};
use crate::session::Refusal;

/// The kubelet's labels on a pod's containers (Docker and CRI runtimes alike).
pub const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
/// See [`POD_NAMESPACE_LABEL`].
pub const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
/// See [`POD_NAMESPACE_LABEL`]: the container's name in its pod.
pub const CONTAINER_NAME_LABEL: &str = "io.kubernetes.container.name";

/// Checks that `target` (as the runtime describes it in `info`) is a container of pod
/// `namespace/pod`: a client must not reach a container of another pod by naming one it
/// may debug.
pub fn check_pod(
    target: &TargetRef,
    info: &TargetInfo,
    namespace: &str,
    pod: &str,
) -> Result<(), Refusal> {
    let of = |key| info.labels.get(key).map(String::as_str);
    match (of(POD_NAMESPACE_LABEL), of(POD_NAME_LABEL)) {
        (Some(ns), Some(name)) if ns == namespace && name == pod => Ok(()),
        (Some(ns), Some(name)) => Err(Refusal::new(
            403,
            format!(
                "Forbidden: target container {target} belongs to pod {ns}/{name}, not {namespace}/{pod}; name the target's own pod"
            ),
        )),
        _ => Err(Refusal::new(
            403,
            format!(
                "Forbidden: target container {target} is not a container of pod {namespace}/{pod} (the runtime gives it no pod labels: it is not a Kubernetes pod's)"
            ),
        )),
    }
}

/// Why debugging `target` amounts to debugging the node, if it does: it shares the node's
/// pid, network or IPC namespace (hostPID, hostNetwork, hostIPC pods, such as this agent's
/// own), or it is one of our debug containers. `None` when it is an ordinary container.
///
/// The node's namespaces are those of the kernel's own threads (`kthreadd`, PID 2), which
/// always live in the initial namespaces: the DaemonSet runs the agent in the node's PID
/// namespace (hostPID), where it sees them. (PID 1, the node's init, may refuse to be
/// inspected; it is the fallback.)
pub fn node_level(info: &TargetInfo) -> Option<String> {
    if info.labels.contains_key(label::TARGET) {
        return Some("it is a kubectl-debug debug container".into());
    }
    let pid = info.pid?;
    let shared: Vec<&str> = [("pid", "hostPID"), ("net", "hostNetwork"), ("ipc", "hostIPC")]
        .into_iter()
        .filter(|(ns, _)| {
            let of = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/{ns}"));
            match (of(&pid.to_string()), of(node_reference())) {
                (Ok(target), Ok(node)) => target == node,
                // Unreadable: assume the worst.
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(pid, ns, error = %e, "cannot compare the target's namespaces with the node's (is the agent in the node's PID namespace, hostPID?); treating the target as the node");
                    true
                }
            }
        })
        .map(|(_, field)| field)
        .collect();
    (!shared.is_empty()).then(|| format!("it shares the node's namespaces ({})", shared.join(", ")))
}

/// The process whose namespaces are the node's: `kthreadd` when the agent sees it.
fn node_reference() -> &'static str {
    static REFERENCE: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    REFERENCE.get_or_init(|| match std::fs::read_to_string("/proc/2/comm") {
        Ok(comm) if comm.trim() == "kthreadd" => "2",
        _ => "1",
    })
}

/// Why a debug container of the node itself (`kubectl-debug node/NAME`) gives the node.
pub const NODE_ITSELF: &str = "it runs in the node's own pid, network, IPC and UTS namespaces, with the node's root filesystem at /host";

/// Why a debug container that exists (with `labels`) gives the node itself, if it does:
/// what the agent that made it recorded ([`label::NODE_LEVEL`]), else, for a container made
/// before that label, what its target is (`target`, as the runtime describes it), when known.
pub fn debug_container_node_level(
    labels: &BTreeMap<String, String>,
    target: Option<&TargetInfo>,
) -> Option<String> {
    labels
        .get(label::NODE_LEVEL)
        .cloned()
        .or_else(|| target.and_then(node_level))
}

/// Why a new debug container with `profile` gives the node itself, if it does.
pub fn profile_node_level(profile: Profile) -> Option<String> {
    profile.node_level().map(str::to_owned)
}

/// The refusal for `subject` (a target, a debug container, a profile, a session), which
/// gives the node itself because of `why`, to a caller who may not debug the node.
pub fn node_level_refusal(subject: &str, why: &str, access: &Access) -> Refusal {
    Refusal::new(
        403,
        format!(
            "Forbidden: {subject} gives the node itself: {why}; that needs node-level permission ({}), which an administrator grants with a ClusterRole",
            access.describe()
        ),
    )
}

/// Checks `image` against `policy.images`; patterns are matched against the image as
/// named and in its short form (`docker.io/library/busybox:1` is also `busybox:1`).
pub fn check_image(policy: &Policy, image: &str) -> Result<(), Refusal> {
    let Some(patterns) = &policy.images else {
        return Ok(());
    };
    let mut forms = vec![image.to_owned()];
    if let Ok(reference) = kdbg_runtimes::Reference::parse(image) {
        let full = reference.to_string();
        let short = full
            .strip_prefix("docker.io/")
            .map(|s| s.strip_prefix("library/").unwrap_or(s).to_owned());
        forms.push(full);
        forms.extend(short);
    }
    if patterns
        .iter()
        .any(|p| forms.iter().any(|f| image_matches(p, f)))
    {
        return Ok(());
    }
    Err(Refusal::new(
        403,
        format!(
            "Forbidden: image {image} is not allowed on this node (policy.images: {}); use one of those, or ask the cluster's administrator",
            patterns.join(", ")
        ),
    ))
}

/// The profile a session gets: the one asked for, if allowed, else the default.
pub fn profile(policy: &Policy, asked: Option<Profile>) -> Result<Profile, Refusal> {
    let profiles = &policy.profiles;
    let chosen = asked.unwrap_or(profiles.default);
    if profiles.allowed.contains(&chosen) {
        return Ok(chosen);
    }
    let allowed: Vec<&str> = profiles.allowed.iter().map(|p| p.name()).collect();
    Err(Refusal::new(
        403,
        format!(
            "Forbidden: profile {chosen} is not allowed on this node (policy.profiles.allowed: {}); choose one of those with --profile",
            allowed.join(", ")
        ),
    ))
}

/// The sessions running, by user and by target, against `policy.maxSessions`.
#[derive(Debug, Default)]
pub struct Sessions {
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    users: HashMap<String, usize>,
    targets: HashMap<String, usize>,
}

/// A running session's place in [`Sessions`], given back when dropped.
#[derive(Debug)]
pub struct Slot {
    sessions: Arc<Sessions>,
    user: String,
    target: String,
}

impl Sessions {
    /// A place for a session of `user` in `target`, unless `max` is reached.
    pub fn admit(
        self: &Arc<Self>,
        max: &MaxSessions,
        user: &str,
        target: &str,
    ) -> Result<Slot, Refusal> {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let of_user = counts.users.get(user).copied().unwrap_or(0);
        let of_target = counts.targets.get(target).copied().unwrap_or(0);
        let full = if counts.total >= max.total {
            Some(format!(
                "this node runs {} debug sessions, its limit (policy.maxSessions.total)",
                counts.total
            ))
        } else if of_user >= max.per_user {
            Some(format!(
                "user \"{user}\" has {of_user} debug sessions on this node, the limit (policy.maxSessions.perUser)"
            ))
        } else if of_target >= max.per_target {
            Some(format!(
                "target container {target} has {of_target} debug sessions, the limit (policy.maxSessions.perTarget)"
            ))
        } else {
            None
        };
        if let Some(why) = full {
            return Err(Refusal::new(
                429,
                format!("Too many sessions: {why}; end one, or try again later"),
            ));
        }
        counts.total += 1;
        *counts.users.entry(user.to_owned()).or_default() += 1;
        *counts.targets.entry(target.to_owned()).or_default() += 1;
        Ok(Slot {
            sessions: self.clone(),
            user: user.to_owned(),
            target: target.to_owned(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut guard = self
            .sessions
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let counts = &mut *guard;
        counts.total = counts.total.saturating_sub(1);
        for (map, key) in [
            (&mut counts.users, &self.user),
            (&mut counts.targets, &self.target),
        ] {
            if let Some(n) = map.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Profiles;

    fn target() -> TargetRef {
        "docker://abc".parse().unwrap()
    }

    fn pod_labels(ns: &str, name: &str) -> TargetInfo {
        TargetInfo {
            labels: [
                (POD_NAMESPACE_LABEL.to_owned(), ns.to_owned()),
                (POD_NAME_LABEL.to_owned(), name.to_owned()),
            ]
            .into(),
            pid: None,
        }
    }

    #[test]
    fn a_target_must_be_the_named_pods() {
        check_pod(&target(), &pod_labels("shop", "web"), "shop", "web").unwrap();
        let other = check_pod(&target(), &pod_labels("bank", "vault"), "shop", "web").unwrap_err();
        assert_eq!(other.code, 403);
        assert!(
            other
                .message
                .contains("belongs to pod bank/vault, not shop/web"),
            "{}",
            other.message
        );
        let bare = check_pod(&target(), &TargetInfo::default(), "shop", "web").unwrap_err();
        assert!(bare.message.contains("no pod labels"), "{}", bare.message);
    }

    #[test]
    fn host_namespaces_and_debug_containers_are_node_level() {
        // This test process shares every namespace with itself: as a target, it is the node
        // when PID 1 is in the same namespaces, which is how the agent sees a hostPID pod.
        let me = TargetInfo {
            labels: Default::default(),
            pid: Some(std::process::id()),
        };
        let same = |ns: &str| {
            std::fs::read_link(format!("/proc/self/ns/{ns}")).ok()
                == std::fs::read_link(format!("/proc/{}/ns/{ns}", node_reference())).ok()
        };
        assert_eq!(
            node_level(&me).is_some(),
            same("pid") || same("net") || same("ipc")
        );
        let mut ours = TargetInfo::default();
        ours.labels
            .insert(label::TARGET.into(), "docker://x".into());
        assert!(node_level(&ours).unwrap().contains("debug container"));
        assert_eq!(node_level(&TargetInfo::default()), None);
    }

    #[test]
    fn images_profiles_and_session_counts_follow_the_policy() {
        let mut policy = Policy::default();
        check_image(&policy, "anything:1").unwrap();
        policy.images = Some(vec!["nicolaka/netshoot:*".into(), "busybox:*".into()]);
        check_image(&policy, "nicolaka/netshoot:latest").unwrap();
        check_image(&policy, "docker.io/library/busybox:1.36").unwrap();
        let refused = check_image(&policy, "evil.example/netshoot:1").unwrap_err();
        assert_eq!(refused.code, 403);
        assert!(
            refused
                .message
                .contains("policy.images: nicolaka/netshoot:*, busybox:*")
        );

        policy.profiles = Profiles {
            allowed: vec![Profile::General, Profile::Restricted],
            default: Profile::General,
        };
        assert_eq!(profile(&policy, None).unwrap(), Profile::General);
        assert_eq!(
            profile(&policy, Some(Profile::Restricted)).unwrap(),
            Profile::Restricted
        );
        let refused = profile(&policy, Some(Profile::Sysadmin)).unwrap_err();
        assert!(
            refused.message.contains("profile sysadmin is not allowed"),
            "{}",
            refused.message
        );

        let sessions = Arc::new(Sessions::default());
        let max = MaxSessions {
            total: 3,
            per_user: 2,
            per_target: 2,
        };
        let a = sessions.admit(&max, "alice", "t1").unwrap();
        let _b = sessions.admit(&max, "alice", "t2").unwrap();
        let third = sessions.admit(&max, "alice", "t3").unwrap_err();
        assert_eq!(third.code, 429);
        assert!(third.message.contains("perUser"), "{}", third.message);
        let _c = sessions.admit(&max, "bob", "t1").unwrap();
        assert!(
            sessions
                .admit(&max, "carol", "t9")
                .unwrap_err()
                .message
                .contains("total")
        );
        drop(a);
        let again = sessions.admit(&max, "carol", "t1");
        assert!(again.is_ok());
        drop(again);
        assert!(sessions.admit(&max, "dave", "t1").is_ok());
    }
}
