//! The scenarios the benchmarks time, each with its baseline, shared by the bench targets and
//! by the `report` binary that writes `benches/RESULTS.md`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use kdbg_relay::session::ExitFuture;
use kdbg_relay::{
    ClientIo, Config, ExitStatus, ObserverOptions, Protocol, ServerIo, Tap, WebSocketStream,
    attach, handshake, serve,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Where bench targets leave figures for the report (inside cargo's target directory).
pub fn figures_dir() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
        });
    target.join("kdbg-bench")
}

/// The runtime of the measuring end (the client, the reader). The other end runs on its own
/// thread with [`on_own_thread`]: in real use the plugin and the agent are separate processes,
/// and pinning each end to one thread keeps the scheduler's placement out of the figures.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs `make()`'s future to completion on a new thread with its own single-threaded runtime.
pub fn on_own_thread<F, Fut>(make: F) -> std::thread::JoinHandle<Fut::Output>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future,
    Fut::Output: Send + 'static,
{
    std::thread::spawn(move || runtime().block_on(make()))
}

/// A process's output: `total` bytes served from a static pattern in reads of `chunk` bytes
/// (the relay's counterpart of the baseline's `write_all` of `chunk`-byte buffers).
pub struct PatternReader {
    left: u64,
    chunk: usize,
    pattern: Vec<u8>,
}

impl PatternReader {
    /// `total` bytes in reads of at most `chunk`.
    pub fn new(total: u64, chunk: usize) -> Self {
        PatternReader {
            left: total,
            chunk,
            pattern: (0..chunk).map(|i| (i * 31 % 251) as u8).collect(),
        }
    }

    /// The same with text: log lines, as a terminal session prints (what recordings hold).
    pub fn text(total: u64, chunk: usize) -> Self {
        PatternReader {
            left: total,
            chunk,
            pattern: LOG_LINE.iter().copied().cycle().take(chunk).collect(),
        }
    }
}

/// One line of a program's output, as a terminal gets it.
pub const LOG_LINE: &[u8] =
    b"2026-11-30T07:12:03.123Z INFO served GET /api/v1/items/12345 status=200 in 3.2ms\r\n";

/// What watches a relayed session (in the agent: its recorder and its screen keeper).
#[derive(Debug, Clone)]
pub enum Observed {
    /// Nothing: no tap.
    Nothing,
    /// An observer drained by a task on the session's thread.
    Drained,
    /// The agent's recorder (asciicast v2, batched) writing to this file on its own thread.
    Recorded(std::path::PathBuf),
    /// The agent's screen keeper (a virtual terminal), with this many watchers drained by
    /// threads of their own.
    Screen(usize),
}

impl AsyncRead for PatternReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = buf
            .remaining()
            .min(self.chunk)
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        buf.put_slice(&self.pattern[..n]);
        self.left -= n as u64;
        Poll::Ready(Ok(()))
    }
}

/// A terminal that takes everything instantly.
pub struct Discard;

impl AsyncWrite for Discard {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

async fn loopback() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local addr");
    (listener, addr)
}

/// Baseline: `total` bytes over loopback TCP, written with `write_all` in `chunk`-byte pieces
/// and read into a 128 KiB buffer. Returns the time from first byte written to last read.
pub async fn raw_tcp(total: u64, chunk: usize) -> Duration {
    let (listener, addr) = loopback().await;
    let listener = listener.into_std().expect("std listener");
    let writer = on_own_thread(move || async move {
        let listener = TcpListener::from_std(listener).expect("listener");
        let (mut socket, _) = listener.accept().await.expect("accept");
        let data = vec![7u8; chunk];
        let mut left = total;
        while left > 0 {
            let n = chunk.min(left as usize);
            socket.write_all(&data[..n]).await.expect("write");
            left -= n as u64;
        }
    });
    let mut socket = TcpStream::connect(addr).await.expect("connect");
    let start = Instant::now();
    let mut buf = vec![0u8; 128 * 1024];
    let mut got = 0u64;
    while got < total {
        let n = socket.read(&mut buf).await.expect("read");
        assert!(n > 0, "baseline stream ended early");
        got += n as u64;
    }
    let elapsed = start.elapsed();
    writer.join().expect("writer");
    elapsed
}

/// The relay: a server session streams `total` bytes of a process's stdout (read in
/// `chunk`-byte pieces) to a client session writing to a terminal, over a loopback WebSocket,
/// optionally with an observer tap drained by its own task. Returns the time from the start of
/// the session to the client's end.
pub async fn relay_stdout(total: u64, chunk: usize, with_tap: bool) -> Duration {
    let observed = if with_tap {
        Observed::Drained
    } else {
        Observed::Nothing
    };
    relay_observed(PatternReader::new(total, chunk), total, observed)
        .await
        .0
}

/// The relay of [`relay_stdout`] moving `reader`'s `total` bytes, observed as `observed` says.
/// Returns the session's time, and the recorder's outcome when there is one (after it has
/// finished).
pub async fn relay_observed(
    reader: PatternReader,
    total: u64,
    observed: Observed,
) -> (Duration, Option<kdbg_agent::record::Outcome>) {
    let (recorder_tx, recorder_rx) = std::sync::mpsc::channel();
    let (server, ws, protocol) = server_session_on_own_thread(move || {
        let tap = observe(&observed, recorder_tx);
        ServerIo {
            stdin: None,
            stdout: Some(Box::pin(reader)),
            stderr: None,
            on_resize: None,
            exit: Box::pin(async { ExitStatus::Code(0) }),
            tap,
        }
    })
    .await;
    let start = Instant::now();
    let io = ClientIo {
        stdout: Some(Box::pin(Discard)),
        ..ClientIo::default()
    };
    let done = attach(ws, protocol, io, &Config::default())
        .await
        .expect("client session");
    let elapsed = start.elapsed();
    assert_eq!(done.stats.bytes_received, total, "relay lost bytes");
    server.join().expect("server thread");
    let outcome = recorder_rx
        .recv()
        .ok()
        .flatten()
        .map(|recorder: std::thread::JoinHandle<_>| recorder.join().expect("recorder"));
    (elapsed, outcome)
}

