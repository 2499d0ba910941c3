//! The queries the agent reads, parsed and checked before anything is created.
//!
//! A debug request's parameters follow `kubectl exec`: `command` repeated,
//! `stdin`/`stdout`/`stderr`/`tty` as `true`/`1` (and the kubelet's spellings
//! `input`/`output`/`error`), plus ours: `target` (the container to join), or `container` (an
//! existing retained debug container to open a new session in: `attach`), `image`, `name`,
//! `retain`, `pullPolicy`, and `podNamespace`, `podName`, `user` that end up in labels and
//! are checked against them.

use kdbg_model::{InvalidReference, InvalidValue, Profile, PullPolicy, TargetRef};
use kdbg_relay::TerminalSize;

/// A query the agent does not take: what is wrong with it, and what it takes. The agent
/// answers it with a 400 before it authorises anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadQuery {
    /// A parameter the endpoint does not know.
    #[error("unknown query parameter {key:?}; known: {known}")]
    Unknown {
        /// The parameter.
        key: String,
        /// The endpoint's parameters.
        known: &'static str,
    },
    /// A parameter the endpoint does not know, or one it knows given empty.
    #[error("unknown or empty query parameter {key:?}; known: {known}")]
    UnknownOrEmpty {
        /// The parameter.
        key: String,
        /// The endpoint's parameters.
        known: &'static str,
    },
    /// A parameter that must have a value given empty.
    #[error("query parameter {0} is empty")]
    Empty(&'static str),
    /// A flag that is not a boolean.
    #[error("query parameter {key}={value:?} is not a boolean; use true, false, 1 or 0")]
    NotBoolean {
        /// The parameter.
        key: String,
        /// Its value.
        value: String,
    },
    /// A terminal dimension out of range.
    #[error("query parameter {key}={value:?} is not a terminal size (1 to 65535)")]
    NotSize {
        /// The parameter.
        key: String,
        /// Its value.
        value: String,
    },
    /// A value of the shared vocabulary (target, profile, pull policy) that does not parse.
    #[error("query parameter {key}: {why}")]
    Value {
        /// The parameter.
        key: &'static str,
        /// What is wrong with it.
        why: InvalidValue,
    },
    /// An image reference that does not parse.
    #[error("query parameter image: {0}")]
    Image(InvalidReference),
    /// A container name Docker would refuse.
    #[error(
        "container name {0:?} is invalid: use letters, digits, '_', '.', '-', starting with a letter or digit"
    )]
    Name(String),
    /// Parameters missing, or given together where they cannot be: the rule, in words.
    #[error("{0}")]
    Rule(&'static str),
}

/// A checked debug request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugRequest {
    /// The container to join; required unless `container` names an existing debug container
    /// (then it must be that container's target, if given).
    pub target: Option<TargetRef>,
    /// An existing retained debug container to open the session in (`attach`).
    pub container: Option<String>,
    /// The tools image; the agent's default when absent.
    pub image: Option<String>,
    /// The command; the agent's default when empty.
    pub command: Vec<String>,
    /// Attach stdin.
    pub stdin: bool,
    /// Attach stdout.
    pub stdout: bool,
    /// Attach stderr.
    pub stderr: bool,
    /// Allocate a terminal.
    pub tty: bool,
    /// The debug container's name.
    pub name: Option<String>,
    /// Keep the container after the session.
    pub retain: bool,
    /// When to pull the image.
    pub pull_policy: PullPolicy,
    /// The target pod's namespace, for labels.
    pub pod_namespace: Option<String>,
    /// The target pod's name, for labels.
    pub pod_name: Option<String>,
    /// Who asks (not authenticated yet), for labels.
    pub user: Option<String>,
    /// The target's name in its pod (`app`), for labels and recordings' titles.
    pub pod_container: Option<String>,
    /// Record the session (when the agent's recording mode is `optional`).
    pub record: bool,
    /// The capability profile; the agent's default when absent.
    pub profile: Option<Profile>,
    /// The client's terminal size at the start (`cols`, `rows`), for a terminal session: the
    /// process starts with it, and a recording's header says it, before the first resize
    /// message arrives.
    pub size: Option<TerminalSize>,
}

