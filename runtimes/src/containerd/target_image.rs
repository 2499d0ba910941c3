//! The image config of a target container, read where the kubelet's images live (the
//! targets' namespace): the container record names its image; the image record's target is a
//! manifest, or an index whose entry for this node's platform is; the manifest names the config
//! blob, whose `config` says what the image runs. Nothing is pulled: what is missing is an
//! error that says so.

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::{GetContainerRequest, GetImageRequest};
use containerd_client::tonic::Code;

use super::oci_image::{self, Index, Manifest, media};
use super::runtime_spec;
use super::{ContainerdRuntime, Space, StatusMessage, call};
use crate::{Error, ImageConfig, RuntimeKind, TargetRef};

type Cause = Box<dyn std::error::Error + Send + Sync>;

impl ContainerdRuntime {
    /// [`crate::Runtime::image_config`] for containerd.
    pub(super) async fn target_image_config(
        &self,
        target: &TargetRef,
    ) -> Result<ImageConfig, Error> {
        if target.kind != RuntimeKind::Containerd {
            return Err(Error::WrongRuntime {
                target: target.clone(),
                runtime: "containerd",
            });
        }
        let container = ContainersClient::new(self.channel.clone())
            .get(self.target_request(GetContainerRequest {
                id: target.id.clone(),
            }))
            .await
            .map_err(|e| {
                if e.code() == Code::NotFound {
                    Error::TargetNotFound {
                        target: target.clone(),
                    }
                } else {
                    call("looking up target container", target.to_string())(e)
                }
            })?
            .into_inner()
            .container
            .ok_or_else(|| Error::TargetNotFound {
                target: target.clone(),
            })?;
        let image = container.image;
        let fail = |source: Cause| Error::TargetImage {
            target: target.clone(),
            image: if image.is_empty() {
                "(unnamed)".to_owned()
            } else {
                image.clone()
            },
            source,
        };
        if image.is_empty() {
            return Err(fail(
                "containerd's record of the container names no image".into(),
            ));
        }
        let namespace = &self.options.namespace;
        let record = ImagesClient::new(self.channel.clone())
            .get(self.target_request(GetImageRequest {
                name: image.clone(),
            }))
            .await
            .map_err(|e| {
                fail(if e.code() == Code::NotFound {
                    format!(
                        "containerd's namespace {namespace} has no image {image} any more; pull it on the node again (crictl pull {image})"
                    )
                    .into()
                } else {
                    Box::new(StatusMessage(e))
                })
            })?
            .into_inner()
            .image
            .and_then(|i| i.target)
            .ok_or_else(|| fail("containerd's image record has no target".into()))?;
        let named = image.as_str();
        let blob = |digest: String| {
            let fail = &fail;
            async move {
                self.read_blob_in(Space::Targets, &digest)
                    .await
                    .map_err(|e| {
                        fail(if e.code() == Code::NotFound {
                            format!(
                                "blob {digest} is missing from containerd's content store (namespace {namespace}); pull the image on the node again (crictl pull {named})"
                            )
                            .into()
                        } else {
                            Box::new(StatusMessage(e))
                        })
                    })
            }
        };
        let mut manifest_digest = record.digest.clone();
        if media::is_index(&record.media_type) {
            let index: Index = oci_image::parse("index", &blob(record.digest).await?)
                .map_err(|e| fail(e.into()))?;
            manifest_digest = oci_image::choose_platform(&index, None)
                .map_err(|e| fail(e.into()))?
                .digest;
        } else if !media::is_manifest(&record.media_type) {
            return Err(fail(
                format!(
                    "its record points at a document of type {:?}; only OCI and Docker schema 2 images are read",
                    record.media_type
                )
                .into(),
            ));
        }
        let manifest: Manifest = oci_image::parse("manifest", &blob(manifest_digest).await?)
            .map_err(|e| fail(e.into()))?;
        let document = blob(manifest.config.digest.clone()).await?;
        let config =
            runtime_spec::ImageConfig::from_image_config(&document).map_err(|e| fail(e.into()))?;
        Ok(ImageConfig::new(
            image.clone(),
            config.entrypoint,
            config.cmd,
            config.working_dir,
            config.user,
        ))
    }
}
