//! The JSON bodies the agent answers with (refusals aside, which are [`crate::Status`]).

use kdbg_model::PullProgress;
use serde::{Deserialize, Serialize};

/// One line of the pull endpoint's answer: progress, then exactly one `Done` or `Error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PullLine {
    /// The pull failed: `{"error": "..."}`, the last line.
    Error {
        /// What went wrong, with its causes.
        error: String,
    },
    /// The image is present: `{"done": true}`, the last line.
    Done {
        /// Always `true`.
        done: bool,
    },
    /// A step of the pull: `{"id": .., "status": .., "current": .., "total": ..}`.
    Progress(PullProgress),
}

impl PullLine {
    /// The line that ends a successful pull.
    pub fn done() -> PullLine {
        PullLine::Done { done: true }
    }

    /// The line as sent: JSON and a newline.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).expect("pull lines serialise");
        line.push(b'\n');
        line
    }
}

/// The answer of [`crate::path::CONTAINERS`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerList {
    /// The debug containers.
    pub items: Vec<ContainerItem>,
}

/// A debug container on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerItem {
    /// Its name: what `attach` and `rm` take.
    pub name: String,
    /// Its runtime ID.
    pub id: String,
    /// Its image, as the user named it.
    pub image: String,
    /// Where it is in its life.
    pub status: ContainerStatus,
    /// When it was created, in seconds since the Unix epoch.
    pub created: u64,
    /// Whether it is kept after its sessions.
    pub retained: bool,
    /// The container it joins, `<runtime>://<id>`.
    pub target: String,
    /// The target pod's namespace (none for `local`).
    pub namespace: Option<String>,
    /// The target pod's name (none for `local`).
    pub pod: Option<String>,
    /// Who created it.
    pub user: Option<String>,
    /// The session that created it.
    pub session: String,
    /// The sessions attached now.
    pub sessions: Vec<String>,
    /// How many live viewers watch those sessions.
    #[serde(default)]
    pub watchers: usize,
}

/// The answer of [`crate::path::RECORDINGS`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingList {
    /// The recordings.
    pub items: Vec<RecordingItem>,
}

/// A recorded session on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordingItem {
    /// The session's ID: what `recordings get` and `replay` take.
    pub session: String,
    /// The target pod's namespace (none for `local`).
    pub namespace: Option<String>,
    /// The target pod (none for `local`).
    pub pod: Option<String>,
    /// The target's container in its pod, or its ID.
    pub container: Option<String>,
    /// Who ran the session.
    pub user: Option<String>,
    /// When it started, in seconds since the Unix epoch.
    pub started: u64,
    /// How long it lasted (so far, while it runs), in seconds.
    pub duration: u64,
    /// The recording's size in bytes.
    pub size: u64,
    /// `v2` or `v3`.
    pub format: String,
    /// Whether it stopped before its session ended (a limit, a full disk).
    pub incomplete: bool,
    /// Whether the session still runs.
    pub live: bool,
}

/// Where a debug container is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum ContainerStatus {
    /// A session is attached.
    Running,
    /// It runs, with no session attached (a retained container between sessions).
    Idle,
    /// Its main process ended (stopped, killed, or its target went away and came back).
    Exited {
        /// The exit code.
        code: i64,
        /// Killed for want of memory.
        #[serde(default)]
        oom_killed: bool,
    },
    /// Its target container is gone: the pod was deleted, or the container restarted.
    Orphaned,
    /// Created, never started.
    Created,
}

impl std::fmt::Display for ContainerStatus {
    /// As `list` shows it: `Running`, `Idle`, `Exited (137)`, `Orphaned`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ContainerStatus::Running => f.write_str("Running"),
            ContainerStatus::Idle => f.write_str("Idle"),
            ContainerStatus::Exited {
                code,
                oom_killed: true,
            } => write!(f, "Exited ({code}, OOMKilled)"),
            ContainerStatus::Exited { code, .. } => write!(f, "Exited ({code})"),
            ContainerStatus::Orphaned => f.write_str("Orphaned"),
            ContainerStatus::Created => f.write_str("Created"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_lines_keep_their_wire_shape() {
        let progress = PullLine::Progress(PullProgress {
            id: Some("abc".into()),
            status: "Downloading".into(),
            current: Some(1),
            total: Some(2),
        });
        let cases = [
            (
                progress,
                r#"{"id":"abc","status":"Downloading","current":1,"total":2}"#,
            ),
            (PullLine::done(), r#"{"done":true}"#),
            (
                PullLine::Error {
                    error: "pulling x: no".into(),
                },
                r#"{"error":"pulling x: no"}"#,
            ),
        ];
        for (line, wire) in cases {
            assert_eq!(
                String::from_utf8(line.to_line()).unwrap(),
                format!("{wire}\n")
            );
            assert_eq!(serde_json::from_str::<PullLine>(wire).unwrap(), line);
        }
    }
}

/// The answer of [`crate::path::VERSION`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    /// The agent's version.
    pub version: String,
    /// The runtime it drives: `docker` or `containerd`.
    pub runtime: String,
    /// Its node.
    pub node: String,
}
