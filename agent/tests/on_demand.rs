//! The agent side of on-demand agents, over the in-tree fake runtime and the configuration
//! parser: `auth.mode: token` admits the one token whose SHA-256 it was given (as the user
//! it names, allowed everything the policy allows) and refuses anything else with a 401 that
//! creates nothing; the idle clock does not run while a session is open; and the keys are
//! checked as a bad file's are, inline (`--config-yaml`) too.

use std::sync::Arc;
use std::time::Duration;

use kdbg_agent::Settings;
use kdbg_agent::auth::Authenticator;
use kdbg_agent::config::{Config, Defaults};
use kdbg_api::DebugRequest;
use kdbg_relay::status::Status;
use kdbg_relay::tungstenite::client::IntoClientRequest as _;
use kdbg_relay::{ClientIo, ExitStatus, attach, handshake, tungstenite};
use kdbg_runtimes::fake::{Call, FakeRuntime, Script};
use kdbg_runtimes::{AnyRuntime, label};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The token the tests' plugin drew.
const TOKEN: &str = "Jq3v0cXnVt2pYb8sWk6eRz1uLh5gMa9d";
/// Who the plugin says started the agent.
const HOLDER: &str = "alice@example.com";

fn sha256(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest.as_ref().try_into().unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Running {
    fake: FakeRuntime,
    agent: Arc<kdbg_agent::Agent>,
    address: String,
}

/// An agent over the fake runtime with `auth.mode: token` for [`TOKEN`], held by [`HOLDER`];
/// target `t1` is a container of pod `shop/web`.
async fn agent(script: Script) -> Running {
    let fake = FakeRuntime::new(script);
    fake.add_target("t1", "running");
    fake.label_target(
        "t1",
        &[
            ("io.kubernetes.pod.namespace", "shop"),
            ("io.kubernetes.pod.name", "web"),
        ],
    );
    fake.add_image("tools:1");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let settings = Settings {
        defaults: Defaults {
            image: "tools:1".into(),
            command: vec!["bash".into()],
        },
        init_dir: std::env::temp_dir().join(format!("kdbg-ondemand-init-{}", std::process::id())),
        auth: Some(Arc::new(Authenticator::token(sha256(TOKEN), HOLDER))),
        ..Settings::default()
    };
    let (agent, _) = kdbg_agent::spawn(AnyRuntime::Fake(fake.clone()), settings, listener).unwrap();
    Running {
        fake,
        agent,
        address,
    }
}

/// A session request for `t1` of pod `shop/web`, claiming to be `mallory`.
fn request(extra: &str) -> DebugRequest {
    DebugRequest::from_query(&format!(
        "target=docker://t1&podNamespace=shop&podName=web&user=mallory&stdout=1{extra}"
    ))
    .unwrap()
}

type Opened = (
    kdbg_relay::WebSocketStream<TcpStream>,
    kdbg_relay::Protocol,
    tungstenite::http::HeaderMap,
);

/// Opens a session, presenting `token` as a bearer token if given.
async fn open(
    address: &str,
    request: &DebugRequest,
    token: Option<&str>,
) -> Result<Opened, kdbg_relay::Error> {
    let mut upgrade = format!("ws://{address}/api/v1/debug?{}", request.to_query())
        .into_client_request()
        .unwrap();
    if let Some(token) = token {
        upgrade
            .headers_mut()
            .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    }
    let socket = TcpStream::connect(address).await.unwrap();
    handshake::connect(upgrade, socket).await
}

/// The status code and `metav1.Status` of a refused session.
async fn refused(address: &str, token: Option<&str>) -> (u16, Status) {
    match open(address, &request(""), token).await {
        Err(kdbg_relay::Error::Handshake(tungstenite::Error::Http(response))) => {
            let body = response.body().as_deref().unwrap();
            (
                response.status().as_u16(),
                serde_json::from_slice(body).unwrap(),
            )
        }
        Ok(_) => panic!("a session with token {token:?} was accepted"),
        Err(e) => panic!("{e:?}"),
    }
}

/// `GET path` (HTTP/1.0: the agent closes the connection after its answer), presenting
/// `token` if given: the status code and the body.
async fn get(address: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut socket = TcpStream::connect(address).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.0\r\n{auth}\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, body.to_owned())
}

fn creates(fake: &FakeRuntime) -> usize {
    let calls = fake.calls();
    calls
        .iter()
        .filter(|c| matches!(c, Call::Create(_)))
        .count()
}

