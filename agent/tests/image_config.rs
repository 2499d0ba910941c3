//! `GET /api/v1/image-config` over the in-tree fake runtime: it answers the target's image
//! config, and only after the checks a debug session's target gets (authentication, the pod
//! named and allowed, the target that pod's), refusing with a `metav1.Status` that says why
//! before the runtime is asked anything.

use std::sync::Arc;

use kdbg_agent::Settings;
use kdbg_agent::auth::Authenticator;
use kdbg_agent::config::Defaults;
use kdbg_api::{Endpoint, ImageConfig, ImageConfigRequest, TargetRef};
use kdbg_relay::status::Status;
use kdbg_runtimes::AnyRuntime;
use kdbg_runtimes::fake::{Call, FakeRuntime, Script};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TOKEN: &str = "Jq3v0cXnVt2pYb8sWk6eRz1uLh5gMa9d";

fn sha256(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest.as_ref().try_into().unwrap()
}

/// An agent over the fake runtime (with `auth.mode: token` for [`TOKEN`] if `auth`):
/// target `t1` is a container of pod `shop/web` whose image runs `/app --port 80` in `/srv`,
/// `t2` one of pod `bank/vault`, `t3` has no pod labels.
async fn agent(auth: bool) -> (FakeRuntime, String) {
    let fake = FakeRuntime::new(Script::default());
    for (id, ns, pod) in [("t1", "shop", "web"), ("t2", "bank", "vault")] {
        fake.add_target(id, "running");
        fake.label_target(
            id,
            &[
                ("io.kubernetes.pod.namespace", ns),
                ("io.kubernetes.pod.name", pod),
            ],
        );
    }
    fake.add_target("t3", "running");
    fake.set_image_config(
        "t1",
        ImageConfig::new(
            "web:1",
            Some(vec!["/app".into()]),
            Some(vec!["--port".into(), "80".into()]),
            Some("/srv".into()),
            Some("65534".into()),
        ),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let settings = Settings {
        defaults: Defaults {
            image: "tools:1".into(),
            command: vec!["sh".into()],
        },
        init_dir: std::env::temp_dir().join(format!("kdbg-imgcfg-init-{}", std::process::id())),
        auth: auth.then(|| Arc::new(Authenticator::token(sha256(TOKEN), "alice"))),
        ..Settings::default()
    };
    kdbg_agent::spawn(AnyRuntime::Fake(fake.clone()), settings, listener).unwrap();
    (fake, address)
}

/// The image config request for `target`, of pod `pod` (`ns/name`) if given.
fn request(target: &str, pod: Option<(&str, &str)>) -> String {
    Endpoint::ImageConfig(ImageConfigRequest {
        target: target.parse::<TargetRef>().unwrap(),
        pod_namespace: pod.map(|p| p.0.to_owned()),
        pod_name: pod.map(|p| p.1.to_owned()),
    })
    .uri()
}

/// `GET uri` (HTTP/1.0), presenting `token` if given: the status code and the body.
async fn get(address: &str, uri: &str, token: Option<&str>) -> (u16, String) {
    let mut socket = TcpStream::connect(address).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {uri} HTTP/1.0\r\n{auth}\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, body.to_owned())
}

/// The runtime calls for image configs so far.
fn reads(fake: &FakeRuntime) -> usize {
    fake.calls()
        .iter()
        .filter(|c| matches!(c, Call::ImageConfig(_)))
        .count()
}

#[tokio::test]
async fn the_targets_image_config_is_answered_as_json() {
    let (fake, address) = agent(true).await;
    let (code, body) = get(
        &address,
        &request("docker://t1", Some(("shop", "web"))),
        Some(TOKEN),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let config: ImageConfig = serde_json::from_str(&body).unwrap();
    assert_eq!(
        config,
        ImageConfig {
            image: "web:1".into(),
            entrypoint: Some(vec!["/app".into()]),
            cmd: Some(vec!["--port".into(), "80".into()]),
            working_dir: Some("/srv".into()),
            user: Some("65534".into()),
        }
    );
    // Checked as a session's target first: it must run.
    let calls = fake.calls();
    let check = calls
        .iter()
        .position(|c| *c == Call::CheckTarget("t1".into()));
    let read = calls
        .iter()
        .position(|c| *c == Call::ImageConfig("t1".into()));
    assert!(check.is_some() && check < read, "{calls:?}");

    // Without auth, any target the runtime can join.
    let (_, open) = agent(false).await;
    let (code, body) = get(&open, &request("docker://t3", None), None).await;
    assert_eq!(code, 200, "{body}");
    let config: ImageConfig = serde_json::from_str(&body).unwrap();
    assert_eq!(config.cmd, Some(vec!["sh".to_owned()]));
    let (code, body) = get(&open, &request("docker://gone", None), None).await;
    assert_eq!(code, 404, "{body}");
    assert!(
        body.contains("target container docker://gone not found on this node"),
        "{body}"
    );
}

#[tokio::test]
async fn the_guard_refuses_what_a_debug_session_would_be_refused() {
    let (fake, address) = agent(true).await;
    let cases = [
        // Nobody: not authenticated.
        (
            request("docker://t1", Some(("shop", "web"))),
            None,
            401,
            "Unauthorized: no bearer token",
        ),
        (
            request("docker://t1", Some(("shop", "web"))),
            Some("not-the-token"),
            401,
            "Unauthorized: the bearer token is not the one this agent admits",
        ),
        // The pod, whose permissions are checked, must be named.
        (
            request("docker://t1", None),
            Some(TOKEN),
            400,
            "podNamespace and podName are required for reading a target's image config",
        ),
        // Another pod's container, named as this one's.
        (
            request("docker://t2", Some(("shop", "web"))),
            Some(TOKEN),
            403,
            "Forbidden: target container docker://t2 belongs to pod bank/vault, not shop/web",
        ),
        // No pod's container at all.
        (
            request("docker://t3", Some(("shop", "web"))),
            Some(TOKEN),
            403,
            "is not a container of pod shop/web",
        ),
        // A query that does not parse: refused before anyone is asked anything.
        (
            format!(
                "{}?podNamespace=shop&podName=web",
                kdbg_api::path::IMAGE_CONFIG
            ),
            Some(TOKEN),
            400,
            "query parameter target is required",
        ),
    ];
    for (uri, token, code, says) in cases {
        let (got, body) = get(&address, &uri, token).await;
        assert_eq!(got, code, "{uri}: {body}");
        let status: Status = serde_json::from_str(&body).unwrap();
        let message = status.message.unwrap_or_default();
        assert!(message.contains(says), "{uri}: {message}");
    }
    assert_eq!(reads(&fake), 0, "a refused caller read an image config");
}
