//! A Kubernetes API stand-in for tests: serves discovery, namespaces, its node, pods (lists,
//! watches, logs, port-forwards), events, config maps, secrets and service accounts, in the
//! real JSON shapes (k8s-openapi types, the server-side tables `kubectl get` prints,
//! `metav1.Status` for errors) over plain HTTP on 127.0.0.1. `kubectl` itself is used against
//! it to prove it faithful.
//!
//! Pods come two ways. A test registers a pod ([`ApiServer::add_pod`]) whose container
//! statuses point at containers it started itself; or a pod is created through the API
//! (`kubectl apply`, the plugin's on-demand agents), and the stand-in's kubelet runs it as
//! real containers on the test Docker engine, or on the test containerd for a stand-in started
//! so ([`NodeRuntime`], [`Cluster::on_containerd`]) (below). Creation is checked as the API
//! server checks it: the namespace, the ServiceAccount admission plugin (the pod's service
//! account, `default` if it names none, must exist; its `imagePullSecrets` become the pod's if
//! the pod has none), validation of names and containers, a test user's grants ([`access`];
//! kubectl sends no token over plain HTTP, kube-rs does), Pod Security in a namespace labelled
//! for it ([`ApiServer::set_pod_security`]), names taken.
//!
//! Secrets and service accounts can be read (one, or a list or table) and created, by
//! `kubectl create secret docker-registry|generic`, `kubectl create serviceaccount` (protobuf
//! bodies) and `kubectl create|apply -f` (JSON), each authorised as pods are (verbs `get`,
//! `list`, `create`). A created secret is defaulted (type `Opaque`, `stringData` into `data`)
//! and validated as the API server validates it: a `kubernetes.io/dockerconfigjson` one needs
//! a `.dockerconfigjson` key holding a JSON object (`.dockercfg` for `kubernetes.io/dockercfg`),
//! `422 Invalid` otherwise. Every namespace has its `default` service account from the start,
//! as the service account controller makes it. A test may plant objects no API write would
//! make ([`ApiServer::add_secret`]: unvalidated).
//!
//! # The kubelet
//!
//! A created pod on the stand-in's node ([`NODE`]; pods without a node are scheduled there)
//! becomes a sandbox container (`--network none`: loopback only) and one container per
//! container of the spec joining it, as cri-dockerd makes them (on containerd, as its CRI
//! plugin does, in namespace `k8s.io`, the status saying `containerd://<ID>`): image (pulled
//! per `imagePullPolicy`, from loopback registries only), command and args, env (values,
//! `fieldRef`s, config map keys), hostPID, hostIPC, hostPath/emptyDir/configMap volumes, the
//! security context (user, read-only root, capabilities, no-new-privileges, privileged,
//! seccomp). Its status follows the containers, Events say what happened, deletion stops them
//! within the grace period, port-forwards connect inside the pod's network namespace (which
//! needs the privilege to `setns`: root), and everything goes when the stand-in is dropped.
//!
//! Not modelled: ephemeral and restartable init (sidecar) containers, probes (running is ready), resources,
//! hostPort, hostNetwork (refused: no container here shares the host's network), secret
//! volumes and the kubelet's use of image pull secrets, service account tokens (no token
//! secrets, no projected token volume), deletion of secrets and service accounts, PATCH and
//! PUT, watches of anything but pods, protobuf bodies but secrets' and service accounts'
//! (`kubectl create namespace`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::{Response, StatusCode};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kdbg_relay::status::{Status, StatusDetails};

pub mod access;
mod admission;
mod docker;
mod events;
mod fixtures;
mod kubelet;
mod logs;
mod pods;
pub mod portforward;
mod protobuf;
mod routes;
mod secrets;
mod selector;
mod setup;
pub mod spdy;
mod status;
mod store;
mod table;
mod watch;

pub use admission::{ENFORCE_LABEL, PodSecurity};
pub use docker::{POD_LABEL, SERVER_LABEL};
pub use fixtures::*;

/// The stand-in's node, on which its kubelet runs pods.
pub const NODE: &str = "stand-in-node";
/// The node's IP: this machine's loopback.
pub const NODE_IP: &str = "127.0.0.1";

