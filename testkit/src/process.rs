//! The workspace's binaries as the tests run them: the plugin, and agents on either engine.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::*;

/// `kubectl-debug`, the binary of this tree, with the test engine as its `DOCKER_HOST`.
pub fn plugin() -> Command {
    let mut cmd = Command::new(plugin_binary());
    cmd.env("DOCKER_HOST", docker_host());
    cmd
}

/// The plugin binary of this tree.
pub fn plugin_binary() -> PathBuf {
    built("kubectl-debug")
}

/// The watchdog plugin `pid` started (its child `kubectl-debug __watchdog`), if it has one.
pub fn watchdog_of(pid: u32) -> Option<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|children| {
            children
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .find(|child| {
            std::fs::read(format!("/proc/{child}/cmdline"))
                .is_ok_and(|line| line.split(|b| *b == 0).any(|arg| arg == b"__watchdog"))
        })
}

/// Runs the plugin with `stdin` as input, killed after 60 s. Input is written and output
/// read at the same time, so a command that echoes a lot never blocks on a full pipe.
pub fn run(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting kubectl-debug");
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    // A write error means the plugin stopped reading, which the assertions will show.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("kubectl-debug did not finish in 60 s");
        }
    };
    let _ = writer.join();
    output
}

/// `bytes` as text, invalid UTF-8 replaced.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The agent binary of this tree (scripts/test builds every binary first).
pub fn agent_binary() -> PathBuf {
    built("kubectl-debug-agent")
}

/// Binary `name` of this workspace, as cargo built it for the tests; ends the test process
/// with one line if it is not there.
pub(crate) fn built(name: &str) -> PathBuf {
    // Cargo names a package's own binaries to its integration tests; any other's is in the
    // directory above the test binary's `deps/`.
    let path = match std::env::var_os(format!("CARGO_BIN_EXE_{name}")) {
        Some(path) => PathBuf::from(path),
        None => {
            let exe = std::env::current_exe().expect("the test binary's path");
            let mut dir = exe
                .parent()
                .expect("the test binary's directory")
                .to_path_buf();
            if dir.ends_with("deps") {
                dir.pop();
            }
            dir.join(name)
        }
    };
    if !path.exists() {
        stop_tests(&format!(
            "{} is not built: run the tests with scripts/test, which builds every binary first",
            path.display()
        ));
    }
    path
}

/// A real `kubectl-debug-agent` on 127.0.0.1, stopped when dropped (and its scratch
/// directory removed). It runs as a process of this machine, or, when `KDBG_AGENT_IMAGE`
/// names an image (scripts/agent-image builds it), as a container on the test Docker engine
/// the way deploy/'s DaemonSet runs it: the host's PID namespace and network, a read-only root,
/// every capability dropped but the DaemonSet's, the config file mounted read-only where the
/// ConfigMap is, the runtime's socket and /run/kubectl-debug from the host.
pub struct Agent {
    /// The port it listens on.
    pub port: u16,
    /// The address it listens on, without the port.
    pub host: String,
    process: AgentProcess,
    dir: PathBuf,
    /// Directories the agent was given, removed after it stops.
    kept: Vec<super::Scratch>,
}

pub(crate) enum AgentProcess {
    /// A child process; its stderr goes to `log`.
    Child {
        child: std::process::Child,
        log: PathBuf,
    },
    /// A container of that name.
    Container(String),
}

/// The capabilities deploy/base/daemonset.yaml adds after dropping all.
pub(crate) const DAEMONSET_CAPABILITIES: [&str; 4] =
    ["SYS_PTRACE", "DAC_OVERRIDE", "CHOWN", "FOWNER"];

/// The agent's image when the tests run the agent as a container.
pub fn agent_image() -> Option<String> {
    std::env::var("KDBG_AGENT_IMAGE")
        .ok()
        .filter(|i| !i.is_empty())
}

impl Agent {
    /// An agent on the test Docker engine.
    pub fn start() -> Agent {
        Agent::docker_with("")
    }

    /// An agent on the test Docker engine with `extra` top-level YAML in its configuration.
    pub fn docker_with(extra: &str) -> Agent {
        Agent::with_config(&docker_runtime(), &image(), extra)
    }

