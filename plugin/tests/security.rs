//! The agent admits only users the cluster allows, on both real engines: test users' tokens
//! reviewed by the API stand-in (TokenReview), every request authorised there
//! (SubjectAccessReview); targets that are not the named pod's, or that share the node's
//! namespaces, refused; the verified user in labels; TLS with the agents' CA from a ConfigMap
//! or a file; and hostile connections (idle, slowloris, oversized queries) that cost nothing
//! and harm no other session.

use kdbg_testkit as support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::apiserver::access::AGENT_TOKEN;
use support::apiserver::{AGENT_NAMESPACE, Cluster, running_pod};
use support::engine::{ContainerdEngine, DockerEngine, Engine};
use support::users::{World, as_user, raw, scratch, upgrade, users};
use support::{Agent, run, text};

fn callers_are_checked_by_the_cluster(engine: &dyn Engine) {
    let name = engine.name();
    let world = World::new(engine, &format!("auth-{name}"), "");
    let World {
        cluster,
        web,
        vault,
        agent,
        dir,
        ..
    } = &world;

    // Allowed: alice's session runs, and the container carries her verified name, not $USER.
    let out = run(
        as_user(
            cluster,
            dir,
            "alice-token",
            agent,
            &[
                "web",
                "--retain",
                "--name",
                &format!("sec-{name}-alice"),
                "--",
                "echo",
                "in",
            ],
        )
        .env("USER", "mallory"),
        b"",
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\nagent:\n{}",
        text(&out.stderr),
        agent.log()
    );
    assert_eq!(text(&out.stdout), "in\n");
    let listed = run(
        &mut as_user(
            cluster,
            dir,
            "alice-token",
            agent,
            &["list", "web", "-o", "json"],
        ),
        b"",
    );
    assert_eq!(listed.status.code(), Some(0), "{}", text(&listed.stderr));
    let listed = text(&listed.stdout);
    assert!(listed.contains("\"user\": \"alice\""), "{listed}");
    assert!(!listed.contains("mallory"), "{listed}");
    let removed = run(
        &mut as_user(
            cluster,
            dir,
            "alice-token",
            agent,
            &["rm", "web", &format!("sec-{name}-alice")],
        ),
        b"",
    );
    assert_eq!(removed.status.code(), Some(0), "{}", text(&removed.stderr));

    // Denied, unknown and expired users: told why, nothing created.
    for (token, expected) in [
        (
            "bob-token",
            "Forbidden: user \"bob\" may not create pods/exec of pod \"web\" in namespace \"shop\"",
        ),
        (
            "carol-token",
            "Unauthorized: the cluster did not accept the bearer token (token has expired)",
        ),
        (
            "nobody-token",
            "Unauthorized: the cluster did not accept the bearer token (invalid bearer token)",
        ),
    ] {
        let out = run(
            &mut as_user(cluster, dir, token, agent, &["web", "--", "true"]),
            b"",
        );
        assert_eq!(out.status.code(), Some(1), "{token}");
        assert!(
            text(&out.stderr).contains(expected),
            "{token}: {}",
            text(&out.stderr)
        );
    }
    let out = run(
        &mut as_user(cluster, dir, "bob-token", agent, &["list", "web"]),
        b"",
    );
    assert!(
        text(&out.stderr).contains("user \"bob\" may not list pods in namespace \"shop\""),
        "{}",
        text(&out.stderr)
    );
    assert!(web.leftovers().is_empty(), "a refused user got a container");

    // Anonymous: 401 with a Status, on every endpoint but /healthz and /metrics.
    let address = agent.address();
    let (code, body) = raw(
        &address,
        &upgrade(
            &format!(
                "target={}&podNamespace=shop&podName=web&stdout=1",
                web.pod_reference()
            ),
            None,
        ),
    );
    assert_eq!(code, 401, "{body}");
    assert!(
        body.contains("\"kind\":\"Status\"") && body.contains("bearer token"),
        "{body}"
    );
    for endpoint in ["/api/v1/containers", "/api/v1/recordings", "/version"] {
        let (code, _) = raw(
            &address,
            &format!("GET {endpoint} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(code, 401, "{endpoint}");
    }
    for endpoint in ["/healthz", "/metrics"] {
        let (code, _) = raw(
            &address,
            &format!("GET {endpoint} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(code, 200, "{endpoint}");
    }

    // A pull with a credential in its body goes through the same checks, before its body is
    // read: anonymous 401, bob 403; alice's malformed body is a 400 that names where it is
    // wrong, never what it holds.
    let pull = |token: Option<&str>, body: &str| {
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        raw(
            &address,
            &format!(
                "POST /api/v1/pull?target={}&podNamespace=shop&podName=web&pullPolicy=Always HTTP/1.1\r\nHost: a\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                web.pod_reference(),
                body.len()
            ),
        )
    };
    let secret = "s3cret-pw-4b1d";
    let broken = format!("{{\"credential\": {{\"password\": \"{secret}\", ");
    assert_eq!(pull(None, &broken).0, 401);
    let (code, body) = pull(Some("bob-token"), &broken);
    assert_eq!(code, 403, "{body}");
    let (code, body) = pull(Some("alice-token"), &broken);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("line 1 column"), "{body}");
    assert!(!body.contains(secret), "{body}");
    assert!(!agent.log().contains(secret), "{}", agent.log());

    // A request that does not parse is refused for what it is before anyone is asked who the
    // caller is or what they may do: a 400 naming the parameter for the anonymous and for bob
    // (allowed nothing) alike, never a 401 or 403 first, nor let through to a handler.
    for token in [None, Some("bob-token")] {
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        for (line, says) in [
            ("GET /api/v1/containers?bogus=1", "\\\"bogus\\\""),
            (
                "DELETE /api/v1/containers/x?podName=web",
                "podName needs podNamespace",
            ),
            (
                "DELETE /api/v1/containers/-x?podNamespace=shop&podName=web",
                "container name",
            ),
            ("GET /api/v1/pull?pullPolicy=Sometimes", "pull policy"),
            (
                "GET /api/v1/recordings?podNamespace=",
                "\\\"podNamespace\\\"",
            ),
            (
                "GET /api/v1/watch?podNamespace=shop",
                "query parameter session",
            ),
            (
                "GET /api/v1/debug?stdout=1",
                "query parameter target is required",
            ),
            (
                "POST /api/v1/containers",
                "no endpoint POST /api/v1/containers",
            ),
        ] {
            let (code, body) = raw(
                &address,
                &format!("{line} HTTP/1.1\r\nHost: a\r\n{auth}Connection: close\r\n\r\n"),
            );
            let want = if line.starts_with("POST") { 405 } else { 400 };
            assert_eq!(code, want, "{token:?} {line}: {body}");
            assert!(body.contains(says), "{token:?} {line}: {body}");
        }
    }

    // A pod alice may debug does not open another pod's container.
    let (code, body) = raw(
        &address,
        &upgrade(
            &format!(
                "target={}&podNamespace=shop&podName=web&stdout=1",
                vault.pod_reference()
            ),
            Some("alice-token"),
        ),
    );
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("belongs to pod bank/vault, not shop/web"),
        "{body}"
    );
    assert!(vault.leftovers().is_empty());

    // A target in the node's PID namespace is the node: alice may not, dave (nodes/proxy) may.
    let out = run(
        &mut as_user(
            cluster,
            dir,
            "alice-token",
            agent,
            &["node-exporter", "--", "true"],
        ),
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("shares the node's namespaces (hostPID") && err.contains("create nodes/proxy"),
        "{err}"
    );
    let out = run(
        &mut as_user(
            cluster,
            dir,
            "dave-token",
            agent,
            &["node-exporter", "--", "echo", "node"],
        ),
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "node\n");

    // The audit log names the verified user, the pod, the decision.
    let log = agent.log();
    assert!(
        log.lines().any(|l| l.contains("session started")
            && l.contains("user=\"alice\"")
            && l.contains("pod=\"shop/web\"")),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("session refused")
            && l.contains("user=\"alice\"")
            && l.contains("decision=\"denied\"")
            || l.contains("session refused")
                && l.contains("user=\"alice\"")
                && l.contains("decision=denied")),
        "{log}"
    );
    // Reviews are cached: dozens of requests above, far fewer token reviews.
    let reviews = cluster.api.access.lock().unwrap().token_reviews;
    assert!(reviews < 20, "{reviews} token reviews");
    world.assert_clean();
}

#[test]
fn callers_are_checked_by_the_cluster_on_docker() {
    callers_are_checked_by_the_cluster(&DockerEngine);
}

#[test]
fn callers_are_checked_by_the_cluster_on_containerd() {
    callers_are_checked_by_the_cluster(&ContainerdEngine);
}

/// A CA and a certificate for the agent (its service-style name and 127.0.0.1), made with
/// the real openssl; returns (CA file, certificate, key).
/// Runs `openssl` with `args`, which must succeed.
fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        text(&out.stderr)
    );
}

