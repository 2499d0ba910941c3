//! A Kubernetes API stand-in for tests: serves discovery, namespaces and pods in the real JSON
//! shapes (k8s-openapi types, `metav1.Status` for errors) over plain HTTP on 127.0.0.1. Tests
//! register pods whose container statuses point at real containers. `kubectl` itself is used
//! against it to prove it faithful.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    APIGroupList, APIResource, APIResourceList, APIVersions, ListMeta, ObjectMeta,
    ServerAddressByClientCIDR,
};
use k8s_openapi::apimachinery::pkg::version::Info;
use kdbg_relay::status::{Status, StatusDetails};

pub mod access;
mod portforward;
pub mod spdy;

type Pods = Arc<Mutex<BTreeMap<(String, String), Pod>>>;
type ConfigMaps = Arc<Mutex<BTreeMap<(String, String), ConfigMap>>>;

/// The stand-in, serving until the test process ends.
pub struct ApiServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    pods: Pods,
    config_maps: ConfigMaps,
    /// Test users' tokens and grants, for the agents' reviews.
    pub access: access::Shared,
}

impl ApiServer {
    /// Starts serving on a free port of 127.0.0.1.
    pub fn start() -> ApiServer {
        let pods: Pods = Arc::default();
        let config_maps: ConfigMaps = Arc::default();
        let table: access::Shared = Arc::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let served = pods.clone();
        let (maps, reviews) = (config_maps.clone(), table.clone());
        let address = url.trim_start_matches("http://").to_owned();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((socket, _)) = listener.accept().await else {
                        continue;
                    };
                    let pods = served.clone();
                    let address = address.clone();
                    let (maps, reviews) = (maps.clone(), reviews.clone());
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let (pods, maps, reviews, address) =
                                (pods.clone(), maps.clone(), reviews.clone(), address.clone());
                            async move {
                                let response = if access::is_review(&req) {
                                    access::review(req, reviews).await
                                } else {
                                    match forward_to(&req, &pods) {
                                        Some(target) => upgrade(req, target),
                                        None => handle(&req, &pods, &maps, &address),
                                    }
                                };
                                Ok::<_, Infallible>(response)
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                            .with_upgrades()
                            .await;
                    });
                }
            });
        });
        ApiServer {
            url,
            pods,
            config_maps,
            access: table,
        }
    }

    /// Registers (or replaces) a ConfigMap.
    pub fn add_config_map(&self, namespace: &str, name: &str, data: &[(&str, &str)]) {
        let map = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                ..ObjectMeta::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..ConfigMap::default()
        };
        self.config_maps
            .lock()
            .unwrap()
            .insert((namespace.to_owned(), name.to_owned()), map);
    }

    /// Writes `file` in `dir`: a kubeconfig for this server whose user presents `token`.
    pub fn kubeconfig_with_token(&self, dir: &Path, file: &str, token: &str) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(file);
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: stand-in\n  cluster:\n    server: {}\n\
                 users:\n- name: u\n  user:\n    token: {token}\n\
                 contexts:\n- name: stand-in\n  context:\n    cluster: stand-in\n    user: u\n    namespace: default\n\
                 current-context: stand-in\n",
                self.url
            ),
        )
        .unwrap();
        path
    }

    /// Removes a pod, as `kubectl delete pod` would.
    pub fn remove_pod(&self, namespace: &str, name: &str) {
        self.pods
            .lock()
            .unwrap()
            .remove(&(namespace.to_owned(), name.to_owned()));
    }

    /// Registers (or replaces) a pod.
    pub fn add_pod(&self, pod: Pod) {
        let meta = &pod.metadata;
        let key = (
            meta.namespace.clone().unwrap_or_else(|| "default".into()),
            meta.name.clone().expect("a pod has a name"),
        );
        self.pods.lock().unwrap().insert(key, pod);
    }

    /// Writes a kubeconfig for this server with `namespace` as the context's namespace.
    pub fn kubeconfig(&self, dir: &Path, namespace: &str) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: stand-in\n  cluster:\n    server: {}\n\
                 users:\n- name: tester\n  user:\n    token: stand-in-token\n\
                 contexts:\n- name: stand-in\n  context:\n    cluster: stand-in\n    user: tester\n    namespace: {namespace}\n\
                 - name: elsewhere\n  context:\n    cluster: stand-in\n    user: tester\n    namespace: elsewhere\n\
                 current-context: stand-in\n",
                self.url
            ),
        )
        .unwrap();
        path
    }
}

