//! End-to-end: the real `kubectl-debug` and `kubectl-debug-agent` binaries against a real
//! Docker engine (started by `scripts/test-world`, which exports `DOCKER_HOST`).

use kdbg_testkit as support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Target, agent_binary, docker, docker_host, image, plugin, run, text};

fn local(target: &Target, extra: &[&str]) -> Command {
    let mut cmd = plugin();
    cmd.args(["local", &target.reference(), "--image", &image()]);
    cmd.args(extra);
    cmd
}

#[test]
fn ps_sees_the_targets_processes() {
    let target = Target::start("exec sleep 3601");
    let out = run(&mut local(&target, &["--", "ps"]), b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("sleep 3601"),
        "{}",
        text(&out.stdout)
    );
    assert!(target.leftovers().is_empty());
}

#[test]
fn wget_reaches_a_server_on_the_targets_loopback() {
    let target = Target::start(
        "mkdir /www && echo marker-7a1 > /www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /www",
    );
    support::wait_for_listener(&target, 8080);
    let out = run(
        &mut local(&target, &["--", "wget", "-qO-", "http://127.0.0.1:8080/"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "marker-7a1\n");
}

#[test]
fn sys_admin_serves_nsenter_but_cannot_undo_read_only_kernel_settings() {
    let target = Target::start("exec sleep 3600");
    let out = run(
        &mut local(
            &target,
            &[
                "--profile",
                "sysadmin",
                "--",
                "sh",
                "-c",
                support::SYS_ADMIN_PROBE,
            ],
        ),
        b"",
    );
    support::assert_sys_admin_is_confined(&out);
}

#[test]
fn exit_code_passes_through_and_streams_stay_apart() {
    let target = Target::start("exec sleep 3600");
    let out = run(
        &mut local(
            &target,
            &["--", "sh", "-c", "echo to-out; echo to-err >&2; exit 7"],
        ),
        b"",
    );
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(text(&out.stdout), "to-out\n");
    assert!(
        text(&out.stderr).contains("to-err\n"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stdout).contains("to-err"));
    // A plain `docker run` target does not share its IPC namespace: the user is told.
    assert!(text(&out.stderr).contains("does not share its IPC namespace"));
    assert!(target.leftovers().is_empty());
}

#[test]
fn piped_stdin_reaches_the_command_and_ends_it() {
    let target = Target::start("exec sleep 3600");
    let input = b"first line\nsecond line\n";
    let out = run(&mut local(&target, &["-i", "--", "cat"]), input);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(out.stdout, input);
}

#[test]
fn errors_name_the_object_and_exit_1() {
    let target = Target::start("exec sleep 3600");
    docker(&["stop", "-t", "0", &target.name]);
    let out = run(&mut local(&target, &["--", "true"]), b"");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&target.reference()) && err.contains("exited"),
        "{err}"
    );

    let mut cmd = plugin();
    cmd.args([
        "local",
        "docker://kdbg-no-such-container",
        "--image",
        &image(),
        "--",
        "true",
    ]);
    let out = run(&mut cmd, b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("docker://kdbg-no-such-container not found"),
        "{}",
        text(&out.stderr)
    );

    let mut cmd = plugin();
    cmd.args(["local", "cri-o://x", "--image", &image(), "--", "true"]);
    let out = run(&mut cmd, b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("supported: docker, containerd"),
        "{}",
        text(&out.stderr)
    );

    let target = Target::start("exec sleep 3600");
    let mut cmd = plugin();
    let reference = target.reference();
    cmd.args([
        "local",
        &reference,
        "--image",
        "kdbg-absent:1",
        "--pull-policy",
        "Never",
    ]);
    let out = run(&mut cmd, b"");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("kdbg-absent:1") && err.contains("Never"),
        "{err}"
    );

    // Usage errors are the tool's own errors too.
    let mut cmd = plugin();
    cmd.args(["local", &reference, "--pull-policy", "Sometimes"]);
    let out = run(&mut cmd, b"");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("Always, IfNotPresent, Never"), "{err}");
}

#[test]
fn interactive_terminal_through_a_real_pty() {
    let target = Target::start("exec sleep 3600");
    let command = format!(
        "DOCKER_HOST={} {} local {} --image {} -- sh",
        docker_host(),
        env!("CARGO_BIN_EXE_kubectl-debug"),
        target.reference(),
        image()
    );
    support::pty_session("docker", &command);
    assert!(target.leftovers().is_empty());
}