/// The container runtime of a stand-in's node, on which its kubelet runs created pods.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NodeRuntime {
    /// The test Docker engine, as through cri-dockerd.
    #[default]
    Docker,
    /// The test containerd, as through its CRI plugin, in namespace `k8s.io`. Pods' images
    /// must be there ([`crate::import_to_containerd`]) or in a loopback registry.
    Containerd,
}

/// A response body: whole, or streamed (watches, logs).
pub(crate) type Body = UnsyncBoxBody<Bytes, std::convert::Infallible>;

/// What the server's connections and the kubelet's workers share.
pub(crate) struct Shared {
    pub store: Mutex<store::Store>,
    pub access: access::Shared,
    pub kubelet: kubelet::Kubelet,
    /// `127.0.0.1:PORT`.
    pub address: String,
}

/// The stand-in, serving until dropped; dropping it also removes every container its
/// kubelet made.
pub struct ApiServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Test users' tokens and grants, for the agents' reviews and the stand-in's own
    /// authorisation of pod writes.
    pub access: access::Shared,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.shared.kubelet.shutdown();
    }
}

impl ApiServer {
    /// Starts serving on a free port of 127.0.0.1, its kubelet running pods on Docker.
    pub fn start() -> ApiServer {
        ApiServer::start_on(NodeRuntime::Docker)
    }