/// A terminal dimension, 1 to 65535.
fn dimension(key: &str, value: &str) -> Result<u16, BadQuery> {
    value
        .parse::<u16>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| BadQuery::NotSize {
            key: key.to_owned(),
            value: value.to_owned(),
        })
}

fn flag(key: &str, value: &str) -> Result<bool, BadQuery> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(BadQuery::NotBoolean {
            key: key.to_owned(),
            value: other.to_owned(),
        }),
    }
}

/// A value of the shared vocabulary, parsed for query parameter `key`.
fn value<T: std::str::FromStr<Err = InvalidValue>>(
    key: &'static str,
    value: &str,
) -> Result<T, BadQuery> {
    value.parse().map_err(|why| BadQuery::Value { key, why })
}

impl DebugRequest {
    /// Parses a URL query string.
    pub fn from_query(query: &str) -> Result<DebugRequest, BadQuery> {
        let mut request = DebugRequest {
            target: None,
            container: None,
            image: None,
            command: Vec::new(),
            stdin: false,
            stdout: false,
            stderr: false,
            tty: false,
            name: None,
            retain: false,
            pull_policy: PullPolicy::default(),
            pod_namespace: None,
            pod_name: None,
            user: None,
            pod_container: None,
            record: false,
            profile: None,
            size: None,
        };
        let (mut cols, mut rows) = (None, None);
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let non_empty = |what: &'static str| {
                if value.is_empty() {
                    Err(BadQuery::Empty(what))
                } else {
                    Ok(value.to_string())
                }
            };
            match &*key {
                "target" => request.target = Some(target(&value)?),
                "container" => request.container = Some(valid_name(&value)?),
                "image" => request.image = Some(image(&value)?),
                "profile" => request.profile = Some(self::value("profile", &value)?),
                "command" => request.command.push(value.to_string()),
                "stdin" | "input" => request.stdin = flag(&key, &value)?,
                "stdout" | "output" => request.stdout = flag(&key, &value)?,
                "stderr" | "error" => request.stderr = flag(&key, &value)?,
                "tty" => request.tty = flag(&key, &value)?,
                "name" => request.name = Some(valid_name(&value)?),
                "retain" => request.retain = flag(&key, &value)?,
                "pullPolicy" => request.pull_policy = self::value("pullPolicy", &value)?,
                "podNamespace" => request.pod_namespace = Some(non_empty("podNamespace")?),
                "podName" => request.pod_name = Some(non_empty("podName")?),
                "user" => request.user = Some(non_empty("user")?),
                "podContainer" => request.pod_container = Some(non_empty("podContainer")?),
                "record" => request.record = flag(&key, &value)?,
                "cols" => cols = Some(dimension(&key, &value)?),
                "rows" => rows = Some(dimension(&key, &value)?),
                other => {
                    return Err(BadQuery::Unknown {
                        key: other.to_owned(),
                        known: "target, container, image, command, stdin, stdout, stderr, tty, \
                                name, retain, pullPolicy, podNamespace, podName, podContainer, \
                                user, record, profile, cols, rows",
                    });
                }
            }
        }
        request.size = match (cols, rows) {
            (Some(cols), Some(rows)) => Some(TerminalSize { cols, rows }),
            (None, None) => None,
            _ => {
                return Err(BadQuery::Rule(
                    "query parameters cols and rows go together: give both, or neither",
                ));
            }
        };
        if request.target.is_none() && request.container.is_none() {
            return Err(BadQuery::Rule(
                "query parameter target is required: the container to join, as <runtime>://<id> \
                 (or container: an existing retained debug container)",
            ));
        }
        // The kubelet's rules.
        if request.tty && request.stderr {
            return Err(BadQuery::Rule(
                "tty and stderr cannot both be true (a terminal merges them)",
            ));
        }
        if !(request.stdin || request.stdout || request.stderr) {
            return Err(BadQuery::Rule("one of stdin, stdout, stderr must be set"));
        }
        Ok(request)
    }
}

