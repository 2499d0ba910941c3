//! `tls:`, `insecure:`, `auth:`, `policy:` and `limits:`: who may use the agent, over what, and
//! how much. The agent creates root-capable containers in other pods' namespaces, so the
//! defaults are the safe ones: TLS and Kubernetes authentication unless `insecure: true` says
//! otherwise.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use kdbg_runtimes::Profile;
use serde::Deserialize;

use super::{InvalidConfig, Line};
use crate::duration::GoDuration;

/// `tls:`: the listener's certificate and key (PEM), read again when either file changes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Tls {
    /// The certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// `auth:`: who the caller is, and whether the cluster lets them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Auth {
    /// `kubernetes` (TokenReview and SubjectAccessReview), `token` (one bearer token, an
    /// on-demand agent's) or `none` (with `insecure: true` only).
    pub mode: AuthMode,
    /// Empty: the in-cluster service account; a path: that kubeconfig (tests, agents run out
    /// of the cluster).
    pub kubeconfig: String,
    /// Client certificates signed by the CAs in this PEM file are accepted too, as the API
    /// server accepts them: the certificate's CN is the user, its O values the groups. Empty:
    /// the cluster's client CA from `kube-system/extension-apiserver-authentication`, when the
    /// agent may read it. Needs `tls:`. Read again when the file changes.
    #[serde(rename = "clientCAFile")]
    pub client_ca_file: String,
    /// How long a token's review and an access decision are reused.
    #[serde(rename = "cacheTTL")]
    pub cache_ttl: GoDuration,
    /// The audiences tokens must be for (TokenReview's `spec.audiences`); empty: the API
    /// server's.
    pub audiences: Vec<String>,
    /// `mode: token`: the SHA-256 of the one token admitted, as 64 hex digits (the token
    /// itself is never in the configuration).
    pub token_sha256: String,
    /// `mode: token`: who holds the token (who started this agent): the user of its
    /// sessions' labels, audit lines and recordings.
    pub user: String,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            mode: AuthMode::Kubernetes,
            kubeconfig: String::new(),
            client_ca_file: String::new(),
            cache_ttl: GoDuration(Duration::from_secs(10)),
            audiences: Vec::new(),
            token_sha256: String::new(),
            user: String::new(),
        }
    }
}

impl Auth {
    /// `tokenSha256` as bytes, when it is 64 hex digits.
    pub fn token_digest(&self) -> Option<[u8; 32]> {
        let hex = self.token_sha256.trim().as_bytes();
        if hex.len() != 64 || !hex.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let mut digest = [0u8; 32];
        for (byte, pair) in digest.iter_mut().zip(hex.chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).ok()?;
            *byte = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(digest)
    }
}

/// `auth.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Bearer tokens checked with a TokenReview, every request authorised with a
    /// SubjectAccessReview.
    #[default]
    Kubernetes,
    /// One bearer token, whose SHA-256 is `auth.tokenSha256`, held by `auth.user`, who may
    /// do anything the policy allows: an on-demand agent, which listens on its pod's
    /// loopback, reached only through a port-forward the API server authorised.
    Token,
    /// Anyone who reaches the port may do anything: tests and loopback-only agents.
    None,
}

/// `policy:`: what sessions may ask for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Policy {
    /// The images sessions may use, as patterns where `*` stands for any run of characters
    /// (`nicolaka/netshoot:*`, `registry.example.com/tools/*`); absent: any image.
    pub images: Option<Vec<String>>,
    /// The capability profiles sessions may choose, and the one they get when they do not.
    pub profiles: Profiles,
    /// How many sessions may run at once.
    pub max_sessions: MaxSessions,
    /// How many retained debug containers (`--retain`) one user may have on the node.
    pub max_retained_per_user: usize,
    /// How many retained debug containers the node may have.
    pub max_retained_per_node: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            images: None,
            profiles: Profiles::default(),
            max_sessions: MaxSessions::default(),
            max_retained_per_user: 10,
            max_retained_per_node: 50,
        }
    }
}

