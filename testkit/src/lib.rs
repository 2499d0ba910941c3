//! Test support shared by the end-to-end tests and the benchmarks: the real engines, target
//! containers, the real binaries, and the Kubernetes API stand-in.
//!
//! The tests need the test world `scripts/test-world` sets up (a Docker engine and containerd on
//! private sockets, loopback registries, the test image) and every binary of the workspace
//! built. Every helper that needs it checks it first ([`require_world`]): without it, the test
//! process ends at once with one line that says to run `scripts/test`, rather than with a
//! panic per test deep in here.

pub mod apiserver;
pub mod engine;
pub mod tmux;
pub mod token;
pub mod users;
pub mod ws;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use kdbg_runtimes::containerd::DEBUG_NAMESPACE;
pub use kdbg_runtimes::label::TARGET as LABEL_TARGET;

/// The variables `scripts/test-world` exports, each of which some test reads.
const WORLD_VARIABLES: [&str; 9] = [
    "DOCKER_HOST",
    "KDBG_CONTAINERD",
    "KDBG_TEST_REGISTRY",
    "KDBG_AUTH_REGISTRY",
    "KDBG_AUTH_CONFIG",
    "KDBG_TOKEN_REGISTRY",
    "KDBG_TOKEN_REALM",
    "KDBG_TOKEN_KEY",
    "KDBG_TOKEN_CERT",
];

/// Checks, once per test process, that the test world is up: the variables
/// `scripts/test-world` exports are set and its engines' sockets are there. If not, ends the
/// process (exit status 2) with one line naming `scripts/test`. Every helper that needs the
/// world calls it, so tests need not.
pub fn require_world() {
    static CHECKED: Once = Once::new();
    // Other tests' threads wait here while the first checks; if it ends the process, they
    // never run on into a panic of their own.
    CHECKED.call_once(|| {
        if let Some(why) = world_missing() {
            no_world(&why);
        }
    });
}

/// What of the test world is missing, if anything.
fn world_missing() -> Option<String> {
    let missing = WORLD_VARIABLES
        .iter()
        .find(|name| std::env::var_os(name).is_none_or(|v| v.is_empty()));
    if let Some(name) = missing {
        return Some(format!("{name} is not set"));
    }
    let docker = std::env::var("DOCKER_HOST").unwrap_or_default();
    if let Some(socket) = docker.strip_prefix("unix://")
        && !Path::new(socket).exists()
    {
        return Some(format!("no Docker engine socket at {socket}"));
    }
    let containerd = std::env::var("KDBG_CONTAINERD").unwrap_or_default();
    if !Path::new(&containerd).exists() {
        return Some(format!("no containerd socket at {containerd}"));
    }
    None
}

/// Ends the test process: the test world is not there (`why`).
fn no_world(why: &str) -> ! {
    stop_tests(&format!(
        "the test world is not running ({why}): run the tests with scripts/test, which starts it"
    ))
}

/// Ends the test process with exit status 2 and `line` on its stderr, once: tests running
/// on other threads that get here meanwhile wait for the end instead of saying it again.
fn stop_tests(line: &str) -> ! {
    static STOPPING: Once = Once::new();
    STOPPING.call_once(|| {
        // Straight to the process's stderr: the test harness captures what a test's thread
        // prints with `eprintln!`, and that would go with the process.
        let _ = writeln!(std::io::stderr(), "{line}");
        std::process::exit(2);
    });
    std::process::exit(2)
}

/// The test Docker engine's address (`unix://...`), as `DOCKER_HOST` names it.
pub fn docker_host() -> String {
    world_variable("DOCKER_HOST")
}

/// A variable of the test world, once [`require_world`] has checked it is set.
pub(crate) fn world_variable(name: &str) -> String {
    require_world();
    std::env::var(name).unwrap_or_else(|_| no_world(&format!("{name} is not set")))
}

/// The tools image the Docker tests debug with.
pub fn image() -> String {
    std::env::var("KDBG_TEST_IMAGE").unwrap_or_else(|_| "kdbg-busybox:test".into())
}