impl DebugRequest {
    /// The query string that [`DebugRequest::from_query`] reads back as this request.
    pub fn to_query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if let Some(target) = &self.target {
            q.append_pair("target", &target.to_string());
        }
        if let Some(container) = &self.container {
            q.append_pair("container", container);
        }
        if let Some(image) = &self.image {
            q.append_pair("image", image);
        }
        for arg in &self.command {
            q.append_pair("command", arg);
        }
        for (key, on) in [
            ("stdin", self.stdin),
            ("stdout", self.stdout),
            ("stderr", self.stderr),
            ("tty", self.tty),
            ("retain", self.retain),
            ("record", self.record),
        ] {
            q.append_pair(key, if on { "true" } else { "false" });
        }
        if let Some(name) = &self.name {
            q.append_pair("name", name);
        }
        if let Some(profile) = self.profile {
            q.append_pair("profile", profile.name());
        }
        if let Some(size) = self.size {
            q.append_pair("cols", &size.cols.to_string());
            q.append_pair("rows", &size.rows.to_string());
        }
        q.append_pair("pullPolicy", &self.pull_policy.to_string());
        for (key, value) in [
            ("podNamespace", &self.pod_namespace),
            ("podName", &self.pod_name),
            ("podContainer", &self.pod_container),
            ("user", &self.user),
        ] {
            if let Some(value) = value {
                q.append_pair(key, value);
            }
        }
        q.finish()
    }
}

/// A checked pull request: `image` (the agent's default when absent), `pullPolicy`, and the
/// `target` the image is for, checked first so a session that cannot happen pulls nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    /// The container the session will join.
    pub target: Option<TargetRef>,
    /// The image reference.
    pub image: Option<String>,
    /// When to pull.
    pub policy: PullPolicy,
    /// The target's pod, whose permissions an agent that checks them asks for.
    pub pod_namespace: Option<String>,
    /// See `pod_namespace`.
    pub pod_name: Option<String>,
}

impl PullRequest {
    /// Parses a URL query string.
    pub fn from_query(query: &str) -> Result<PullRequest, BadQuery> {
        let mut image = None;
        let mut target = None;
        let mut policy = PullPolicy::default();
        let (mut pod_namespace, mut pod_name) = (None, None);
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "image" if !value.is_empty() => image = Some(self::image(&value)?),
                "target" => target = Some(self::target(&value)?),
                "pullPolicy" => policy = self::value("pullPolicy", &value)?,
                "podNamespace" if !value.is_empty() => pod_namespace = Some(value.into_owned()),
                "podName" if !value.is_empty() => pod_name = Some(value.into_owned()),
                other => {
                    return Err(BadQuery::UnknownOrEmpty {
                        key: other.to_owned(),
                        known: "target, image, pullPolicy, podNamespace, podName",
                    });
                }
            }
        }
        Ok(PullRequest {
            target,
            image,
            policy,
            pod_namespace,
            pod_name,
        })
    }

    /// The query string [`PullRequest::from_query`] reads back as this request.
    pub fn to_query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if let Some(target) = &self.target {
            q.append_pair("target", &target.to_string());
        }
        if let Some(image) = &self.image {
            q.append_pair("image", image);
        }
        q.append_pair("pullPolicy", &self.policy.to_string());
        for (key, value) in [
            ("podNamespace", &self.pod_namespace),
            ("podName", &self.pod_name),
        ] {
            if let Some(value) = value {
                q.append_pair(key, value);
            }
        }
        q.finish()
    }
}

/// The query of [`crate::path::IMAGE_CONFIG`]: a target container named as a debug session
/// names it (`target`, `podNamespace`, `podName`), checked as a session's target is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageConfigRequest {
    /// The container whose image's config is asked for.
    pub target: TargetRef,
    /// The target's pod, whose permissions an agent that checks them asks for.
    pub pod_namespace: Option<String>,
    /// See `pod_namespace`.
    pub pod_name: Option<String>,
}