/// `policy.profiles`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Profiles {
    /// Those a session may ask for.
    pub allowed: Vec<Profile>,
    /// The one a session gets when it does not ask.
    pub default: Profile,
}

impl Default for Profiles {
    fn default() -> Self {
        Profiles {
            allowed: Profile::ALL.to_vec(),
            // As `kubectl debug`'s: sysadmin is node-level power, asked for by name.
            default: Profile::General,
        }
    }
}

/// `policy.maxSessions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct MaxSessions {
    /// On this node.
    pub total: usize,
    /// Of one user.
    pub per_user: usize,
    /// In one target container.
    pub per_target: usize,
}

impl MaxSessions {
    /// No limit: benchmarks and scale tests.
    pub const UNLIMITED: MaxSessions = MaxSessions {
        total: usize::MAX,
        per_user: usize::MAX,
        per_target: usize::MAX,
    };
}

impl Default for MaxSessions {
    fn default() -> Self {
        MaxSessions {
            total: 100,
            per_user: 10,
            per_target: 5,
        }
    }
}

/// `limits:`: what one connection may hold of the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Limits {
    /// Open connections at most; past it, new ones are closed at once. The agent also keeps
    /// it under its file limit (raised to the hard limit at start), with room to spare for
    /// the runtime's sockets and the sessions' streams.
    pub max_connections: usize,
    /// Connections that have not yet made an authenticated request (a TLS handshake or
    /// headers under way, or idle) at most; when one more comes, the oldest of them is
    /// closed. 0: three quarters of `maxConnections`, so authenticated sessions and health
    /// checks always keep headroom, however many sockets a client holds open.
    pub max_unauthenticated: usize,
    /// A client has this long to send a request's headers (and, with TLS, to finish the
    /// handshake); an idle connection is closed after it too.
    pub header_timeout: GoDuration,
    /// The longest query string.
    pub max_query_bytes: usize,
}

impl Limits {
    /// How many connections may wait to authenticate: `maxUnauthenticated`, else three
    /// quarters of `maxConnections`; at least 1, and below `maxConnections`.
    pub fn unauthenticated_cap(&self) -> usize {
        let cap = match self.max_unauthenticated {
            0 => self.max_connections / 4 * 3,
            n => n,
        };
        cap.min(self.max_connections.saturating_sub(1)).max(1)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 4096,
            max_unauthenticated: 0,
            header_timeout: GoDuration(Duration::from_secs(10)),
            max_query_bytes: 16 << 10,
        }
    }
}

