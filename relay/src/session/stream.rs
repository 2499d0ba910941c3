//! A session's local ends: sources it reads (a process's output, the user's stdin) into
//! frames, and sinks it writes received data to, with the core's branches that serve them.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::Sink as _;
use tokio_tungstenite::tungstenite::Message;
use tracing::debug;

use super::core::{Core, Phase, Socket};
use super::{BoxRead, BoxWrite, FIRST_CHUNK, FRAMES_PER_BLOCK, MAX_CHUNK, PAYLOAD_ALIGN};
use crate::codec;
use crate::error::Error;
use crate::observer::EventKind;

/// A local reader feeding one channel.
pub(super) struct Source {
    pub channel: u8,
    pub reader: BoxRead,
    /// Holds the channel byte of the frame being read, then the payload; split off per frame.
    pub buf: BytesMut,
    /// How much the next read asks for: grows from [`FIRST_CHUNK`] to `max`.
    pub want: usize,
    /// The largest payload of one frame.
    pub max: usize,
}

impl Source {
    pub fn new(channel: u8, reader: BoxRead, max: usize) -> Source {
        Source {
            channel,
            reader,
            buf: BytesMut::new(),
            want: FIRST_CHUNK,
            max,
        }
    }
}

/// A local writer fed by one channel.
pub(super) struct Sink {
    pub writer: BoxWrite,
    /// Written since the last flush.
    pub dirty: bool,
}

impl Sink {
    pub fn new(writer: BoxWrite) -> Sink {
        Sink {
            writer,
            dirty: false,
        }
    }
}

/// What one read of a source did.
pub(super) enum SourceTurn {
    /// A frame went to the WebSocket.
    Sent,
    /// The source has nothing now.
    Blocked,
    /// The WebSocket has no room: the peer takes the output slower than it comes.
    Full,
    /// The source reached EOF.
    Ended,
}

/// Work received from the peer that must finish before the next message is read.
pub(super) enum Inbound {
    /// Bytes still to write to the sink of this channel.
    Data(u8, bytes::Bytes),
    /// Shut down the sink of this channel (the peer's close signal).
    Shutdown(u8),
}

/// The name of a channel's stream, for errors and logs.
pub(super) fn stream_name(channel: u8) -> &'static str {
    match channel {
        codec::STDIN => "stdin",
        codec::STDOUT => "stdout",
        codec::STDERR => "stderr",
        _ => "an unknown stream",
    }
}

