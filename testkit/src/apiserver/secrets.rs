//! Secrets and service accounts as the API server serves them: reads (one, a namespace's, every
//! namespace's; lists or tables) and creates (JSON from `kubectl create -f`/`apply`, protobuf
//! from `kubectl create secret`/`kubectl create serviceaccount`), each authorised
//! ([`super::access::authorize`]), a secret validated as `ValidateSecret` does (names, keys,
//! the keys and JSON each type requires) and defaulted (type `Opaque`, `stringData` into
//! `data`).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kdbg_relay::status::Status;

use super::pods::{FieldError, bad_request, details, dns_subdomain, invalid};
use super::protobuf::{self, Kind};
use super::selector::Selector;
use super::store::{Key, meta_key, now, uid};
use super::{Shared, json, not_found, table};

/// The most a secret's data may hold, in bytes (`core.MaxSecretSize`).
const MAX_SECRET_SIZE: usize = 1024 * 1024;

/// What a read asks: the URI query and whether a table.
#[derive(Clone, Copy)]
pub(crate) struct Read<'a> {
    pub query: &'a str,
    pub table: bool,
}

/// `GET` of `resource` (`secrets`, `serviceaccounts`) in `namespace` (`None`: every
/// namespace), of `name` or (`None`) a list.
pub(crate) fn get(
    req: &Request<hyper::body::Incoming>,
    shared: &Shared,
    resource: &str,
    namespace: Option<&str>,
    name: Option<&str>,
    ask: Read<'_>,
) -> Response<Full<Bytes>> {
    let verb = if name.is_some() { "get" } else { "list" };
    let ns = namespace.unwrap_or("");
    let name_said = name.unwrap_or("");
    if let Some(refused) =
        super::access::authorize(&shared.access, req, verb, resource, ns, name_said)
    {
        return refused;
    }
    let store = shared.store.lock().unwrap();
    let revision = store.revision();
    if let Some(name) = name {
        let key = (ns.to_owned(), name.to_owned());
        return match resource {
            "secrets" => match store.secrets.get(&key) {
                Some(s) if ask.table => {
                    json(StatusCode::OK, &table::secrets(&[s], revision, ask.query))
                }
                Some(s) => json(StatusCode::OK, s),
                None => not_found(resource, name),
            },
            _ => match store.service_accounts.get(&key) {
                Some(a) if ask.table => json(
                    StatusCode::OK,
                    &table::service_accounts(&[a], revision, ask.query),
                ),
                Some(a) => json(StatusCode::OK, a),
                None => not_found(resource, name),
            },
        };
    }
    let selected = match selection(ask.query, resource) {
        Ok(selected) => selected,
        Err(e) => return bad_request(e),
    };
    let wanted = |key: &Key, meta: &ObjectMeta, type_: Option<&str>| {
        namespace.is_none_or(|n| n == key.0) && selected(meta, type_)
    };
    match resource {
        "secrets" => {
            let items: Vec<&Secret> = store
                .secrets
                .iter()
                .filter(|(k, s)| wanted(k, &s.metadata, s.type_.as_deref()))
                .map(|(_, s)| s)
                .collect();
            if ask.table {
                return json(StatusCode::OK, &table::secrets(&items, revision, ask.query));
            }
            json(StatusCode::OK, &list("SecretList", &items, revision))
        }
        _ => {
            let items: Vec<&ServiceAccount> = store
                .service_accounts
                .iter()
                .filter(|(k, a)| wanted(k, &a.metadata, None))
                .map(|(_, a)| a)
                .collect();
            if ask.table {
                return json(
                    StatusCode::OK,
                    &table::service_accounts(&items, revision, ask.query),
                );
            }
            json(
                StatusCode::OK,
                &list("ServiceAccountList", &items, revision),
            )
        }
    }
}

fn list(kind: &str, items: &[impl serde::Serialize], revision: u64) -> serde_json::Value {
    serde_json::json!({
        "kind": kind, "apiVersion": "v1",
        "metadata": {"resourceVersion": revision.to_string()},
        "items": items,
    })
}