#[tokio::test]
async fn the_token_opens_a_session_as_its_holder_with_node_level_power() {
    let running = agent(Script {
        stdout: "hello\n".into(),
        exit_code: 3,
        ..Script::default()
    })
    .await;
    let (code, body) = get(&running.address, kdbg_api::path::VERSION, Some(TOKEN)).await;
    assert_eq!(code, 200, "{body}");
    let version: kdbg_api::VersionInfo = serde_json::from_str(&body).unwrap();
    assert_eq!(version.runtime, "fake");
    // sysadmin is node-level power (create nodes/proxy under auth.mode: kubernetes): the
    // token's holder created the pod that gives it, and has it.
    let (ws, protocol, _) = open(&running.address, &request("&profile=sysadmin"), Some(TOKEN))
        .await
        .unwrap();
    let (mut out_r, out_w) = tokio::io::duplex(1024);
    let io = ClientIo {
        stdout: Some(Box::pin(out_w)),
        ..ClientIo::default()
    };
    let done = attach(ws, protocol, io, &kdbg_relay::Config::default())
        .await
        .unwrap();
    assert_eq!(done.outcome, ExitStatus::Code(3));
    let mut out = String::new();
    out_r.read_to_string(&mut out).await.unwrap();
    assert_eq!(out, "hello\n");
    let calls = running.fake.calls();
    let Some(Call::Create(spec)) = calls.iter().find(|c| matches!(c, Call::Create(_))) else {
        panic!("no create in {calls:?}");
    };
    assert_eq!(
        spec.labels[label::USER],
        HOLDER,
        "the holder, not the claim"
    );
    assert_eq!(spec.labels[label::POD_NAME], "web");
    assert_eq!(spec.profile, kdbg_runtimes::Profile::Sysadmin);
}

#[tokio::test]
async fn a_forged_or_missing_token_is_a_401_that_creates_nothing() {
    let running = agent(Script::default()).await;
    let forged = "Jq3v0cXnVt2pYb8sWk6eRz1uLh5gMa9e";
    for token in [Some(forged), Some(hex(&sha256(TOKEN)).as_str()), None] {
        let (code, status) = refused(&running.address, token).await;
        assert_eq!(code, 401, "{token:?}");
        assert_eq!(status.kind.as_deref(), Some("Status"));
        assert_eq!(status.code, Some(401));
        assert_eq!(status.reason.as_deref(), Some("Unauthorized"));
        let message = status.message.unwrap_or_default();
        assert!(
            message.starts_with("Unauthorized: ")
                && message.ends_with("present the token kubectl-debug started this agent with"),
            "{message}"
        );
        let (code, body) = get(&running.address, kdbg_api::path::VERSION, token).await;
        assert_eq!(code, 401, "{body}");
        let (code, _) = get(&running.address, kdbg_api::path::CONTAINERS, token).await;
        assert_eq!(code, 401);
    }
    let (code, _) = get(&running.address, "/healthz", None).await;
    assert_eq!(code, 200, "probes need no token");
    assert_eq!(creates(&running.fake), 0);
    assert!(running.fake.containers().is_empty());
    let checked = running.fake.calls();
    assert!(
        !checked.iter().any(|c| matches!(c, Call::CheckTarget(_))),
        "nothing looked at before authentication: {checked:?}"
    );
}

#[tokio::test]
async fn the_idle_clock_stops_while_a_session_is_open() {
    const IDLE: Duration = Duration::from_millis(300);
    let running = agent(Script {
        linger: true,
        ..Script::default()
    })
    .await;
    let (ws, _, _) = open(&running.address, &request(""), Some(TOKEN))
        .await
        .unwrap();
    let agent = running.agent.clone();
    let idle = agent.idle_for(IDLE);
    tokio::pin!(idle);
    // A session held open ten times the idle time is not idleness.
    let busy = tokio::time::timeout(IDLE * 10, idle.as_mut()).await;
    assert!(busy.is_err(), "idle while a session runs");
    assert_eq!(running.fake.containers().len(), 1);
    drop(ws);
    let left = std::time::Instant::now();
    tokio::time::timeout(IDLE + Duration::from_secs(15), idle)
        .await
        .expect("idle once the session ended");
    assert!(left.elapsed() >= IDLE);
    // What main then does: the shutdown leaves nothing behind.
    running.agent.stop(Duration::from_secs(5)).await;
    assert!(running.fake.containers().is_empty());
}

/// The agent's configuration with `auth` (indented lines) and `more` top-level lines, as the
/// plugin gives it: no `insecure`, no `tls`.
fn on_demand(listen: &str, auth: &str, more: &str) -> String {
    format!("listen: \"{listen}\"\nruntime:\n  kind: docker\nauth:\n  mode: token\n{auth}{more}")
}

fn error_of(text: &str) -> String {
    kdbg_agent::chain(&Config::load_inline(text).unwrap_err())
}

