//! The OCI runtime spec of a debug container, built from its image's config and the target's
//! namespaces, and the process spec of a session exec'd into it. Pure: no runtime is asked
//! anything here.
//!
//! The container's process is `kdbg-init hold` (bind-mounted read-only from the node); a
//! session's process is `kdbg-init run` around the user's command. Both have the image's
//! environment, working directory and numeric user, the default capabilities plus SYS_PTRACE
//! and SYS_ADMIN, and live in the target's pid, network, ipc and uts namespaces, given as
//! `/proc/<pid>/ns/*` paths; a debug container of the node itself joins those of a process in
//! the node's namespaces (`kthreadd`) and has the node's `/` at `/host` ([`mount_host_root`]).

use std::path::Path;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::{ProcessSpec, Profile, init};

/// The `config` part of an OCI image config: what the image says to run, and how.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfig {
    /// `Entrypoint`.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// `Cmd`.
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// `Env`, `KEY=value` entries.
    #[serde(default)]
    pub env: Option<Vec<String>>,
    /// `WorkingDir`.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// `User`: `uid`, `uid:gid`, or a name.
    #[serde(default)]
    pub user: Option<String>,
}

/// Why an image's config cannot make a debug container's spec.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The image config document does not parse.
    #[error("the image config is not valid JSON: {0}")]
    Json(serde_json::Error),
    /// The image's `User` is a name, which would need the image's `/etc/passwd`.
    #[error(
        "the debug image runs as user {user:?}; only numeric uid[:gid] users are supported, use an image with a numeric USER"
    )]
    NamedUser {
        /// The image's `User`, trimmed.
        user: String,
    },
}

impl ImageConfig {
    /// Reads the `config` object of an OCI (or Docker) image config document.
    pub fn from_image_config(json: &[u8]) -> Result<ImageConfig, SpecError> {
        #[derive(Deserialize)]
        struct Document {
            #[serde(default)]
            config: Option<ImageConfig>,
        }
        let doc: Document = serde_json::from_slice(json).map_err(SpecError::Json)?;
        Ok(doc.config.unwrap_or_default())
    }
}

/// Capabilities runc grants by default (containerd's default spec), before ours are added.
const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// `uid[:gid]` of the image's user. Names would need the image's /etc/passwd; they are
/// refused with a way out rather than guessed.
fn user(image: &ImageConfig) -> Result<(u32, u32), SpecError> {
    let user = image.user.as_deref().unwrap_or("").trim();
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (uid, gid) = user.split_once(':').unwrap_or((user, "0"));
    match (uid.parse::<u32>(), gid.parse::<u32>()) {
        (Ok(uid), Ok(gid)) => Ok((uid, gid)),
        _ => Err(SpecError::NamedUser {
            user: user.to_owned(),
        }),
    }
}

/// The OCI runtime spec (JSON) of a debug container from `image`, held by the `kdbg-init` at
/// `init` on the node, joining the namespaces of the process `target_pid`, allowed what
/// `profile` allows.
pub fn runtime_spec(
    init: &Path,
    image: &ImageConfig,
    target_pid: u32,
    profile: Profile,
) -> Result<Value, SpecError> {
    let (uid, gid) = user(image)?;
    let mut env = image.env.clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    let caps: Vec<String> = DEFAULT_CAPABILITIES
        .iter()
        .map(|c| (*c).to_owned())
        .chain(profile.capabilities().iter().map(|c| format!("CAP_{c}")))
        .collect();
    let mut spec = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid},
            "args": init::hold_args(),
            "env": env,
            "cwd": image.working_dir.clone().filter(|d| !d.is_empty()).unwrap_or_else(|| "/".into()),
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs"},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
            {"destination": init::PATH, "type": "bind", "source": init.display().to_string(), "options": ["rbind", "ro"]}
        ],
        "linux": {
            "namespaces": [{"type": "mount"}, {"type": "cgroup"}],
            "seccomp": crate::seccomp_profile(profile),
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    });
    join(&mut spec, target_pid);
    Ok(spec)
}

/// The namespaces of the target the spec joins: the PID in its `/proc/<pid>/ns/*` paths.
const JOINED: [(&str, &str); 4] = [
    ("pid", "pid"),
    ("network", "net"),
    ("ipc", "ipc"),
    ("uts", "uts"),
];

