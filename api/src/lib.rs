//! The agent's HTTP API, defined once and used by both sides: the agent serves these paths and
//! reads these requests; the plugin's one agent client sends them and reads these answers.
//! Neither side spells a path, a query parameter or a JSON body by hand.
//!
//! - [`path`]: the endpoints, and [`DEFAULT_PORT`];
//! - [`request`]: the query of a debug session and of a pull;
//! - [`response`]: pull progress lines and the container list;
//! - [`Status`]: the error body of every refusal (Kubernetes' `metav1.Status`), the same
//!   document a session's status channel carries;
//! - [`header`]: the response headers of a debug session.

pub mod request;
pub mod response;

pub use kdbg_relay::error_chain;
pub use kdbg_relay::status::Status;
pub use kdbg_runtimes::{PullPolicy, PullProgress, RuntimeKind, TargetRef};
pub use request::{DebugRequest, PodScope, PullRequest};
pub use response::{ContainerItem, ContainerList, ContainerStatus, PullLine};

/// The port agents listen on, and the plugin's `--agent-port` default.
pub const DEFAULT_PORT: u16 = 10027;

/// The endpoints.
pub mod path {
    /// `GET`: `ok` while the agent serves.
    pub const HEALTHZ: &str = "/healthz";
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

    /// The path of one container.
    pub fn container(name: &str) -> String {
        CONTAINER.replace("{name}", name)
    }

    /// The name in a path of [`CONTAINER`]'s form.
    pub fn container_name(path: &str) -> Option<&str> {
        let name = path.strip_prefix(CONTAINERS)?.strip_prefix('/')?;
        (!name.is_empty() && !name.contains('/')).then_some(name)
    }

    /// Every endpoint with its method, for the agent's router and its 404 message.
    pub const ENDPOINTS: [(&str, &str); 5] = [
        ("GET", HEALTHZ),
        ("GET", DEBUG),
        ("GET", PULL),
        ("GET", CONTAINERS),
        ("DELETE", CONTAINER),
    ];
}

/// Response headers of a debug session's upgrade.
pub mod header {
    /// The debug container's ID.
    pub const CONTAINER: &str = "x-kubectl-debug-container";
    /// A warning for the user (repeated).
    pub const WARNING: &str = "x-kubectl-debug-warning";
}