/// The label and field selectors of `query`, as a test of an object's metadata and type.
#[allow(clippy::type_complexity)]
fn selection(
    query: &str,
    resource: &str,
) -> Result<Box<dyn Fn(&ObjectMeta, Option<&str>) -> bool>, String> {
    let supported: &[&str] = match resource {
        "secrets" => &["metadata.name", "metadata.namespace", "type"],
        _ => &["metadata.name", "metadata.namespace"],
    };
    let (mut labels, mut fields) = (Selector::default(), Selector::default());
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "labelSelector" => labels = Selector::labels(&value)?,
            "fieldSelector" => fields = Selector::fields(&value, supported)?,
            _ => {}
        }
    }
    Ok(Box::new(move |meta: &ObjectMeta, type_: Option<&str>| {
        let of = meta.labels.as_ref();
        labels.matches(|k| of.and_then(|l| l.get(k)).cloned())
            && fields.matches(|k| match k {
                "metadata.name" => Some(meta.name.clone().unwrap_or_default()),
                "metadata.namespace" => Some(meta.namespace.clone().unwrap_or_default()),
                "type" => Some(type_.unwrap_or_default().to_owned()),
                _ => None,
            })
    }))
}

/// A create's body as a `T`: JSON, or protobuf as kubectl's typed clients send it.
async fn object<T: serde::de::DeserializeOwned>(
    req: Request<hyper::body::Incoming>,
    kind: Kind,
) -> Result<T, Response<Full<Bytes>>> {
    let media = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    let protobuf = media.contains("application/vnd.kubernetes.protobuf");
    if !protobuf && !media.contains("json") {
        let message = format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/vnd.kubernetes.protobuf (not {media})"
        );
        let status = Status::http_error(415, "UnsupportedMediaType", message);
        return Err(json(StatusCode::UNSUPPORTED_MEDIA_TYPE, &status));
    }
    let Ok(body) = req.into_body().collect().await else {
        return Err(bad_request("unreadable body".into()));
    };
    let body = body.to_bytes();
    let unknown = |e: String| {
        bad_request(format!(
            "the body of the request was in an unknown format: {e}"
        ))
    };
    let value = if protobuf {
        protobuf::decode(&body, kind).map_err(unknown)?
    } else {
        serde_json::from_slice(&body).map_err(|e| unknown(e.to_string()))?
    };
    serde_json::from_value(value).map_err(|e| unknown(e.to_string()))
}

/// What a create starts with: the namespace and name settled (`generateName` too); the
/// refusal if the object names another namespace.
fn place(meta: &mut ObjectMeta, namespace: &str) -> Option<Response<Full<Bytes>>> {
    if meta.namespace.as_deref().is_some_and(|ns| ns != namespace) {
        return Some(bad_request(
            "the namespace of the provided object does not match the namespace sent on the request"
                .into(),
        ));
    }
    meta.namespace = Some(namespace.to_owned());
    if meta.name.as_deref().unwrap_or("").is_empty()
        && let Some(prefix) = meta.generate_name.as_deref().filter(|p| !p.is_empty())
    {
        meta.name = Some(format!("{prefix}{}", super::pods::suffix()));
    }
    None
}

/// The API server's metadata for a new object.
fn stamp(meta: &mut ObjectMeta) {
    meta.uid = Some(uid());
    meta.creation_timestamp = Some(now());
}

/// `metadata.name`'s errors.
fn name_errors(meta: &ObjectMeta) -> Vec<FieldError> {
    match meta.name.as_deref() {
        None | Some("") => vec![(
            "metadata.name".into(),
            "FieldValueRequired",
            "Required value: name or generateName is required".into(),
        )],
        Some(name) => dns_subdomain(name)
            .map(|m| ("metadata.name".into(), "FieldValueInvalid", m))
            .into_iter()
            .collect(),
    }
}

/// `409 AlreadyExists`.
fn exists(resource: &str, name: &str) -> Response<Full<Bytes>> {
    let mut status = Status::http_error(
        409,
        "AlreadyExists",
        format!("{resource} \"{name}\" already exists"),
    );
    status.details = Some(details(resource, name));
    json(StatusCode::CONFLICT, &status)
}

