//! The session pump: one task moving bytes between a WebSocket and local streams, used on both
//! ends.
//!
//! - [`serve`] is the server side (the agent): WebSocket <-> a process's stdin/stdout/stderr.
//! - [`attach`] is the client side (the plugin): WebSocket <-> the user's terminal or pipes.
//!
//! The pump is a single future polling named branches in turn (`drain_inbound`,
//! `send_control`, `pump_sources`, `receive`, keepalive, ...) over state it owns outright, so no
//! branch needs a lock or a channel to reach the WebSocket. Writing it as one `poll` rather than
//! a `select!` lets the data path batch: a source is read for as long as it has data and the
//! WebSocket accepts frames, and the socket is flushed once, when the source runs dry.
//!
//! Memory is bounded and backpressure is end to end: a data frame received is written to its
//! local sink before the next message is read (so a slow reader stops us reading the socket,
//! which stops the peer), and a source is read only once the previous frame is on the socket
//! (server) or tungstenite's write buffer has room (client). The only buffers are one read chunk per source, tungstenite's read and write buffers
//! (bounded by [`websocket_config`]) and the observer tap's bounded channel.
//!
//! Zero-copy on the stdout path: a source is read straight behind the frame's channel byte, and
//! the server writes that buffer to the socket itself with the frame header in one vectored
//! write ([`crate::direct`]), instead of letting tungstenite copy it into its write buffer.
//! (Clients must mask their frames, so their data goes through tungstenite.)
//!
//! Half-close: the client's stdin EOF sends `[255, 0]`; the server shuts the process's stdin and
//! keeps relaying output until the process ends, then sends the status and a normal close.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::{Sink as _, Stream};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Interval, MissedTickBehavior, Sleep};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::{debug, trace, warn};

use crate::codec::{self, Frame, Protocol};
use crate::direct::DirectBatch;
use crate::error::{Error, ProtocolError};
use crate::observer::{EventKind, Tap, TapDropped};
use crate::resize::{ResizeDecoder, TerminalSize};
use crate::status::ExitStatus;

/// A local byte source (a process's stdout, the user's stdin).
pub type BoxRead = Pin<Box<dyn AsyncRead + Send>>;
/// A local byte sink (a process's stdin, the user's terminal).
pub type BoxWrite = Pin<Box<dyn AsyncWrite + Send>>;
/// Terminal sizes to send, current size first (client side).
pub type ResizeStream = Pin<Box<dyn Stream<Item = TerminalSize> + Send>>;
/// Called with every terminal size the client sends (server side). Must not block.
pub type ResizeHandler = Box<dyn FnMut(TerminalSize) + Send>;
/// Resolves when the process ends, with how it ended (server side).
pub type ExitFuture = Pin<Box<dyn Future<Output = ExitStatus> + Send>>;

/// The largest payload sent in one message; kubectl uses the same for stdin.
pub const MAX_CHUNK: usize = 32 * 1024;
/// The first read of a source asks for this much and grows while reads fill it, so an idle
/// interactive session holds small buffers and a bulk transfer reaches [`MAX_CHUNK`] quickly.
const FIRST_CHUNK: usize = 4 * 1024;
/// Direct frames queued before they are written (server): several frames per system call.
const DIRECT_BATCH: usize = 128 * 1024;
/// Payloads read from local sources start at a multiple of this in memory.
const PAYLOAD_ALIGN: usize = 64;
/// Bulk frames carved from one allocation.
const FRAMES_PER_BLOCK: usize = 4;
/// The largest message accepted from a peer.
pub const MAX_MESSAGE: usize = 1024 * 1024;
/// Branch turns before the pump yields to the runtime, so a busy session can't starve others.
const TURNS_PER_POLL: usize = 64;
/// Bytes moved before the pump yields: keeps an observer on the same thread close behind, so
/// the frames it holds stay few and their memory is reused rather than freshly mapped.
const BYTES_PER_POLL: u64 = 512 * 1024;

/// Timing of a session. The defaults are kubectl's.
#[derive(Debug, Clone)]
pub struct Config {
    /// How often to ping the peer.
    pub keepalive_interval: Duration,
    /// How long the peer may stay silent (pongs count) before it is declared dead.
    pub peer_timeout: Duration,
    /// How long to wait for the peer's close reply, and for output to drain after the process
    /// ended, before ending anyway.
    pub close_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            keepalive_interval: Duration::from_secs(5),
            peer_timeout: Duration::from_secs(61),
            close_timeout: Duration::from_secs(5),
        }
    }
}