#[test]
fn plugin_killed_mid_session_leaves_no_container_behind() {
    let target = Target::start("exec sleep 3600");
    let agent = support::Agent::start();
    let address = agent.address();
    let mut session = local(&target, &["--agent", &address, "--", "sleep", "300"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    support::wait_for_debug_container(|| target.leftovers());
    session.kill().unwrap(); // SIGKILL
    session.wait().unwrap();
    support::assert_agent_removed(|| target.leftovers(), &agent);
    drop(agent);
}

#[test]
fn output_waits_for_a_reader_that_pauses_past_the_process_exit() {
    let target = Target::start("exec sleep 3600");
    let agent = support::Agent::start();
    let address = agent.address();
    support::a_paused_reader_gets_every_byte(&agent, |script| {
        local(&target, &["--agent", &address, "--", "sh", "-c", script])
    });
    support::assert_agent_removed(|| target.leftovers(), &agent);
}

#[test]
fn a_bad_agent_config_exits_64_naming_the_key() {
    let dir = support::Scratch::new("badcfg");
    let config = dir.join("agent.yaml");
    std::fs::write(
        &config,
        "listen: \"127.0.0.1:0\"\nruntime:\n  kind: docker\n  endpoint: \"/x\"\n  colour: blue\ndefaults:\n  image: i\n  command: [sh]\n",
    )
    .unwrap();
    let out = Command::new(agent_binary())
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = text(&out.stderr);
    assert!(err.contains("colour") && err.contains("line 5"), "{err}");
}

#[test]
fn the_debug_image_is_pulled_from_a_registry_with_progress() {
    let registry = std::env::var("KDBG_TEST_REGISTRY").expect(
        "KDBG_TEST_REGISTRY is not set: run the tests with scripts/test, which starts a registry",
    );
    let target = Target::start("exec sleep 3600");
    // A tag of our own, pushed to the registry and absent from the engine.
    let reference = format!("{registry}/kdbg-tools:pull-{}", std::process::id());
    docker(&["tag", &image(), &reference]);
    docker(&["push", "-q", &reference]);
    docker(&["rmi", &reference]);
    let mut cmd = plugin();
    cmd.args([
        "local",
        &target.reference(),
        "--image",
        &reference,
        "--",
        "echo",
        "ran",
    ]);
    let out = run(&mut cmd, b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ran\n");
    let err = text(&out.stderr);
    assert!(
        err.contains("Pulling from kdbg-tools") && err.contains("Downloaded newer image"),
        "{err}"
    );
    docker(&["rmi", &reference]);

    // A reference the registry does not have: a clear error naming it.
    let missing = format!("{registry}/kdbg-absent:1");
    let mut cmd = plugin();
    cmd.args([
        "local",
        &target.reference(),
        "--image",
        &missing,
        "--",
        "true",
    ]);
    let out = run(&mut cmd, b"");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("pulling image {missing}")), "{err}");
    assert!(target.leftovers().is_empty());
}

/// The agent's `pulls_total` counter: how many pull requests it answered.
fn pulls(agent: &support::Agent) -> u64 {
    agent.metric("kubectl_debug_agent_pulls_total")
}

#[test]
fn the_image_is_pulled_only_when_absent_or_asked_for() {
    let registry = std::env::var("KDBG_TEST_REGISTRY").expect(
        "KDBG_TEST_REGISTRY is not set: run the tests with scripts/test, which starts a registry",
    );
    let target = Target::start("exec sleep 3600");
    let agent = support::Agent::start();
    let address = agent.address();
    let reference = format!("{registry}/kdbg-tools:once-{}", std::process::id());
    docker(&["tag", &image(), &reference]);
    docker(&["push", "-q", &reference]);
    docker(&["rmi", &reference]);
    // `local` with our image, not the test image.
    let debug = |args: &[&str]| {
        let mut cmd = plugin();
        cmd.args([
            "local",
            &target.reference(),
            "--agent",
            &address,
            "--image",
            &reference,
        ]);
        cmd.args(args);
        run(&mut cmd, b"")
    };
    let session = |policy: &[&str]| {
        let mut args = policy.to_vec();
        args.extend(["--", "echo", "ran"]);
        let out = debug(&args);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "ran\n");
        text(&out.stderr)
    };
    // Absent (IfNotPresent, the default): the session's first try is refused before anything
    // is made, the pull shows its progress, and the user never hears of the first try.
    let err = session(&[]);
    assert!(err.contains("Pulling from kdbg-tools"), "{err}");
    assert!(!err.contains("Never"), "{err}");
    assert_eq!(pulls(&agent), 1);
    // The agent's audit log says what the first try met: not a denial, an absent image.
    let refusals = |decision: &str| {
        agent
            .log()
            .lines()
            .filter(|l| l.contains("session refused") && l.contains(decision))
            .count()
    };
    assert_eq!(refusals("image absent"), 1, "{}", agent.log());
    assert_eq!(refusals("denied"), 0, "{}", agent.log());
    // Present: the session alone, no pull request.
    let err = session(&[]);
    assert!(!err.contains("Pulling"), "{err}");
    assert_eq!(pulls(&agent), 1);
    // Always: pulled again.
    session(&["--pull-policy", "Always"]);
    assert_eq!(pulls(&agent), 2);
    // Never, absent: the agent's refusal, as it is.
    docker(&["rmi", &reference]);
    let out = debug(&["--pull-policy", "Never", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "image {reference} is not present on this node and the pull policy is Never"
        )),
        "{err}"
    );
    assert_eq!(pulls(&agent), 2);
    // The sessions' containers go once their sessions end (a moment after the client's).
    support::assert_removed_soon(|| target.leftovers());
}

