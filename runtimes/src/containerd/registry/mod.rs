//! Just enough of the OCI distribution protocol to pull an image on the client side, which
//! containerd 1.x needs (it has no server-side pull): manifests and blobs over HTTPS (plain
//! HTTP for registries the configuration calls insecure), redirects, and the auth protocol
//! ([`auth`]), with every wait bounded. A session talks to one host of the registry: a mirror
//! or the upstream, as the node's registry host configuration lists them
//! ([`crate::containerd::hosts`]), with that host's TLS ([`tls`]) and headers.

pub mod auth;
pub mod tls;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::header::{ACCEPT, AUTHORIZATION, LOCATION, WWW_AUTHENTICATE};
use hyper::{Request, Response, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use super::credentials::{Auths, Credentials};
use super::hosts::{HostsError, HostsSources, RegistryHost};
use super::oci_image::media;
use crate::reference::Reference;

/// Redirects followed for one request (blob downloads redirect to a CDN).
const MAX_REDIRECTS: usize = 5;
/// How long connecting, an answer's headers, or any wait for more of a body may take: a
/// registry that stalls fails the pull instead of holding it forever.
pub(super) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest manifest, index or token answer read.
pub(super) const MAX_DOCUMENT: usize = 4 << 20;

/// Why talking to a registry failed. Each variant names the URL it was about.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The URL could not be built.
    #[error("{url} is not a valid URL")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        source: hyper::http::Error,
    },
    /// The request could not be sent or answered.
    #[error("{url}")]
    Request {
        /// What was asked.
        url: String,
        /// What failed.
        source: hyper_util::client::legacy::Error,
    },
    /// No answer came in time.
    #[error("{url}: no answer within {IDLE_TIMEOUT:?}")]
    Timeout {
        /// What was asked.
        url: String,
    },
    /// The answer's body stopped coming.
    #[error("{url}: the answer stalled for {IDLE_TIMEOUT:?}")]
    Stalled {
        /// What was asked.
        url: String,
    },
    /// The answer's body could not be read.
    #[error("{url}: reading the answer")]
    Body {
        /// What was asked.
        url: String,
        /// What failed.
        source: hyper::Error,
    },
    /// The answer is larger than we accept.
    #[error("{url}: the answer is larger than {limit} bytes")]
    TooLarge {
        /// What was asked.
        url: String,
        /// The limit.
        limit: usize,
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
    /// The registry wants credentials we do not have.
    #[error(
        "{url}: the registry wants a user name and password and no credential was sent; give a pull secret for {registry} (--image-pull-secret, or imagePullSecrets of the pod or its service account), or add it to the agent's runtime.registryAuth (--registry-auth with local)"
    )]
    NeedsCredentials {
        /// What was asked.
        url: String,
        /// The registry.
        registry: String,
    },
    /// The token realm is not HTTPS.
    #[error(
        "{url}: the registry sends us for a token to {realm:?}, which is not HTTPS; credentials are not sent there (declare the registry insecure only if it is a lab's)"
    )]
    InsecureRealm {
        /// What was asked.
        url: String,
        /// The realm.
        realm: String,
    },
    /// The token answer is not JSON.
    #[error("{url}: the token answer is not JSON")]
    TokenJson {
        /// The token URL.
        url: String,
        /// What the parser said.
        source: serde_json::Error,
    },
    /// The token answer holds no token.
    #[error("{url}: the token answer holds no token")]
    NoToken {
        /// The token URL.
        url: String,
    },
}

type Https = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// A registry client, shared by pulls.
#[derive(Clone)]
pub struct Registry {
    client: Https,
    insecure: Vec<String>,
    auths: Auths,
    hosts: std::sync::Arc<HostsSources>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("insecure", &self.insecure)
            .field("auths", &self.auths)
            .field("hosts", &self.hosts.config_path)
            .finish()
    }
}

/// A client of `connector`'s kind with our timeouts.
fn connector(timeout: Option<Duration>) -> HttpConnector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(timeout.unwrap_or(IDLE_TIMEOUT)));
    http
}

