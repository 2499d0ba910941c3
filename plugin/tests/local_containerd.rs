//! End-to-end on containerd: the real `kubectl-debug` and `kubectl-debug-agent` binaries
//! against a real containerd + runc and a real registry on loopback (started by
//! `scripts/test-world`, which exports `KDBG_CONTAINERD` and `KDBG_TEST_REGISTRY` and puts the
//! test image into the registry and into containerd's `k8s.io` namespace, where targets live).

use kdbg_testkit as support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{
    CtdTarget, DEBUG_NAMESPACE, SYS_ADMIN_PROBE, assert_sys_admin_is_confined, containerd_socket,
    ctd_image, ctr, docker, plugin, registry, run, text,
};

fn local(target: &CtdTarget, image: &str, extra: &[&str]) -> Command {
    let mut cmd = plugin();
    cmd.args([
        "local",
        &target.reference(),
        "--runtime-endpoint",
        &containerd_socket(),
        "--insecure-registry",
        &registry(),
        "--image",
        image,
    ]);
    cmd.args(extra);
    cmd
}

/// A session through the agent at `address`.
fn via_agent(target: &CtdTarget, address: &str, extra: &[&str]) -> Command {
    let mut cmd = plugin();
    cmd.args(["local", &target.reference(), "--agent", address]);
    cmd.args(extra);
    cmd
}

/// A directory of this test's own, removed when it is done.
fn scratch(tag: &str) -> support::Scratch {
    support::Scratch::new(&format!("ctd-{tag}"))
}

/// Snapshots in the debug namespace whose key is `id`.
fn snapshot_of(id: &str) -> bool {
    let out = ctr(DEBUG_NAMESPACE, &["snapshots", "ls"]);
    text(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(id))
}

#[test]
fn ps_and_the_targets_loopback_are_visible() {
    let target = CtdTarget::start(
        "mkdir /www && echo marker-c1 > /www/index.html && httpd -p 127.0.0.1:8080 -h /www && exec sleep 3611",
    );
    support::wait_for_listener(&target, 8080);
    let out = run(
        &mut local(
            &target,
            &ctd_image(),
            &["--", "sh", "-c", "ps; wget -qO- http://127.0.0.1:8080/"],
        ),
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("sleep 3611"), "{stdout}");
    assert!(stdout.contains("marker-c1\n"), "{stdout}");
    assert!(target.leftovers().is_empty());
}

#[test]
fn name_resolution_comes_from_the_target_without_leaving_its_root() {
    // The target's resolv.conf is an absolute symlink: followed from the node's root it would
    // be the node's /etc/passwd; inside the target it is the target's own.
    let target = CtdTarget::start(
        "echo '10.1.2.3 db.internal' > /etc/hosts && ln -s /etc/passwd /etc/resolv.conf && exec sleep 3600",
    );
    support::wait_for_exec(&target, "sleep 3600");
    let out = run(
        &mut local(
            &target,
            &ctd_image(),
            &[
                "--",
                "sh",
                "-c",
                "cat /etc/hosts; echo ---; cat /etc/resolv.conf",
            ],
        ),
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "10.1.2.3 db.internal\n---\nroot:x:0:0:root:/root:/bin/sh\n"
    );
}

#[test]
fn sys_admin_serves_nsenter_but_cannot_undo_read_only_kernel_settings() {
    let target = CtdTarget::start("exec sleep 3600");
    let out = run(
        &mut local(
            &target,
            &ctd_image(),
            &["--profile", "sysadmin", "--", "sh", "-c", SYS_ADMIN_PROBE],
        ),
        b"",
    );
    assert_sys_admin_is_confined(&out);
}