#[test]
fn sigterm_tells_sessions_and_removes_their_containers() {
    let target = Target::start("exec sleep 3600");
    let mut agent = support::Agent::start();
    let address = agent.address();
    let session = local(&target, &["--agent", &address, "--", "sleep", "300"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    support::wait_for_debug_container(|| target.leftovers());
    let code = agent.terminate(Duration::from_secs(15));
    assert_eq!(code, Some(0), "the agent exits cleanly after SIGTERM");
    let out = session.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("agent on this node is shutting down"), "{err}");
    assert!(
        target.leftovers().is_empty(),
        "container left after shutdown"
    );
}

/// Opens a debug session on the agent at `address` as a bare WebSocket client that reads
/// nothing, as a client that stopped reading would.
async fn silent_session(
    address: &str,
    target: &Target,
    command: &[&str],
) -> kdbg_relay::WebSocketStream<tokio::net::TcpStream> {
    let mut query = format!("target={}&stdout=1&stderr=1", target.reference());
    query.push_str(&format!("&image={}", image()));
    for arg in command {
        query.push_str(&format!("&command={arg}"));
    }
    let socket = tokio::net::TcpStream::connect(address).await.unwrap();
    let url = format!("ws://{address}/api/v1/debug?{query}");
    let (ws, _, _) = kdbg_relay::handshake::connect(url, socket).await.unwrap();
    ws
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_then_leaves_does_not_wedge_the_engine() {
    let target = Target::start("exec sleep 3600");
    let agent = support::Agent::start();
    // Output keeps flowing while nobody reads: every buffer between the container and the
    // client fills up.
    let ws = silent_session(&agent.address(), &target, &["cat", "/dev/zero"]).await;
    support::wait_for_debug_container(|| target.leftovers());
    // Not a wait for readiness but the scenario: `cat /dev/zero` fills the buffers on the way
    // (a pipe, the agent's queue, two sockets' few MiB) in well under a second; 3 s of it
    // leaves them full for a while before the client leaves.
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(ws);
    support::assert_removed_soon(|| target.leftovers());

    // The same through the plugin: `... -- yes | head -c 20`.
    let mut session = local(&target, &["--agent", &agent.address(), "--", "yes"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut head = [0u8; 20];
    std::io::Read::read_exact(session.stdout.as_mut().unwrap(), &mut head).unwrap();
    assert_eq!(&head, b"y\ny\ny\ny\ny\ny\ny\ny\ny\ny\n");
    drop(session.stdout.take());
    let status = session.wait().unwrap();
    assert_eq!(status.code(), Some(0), "a closed stdout is not an error");
    support::assert_removed_soon(|| target.leftovers());
    // The engine still answers for the target.
    docker(&["inspect", &target.name]);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_removes_containers_whose_clients_ignore_the_close() {
    let target = Target::start("exec sleep 3600");
    let mut agent = support::Agent::start();
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(silent_session(&agent.address(), &target, &["sleep", "300"]).await);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while target.leftovers().len() < 3 {
        assert!(
            Instant::now() < deadline,
            "three debug containers never ran"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let code = agent.terminate(Duration::from_secs(15));
    assert_eq!(code, Some(0));
    assert!(
        target.leftovers().is_empty(),
        "containers left after the agent exited: {:?}",
        target.leftovers()
    );
    drop(clients);
}

#[test]
fn the_agent_logs_json_lines_when_asked_and_no_colour_into_a_file() {
    let target = Target::start("exec sleep 3600");
    for (extra, json) in [("log:\n  format: json\n", true), ("", false)] {
        let agent = support::Agent::docker_with(extra);
        let out = run(
            &mut local(&target, &["--agent", &agent.address(), "--", "true"]),
            b"",
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let log = agent.log();
        assert!(log.contains("agent ready"), "{log}");
        assert!(!log.contains('\u{1b}'), "no colour in a file: {log}");
        for line in log.lines() {
            let parsed = serde_json::from_str::<serde_json::Value>(line);
            assert_eq!(parsed.is_ok(), json, "{line}");
        }
    }
}

#[test]
fn a_retained_container_outlives_a_client_that_vanished_without_its_process() {
    let target = Target::start("exec sleep 3600");
    let agent = support::Agent::start();
    let mut session = local(
        &target,
        &[
            "--agent",
            &agent.address(),
            "--retain",
            "--",
            "sh",
            "-c",
            "echo kept > /kept; exec sleep 300",
        ],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let id = support::wait_for_debug_container(|| target.leftovers());
    // Its script has written /kept and exec'd `sleep 300` (`sh -c ...` shows that too).
    support::eventually(
        support::READY_BOUND,
        "the session's `sleep 300` to run",
        || {
            text(&docker(&["top", &id]).stdout)
                .lines()
                .any(|l| l.trim_end().ends_with(" sleep 300") && !l.contains("sh -c"))
        },
    );
    session.kill().unwrap(); // SIGKILL: the client vanishes
    session.wait().unwrap();
    // The session's process gets SIGTERM (sleep dies of it at once); the container stays,
    // running (idle between sessions), with its filesystem.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let top = text(&docker(&["top", &id]).stdout);
        if !top.contains("sleep 300") {
            break;
        }
        assert!(Instant::now() < deadline, "still running after 5 s:\n{top}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let state = text(&docker(&["inspect", "-f", "{{.State.Status}}", &id]).stdout);
    assert_eq!(state.trim(), "running");
    let kept = docker(&["cp", &format!("{id}:/kept"), "-"]);
    assert!(!kept.stdout.is_empty(), "its filesystem stays");
    docker(&["rm", "-f", &id]);
}

/// A container that only carries our labels (Docker copies an image's `LABEL`s onto its
/// containers: a pod's container made from such an image) is not a debug container: not
/// listed, not removed.
#[test]
fn a_container_labelled_like_ours_is_not_taken_for_a_debug_container() {
    let name = format!("kdbg-posing-{}", std::process::id());
    docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "none",
        "--label",
        &format!("{}=posing", kdbg_runtimes::label::SESSION),
        "--label",
        &format!("{}=true", kdbg_runtimes::label::RETAIN),
        "--label",
        "io.kubernetes.container.name=app",
        &image(),
        "sleep",
        "300",
    ]);
    let out = run(
        plugin().args(["local", "list", "--runtime-kind", "docker", "-o", "json"]),
        b"",
    );
    let listed = text(&out.stdout);
    let _ = Command::new("/usr/bin/docker")
        .args(["rm", "-f", &name])
        .env("DOCKER_HOST", docker_host())
        .output();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!listed.contains(&name), "{listed}");
}

#[test]
fn sessions_are_started_by_the_containers_init_else_execd() {
    let target = Target::start("exec sleep 3600");
    // The container's own kdbg-init starts the session (no exec through the runtime); this
    // one removes its socket, so the container is then like one made without a spawner.
    let first = support::session_starter(true);
    let out = run(
        &mut local(&target, &["--retain", "--", "sh", "-c", &first]),
        b"",
    );
    support::assert_started_by(&out, true);
    let kept = target.leftovers();
    assert_eq!(kept.len(), 1, "{kept:?}");
    // No spawner answers: the runtime's exec, and the session works as ever.
    let name = text(&docker(&["inspect", "-f", "{{.Name}}", &kept[0]]).stdout);
    let again = support::session_starter(false);
    let out = run(
        plugin().args([
            "local",
            "attach",
            &target.reference(),
            name.trim().trim_start_matches('/'),
            "--",
            "sh",
            "-c",
            &again,
        ]),
        b"",
    );
    support::assert_started_by(&out, false);

    // Removed behind the agents' backs, its spawner directory on the node is removed by the
    // next `list` once it is a minute old (a younger one may be a container being made).
    let mounts = "{{range .Mounts}}{{if eq .Destination \"/.kubectl-debug/spawn\"}}{{.Source}}{{end}}{{end}}";
    let dir = text(&docker(&["inspect", "-f", mounts, &kept[0]]).stdout);
    let dir = std::path::Path::new(dir.trim());
    assert!(dir.is_dir(), "{}", dir.display());
    docker(&["rm", "-f", &kept[0]]);
    let list = || {
        let out = run(
            plugin().args(["local", "list", "--runtime-kind", "docker"]),
            b"",
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    };
    list();
    assert!(dir.is_dir(), "a young directory is left: {}", dir.display());
    let aged = Command::new("touch")
        .args(["-d", "2 minutes ago"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(aged.success());
    list();
    assert!(!dir.exists(), "{} is left", dir.display());
}
