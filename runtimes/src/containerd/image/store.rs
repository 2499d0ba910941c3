//! Storing: blobs into containerd's content store (documents from memory, layers streamed
//! from the registry, each checked against its descriptor's size and, by containerd, its
//! digest), the garbage-collection labels that tie an image to its blobs, and the image
//! record.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::{
    CreateImageRequest, Image, Info, UpdateImageRequest, UpdateRequest, WriteAction,
    WriteContentRequest, WriteContentResponse,
};
use containerd_client::tonic::{Code, Status, Streaming};
use tokio::sync::mpsc;

use super::Progress;
use super::fetch::{self, Fetched};
use crate::containerd::oci_image::{Descriptor, Manifest};
use crate::containerd::registry::{Session, next_frame};
use crate::containerd::{ContainerdRuntime, StatusMessage, call};
use crate::{Error, PullError};

/// Bytes sent to the content store per message.
const WRITE_CHUNK: usize = 1 << 20;
/// How long to wait for another client's write of the same blob.
const REF_LOCK_WAIT: Duration = Duration::from_secs(600);

/// An open write of one blob into the content store.
struct ContentWriter {
    requests: mpsc::Sender<WriteContentRequest>,
    responses: Streaming<WriteContentResponse>,
    reference: String,
    desc: Descriptor,
    offset: i64,
}

impl ContentWriter {
    fn message(&self, action: WriteAction, data: Vec<u8>) -> WriteContentRequest {
        WriteContentRequest {
            action: action as i32,
            r#ref: self.reference.clone(),
            total: self.desc.size,
            expected: self.desc.digest.clone(),
            offset: self.offset,
            data,
            labels: HashMap::new(),
        }
    }

    /// Writes the next bytes; more than the descriptor's size is refused before sending.
    async fn write(&mut self, data: Vec<u8>) -> Result<(), WriteFailed> {
        let len = data.len() as i64;
        if self.offset + len > self.desc.size {
            return Err(WriteFailed::Pull(PullError::Oversized {
                digest: self.desc.digest.clone(),
                size: self.desc.size,
            }));
        }
        let _ = self
            .requests
            .send(self.message(WriteAction::Write, data))
            .await;
        self.responses.message().await?;
        self.offset += len;
        Ok(())
    }

