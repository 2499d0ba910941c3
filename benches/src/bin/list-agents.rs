//! `kubectl-debug list -A` across 100 nodes: a minimal Kubernetes API (the pod list: 100
//! pods, one per node; anything else, such as the agents' CA ConfigMap, is not found) and 100 simulated agents on their own loopback addresses
//! (127.0.1.1 to 127.0.1.100, one port), each answering its container list after a 50 ms
//! delay. The real plugin binary's total time is set against the slowest agent's answer,
//! measured alone in the same run: the queries must run in parallel. The plugin reaches the
//! agents by node IP (`--connect direct`): this API answers no port-forward (what one costs is
//! in the real-path benchmark's `_portforward` rows). Leaves its figures in
//! `target/kdbg-bench/list.json` for the report.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use kdbg_benches::figures_dir;

const NODES: usize = 100;
const DELAY: Duration = Duration::from_millis(50);
const RUNS: usize = 7;

fn node_ip(i: usize) -> String {
    format!("127.0.1.{}", i + 1)
}

/// Serves `answer(path)` (a delay, a status code, a JSON body) on `listener` until the
/// process ends.
fn serve(
    listener: tokio::net::TcpListener,
    answer: impl Fn(&str) -> (Duration, u16, String) + Clone + Send + Sync + 'static,
) {
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (delay, code, body) = answer(req.uri().path());
                        async move {
                            tokio::time::sleep(delay).await;
                            let mut response = Response::new(Full::new(Bytes::from(body)));
                            *response.status_mut() =
                                hyper::StatusCode::from_u16(code).expect("a status code");
                            response
                                .headers_mut()
                                .insert("content-type", "application/json".parse().unwrap());
                            Ok::<_, Infallible>(response)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
}

fn pod_list() -> String {
    let items: Vec<serde_json::Value> = (0..NODES)
        .map(|i| {
            serde_json::json!({
                "metadata": {"name": format!("p-{i}"), "namespace": "bench"},
                "spec": {"nodeName": format!("node-{i}"), "containers": [{"name": "c"}]},
                "status": {"phase": "Running", "hostIP": node_ip(i)}
            })
        })
        .collect();
    serde_json::json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items})
        .to_string()
}

fn container_list(i: usize) -> String {
    serde_json::json!({"items": [{
        "name": format!("p-{i}-dbg-bench"), "id": format!("id-{i}"), "image": "tools:1",
        "status": {"state": "idle"}, "created": 0, "retained": true,
        "target": "docker://t", "namespace": "bench", "pod": format!("p-{i}"),
        "user": "bench", "session": "s", "sessions": []
    }]})
    .to_string()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_address = api.local_addr().unwrap();
        let pods = pod_list();
        // The pod list, from `/api/v1/pods`; everything else 404 with a Status, as an API
        // server answers what it does not have.
        serve(api, move |path| {
            if path == "/api/v1/pods" {
                (Duration::ZERO, 200, pods.clone())
            } else {
                let status = serde_json::json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("{path} not found"), "reason": "NotFound", "code": 404
                });
                (Duration::ZERO, 404, status.to_string())
            }
        });
        let port = kdbg_testkit::free_port();
        for i in 0..NODES {
            let listener = tokio::net::TcpListener::bind(format!("{}:{port}", node_ip(i)))
                .await
                .expect("binding a loopback address of 127.0.1.0/24");
            let list = container_list(i);
            serve(listener, move |_| (DELAY, 200, list.clone()));
        }
        let dir = std::env::temp_dir().join(format!("kdbg-list-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: b\n  cluster:\n    server: http://{api_address}\n\
                 users:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: b\n  context:\n    cluster: b\n    user: u\n\
                 current-context: b\n"
            ),
        )
        .unwrap();
        let plugin = std::env::current_exe()
            .unwrap()
            .with_file_name("kubectl-debug");
        // The slowest agent alone: one list request to one simulated agent, as the plugin asks.
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<http_body_util::Empty<Bytes>>();
        let mut slowest = Duration::ZERO;
        for i in 0..NODES {
            let start = Instant::now();
            let uri = format!("http://{}:{port}/api/v1/containers", node_ip(i));
            let response = client.get(uri.parse().unwrap()).await.unwrap();
            http_body_util::BodyExt::collect(response.into_body()).await.unwrap();
            slowest = slowest.max(start.elapsed());
        }
        let mut times = Vec::new();
        for _ in 0..RUNS {
            let start = Instant::now();
            let out = tokio::process::Command::new(&plugin)
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(["--agent-port", &port.to_string(), "--connect", "direct"])
                .args(["list", "-A"])
                .output()
                .await
                .expect("running kubectl-debug (cargo build --release -p kdbg-plugin)");
            times.push(start.elapsed());
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let rows = String::from_utf8_lossy(&out.stdout).lines().count();
            assert_eq!(rows, NODES + 1, "a row per node and the header");
        }
        times.sort();
        let median = times[RUNS / 2];
        let ratio = median.as_secs_f64() / slowest.as_secs_f64();
        eprintln!(
            "list -A over {NODES} agents: median {:.0} ms; slowest agent alone {:.0} ms; {ratio:.2}x",
            median.as_secs_f64() * 1e3,
            slowest.as_secs_f64() * 1e3
        );
        let figures = serde_json::json!({
            "nodes": NODES, "delay_ms": DELAY.as_millis() as u64, "runs": RUNS,
            "list_ms": median.as_secs_f64() * 1e3, "slowest_agent_ms": slowest.as_secs_f64() * 1e3,
            "ratio": ratio,
        });
        std::fs::create_dir_all(figures_dir()).unwrap();
        std::fs::write(figures_dir().join("list.json"), figures.to_string()).unwrap();
    });
}
