//! How the CRI plugin turns a pod's container into a containerd container, pure: the image
//! reference it resolves, the `ctr containers create` options and process arguments, and what
//! `ctr` cannot say and is written into the runtime spec after (user and groups,
//! capabilities, the sandbox's hostname).

use k8s_openapi::api::core::v1::{Container, Pod};
use kdbg_runtimes::containerd::runtime_spec::ImageConfig;
use serde_json::Value;

use super::super::runtime::Sandbox;
use crate::apiserver::setup::Bind;

/// `image` as containerd names it, as the CRI plugin resolves a pod's image: a name without
/// a registry is Docker Hub's (`docker.io/library/` for a single component), without a tag
/// or digest `:latest`.
pub(crate) fn reference(image: &str) -> String {
    let (first, _) = image.split_once('/').unwrap_or(("", image));
    let has_domain = first.contains(['.', ':']) || first == "localhost";
    let mut name = match (has_domain, image.contains('/')) {
        (true, _) => image.to_owned(),
        (false, true) => format!("docker.io/{image}"),
        (false, false) => format!("docker.io/library/{image}"),
    };
    let last = name.rsplit('/').next().unwrap_or_default();
    if !last.contains([':', '@']) {
        name.push_str(":latest");
    }
    name
}

/// `reference` without its tag or digest: the repository an image ID names it by.
pub(crate) fn repository(reference: &str) -> &str {
    let cut = reference.rfind('@').or_else(|| {
        let slash = reference.rfind('/').unwrap_or(0);
        reference[slash..].rfind(':').map(|at| slash + at)
    });
    cut.map_or(reference, |at| &reference[..at])
}

/// Whether `container`'s process arguments need its image's entrypoint: args without a
/// command (command replaces the image's entrypoint and cmd, args its cmd; empty ones are
/// none).
pub(crate) fn needs_entrypoint(container: &Container) -> bool {
    let given = |list: &Option<Vec<String>>| list.as_ref().is_some_and(|l| !l.is_empty());
    !given(&container.command) && given(&container.args)
}

/// `container`'s process arguments over its image's `config` (read only when
/// [`needs_entrypoint`]): empty when it has neither command nor args, so that `ctr` runs the
/// image's entrypoint and cmd.
pub(crate) fn process_args(container: &Container, config: Option<&ImageConfig>) -> Vec<String> {
    let command = container.command.clone().unwrap_or_default();
    let args = container.args.clone().unwrap_or_default();
    if !command.is_empty() {
        return command.into_iter().chain(args).collect();
    }
    if args.is_empty() {
        return Vec::new();
    }
    let entrypoint = config
        .and_then(|c| c.entrypoint.clone())
        .unwrap_or_default();
    entrypoint.into_iter().chain(args).collect()
}

/// `ctr containers create` options for `container` of `pod` joining `sandbox`, with its
/// `labels`, resolved `env` and `binds`; `node_pid` is a process in the node's namespaces
/// (hostPID, hostIPC). Boolean options say `=true`: ctr takes the argument after a bare one
/// for its value, and so the image for the container's ID.
pub(crate) fn options(
    pod: &Pod,
    container: &Container,
    labels: &[(&str, String)],
    sandbox: &Sandbox,
    env: &[(String, String)],
    binds: &[Bind],
    node_pid: u32,
) -> Vec<String> {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut args = Vec::new();
    let mut flag = |name: &str, value: String| args.extend([name.to_owned(), value]);
    for (key, value) in labels {
        flag("--label", format!("{key}={value}"));
    }
    let pid = sandbox.pid.unwrap_or_default();
    let sandbox_ns = |kind: &str| format!("{kind}:/proc/{pid}/ns/{kind}");
    let node_ns = |kind: &str| format!("{kind}:/proc/{node_pid}/ns/{kind}");
    flag(
        "--with-ns",
        sandbox_ns("net").replacen("net:", "network:", 1),
    );
    flag("--with-ns", sandbox_ns("uts"));
    if spec.host_ipc == Some(true) {
        flag("--with-ns", node_ns("ipc"));
    } else {
        flag("--with-ns", sandbox_ns("ipc"));
    }
    if spec.host_pid == Some(true) {
        flag("--with-ns", node_ns("pid"));
    } else if spec.share_process_namespace == Some(true) {
        flag("--with-ns", sandbox_ns("pid"));
    }
    for (name, value) in env {
        flag("--env", format!("{name}={value}"));
    }
    for bind in binds {
        let access = if bind.read_only { "ro" } else { "rw" };
        let mount = format!(
            "type=bind,src={},dst={},options=rbind:{access}",
            bind.host.display(),
            bind.container
        );
        flag("--mount", mount);
    }
    if let Some(dir) = &container.working_dir {
        flag("--cwd", dir.clone());
    }
    let pod_context = spec.security_context.unwrap_or_default();
    let context = container.security_context.clone().unwrap_or_default();
    // The kubelet's default profile is Unconfined (SeccompDefault is off by default): ctr
    // applies none unless told.
    let seccomp = context
        .seccomp_profile
        .or(pod_context.seccomp_profile)
        .map(|p| p.type_);
    if seccomp.as_deref() == Some("RuntimeDefault") {
        args.push("--seccomp=true".into());
    }
    if context.privileged == Some(true) {
        args.push("--privileged=true".into());
    }
    if context.read_only_root_filesystem == Some(true) {
        args.push("--read-only=true".into());
    }
    // ctr sets no_new_privs unless told; Kubernetes only when asked.
    if context.allow_privilege_escalation != Some(false) {
        args.push("--allow-new-privs=true".into());
    }
    args
}