impl Registry {
    /// A client trusting the system's CA certificates, speaking plain HTTP to the `insecure`
    /// registries (`host[:port]`) only, pulling through the mirrors `hosts` lists.
    pub fn new(insecure: Vec<String>, auths: Auths, hosts: HostsSources) -> Registry {
        let http = connector(None);
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
            hosts: std::sync::Arc::new(hosts),
        }
    }

    /// The hosts to pull `reference` from, in the order to try them (mirrors first, the
    /// upstream last), read from the node's configuration now, as containerd reads it.
    pub fn hosts(&self, reference: &Reference) -> Result<Vec<RegistryHost>, HostsError> {
        self.hosts.hosts_for(&reference.registry, &self.insecure)
    }

    /// A session for pulling `reference`'s repository from `host`; it keeps the token it
    /// earns. It answers challenges with the host's own configured credentials if it has
    /// some; else, on the registry's own host, with `credential` (a pull secret's, for this
    /// pull only) or the agent's configured credentials for the registry. A mirror gets no
    /// pull secret: it is another party than the registry the secret is for.
    pub fn session<'a>(
        &'a self,
        reference: &'a Reference,
        host: &RegistryHost,
        credential: Option<&crate::RegistryCredential>,
    ) -> Result<Session<'a>, tls::HostTlsError> {
        let authority = host.url.split_once("://").map_or(&*host.url, |(_, a)| a);
        let registry_itself = authority == reference.api_host() || authority == reference.registry;
        let (credentials, sent) = match (&host.credentials, credential) {
            (Some(c), _) => (
                Some(c.clone()),
                Some(format!(
                    "the credential for {} from {}",
                    host.url, host.origin
                )),
            ),
            (None, Some(c)) if registry_itself => (
                Some(Credentials {
                    username: c.username.clone(),
                    password: c.password.clone(),
                }),
                Some(c.described()),
            ),
            (None, _) if registry_itself => match self.auths.get(&reference.registry) {
                Some(c) => (
                    Some(c.clone()),
                    Some(format!(
                        "the credential for {} from the agent's runtime.registryAuth",
                        reference.registry
                    )),
                ),
                None => (None, None),
            },
            (None, _) => (None, None),
        };
        let client = match tls::client_config(host)? {
            None if host.dial_timeout.is_none() => self.client.clone(),
            config => {
                let https = match config {
                    Some(config) => hyper_rustls::HttpsConnectorBuilder::new()
                        .with_tls_config(config)
                        .https_or_http()
                        .enable_http1()
                        .wrap_connector(connector(host.dial_timeout)),
                    None => hyper_rustls::HttpsConnectorBuilder::new()
                        .with_native_roots()
                        .map_err(|e| tls::HostTlsError {
                            origin: host.origin.clone(),
                            url: host.url.clone(),
                            what: format!("no CA certificates: {e}"),
                        })?
                        .https_or_http()
                        .enable_http1()
                        .wrap_connector(connector(host.dial_timeout)),
                };
                Client::builder(TokioExecutor::new()).build(https)
            }
        };
        Ok(Session {
            reference,
            client,
            root: format!("{}{}", host.url, host.path),
            // containerd tells a mirror which registry it stands in for.
            namespace: (!registry_itself).then(|| reference.registry.clone()),
            headers: host.headers.clone(),
            plain: host.url.starts_with("http://"),
            authorization: None,
            credentials,
            sent,
        })
    }
}

/// Requests to one repository on one host, with the authorization earned so far.
pub struct Session<'a> {
    reference: &'a Reference,
    client: Https,
    /// `scheme://host[:port]/v2` (or the host's own path).
    root: String,
    /// The registry a mirror stands in for (`?ns=`), none on the registry's own host.
    namespace: Option<String>,
    /// The host's extra request headers.
    headers: Vec<(String, String)>,
    /// Whether the host is spoken to over plain HTTP (configured so).
    plain: bool,
    authorization: Option<String>,
    /// What answers the registry's challenges, if anything.
    credentials: Option<Credentials>,
    /// Which credential that is, described for messages (never its value).
    sent: Option<String>,
}

