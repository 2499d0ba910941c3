//! The recordings on disk: listing them, finding one, and expiring old ones.
//!
//! The layout is `<dir>/<namespace>/<pod>/<session>.cast` and `<dir>/local/<target>/...`; what
//! a listing shows comes from each file's header (who, what, when), its size and modification
//! time (how long), and its last line (whether it is complete).

use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kdbg_api::{PodScope, RecordingItem};
use kdbg_recordings::{EventKind, Format, INCOMPLETE_MARKER_PREFIX, Reader};
use tracing::{info, warn};

use super::{EXTENSION, Recordings};

/// The directory of recordings of `local` sessions.
pub const LOCAL: &str = "local";
/// The directory of recordings of sessions of the node itself (`node/NAME`), one directory
/// per node: no namespace can be named so.
pub const NODE: &str = "_node";
/// The longest header line read.
const MAX_HEADER: u64 = 64 << 10;
/// How much of a file's end is read to find its last line.
const TAIL: u64 = 4 << 10;

/// A recording found on disk.
#[derive(Debug)]
pub struct Found {
    /// Its file.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
    /// When it was last written.
    pub modified: SystemTime,
}

/// Why no recording could be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FindError {
    /// What was asked for cannot be a session ID.
    #[error("{session:?} is not a session ID; kubectl-debug recordings list shows them")]
    NotASessionId {
        /// What was asked for.
        session: String,
    },
    /// No recording of the session is in the scope asked for.
    #[error(
        "no recording of session {session} on this node{}; kubectl-debug recordings list shows the recordings",
        place(.scope)
    )]
    NotFound {
        /// The session.
        session: String,
        /// Where it was looked for.
        scope: PodScope,
    },
}

/// ` for pod ns/pod`, ` in namespace ns`, or nothing: where a recording was looked for.
fn place(scope: &PodScope) -> String {
    match (&scope.namespace, &scope.pod) {
        (Some(ns), Some(pod)) => format!(" for pod {ns}/{pod}"),
        (Some(ns), None) => format!(" in namespace {ns}"),
        _ => String::new(),
    }
}

/// Whether `name` is a Kubernetes object name (DNS-1123 subdomain): safe as a directory name.
pub fn is_kubernetes_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// `text` as one safe file name: letters, digits, `_`, `-` and `.` kept, the rest `_`, never
/// starting with a dot.
pub fn file_name_of(text: &str) -> String {
    let mut name: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.starts_with('.') {
        name.insert(0, '_');
    }
    name
}

/// Whether `session` could be a session ID (and so a file name).
fn is_session_id(session: &str) -> bool {
    !session.is_empty() && session.len() <= 64 && session.bytes().all(|b| b.is_ascii_alphanumeric())
}

impl Recordings {
    /// Every recording under the directory, with the namespace and pod of its place.
    pub fn all(&self) -> Vec<(Option<String>, Option<String>, Found)> {
        let mut found = Vec::new();
        let dir = &self.config().dir;
        for (first, first_path) in entries(dir) {
            for (second, second_path) in entries(&first_path) {
                for (file, path) in entries(&second_path) {
                    if !file.ends_with(&format!(".{EXTENSION}")) {
                        continue;
                    }
                    let Ok(meta) = fs::metadata(&path) else {
                        continue;
                    };
                    if !meta.is_file() {
                        continue;
                    }
                    let (namespace, pod) = if first == LOCAL || first == NODE {
                        (None, None)
                    } else {
                        (Some(first.clone()), Some(second.clone()))
                    };
                    found.push((
                        namespace,
                        pod,
                        Found {
                            path,
                            size: meta.len(),
                            modified: meta.modified().unwrap_or(UNIX_EPOCH),
                        },
                    ));
                }
            }
        }
        found
    }

    /// The recordings in `scope` (`local` ones only when the scope is the whole node).
    pub fn list(&self, scope: &PodScope) -> Vec<RecordingItem> {
        self.list_with_node_level(scope)
            .into_iter()
            .map(|(item, _)| item)
            .collect()
    }

    /// [`Recordings::list`], each with why its session gave the node itself, if it did (its
    /// header's `node_level`).
    pub fn list_with_node_level(&self, scope: &PodScope) -> Vec<(RecordingItem, Option<String>)> {
        let mut items: Vec<(RecordingItem, Option<String>)> = self
            .all()
            .into_iter()
            .filter(|(namespace, pod, _)| in_scope(scope, namespace, pod))
            .filter_map(|(namespace, pod, found)| self.item(namespace, pod, &found))
            .collect();
        items.sort_by(|(a, _), (b, _)| a.started.cmp(&b.started).then(a.session.cmp(&b.session)));
        items
    }

