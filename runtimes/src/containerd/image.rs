//! Images on containerd, pulled on the client side: the registry's manifest (or index, then
//! the manifest for this node's platform), config and layers are written into containerd's
//! content store, the image record is created, and the layers are unpacked into the
//! snapshotter by containerd's diff service, one committed snapshot per layer, named by its
//! chain ID as containerd's own unpacker names them (so images pulled by `ctr` are shared).
//!
//! Garbage-collection labels tie the image to its blobs and its unpacked snapshot, like
//! containerd's client does, so nothing the image needs is collected and nothing else is kept.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    ApplyRequest, CreateImageRequest, GetImageRequest, Image, Info, ReadContentRequest,
    UpdateImageRequest, UpdateRequest, WriteAction, WriteContentRequest,
};
use containerd_client::tonic::Code;
use containerd_client::types::Descriptor as Proto;
use http_body_util::BodyExt;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{ContainerdRuntime, StatusMessage, call, unique};
use crate::oci::ImageConfig;
use crate::registry::{IDLE_TIMEOUT, Reference, Session, media};
use crate::{Error, PullPolicy, PullProgress};

/// Bytes sent to the content store per message.
const WRITE_CHUNK: usize = 1 << 20;
/// How long to wait for another client's write of the same blob.
const REF_LOCK_WAIT: Duration = Duration::from_secs(600);

/// A descriptor as manifests and indexes spell it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: i64,
    #[serde(default)]
    platform: Option<Platform>,
}

impl Descriptor {
    fn proto(&self) -> Proto {
        Proto {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.size,
            annotations: HashMap::new(),
        }
    }