/// The namespace and labels of kubectl-debug's agent DaemonSet, as `deploy/` makes them.
pub const AGENT_NAMESPACE: &str = "kubectl-debug";
/// See [`AGENT_NAMESPACE`].
pub const AGENT_LABEL: (&str, &str) = ("app.kubernetes.io/name", "kubectl-debug-agent");

/// The agent pod of node `node`, whose pod IP is `ip` (port-forwards reach the agent there),
/// ready or not.
pub fn agent_pod(node: &str, ip: &str, ready: bool) -> Pod {
    let mut pod = pod_on_node(
        AGENT_NAMESPACE,
        &format!("kubectl-debug-agent-{node}"),
        &[("agent", "docker://stand-in-agent", ready)],
        node,
        ip,
    );
    pod.metadata.labels = Some([(AGENT_LABEL.0.to_owned(), AGENT_LABEL.1.to_owned())].into());
    if !ready {
        let status = pod.status.as_mut().expect("a status");
        status.phase = Some("Pending".into());
        status.conditions = Some(vec![serde_json::from_value(serde_json::json!(
            {"type": "Ready", "status": "False", "reason": "ContainersNotReady", "message": "containers with unready status: [agent]"}
        )).expect("a condition")]);
    }
    pod
}

/// A Running pod on node `stand-in-node` (hostIP 127.0.0.1) whose containers are the given
/// `(name, runtime ID URL, running)` triples.
pub fn running_pod(namespace: &str, name: &str, containers: &[(&str, &str, bool)]) -> Pod {
    pod_on_node(namespace, name, containers, "stand-in-node", "127.0.0.1")
}

/// The same on node `node` whose IP is `host_ip`.
pub fn pod_on_node(
    namespace: &str,
    name: &str,
    containers: &[(&str, &str, bool)],
    node: &str,
    host_ip: &str,
) -> Pod {
    let specs: Vec<_> = containers
        .iter()
        .map(|(c, _, _)| serde_json::json!({"name": c, "image": "stand-in"}))
        .collect();
    let statuses: Vec<_> = containers
        .iter()
        .map(|(c, id, running)| {
            let state = if *running {
                serde_json::json!({"running": {"startedAt": "2026-11-27T00:00:00Z"}})
            } else {
                serde_json::json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off restarting"}})
            };
            serde_json::json!({
                "name": c, "containerID": id, "image": "stand-in", "imageID": "",
                "ready": running, "restartCount": 0, "started": running, "state": state
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{namespace}-{name}")},
        "spec": {"nodeName": node, "containers": specs},
        "status": {
            "phase": "Running", "hostIP": host_ip, "podIP": host_ip,
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": statuses
        }
    }))
    .expect("a valid Pod")
}

pub(crate) fn json(code: StatusCode, value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(serde_json::to_vec(value).unwrap())));
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}

fn not_found(kind: &str, name: &str) -> Response<Full<Bytes>> {
    let mut status = Status::http_error(404, "NotFound", format!("{kind} \"{name}\" not found"));
    status.details = Some(StatusDetails {
        name: Some(name.to_owned()),
        kind: Some(kind.to_owned()),
        causes: Vec::new(),
    });
    json(StatusCode::NOT_FOUND, &status)
}

fn list_of(items: Vec<Pod>) -> serde_json::Value {
    serde_json::json!({
        "kind": "PodList", "apiVersion": "v1",
        "metadata": ListMeta { resource_version: Some("1".into()), ..ListMeta::default() },
        "items": items,
    })
}

/// The pods of `pods` that the request's `labelSelector` (`key=value`, comma-separated) and
/// `fieldSelector` (`spec.nodeName=...`, `metadata.name=...`) select.
fn selected<'a>(
    req: &Request<hyper::body::Incoming>,
    pods: impl Iterator<Item = &'a Pod>,
) -> impl Iterator<Item = Pod> {
    let mut labels = Vec::new();
    let mut fields = Vec::new();
    for (key, value) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        let into = match &*key {
            "labelSelector" => &mut labels,
            "fieldSelector" => &mut fields,
            _ => continue,
        };
        for term in value.split(',').filter(|t| !t.is_empty()) {
            let (k, v) = term.split_once('=').unwrap_or((term, ""));
            into.push((
                k.trim_end_matches('=').to_owned(),
                v.trim_start_matches('=').to_owned(),
            ));
        }
    }
    pods.filter(move |pod| {
        let label = |k: &str| pod.metadata.labels.as_ref().and_then(|l| l.get(k)).cloned();
        let field = |k: &str| match k {
            "spec.nodeName" => pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            "metadata.name" => pod.metadata.name.clone(),
            "metadata.namespace" => pod.metadata.namespace.clone(),
            _ => None,
        };
        labels.iter().all(|(k, v)| label(k).as_deref() == Some(v))
            && fields.iter().all(|(k, v)| field(k).as_deref() == Some(v))
    })
    .cloned()
    .collect::<Vec<_>>()
    .into_iter()
}