#[test]
fn exit_code_passes_through_and_streams_stay_apart() {
    let target = CtdTarget::start("exec sleep 3600");
    let out = run(
        &mut local(
            &target,
            &ctd_image(),
            &["--", "sh", "-c", "echo to-out; echo to-err >&2; exit 7"],
        ),
        b"",
    );
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "to-out\n");
    let err = text(&out.stderr);
    assert!(err.contains("to-err\n"), "{err}");
    // containerd joins the IPC namespace by path: nothing to warn about.
    assert!(!err.contains("IPC"), "{err}");
    assert!(target.leftovers().is_empty());
}

#[test]
fn piped_stdin_reaches_the_command_and_ends_it() {
    let target = CtdTarget::start("exec sleep 3600");
    let input: Vec<u8> = (0..20_000)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    let out = run(
        &mut local(&target, &ctd_image(), &["-i", "--", "cat"]),
        &input,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        out.stdout == input,
        "{} bytes back of {}",
        out.stdout.len(),
        input.len()
    );
}

#[test]
fn interactive_terminal_through_a_real_pty() {
    let target = CtdTarget::start("exec sleep 3600");
    let command = format!(
        "{} local {} --runtime-endpoint {} --insecure-registry {} --image {} -- sh",
        env!("CARGO_BIN_EXE_kubectl-debug"),
        target.reference(),
        containerd_socket(),
        registry(),
        ctd_image()
    );
    support::pty_session("ctd", &command);
    assert!(target.leftovers().is_empty());
}

#[test]
fn errors_name_the_object_and_exit_1() {
    let target = CtdTarget::start("exec sleep 3600");
    target.stop();
    let out = run(&mut local(&target, &ctd_image(), &["--", "true"]), b"");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&target.reference()) && err.contains("stopped, not running"),
        "{err}"
    );

    let mut cmd = plugin();
    cmd.args([
        "local",
        "containerd://kdbg-no-such-container",
        "--runtime-endpoint",
        &containerd_socket(),
        "--",
        "true",
    ]);
    let out = run(&mut cmd, b"");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("containerd://kdbg-no-such-container not found"),
        "{err}"
    );

    // The wrong namespace: the target is not there.
    let running = CtdTarget::start("exec sleep 3600");
    let out = run(
        &mut local(
            &running,
            &ctd_image(),
            &["--containerd-namespace", "elsewhere", "--", "true"],
        ),
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not found"),
        "{}",
        text(&out.stderr)
    );

    // A command the image lacks: 127, as a shell says, with why; what was made for it is gone.
    let out = run(
        &mut local(&running, &ctd_image(), &["--", "/no/such/cmd"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(127));
    let err = text(&out.stderr);
    assert!(
        err.contains("\"/no/such/cmd\"") && err.contains("No such file"),
        "{err}"
    );
    support::assert_removed_soon(|| running.leftovers());

    // Pull policy Never with an image containerd does not have.
    let absent = format!("{}/kdbg-absent:1", registry());
    let out = run(
        &mut local(&running, &absent, &["--pull-policy", "Never", "--", "true"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(&absent) && err.contains("Never"), "{err}");

    // An image the registry does not have: the error names it, and says what the registry said.
    let out = run(&mut local(&running, &absent, &["--", "true"]), b"");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("pulling image {absent}")), "{err}");
    assert!(
        err.contains("404") && err.contains("check the image name"),
        "{err}"
    );

    // A registry that is not declared insecure is spoken to over HTTPS only.
    let mut cmd = plugin();
    cmd.args([
        "local",
        &running.reference(),
        "--runtime-endpoint",
        &containerd_socket(),
        "--image",
        &format!("{}/kdbg-tools:never-pulled", registry()),
        "--",
        "true",
    ]);
    let out = run(&mut cmd, b"");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("https://{}/v2/", registry())),
        "{err}"
    );
    assert!(running.leftovers().is_empty());
}

