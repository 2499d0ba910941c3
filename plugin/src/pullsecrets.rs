//! Image pull secrets, read with the user's own rights, and the one credential a pull sends.
//!
//! The secrets are `--image-pull-secret` (and the configuration file's `imagePullSecrets`),
//! then the target pod's `imagePullSecrets`, then its service account's. They are read only
//! when a pull is about to happen, and matched to the image by the kubelet's rules
//! ([`kdbg_runtimes::keyring`]); the best match, and only it, goes to the agent in the pull's
//! body. A secret the user may not read, that is not there, or that is not a Docker config is
//! named once on stderr, and the pull goes on without it.

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kdbg_api::RegistryCredential;
use kdbg_runtimes::keyring::Keyring;
use kube::{Api, Client};

/// The `type` of a secret holding a `.dockerconfigjson`.
const DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";
/// The `type` of a secret holding a legacy `.dockercfg`.
const DOCKER_CFG: &str = "kubernetes.io/dockercfg";

/// Where a pull's credentials may come from.
#[derive(Clone)]
pub struct PullSecrets {
    client: Client,
    namespace: String,
    /// Secret names in the order they are preferred among equally specific matches.
    names: Vec<String>,
    /// The pod's service account, whose `imagePullSecrets` come last.
    service_account: Option<String>,
}

impl std::fmt::Debug for PullSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullSecrets")
            .field("namespace", &self.namespace)
            .field("names", &self.names)
            .field("service_account", &self.service_account)
            .finish()
    }
}

impl PullSecrets {
    /// The secrets `asked` (flag and configuration file), then `pod`'s, then those of the
    /// service account `service_account`, all in `namespace`.
    pub fn new(
        client: Client,
        namespace: &str,
        asked: &[String],
        pod: &[String],
        service_account: Option<String>,
    ) -> PullSecrets {
        let mut names: Vec<String> = Vec::new();
        for name in asked.iter().chain(pod) {
            if !name.is_empty() && !names.contains(name) {
                names.push(name.clone());
            }
        }
        PullSecrets {
            client,
            namespace: namespace.to_owned(),
            names,
            service_account,
        }
    }

    /// The credential to send for pulling `image`, if a secret has one for its registry;
    /// what could not be read is said on stderr, once each.
    pub async fn credential_for(&self, image: &str) -> Option<RegistryCredential> {
        let mut names = self.names.clone();
        for name in self.service_account_secrets().await {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut keyring = Keyring::new();
        for name in &names {
            let source = format!("secret {}/{name}", self.namespace);
            match secrets.get_opt(name).await {
                Ok(Some(secret)) => {
                    if let Err(why) = add(&mut keyring, &secret, &source) {
                        warn(&format!("{why}; pulling without it"));
                    }
                }
                Ok(None) => warn(&format!(
                    "image pull {source} not found; pulling without it"
                )),
                Err(e) => warn(&format!(
                    "could not read image pull {source} ({}); pulling without it",
                    refusal(&e)
                )),
            }
        }
        let found = keyring.lookup(image).into_iter().next()?;
        Some(RegistryCredential {
            key: found.key.to_owned(),
            source: found.source.to_owned(),
            username: found.credentials.username.clone(),
            password: found.credentials.password.clone(),
        })
    }

    /// The `imagePullSecrets` of the pod's service account; none when it cannot be read
    /// (said once, unless it is simply not there).
    async fn service_account_secrets(&self) -> Vec<String> {
        let Some(account) = &self.service_account else {
            return Vec::new();
        };
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.namespace);
        match accounts.get_opt(account).await {
            Ok(found) => found
                .and_then(|a| a.image_pull_secrets)
                .into_iter()
                .flatten()
                .map(|r| r.name)
                .filter(|n| !n.is_empty())
                .collect(),
            Err(e) => {
                warn(&format!(
                    "could not read service account {}/{account} for its image pull secrets ({}); pulling without them",
                    self.namespace,
                    refusal(&e)
                ));
                Vec::new()
            }
        }
    }
}

/// Adds a secret's Docker config to `keyring`; why not, naming the secret (never a value).
fn add(keyring: &mut Keyring, secret: &Secret, source: &str) -> Result<(), String> {
    let kind = secret.type_.as_deref().unwrap_or("Opaque");
    let (key, legacy) = match kind {
        DOCKER_CONFIG_JSON => (".dockerconfigjson", false),
        DOCKER_CFG => (".dockercfg", true),
        other => {
            return Err(format!(
                "image pull {source} is of type {other}, not {DOCKER_CONFIG_JSON}: re-create it with `kubectl create secret docker-registry`"
            ));
        }
    };
    let data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .ok_or_else(|| format!("image pull {source} has no {key}"))?;
    keyring
        .add_docker_config(&data.0, legacy, source)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// What the API server said, briefly: `forbidden: User "bob" cannot get ...`.
fn refusal(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

fn warn(line: &str) {
    eprintln!("Warning: {line}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn secret(kind: &str, key: &str, value: &str) -> Secret {
        Secret {
            type_: Some(kind.to_owned()),
            data: Some(BTreeMap::from([(
                key.to_owned(),
                k8s_openapi::ByteString(value.as_bytes().to_vec()),
            )])),
            ..Secret::default()
        }
    }

    #[test]
    fn only_docker_configs_are_used_and_refusals_name_the_secret() {
        let mut keyring = Keyring::new();
        let auths =
            r#"{"auths":{"registry.example.com":{"username":"robot","password":"s3cret"}}}"#;
        add(
            &mut keyring,
            &secret(DOCKER_CONFIG_JSON, ".dockerconfigjson", auths),
            "secret prod/regcred",
        )
        .unwrap();
        let found = keyring.lookup("registry.example.com/tools:1");
        assert_eq!(found[0].source, "secret prod/regcred");
        let opaque = add(
            &mut keyring,
            &secret("Opaque", ".dockerconfigjson", auths),
            "secret prod/opaque",
        )
        .unwrap_err();
        assert!(
            opaque.contains("secret prod/opaque is of type Opaque"),
            "{opaque}"
        );
        let broken = add(
            &mut keyring,
            &secret(
                DOCKER_CONFIG_JSON,
                ".dockerconfigjson",
                "{\"auths\": s3cret",
            ),
            "secret prod/broken",
        )
        .unwrap_err();
        assert!(broken.contains("secret prod/broken"), "{broken}");
        assert!(!broken.contains("s3cret"), "{broken}");
        let legacy = r#"{"legacy.example.com":{"auth":"cm9ib3Q6czNjcmV0"}}"#;
        add(
            &mut keyring,
            &secret(DOCKER_CFG, ".dockercfg", legacy),
            "secret prod/old",
        )
        .unwrap();
        assert_eq!(
            keyring.lookup("legacy.example.com/tools")[0]
                .credentials
                .username,
            "robot"
        );
    }
}