/// For a port-forward request: the pod's IP and the ports.
fn forward_to(req: &Request<hyper::body::Incoming>, pods: &Pods) -> Option<(String, Vec<u16>)> {
    let parts: Vec<&str> = req
        .uri()
        .path()
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    let ["api", "v1", "namespaces", ns, "pods", name, "portforward"] = parts.as_slice() else {
        return None;
    };
    let pods = pods.lock().unwrap();
    let pod = pods.get(&((*ns).to_owned(), (*name).to_owned()))?;
    let ip = pod.status.as_ref()?.pod_ip.clone()?;
    Some((ip, portforward::ports(req.uri().query().unwrap_or(""))))
}

/// Accepts a port-forward upgrade and serves it: a WebSocket carrying `v4.channel.k8s.io`
/// (kube-rs) or tunnelling SPDY (kubectl), or an SPDY upgrade (kubectl's fallback).
fn upgrade(
    req: Request<hyper::body::Incoming>,
    (ip, ports): (String, Vec<u16>),
) -> Response<Full<Bytes>> {
    let headers = req.headers();
    let has = |name: &str, wanted: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case(wanted)))
    };
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    if has("upgrade", spdy::UPGRADE) && has("x-stream-protocol-version", spdy::PROTOCOL) {
        tokio::spawn(portforward::serve_spdy(req, ip));
        let h = response.headers_mut();
        h.insert("connection", "Upgrade".parse().unwrap());
        h.insert("upgrade", spdy::UPGRADE.parse().unwrap());
        h.insert("x-stream-protocol-version", spdy::PROTOCOL.parse().unwrap());
        return response;
    }
    let protocol = if has("sec-websocket-protocol", portforward::PROTOCOL) && !ports.is_empty() {
        Some(portforward::PROTOCOL)
    } else if has("sec-websocket-protocol", spdy::TUNNELLED) {
        Some(spdy::TUNNELLED)
    } else {
        None
    };
    let key = headers.get("sec-websocket-key").cloned();
    let (Some(key), Some(protocol)) = (key, protocol) else {
        return json(
            StatusCode::BAD_REQUEST,
            &Status::http_error(
                400,
                "BadRequest",
                format!(
                    "port-forward needs a WebSocket upgrade offering {} (with ?ports=) or {}, \
                     or an {} upgrade",
                    portforward::PROTOCOL,
                    spdy::TUNNELLED,
                    spdy::UPGRADE
                ),
            ),
        );
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    tokio::spawn(portforward::serve(req, ip, ports, protocol));
    let h = response.headers_mut();
    h.insert("connection", "Upgrade".parse().unwrap());
    h.insert("upgrade", "websocket".parse().unwrap());
    h.insert("sec-websocket-accept", accept.parse().unwrap());
    h.insert("sec-websocket-protocol", protocol.parse().unwrap());
    response
}

