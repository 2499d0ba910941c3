//! End-to-end through a cluster: the real `kubectl-debug` finds pods in the Kubernetes API
//! stand-in (proved faithful with the real `kubectl`), reaches the real agent on the pod's
//! "node" (127.0.0.1), which debugs a real container.

use kdbg_testkit as support;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use support::apiserver::{Cluster, running_pod, spdy};
use support::{Agent, CtdTarget, Target, container_id, free_port, plugin, run, text};

#[test]
fn kubectl_reads_pods_from_the_stand_in() {
    let cluster = Cluster::new("shop");
    cluster.api.add_pod(running_pod(
        "shop",
        "web-1",
        &[("app", "docker://0123abcd", true)],
    ));
    let out = cluster.kubectl(&["get", "pod", "web-1", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pod: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pod["kind"], "Pod");
    assert_eq!(pod["metadata"]["name"], "web-1");
    assert_eq!(
        pod["status"]["containerStatuses"][0]["containerID"],
        "docker://0123abcd"
    );
    let out = cluster.kubectl(&["get", "pods", "-A", "-o", "name"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "pod/kubectl-debug-agent-stand-in-node\npod/web-1"
    );
    // Label and field selectors, as the plugin finds a node's agent.
    let out = cluster.kubectl(&[
        "get",
        "pods",
        "-n",
        "kubectl-debug",
        "-l",
        "app.kubernetes.io/name=kubectl-debug-agent",
        "--field-selector",
        "spec.nodeName=stand-in-node",
        "-o",
        "name",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "pod/kubectl-debug-agent-stand-in-node"
    );
    let out = cluster.kubectl(&[
        "get",
        "pods",
        "-A",
        "--field-selector",
        "spec.nodeName=elsewhere",
        "-o",
        "name",
    ]);
    assert_eq!(text(&out.stdout).trim(), "");
    let out = cluster.kubectl(&["get", "pod", "missing"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("pods \"missing\" not found"),
        "{}",
        text(&out.stderr)
    );
}

/// `kubectl port-forward pod/echo :PORT` against the stand-in, over WebSocket (kubectl's
/// default) or SPDY (`KUBECTL_PORT_FORWARD_WEBSOCKETS=false`), once it has said its local
/// port.
struct PortForward {
    child: Child,
    /// The local port it listens on.
    local: u16,
    /// Where its log (stderr) goes.
    log: PathBuf,
}

impl PortForward {
    fn start(cluster: &Cluster, port: u16, websockets: bool) -> PortForward {
        static N: AtomicUsize = AtomicUsize::new(0);
        let log = std::env::temp_dir().join(format!(
            "kdbg-port-forward-{}-{}.log",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&cluster.kubeconfig)
            .args(["port-forward", "-v=6", "pod/echo", &format!(":{port}")])
            .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", websockets.to_string())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("running kubectl");
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        // kubectl prints a line per connection, and a closed pipe would kill it (SIGPIPE).
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        // "Forwarding from 127.0.0.1:LOCAL -> PORT"
        let local = line
            .strip_prefix("Forwarding from 127.0.0.1:")
            .and_then(|rest| rest.split_once(' '))
            .and_then(|(local, _)| local.parse().ok());
        let forward = PortForward {
            child,
            local: local.unwrap_or_default(),
            log,
        };
        if local.is_none() {
            panic!("kubectl port-forward said {line:?}; {}", forward.stop());
        }
        forward
    }

    /// What kubectl has logged so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops kubectl; its whole log.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log()
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

#[test]
fn kubectl_port_forward_carries_connections_through_the_stand_in() {
    // A pod whose port echoes what it reads, then closes.
    let echo = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = echo.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for socket in echo.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = socket.try_clone().unwrap();
                let mut writer = socket;
                let _ = std::io::copy(&mut reader, &mut writer);
            });
        }
    });
    let cluster = Cluster::new("shop");
    cluster
        .api
        .add_pod(running_pod("shop", "echo", &[("app", "docker://e", true)]));
    // Two connections at once through one port-forward: two stream pairs, 1 MiB each way.
    let payload: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 7 % 251) as u8).collect();
    for websockets in [true, false] {
        let forward = PortForward::start(&cluster, port, websockets);
        let local = forward.local;
        let round_trips: Vec<_> = (0..2)
            .map(|_| {
                let payload = payload.clone();
                std::thread::spawn(move || -> std::io::Result<bool> {
                    let mut socket = std::net::TcpStream::connect(("127.0.0.1", local))?;
                    let mut writer = socket.try_clone()?;
                    let sent = payload.clone();
                    let send = std::thread::spawn(move || {
                        writer.write_all(&sent)?;
                        writer.shutdown(std::net::Shutdown::Write)
                    });
                    let mut back = Vec::new();
                    socket.read_to_end(&mut back)?;
                    send.join().expect("the sending thread")?;
                    Ok(back == payload)
                })
            })
            .collect();
        let echoed: Vec<_> = round_trips
            .into_iter()
            .map(|t| t.join().unwrap().map_err(|e| e.to_string()))
            .collect();
        let log = forward.stop();
        assert_eq!(
            echoed,
            [Ok(true), Ok(true)],
            "websockets={websockets}: {log}"
        );
        // kubectl took the transport it was asked for, without falling back.
        assert!(!log.contains("fallback"), "websockets={websockets}: {log}");
    }
    // A port nothing listens on: the error stream says why, and kubectl prints it.
    let closed = support::free_port();
    for websockets in [true, false] {
        let forward = PortForward::start(&cluster, closed, websockets);
        let mut socket = std::net::TcpStream::connect(("127.0.0.1", forward.local)).unwrap();
        let mut got = Vec::new();
        let _ = socket.read_to_end(&mut got);
        // The connection ends with the error stream; kubectl logs the error a moment later.
        let said = |log: &str| {
            log.contains(&format!("error forwarding port {closed} to pod"))
                && log.contains("onnection refused")
        };
        support::within(support::READY_BOUND, || said(&forward.log()));
        let log = forward.stop();
        assert!(got.is_empty(), "websockets={websockets}: {got:?}");
        assert!(said(&log), "websockets={websockets}: {log}");
    }
}

