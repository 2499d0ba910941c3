//! Just enough of the OCI distribution protocol to pull an image on the client side, which
//! containerd 1.x needs (it has no server-side pull): image references normalised like
//! Docker's, registry token and basic auth (anonymous, or with credentials from a Docker
//! `config.json`), manifests and blobs over HTTPS, or plain HTTP for registries the
//! configuration calls insecure.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::header::{ACCEPT, AUTHORIZATION, LOCATION, WWW_AUTHENTICATE};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

/// Docker Hub's name in references.
const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's registry API answers.
const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// Redirects followed for one request (blob downloads redirect to a CDN).
const MAX_REDIRECTS: usize = 5;
/// How long connecting, an answer's headers, or any wait for more of a body may take: a
/// registry that stalls fails the pull instead of holding it forever.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest manifest, index or token answer read.
const MAX_DOCUMENT: usize = 4 << 20;

/// The manifest media types we read, index types first.
pub mod media {
    /// An OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// A Docker manifest list.
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// An OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// A Docker image manifest, schema 2.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

    /// Whether `media_type` is an index of manifests.
    pub fn is_index(media_type: &str) -> bool {
        media_type == OCI_INDEX || media_type == DOCKER_LIST
    }

    /// Whether `media_type` is one image's manifest.
    pub fn is_manifest(media_type: &str) -> bool {
        media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
    }
}

/// A parsed image reference, e.g. `nicolaka/netshoot` is `docker.io/nicolaka/netshoot:latest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The registry, `host[:port]`; `docker.io` for Docker Hub.
    pub registry: String,
    /// The repository, e.g. `library/busybox`.
    pub repository: String,
    /// The tag, if any (`latest` when neither tag nor digest is given).
    pub tag: Option<String>,
    /// The digest, if any.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses `image` the way Docker does.
    pub fn parse(image: &str) -> Result<Reference, String> {
        let bad = |why: &str| format!("image reference {image:?} is not valid: {why}");
        let (rest, digest) = match image.split_once('@') {
            Some((rest, digest)) => {
                let hex = digest
                    .strip_prefix("sha256:")
                    .ok_or_else(|| bad("only sha256 digests are supported"))?;
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad("the digest is not sha256:<64 hex digits>"));
                }
                (rest, Some(digest.to_owned()))
            }
            None => (image, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (
                &rest[..last_slash + i],
                Some(rest[last_slash + i + 1..].to_owned()),
            ),
            None => (rest, None),
        };
        if let Some(tag) = &tag {
            let ok = !tag.is_empty()
                && tag.len() <= 128
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !ok {
                return Err(bad("the tag may hold only letters, digits, '.', '_', '-'"));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_owned(), path.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let ok = !repository.is_empty()
            && repository.split('/').all(|part| {
                !part.is_empty()
                    && part.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
            });
        if !ok {
            return Err(bad(
                "the repository may hold only lowercase letters, digits, '.', '_', '-' and '/'",
            ));
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_owned())
        } else {
            tag
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The tag or digest to ask the registry for (the digest when both are given).
    pub fn object(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// Where the registry's API answers.
    fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }
}

impl fmt::Display for Reference {
    /// The full name, as containerd's image store keeps it: `docker.io/library/busybox:latest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or access token.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Registry credentials from a Docker `config.json` (the `.dockerconfigjson` key of a
/// `kubernetes.io/dockerconfigjson` secret).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Auths(BTreeMap<String, Credentials>);

impl Auths {
    /// Reads a `config.json`-style file.
    pub fn load(path: &Path) -> Result<Auths, String> {
        let text = std::fs::read(path)
            .map_err(|e| format!("reading registry credentials {}: {e}", path.display()))?;
        Auths::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses `{"auths": {"registry": {"auth": base64("user:pass")}}}` (or `username` and
    /// `password` fields).
    pub fn parse(json: &[u8]) -> Result<Auths, String> {
        #[derive(Deserialize)]
        struct File {
            #[serde(default)]
            auths: BTreeMap<String, Entry>,
        }
        #[derive(Deserialize)]
        struct Entry {
            auth: Option<String>,
            username: Option<String>,
            password: Option<String>,
        }
        let file: File = serde_json::from_slice(json)
            .map_err(|e| format!("not a Docker config.json ({{\"auths\": ...}}): {e}"))?;
        let mut auths = BTreeMap::new();
        for (server, entry) in file.auths {
            let credentials = match (entry.auth, entry.username, entry.password) {
                (Some(auth), _, _) if !auth.is_empty() => {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(auth.trim())
                        .ok()
                        .and_then(|d| String::from_utf8(d).ok())
                        .ok_or_else(|| {
                            format!("the auth of {server:?} is not base64 of user:password")
                        })?;
                    let (username, password) = decoded.split_once(':').ok_or_else(|| {
                        format!("the auth of {server:?} is not base64 of user:password")
                    })?;
                    Credentials {
                        username: username.to_owned(),
                        password: password.to_owned(),
                    }
                }
                (_, Some(username), Some(password)) => Credentials { username, password },
                _ => continue,
            };
            auths.insert(registry_key(&server), credentials);
        }
        Ok(Auths(auths))
    }

    /// The credentials for `registry` (as in a [`Reference`]), if any.
    pub fn get(&self, registry: &str) -> Option<&Credentials> {
        self.0.get(&registry_key(registry))
    }
}

/// The registry a `config.json` key names: `https://index.docker.io/v1/` is Docker Hub.
fn registry_key(server: &str) -> String {
    let host = server
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => DOCKER_HUB,
        other => other,
    }
    .to_owned()
}

/// A `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Challenge {
    /// `Bearer realm="...",service="...",scope="..."`.
    Bearer(BTreeMap<String, String>),
    /// `Basic realm="..."`.
    Basic,
}

fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut map = BTreeMap::new();
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        map.insert(key.trim().to_ascii_lowercase(), value.to_owned());
        rest = tail.trim_start().trim_start_matches(',').trim_start();
    }
    map.contains_key("realm").then_some(Challenge::Bearer(map))
}