fn handle(
    req: &Request<hyper::body::Incoming>,
    pods: &Pods,
    maps: &ConfigMaps,
    address: &str,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().trim_end_matches('/');
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let pods = pods.lock().unwrap();
    let namespaces: std::collections::BTreeSet<String> = pods
        .keys()
        .map(|(ns, _)| ns.clone())
        .chain(["default".to_owned(), "kube-system".to_owned()])
        .collect();
    match parts.as_slice() {
        ["version"] => json(
            StatusCode::OK,
            &Info {
                major: "1".into(),
                minor: "33".into(),
                git_version: "v1.33.0-kdbg-stand-in".into(),
                platform: "linux/amd64".into(),
                go_version: "go1.24".into(),
                compiler: "gc".into(),
                ..Info::default()
            },
        ),
        ["api"] => json(
            StatusCode::OK,
            &APIVersions {
                versions: vec!["v1".into()],
                server_address_by_client_cidrs: vec![ServerAddressByClientCIDR {
                    client_cidr: "0.0.0.0/0".into(),
                    server_address: address.to_owned(),
                }],
            },
        ),
        ["apis"] => json(StatusCode::OK, &APIGroupList { groups: Vec::new() }),
        ["api", "v1"] => {
            let resource = |name: &str, kind: &str, namespaced: bool, short: &[&str]| APIResource {
                name: name.into(),
                singular_name: kind.to_lowercase(),
                namespaced,
                kind: kind.into(),
                verbs: vec!["get".into(), "list".into()],
                short_names: Some(short.iter().map(|s| (*s).to_owned()).collect()),
                ..APIResource::default()
            };
            json(
                StatusCode::OK,
                &APIResourceList {
                    group_version: "v1".into(),
                    resources: vec![
                        resource("pods", "Pod", true, &["po"]),
                        resource("namespaces", "Namespace", false, &["ns"]),
                    ],
                },
            )
        }
        ["api", "v1", "namespaces"] => {
            let items: Vec<Namespace> = namespaces
                .iter()
                .map(|n| Namespace {
                    metadata: ObjectMeta {
                        name: Some(n.clone()),
                        ..ObjectMeta::default()
                    },
                    ..Namespace::default()
                })
                .collect();
            json(
                StatusCode::OK,
                &serde_json::json!({"kind": "NamespaceList", "apiVersion": "v1", "metadata": {}, "items": items}),
            )
        }
        ["api", "v1", "namespaces", ns] => match namespaces.contains(*ns) {
            true => json(
                StatusCode::OK,
                &Namespace {
                    metadata: ObjectMeta {
                        name: Some((*ns).to_owned()),
                        ..ObjectMeta::default()
                    },
                    ..Namespace::default()
                },
            ),
            false => not_found("namespaces", ns),
        },
        ["api", "v1", "pods"] => json(
            StatusCode::OK,
            &list_of(selected(req, pods.values()).collect()),
        ),
        ["api", "v1", "namespaces", ns, "pods"] => json(
            StatusCode::OK,
            &list_of(
                selected(
                    req,
                    pods.iter().filter(|((n, _), _)| n == ns).map(|(_, p)| p),
                )
                .collect(),
            ),
        ),
        ["api", "v1", "namespaces", ns, "configmaps", name] => {
            match maps
                .lock()
                .unwrap()
                .get(&((*ns).to_owned(), (*name).to_owned()))
            {
                Some(map) => json(StatusCode::OK, map),
                None => not_found("configmaps", name),
            }
        }
        ["api", "v1", "namespaces", ns, "pods", name] => {
            match pods.get(&((*ns).to_owned(), (*name).to_owned())) {
                Some(pod) => json(StatusCode::OK, pod),
                None => not_found("pods", name),
            }
        }
        _ => json(
            StatusCode::NOT_FOUND,
            &Status::http_error(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        ),
    }
}

/// A stand-in cluster: the API server and a kubeconfig for it.
pub struct Cluster {
    /// The API server.
    pub api: ApiServer,
    /// A kubeconfig for it (user `tester`, token `stand-in-token`).
    pub kubeconfig: PathBuf,
    dir: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Cluster {
    /// A cluster whose kubeconfig's context uses `namespace`.
    pub fn new(namespace: &str) -> Cluster {
        let api = ApiServer::start();
        // The agent DaemonSet's pod on the stand-in's node: port-forwards reach agents on
        // 127.0.0.1, at whichever port the test's agent listens on.
        api.add_pod(agent_pod("stand-in-node", "127.0.0.1", true));
        let dir = std::env::temp_dir().join(format!(
            "kdbg-cluster-{}-{}",
            std::process::id(),
            api.url.rsplit(':').next().unwrap()
        ));
        let kubeconfig = api.kubeconfig(&dir, namespace);
        Cluster {
            api,
            kubeconfig,
            dir,
        }
    }

    /// The real kubectl against it.
    pub fn kubectl(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("running kubectl")
    }

    /// `kubectl-debug` against it, reaching agents on `agent_port`.
    pub fn debug(&self, agent_port: u16, args: &[&str]) -> std::process::Command {
        let mut cmd = crate::plugin();
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--agent-port")
            .arg(agent_port.to_string())
            .args(args);
        cmd
    }
}
