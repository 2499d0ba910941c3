//! Fetching from the registry: the manifest a reference names (through an index to the
//! platform's manifest, this node's unless asked otherwise, each checked against its digest), and the image config.

use bytes::Bytes;
use hyper::Response;
use hyper::body::Incoming;

use crate::PullError;
use crate::containerd::oci_image::{self, Descriptor, Index, Manifest, media};
use crate::containerd::registry::{Session, read_all};
use crate::reference::Reference;

/// The documents a reference resolves to.
pub(super) struct Fetched {
    /// What the reference names: an index, or the manifest itself.
    pub top: Descriptor,
    /// The index's bytes, when `top` is one.
    pub index: Option<Bytes>,
    /// This node's manifest.
    pub manifest_desc: Descriptor,
    /// Its bytes.
    pub manifest_bytes: Bytes,
    /// Parsed.
    pub manifest: Manifest,
}

/// Fetches the manifest `reference` names, through an index when it names one.
pub(super) async fn manifest(
    session: &mut Session<'_>,
    reference: &Reference,
    platform: Option<&crate::Platform>,
) -> Result<Fetched, PullError> {
    let (media_type, bytes) = session.manifest(reference.object()).await?;
    let top = Descriptor::of(&media_type, &bytes);
    if let Some(digest) = &reference.digest
        && *digest != top.digest
    {
        return Err(PullError::DigestMismatch {
            expected: digest.clone(),
            got: top.digest,
        });
    }
    if media::is_manifest(&media_type) {
        let manifest = oci_image::parse("manifest", &bytes)?;
        return Ok(Fetched {
            manifest_desc: top.clone(),
            top,
            index: None,
            manifest_bytes: bytes,
            manifest,
        });
    }
    if !media::is_index(&media_type) {
        return Err(PullError::MediaType(media_type));
    }
    let index: Index = oci_image::parse("index", &bytes)?;
    let chosen = oci_image::choose_platform(&index, platform)?;
    let (media_type, manifest_bytes) = session.manifest(&chosen.digest).await?;
    let got = oci_image::sha256(&manifest_bytes);
    if got != chosen.digest {
        return Err(PullError::DigestMismatch {
            expected: chosen.digest,
            got,
        });
    }
    let manifest = oci_image::parse("manifest", &manifest_bytes)?;
    Ok(Fetched {
        top,
        index: Some(bytes),
        manifest_desc: Descriptor {
            media_type,
            ..chosen
        },
        manifest_bytes,
        manifest,
    })
}

/// Fetches the image config `manifest` names, and checks it lists as many layers.
pub(super) async fn config(
    session: &mut Session<'_>,
    manifest: &Manifest,
) -> Result<Bytes, PullError> {
    let response = session.blob(&manifest.config.digest).await?;
    let limit = usize::try_from(manifest.config.size).unwrap_or(0);
    let url = format!("the config {}", manifest.config.digest);
    let bytes = read_all(&url, response, limit).await?;
    let diff_ids = oci_image::diff_ids(&bytes)?;
    if diff_ids.len() != manifest.layers.len() {
        return Err(PullError::LayerCount {
            config: diff_ids.len(),
            manifest: manifest.layers.len(),
        });
    }
    Ok(bytes)
}

/// Starts downloading a layer.
pub(super) async fn layer(
    session: &mut Session<'_>,
    layer: &Descriptor,
) -> Result<Response<Incoming>, PullError> {
    Ok(session.blob(&layer.digest).await?)
}