/// The tap `observed` asks for, with its observers started; a recorder's thread goes to
/// `recorder`.
fn observe(
    observed: &Observed,
    recorder: std::sync::mpsc::Sender<Option<std::thread::JoinHandle<kdbg_agent::record::Outcome>>>,
) -> Option<Tap> {
    let tap = match observed {
        Observed::Nothing => None,
        Observed::Drained => {
            let tap = Tap::new(None);
            let mut events = tap.subscribe(ObserverOptions::default());
            tokio::spawn(async move { while events.recv().await.is_some() {} });
            Some(tap)
        }
        Observed::Recorded(path) => {
            let tap = Tap::new(None);
            let file = std::fs::File::create(path).expect("recording file");
            let options = kdbg_agent::record::RecordOptions {
                format: kdbg_recordings::Format::V2,
                max_bytes: None,
                header: kdbg_recordings::Header::default(),
                tty: false,
                input: false,
                path: path.clone(),
            };
            let thread = kdbg_agent::record::spawn(&tap, file, options, |_| {}).expect("recorder");
            let _ = recorder.send(Some(thread));
            Some(tap)
        }
        Observed::Screen(watchers) => {
            let tap = Tap::new(Some(kdbg_relay::TerminalSize { cols: 80, rows: 24 }));
            let screen = kdbg_agent::watch::Screen::keep(&tap, kdbg_recordings::Header::default())
                .expect("screen keeper");
            for _ in 0..*watchers {
                let mut lines = screen.join().expect("a watcher joins");
                std::thread::spawn(move || while lines.blocking_recv().is_some() {});
            }
            Some(tap)
        }
    };
    let _ = recorder.send(None);
    tap
}

/// Starts a server session on its own thread over loopback, with the process `make_io`
/// builds there, and returns that thread and the connected client WebSocket.
async fn server_session_on_own_thread(
    make_io: impl FnOnce() -> ServerIo + Send + 'static,
) -> (
    std::thread::JoinHandle<()>,
    WebSocketStream<TcpStream>,
    Protocol,
) {
    let (listener, addr) = loopback().await;
    let listener = listener.into_std().expect("std listener");
    let server = on_own_thread(move || async move {
        let listener = TcpListener::from_std(listener).expect("listener");
        let (socket, _) = listener.accept().await.expect("accept");
        socket.set_nodelay(true).expect("nodelay");
        let (ws, protocol, _) = handshake::accept(socket).await.expect("accept ws");
        serve(ws, protocol, make_io(), &Config::default())
            .await
            .expect("server session");
    });
    let socket = TcpStream::connect(addr).await.expect("connect");
    socket.set_nodelay(true).expect("nodelay");
    let (ws, protocol, _) = handshake::connect(format!("ws://{addr}/"), socket)
        .await
        .expect("connect ws");
    (server, ws, protocol)
}

/// Keystroke round trips: the client sends one byte on stdin, the server's process echoes it,
/// the client sees it on stdout. Returns `n` round-trip times after `warmup` unmeasured ones.
pub async fn keystrokes(n: usize, warmup: usize) -> Vec<Duration> {
    let (server, ws, protocol) = server_session_on_own_thread(|| {
        let (stdin_w, mut stdin_r) = tokio::io::duplex(4096);
        let (mut stdout_w, stdout_r) = tokio::io::duplex(4096);
        // The process: an echo, like a shell echoing what is typed.
        let echo: ExitFuture = Box::pin(async move {
            let _ = tokio::io::copy(&mut stdin_r, &mut stdout_w).await;
            ExitStatus::Code(0)
        });
        ServerIo {
            stdin: Some(Box::pin(stdin_w)),
            stdout: Some(Box::pin(stdout_r)),
            stderr: None,
            on_resize: None,
            exit: echo,
            tap: None,
        }
    })
    .await;
    // The user's keyboard and screen.
    let (mut keyboard, stdin_r) = tokio::io::duplex(4096);
    let (stdout_w, mut screen) = tokio::io::duplex(4096);
    let client = tokio::spawn(async move {
        let io = ClientIo {
            stdin: Some(Box::pin(stdin_r)),
            stdout: Some(Box::pin(stdout_w)),
            ..ClientIo::default()
        };
        attach(ws, protocol, io, &Config::default()).await
    });
    let mut times = Vec::with_capacity(n);
    let mut byte = [0u8; 1];
    for i in 0..n + warmup {
        let start = Instant::now();
        keyboard.write_all(b"k").await.expect("type");
        screen.read_exact(&mut byte).await.expect("echo");
        if i >= warmup {
            times.push(start.elapsed());
        }
    }
    drop(keyboard);
    let _ = client.await;
    server.join().expect("server thread");
    times
}

/// The `q`-quantile (0..=1) of `times`.
pub fn quantile(times: &mut [Duration], q: f64) -> Duration {
    times.sort_unstable();
    let i = ((times.len() - 1) as f64 * q).round() as usize;
    times[i]
}