/// `POST /api/v1/namespaces/{namespace}/secrets`.
pub(crate) async fn create_secret(
    req: Request<hyper::body::Incoming>,
    shared: Arc<Shared>,
    namespace: String,
) -> Response<Full<Bytes>> {
    if let Some(refused) =
        super::access::authorize(&shared.access, &req, "create", "secrets", &namespace, "")
    {
        return refused;
    }
    let dry_run = req.uri().query().unwrap_or("").contains("dryRun=");
    let mut secret: Secret = match object(req, Kind::Secret).await {
        Ok(secret) => secret,
        Err(refused) => return refused,
    };
    if let Some(refused) = place(&mut secret.metadata, &namespace) {
        return refused;
    }
    let mut store = shared.store.lock().unwrap();
    if !store.namespaces.contains_key(&namespace) {
        return not_found("namespaces", &namespace);
    }
    // Defaults, and the conversion from v1: `stringData` is written over `data`.
    secret.type_.get_or_insert_with(|| "Opaque".into());
    if let Some(strings) = secret.string_data.take() {
        let data = secret.data.get_or_insert_with(BTreeMap::new);
        for (key, value) in strings {
            data.insert(key, ByteString(value.into_bytes()));
        }
    }
    let name = secret.metadata.name.clone().unwrap_or_default();
    let errors = validate_secret(&secret);
    if !errors.is_empty() {
        return invalid("Secret", &name, errors);
    }
    if store.secrets.contains_key(&meta_key(&secret.metadata)) {
        return exists("secrets", &name);
    }
    stamp(&mut secret.metadata);
    if dry_run {
        return json(StatusCode::CREATED, &secret);
    }
    json(StatusCode::CREATED, &store.put_secret(secret))
}

/// `POST /api/v1/namespaces/{namespace}/serviceaccounts`.
pub(crate) async fn create_service_account(
    req: Request<hyper::body::Incoming>,
    shared: Arc<Shared>,
    namespace: String,
) -> Response<Full<Bytes>> {
    if let Some(refused) = super::access::authorize(
        &shared.access,
        &req,
        "create",
        "serviceaccounts",
        &namespace,
        "",
    ) {
        return refused;
    }
    let dry_run = req.uri().query().unwrap_or("").contains("dryRun=");
    let mut account: ServiceAccount = match object(req, Kind::ServiceAccount).await {
        Ok(account) => account,
        Err(refused) => return refused,
    };
    if let Some(refused) = place(&mut account.metadata, &namespace) {
        return refused;
    }
    let mut store = shared.store.lock().unwrap();
    if !store.namespaces.contains_key(&namespace) {
        return not_found("namespaces", &namespace);
    }
    let name = account.metadata.name.clone().unwrap_or_default();
    let errors = name_errors(&account.metadata);
    if !errors.is_empty() {
        return invalid("ServiceAccount", &name, errors);
    }
    if store
        .service_accounts
        .contains_key(&meta_key(&account.metadata))
    {
        return exists("serviceaccounts", &name);
    }
    stamp(&mut account.metadata);
    if dry_run {
        return json(StatusCode::CREATED, &account);
    }
    json(StatusCode::CREATED, &store.put_service_account(account))
}

