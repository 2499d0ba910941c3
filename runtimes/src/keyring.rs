//! The credentials of image pull secrets, matched to an image as the kubelet matches them.
//!
//! A pod's `imagePullSecrets` hold Docker configs: `.dockerconfigjson` (`{"auths": {...}}`) or
//! the legacy `.dockercfg` (the map alone). Their keys are registries as people write them:
//! `registry.example.com:5000`, `https://index.docker.io/v1/`, `*.example.com`,
//! `quay.io/team`. [`Keyring`] answers "which of these may pull this image, best first" with
//! the kubelet's rules (`pkg/credentialprovider/keyring.go`), so that a debug container's
//! image is pulled with the credentials the pod's own images would get:
//!
//! - a key's `http://` or `https://` is dropped, and so is a leading `/v1` or `/v2` path
//!   segment (`https://index.docker.io/v1/` is the host `index.docker.io`);
//! - the image is normalised first (`nicolaka/netshoot` is `docker.io/nicolaka/netshoot`);
//! - a key matches when its port equals the image's (both may be absent), its host has as many
//!   dot-separated labels as the image's and each label matches as a glob (`*.example.com`
//!   matches `a.example.com`, not `a.b.example.com` nor `example.com`), and its path, if any,
//!   is a prefix of the image's repository;
//! - matches come most specific first: by key, reverse-sorted;
//! - only when nothing matched, an `index.docker.io` key (Docker's own default key) serves
//!   Docker Hub images.
//!
//! One deliberate difference: the kubelet compares paths as strings, so that `quay.io/team`
//! also matches `quay.io/teamB/tools`; here paths match whole segments, so a team's
//! credentials are not offered to its namesake.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::containerd::credentials::{Credentials, decode_auth};
use crate::reference::{DOCKER_HUB, Reference};

/// Docker's default key once its scheme and `/v1/` are dropped: serves Docker Hub images that
/// no other key matched.
const DOCKER_DEFAULT_HOST: &str = "index.docker.io";

/// Registry credentials from Docker configs, each entry with where it came from: the
/// kubelet's `BasicDockerKeyring`, one for all of a pod's pull secrets. (The kubelet asks the
/// node's own credentials after those of the secrets, in a keyring of their own.)
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    entries: Vec<Entry>,
}

/// One registry's credentials.
#[derive(Debug, Clone)]
struct Entry {
    /// The key as written in its document.
    key: String,
    /// The key as the kubelet indexes it: host, `:port` if any, and path, without scheme or
    /// `/v1`; orders the matches.
    index: String,
    /// What it matches.
    pattern: Pattern,
    credentials: Credentials,
    /// Where it came from, for messages.
    source: String,
}

/// A key, or an image's name, split for matching.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    /// The host's dot-separated labels; globs in a key.
    labels: Vec<String>,
    /// The port, empty when none is written.
    port: String,
    /// The path's segments (a key's prefix, an image's repository).
    path: Vec<String>,
}

/// Credentials that matched an image.
#[derive(Debug, Clone, Copy)]
pub struct Found<'a> {
    /// The entry's key, as written in its document.
    pub key: &'a str,
    /// Where the entry came from, e.g. `secret prod/regcred`.
    pub source: &'a str,
    /// The credentials.
    pub credentials: &'a Credentials,
}

/// A Docker config that cannot be added to a [`Keyring`]. Messages name the document and the
/// entry, never a value from it.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// The document is not JSON, or not a Docker config.
    #[error(
        "{origin} is not a Docker config ({what} at line {line} column {column}): expected \
         {shape}, as `kubectl create secret docker-registry` writes it"
    )]
    Parse {
        /// The document, e.g. `secret prod/regcred`.
        origin: String,
        /// What is wrong, without the offending value.
        what: &'static str,
        /// Where, in the document.
        line: usize,
        /// Where, in the line.
        column: usize,
        /// The shape expected.
        shape: &'static str,
    },
    /// An entry's `auth` is not base64 of `user:password`.
    #[error(
        "the auth of {key:?} in {origin} is not base64 of user:password (which \
         `kubectl create secret docker-registry` writes)"
    )]
    BadAuth {
        /// The document.
        origin: String,
        /// The entry's key.
        key: String,
    },
}