    /// Commits the blob, which must be whole.
    async fn commit(mut self) -> Result<(), WriteFailed> {
        if self.offset != self.desc.size {
            return Err(WriteFailed::Pull(PullError::Size {
                digest: self.desc.digest.clone(),
                got: self.offset,
                size: self.desc.size,
            }));
        }
        let _ = self
            .requests
            .send(self.message(WriteAction::Commit, Vec::new()))
            .await;
        match self.responses.message().await {
            Ok(_) => Ok(()),
            // Someone committed the same blob meanwhile.
            Err(e) if e.code() == Code::AlreadyExists => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Why writing a blob failed: containerd refused, or the blob is not what its descriptor says.
enum WriteFailed {
    Store(Status),
    Pull(PullError),
}

impl From<Status> for WriteFailed {
    fn from(e: Status) -> Self {
        WriteFailed::Store(e)
    }
}

impl From<PullError> for WriteFailed {
    fn from(e: PullError) -> Self {
        WriteFailed::Pull(e)
    }
}

impl ContainerdRuntime {
    /// Downloads into the content store every layer it does not have yet.
    pub(super) async fn store_layers(
        &self,
        image: &str,
        session: &mut Session<'_>,
        manifest: &Manifest,
        lease: &str,
        progress: &Progress,
    ) -> Result<(), Error> {
        for layer in &manifest.layers {
            progress.say(Some(layer.short()), "Pulling fs layer", None, None);
        }
        for layer in &manifest.layers {
            let status = match self.open_writer(image, layer, lease).await? {
                None => "Already exists",
                Some(writer) => {
                    download(writer, session, progress)
                        .await
                        .map_err(|e| failed(image, layer, e))?;
                    "Download complete"
                }
            };
            progress.say(Some(layer.short()), status, None, None);
        }
        Ok(())
    }

    /// Stores the config, the manifest and the index (if any) a pull fetched, each labelled
    /// with what it refers to.
    pub(super) async fn store_documents(
        &self,
        image: &str,
        fetched: &Fetched,
        config: &Bytes,
        lease: &str,
    ) -> Result<(), Error> {
        let manifest = &fetched.manifest;
        self.write_blob(image, &manifest.config, config, lease)
            .await?;
        self.write_blob(
            image,
            &fetched.manifest_desc,
            &fetched.manifest_bytes,
            lease,
        )
        .await?;
        let mut refs = HashMap::from([(
            "containerd.io/gc.ref.content.config".to_owned(),
            manifest.config.digest.clone(),
        )]);
        for (i, layer) in manifest.layers.iter().enumerate() {
            refs.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                layer.digest.clone(),
            );
        }
        self.label(image, &fetched.manifest_desc.digest, refs)
            .await?;
        if let Some(index) = &fetched.index {
            self.write_blob(image, &fetched.top, index, lease).await?;
            let refs = HashMap::from([(
                "containerd.io/gc.ref.content.m.0".to_owned(),
                fetched.manifest_desc.digest.clone(),
            )]);
            self.label(image, &fetched.top.digest, refs).await?;
        }
        Ok(())
    }

    /// Writes a blob held in memory, unless the store has it.
    async fn write_blob(
        &self,
        image: &str,
        desc: &Descriptor,
        data: &Bytes,
        lease: &str,
    ) -> Result<(), Error> {
        let Some(mut writer) = self.open_writer(image, desc, lease).await? else {
            return Ok(());
        };
        let written = async {
            for chunk in data.chunks(WRITE_CHUNK) {
                writer.write(chunk.to_vec()).await?;
            }
            writer.commit().await
        };
        written.await.map_err(|e| failed(image, desc, e))
    }

    /// Opens a write of `desc`; `None` when the store has the blob already. Another client
    /// writing the same blob holds its ref: we wait for it, bounded, and then the blob is
    /// usually there.
    async fn open_writer(
        &self,
        image: &str,
        desc: &Descriptor,
        lease: &str,
    ) -> Result<Option<ContentWriter>, Error> {
        let deadline = tokio::time::Instant::now() + REF_LOCK_WAIT;
        loop {
            let (requests, rx) = mpsc::channel::<WriteContentRequest>(2);
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|m| (m, rx))
            });
            let writer = |responses| ContentWriter {
                requests: requests.clone(),
                responses,
                reference: format!("kubectl-debug-{}", desc.digest),
                desc: desc.clone(),
                offset: 0,
            };
            // The first message goes before the call: containerd answers only once it has one.
            let _ = requests
                .send(writer_stat(desc, &format!("kubectl-debug-{}", desc.digest)))
                .await;
            let opened = ContentClient::new(self.channel.clone())
                .write(self.request(stream, Some(lease)))
                .await;
            let first = match opened {
                Ok(r) => {
                    let mut responses = r.into_inner();
                    responses.message().await.map(|_| responses)
                }
                Err(e) => Err(e),
            };
            match first {
                Ok(responses) => return Ok(Some(writer(responses))),
                Err(e) if e.code() == Code::AlreadyExists => return Ok(None),
                Err(e)
                    if e.code() == Code::Unavailable && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(failed(image, desc, WriteFailed::Store(e))),
            }
        }
    }

    /// Sets garbage-collection labels on a blob.
    pub(super) async fn label(
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

    /// Creates (or points anew) the image record `name` at `target`.
    pub(super) async fn record(
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
}

/// The message that opens a write.
fn writer_stat(desc: &Descriptor, reference: &str) -> WriteContentRequest {
    WriteContentRequest {
        action: WriteAction::Stat as i32,
        r#ref: reference.to_owned(),
        total: desc.size,
        expected: desc.digest.clone(),
        offset: 0,
        data: Vec::new(),
        labels: HashMap::new(),
    }
}

/// Streams a layer from the registry into `writer`, in chunks of [`WRITE_CHUNK`], and commits.
async fn download(
    mut writer: ContentWriter,
    session: &mut Session<'_>,
    progress: &Progress,
) -> Result<(), WriteFailed> {
    let desc = writer.desc.clone();
    let (short, total) = (Some(desc.short()), u64::try_from(desc.size).ok());
    let mut body = fetch::layer(session, &desc).await?.into_body();
    let url = format!("layer {}", desc.digest);
    let mut pending = Vec::with_capacity(WRITE_CHUNK);
    loop {
        let frame = next_frame(&url, &mut body).await.map_err(PullError::from)?;
        let done = frame.is_none();
        if let Some(data) = frame.as_ref().and_then(|f| f.data_ref()) {
            pending.extend_from_slice(data);
        }
        if pending.len() >= WRITE_CHUNK || (done && !pending.is_empty()) {
            let chunk = std::mem::replace(&mut pending, Vec::with_capacity(WRITE_CHUNK));
            writer.write(chunk).await?;
            let current = u64::try_from(writer.offset).ok();
            progress.say(short.clone(), "Downloading", current, total);
        }
        if done {
            return writer.commit().await;
        }
    }
}

/// The error of a failed blob write.
fn failed(image: &str, desc: &Descriptor, e: WriteFailed) -> Error {
    match e {
        WriteFailed::Pull(source) => Error::Pull {
            image: image.to_owned(),
            source,
        },
        WriteFailed::Store(e) => Error::Call {
            operation: "writing into containerd's content store a blob of image",
            object: format!("{image} ({})", desc.digest),
            source: Box::new(StatusMessage(e)),
        },
    }
}