    /// Starts serving on a free port of 127.0.0.1, its kubelet running pods on `runtime`.
    pub fn start_on(runtime: NodeRuntime) -> ApiServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let url = format!("http://{address}");
        let access: access::Shared = Arc::default();
        let server = format!(
            "{}-{}",
            std::process::id(),
            address.rsplit(':').next().unwrap()
        );
        let shared = Arc::new(Shared {
            store: Mutex::new(store::Store::new()),
            access: access.clone(),
            kubelet: kubelet::Kubelet::new(server, runtime),
            address,
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = shared.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                tokio::pin!(stopped);
                loop {
                    let accepted = tokio::select! {
                        _ = &mut stopped => return,
                        accepted = listener.accept() => accepted,
                    };
                    let Ok((socket, _)) = accepted else {
                        continue;
                    };
                    let shared = served.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let shared = shared.clone();
                            async move {
                                Ok::<_, std::convert::Infallible>(routes::serve(req, shared).await)
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
            access,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Adds namespace `name` (no-op if it exists).
    pub fn add_namespace(&self, name: &str) {
        let _ = self.shared.store.lock().unwrap().add_namespace(Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        });
    }

    /// Enforces Pod Security `level` on pods created in `namespace` (adding it if need be),
    /// as the namespace label [`ENFORCE_LABEL`] does in a cluster.
    pub fn set_pod_security(&self, namespace: &str, level: PodSecurity) {
        self.add_namespace(namespace);
        let mut store = self.shared.store.lock().unwrap();
        let revision = store.bump();
        let ns = store.namespaces.get_mut(namespace).expect("just added");
        ns.metadata
            .labels
            .get_or_insert_default()
            .insert(ENFORCE_LABEL.to_owned(), level.label().to_owned());
        ns.metadata.resource_version = Some(revision);
    }

    /// Pod `namespace/name` as the API serves it now.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Pod> {
        let store = self.shared.store.lock().unwrap();
        store
            .pods
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
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
        self.shared
            .store
            .lock()
            .unwrap()
            .config_maps
            .insert((namespace.to_owned(), name.to_owned()), map);
    }

    /// Registers (or replaces) a secret (and its namespace, `default` if it names none) as
    /// given, filling in what the API server would (uid, creation time, resource version, type
    /// `Opaque`). Nothing is validated: a test can plant what no create would take (e.g. a
    /// `kubernetes.io/dockerconfigjson` secret whose `.dockerconfigjson` is no JSON), as a
    /// secret written before a check existed, or by a fixture, would be.
    pub fn add_secret(&self, mut secret: Secret) {
        assert!(secret.metadata.name.is_some(), "a secret has a name");
        fill(&mut secret.metadata);
        secret.type_.get_or_insert_with(|| "Opaque".into());
        self.shared.store.lock().unwrap().put_secret(secret);
    }

    /// Registers (or replaces) a service account (and its namespace, `default` if it names
    /// none), e.g. one with `imagePullSecrets`, filling in uid, creation time and resource
    /// version.
    pub fn add_service_account(&self, mut account: ServiceAccount) {
        assert!(
            account.metadata.name.is_some(),
            "a service account has a name"
        );
        fill(&mut account.metadata);
        self.shared
            .store
            .lock()
            .unwrap()
            .put_service_account(account);
    }

    /// Secret `namespace/name` as the API serves it now.
    pub fn secret(&self, namespace: &str, name: &str) -> Option<Secret> {
        let store = self.shared.store.lock().unwrap();
        let key = (namespace.to_owned(), name.to_owned());
        store.secrets.get(&key).cloned()
    }

    /// Service account `namespace/name` as the API serves it now.
    pub fn service_account(&self, namespace: &str, name: &str) -> Option<ServiceAccount> {
        let store = self.shared.store.lock().unwrap();
        let key = (namespace.to_owned(), name.to_owned());
        store.service_accounts.get(&key).cloned()
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

    /// Removes a pod at once, as a forced deletion does (for a pod the stand-in's kubelet
    /// runs, the kubelet then removes its containers).
    pub fn remove_pod(&self, namespace: &str, name: &str) {
        self.shared
            .store
            .lock()
            .unwrap()
            .remove_pod(&(namespace.to_owned(), name.to_owned()), None);
    }

    /// Registers (or replaces) a pod (and its namespace), which no kubelet runs: its status
    /// is what the test says.
    pub fn add_pod(&self, mut pod: Pod) {
        assert!(pod.metadata.name.is_some(), "a pod has a name");
        pod.metadata
            .namespace
            .get_or_insert_with(|| "default".into());
        pod.metadata
            .uid
            .get_or_insert_with(|| format!("uid-{}", store::uid()));
        pod.metadata
            .creation_timestamp
            .get_or_insert_with(store::now);
        // As given otherwise: `spec.serviceAccountName` and `spec.imagePullSecrets` included
        // (no admission runs on a registered pod).
        self.shared.store.lock().unwrap().put_pod(pod);
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

/// What the API server fills in of a registered object's metadata: namespace (`default`), uid,
/// creation time.
fn fill(meta: &mut ObjectMeta) {
    meta.namespace.get_or_insert_with(|| "default".into());
    meta.uid.get_or_insert_with(store::uid);
    meta.creation_timestamp.get_or_insert_with(store::now);
}

pub(crate) fn json(code: StatusCode, value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(serde_json::to_vec(value).unwrap())));
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}

pub(crate) fn not_found(kind: &str, name: &str) -> Response<Full<Bytes>> {
    let mut status = Status::http_error(404, "NotFound", format!("{kind} \"{name}\" not found"));
    status.details = Some(StatusDetails {
        name: Some(name.to_owned()),
        kind: Some(kind.to_owned()),
        causes: Vec::new(),
    });
    json(StatusCode::NOT_FOUND, &status)
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
    /// A cluster whose kubeconfig's context uses `namespace`, its node's runtime Docker.
    pub fn new(namespace: &str) -> Cluster {
        Cluster::with_runtime(namespace, NodeRuntime::Docker)
    }

    /// A cluster whose kubeconfig's context uses `namespace`, its node's runtime containerd.
    pub fn on_containerd(namespace: &str) -> Cluster {
        Cluster::with_runtime(namespace, NodeRuntime::Containerd)
    }

    /// A cluster whose kubeconfig's context uses `namespace`, its node's runtime `runtime`.
    pub fn with_runtime(namespace: &str, runtime: NodeRuntime) -> Cluster {
        let api = ApiServer::start_on(runtime);
        // The agent DaemonSet's pod on the stand-in's node: port-forwards reach agents on
        // 127.0.0.1, at whichever port the test's agent listens on.
        api.add_pod(agent_pod(NODE, NODE_IP, true));
        api.add_namespace(namespace);
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

    /// The pods of `namespace` that label selector `selector` selects, as kubectl names them
    /// (`pod/NAME`), one per line.
    pub fn pods_selected(&self, namespace: &str, selector: &str) -> String {
        let out = self.kubectl(&["get", "pods", "-n", namespace, "-l", selector, "-o", "name"]);
        assert!(
            out.status.success(),
            "kubectl get pods -l {selector}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
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

#[cfg(test)]
mod tests;