/// An entry of a Docker config as written.
#[derive(Deserialize)]
struct RawEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

impl Keyring {
    /// An empty keyring.
    pub fn new() -> Keyring {
        Keyring::default()
    }

    /// Adds the entries of a `.dockerconfigjson` document (`{"auths": {...}}`), or with
    /// `legacy` of a `.dockercfg` one (the map alone); `source` names it in messages and in
    /// what [`Keyring::lookup`] finds. Says how many entries it added: those with neither
    /// `auth` nor a user name or password are skipped, and a document without `auths` adds
    /// none, as with the kubelet.
    ///
    /// An entry's non-empty `auth` (base64 of `user:password`) wins over its `username` and
    /// `password`, as the kubelet's `DockerConfigEntry` decoding does. Nothing is added when
    /// the document has an error.
    pub fn add_docker_config(
        &mut self,
        json: &[u8],
        legacy: bool,
        source: &str,
    ) -> Result<usize, KeyringError> {
        #[derive(Deserialize)]
        struct DockerConfigJson {
            #[serde(default)]
            auths: BTreeMap<String, RawEntry>,
        }
        let parse_error = |e: serde_json::Error| KeyringError::Parse {
            origin: source.to_owned(),
            what: match e.classify() {
                serde_json::error::Category::Io | serde_json::error::Category::Syntax => "not JSON",
                serde_json::error::Category::Eof => "JSON cut short",
                serde_json::error::Category::Data => "a value of the wrong type",
            },
            line: e.line(),
            column: e.column(),
            shape: if legacy {
                r#"{"registry": {"auth": "<base64 of user:password>"}}"#
            } else {
                r#"{"auths": {"registry": {"auth": "<base64 of user:password>"}}}"#
            },
        };
        let raw = if legacy {
            serde_json::from_slice::<BTreeMap<String, RawEntry>>(json).map_err(parse_error)?
        } else {
            serde_json::from_slice::<DockerConfigJson>(json)
                .map_err(parse_error)?
                .auths
        };
        let mut added = Vec::with_capacity(raw.len());
        for (key, entry) in raw {
            let credentials = match entry {
                RawEntry {
                    auth: Some(auth), ..
                } if !auth.is_empty() => {
                    decode_entry_auth(&auth).ok_or_else(|| KeyringError::BadAuth {
                        origin: source.to_owned(),
                        key: key.clone(),
                    })?
                }
                RawEntry {
                    username, password, ..
                } => {
                    let username = username.unwrap_or_default();
                    let password = password.unwrap_or_default();
                    if username.is_empty() && password.is_empty() {
                        continue;
                    }
                    Credentials { username, password }
                }
            };
            let (index, pattern) = parse_key(&key);
            added.push(Entry {
                key,
                index,
                pattern,
                credentials,
                source: source.to_owned(),
            });
        }
        let count = added.len();
        self.entries.append(&mut added);
        Ok(count)
    }

    /// The credentials that may pull `image` (a reference as users write it:
    /// `nicolaka/netshoot`, `registry.example.com:5000/team/tools:1`), most specific key
    /// first, entries of one key in the order they were added. An `index.docker.io` key
    /// serves a Docker Hub image only when no other key matched it. An image that does not
    /// parse matches nothing (pulling it fails on its own).
    pub fn lookup(&self, image: &str) -> Vec<Found<'_>> {
        let Some((target, docker_hub)) = image_pattern(image) else {
            return Vec::new();
        };
        let mut found: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|entry| entry.pattern.matches(&target))
            .collect();
        if found.is_empty() && docker_hub {
            found = self
                .entries
                .iter()
                .filter(|entry| entry.index == DOCKER_DEFAULT_HOST)
                .collect();
        }
        // Stable: entries under one key keep the order they were added in.
        found.sort_by(|a, b| b.index.cmp(&a.index));
        found
            .into_iter()
            .map(|entry| Found {
                key: &entry.key,
                source: &entry.source,
                credentials: &entry.credentials,
            })
            .collect()
    }
}

