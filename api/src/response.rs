//! The JSON bodies the agent answers with (refusals aside, which are [`crate::Status`]).

use std::collections::BTreeMap;

use kdbg_runtimes::PullProgress;
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
pub struct ContainerItem {
    /// Its ID.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its image.
    pub image: String,
    /// The runtime's word for its state, e.g. `running`, `exited`.
    pub state: String,
    /// Its labels (keys from `kdbg_runtimes::label`).
    pub labels: BTreeMap<String, String>,
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