/// What `ValidateSecret` says of `secret` (defaulted).
pub(crate) fn validate_secret(secret: &Secret) -> Vec<FieldError> {
    let mut errors = name_errors(&secret.metadata);
    let empty = BTreeMap::new();
    let data = secret.data.as_ref().unwrap_or(&empty);
    let mut size = 0;
    for (key, value) in data {
        size += value.0.len();
        let valid = !key.is_empty()
            && key.len() <= 253
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            && key != "."
            && key != ".."
            && !key.starts_with("..");
        if !valid {
            errors.push((
                format!("data[{key}]"),
                "FieldValueInvalid",
                format!(
                    "Invalid value: {key:?}: a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
                ),
            ));
        }
    }
    if size > MAX_SECRET_SIZE {
        errors.push((
            "data".into(),
            "FieldValueTooLong",
            format!("Too long: may not be more than {MAX_SECRET_SIZE} bytes"),
        ));
    }
    let required = |key: &str| {
        (
            format!("data[{key}]"),
            "FieldValueRequired",
            "Required value".to_owned(),
        )
    };
    match secret.type_.as_deref().unwrap_or("Opaque") {
        kind @ ("kubernetes.io/dockercfg" | "kubernetes.io/dockerconfigjson") => {
            let key = if kind == "kubernetes.io/dockercfg" {
                ".dockercfg"
            } else {
                ".dockerconfigjson"
            };
            match data.get(key) {
                None => errors.push(required(key)),
                Some(value) => {
                    if let Err(why) = go_json_object(&value.0) {
                        errors.push((
                            format!("data[{key}]"),
                            "FieldValueInvalid",
                            format!("Invalid value: \"<secret contents redacted>\": {why}"),
                        ));
                    }
                }
            }
        }
        "kubernetes.io/basic-auth"
            if !data.contains_key("username") && !data.contains_key("password") =>
        {
            errors.push(required("username"));
            errors.push(required("password"));
        }
        "kubernetes.io/ssh-auth" if !data.contains_key("ssh-privatekey") => {
            errors.push(required("ssh-privatekey"));
        }
        "kubernetes.io/tls" => {
            for key in ["tls.crt", "tls.key"] {
                if !data.contains_key(key) {
                    errors.push(required(key));
                }
            }
        }
        "kubernetes.io/service-account-token" => {
            let annotations = secret.metadata.annotations.as_ref();
            let named = annotations
                .and_then(|a| a.get("kubernetes.io/service-account.name"))
                .is_some_and(|n| !n.is_empty());
            if !named {
                errors.push((
                    "metadata.annotations[kubernetes.io/service-account.name]".into(),
                    "FieldValueRequired",
                    "Required value".into(),
                ));
            }
        }
        _ => {}
    }
    errors
}

/// Whether Go's `json.Unmarshal(data, &map[string]interface{}{})` succeeds, and if not its
/// error, worded as Go words it (its scanner's syntax errors first, then the type).
pub(crate) fn go_json_object(data: &[u8]) -> Result<(), String> {
    let mut scanner = Scanner { data, at: 0 };
    scanner.space();
    let first = scanner.peek();
    scanner.value("looking for beginning of value")?;
    scanner.space();
    if let Some(c) = scanner.peek() {
        return Err(format!(
            "invalid character {} after top-level value",
            quote(c)
        ));
    }
    match first {
        Some(b'{') | Some(b'n') => Ok(()),
        Some(b'[') => Err(unmarshal("array")),
        Some(b'"') => Err(unmarshal("string")),
        Some(b't' | b'f') => Err(unmarshal("bool")),
        _ => Err(unmarshal("number")),
    }
}

fn unmarshal(what: &str) -> String {
    format!("json: cannot unmarshal {what} into Go value of type map[string]interface {{}}")
}

/// A byte as Go's scanner quotes it in its errors (`quoteChar`).
fn quote(c: u8) -> String {
    match c {
        b'\'' => "'\\''".into(),
        b'"' => "'\"'".into(),
        _ => {
            let quoted = format!("{:?}", char::from(c));
            let inner = &quoted[1..quoted.len() - 1];
            let inner = if inner == "\\'" { "'" } else { inner };
            // Go's strconv.Quote writes other control characters as \x.. (Rust: \u{..}).
            if c < 0x20 && inner.starts_with("\\u{") {
                format!("'\\x{c:02x}'")
            } else {
                format!("'{inner}'")
            }
        }
    }
}

/// A recursive reading of JSON that fails where, and as, Go's `encoding/json` scanner does.
struct Scanner<'a> {
    data: &'a [u8],
    at: usize,
}