/// The WebSocket settings the pump is tuned for: a 32 KiB read buffer (one full chunk per system
/// call; tungstenite allocates it up front, so it is most of an idle session's memory), frames
/// batched up to 128 KiB per write, and messages capped at [`MAX_MESSAGE`].
pub fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(32 * 1024)
        .write_buffer_size(128 * 1024)
        .max_write_buffer_size(128 * 1024 + MAX_MESSAGE + 64)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// The server side's local streams: the process.
pub struct ServerIo {
    /// The process's stdin, if the client asked for it.
    pub stdin: Option<BoxWrite>,
    /// The process's stdout (with a tty: the terminal's output).
    pub stdout: Option<BoxRead>,
    /// The process's stderr; `None` with a tty.
    pub stderr: Option<BoxRead>,
    /// Receives terminal sizes.
    pub on_resize: Option<ResizeHandler>,
    /// Resolves when the process has ended.
    pub exit: ExitFuture,
    /// Sees output, resizes and the exit.
    pub tap: Option<Tap>,
}

/// The client side's local streams: the user's.
#[derive(Default)]
pub struct ClientIo {
    /// Input to send, if any.
    pub stdin: Option<BoxRead>,
    /// Where the process's stdout goes.
    pub stdout: Option<BoxWrite>,
    /// Where the process's stderr goes.
    pub stderr: Option<BoxWrite>,
    /// Terminal sizes to send, the current one first.
    pub resize: Option<ResizeStream>,
    /// Sees output, resizes and the exit.
    pub tap: Option<Tap>,
}

/// Counters of one session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Payload bytes read from local sources and sent.
    pub bytes_sent: u64,
    /// Payload bytes received and written to local sinks.
    pub bytes_received: u64,
    /// Messages on channels the protocol does not define (dropped).
    pub unknown_frames: u64,
    /// Messages on defined channels that make no sense in this direction (dropped).
    pub ignored_frames: u64,
}

/// How a server session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEnd {
    /// The process ended and the client was told how.
    Completed(ExitStatus),
    /// The client closed the session before the process ended; the process is still running.
    ClientLeft,
}

/// A finished session: how it ended and what it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished<T> {
    /// How it ended.
    pub outcome: T,
    /// What it carried.
    pub stats: Stats,
}

/// Runs the server side of a session until the process has ended and the client has been told,
/// or the client has left. Dropping the future ends the session at once.
pub async fn serve<S>(
    ws: WebSocketStream<S>,
    protocol: Protocol,
    io: ServerIo,
    config: &Config,
) -> Result<Finished<ServerEnd>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut sources = Vec::new();
    for (channel, reader) in [(codec::STDOUT, io.stdout), (codec::STDERR, io.stderr)] {
        if let Some(reader) = reader {
            sources.push(Source::new(channel, reader));
        }
    }
    // The "stream established" signal: an empty message on the lowest channel we write.
    let first = sources.first().map_or(codec::STATUS, |s| s.channel);
    let mut pump = Pump::new(ws, protocol, config, sources, io.tap);
    pump.sinks[usize::from(codec::STDIN)] = io.stdin.map(Sink::new);
    pump.direct_writes = true;
    pump.outbox
        .push_back(Message::Binary(Bytes::from(vec![first])));
    pump.role = Role::Server {
        exit: Some(io.exit),
        status: None,
        on_resize: io.on_resize,
        resize: ResizeDecoder::default(),
        drain_deadline: None,
    };
    let outcome = poll_fn(|cx| pump.poll_session(cx)).await?;
    Ok(Finished {
        outcome: match outcome {
            End::Server(end) => end,
            End::Client(_) => unreachable!("a server pump ends as a server"),
        },
        stats: pump.stats,
    })
}

