//! Image pull secrets on both real engines, against the test world's basic-auth registry and
//! the API stand-in's Secrets and ServiceAccounts, with an agent that reviews every caller
//! (as deployed). The plugin reads the secrets with the user's own rights and sends the one
//! credential that matches the image's registry in the pull's body; the agent uses it for
//! that pull only. Found from the pod's `imagePullSecrets`, from its service account's, and
//! from `--image-pull-secret`; refused credentials, secrets of another registry, of the wrong
//! type or malformed, and a user who may not read them are each said plainly, and the
//! password never shows in any output, log, or the engine's view of the debug container.

use kdbg_testkit as support;

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{LocalObjectReference, Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use support::apiserver::access::AGENT_TOKEN;
use support::apiserver::{Cluster, running_pod};
use support::engine::{ContainerdEngine, DockerEngine, Engine, Targeted};
use support::users::{as_user, debug_as, kubernetes_auth, scratch, users};
use support::{Agent, DEBUG_NAMESPACE, auth_registry, ctr, docker, run, text};

/// The test world's basic-auth registry's user and password (scripts/test-world).
const USER: &str = "kdbg";
const PASSWORD: &str = "kdbg-test-password";
/// A password the registry refuses; it must never show either.
const WRONG: &str = "not-the-password-7f3a";

/// A `kubernetes.io/dockerconfigjson` secret `name` in `shop` with `server`'s credentials.
fn docker_secret(name: &str, server: &str, user: &str, password: &str) -> Secret {
    let json = serde_json::json!({"auths": {server: {"username": user, "password": password}}});
    secret(
        name,
        "kubernetes.io/dockerconfigjson",
        ".dockerconfigjson",
        json.to_string().as_bytes(),
    )
}

fn secret(name: &str, kind: &str, key: &str, data: &[u8]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some("shop".to_owned()),
            ..ObjectMeta::default()
        },
        type_: Some(kind.to_owned()),
        data: Some(BTreeMap::from([(
            key.to_owned(),
            ByteString(data.to_vec()),
        )])),
        ..Secret::default()
    }
}

fn references(names: &[&str]) -> Option<Vec<LocalObjectReference>> {
    Some(
        names
            .iter()
            .map(|n| LocalObjectReference {
                name: (*n).to_owned(),
            })
            .collect(),
    )
}

/// A running pod `name` in `shop` whose container is `target`, with `secrets` as its
/// `imagePullSecrets` and `account` as its service account.
fn add_pod(
    cluster: &Cluster,
    name: &str,
    target: &dyn Targeted,
    secrets: &[&str],
    account: Option<&str>,
) {
    let mut pod = running_pod("shop", name, &[("app", &target.pod_reference(), true)]);
    let spec = pod.spec.as_mut().unwrap();
    spec.image_pull_secrets = references(secrets).filter(|s| !s.is_empty());
    spec.service_account_name = account.map(str::to_owned);
    cluster.api.add_pod(pod);
}

/// `kubectl-debug ARGS` as the user of `token`: exit code and stderr (stdout must be `ran`
/// when it succeeds).
fn debug(
    cluster: &Cluster,
    dir: &Path,
    token: &str,
    agent: &Agent,
    args: &[&str],
) -> (i32, String) {
    let (code, out, err) = debug_as(cluster, dir, token, agent, args);
    let code = code.unwrap_or(-1);
    if code == 0 {
        assert_eq!(out, "ran\n", "{err}");
    }
    (code, err)
}

