//! Helpers shared by the end-to-end tests: the real engine, target containers, the real
//! binaries, and the Kubernetes API stand-in.
#![allow(dead_code)]

pub mod apiserver;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const LABEL_TARGET: &str = "debug.kubectl-debug.io/target";

pub fn docker_host() -> String {
    std::env::var("DOCKER_HOST").expect(
        "DOCKER_HOST is not set: run the tests with scripts/test, which starts a Docker engine",
    )
}

pub fn image() -> String {
    std::env::var("KDBG_TEST_IMAGE").unwrap_or_else(|_| "kdbg-busybox:test".into())
}

pub fn docker(args: &[&str]) -> Output {
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
pub struct Target {
    pub name: String,
}

impl Target {
    pub fn start(script: &str) -> Target {
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

    pub fn reference(&self) -> String {
        format!("docker://{}", self.name)
    }

    /// Debug containers still present for this target.
    pub fn leftovers(&self) -> Vec<String> {
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

pub fn plugin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubectl-debug"));
    cmd.env("DOCKER_HOST", docker_host());
    cmd
}

/// Runs the plugin with `stdin` as input, killed after 60 s.
pub fn run(cmd: &mut Command, stdin: &[u8]) -> Output {
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

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The agent binary, built beside the plugin (scripts/test builds every binary first).
pub fn agent_binary() -> PathBuf {
    let plugin = PathBuf::from(env!("CARGO_BIN_EXE_kubectl-debug"));
    let agent = plugin.with_file_name("kubectl-debug-agent");
    assert!(
        agent.exists(),
        "{} is missing: run the tests with scripts/test, which builds every binary first",
        agent.display()
    );
    agent
}

/// A real `kubectl-debug-agent` on 127.0.0.1, stopped when dropped.
pub struct Agent {
    pub port: u16,
    child: std::process::Child,
}

impl Agent {
    pub fn start() -> Agent {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kdbg-agent-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
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
        let child = Command::new(agent_binary())
            .arg("--config")
            .arg(&config)
            .stderr(Stdio::null())
            .spawn()
            .expect("starting kubectl-debug-agent");
        let address = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(
                Instant::now() < deadline,
                "agent never listened on {address}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Agent { port, child }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Sends SIGTERM and waits (at most `limit`) for the agent to exit; returns its exit code.
    pub fn terminate(&mut self, limit: Duration) -> Option<i32> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "agent still running {limit:?} after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The full ID of a container.
pub fn container_id(name: &str) -> String {
    let out = docker(&["inspect", "-f", "{{.Id}}", name]);
    text(&out.stdout).trim().to_owned()
}
