//! Debug containers that are retained, killed, or outlive their pod, on the real engines: each
//! fault provoked for real, then what the user sees and what is left checked. Every scenario
//! runs on Docker and on containerd; the pod verbs go through the Kubernetes API stand-in.

use kdbg_testkit as support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::apiserver::{Cluster, agent_pod, pod_on_node, running_pod};
use support::engine::{ContainerdEngine, DockerEngine, Engine, Targeted};
use support::{Agent, eventually, run, text};

/// The name of the debug container the plugin said it kept.
fn kept_name(stderr: &str, pod: &str) -> String {
    let marker = format!("kubectl-debug attach {pod} ");
    let start = stderr.find(&marker).expect("the way back is said") + marker.len();
    stderr[start..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

fn listed(cluster: &Cluster, agent: &Agent, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = run(&mut cluster.debug(agent.port, &all), b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Starts a session that runs until it is ended, and waits until its process runs; returns
/// the plugin and the debug container.
fn long_session(
    cluster: &Cluster,
    agent: &Agent,
    target: &dyn Targeted,
    pod: &str,
) -> (Child, String) {
    let mut child = cluster
        .debug(
            agent.port,
            &[pod, "--", "sh", "-c", "echo started; exec sleep 300"],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line, "started\n");
    let id = support::wait_for_debug_container(|| target.leftovers());
    (child, id)
}

fn retain_list_attach_rm(engine: &dyn Engine) {
    let pod = format!("{}-{}", "retain-list-attach-r", engine.name());
    let target = engine.target("exec sleep 3600");
    let mut agent = engine.agent("");
    let cluster = Cluster::new("shop");
    cluster.api.add_pod(running_pod(
        "shop",
        &pod,
        &[("app", &target.pod_reference(), true)],
    ));

    // A retained container: the plugin says how to come back and how to remove it.
    let out = run(
        &mut cluster.debug(
            agent.port,
            &[&pod, "--retain", "--", "sh", "-c", "echo state-7 > /kept"],
        ),
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    let name = kept_name(&err, &pod);
    assert!(
        err.contains(&format!("kubectl-debug rm {pod} {name}")),
        "{err}"
    );

    // list shows it, idle between sessions.
    let list = listed(&cluster, &agent, &["list", &pod]);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    let item = &items[0];
    assert_eq!(item["name"], name.as_str());
    assert_eq!(item["pod"], pod.as_str());
    assert_eq!(item["namespace"], "shop");
    assert_eq!(item["status"], "Idle");
    assert_eq!(item["retained"], true);
    assert_eq!(item["node"], "stand-in-node");
    assert_eq!(item["target"], target.pod_reference().as_str());
    let table = run(&mut cluster.debug(agent.port, &["list", "-n", "shop"]), b"");
    let table = text(&table.stdout);
    assert!(table.starts_with("POD "), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains(&name) && l.contains("Idle") && l.contains("true")),
        "{table}"
    );

    // attach, after the agent restarted, sees what the first session left.
    agent.kill();
    let agent = engine.agent(&format!("listen: \"127.0.0.1:{}\"\n", agent.port));
    let out = run(
        &mut cluster.debug(agent.port, &["attach", &pod, &name, "--", "cat", "/kept"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "state-7\n");

    // rm removes it; list no longer shows it; twice is an error, unless --ignore-not-found.
    let out = run(&mut cluster.debug(agent.port, &["rm", &pod, &name]), b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("debug container {name} removed\n")
    );
    let list = listed(&cluster, &agent, &["list", &pod]);
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");
    assert!(target.leftovers().is_empty());
    let out = run(&mut cluster.debug(agent.port, &["rm", &pod, &name]), b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(&name), "{}", text(&out.stderr));
    let out = run(
        &mut cluster.debug(agent.port, &["rm", &pod, &name, "--ignore-not-found"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn retain_list_attach_rm_on_docker() {
    retain_list_attach_rm(&DockerEngine);
}

#[test]
fn retain_list_attach_rm_on_containerd() {
    retain_list_attach_rm(&ContainerdEngine);
}

fn target_gone_mid_session(engine: &dyn Engine) {
    let pod = format!("{}-{}", "target-gone-mid-sess", engine.name());
    let target = engine.target("exec sleep 3600");
    let agent = engine.agent("");
    let cluster = Cluster::new("shop");
    cluster.api.add_pod(running_pod(
        "shop",
        &pod,
        &[("app", &target.pod_reference(), true)],
    ));
    let (child, _) = long_session(&cluster, &agent, target.as_ref(), &pod);
    target.stop();
    let stopped = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(
        stopped.elapsed() < Duration::from_secs(2),
        "the session took {:?} to end",
        stopped.elapsed()
    );
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(
        err.contains(&target.pod_reference()) && err.contains("the debug session ended"),
        "{err}"
    );
    support::assert_removed_soon(|| target.leftovers());
}

#[test]
fn a_target_that_dies_ends_the_session_and_says_so_on_docker() {
    target_gone_mid_session(&DockerEngine);
}

#[test]
fn a_target_that_dies_ends_the_session_and_says_so_on_containerd() {
    target_gone_mid_session(&ContainerdEngine);
}

fn debug_container_killed(engine: &dyn Engine) {
    let pod = format!("{}-{}", "debug-container-kill", engine.name());
    let target = engine.target("exec sleep 3600");
    let agent = engine.agent("");
    let cluster = Cluster::new("shop");
    cluster.api.add_pod(running_pod(
        "shop",
        &pod,
        &[("app", &target.pod_reference(), true)],
    ));
    let (child, id) = long_session(&cluster, &agent, target.as_ref(), &pod);
    eventually(
        support::READY_BOUND,
        "the debug container's main process to run",
        || engine.state(&id) == Some(true),
    );
    engine.kill(&id);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("was killed"), "{err}");
    support::assert_removed_soon(|| target.leftovers());
}

#[test]
fn a_killed_debug_container_ends_the_session_and_says_so_on_docker() {
    debug_container_killed(&DockerEngine);
}

#[test]
fn a_killed_debug_container_ends_the_session_and_says_so_on_containerd() {
    debug_container_killed(&ContainerdEngine);
}

fn stopped_client(engine: &dyn Engine) {
    let pod = format!("{}-{}", "stopped-client", engine.name());
    let target = engine.target("exec sleep 3600");
    let agent = engine.agent("lifecycle:\n  peerTimeout: 3s\n  stopGrace: 2s\n");
    let cluster = Cluster::new("shop");
    cluster.api.add_pod(running_pod(
        "shop",
        &pod,
        &[("app", &target.pod_reference(), true)],
    ));
    let (mut child, id) = long_session(&cluster, &agent, target.as_ref(), &pod);
    // SIGSTOP: the client answers no ping, as a laptop whose lid closed.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    // Declared gone after 3 s, its process stopped within the 2 s grace, the container removed.
    eventually(
        Duration::from_secs(15),
        "the stopped client's container to be removed",
        || engine.state(&id).is_none(),
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_client_stopped_with_sigstop_is_declared_gone_on_docker() {
    stopped_client(&DockerEngine);
}

#[test]
fn a_client_stopped_with_sigstop_is_declared_gone_on_containerd() {
    stopped_client(&ContainerdEngine);
}

fn killed_agent(engine: &dyn Engine) {
    let pod = format!("{}-{}", "killed-agent", engine.name());
    let target = engine.target("exec sleep 3600");
    let mut agent = engine.agent("");
    let cluster = Cluster::new("shop");
    cluster.api.add_pod(running_pod(
        "shop",
        &pod,
        &[("app", &target.pod_reference(), true)],
    ));
    let (mut child, id) = long_session(&cluster, &agent, target.as_ref(), &pod);
    // The agent dies with a session running: its container stays, with nobody to remove it
    // (checked at once: any other test's agent on this engine may reap it from now on)...
    agent.kill();
    assert!(
        engine.state(&id).is_some(),
        "a SIGKILLed agent cleans nothing"
    );
    let _ = child.kill();
    let _ = child.wait();
    // ...until an agent starts again: its reaper removes it (other tests' agents share this
    // engine, and any agent's reaper may be first: the owner is gone either way).
    let _agent = engine.agent(&format!("listen: \"127.0.0.1:{}\"\n", agent.port));
    eventually(
        Duration::from_secs(5),
        "the dead agent's container to be reaped",
        || engine.state(&id).is_none(),
    );
}

#[test]
fn a_restarted_agent_reaps_what_a_killed_one_left_on_docker() {
    killed_agent(&DockerEngine);
}

#[test]
fn a_restarted_agent_reaps_what_a_killed_one_left_on_containerd() {
    killed_agent(&ContainerdEngine);
}

fn orphaned(engine: &dyn Engine) {
    let pod = format!("{}-{}", "orphaned", engine.name());
    let target = engine.target("exec sleep 3600");
    let agent = engine.agent("");
    let cluster = Cluster::new("shop");
    cluster.api.add_pod(running_pod(
        "shop",
        &pod,
        &[("app", &target.pod_reference(), true)],
    ));
    let out = run(
        &mut cluster.debug(agent.port, &[&pod, "--retain", "--", "true"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let name = kept_name(&text(&out.stderr), &pod);
    // The pod is deleted: its container goes, the retained debug container stays, orphaned.
    target.delete();
    let list = listed(&cluster, &agent, &["list", &pod]);
    let item = &list["items"][0];
    assert_eq!(item["name"], name.as_str(), "{list}");
    assert_eq!(item["status"], "Orphaned", "{list}");
    // attach says so, and how to remove it.
    let out = run(
        &mut cluster.debug(agent.port, &["attach", &pod, &name, "--", "true"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("orphaned"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&mut cluster.debug(agent.port, &["rm", &pod, &name]), b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn a_retained_container_whose_pod_is_gone_is_orphaned_on_docker() {
    orphaned(&DockerEngine);
}

#[test]
fn a_retained_container_whose_pod_is_gone_is_orphaned_on_containerd() {
    orphaned(&ContainerdEngine);
}

fn nothing_left_in_the_targets_pid_namespace(engine: &dyn Engine) {
    let pod = format!("{}-{}", "nothing-left-in-the-", engine.name());
    let target = engine.target("exec sleep 3600");
    let agent = engine.agent("");
    let cluster = Cluster::new("shop");
    cluster.api.add_pod(running_pod(
        "shop",
        &pod,
        &[("app", &target.pod_reference(), true)],
    ));
    let out = run(
        &mut cluster.debug(
            agent.port,
            &[
                &pod,
                "--",
                "sh",
                "-c",
                "sleep 1234 & sleep 1235 & (sleep 1236 &); exit 4",
            ],
        ),
        b"",
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    // Neither the session's background processes nor zombies of them under the target's
    // PID 1 (which reaps nothing).
    let init = target.pid();
    eventually(
        Duration::from_secs(3),
        "the session's processes to go",
        || {
            let left: Vec<String> = std::fs::read_dir("/proc")
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|pid| {
                    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                    let rest = &stat[stat.rfind(')')? + 2..];
                    let parent: u32 = rest.split(' ').nth(1)?.parse().ok()?;
                    let ours = String::from_utf8_lossy(&cmdline).contains("sleep\u{0}123");
                    (ours || (parent == init && rest.starts_with('Z'))).then(|| stat.clone())
                })
                .collect();
            left.is_empty()
        },
    );
    support::assert_removed_soon(|| target.leftovers());
}

#[test]
fn a_session_leaves_nothing_in_the_targets_pid_namespace_on_docker() {
    nothing_left_in_the_targets_pid_namespace(&DockerEngine);
}

#[test]
fn a_session_leaves_nothing_in_the_targets_pid_namespace_on_containerd() {
    nothing_left_in_the_targets_pid_namespace(&ContainerdEngine);
}

#[test]
fn an_idle_session_is_warned_then_ended() {
    let engine = DockerEngine;
    let pod = "an-idle-session-is-w".to_owned();
    let target = engine.target("exec sleep 3600");
    let agent = engine.agent("lifecycle:\n  idleTimeout: 3s\n");
    let cluster = Cluster::new("shop");
    cluster.api.add_pod(running_pod(
        "shop",
        &pod,
        &[("app", &target.pod_reference(), true)],
    ));
    let started = Instant::now();
    let out = run(
        &mut cluster.debug(agent.port, &[&pod, "--", "sleep", "300"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("this session ends in"), "warned first: {err}");
    assert!(err.contains("lifecycle.idleTimeout"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    support::assert_removed_soon(|| target.leftovers());
}

#[test]
fn many_sessions_in_one_pod_at_once_get_names_of_their_own() {
    let engine = DockerEngine;
    let pod = "many-sessions-in-one".to_owned();
    let target = engine.target("exec sleep 3600");
    // Eight in one target: more than the default policy.maxSessions.perTarget (5).
    let agent = engine.agent("policy:\n  maxSessions:\n    perTarget: 8\n");
    let cluster = Cluster::new("shop");
    cluster.api.add_pod(running_pod(
        "shop",
        &pod,
        &[("app", &target.pod_reference(), true)],
    ));
    let sessions: Vec<Child> = (0..8)
        .map(|i| {
            cluster
                .debug(
                    agent.port,
                    &[&pod, "--retain", "--", "sh", "-c", &format!("echo {i}")],
                )
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut names = Vec::new();
    for (i, child) in sessions.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), format!("{i}\n"));
        names.push(kept_name(&text(&out.stderr), &pod));
    }
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "{names:?}");
    let out = run(&mut cluster.debug(agent.port, &["rm", &pod, "--all"]), b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(target.leftovers().is_empty());
}

#[test]
fn list_all_namespaces_asks_every_node_and_warns_of_one_that_does_not_answer() {
    let engine = DockerEngine;
    let (a, b) = (
        engine.target("exec sleep 3600"),
        engine.target("exec sleep 3600"),
    );
    // Two nodes: two agents on one port, on 127.0.0.1 and 127.0.0.2.
    let agent_a = engine.agent("");
    let mut agent_b = engine.agent(&format!("listen: \"127.0.0.2:{}\"\n", agent_a.port));
    let cluster = Cluster::new("shop");
    // Each node runs the agent DaemonSet's pod.
    cluster.api.add_pod(agent_pod("node-a", "127.0.0.1", true));
    cluster.api.add_pod(agent_pod("node-b", "127.0.0.2", true));
    cluster.api.add_pod(pod_on_node(
        "shop",
        "web-1",
        &[("app", &a.pod_reference(), true)],
        "node-a",
        "127.0.0.1",
    ));
    cluster.api.add_pod(pod_on_node(
        "ops",
        "db-0",
        &[("db", &b.pod_reference(), true)],
        "node-b",
        "127.0.0.2",
    ));
    for (pod, ns) in [("web-1", "shop"), ("db-0", "ops")] {
        let out = run(
            &mut cluster.debug(agent_a.port, &["-n", ns, pod, "--retain", "--", "true"]),
            b"",
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    let out = run(&mut cluster.debug(agent_a.port, &["list", "-A"]), b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.starts_with("NAMESPACE "), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("shop") && l.contains("node-a")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("ops") && l.contains("node-b")),
        "{table}"
    );
    // In one namespace, only its pods' nodes.
    let out = run(
        &mut cluster.debug(agent_a.port, &["list", "-n", "ops", "-o", "wide"]),
        b"",
    );
    let table = text(&out.stdout);
    assert!(
        table.contains("db-0") && !table.contains("web-1"),
        "{table}"
    );
    assert!(table.lines().next().unwrap().contains("TARGET"), "{table}");
    // A node whose agent does not answer is a warning naming it; the rest is listed.
    agent_b.kill();
    let out = run(
        &mut cluster.debug(agent_a.port, &["list", "-A", "-o", "yaml"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("warning: node node-b"),
        "{}",
        text(&out.stderr)
    );
    let yaml = text(&out.stdout);
    assert!(
        yaml.contains("pod: web-1") && yaml.contains("node: node-a"),
        "{yaml}"
    );
    let out = run(
        &mut cluster.debug(agent_a.port, &["rm", "web-1", "--all"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for leftover in b.leftovers() {
        engine.remove(&leftover);
    }
}

#[test]
fn local_verbs_list_attach_and_rm_without_a_cluster() {
    for engine in [&DockerEngine as &dyn Engine, &ContainerdEngine] {
        let target = engine.target("exec sleep 3600");
        let agent = engine.agent("");
        let reference = target.pod_reference();
        let local = |args: &[&str]| {
            let mut cmd = support::plugin();
            cmd.arg("local").args(args);
            cmd
        };
        let out = run(
            &mut local(&[
                &reference,
                "--agent",
                &agent.address(),
                "--retain",
                "--",
                "sh",
                "-c",
                "echo here > /f",
            ]),
            b"",
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            engine.name(),
            text(&out.stderr)
        );
        let err = text(&out.stderr);
        let marker = format!("kubectl-debug local attach {reference} ");
        let name = err[err.find(&marker).unwrap() + marker.len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned();
        let out = run(&mut local(&["list", "--agent", &agent.address()]), b"");
        assert!(text(&out.stdout).contains(&name), "{}", text(&out.stdout));
        let out = run(
            &mut local(&[
                "attach",
                &reference,
                &name,
                "--agent",
                &agent.address(),
                "--",
                "cat",
                "/f",
            ]),
            b"",
        );
        assert_eq!(text(&out.stdout), "here\n", "{}", text(&out.stderr));
        let out = run(&mut local(&["rm", &name, "--agent", &agent.address()]), b"");
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(target.leftovers().is_empty());
    }
}

/// The user guide's (docs/user-guide.md) retain / list / attach / rm walk-through, on the real engine through the API
/// stand-in: run with `--ignored --nocapture` to print each command and what it printed.
#[test]
#[ignore = "prints the user guide's walk-through; run by hand"]
fn readme_walk_through() {
    let engine = DockerEngine;
    let target = engine.target("exec sleep 3600");
    let agent = engine.agent("");
    let cluster = Cluster::new("shop");
    cluster.api.add_pod(running_pod(
        "shop",
        "web-1",
        &[("app", &target.pod_reference(), true)],
    ));
    let show = |args: &[&str]| {
        let out = run(&mut cluster.debug(agent.port, args), b"");
        println!("$ kubectl-debug {}", args.join(" "));
        print!("{}{}", text(&out.stdout), text(&out.stderr));
        println!();
        out
    };
    let out = show(&[
        "web-1",
        "--retain",
        "--",
        "sh",
        "-c",
        "echo 'net.core.somaxconn=4096' > /notes; ps",
    ]);
    let name = kept_name(&text(&out.stderr), "web-1");
    show(&["list"]);
    show(&["list", "-o", "wide"]);
    show(&["attach", "web-1", &name, "--", "cat", "/notes"]);
    show(&["list", "web-1", "-o", "json"]);
    show(&["rm", "web-1", &name]);
    show(&["rm", "web-1", &name]);
    show(&["list"]);
}
