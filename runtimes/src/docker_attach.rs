//! Starting a Docker exec with its stdio over a raw connection to the engine's socket.
//!
//! bollard's hijacked streams do not end when the process exits (bollard issue #251), which
//! would leave every session waiting for output that never comes. The protocol is simple, so
//! we speak it ourselves, as the Docker CLI does: `POST /exec/{id}/start` with `Upgrade: tcp`,
//! then the connection is the process's stdio. The engine closes it when the process's output
//! ends; closing our write half is the process's stdin EOF.
//!
//! Without a tty, stdout and stderr arrive multiplexed in frames of an 8-byte header (stream
//! type, three zero bytes, big-endian length) and a payload; with a tty, as one raw stream.
//!
//! The multiplexed stream is split by [`Demux`] inside the readers' own `poll_read`, with no
//! task and no pipe in between: a reader that is not polled reads nothing from the engine (so
//! backpressure reaches the container), and once both readers are dropped the connection is
//! closed at once. (An earlier version copied into in-memory pipes from a task of its own; when
//! a session ended while a pipe was full, the task waited forever on a reader that was gone,
//! holding the engine's attach stream, and the engine could then neither stop nor remove the
//! container.)

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, BufMut, BytesMut};
use kdbg_relay::session::{BoxRead, BoxWrite};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::UnixStream;

/// The longest answer header we accept from the engine.
const MAX_HEADER: usize = 16 * 1024;
/// The first read from the engine asks for this much; reads that fill the buffer double it up
/// to [`MAX_READ`], so an interactive session keeps a small buffer and a bulk one makes few
/// large reads (each holding many frames).
const FIRST_READ: usize = 8 * 1024;
/// The largest read from the engine.
const MAX_READ: usize = 256 * 1024;
/// The length of a frame header.
const FRAME_HEADER: usize = 8;

/// Why the engine refused or broke an attach.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AttachError {
    /// The engine's socket could not be used.
    #[error("talking to the engine's socket")]
    Io(#[from] io::Error),
    /// The engine closed the connection before answering.
    #[error("the engine closed the attach connection before answering")]
    NoAnswer,
    /// The engine answered with an error.
    #[error("the engine refused to attach (HTTP {code}): {message}")]
    Refused {
        /// The HTTP status.
        code: u16,
        /// The engine's message.
        message: String,
    },
}

/// The attached stdio of one container.
pub(crate) struct Attached {
    pub stdin: Option<BoxWrite>,
    pub stdout: Option<BoxRead>,
    pub stderr: Option<BoxRead>,
}

/// Which streams to attach.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// Starts exec `exec` through the engine at `socket`, speaking API `version`, with its stdio
/// attached (the engine hijacks the connection); `ended` is set once its output has ended.
pub(crate) async fn start_exec(
    socket: &str,
    version: &str,
    exec: &str,
    streams: Streams,
    ended: Ended,
) -> Result<Attached, AttachError> {
    let path = format!("/v{version}/exec/{exec}/start");
    let body = format!("{{\"Detach\":false,\"Tty\":{}}}", streams.tty);
    let (conn, early) = upgrade(socket, &path, &body).await?;
    Ok(split(conn, early, streams, ended))
}

/// Sends `POST path` with `body` (JSON, may be empty) asking for `Upgrade: tcp`, and returns the
/// connection and the bytes that came after the answer's header.
pub(crate) async fn upgrade(
    socket: &str,
    path: &str,
    body: &str,
) -> Result<(UnixStream, BytesMut), AttachError> {
    let mut conn = UnixStream::connect(socket).await?;
    let content_type = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/json\r\n"
    };
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\
         {content_type}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await?;
    let mut buf = BytesMut::with_capacity(4096);
    let header_end = loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            break end + 4;
        }
        if buf.len() > MAX_HEADER || conn.read_buf(&mut buf).await? == 0 {
            return Err(AttachError::NoAnswer);
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    buf.advance(header_end);
    if !(code == 101 || code == 200) {
        // The body says why (e.g. no such container); read what comes quickly.
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(2), conn.read_buf(&mut buf)).await;
        let body = String::from_utf8_lossy(&buf);
        let message = engine_message(&body).unwrap_or_else(|| body.trim().to_owned());
        return Err(AttachError::Refused { code, message });
    }
    Ok((conn, buf))
}

