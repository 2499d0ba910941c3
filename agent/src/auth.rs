//! The agent's one contact with the Kubernetes API: who a caller is (a `TokenReview` of the
//! bearer token it presents, or the client certificate the TLS handshake verified against the
//! cluster's client CA, read as the API server reads it) and whether the cluster lets them do what they ask (a
//! `SubjectAccessReview`), as the kubelet checks its own API. Both answers are cached for
//! `auth.cacheTTL` in caches of bounded size, so a flood of requests does not become a flood
//! of reviews, and a revoked permission stops working within that time. An on-demand agent
//! (`auth.mode: token`) asks the cluster nothing: see [`Authenticator::token`].

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::HeaderMap;
use hyper::header::AUTHORIZATION;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PostParams;
use kube::{Api, Client};
use rustls::pki_types::CertificateDer;

use crate::config;

/// At most this many tokens and decisions are remembered.
mod certificate;

const CACHE_ENTRIES: usize = 4096;

/// Where the API server publishes its client CA for extension servers: ConfigMap and key.
pub const CLUSTER_CLIENT_CA: (&str, &str) =
    ("extension-apiserver-authentication", "client-ca-file");

/// Who made a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// The user name (`system:serviceaccount:ns:name` for a service account).
    pub user: String,
    /// The user's UID, when the cluster gives one.
    pub uid: String,
    /// The user's groups.
    pub groups: Vec<String>,
    /// What else the authenticator said of the user (passed on to access reviews).
    pub extra: BTreeMap<String, Vec<String>>,
    /// Whether the cluster (or the token of `auth.mode: token`) vouched for this (false with
    /// `auth.mode: none`, where the name is what the client says).
    pub verified: bool,
}

/// Why a caller's credential was not accepted: the caller reads it in a 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialRejected {
    /// The client certificate does not parse.
    #[error("Unauthorized: the client certificate cannot be read ({0})")]
    Certificate(webpki::Error),
    /// The client certificate's subject does not parse.
    #[error(
        "Unauthorized: the client certificate's subject cannot be read; issue one whose subject is CN=<user>, O=<group>"
    )]
    Subject,
    /// The client certificate names no user.
    #[error(
        "Unauthorized: the client certificate has no common name (CN), which names the user; issue one with CN=<user>"
    )]
    NoCommonName,
    /// The cluster's TokenReview did not accept the bearer token.
    #[error(
        "Unauthorized: the cluster did not accept the bearer token{}; log in again (kubectl's credentials may have expired)",
        aside(.reason)
    )]
    Token {
        /// The review's error, if it gave one.
        reason: Option<String>,
    },
    /// `auth.mode: token`: no bearer token (`false`), or not the one the agent admits.
    #[error(
        "Unauthorized: {}; present the token kubectl-debug started this agent with",
        if *.0 { "the bearer token is not the one this agent admits" } else { "no bearer token" }
    )]
    NotAgentToken(bool),
}

/// The cluster's answer that a caller may not do something: the caller reads it in a 403.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "Forbidden: user \"{user}\" may not {}{}; ask an administrator for a Role that grants it (see docs/security.md, RBAC a user needs)",
    .access.describe(),
    aside(.reason)
)]
pub struct Forbidden {
    /// The user.
    pub user: String,
    /// What they asked to do.
    pub access: Access,
    /// The review's reason, if it gave one.
    pub reason: Option<String>,
}

/// ` (reason)`, or nothing.
fn aside(reason: &Option<String>) -> String {
    reason
        .as_deref()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default()
}

/// Why no client of the cluster could be made for `auth.mode: kubernetes`.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The in-cluster service account cannot be read.
    #[error(
        "reading the in-cluster service account for auth.mode: kubernetes (is automountServiceAccountToken on in the DaemonSet? or set auth.kubeconfig)"
    )]
    InCluster {
        /// What kube said.
        source: kube::config::InClusterError,
    },
    /// `auth.kubeconfig` cannot be read.
    #[error("reading auth.kubeconfig {path}")]
    ReadKubeconfig {
        /// `auth.kubeconfig`.
        path: String,
        /// What kube said.
        source: kube::config::KubeconfigError,
    },
    /// `auth.kubeconfig` does not make a client configuration.
    #[error("loading auth.kubeconfig {path}")]
    LoadKubeconfig {
        /// `auth.kubeconfig`.
        path: String,
        /// What kube said.
        source: kube::config::KubeconfigError,
    },
    /// The client cannot be built from the configuration.
    #[error("building the Kubernetes client")]
    Client {
        /// What kube said.
        source: kube::Error,
    },
}