impl<S: Socket> Core<'_, S> {
    /// Writes received data to its local sink. Returns whether anything happened.
    pub(super) fn drain_inbound(&mut self, cx: &mut Context<'_>) -> Result<bool, Error> {
        let mut busy = false;
        loop {
            let Some(work) = &mut self.inbound else {
                return Ok(busy);
            };
            match work {
                Inbound::Data(channel, data) => {
                    let channel = *channel;
                    let Some(sink) = &mut self.sinks[usize::from(channel)] else {
                        self.inbound = None;
                        continue;
                    };
                    match sink.writer.as_mut().poll_write(cx, data) {
                        Poll::Pending => return Ok(busy),
                        Poll::Ready(Ok(0)) => {
                            let e = io::Error::from(io::ErrorKind::WriteZero);
                            self.sink_failed(channel, e)?;
                        }
                        Poll::Ready(Ok(n)) => {
                            busy = true;
                            sink.dirty = true;
                            data.advance(n);
                            self.stats.bytes_received += n as u64;
                            if data.is_empty() {
                                self.inbound = None;
                            }
                        }
                        Poll::Ready(Err(e)) => self.sink_failed(channel, e)?,
                    }
                }
                Inbound::Shutdown(channel) => {
                    let channel = *channel;
                    if let Some(sink) = &mut self.sinks[usize::from(channel)] {
                        match sink.writer.as_mut().poll_shutdown(cx) {
                            Poll::Pending => return Ok(busy),
                            Poll::Ready(Ok(())) => debug!(channel, "closed local sink"),
                            Poll::Ready(Err(e)) => debug!(channel, error = %e, "closing sink"),
                        }
                    }
                    self.sinks[usize::from(channel)] = None;
                    self.inbound = None;
                    busy = true;
                }
            }
        }
    }

    /// A local sink failed. A process's stdin that is gone (it exited or closed it) is not an
    /// error: its input is dropped. The user's output failing is.
    pub(super) fn sink_failed(&mut self, channel: u8, e: io::Error) -> Result<(), Error> {
        self.inbound = None;
        self.sinks[usize::from(channel)] = None;
        if channel == codec::STDIN {
            debug!(error = %e, "process stdin closed; dropping further input");
            return Ok(());
        }
        Err(Error::WriteLocal {
            stream: stream_name(channel),
            source: e,
        })
    }

    /// Flushes local sinks written since their last flush. Returns whether all are clean.
    pub(super) fn flush_sinks(&mut self, cx: &mut Context<'_>) -> Result<bool, Error> {
        let mut clean = true;
        for channel in 0..3u8 {
            let Some(sink) = &mut self.sinks[usize::from(channel)] else {
                continue;
            };
            if !sink.dirty {
                continue;
            }
            match sink.writer.as_mut().poll_flush(cx) {
                Poll::Pending => clean = false,
                Poll::Ready(Ok(())) => sink.dirty = false,
                Poll::Ready(Err(e)) => self.sink_failed(channel, e)?,
            }
        }
        Ok(clean)
    }

    /// Reads local sources into frames while the WebSocket accepts them.
    pub(super) fn pump_sources(&mut self, cx: &mut Context<'_>) -> Result<bool, Error> {
        if !matches!(self.phase, Phase::Running) {
            return Ok(false);
        }
        let mut busy = false;
        let mut full = false;
        let mut i = 0;
        'sources: while i < self.sources.len() {
            // A bounded run per source per turn keeps stdout from starving stderr.
            for _ in 0..16 {
                match self.pump_one(i, cx)? {
                    SourceTurn::Sent => busy = true,
                    SourceTurn::Blocked => break,
                    SourceTurn::Full => {
                        full = true;
                        break;
                    }
                    SourceTurn::Ended => {
                        let source = self.sources.remove(i);
                        self.source_ended(source.channel);
                        busy = true;
                        // `i` now names the next source.
                        continue 'sources;
                    }
                }
            }
            i += 1;
        }
        self.output_waits_for_peer = full;
        Ok(busy)
    }

    /// Reads one chunk of source `i` into a frame and hands it to the WebSocket.
    pub(super) fn pump_one(&mut self, i: usize, cx: &mut Context<'_>) -> Result<SourceTurn, Error> {
        if !self.ready_for_frame(cx)? {
            return Ok(SourceTurn::Full);
        }
        let source = &mut self.sources[i];
        let need = source.want + 1 + PAYLOAD_ALIGN;
        if source.buf.capacity() < need {
            // Bulk output: carve the next frames out of one new block, so allocation stays off
            // the per-frame path whether or not an observer still holds earlier frames. (Reusing
            // one buffer in place measured slower; see benches/RESULTS.md.) Interactive output
            // takes one small buffer at a time, keeping idle sessions small.
            let frames = if source.want >= MAX_CHUNK.min(source.max) {
                FRAMES_PER_BLOCK
            } else {
                1
            };
            source.buf = BytesMut::with_capacity(need * frames);
        }
        // Start the payload, just behind the channel byte, on a cache-line boundary: copies into
        // a misaligned destination ran at a fraction of the speed (see benches/RESULTS.md).
        let pad = PAYLOAD_ALIGN - (source.buf.as_ptr() as usize + 1) % PAYLOAD_ALIGN;
        if pad < PAYLOAD_ALIGN {
            source.buf.put_bytes(0, pad);
            source.buf.advance(pad);
        }
        codec::begin_frame(&mut source.buf, source.channel, source.want);
        let polled = tokio_util::io::poll_read_buf(
            source.reader.as_mut(),
            cx,
            &mut (&mut source.buf).limit(source.want),
        );
        let n = match polled {
            Poll::Pending => {
                source.buf.clear();
                return Ok(SourceTurn::Blocked);
            }
            Poll::Ready(Ok(0)) => return Ok(SourceTurn::Ended),
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) => {
                return Err(Error::ReadLocal {
                    stream: stream_name(source.channel),
                    source: e,
                });
            }
        };
        if n == source.want && source.want < source.max {
            source.want *= 2;
        }
        let channel = source.channel;
        let message = source.buf.split().freeze();
        self.observe_sent(channel, &message);
        self.stats.bytes_sent += n as u64;
        if self.direct_writes {
            self.direct.push(message);
        } else {
            Pin::new(&mut self.ws)
                .start_send(Message::Binary(message))
                .map_err(Error::Send)?;
            self.unflushed = true;
        }
        Ok(SourceTurn::Sent)
    }

    /// Shows observers a frame read from a local source: output, or the user's input to
    /// those that want it.
    pub(super) fn observe_sent(&self, channel: u8, message: &Bytes) {
        let Some(tap) = &self.tap else { return };
        if channel != codec::STDIN {
            tap.offer(EventKind::Output {
                channel,
                data: message.slice(1..),
            });
        } else if tap.wants_input() {
            tap.offer(EventKind::Input(message.slice(1..)));
        }
    }
}