/// Points `spec` at the namespaces of process `target_pid` (again, for a target that
/// restarted since the container was made).
pub fn join(spec: &mut Value, target_pid: u32) {
    let Some(namespaces) = spec["linux"]["namespaces"].as_array_mut() else {
        return;
    };
    namespaces.retain(|n| !JOINED.iter().any(|(kind, _)| n["type"] == *kind));
    for (kind, name) in JOINED {
        namespaces.push(json!({"type": kind, "path": format!("/proc/{target_pid}/ns/{name}")}));
    }
}

/// Gives a node debug container the node's root filesystem, read-write, at
/// [`crate::HOST_ROOT`] (as `kubectl debug node/` does): what the runtime sees as `/`,
/// recursively, so the node's other mounts come along.
pub fn mount_host_root(spec: &mut Value) {
    if let Some(mounts) = spec["mounts"].as_array_mut() {
        mounts.push(json!({
            "destination": crate::HOST_ROOT, "type": "bind", "source": "/",
            "options": ["rbind", "rw"]
        }));
    }
}

/// The PID whose namespaces `spec` joins.
pub fn joined_pid(spec: &Value) -> Option<u32> {
    spec["linux"]["namespaces"]
        .as_array()?
        .iter()
        .find(|n| n["type"] == "pid")?["path"]
        .as_str()?
        .strip_prefix("/proc/")?
        .split('/')
        .next()?
        .parse()
        .ok()
}

