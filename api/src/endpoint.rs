//! One request to the agent, typed: the method, the path and the query parsed together, once.
//! The agent's router and its authorisation match on an [`Endpoint`]; the plugin's client
//! builds one and sends [`Endpoint::method`] and [`Endpoint::uri`]. A request that does not
//! parse is refused with what is wrong ([`Unroutable`]) before anyone is asked who the
//! caller is or what they may do.

use crate::path;
use crate::request::{
    BadQuery, DebugRequest, ImageConfigRequest, PodScope, PullRequest, WatchRequest, valid_name,
};

/// A request to one of the agent's endpoints, with its query parsed and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET` [`path::HEALTHZ`]: open to anyone.
    Healthz,
    /// `GET` [`path::METRICS`]: open to anyone.
    Metrics,
    /// `GET` [`path::VERSION`].
    Version,
    /// `GET` [`path::DEBUG`], upgraded to a WebSocket: a debug session.
    Debug(DebugRequest),
    /// `GET` [`path::PULL`]: make sure an image is present; `POST` with a [`crate::PullBody`]
    /// when the pull carries a registry credential (never in the query).
    Pull(PullRequest),
    /// `GET` [`path::CONTAINERS`]: the debug containers in a scope.
    Containers(PodScope),
    /// `DELETE` [`path::CONTAINER`]: remove one debug container of the scope's pod.
    RemoveContainer {
        /// The container's name.
        name: String,
        /// The pod it must be of.
        scope: PodScope,
    },
    /// `GET` [`path::RECORDINGS`]: the recordings in a scope.
    Recordings(PodScope),
    /// `GET` [`path::RECORDING`]: one recording.
    Recording {
        /// The session it recorded.
        session: String,
        /// The pod it must be of.
        scope: PodScope,
    },
    /// `GET` [`path::WATCH`], upgraded to a WebSocket: a running session, read-only.
    Watch(WatchRequest),
    /// `GET` [`path::IMAGE_CONFIG`]: what a target container's image says to run.
    ImageConfig(ImageConfigRequest),
}

/// A request that names no endpoint, or one whose query does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unroutable {
    /// No endpoint has this path.
    #[error("no endpoint {method} {path}; the agent serves {}", served())]
    NotFound {
        /// The request's method.
        method: String,
        /// The request's path.
        path: String,
    },
    /// The path is an endpoint's, the method is not.
    #[error("no endpoint {method} {path}; the agent serves {}", served())]
    MethodNotAllowed {
        /// The request's method.
        method: String,
        /// The request's path.
        path: String,
    },
    /// The endpoint exists; its query does not parse.
    #[error("{path}: {why}")]
    BadQuery {
        /// The endpoint's path.
        path: &'static str,
        /// What is wrong with the query.
        why: BadQuery,
    },
}

impl Unroutable {
    /// The HTTP status of the refusal: 404, 405 or 400.
    pub fn code(&self) -> u16 {
        match self {
            Unroutable::NotFound { .. } => 404,
            Unroutable::MethodNotAllowed { .. } => 405,
            Unroutable::BadQuery { .. } => 400,
        }
    }
}