/// Runs `/usr/bin/docker` (Debian's client, which talks to Debian's engine) with `args` on the
/// test engine; fails the test unless it succeeds.
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
    /// Its container name, unique to this test process.
    pub name: String,
}

impl Target {
    /// A target running `sh -c script`, with no network.
    pub fn start(script: &str) -> Target {
        Target::start_with(&[], script)
    }

    /// A target with more `docker run` options (labels, `--pid host`...).
    pub fn start_with(options: &[&str], script: &str) -> Target {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "kdbg-e2e-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let image = image();
        let mut args = vec!["run", "-d", "--name", &name, "--network", "none"];
        args.extend_from_slice(options);
        args.extend([image.as_str(), "sh", "-c", script]);
        docker(&args);
        Target { name }
    }

    /// As the plugin's `local` verbs name it: `docker://<name>`.
    pub fn reference(&self) -> String {
        format!("docker://{}", self.name)
    }

    /// As a pod's status names it: `docker://<full ID>`.
    pub fn pod_reference(&self) -> String {
        format!("docker://{}", container_id(&self.name))
    }

    /// Debug containers still present for this target, named by its name or its ID.
    pub fn leftovers(&self) -> Vec<String> {
        let mut found = Vec::new();
        for reference in [self.reference(), self.pod_reference()] {
            let filter = format!("label={LABEL_TARGET}={reference}");
            let out = docker(&["ps", "-aq", "--filter", &filter]);
            found.extend(
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .map(str::to_owned),
            );
        }
        found
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
fn built(name: &str) -> PathBuf {
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
}

enum AgentProcess {
    /// A child process; its stderr goes to `log`.
    Child {
        child: std::process::Child,
        log: PathBuf,
    },
    /// A container of that name.
    Container(String),
}

/// The capabilities deploy/base/daemonset.yaml adds after dropping all.
const DAEMONSET_CAPABILITIES: [&str; 4] = ["SYS_PTRACE", "DAC_OVERRIDE", "CHOWN", "FOWNER"];

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
        let metrics = Command::new("curl")
            .args(["-sf", &format!("http://{}/metrics", self.address())])
            .output()
            .expect("running curl");
        assert!(
            metrics.status.success(),
            "no /metrics from {}",
            self.address()
        );
        text(&metrics.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix(name))
            .filter(|rest| rest.starts_with(['{', ' ']))
            .filter_map(|rest| rest.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
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
        let child = command
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
fn ready_address(log: &str) -> Option<(String, u16)> {
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
fn docker_runtime() -> String {
    format!("  kind: docker\n  endpoint: \"{}\"\n", docker_host())
}

/// The `runtime:` lines of an agent on the test containerd.
fn containerd_runtime(fifo_dir: &std::path::Path, extra: &str) -> String {
    format!(
        "  kind: containerd\n  endpoint: \"unix://{}\"\n  insecureRegistries: [\"{}\", \"{}\"]\n  fifoDir: \"{}\"\n{extra}",
        containerd_socket(),
        registry(),
        auth_registry(),
        fifo_dir.display()
    )
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

/// The test containerd's socket.
pub fn containerd_socket() -> String {
    world_variable("KDBG_CONTAINERD")
}

/// The loopback registry, `host:port`.
pub fn registry() -> String {
    world_variable("KDBG_TEST_REGISTRY")
}

/// The loopback registry that wants a password, `host:port`.
pub fn auth_registry() -> String {
    world_variable("KDBG_AUTH_REGISTRY")
}

/// The tools image containerd tests debug with, served by the loopback registry.
pub fn ctd_image() -> String {
    format!("{}/kdbg-tools:test", registry())
}

/// `ctr` on the test containerd, in `namespace`.
pub fn ctr(namespace: &str, args: &[&str]) -> Output {
    Command::new("ctr")
        .args(["--address", &containerd_socket(), "-n", namespace])
        .args(args)
        .output()
        .expect("running ctr")
}

/// A target container in containerd's `k8s.io` namespace, as a pod's would be; removed
/// when dropped.
pub struct CtdTarget {
    /// Its container ID, unique to this test process.
    pub id: String,
}

impl CtdTarget {
    /// A target running `sh -c script`.
    pub fn start(script: &str) -> CtdTarget {
        CtdTarget::start_with(&[], script)
    }

    /// A target with more `ctr run` options (`--label`, `--with-ns`...).
    pub fn start_with(options: &[&str], script: &str) -> CtdTarget {
        static N: AtomicUsize = AtomicUsize::new(0);
        let id = format!(
            "kdbg-ctd-e2e-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let image = ctd_image();
        let mut args = vec!["run", "-d"];
        args.extend_from_slice(options);
        args.extend([image.as_str(), id.as_str(), "sh", "-c", script]);
        let out = ctr("k8s.io", &args);
        assert!(out.status.success(), "ctr run: {}", text(&out.stderr));
        CtdTarget { id }
    }

    /// As a pod's status and the plugin's `local` verbs name it: `containerd://<ID>`.
    pub fn reference(&self) -> String {
        format!("containerd://{}", self.id)
    }

    /// Debug containers still present for this target.
    pub fn leftovers(&self) -> Vec<String> {
        let filter = format!("labels.\"{LABEL_TARGET}\"==\"{}\"", self.reference());
        let out = ctr(DEBUG_NAMESPACE, &["containers", "ls", "-q", &filter]);
        assert!(
            out.status.success(),
            "ctr containers ls: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    /// Kills the target's task and waits until it has stopped.
    pub fn stop(&self) {
        kill_task("k8s.io", &self.id);
    }
}

/// Kills task `id` of containerd's `namespace` with SIGKILL and waits (at most
/// [`READY_BOUND`]) until it has stopped, as deleting it needs.
pub fn kill_task(namespace: &str, id: &str) {
    ctr(namespace, &["task", "kill", "-s", "KILL", id]);
    eventually(READY_BOUND, &format!("task {id} to stop"), || {
        task_stopped(namespace, id)
    });
}

/// Whether task `id` of containerd's `namespace` has stopped, or is not there at all.
fn task_stopped(namespace: &str, id: &str) -> bool {
    let out = ctr(namespace, &["task", "ls"]);
    out.status.success()
        && text(&out.stdout)
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .is_none_or(|l| l.contains("STOPPED"))
}

impl Drop for CtdTarget {
    fn drop(&mut self) {
        let _ = ctr("k8s.io", &["task", "kill", "-s", "KILL", &self.id]);
        let _ = ctr("k8s.io", &["task", "delete", "-f", &self.id]);
        let _ = ctr("k8s.io", &["container", "delete", &self.id]);
    }
}

/// What a debug container tries with SYS_ADMIN: undo the read-only /proc/sys and /sys (from
/// there, `kernel.core_pattern` or a cgroup `release_agent` reach the node), and enter the
/// target's mount namespace (what SYS_ADMIN is granted for).
pub const SYS_ADMIN_PROBE: &str = "umount /proc/sys && echo UMOUNTED; \
     mount -o remount,rw /sys && echo REMOUNTED; \
     echo 1 > /proc/sys/kernel/core_uses_pid && echo WROTE_SYSCTL; \
     nsenter -t 1 -m -- ls /bin/sleep && echo NSENTER_OK";

/// The probe's outcome: mounts and sysctl writes refused, nsenter working.
pub fn assert_sys_admin_is_confined(out: &Output) {
    let stdout = text(&out.stdout);
    for escape in ["UMOUNTED", "REMOUNTED", "WROTE_SYSCTL"] {
        assert!(
            !stdout.contains(escape),
            "{escape}:\n{stdout}\n{}",
            text(&out.stderr)
        );
    }
    assert!(
        stdout.contains("NSENTER_OK"),
        "{stdout}\n{}",
        text(&out.stderr)
    );
}

/// Waits (at most [`CLEANUP_BOUND`]) until `leftovers` finds nothing: an agent removes a debug
/// container just after it has sent the exit status, so the plugin may exit a moment before.
pub fn assert_removed_soon(leftovers: impl Fn() -> Vec<String>) {
    if let Err(left) = removed_within(CLEANUP_BOUND, &leftovers) {
        panic!("debug containers left after {CLEANUP_BOUND:?}: {left:?}");
    }
}

/// How long a cleanup may take before a test calls it missing. Cleanup takes well under a
/// second here; the bound is generous because the tests share a loaded 2-core machine with
/// each other and with the engines, and a cleanup that never comes fails it just the same.
pub const CLEANUP_BOUND: Duration = Duration::from_secs(15);

/// Like [`assert_removed_soon`], for a cleanup `agent` does on its own: a failure shows what
/// the agent logged meanwhile.
pub fn assert_agent_removed(leftovers: impl Fn() -> Vec<String>, agent: &Agent) {
    if let Err(left) = removed_within(CLEANUP_BOUND, &leftovers) {
        panic!(
            "debug containers left after {CLEANUP_BOUND:?}: {left:?}; the agent logged:\n{}",
            agent.log()
        );
    }
}

/// Waits up to `limit` for `leftovers` to be empty; what is left if they never are.
fn removed_within(
    limit: Duration,
    leftovers: &impl Fn() -> Vec<String>,
) -> Result<(), Vec<String>> {
    let deadline = Instant::now() + limit;
    loop {
        let left = leftovers();
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(left);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An interactive session through a real pty (tmux, 100x30): `command` must open `sh` in a
/// debug container and then `echo EXIT=$?`. Checks the prompt, that stdin is a terminal whose
/// size follows a resize to 120x40, and that `exit 3` ends the session with code 3.
pub fn pty_session(tag: &str, command: &str) {
    let tmux = tmux::Tmux::new(tag);
    tmux.start(
        "e2e",
        100,
        30,
        &format!("{command}; echo EXIT=$?; sleep 30"),
    );
    tmux.wait_for("e2e", "/ #");
    tmux.line("e2e", "stty size; tty");
    tmux.wait_for("e2e", "30 100");
    tmux.wait_for("e2e", "/dev/pts/");
    tmux.resize("e2e", 120, 40);
    // The new size reaches the container's terminal a moment after the window's.
    tmux.retype_until("e2e", "stty size", "40 120");
    tmux.line("e2e", "exit 3");
    tmux.wait_for("e2e", "EXIT=3");
}

/// `kubectl-debug ... -- cat big.log | less`, nobody paging: sessions printing one size of
/// output each, concurrently, into readers that take nothing for 7 s (past the agent's 5 s
/// drain time and containerd's 2 s for a deleted process's output), then read it all. Which
/// size ends with output still behind the process when it exits depends on the buffers on
/// the way, so there are five (the default `policy.maxSessions.perTarget`); each of them lost
/// its tail on one runtime or the other before the agent waited for slow readers.
/// `session(script)` runs `sh -c script` in a debug session of `agent`.
pub fn a_paused_reader_gets_every_byte(agent: &Agent, session: impl Fn(&str) -> Command) {
    let sizes = [192, 256, 384, 768, 1024].map(|kb| kb * 1000);
    let running: Vec<_> = sizes
        .iter()
        .map(|size| {
            let child = session(&format!("head -c {size} /dev/zero"))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (*size, child)
        })
        .collect();
    // The pause is the scenario, not a wait for something: 7 s is past the agent's 5 s drain
    // time and containerd's 2 s, as above.
    std::thread::sleep(Duration::from_secs(7));
    let mut short = Vec::new();
    for (size, child) in running {
        let out = child.wait_with_output().unwrap();
        if out.status.code() != Some(0) || out.stdout.len() != size {
            short.push(format!(
                "{size} bytes: got {} (exit {:?}): {}",
                out.stdout.len(),
                out.status.code(),
                text(&out.stderr)
            ));
        }
    }
    assert!(
        short.is_empty(),
        "{short:#?}\nthe agent's log:\n{}",
        agent.log()
    );
}

/// Waits (at most [`READY_BOUND`]) until `leftovers` finds a debug container, and returns
/// its ID.
pub fn wait_for_debug_container(leftovers: impl Fn() -> Vec<String>) -> String {
    let mut found = None;
    eventually(READY_BOUND, "a debug container to appear", || {
        found = leftovers().pop();
        found.is_some()
    });
    found.expect("found")
}

/// How long something a test started may take to be ready (a container's process, a
/// listener, a resize reaching a terminal): a moment here; the bound is for a loaded 2-core
/// machine that runs the tests and the engines at once.
pub const READY_BOUND: Duration = Duration::from_secs(20);

/// Waits (at most `limit`) until `done` holds, asking every 50 ms; fails the test saying
/// `what` it waited for if it never does.
pub fn eventually(limit: Duration, what: &str, done: impl FnMut() -> bool) {
    assert!(
        within(limit, done),
        "timed out after {limit:?} waiting for {what}"
    );
}

/// Whether `done` holds within `limit`, asking every 50 ms: for a caller that says more than
/// [`eventually`] when it does not.
pub fn within(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (at most [`READY_BOUND`]) until `target`'s main process runs `command` (its program
/// and arguments, joined by spaces): its script has come to its final `exec`, so what it did
/// before (files written, daemons started) is done.
pub fn wait_for_exec(target: &dyn engine::Targeted, command: &str) {
    eventually(
        READY_BOUND,
        &format!("the target's script to exec {command:?}"),
        || runs(target.pid(), command),
    );
}

/// Whether process `pid` of this machine runs `command` (program and arguments joined by
/// spaces).
pub fn runs(pid: u32, command: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        let words: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|w| !w.is_empty())
            .map(text)
            .collect();
        words.join(" ") == command
    })
}

/// Waits (at most [`READY_BOUND`]) until something listens on TCP `port` in `target`'s
/// network namespace.
pub fn wait_for_listener(target: &dyn engine::Targeted, port: u16) {
    eventually(
        READY_BOUND,
        &format!("a listener on port {port} in the target"),
        || listens(target.pid(), port),
    );
}

/// Whether a TCP socket listens on `port` in the network namespace of process `pid`, as its
/// `/proc/PID/net/tcp` and `tcp6` list them.
pub fn listens(pid: u32, port: u16) -> bool {
    let wanted = format!("{port:04X}");
    ["tcp", "tcp6"].iter().any(|table| {
        std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).is_ok_and(|sockets| {
            sockets.lines().skip(1).any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                // `local_address` is `ADDRESS:PORT` in hex; state 0A is LISTEN.
                fields.len() > 3
                    && fields[1].rsplit(':').next() == Some(wanted.as_str())
                    && fields[3] == "0A"
            })
        })
    })
}

/// The syscall probe (`assets/syscall_probe.rs`: each syscall the debug profiles' seccomp
/// filters decide on, tried), built once per test process as a static binary with `rustc`
/// alone, so that it runs in any image.
pub fn syscall_probe() -> Vec<u8> {
    static PROBE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    PROBE
        .get_or_init(|| {
            let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/syscall_probe.rs");
            let out =
                std::env::temp_dir().join(format!("kdbg-syscall-probe-{}", std::process::id()));
            let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
            let built = Command::new(rustc)
                .args([
                    "--edition",
                    "2024",
                    "-C",
                    "target-feature=+crt-static",
                    "-C",
                    "opt-level=s",
                ])
                .args(["-C", "panic=abort", "-o"])
                .arg(&out)
                .arg(&source)
                .output()
                .expect("running rustc");
            assert!(
                built.status.success(),
                "building the probe: {}",
                text(&built.stderr)
            );
            std::fs::read(&out).unwrap()
        })
        .clone()
}