/// Runs the client side of a session until the server closes it, and returns the remote
/// command's exit status. A server that closes normally without sending a status reports
/// success, as kubectl assumes.
pub async fn attach<S>(
    ws: WebSocketStream<S>,
    protocol: Protocol,
    io: ClientIo,
    config: &Config,
) -> Result<Finished<ExitStatus>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let sources = io
        .stdin
        .map(|r| Source::new(codec::STDIN, r))
        .into_iter()
        .collect();
    let mut pump = Pump::new(ws, protocol, config, sources, io.tap);
    pump.sinks[usize::from(codec::STDOUT)] = io.stdout.map(Sink::new);
    pump.sinks[usize::from(codec::STDERR)] = io.stderr.map(Sink::new);
    pump.role = Role::Client {
        resize: io.resize,
        status: None,
    };
    let outcome = poll_fn(|cx| pump.poll_session(cx)).await?;
    Ok(Finished {
        outcome: match outcome {
            End::Client(status) => status,
            End::Server(_) => unreachable!("a client pump ends as a client"),
        },
        stats: pump.stats,
    })
}

/// A local reader feeding one channel.
struct Source {
    channel: u8,
    reader: BoxRead,
    /// Holds the channel byte of the frame being read, then the payload; split off per frame.
    buf: BytesMut,
    /// How much the next read asks for: grows from [`FIRST_CHUNK`] to [`MAX_CHUNK`].
    want: usize,
}

impl Source {
    fn new(channel: u8, reader: BoxRead) -> Source {
        Source {
            channel,
            reader,
            buf: BytesMut::new(),
            want: FIRST_CHUNK,
        }
    }
}

/// A local writer fed by one channel.
struct Sink {
    writer: BoxWrite,
    /// Written since the last flush.
    dirty: bool,
}

impl Sink {
    fn new(writer: BoxWrite) -> Sink {
        Sink {
            writer,
            dirty: false,
        }
    }
}

/// What one read of a source did.
enum SourceTurn {
    /// A frame went to the WebSocket.
    Sent,
    /// The source or the WebSocket has to wait.
    Blocked,
    /// The source reached EOF.
    Ended,
}

/// Work received from the peer that must finish before the next message is read.
enum Inbound {
    /// Bytes still to write to the sink of this channel.
    Data(u8, Bytes),
    /// Shut down the sink of this channel (the peer's close signal).
    Shutdown(u8),
}

enum Role {
    Server {
        exit: Option<ExitFuture>,
        status: Option<ExitStatus>,
        on_resize: Option<ResizeHandler>,
        resize: ResizeDecoder,
        /// Set when the process ended: output gets this long to drain.
        drain_deadline: Option<Pin<Box<Sleep>>>,
    },
    Client {
        resize: Option<ResizeStream>,
        status: Option<ExitStatus>,
    },
}

enum End {
    Server(ServerEnd),
    Client(ExitStatus),
}

/// Where the session is in its life.
enum Phase {
    Running,
    /// A close frame went one way; nothing new is sent, and the connection gets until the
    /// deadline to finish the close handshake. `end` is set when we closed first (server, after
    /// the process ended) and says how the session ended.
    Closing {
        deadline: Pin<Box<Sleep>>,
        end: Option<End>,
    },
    /// The connection ended: finish local writes, then end.
    Finishing(End),
}

struct Pump<'c, S> {
    ws: WebSocketStream<S>,
    protocol: Protocol,
    config: &'c Config,
    role: Role,
    phase: Phase,
    sources: Vec<Source>,
    /// Sinks by channel: 0 on the server, 1 and 2 on the client.
    sinks: [Option<Sink>; 3],
    inbound: Option<Inbound>,
    /// Control messages waiting for the WebSocket: a handful at most (established signal,
    /// close signal, one resize, one ping, status, close).
    outbox: VecDeque<Message>,
    /// Frames were handed to the WebSocket since its last flush.
    unflushed: bool,
    /// Server: data frames bypass tungstenite's write buffer (see [`crate::direct`]).
    direct_writes: bool,
    /// Direct frames queued for the socket; while any are, tungstenite must not write.
    direct: DirectBatch,
    /// Direct frames were written since the socket was last flushed.
    raw_unflushed: bool,
    tap: Option<Tap>,
    keepalive: Interval,
    /// Something arrived since the last keepalive tick.
    heard: bool,
    last_heard: Instant,
    stats: Stats,
}