/// Every endpoint with its method, as a refusal lists them.
fn served() -> String {
    path::ENDPOINTS
        .iter()
        .map(|(method, path)| format!("{method} {path}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Endpoint {
    /// Parses a request: its method, its path and its query (without the `?`).
    pub fn parse(method: &str, path: &str, query: &str) -> Result<Endpoint, Unroutable> {
        let (pattern, name) = match path {
            path::HEALTHZ
            | path::METRICS
            | path::VERSION
            | path::DEBUG
            | path::PULL
            | path::CONTAINERS
            | path::RECORDINGS
            | path::WATCH
            | path::IMAGE_CONFIG => (path, None),
            _ => match (path::container_name(path), path::recording_session(path)) {
                (Some(name), _) => (path::CONTAINER, Some(name)),
                (_, Some(session)) => (path::RECORDING, Some(session)),
                _ => {
                    return Err(Unroutable::NotFound {
                        method: method.to_owned(),
                        path: path.to_owned(),
                    });
                }
            },
        };
        let Some(&(_, pattern)) = path::ENDPOINTS
            .iter()
            .find(|(m, p)| *m == method && *p == pattern)
        else {
            return Err(Unroutable::MethodNotAllowed {
                method: method.to_owned(),
                path: path.to_owned(),
            });
        };
        let bad = |why| Unroutable::BadQuery { path: pattern, why };
        let name = name.unwrap_or_default();
        Ok(match pattern {
            // Probes and scrapers send what they like; these take nothing.
            path::HEALTHZ => Endpoint::Healthz,
            path::METRICS => Endpoint::Metrics,
            path::VERSION => Endpoint::Version,
            path::DEBUG => Endpoint::Debug(DebugRequest::from_query(query).map_err(bad)?),
            path::PULL => Endpoint::Pull(PullRequest::from_query(query).map_err(bad)?),
            path::CONTAINERS => Endpoint::Containers(PodScope::from_query(query).map_err(bad)?),
            path::CONTAINER => Endpoint::RemoveContainer {
                name: valid_name(name).map_err(bad)?,
                scope: PodScope::from_query(query).map_err(bad)?,
            },
            path::RECORDINGS => Endpoint::Recordings(PodScope::from_query(query).map_err(bad)?),
            path::RECORDING => Endpoint::Recording {
                session: name.to_owned(),
                scope: PodScope::from_query(query).map_err(bad)?,
            },
            path::WATCH => Endpoint::Watch(WatchRequest::from_query(query).map_err(bad)?),
            path::IMAGE_CONFIG => {
                Endpoint::ImageConfig(ImageConfigRequest::from_query(query).map_err(bad)?)
            }
            _ => unreachable!("every pattern of path::ENDPOINTS is matched above"),
        })
    }

    /// Its method.
    pub fn method(&self) -> &'static str {
        match self {
            Endpoint::RemoveContainer { .. } => "DELETE",
            Endpoint::Pull(PullRequest {
                credential: Some(_),
                ..
            }) => "POST",
            _ => "GET",
        }
    }

    /// Its path pattern, as [`path::ENDPOINTS`] lists it (for logs and metrics: no names).
    pub fn pattern(&self) -> &'static str {
        match self {
            Endpoint::Healthz => path::HEALTHZ,
            Endpoint::Metrics => path::METRICS,
            Endpoint::Version => path::VERSION,
            Endpoint::Debug(_) => path::DEBUG,
            Endpoint::Pull(_) => path::PULL,
            Endpoint::Containers(_) => path::CONTAINERS,
            Endpoint::RemoveContainer { .. } => path::CONTAINER,
            Endpoint::Recordings(_) => path::RECORDINGS,
            Endpoint::Recording { .. } => path::RECORDING,
            Endpoint::Watch(_) => path::WATCH,
            Endpoint::ImageConfig(_) => path::IMAGE_CONFIG,
        }
    }

    /// Its path, with the container's or session's name in it.
    pub fn path(&self) -> String {
        match self {
            Endpoint::RemoveContainer { name, .. } => path::container(name),
            Endpoint::Recording { session, .. } => path::recording(session),
            other => other.pattern().to_owned(),
        }
    }

    /// Its query, which [`Endpoint::parse`] reads back as this request.
    pub fn query(&self) -> String {
        match self {
            Endpoint::Healthz | Endpoint::Metrics | Endpoint::Version => String::new(),
            Endpoint::Debug(request) => request.to_query(),
            Endpoint::Pull(request) => request.to_query(),
            Endpoint::Watch(request) => request.to_query(),
            Endpoint::ImageConfig(request) => request.to_query(),
            Endpoint::Containers(scope)
            | Endpoint::Recordings(scope)
            | Endpoint::RemoveContainer { scope, .. }
            | Endpoint::Recording { scope, .. } => scope.to_query(),
        }
    }

    /// Its path and query, as a request line carries them.
    pub fn uri(&self) -> String {
        let (path, query) = (self.path(), self.query());
        if query.is_empty() {
            path
        } else {
            format!("{path}?{query}")
        }
    }

    /// Its body, if it has one: a pull's credential, as a [`crate::PullBody`] in JSON.
    pub fn body(&self) -> Option<Vec<u8>> {
        match self {
            Endpoint::Pull(PullRequest {
                credential: Some(credential),
                ..
            }) => Some(
                serde_json::to_vec(&crate::PullBody {
                    credential: Some(credential.clone()),
                })
                .expect("a pull body serialises"),
            ),
            _ => None,
        }
    }

    /// The node it names as its target or scope (`kubectl-debug node/NAME`), if it does: an
    /// agent serves only its own node.
    pub fn node(&self) -> Option<&str> {
        match self {
            Endpoint::Debug(request) => request.node.as_deref(),
            Endpoint::Pull(request) => request.node.as_deref(),
            Endpoint::Containers(scope)
            | Endpoint::RemoveContainer { scope, .. }
            | Endpoint::Recordings(scope)
            | Endpoint::Recording { scope, .. } => scope.node.as_deref(),
            Endpoint::Watch(request) => request.scope.node.as_deref(),
            Endpoint::Healthz
            | Endpoint::Metrics
            | Endpoint::Version
            | Endpoint::ImageConfig(_) => None,
        }
    }

    /// Whether anyone may ask, unauthenticated: probes and scrapers.
    pub fn is_open(&self) -> bool {
        matches!(self, Endpoint::Healthz | Endpoint::Metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kdbg_model::TargetRef;

    #[test]
    fn every_endpoint_survives_its_request_line() {
        let scope = PodScope {
            namespace: Some("prod".into()),
            pod: Some("web-1".into()),
            node: None,
        };
        let target: TargetRef = "docker://abc".parse().unwrap();
        let endpoints = [
            Endpoint::Healthz,
            Endpoint::Metrics,
            Endpoint::Version,
            Endpoint::Debug(DebugRequest::from_query("target=docker://abc&stdout=1").unwrap()),
            Endpoint::Pull(PullRequest {
                target: Some(target),
                image: Some("busybox".into()),
                policy: Default::default(),
                platform: None,
                pod_namespace: None,
                pod_name: None,
                node: None,
                credential: None,
            }),
            Endpoint::Pull(PullRequest {
                target: None,
                image: Some("registry.example.com/tools:1".into()),
                policy: Default::default(),
                platform: Some("linux/arm/v7".parse().unwrap()),
                pod_namespace: Some("prod".into()),
                pod_name: Some("web-1".into()),
                node: None,
                credential: Some(crate::RegistryCredential {
                    key: "registry.example.com".into(),
                    source: "secret prod/regcred".into(),
                    username: "robot".into(),
                    password: "s3cret".into(),
                }),
            }),
            Endpoint::Containers(PodScope::default()),
            Endpoint::RemoveContainer {
                name: "web-1-dbg-x7k2q".into(),
                scope: scope.clone(),
            },
            Endpoint::Recordings(scope.clone()),
            Endpoint::Recording {
                session: "s1".into(),
                scope: scope.clone(),
            },
            Endpoint::Watch(WatchRequest {
                session: "s1".into(),
                scope,
            }),
            Endpoint::ImageConfig(ImageConfigRequest {
                target: "containerd://0f1e2d".parse().unwrap(),
                pod_namespace: Some("prod".into()),
                pod_name: Some("web-1".into()),
            }),
        ];
        assert_eq!(endpoints.len(), path::ENDPOINTS.len());
        for endpoint in endpoints {
            let uri = endpoint.uri();
            assert!(!uri.contains("s3cret"), "{uri}");
            let (path, query) = uri.split_once('?').unwrap_or((&uri, ""));
            // A credential travels in the body, which the agent reads after authorising.
            let mut routed = endpoint.clone();
            if let Endpoint::Pull(request) = &mut routed {
                request.credential = None;
            }
            assert_eq!(
                Endpoint::parse(endpoint.method(), path, query).as_ref(),
                Ok(&routed),
                "{uri}"
            );
        }
    }

    #[test]
    fn an_image_config_keeps_its_wire_shape() {
        let config = kdbg_model::ImageConfig::new(
            "docker.io/library/web:1",
            Some(vec!["/app".into()]),
            Some(vec!["--port".into(), "80".into()]),
            Some("/srv".into()),
            None,
        );
        let wire = serde_json::to_string(&config).unwrap();
        assert_eq!(
            wire,
            r#"{"image":"docker.io/library/web:1","entrypoint":["/app"],"cmd":["--port","80"],"workingDir":"/srv"}"#
        );
        assert_eq!(
            serde_json::from_str::<kdbg_model::ImageConfig>(&wire).unwrap(),
            config
        );
        // What engines give as empty is "not set".
        let bare = kdbg_model::ImageConfig::new(
            "x",
            Some(vec![]),
            None,
            Some(String::new()),
            Some(" ".into()),
        );
        assert_eq!(serde_json::to_string(&bare).unwrap(), r#"{"image":"x"}"#);
    }

    #[test]
    fn what_does_not_parse_says_why_with_its_status() {
        let cases = [
            (
                "GET",
                "/nope",
                "",
                404,
                "no endpoint GET /nope; the agent serves GET /healthz",
            ),
            (
                "POST",
                path::DEBUG,
                "",
                405,
                "no endpoint POST /api/v1/debug",
            ),
            (
                "GET",
                "/api/v1/containers/x",
                "",
                405,
                "no endpoint GET /api/v1/containers/x",
            ),
            (
                "GET",
                path::CONTAINERS,
                "podName=a",
                400,
                "podName needs podNamespace",
            ),
            (
                "DELETE",
                "/api/v1/containers/-x",
                "",
                400,
                "container name \"-x\" is invalid",
            ),
            (
                "GET",
                path::WATCH,
                "",
                400,
                "/api/v1/watch: query parameter session",
            ),
            (
                "GET",
                path::DEBUG,
                "stdout=1",
                400,
                "query parameter target is required",
            ),
            (
                "GET",
                path::IMAGE_CONFIG,
                "podNamespace=prod&podName=web-1",
                400,
                "/api/v1/image-config: query parameter target is required",
            ),
            (
                "GET",
                path::IMAGE_CONFIG,
                "target=docker://abc&podName=web-1",
                400,
                "podNamespace and podName go together",
            ),
            (
                "GET",
                path::IMAGE_CONFIG,
                "target=docker://abc&image=busybox",
                400,
                "unknown or empty query parameter \"image\"",
            ),
            (
                "POST",
                path::IMAGE_CONFIG,
                "target=docker://abc",
                405,
                "no endpoint POST /api/v1/image-config",
            ),
        ];
        for (method, path, query, code, says) in cases {
            let err = Endpoint::parse(method, path, query).unwrap_err();
            assert_eq!(err.code(), code, "{method} {path}?{query}: {err}");
            assert!(
                err.to_string().contains(says),
                "{method} {path}?{query}: {err}"
            );
        }
    }
}