/// A P-256 key at `key` and a certificate request for `subject` at `csr`.
fn request(key: &Path, csr: &Path, subject: &str) {
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &key.display().to_string(),
        "-out",
        &csr.display().to_string(),
        "-subj",
        subject,
    ]);
}

/// Signs `csr` into `cert` with CA `tag` of [`certificates`], with the extensions `ext`.
fn sign(dir: &Path, tag: &str, csr: &Path, cert: &Path, ext: &str) {
    let file = dir.join(format!("{tag}-{}.cnf", std::process::id()));
    std::fs::write(&file, ext).unwrap();
    let path = |p: PathBuf| p.display().to_string();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr.display().to_string(),
        "-CA",
        &path(dir.join(format!("{tag}-ca.crt"))),
        "-CAkey",
        &path(dir.join(format!("{tag}-ca.key"))),
        "-CAcreateserial",
        "-out",
        &cert.display().to_string(),
        "-days",
        "2",
        "-extfile",
        &path(file),
    ]);
}

/// A CA (`{tag}-ca.crt`, `{tag}-ca.key`) and an agent's serving certificate it signed: the
/// CA, the certificate and its key.
fn certificates(dir: &Path, tag: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = dir.join(format!("{tag}-ca.key"));
    let ca = dir.join(format!("{tag}-ca.crt"));
    let key = dir.join(format!("{tag}-agent.key"));
    let csr = dir.join(format!("{tag}-agent.csr"));
    let cert = dir.join(format!("{tag}-agent.crt"));
    let path = |p: &PathBuf| p.display().to_string();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &path(&ca_key),
        "-out",
        &path(&ca),
        "-days",
        "2",
        "-subj",
        &format!("/CN=kdbg-test-ca-{tag}"),
    ]);
    request(&key, &csr, "/CN=kubectl-debug-agent");
    sign(
        dir,
        tag,
        &csr,
        &cert,
        "subjectAltName=DNS:kubectl-debug-agent.kubectl-debug.svc,IP:127.0.0.1\n",
    );
    (ca, cert, key)
}