    /// The short form users see in progress lines, like Docker's.
    fn short(&self) -> String {
        let hex = self
            .digest
            .split_once(':')
            .map_or(&*self.digest, |(_, h)| h);
        hex.chars().take(12).collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
struct Platform {
    architecture: String,
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct ConfigRootfs {
    rootfs: Rootfs,
}

#[derive(Debug, Deserialize)]
struct Rootfs {
    diff_ids: Vec<String>,
}

/// An image present in containerd, ready to base a container on.
pub(super) struct LocalImage {
    /// Its name in containerd's image store.
    pub name: String,
    /// What its config says to run.
    pub config: ImageConfig,
    /// The chain ID of its top layer: the snapshot a container's is prepared on.
    pub chain_id: String,
}

/// `sha256:<hex>` of `bytes`.
fn sha256(bytes: &[u8]) -> String {
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
fn chain_ids(diff_ids: &[String]) -> Vec<String> {
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

/// The index entry for this node's platform.
fn choose_platform(image: &str, index: &Index) -> Result<Descriptor, Error> {
    let arch = node_architecture();
    let wanted = |p: &Platform| {
        p.os == "linux"
            && p.architecture == arch
            && (arch != "arm64" || p.variant.as_deref().is_none_or(|v| v == "v8"))
    };
    index
        .manifests
        .iter()
        .find(|m| media::is_manifest(&m.media_type) && m.platform.as_ref().is_some_and(wanted))
        .cloned()
        .ok_or_else(|| {
            let offered: Vec<String> = index
                .manifests
                .iter()
                .filter_map(|m| m.platform.as_ref())
                .map(|p| format!("{}/{}", p.os, p.architecture))
                .collect();
            Error::Pull {
                image: image.to_owned(),
                message: format!(
                    "the image has no linux/{arch} variant (it has: {}); use an image built for this node",
                    offered.join(", ")
                ),
            }
        })
}

/// Pull progress, if anyone listens; advisory, so a slow or gone listener never fails a pull.
struct Progress(Option<mpsc::Sender<PullProgress>>);

impl Progress {
    fn say(&self, id: Option<String>, status: &str, current: Option<u64>, total: Option<u64>) {
        if let Some(tx) = &self.0 {
            let _ = tx.try_send(PullProgress {
                id,
                status: status.to_owned(),
                current,
                total,
            });
        }
    }
}

/// Where a blob's bytes come from.
enum Source<'s, 'r> {
    /// Already fetched (manifests, configs).
    Memory(Bytes),
    /// To download from the registry (layers), reporting progress.
    Registry(&'s mut Session<'r>),
}

fn pull_error(image: &str) -> impl Fn(String) -> Error + '_ {
    move |message| Error::Pull {
        image: image.to_owned(),
        message,
    }
}

impl ContainerdRuntime {
    /// [`crate::Runtime::ensure_image`] under `lease`.
    pub(super) async fn ensure_image_under(
        &self,
        image: &str,
        policy: PullPolicy,
        progress: Option<mpsc::Sender<PullProgress>>,
        lease: &str,
    ) -> Result<(), Error> {
        let progress = Progress(progress);
        let reference = Reference::parse(image).map_err(pull_error(image))?;
        if policy != PullPolicy::Always
            && let Some(target) = self.image_target(&reference.to_string()).await?
        {
            let (manifest, config) = self.load(image, &target).await?;
            let diff_ids = diff_ids(image, &config)?;
            return self
                .unpack(image, &manifest, &diff_ids, &config, lease, &progress)
                .await;
        }
        if policy == PullPolicy::Never {
            return Err(Error::ImageAbsent {
                image: image.to_owned(),
            });
        }
        self.pull(image, &reference, lease, &progress).await
    }

    /// The image `image` (as the user wrote it), which must be present and unpacked.
    pub(super) async fn local_image(&self, image: &str) -> Result<LocalImage, Error> {
        let reference = Reference::parse(image).map_err(pull_error(image))?;
        let name = reference.to_string();
        let target = self
            .image_target(&name)
            .await?
            .ok_or_else(|| Error::ImageAbsent {
                image: image.to_owned(),
            })?;
        let (_, config) = self.load(image, &target).await?;
        let chain_id = chain_ids(&diff_ids(image, &config)?)
            .pop()
            .ok_or_else(|| pull_error(image)("the image has no layers".into()))?;
        let config = ImageConfig::from_image_config(&config).map_err(pull_error(image))?;
        Ok(LocalImage {
            name,
            config,
            chain_id,
        })
    }

    /// The image record's target, if the image is in our namespace.
    async fn image_target(&self, name: &str) -> Result<Option<Descriptor>, Error> {
        let got = ImagesClient::new(self.channel.clone())
            .get(self.request(
                GetImageRequest {
                    name: name.to_owned(),
                },
                None,
            ))
            .await;
        match got {
            Ok(r) => Ok(r
                .into_inner()
                .image
                .and_then(|i| i.target)
                .map(|t| Descriptor {
                    media_type: t.media_type,
                    digest: t.digest,
                    size: t.size,
                    platform: None,
                })),
            Err(e) if e.code() == Code::NotFound => Ok(None),
            Err(e) => Err(call("looking up image", name)(e)),
        }
    }

    /// The manifest and config of a present image, from the content store.
    async fn load(&self, image: &str, target: &Descriptor) -> Result<(Manifest, Bytes), Error> {
        let mut manifest_desc = target.clone();
        if media::is_index(&target.media_type) {
            let index: Index = parse(image, &self.read_blob(image, &target.digest).await?)?;
            manifest_desc = choose_platform(image, &index)?;
        }
        let manifest: Manifest =
            parse(image, &self.read_blob(image, &manifest_desc.digest).await?)?;
        let config = self.read_blob(image, &manifest.config.digest).await?;
        Ok((manifest, config))
    }

    /// A blob from the content store.
    async fn read_blob(&self, image: &str, digest: &str) -> Result<Bytes, Error> {
        let mut stream = ContentClient::new(self.channel.clone())
            .read(self.request(
                ReadContentRequest {
                    digest: digest.to_owned(),
                    offset: 0,
                    size: 0,
                },
                None,
            ))
            .await
            .map_err(|e| missing_blob(image, digest, e))?
            .into_inner();
        let mut data = BytesMut::new();
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|e| missing_blob(image, digest, e))?
        {
            data.extend_from_slice(&chunk.data);
        }
        Ok(data.freeze())
    }

    /// Pulls `reference` into the content store, records the image and unpacks it.
    async fn pull(
        &self,
        image: &str,
        reference: &Reference,
        lease: &str,
        progress: &Progress,
    ) -> Result<(), Error> {
        let fail = pull_error(image);
        let mut session = self.registry.session(reference);
        progress.say(
            None,
            &format!("Pulling from {}", reference.repository),
            None,
            None,
        );
        let (media_type, bytes) = session
            .manifest(reference.object())
            .await
            .map_err(|e| fail(crate::error_chain(&e)))?;
        let top = Descriptor {
            media_type: media_type.clone(),
            digest: sha256(&bytes),
            size: bytes.len() as i64,
            platform: None,
        };
        if let Some(digest) = &reference.digest
            && *digest != top.digest
        {
            return Err(fail(format!(
                "the registry's manifest has digest {}, not the {digest} asked for",
                top.digest
            )));
        }
        let (manifest_desc, manifest_bytes, index) = if media::is_index(&media_type) {
            let index: Index = parse(image, &bytes)?;
            let chosen = choose_platform(image, &index)?;
            let (media_type, manifest_bytes) = session
                .manifest(&chosen.digest)
                .await
                .map_err(|e| fail(crate::error_chain(&e)))?;
            if sha256(&manifest_bytes) != chosen.digest {
                return Err(fail(format!(
                    "the manifest for this platform does not match its digest {}",
                    chosen.digest
                )));
            }
            let desc = Descriptor {
                media_type,
                ..chosen
            };
            (desc, manifest_bytes, Some((top.clone(), bytes)))
        } else if media::is_manifest(&media_type) {
            (top.clone(), bytes, None)
        } else {
            return Err(fail(format!(
                "the registry answered a manifest of type {media_type:?}; only OCI and Docker schema 2 images are supported"
            )));
        };
        let manifest: Manifest = parse(image, &manifest_bytes)?;
        let config_bytes = {
            let url = format!("the config of {image}");
            let response = session
                .blob(&manifest.config.digest)
                .await
                .map_err(|e| fail(crate::error_chain(&e)))?;
            let limit = usize::try_from(manifest.config.size).unwrap_or(0);
            crate::registry::read_all(&url, response, limit)
                .await
                .map_err(|e| fail(crate::error_chain(&e)))?
        };
        let diff_ids = diff_ids(image, &config_bytes)?;
        if diff_ids.len() != manifest.layers.len() {
            return Err(fail(format!(
                "the image config lists {} layers, its manifest {}",
                diff_ids.len(),
                manifest.layers.len()
            )));
        }
        for layer in &manifest.layers {
            progress.say(Some(layer.short()), "Pulling fs layer", None, None);
        }
        for layer in &manifest.layers {
            let fetched = self
                .write_content(
                    image,
                    layer,
                    lease,
                    Source::Registry(&mut session),
                    progress,
                )
                .await?;
            let status = if fetched {
                "Download complete"
            } else {
                "Already exists"
            };
            progress.say(Some(layer.short()), status, None, None);
        }
        self.write_content(
            image,
            &manifest.config,
            lease,
            Source::Memory(config_bytes.clone()),
            progress,
        )
        .await?;
        self.write_content(
            image,
            &manifest_desc,
            lease,
            Source::Memory(manifest_bytes),
            progress,
        )
        .await?;
        let mut manifest_labels = HashMap::from([(
            "containerd.io/gc.ref.content.config".to_owned(),
            manifest.config.digest.clone(),
        )]);
        for (i, layer) in manifest.layers.iter().enumerate() {
            manifest_labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                layer.digest.clone(),
            );
        }
        self.label(image, &manifest_desc.digest, manifest_labels)
            .await?;
        if let Some((index_desc, index_bytes)) = &index {
            self.write_content(
                image,
                index_desc,
                lease,
                Source::Memory(index_bytes.clone()),
                progress,
            )
            .await?;
            let labels = HashMap::from([(
                "containerd.io/gc.ref.content.m.0".to_owned(),
                manifest_desc.digest.clone(),
            )]);
            self.label(image, &index_desc.digest, labels).await?;
        }
        // Unpacked first, recorded second (as containerd's client does): whoever finds the
        // image record finds its layers unpacked.
        self.unpack(image, &manifest, &diff_ids, &config_bytes, lease, progress)
            .await?;
        self.record(image, &reference.to_string(), &top, lease)
            .await?;
        progress.say(None, &format!("Digest: {}", top.digest), None, None);
        Ok(())
    }

    /// Creates (or points anew) the image record `name` at `target`.
    async fn record(
        &self,
        image: &str,
        name: &str,
        target: &Descriptor,
        lease: &str,
    ) -> Result<(), Error> {
        let record = Image {
            name: name.to_owned(),
            target: Some(target.proto()),
            ..Image::default()
        };
        let mut images = ImagesClient::new(self.channel.clone());
        let created = images
            .create(self.request(
                CreateImageRequest {
                    image: Some(record.clone()),
                    source_date_epoch: None,
                },
                Some(lease),
            ))
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Code::AlreadyExists => images
                .update(self.request(
                    UpdateImageRequest {
                        image: Some(record),
                        update_mask: None,
                        source_date_epoch: None,
                    },
                    Some(lease),
                ))
                .await
                .map(|_| ())
                .map_err(call("updating the image record of", image)),
            Err(e) => Err(call("creating the image record of", image)(e)),
        }
    }

    /// Sets garbage-collection labels on a blob.
    async fn label(
        &self,
        image: &str,
        digest: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), Error> {
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        ContentClient::new(self.channel.clone())
            .update(self.request(
                UpdateRequest {
                    info: Some(Info {
                        digest: digest.to_owned(),
                        labels,
                        ..Info::default()
                    }),
                    update_mask: Some(prost_types::FieldMask { paths }),
                },
                None,
            ))
            .await
            .map(|_| ())
            .map_err(call(
                "labelling a blob of image",
                format!("{image} ({digest})"),
            ))
    }

    /// Writes one blob into the content store; `false` if it was there already.
    async fn write_content(
        &self,
        image: &str,
        desc: &Descriptor,
        lease: &str,
        source: Source<'_, '_>,
        progress: &Progress,
    ) -> Result<bool, Error> {
        let failed = failed_ref(image, desc);
        let reference = format!("kubectl-debug-{}", desc.digest);
        let message = |action: WriteAction, offset: i64, data: Vec<u8>| WriteContentRequest {
            action: action as i32,
            r#ref: reference.clone(),
            total: desc.size,
            expected: desc.digest.clone(),
            offset,
            data,
            labels: HashMap::new(),
        };
        // Another client writing the same blob holds its ref: wait for it, bounded, then the
        // blob is usually there.
        let deadline = tokio::time::Instant::now() + REF_LOCK_WAIT;
        let (tx, mut responses) = loop {
            let (tx, rx) = mpsc::channel::<WriteContentRequest>(2);
            let requests = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|m| (m, rx))
            });
            // The first message goes before the call: containerd answers only once it has one.
            let _ = tx.send(message(WriteAction::Stat, 0, Vec::new())).await;
            let opened = ContentClient::new(self.channel.clone())
                .write(self.request(requests, Some(lease)))
                .await;
            let first = match opened {
                Ok(r) => {
                    let mut responses = r.into_inner();
                    responses.message().await.map(|_| responses)
                }
                Err(e) => Err(e),
            };
            match first {
                Ok(responses) => break (tx, responses),
                Err(e) if e.code() == Code::AlreadyExists => return Ok(false),
                Err(e)
                    if e.code() == Code::Unavailable && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(failed(e)),
            }
        };
        let mut offset = 0i64;
        let mut send =
            async |data: Vec<u8>, offset: i64| -> Result<(), containerd_client::tonic::Status> {
                let _ = tx.send(message(WriteAction::Write, offset, data)).await;
                responses.message().await.map(|_| ())
            };
        match source {
            Source::Memory(bytes) => {
                for chunk in bytes.chunks(WRITE_CHUNK) {
                    send(chunk.to_vec(), offset).await.map_err(&failed)?;
                    offset += chunk.len() as i64;
                }
            }
            Source::Registry(session) => {
                let total = u64::try_from(desc.size).ok();
                let short = Some(desc.short());
                let response = session
                    .blob(&desc.digest)
                    .await
                    .map_err(|e| pull_error(image)(crate::error_chain(&e)))?;
                let mut body = response.into_body();
                let mut pending = Vec::with_capacity(WRITE_CHUNK);
                loop {
                    let frame = tokio::time::timeout(IDLE_TIMEOUT, body.frame())
                        .await
                        .map_err(|_| {
                            pull_error(image)(format!(
                                "downloading layer {}: the registry stalled for {IDLE_TIMEOUT:?}",
                                desc.digest
                            ))
                        })?
                        .transpose()
                        .map_err(|e| {
                            pull_error(image)(format!("downloading layer {}: {e}", desc.digest))
                        })?;
                    let done = frame.is_none();
                    if let Some(data) = frame.as_ref().and_then(|f| f.data_ref()) {
                        // A registry sending more than the descriptor says is not believed.
                        if offset + (pending.len() + data.len()) as i64 > desc.size {
                            return Err(pull_error(image)(format!(
                                "layer {} is larger than the {} bytes its descriptor says",
                                desc.digest, desc.size
                            )));
                        }
                        pending.extend_from_slice(data);
                    }
                    if pending.len() >= WRITE_CHUNK || (done && !pending.is_empty()) {
                        let data = std::mem::replace(&mut pending, Vec::with_capacity(WRITE_CHUNK));
                        let len = data.len() as i64;
                        send(data, offset).await.map_err(&failed)?;
                        offset += len;
                        progress.say(
                            short.clone(),
                            "Downloading",
                            u64::try_from(offset).ok(),
                            total,
                        );
                    }
                    if done {
                        break;
                    }
                }
            }
        }
        if offset != desc.size {
            return Err(pull_error(image)(format!(
                "blob {} is {offset} bytes, its descriptor says {}",
                desc.digest, desc.size
            )));
        }
        let _ = tx
            .send(message(WriteAction::Commit, offset, Vec::new()))
            .await;
        match responses.message().await {
            Ok(_) => {}
            Err(e) if e.code() == Code::AlreadyExists => {}
            Err(e) => return Err(failed(e)),
        }
        drop(tx);
        Ok(true)
    }

    /// Unpacks the layers into the snapshotter (those not unpacked yet) and labels the config
    /// with the top snapshot, so the image keeps it.
    async fn unpack(
        &self,
        image: &str,
        manifest: &Manifest,
        diff_ids: &[String],
        config: &Bytes,
        lease: &str,
        progress: &Progress,
    ) -> Result<(), Error> {
        let snapshotter = self.options.snapshotter.clone();
        let chains = chain_ids(diff_ids);
        let snapshots = SnapshotsClient::new(self.channel.clone());
        let mut parent = String::new();
        for ((layer, chain), diff_id) in manifest.layers.iter().zip(&chains).zip(diff_ids) {
            let exists = snapshots
                .clone()
                .stat(self.request(
                    StatSnapshotRequest {
                        snapshotter: snapshotter.clone(),
                        key: chain.clone(),
                    },
                    None,
                ))
                .await;
            match exists {
                Ok(_) => {
                    parent = chain.clone();
                    continue;
                }
                Err(e) if e.code() == Code::NotFound => {}
                Err(e) => return Err(call("looking up an unpacked layer of image", image)(e)),
            }
            progress.say(Some(layer.short()), "Extracting", None, None);
            let key = format!("kubectl-debug-extract-{}-{chain}", unique());
            let result = self
                .apply_layer(image, layer, diff_id, chain, &key, &parent, lease)
                .await;
            if result.is_err() {
                let _ = snapshots
                    .clone()
                    .remove(self.request(
                        RemoveSnapshotRequest {
                            snapshotter: snapshotter.clone(),
                            key: key.clone(),
                        },
                        None,
                    ))
                    .await;
            }
            result?;
            progress.say(Some(layer.short()), "Pull complete", None, None);
            parent = chain.clone();
        }
        let config_digest = sha256(config);
        let labels = HashMap::from([(
            format!("containerd.io/gc.ref.snapshot.{snapshotter}"),
            parent,
        )]);
        self.label(image, &config_digest, labels).await
    }

    /// Applies one layer onto a snapshot prepared on `parent`, and commits it as `chain`.
    #[allow(clippy::too_many_arguments)]
    async fn apply_layer(
        &self,
        image: &str,
        layer: &Descriptor,
        diff_id: &str,
        chain: &str,
        key: &str,
        parent: &str,
        lease: &str,
    ) -> Result<(), Error> {
        let snapshotter = self.options.snapshotter.clone();
        let mut snapshots = SnapshotsClient::new(self.channel.clone());
        let mounts = snapshots
            .prepare(self.request(
                PrepareSnapshotRequest {
                    snapshotter: snapshotter.clone(),
                    key: key.to_owned(),
                    parent: parent.to_owned(),
                    labels: HashMap::new(),
                },
                Some(lease),
            ))
            .await
            .map_err(call(
                "preparing a snapshot to unpack a layer of image",
                image,
            ))?
            .into_inner()
            .mounts;
        let applied = DiffClient::new(self.channel.clone())
            .apply(self.request(
                ApplyRequest {
                    diff: Some(layer.proto()),
                    mounts,
                    ..ApplyRequest::default()
                },
                Some(lease),
            ))
            .await
            .map_err(call(
                "unpacking a layer of image",
                format!("{image} ({})", layer.digest),
            ))?
            .into_inner()
            .applied;
        let applied = applied.map(|d| d.digest).unwrap_or_default();
        if applied != diff_id {
            return Err(pull_error(image)(format!(
                "layer {} unpacked to {applied}, but the image config says {diff_id}",
                layer.digest
            )));
        }
        let committed = snapshots
            .commit(self.request(
                CommitSnapshotRequest {
                    snapshotter,
                    name: chain.to_owned(),
                    key: key.to_owned(),
                    labels: HashMap::new(),
                },
                Some(lease),
            ))
            .await;
        match committed {
            Ok(_) => Ok(()),
            // Someone else unpacked the same layer meanwhile: theirs will do, ours goes.
            Err(e) if e.code() == Code::AlreadyExists => {
                let _ = snapshots
                    .remove(self.request(
                        RemoveSnapshotRequest {
                            snapshotter: self.options.snapshotter.clone(),
                            key: key.to_owned(),
                        },
                        None,
                    ))
                    .await;
                Ok(())
            }
            Err(e) => Err(call("committing an unpacked layer of image", image)(e)),
        }
    }
}

