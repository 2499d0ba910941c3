//! The stand-in kubelet's Docker runtime (`kubelet::runtime::Docker`): the test Docker engine,
//! through `/usr/bin/docker`, making a pod as cri-dockerd makes one. A sandbox container holds
//! the pod's own network namespace (`--network none`: loopback only) and IPC namespace; each
//! container joins them.
//! Names are cri-dockerd's (`k8s_<container>_<pod>_<namespace>_<uid>_<attempt>`, the sandbox's
//! container being `POD`) and so are the `io.kubernetes.*` labels (the agent checks them); the
//! stand-in's own labels ([`SERVER_LABEL`], [`POD_LABEL`]) find what it made, to remove it.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::process::Command;

use k8s_openapi::api::core::v1::{Container, Pod};
use serde::Deserialize;

/// The label naming the stand-in (one per [`super::ApiServer`]) that made a container.
pub const SERVER_LABEL: &str = "kdbg-standin.server";
/// The label naming a container's pod, `namespace/name`.
pub const POD_LABEL: &str = "kdbg-standin.pod";

/// Runs `docker` on the test engine: its stdout, or why it failed (its stderr, one line).
pub(crate) fn docker<I, S>(args: I) -> Result<String, String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = Command::new("/usr/bin/docker")
        .args(args)
        .env("DOCKER_HOST", crate::docker_host())
        .output()
        .map_err(|e| format!("running /usr/bin/docker: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(err
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("Run 'docker"))
            .collect::<Vec<_>>()
            .join(" "))
    }
}

/// What a pod's containers carry and are called, for the stand-in `server`.
pub(crate) struct Naming<'a> {
    pub pod: &'a Pod,
    pub server: &'a str,
}

