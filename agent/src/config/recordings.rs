//! `recordings:`: whether sessions are recorded on the node, where, and for how long.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::duration::GoDuration;

/// `recordings:`: sessions recorded on the node in asciicast, where their users cannot switch
/// it off.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Recordings {
    /// Where: `<dir>/<namespace>/<pod>/<session>.cast` (`<dir>/local/<target>/...` for
    /// `local`), files 0600, directories 0700.
    pub dir: PathBuf,
    /// `off`, `optional` (when the client asks, `--record`) or `always`.
    pub mode: RecordingMode,
    /// `v2` (read by asciinema 2 and 3) or `v3`.
    pub format: RecordingFormat,
    /// Whether keystrokes are recorded (they may hold passwords).
    pub input: bool,
    /// The largest recording: past it, it stops with a marker and the session goes on.
    pub max_bytes: u64,
    /// How long recordings are kept, and how much of them.
    pub retention: Retention,
}

impl Default for Recordings {
    fn default() -> Self {
        Recordings {
            dir: PathBuf::from("/var/lib/kubectl-debug/recordings"),
            mode: RecordingMode::Off,
            format: RecordingFormat::V2,
            input: false,
            max_bytes: 100 << 20,
            retention: Retention::default(),
        }
    }
}

/// `recordings.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordingMode {
    /// No session is recorded.
    #[default]
    Off,
    /// Sessions whose client asks (`--record`) are.
    Optional,
    /// Every session is; the client cannot opt out.
    Always,
}

/// `recordings.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordingFormat {
    /// asciicast v2.
    #[default]
    V2,
    /// asciicast v3.
    V3,
}

/// `recordings.retention`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Retention {
    /// Recordings older than this are removed.
    pub max_age: GoDuration,
    /// Past this much in all, the oldest recordings are removed.
    pub max_total_bytes: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_age: GoDuration(Duration::from_secs(720 * 3600)),
            max_total_bytes: 10 << 30,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_recordings_block_parses() {
        let text = r#"
listen: "0.0.0.0:10027"
runtime:
  kind: docker
recordings:
  dir: "/var/lib/kubectl-debug/recordings"
  mode: always        # off (default) | optional (the client asks with --record) | always (cannot opt out)
  format: v2          # v2 | v3
  input: false        # keystrokes are not recorded unless enabled (passwords)
  maxBytes: 104857600 # per recording; past it the recording stops with a marker, the session goes on
  retention: {maxAge: "720h", maxTotalBytes: 10737418240}
"#;
        let config = super::super::tests::parse(text).unwrap();
        assert_eq!(config.recordings.mode, RecordingMode::Always);
        assert_eq!(config.recordings.max_bytes, 104_857_600);
        assert_eq!(config.recordings.retention.max_total_bytes, 10 << 30);
        assert_eq!(
            config.recordings.retention.max_age.0,
            Duration::from_secs(720 * 3600)
        );
        let off = super::super::tests::parse("listen: \"0.0.0.0:1\"\nruntime:\n  kind: docker\n")
            .unwrap();
        assert_eq!(off.recordings.mode, RecordingMode::Off);
        let err = super::super::tests::parse(&text.replace("mode: always", "mode: sometimes"))
            .unwrap_err();
        assert!(err.contains("sometimes") && err.contains("line 7"), "{err}");
    }
}
