//! Writing pods as the API server does: `POST` (authorisation, the namespace, validation,
//! Pod Security admission, then defaults, metadata and a Pending status), `DELETE` (graceful:
//! the pod gets its `deletionTimestamp` and goes when the kubelet has stopped its containers;
//! immediate for a grace period of 0, a pod on no node or a finished one) and
//! `deletecollection`.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kdbg_relay::status::{Status, StatusCause, StatusDetails};

use super::kubelet::Kubelet;
use super::selector::{POD_FIELDS, Query};
use super::store::{key_of, now, random};
use super::{Shared, json, not_found};

/// The characters the API server's name generator uses (no vowels, no look-alikes).
const GENERATED: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// `POST /api/v1/namespaces/{namespace}/pods`.
pub(crate) async fn create(
    req: Request<hyper::body::Incoming>,
    shared: Arc<Shared>,
    namespace: String,
) -> Response<Full<Bytes>> {
    if let Some(refused) =
        super::access::authorize(&shared.access, &req, "create", "pods", &namespace, "")
    {
        return refused;
    }
    let dry_run = req.uri().query().unwrap_or("").contains("dryRun=");
    let mut pod: Pod = match body(req).await {
        Ok(pod) => pod,
        Err(refused) => return refused,
    };
    if pod
        .metadata
        .namespace
        .as_deref()
        .is_some_and(|ns| ns != namespace)
    {
        return bad_request(
            "the namespace of the provided object does not match the namespace sent on the request"
                .into(),
        );
    }
    pod.metadata.namespace = Some(namespace.clone());
    if pod.metadata.name.as_deref().unwrap_or("").is_empty()
        && let Some(prefix) = pod
            .metadata
            .generate_name
            .as_deref()
            .filter(|p| !p.is_empty())
    {
        pod.metadata.name = Some(format!("{prefix}{}", suffix()));
    }
    let mut store = shared.store.lock().unwrap();
    let Some(ns) = store.namespaces.get(&namespace) else {
        return not_found("namespaces", &namespace);
    };
    let name = pod.metadata.name.clone().unwrap_or_default();
    // The ServiceAccount admission plugin (mutating: before validation): the pod's service
    // account (`default` if it names none) must exist, and its image pull secrets are the
    // pod's if the pod has none.
    let spec = pod.spec.get_or_insert_default();
    let account = spec
        .service_account_name
        .clone()
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| "default".into());
    let Some(found) = store
        .service_accounts
        .get(&(namespace.clone(), account.clone()))
    else {
        let mut status = Status::http_error(
            403,
            "Forbidden",
            format!(
                "pods \"{name}\" is forbidden: error looking up service account {namespace}/{account}: serviceaccount \"{account}\" not found"
            ),
        );
        status.details = Some(details("pods", &name));
        return json(StatusCode::FORBIDDEN, &status);
    };
    if spec.image_pull_secrets.as_ref().is_none_or(Vec::is_empty)
        && let Some(secrets) = found.image_pull_secrets.clone().filter(|s| !s.is_empty())
    {
        spec.image_pull_secrets = Some(secrets);
    }
    spec.service_account_name = Some(account);
    let errors = validate(&pod);
    if !errors.is_empty() {
        return invalid("Pod", &name, errors);
    }
    if let Some(refusal) = super::admission::refusal(ns.metadata.labels.as_ref(), &pod) {
        let mut status = Status::http_error(403, "Forbidden", refusal);
        status.details = Some(details("pods", &name));
        return json(StatusCode::FORBIDDEN, &status);
    }
    if store.pods.contains_key(&key_of(&pod)) {
        let mut status = Status::http_error(
            409,
            "AlreadyExists",
            format!("pods \"{name}\" already exists"),
        );
        status.details = Some(details("pods", &name));
        return json(StatusCode::CONFLICT, &status);
    }
    default(&mut pod);
    let meta = &mut pod.metadata;
    meta.uid = Some(super::store::uid());
    meta.creation_timestamp = Some(now());
    meta.generation = Some(1);
    pod.status = Some(PodStatus {
        phase: Some("Pending".into()),
        qos_class: Some(super::status::qos_class(&pod)),
        ..PodStatus::default()
    });
    if dry_run {
        return json(StatusCode::CREATED, &pod);
    }
    let pod = store.put_pod(pod);
    drop(store);
    if Kubelet::runs(&pod) {
        shared.kubelet.admit(&shared, pod.clone());
    }
    json(StatusCode::CREATED, &pod)
}

