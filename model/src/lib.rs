//! The vocabulary the agent's wire contract (`kdbg-api`) and the runtimes (`kdbg-runtimes`)
//! share, without either's machinery: what a debug container may do ([`Profile`]), when to
//! pull its image ([`PullPolicy`], [`PullProgress`]), which container it joins
//! ([`TargetRef`], or the node itself: [`Target`]) and image references ([`Reference`]). Everything that speaks the contract
//! (the plugin, the fuzz targets) compiles this, not the engines' clients.

use std::fmt;
use std::str::FromStr;

pub mod reference;

pub use reference::{InvalidReference, Reference};

/// A value of this vocabulary that does not parse, saying what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidValue {
    /// Not a profile's name.
    #[error("unknown profile {0:?}; the profiles are general, netadmin, sysadmin and restricted")]
    Profile(String),
    /// Not a pull policy.
    #[error("pull policy {0:?} is not one of Always, IfNotPresent, Never")]
    PullPolicy(String),
    /// A target without `://`.
    #[error("target {0:?} is not <runtime>://<id>, e.g. docker://3f4e... or containerd://3f4e...")]
    TargetForm(String),
    /// A target of a runtime we do not speak.
    #[error("target {target:?} names runtime {runtime:?}; supported: docker, containerd")]
    TargetRuntime {
        /// The target as given.
        target: String,
        /// Its scheme.
        runtime: String,
    },
    /// Not a node's name.
    #[error(
        "node name {0:?} is invalid: a node's name is lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"
    )]
    NodeName(String),
    /// A target whose ID is not a container ID.
    #[error(
        "target {target:?} has no valid container ID after {scheme}:// (letters, digits, '_', '.', '-', starting with a letter or digit)"
    )]
    TargetId {
        /// The target as given.
        target: String,
        /// Its scheme.
        scheme: String,
    },
    /// Not `os/arch[/variant]`.
    #[error(
        "platform {0:?} is not os/arch[/variant] in lower-case letters, digits and '_', e.g. linux/amd64 or linux/arm/v7"
    )]
    Platform(String),
}

/// Capabilities a debug container gets beyond the runtime's defaults, on every backend:
/// enough for `strace`, `gdb` and `nsenter`, like the peers.
pub const DEBUG_CAPABILITIES: [&str; 2] = ["SYS_PTRACE", "SYS_ADMIN"];

/// What a debug container may do, chosen per session like `kubectl debug --profile`; the
/// agent's policy says which profiles are allowed and which is the default.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// SYS_PTRACE: strace, gdb, reading other processes' /proc. The default, as
    /// `kubectl debug`'s.
    #[default]
    General,
    /// NET_ADMIN and NET_RAW: tcpdump, ip, iptables in the target's network.
    Netadmin,
    /// SYS_PTRACE and SYS_ADMIN (nsenter, and bpf and perf tracing), mounts refused: power
    /// over the node, not only the pod ([`Profile::node_level`]).
    Sysadmin,
    /// No capability beyond the runtime's defaults.
    Restricted,
}

impl Profile {
    /// Every profile.
    pub const ALL: [Profile; 4] = [
        Profile::General,
        Profile::Netadmin,
        Profile::Sysadmin,
        Profile::Restricted,
    ];

    /// Its name, as `--profile` and the agent's YAML spell it.
    pub fn name(self) -> &'static str {
        match self {
            Profile::General => "general",
            Profile::Netadmin => "netadmin",
            Profile::Sysadmin => "sysadmin",
            Profile::Restricted => "restricted",
        }
    }

    /// Why the profile gives power over the node itself, beyond the target's pod, if it
    /// does: `sysadmin`'s CAP_SYS_ADMIN, `bpf` and `perf_event_open` reach every process
    /// on the node (a tracing program reads any process's memory).
    pub fn node_level(self) -> Option<&'static str> {
        (self == Profile::Sysadmin).then_some(
            "profile sysadmin grants CAP_SYS_ADMIN, bpf and perf_event_open, which reach every process on the node",
        )
    }

    /// The capabilities it adds to the runtime's defaults.
    pub fn capabilities(self) -> &'static [&'static str] {
        match self {
            Profile::General => &["SYS_PTRACE"],
            Profile::Netadmin => &["NET_ADMIN", "NET_RAW"],
            Profile::Sysadmin => &DEBUG_CAPABILITIES,
            Profile::Restricted => &[],
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| InvalidValue::Profile(s.to_owned()))
    }
}