#[test]
fn spdy_header_blocks_use_spdy3s_dictionary_and_one_context_per_side() {
    assert_eq!(spdy::dictionary().len(), 1423);
    let mut deflater = spdy::Deflater::default();
    let mut inflater = spdy::Inflater::default();
    for request in ["0", "1"] {
        let block = deflater.block(&[
            ("streamType", "data"),
            ("port", "80"),
            ("requestID", request),
        ]);
        let mut wire = bytes::BytesMut::new();
        spdy::Frame::SynStream {
            id: 1,
            fin: false,
            headers: block,
        }
        .encode(&mut wire);
        let Ok(Some(spdy::Frame::SynStream { id: 1, headers, .. })) =
            spdy::Frame::decode(&mut wire)
        else {
            panic!("not a SYN_STREAM");
        };
        let headers = inflater.headers(&headers).unwrap();
        assert_eq!(spdy::header(&headers, "streamtype"), Some("data"));
        assert_eq!(spdy::header(&headers, "requestid"), Some(request));
    }
}

#[test]
fn a_pod_session_sees_the_target_and_passes_the_exit_code() {
    let target = Target::start("exec sleep 3602");
    let agent = Agent::start();
    let cluster = Cluster::new("shop");
    let id = format!("docker://{}", container_id(&target.name));
    cluster
        .api
        .add_pod(running_pod("shop", "web-1", &[("app", &id, true)]));
    // The context's namespace is used without -n.
    let out = run(&mut cluster.debug(agent.port, &["web-1", "--", "ps"]), b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("sleep 3602"),
        "{}",
        text(&out.stdout)
    );
    // -n after the pod, like kubectl's global flags; exit code 7 passes through.
    let out = run(
        &mut cluster.debug(
            agent.port,
            &[
                "web-1",
                "-n",
                "shop",
                "--",
                "sh",
                "-c",
                "echo out; echo err >&2; exit 7",
            ],
        ),
        b"",
    );
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out\n");
    assert!(text(&out.stderr).contains("err\n"));
    // Piped stdin.
    let out = run(
        &mut cluster.debug(agent.port, &["web-1", "-i", "--", "cat"]),
        b"piped\n",
    );
    assert_eq!(text(&out.stdout), "piped\n");
    support::assert_removed_soon(|| target.leftovers());
}