/// Set once a process's output has ended (or nobody reads it any more): the moment to ask the
/// engine for its exit code, which Docker has no call to wait for. And the other way: once
/// the process is known to have ended (its container was killed, and the engine left the
/// stream open), [`Ended::process_gone`] ends the readers' stream when nothing more comes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ended(Arc<EndedState>);

#[derive(Debug, Default)]
pub(crate) struct EndedState {
    output: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
    process: std::sync::atomic::AtomicBool,
}

impl Ended {
    fn set(&self) {
        self.0
            .output
            .store(true, std::sync::atomic::Ordering::Release);
        self.0.notify.notify_waiters();
    }

    /// The process is gone: a read that would wait for more is the stream's end.
    pub(crate) fn process_gone(&self) {
        self.0
            .process
            .store(true, std::sync::atomic::Ordering::Release);
    }

    fn gone(&self) -> bool {
        self.0.process.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Resolves once set.
    pub(crate) async fn wait(&self) {
        loop {
            let notified = self.0.notify.notified();
            if self.0.output.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// A raw (terminal) output stream that says when it ends.
struct RawOutput {
    inner: BoxRead,
    ended: Ended,
}

impl AsyncRead for RawOutput {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = out.filled().len();
        let polled = self.inner.as_mut().poll_read(cx, out);
        if polled.is_pending() && self.ended.gone() {
            self.ended.set();
            return Poll::Ready(Ok(()));
        }
        match &polled {
            Poll::Ready(Ok(())) if out.filled().len() == before => self.ended.set(),
            Poll::Ready(Err(_)) => self.ended.set(),
            _ => {}
        }
        polled
    }
}

impl Drop for RawOutput {
    fn drop(&mut self) {
        self.ended.set();
    }
}

/// Splits an upgraded connection into the streams asked for.
pub(crate) fn split(conn: UnixStream, early: BytesMut, streams: Streams, ended: Ended) -> Attached {
    let (read, write) = conn.into_split();
    let stdin: Option<BoxWrite> = streams.stdin.then(|| Box::pin(write) as BoxWrite);
    let read: BoxRead = Box::pin(read);
    if streams.tty {
        // Bytes that came with the answer belong to the stream.
        let raw: BoxRead = Box::pin(AsyncReadExt::chain(io::Cursor::new(early.freeze()), read));
        let output = Box::pin(RawOutput { inner: raw, ended });
        return Attached {
            stdin,
            stdout: streams.stdout.then_some(output as BoxRead),
            stderr: None,
        };
    }
    let [stdout, stderr] = Demux::readers(read, early, [streams.stdout, streams.stderr], ended);
    Attached {
        stdin,
        stdout: stdout.map(|r| Box::pin(r) as BoxRead),
        stderr: stderr.map(|r| Box::pin(r) as BoxRead),
    }
}

/// Docker's multiplexed output stream, shared by its stdout and stderr readers.
struct Demux {
    /// The engine's stream; `None` once both readers are gone.
    source: Option<BoxRead>,
    /// Bytes read from the engine and not yet handed out.
    buf: BytesMut,
    /// How much the next read from the engine asks for.
    want: usize,
    /// The frame being handed out: its stream (0 stdout, 1 stderr) and the bytes left of it.
    frame: Option<(usize, usize)>,
    /// Which readers still exist; a dropped reader's frames are skipped.
    open: [bool; 2],
    /// Readers waiting for the other one to take its frame, or for the engine.
    wakers: [Option<Waker>; 2],
    /// The engine's stream ended (or failed: then the error, given to the first reader).
    ended: bool,
    error: Option<io::Error>,
    /// Told when the stream ends, or when nobody reads it any more.
    output_ended: Ended,
}

impl Drop for Demux {
    fn drop(&mut self) {
        self.output_ended.set();
    }
}

/// One stream of a [`Demux`].
struct DemuxReader {
    shared: Arc<Mutex<Demux>>,
    stream: usize,
}

impl Demux {
    /// Readers for stdout and stderr, as `wanted`.
    fn readers(
        source: BoxRead,
        early: BytesMut,
        wanted: [bool; 2],
        output_ended: Ended,
    ) -> [Option<DemuxReader>; 2] {
        let shared = Arc::new(Mutex::new(Demux {
            source: Some(source),
            buf: early,
            want: FIRST_READ,
            frame: None,
            open: wanted,
            wakers: [None, None],
            ended: false,
            error: None,
            output_ended,
        }));
        [0, 1].map(|stream| {
            wanted[stream].then(|| DemuxReader {
                shared: shared.clone(),
                stream,
            })
        })
    }

    fn wake(&mut self, stream: usize) {
        if let Some(waker) = self.wakers[stream].take() {
            waker.wake();
        }
    }

    fn poll_read(
        &mut self,
        stream: usize,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let other = 1 - stream;
        loop {
            match self.frame {
                Some((_, 0)) => {
                    // Done with a frame: the next may be buffered already.
                    self.frame = None;
                    continue;
                }
                Some((owner, _)) if owner != stream && self.open[owner] => {
                    // The other stream's frame is next: its reader takes it first.
                    self.wakers[stream] = Some(cx.waker().clone());
                    self.wake(owner);
                    return Poll::Pending;
                }
                Some((owner, left)) if !self.buf.is_empty() => {
                    let mut n = left.min(self.buf.len());
                    if owner == stream {
                        n = n.min(out.remaining());
                        out.put_slice(&self.buf[..n]);
                    }
                    // Otherwise the frame is a dropped reader's: skipped.
                    self.buf.advance(n);
                    self.frame = Some((owner, left - n));
                    if owner == stream {
                        return Poll::Ready(Ok(()));
                    }
                    continue;
                }
                Some(_) => {}
                None if self.buf.len() >= FRAME_HEADER => {
                    let header = &self.buf[..FRAME_HEADER];
                    // 2 is stderr; 1 is stdout, and 0 (stdin) does not occur on output.
                    let owner = usize::from(header[0] == 2);
                    let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
                    self.buf.advance(FRAME_HEADER);
                    self.frame = Some((owner, len as usize));
                    continue;
                }
                None => {}
            }
            // More bytes are needed from the engine.
            if let Some(e) = self.error.take() {
                return Poll::Ready(Err(e));
            }
            if self.ended {
                // A header cut short at the end is dropped with the stream.
                return Poll::Ready(Ok(()));
            }
            let Some(source) = self.source.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            if self.buf.capacity() - self.buf.len() < self.want {
                self.buf.reserve(self.want);
            }
            let before = self.buf.len();
            let polled = tokio_util::io::poll_read_buf(
                source.as_mut(),
                cx,
                &mut (&mut self.buf).limit(self.want),
            );
            match polled {
                Poll::Pending if self.output_ended.gone() => {
                    // The process is gone and the engine left the stream open.
                    self.ended = true;
                    self.output_ended.set();
                    self.wake(other);
                }
                Poll::Pending => {
                    self.wakers[stream] = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                Poll::Ready(Ok(0)) => {
                    self.ended = true;
                    self.output_ended.set();
                    self.wake(other);
                }
                Poll::Ready(Ok(n)) => {
                    debug_assert_eq!(self.buf.len(), before + n);
                    if n == self.want {
                        self.want = (self.want * 2).min(MAX_READ);
                    }
                    // The other reader may be waiting for the engine too; what came may be its.
                    self.wake(other);
                }
                Poll::Ready(Err(e)) => {
                    self.ended = true;
                    self.output_ended.set();
                    self.wake(other);
                    return Poll::Ready(Err(e));
                }
            }
        }
    }
}

impl AsyncRead for DemuxReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let stream = self.stream;
        let mut demux = self.shared.lock().expect("demux state poisoned");
        demux.poll_read(stream, cx, out)
    }
}

impl Drop for DemuxReader {
    fn drop(&mut self) {
        let Ok(mut demux) = self.shared.lock() else {
            return;
        };
        demux.open[self.stream] = false;
        if !demux.open.contains(&true) {
            // Nobody reads any more: close the engine's stream now, so the engine stops
            // writing to us and can stop and remove the container.
            demux.source = None;
            demux.buf = BytesMut::new();
        } else {
            // The other reader may be waiting behind one of our frames, now skipped.
            let other = 1 - self.stream;
            demux.wake(other);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The `message` of the engine's JSON error body.
fn engine_message(body: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct EngineError {
        message: String,
    }
    let start = body.find('{')?;
    serde_json::from_str::<EngineError>(&body[start..])
        .ok()
        .map(|e| e.message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![stream, 0, 0, 0];
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    async fn read_all(mut r: impl AsyncRead + Unpin) -> Vec<u8> {
        let mut v = Vec::new();
        r.read_to_end(&mut v).await.unwrap();
        v
    }

    #[tokio::test]
    async fn frames_are_split_by_stream_in_order() {
        let (mut engine, ours) = tokio::io::duplex(64);
        let mut wire = frame(1, b"out-1 ");
        wire.extend(frame(2, b"err-1 "));
        wire.extend(frame(1, &vec![b'x'; 5000]));
        wire.extend(frame(2, b"err-2"));
        let writer = tokio::spawn(async move {
            // Small writes: headers and payloads arrive cut anywhere.
            for chunk in wire.chunks(7) {
                engine.write_all(chunk).await.unwrap();
            }
        });
        let [out, err] = Demux::readers(
            Box::pin(ours),
            BytesMut::new(),
            [true, true],
            Ended::default(),
        );
        let (out, err) = tokio::join!(read_all(out.unwrap()), read_all(err.unwrap()));
        writer.await.unwrap();
        let mut expected = b"out-1 ".to_vec();
        expected.extend(vec![b'x'; 5000]);
        assert_eq!(out, expected);
        assert_eq!(err, b"err-1 err-2");
    }

    #[tokio::test]
    async fn frames_buffered_when_the_engine_closes_are_all_read() {
        // Many frames in one read, then the engine's end: every frame must still come out.
        // (A finished frame once sent the reader to the engine instead of the buffer: after
        // the end, that read said "end" with frames left, and a session lost its output's
        // tail with exit status 0.)
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        for i in 0..50u8 {
            let line = vec![b'a' + i % 26; 100];
            wire.extend(frame(1, &line));
            expected.extend(line);
        }
        let [out, _] = Demux::readers(
            Box::pin(std::io::Cursor::new(wire)),
            BytesMut::new(),
            [true, false],
            Ended::default(),
        );
        let got = read_all(out.unwrap()).await;
        assert_eq!(got.len(), expected.len(), "bytes read");
        assert!(got == expected);
    }

    #[tokio::test]
    async fn a_dropped_readers_frames_are_skipped() {
        let mut wire = frame(2, b"nobody reads this");
        wire.extend(frame(1, b"kept"));
        let [out, err] = Demux::readers(
            Box::pin(io::Cursor::new(wire)),
            BytesMut::new(),
            [true, true],
            Ended::default(),
        );
        drop(err);
        assert_eq!(read_all(out.unwrap()).await, b"kept");
    }

    #[tokio::test]
    async fn dropping_both_readers_closes_the_engines_stream() {
        let (mut engine, ours) = tokio::io::duplex(64);
        let [out, err] = Demux::readers(
            Box::pin(ours),
            BytesMut::new(),
            [true, true],
            Ended::default(),
        );
        drop(out);
        drop(err);
        // The engine's writes fail at once instead of waiting for a reader that is gone.
        let written = engine.write_all(&frame(1, &[0; 4096])).await;
        assert!(written.is_err());
    }

    #[tokio::test]
    async fn bytes_that_came_with_the_answer_are_read_first() {
        let early = BytesMut::from(&frame(1, b"early ")[..]);
        let [out, _] = Demux::readers(
            Box::pin(io::Cursor::new(frame(1, b"late"))),
            early,
            [true, false],
            Ended::default(),
        );
        assert_eq!(read_all(out.unwrap()).await, b"early late");
    }
}
