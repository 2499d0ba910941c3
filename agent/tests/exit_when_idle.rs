//! `lifecycle.exitWhenIdle` of the real binary, configured inline as the plugin starts an
//! on-demand agent (`--config-yaml`, `auth.mode: token`, loopback), on the test world's
//! Docker engine: it keeps running while a connection is open, however quiet, and exits 0
//! by itself once none has been for that long, saying why.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const TOKEN: &str = "exit-when-idle-test-token";
/// `lifecycle.exitWhenIdle` of the agent under test.
const IDLE: Duration = Duration::from_secs(2);
/// How long after the idle time the agent may take to stop (its shutdown grace is 10 s).
const EXIT_BOUND: Duration = Duration::from_secs(20);

/// The agent process, killed if still running when dropped.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The exit code, once the agent has exited.
    fn exited(&mut self) -> Option<Option<i32>> {
        self.child.try_wait().unwrap().map(|s| s.code())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn sha256_hex(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Starts the agent with its configuration inline, and waits for its `agent ready` line:
/// the agent and the address it listens on.
fn start() -> (Agent, String) {
    let config = format!(
        "listen: \"127.0.0.1:0\"\nruntime:\n  kind: docker\n  endpoint: \"{}\"\nauth:\n  mode: token\n  tokenSha256: \"{}\"\n  user: \"alice\"\nlimits:\n  headerTimeout: 60s\nlifecycle:\n  exitWhenIdle: {}s\n",
        kdbg_testkit::docker_host(),
        sha256_hex(TOKEN),
        IDLE.as_secs()
    );
    let log = std::env::temp_dir().join(format!("kdbg-exit-when-idle-{}.log", std::process::id()));
    let child = Command::new(env!("CARGO_BIN_EXE_kubectl-debug-agent"))
        .args(["--config-yaml", &config])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("starting kubectl-debug-agent");
    let mut agent = Agent { child, log };
    let mut address = None;
    let ready = kdbg_testkit::within(kdbg_testkit::READY_BOUND, || {
        address = listen_address(&agent.log());
        address.is_some() || agent.exited().is_some()
    });
    let log = agent.log();
    assert!(ready, "the agent was not ready in time:\n{log}");
    let address = address.unwrap_or_else(|| panic!("the agent exited at start:\n{log}"));
    (agent, address)
}

/// The address of the `agent ready` line's `listen=` field.
fn listen_address(log: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains("agent ready"))?;
    let at = line.find("listen=")? + "listen=".len();
    Some(line[at..].split_whitespace().next()?.to_owned())
}

/// Sends `GET /version` with `token` on `socket` (kept alive) and reads the answer: its
/// status code.
fn version(socket: &mut TcpStream, token: &str) -> u16 {
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer {token}\r\n\r\n",
        kdbg_api::path::VERSION
    );
    socket.write_all(request.as_bytes()).unwrap();
    socket
        .set_read_timeout(Some(kdbg_testkit::READY_BOUND))
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = socket.read(&mut buf).unwrap();
        assert!(n > 0, "the agent closed the connection");
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")?
                    .parse()
                    .ok()
            })
            .unwrap_or(0);
        if body.len() >= length {
            return head.split_whitespace().nth(1).unwrap().parse().unwrap();
        }
    }
}

#[test]
fn an_idle_agent_exits_0_by_itself_but_not_while_a_connection_is_open() {
    let (mut agent, address) = start();
    let mut held = TcpStream::connect(&address).unwrap();
    assert_eq!(version(&mut held, TOKEN), 200, "{}", agent.log());
    let mut forged = TcpStream::connect(&address).unwrap();
    assert_eq!(version(&mut forged, "not-the-token"), 401);
    drop(forged);
    // The kept-alive connection, silent for three times the idle time, keeps the agent.
    let quiet_until = Instant::now() + IDLE * 3;
    while Instant::now() < quiet_until {
        assert_eq!(
            agent.exited(),
            None,
            "exited with a connection open:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(version(&mut held, TOKEN), 200, "still served");
    drop(held);
    let closed = Instant::now();
    let mut code = None;
    let exited = kdbg_testkit::within(IDLE + EXIT_BOUND, || {
        code = agent.exited();
        code.is_some()
    });
    let log = agent.log();
    assert!(
        exited,
        "still running {:?} after the last connection closed:\n{log}",
        IDLE + EXIT_BOUND
    );
    assert!(
        closed.elapsed() >= IDLE,
        "exited before exitWhenIdle:\n{log}"
    );
    assert_eq!(code, Some(Some(0)), "{log}");
    let why: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("lifecycle.exitWhenIdle"))
        .collect();
    assert_eq!(why.len(), 1, "one line says why:\n{log}");
    assert!(why[0].contains("INFO"), "{}", why[0]);
}