#[test]
fn pod_errors_name_the_object_and_exit_1() {
    let running = Target::start("exec sleep 3600");
    let agent = Agent::start();
    let cluster = Cluster::new("shop");
    let id = format!("docker://{}", container_id(&running.name));
    cluster.api.add_pod(running_pod(
        "shop",
        "two",
        &[("app", &id, true), ("sidecar", "docker://dead", false)],
    ));
    let mut pending = running_pod("shop", "pending", &[("app", &id, true)]);
    let status = pending.status.as_mut().unwrap();
    status.phase = Some("Pending".into());
    status.reason = Some("Unschedulable".into());
    cluster.api.add_pod(pending);
    // Stopped after its pod's status was written (a crash loop, between two of the kubelet's
    // reports): the agent refuses, and the plugin reads the pod again to say what now.
    let stopped = Target::start("exec sleep 3600");
    support::docker(&["kill", &stopped.name]);
    let stopped_id = format!("docker://{}", container_id(&stopped.name));
    cluster.api.add_pod(running_pod(
        "shop",
        "stopped",
        &[("app", &stopped_id, true)],
    ));

    let cases: [(&[&str], &str); 6] = [
        (
            &["nope", "--", "true"],
            "pods \"nope\" not found in namespace \"shop\"",
        ),
        (
            &["pending", "--", "true"],
            "pod \"pending\" is Pending (Unschedulable): no debug container can join it until it runs",
        ),
        (
            &["two", "-c", "db", "--", "true"],
            "container \"db\" not found in pod \"two\"; its containers: app, sidecar",
        ),
        (
            &["two", "-c", "sidecar", "--", "true"],
            "container \"sidecar\" of pod \"two\" is waiting (CrashLoopBackOff)",
        ),
        (
            &["stopped", "--", "true"],
            "(container \"app\" of pod \"stopped\"; its pod's status has not caught up): run kubectl-debug again once it runs, or if it keeps stopping, debug a copy of the pod whose container holds still with --fork",
        ),
        (
            &["--context", "elsewhere", "two", "--", "true"],
            "pods \"two\" not found in namespace \"elsewhere\"",
        ),
    ];
    for (args, expected) in cases {
        let out = run(&mut cluster.debug(agent.port, args), b"");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            text(&out.stderr).contains(expected),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    // Without -c the first container is chosen, and the user is told.
    let out = run(&mut cluster.debug(agent.port, &["two", "--", "true"]), b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("Defaulted container \"app\" out of: app, sidecar"));
    // No agent on the node's port: reached directly, then through the API server.
    let nobody = free_port();
    let out = run(
        &mut cluster.debug(
            nobody,
            &["two", "-c", "app", "--connect", "direct", "--", "true"],
        ),
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("127.0.0.1:{nobody}")) && err.contains("stand-in-node"),
        "{err}"
    );
    let out = run(
        &mut cluster.debug(nobody, &["two", "-c", "app", "--", "true"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("the port-forward to the kubectl-debug agent of node stand-in-node")
            && err.contains(&format!("error forwarding port {nobody}")),
        "{err}"
    );
    support::assert_removed_soon(|| running.leftovers());
}

#[test]
fn a_pod_on_a_containerd_node_is_debugged_through_its_agent() {
    let target = CtdTarget::start("exec sleep 3613");
    let fifos = support::Scratch::new("pod-fifo");
    let agent = Agent::containerd(&fifos, "");
    let cluster = Cluster::new("shop");
    // A containerd node reports containerd://<id>, the ID in namespace k8s.io.
    cluster.api.add_pod(running_pod(
        "shop",
        "api-0",
        &[("api", &target.reference(), true)],
    ));
    let out = run(&mut cluster.debug(agent.port, &["api-0", "--", "ps"]), b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("sleep 3613"),
        "{}",
        text(&out.stdout)
    );
    let out = run(
        &mut cluster.debug(
            agent.port,
            &["api-0", "-i", "--", "sh", "-c", "cat; echo err >&2; exit 7"],
        ),
        b"piped\n",
    );
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "piped\n");
    assert!(text(&out.stderr).contains("err\n"));
    support::assert_removed_soon(|| target.leftovers());
}

#[test]
fn an_unreachable_api_server_is_one_error_line_without_logs() {
    let dir = support::Scratch::new("noapi");
    let kubeconfig = dir.join("kubeconfig");
    let port = free_port();
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster:\n    server: http://127.0.0.1:{port}\n\
             users:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: gone\n  context:\n    cluster: gone\n    user: u\n\
             current-context: gone\n"
        ),
    )
    .unwrap();
    let mut cmd = plugin();
    cmd.arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["web-1", "--", "true"]);
    let out = run(&mut cmd, b"");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line, ours: {err}");
    assert!(
        lines[0].starts_with("error: getting pod \"web-1\""),
        "{err}"
    );
    assert!(
        !err.contains("kube_client") && !err.contains('\u{1b}'),
        "{err}"
    );
    // Each cause is said once.
    let causes: Vec<&str> = lines[0].split(": ").collect();
    let mut unique = causes.clone();
    unique.dedup();
    assert_eq!(causes, unique, "{err}");
    // -v shows the logs.
    let mut cmd = plugin();
    cmd.arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["web-1", "-v=6", "--", "true"]);
    let out = run(&mut cmd, b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).lines().count() > 1,
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn docker_sessions_start_through_the_engines_containerd_or_dockerd_as_configured() {
    // Which path the agent takes: the engine's containerd unless KDBG_DOCKER_EXEC=dockerd
    // (.ci/run runs this test both ways). dockerd knows only the execs it made itself.
    let through_dockerd = std::env::var("KDBG_DOCKER_EXEC").is_ok_and(|v| v == "dockerd");
    let target = Target::start("exec sleep 3604");
    let agent = Agent::start();
    let cluster = Cluster::new("shop");
    let id = format!("docker://{}", container_id(&target.name));
    cluster
        .api
        .add_pod(running_pod("shop", "web-2", &[("app", &id, true)]));
    let mut session = cluster.debug(
        agent.port,
        &["web-2", "--", "sh", "-c", "echo up; sleep 30"],
    );
    let mut child = session
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "up\n");
    let label = format!("label={}=web-2", kdbg_runtimes::label::POD_NAME);
    let ids = text(&support::docker(&["ps", "-q", "--filter", &label]).stdout);
    let debug_container = ids.split_whitespace().next().expect("the debug container");
    let execs =
        text(&support::docker(&["inspect", "-f", "{{len .ExecIDs}}", debug_container]).stdout);
    let _ = child.kill();
    let _ = child.wait();
    let log = agent.log();
    if through_dockerd {
        assert_eq!(execs.trim(), "1", "the session is dockerd's exec");
        assert!(log.contains("runtime.engineContainerd: off"), "{log}");
    } else {
        assert_eq!(execs.trim(), "0", "the session is not dockerd's exec");
        assert!(
            log.contains("sessions on Docker are started through the engine's containerd"),
            "{log}"
        );
    }
}