/// The 5 random characters the API server's name generator appends to a `generateName`.
pub(crate) fn suffix() -> String {
    let mut n = random();
    (0..5)
        .map(|_| {
            let c = GENERATED[(n % GENERATED.len() as u64) as usize];
            n /= GENERATED.len() as u64;
            char::from(c)
        })
        .collect()
}

/// A request's JSON body as a `T`, or the API server's refusal. (The stand-in reads JSON only:
/// kubectl's typed clients, e.g. `kubectl create namespace`, send protobuf.)
pub(crate) async fn body<T: serde::de::DeserializeOwned>(
    req: Request<hyper::body::Incoming>,
) -> Result<T, Response<Full<Bytes>>> {
    let media = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    if !media.contains("json") {
        let message = format!(
            "the body of the request was in an unknown format - accepted media types include: application/json (the stand-in reads no {media})"
        );
        let status = Status::http_error(415, "UnsupportedMediaType", message);
        return Err(json(StatusCode::UNSUPPORTED_MEDIA_TYPE, &status));
    }
    let Ok(body) = req.into_body().collect().await else {
        return Err(bad_request("unreadable body".into()));
    };
    serde_json::from_slice(&body.to_bytes()).map_err(|e| {
        bad_request(format!(
            "the body of the request was in an unknown format: {e}"
        ))
    })
}

/// The API server's defaults for what a pod leaves out.
fn default(pod: &mut Pod) {
    let spec = pod.spec.get_or_insert_default();
    spec.restart_policy.get_or_insert_with(|| "Always".into());
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.dns_policy.get_or_insert_with(|| "ClusterFirst".into());
    spec.scheduler_name
        .get_or_insert_with(|| "default-scheduler".into());
    spec.security_context.get_or_insert_default();
    spec.enable_service_links.get_or_insert(true);
    spec.priority.get_or_insert(0);
    spec.service_account_name
        .get_or_insert_with(|| "default".into());
    // v1's deprecated alias, which the API server keeps equal.
    spec.service_account = spec.service_account_name.clone();
    // The API server defaults every container, init containers too.
    let init = spec.init_containers.iter_mut().flatten();
    for c in init.chain(&mut spec.containers) {
        let image = c.image.clone().unwrap_or_default();
        c.image_pull_policy.get_or_insert_with(|| {
            let last = image.rsplit('/').next().unwrap_or("");
            match last.split_once(':') {
                _ if last.contains('@') => "IfNotPresent".into(),
                Some((_, "latest")) | None => "Always".into(),
                Some(_) => "IfNotPresent".into(),
            }
        });
        c.termination_message_path
            .get_or_insert_with(|| "/dev/termination-log".into());
        c.termination_message_policy
            .get_or_insert_with(|| "File".into());
        for port in c.ports.iter_mut().flatten() {
            port.protocol.get_or_insert_with(|| "TCP".into());
        }
    }
}

