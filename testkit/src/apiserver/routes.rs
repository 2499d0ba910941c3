//! The stand-in's routes: which request goes where, and the reads (discovery, the OpenAPI
//! stub kubectl's field validation looks for, namespaces, nodes, pods, config maps, events;
//! secrets and service accounts are [`super::secrets`]'s).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    APIGroupList, APIResource, APIResourceList, APIVersions, ServerAddressByClientCIDR,
};
use k8s_openapi::apimachinery::pkg::version::Info;
use kdbg_relay::status::Status;

use super::selector::{EVENT_FIELDS, POD_FIELDS, Query};
use super::store::Store;
use super::{
    Body, NODE, NODE_IP, Shared, access, json, logs, not_found, pods, portforward, secrets, table,
    watch,
};

fn boxed(response: Response<Full<Bytes>>) -> Response<Body> {
    response.map(|b| b.boxed_unsync())
}

/// Answers `req`.
pub(crate) async fn serve(
    req: Request<hyper::body::Incoming>,
    shared: Arc<Shared>,
) -> Response<Body> {
    if access::is_review(&req) {
        return boxed(access::review(req, shared.access.clone()).await);
    }
    if let Some(target) = portforward::forward_to(&req, &shared) {
        return boxed(portforward::upgrade(req, target));
    }
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let (ns, name) = match parts.as_slice() {
        [
            "api",
            "v1",
            "namespaces",
            ns,
            "pods" | "secrets" | "serviceaccounts",
            rest @ ..,
        ] => ((*ns).to_owned(), rest.first().map(|n| (*n).to_owned())),
        _ => (String::new(), None),
    };
    let method = req.method().clone();
    let ask = secrets::Read {
        query: &query,
        table: table::asked(&req),
    };
    match (method, parts.as_slice()) {
        (Method::GET, ["api", "v1", resource @ ("secrets" | "serviceaccounts")]) => {
            boxed(secrets::get(&req, &shared, resource, None, None, ask))
        }
        (
            Method::GET,
            [
                "api",
                "v1",
                "namespaces",
                _,
                resource @ ("secrets" | "serviceaccounts"),
                rest @ ..,
            ],
        ) if rest.len() <= 1 => boxed(secrets::get(
            &req,
            &shared,
            resource,
            Some(&ns),
            name.as_deref(),
            ask,
        )),
        (Method::POST, ["api", "v1", "namespaces", _, "secrets"]) => {
            boxed(secrets::create_secret(req, shared.clone(), ns).await)
        }
        (Method::POST, ["api", "v1", "namespaces", _, "serviceaccounts"]) => {
            boxed(secrets::create_service_account(req, shared.clone(), ns).await)
        }
        (Method::GET, ["api", "v1", "pods"]) if watch::asked(&query) => {
            watch::pods(&shared, None, &query, table::asked(&req))
        }
        (Method::GET, ["api", "v1", "namespaces", _, "pods"]) if watch::asked(&query) => {
            watch::pods(&shared, Some(ns), &query, table::asked(&req))
        }
        (Method::POST, ["api", "v1", "namespaces", _, "pods"]) => {
            boxed(pods::create(req, shared.clone(), ns).await)
        }
        (Method::DELETE, ["api", "v1", "namespaces", _, "pods"]) => {
            boxed(pods::delete_collection(req, shared.clone(), ns).await)
        }
        (Method::DELETE, ["api", "v1", "namespaces", _, "pods", _]) => {
            boxed(pods::delete(req, shared.clone(), ns, name.unwrap_or_default()).await)
        }
        (Method::GET, ["api", "v1", "namespaces", _, "pods", pod, "log"]) => {
            let found = shared
                .store
                .lock()
                .unwrap()
                .pods
                .get(&(ns, (*pod).to_owned()))
                .cloned();
            match found {
                Some(found) => logs::serve(&found, &query, &shared),
                None => boxed(not_found("pods", pod)),
            }
        }
        (Method::POST, ["api", "v1", "namespaces"]) => boxed(create_namespace(req, &shared).await),
        (Method::GET, _) => {
            let ask = Ask {
                query: &query,
                table: table::asked(&req),
            };
            // Asked before the store is locked: the first time, the runtime is.
            let runtime = matches!(parts.as_slice(), ["api", "v1", "nodes", ..])
                .then(|| shared.kubelet.runtime_version().to_owned())
                .unwrap_or_default();
            let store = shared.store.lock().unwrap();
            boxed(read(&store, &parts, ask, &shared.address, &runtime))
        }
        _ => boxed(json(
            StatusCode::METHOD_NOT_ALLOWED,
            &Status::http_error(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            ),
        )),
    }
}