#[test]
fn the_debug_image_is_pulled_from_a_registry_with_progress() {
    // An image with a layer of its own, so the pull really downloads and unpacks it.
    let reference = format!("{}/kdbg-tools:ctd-pull-{}", registry(), std::process::id());
    let builder = format!("kdbg-ctd-build-{}", std::process::id());
    let marker = format!("marker-{}", std::process::id());
    docker(&[
        "run",
        "--name",
        &builder,
        "--network",
        "none",
        &support::image(),
        "sh",
        "-c",
        &format!("echo {marker} > /marker"),
    ]);
    docker(&["commit", &builder, &reference]);
    docker(&["rm", &builder]);
    docker(&["push", "-q", &reference]);
    docker(&["rmi", &reference]);

    let target = CtdTarget::start("exec sleep 3600");
    let out = run(
        &mut local(&target, &reference, &["--", "cat", "/marker"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{marker}\n"));
    let err = text(&out.stderr);
    for step in [
        "Pulling from kdbg-tools",
        "Downloading",
        "Extracting",
        "Pull complete",
        "Digest: sha256:",
    ] {
        assert!(err.contains(step), "no {step:?} in:\n{err}");
    }
    // The image is recorded under its full name, in the debug namespace only.
    let listed = text(&ctr(DEBUG_NAMESPACE, &["images", "ls", "-q"]).stdout);
    assert!(listed.lines().any(|l| l == reference), "{listed}");
    let pods = text(&ctr("k8s.io", &["images", "ls", "-q"]).stdout);
    assert!(!pods.lines().any(|l| l == reference), "{pods}");

    // Present now: a second session pulls nothing.
    let out = run(
        &mut local(&target, &reference, &["--", "cat", "/marker"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("Downloading"));
    let _ = ctr(DEBUG_NAMESPACE, &["images", "rm", &reference]);
    assert!(target.leftovers().is_empty());
}

#[test]
fn a_retained_container_stays_and_holds_between_sessions() {
    let target = CtdTarget::start("exec sleep 3600");
    let out = run(
        &mut local(
            &target,
            &ctd_image(),
            &["--retain", "--", "sh", "-c", "echo kept > /kept"],
        ),
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let kept = target.leftovers();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(
        text(&out.stderr).contains(&format!(
            "kubectl-debug local attach {} {}",
            target.reference(),
            kept[0]
        )),
        "how to come back: {}",
        text(&out.stderr)
    );
    // Its main process holds it, idle; the session's process is gone with its FIFOs.
    let tasks = text(&ctr(DEBUG_NAMESPACE, &["tasks", "ls"]).stdout);
    let line = tasks
        .lines()
        .find(|l| l.starts_with(&kept[0]))
        .unwrap_or_default();
    assert!(line.contains("RUNNING"), "{tasks}");
    let ps = text(&ctr(DEBUG_NAMESPACE, &["tasks", "ps", &kept[0]]).stdout);
    assert_eq!(ps.lines().count(), 2, "only the holder runs: {ps}");
    assert!(snapshot_of(&kept[0]), "its filesystem stays");
    support::kill_task(DEBUG_NAMESPACE, &kept[0]);
    let _ = ctr(DEBUG_NAMESPACE, &["tasks", "delete", &kept[0]]);
    let _ = ctr(DEBUG_NAMESPACE, &["containers", "delete", &kept[0]]);
    assert!(!snapshot_of(&kept[0]));
}

#[test]
fn plugin_killed_mid_session_leaves_nothing_behind() {
    let target = CtdTarget::start("exec sleep 3600");
    let fifos = scratch("fifo-kill");
    let agent = support::Agent::containerd(&fifos, "");
    let address = agent.address();
    let mut session = via_agent(&target, &address, &["--", "sleep", "300"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let id = support::wait_for_debug_container(|| target.leftovers());
    assert!(fifos.join(&id).exists());
    session.kill().unwrap(); // SIGKILL
    session.wait().unwrap();
    support::assert_agent_removed(|| target.leftovers(), &agent);
    // The container goes first; its snapshot, FIFOs and task go with it or just after.
    support::assert_agent_removed(
        || {
            let mut left = Vec::new();
            if snapshot_of(&id) {
                left.push(format!("snapshot {id}"));
            }
            if fifos.join(&id).exists() {
                left.push(format!("FIFOs of {id}"));
            }
            let tasks = text(&ctr(DEBUG_NAMESPACE, &["tasks", "ls", "-q"]).stdout);
            if tasks.contains(&id) {
                left.push(format!("task {id}: {tasks}"));
            }
            left
        },
        &agent,
    );
    drop(agent);
}

#[test]
fn sigterm_tells_sessions_and_removes_their_containers() {
    let target = CtdTarget::start("exec sleep 3600");
    let fifos = scratch("fifo-term");
    let mut agent = support::Agent::containerd(&fifos, "");
    let address = agent.address();
    let session = via_agent(&target, &address, &["--", "sleep", "300"])
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

#[test]
fn registry_credentials_come_from_a_docker_config() {
    let target = CtdTarget::start("exec sleep 3600");
    let image = format!("{}/kdbg-tools:test", support::auth_registry());
    // The config.json `docker login` wrote when the test world pushed there.
    let config = std::env::var("KDBG_AUTH_CONFIG").expect("KDBG_AUTH_CONFIG is not set");
    let fifos = scratch("fifo-auth");
    let agent = support::Agent::containerd(&fifos, &format!("  registryAuth: \"{config}\"\n"));
    let out = run(
        &mut via_agent(
            &target,
            &agent.address(),
            &[
                "--image",
                &image,
                "--pull-policy",
                "Always",
                "--",
                "echo",
                "ran",
            ],
        ),
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ran\n");
    let err = text(&out.stderr);
    assert!(err.contains("Digest: sha256:"), "{err}");

    // Without the credentials the registry refuses, and the user is told what to give.
    let bare_fifos = scratch("fifo-noauth");
    let bare = support::Agent::containerd(&bare_fifos, "");
    let out = run(
        &mut via_agent(
            &target,
            &bare.address(),
            &["--image", &image, "--pull-policy", "Always", "--", "true"],
        ),
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("pulling image {image}")) && err.contains("registryAuth"),
        "{err}"
    );
    let _ = ctr(DEBUG_NAMESPACE, &["images", "rm", &image]);
    support::assert_removed_soon(|| target.leftovers());
}

#[test]
fn registry_token_auth_anonymous_and_with_credentials() {
    let tokens = support::token::TokenServer::start();
    let registry = std::env::var("KDBG_TOKEN_REGISTRY").expect("KDBG_TOKEN_REGISTRY is not set");
    let target = CtdTarget::start("exec sleep 3600");
    let pull = |image: &str, extra: &[&str]| {
        let mut cmd = local(&target, image, &["--insecure-registry", &registry]);
        cmd.args(extra)
            .args(["--pull-policy", "Always", "--", "echo", "ran"]);
        run(&mut cmd, b"")
    };

    // Anonymous: the registry sends us to the token server, which grants a public pull.
    let public = format!("{registry}/kdbg-tools:test");
    let out = pull(&public, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ran\n");
    let asked = tokens.seen_for("kdbg-tools");
    assert!(
        asked
            .iter()
            .any(|s| s.granted && s.authorization.is_none() && s.service == "kdbg-registry"),
        "{asked:?}"
    );

    // A private repository without credentials: refused, and the user told what to give.
    let private = format!("{registry}/{}:test", support::token::PRIVATE);
    let out = pull(&private, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("pulling image {private}"))
            && err.contains("401")
            && err.contains("--registry-auth"),
        "{err}"
    );

    // With credentials from a config.json: sent to the token server only, and the pull works.
    let config_dir = scratch("token-auth");
    let config = config_dir.join("config.json");
    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{}:{}", support::token::USER, support::token::PASSWORD),
    );
    std::fs::write(
        &config,
        format!(r#"{{"auths": {{"{registry}": {{"auth": "{auth}"}}}}}}"#),
    )
    .unwrap();
    let out = pull(&private, &["--registry-auth", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ran\n");
    let asked = tokens.seen_for(support::token::PRIVATE);
    assert!(
        asked.iter().any(|s| s.granted
            && s.authorization
                .as_deref()
                .is_some_and(|a| a.starts_with("Basic "))),
        "{asked:?}"
    );
    for image in [&public, &private] {
        let _ = ctr(DEBUG_NAMESPACE, &["images", "rm", image]);
    }
    assert!(target.leftovers().is_empty());
}

#[test]
fn output_waits_for_a_reader_that_pauses_past_the_process_exit() {
    let target = CtdTarget::start("exec sleep 3600");
    let fifos = scratch("fifo-paused");
    let agent = support::Agent::containerd(&fifos, "");
    let address = agent.address();
    support::a_paused_reader_gets_every_byte(&agent, |script| {
        via_agent(&target, &address, &["--", "sh", "-c", script])
    });
    support::assert_agent_removed(|| target.leftovers(), &agent);
}

#[test]
fn a_retained_container_outlives_a_client_that_vanished_without_its_process() {
    let target = CtdTarget::start("exec sleep 3600");
    let fifos = scratch("fifo-retain-vanish");
    let agent = support::Agent::containerd(&fifos, "");
    let mut session = via_agent(
        &target,
        &agent.address(),
        &[
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
    // The session's script has written /kept and exec'd `sleep 300`, beside the container's
    // main process (the holder).
    support::eventually(
        support::READY_BOUND,
        "the session's `sleep 300` to run",
        || {
            text(&ctr(DEBUG_NAMESPACE, &["tasks", "ps", &id]).stdout)
                .lines()
                .filter_map(|l| l.split_whitespace().next()?.parse().ok())
                .any(|pid| support::runs(pid, "sleep 300"))
        },
    );
    session.kill().unwrap(); // SIGKILL: the client vanishes
    session.wait().unwrap();
    // The session's process gets SIGTERM (sleep dies of it at once); the container stays,
    // held by its main process (idle between sessions), with its filesystem, as on Docker.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ps = text(&ctr(DEBUG_NAMESPACE, &["tasks", "ps", &id]).stdout);
        if ps.lines().count() == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "session of {id} still running after 5 s: {ps}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(target.leftovers(), std::slice::from_ref(&id));
    assert!(snapshot_of(&id), "its filesystem stays");
    support::kill_task(DEBUG_NAMESPACE, &id);
    let _ = ctr(DEBUG_NAMESPACE, &["tasks", "delete", &id]);
    let _ = ctr(DEBUG_NAMESPACE, &["containers", "delete", &id]);
}

#[test]
fn sessions_are_started_by_the_containers_init_else_execd() {
    let target = CtdTarget::start("exec sleep 3600");
    // The container's own kdbg-init starts the session (no `runc exec`); this one removes its
    // socket, so the container is then like one made without a spawner.
    let first = support::session_starter(true);
    let out = run(
        &mut local(
            &target,
            &ctd_image(),
            &["--retain", "--", "sh", "-c", &first],
        ),
        b"",
    );
    support::assert_started_by(&out, true);
    let kept = target.leftovers();
    assert_eq!(kept.len(), 1, "{kept:?}");
    // No spawner answers: containerd's exec, and the session works as ever.
    let again = support::session_starter(false);
    let mut attach = plugin();
    attach.args([
        "local",
        "attach",
        &target.reference(),
        &kept[0],
        "--runtime-endpoint",
        &containerd_socket(),
        "--",
        "sh",
        "-c",
        &again,
    ]);
    support::assert_started_by(&run(&mut attach, b""), false);
    support::kill_task(DEBUG_NAMESPACE, &kept[0]);
    let _ = ctr(DEBUG_NAMESPACE, &["tasks", "delete", &kept[0]]);
    let _ = ctr(DEBUG_NAMESPACE, &["containers", "delete", &kept[0]]);
}
