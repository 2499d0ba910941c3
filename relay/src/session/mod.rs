//! The session pump: one task moving bytes between a WebSocket and local streams, used on both
//! ends.
//!
//! - [`serve`] is the server side (the agent): WebSocket <-> a process's stdin/stdout/stderr.
//! - [`attach`] is the client side (the plugin): WebSocket <-> the user's terminal or pipes.
//!
//! Each role is its own type ([`server`], [`client`]) over one shared core ([`core`]): the
//! core is a single future polling named branches in turn (`drain_inbound`, `send_control`,
//! `receive`, `pump_sources`, the role's own work, keepalive, ...) over state it owns
//! outright, so no branch needs a lock or a channel to reach the WebSocket, and none asks which
//! role it is in. Writing it as one `poll` rather than a `select!` lets the data path batch: a
//! source is read for as long as it has data and the WebSocket accepts frames, and the socket
//! is flushed once, when the source runs dry. The local ends are in [`stream`].
//!
//! Memory is bounded and backpressure is end to end: a data frame received is written to its
//! local sink before the next message is read (so a slow reader stops us reading the socket,
//! which stops the peer), and a source is read only once the previous frame is on the socket
//! (server) or tungstenite's write buffer has room (client). The only buffers are one read
//! chunk per source, tungstenite's read and write buffers (bounded by [`websocket_config`])
//! and what observers have not taken yet (bounded per observer, see [`crate::observer`]).
//!
//! Zero-copy on the stdout path: a source is read straight behind the frame's channel byte, and
//! the server writes that buffer to the socket itself with the frame header in one vectored
//! write ([`crate::direct`]), instead of letting tungstenite copy it into its write buffer.
//! (Clients must mask their frames, so their data goes through tungstenite.)
//!
//! Half-close: the client's stdin EOF sends `[255, 0]`; the server shuts the process's stdin and
//! keeps relaying output until the process ends, then sends the status and a normal close.

mod client;
mod core;
mod server;
mod stream;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use self::client::Client;
use self::core::{Core, Pump};
use self::server::{Idle, Server};
use self::stream::{Sink, Source};
use crate::codec::{self, Protocol};
use crate::error::Error;
use crate::observer::Tap;
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

/// The largest payload the server sends in one message (output: a terminal sees it soon).
pub const MAX_CHUNK: usize = 32 * 1024;
/// The largest payload the client sends in one message. kubectl sends 32 KiB; bulk input
/// (`cp`, a file piped in) in larger messages costs the agent fewer wake-ups and writes per
/// byte, and stays well under what a server accepts ([`MAX_MESSAGE`]).
pub const MAX_INPUT_CHUNK: usize = 256 * 1024;
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
    /// How long to wait for the peer's close reply (at least two keepalive intervals; a peer
    /// heard meanwhile, or output still on its way to it, gets more), and for output to go
    /// quiet after the process ended (each byte that moves starts the wait again), before
    /// ending anyway.
    pub close_timeout: Duration,
    /// Server: a session with no input and no output this long ends ([`ServerEnd::Idle`]);
    /// `None`: never. The kubelet's streaming idle timeout is 4 h.
    pub idle_timeout: Option<Duration>,
    /// Server: how long before the idle timeout the user is warned, on the terminal.
    pub idle_warning: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            keepalive_interval: Duration::from_secs(5),
            peer_timeout: Duration::from_secs(61),
            close_timeout: Duration::from_secs(5),
            idle_timeout: None,
            idle_warning: Duration::from_secs(60),
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
    /// Shows observers what the session carries.
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
    /// Shows observers what the session carries.
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
    /// Nothing went either way for [`Config::idle_timeout`]: the client was told and the
    /// session closed; the process is still running.
    Idle,
    /// The client broke the channel protocol (what it did, said): it was sent a status and
    /// a close frame saying so; the process is still running.
    ProtocolViolation(String),
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
    // The idle warning goes to the terminal: stdout with one, stderr without.
    let warn_on = if io.stderr.is_some() {
        codec::STDERR
    } else {
        codec::STDOUT
    };
    let mut sources = Vec::new();
    for (channel, reader) in [(codec::STDOUT, io.stdout), (codec::STDERR, io.stderr)] {
        if let Some(reader) = reader {
            sources.push(Source::new(channel, reader, MAX_CHUNK));
        }
    }
    // The "stream established" signal: an empty message on the lowest channel we write.
    let first = sources.first().map_or(codec::STATUS, |s| s.channel);
    let mut core = Core::new(ws, protocol, config, sources, io.tap, true);
    core.sinks[usize::from(codec::STDIN)] = io.stdin.map(Sink::new);
    core.outbox
        .push_back(Message::Binary(Bytes::from(vec![first])));
    let server = Server {
        exit: Some(io.exit),
        status: None,
        on_resize: io.on_resize,
        resize: ResizeDecoder::default(),
        drain_deadline: None,
        drained_at: 0,
        idle: config
            .idle_timeout
            .map(|timeout| Idle::new(timeout, config.idle_warning, warn_on)),
    };
    Pump::new(core, server).run().await
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
        .map(|r| Source::new(codec::STDIN, r, MAX_INPUT_CHUNK))
        .into_iter()
        .collect();
    let mut core = Core::new(ws, protocol, config, sources, io.tap, false);
    core.sinks[usize::from(codec::STDOUT)] = io.stdout.map(Sink::new);
    core.sinks[usize::from(codec::STDERR)] = io.stderr.map(Sink::new);
    let client = Client {
        resize: io.resize,
        status: None,
    };
    Pump::new(core, client).run().await
}