impl ImageConfigRequest {
    /// Parses a URL query string.
    pub fn from_query(query: &str) -> Result<ImageConfigRequest, BadQuery> {
        let mut target = None;
        let (mut pod_namespace, mut pod_name) = (None, None);
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "target" => target = Some(self::target(&value)?),
                "podNamespace" if !value.is_empty() => pod_namespace = Some(value.into_owned()),
                "podName" if !value.is_empty() => pod_name = Some(value.into_owned()),
                other => {
                    return Err(BadQuery::UnknownOrEmpty {
                        key: other.to_owned(),
                        known: "target, podNamespace, podName",
                    });
                }
            }
        }
        let target = target.ok_or(BadQuery::Rule(
            "query parameter target is required: the container whose image config to read, as <runtime>://<id>",
        ))?;
        if pod_name.is_some() != pod_namespace.is_some() {
            return Err(BadQuery::Rule(
                "query parameters podNamespace and podName go together: give both, or neither",
            ));
        }
        Ok(ImageConfigRequest {
            target,
            pod_namespace,
            pod_name,
        })
    }

    /// The query string [`ImageConfigRequest::from_query`] reads back as this request.
    pub fn to_query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("target", &self.target.to_string());
        for (key, value) in [
            ("podNamespace", &self.pod_namespace),
            ("podName", &self.pod_name),
        ] {
            if let Some(value) = value {
                q.append_pair(key, value);
            }
        }
        q.finish()
    }
}

/// Query parameter `target`, checked.
fn target(value: &str) -> Result<TargetRef, BadQuery> {
    self::value("target", value)
}

/// Query parameter `image`: a reference the runtimes can pull.
fn image(value: &str) -> Result<String, BadQuery> {
    kdbg_model::Reference::parse(value)
        .map(|_| value.to_owned())
        .map_err(BadQuery::Image)
}

/// Container names as Docker accepts them: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn valid_name(name: &str) -> Result<String, BadQuery> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if first_ok
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && name.len() <= 128
    {
        Ok(name.to_owned())
    } else {
        Err(BadQuery::Name(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_and_kubelet_spellings_both_work() {
        let a = DebugRequest::from_query(
            "target=docker%3A%2F%2Fabc&command=sh&command=-c&command=echo%20hi&stdin=true&stdout=true&tty=true",
        )
        .unwrap();
        assert_eq!(a.command, ["sh", "-c", "echo hi"]);
        assert!(a.stdin && a.stdout && a.tty && !a.stderr);
        let b = DebugRequest::from_query("target=docker://abc&input=1&output=1&error=1").unwrap();
        assert!(b.stdin && b.stdout && b.stderr && !b.tty);
        assert_eq!(b.target.unwrap().id, "abc");
    }

    #[test]
    fn a_request_survives_its_query() {
        let request = DebugRequest {
            target: Some("docker://abc".parse().unwrap()),
            container: None,
            image: Some("127.0.0.1:5000/tools:1".into()),
            command: vec!["sh".into(), "-c".into(), "echo a&b=c".into()],
            stdin: true,
            stdout: true,
            stderr: false,
            tty: true,
            name: Some("dbg-1".into()),
            retain: true,
            pull_policy: PullPolicy::Never,
            pod_namespace: Some("prod".into()),
            pod_name: Some("web-1".into()),
            user: Some("alice".into()),
            pod_container: Some("app".into()),
            record: true,
            profile: Some(kdbg_model::Profile::Netadmin),
            size: Some(TerminalSize {
                cols: 120,
                rows: 40,
            }),
        };
        assert_eq!(
            DebugRequest::from_query(&request.to_query()).unwrap(),
            request
        );
        let half = DebugRequest::from_query("target=docker://abc&cols=80")
            .unwrap_err()
            .to_string();
        assert!(half.contains("cols and rows go together"), "{half}");
        let zero = DebugRequest::from_query("target=docker://abc&cols=0&rows=1")
            .unwrap_err()
            .to_string();
        assert!(zero.contains("not a terminal size"), "{zero}");
        let attach = DebugRequest {
            target: None,
            container: Some("web-1-dbg-x7k2q".into()),
            ..request
        };
        assert_eq!(
            DebugRequest::from_query(&attach.to_query()).unwrap(),
            attach
        );
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let cases = [
            ("stdout=1", "target is required"),
            ("target=abc&stdout=1", "<runtime>://<id>"),
            ("target=docker://a", "one of stdin, stdout, stderr"),
            ("target=docker://a&tty=1&stderr=1", "tty and stderr"),
            ("target=docker://a&stdout=yes", "not a boolean"),
            (
                "target=docker://a&stdout=1&pullPolicy=sometimes",
                "Always, IfNotPresent, Never",
            ),
            ("target=docker://a&stdout=1&name=-x", "invalid"),
            (
                "target=docker://a&stdout=1&bogus=1",
                "unknown query parameter \"bogus\"",
            ),
        ];
        for (query, expected) in cases {
            let err = DebugRequest::from_query(query).unwrap_err().to_string();
            assert!(err.contains(expected), "{query}: {err}");
        }
    }
}

/// The parameters of a [`PodScope`].
const SCOPE_PARAMETERS: &str = "podNamespace, podName";

/// The scope of a container list or removal: the debug containers of one pod, or all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodScope {
    /// The pod's namespace.
    pub namespace: Option<String>,
    /// The pod's name (with a namespace).
    pub pod: Option<String>,
}

impl PodScope {
    /// Parses `podNamespace` and `podName`.
    pub fn from_query(query: &str) -> Result<PodScope, BadQuery> {
        let mut scope = PodScope::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "podNamespace" if !value.is_empty() => scope.namespace = Some(value.into()),
                "podName" if !value.is_empty() => scope.pod = Some(value.into()),
                other => {
                    return Err(BadQuery::UnknownOrEmpty {
                        key: other.to_owned(),
                        known: SCOPE_PARAMETERS,
                    });
                }
            }
        }
        if scope.pod.is_some() && scope.namespace.is_none() {
            return Err(BadQuery::Rule("query parameter podName needs podNamespace"));
        }
        Ok(scope)
    }

    /// The query string [`PodScope::from_query`] reads back as this scope.
    pub fn to_query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if let Some(ns) = &self.namespace {
            q.append_pair("podNamespace", ns);
        }
        if let Some(pod) = &self.pod {
            q.append_pair("podName", pod);
        }
        q.finish()
    }

    /// Whether a container with these pod labels is in scope.
    pub fn contains(&self, namespace: Option<&str>, pod: Option<&str>) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| Some(ns) == namespace)
            && self.pod.as_deref().is_none_or(|p| Some(p) == pod)
    }
}

