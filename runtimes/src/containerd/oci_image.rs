//! The OCI image model as registries and containerd's content store hold it: media types,
//! descriptors, indexes and manifests, the image config's layer IDs, chain IDs, and the choice
//! of this node's platform from an index. Pure: nothing here does I/O.

use std::collections::HashMap;

use containerd_client::types::Descriptor as Proto;
use serde::Deserialize;

use crate::PullError;

/// The manifest media types we read, index types first.
pub mod media {
    /// An OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// A Docker manifest list.
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// An OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// A Docker image manifest, schema 2.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

    /// Whether `media_type` is an index of manifests.
    pub fn is_index(media_type: &str) -> bool {
        media_type == OCI_INDEX || media_type == DOCKER_LIST
    }

    /// Whether `media_type` is one image's manifest.
    pub fn is_manifest(media_type: &str) -> bool {
        media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
    }
}

/// A descriptor as manifests and indexes spell it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

impl Descriptor {
    /// The descriptor of `bytes`, a document of `media_type`.
    pub fn of(media_type: &str, bytes: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.to_owned(),
            digest: sha256(bytes),
            size: bytes.len() as i64,
            platform: None,
        }
    }

    /// As containerd's API spells it.
    pub fn proto(&self) -> Proto {
        Proto {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.size,
            annotations: HashMap::new(),
        }
    }

    /// The short form users see in progress lines, like Docker's.
    pub fn short(&self) -> String {
        let hex = self
            .digest
            .split_once(':')
            .map_or(&*self.digest, |(_, h)| h);
        hex.chars().take(12).collect()
    }
}

/// The platform of an index entry.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

/// An image index (or Docker manifest list).
#[derive(Debug, Deserialize)]
pub(super) struct Index {
    pub manifests: Vec<Descriptor>,
}

/// One image's manifest.
#[derive(Debug, Deserialize)]
pub(super) struct Manifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// Parses a JSON document of the image (`what` names it in errors).
pub(super) fn parse<T: serde::de::DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, PullError> {
    serde_json::from_slice(bytes).map_err(|source| PullError::Malformed { what, source })
}

/// The diff IDs of an image config's layers.
pub(super) fn diff_ids(config: &[u8]) -> Result<Vec<String>, PullError> {
    #[derive(Deserialize)]
    struct ConfigRootfs {
        rootfs: Rootfs,
    }
    #[derive(Deserialize)]
    struct Rootfs {
        diff_ids: Vec<String>,
    }
    Ok(parse::<ConfigRootfs>("image config", config)?
        .rootfs
        .diff_ids)
}

/// `sha256:<hex>` of `bytes`.
pub(super) fn sha256(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut text = String::with_capacity(71);
    text.push_str("sha256:");
    for b in digest.as_ref() {
        text.push_str(&format!("{b:02x}"));
    }
    text
}

/// The chain IDs of layers with these diff IDs (OCI image spec: `ChainID(L0|...|Ln) =
/// sha256(ChainID(L0|...|Ln-1) + " " + DiffID(Ln))`).
pub(super) fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut chains: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match chains.last() {
            None => diff_id.clone(),
            Some(parent) => sha256(format!("{parent} {diff_id}").as_bytes()),
        };
        chains.push(next);
    }
    chains
}

/// This node's architecture as OCI platforms name it.
fn node_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// This node's platform: `linux/ARCH` (with `v8` for arm64, as indexes write it).
pub fn node_platform() -> crate::Platform {
    let architecture = node_architecture();
    crate::Platform {
        os: "linux".to_owned(),
        architecture: architecture.to_owned(),
        variant: (architecture == "arm64").then(|| "v8".to_owned()),
    }
}

/// The index entry for `wanted` (default: this node's platform). A variant asked for must be
/// the entry's (arm64's is `v8` when an entry names none); none asked for takes any.
pub(super) fn choose_platform(
    index: &Index,
    wanted: Option<&crate::Platform>,
) -> Result<Descriptor, PullError> {
    let wanted = wanted.cloned().unwrap_or_else(node_platform);
    let matches = |p: &Platform| {
        let variant = p
            .variant
            .as_deref()
            .or((p.architecture == "arm64").then_some("v8"));
        p.os == wanted.os
            && p.architecture == wanted.architecture
            && wanted.variant.as_deref().is_none_or(|v| Some(v) == variant)
    };
    index
        .manifests
        .iter()
        .find(|m| media::is_manifest(&m.media_type) && m.platform.as_ref().is_some_and(matches))
        .cloned()
        .ok_or_else(|| {
            let offered: Vec<String> = index
                .manifests
                .iter()
                .filter_map(|m| m.platform.as_ref())
                .map(|p| match &p.variant {
                    Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                    None => format!("{}/{}", p.os, p.architecture),
                })
                .collect();
            PullError::NoPlatform {
                wanted: wanted.to_string(),
                offered: offered.join(", "),
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_spec() {
        let a = "sha256:".to_owned() + &"a".repeat(64);
        let b = "sha256:".to_owned() + &"b".repeat(64);
        let chains = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chains[0], a);
        assert_eq!(chains[1], sha256(format!("{a} {b}").as_bytes()));
        assert_eq!(
            sha256(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn the_nodes_platform_is_chosen_or_the_offer_is_named() {
        let arch = node_architecture();
        let index: Index = serde_json::from_value(serde_json::json!({"manifests": [
            {"mediaType": media::OCI_MANIFEST, "digest": "sha256:1", "size": 1,
             "platform": {"architecture": "s390x", "os": "linux"}},
            {"mediaType": media::OCI_MANIFEST, "digest": "sha256:2", "size": 1,
             "platform": {"architecture": arch, "os": "linux"}},
        ]}))
        .unwrap();
        assert_eq!(choose_platform(&index, None).unwrap().digest, "sha256:2");
        let s390x = "linux/s390x".parse().unwrap();
        assert_eq!(
            choose_platform(&index, Some(&s390x)).unwrap().digest,
            "sha256:1"
        );
        let arm = "linux/arm/v7".parse().unwrap();
        let err = choose_platform(&index, Some(&arm)).unwrap_err().to_string();
        assert!(err.contains("no linux/arm/v7 variant"), "{err}");
        assert!(err.contains(&format!("linux/s390x, linux/{arch}")), "{err}");
        let other: Index = serde_json::from_value(serde_json::json!({"manifests": [
            {"mediaType": media::OCI_MANIFEST, "digest": "sha256:1", "size": 1,
             "platform": {"architecture": "s390x", "os": "linux"}},
        ]}))
        .unwrap();
        let err = choose_platform(&other, None).unwrap_err().to_string();
        assert!(err.contains("linux/s390x"), "{err}");
    }
}