    /// An agent on the test containerd with `extra` top-level YAML in its configuration.
    pub fn containerd_with(fifo_dir: &std::path::Path, extra: &str) -> Agent {
        Agent::with_config(&containerd_runtime(fifo_dir, ""), &ctd_image(), extra)
    }

    /// An agent on the test containerd; its FIFOs go to `fifo_dir`; `extra` are more
    /// `runtime:` lines.
    pub fn containerd(fifo_dir: &std::path::Path, extra: &str) -> Agent {
        Agent::with_config(&containerd_runtime(fifo_dir, extra), &ctd_image(), "")
    }

    /// An agent on the test Docker engine, as [`Agent::docker_with`], allowed only `files`
    /// open file descriptors (soft and hard limit), as a node's tight limit would.
    pub fn docker_with_file_limit(extra: &str, files: u64) -> Agent {
        Agent::with_limit(&docker_runtime(), &image(), extra, Some(files))
    }

    fn with_config(runtime: &str, image: &str, extra: &str) -> Agent {
        Agent::with_limit(runtime, image, extra, None)
    }

    /// An agent whose config has `runtime` (indented YAML lines), `image` by default, and
    /// `extra` top-level YAML (which may set `listen`); with `files`, that file limit.
    fn with_limit(runtime: &str, image: &str, extra: &str, files: Option<u64>) -> Agent {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kdbg-agent-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        // `extra` may name the address: `listen: "127.0.0.2:PORT"`. Else the agent binds any
        // free port of 127.0.0.1 and logs which: a port picked here could be taken by another
        // test's agent before this one binds it.
        let named = extra
            .lines()
            .find_map(|l| l.strip_prefix("listen: "))
            .map(|a| {
                let (h, p) = a.trim_matches('"').rsplit_once(':').unwrap();
                (h.to_owned(), p.parse::<u16>().unwrap())
            });
        let listen = if named.is_some() {
            String::new()
        } else {
            "listen: \"127.0.0.1:0\"\n".to_owned()
        };
        // Plain HTTP and no authentication unless `extra` configures them: the tests of
        // security (tests/security.rs) do.
        let mut security = String::new();
        if !extra.contains("insecure:") && !extra.contains("tls:") {
            security.push_str("insecure: true\n");
        }
        if !extra.contains("auth:") {
            security.push_str("auth:\n  mode: none\n");
        }
        let config = dir.join("agent.yaml");
        std::fs::write(
            &config,
            format!(
                "{listen}{security}runtime:\n{runtime}defaults:\n  image: \"{image}\"\n  command: [\"sh\"]\n{extra}"
            ),
        )
        .unwrap();
        let process = match agent_image() {
            Some(image) => AgentProcess::start_container(&image, &dir, files),
            None => AgentProcess::start_child(&config, &dir, files),
        };
        let mut agent = Agent {
            port: 0,
            host: String::new(),
            process,
            dir,
            kept: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let (host, port) = loop {
            if let Some(bound) = ready_address(&agent.log()) {
                break named.unwrap_or(bound);
            }
            if let Some(code) = agent.process.exited() {
                panic!(
                    "the agent exited ({code:?}) before it was ready:\n{}",
                    agent.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the agent was not ready in 10 s:\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        agent.host = host;
        agent.port = port;
        agent
    }

    /// The agent, owning `dir` (which its configuration names): removed after it stops.
    pub fn keeping(mut self, dir: super::Scratch) -> Agent {
        self.kept.push(dir);
        self
    }

    /// What the agent has logged so far.
    pub fn log(&self) -> String {
        match &self.process {
            AgentProcess::Child { log, .. } => std::fs::read_to_string(log).unwrap_or_default(),
            AgentProcess::Container(name) => {
                let out = Command::new("/usr/bin/docker")
                    .args(["logs", name])
                    .env("DOCKER_HOST", docker_host())
                    .output()
                    .expect("running docker logs");
                text(&out.stderr) + &text(&out.stdout)
            }
        }
    }

    /// The agent's process id on this machine (a containerised agent's too).
    pub fn pid(&self) -> String {
        match &self.process {
            AgentProcess::Child { child, .. } => child.id().to_string(),
            AgentProcess::Container(name) => {
                let out = docker(&["inspect", "-f", "{{.State.Pid}}", name]);
                text(&out.stdout).trim().to_owned()
            }
        }
    }

    /// The agent's resident memory, in KiB, as the kernel counts it.
    pub fn rss_kib(&self) -> Option<u64> {
        let pid = self.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// `host:port`, where it listens.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The sum of the samples of `name` (over all their labels) on the agent's `/metrics`,
    /// e.g. `kubectl_debug_agent_pulls_total`. The agent must serve plain HTTP.
    pub fn metric(&self, name: &str) -> u64 {
        self.try_metric(name)
            .unwrap_or_else(|| panic!("no /metrics from {}", self.address()))
    }

    /// [`Agent::metric`], or `None` when the agent did not answer (e.g. it is at
    /// `limits.maxConnections` and closes new connections at once).
    pub fn try_metric(&self, name: &str) -> Option<u64> {
        let metrics = Command::new("curl")
            .args(["-sf", &format!("http://{}/metrics", self.address())])
            .output()
            .expect("running curl");
        if !metrics.status.success() {
            return None;
        }
        let sum = text(&metrics.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix(name))
            .filter(|rest| rest.starts_with(['{', ' ']))
            .filter_map(|rest| rest.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        Some(sum)
    }

    /// Kills the agent with SIGKILL, as a node's OOM killer or a crash would.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Sends SIGTERM and waits (at most `limit`) for the agent to exit; returns its exit code.
    pub fn terminate(&mut self, limit: Duration) -> Option<i32> {
        self.process.signal("TERM");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(code) = self.process.exited() {
                return code;
            }
            assert!(
                Instant::now() < deadline,
                "agent still running {limit:?} after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl AgentProcess {
    fn start_child(
        config: &std::path::Path,
        dir: &std::path::Path,
        files: Option<u64>,
    ) -> AgentProcess {
        let log = dir.join("agent.log");
        // prlimit sets the limit and execs the agent: the child's pid is the agent's.
        let mut command = match files {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}")).arg("--").arg(agent_binary());
                c
            }
            None => Command::new(agent_binary()),
        };
        // On the stand-in's node, as the container's agent and the DaemonSet's are.
        let child = command
            .env("NODE_NAME", crate::apiserver::NODE)
            .arg("--config")
            .arg(config)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting kubectl-debug-agent");
        AgentProcess::Child { child, log }
    }

    /// `docker run` of the agent's image with the DaemonSet's settings. The scratch files of
    /// the tests (sockets, FIFOs, recordings) are all under /tmp, mounted at the same path.
    fn start_container(image: &str, dir: &std::path::Path, files: Option<u64>) -> AgentProcess {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        // One an earlier, killed run may have left under the same name.
        let _ = Command::new("/usr/bin/docker")
            .args(["rm", "-f", &name])
            .env("DOCKER_HOST", docker_host())
            .output();
        let mut args = vec![
            "run".to_owned(),
            "-d".into(),
            "--name".into(),
            name.clone(),
            "--network".into(),
            "host".into(),
            "--pid".into(),
            "host".into(),
            "--read-only".into(),
            "--user".into(),
            "0".into(),
            "--security-opt".into(),
            "no-new-privileges".into(),
            "--cap-drop".into(),
            "ALL".into(),
        ];
        for cap in DAEMONSET_CAPABILITIES {
            args.extend(["--cap-add".into(), cap.into()]);
        }
        if let Some(n) = files {
            args.extend(["--ulimit".into(), format!("nofile={n}:{n}")]);
        }
        args.extend([
            "-e".into(),
            "NODE_NAME=stand-in-node".into(),
            "-v".into(),
            format!("{}:/etc/kubectl-debug:ro", dir.display()),
            "-v".into(),
            "/tmp:/tmp".into(),
            "-v".into(),
            "/run/kubectl-debug:/run/kubectl-debug".into(),
            image.into(),
            "--config".into(),
            "/etc/kubectl-debug/agent.yaml".into(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker(&args);
        AgentProcess::Container(name)
    }

    fn kill(&mut self) {
        match self {
            AgentProcess::Child { child, .. } => {
                let _ = child.kill();
                let _ = child.wait();
            }
            AgentProcess::Container(name) => {
                let _ = Command::new("/usr/bin/docker")
                    .args(["kill", name])
                    .env("DOCKER_HOST", docker_host())
                    .output();
            }
        }
    }

    fn signal(&self, signal: &str) {
        let sent = match self {
            AgentProcess::Child { child, .. } => Command::new("kill")
                .args([&format!("-{signal}"), &child.id().to_string()])
                .status()
                .unwrap()
                .success(),
            AgentProcess::Container(name) => Command::new("/usr/bin/docker")
                .args(["kill", "-s", signal, name])
                .env("DOCKER_HOST", docker_host())
                .status()
                .unwrap()
                .success(),
        };
        assert!(sent, "sending SIG{signal} to the agent");
    }

    /// `Some(exit code)` once the agent has exited.
    fn exited(&mut self) -> Option<Option<i32>> {
        match self {
            AgentProcess::Child { child, .. } => child.try_wait().unwrap().map(|s| s.code()),
            AgentProcess::Container(name) => {
                let out = docker(&[
                    "inspect",
                    "-f",
                    "{{.State.Running}} {{.State.ExitCode}}",
                    name,
                ]);
                let state = text(&out.stdout);
                let (running, code) = state.trim().split_once(' ').unwrap();
                (running == "false").then(|| code.parse().ok())
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.process.kill();
        if let AgentProcess::Container(name) = &self.process {
            let _ = Command::new("/usr/bin/docker")
                .args(["rm", "-f", name])
                .env("DOCKER_HOST", docker_host())
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The address of an agent's `agent ready` log line (text or JSON).
pub(crate) fn ready_address(log: &str) -> Option<(String, u16)> {
    let line = log.lines().find(|l| l.contains("agent ready"))?;
    let at = line
        .find("listen=")
        .map(|i| i + "listen=".len())
        .or_else(|| {
            line.find("\"listen\":\"")
                .map(|i| i + "\"listen\":\"".len())
        })?;
    let address: String = line[at..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"')
        .collect();
    let (host, port) = address.rsplit_once(':')?;
    Some((host.to_owned(), port.parse().ok()?))
}

/// The `runtime:` lines of an agent on the test Docker engine.
pub(crate) fn docker_runtime() -> String {
    // Sessions started by the containers' spawners, with the engine's own containerd behind,
    // as deployed. KDBG_DOCKER_EXEC=containerd execs them through the engine's containerd,
    // KDBG_DOCKER_EXEC=dockerd through dockerd's exec (the fallbacks).
    let exec = std::env::var("KDBG_DOCKER_EXEC").unwrap_or_default();
    let engine = if exec == "dockerd" {
        "off".to_owned()
    } else {
        world_variable("KDBG_DOCKER_CONTAINERD")
    };
    format!(
        "  kind: docker\n  endpoint: \"{}\"\n  engineContainerd: \"{engine}\"\n  fifoDir: \"{}\"\n  spawner: {}\n",
        docker_host(),
        std::env::temp_dir().join("kdbg-docker-fifo").display(),
        exec.is_empty()
    )
}

/// The `runtime:` lines of an agent on the test containerd: sessions started by the
/// containers' spawners, as deployed, or exec'd with KDBG_CONTAINERD_EXEC=runc (the fallback).
pub(crate) fn containerd_runtime(fifo_dir: &std::path::Path, extra: &str) -> String {
    format!(
        "  kind: containerd\n  endpoint: \"unix://{}\"\n  insecureRegistries: [\"{}\", \"{}\"]\n  fifoDir: \"{}\"\n  spawner: {}\n{extra}",
        containerd_socket(),
        registry(),
        auth_registry(),
        fifo_dir.display(),
        std::env::var("KDBG_CONTAINERD_EXEC").is_err()
    )
}