const EOF: &str = "unexpected end of JSON input";

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.data.get(self.at).copied()
    }

    fn next(&mut self) -> Result<u8, String> {
        let c = self.peek().ok_or(EOF)?;
        self.at += 1;
        Ok(c)
    }

    fn space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.at += 1;
        }
    }

    fn bad(c: u8, context: &str) -> String {
        format!("invalid character {} {context}", quote(c))
    }

    /// A value, any space before it skipped; `context` words an unexpected first byte.
    fn value(&mut self, context: &str) -> Result<(), String> {
        self.space();
        match self.next()? {
            b'{' => self.object(),
            b'[' => self.array(),
            b'"' => self.string(),
            b'-' => match self.next()? {
                c @ b'0'..=b'9' => self.number(c),
                c => Err(Self::bad(c, "in numeric literal")),
            },
            c @ b'0'..=b'9' => self.number(c),
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'n' => self.literal("null"),
            c => Err(Self::bad(c, context)),
        }
    }

    fn object(&mut self) -> Result<(), String> {
        self.space();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(());
        }
        loop {
            self.space();
            match self.next()? {
                b'"' => self.string()?,
                c => return Err(Self::bad(c, "looking for beginning of object key string")),
            }
            self.space();
            match self.next()? {
                b':' => {}
                c => return Err(Self::bad(c, "after object key")),
            }
            self.value("looking for beginning of value")?;
            self.space();
            match self.next()? {
                b',' => {}
                b'}' => return Ok(()),
                c => return Err(Self::bad(c, "after object key:value pair")),
            }
        }
    }

    fn array(&mut self) -> Result<(), String> {
        self.space();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(());
        }
        loop {
            self.value("looking for beginning of value")?;
            self.space();
            match self.next()? {
                b',' => {}
                b']' => return Ok(()),
                c => return Err(Self::bad(c, "after array element")),
            }
        }
    }

    /// A string's rest, after its opening quote.
    fn string(&mut self) -> Result<(), String> {
        loop {
            match self.next()? {
                b'"' => return Ok(()),
                b'\\' => match self.next()? {
                    b'b' | b'f' | b'n' | b'r' | b't' | b'\\' | b'/' | b'"' => {}
                    b'u' => {
                        for _ in 0..4 {
                            let c = self.next()?;
                            if !c.is_ascii_hexdigit() {
                                return Err(Self::bad(c, "in \\u hexadecimal character escape"));
                            }
                        }
                    }
                    c => return Err(Self::bad(c, "in string escape code")),
                },
                c if c < 0x20 => return Err(Self::bad(c, "in string literal")),
                _ => {}
            }
        }
    }

    /// A number's rest, after its first digit `first`.
    fn number(&mut self, first: u8) -> Result<(), String> {
        if first != b'0' {
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.at += 1;
            }
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            match self.next()? {
                b'0'..=b'9' => {}
                c => return Err(Self::bad(c, "after decimal point in numeric literal")),
            }
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.at += 1;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            let mut c = self.next()?;
            if c == b'+' || c == b'-' {
                c = self.next()?;
            }
            if !c.is_ascii_digit() {
                return Err(Self::bad(c, "in exponent of numeric literal"));
            }
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.at += 1;
            }
        }
        Ok(())
    }

    /// A literal's rest, after its first letter.
    fn literal(&mut self, word: &str) -> Result<(), String> {
        for expected in word.bytes().skip(1) {
            let c = self.next()?;
            if c != expected {
                return Err(Self::bad(
                    c,
                    &format!("in literal {word} (expecting {})", quote(expected)),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_json_is_checked_as_go_reads_it() {
        let cases: [(&str, Result<(), &str>); 9] = [
            (r#"{"auths":{}}"#, Ok(())),
            ("null", Ok(())),
            ("", Err("unexpected end of JSON input")),
            (
                "{not json",
                Err("invalid character 'n' looking for beginning of object key string"),
            ),
            (r#"{"a" 1}"#, Err("invalid character '1' after object key")),
            ("{} x", Err("invalid character 'x' after top-level value")),
            ("nul", Err("unexpected end of JSON input")),
            (
                "nope",
                Err("invalid character 'o' in literal null (expecting 'u')"),
            ),
            (
                "[1]",
                Err("json: cannot unmarshal array into Go value of type map[string]interface {}"),
            ),
        ];
        for (text, said) in cases {
            assert_eq!(
                go_json_object(text.as_bytes()),
                said.map_err(str::to_owned),
                "{text}"
            );
        }
        assert_eq!(
            go_json_object(b"{\"a\":\"\n\"}"),
            Err("invalid character '\\n' in string literal".into())
        );
    }
}
