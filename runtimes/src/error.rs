//! The runtimes' errors: one enum for every operation, and the causes of a failed pull.

use crate::{InvalidReference, RegistryError, TargetRef};

/// Why a runtime operation failed. Variants name the operation; the source says what the
/// runtime answered.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The runtime's endpoint could not be reached.
    #[error("connecting to the {runtime} runtime at {endpoint}")]
    Connect {
        /// `docker` or `containerd`.
        runtime: &'static str,
        /// The endpoint tried.
        endpoint: String,
        /// What failed.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The target does not exist.
    #[error("target container {target} not found on this node")]
    TargetNotFound {
        /// The target.
        target: TargetRef,
    },
    /// The target exists but is not running.
    #[error(
        "target container {target} is {state}, not running: a debug container can only join a running container"
    )]
    TargetNotRunning {
        /// The target.
        target: TargetRef,
        /// Its state.
        state: String,
    },
    /// The target belongs to another runtime.
    #[error("target {target} belongs to another runtime than this agent's ({runtime})")]
    WrongRuntime {
        /// The target.
        target: TargetRef,
        /// This runtime.
        runtime: &'static str,
    },
    /// A debug container of that name exists.
    #[error(
        "a container named {name:?} exists; choose another name with --name, or remove the old one"
    )]
    NameTaken {
        /// The name.
        name: String,
        /// What the runtime answered.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No debug container has that name or ID.
    #[error("debug container {name:?} not found on this node")]
    ContainerNotFound {
        /// The name or ID asked for.
        name: String,
    },
    /// The image is absent and the pull policy forbids pulling.
    #[error(
        "image {image} is not present on this node and the pull policy is Never; pull it on the node or use another pull policy"
    )]
    ImageAbsent {
        /// The image.
        image: String,
    },
    /// Pulling the image failed.
    #[error("pulling image {image}")]
    Pull {
        /// The image.
        image: String,
        /// What went wrong.
        source: PullError,
    },
    /// The config of a target container's image cannot be read.
    #[error("reading the config of image {image} of target container {target}")]
    TargetImage {
        /// The target.
        target: TargetRef,
        /// Its image, as the runtime names it.
        image: String,
        /// What went wrong, with the way out where there is one.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Another runtime call failed.
    #[error("{operation} {object}")]
    Call {
        /// What was being done, e.g. `creating debug container for`.
        operation: &'static str,
        /// The object, e.g. a container ID.
        object: String,
        /// What the runtime answered.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Why pulling an image failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The node's registry host configuration cannot be used: the pull is not attempted
    /// with half a configuration.
    #[error(transparent)]
    Hosts(#[from] crate::containerd::hosts::HostsError),
    /// A registry host's TLS settings cannot be used.
    #[error(transparent)]
    HostTls(#[from] crate::containerd::registry::tls::HostTlsError),
    /// Every host of the registry (its mirrors, then itself) failed.
    #[error("no host could serve it: {tried}")]
    AllHosts {
        /// Each host and how it failed, in the order tried.
        tried: String,
    },
    /// The registry refused the pull for want of a credential, or refused the one sent.
    #[error("{said}; {}", refused_note(.sent.as_deref()))]
    Refused {
        /// What the registry or the engine said.
        said: String,
        /// Which credential was sent, described (never its value).
        sent: Option<String>,
    },
    /// The reference cannot be parsed.
    #[error(transparent)]
    Reference(#[from] InvalidReference),
    /// The registry could not be talked to, or refused.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The Docker engine's pull failed; its message.
    #[error("{0}")]
    Engine(String),
    /// The image has no variant for this node.
    #[error(
        "the image has no {wanted} variant (it has: {offered}); use an image built for it, or choose one of those with --platform"
    )]
    NoPlatform {
        /// The platform wanted: this node's, or `--platform`'s.
        wanted: String,
        /// The platforms the image has.
        offered: String,
    },
    /// A document does not match the digest it was asked by.
    #[error("the registry's document has digest {got}, not the {expected} asked for")]
    DigestMismatch {
        /// The digest asked for.
        expected: String,
        /// The digest of what came.
        got: String,
    },
    /// The manifest is of a kind we do not read.
    #[error(
        "the registry answered a manifest of type {0:?}; only OCI and Docker schema 2 images are supported"
    )]
    MediaType(String),
    /// A document is not what the OCI image spec describes.
    #[error("the image's {what} is not what OCI describes")]
    Malformed {
        /// Which document.
        what: &'static str,
        /// What the parser said.
        source: serde_json::Error,
    },
    /// The config and the manifest disagree on the layers.
    #[error("the image config lists {config} layers, its manifest {manifest}")]
    LayerCount {
        /// Layers in the config.
        config: usize,
        /// Layers in the manifest.
        manifest: usize,
    },
    /// A blob came larger than its descriptor says.
    #[error("blob {digest} is larger than the {size} bytes its descriptor says")]
    Oversized {
        /// The blob.
        digest: String,
        /// Its descriptor's size.
        size: i64,
    },
    /// A blob came shorter than its descriptor says.
    #[error("blob {digest} is {got} bytes, its descriptor says {size}")]
    Size {
        /// The blob.
        digest: String,
        /// Bytes that came.
        got: i64,
        /// Its descriptor's size.
        size: i64,
    },
    /// A blob of a present image is gone from the content store.
    #[error(
        "blob {digest} of the image is missing from containerd's content store; pull it again with --pull-policy Always"
    )]
    MissingBlob {
        /// The blob.
        digest: String,
    },
    /// The image has no layers.
    #[error("the image has no layers")]
    NoLayers,
    /// A layer unpacked to another content than the config says.
    #[error("layer {layer} unpacked to {applied}, but the image config says {expected}")]
    DiffId {
        /// The layer.
        layer: String,
        /// What it unpacked to.
        applied: String,
        /// What the config says.
        expected: String,
    },
    /// The image config cannot be run.
    #[error(transparent)]
    ImageConfig(#[from] crate::containerd::SpecError),
}

/// What a refused pull tells the user about credentials: which one was sent and from where,
/// never its value, or that none was and how to give one.
pub(crate) fn refused_note(sent: Option<&str>) -> String {
    match sent {
        Some(sent) => format!(
            "the registry refused {sent}: check that it is current and may pull this repository"
        ),
        None => "no credential was sent; the image may be private: give a pull secret \
                 (--image-pull-secret, or imagePullSecrets of the pod or its service account) \
                 or the agent's runtime.registryAuth (--registry-auth with local)"
            .to_owned(),
    }
}

/// Whether an engine's or registry's message says the registry wants or refused credentials.
pub(crate) fn says_unauthorized(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    [
        "unauthorized",
        "authentication required",
        "no basic auth credentials",
        "access denied",
        "denied:",
        "401",
        "403",
    ]
    .iter()
    .any(|s| message.contains(s))
}