/// Decodes an entry's `auth`, with or without base64's `=` padding, as the kubelet's
/// `decodeDockerConfigFieldAuth` does.
fn decode_entry_auth(auth: &str) -> Option<Credentials> {
    let auth = auth.trim();
    let padding = if auth.ends_with('=') {
        0
    } else {
        (4 - auth.len() % 4) % 4
    };
    decode_auth(&format!("{auth}{}", "=".repeat(padding)))
}

impl Pattern {
    /// Whether `self`, a key, matches `target`, an image: same port, as many host labels,
    /// each matching as a glob, and the key's path a prefix of the image's in whole segments.
    fn matches(&self, target: &Pattern) -> bool {
        self.port == target.port
            && self.labels.len() == target.labels.len()
            && self
                .labels
                .iter()
                .zip(&target.labels)
                .all(|(glob, label)| glob_matches(glob.as_bytes(), label.as_bytes()))
            && target.path.starts_with(&self.path)
    }
}

/// Splits a key: drops `http://` or `https://`, anything after `?` or `#`, user info before
/// `@`, and a leading `/v1` or `/v2` path segment (Docker writes `https://index.docker.io/v1/`
/// for Hub; the kubelet treats `/v1/` and `/v2/` as the host itself). Returns the kubelet's
/// index string (host and remaining path, no scheme) and the pattern.
fn parse_key(key: &str) -> (String, Pattern) {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let rest = rest.split(['?', '#']).next().unwrap_or(rest);
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let path = ["/v1/", "/v2/"]
        .iter()
        .find(|api| path.starts_with(*api))
        .map_or(path, |_| &path[3..]);
    let index = if path.is_empty() || path == "/" {
        authority.to_owned()
    } else {
        format!("{authority}{path}")
    };
    (index, pattern(authority, path))
}

/// An image's name as the kubelet matches it: the normalised name, `docker.io/library/busybox`
/// for `busybox`, `index.docker.io/x` being `docker.io/library/x` as Docker normalises it; and
/// whether it is on Docker Hub.
fn image_pattern(image: &str) -> Option<(Pattern, bool)> {
    let reference = Reference::parse(image).ok()?;
    if reference.registry == DOCKER_DEFAULT_HOST {
        let repository = if reference.repository.contains('/') {
            reference.repository
        } else {
            format!("library/{}", reference.repository)
        };
        return Some((pattern(DOCKER_HUB, &repository), true));
    }
    let docker_hub = reference.registry == DOCKER_HUB;
    Some((
        pattern(&reference.registry, &reference.repository),
        docker_hub,
    ))
}

/// Splits `host[:port]` and a `/`-separated path.
fn pattern(authority: &str, path: &str) -> Pattern {
    let (host, port) = split_host_port(authority);
    Pattern {
        labels: host.split('.').map(str::to_owned).collect(),
        port: port.to_owned(),
        path: path
            .split('/')
            .filter(|segment| !segment.is_empty())
            .map(str::to_owned)
            .collect(),
    }
}

/// Splits a port off a host as Go's `net.SplitHostPort` does, or leaves the host whole (and
/// the port empty) where that fails: `[::1]:5000` is `::1` and `5000`, `a:b:c` is whole.
fn split_host_port(authority: &str) -> (&str, &str) {
    if let Some(bracketed) = authority.strip_prefix('[') {
        if let Some((host, rest)) = bracketed.split_once(']')
            && let Some(port) = rest.strip_prefix(':')
            && !port.contains(':')
        {
            return (host, port);
        }
        return (authority, "");
    }
    match authority.split_once(':') {
        Some((host, port)) if !port.contains(':') => (host, port),
        _ => (authority, ""),
    }
}

