//! The live view (`watch`) on the wire: after its header (an asciicast v3 header line), each
//! WebSocket text message is one asciicast v3 event, `[interval, code, data]`. The agent writes
//! them with the recordings' writer; [`ViewEvent::parse`] is how `kubectl-debug watch` reads
//! them, whatever an agent (or something posing as one) sends.

/// One event of a live view, as the watcher acts on it.
#[derive(Debug, Clone, PartialEq)]
pub enum ViewEvent {
    /// Output to show (`"o"`).
    Output(String),
    /// The session's command exited, with this code (`"x"`).
    Exit(String),
    /// A marker (`"m"`): why the view ends, when it is the last event.
    Marker(String),
    /// Another kind of event (input, resize): nothing to show.
    Other,
}

/// A line of a live view that is not an asciicast v3 event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line:?} is not an asciicast v3 event ({why})")]
pub struct NotAnEvent {
    /// The line.
    pub line: String,
    /// What the JSON parser said.
    pub why: String,
}

impl ViewEvent {
    /// Parses one event line; an error names what is wrong with it.
    pub fn parse(line: &str) -> Result<ViewEvent, NotAnEvent> {
        let (_, code, data): (f64, String, String) =
            serde_json::from_str(line).map_err(|e| NotAnEvent {
                line: line.to_owned(),
                why: e.to_string(),
            })?;
        Ok(match code.as_str() {
            "o" => ViewEvent::Output(data),
            "x" => ViewEvent::Exit(data),
            "m" => ViewEvent::Marker(data),
            _ => ViewEvent::Other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_and_bad_lines_named() {
        assert_eq!(
            ViewEvent::parse(r#"[0.5, "o", "hi\r\n"]"#),
            Ok(ViewEvent::Output("hi\r\n".into()))
        );
        assert_eq!(
            ViewEvent::parse(r#"[0.1, "x", "0"]"#),
            Ok(ViewEvent::Exit("0".into()))
        );
        assert_eq!(
            ViewEvent::parse(r#"[0.1, "r", "80x24"]"#),
            Ok(ViewEvent::Other)
        );
        let bad = ViewEvent::parse(r#"{"o": 1}"#).unwrap_err().to_string();
        assert!(bad.contains("not an asciicast v3 event"), "{bad}");
    }
}
