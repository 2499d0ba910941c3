//! Images on containerd, pulled on the client side (containerd 1.x has no server-side pull),
//! in three steps, each in its file:
//!
//! 1. [`fetch`]: the manifest the reference names (through an index to this node's
//!    platform) and the image config, from the registry;
//! 2. [`store`]: the layers streamed into containerd's content store, then the config,
//!    manifest and index, with the garbage-collection labels containerd's own client sets
//!    (so nothing the image needs is collected and nothing else is kept);
//! 3. [`unpack`]: the layers applied into the snapshotter, then the image record.
//!
//! Everything happens under the caller's lease, so an agent dying half-way leaves nothing
//! containerd keeps for long.

mod fetch;
mod store;
mod unpack;

use bytes::{Bytes, BytesMut};
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::{GetImageRequest, ReadContentRequest};
use containerd_client::tonic::Code;
use tokio::sync::mpsc;

use super::oci_image::{self, Descriptor, Index, Manifest, media};
use super::runtime_spec::ImageConfig;
use super::{ContainerdRuntime, Space, call};
use crate::reference::Reference;
use crate::{Error, PullError, PullPolicy, PullProgress};

/// An image present in containerd, ready to base a container on.
pub(super) struct LocalImage {
    /// Its name in containerd's image store.
    pub name: String,
    /// What its config says to run.
    pub config: ImageConfig,
    /// The chain ID of its top layer: the snapshot a container's is prepared on.
    pub chain_id: String,
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

/// Wraps what went wrong pulling `image`.
fn pull_error(image: &str) -> impl Fn(PullError) -> Error + '_ {
    move |source| Error::Pull {
        image: image.to_owned(),
        source,
    }
}

impl ContainerdRuntime {
    /// [`crate::Runtime::ensure_image`] under `lease`.
    pub(super) async fn ensure_image_under(
        &self,
        image: &str,
        policy: PullPolicy,
        progress: Option<mpsc::Sender<PullProgress>>,
        options: crate::PullOptions<'_>,
        lease: &str,
    ) -> Result<(), Error> {
        let progress = Progress(progress);
        let reference = Reference::parse(image).map_err(|e| pull_error(image)(e.into()))?;
        let mut present = self.image_target(&reference.to_string()).await?;
        // Present for another platform only (its index here, not the manifest asked for):
        // absent, as far as this pull goes.
        let mut loaded = None;
        if let Some(target) = &present {
            match self.load(image, target, options.platform).await {
                Ok(documents) => loaded = Some(documents),
                Err(Error::Pull {
                    source: PullError::MissingBlob { .. },
                    ..
                }) if options.platform.is_some() => present = None,
                Err(e) => return Err(e),
            }
        }
        if crate::needs_pull(policy, image, present.is_some())? {
            return self
                .pull(image, &reference, options, lease, &progress)
                .await;
        }
        // Present; its layers may not all be unpacked (another client's pull).
        let (manifest, config) = loaded.expect("only a loaded image needs no pull");
        self.unpack(image, &manifest, &config, lease, &progress)
            .await
    }