/// Why talking to a registry failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The request could not be made or answered.
    #[error("{url}: {message}")]
    Http {
        /// What was asked.
        url: String,
        /// What failed.
        message: String,
    },
    /// The registry answered with an error status.
    #[error("{url}: the registry answered {status}{detail}")]
    Status {
        /// What was asked.
        url: String,
        /// The status.
        status: StatusCode,
        /// The registry's own message, if any, with a hint.
        detail: String,
    },
}

impl RegistryError {
    /// Whether the registry said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, RegistryError::Status { status, .. } if *status == StatusCode::NOT_FOUND)
    }
}

type Https = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// A registry client, shared by pulls.
#[derive(Clone)]
pub struct Registry {
    client: Https,
    insecure: Vec<String>,
    auths: Auths,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("insecure", &self.insecure)
            .field("auths", &self.auths)
            .finish()
    }
}

impl Registry {
    /// A client trusting the system's CA certificates, speaking plain HTTP to the `insecure`
    /// registries (`host[:port]`) only.
    pub fn new(insecure: Vec<String>, auths: Auths) -> Registry {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(IDLE_TIMEOUT));
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let connector = match builder.with_native_roots() {
            Ok(b) => b.https_or_http().enable_http1().wrap_connector(http),
            Err(e) => {
                // Without CA certificates only plain-HTTP registries can work; HTTPS requests
                // then fail their certificate check, and say so.
                tracing::warn!(error = %e, "no CA certificates found; HTTPS registries will fail (install ca-certificates)");
                let config = rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(config)
                    .https_or_http()
                    .enable_http1()
                    .wrap_connector(http)
            }
        };
        Registry {
            client: Client::builder(TokioExecutor::new()).build(connector),
            insecure,
            auths,
        }
    }

    /// A session for pulling from `reference`'s repository; it keeps the token it earns.
    pub fn session<'a>(&'a self, reference: &'a Reference) -> Session<'a> {
        Session {
            registry: self,
            reference,
            authorization: None,
        }
    }
}

/// Requests to one repository, with the authorization earned so far.
pub struct Session<'a> {
    registry: &'a Registry,
    reference: &'a Reference,
    authorization: Option<String>,
}