    /// Recording `session`'s file, if it is in `scope`.
    pub fn find(&self, session: &str, scope: &PodScope) -> Result<PathBuf, FindError> {
        if !is_session_id(session) {
            return Err(FindError::NotASessionId {
                session: session.to_owned(),
            });
        }
        let file = format!("{session}.{EXTENSION}");
        self.all()
            .into_iter()
            .find(|(namespace, pod, found)| {
                in_scope(scope, namespace, pod) && found.path.file_name() == Some(file.as_ref())
            })
            .map(|(_, _, found)| found.path)
            .ok_or_else(|| FindError::NotFound {
                session: session.to_owned(),
                scope: scope.clone(),
            })
    }

    fn item(
        &self,
        namespace: Option<String>,
        pod: Option<String>,
        found: &Found,
    ) -> Option<(RecordingItem, Option<String>)> {
        let session = found.path.file_stem()?.to_str()?.to_owned();
        let live = self.is_live(&found.path);
        let summary = summarize(&found.path).ok();
        // Read once: the header's reason, unless the session is still writing it.
        let node_level = self
            .live_node_level(&found.path)
            .unwrap_or_else(|| header_node_level(&summary));
        let summary = summary.unwrap_or_default();
        let meta = summary.header.metadata;
        let started = summary.header.timestamp.unwrap_or(0);
        let modified = found
            .modified
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let item = RecordingItem {
            session,
            namespace: meta.namespace.or(namespace),
            pod: meta.pod.or(pod),
            container: meta.target,
            user: meta.user,
            started,
            duration: modified.saturating_sub(started),
            size: found.size,
            format: match summary.format {
                Some(Format::V3) => "v3",
                _ => "v2",
            }
            .into(),
            incomplete: summary.incomplete || (!live && !summary.ended),
            live,
        };
        Some((item, node_level))
    }

    /// Removes recordings older than `retention.maxAge`, then the oldest until all of them
    /// fit in `retention.maxTotalBytes`; never one being written. Returns how many it removed.
    pub fn enforce_retention(&self) -> usize {
        let retention = self.config().retention;
        let now = SystemTime::now();
        let mut all: Vec<Found> = self.all().into_iter().map(|(_, _, f)| f).collect();
        all.sort_by_key(|f| f.modified);
        let mut total: u64 = all.iter().map(|f| f.size).sum();
        let mut removed = 0;
        for found in &all {
            if self.is_live(&found.path) {
                continue;
            }
            let age = now.duration_since(found.modified).unwrap_or(Duration::ZERO);
            let too_old = age > retention.max_age.0;
            let too_much = total > retention.max_total_bytes;
            if !too_old && !too_much {
                continue;
            }
            match fs::remove_file(&found.path) {
                Ok(()) => {
                    removed += 1;
                    total = total.saturating_sub(found.size);
                    let why = if too_old {
                        "older than recordings.retention.maxAge"
                    } else {
                        "recordings exceed recordings.retention.maxTotalBytes"
                    };
                    info!(recording = %found.path.display(), "recording removed: {why}");
                    // Its pod's directory, and its namespace's, go when empty.
                    if let Some(parent) = found.path.parent() {
                        let _ = fs::remove_dir(parent);
                        if let Some(grandparent) = parent.parent() {
                            let _ = fs::remove_dir(grandparent);
                        }
                    }
                }
                Err(e) => {
                    warn!(recording = %found.path.display(), error = %e, "removing an expired recording")
                }
            }
        }
        removed
    }
}

fn in_scope(scope: &PodScope, namespace: &Option<String>, pod: &Option<String>) -> bool {
    scope.contains(namespace.as_deref(), pod.as_deref())
}

/// The entries of directory `dir` that are not hidden, with their paths.
fn entries(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(read) = fs::read_dir(dir) else {
        return Vec::new();
    };
    read.filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            (!name.starts_with('.')).then(|| (name, e.path()))
        })
        .collect()
}

/// What a listing needs from a recording's content.
#[derive(Debug, Default)]
pub(super) struct Summary {
    header: kdbg_recordings::Header,
    format: Option<Format>,
    /// Its last line says it ended: an exit, or a marker saying how the session ended.
    ended: bool,
    /// It says it is incomplete, or ends in half a line.
    incomplete: bool,
}

/// Reads a recording's header and last line.
/// Why the session recorded gave the node itself, as its header (`summary`) says; when the
/// header cannot be read, that it cannot (the worst is assumed).
pub(super) fn header_node_level(summary: &Option<Summary>) -> Option<String> {
    match summary {
        Some(summary) if summary.format.is_some() => summary.header.metadata.node_level.clone(),
        _ => Some(
            "its header cannot be read, so the agent cannot tell what the session joined".into(),
        ),
    }
}