fn failed_ref<'a>(
    image: &'a str,
    desc: &'a Descriptor,
) -> impl Fn(containerd_client::tonic::Status) -> Error + 'a {
    move |e| Error::Call {
        operation: "writing into containerd's content store a blob of image",
        object: format!("{image} ({})", desc.digest),
        source: Box::new(StatusMessage(e)),
    }
}

fn missing_blob(image: &str, digest: &str, e: containerd_client::tonic::Status) -> Error {
    if e.code() == Code::NotFound {
        return Error::Pull {
            image: image.to_owned(),
            message: format!(
                "blob {digest} of the image is missing from containerd's content store; pull it again with --pull-policy Always"
            ),
        };
    }
    call("reading a blob of image", image)(e)
}

fn parse<T: serde::de::DeserializeOwned>(image: &str, bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::Pull {
        image: image.to_owned(),
        message: format!("the registry's manifest or config is not what OCI describes: {e}"),
    })
}

fn diff_ids(image: &str, config: &[u8]) -> Result<Vec<String>, Error> {
    Ok(parse::<ConfigRootfs>(image, config)?.rootfs.diff_ids)
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
        assert_eq!(choose_platform("i", &index).unwrap().digest, "sha256:2");
        let other: Index = serde_json::from_value(serde_json::json!({"manifests": [
            {"mediaType": media::OCI_MANIFEST, "digest": "sha256:1", "size": 1,
             "platform": {"architecture": "s390x", "os": "linux"}},
        ]}))
        .unwrap();
        let err = choose_platform("tools:1", &other).unwrap_err().to_string();
        assert!(
            err.contains("tools:1") && err.contains("linux/s390x"),
            "{err}"
        );
    }
}