impl Session<'_> {
    /// Whether the registry may be spoken to over plain HTTP.
    fn insecure(&self) -> bool {
        let host = self.reference.api_host();
        self.registry.insecure.iter().any(|i| i == host)
    }

    fn base(&self) -> String {
        let scheme = if self.insecure() { "http" } else { "https" };
        format!(
            "{scheme}://{}/v2/{}",
            self.reference.api_host(),
            self.reference.repository
        )
    }

    /// Fetches the manifest (or index) `object` (a tag or digest); returns its media type and
    /// bytes.
    pub async fn manifest(&mut self, object: &str) -> Result<(String, Bytes), RegistryError> {
        let url = format!("{}/manifests/{object}", self.base());
        let accept = [
            media::OCI_INDEX,
            media::DOCKER_LIST,
            media::OCI_MANIFEST,
            media::DOCKER_MANIFEST,
        ]
        .join(", ");
        let response = self.get(&url, Some(&accept)).await?;
        let media_type = response
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_owned();
        let body = read_all(&url, response, MAX_DOCUMENT).await?;
        Ok((media_type, body))
    }

    /// Starts downloading the blob `digest`; the response's body is the blob.
    pub async fn blob(&mut self, digest: &str) -> Result<Response<Incoming>, RegistryError> {
        let url = format!("{}/blobs/{digest}", self.base());
        self.get(&url, None).await
    }

    /// GETs `url`, answering one auth challenge and following redirects (without our
    /// authorization when they leave the registry's host).
    async fn get(
        &mut self,
        url: &str,
        accept: Option<&str>,
    ) -> Result<Response<Incoming>, RegistryError> {
        let mut target = url.to_owned();
        let mut challenged = false;
        let mut redirects = 0;
        loop {
            // Our authorization goes only where it was earned, over the same scheme: never to
            // a CDN a redirect names, never downgraded to plain HTTP.
            let same_host = origin(&target) == origin(url);
            let authorization = self.authorization.as_deref().filter(|_| same_host);
            let response = self.send(&target, accept, authorization).await?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && same_host && !challenged {
                challenged = true;
                let challenge = response
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_challenge);
                if let Some(challenge) = challenge {
                    self.authorization = Some(self.answer(url, challenge).await?);
                    continue;
                }
            }
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                if let Some(location) = location
                    && redirects < MAX_REDIRECTS
                {
                    redirects += 1;
                    target = resolve(&target, &location);
                    continue;
                }
            }
            if status.is_success() {
                return Ok(response);
            }
            return Err(status_error(url, response).await);
        }
    }

    async fn send(
        &self,
        url: &str,
        accept: Option<&str>,
        authorization: Option<&str>,
    ) -> Result<Response<Incoming>, RegistryError> {
        let uri: Uri = url.parse().map_err(|e| RegistryError::Http {
            url: url.to_owned(),
            message: format!("not a valid URL: {e}"),
        })?;
        let mut request = Request::get(uri);
        if let Some(accept) = accept {
            request = request.header(ACCEPT, accept);
        }
        if let Some(authorization) = authorization {
            request = request.header(AUTHORIZATION, authorization);
        }
        let request = request
            .header(hyper::header::USER_AGENT, "kubectl-debug-agent")
            .body(Empty::new())
            .map_err(|e| RegistryError::Http {
                url: url.to_owned(),
                message: e.to_string(),
            })?;
        match tokio::time::timeout(IDLE_TIMEOUT, self.registry.client.request(request)).await {
            Ok(answer) => answer.map_err(|e| RegistryError::Http {
                url: url.to_owned(),
                message: crate::error_chain(&e),
            }),
            Err(_) => Err(RegistryError::Http {
                url: url.to_owned(),
                message: format!("no answer within {IDLE_TIMEOUT:?}"),
            }),
        }
    }

    /// The `Authorization` value answering `challenge`.
    async fn answer(&self, url: &str, challenge: Challenge) -> Result<String, RegistryError> {
        let credentials = self.registry.auths.get(&self.reference.registry);
        let basic = |c: &Credentials| {
            let pair = format!("{}:{}", c.username, c.password);
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        };
        let params = match challenge {
            Challenge::Basic => {
                return credentials.map(basic).ok_or_else(|| RegistryError::Status {
                    url: url.to_owned(),
                    status: StatusCode::UNAUTHORIZED,
                    detail: format!(
                        ": the registry wants a user name and password; add {} to the registry credentials (the agent's runtime.registryAuth, or --registry-auth with local)",
                        self.reference.registry
                    ),
                });
            }
            Challenge::Bearer(params) => params,
        };
        let query = {
            let mut query = form_urlencoded::Serializer::new(String::new());
            if let Some(service) = params.get("service") {
                query.append_pair("service", service);
            }
            let scope = format!("repository:{}:pull", self.reference.repository);
            query.append_pair("scope", &scope);
            query.finish()
        };
        let realm = &params["realm"];
        let plain_allowed = self.insecure() && realm.starts_with("http://");
        if !(realm.starts_with("https://") || plain_allowed) {
            return Err(RegistryError::Http {
                url: url.to_owned(),
                message: format!(
                    "the registry sends us for a token to {realm:?}, which is not HTTPS; credentials are not sent there (declare the registry insecure only if it is a lab's)"
                ),
            });
        }
        let separator = if realm.contains('?') { '&' } else { '?' };
        let token_url = format!("{realm}{separator}{query}");
        let authorization = credentials.map(basic);
        let response = self
            .send(&token_url, None, authorization.as_deref())
            .await?;
        if !response.status().is_success() {
            return Err(status_error(&token_url, response).await);
        }
        #[derive(Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let body = read_all(&token_url, response, MAX_DOCUMENT).await?;
        let token: Token = serde_json::from_slice(&body).map_err(|e| RegistryError::Http {
            url: token_url.clone(),
            message: format!("the token answer is not JSON: {e}"),
        })?;
        let token = token
            .token
            .or(token.access_token)
            .ok_or_else(|| RegistryError::Http {
                url: token_url,
                message: "the token answer holds no token".into(),
            })?;
        Ok(format!("Bearer {token}"))
    }
}

