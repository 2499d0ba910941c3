//! One event line, `[time, "code", "data"]`, as pure functions: no I/O, no state.
//!
//! The writer keeps the state (times, UTF-8 carries) and hands these functions finished text;
//! the reader hands them raw lines. Encoding appends to a caller's buffer, so writing a stream
//! of events reuses one buffer and allocates nothing per event.

use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;

use crate::error::LineError;
use crate::event::EventKind;
use crate::format::{self, Format};

/// Output: bytes written to the terminal.
pub(crate) const OUTPUT: &str = "o";
/// Input: bytes typed by the user.
pub(crate) const INPUT: &str = "i";
/// Resize, data `COLSxROWS`.
pub(crate) const RESIZE: &str = "r";
/// Marker, data a label.
pub(crate) const MARKER: &str = "m";
/// Exit (v3 only), data the status.
pub(crate) const EXIT: &str = "x";

/// Starts a line: `[time, "code", `. `time` is in [`format::TIME_UNIT`]s.
fn begin(out: &mut Vec<u8>, time: u64, code: &str) {
    out.push(b'[');
    format::push_seconds(out, time);
    out.extend_from_slice(b", \"");
    out.extend_from_slice(code.as_bytes());
    out.extend_from_slice(b"\", ");
}

/// Appends an event whose data is text: JSON escapes it (control characters as `\uXXXX`).
pub(crate) fn push_text(out: &mut Vec<u8>, time: u64, code: &str, text: &str) {
    begin(out, time, code);
    push_json_string(out, text);
    out.extend_from_slice(b"]\n");
}

/// Appends `text` as a JSON string, escaped exactly as serde_json escapes it (`\"`, `\\`,
/// `\b \f \n \r \t`, other control characters as `\u00XX`; everything else as is), but
/// eight bytes at a time: terminal output is mostly text that needs no escaping, and this
/// runs for every byte a session prints.
pub(crate) fn push_json_string(out: &mut Vec<u8>, text: &str) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    /// The high bit of each zero byte of `word`, and perhaps of bytes above the first one (a
    /// borrow); the lowest bit set is always the first zero byte.
    fn zeros(word: u64) -> u64 {
        word.wrapping_sub(ONES) & !word & HIGHS
    }
    /// The bytes of `word` that need escaping (below 0x20, `"` or `\`) as [`zeros`] marks
    /// them: the lowest bit set is the first of them.
    fn to_escape(word: u64) -> u64 {
        // Bytes below 0x20: subtracting 0x20 borrows into the high bit of bytes that were
        // below it, unless the byte already had its high bit set (non-ASCII, left as is).
        let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
        control | zeros(word ^ (ONES * u64::from(b'"'))) | zeros(word ^ (ONES * u64::from(b'\\')))
    }
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(chunk) = bytes.get(i..i + 8) {
            let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
            let marked = to_escape(word);
            if marked == 0 {
                i += 8;
                continue;
            }
            // Straight to the first byte to escape (little-endian: the lowest bits).
            i += (marked.trailing_zeros() / 8) as usize;
        }
        let b = bytes[i];
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        } else {
            out.extend_from_slice(escape);
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends a resize event.
pub(crate) fn push_resize(out: &mut Vec<u8>, time: u64, cols: u16, rows: u16) {
    use std::io::Write as _;
    begin(out, time, RESIZE);
    let _ = writeln!(out, "\"{cols}x{rows}\"]");
}

/// Appends an exit event: code `x` in v3, the marker `exit STATUS` in v2 (see [`Format::V2`]).
pub(crate) fn push_exit(out: &mut Vec<u8>, format: Format, time: u64, status: i32) {
    use std::io::Write as _;
    match format {
        Format::V2 => begin(out, time, MARKER),
        Format::V3 => begin(out, time, EXIT),
    }
    let prefix = match format {
        Format::V2 => format::EXIT_MARKER_PREFIX,
        Format::V3 => "",
    };
    // Digits and `-` need no JSON escaping.
    let _ = writeln!(out, "\"{prefix}{status}\"]");
}

/// An event line as read: `time` is absolute (v2) or an interval (v3).
#[derive(Debug, PartialEq)]
pub(crate) struct Parsed {
    pub time: Duration,
    /// `None` for a code this crate does not know; the spec says to ignore those.
    pub kind: Option<EventKind>,
}

/// Parses one event line.
pub(crate) fn parse(line: &[u8]) -> Result<Parsed, LineError> {
    #[derive(Deserialize)]
    struct Raw<'a>(f64, #[serde(borrow)] std::borrow::Cow<'a, str>, String);

    let Raw(seconds, code, data) = serde_json::from_slice(line)?;
    let time = format::parse_seconds(seconds).ok_or(LineError::Time(seconds))?;
    let kind = match &*code {
        OUTPUT => Some(EventKind::Output(Bytes::from(data))),
        INPUT => Some(EventKind::Input(Bytes::from(data))),
        RESIZE => Some(parse_resize(&data).ok_or(LineError::Resize(data))?),
        MARKER => Some(EventKind::Marker(data)),
        EXIT => Some(EventKind::Exit(
            data.parse().map_err(|_| LineError::Exit(data))?,
        )),
        _ => None,
    };
    Ok(Parsed { time, kind })
}

