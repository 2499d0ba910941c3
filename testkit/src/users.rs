//! Test users of the API stand-in and raw requests to agents that check them: shared by the
//! security tests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::apiserver::Cluster;
use super::{Agent, Scratch};

/// A scratch directory for one test, removed when it is done.
pub fn scratch(name: &str) -> Scratch {
    Scratch::new(&format!("sec-{name}"))
}

/// The agent YAML that checks callers with the stand-in, reached with `kubeconfig`.
pub fn kubernetes_auth(kubeconfig: &Path, more: &str) -> String {
    format!(
        "insecure: true\nauth:\n  mode: kubernetes\n  kubeconfig: \"{}\"\n  cacheTTL: 1s\n{more}",
        kubeconfig.display()
    )
}

/// Test users: alice may debug pods in `shop` and read its recordings; bob may do nothing;
/// carol's token has expired; dave may also debug the node.
pub fn users(cluster: &Cluster) {
    let mut table = cluster.api.access.lock().unwrap();
    table.user(
        "alice-token",
        "alice",
        &["developers", "system:authenticated"],
    );
    table.user("bob-token", "bob", &["system:authenticated"]);
    table.user("carol-token", "carol", &["system:authenticated"]);
    table.expire("carol-token");
    table.user("dave-token", "dave", &["sre", "system:authenticated"]);
    for user in ["alice", "dave"] {
        table.grant(user, "create", "pods/exec", "shop", "");
        table.grant(user, "list", "pods", "shop", "");
        table.grant(user, "get", "pods/debug-recordings", "shop", "");
    }
    table.grant("dave", "create", "nodes/proxy", "", "");
}

/// `kubectl-debug` as the user whose token is `token`, in namespace `shop`.
pub fn as_user(
    cluster: &Cluster,
    dir: &Path,
    token: &str,
    agent: &Agent,
    args: &[&str],
) -> Command {
    let kubeconfig = cluster
        .api
        .kubeconfig_with_token(dir, &format!("{token}.kubeconfig"), token);
    let mut cmd = super::plugin();
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["-n", "shop", "--agent-port", &agent.port.to_string()])
        .args(args);
    cmd
}

/// Runs `kubectl-debug ARGS` as the user of `token` ([`as_user`]) with no input: its exit
/// code, stdout and stderr.
pub fn debug_as(
    cluster: &Cluster,
    dir: &Path,
    token: &str,
    agent: &Agent,
    args: &[&str],
) -> (Option<i32>, String, String) {
    let out = super::run(&mut as_user(cluster, dir, token, agent, args), b"");
    (
        out.status.code(),
        super::text(&out.stdout),
        super::text(&out.stderr),
    )
}

/// One raw HTTP/1.1 request to the agent; the status code and the body.
pub fn raw(address: &str, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    // Up to the end of the headers and the body the agent sends with them.
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if answer.len() >= end + 4 + length {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// A WebSocket upgrade of a debug session with `query`, presenting `token` if any.
pub fn upgrade(query: &str, token: Option<&str>) -> String {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!(
        "GET /api/v1/debug?{query} HTTP/1.1\r\nHost: agent\r\n{auth}Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n"
    )
}

/// The security tests' world on one engine: the API stand-in with the test users ([`users`]),
/// pods `shop/web`, `bank/vault` (another pod's container) and `shop/node-exporter` (in the
/// node's PID namespace), and an agent that reviews every caller with the stand-in.
pub struct World {
    /// The API stand-in, with the test users.
    pub cluster: Cluster,
    /// The target of pod `shop/web`.
    pub web: Box<dyn super::engine::Targeted>,
    /// The target of pod `bank/vault`: another pod's container (the stand-in has no such pod).
    pub vault: Box<dyn super::engine::Targeted>,
    /// The target of pod `shop/node-exporter`, in the node's PID namespace.
    pub host: Box<dyn super::engine::Targeted>,
    /// The agent, reviewing every caller with the stand-in.
    pub agent: Agent,
    /// The test's scratch directory.
    pub dir: Scratch,
}

impl World {
    /// The world on `engine`, scratch directory `tag`, with `more` top-level agent YAML.
    pub fn new(engine: &dyn super::engine::Engine, tag: &str, more: &str) -> World {
        let dir = scratch(tag);
        let cluster = Cluster::new("shop");
        users(&cluster);
        let web = engine.pod_target("shop", "web", false, "exec sleep 3600");
        let vault = engine.pod_target("bank", "vault", false, "exec sleep 3600");
        let host = engine.pod_target("shop", "node-exporter", true, "exec sleep 3600");
        for (pod, target) in [("web", &web), ("node-exporter", &host)] {
            cluster.api.add_pod(super::apiserver::running_pod(
                "shop",
                pod,
                &[("app", &target.pod_reference(), true)],
            ));
        }
        let kubeconfig = cluster.api.kubeconfig_with_token(
            &dir,
            "agent.kubeconfig",
            super::apiserver::access::AGENT_TOKEN,
        );
        let agent = engine.agent(&kubernetes_auth(&kubeconfig, more));
        World {
            cluster,
            web,
            vault,
            host,
            agent,
            dir,
        }
    }

    /// Waits until no debug container of the world's pods is left.
    pub fn assert_clean(&self) {
        for t in [&self.web, &self.vault, &self.host] {
            super::assert_removed_soon(|| t.leftovers());
        }
    }
}
