//! Recording sessions on the node, where their users cannot switch it off (`recordings:` in
//! the configuration).
//!
//! A session to record gets its file before its container is created
//! (`<dir>/<namespace>/<pod>/<session>.cast`, `<dir>/local/<target>/...` without a pod; files
//! 0600, directories 0700), so `mode: always` with a directory that cannot be written refuses
//! the session before anything runs. Once the session runs, a recorder thread writes what the
//! session's tap shows (see [`crate::record`]); whatever happens to the recording, the
//! session goes on. [`store`] lists, finds and expires recordings.

pub mod store;

use std::collections::HashMap;
use std::fs::{DirBuilder, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::record::{self, RecordOptions};
use kdbg_api::DebugRequest;
use kdbg_recordings::{Format, Header};
use kdbg_relay::Tap;
use kdbg_runtimes::Target;
use tracing::{info, warn};

use crate::config::{self, RecordingFormat, RecordingMode};
use crate::session::Refusal;

/// The file extension of recordings.
pub const EXTENSION: &str = "cast";

/// The node's recordings: the configuration, and which are being written now.
#[derive(Debug, Default)]
pub struct Recordings {
    config: config::Recordings,
    /// Files being written now.
    /// The recordings being written, with why their session gives the node itself, if it
    /// does (their header may not be on disk yet).
    live: Arc<Mutex<Live>>,
}

/// A recording's file, opened before its session's container is created. Dropped unstarted
/// (the session was refused after all), it removes the file.
#[derive(Debug)]
pub struct Opened {
    file: Option<File>,
    path: PathBuf,
}

impl Drop for Opened {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Opened {
    /// Where the recording goes.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Recordings {
    /// The recordings `config` describes.
    pub fn new(config: config::Recordings) -> Recordings {
        Recordings {
            config,
            live: Arc::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &config::Recordings {
        &self.config
    }

    /// Whether `request`'s session is recorded, and if so its file, opened. Refused when the
    /// client asks for a recording the agent does not make, or a recording is required or
    /// asked for and its file cannot be created.
    pub fn open(
        &self,
        request: &DebugRequest,
        target: &Target,
        session: &str,
        node: &str,
    ) -> Result<Option<Opened>, Refusal> {
        match (self.config.mode, request.record) {
            (RecordingMode::Off, false) | (RecordingMode::Optional, false) => return Ok(None),
            (RecordingMode::Off, true) => {
                return Err(Refusal::new(
                    400,
                    format!(
                        "the kubectl-debug agent on node {node} does not record sessions (recordings.mode is off in its configuration); run without --record, or keep a copy on your machine with --record-local FILE"
                    ),
                ));
            }
            (RecordingMode::Always, _) | (RecordingMode::Optional, true) => {}
        }
        let dir = self.session_dir(request, target)?;
        let path = dir.join(format!("{session}.{EXTENSION}"));
        let created = DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .and_then(|()| {
                OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
            });
        let file = created.map_err(|e| {
            let why = match self.config.mode {
                RecordingMode::Always => "every session is recorded here (recordings.mode: always), so the session was refused before its container was created; the node's administrator must make the directory writable by the agent",
                _ => "you asked for a recording (--record); run without --record, or ask the node's administrator to make the directory writable by the agent",
            };
            Refusal::new(
                500,
                format!(
                    "cannot write the session's recording in {} on node {node}: {e}; {why}",
                    self.config.dir.display()
                ),
            )
        })?;
        Ok(Some(Opened {
            file: Some(file),
            path,
        }))
    }

    /// Starts recording into `opened` what `tap` shows; the recorder ends with the session.
    pub fn start(&self, mut opened: Opened, tap: &Tap, header: Header, tty: bool) {
        let Some(file) = opened.file.take() else {
            return;
        };
        let options = RecordOptions {
            format: match self.config.format {
                RecordingFormat::V2 => Format::V2,
                RecordingFormat::V3 => Format::V3,
            },
            max_bytes: Some(self.config.max_bytes),
            header,
            tty,
            input: self.config.input,
            path: opened.path.clone(),
        };
        let live = self.live.clone();
        let path = opened.path.clone();
        let node_level = options.header.metadata.node_level.clone();
        lock(&live).insert(path.clone(), node_level);
        // Once the recorder is done with the file, it is no longer being written.
        let spawned = record::spawn(tap, file, options, move |_| {
            lock(&live).remove(&path);
        });
        match spawned {
            Ok(_) => info!(recording = %opened.path.display(), "recording the session"),
            Err(e) => {
                lock(&self.live).remove(&opened.path);
                warn!(recording = %opened.path.display(), error = %e, "could not start the recorder; the session goes on unrecorded");
            }
        }
    }

    /// Whether `path` is being written now.
    pub fn is_live(&self, path: &Path) -> bool {
        lock(&self.live).contains_key(path)
    }

    /// Why the session recorded in `path` gives the node itself, if it does: as its session
    /// said while it is written, else as its header says. A recording whose header cannot be
    /// read is taken to be the node's: nothing shows it is not.
    pub fn node_level_of(&self, path: &Path) -> Option<String> {
        self.live_node_level(path)
            .unwrap_or_else(|| store::header_node_level(&store::summarize(path).ok()))
    }

    /// For a recording being written, why its session gives the node itself, if it does;
    /// `None` when it is not being written.
    fn live_node_level(&self, path: &Path) -> Option<Option<String>> {
        lock(&self.live).get(path).cloned()
    }

    /// `<dir>/<namespace>/<pod>`, `<dir>/node/<node>` for the node itself, or
    /// `<dir>/local/<target>`; refuses names that are not Kubernetes names (they become
    /// directories).
    fn session_dir(&self, request: &DebugRequest, target: &Target) -> Result<PathBuf, Refusal> {
        let dir = &self.config.dir;
        match (&request.pod_namespace, &request.pod_name) {
            (Some(namespace), Some(pod)) => {
                for (what, name) in [("namespace", namespace), ("pod", pod)] {
                    if !store::is_kubernetes_name(name) {
                        return Err(Refusal::new(
                            400,
                            format!("pod {what} {name:?} is not a Kubernetes name"),
                        ));
                    }
                }
                Ok(dir.join(namespace).join(pod))
            }
            _ => match target {
                // A node's name is a Kubernetes name already (the request checked it).
                Target::Node(node) => Ok(dir.join(store::NODE).join(node)),
                Target::Container(target) => {
                    Ok(dir.join(store::LOCAL).join(store::file_name_of(&target.id)))
                }
            },
        }
    }
}

/// See [`Recordings::live`].
type Live = HashMap<PathBuf, Option<String>>;

fn lock(live: &Mutex<Live>) -> std::sync::MutexGuard<'_, Live> {
    live.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