/// A user's client certificate for `subject`, signed by CA `tag` of [`certificates`], as the
/// API server's client CA signs them: the certificate and its key.
fn client_certificate(dir: &Path, tag: &str, who: &str, subject: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{who}.key"));
    let csr = dir.join(format!("{who}.csr"));
    let cert = dir.join(format!("{who}.crt"));
    request(&key, &csr, subject);
    sign(dir, tag, &csr, &cert, "extendedKeyUsage=clientAuth\n");
    (cert, key)
}

/// Writes a kubeconfig for the stand-in whose user presents the client certificate `cert`
/// (by file) and `key` (inline, base64), as kubeadm's admin.conf does.
fn kubeconfig_with_certificate(cluster: &Cluster, dir: &Path, cert: &Path, key: &Path) -> PathBuf {
    use base64::Engine as _;
    let path = dir.join(format!(
        "{}.kubeconfig",
        cert.file_stem().unwrap().to_string_lossy()
    ));
    let key = base64::engine::general_purpose::STANDARD.encode(std::fs::read(key).unwrap());
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: stand-in\n  cluster:\n    server: {}\n\
             users:\n- name: u\n  user:\n    client-certificate: {}\n    client-key-data: {key}\n\
             contexts:\n- name: stand-in\n  context:\n    cluster: stand-in\n    user: u\n    namespace: shop\n\
             current-context: stand-in\n",
            cluster.api.url,
            cert.display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_client_certificate_signed_by_the_cluster_ca_names_the_user() {
    let dir = scratch("client-cert");
    let (ca, cert, key) = certificates(&dir, "serving");
    let (cluster_ca, ..) = certificates(&dir, "clients");
    let (erin_cert, erin_key) =
        client_certificate(&dir, "clients", "erin", "/CN=erin/O=oncall/O=developers");
    let (nameless_cert, nameless_key) =
        client_certificate(&dir, "clients", "nameless", "/O=developers");
    let (mallory_cert, mallory_key) = client_certificate(&dir, "serving", "mallory", "/CN=erin");

    let cluster = Cluster::new("shop");
    users(&cluster);
    cluster
        .api
        .access
        .lock()
        .unwrap()
        .grant("erin", "create", "pods/exec", "shop", "");
    let target = DockerEngine.pod_target("shop", "web", false, "exec sleep 3600");
    cluster.api.add_pod(running_pod(
        "shop",
        "web",
        &[("app", &target.pod_reference(), true)],
    ));
    let agent_kubeconfig = cluster
        .api
        .kubeconfig_with_token(&dir, "agent.kubeconfig", AGENT_TOKEN);
    let agent_yaml = |client_ca: &str| {
        format!(
            "tls:\n  certFile: \"{}\"\n  keyFile: \"{}\"\nauth:\n  mode: kubernetes\n  kubeconfig: \"{}\"\n{client_ca}",
            cert.display(),
            key.display(),
            agent_kubeconfig.display()
        )
    };
    let debug = |agent: &Agent, cert: &Path, key: &Path, args: &[&str]| {
        let kubeconfig = kubeconfig_with_certificate(&cluster, &dir, cert, key);
        let mut cmd = support::plugin();
        cmd.arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--agent-port", &agent.port.to_string()])
            .arg("--agent-ca")
            .arg(&ca)
            .args(args);
        run(&mut cmd, b"")
    };
    let session_started = |agent: &Agent| {
        agent
            .log()
            .lines()
            .filter(|l| l.contains("event=\"session started\""))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };

    // Erin's session echoes `word`, and its one audit line names her, verified, with her
    // certificate's groups.
    let erin_runs = |agent: &Agent, word: &str| {
        let out = debug(agent, &erin_cert, &erin_key, &["web", "--", "echo", word]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}\nagent:\n{}",
            text(&out.stderr),
            agent.log()
        );
        assert_eq!(text(&out.stdout), format!("{word}\n"));
        let started = session_started(agent);
        assert_eq!(started.len(), 1, "{}", agent.log());
        for expected in ["user=\"erin\"", "oncall", "developers", "verified=true"] {
            assert!(started[0].contains(expected), "{expected}: {}", started[0]);
        }
    };

    // The CA from auth.clientCAFile: erin's certificate names her, with her groups; no token
    // is reviewed for her.
    let agent = Agent::docker_with(&agent_yaml(&format!(
        "  clientCAFile: \"{}\"\n",
        cluster_ca.display()
    )));
    erin_runs(&agent, "by-certificate");
    // A certificate without a common name names nobody: 401, saying what is missing.
    let out = debug(
        &agent,
        &nameless_cert,
        &nameless_key,
        &["web", "--", "true"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("no common name (CN)"), "{err}");
    // Signed by another CA: the handshake fails, and the error says which credential.
    let out = debug(&agent, &mallory_cert, &mallory_key, &["web", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("refused the kubeconfig user's client certificate (UnknownCA)"),
        "{err}"
    );
    assert_eq!(session_started(&agent).len(), 1, "{}", agent.log());
    drop(agent);

    // No clientCAFile: the cluster's own client CA, as the API server publishes it.
    cluster.api.add_config_map(
        "kube-system",
        "extension-apiserver-authentication",
        &[(
            "client-ca-file",
            &std::fs::read_to_string(&cluster_ca).unwrap(),
        )],
    );
    let agent = Agent::docker_with(&agent_yaml(""));
    erin_runs(&agent, "cluster-ca");
    support::assert_removed_soon(|| target.leftovers());
}

#[test]
fn agents_speak_tls_verified_against_the_agents_ca() {
    let dir = scratch("tls");
    let (ca, cert, key) = certificates(&dir, "one");
    let (other_ca, other_cert, other_key) = certificates(&dir, "two");
    let served_cert = dir.join("tls.crt");
    let served_key = dir.join("tls.key");
    std::fs::copy(&cert, &served_cert).unwrap();
    std::fs::copy(&key, &served_key).unwrap();
    let target = DockerEngine.target("exec sleep 3600");
    let cluster = Cluster::new("shop");
    cluster.api.add_pod(running_pod(
        "shop",
        "web",
        &[("app", &target.pod_reference(), true)],
    ));
    let agent = Agent::docker_with(&format!(
        "tls:\n  certFile: \"{}\"\n  keyFile: \"{}\"\nauth:\n  mode: none\ninsecure: true\n",
        served_cert.display(),
        served_key.display()
    ));
    let debug = |args: &[&str]| run(&mut cluster.debug(agent.port, args), b"");

    // Through a port-forward, the CA from the agents' ConfigMap; the name verified is the
    // service-style one.
    cluster.api.add_config_map(
        AGENT_NAMESPACE,
        "kubectl-debug-agent-ca",
        &[("ca.crt", &std::fs::read_to_string(&ca).unwrap())],
    );
    let out = debug(&["web", "--", "echo", "over-tls"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "over-tls\n");
    // Directly, the node's IP, with the CA from a file.
    let out = debug(&[
        "web",
        "--connect",
        "direct",
        "--agent-ca",
        &ca.display().to_string(),
        "--",
        "echo",
        "direct",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Another CA: refused, and the error says where the CA came from.
    let out = debug(&[
        "web",
        "--connect",
        "direct",
        "--agent-ca",
        &other_ca.display().to_string(),
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("TLS with the kubectl-debug agent") && err.contains("--agent-ca"),
        "{err}"
    );

    // The certificate renewed on disk: served from the next connection, no restart.
    std::fs::copy(&other_cert, &served_cert).unwrap();
    std::fs::copy(&other_key, &served_key).unwrap();
    let later = std::time::SystemTime::now() + Duration::from_secs(5);
    for f in [&served_cert, &served_key] {
        std::fs::File::options()
            .write(true)
            .open(f)
            .unwrap()
            .set_modified(later)
            .unwrap();
    }
    let out = debug(&[
        "web",
        "--connect",
        "direct",
        "--agent-ca",
        &other_ca.display().to_string(),
        "--",
        "echo",
        "renewed",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        agent.log().contains("TLS certificate reloaded"),
        "{}",
        agent.log()
    );
    // Plain HTTP to a TLS agent is not answered.
    let (code, _) = raw(&agent.address(), "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_ne!(code, 200);
    // A plugin without the agents' CA (a cluster with no CA ConfigMap) is told the agent
    // speaks TLS, and how to give the CA, for a session and for a list alike.
    let bare = Cluster::new("shop");
    bare.api.add_pod(running_pod(
        "shop",
        "web",
        &[("app", &target.pod_reference(), true)],
    ));
    for args in [
        &["web", "--connect", "direct", "--", "true"][..],
        &["list", "--connect", "direct"],
    ] {
        let out = run(&mut bare.debug(agent.port, args), b"");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("answered with TLS") && err.contains("--agent-ca"),
            "{args:?}: {err}"
        );
        // Said first, before the parser's own words.
        let said = err.find("answered with TLS").unwrap();
        assert!(err.find("httparse").is_none_or(|h| said < h), "{err}");
    }
    // The opposite: a CA given for an agent that serves plain HTTP.
    let plain = Agent::docker_with("");
    let out = run(
        &mut cluster.debug(
            plain.port,
            &[
                "web",
                "--connect",
                "direct",
                "--agent-ca",
                &ca.display().to_string(),
                "--",
                "true",
            ],
        ),
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("answered in plain HTTP") && err.contains("insecure: true"),
        "{err}"
    );
    support::assert_removed_soon(|| target.leftovers());
}

#[test]
fn an_agent_refuses_plain_http_and_no_auth_unless_insecure() {
    let dir = scratch("insecure");
    let config = dir.join("agent.yaml");
    for (yaml, expected) in [
        ("", "tls is not set"),
        ("insecure: false\nauth:\n  mode: none\n", "tls is not set"),
        (
            "tls:\n  certFile: /x\n  keyFile: /y\nauth:\n  mode: none\n",
            "auth.mode (line 8): none lets anyone",
        ),
        (
            "insecure: true\npolicy:\n  profiles:\n    allowed: [general]\n    default: sysadmin\n",
            "policy.profiles.default",
        ),
        (
            "insecure: true\nauth:\n  clientCAFile: /ca.pem\n",
            "auth.clientCAFile (line 6): client certificates come with TLS, and tls is not set",
        ),
        (
            "insecure: true\ntls:\n  certFile: /x\n  keyFile: /y\nauth:\n  mode: none\n  clientCAFile: /ca.pem\n",
            "auth.clientCAFile (line 10): client certificates are checked only with auth.mode: kubernetes",
        ),
    ] {
        std::fs::write(
            &config,
            format!("listen: \"127.0.0.1:0\"\nruntime:\n  kind: docker\n{yaml}"),
        )
        .unwrap();
        let out = Command::new(support::agent_binary())
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        // 64: a usage error (EX_USAGE), as for every bad configuration.
        assert_eq!(out.status.code(), Some(64), "{yaml}");
        assert!(
            text(&out.stderr).contains(expected),
            "{yaml}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn bad_requests_are_400s_naming_the_parameter() {
    let agent = Agent::start();
    let address = agent.address();
    for (query, code, expected) in [
        ("target=docker://.&stdout=1", 400, "query parameter target"),
        (
            "target=docker://a%2Fb&stdout=1",
            400,
            "query parameter target",
        ),
        (
            "target=docker://abc&stdout=1&image=UPPER:case:bad",
            400,
            "query parameter image",
        ),
        (
            "target=docker://abc&stdout=1&profile=root",
            400,
            "unknown profile \\\"root\\\"",
        ),
    ] {
        let (got, body) = raw(&address, &upgrade(query, None));
        assert_eq!(got, code, "{query}: {body}");
        assert!(body.contains(expected), "{query}: {body}");
    }
    let huge = format!(
        "target=docker://abc&stdout=1&command={}",
        "x".repeat(20_000)
    );
    let (got, body) = raw(&address, &upgrade(&huge, None));
    assert!(got == 414 || got == 431, "{got}: {body}");
}

/// Pod shop/web on the test Docker engine, and its target.
fn web_pod() -> (Box<dyn support::engine::Targeted>, Cluster) {
    let target = DockerEngine.target("exec sleep 3600");
    let cluster = Cluster::new("shop");
    cluster.api.add_pod(running_pod(
        "shop",
        "web",
        &[("app", &target.pod_reference(), true)],
    ));
    (target, cluster)
}

/// Waits up to 10 s for `done`, else fails saying `what`.
fn until(what: impl Fn() -> String, done: impl Fn() -> bool) {
    assert!(support::within(Duration::from_secs(10), done), "{}", what());
}

/// The agent's `connections_open` gauge (the request reading it is one of them); `None`
/// while the agent closes new connections at once (it has not yet seen others close).
fn connections_open(agent: &Agent) -> Option<u64> {
    agent.try_metric("kubectl_debug_agent_connections_open")
}

/// Whether the agent has closed `s`: a read sees the end within `within`.
fn closed_within(mut s: &TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(_) => return false,
        }
    }
}

/// A session in shop/web that echoes `word`, which must succeed.
fn session_echoes(cluster: &Cluster, agent: &Agent, word: &str) {
    let out = run(
        &mut cluster.debug(agent.port, &["web", "--", "echo", word]),
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{word}\n"));
}

#[test]
fn idle_and_slow_connections_cost_a_session_nothing() {
    let (target, cluster) = web_pod();
    let agent = Agent::docker_with("limits:\n  headerTimeout: 3s\n");
    let address = agent.address();
    let rss_before = agent.rss_kib();
    // 1,000 idle sockets and 200 slowloris clients (a header line every second).
    let idle: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(&address).unwrap())
        .collect();
    // Idle sockets cost the agent next to nothing: no buffers until their first byte
    // (hyper's alone are 16 KiB each; they cost 28 MiB before).
    until(
        || format!("{:?} connections open", connections_open(&agent)),
        || connections_open(&agent).is_some_and(|n| n > 1000),
    );
    if let (Some(before), Some(now)) = (rss_before, agent.rss_kib()) {
        assert!(
            now < before + 8 * 1024,
            "1,000 idle connections took the agent from {before} to {now} KiB"
        );
    }
    let mut slow: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = TcpStream::connect(&address).unwrap();
            s.write_all(b"GET /api/v1/containers HTTP/1.1\r\nHost: a\r\n")
                .unwrap();
            s
        })
        .collect();
    let started = Instant::now();
    session_echoes(&cluster, &agent, "served");
    eprintln!(
        "a session beside 1,200 held connections: {:?}",
        started.elapsed()
    );
    for s in &mut slow {
        let _ = s.write_all(b"X-Slow: 1\r\n");
    }
    // The agent closes them all after its header timeout: reads see the end.
    let closed = |s: &TcpStream| closed_within(s, Duration::from_secs(15));
    assert!(closed(&idle[0]), "an idle connection was never closed");
    assert!(closed(&idle[999]));
    assert!(closed(&slow[0]), "a slowloris connection was never closed");
    // Every one of them is gone from the agent's count (but /metrics' own).
    until(
        || format!("{:?} connections still open", connections_open(&agent)),
        || connections_open(&agent) == Some(1),
    );
    if let Some(rss) = agent.rss_kib() {
        assert!(
            rss < 64 * 1024,
            "agent RSS {rss} KiB after 1,200 connections"
        );
    }
    drop((idle, slow));
    session_echoes(&cluster, &agent, "still");
    support::assert_removed_soon(|| target.leftovers());
}

#[test]
fn connections_past_the_limit_are_closed_at_once_and_logged_sparingly() {
    let (target, cluster) = web_pod();
    let agent = Agent::docker_with("limits:\n  maxConnections: 100\n  headerTimeout: 60s\n");
    let address = agent.address();
    // 100 held, each after a request that passed authentication (so they are not the
    // unauthenticated ones that make room for newer connections): the limit. The 50 after
    // them (accepted in the order they came) are each closed as soon as they are accepted;
    // the 100 stay open.
    let held: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut s = TcpStream::connect(&address).unwrap();
            s.write_all(b"GET /version HTTP/1.1\r\nHost: a\r\n\r\n")
                .unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut answer = [0u8; 4096];
            let n = s.read(&mut answer).unwrap();
            assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
            s
        })
        .collect();
    let over: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(&address).unwrap())
        .collect();
    for s in &over {
        assert!(
            closed_within(s, Duration::from_secs(5)),
            "a connection past limits.maxConnections was kept"
        );
    }
    assert!(!closed_within(&held[0], Duration::from_millis(200)));
    assert!(!closed_within(&held[99], Duration::from_millis(200)));
    // Said at the 1st, 2nd, 4th, ... refusal, not 50 times.
    let said = agent
        .log()
        .matches("connection refused: limits.maxConnections connections are open")
        .count();
    assert!((1..=7).contains(&said), "{said} warnings:\n{}", agent.log());
    drop(held);
    until(
        || format!("{:?} connections still open", connections_open(&agent)),
        || connections_open(&agent) == Some(1),
    );
    assert_eq!(
        agent.metric("kubectl_debug_agent_errors_total{kind=\"connection_limit\"}"),
        50
    );
    session_echoes(&cluster, &agent, "served");
    support::assert_removed_soon(|| target.leftovers());
}

#[test]
fn an_agent_out_of_file_descriptors_backs_off_and_says_so_once() {
    let (target, cluster) = web_pod();
    // 64 descriptors, and 200 connections waiting: accept fails with EMFILE again and again.
    // (maxUnauthenticated set past the file limit, as an operator may: by default the agent
    // keeps waiting connections under it, closing the oldest, and never runs out.)
    let agent = Agent::docker_with_file_limit(
        "limits:\n  headerTimeout: 60s\n  maxUnauthenticated: 1000\n",
        64,
    );
    let address = agent.address();
    let held: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(&address).unwrap())
        .collect();
    let said = || agent.log().matches("accepting connections fails").count();
    until(|| agent.log(), || said() > 0);
    // Nothing but a line would show another failure (`/metrics` needs a descriptor too), so:
    // in 3 s the agent fails to accept eight more times (its back-off doubles from 10 ms to
    // its 1 s cap), each a line if it said every one; the next line it may say is due 10 s
    // after the first.
    std::thread::sleep(Duration::from_secs(3));
    // Backing off up to a second, and saying so once every ten: once here, not every 100 ms.
    assert_eq!(said(), 1, "{}", agent.log());
    assert!(
        agent
            .log()
            .contains("too many open files? lower limits.maxConnections")
    );
    // The descriptors come back: the agent serves again, and has counted the failures.
    drop(held);
    session_echoes(&cluster, &agent, "served");
    assert!(agent.metric("kubectl_debug_agent_errors_total{kind=\"accept\"}") > 0);
    support::assert_removed_soon(|| target.leftovers());
}

/// The effective capabilities of the debug container's process, from its `CapEff` line.
fn cap_eff(out: &std::process::Output) -> u64 {
    let line = text(&out.stdout);
    let hex = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no CapEff in {line:?}: {}", text(&out.stderr)));
    u64::from_str_radix(hex, 16).unwrap()
}

fn profiles_choose_the_capabilities(engine: &dyn Engine) {
    const SYS_PTRACE: u64 = 1 << 19;
    const SYS_ADMIN: u64 = 1 << 21;
    const NET_ADMIN: u64 = 1 << 12;
    let target = engine.target("exec sleep 3600");
    let cluster = Cluster::new("shop");
    cluster.api.add_pod(running_pod(
        "shop",
        "web",
        &[("app", &target.pod_reference(), true)],
    ));
    let agent = engine.agent(
        "policy:\n  profiles:\n    allowed: [general, sysadmin, restricted]\n    default: general\n",
    );
    let caps = |profile: Option<&str>| {
        let mut args = vec!["web"];
        if let Some(p) = profile {
            args.extend(["--profile", p]);
        }
        args.extend(["--", "grep", "CapEff", "/proc/self/status"]);
        run(&mut cluster.debug(agent.port, &args), b"")
    };
    let general = cap_eff(&caps(None));
    assert!(
        general & SYS_PTRACE != 0 && general & SYS_ADMIN == 0,
        "{general:x}"
    );
    let sysadmin = cap_eff(&caps(Some("sysadmin")));
    assert!(
        sysadmin & SYS_PTRACE != 0 && sysadmin & SYS_ADMIN != 0,
        "{sysadmin:x}"
    );
    let restricted = cap_eff(&caps(Some("restricted")));
    assert!(
        restricted & (SYS_PTRACE | SYS_ADMIN | NET_ADMIN) == 0,
        "{restricted:x}"
    );
    let refused = caps(Some("netadmin"));
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("profile netadmin is not allowed on this node (policy.profiles.allowed: general, sysadmin, restricted)"),
        "{}",
        text(&refused.stderr)
    );
    support::assert_removed_soon(|| target.leftovers());
}

#[test]
fn profiles_choose_the_capabilities_on_docker() {
    profiles_choose_the_capabilities(&DockerEngine);
}

#[test]
fn profiles_choose_the_capabilities_on_containerd() {
    profiles_choose_the_capabilities(&ContainerdEngine);
}