impl Naming<'_> {
    /// The pod's namespace, name and UID.
    pub fn meta(&self) -> (&str, &str, &str) {
        let m = &self.pod.metadata;
        (
            m.namespace.as_deref().unwrap_or("default"),
            m.name.as_deref().unwrap_or_default(),
            m.uid.as_deref().unwrap_or_default(),
        )
    }

    /// cri-dockerd's name for `container` (`POD`: the sandbox) at `attempt`.
    pub fn name(&self, container: &str, attempt: u32) -> String {
        let (namespace, name, uid) = self.meta();
        format!("k8s_{container}_{name}_{namespace}_{uid}_{attempt}")
    }

    /// The labels of `container` (`POD`: the sandbox) the kubelet and the stand-in read:
    /// the `io.kubernetes.*` ones, then [`POD_LABEL`] and [`SERVER_LABEL`].
    pub fn labels_of(&self, container: &str) -> Vec<(&'static str, String)> {
        let (namespace, name, uid) = self.meta();
        vec![
            ("io.kubernetes.pod.namespace", namespace.to_owned()),
            ("io.kubernetes.pod.name", name.to_owned()),
            ("io.kubernetes.pod.uid", uid.to_owned()),
            ("io.kubernetes.container.name", container.to_owned()),
            (POD_LABEL, format!("{namespace}/{name}")),
            (SERVER_LABEL, self.server.to_owned()),
        ]
    }

    /// `--label` arguments for `container` (`POD`: the sandbox).
    fn labels(&self, container: &str) -> Vec<String> {
        let kind = if container == "POD" {
            "podsandbox"
        } else {
            "container"
        };
        let mut labels = self.labels_of(container);
        labels.insert(4, ("io.kubernetes.docker.type", kind.to_owned()));
        labels
            .into_iter()
            .flat_map(|(k, v)| ["--label".to_owned(), format!("{k}={v}")])
            .collect()
    }

    /// `docker run` arguments for the sandbox, from `image`: it sleeps, holding the pod's
    /// namespaces and its hostname.
    pub fn sandbox(&self, image: &str) -> Vec<String> {
        let (_, name, _) = self.meta();
        let mut args: Vec<String> = ["run", "--detach", "--pull", "never"]
            .map(String::from)
            .into();
        args.extend(["--name".into(), self.name("POD", 0)]);
        args.extend(self.labels("POD"));
        let hostname: String = name.chars().take(63).collect();
        args.extend(
            [
                "--network",
                "none",
                "--ipc",
                "shareable",
                "--hostname",
                hostname.trim_end_matches(['-', '.']),
                "--entrypoint",
                "sleep",
                image,
                "infinity",
            ]
            .map(String::from),
        );
        args
    }

    /// `docker create` arguments for `container` at `attempt`, joining `sandbox`, with its
    /// resolved `env` and `mounts` (`-v` specifications).
    pub fn container(
        &self,
        container: &Container,
        attempt: u32,
        sandbox: &str,
        env: &[(String, String)],
        mounts: &[String],
    ) -> Vec<String> {
        let spec = self.pod.spec.clone().unwrap_or_default();
        let mut args: Vec<String> = ["create", "--pull", "never"].map(String::from).into();
        args.extend(["--name".into(), self.name(&container.name, attempt)]);
        args.extend(self.labels(&container.name));
        let mut flag = |name: &str, value: String| args.extend([name.to_owned(), value]);
        flag("--network", format!("container:{sandbox}"));
        if spec.host_ipc == Some(true) {
            flag("--ipc", "host".into());
        } else {
            flag("--ipc", format!("container:{sandbox}"));
        }
        if spec.host_pid == Some(true) {
            flag("--pid", "host".into());
        } else if spec.share_process_namespace == Some(true) {
            flag("--pid", format!("container:{sandbox}"));
        }
        for (name, value) in env {
            flag("--env", format!("{name}={value}"));
        }
        for mount in mounts {
            flag("--volume", mount.clone());
        }
        if let Some(dir) = &container.working_dir {
            flag("--workdir", dir.clone());
        }
        let pod_context = spec.security_context.unwrap_or_default();
        let context = container.security_context.clone().unwrap_or_default();
        let user = context.run_as_user.or(pod_context.run_as_user);
        let group = context.run_as_group.or(pod_context.run_as_group);
        if let Some(user) = user {
            let group = group.map(|g| format!(":{g}")).unwrap_or_default();
            flag("--user", format!("{user}{group}"));
        }
        for group in pod_context.supplemental_groups.iter().flatten() {
            flag("--group-add", group.to_string());
        }
        let capabilities = context.capabilities.unwrap_or_default();
        for cap in capabilities.drop.iter().flatten() {
            flag("--cap-drop", cap.clone());
        }
        for cap in capabilities.add.iter().flatten() {
            flag("--cap-add", cap.clone());
        }
        if context.allow_privilege_escalation == Some(false) {
            flag("--security-opt", "no-new-privileges".into());
        }
        // The kubelet's default profile is Unconfined (SeccompDefault is off by default).
        let seccomp = context
            .seccomp_profile
            .or(pod_context.seccomp_profile)
            .map(|p| p.type_);
        if seccomp.as_deref() != Some("RuntimeDefault") {
            flag("--security-opt", "seccomp=unconfined".into());
        }
        if context.privileged == Some(true) {
            args.push("--privileged".into());
        }
        if context.read_only_root_filesystem == Some(true) {
            args.push("--read-only".into());
        }
        if container.stdin == Some(true) {
            args.push("--interactive".into());
        }
        if container.tty == Some(true) {
            args.push("--tty".into());
        }
        // command replaces the image's entrypoint (and so its CMD), args its CMD.
        let command = container.command.clone().unwrap_or_default();
        let mut rest = Vec::new();
        if let Some((entrypoint, more)) = command.split_first() {
            args.extend(["--entrypoint".into(), entrypoint.clone()]);
            rest.extend_from_slice(more);
        }
        rest.extend(container.args.iter().flatten().cloned());
        args.push(container.image.clone().unwrap_or_default());
        args.extend(rest);
        args
    }
}

