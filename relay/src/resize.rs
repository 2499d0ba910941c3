//! Terminal sizes on the resize channel: a stream of JSON values such as
//! `{"Width":80,"Height":24}`, which a sender may split across messages or pack several to a
//! message. Keys match case-insensitively, as Go's `encoding/json` does, so `width`/`height` work
//! too. Width is columns, height is rows.

use bytes::{Buf, Bytes, BytesMut};
use serde_json::Value;

use crate::error::ProtocolError;

/// The longest run of bytes the decoder holds while waiting for a value to complete. A real
/// size value is under 40 bytes; anything longer than this is a broken or hostile peer.
pub const MAX_PENDING: usize = 4096;

/// A terminal size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalSize {
    /// Columns.
    pub cols: u16,
    /// Rows.
    pub rows: u16,
}

impl TerminalSize {
    /// The largest size the agent keeps anything of: the screen kept for watchers and a
    /// recording's sizes are at most this many columns and rows. (The process gets the size
    /// its client asked for, up to the kernel's u16 each way; a 65535 x 65535 screen kept
    /// in memory would be tens of gigabytes.)
    pub const MAX_KEPT: TerminalSize = TerminalSize {
        cols: 1000,
        rows: 1000,
    };

    /// This size, within [`TerminalSize::MAX_KEPT`].
    pub fn kept(self) -> TerminalSize {
        TerminalSize {
            cols: self.cols.min(Self::MAX_KEPT.cols),
            rows: self.rows.min(Self::MAX_KEPT.rows),
        }
    }

    /// The JSON message a client sends, in the spelling kubectl uses, newline-terminated.
    pub fn to_json(self) -> Bytes {
        Bytes::from(format!(
            "{{\"Width\":{},\"Height\":{}}}\n",
            self.cols, self.rows
        ))
    }
}

/// Reassembles terminal sizes from resize-channel payloads.
#[derive(Debug, Default)]
pub struct ResizeDecoder {
    pending: BytesMut,
}

impl ResizeDecoder {
    /// Feeds one payload and returns every size completed by it, in order.
    pub fn feed(&mut self, payload: &[u8]) -> Result<Vec<TerminalSize>, ProtocolError> {
        self.pending.extend_from_slice(payload);
        let mut sizes = Vec::new();
        let mut values = serde_json::Deserializer::from_slice(&self.pending).into_iter::<Value>();
        let consumed = loop {
            match values.next() {
                Some(Ok(value)) => sizes.push(size_from_value(&value)?),
                Some(Err(e)) if e.is_eof() => break values.byte_offset(),
                Some(Err(e)) => return Err(ProtocolError::Resize(e.to_string())),
                None => break self.pending.len(),
            }
        };
        self.pending.advance(consumed);
        if self.pending.len() > MAX_PENDING {
            return Err(ProtocolError::Resize(format!(
                "{} bytes without a complete JSON value",
                self.pending.len()
            )));
        }
        Ok(sizes)
    }
}

fn size_from_value(value: &Value) -> Result<TerminalSize, ProtocolError> {
    let Value::Object(map) = value else {
        return Err(ProtocolError::Resize(format!(
            "expected an object like {{\"Width\":80,\"Height\":24}}, got {value}"
        )));
    };
    let field = |name: &str| -> Result<u16, ProtocolError> {
        // Go's decoder takes the last key that matches case-insensitively.
        let found = map.iter().rev().find(|(k, _)| k.eq_ignore_ascii_case(name));
        match found {
            None => Ok(0),
            Some((key, v)) => v
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| ProtocolError::Resize(format!("{key} is {v}, not 0..=65535"))),
        }
    };
    Ok(TerminalSize {
        cols: field("width")?,
        rows: field("height")?,
    })
}
