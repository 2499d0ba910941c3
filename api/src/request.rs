//! The queries the agent reads, parsed and checked before anything is created.
//!
//! A debug request's parameters follow `kubectl exec`: `command` repeated,
//! `stdin`/`stdout`/`stderr`/`tty` as `true`/`1` (and the kubelet's spellings
//! `input`/`output`/`error`), plus ours: `target` (the container to join), or `container` (an
//! existing retained debug container to open a new session in: `attach`), or `node` (the
//! node itself, `kubectl-debug node/NAME`: its namespaces and root filesystem), `image`, `name`,
//! `retain`, `pullPolicy`, and `podNamespace`, `podName`, `user` that end up in labels and
//! are checked against them.

use kdbg_model::{
    InvalidReference, InvalidValue, Platform, Profile, PullPolicy, RegistryCredential, Target,
    TargetRef,
};
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
    /// The node itself instead of a container (`kubectl-debug node/NAME`): a new debug
    /// container in its namespaces, or with `container`, the node's debug container to attach
    /// to. It must be the agent's own node.
    pub node: Option<String>,
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
    /// The image's platform to pull and run, when not the node's (`--platform`; sent only
    /// when given, so that an older agent refuses it rather than ignore it).
    pub platform: Option<Platform>,
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
    /// Run the command with the target's root filesystem as `/` (`chroot`; sent only when
    /// true, so that an older agent refuses it rather than ignore it).
    pub chroot: bool,
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
            node: None,
            image: None,
            command: Vec::new(),
            stdin: false,
            stdout: false,
            stderr: false,
            tty: false,
            name: None,
            retain: false,
            pull_policy: PullPolicy::default(),
            platform: None,
            pod_namespace: None,
            pod_name: None,
            user: None,
            pod_container: None,
            record: false,
            profile: None,
            chroot: false,
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
                "node" => request.node = Some(node(&value)?),
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
                "platform" => request.platform = Some(self::value("platform", &value)?),
                "podNamespace" => request.pod_namespace = Some(non_empty("podNamespace")?),
                "podName" => request.pod_name = Some(non_empty("podName")?),
                "user" => request.user = Some(non_empty("user")?),
                "podContainer" => request.pod_container = Some(non_empty("podContainer")?),
                "record" => request.record = flag(&key, &value)?,
                "chroot" => request.chroot = flag(&key, &value)?,
                "cols" => cols = Some(dimension(&key, &value)?),
                "rows" => rows = Some(dimension(&key, &value)?),
                other => {
                    return Err(BadQuery::Unknown {
                        key: other.to_owned(),
                        known: "target, container, node, image, command, stdin, stdout, stderr, tty, \
                                name, retain, pullPolicy, platform, podNamespace, podName, \
                                podContainer, user, record, profile, chroot, cols, rows",
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
        if request.target.is_none() && request.container.is_none() && request.node.is_none() {
            return Err(BadQuery::Rule(
                "query parameter target is required: the container to join, as <runtime>://<id> \
                 (or container: an existing retained debug container; or node: the node itself)",
            ));
        }
        if request.node.is_some()
            && (request.target.is_some()
                || request.pod_namespace.is_some()
                || request.pod_name.is_some())
        {
            return Err(BadQuery::Rule(
                "query parameter node names the node itself: it goes without target, podNamespace and podName",
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
    /// What a new debug container of this request joins: its `target`, or its `node`.
    pub fn joins(&self) -> Option<Target> {
        match (&self.target, &self.node) {
            (Some(target), _) => Some(Target::Container(target.clone())),
            (None, Some(node)) => Some(Target::Node(node.clone())),
            (None, None) => None,
        }
    }

    /// The query string that [`DebugRequest::from_query`] reads back as this request.
    pub fn to_query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if let Some(target) = &self.target {
            q.append_pair("target", &target.to_string());
        }
        if let Some(container) = &self.container {
            q.append_pair("container", container);
        }
        if let Some(node) = &self.node {
            q.append_pair("node", node);
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
        if self.chroot {
            q.append_pair("chroot", "true");
        }
        if let Some(size) = self.size {
            q.append_pair("cols", &size.cols.to_string());
            q.append_pair("rows", &size.rows.to_string());
        }
        q.append_pair("pullPolicy", &self.pull_policy.to_string());
        if let Some(platform) = &self.platform {
            q.append_pair("platform", &platform.to_string());
        }
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
    /// The platform to pull, when not the node's.
    pub platform: Option<Platform>,
    /// The target's pod, whose permissions an agent that checks them asks for.
    pub pod_namespace: Option<String>,
    /// See `pod_namespace`.
    pub pod_name: Option<String>,
    /// For a session of the node itself (`kubectl-debug node/NAME`): the node, whose
    /// permission (`create nodes/proxy`) an agent that checks them asks for.
    pub node: Option<String>,
    /// A registry credential for this pull: sent in the body of a `POST` (a [`PullBody`]),
    /// never in the query.
    pub credential: Option<RegistryCredential>,
}

/// The body of a `POST` [`crate::path::PULL`]: what does not belong in a URL.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PullBody {
    /// The credential for the image's registry, chosen from the user's pull secrets.
    pub credential: Option<RegistryCredential>,
}

impl PullBody {
    /// The most a body may hold: a credential is a few hundred bytes.
    pub const MAX_BYTES: usize = 64 * 1024;
}

impl PullRequest {
    /// Parses a URL query string.
    pub fn from_query(query: &str) -> Result<PullRequest, BadQuery> {
        let mut image = None;
        let mut target = None;
        let mut policy = PullPolicy::default();
        let mut platform = None;
        let (mut pod_namespace, mut pod_name, mut node) = (None, None, None);
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "image" if !value.is_empty() => image = Some(self::image(&value)?),
                "node" => node = Some(self::node(&value)?),
                "target" => target = Some(self::target(&value)?),
                "pullPolicy" => policy = self::value("pullPolicy", &value)?,
                "platform" => platform = Some(self::value("platform", &value)?),
                "podNamespace" if !value.is_empty() => pod_namespace = Some(value.into_owned()),
                "podName" if !value.is_empty() => pod_name = Some(value.into_owned()),
                other => {
                    return Err(BadQuery::UnknownOrEmpty {
                        key: other.to_owned(),
                        known: "target, image, pullPolicy, platform, podNamespace, podName, node",
                    });
                }
            }
        }
        if node.is_some() && (target.is_some() || pod_namespace.is_some() || pod_name.is_some()) {
            return Err(BadQuery::Rule(
                "query parameter node names the node itself: it goes without target, podNamespace and podName",
            ));
        }
        Ok(PullRequest {
            target,
            image,
            policy,
            platform,
            pod_namespace,
            pod_name,
            node,
            credential: None,
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
        if let Some(platform) = &self.platform {
            q.append_pair("platform", &platform.to_string());
        }
        for (key, value) in [
            ("podNamespace", &self.pod_namespace),
            ("podName", &self.pod_name),
            ("node", &self.node),
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

/// Query parameter `node`: a node's name.
fn node(value: &str) -> Result<String, BadQuery> {
    kdbg_model::node_name(value).map_err(|why| BadQuery::Value { key: "node", why })
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
            node: None,
            image: Some("127.0.0.1:5000/tools:1".into()),
            command: vec!["sh".into(), "-c".into(), "echo a&b=c".into()],
            stdin: true,
            stdout: true,
            stderr: false,
            tty: true,
            name: Some("dbg-1".into()),
            retain: true,
            pull_policy: PullPolicy::Never,
            platform: Some("linux/arm64/v8".parse().unwrap()),
            pod_namespace: Some("prod".into()),
            pod_name: Some("web-1".into()),
            user: Some("alice".into()),
            pod_container: Some("app".into()),
            record: true,
            profile: Some(kdbg_model::Profile::Netadmin),
            chroot: true,
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
        let platform = DebugRequest::from_query("target=docker://abc&stdout=1&platform=linux")
            .unwrap_err()
            .to_string();
        assert!(platform.contains("os/arch[/variant]"), "{platform}");
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
const SCOPE_PARAMETERS: &str = "podNamespace, podName, node";

/// The scope of a container list or removal: the debug containers of one pod, of a
/// namespace, of the node itself (`node/NAME`), or all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodScope {
    /// The pod's namespace.
    pub namespace: Option<String>,
    /// The pod's name (with a namespace).
    pub pod: Option<String>,
    /// The node: its own debug containers (`kubectl-debug node/NAME`), no pod's.
    pub node: Option<String>,
}

impl PodScope {
    /// Parses `podNamespace` and `podName`.
    pub fn from_query(query: &str) -> Result<PodScope, BadQuery> {
        let mut scope = PodScope::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "podNamespace" if !value.is_empty() => scope.namespace = Some(value.into()),
                "podName" if !value.is_empty() => scope.pod = Some(value.into()),
                "node" => scope.node = Some(node(&value)?),
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
        if scope.node.is_some() && scope.namespace.is_some() {
            return Err(BadQuery::Rule(
                "query parameter node (the node's own debug containers) goes without podNamespace and podName",
            ));
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
        if let Some(node) = &self.node {
            q.append_pair("node", node);
        }
        q.finish()
    }

    /// Whether a container with these pod labels is in scope (none is in a node's scope).
    pub fn contains(&self, namespace: Option<&str>, pod: Option<&str>) -> bool {
        self.node.is_none()
            && self
                .namespace
                .as_deref()
                .is_none_or(|ns| Some(ns) == namespace)
            && self.pod.as_deref().is_none_or(|p| Some(p) == pod)
    }

    /// Whether a debug container with these pod labels, and `node` when it is a node's own
    /// (its node label), is in scope: a node's scope holds only the node's own.
    pub fn includes(&self, namespace: Option<&str>, pod: Option<&str>, node: Option<&str>) -> bool {
        match &self.node {
            Some(scope) => node == Some(scope.as_str()),
            None => self.contains(namespace, pod),
        }
    }

    /// Whether the scope is one object's (a pod, or a node): a list of it that the caller may
    /// not see all of is refused rather than cut short.
    pub fn is_one(&self) -> bool {
        self.pod.is_some() || self.node.is_some()
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
                node: None,
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

#[cfg(test)]
mod node_tests {
    use super::*;

    #[test]
    fn a_node_request_names_the_node_alone() {
        let request = DebugRequest::from_query("node=worker-1&stdout=1&retain=1").unwrap();
        assert_eq!(request.joins(), Some(Target::Node("worker-1".into())));
        assert_eq!(
            DebugRequest::from_query(&request.to_query()).unwrap(),
            request
        );
        let attach = DebugRequest::from_query("node=worker-1&container=x&stdout=1").unwrap();
        assert_eq!(attach.node.as_deref(), Some("worker-1"));
        for (query, says) in [
            (
                "node=worker-1&target=docker://a&stdout=1",
                "goes without target",
            ),
            (
                "node=worker-1&podNamespace=a&podName=b&stdout=1",
                "goes without target",
            ),
            (
                "node=Worker_1&stdout=1",
                "node name \"Worker_1\" is invalid",
            ),
        ] {
            let err = DebugRequest::from_query(query).unwrap_err().to_string();
            assert!(err.contains(says), "{query}: {err}");
        }
        let pull = PullRequest::from_query("node=worker-1&image=busybox").unwrap();
        assert_eq!(PullRequest::from_query(&pull.to_query()).unwrap(), pull);
        assert!(PullRequest::from_query("node=w&target=docker://a").is_err());
    }

    #[test]
    fn a_node_scope_holds_only_the_nodes_own() {
        let scope = PodScope::from_query("node=worker-1").unwrap();
        assert_eq!(PodScope::from_query(&scope.to_query()).unwrap(), scope);
        assert!(scope.is_one());
        assert!(scope.includes(None, None, Some("worker-1")));
        assert!(!scope.includes(None, None, Some("worker-2")));
        assert!(!scope.includes(Some("prod"), Some("web"), None));
        let all = PodScope::default();
        assert!(all.includes(None, None, Some("worker-1")));
        let prod = PodScope::from_query("podNamespace=prod").unwrap();
        assert!(!prod.includes(None, None, Some("worker-1")));
        assert!(PodScope::from_query("node=w&podNamespace=prod").is_err());
    }
}
