//! Registry credentials from a Docker `config.json` (the `.dockerconfigjson` key of a
//! `kubernetes.io/dockerconfigjson` secret), found by registry.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;

use crate::reference::DOCKER_HUB;

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

impl Credentials {
    /// The `Authorization` value of HTTP basic auth.
    pub fn basic(&self) -> String {
        let pair = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }
}

/// Credentials that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The file could not be read.
    #[error("reading registry credentials {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a Docker `config.json`.
    #[error("{path} is not a Docker config.json ({{\"auths\": ...}})")]
    Parse {
        /// The file.
        path: String,
        /// What the JSON parser said.
        source: serde_json::Error,
    },
    /// An entry's `auth` is not base64 of `user:password`.
    #[error("the auth of {server:?} in {path} is not base64 of user:password")]
    BadAuth {
        /// The file.
        path: String,
        /// The entry.
        server: String,
    },
}

/// Registry credentials by registry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Auths(BTreeMap<String, Credentials>);

impl Auths {
    /// Reads a `config.json`-style file.
    pub fn load(path: &Path) -> Result<Auths, CredentialsError> {
        let name = path.display().to_string();
        let text = std::fs::read(path).map_err(|source| CredentialsError::Read {
            path: name.clone(),
            source,
        })?;
        Auths::parse(&text, &name)
    }

    /// Parses `{"auths": {"registry": {"auth": base64("user:pass")}}}` (or `username` and
    /// `password` fields); `path` names the file in errors.
    pub fn parse(json: &[u8], path: &str) -> Result<Auths, CredentialsError> {
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
        let file: File =
            serde_json::from_slice(json).map_err(|source| CredentialsError::Parse {
                path: path.to_owned(),
                source,
            })?;
        let mut auths = BTreeMap::new();
        for (server, entry) in file.auths {
            let credentials = match (entry.auth, entry.username, entry.password) {
                (Some(auth), _, _) if !auth.is_empty() => {
                    decode_auth(&auth).ok_or_else(|| CredentialsError::BadAuth {
                        path: path.to_owned(),
                        server: server.clone(),
                    })?
                }
                (_, Some(username), Some(password)) => Credentials { username, password },
                _ => continue,
            };
            auths.insert(registry_key(&server), credentials);
        }
        Ok(Auths(auths))
    }

    /// The credentials for `registry` (as in a [`crate::Reference`]), if any.
    pub fn get(&self, registry: &str) -> Option<&Credentials> {
        self.0.get(&registry_key(registry))
    }
}

pub(crate) fn decode_auth(auth: &str) -> Option<Credentials> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (username, password) = decoded.split_once(':')?;
    Some(Credentials {
        username: username.to_owned(),
        password: password.to_owned(),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_credentials_are_found_by_registry() {
        let json = br#"{"auths": {
            "https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNzOndvcmQ="},
            "127.0.0.1:5000": {"username": "u", "password": "p"},
            "empty.example": {}
        }}"#;
        let auths = Auths::parse(json, "config.json").unwrap();
        let hub = auths.get("docker.io").unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("user", "pass:word")
        );
        assert_eq!(auths.get("127.0.0.1:5000").unwrap().username, "u");
        assert!(auths.get("empty.example").is_none());
        assert!(!format!("{hub:?}").contains("pass:word"));
        let err = Auths::parse(br#"{"auths": {"r": {"auth": "!!"}}}"#, "c.json").unwrap_err();
        assert!(matches!(&err, CredentialsError::BadAuth { server, .. } if server == "r"));
        assert!(err.to_string().contains("c.json"), "{err}");
    }
}
