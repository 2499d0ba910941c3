//! The recording's header: what the terminal looked like at the start, and who debugged what.
//!
//! # Where our metadata lives
//!
//! Pod, namespace, target, image, user, session id and node go into one nested object under
//! the top-level key [`METADATA_KEY`] (`"kubectl_debug": {"pod": "web-1", ...}`), in both
//! versions:
//!
//! - v2: the spec lists the known attributes and readers ignore the rest: asciinema 2.2 keeps
//!   the header as a plain dict and reads only the keys it knows, asciinema 3's v2 parser is a
//!   serde struct that does not deny unknown fields (checked in its source), and this crate's
//!   tests run asciinema 2.2 on a file with the object.
//! - v3: the spec says "New attributes may be added to the header in later revisions of this
//!   spec, therefore tools MUST ignore (or pass through) header attributes they don't
//!   understand". Extra top-level attributes are therefore allowed, and the same sentence is why
//!   they are nested under one key named for this tool: a future spec attribute could well be
//!   called `user` or `node`, but hardly `kubectl_debug`. (`tags`, the spec's own place for
//!   context, is a list of bare strings meant for search, not key/value pairs.)
//!
//! The object is left out when no metadata is set.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::LineError;
use crate::format::Format;

/// The header key under which [`Metadata`] is written.
pub const METADATA_KEY: &str = "kubectl_debug";

/// The recording's header, the same for both formats.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Header {
    /// Terminal columns at the start.
    pub cols: u16,
    /// Terminal rows at the start.
    pub rows: u16,
    /// When the recording started, in seconds since the Unix epoch.
    pub timestamp: Option<u64>,
    /// The command that was run.
    pub command: Option<String>,
    /// A title for players; the agent uses [`Metadata::title`].
    pub title: Option<String>,
    /// Captured environment variables, `TERM` and `SHELL` only: like asciinema, capture no
    /// more unless the user asks. In v3, `TERM` also goes into `term.type`.
    pub env: BTreeMap<String, String>,
    /// Players shorten any pause longer than this many seconds to this.
    pub idle_time_limit: Option<f64>,
    /// Who debugged what, where (see the module docs for where it is written).
    pub metadata: Metadata,
}

impl Header {
    /// A header for a terminal of `cols` x `rows`, with nothing else set.
    pub fn new(cols: u16, rows: u16) -> Self {
        Header {
            cols,
            rows,
            ..Header::default()
        }
    }
}

/// kubectl-debug's own header attributes. Unset ones are not written.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Metadata {
    /// The debugged pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The pod's namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The container whose namespaces the debug container joined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The debug container's image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The Kubernetes user who ran the session, as authenticated by the agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The agent's id for the session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The node the pod runs on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Set when the session's debug container gave its user the node itself, saying why:
    /// reading the recording needs the node-level permission too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_level: Option<String>,
}

impl Metadata {
    /// Whether no attribute is set (then nothing is written).
    pub fn is_empty(&self) -> bool {
        *self == Metadata::default()
    }

    /// The title the agent gives a recording: `namespace/pod/target by user`, if all four are
    /// known.
    pub fn title(&self) -> Option<String> {
        let (namespace, pod) = (self.namespace.as_ref()?, self.pod.as_ref()?);
        let (target, user) = (self.target.as_ref()?, self.user.as_ref()?);
        Some(format!("{namespace}/{pod}/{target} by {user}"))
    }
}

/// The header as written; `width`/`height` for v2, `term` for v3.
#[derive(Serialize)]
struct HeaderOut<'a> {
    version: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    width: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    height: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    term: Option<Term<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_time_limit: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    env: Option<&'a BTreeMap<String, String>>,
    #[serde(rename = "kubectl_debug", skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a Metadata>,
}

/// v3's `term` object.
#[derive(Serialize)]
struct Term<'a> {
    cols: u16,
    rows: u16,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
}

/// The header as read, from either version; unknown attributes are ignored.
#[derive(Deserialize)]
struct HeaderIn {
    version: u64,
    width: Option<u16>,
    height: Option<u16>,
    term: Option<TermIn>,
    // Lenient: asciinema 2.x accepts a float here; the fraction is dropped.
    timestamp: Option<f64>,
    idle_time_limit: Option<f64>,
    command: Option<String>,
    title: Option<String>,
    // asciinema 2.x writes `null` for a variable that was not set.
    #[serde(default)]
    env: BTreeMap<String, Option<String>>,
    #[serde(rename = "kubectl_debug", default)]
    metadata: Metadata,
}

#[derive(Deserialize)]
struct TermIn {
    cols: u16,
    rows: u16,
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// Appends the header line (with its newline) for `format`.
pub(crate) fn encode(format: Format, header: &Header, out: &mut Vec<u8>) -> serde_json::Result<()> {
    let v2 = format == Format::V2;
    let line = HeaderOut {
        version: format.version(),
        width: v2.then_some(header.cols),
        height: v2.then_some(header.rows),
        term: (!v2).then(|| Term {
            cols: header.cols,
            rows: header.rows,
            kind: header.env.get("TERM").map(String::as_str),
        }),
        timestamp: header.timestamp,
        idle_time_limit: header.idle_time_limit,
        command: header.command.as_deref(),
        title: header.title.as_deref(),
        env: (!header.env.is_empty()).then_some(&header.env),
        metadata: (!header.metadata.is_empty()).then_some(&header.metadata),
    };
    serde_json::to_writer(&mut *out, &line)?;
    out.push(b'\n');
    Ok(())
}

/// Parses a header line of either version.
pub(crate) fn decode(line: &[u8]) -> Result<(Format, Header), LineError> {
    let raw: HeaderIn = serde_json::from_slice(line)?;
    let (format, cols, rows) = match raw.version {
        2 => (
            Format::V2,
            raw.width.ok_or(LineError::MissingAttribute("width"))?,
            raw.height.ok_or(LineError::MissingAttribute("height"))?,
        ),
        3 => {
            let term = raw
                .term
                .as_ref()
                .ok_or(LineError::MissingAttribute("term"))?;
            (Format::V3, term.cols, term.rows)
        }
        other => return Err(LineError::Version(other)),
    };
    let mut env: BTreeMap<String, String> = raw
        .env
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?)))
        .collect();
    if let Some(kind) = raw.term.and_then(|term| term.kind) {
        env.entry("TERM".to_owned()).or_insert(kind);
    }
    let header = Header {
        cols,
        rows,
        timestamp: raw
            .timestamp
            .filter(|t| t.is_finite() && *t >= 0.0)
            .map(|t| t as u64),
        command: raw.command,
        title: raw.title,
        env,
        idle_time_limit: raw.idle_time_limit,
        metadata: raw.metadata,
    };
    Ok((format, header))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_written_under_metadata_key_only_when_set() {
        let mut header = Header::new(80, 24);
        let mut line = Vec::new();
        encode(Format::V3, &header, &mut line).unwrap();
        assert_eq!(
            line,
            b"{\"version\":3,\"term\":{\"cols\":80,\"rows\":24}}\n"
        );

        header.metadata.pod = Some("web-1".into());
        line.clear();
        encode(Format::V2, &header, &mut line).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(value[METADATA_KEY], serde_json::json!({"pod": "web-1"}));
    }
}
