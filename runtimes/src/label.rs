//! The label keys, each [`LABEL_PREFIX`] + a name: what a debug container carries so that
//! any agent (and `kubectl-debug list`) knows whose it is and what it joins.

/// Spells a label key: the one prefix, defined here only, plus a name.
macro_rules! label_key {
    ($name:literal) => {
        concat!("debug.kubectl-debug.io/", $name)
    };
}

/// The prefix of every label this project puts on a debug container.
pub const LABEL_PREFIX: &str = label_key!("");

/// The session that created the container.
pub const SESSION: &str = label_key!("session");
/// The target container, as `<runtime>://<id>`.
pub const TARGET: &str = label_key!("target");
/// The target pod's namespace.
pub const POD_NAMESPACE: &str = label_key!("pod-namespace");
/// The target pod's name.
pub const POD_NAME: &str = label_key!("pod-name");
/// Who asked for the session.
pub const USER: &str = label_key!("user");
/// When the container was created, in seconds since the Unix epoch.
pub const CREATED_AT: &str = label_key!("created-at");
/// `true` when the container is kept after the session.
pub const RETAIN: &str = label_key!("retain");
/// The process that created the container, `<boot id>/<pid>/<start time>`: while it
/// lives, the container is its to clean up; once it is gone, any agent's reaper may.
pub const OWNER: &str = label_key!("owner");
/// The image as the user named it (runtimes may normalise the container's own).
pub const IMAGE: &str = label_key!("image");
/// containerd: the exit code of the container's main process, kept once its task is
/// deleted.
pub const EXIT_CODE: &str = label_key!("exit-code");
/// Set when the container gives its user the node itself, saying why (its target shares
/// the node's namespaces, or its profile grants node-level power): every later use of it
/// (attach, rm, list, watch, its recordings) needs the node-level permission too.
pub const NODE_LEVEL: &str = label_key!("node-level");
/// On a debug container in the node's own namespaces (`kubectl-debug node/NAME`): the node's
/// name, by which `list`, `attach` and `rm` find the node's debug containers.
pub const NODE: &str = label_key!("node");