/// A container's state, as `docker inspect` gives it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct State {
    pub status: String,
    pub running: bool,
    pub exit_code: i32,
    pub error: String,
    pub started_at: String,
    pub finished_at: String,
    #[serde(rename = "OOMKilled")]
    pub oom_killed: bool,
    pub pid: u32,
}

/// A container as `docker inspect` gives it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct Inspected {
    pub id: String,
    pub image: String,
    pub state: State,
}

/// The containers of `ids` that exist, by the ID given.
pub(crate) fn inspect(ids: &[String]) -> HashMap<String, Inspected> {
    if ids.is_empty() {
        return HashMap::new();
    }
    let out = Command::new("/usr/bin/docker")
        .arg("inspect")
        .args(ids)
        .env("DOCKER_HOST", crate::docker_host())
        .output();
    // Some may be gone: docker still prints the others.
    let found: Vec<Inspected> = out
        .ok()
        .and_then(|o| serde_json::from_slice(&o.stdout).ok())
        .unwrap_or_default();
    ids.iter()
        .filter_map(|id| {
            let hit = found.iter().find(|c| c.id.starts_with(id.as_str()))?;
            Some((id.clone(), hit.clone()))
        })
        .collect()
}

/// Whether `image` names a registry on this machine's loopback: the only ones the test world
/// has (the engine must not reach the Internet).
pub(crate) fn loopback_registry(image: &str) -> bool {
    let Some((host, _)) = image.split_once('/') else {
        return false;
    };
    host.starts_with("127.") || host.starts_with("localhost") || host.starts_with("[::1]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_is_made_as_the_pod_says() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u-1"},
            "spec": {
                "hostPID": true,
                "securityContext": {"runAsUser": 1000},
                "containers": [{
                    "name": "app", "image": "kdbg-busybox:test",
                    "command": ["sh", "-c"], "args": ["echo hi"],
                    "securityContext": {
                        "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
                        "seccompProfile": {"type": "RuntimeDefault"},
                        "capabilities": {"drop": ["ALL"], "add": ["SYS_PTRACE"]}
                    }
                }]
            }
        }))
        .unwrap();
        let naming = Naming {
            pod: &pod,
            server: "s",
        };
        let container = &pod.spec.as_ref().unwrap().containers[0];
        let args = naming
            .container(
                container,
                2,
                "sandbox-id",
                &[("A".into(), "b c".into())],
                &["/h:/c:ro".into()],
            )
            .join(" ");
        for expected in [
            "--name k8s_app_web_shop_u-1_2",
            "--label io.kubernetes.pod.namespace=shop",
            "--label io.kubernetes.container.name=app",
            "--label kdbg-standin.pod=shop/web",
            "--network container:sandbox-id",
            "--pid host",
            "--env A=b c",
            "--volume /h:/c:ro",
            "--user 1000",
            "--cap-drop ALL --cap-add SYS_PTRACE",
            "--security-opt no-new-privileges",
            "--read-only",
            "--entrypoint sh kdbg-busybox:test -c echo hi",
        ] {
            assert!(args.contains(expected), "{expected:?} in {args}");
        }
        assert!(!args.contains("seccomp=unconfined"), "{args}");
        let sandbox = naming.sandbox("img").join(" ");
        assert!(
            sandbox.contains("--name k8s_POD_web_shop_u-1_0"),
            "{sandbox}"
        );
        assert!(sandbox.contains("--network none"), "{sandbox}");
    }

    #[test]
    fn only_loopback_registries_are_pulled_from() {
        assert!(loopback_registry("127.0.0.1:5000/kdbg-tools:test"));
        assert!(loopback_registry("localhost:5000/x"));
        assert!(!loopback_registry("kdbg-busybox:test"));
        assert!(!loopback_registry("docker.io/library/busybox"));
    }
}
