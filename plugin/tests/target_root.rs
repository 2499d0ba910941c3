//! The target's root filesystem in every session (`/target`, `$TARGET_ROOT`) and `--chroot`,
//! on both engines, through the pod verb and `local`: read-only targets, a target in the
//! node's PID namespace (hostPID), and nothing written into the target's files.

use kdbg_testkit as support;

use std::process::Command;
use std::time::Duration;

use support::apiserver::{Cluster, running_pod};
use support::engine::{ContainerdEngine, DockerEngine, Engine, Targeted};
use support::{CtdTarget, Target, containerd_socket, ctd_image, ctr, docker, image, plugin, run};
use support::{registry, text};

/// A target of one engine, started with engine options.
enum Started {
    Docker(Target),
    Containerd(CtdTarget),
}

impl Started {
    /// A target running `script`, its root filesystem read-only if `read_only`, in the
    /// node's PID namespace if `host_pid`.
    fn start(engine: &dyn Engine, read_only: bool, host_pid: bool, script: &str) -> Started {
        let mut options = Vec::new();
        match engine.name() {
            "docker" => {
                if read_only {
                    options.push("--read-only");
                }
                if host_pid {
                    options.extend(["--pid", "host"]);
                }
                Started::Docker(Target::start_with(&options, script))
            }
            _ => {
                if read_only {
                    options.push("--read-only");
                }
                if host_pid {
                    // kthreadd is in the node's namespaces (PID 1 may refuse to be inspected).
                    options.extend(["--with-ns", "pid:/proc/2/ns/pid"]);
                }
                Started::Containerd(CtdTarget::start_with(&options, script))
            }
        }
    }

    /// As a pod's status names it.
    fn pod_reference(&self) -> String {
        match self {
            Started::Docker(t) => t.pod_reference(),
            Started::Containerd(t) => t.reference(),
        }
    }

    /// Runs `sh -c script` in the target itself (not through kubectl-debug).
    fn exec(&self, script: &str) -> String {
        let out = match self {
            Started::Docker(t) => docker(&["exec", &t.name, "sh", "-c", script]),
            Started::Containerd(t) => {
                use std::sync::atomic::{AtomicUsize, Ordering};
                static N: AtomicUsize = AtomicUsize::new(0);
                let exec_id = format!("probe-{}", N.fetch_add(1, Ordering::Relaxed));
                ctr(
                    "k8s.io",
                    &[
                        "task",
                        "exec",
                        "--exec-id",
                        &exec_id,
                        &t.id,
                        "sh",
                        "-c",
                        script,
                    ],
                )
            }
        };
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    }

    /// What the target's own root filesystem holds, as the target sees it: every path on
    /// it (not its other mounts) with its size and time, and for Docker its `docker diff`.
    fn view(&self) -> String {
        let mut view = self.exec("find / -xdev -exec stat -c '%n %s %Y %i' {} + | sort");
        if let Started::Docker(t) = self {
            view.push_str(&text(&docker(&["diff", &t.name]).stdout));
        }
        view
    }

    /// Its main process's PID on this machine.
    fn pid(&self) -> u32 {
        let boxed: &dyn Targeted = match self {
            Started::Docker(t) => t,
            Started::Containerd(t) => t,
        };
        boxed.pid()
    }
}