/// `scheme://host[:port]` of a URL.
fn origin(url: &str) -> &str {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..].find('/').map_or(url.len(), |i| start + i);
    &url[..end]
}

fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}

/// `location` relative to `base`.
fn resolve(base: &str, location: &str) -> String {
    if location.contains("://") {
        location.to_owned()
    } else if location.starts_with('/') {
        let scheme = base.split_once("://").map_or("https", |(s, _)| s);
        format!("{scheme}://{}{location}", host_of(base))
    } else {
        let dir = base.rfind('/').map_or(base, |i| &base[..=i]);
        format!("{dir}{location}")
    }
}

/// The whole body of `response`, at most `limit` bytes, each wait for more bounded.
pub async fn read_all(
    url: &str,
    response: Response<Incoming>,
    limit: usize,
) -> Result<Bytes, RegistryError> {
    let fail = |message: String| RegistryError::Http {
        url: url.to_owned(),
        message,
    };
    let mut body = response.into_body();
    let mut data = bytes::BytesMut::new();
    loop {
        let frame = tokio::time::timeout(IDLE_TIMEOUT, body.frame())
            .await
            .map_err(|_| fail(format!("the answer stalled for {IDLE_TIMEOUT:?}")))?;
        let Some(frame) = frame else {
            return Ok(data.freeze());
        };
        let frame = frame.map_err(|e| fail(format!("reading the answer: {e}")))?;
        if let Some(chunk) = frame.data_ref() {
            if data.len() + chunk.len() > limit {
                return Err(fail(format!("the answer is larger than {limit} bytes")));
            }
            data.extend_from_slice(chunk);
        }
    }
}