#[test]
fn token_mode_needs_a_hash_a_user_and_loopback_or_tls() {
    let hash = format!("  tokenSha256: \"{}\"\n", hex(&sha256(TOKEN)));
    let user = format!("  user: \"{HOLDER}\"\n");
    let good = on_demand(
        "127.0.0.1:10027",
        &format!("{hash}{user}"),
        "lifecycle:\n  exitWhenIdle: 1m\n",
    );
    let config = Config::load_inline(&good).unwrap();
    assert_eq!(config.auth.token_digest(), Some(sha256(TOKEN)));
    assert_eq!(config.auth.user, HOLDER);
    assert_eq!(config.lifecycle.exit_when_idle.0, Duration::from_secs(60));
    let v6 = on_demand("[::1]:10027", &format!("{hash}{user}"), "");
    Config::load_inline(&v6).expect("::1 is loopback");

    let err = error_of(&on_demand("127.0.0.1:10027", &user, ""));
    assert!(
        err.starts_with("--config-yaml: auth.tokenSha256 is not set")
            && err.contains("64 hex digits"),
        "{err}"
    );
    let not_hex = format!("  tokenSha256: \"g{}\"\n", &hex(&sha256(TOKEN))[1..]);
    let err = error_of(&on_demand(
        "127.0.0.1:10027",
        &format!("{not_hex}{user}"),
        "",
    ));
    assert!(
        err.starts_with("--config-yaml: auth.tokenSha256 (line 6) is not 64 hex digits"),
        "{err}"
    );
    let err = error_of(&on_demand("127.0.0.1:10027", &hash, ""));
    assert!(err.contains("auth.user is not set"), "{err}");
    let err = error_of(&on_demand("0.0.0.0:10027", &format!("{hash}{user}"), ""));
    assert!(
        err.starts_with("--config-yaml: listen (line 1) is 0.0.0.0:10027, not a loopback address")
            && err.contains("cross the network in clear")
            && err.contains("tls.certFile"),
        "{err}"
    );
    let err = error_of(&on_demand(
        "0.0.0.0:10027",
        &format!("{hash}{user}"),
        "insecure: true\n",
    ));
    assert!(
        err.contains("cross the network in clear"),
        "insecure does not allow it: {err}"
    );
    let tls = "tls:\n  certFile: /tls/tls.crt\n  keyFile: /tls/tls.key\n";
    let over_tls = on_demand("0.0.0.0:10027", &format!("{hash}{user}"), tls);
    Config::load_inline(&over_tls).expect("the token over TLS on any address");
    let kubernetes = good.replace("mode: token", "mode: kubernetes") + "insecure: true\n";
    let err = error_of(&kubernetes);
    assert!(
        err.contains("auth.tokenSha256 (line 6) is used only with auth.mode: token"),
        "{err}"
    );
}

#[test]
fn the_plugins_json_configuration_parses() {
    // What plugin/src/ondemand.rs gives a containerd node's agent.
    let text = serde_json::json!({
        "listen": "127.0.0.1:10027",
        "runtime": {
            "kind": "containerd",
            "endpoint": "unix:///run/containerd/containerd.sock",
            "initDir": "/run/kubectl-debug/init",
            "namespace": "k8s.io",
            "fifoDir": "/run/kubectl-debug/fifo",
        },
        "recordings": {"dir": "/var/lib/kubectl-debug/recordings", "mode": "off"},
        "log": {"format": "json"},
        "auth": {"mode": "token", "tokenSha256": hex(&sha256(TOKEN)), "user": HOLDER},
        "lifecycle": {"exitWhenIdle": "60s"},
        "policy": {
            "profiles": {"allowed": ["general", "netadmin", "sysadmin", "restricted"], "default": "general"},
            "maxSessions": {"total": 10, "perUser": 10, "perTarget": 5},
        },
    })
    .to_string();
    let config = Config::load_inline(&text).unwrap();
    assert_eq!(config.auth.mode, kdbg_agent::config::AuthMode::Token);
    assert_eq!(config.lifecycle.exit_when_idle.0, Duration::from_secs(60));
}

#[test]
fn a_bad_inline_configuration_exits_64_saying_config_yaml() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-debug-agent"))
        .args([
            "--config-yaml",
            &on_demand("0.0.0.0:10027", "  user: a\n", ""),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("kubectl-debug-agent: --config-yaml: auth.tokenSha256 is not set"),
        "{err}"
    );
    for args in [
        &["--config", "/nonexistent.yaml", "--config-yaml", "{}"][..],
        &[],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-debug-agent"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: a usage error");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--config"), "{err}");
    }
}