/// A session in pod `pod`'s debug container: stdout, checked to succeed.
fn session(cluster: &Cluster, port: u16, pod: &str, args: &[&str]) -> String {
    let mut all = vec![pod];
    all.extend_from_slice(args);
    let out = run(&mut cluster.debug(port, &all), b"");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Waits until the target's script has written `/marker` (as the target sees it).
fn marker_written(target: &Started) {
    support::eventually(Duration::from_secs(20), "the target's marker", || {
        target.exec("cat /marker 2>/dev/null || true").trim() == "marker-t1"
    });
}

fn every_session_has_the_targets_root(engine: &dyn Engine) {
    let pod = format!("target-root-{}", engine.name());
    let target = Started::start(
        engine,
        false,
        false,
        "echo marker-t1 > /marker && exec sleep 3600",
    );
    marker_written(&target);
    let agent = engine.agent("");
    let cluster = Cluster::new("shop");
    cluster.api.add_pod(running_pod(
        "shop",
        &pod,
        &[("app", &target.pod_reference(), true)],
    ));
    let before = target.view();

    // /target is the target's root, through its PID 1; TARGET_ROOT says so.
    let out = session(
        &cluster,
        agent.port,
        &pod,
        &[
            "--",
            "sh",
            "-c",
            "echo $TARGET_ROOT; readlink /target; ls /target/marker; cat /target/marker",
        ],
    );
    assert_eq!(
        out, "/target\n/proc/1/root\n/target/marker\nmarker-t1\n",
        "{out}"
    );

    // --chroot: the target's files are /, the debug image's tools on PATH.
    let out = session(
        &cluster,
        agent.port,
        &pod,
        &["--chroot", "--", "cat", "/marker"],
    );
    assert_eq!(out, "marker-t1\n");
    let out = session(
        &cluster,
        agent.port,
        &pod,
        &[
            "--chroot",
            "--",
            "sh",
            "-c",
            "echo $TARGET_ROOT; echo $DEBUG_ROOT; echo $PATH; ls $DEBUG_ROOT/bin | head -1; pwd; test -e /target || echo no-target-link",
        ],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{out}");
    assert_eq!(lines[0], "/", "{out}");
    let debug_root = lines[1];
    assert!(
        debug_root.starts_with("/proc/") && debug_root.ends_with("/root"),
        "{out}"
    );
    assert!(
        lines[2]
            .split(':')
            .any(|dir| dir == format!("{debug_root}/bin")),
        "{out}"
    );
    assert!(!lines[3].is_empty(), "{out}");
    assert_eq!(lines[4], "/", "{out}");
    assert_eq!(lines[5], "no-target-link", "{out}");

    // The debug image's tools run from its root where the target has none: here only the
    // debug image's directories are on PATH (its busybox is static).
    let out = session(
        &cluster,
        agent.port,
        &pod,
        &[
            "--chroot",
            "--",
            "sh",
            "-c",
            "PATH=$DEBUG_ROOT/bin; cat /marker",
        ],
    );
    assert_eq!(out, "marker-t1\n");

    // A retained container's new sessions (attach) have it too.
    let name = format!("tr-keep-{}", engine.name());
    session(
        &cluster,
        agent.port,
        &pod,
        &["--retain", "--name", &name, "--", "true"],
    );
    let out = session(
        &cluster,
        agent.port,
        "attach",
        &[&pod, &name, "--chroot", "--", "cat", "/marker"],
    );
    assert_eq!(out, "marker-t1\n");
    let out = session(
        &cluster,
        agent.port,
        "attach",
        &[&pod, &name, "--", "cat", "/target/marker"],
    );
    assert_eq!(out, "marker-t1\n");
    session(&cluster, agent.port, "rm", &[&pod, &name]);

    // Nothing was written into the target's files.
    assert_eq!(target.view(), before, "the target's files changed");
}

#[test]
fn every_session_has_the_targets_root_on_docker() {
    every_session_has_the_targets_root(&DockerEngine);
}

#[test]
fn every_session_has_the_targets_root_on_containerd() {
    every_session_has_the_targets_root(&ContainerdEngine);
}

fn read_only_targets(engine: &dyn Engine) {
    let pod = format!("target-root-ro-{}", engine.name());
    let target = Started::start(engine, true, false, "exec sleep 3600");
    let agent = engine.agent("");
    let cluster = Cluster::new("shop");
    cluster.api.add_pod(running_pod(
        "shop",
        &pod,
        &[("app", &target.pod_reference(), true)],
    ));
    let before = target.view();
    let probe =
        "if touch /probe 2>/dev/null; then echo writable; else echo read-only; fi; ls /bin/sleep";
    let out = session(
        &cluster,
        agent.port,
        &pod,
        &["--chroot", "--", "sh", "-c", probe],
    );
    assert_eq!(out, "read-only\n/bin/sleep\n");
    let out = session(
        &cluster,
        agent.port,
        &pod,
        &["--", "sh", "-c", "ls /target/bin/sleep; echo $TARGET_ROOT"],
    );
    assert_eq!(out, "/target/bin/sleep\n/target\n");
    // Every profile may chroot (the target runs as the debug image's user here).
    let out = session(
        &cluster,
        agent.port,
        &pod,
        &[
            "--profile",
            "restricted",
            "--chroot",
            "--",
            "ls",
            "/bin/sleep",
        ],
    );
    assert_eq!(out, "/bin/sleep\n");
    assert_eq!(target.view(), before, "the target's files changed");
}

#[test]
fn a_read_only_target_root_is_chrooted_into_on_docker() {
    read_only_targets(&DockerEngine);
}

#[test]
fn a_read_only_target_root_is_chrooted_into_on_containerd() {
    read_only_targets(&ContainerdEngine);
}

fn host_pid_target(engine: &dyn Engine) {
    let pod = format!("target-root-hostpid-{}", engine.name());
    let target = Started::start(
        engine,
        false,
        true,
        "echo marker-t1 > /marker && exec sleep 3600",
    );
    marker_written(&target);
    let agent = engine.agent("");
    let cluster = Cluster::new("shop");
    cluster.api.add_pod(running_pod(
        "shop",
        &pod,
        &[("app", &target.pod_reference(), true)],
    ));
    // PID 1 is the node's init here: /target goes through the target's own main process.
    let out = session(
        &cluster,
        agent.port,
        &pod,
        &["--", "sh", "-c", "readlink /target; cat /target/marker"],
    );
    assert_eq!(
        out,
        format!("/proc/{}/root\nmarker-t1\n", target.pid()),
        "{out}"
    );
    let out = session(
        &cluster,
        agent.port,
        &pod,
        &["--chroot", "--", "cat", "/marker"],
    );
    assert_eq!(out, "marker-t1\n");
}

#[test]
fn a_host_pid_target_is_reached_through_its_own_process_on_docker() {
    host_pid_target(&DockerEngine);
}

#[test]
fn a_host_pid_target_is_reached_through_its_own_process_on_containerd() {
    host_pid_target(&ContainerdEngine);
}

/// `local` sessions: the same, without a cluster.
fn local(target: &Started, extra: &[&str]) -> Command {
    let mut cmd = plugin();
    match target {
        Started::Docker(t) => {
            cmd.args(["local", &t.reference(), "--image", &image()]);
        }
        Started::Containerd(t) => {
            cmd.args([
                "local",
                &t.reference(),
                "--runtime-endpoint",
                &containerd_socket(),
                "--insecure-registry",
                &registry(),
                "--image",
                &ctd_image(),
            ]);
        }
    }
    cmd.args(extra);
    cmd
}

fn local_sessions(engine: &dyn Engine) {
    let target = Started::start(
        engine,
        false,
        false,
        "echo marker-t1 > /marker && exec sleep 3600",
    );
    marker_written(&target);
    let before = target.view();
    let out = run(
        &mut local(
            &target,
            &["--", "sh", "-c", "echo $TARGET_ROOT; cat /target/marker"],
        ),
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "/target\nmarker-t1\n");
    let out = run(
        &mut local(&target, &["--chroot", "--", "cat", "/marker"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "marker-t1\n");
    assert_eq!(target.view(), before, "the target's files changed");
}

#[test]
fn local_sessions_have_the_targets_root_on_docker() {
    local_sessions(&DockerEngine);
}

#[test]
fn local_sessions_have_the_targets_root_on_containerd() {
    local_sessions(&ContainerdEngine);
}