fn parse_resize(data: &str) -> Option<EventKind> {
    let (cols, rows) = data.split_once('x')?;
    Some(EventKind::Resize {
        cols: cols.parse().ok()?,
        rows: rows.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_json_escaped() {
        let mut out = Vec::new();
        push_text(&mut out, 1_500_000, OUTPUT, "a\"\\\u{1b}[0m\r\n\u{7f}é");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[1.500000, \"o\", \"a\\\"\\\\\\u001b[0m\\r\\n\u{7f}é\"]\n"
        );
    }

    #[test]
    fn strings_are_escaped_exactly_as_serde_json_escapes_them() {
        let mut every_byte: String = (0u8..0x80).map(char::from).collect();
        every_byte.push_str("é✓\u{1F600}\u{7f}\u{80}\u{2028}");
        let samples = [
            String::new(),
            "plain text longer than eight bytes, no escapes".to_owned(),
            every_byte.clone(),
            every_byte.repeat(3),
            "\"\\".repeat(9),
            "x\u{1b}[0mabcdefgh\r\n\t".to_owned(),
        ];
        for sample in &samples {
            for cut in 0..sample.len().min(9) {
                let Some(text) = sample.get(cut..) else {
                    continue;
                };
                let mut ours = Vec::new();
                push_json_string(&mut ours, text);
                let theirs = serde_json::to_vec(text).unwrap();
                assert_eq!(
                    String::from_utf8(ours).unwrap(),
                    String::from_utf8(theirs).unwrap(),
                    "{text:?}"
                );
            }
        }
    }

    #[test]
    fn exit_is_a_marker_in_v2_and_code_x_in_v3() {
        let mut out = Vec::new();
        push_exit(&mut out, Format::V2, 0, -1);
        push_exit(&mut out, Format::V3, 0, 137);
        assert_eq!(
            out,
            b"[0.000000, \"m\", \"exit -1\"]\n[0.000000, \"x\", \"137\"]\n"
        );
    }

    #[test]
    fn unknown_codes_parse_to_no_event_and_bad_data_is_an_error() {
        let unknown = parse(br#"[0.5, "z", "anything"]"#).unwrap();
        assert_eq!(unknown.time, Duration::from_millis(500));
        assert_eq!(unknown.kind, None);
        assert!(matches!(
            parse(br#"[0, "r", "80by24"]"#),
            Err(LineError::Resize(_))
        ));
        assert!(matches!(
            parse(br#"[0, "x", "zero"]"#),
            Err(LineError::Exit(_))
        ));
        assert!(matches!(
            parse(br#"[-1, "o", ""]"#),
            Err(LineError::Time(_))
        ));
        assert!(matches!(parse(br#"[0, "o"]"#), Err(LineError::Json(_))));
    }
}