/// Writes into the runtime spec of `container` of `pod` what `ctr` has no options for: the
/// user and groups (`runAsUser`, `runAsGroup`, `supplementalGroups`) and the capabilities
/// added and dropped (`ALL` too; a privileged container keeps all). `false` if nothing
/// changed.
pub(crate) fn patch(spec: &mut Value, pod: &Pod, container: &Container) -> bool {
    let pod_context = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.clone())
        .unwrap_or_default();
    let context = container.security_context.clone().unwrap_or_default();
    let mut changed = false;
    let user = &mut spec["process"]["user"];
    if let Some(uid) = context.run_as_user.or(pod_context.run_as_user) {
        user["uid"] = uid.into();
        changed = true;
    }
    if let Some(gid) = context.run_as_group.or(pod_context.run_as_group) {
        user["gid"] = gid.into();
        changed = true;
    }
    if let Some(groups) = &pod_context.supplemental_groups {
        let mut all: Vec<i64> = vec![user["gid"].as_i64().unwrap_or(0)];
        all.extend(groups);
        user["additionalGids"] = all.into();
        changed = true;
    }
    let caps = context.capabilities.unwrap_or_default();
    let (add, drop) = (caps.add.unwrap_or_default(), caps.drop.unwrap_or_default());
    if context.privileged != Some(true) && (!add.is_empty() || !drop.is_empty()) {
        let named = |c: &String| {
            let c = c.to_ascii_uppercase();
            if c == "ALL" || c.starts_with("CAP_") {
                c
            } else {
                format!("CAP_{c}")
            }
        };
        let (add, drop): (Vec<String>, Vec<String>) = (
            add.iter().map(named).collect(),
            drop.iter().map(named).collect(),
        );
        let sets = &mut spec["process"]["capabilities"];
        for set in [
            "bounding",
            "effective",
            "permitted",
            "inheritable",
            "ambient",
        ] {
            let Some(list) = sets[set].as_array() else {
                continue;
            };
            let mut kept: Vec<String> = list
                .iter()
                .filter_map(Value::as_str)
                .filter(|c| !drop.iter().any(|d| d == "ALL" || d == c))
                .map(str::to_owned)
                .collect();
            // Added to the sets the CRI plugin gives (not ambient, not inheritable).
            if matches!(set, "bounding" | "effective" | "permitted") {
                for cap in add.iter().filter(|a| *a != "ALL") {
                    if !kept.contains(cap) {
                        kept.push(cap.clone());
                    }
                }
            }
            sets[set] = kept.into();
        }
        changed = true;
    }
    changed
}