/// Whether `image` matches `pattern`, where `*` stands for any run of characters.
pub fn image_matches(pattern: &str, image: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        return pattern == image;
    };
    if parts.len() == 1 {
        return pattern == image;
    }
    let Some(mut rest) = image.strip_prefix(first) else {
        return false;
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// The checks of these sections that span keys: what `Config::parse` adds. `listen` is
/// where the agent listens.
pub fn check(
    listen: SocketAddr,
    tls: Option<&Tls>,
    insecure: bool,
    auth: &Auth,
    policy: &Policy,
    line_of: impl Fn(&str) -> Line,
) -> Result<(), InvalidConfig> {
    check_token(listen, tls, auth, &line_of)?;
    // A token on loopback is plain HTTP nobody else can read: the port-forward's stream.
    if tls.is_none() && !insecure && auth.mode != AuthMode::Token {
        return Err(InvalidConfig::PlainHttp);
    }
    if auth.mode == AuthMode::None && !insecure {
        return Err(InvalidConfig::NoAuth {
            line: line_of("mode"),
        });
    }
    if !auth.client_ca_file.trim().is_empty() {
        if auth.mode != AuthMode::Kubernetes {
            return Err(InvalidConfig::ClientCaWithoutAuth {
                line: line_of("clientCAFile"),
            });
        }
        if tls.is_none() {
            return Err(InvalidConfig::ClientCaWithoutTls {
                line: line_of("clientCAFile"),
            });
        }
    }
    let profiles = &policy.profiles;
    if profiles.allowed.is_empty() {
        return Err(InvalidConfig::NoProfiles {
            line: line_of("allowed"),
        });
    }
    if !profiles.allowed.contains(&profiles.default) {
        return Err(InvalidConfig::DefaultNotAllowed {
            line: line_of("default"),
            default: profiles.default,
        });
    }
    if let Some(images) = &policy.images
        && let Some(empty) = images.iter().position(|p| p.trim().is_empty())
    {
        return Err(InvalidConfig::EmptyImagePattern {
            line: line_of("images"),
            item: empty + 1,
        });
    }
    let max = &policy.max_sessions;
    if max.total == 0 || max.per_user == 0 || max.per_target == 0 {
        return Err(InvalidConfig::ZeroMaxSessions {
            line: line_of("maxSessions"),
        });
    }
    Ok(())
}

/// The checks of `auth.mode: token`: a well-formed hash and a user, its keys only with it,
/// and plain HTTP only on loopback.
fn check_token(
    listen: SocketAddr,
    tls: Option<&Tls>,
    auth: &Auth,
    line_of: &impl Fn(&str) -> Line,
) -> Result<(), InvalidConfig> {
    if auth.mode != AuthMode::Token {
        let key = [("tokenSha256", &auth.token_sha256), ("user", &auth.user)]
            .into_iter()
            .find(|(_, value)| !value.is_empty());
        return match key {
            Some((key, _)) => Err(InvalidConfig::TokenKeyWithoutToken {
                key,
                line: line_of(key),
            }),
            None => Ok(()),
        };
    }
    if auth.token_digest().is_none() {
        return Err(InvalidConfig::TokenHash {
            line: line_of("tokenSha256"),
            found: if auth.token_sha256.trim().is_empty() {
                "is not set"
            } else {
                "is not 64 hex digits"
            },
        });
    }
    if auth.user.trim().is_empty() {
        return Err(InvalidConfig::NoTokenUser {
            line: line_of("user"),
        });
    }
    if tls.is_none() && !listen.ip().is_loopback() {
        return Err(InvalidConfig::TokenInClear {
            line: line_of("listen"),
            listen,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_safest_useful_ones() {
        let policy = Policy::default();
        assert_eq!(policy.profiles.default, Profile::General);
        assert_eq!(
            (policy.max_retained_per_user, policy.max_retained_per_node),
            (10, 50)
        );
        let limits = Limits::default();
        assert_eq!(limits.unauthenticated_cap(), 3072);
        let tight = Limits {
            max_connections: 100,
            max_unauthenticated: 500,
            ..limits
        };
        assert_eq!(tight.unauthenticated_cap(), 99, "below maxConnections");
    }

    #[test]
    fn a_token_hash_is_64_hex_digits_and_nothing_else() {
        let auth = |hash: &str| Auth {
            token_sha256: hash.into(),
            ..Auth::default()
        };
        let upper = "AB".repeat(32);
        assert_eq!(auth(&upper).token_digest(), Some([0xab; 32]));
        // `u8::from_str_radix` would take "+f" as 15.
        assert_eq!(auth(&format!("+f{}", "0".repeat(62))).token_digest(), None);
        assert_eq!(auth(&"0".repeat(63)).token_digest(), None);
        assert_eq!(auth(&"é".repeat(32)).token_digest(), None);
    }

    #[test]
    fn image_patterns_match_as_globs() {
        assert!(image_matches(
            "nicolaka/netshoot:*",
            "nicolaka/netshoot:latest"
        ));
        assert!(image_matches("busybox:*", "busybox:1.36"));
        assert!(!image_matches("busybox:*", "evil/busybox:1.36"));
        assert!(!image_matches("busybox:*", "busybox"));
        assert!(image_matches("busybox", "busybox"));
        assert!(image_matches("*/tools/*:v1", "r.example/tools/net:v1"));
        assert!(!image_matches("*/tools/*:v1", "r.example/tools/net:v2"));
        assert!(image_matches("*", "anything"));
        assert!(!image_matches("a*a", "a"));
    }
}