impl Session<'_> {
    /// Whether the host may be spoken to over plain HTTP, token realms included: it is
    /// configured as `http://` (an insecure registry, or a lab's mirror).
    fn insecure(&self) -> bool {
        self.plain
    }

    fn base(&self) -> String {
        format!("{}/{}", self.root, self.reference.repository)
    }

    /// Whether the host is the registry itself, not a mirror of it.
    pub fn is_registry_itself(&self) -> bool {
        self.namespace.is_none()
    }

    /// `url` with the mirror's `ns` query, if any.
    fn with_namespace(&self, url: String) -> String {
        match &self.namespace {
            Some(ns) => {
                let separator = if url.contains('?') { '&' } else { '?' };
                let ns = form_urlencoded::byte_serialize(ns.as_bytes()).collect::<String>();
                format!("{url}{separator}ns={ns}")
            }
            None => url,
        }
    }

    /// Fetches the manifest (or index) `object` (a tag or digest); returns its media type and
    /// bytes.
    pub async fn manifest(&mut self, object: &str) -> Result<(String, Bytes), RegistryError> {
        let url = self.with_namespace(format!("{}/manifests/{object}", self.base()));
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
        let url = self.with_namespace(format!("{}/blobs/{digest}", self.base()));
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
                    .and_then(auth::parse_challenge);
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
            return Err(status_error(url, response, self.sent.as_deref()).await);
        }
    }

    async fn send(
        &self,
        url: &str,
        accept: Option<&str>,
        authorization: Option<&str>,
    ) -> Result<Response<Incoming>, RegistryError> {
        let mut request = Request::get(url);
        if let Some(accept) = accept {
            request = request.header(ACCEPT, accept);
        }
        if let Some(authorization) = authorization {
            request = request.header(AUTHORIZATION, authorization);
        }
        for (name, value) in &self.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request
            .header(hyper::header::USER_AGENT, "kubectl-debug-agent")
            .body(Empty::new())
            .map_err(|source| RegistryError::Url {
                url: url.to_owned(),
                source,
            })?;
        match tokio::time::timeout(IDLE_TIMEOUT, self.client.request(request)).await {
            Ok(answer) => answer.map_err(|source| RegistryError::Request {
                url: url.to_owned(),
                source,
            }),
            Err(_) => Err(RegistryError::Timeout {
                url: url.to_owned(),
            }),
        }
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

/// Waits, bounded, for the next frame of a body.
pub(super) async fn next_frame(
    url: &str,
    body: &mut Incoming,
) -> Result<Option<hyper::body::Frame<Bytes>>, RegistryError> {
    tokio::time::timeout(IDLE_TIMEOUT, body.frame())
        .await
        .map_err(|_| RegistryError::Stalled {
            url: url.to_owned(),
        })?
        .transpose()
        .map_err(|source| RegistryError::Body {
            url: url.to_owned(),
            source,
        })
}

/// The whole body of `response`, at most `limit` bytes, each wait for more bounded.
pub(super) async fn read_all(
    url: &str,
    response: Response<Incoming>,
    limit: usize,
) -> Result<Bytes, RegistryError> {
    let mut body = response.into_body();
    let mut data = bytes::BytesMut::new();
    while let Some(frame) = next_frame(url, &mut body).await? {
        if let Some(chunk) = frame.data_ref() {
            if data.len() + chunk.len() > limit {
                return Err(RegistryError::TooLarge {
                    url: url.to_owned(),
                    limit,
                });
            }
            data.extend_from_slice(chunk);
        }
    }
    Ok(data.freeze())
}

/// An error for a non-success answer, with the registry's own message and a hint.
async fn status_error(
    url: &str,
    response: Response<Incoming>,
    sent: Option<&str>,
) -> RegistryError {
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
        StatusCode::NOT_FOUND => "; check the image name and tag".to_owned(),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            format!("; {}", crate::error::refused_note(sent))
        }
        _ => String::new(),
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