pub(super) fn summarize(path: &Path) -> std::io::Result<Summary> {
    let mut file = fs::File::open(path)?;
    let mut header_line = Vec::new();
    BufReader::new((&mut file).take(MAX_HEADER)).read_until(b'\n', &mut header_line)?;
    let Ok(reader) = Reader::new(&header_line[..]) else {
        return Ok(Summary {
            incomplete: true,
            ..Summary::default()
        });
    };
    let mut summary = Summary {
        header: reader.header().clone(),
        format: Some(reader.format()),
        ..Summary::default()
    };
    let len = file.metadata()?.len();
    let from = len.saturating_sub(TAIL).max(header_line.len() as u64);
    file.seek(SeekFrom::Start(from))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    if tail.is_empty() {
        return Ok(summary);
    }
    if !tail.ends_with(b"\n") {
        summary.incomplete = true;
        return Ok(summary);
    }
    let body = &tail[..tail.len() - 1];
    let Some(start) = body.iter().rposition(|&b| b == b'\n').map(|i| i + 1) else {
        // The last line is longer than the tail read: an output line, not an end.
        return Ok(summary);
    };
    let mut doc = header_line.clone();
    doc.extend_from_slice(&tail[start..]);
    let last = Reader::new(&doc[..]).and_then(|mut r| r.next_event());
    if let Ok(Some(event)) = last {
        match event.kind {
            EventKind::Exit(_) => summary.ended = true,
            EventKind::Marker(label) if label.starts_with(INCOMPLETE_MARKER_PREFIX) => {
                summary.incomplete = true;
            }
            // An exit (v2), the session closing early, or what ended it.
            EventKind::Marker(_) => summary.ended = true,
            _ => {}
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::duration::GoDuration;

    fn recording(dir: &Path, place: &str, session: &str, size: usize, age: Duration) -> PathBuf {
        let parent = dir.join(place);
        fs::create_dir_all(&parent).unwrap();
        let path = parent.join(format!("{session}.{EXTENSION}"));
        let header = "{\"version\":2,\"width\":80,\"height\":24}\n";
        let body = format!("[0.1, \"o\", \"{}\"]\n", "x".repeat(size));
        fs::write(&path, format!("{header}{body}")).unwrap();
        let file = fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() - age).unwrap();
        path
    }

    #[test]
    fn retention_removes_the_too_old_then_the_oldest_past_the_total() {
        let dir = std::env::temp_dir().join(format!("kdbg-retention-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let hour = Duration::from_secs(3600);
        let ancient = recording(&dir, "shop/web-1", "a1", 100, 48 * hour);
        let old = recording(&dir, "shop/web-2", "b2", 1000, 3 * hour);
        let newer = recording(&dir, "shop/web-2", "c3", 1000, 2 * hour);
        let newest = recording(&dir, "local/abc", "d4", 1000, hour);
        let recordings = Recordings::new(config::Recordings {
            dir: dir.clone(),
            retention: config::Retention {
                max_age: GoDuration(24 * hour),
                max_total_bytes: 2500,
            },
            ..config::Recordings::default()
        });
        assert_eq!(recordings.enforce_retention(), 2);
        assert!(!ancient.exists() && !old.exists());
        assert!(newer.exists() && newest.exists());
        assert!(
            !dir.join("shop/web-1").exists(),
            "an emptied pod directory goes"
        );
        let listed = recordings.list(&PodScope::default());
        let sessions: Vec<&str> = listed.iter().map(|i| i.session.as_str()).collect();
        assert_eq!(sessions.len(), 2);
        assert!(listed.iter().all(|i| i.incomplete), "no end: incomplete");
        let shop = recordings.list(&PodScope {
            namespace: Some("shop".into()),
            ..PodScope::default()
        });
        assert_eq!(shop.len(), 1, "local recordings are not in a namespace");
        assert_eq!(shop[0].pod.as_deref(), Some("web-2"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names_that_become_paths_are_checked() {
        assert!(is_kubernetes_name("web-1.v2"));
        for bad in ["", "..", ".hidden", "a/b", "UPPER", "-x"] {
            assert!(!is_kubernetes_name(bad), "{bad}");
        }
        assert_eq!(file_name_of("docker://abc"), "docker___abc");
        assert_eq!(file_name_of(".."), "_..");
        assert!(!is_session_id("../x") && is_session_id("1a22b7655090000"));
    }
}