/// A field error: the field, its cause's reason, and the message after the field.
pub(crate) type FieldError = (String, &'static str, String);

/// What the API server's validation says of `pod` (a part of it: names, containers, images,
/// volume references, the restart policy).
fn validate(pod: &Pod) -> Vec<FieldError> {
    let mut errors = Vec::new();
    match pod.metadata.name.as_deref() {
        None | Some("") => errors.push((
            "metadata.name".into(),
            "FieldValueRequired",
            "Required value: name or generateName is required".into(),
        )),
        Some(name) => errors
            .extend(dns_subdomain(name).map(|m| ("metadata.name".into(), "FieldValueInvalid", m))),
    }
    let Some(spec) = &pod.spec else {
        errors.push((
            "spec.containers".into(),
            "FieldValueRequired",
            "Required value".into(),
        ));
        return errors;
    };
    if spec.containers.is_empty() {
        errors.push((
            "spec.containers".into(),
            "FieldValueRequired",
            "Required value".into(),
        ));
    }
    let volumes: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    for (i, c) in spec.containers.iter().enumerate() {
        let at = format!("spec.containers[{i}]");
        if c.name.is_empty() {
            errors.push((
                format!("{at}.name"),
                "FieldValueRequired",
                "Required value".into(),
            ));
        } else if let Some(m) = dns_label(&c.name) {
            errors.push((format!("{at}.name"), "FieldValueInvalid", m));
        } else if spec.containers[..i].iter().any(|o| o.name == c.name) {
            errors.push((
                format!("{at}.name"),
                "FieldValueDuplicate",
                format!("Duplicate value: {:?}", c.name),
            ));
        }
        if c.image.as_deref().unwrap_or("").trim().is_empty() {
            errors.push((
                format!("{at}.image"),
                "FieldValueRequired",
                "Required value".into(),
            ));
        }
        for (j, m) in c.volume_mounts.iter().flatten().enumerate() {
            if !volumes.contains(&m.name.as_str()) {
                errors.push((
                    format!("{at}.volumeMounts[{j}].name"),
                    "FieldValueNotFound",
                    format!("Not found: {:?}", m.name),
                ));
            }
        }
    }
    if let Some(policy) = &spec.restart_policy
        && !["Always", "OnFailure", "Never"].contains(&policy.as_str())
    {
        errors.push((
            "spec.restartPolicy".into(),
            "FieldValueNotSupported",
            format!("Unsupported value: {policy:?}: supported values: \"Always\", \"OnFailure\", \"Never\""),
        ));
    }
    errors
}

pub(crate) fn dns_subdomain(name: &str) -> Option<String> {
    if name.len() > 253 {
        return Some(format!(
            "Invalid value: {name:?}: must be no more than 253 characters"
        ));
    }
    let label = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    (!name.split('.').all(label)).then(|| format!(
        "Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    ))
}

fn dns_label(name: &str) -> Option<String> {
    if name.len() > 63 {
        return Some(format!(
            "Invalid value: {name:?}: must be no more than 63 characters"
        ));
    }
    (name.contains('.') || dns_subdomain(name).is_some()).then(|| format!(
        "Invalid value: {name:?}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
    ))
}

/// `422 Invalid` of a `kind` (`Pod`) named `name`, as the API server words it.
pub(crate) fn invalid(kind: &str, name: &str, errors: Vec<FieldError>) -> Response<Full<Bytes>> {
    let said: Vec<String> = errors.iter().map(|(f, _, m)| format!("{f}: {m}")).collect();
    let listed = if said.len() == 1 {
        said[0].clone()
    } else {
        format!("[{}]", said.join(", "))
    };
    let mut status = Status::http_error(
        422,
        "Invalid",
        format!("{kind} \"{name}\" is invalid: {listed}"),
    );
    let mut details = details(kind, name);
    details.causes = errors
        .into_iter()
        .map(|(field, reason, message)| StatusCause {
            reason: Some(reason.into()),
            message: Some(message),
            field: Some(field),
        })
        .collect();
    status.details = Some(details);
    json(StatusCode::UNPROCESSABLE_ENTITY, &status)
}

pub(crate) fn details(kind: &str, name: &str) -> StatusDetails {
    StatusDetails {
        name: (!name.is_empty()).then(|| name.to_owned()),
        kind: Some(kind.to_owned()),
        causes: Vec::new(),
    }
}

pub(crate) fn bad_request(message: String) -> Response<Full<Bytes>> {
    json(
        StatusCode::BAD_REQUEST,
        &Status::http_error(400, "BadRequest", message),
    )
}

/// What a `DELETE` asks for: its grace period (`?gracePeriodSeconds=`, else the body's
/// DeleteOptions', else none: the pod's own) and the UID its DeleteOptions' preconditions
/// require.
async fn delete_options(req: Request<hyper::body::Incoming>) -> (Option<i64>, Option<String>) {
    let query = req.uri().query().unwrap_or("").to_owned();
    let from_query = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "gracePeriodSeconds")
        .and_then(|(_, v)| v.parse().ok());
    let body = match req.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return (from_query, None),
    };
    let options: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let grace = from_query.or_else(|| options.get("gracePeriodSeconds")?.as_i64());
    let uid = options
        .pointer("/preconditions/uid")
        .and_then(|u| u.as_str())
        .map(str::to_owned);
    (grace, uid)
}

/// `DELETE /api/v1/namespaces/{namespace}/pods/{name}`.
pub(crate) async fn delete(
    req: Request<hyper::body::Incoming>,
    shared: Arc<Shared>,
    namespace: String,
    name: String,
) -> Response<Full<Bytes>> {
    if let Some(refused) =
        super::access::authorize(&shared.access, &req, "delete", "pods", &namespace, &name)
    {
        return refused;
    }
    let (grace, uid) = delete_options(req).await;
    let key = (namespace, name.clone());
    let found = shared.store.lock().unwrap().pods.get(&key).cloned();
    if let (Some(wanted), Some(pod)) = (uid, &found) {
        let actual = pod.metadata.uid.clone().unwrap_or_default();
        if wanted != actual {
            let message = format!(
                "Precondition failed: UID in precondition: {wanted}, UID in object meta: {actual}"
            );
            return json(
                StatusCode::CONFLICT,
                &Status::http_error(409, "Conflict", message),
            );
        }
    }
    match delete_one(&shared, &key, grace) {
        Some(pod) => json(StatusCode::OK, &pod),
        None => not_found("pods", &name),
    }
}

/// `DELETE /api/v1/namespaces/{namespace}/pods?labelSelector=...`: a PodList of those deleted.
pub(crate) async fn delete_collection(
    req: Request<hyper::body::Incoming>,
    shared: Arc<Shared>,
    namespace: String,
) -> Response<Full<Bytes>> {
    if let Some(refused) = super::access::authorize(
        &shared.access,
        &req,
        "deletecollection",
        "pods",
        &namespace,
        "",
    ) {
        return refused;
    }
    let query = match Query::parse(req.uri().query().unwrap_or(""), POD_FIELDS) {
        Ok(query) => query,
        Err(e) => return bad_request(e),
    };
    let (grace, _) = delete_options(req).await;
    let keys: Vec<_> = {
        let store = shared.store.lock().unwrap();
        store
            .pods
            .iter()
            .filter(|((ns, _), pod)| *ns == namespace && query.pod(pod))
            .map(|(key, _)| key.clone())
            .collect()
    };
    let deleted: Vec<Pod> = keys
        .iter()
        .filter_map(|key| delete_one(&shared, key, grace))
        .collect();
    let revision = shared.store.lock().unwrap().revision();
    json(StatusCode::OK, &super::routes::pod_list(deleted, revision))
}

/// Deletes pod `key` with grace period `grace` (else the pod's): the pod as answered.
fn delete_one(shared: &Arc<Shared>, key: &(String, String), grace: Option<i64>) -> Option<Pod> {
    let mut store = shared.store.lock().unwrap();
    let pod = store.pods.get(key)?.clone();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let grace = grace
        .or(spec.termination_grace_period_seconds)
        .unwrap_or(30)
        .max(0);
    let finished = matches!(phase, Some("Succeeded" | "Failed"));
    let worker = shared.kubelet.has(&uid);
    if grace == 0 || finished || spec.node_name.is_none() || !worker {
        let pod = store.remove_pod(key, None);
        drop(store);
        shared.kubelet.delete(&uid, 0);
        return pod;
    }
    if pod.metadata.deletion_timestamp.is_none() {
        store.update_pod(key, &uid, |pod| {
            pod.metadata.deletion_timestamp = Some(now());
            pod.metadata.deletion_grace_period_seconds = Some(grace);
            true
        });
    }
    let pod = store.pods.get(key).cloned();
    drop(store);
    shared
        .kubelet
        .delete(&uid, u32::try_from(grace).unwrap_or(u32::MAX));
    pod
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated_as_the_api_server_validates_them() {
        assert_eq!(dns_subdomain("web-1.a"), None);
        assert!(
            dns_subdomain("Web")
                .unwrap()
                .contains("a lowercase RFC 1123 subdomain")
        );
        assert!(
            dns_subdomain(&"a".repeat(254))
                .unwrap()
                .contains("no more than 253")
        );
        assert!(dns_label("a.b").unwrap().contains("RFC 1123 label"));
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {},
            "spec": {"containers": [{"name": "a", "image": ""}, {"name": "a", "image": "x",
                "volumeMounts": [{"name": "v", "mountPath": "/v"}]}]}
        }))
        .unwrap();
        let fields: Vec<String> = validate(&pod).into_iter().map(|(f, _, _)| f).collect();
        assert_eq!(
            fields,
            [
                "metadata.name",
                "spec.containers[0].image",
                "spec.containers[1].name",
                "spec.containers[1].volumeMounts[0].name"
            ]
        );
    }
}
