//! End-to-end: the real `kubectl-debug` and `kubectl-debug-agent` binaries against a real
//! Docker engine (started by `scripts/test-world`, which exports `DOCKER_HOST`).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const LABEL_TARGET: &str = "debug.kubectl-debug.io/target";

fn docker_host() -> String {
    std::env::var("DOCKER_HOST").expect(
        "DOCKER_HOST is not set: run the tests with scripts/test, which starts a Docker engine",
    )
}

fn image() -> String {
    std::env::var("KDBG_TEST_IMAGE").unwrap_or_else(|_| "kdbg-busybox:test".into())
}

fn docker(args: &[&str]) -> Output {
    let out = Command::new("/usr/bin/docker")
        .args(args)
        .env("DOCKER_HOST", docker_host())
        .output()
        .expect("running docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A target container, removed when dropped.
struct Target {
    name: String,
}

impl Target {
    fn start(script: &str) -> Target {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "kdbg-e2e-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "none",
            &image(),
            "sh",
            "-c",
            script,
        ]);
        Target { name }
    }

    fn reference(&self) -> String {
        format!("docker://{}", self.name)
    }

    /// Debug containers still present for this target.
    fn leftovers(&self) -> Vec<String> {
        let filter = format!("label={LABEL_TARGET}={}", self.reference());
        let out = docker(&["ps", "-aq", "--filter", &filter]);
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = Command::new("/usr/bin/docker")
            .args(["rm", "-f", &self.name])
            .env("DOCKER_HOST", docker_host())
            .output();
    }
}

fn plugin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubectl-debug"));
    cmd.env("DOCKER_HOST", docker_host());
    cmd
}

/// Runs the plugin with `stdin` as input, killed after 60 s.
fn run(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting kubectl-debug");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("kubectl-debug did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn local(target: &Target, extra: &[&str]) -> Command {
    let mut cmd = plugin();
    cmd.args(["local", &target.reference(), "--image", &image()]);
    cmd.args(extra);
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
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
    std::thread::sleep(Duration::from_millis(300));
    let out = run(
        &mut local(&target, &["--", "wget", "-qO-", "http://127.0.0.1:8080/"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "marker-7a1\n");
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
    cmd.args(["local", "docker://kdbg-no-such-container", "--", "true"]);
    let out = run(&mut cmd, b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("docker://kdbg-no-such-container not found"),
        "{}",
        text(&out.stderr)
    );

    let mut cmd = plugin();
    cmd.args(["local", "cri-o://x", "--", "true"]);
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
    let socket = format!("kdbg-e2e-{}", std::process::id());
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .arg("-L")
            .arg(&socket)
            .args(args)
            .output()
            .expect("tmux")
    };
    let command = format!(
        "DOCKER_HOST={} {} local {} --image {} -- sh; echo EXIT=$?; sleep 30",
        docker_host(),
        env!("CARGO_BIN_EXE_kubectl-debug"),
        target.reference(),
        image()
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        "e2e",
        "-x",
        "100",
        "-y",
        "30",
        &command,
    ]);
    let screen = || text(&tmux(&["capture-pane", "-t", "e2e", "-p"]).stdout);
    let wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = screen();
            if s.contains(needle) {
                return s;
            }
            assert!(Instant::now() < deadline, "never saw {needle:?} on:\n{s}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for("/ #");
    tmux(&["send-keys", "-t", "e2e", "stty size", "Enter"]);
    wait_for("30 100");
    tmux(&["resize-window", "-t", "e2e", "-x", "120", "-y", "40"]);
    std::thread::sleep(Duration::from_millis(300));
    tmux(&["send-keys", "-t", "e2e", "stty size", "Enter"]);
    wait_for("40 120");
    tmux(&["send-keys", "-t", "e2e", "exit 3", "Enter"]);
    wait_for("EXIT=3");
    tmux(&["kill-server"]);
    assert!(target.leftovers().is_empty());
}

/// The agent binary, built beside the plugin.
fn agent_binary() -> PathBuf {
    let plugin = PathBuf::from(env!("CARGO_BIN_EXE_kubectl-debug"));
    let agent = plugin.with_file_name("kubectl-debug-agent");
    assert!(
        agent.exists(),
        "{} is missing: run the tests with scripts/test, which builds every binary first",
        agent.display()
    );
    agent
}

#[test]
fn plugin_killed_mid_session_leaves_no_container_behind() {
    let target = Target::start("exec sleep 3600");
    let dir = std::env::temp_dir().join(format!("kdbg-agent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = dir.join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: \"127.0.0.1:{port}\"\nruntime:\n  kind: docker\n  endpoint: \"{}\"\ndefaults:\n  image: \"{}\"\n  command: [\"sh\"]\n",
            docker_host(),
            image()
        ),
    )
    .unwrap();
    let mut agent = Command::new(agent_binary())
        .arg("--config")
        .arg(&config)
        .stderr(Stdio::null())
        .spawn()
        .expect("starting kubectl-debug-agent");
    let address = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&address).is_err() {
        assert!(Instant::now() < deadline, "agent never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut session = local(&target, &["--agent", &address, "--", "sleep", "300"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while target.leftovers().is_empty() {
        assert!(Instant::now() < deadline, "debug container never appeared");
        std::thread::sleep(Duration::from_millis(100));
    }
    session.kill().unwrap(); // SIGKILL
    session.wait().unwrap();
    let killed = Instant::now();
    while !target.leftovers().is_empty() {
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "debug container still there 5 s after the plugin was killed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    agent.kill().unwrap();
    agent.wait().unwrap();
}

#[test]
fn a_bad_agent_config_exits_64_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("kdbg-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
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