/// Which runtime a container ID belongs to, as in a pod's `containerID` (`docker://...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    /// Docker Engine.
    Docker,
    /// containerd.
    Containerd,
}

impl RuntimeKind {
    /// The scheme in `containerID` URLs.
    pub fn scheme(self) -> &'static str {
        match self {
            RuntimeKind::Docker => "docker",
            RuntimeKind::Containerd => "containerd",
        }
    }
}

/// A target container: `<runtime>://<id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRef {
    /// The runtime that runs it.
    pub kind: RuntimeKind,
    /// Its ID (or, for Docker, a name).
    pub id: String,
}

impl fmt::Display for TargetRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.kind.scheme(), self.id)
    }
}

impl FromStr for TargetRef {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        let (scheme, id) = s
            .split_once("://")
            .ok_or_else(|| InvalidValue::TargetForm(s.to_owned()))?;
        let kind = match scheme {
            "docker" => RuntimeKind::Docker,
            "containerd" => RuntimeKind::Containerd,
            other => {
                return Err(InvalidValue::TargetRuntime {
                    target: s.to_owned(),
                    runtime: other.to_owned(),
                });
            }
        };
        // Docker's names and IDs and containerd's IDs alike: a letter or digit, then
        // letters, digits, '_', '.', '-'.
        let valid = id.len() <= 255
            && id.starts_with(|c: char| c.is_ascii_alphanumeric())
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !valid {
            return Err(InvalidValue::TargetId {
                target: s.to_owned(),
                scheme: scheme.to_owned(),
            });
        }
        Ok(TargetRef {
            kind,
            id: id.to_owned(),
        })
    }
}

/// The scheme of a node target: `node://NAME`, the node's own namespaces.
pub const NODE_SCHEME: &str = "node";

/// What a debug container joins: a container's namespaces, or the node's own (`kubectl-debug
/// node/NAME`: its pid, network, IPC and UTS namespaces, its root filesystem at `/host`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A container, `<runtime>://<id>`.
    Container(TargetRef),
    /// The node named so, `node://NAME`.
    Node(String),
}

impl Target {
    /// The container, if it is one.
    pub fn container(&self) -> Option<&TargetRef> {
        match self {
            Target::Container(target) => Some(target),
            Target::Node(_) => None,
        }
    }

    /// The node's name, if it is the node.
    pub fn node(&self) -> Option<&str> {
        match self {
            Target::Container(_) => None,
            Target::Node(node) => Some(node),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Container(target) => target.fmt(f),
            Target::Node(node) => write!(f, "{NODE_SCHEME}://{node}"),
        }
    }
}

impl FromStr for Target {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        match s.strip_prefix("node://") {
            Some(node) => node_name(node).map(Target::Node),
            None => s.parse().map(Target::Container),
        }
    }
}

/// A node's name as Kubernetes allows it (a DNS subdomain: lower-case letters, digits, '-'
/// and '.', starting and ending with a letter or digit, at most 253 characters).
pub fn node_name(name: &str) -> Result<String, InvalidValue> {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.starts_with(alnum)
        && name.ends_with(alnum)
        && name.chars().all(|c| alnum(c) || c == '-' || c == '.');
    if valid {
        Ok(name.to_owned())
    } else {
        Err(InvalidValue::NodeName(name.to_owned()))
    }
}

/// An image's platform, `os/arch[/variant]` (`linux/amd64`, `linux/arm/v7`), as OCI indexes
/// and `--platform` name them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`, `arm`...
    pub architecture: String,
    /// `v7`, `v8`..., if any.
    pub variant: Option<String>,
}