/// The query of [`crate::path::WATCH`]: which running session, within which pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchRequest {
    /// The session's ID, or the name of its debug container (which must then have one
    /// terminal session).
    pub session: String,
    /// The pod it must debug.
    pub scope: PodScope,
}

impl WatchRequest {
    /// Parses `session` (or `container`), `podNamespace` and `podName`.
    pub fn from_query(query: &str) -> Result<WatchRequest, BadQuery> {
        let mut session = None;
        let mut rest = form_urlencoded::Serializer::new(String::new());
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "session" | "container" if !value.is_empty() => session = Some(value.into_owned()),
                _ => {
                    rest.append_pair(&key, &value);
                }
            }
        }
        let scope = PodScope::from_query(&rest.finish()).map_err(|e| match e {
            BadQuery::UnknownOrEmpty { key, .. } => BadQuery::UnknownOrEmpty {
                key,
                known: "session, container, podNamespace, podName",
            },
            other => other,
        })?;
        let session = session.ok_or(BadQuery::Rule(
            "query parameter session (a session ID) or container (a debug container's name) is required",
        ))?;
        Ok(WatchRequest { session, scope })
    }

    /// The query string [`WatchRequest::from_query`] reads back as this request.
    pub fn to_query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("session", &self.session);
        let scope = self.scope.to_query();
        let mut query = q.finish();
        if !scope.is_empty() {
            query.push('&');
            query.push_str(&scope);
        }
        query
    }
}

#[cfg(test)]
mod watch_tests {
    use super::*;

    #[test]
    fn a_watch_request_round_trips_and_needs_a_session() {
        let request = WatchRequest {
            session: "web-1-dbg-ab12c".into(),
            scope: PodScope {
                namespace: Some("prod".into()),
                pod: Some("web-1".into()),
            },
        };
        assert_eq!(
            WatchRequest::from_query(&request.to_query()).unwrap(),
            request
        );
        assert_eq!(
            WatchRequest::from_query("container=x").unwrap().session,
            "x"
        );
        assert!(
            WatchRequest::from_query("podNamespace=a")
                .unwrap_err()
                .to_string()
                .contains("session")
        );
        assert!(
            WatchRequest::from_query("session=a&input=1")
                .unwrap_err()
                .to_string()
                .contains("input")
        );
    }
}
