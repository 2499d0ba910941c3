//! The channel framing of Kubernetes' remote-command WebSocket protocol, as pure functions.
//!
//! Every binary WebSocket message is one channel byte followed by the payload. Decoding never
//! copies: the payload of a received message is a [`Bytes::slice`] of that message. Encoding on
//! the hot path never copies either: [`begin_frame`] prepares a `BytesMut` that already holds the
//! channel byte, the caller reads local input straight behind it and freezes it.
//!
//! No I/O lives here; the session pump in [`crate::session`] does that.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::ProtocolError;

/// Channel 0: the client's input, written to the process's stdin.
pub const STDIN: u8 = 0;
/// Channel 1: the process's stdout.
pub const STDOUT: u8 = 1;
/// Channel 2: the process's stderr (never used when a tty is allocated).
pub const STDERR: u8 = 2;
/// Channel 3: one `metav1.Status` JSON document, sent by the server when the process ended.
pub const STATUS: u8 = 3;
/// Channel 4: terminal size as a stream of JSON values, client to server.
pub const RESIZE: u8 = 4;
/// Channel 255 (`v5.channel.k8s.io` only): `[255, channel]` says the sender's writer of
/// `channel` is done, e.g. stdin reached EOF.
pub const CLOSE: u8 = 255;

/// The subprotocols this crate speaks, in order of preference.
///
/// `v5` adds the close signal (half-close of stdin) to `v4`; otherwise they are identical.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `v5.channel.k8s.io`: current kubectl and apiserver.
    V5,
    /// `v4.channel.k8s.io`: the kubelet and older clients; no close signal.
    V4,
}

impl Protocol {
    /// All supported protocols, most preferred first.
    pub const ALL: [Protocol; 2] = [Protocol::V5, Protocol::V4];

    /// Their `Sec-WebSocket-Protocol` tokens, most preferred first: what a server passes to
    /// [`crate::handshake::check_upgrade`].
    pub const NAMES: [&'static str; 2] = [Protocol::V5.name(), Protocol::V4.name()];

    /// The `Sec-WebSocket-Protocol` token.
    pub const fn name(self) -> &'static str {
        match self {
            Protocol::V5 => "v5.channel.k8s.io",
            Protocol::V4 => "v4.channel.k8s.io",
        }
    }

    /// Whether the `[255, channel]` close signal exists in this protocol.
    pub const fn has_close_signal(self) -> bool {
        matches!(self, Protocol::V5)
    }

    /// Recognises one token as chosen by a server.
    pub fn from_name(name: &str) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|p| p.name() == name.trim())
    }

    /// The value a client offers: every protocol, most preferred first.
    pub fn offer() -> String {
        Protocol::ALL.map(Protocol::name).join(", ")
    }
}

/// One decoded message. Payloads are slices of the received message, never copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Input for the process.
    Stdin(Bytes),
    /// Output of the process.
    Stdout(Bytes),
    /// Error output of the process.
    Stderr(Bytes),
    /// A `metav1.Status` JSON document (see [`crate::status`]).
    Status(Bytes),
    /// A piece of the resize JSON stream (see [`crate::resize`]); may hold part of a value or
    /// several values.
    Resize(Bytes),
    /// The peer finished writing the given channel.
    Close(u8),
    /// A channel this protocol does not define; servers drop these, and so do we.
    Unknown {
        /// The channel byte.
        channel: u8,
        /// The payload.
        payload: Bytes,
    },
}

impl Frame {
    /// Decodes one binary message.
    ///
    /// Returns `Ok(None)` for the messages the protocol says to skip: an empty message and a
    /// zero-length payload (the server's "stream established" signal is one of these).
    pub fn decode(message: Bytes) -> Result<Option<Frame>, ProtocolError> {
        let Some(&channel) = message.first() else {
            return Ok(None);
        };
        if channel == CLOSE {
            return match *message {
                [_, closed] => Ok(Some(Frame::Close(closed))),
                _ => Err(ProtocolError::CloseSignalLength(message.len())),
            };
        }
        if message.len() == 1 {
            return Ok(None);
        }
        let payload = message.slice(1..);
        Ok(Some(match channel {
            STDIN => Frame::Stdin(payload),
            STDOUT => Frame::Stdout(payload),
            STDERR => Frame::Stderr(payload),
            STATUS => Frame::Status(payload),
            RESIZE => Frame::Resize(payload),
            channel => Frame::Unknown { channel, payload },
        }))
    }

    /// The channel byte of this frame.
    pub fn channel(&self) -> u8 {
        match self {
            Frame::Stdin(_) => STDIN,
            Frame::Stdout(_) => STDOUT,
            Frame::Stderr(_) => STDERR,
            Frame::Status(_) => STATUS,
            Frame::Resize(_) => RESIZE,
            Frame::Close(_) => CLOSE,
            Frame::Unknown { channel, .. } => *channel,
        }
    }

    /// Encodes this frame into a new message. This copies the payload once; the session's data
    /// path uses [`begin_frame`] instead and copies nothing.
    pub fn encode(&self) -> Bytes {
        let payload: &[u8] = match self {
            Frame::Close(channel) => return Bytes::from(vec![CLOSE, *channel]),
            Frame::Stdin(p)
            | Frame::Stdout(p)
            | Frame::Stderr(p)
            | Frame::Status(p)
            | Frame::Resize(p)
            | Frame::Unknown { payload: p, .. } => p,
        };
        let mut buf = BytesMut::with_capacity(payload.len() + 1);
        buf.put_u8(self.channel());
        buf.put_slice(payload);
        buf.freeze()
    }
}

/// Prepares `buf` to receive up to `room` payload bytes of a frame on `channel`: reserves the
/// space (reusing the allocation once earlier frames are dropped) and writes the channel byte.
/// Read input into `buf` behind it, then take the message with `buf.split().freeze()`.
///
/// `buf` must be empty.
pub fn begin_frame(buf: &mut BytesMut, channel: u8, room: usize) {
    debug_assert!(
        buf.is_empty(),
        "begin_frame on a buffer holding {} bytes",
        buf.len()
    );
    buf.reserve(room + 1);
    buf.put_u8(channel);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoded_payload_shares_the_message_buffer() {
        let message = Bytes::from_static(b"\x01hello");
        let Some(Frame::Stdout(payload)) = Frame::decode(message.clone()).unwrap() else {
            panic!("not stdout");
        };
        assert_eq!(payload, "hello");
        assert_eq!(payload.as_ptr(), message[1..].as_ptr());
    }
}