/// Writes the sandbox's hostname (the pod's name, as the kubelet sets it) into its spec.
pub(crate) fn hostname(spec: &mut Value, pod: &Pod) {
    let name: String = pod
        .metadata
        .name
        .as_deref()
        .unwrap_or_default()
        .chars()
        .take(63)
        .collect();
    spec["hostname"] = name.trim_end_matches(['-', '.']).into();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn images_resolve_as_the_cri_plugin_resolves_them() {
        assert_eq!(
            reference("kdbg-distroless:test"),
            "docker.io/library/kdbg-distroless:test"
        );
        assert_eq!(reference("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(reference("org/app:1"), "docker.io/org/app:1");
        assert_eq!(
            reference("127.0.0.1:5000/kdbg-tools:test"),
            "127.0.0.1:5000/kdbg-tools:test"
        );
        assert_eq!(reference("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(repository("127.0.0.1:5000/a/b:test"), "127.0.0.1:5000/a/b");
        assert_eq!(repository("127.0.0.1:5000/a@sha256:00"), "127.0.0.1:5000/a");
        assert_eq!(repository("127.0.0.1:5000/a"), "127.0.0.1:5000/a");
    }

    #[test]
    fn command_replaces_the_entrypoint_and_args_the_cmd() {
        let config = ImageConfig {
            entrypoint: Some(vec!["/app".into()]),
            cmd: Some(vec!["serve".into()]),
            ..ImageConfig::default()
        };
        let c = |json| serde_json::from_value::<Container>(json).unwrap();
        let both = c(serde_json::json!({"name": "a", "command": ["sh", "-c"], "args": ["x"]}));
        assert_eq!(process_args(&both, Some(&config)), ["sh", "-c", "x"]);
        let args = c(serde_json::json!({"name": "a", "args": ["--v"]}));
        assert!(needs_entrypoint(&args));
        assert_eq!(process_args(&args, Some(&config)), ["/app", "--v"]);
        let none = c(serde_json::json!({"name": "a"}));
        assert!(!needs_entrypoint(&none));
        assert!(process_args(&none, Some(&config)).is_empty());
    }

    #[test]
    fn options_and_spec_follow_the_pod() {
        let pod = pod(serde_json::json!({
            "metadata": {"name": "web-", "namespace": "shop", "uid": "u-1"},
            "spec": {
                "hostPID": true,
                "securityContext": {"runAsUser": 1000, "supplementalGroups": [7]},
                "containers": [{
                    "name": "app", "image": "x", "workingDir": "/w",
                    "securityContext": {
                        "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
                        "seccompProfile": {"type": "RuntimeDefault"},
                        "capabilities": {"drop": ["ALL"], "add": ["SYS_PTRACE"]}
                    }
                }]
            }
        }));
        let container = &pod.spec.as_ref().unwrap().containers[0];
        let sandbox = Sandbox {
            id: "s".into(),
            pid: Some(42),
        };
        let bind = Bind {
            host: "/h".into(),
            container: "/c".into(),
            read_only: true,
        };
        let labels = [("io.kubernetes.container.name", "app".to_owned())];
        let env = [("A".to_owned(), "b c".to_owned())];
        let args = options(&pod, container, &labels, &sandbox, &env, &[bind], 9).join(" ");
        for expected in [
            "--label io.kubernetes.container.name=app",
            "--with-ns network:/proc/42/ns/net",
            "--with-ns ipc:/proc/42/ns/ipc",
            "--with-ns pid:/proc/9/ns/pid",
            "--env A=b c",
            "--mount type=bind,src=/h,dst=/c,options=rbind:ro",
            "--cwd /w",
            "--seccomp",
            "--read-only",
        ] {
            assert!(args.contains(expected), "{expected:?} in {args}");
        }
        assert!(!args.contains("--allow-new-privs"), "{args}");
        let mut spec = serde_json::json!({"process": {
            "user": {"uid": 0, "gid": 0},
            "capabilities": {"bounding": ["CAP_CHOWN"], "effective": ["CAP_CHOWN"]}
        }});
        assert!(patch(&mut spec, &pod, container));
        assert_eq!(spec["process"]["user"]["uid"], 1000);
        assert_eq!(
            spec["process"]["user"]["additionalGids"],
            serde_json::json!([0, 7])
        );
        assert_eq!(
            spec["process"]["capabilities"]["bounding"],
            serde_json::json!(["CAP_SYS_PTRACE"])
        );
        hostname(&mut spec, &pod);
        assert_eq!(spec["hostname"], "web");
    }
}