/// The process spec of a session exec'd into a container with `spec`: the container's
/// process (user, environment, capabilities), running `kdbg-init run` around the command.
pub fn exec_process(spec: &Value, process: &ProcessSpec) -> Value {
    let mut exec = spec["process"].clone();
    exec["args"] = json!(init::run_args(process));
    exec["terminal"] = json!(process.tty);
    if let Some(env) = exec["env"].as_array_mut() {
        env.extend(init::run_env(process).into_iter().map(Value::from));
    }
    if process.tty
        && let Some(env) = exec["env"].as_array_mut()
        && !env
            .iter()
            .any(|e| e.as_str().is_some_and(|e| e.starts_with("TERM=")))
    {
        env.push(json!("TERM=xterm"));
    }
    exec
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> ImageConfig {
        ImageConfig::from_image_config(
            br#"{"architecture":"amd64","config":{"Entrypoint":["/bin/sh","-c"],"Cmd":["echo hi"],
                "Env":["PATH=/bin","A=1"],"WorkingDir":"/work","User":"1000:1000"},
                "rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap()
    }

    fn process(command: &[&str], tty: bool) -> ProcessSpec {
        ProcessSpec {
            session: "s1".into(),
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            tty,
            stdin: tty,
            stdout: true,
            stderr: !tty,
            grace: std::time::Duration::from_secs(3),
            target_pid: None,
            chroot: false,
        }
    }

    #[test]
    fn the_container_holds_and_a_session_runs_the_users_command_under_init() {
        let spec = runtime_spec(
            Path::new("/run/kdbg/kdbg-init"),
            &image(),
            4242,
            Profile::Sysadmin,
        )
        .unwrap();
        assert_eq!(
            spec["process"]["args"],
            json!(["/.kubectl-debug/init", "hold"])
        );
        assert_eq!(spec["process"]["terminal"], false);
        let mount = spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == init::PATH)
            .unwrap();
        assert_eq!(mount["source"], "/run/kdbg/kdbg-init");
        assert_eq!(mount["options"], json!(["rbind", "ro"]));
        let exec = exec_process(&spec, &process(&["ps", "aux"], true));
        assert_eq!(
            exec["args"],
            json!([
                "/.kubectl-debug/init",
                "run",
                "--session",
                "s1",
                "--grace",
                "3",
                "--",
                "ps",
                "aux"
            ])
        );
        assert_eq!(exec["terminal"], true);
        assert_eq!(exec["cwd"], "/work");
        assert!(
            exec["env"]
                .as_array()
                .unwrap()
                .contains(&json!("TERM=xterm"))
        );
        // A --chroot session: the flag to kdbg-init, the target's PID in its environment.
        let chrooted = ProcessSpec {
            target_pid: Some(7),
            chroot: true,
            ..process(&["cat", "/marker"], false)
        };
        let exec = exec_process(&spec, &chrooted);
        assert_eq!(exec["args"][6], "--chroot");
        assert_eq!(exec["args"][7], "--");
        let env = exec["env"].as_array().unwrap();
        assert!(env.contains(&json!("KDBG_TARGET_PID=7")), "{env:?}");
        assert!(env.contains(&json!("PATH=/bin")), "{env:?}");
    }

    #[test]
    fn a_restarted_target_is_joined_anew() {
        let mut spec = runtime_spec(Path::new("/i"), &image(), 4242, Profile::Sysadmin).unwrap();
        assert_eq!(joined_pid(&spec), Some(4242));
        join(&mut spec, 777);
        assert_eq!(joined_pid(&spec), Some(777));
        let namespaces = spec["linux"]["namespaces"].as_array().unwrap();
        assert_eq!(namespaces.len(), 6, "{namespaces:?}");
    }

    #[test]
    fn the_spec_joins_the_targets_namespaces_with_the_image_settings() {
        let value = runtime_spec(Path::new("/i"), &image(), 4242, Profile::Sysadmin).unwrap();
        let namespaces = value["linux"]["namespaces"].as_array().unwrap();
        for (kind, name) in [
            ("pid", "pid"),
            ("network", "net"),
            ("ipc", "ipc"),
            ("uts", "uts"),
        ] {
            assert!(
                namespaces
                    .iter()
                    .any(|n| n["type"] == kind && n["path"] == format!("/proc/4242/ns/{name}")),
                "{kind}"
            );
        }
        // The mount namespace is the debug container's own: it sees its image's files.
        assert!(
            namespaces
                .iter()
                .any(|n| n["type"] == "mount" && n.get("path").is_none())
        );
        let process = &value["process"];
        assert_eq!(process["cwd"], "/work");
        assert_eq!(process["user"], json!({"uid": 1000, "gid": 1000}));
        let env: Vec<&str> = process["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        assert_eq!(env, ["PATH=/bin", "A=1"]);
        let caps = process["capabilities"]["effective"].as_array().unwrap();
        assert!(caps.contains(&json!("CAP_SYS_PTRACE")) && caps.contains(&json!("CAP_SYS_ADMIN")));
        // An allow-list: SYS_ADMIN, but no mounts (not allowed, so refused by default).
        let seccomp = &value["linux"]["seccomp"];
        assert_eq!(seccomp["defaultAction"], "SCMP_ACT_ERRNO");
        let allowed = |v: &Value| -> Vec<Value> {
            v["linux"]["seccomp"]["syscalls"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|rule| rule["action"] == "SCMP_ACT_ALLOW" && rule.get("args").is_none())
                .flat_map(|rule| rule["names"].as_array().unwrap().clone())
                .collect()
        };
        for name in ["mount", "umount2", "fsmount", "move_mount"] {
            assert!(!allowed(&value).contains(&json!(name)), "{name}");
        }
        // Node-wide tracing (bpf, perf_event_open) for sysadmin only; each profile its own
        // capabilities.
        assert!(allowed(&value).contains(&json!("bpf")));
        for (profile, caps) in [
            (Profile::General, vec!["CAP_SYS_PTRACE"]),
            (Profile::Netadmin, vec!["CAP_NET_ADMIN"]),
            (Profile::Restricted, vec![]),
        ] {
            let spec = runtime_spec(Path::new("/i"), &image(), 4242, profile).unwrap();
            for call in ["bpf", "perf_event_open", "mount", "unshare"] {
                assert!(!allowed(&spec).contains(&json!(call)), "{profile}: {call}");
            }
            let effective = spec["process"]["capabilities"]["effective"]
                .as_array()
                .unwrap()
                .clone();
            // (NET_RAW is among the runtime's defaults, as Docker's.)
            for cap in ["CAP_SYS_PTRACE", "CAP_SYS_ADMIN", "CAP_NET_ADMIN"] {
                assert_eq!(
                    effective.contains(&json!(cap)),
                    caps.contains(&cap),
                    "{profile}: {cap}"
                );
            }
        }
    }

    #[test]
    fn named_users_are_refused_with_a_way_out() {
        let mut img = image();
        img.user = Some("nobody".into());
        let err = runtime_spec(Path::new("/i"), &img, 1, Profile::Sysadmin)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nobody") && err.contains("numeric"), "{err}");
    }
}

#[cfg(test)]
mod node_tests {
    use super::*;

    #[test]
    fn a_node_container_has_the_node_root_at_host() {
        let mut spec = runtime_spec(
            Path::new("/x/kdbg-init"),
            &ImageConfig::default(),
            2,
            Profile::General,
        )
        .unwrap();
        mount_host_root(&mut spec);
        let host = spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == crate::HOST_ROOT)
            .unwrap();
        assert_eq!(host["source"], "/");
        assert_eq!(host["options"], json!(["rbind", "rw"]));
        assert_eq!(joined_pid(&spec), Some(2));
    }
}