/// Whether `label` matches `glob`, where `*` stands for any run of characters, as in Go's
/// `filepath.Match` within one host label. (Its `?` cannot reach here: in a key it starts a
/// query, as `url.Parse` has it.)
fn glob_matches(glob: &[u8], label: &[u8]) -> bool {
    match glob.split_first() {
        None => label.is_empty(),
        Some((b'*', rest)) => (0..=label.len()).any(|skip| glob_matches(rest, &label[skip..])),
        Some((c, rest)) => label.first() == Some(c) && glob_matches(rest, &label[1..]),
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    fn auth(user: &str, password: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    }

    /// A keyring of one `.dockerconfigjson` whose entries have the given keys, each with the
    /// user name `user-<key>` (`:` made `_`).
    fn keyring_of(keys: &[&str]) -> Keyring {
        let auths: serde_json::Map<String, serde_json::Value> = keys
            .iter()
            .map(|key| {
                let user = format!("user-{}", key.replace(':', "_"));
                let entry = serde_json::json!({"auth": auth(&user, "pw")});
                ((*key).to_owned(), entry)
            })
            .collect();
        let json = serde_json::json!({ "auths": auths }).to_string();
        let mut keyring = Keyring::new();
        assert_eq!(
            keyring
                .add_docker_config(json.as_bytes(), false, "secret ns/regcred")
                .unwrap(),
            keys.len()
        );
        keyring
    }

    /// The keys found for `image`, in order.
    fn keys<'a>(keyring: &'a Keyring, image: &str) -> Vec<&'a str> {
        keyring
            .lookup(image)
            .iter()
            .map(|found| found.key)
            .collect()
    }

    #[test]
    fn the_scheme_of_a_key_is_optional() {
        let keyring = keyring_of(&["https://a.example.com", "http://b.example.com"]);
        assert_eq!(
            keys(&keyring, "a.example.com/tools"),
            ["https://a.example.com"]
        );
        assert_eq!(
            keys(&keyring, "b.example.com/tools"),
            ["http://b.example.com"]
        );
        let found = keyring.lookup("a.example.com/tools:1");
        assert_eq!(found[0].source, "secret ns/regcred");
        assert_eq!(found[0].credentials.username, "user-https_//a.example.com");
    }

    #[test]
    fn api_version_paths_name_the_host_not_a_prefix() {
        let keyring = keyring_of(&["https://r.example.com/v2/", "q.example.com/v1/team"]);
        assert_eq!(
            keys(&keyring, "r.example.com/any/tools"),
            ["https://r.example.com/v2/"]
        );
        // `/v1` goes, the rest of the path stays a prefix.
        assert_eq!(
            keys(&keyring, "q.example.com/team/tools"),
            ["q.example.com/v1/team"]
        );
        assert!(keys(&keyring, "q.example.com/other/tools").is_empty());
    }

    #[test]
    fn docker_hub_keys_match_as_the_kubelet_matches_them() {
        for key in [
            "https://index.docker.io/v1/",
            "index.docker.io",
            "docker.io",
        ] {
            let keyring = keyring_of(&[key]);
            for image in [
                "nicolaka/netshoot",
                "busybox:1",
                "docker.io/library/busybox",
                "index.docker.io/nicolaka/netshoot",
            ] {
                assert_eq!(keys(&keyring, image), [key], "{key} for {image}");
            }
            assert!(
                keys(&keyring, "quay.io/nicolaka/netshoot").is_empty(),
                "{key}"
            );
        }
        // The kubelet knows no other name of Hub.
        let keyring = keyring_of(&["registry-1.docker.io", "*.docker.io"]);
        assert!(keys(&keyring, "nicolaka/netshoot").is_empty());
        // Docker's default key serves Hub only when nothing else matched.
        let keyring = keyring_of(&["https://index.docker.io/v1/", "docker.io/nicolaka"]);
        assert_eq!(keys(&keyring, "nicolaka/netshoot"), ["docker.io/nicolaka"]);
        assert_eq!(keys(&keyring, "busybox"), ["https://index.docker.io/v1/"]);
    }

    #[test]
    fn host_globs_match_label_by_label() {
        let keyring = keyring_of(&["*.example.com", "reg-*.example.org"]);
        assert_eq!(keys(&keyring, "a.example.com/tools"), ["*.example.com"]);
        assert!(keys(&keyring, "a.b.example.com/tools").is_empty());
        assert!(keys(&keyring, "example.com/tools").is_empty());
        assert!(keys(&keyring, "a.example.net/tools").is_empty());
        assert_eq!(
            keys(&keyring, "reg-10.example.org/tools"),
            ["reg-*.example.org"]
        );
        assert!(keys(&keyring, "registry.example.org/tools").is_empty());
    }

    #[test]
    fn ports_match_exactly() {
        let keyring = keyring_of(&["registry.example.com:5000", "plain.example.com"]);
        assert_eq!(
            keys(&keyring, "registry.example.com:5000/team/tools:1"),
            ["registry.example.com:5000"]
        );
        assert!(keys(&keyring, "registry.example.com/team/tools").is_empty());
        assert!(keys(&keyring, "registry.example.com:5001/team/tools").is_empty());
        assert!(keys(&keyring, "plain.example.com:443/tools").is_empty());
        let keyring = keyring_of(&["[::1]:5000"]);
        assert_eq!(keys(&keyring, "[::1]:5000/tools"), ["[::1]:5000"]);
    }

    #[test]
    fn paths_are_prefixes_in_whole_segments() {
        let keyring = keyring_of(&["registry.example.com/team", "other.example.com/team/"]);
        assert_eq!(
            keys(&keyring, "registry.example.com/team/tools"),
            ["registry.example.com/team"]
        );
        assert_eq!(
            keys(&keyring, "registry.example.com/team/sub/tools:1"),
            ["registry.example.com/team"]
        );
        assert!(keys(&keyring, "registry.example.com/teamB/tools").is_empty());
        assert!(keys(&keyring, "registry.example.com/tools").is_empty());
        assert_eq!(
            keys(&keyring, "other.example.com/team/tools"),
            ["other.example.com/team/"]
        );
    }

    #[test]
    fn the_most_specific_key_comes_first() {
        let keyring = keyring_of(&[
            "quay.io",
            "https://quay.io/coreos",
            "quay.io/coreos/etcd",
            "*.io",
        ]);
        assert_eq!(
            keys(&keyring, "quay.io/coreos/etcd:v3"),
            [
                "quay.io/coreos/etcd",
                "https://quay.io/coreos",
                "quay.io",
                "*.io"
            ]
        );
        // One key in two secrets: both, in the order added.
        let mut keyring = Keyring::new();
        for source in ["secret ns/a", "secret ns/b"] {
            let json = format!(
                r#"{{"auths": {{"quay.io": {{"auth": "{}"}}}}}}"#,
                auth("user", "pw")
            );
            keyring
                .add_docker_config(json.as_bytes(), false, source)
                .unwrap();
        }
        let sources: Vec<_> = keyring
            .lookup("quay.io/x")
            .iter()
            .map(|f| f.source)
            .collect();
        assert_eq!(sources, ["secret ns/a", "secret ns/b"]);
    }

    #[test]
    fn empty_entries_are_skipped_and_auth_wins() {
        let json = format!(
            r#"{{"auths": {{
                "empty.example.com": {{}},
                "blank.example.com": {{"auth": "", "username": "", "email": "x@example.com"}},
                "both.example.com": {{"auth": "{}", "username": "fields", "password": "fields"}},
                "fields.example.com": {{"auth": "", "username": "u", "password": "p"}}
            }}}}"#,
            auth("decoded", "pass:word")
        );
        let mut keyring = Keyring::new();
        let added = keyring
            .add_docker_config(json.as_bytes(), false, "file config.json")
            .unwrap();
        assert_eq!(added, 2);
        assert!(keyring.lookup("empty.example.com/x").is_empty());
        assert!(keyring.lookup("blank.example.com/x").is_empty());
        let both = keyring.lookup("both.example.com/x")[0].credentials;
        assert_eq!(
            (both.username.as_str(), both.password.as_str()),
            ("decoded", "pass:word")
        );
        let fields = keyring.lookup("fields.example.com/x")[0].credentials;
        assert_eq!(
            (fields.username.as_str(), fields.password.as_str()),
            ("u", "p")
        );
    }

    #[test]
    fn auth_may_lack_its_padding() {
        let padded = auth("user", "pw");
        assert!(padded.ends_with('='), "{padded}");
        let json = format!(
            r#"{{"auths": {{"r.example.com": {{"auth": "{}"}}}}}}"#,
            padded.trim_end_matches('=')
        );
        let mut keyring = Keyring::new();
        keyring
            .add_docker_config(json.as_bytes(), false, "s")
            .unwrap();
        let found = keyring.lookup("r.example.com/x")[0].credentials;
        assert_eq!(
            (found.username.as_str(), found.password.as_str()),
            ("user", "pw")
        );
    }

    #[test]
    fn bad_auth_names_the_entry_and_the_source_only() {
        let mut keyring = Keyring::new();
        let json = br#"{"auths": {"ok.example.com": {"username": "u", "password": "p"},
                                 "bad.example.com": {"auth": "hunter2!!"}}}"#;
        let err = keyring
            .add_docker_config(json, false, "secret prod/regcred")
            .unwrap_err();
        assert!(
            matches!(&err, KeyringError::BadAuth { key, origin }
                if key == "bad.example.com" && origin == "secret prod/regcred"),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains("bad.example.com") && message.contains("secret prod/regcred"),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
        // All or nothing.
        assert!(keyring.lookup("ok.example.com/x").is_empty());
        // No auth without a colon either.
        let no_colon = base64::engine::general_purpose::STANDARD.encode("nocolon");
        let json = format!(r#"{{"auths": {{"r": {{"auth": "{no_colon}"}}}}}}"#);
        assert!(matches!(
            keyring.add_docker_config(json.as_bytes(), false, "s"),
            Err(KeyringError::BadAuth { .. })
        ));
    }

    #[test]
    fn documents_of_the_wrong_shape_are_refused_without_their_values() {
        let mut keyring = Keyring::new();
        for (json, legacy) in [
            (&br#"not json hunter2"#[..], false),
            (br#"{"auths": {"r": {"password": 12345678}}}"#, false),
            (br#"{"auths": "hunter2"}"#, false),
            (br#"["hunter2"]"#, true),
            (br#"{"auths": {"r": {"au"#, false),
        ] {
            let err = keyring
                .add_docker_config(json, legacy, "secret prod/regcred")
                .unwrap_err();
            let message = err.to_string();
            assert!(matches!(err, KeyringError::Parse { .. }), "{message}");
            assert!(message.contains("secret prod/regcred"), "{message}");
            assert!(
                !message.contains("hunter2") && !message.contains("12345678"),
                "{message}"
            );
        }
        // A config without `auths` (only a credsStore, say) holds nothing for us.
        assert_eq!(
            keyring
                .add_docker_config(br#"{"credsStore": "desktop"}"#, false, "s")
                .unwrap(),
            0
        );
    }

    #[test]
    fn legacy_dockercfg_is_the_map_alone() {
        let json = format!(
            r#"{{"https://index.docker.io/v1/": {{"auth": "{}", "email": "a@example.com"}}}}"#,
            auth("hub", "pw")
        );
        let mut keyring = Keyring::new();
        assert_eq!(
            keyring
                .add_docker_config(json.as_bytes(), true, "secret ns/old")
                .unwrap(),
            1
        );
        let found = keyring.lookup("nicolaka/netshoot");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].credentials.username, "hub");
        assert_eq!(found[0].source, "secret ns/old");
        // The same document read as `.dockerconfigjson` has no `auths`.
        let mut keyring = Keyring::new();
        assert_eq!(
            keyring
                .add_docker_config(json.as_bytes(), false, "s")
                .unwrap(),
            0
        );
    }

    #[test]
    fn debug_never_shows_a_password() {
        let json = format!(
            r#"{{"auths": {{"a.example.com": {{"auth": "{}"}},
                           "b.example.com": {{"username": "u", "password": "hunter2-fields"}}}}}}"#,
            auth("u", "hunter2-auth")
        );
        let mut keyring = Keyring::new();
        keyring
            .add_docker_config(json.as_bytes(), false, "s")
            .unwrap();
        let debug = format!("{keyring:?} {:?}", keyring.lookup("a.example.com/x"));
        assert!(debug.contains("a.example.com"), "{debug}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn images_that_do_not_parse_match_nothing() {
        let keyring = keyring_of(&["*.example.com", "docker.io"]);
        assert!(keyring.lookup("A.example.com/Tools").is_empty());
        assert!(keyring.lookup("").is_empty());
    }
}