/// Why the cluster's client CA ([`CLUSTER_CLIENT_CA`]) could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ClientCaError {
    /// The API server could not be asked, or refused.
    #[error("reading ConfigMap kube-system/{map}: {0}", map = CLUSTER_CLIENT_CA.0)]
    Read(kube::Error),
    /// The ConfigMap does not exist.
    #[error("there is no ConfigMap kube-system/{}", CLUSTER_CLIENT_CA.0)]
    NoConfigMap,
    /// The ConfigMap has no client CA.
    #[error("ConfigMap kube-system/{} has no {}", CLUSTER_CLIENT_CA.0, CLUSTER_CLIENT_CA.1)]
    NoKey,
    /// `auth.mode: token`: the agent does not talk to the cluster.
    #[error("with auth.mode: token the agent does not read the cluster")]
    NoCluster,
}

/// What a request needs the cluster to allow, as a SubjectAccessReview's resource attributes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Access {
    /// `create`, `get`, `list`...
    pub verb: &'static str,
    /// The API group (`""` for the core group).
    pub group: &'static str,
    /// `pods`, `nodes`...
    pub resource: &'static str,
    /// `exec`, `proxy`, `debug-recordings`...
    pub subresource: &'static str,
    /// The namespace; empty for all namespaces or a cluster-scoped resource.
    pub namespace: String,
    /// The object's name; empty for every object.
    pub name: String,
}

impl Access {
    /// `verb` on pods' `subresource` (none when empty) of pod `name` in `namespace`.
    pub fn pods(
        verb: &'static str,
        subresource: &'static str,
        namespace: &str,
        name: &str,
    ) -> Access {
        Access {
            verb,
            group: "",
            resource: "pods",
            subresource,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// `create` on `nodes/proxy` of `node`: what node-level debugging needs (the kubelet asks
    /// the same for its own debugging endpoints).
    pub fn node_debugging(node: &str) -> Access {
        Access {
            verb: "create",
            group: "",
            resource: "nodes",
            subresource: "proxy",
            namespace: String::new(),
            name: node.to_owned(),
        }
    }

    /// As a message names it: `create pods/exec of pod "web" in namespace "shop"`.
    pub fn describe(&self) -> String {
        let mut text = format!("{} {}", self.verb, self.resource);
        if !self.subresource.is_empty() {
            text = format!("{text}/{}", self.subresource);
        }
        let kind = self.resource.trim_end_matches('s');
        if !self.name.is_empty() {
            text = format!("{text} of {kind} \"{}\"", self.name);
        }
        if self.namespace.is_empty() {
            if self.resource == "pods" {
                text.push_str(" in all namespaces");
            }
        } else {
            text = format!("{text} in namespace \"{}\"", self.namespace);
        }
        text
    }
}

/// Why a request was not let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No credential, or one the cluster did not accept: 401.
    Unauthenticated(String),
    /// The cluster does not let this user do it: 403.
    Forbidden(String),
    /// The cluster could not be asked: 503.
    Unavailable(String),
}

impl Denied {
    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        match self {
            Denied::Unauthenticated(_) => 401,
            Denied::Forbidden(_) => 403,
            Denied::Unavailable(_) => 503,
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        match self {
            Denied::Unauthenticated(m) | Denied::Forbidden(m) | Denied::Unavailable(m) => m,
        }
    }
}

/// Checks callers: against the cluster, or against the one token of `auth.mode: token`.
pub struct Authenticator(Checks);

enum Checks {
    Cluster(Box<Reviews>),
    Token { sha256: [u8; 32], user: String },
}

struct Reviews {
    client: Client,
    audiences: Vec<String>,
    ttl: Duration,
    tokens: Mutex<Cache<[u8; 32], Result<Caller, CredentialRejected>>>,
    decisions: Mutex<Cache<(String, Access), Result<(), Forbidden>>>,
}

impl Authenticator {
    /// A client of the cluster as `auth` says: its kubeconfig, else the in-cluster service
    /// account.
    pub async fn connect(auth: &config::Auth) -> Result<Authenticator, ConnectError> {
        let config = if auth.kubeconfig.is_empty() {
            kube::Config::incluster().map_err(|source| ConnectError::InCluster { source })?
        } else {
            let kubeconfig =
                kube::config::Kubeconfig::read_from(&auth.kubeconfig).map_err(|source| {
                    ConnectError::ReadKubeconfig {
                        path: auth.kubeconfig.clone(),
                        source,
                    }
                })?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(|source| ConnectError::LoadKubeconfig {
                    path: auth.kubeconfig.clone(),
                    source,
                })?
        };
        let client = Client::try_from(config).map_err(|source| ConnectError::Client { source })?;
        Ok(Authenticator(Checks::Cluster(Box::new(Reviews {
            client,
            audiences: auth.audiences.clone(),
            ttl: auth.cache_ttl.0,
            tokens: Mutex::new(Cache::new(CACHE_ENTRIES)),
            decisions: Mutex::new(Cache::new(CACHE_ENTRIES)),
        }))))
    }