/// `POST /api/v1/namespaces`.
async fn create_namespace(
    req: Request<hyper::body::Incoming>,
    shared: &Shared,
) -> Response<Full<Bytes>> {
    let namespace: Namespace = match pods::body(req).await {
        Ok(namespace) => namespace,
        Err(refused) => return refused,
    };
    let name = namespace.metadata.name.clone().unwrap_or_default();
    if name.is_empty() {
        let status = Status::http_error(
            422,
            "Invalid",
            "Namespace \"\" is invalid: metadata.name: Required value: name or generateName is required",
        );
        return json(StatusCode::UNPROCESSABLE_ENTITY, &status);
    }
    match shared.store.lock().unwrap().add_namespace(namespace) {
        Some(made) => json(StatusCode::CREATED, &made),
        None => json(
            StatusCode::CONFLICT,
            &Status::http_error(
                409,
                "AlreadyExists",
                format!("namespaces \"{name}\" already exists"),
            ),
        ),
    }
}

/// A `PodList` of `items` at resource version `revision`.
pub(crate) fn pod_list(items: Vec<Pod>, revision: u64) -> serde_json::Value {
    serde_json::json!({
        "kind": "PodList", "apiVersion": "v1",
        "metadata": {"resourceVersion": revision.to_string()},
        "items": items,
    })
}

/// What a read asks besides its path: the URI query, and whether a table.
#[derive(Clone, Copy)]
struct Ask<'a> {
    query: &'a str,
    table: bool,
}

/// The pods of `namespace` (all when `None`) that the query selects, as a list or table.
fn pods_of(store: &Store, namespace: Option<&str>, ask: Ask<'_>) -> Response<Full<Bytes>> {
    let selection = match Query::parse(ask.query, POD_FIELDS) {
        Ok(selection) => selection,
        Err(e) => return pods::bad_request(e),
    };
    let items: Vec<Pod> = store
        .pods
        .iter()
        .filter(|((ns, _), pod)| namespace.is_none_or(|n| n == ns) && selection.pod(pod))
        .map(|(_, pod)| pod.clone())
        .collect();
    match ask.table {
        true => json(
            StatusCode::OK,
            &table::pods(&items, store.revision(), ask.query),
        ),
        false => json(StatusCode::OK, &pod_list(items, store.revision())),
    }
}

fn events_of(store: &Store, namespace: Option<&str>, ask: Ask<'_>) -> Response<Full<Bytes>> {
    let selection = match Query::parse(ask.query, EVENT_FIELDS) {
        Ok(selection) => selection,
        Err(e) => return pods::bad_request(e),
    };
    let items = super::events::selected(store, namespace, &selection);
    let revision = store.revision();
    if ask.table {
        return json(StatusCode::OK, &table::events(&items, revision, ask.query));
    }
    json(
        StatusCode::OK,
        &serde_json::json!({
            "kind": "EventList", "apiVersion": "v1",
            "metadata": {"resourceVersion": revision.to_string()},
            "items": items,
        }),
    )
}

