//! The registry auth protocol: a `401` carries a `WWW-Authenticate` challenge, answered with
//! basic auth, or with a bearer token fetched from the challenge's realm (Docker Hub, ghcr.io
//! and most registries), anonymously or with the registry's credentials.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{MAX_DOCUMENT, RegistryError, Session, read_all, status_error};

/// A `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Bearer realm="...",service="...",scope="..."`.
    Bearer(BTreeMap<String, String>),
    /// `Basic realm="..."`.
    Basic,
}

/// Parses a challenge; `None` for schemes we do not speak, or a bearer challenge with no realm.
///
/// Public for `fuzz/`: the header comes from whatever registry an image names, so the fuzz
/// target feeds it arbitrary bytes; nothing outside this module needs it otherwise.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
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

impl Session<'_> {
    /// The `Authorization` value answering `challenge` for a request to `url`.
    pub(super) async fn answer(
        &self,
        url: &str,
        challenge: Challenge,
    ) -> Result<String, RegistryError> {
        let credentials = self.credentials.as_ref();
        let params = match challenge {
            Challenge::Basic => {
                return credentials.map(|c| c.basic()).ok_or_else(|| {
                    RegistryError::NeedsCredentials {
                        url: url.to_owned(),
                        registry: self.reference.registry.clone(),
                    }
                });
            }
            Challenge::Bearer(params) => params,
        };
        let realm = &params["realm"];
        // Credentials go to a token realm over HTTPS only (or plain HTTP for a registry the
        // configuration declares insecure, a lab's).
        let plain_allowed = self.insecure() && realm.starts_with("http://");
        if !(realm.starts_with("https://") || plain_allowed) {
            return Err(RegistryError::InsecureRealm {
                url: url.to_owned(),
                realm: realm.clone(),
            });
        }
        let query = {
            let mut query = form_urlencoded::Serializer::new(String::new());
            if let Some(service) = params.get("service") {
                query.append_pair("service", service);
            }
            let scope = format!("repository:{}:pull", self.reference.repository);
            query.append_pair("scope", &scope);
            query.finish()
        };
        let separator = if realm.contains('?') { '&' } else { '?' };
        let token_url = format!("{realm}{separator}{query}");
        let authorization = credentials.map(|c| c.basic());
        let response = self
            .send(&token_url, None, authorization.as_deref())
            .await?;
        if !response.status().is_success() {
            return Err(status_error(&token_url, response, self.sent.as_deref()).await);
        }
        #[derive(Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let body = read_all(&token_url, response, MAX_DOCUMENT).await?;
        let token: Token =
            serde_json::from_slice(&body).map_err(|source| RegistryError::TokenJson {
                url: token_url.clone(),
                source,
            })?;
        let token = token
            .token
            .or(token.access_token)
            .ok_or(RegistryError::NoToken { url: token_url })?;
        Ok(format!("Bearer {token}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(parse_challenge(r#"Bearer realm="unterminated"#), None);
    }
}