impl FromStr for Platform {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        let part = |p: &str| {
            !p.is_empty()
                && p.len() <= 32
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if part(os) && part(arch) => Ok(Platform {
                os: (*os).to_owned(),
                architecture: (*arch).to_owned(),
                variant: None,
            }),
            [os, arch, variant] if part(os) && part(arch) && part(variant) => Ok(Platform {
                os: (*os).to_owned(),
                architecture: (*arch).to_owned(),
                variant: Some((*variant).to_owned()),
            }),
            _ => Err(InvalidValue::Platform(s.to_owned())),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// When to pull the debug image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Pull every time.
    Always,
    /// Pull only when the image is absent.
    #[default]
    IfNotPresent,
    /// Never pull; fail when the image is absent.
    Never,
}

impl FromStr for PullPolicy {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        match s {
            "Always" => Ok(PullPolicy::Always),
            "IfNotPresent" => Ok(PullPolicy::IfNotPresent),
            "Never" => Ok(PullPolicy::Never),
            other => Err(InvalidValue::PullPolicy(other.to_owned())),
        }
    }
}

impl fmt::Display for PullPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        })
    }
}

/// One line of image pull progress.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PullProgress {
    /// The layer or object concerned, if any.
    pub id: Option<String>,
    /// What happens, e.g. `Downloading`, `Pull complete`.
    pub status: String,
    /// Bytes done and in all, when known.
    pub current: Option<u64>,
    /// Bytes in all, when known.
    pub total: Option<u64>,
}

/// A registry credential for one pull, chosen by the plugin from the user's image pull
/// secrets and sent in the pull's request body. The agent uses it for that pull and keeps it
/// nowhere; it never appears in a URL, a log line, an audit field, a label or a container.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryCredential {
    /// The registry as the secret's entry names it (`registry.example.com`,
    /// `*.example.com`, `https://index.docker.io/v1/`): for messages.
    pub key: String,
    /// Where it came from, for messages: `secret NAMESPACE/NAME`.
    pub source: String,
    /// The user name.
    pub username: String,
    /// The password or token.
    pub password: String,
}

impl fmt::Debug for RegistryCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryCredential")
            .field("key", &self.key)
            .field("source", &self.source)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl RegistryCredential {
    /// How messages name it: `the credential for KEY from SOURCE` (never its value).
    pub fn described(&self) -> String {
        format!("the credential for {} from {}", self.key, self.source)
    }
}

/// What a container's image says to run when its pod says nothing: the `Entrypoint`, `Cmd`,
/// `WorkingDir` and `User` of its OCI (or Docker) image config, as the runtime holds it. A
/// runtime reads it for a target container ([`TargetRef`]); the agent answers it as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageConfig {
    /// The image, as the runtime names the container's (a name, or an ID when it has none).
    pub image: String,
    /// `Entrypoint`; absent when the image sets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// `Cmd`; absent when the image sets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// `WorkingDir`; absent when the image sets none (the runtime then uses `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// `User` (`uid`, `uid:gid`, or a name); absent when the image sets none (root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

impl ImageConfig {
    /// The image config from its fields as engines give them: empty lists and strings are
    /// "not set", as Docker and containerd treat them.
    pub fn new(
        image: impl Into<String>,
        entrypoint: Option<Vec<String>>,
        cmd: Option<Vec<String>>,
        working_dir: Option<String>,
        user: Option<String>,
    ) -> ImageConfig {
        ImageConfig {
            image: image.into(),
            entrypoint: entrypoint.filter(|e| !e.is_empty()),
            cmd: cmd.filter(|c| !c.is_empty()),
            working_dir: working_dir.filter(|d| !d.trim().is_empty()),
            user: user.filter(|u| !u.trim().is_empty()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_containers_or_the_node() {
        let node: Target = "node://worker-1.example".parse().unwrap();
        assert_eq!(node, Target::Node("worker-1.example".into()));
        assert_eq!(node.to_string(), "node://worker-1.example");
        let container: Target = "docker://abc".parse().unwrap();
        assert_eq!(container.container().unwrap().id, "abc");
        assert_eq!(container.to_string(), "docker://abc");
        for bad in ["node://", "node://Upper", "node://-x", "node://a/b"] {
            let err = bad.parse::<Target>().unwrap_err().to_string();
            assert!(err.contains("node name"), "{bad}: {err}");
        }
    }
}
