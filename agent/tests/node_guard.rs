//! The guard of node debugging (`kubectl-debug node/NAME`), over the in-tree fake runtime and
//! the API stand-in's test users: a session of the node itself needs `create nodes/proxy` on
//! it (alice, who may debug pods, is refused and nothing is created; dave, who may debug the
//! node, gets a container labelled with the node), and an agent serves only its own node.

use std::sync::Arc;

use kdbg_agent::Settings;
use kdbg_agent::auth::Authenticator;
use kdbg_agent::config::{Auth, Defaults};
use kdbg_runtimes::fake::{Call, FakeRuntime, Script};
use kdbg_runtimes::{AnyRuntime, Target, label};
use kdbg_testkit::apiserver::access::AGENT_TOKEN;
use kdbg_testkit::apiserver::{Cluster, NODE};
use kdbg_testkit::users::{raw, scratch, upgrade, users};

/// An agent on the stand-in's node over a fake runtime, checking callers with the stand-in.
async fn agent(cluster: &Cluster, dir: &std::path::Path) -> (FakeRuntime, String) {
    let kubeconfig = cluster
        .api
        .kubeconfig_with_token(dir, "agent.kubeconfig", AGENT_TOKEN);
    let auth = Authenticator::connect(&Auth {
        kubeconfig: kubeconfig.display().to_string(),
        ..Auth::default()
    })
    .await
    .unwrap();
    let fake = FakeRuntime::new(Script::default());
    fake.add_image("tools:1");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let settings = Settings {
        defaults: Defaults {
            image: "tools:1".into(),
            command: vec!["sh".into()],
        },
        init_dir: dir.join("init"),
        node: NODE.into(),
        auth: Some(Arc::new(auth)),
        ..Settings::default()
    };
    kdbg_agent::spawn(AnyRuntime::Fake(fake.clone()), settings, listener).unwrap();
    (fake, address)
}

fn creates(fake: &FakeRuntime) -> Vec<kdbg_runtimes::DebugSpec> {
    fake.calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Create(spec) => Some(*spec),
            _ => None,
        })
        .collect()
}

/// `raw` on a thread of its own: it blocks.
async fn ask(address: &str, request: String) -> (u16, String) {
    let address = address.to_owned();
    tokio::task::spawn_blocking(move || raw(&address, &request))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn node_debugging_needs_nodes_proxy_on_the_agents_own_node() {
    let cluster = Cluster::new("shop");
    users(&cluster);
    let dir = scratch("node-guard");
    let (fake, address) = agent(&cluster, &dir).await;
    let query = format!("node={NODE}&stdout=1&retain=1&name=node-dbg-1");

    // alice may debug pods, not the node: 403 naming the permission, nothing created.
    let (code, body) = ask(&address, upgrade(&query, Some("alice-token"))).await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains(&format!(
            "user \\\"alice\\\" may not create nodes/proxy of node \\\"{NODE}\\\""
        )),
        "{body}"
    );
    assert!(creates(&fake).is_empty(), "{:?}", fake.calls());

    // Another node's name: refused, naming both, whoever asks, before anything is created.
    for token in ["dave-token", "alice-token"] {
        let (code, body) = ask(&address, upgrade("node=other-node&stdout=1", Some(token))).await;
        assert_eq!(code, 400, "{body}");
        assert!(
            body.contains(&format!(
                "runs on node \\\"{NODE}\\\", not on node \\\"other-node\\\""
            )),
            "{body}"
        );
    }
    let (code, body) = ask(
        &address,
        "GET /api/v1/containers?node=other-node HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer dave-token\r\n\r\n".into(),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(creates(&fake).is_empty(), "{:?}", fake.calls());

    // dave may: a container in the node's namespaces, labelled with the node and why it is
    // node-level.
    let (code, body) = ask(&address, upgrade(&query, Some("dave-token"))).await;
    assert_eq!(code, 101, "{body}");
    let made = creates(&fake);
    assert_eq!(made.len(), 1, "{made:?}");
    let spec = &made[0];
    assert_eq!(spec.target, Target::Node(NODE.into()));
    assert_eq!(spec.labels.get(label::NODE).map(String::as_str), Some(NODE));
    assert_eq!(
        spec.labels.get(label::TARGET).cloned(),
        Some(format!("node://{NODE}"))
    );
    assert!(spec.labels.contains_key(label::NODE_LEVEL), "{spec:?}");
    assert_eq!(
        spec.labels.get(label::USER).map(String::as_str),
        Some("dave")
    );

    // The node's debug containers: dave lists them; alice may not.
    let list = |token: &str| {
        format!(
            "GET /api/v1/containers?node={NODE} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
    };
    let mut listed = (0, String::new());
    for _ in 0..100 {
        listed = ask(&address, list("dave-token")).await;
        if listed.1.contains("node-dbg-1") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(listed.0, 200, "{}", listed.1);
    assert!(listed.1.contains("node-dbg-1"), "{}", listed.1);
    let (code, body) = ask(&address, list("alice-token")).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("nodes/proxy"), "{body}");
    // A pod's list does not hold the node's.
    let (code, body) = ask(
        &address,
        "GET /api/v1/containers?podNamespace=shop HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer dave-token\r\n\r\n".into(),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert!(!body.contains("node-dbg-1"), "{body}");
    let _ = std::fs::remove_dir_all(&dir);
}