    /// `auth.mode: token`, an on-demand agent's: admits only the bearer token whose SHA-256 is
    /// `sha256`, as `user` (verified, in no group), and lets them do anything, without asking
    /// the cluster: the API server authorised them when it let them port-forward to the
    /// agent's pod, which listens on its loopback only.
    pub fn token(sha256: [u8; 32], user: &str) -> Authenticator {
        let user = user.to_owned();
        Authenticator(Checks::Token { sha256, user })
    }

    /// The cluster's client CA, as the API server publishes it for other servers: the
    /// `client-ca-file` of ConfigMap `kube-system/extension-apiserver-authentication`; an error
    /// saying why when there is none or the agent may not read it (deploy/ grants it).
    pub async fn cluster_client_ca(&self) -> Result<Vec<u8>, ClientCaError> {
        let Checks::Cluster(reviews) = &self.0 else {
            return Err(ClientCaError::NoCluster);
        };
        let maps: Api<ConfigMap> = Api::namespaced(reviews.client.clone(), "kube-system");
        let map = maps
            .get_opt(CLUSTER_CLIENT_CA.0)
            .await
            .map_err(ClientCaError::Read)?
            .ok_or(ClientCaError::NoConfigMap)?;
        map.data
            .and_then(|mut d| d.remove(CLUSTER_CLIENT_CA.1))
            .map(String::into_bytes)
            .ok_or(ClientCaError::NoKey)
    }