    /// Pulls `reference` into the content store, unpacks it, and records the image.
    async fn pull(
        &self,
        image: &str,
        reference: &Reference,
        options: crate::PullOptions<'_>,
        lease: &str,
        progress: &Progress,
    ) -> Result<(), Error> {
        let fail = pull_error(image);
        // The registry's hosts as the node configures them: its mirrors in order, then the
        // registry itself; the first that resolves the reference serves the whole pull.
        let hosts = self.registry.hosts(reference).map_err(|e| fail(e.into()))?;
        let usable: Vec<_> = hosts
            .iter()
            .filter(|h| h.pull && (h.resolve || reference.digest.is_some()))
            .collect();
        let mut tried: Vec<(String, PullError)> = Vec::new();
        let mut served = None;
        for host in usable {
            let mut session = self
                .registry
                .session(reference, host, options.credential)
                .map_err(|e| fail(e.into()))?;
            match fetch::manifest(&mut session, reference, options.platform).await {
                Ok(fetched) => {
                    served = Some((host, session, fetched));
                    break;
                }
                // A platform the index lacks is the image's answer, not the host's failure.
                Err(e @ PullError::NoPlatform { .. }) => return Err(fail(e)),
                Err(e) => {
                    tracing::info!(image, host = %host.url, origin = %host.origin, error = %e, "a registry host could not serve the pull; trying the next");
                    tried.push((format!("{} ({})", host.url, host.origin), e));
                }
            }
        }
        let Some((host, mut session, fetched)) = served else {
            return Err(fail(match tried.len() {
                0 => PullError::AllHosts {
                    tried: "the configuration leaves no host that may pull it".to_owned(),
                },
                // One host: its own error, as it was.
                1 => tried.pop().expect("one").1,
                _ => PullError::AllHosts {
                    tried: tried
                        .iter()
                        .map(|(host, e)| format!("{host}: {e}"))
                        .collect::<Vec<_>>()
                        .join("; "),
                },
            }));
        };
        // Which host serves it, as the user should know when a pull is slow or refused.
        let pulling = if session.is_registry_itself() {
            format!("Pulling from {} ({})", reference.repository, host.url)
        } else {
            format!(
                "Pulling from {} ({}, configured in {})",
                reference.repository, host.url, host.origin
            )
        };
        progress.say(None, &pulling, None, None);
        let config = fetch::config(&mut session, &fetched.manifest)
            .await
            .map_err(&fail)?;
        self.store_layers(image, &mut session, &fetched.manifest, lease, progress)
            .await?;
        self.store_documents(image, &fetched, &config, lease)
            .await?;
        // Unpacked first, recorded second (as containerd's client does): whoever finds the
        // image record finds its layers unpacked.
        self.unpack(image, &fetched.manifest, &config, lease, progress)
            .await?;
        self.record(image, &reference.to_string(), &fetched.top, lease)
            .await?;
        progress.say(None, &format!("Digest: {}", fetched.top.digest), None, None);
        Ok(())
    }

    /// The image `image` (as the user wrote it), which must be present and unpacked.
    pub(super) async fn local_image(
        &self,
        image: &str,
        platform: Option<&crate::Platform>,
    ) -> Result<LocalImage, Error> {
        let fail = pull_error(image);
        let reference = Reference::parse(image).map_err(|e| fail(e.into()))?;
        let name = reference.to_string();
        let target = self
            .image_target(&name)
            .await?
            .ok_or_else(|| Error::ImageAbsent {
                image: image.to_owned(),
            })?;
        let (_, config) = self.load(image, &target, platform).await?;
        let diff_ids = oci_image::diff_ids(&config).map_err(&fail)?;
        let chain_id = oci_image::chain_ids(&diff_ids)
            .pop()
            .ok_or_else(|| fail(PullError::NoLayers))?;
        let config = ImageConfig::from_image_config(&config)
            .map_err(|why| fail(PullError::ImageConfig(why)))?;
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
    async fn load(
        &self,
        image: &str,
        target: &Descriptor,
        platform: Option<&crate::Platform>,
    ) -> Result<(Manifest, Bytes), Error> {
        let fail = pull_error(image);
        let mut manifest_desc = target.clone();
        if media::is_index(&target.media_type) {
            let bytes = self.read_blob(image, &target.digest).await?;
            let index: Index = oci_image::parse("index", &bytes).map_err(&fail)?;
            manifest_desc = oci_image::choose_platform(&index, platform).map_err(&fail)?;
        }
        let bytes = self.read_blob(image, &manifest_desc.digest).await?;
        let manifest: Manifest = oci_image::parse("manifest", &bytes).map_err(&fail)?;
        let config = self.read_blob(image, &manifest.config.digest).await?;
        Ok((manifest, config))
    }

    /// A blob from the content store.
    async fn read_blob(&self, image: &str, digest: &str) -> Result<Bytes, Error> {
        self.read_blob_in(Space::Debug, digest).await.map_err(|e| {
            if e.code() == Code::NotFound {
                return pull_error(image)(PullError::MissingBlob {
                    digest: digest.to_owned(),
                });
            }
            call("reading a blob of image", image)(e)
        })
    }

    /// A blob from the content store of namespace `space`, or what containerd answered.
    pub(in crate::containerd) async fn read_blob_in(
        &self,
        space: Space,
        digest: &str,
    ) -> Result<Bytes, containerd_client::tonic::Status> {
        let mut stream = ContentClient::new(self.channel.clone())
            .read(self.request_in(
                space,
                ReadContentRequest {
                    digest: digest.to_owned(),
                    offset: 0,
                    size: 0,
                },
            ))
            .await?
            .into_inner();
        let mut data = BytesMut::new();
        while let Some(chunk) = stream.message().await? {
            data.extend_from_slice(&chunk.data);
        }
        Ok(data.freeze())
    }
}