/// What the engine says of every debug container of the pods in `shop`.
fn engine_view(engine: &dyn Engine) -> String {
    let key = kdbg_runtimes::label::POD_NAMESPACE;
    match engine.name() {
        "docker" => {
            let ids = docker(&["ps", "-aq", "--filter", &format!("label={key}=shop")]);
            let ids: Vec<String> = text(&ids.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            assert!(!ids.is_empty(), "no retained debug container to inspect");
            let mut args = vec!["inspect"];
            args.extend(ids.iter().map(String::as_str));
            text(&docker(&args).stdout)
        }
        _ => {
            let filter = format!("labels.\"{key}\"==\"shop\"");
            let ids = ctr(DEBUG_NAMESPACE, &["containers", "ls", "-q", &filter]);
            let ids: Vec<String> = text(&ids.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            assert!(!ids.is_empty(), "no retained debug container to inspect");
            ids.iter()
                .map(|id| text(&ctr(DEBUG_NAMESPACE, &["containers", "info", id]).stdout))
                .collect()
        }
    }
}

fn pull_secrets(engine: &dyn Engine) {
    let name = engine.name();
    let dir = scratch(&format!("pull-secrets-{name}"));
    let cluster = Cluster::new("shop");
    users(&cluster);
    {
        // alice may read the namespace's secrets and service accounts; dave may not.
        let mut table = cluster.api.access.lock().unwrap();
        for resource in ["secrets", "serviceaccounts"] {
            table.grant("alice", "get", resource, "shop", "");
        }
    }
    let registry = auth_registry();
    let image = format!("{registry}/kdbg-tools:test");
    cluster
        .api
        .add_secret(docker_secret("regcred", &registry, USER, PASSWORD));
    cluster
        .api
        .add_secret(docker_secret("wrongpass", &registry, USER, WRONG));
    cluster.api.add_secret(docker_secret(
        "elsewhere",
        "registry.example.com",
        USER,
        WRONG,
    ));
    cluster.api.add_secret(secret(
        "opaque",
        "Opaque",
        ".dockerconfigjson",
        b"{\"auths\": {}}",
    ));
    // Planted as it is (the stand-in's API would refuse it): not JSON at all.
    cluster.api.add_secret(secret(
        "broken",
        "kubernetes.io/dockerconfigjson",
        ".dockerconfigjson",
        format!("{{\"auths\": {WRONG}").as_bytes(),
    ));
    cluster.api.add_service_account(ServiceAccount {
        metadata: ObjectMeta {
            name: Some("builder".to_owned()),
            namespace: Some("shop".to_owned()),
            ..ObjectMeta::default()
        },
        image_pull_secrets: references(&["regcred"]),
        ..ServiceAccount::default()
    });
    let kubeconfig = cluster
        .api
        .kubeconfig_with_token(&dir, "agent.kubeconfig", AGENT_TOKEN);
    let agent = engine.agent(&kubernetes_auth(&kubeconfig, ""));
    let web = engine.pod_target("shop", "web", false, "exec sleep 3600");
    let bare = engine.pod_target("shop", "bare", false, "exec sleep 3600");
    let built = engine.pod_target("shop", "built", false, "exec sleep 3600");
    let odd = engine.pod_target("shop", "odd", false, "exec sleep 3600");
    add_pod(&cluster, "web", web.as_ref(), &["regcred"], None);
    add_pod(&cluster, "bare", bare.as_ref(), &[], None);
    add_pod(&cluster, "built", built.as_ref(), &[], Some("builder"));
    add_pod(
        &cluster,
        "odd",
        odd.as_ref(),
        &["opaque", "broken", "elsewhere", "missing"],
        None,
    );
    let pull = |pod: &str, extra: &[&str]| -> Vec<String> {
        let mut args = vec![
            pod.to_owned(),
            "--image".to_owned(),
            image.clone(),
            "--pull-policy".to_owned(),
            "Always".to_owned(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args.extend(["--", "echo", "ran"].map(str::to_owned));
        args
    };
    let go = |token: &str, args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        debug(&cluster, &dir, token, &agent, &args)
    };
    let mut said = String::new();

    // The pod's own imagePullSecrets: the pull goes through, and says with what.
    let (code, err) = go("alice-token", pull("web", &["--retain"]));
    assert_eq!(code, 0, "{err}\nagent:\n{}", agent.log());
    assert!(
        err.contains(&format!(
            "Pulling {image} with the credential for {registry} from secret shop/regcred"
        )),
        "{err}"
    );
    said.push_str(&err);
    // Nowhere in the engine's view of the debug container it made.
    let view = engine_view(engine);
    assert!(
        !view.contains(PASSWORD),
        "the password is in the engine's view:\n{view}"
    );

    // The service account's imagePullSecrets, when the pod has none.
    let (code, err) = go("alice-token", pull("built", &[]));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("from secret shop/regcred"), "{err}");
    said.push_str(&err);

    // Without any: the registry refuses, and the user is told no credential was sent.
    let (code, err) = go("alice-token", pull("bare", &[]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&registry), "{err}");
    assert!(err.contains("no credential was sent"), "{err}");
    assert!(err.contains("--image-pull-secret"), "{err}");
    said.push_str(&err);

    // --image-pull-secret with a password the registry refuses: said with where it came
    // from, never what it is.
    let (code, err) = go(
        "alice-token",
        pull("bare", &["--image-pull-secret", "wrongpass"]),
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "the registry refused the credential for {registry} from secret shop/wrongpass"
        )),
        "{err}"
    );
    said.push_str(&err);
    // ... and it wins over the pod's own when both match.
    let (code, err) = go(
        "alice-token",
        pull("web", &["--image-pull-secret", "wrongpass"]),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("from secret shop/wrongpass"), "{err}");
    said.push_str(&err);

    // Secrets that cannot serve: each named once, and the pull goes on without them.
    let (code, err) = go("alice-token", pull("odd", &[]));
    assert_eq!(code, 1, "{err}");
    for line in [
        "image pull secret shop/opaque is of type Opaque, not kubernetes.io/dockerconfigjson",
        "secret shop/broken is not a Docker config",
        "image pull secret shop/missing not found",
        "no credential was sent",
    ] {
        assert_eq!(err.matches(line).count(), 1, "{line:?} once in:\n{err}");
    }
    assert!(
        !err.contains("shop/elsewhere"),
        "another registry's secret is not used: {err}"
    );
    said.push_str(&err);

    // dave may debug the pod but not read its secrets: told so once; the pull goes on
    // without them and the registry refuses.
    let (code, err) = go("dave-token", pull("web", &[]));
    assert_eq!(code, 1, "{err}");
    let refused = "could not read image pull secret shop/regcred";
    assert_eq!(err.matches(refused).count(), 1, "{err}");
    assert!(err.contains("forbidden"), "{err}");
    assert!(err.contains("no credential was sent"), "{err}");
    said.push_str(&err);

    // The passwords never appear in what the user saw or in the agent's log.
    let log = agent.log();
    for secret in [PASSWORD, WRONG] {
        assert!(
            !said.contains(secret),
            "a password reached the user:\n{said}"
        );
        assert!(
            !log.contains(secret),
            "a password is in the agent's log:\n{log}"
        );
    }
    let out = run(
        &mut as_user(
            &cluster,
            &dir,
            "alice-token",
            &agent,
            &["rm", "web", "--all"],
        ),
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn pull_secrets_on_docker() {
    pull_secrets(&DockerEngine);
}

#[test]
fn pull_secrets_on_containerd() {
    pull_secrets(&ContainerdEngine);
}