    /// The caller of a request: the one its connection's client certificate names
    /// (`certificate`, already verified by the TLS handshake), else the one its bearer token
    /// names, reviewed by the cluster; with `auth.mode: token`, the token's holder if the
    /// request presents that token.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        certificate: Option<&Result<Caller, CredentialRejected>>,
    ) -> Result<Caller, Denied> {
        let unauthenticated =
            |rejected: CredentialRejected| Denied::Unauthenticated(rejected.to_string());
        let reviews = match &self.0 {
            Checks::Cluster(reviews) => reviews,
            Checks::Token { sha256, user } => {
                return token_holder(headers, sha256, user).map_err(unauthenticated);
            }
        };
        if let Some(named) = certificate {
            return named.clone().map_err(unauthenticated);
        }
        let token = bearer(headers).ok_or_else(|| {
            Denied::Unauthenticated(
                "Unauthorized: the kubectl-debug agent admits only callers with a bearer token or a client certificate the cluster accepts (kubectl-debug sends your kubeconfig's credentials; anonymous requests are refused)".into(),
            )
        })?;
        let key = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let key: [u8; 32] = key.as_ref().try_into().unwrap_or([0; 32]);
        if let Some(known) = lock(&reviews.tokens).get(&key) {
            return known.map_err(unauthenticated);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: (!reviews.audiences.is_empty()).then(|| reviews.audiences.clone()),
            },
            ..TokenReview::default()
        };
        let reviewed = Api::<TokenReview>::all(reviews.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| {
                Denied::Unavailable(format!(
                    "could not review the caller's token with the Kubernetes API (TokenReview): {e}; check the agent's RBAC (deploy/) and that the API server is reachable"
                ))
            })?;
        let status = reviewed.status.unwrap_or_default();
        let outcome = match (status.authenticated, status.user) {
            (Some(true), Some(user)) => Ok(Caller {
                user: user.username.unwrap_or_default(),
                uid: user.uid.unwrap_or_default(),
                groups: user.groups.unwrap_or_default(),
                extra: user.extra.unwrap_or_default(),
                verified: true,
            }),
            _ => Err(CredentialRejected::Token {
                reason: status.error.filter(|e| !e.is_empty()),
            }),
        };
        lock(&reviews.tokens).insert(key, outcome.clone(), reviews.ttl);
        outcome.map_err(unauthenticated)
    }

    /// Whether the cluster lets `caller` do `access`; always, with `auth.mode: token`.
    pub async fn authorize(&self, caller: &Caller, access: &Access) -> Result<(), Denied> {
        let Checks::Cluster(reviews) = &self.0 else {
            return Ok(());
        };
        let key = (caller.user.clone(), access.clone());
        let forbidden = |no: Forbidden| Denied::Forbidden(no.to_string());
        if let Some(known) = lock(&reviews.decisions).get(&key) {
            return known.map_err(forbidden);
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(caller.user.clone()),
                uid: (!caller.uid.is_empty()).then(|| caller.uid.clone()),
                groups: Some(caller.groups.clone()),
                extra: (!caller.extra.is_empty()).then(|| caller.extra.clone()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(access.verb.to_owned()),
                    group: Some(access.group.to_owned()),
                    resource: Some(access.resource.to_owned()),
                    subresource: (!access.subresource.is_empty())
                        .then(|| access.subresource.to_owned()),
                    namespace: (!access.namespace.is_empty()).then(|| access.namespace.clone()),
                    name: (!access.name.is_empty()).then(|| access.name.clone()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let reviewed = Api::<SubjectAccessReview>::all(reviews.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| {
                Denied::Unavailable(format!(
                    "could not ask the Kubernetes API whether user \"{}\" may {} (SubjectAccessReview): {e}; check the agent's RBAC (deploy/) and that the API server is reachable",
                    caller.user,
                    access.describe()
                ))
            })?;
        let status = reviewed.status.unwrap_or_default();
        let outcome = if status.allowed && status.denied != Some(true) {
            Ok(())
        } else {
            Err(Forbidden {
                user: caller.user.clone(),
                access: access.clone(),
                reason: status.reason.filter(|r| !r.is_empty()),
            })
        };
        lock(&reviews.decisions).insert(key, outcome.clone(), reviews.ttl);
        outcome.map_err(forbidden)
    }
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = f.debug_struct("Authenticator");
        match &self.0 {
            Checks::Cluster(r) => out.field("audiences", &r.audiences).field("ttl", &r.ttl),
            Checks::Token { user, .. } => out.field("token_holder", user),
        };
        out.finish_non_exhaustive()
    }
}

/// `user` (verified, in no group), when `headers` present the token whose SHA-256 is
/// `sha256`; every byte is compared, whatever differs, so the time taken tells nothing.
fn token_holder(
    headers: &HeaderMap,
    sha256: &[u8; 32],
    user: &str,
) -> Result<Caller, CredentialRejected> {
    let token = bearer(headers).ok_or(CredentialRejected::NotAgentToken(false))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let differ = (digest.as_ref().iter().zip(sha256)).fold(0, |d, (a, b)| d | (a ^ b));
    if differ != 0 {
        return Err(CredentialRejected::NotAgentToken(true));
    }
    let user = user.to_owned();
    Ok(Caller {
        user,
        verified: true,
        ..Caller::default()
    })
}

/// The bearer token of `Authorization: Bearer <token>`, if there is one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Values that expire, at most `capacity` of them: when full, the expired go, and if none
/// has, everything does (a flood of new keys costs reviews, never memory).
struct Cache<K, V> {
    entries: HashMap<K, (V, Instant)>,
    capacity: usize,
}

impl<K: Hash + Eq, V: Clone> Cache<K, V> {
    fn new(capacity: usize) -> Self {
        Cache {
            entries: HashMap::new(),
            capacity,
        }
    }

    fn get(&mut self, key: &K) -> Option<V> {
        let (value, expires) = self.entries.get(key)?;
        if *expires > Instant::now() {
            return Some(value.clone());
        }
        self.entries.remove(key);
        None
    }

    fn insert(&mut self, key: K, value: V, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        if self.entries.len() >= self.capacity {
            let now = Instant::now();
            self.entries.retain(|_, (_, expires)| *expires > now);
            if self.entries.len() >= self.capacity {
                self.entries.clear();
            }
        }
        self.entries.insert(key, (value, Instant::now() + ttl));
    }
}

#[cfg(test)]
mod tests {
    use super::certificate::subject_names;
    use super::*;

    #[test]
    fn accesses_read_as_permissions() {
        assert_eq!(
            Access::pods("create", "exec", "shop", "web").describe(),
            "create pods/exec of pod \"web\" in namespace \"shop\""
        );
        assert_eq!(
            Access::pods("list", "", "", "").describe(),
            "list pods in all namespaces"
        );
        assert_eq!(
            Access::node_debugging("n1").describe(),
            "create nodes/proxy of node \"n1\""
        );
    }

    #[test]
    fn only_bearer_tokens_count() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(AUTHORIZATION, "Basic YTpi".parse().unwrap());
        assert_eq!(bearer(&headers), None);
        headers.insert(AUTHORIZATION, "Bearer  ".parse().unwrap());
        assert_eq!(bearer(&headers), None);
        headers.insert(AUTHORIZATION, "bearer abc".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc"));
    }

    /// A DER element of `tag` holding `contents`, in long form past 127 bytes.
    fn element(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match contents.len() {
            n @ 0..=127 => out.push(n as u8),
            n => out.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(contents);
        out
    }

    fn attribute(oid: &[u8], kind: u8, value: &str) -> Vec<u8> {
        let pair = [element(0x06, oid), element(kind, value.as_bytes())].concat();
        element(0x31, &element(0x30, &pair))
    }

    #[test]
    fn a_subject_names_the_user_and_groups_as_the_api_server_reads_it() {
        let long_group = "g".repeat(300);
        let attributes = [
            attribute(&[0x55, 0x04, 0x06], 0x13, "DE"),
            attribute(&[0x55, 0x04, 0x0a], 0x13, "developers"),
            attribute(&[0x55, 0x04, 0x0a], 0x0c, &long_group),
            attribute(&[0x55, 0x04, 0x03], 0x0c, "erin"),
            // A BMPString is skipped, not misread.
            attribute(&[0x55, 0x04, 0x0a], 0x1e, "x"),
        ];
        let subject = attributes.concat();
        assert_eq!(
            subject_names(&subject),
            Some((
                Some("erin".to_owned()),
                vec!["developers".to_owned(), long_group]
            ))
        );
        assert_eq!(subject_names(&[]), Some((None, vec![])));
        // Cut inside an attribute, or with a length past the end: not read.
        let ends: Vec<usize> = attributes
            .iter()
            .scan(0, |end, a| {
                *end += a.len();
                Some(*end)
            })
            .collect();
        for cut in (1..subject.len()).filter(|c| !ends.contains(c)) {
            assert_eq!(subject_names(&subject[..cut]), None, "cut at {cut}");
        }
        assert_eq!(subject_names(&[0x31, 0x85, 1, 2, 3, 4, 5]), None);
        assert_eq!(subject_names(&[0x30, 0x00]), None);
    }

    #[test]
    fn a_certificate_that_is_not_one_is_refused_with_a_reason() {
        let err = Caller::from_certificate(b"not DER")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("Unauthorized: the client certificate"),
            "{err}"
        );
    }

    #[test]
    fn the_cache_is_bounded_and_forgets() {
        let mut cache = Cache::new(3);
        for k in 0..10 {
            cache.insert(k, k, Duration::from_secs(60));
            assert!(cache.entries.len() <= 3);
        }
        assert_eq!(cache.get(&9), Some(9));
        cache.insert(42, 1, Duration::from_nanos(1));
        std::thread::sleep(Duration::from_millis(1));
        assert_eq!(cache.get(&42), None);
        cache.insert(7, 7, Duration::ZERO);
        assert_eq!(cache.get(&7), None);
    }
}