/// A GET of `parts`; `runtime` is the node's `containerRuntimeVersion`.
fn read(
    store: &Store,
    parts: &[&str],
    ask: Ask<'_>,
    address: &str,
    runtime: &str,
) -> Response<Full<Bytes>> {
    let revision = store.revision();
    match parts {
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
        ["api", "v1"] => json(StatusCode::OK, &resources()),
        ["openapi", "v3"] => json(
            StatusCode::OK,
            &serde_json::json!({"paths": {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=stand-in"}}}),
        ),
        ["openapi", "v3", "api", "v1"] => json(StatusCode::OK, &openapi()),
        ["api", "v1", "namespaces"] => {
            let items: Vec<&Namespace> = store.namespaces.values().collect();
            if ask.table {
                return json(
                    StatusCode::OK,
                    &table::namespaces(&items, revision, ask.query),
                );
            }
            json(
                StatusCode::OK,
                &serde_json::json!({"kind": "NamespaceList", "apiVersion": "v1",
                    "metadata": {"resourceVersion": store.revision().to_string()}, "items": items}),
            )
        }
        ["api", "v1", "namespaces", ns] => match store.namespaces.get(*ns) {
            Some(namespace) if ask.table => json(
                StatusCode::OK,
                &table::namespaces(&[namespace], revision, ask.query),
            ),
            Some(namespace) => json(StatusCode::OK, namespace),
            None => not_found("namespaces", ns),
        },
        ["api", "v1", "nodes"] => json(
            StatusCode::OK,
            &serde_json::json!({"kind": "NodeList", "apiVersion": "v1", "metadata": {}, "items": [node(runtime)]}),
        ),
        ["api", "v1", "nodes", name] if *name == NODE => json(StatusCode::OK, &node(runtime)),
        ["api", "v1", "nodes", name] => not_found("nodes", name),
        ["api", "v1", "pods"] => pods_of(store, None, ask),
        ["api", "v1", "namespaces", ns, "pods"] => pods_of(store, Some(ns), ask),
        ["api", "v1", "namespaces", ns, "pods", name] => {
            match store.pods.get(&((*ns).to_owned(), (*name).to_owned())) {
                Some(pod) if ask.table => json(
                    StatusCode::OK,
                    &table::pods(std::slice::from_ref(pod), revision, ask.query),
                ),
                Some(pod) => json(StatusCode::OK, pod),
                None => not_found("pods", name),
            }
        }
        ["api", "v1", "events"] => events_of(store, None, ask),
        ["api", "v1", "namespaces", ns, "events"] => events_of(store, Some(ns), ask),
        ["api", "v1", "namespaces", ns, "configmaps", name] => {
            match store
                .config_maps
                .get(&((*ns).to_owned(), (*name).to_owned()))
            {
                Some(map) => json(StatusCode::OK, map),
                None => not_found("configmaps", name),
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

/// Core v1's resources, as discovery lists them.
fn resources() -> APIResourceList {
    let resource =
        |name: &str, kind: &str, namespaced: bool, verbs: &[&str], short: &[&str]| APIResource {
            name: name.into(),
            singular_name: if name.contains('/') {
                String::new()
            } else {
                kind.to_lowercase()
            },
            namespaced,
            kind: kind.into(),
            verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
            short_names: (!short.is_empty())
                .then(|| short.iter().map(|s| (*s).to_owned()).collect()),
            ..APIResource::default()
        };
    let pod_verbs = [
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "watch",
    ];
    APIResourceList {
        group_version: "v1".into(),
        resources: vec![
            resource("pods", "Pod", true, &pod_verbs, &["po"]),
            resource("pods/log", "Pod", true, &["get"], &[]),
            resource(
                "pods/portforward",
                "PodPortForwardOptions",
                true,
                &["create", "get"],
                &[],
            ),
            resource(
                "namespaces",
                "Namespace",
                false,
                &["create", "get", "list"],
                &["ns"],
            ),
            resource("nodes", "Node", false, &["get", "list"], &["no"]),
            resource("events", "Event", true, &["get", "list"], &["ev"]),
            resource("configmaps", "ConfigMap", true, &["get"], &["cm"]),
            resource("secrets", "Secret", true, &["create", "get", "list"], &[]),
            resource(
                "serviceaccounts",
                "ServiceAccount",
                true,
                &["create", "get", "list"],
                &["sa"],
            ),
        ],
    }
}

/// Enough of core v1's OpenAPI v3 document for kubectl to see that the server validates
/// fields itself (`fieldValidation` on the kinds' PATCH), so that it sends objects without
/// validating them against a schema it would have to download.
fn openapi() -> serde_json::Value {
    let patch = |kind: &str| {
        serde_json::json!({"patch": {
            "x-kubernetes-group-version-kind": {"group": "", "version": "v1", "kind": kind},
            "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
            "responses": {}
        }})
    };
    serde_json::json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": {
            "/api/v1/namespaces/{namespace}/pods/{name}": patch("Pod"),
            "/api/v1/namespaces/{name}": patch("Namespace"),
            "/api/v1/namespaces/{namespace}/secrets/{name}": patch("Secret"),
            "/api/v1/namespaces/{namespace}/serviceaccounts/{name}": patch("ServiceAccount"),
        }
    })
}

/// The stand-in's node: this machine, its runtime (`runtime`, its version) the test Docker
/// engine or the test containerd.
fn node(runtime: &str) -> serde_json::Value {
    serde_json::json!({
        "kind": "Node", "apiVersion": "v1",
        "metadata": {
            "name": NODE, "uid": "stand-in-node-uid", "resourceVersion": "1",
            "labels": {"kubernetes.io/hostname": NODE, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}
        },
        "spec": {"podCIDR": "10.244.0.0/16"},
        "status": {
            "addresses": [{"type": "InternalIP", "address": NODE_IP}, {"type": "Hostname", "address": NODE}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}],
            "nodeInfo": {
                "containerRuntimeVersion": runtime, "kubeletVersion": "v1.33.0-kdbg-stand-in",
                "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64",
                "kernelVersion": "", "osImage": "kdbg stand-in", "machineID": "", "systemUUID": "", "bootID": ""
            }
        }
    })
}
