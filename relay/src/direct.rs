//! Unmasked binary WebSocket frames written straight from the frame's own buffer.
//!
//! tungstenite copies every message it sends into its write buffer. On the server's stdout path
//! that copy was the relay's whole gap to a raw TCP copy (see `benches/RESULTS.md`), so the
//! server writes data frames itself: each frame's 2-10 byte header and the message's `Bytes` go
//! to the socket in vectored writes, several frames per system call, with no copy in user
//! space.
//!
//! Sharing the socket with tungstenite is safe under one rule, which the pump keeps: frames are
//! queued only when tungstenite's write buffer is flushed, and no tungstenite call that may write
//! (sending, flushing, or reading, which writes queued pongs) happens until the batch is fully
//! written. Only servers may do this: RFC 6455 requires clients to mask their frames.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::AsyncWrite;

/// FIN set, opcode 2 (binary).
const FIN_BINARY: u8 = 0x82;

/// Frames queued for the socket, written together in vectored writes.
#[derive(Debug, Default)]
pub(crate) struct DirectBatch {
    frames: VecDeque<DirectFrame>,
    queued: usize,
}

/// One frame: its header, and what is left of it to write.
#[derive(Debug)]
struct DirectFrame {
    header: [u8; 10],
    header_len: usize,
    header_sent: usize,
    payload: Bytes,
}

/// Slices handed to one vectored write (two per frame).
const MAX_SLICES: usize = 32;

impl DirectBatch {
    /// Queues an unmasked, unfragmented binary frame carrying `payload`.
    pub(crate) fn push(&mut self, payload: Bytes) {
        let (header, header_len) = header(payload.len());
        self.queued += header_len + payload.len();
        self.frames.push_back(DirectFrame {
            header,
            header_len,
            header_sent: 0,
            payload,
        });
    }

    /// Bytes queued and not yet written.
    pub(crate) fn queued(&self) -> usize {
        self.queued
    }

    /// Whether nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Writes as much as `stream` takes. `Ready(Ok(()))` once everything queued is out.
    pub(crate) fn poll_write<S>(
        &mut self,
        stream: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>>
    where
        S: AsyncWrite + Unpin,
    {
        while !self.frames.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut used = 0;
            for frame in self.frames.iter().take(MAX_SLICES / 2) {
                slices[used] = IoSlice::new(&frame.header[frame.header_sent..frame.header_len]);
                slices[used + 1] = IoSlice::new(&frame.payload);
                used += 2;
            }
            let mut n = match Pin::new(&mut *stream).poll_write_vectored(cx, &slices[..used]) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            };
            self.queued -= n;
            while n > 0 {
                let frame = self
                    .frames
                    .front_mut()
                    .expect("wrote no more than was queued");
                let from_header = n.min(frame.header_len - frame.header_sent);
                frame.header_sent += from_header;
                let from_payload = (n - from_header).min(frame.payload.len());
                frame.payload.advance(from_payload);
                n -= from_header + from_payload;
                if frame.header_sent == frame.header_len && frame.payload.is_empty() {
                    self.frames.pop_front();
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// The header of an unmasked, final binary frame of `len` payload bytes (RFC 6455 5.2).
fn header(len: usize) -> ([u8; 10], usize) {
    let mut h = [0u8; 10];
    h[0] = FIN_BINARY;
    if len < 126 {
        h[1] = len as u8;
        (h, 2)
    } else if let Ok(len) = u16::try_from(len) {
        h[1] = 126;
        h[2..4].copy_from_slice(&len.to_be_bytes());
        (h, 4)
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (h, 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    /// A socket that takes at most `limit` bytes per write.
    struct Trickle {
        written: Vec<u8>,
        limit: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.limit);
            self.written.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let mut n = 0;
            for buf in bufs {
                let take = buf.len().min(self.limit - n);
                self.written.extend_from_slice(&buf[..take]);
                n += take;
            }
            Poll::Ready(Ok(n))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn a_batch_written_in_odd_pieces_is_the_frames_back_to_back() {
        let payloads: Vec<Bytes> = (0..40u8)
            .map(|i| Bytes::from(vec![i; usize::from(i) * 97]))
            .collect();
        for limit in [1, 7, 1000, 1 << 20] {
            let mut batch = DirectBatch::default();
            let mut expected = Vec::new();
            for p in &payloads {
                let (h, n) = header(p.len());
                expected.extend_from_slice(&h[..n]);
                expected.extend_from_slice(p);
                batch.push(p.clone());
            }
            assert_eq!(batch.queued(), expected.len());
            let mut socket = Trickle {
                written: Vec::new(),
                limit,
            };
            let mut cx = Context::from_waker(Waker::noop());
            assert!(batch.poll_write(&mut socket, &mut cx).is_ready());
            assert!(batch.is_empty());
            assert_eq!(batch.queued(), 0);
            assert_eq!(socket.written, expected, "limit {limit}");
        }
    }
    use std::io::Cursor;
    use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

    #[test]
    fn headers_parse_as_tungstenite_reads_them() {
        for len in [0usize, 1, 125, 126, 65_535, 65_536, 1 << 20] {
            let (h, n) = header(len);
            let mut cursor = Cursor::new(&h[..n]);
            let (parsed, parsed_len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            assert_eq!(parsed_len, len as u64, "len {len}");
            assert!(parsed.is_final);
            assert_eq!(parsed.opcode, OpCode::Data(Data::Binary));
            assert!(parsed.mask.is_none());
            assert_eq!(
                cursor.position() as usize,
                n,
                "header of {len} is {n} bytes"
            );
        }
    }
}
