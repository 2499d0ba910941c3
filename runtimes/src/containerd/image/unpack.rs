//! Unpacking: each layer not unpacked yet is applied by containerd's diff service onto a
//! snapshot prepared on its parent, and committed under its chain ID, as containerd's own
//! unpacker names it (so layers `ctr` unpacked are shared, and ours are shared with it).

use std::collections::HashMap;

use containerd_client::services::v1::ApplyRequest;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::tonic::Code;

use super::Progress;
use crate::containerd::oci_image::{self, Descriptor, Manifest};
use crate::containerd::{ContainerdRuntime, call, unique};
use crate::{Error, PullError};

impl ContainerdRuntime {
    /// Unpacks the layers into the snapshotter (those not unpacked yet) and labels the config
    /// with the top snapshot, so the image keeps it.
    pub(super) async fn unpack(
        &self,
        image: &str,
        manifest: &Manifest,
        config: &[u8],
        lease: &str,
        progress: &Progress,
    ) -> Result<(), Error> {
        let diff_ids = oci_image::diff_ids(config).map_err(super::pull_error(image))?;
        let chains = oci_image::chain_ids(&diff_ids);
        let mut parent = String::new();
        for ((layer, chain), diff_id) in manifest.layers.iter().zip(&chains).zip(&diff_ids) {
            if !self.snapshot_exists(image, chain).await? {
                progress.say(Some(layer.short()), "Extracting", None, None);
                let key = format!("kubectl-debug-extract-{}-{chain}", unique());
                let applied = self
                    .apply_layer(image, layer, diff_id, chain, &key, &parent, lease)
                    .await;
                if applied.is_err() {
                    self.remove_snapshot(&key).await;
                }
                applied?;
                progress.say(Some(layer.short()), "Pull complete", None, None);
            }
            parent = chain.clone();
        }
        let labels = HashMap::from([(
            format!("containerd.io/gc.ref.snapshot.{}", self.options.snapshotter),
            parent,
        )]);
        self.label(image, &oci_image::sha256(config), labels).await
    }

    /// Whether the committed snapshot `chain` exists.
    async fn snapshot_exists(&self, image: &str, chain: &str) -> Result<bool, Error> {
        let stat = SnapshotsClient::new(self.channel.clone())
            .stat(self.request(
                StatSnapshotRequest {
                    snapshotter: self.options.snapshotter.clone(),
                    key: chain.to_owned(),
                },
                None,
            ))
            .await;
        match stat {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Code::NotFound => Ok(false),
            Err(e) => Err(call("looking up an unpacked layer of image", image)(e)),
        }
    }

    /// Removes snapshot `key`, if it exists.
    async fn remove_snapshot(&self, key: &str) {
        let _ = SnapshotsClient::new(self.channel.clone())
            .remove(self.request(
                RemoveSnapshotRequest {
                    snapshotter: self.options.snapshotter.clone(),
                    key: key.to_owned(),
                },
                None,
            ))
            .await;
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
            return Err(super::pull_error(image)(PullError::DiffId {
                layer: layer.digest.clone(),
                applied,
                expected: diff_id.to_owned(),
            }));
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
                self.remove_snapshot(key).await;
                Ok(())
            }
            Err(e) => Err(call("committing an unpacked layer of image", image)(e)),
        }
    }
}