impl<'c, S> Pump<'c, S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn new(
        ws: WebSocketStream<S>,
        protocol: Protocol,
        config: &'c Config,
        sources: Vec<Source>,
        tap: Option<Tap>,
    ) -> Self {
        let start = Instant::now();
        let mut keepalive =
            tokio::time::interval_at(start + config.keepalive_interval, config.keepalive_interval);
        keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Pump {
            ws,
            protocol,
            config,
            role: Role::Client {
                resize: None,
                status: None,
            },
            phase: Phase::Running,
            sources,
            sinks: [None, None, None],
            inbound: None,
            outbox: VecDeque::new(),
            unflushed: false,
            direct_writes: false,
            direct: DirectBatch::default(),
            raw_unflushed: false,
            tap,
            keepalive,
            heard: false,
            last_heard: start,
            stats: Stats::default(),
        }
    }

    /// One wake-up of the session: turns every branch until none can make progress.
    fn poll_session(&mut self, cx: &mut Context<'_>) -> Poll<Result<End, Error>> {
        let sent_before = self.stats.bytes_sent + self.stats.bytes_received;
        for _ in 0..TURNS_PER_POLL {
            if self.stats.bytes_sent + self.stats.bytes_received - sent_before >= BYTES_PER_POLL {
                // Let the observer and other sessions on this thread run.
                break;
            }
            let mut busy = self.drain_inbound(cx)?;
            if let Phase::Finishing(_) = self.phase {
                let clean = self.flush_sinks(cx)?;
                if busy {
                    continue;
                }
                if self.inbound.is_some() || !clean {
                    return Poll::Pending;
                }
                let Phase::Finishing(end) = std::mem::replace(&mut self.phase, Phase::Running)
                else {
                    unreachable!("checked above")
                };
                return Poll::Ready(Ok(end));
            }
            // While a direct frame is half written, tungstenite must not touch the socket:
            // control messages and reading (which writes queued pongs) wait for it.
            if self.poll_direct(cx)? {
                busy |= self.send_control(cx)?;
                busy |= self.receive(cx)?;
            }
            busy |= self.pump_sources(cx)?;
            busy |= self.poll_exit(cx)?;
            if busy {
                continue;
            }
            // Idle: push out what is queued and buffered, then check the clocks.
            if !self.direct.is_empty() {
                if self.poll_direct(cx)? {
                    // The socket is free for tungstenite again: reading may resume.
                    continue;
                }
            } else {
                if self.unflushed
                    && let Poll::Ready(r) = Pin::new(&mut self.ws).poll_flush(cx)
                {
                    r.map_err(Error::Send)?;
                    self.unflushed = false;
                }
                if self.raw_unflushed
                    && let Poll::Ready(r) = Pin::new(self.ws.get_mut()).poll_flush(cx)
                {
                    r.map_err(|e| Error::Send(tungstenite::Error::Io(e)))?;
                    self.raw_unflushed = false;
                }
            }
            self.flush_sinks(cx)?;
            if self.poll_clocks(cx)? {
                continue;
            }
            return Poll::Pending;
        }
        // Out of turns: let other tasks run, then come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Writes received data to its local sink. Returns whether anything happened.
    fn drain_inbound(&mut self, cx: &mut Context<'_>) -> Result<bool, Error> {
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
    fn sink_failed(&mut self, channel: u8, e: io::Error) -> Result<(), Error> {
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
    fn flush_sinks(&mut self, cx: &mut Context<'_>) -> Result<bool, Error> {
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

    /// Hands queued control messages to the WebSocket, and (client) takes the next terminal
    /// size when the queue is empty.
    fn send_control(&mut self, cx: &mut Context<'_>) -> Result<bool, Error> {
        let mut busy = false;
        loop {
            if self.outbox.is_empty() {
                let Role::Client {
                    resize: Some(sizes),
                    ..
                } = &mut self.role
                else {
                    return Ok(busy);
                };
                match sizes.as_mut().poll_next(cx) {
                    Poll::Pending => return Ok(busy),
                    Poll::Ready(None) => {
                        self.role_resize_done();
                        return Ok(busy);
                    }
                    Poll::Ready(Some(size)) => {
                        let mut message = BytesMut::new();
                        codec::begin_frame(&mut message, codec::RESIZE, 32);
                        message.put_slice(&size.to_json());
                        self.outbox.push_back(Message::Binary(message.freeze()));
                        self.observe(EventKind::Resize(size));
                    }
                }
            }
            match Pin::new(&mut self.ws).poll_ready(cx) {
                Poll::Pending => return Ok(busy),
                Poll::Ready(r) => r.map_err(Error::Send)?,
            }
            let message = self.outbox.pop_front().expect("checked non-empty");
            trace!(?message, "control message");
            Pin::new(&mut self.ws)
                .start_send(message)
                .map_err(Error::Send)?;
            self.unflushed = true;
            busy = true;
        }
    }

    fn role_resize_done(&mut self) {
        if let Role::Client { resize, .. } = &mut self.role {
            *resize = None;
        }
    }

    /// Reads local sources into frames while the WebSocket accepts them.
    fn pump_sources(&mut self, cx: &mut Context<'_>) -> Result<bool, Error> {
        if !matches!(self.phase, Phase::Running) {
            return Ok(false);
        }
        let mut busy = false;
        let mut i = 0;
        'sources: while i < self.sources.len() {
            // A bounded run per source per turn keeps stdout from starving stderr.
            for _ in 0..16 {
                match self.pump_one(i, cx)? {
                    SourceTurn::Sent => busy = true,
                    SourceTurn::Blocked => break,
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
        Ok(busy)
    }

    /// Reads one chunk of source `i` into a frame and hands it to the WebSocket.
    fn pump_one(&mut self, i: usize, cx: &mut Context<'_>) -> Result<SourceTurn, Error> {
        if !self.ready_for_frame(cx)? {
            return Ok(SourceTurn::Blocked);
        }
        let source = &mut self.sources[i];
        let need = source.want + 1 + PAYLOAD_ALIGN;
        if source.buf.capacity() < need {
            // Bulk output: carve the next frames out of one new block, so allocation stays off
            // the per-frame path whether or not an observer still holds earlier frames. (Reusing
            // one buffer in place measured slower; see benches/RESULTS.md.) Interactive output
            // takes one small buffer at a time, keeping idle sessions small.
            let frames = if source.want >= MAX_CHUNK {
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
        if n == source.want && source.want < MAX_CHUNK {
            source.want *= 2;
        }
        let channel = source.channel;
        let message = source.buf.split().freeze();
        if channel != codec::STDIN {
            self.observe(EventKind::Output {
                channel,
                data: message.slice(1..),
            });
        }
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

    /// Whether a data frame can be handed over now: with direct writes, the batch has room and
    /// tungstenite's buffer is flushed; otherwise tungstenite has room.
    fn ready_for_frame(&mut self, cx: &mut Context<'_>) -> Result<bool, Error> {
        if !self.direct_writes {
            return Ok(Pin::new(&mut self.ws)
                .poll_ready(cx)
                .map_err(Error::Send)?
                .is_ready());
        }
        if self.direct.queued() >= DIRECT_BATCH && !self.poll_direct(cx)? {
            return Ok(false);
        }
        if self.unflushed {
            if Pin::new(&mut self.ws)
                .poll_flush(cx)
                .map_err(Error::Send)?
                .is_pending()
            {
                return Ok(false);
            }
            self.unflushed = false;
        }
        Ok(true)
    }

    /// Writes the queued direct frames. Returns whether none is left.
    fn poll_direct(&mut self, cx: &mut Context<'_>) -> Result<bool, Error> {
        if self.direct.is_empty() {
            return Ok(true);
        }
        match self.direct.poll_write(self.ws.get_mut(), cx) {
            Poll::Pending => Ok(false),
            Poll::Ready(Ok(())) => {
                self.raw_unflushed = true;
                Ok(true)
            }
            Poll::Ready(Err(e)) => Err(Error::Send(tungstenite::Error::Io(e))),
        }
    }

    /// A local source reached EOF.
    fn source_ended(&mut self, channel: u8) {
        debug!(stream = stream_name(channel), "local source ended");
        if channel == codec::STDIN && self.protocol.has_close_signal() {
            self.outbox
                .push_back(Message::Binary(Frame::Close(codec::STDIN).encode()));
        }
    }

    /// Reads messages from the peer until the socket has nothing more or a message must wait
    /// for a slow local sink.
    fn receive(&mut self, cx: &mut Context<'_>) -> Result<bool, Error> {
        let mut busy = false;
        let mut turns = 0;
        while self.inbound.is_none() && turns < TURNS_PER_POLL {
            if matches!(self.phase, Phase::Finishing(_)) {
                break;
            }
            turns += 1;
            let message = match Pin::new(&mut self.ws).poll_next(cx) {
                Poll::Pending => break,
                Poll::Ready(None) => {
                    self.connection_ended(None)?;
                    return Ok(true);
                }
                Poll::Ready(Some(Err(e))) => {
                    self.connection_ended(Some(e))?;
                    return Ok(true);
                }
                Poll::Ready(Some(Ok(message))) => message,
            };
            busy = true;
            self.heard = true;
            match message {
                Message::Binary(data) => {
                    if let Phase::Running = self.phase {
                        self.handle_frame(data)?;
                    }
                }
                Message::Text(_) => return Err(ProtocolError::TextMessage.into()),
                // tungstenite queued the pong; make sure it leaves promptly.
                Message::Ping(_) => self.unflushed = true,
                Message::Pong(_) | Message::Frame(_) => {}
                Message::Close(frame) => {
                    debug!(?frame, "peer closed the WebSocket");
                    // tungstenite queued the reply; the stream ends after it is flushed.
                    self.unflushed = true;
                    if let Phase::Running = self.phase {
                        self.outbox.clear();
                        self.phase = self.closing(None);
                    }
                }
            }
        }
        Ok(busy)
    }

    /// The WebSocket stream ended, cleanly (`None`, or a closed-connection error after a close
    /// handshake) or not.
    fn connection_ended(&mut self, error: Option<tungstenite::Error>) -> Result<(), Error> {
        let clean = matches!(error, None | Some(tungstenite::Error::ConnectionClosed));
        let phase = std::mem::replace(&mut self.phase, Phase::Running);
        let end = match (phase, &mut self.role) {
            (Phase::Closing { end: Some(end), .. }, _) => end,
            (_, Role::Server { .. }) if clean => End::Server(ServerEnd::ClientLeft),
            (_, Role::Client { status, .. }) => match status.take() {
                Some(status) => End::Client(status),
                None if clean => End::Client(ExitStatus::Code(0)),
                None => return Err(error.map_or(Error::PeerVanished, vanished)),
            },
            (_, Role::Server { .. }) => return Err(error.map_or(Error::PeerVanished, vanished)),
        };
        self.phase = Phase::Finishing(end);
        Ok(())
    }

    fn handle_frame(&mut self, message: Bytes) -> Result<(), Error> {
        let Some(frame) = Frame::decode(message)? else {
            return Ok(());
        };
        trace!(channel = frame.channel(), "frame received");
        let server = matches!(self.role, Role::Server { .. });
        match frame {
            Frame::Stdin(data) if server => self.inbound = Some(Inbound::Data(codec::STDIN, data)),
            Frame::Close(codec::STDIN) if server => {
                self.inbound = Some(Inbound::Shutdown(codec::STDIN));
            }
            Frame::Resize(payload) if server => {
                let Role::Server {
                    resize, on_resize, ..
                } = &mut self.role
                else {
                    unreachable!()
                };
                let sizes = resize.feed(&payload)?;
                for &size in &sizes {
                    if let Some(handler) = on_resize {
                        handler(size);
                    }
                }
                for size in sizes {
                    self.observe(EventKind::Resize(size));
                }
            }
            Frame::Stdout(data) if !server => {
                self.observe(EventKind::Output {
                    channel: codec::STDOUT,
                    data: data.clone(),
                });
                self.inbound = Some(Inbound::Data(codec::STDOUT, data));
            }
            Frame::Stderr(data) if !server => {
                self.observe(EventKind::Output {
                    channel: codec::STDERR,
                    data: data.clone(),
                });
                self.inbound = Some(Inbound::Data(codec::STDERR, data));
            }
            Frame::Status(json) if !server => {
                let parsed = ExitStatus::from_json(&json)?;
                debug!(?parsed, "status received");
                self.observe(EventKind::Exit(parsed.clone()));
                if let Role::Client { status, .. } = &mut self.role {
                    *status = Some(parsed);
                }
            }
            Frame::Unknown { channel, .. } => {
                debug!(channel, "message on unknown channel dropped");
                self.stats.unknown_frames += 1;
            }
            other => {
                debug!(
                    channel = other.channel(),
                    "message for the other direction dropped"
                );
                self.stats.ignored_frames += 1;
            }
        }
        Ok(())
    }

    /// Server: notices the process's end, and once its output has drained (or the drain time
    /// is up), sends the status and closes.
    fn poll_exit(&mut self, cx: &mut Context<'_>) -> Result<bool, Error> {
        let Role::Server {
            exit,
            status,
            drain_deadline,
            ..
        } = &mut self.role
        else {
            return Ok(false);
        };
        if !matches!(self.phase, Phase::Running) {
            return Ok(false);
        }
        let mut busy = false;
        if let Some(fut) = exit {
            let Poll::Ready(ended) = fut.as_mut().poll(cx) else {
                return Ok(false);
            };
            debug!(status = ?ended, "process ended");
            *exit = None;
            *status = Some(ended);
            *drain_deadline = Some(Box::pin(tokio::time::sleep(self.config.close_timeout)));
            busy = true;
        }
        let drained = self.sources.is_empty();
        let out_of_time = drain_deadline
            .as_mut()
            .is_some_and(|d| d.as_mut().poll(cx).is_ready());
        if !drained && !out_of_time {
            return Ok(busy);
        }
        if !drained {
            warn!(
                "process ended but its output stayed open for {:?}; closing",
                self.config.close_timeout
            );
            self.sources.clear();
        }
        let ended = status.take().expect("set above");
        self.observe(EventKind::Exit(ended.clone()));
        let mut message = BytesMut::new();
        codec::begin_frame(&mut message, codec::STATUS, 128);
        message.put_slice(&ended.to_json());
        self.outbox.push_back(Message::Binary(message.freeze()));
        self.outbox.push_back(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })));
        self.phase = self.closing(Some(End::Server(ServerEnd::Completed(ended))));
        Ok(true)
    }

    /// Keepalive pings, the dead-peer check, and the close deadline. Returns whether it queued
    /// work.
    fn poll_clocks(&mut self, cx: &mut Context<'_>) -> Result<bool, Error> {
        if let Phase::Closing { deadline, .. } = &mut self.phase {
            if deadline.as_mut().poll(cx).is_ready() {
                debug!("close handshake not finished in time; ending anyway");
                self.connection_ended(None)?;
                return Ok(true);
            }
            // No pings once a close frame went out or came in.
            return Ok(false);
        }
        let mut busy = false;
        while self.keepalive.poll_tick(cx).is_ready() {
            let now = Instant::now();
            // While a slow local sink holds us back from reading, the peer's silence is ours.
            if self.heard || self.inbound.is_some() {
                self.heard = false;
                self.last_heard = now;
            } else if now.duration_since(self.last_heard) >= self.config.peer_timeout {
                return Err(Error::PeerTimeout(now.duration_since(self.last_heard)));
            }
            let ping_queued = self.outbox.iter().any(|m| matches!(m, Message::Ping(_)));
            if !ping_queued {
                self.outbox.push_back(Message::Ping(Bytes::new()));
                busy = true;
            }
        }
        Ok(busy)
    }

    fn closing(&self, end: Option<End>) -> Phase {
        Phase::Closing {
            deadline: Box::pin(tokio::time::sleep(self.config.close_timeout)),
            end,
        }
    }

    fn observe(&mut self, kind: EventKind) {
        let Some(tap) = &self.tap else { return };
        match tap.offer(kind) {
            Ok(()) => {}
            Err(TapDropped::TooSlow) => {
                warn!("session observer fell behind and was dropped; the session goes on");
                self.tap = None;
            }
            Err(TapDropped::Gone) => {
                debug!("session observer went away");
                self.tap = None;
            }
        }
    }
}

fn vanished(error: tungstenite::Error) -> Error {
    match error {
        tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        ) => Error::PeerVanished,
        tungstenite::Error::Io(e)
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::ConnectionAborted
            ) =>
        {
            Error::PeerVanished
        }
        other => Error::Receive(other),
    }
}

fn stream_name(channel: u8) -> &'static str {
    match channel {
        codec::STDIN => "stdin",
        codec::STDOUT => "stdout",
        codec::STDERR => "stderr",
        _ => "an unknown stream",
    }
}
