//! The agent's HTTP API, defined once and used by both sides: the agent serves these paths and
//! reads these requests; the plugin's one agent client sends them and reads these answers.
//! Neither side spells a path, a query parameter or a JSON body by hand.
//!
//! - [`path`]: the endpoints, and [`DEFAULT_PORT`];
//! - [`Endpoint`]: one request to them, method, path and query parsed once, which the
//!   agent routes and authorises and the plugin sends;
//! - [`request`]: the query of a debug session and of a pull;
//! - [`response`]: pull progress lines and the container list (and [`ImageConfig`], the
//!   answer of [`path::IMAGE_CONFIG`], the vocabulary's own);
//! - [`Status`]: the error body of every refusal (Kubernetes' `metav1.Status`), the same
//!   document a session's status channel carries;
//! - [`header`]: the response headers of a debug session;
//! - [`view`]: the events of a live view, as a watcher reads them.

pub mod endpoint;
pub mod request;
pub mod response;
pub mod view;

pub use endpoint::{Endpoint, Unroutable};
pub use kdbg_model::{
    ImageConfig, Platform, Profile, PullPolicy, PullProgress, RegistryCredential, RuntimeKind,
    Target, TargetRef,
};
pub use kdbg_relay::error_chain;
pub use kdbg_relay::status::Status;
pub use request::{
    BadQuery, DebugRequest, ImageConfigRequest, PodScope, PullBody, PullRequest, WatchRequest,
};
pub use response::{
    ContainerItem, ContainerList, ContainerStatus, PullLine, RecordingItem, RecordingList,
    VersionInfo,
};

/// The port agents listen on, and the plugin's `--agent-port` default.
pub const DEFAULT_PORT: u16 = 10027;

/// The endpoints.
pub mod path {
    /// `GET`: `ok` while the agent serves.
    pub const HEALTHZ: &str = "/healthz";
    /// `GET`: the agent's version, a [`crate::VersionInfo`].
    pub const VERSION: &str = "/version";
    /// `GET`: the agent's metrics, Prometheus text format.
    pub const METRICS: &str = "/metrics";
    /// `GET` upgraded to a WebSocket speaking `v5.channel.k8s.io` (or `v4`): a debug session.
    /// Query: [`crate::DebugRequest`].
    pub const DEBUG: &str = "/api/v1/debug";
    /// `GET`: makes sure an image is present; answers [`crate::PullLine`]s, one JSON object a
    /// line. Query: [`crate::PullRequest`].
    pub const PULL: &str = "/api/v1/pull";
    /// `GET`: the debug containers on the node, a [`crate::ContainerList`]. Query:
    /// [`crate::PodScope`].
    pub const CONTAINERS: &str = "/api/v1/containers";
    /// `DELETE` `CONTAINERS/{name}`: removes that debug container (ours only; one of the pod
    /// the query names, [`crate::PodScope`]). Answers the removed [`crate::ContainerItem`].
    pub const CONTAINER: &str = "/api/v1/containers/{name}";

    /// `GET`: what the image of a target container says to run, a [`crate::ImageConfig`].
    /// Query: [`crate::ImageConfigRequest`], the target named and checked as a debug
    /// session's is (with `auth`: `create pods/exec` on its pod, the target that pod's, and
    /// node-level permission for a target that is the node).
    pub const IMAGE_CONFIG: &str = "/api/v1/image-config";

    /// The path of one container.
    pub fn container(name: &str) -> String {
        CONTAINER.replace("{name}", name)
    }

    /// `GET`: the recordings on the node, a [`crate::RecordingList`]. Query:
    /// [`crate::PodScope`].
    pub const RECORDINGS: &str = "/api/v1/recordings";
    /// `GET` `RECORDINGS/{session}`: that session's recording, asciicast as written. Query:
    /// [`crate::PodScope`].
    pub const RECORDING: &str = "/api/v1/recordings/{session}";
    /// `GET` upgraded to a WebSocket speaking `v3.asciicast` (one text message per asciicast
    /// v3 line, the header first, as asciinema's live streams): a running session, read-only,
    /// from its current screen. Query: `session` (or `container`, its debug container's
    /// session) and [`crate::PodScope`].
    pub const WATCH: &str = "/api/v1/watch";
    /// The WebSocket subprotocol of [`WATCH`].
    pub const WATCH_PROTOCOL: &str = "v3.asciicast";

    /// The path of one recording.
    pub fn recording(session: &str) -> String {
        RECORDING.replace("{session}", session)
    }

    /// The name in a path of [`CONTAINER`]'s form.
    pub fn container_name(path: &str) -> Option<&str> {
        last_segment(path, CONTAINERS)
    }

    /// The session in a path of [`RECORDING`]'s form.
    pub fn recording_session(path: &str) -> Option<&str> {
        last_segment(path, RECORDINGS)
    }

    fn last_segment<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
        let name = path.strip_prefix(prefix)?.strip_prefix('/')?;
        (!name.is_empty() && !name.contains('/')).then_some(name)
    }

    /// Every endpoint with its method: what [`crate::Endpoint::parse`] routes, and what its
    /// refusals list.
    pub const ENDPOINTS: [(&str, &str); 12] = [
        ("GET", HEALTHZ),
        ("GET", VERSION),
        ("GET", METRICS),
        ("GET", DEBUG),
        ("GET", PULL),
        ("POST", PULL),
        ("GET", CONTAINERS),
        ("DELETE", CONTAINER),
        ("GET", RECORDINGS),
        ("GET", RECORDING),
        ("GET", WATCH),
        ("GET", IMAGE_CONFIG),
    ];
}

/// Response headers of a debug session's upgrade.
pub mod header {
    /// The debug container's ID.
    pub const CONTAINER: &str = "x-kubectl-debug-container";
    /// A warning for the user (repeated).
    pub const WARNING: &str = "x-kubectl-debug-warning";
    /// The session's ID (what `watch` and `recordings get` take).
    pub const SESSION: &str = "x-kubectl-debug-session";
    /// The node whose agent records the session, when it does.
    pub const RECORDING: &str = "x-kubectl-debug-recording";
}

/// The `reason` of a refusal's `metav1.Status` where a client acts on it (other refusals
/// carry the HTTP status's name, e.g. `BadRequest`).
pub mod reason {
    /// The debug image is not on the node and the pull policy is `Never`. The plugin opens a
    /// session with `Never` first and pulls (with progress) only when told this, so a present
    /// image costs no request more than the session.
    pub const IMAGE_ABSENT: &str = "ImageAbsent";
    /// The target container is there but not running: stopped after the plugin found it
    /// running (a crash loop, most often). The plugin reads its pod again to say what now.
    pub const TARGET_NOT_RUNNING: &str = "TargetNotRunning";
}