/// An error for a non-success answer, with the registry's own message and a hint.
async fn status_error(url: &str, response: Response<Incoming>) -> RegistryError {
    let status = response.status();
    #[derive(Deserialize)]
    struct Errors {
        #[serde(default)]
        errors: Vec<ErrorEntry>,
    }
    #[derive(Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        message: String,
    }
    let body = read_all(url, response, 64 * 1024).await.unwrap_or_default();
    let said = serde_json::from_slice::<Errors>(&body)
        .ok()
        .and_then(|e| e.errors.into_iter().next())
        .map(|e| e.message)
        .filter(|m| !m.is_empty());
    let hint = match status {
        StatusCode::NOT_FOUND => "; check the image name and tag",
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            "; the image may be private: give credentials for it (the agent's runtime.registryAuth, or --registry-auth with local)"
        }
        _ => "",
    };
    let detail = match said {
        Some(said) => format!(" ({said}){hint}"),
        None => hint.to_owned(),
    };
    RegistryError::Status {
        url: url.to_owned(),
        status,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(image: &str) -> (String, String, Option<String>, Option<String>) {
        let r = Reference::parse(image).unwrap();
        (r.registry, r.repository, r.tag, r.digest)
    }

    #[test]
    fn references_are_normalised_like_docker() {
        let latest = Some("latest".to_owned());
        assert_eq!(
            parsed("busybox"),
            (
                "docker.io".into(),
                "library/busybox".into(),
                latest.clone(),
                None
            )
        );
        assert_eq!(
            parsed("nicolaka/netshoot:v0.13"),
            (
                "docker.io".into(),
                "nicolaka/netshoot".into(),
                Some("v0.13".into()),
                None
            )
        );
        assert_eq!(
            parsed("127.0.0.1:5000/kdbg-tools:test"),
            (
                "127.0.0.1:5000".into(),
                "kdbg-tools".into(),
                Some("test".into()),
                None
            )
        );
        assert_eq!(
            parsed("localhost/a/b"),
            ("localhost".into(), "a/b".into(), latest.clone(), None)
        );
        assert_eq!(
            parsed("ghcr.io/org/tools"),
            ("ghcr.io".into(), "org/tools".into(), latest, None)
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("quay.io/x/y@{digest}")).unwrap();
        assert_eq!(
            (r.tag.as_deref(), r.digest.as_deref()),
            (None, Some(digest.as_str()))
        );
        assert_eq!(r.object(), digest);
        assert_eq!(
            Reference::parse("busybox").unwrap().to_string(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            Reference::parse("busybox").unwrap().api_host(),
            DOCKER_HUB_API
        );
    }

    #[test]
    fn bad_references_say_why() {
        for bad in ["Busybox", "a//b", "a:b:c!", "x@md5:00", "x@sha256:12", ""] {
            let err = Reference::parse(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn challenges_parse() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .unwrap();
        let Challenge::Bearer(params) = c else {
            panic!("{c:?}")
        };
        assert_eq!(params["realm"], "https://auth.docker.io/token");
        assert_eq!(params["service"], "registry.docker.io");
        assert_eq!(
            parse_challenge(r#"Basic realm="r""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge(r#"Bearer service="x""#), None);
    }

    #[test]
    fn docker_config_credentials_are_found_by_registry() {
        let json = br#"{"auths": {
            "https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNzOndvcmQ="},
            "127.0.0.1:5000": {"username": "u", "password": "p"},
            "empty.example": {}
        }}"#;
        let auths = Auths::parse(json).unwrap();
        let hub = auths.get("docker.io").unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("user", "pass:word")
        );
        assert_eq!(auths.get("127.0.0.1:5000").unwrap().username, "u");
        assert!(auths.get("empty.example").is_none());
        assert!(!format!("{hub:?}").contains("pass:word"));
        let err = Auths::parse(br#"{"auths": {"r": {"auth": "!!"}}}"#).unwrap_err();
        assert!(err.contains("\"r\""), "{err}");
    }

    #[test]
    fn redirects_resolve() {
        assert_eq!(
            resolve("https://r.io/v2/x/blobs/d", "https://cdn.io/a?b"),
            "https://cdn.io/a?b"
        );
        assert_eq!(
            resolve("http://r:5000/v2/x/blobs/d", "/v2/y"),
            "http://r:5000/v2/y"
        );
        assert_eq!(host_of("https://cdn.io/a"), "cdn.io");
        assert_eq!(origin("https://r.io:443/v2/x"), "https://r.io:443");
        assert_ne!(origin("http://r.io/v2/x"), origin("https://r.io/v2/x"));
    }
}
