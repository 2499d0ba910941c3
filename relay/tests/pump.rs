//! The session pump over real loopback WebSockets (and in-memory pipes where the kernel's
//! buffers would blur what is measured).

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Checksum, HashingWriter, RandomReader, loopback_pair};
use futures_util::{SinkExt, StreamExt};
use kdbg_relay::observer::{EVENT_OVERHEAD, ObserverOptions};
use kdbg_relay::session::{BoxRead, BoxWrite, ExitFuture};
use kdbg_relay::status::Status;
use kdbg_relay::{
    ClientIo, Config, Error, EventKind, ExitStatus, Protocol, ServerEnd, ServerIo, Tap,
    TerminalSize, WebSocketStream, attach, serve,
};
use tokio::io::{AsyncReadExt, DuplexStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const MIB: u64 = 1024 * 1024;

fn boxed_read(r: impl tokio::io::AsyncRead + Send + 'static) -> Option<BoxRead> {
    Some(Box::pin(r))
}

fn boxed_write(w: impl tokio::io::AsyncWrite + Send + 'static) -> Option<BoxWrite> {
    Some(Box::pin(w))
}

fn exits_with(code: u8) -> ExitFuture {
    Box::pin(async move { ExitStatus::Code(code) })
}

fn server_io(exit: ExitFuture) -> ServerIo {
    ServerIo {
        stdin: None,
        stdout: None,
        stderr: None,
        on_resize: None,
        exit,
        tap: None,
    }
}

/// A fake process: `cat`. Its stdin is echoed to its stdout; it exits 0 when stdin ends.
fn cat_process() -> ServerIo {
    let (stdin_w, mut stdin_r) = tokio::io::duplex(64 * 1024);
    let (mut stdout_w, stdout_r) = tokio::io::duplex(64 * 1024);
    let process = tokio::spawn(async move {
        tokio::io::copy(&mut stdin_r, &mut stdout_w).await.unwrap();
        // Process exit closes its stdout.
        drop(stdout_w);
    });
    ServerIo {
        stdin: boxed_write(stdin_w),
        stdout: boxed_read(stdout_r),
        exit: Box::pin(async move {
            process.await.unwrap();
            ExitStatus::Code(0)
        }),
        ..server_io(exits_with(0))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_carries_256_mib_intact() {
    let pair = loopback_pair().await;
    let len = 256 * MIB;
    let seed = 11;
    let config = Config::default();
    let server = tokio::spawn(async move {
        let io = ServerIo {
            stdout: boxed_read(RandomReader::new(seed, len, 32 * 1024)),
            ..server_io(exits_with(0))
        };
        serve(pair.server, pair.protocol, io, &Config::default()).await
    });
    let (sink, sum) = HashingWriter::new();
    let io = ClientIo {
        stdout: boxed_write(sink),
        ..ClientIo::default()
    };
    let done = attach(pair.client, pair.protocol, io, &config)
        .await
        .unwrap();
    assert_eq!(done.outcome, ExitStatus::Code(0));
    assert_eq!(done.stats.bytes_received, len);
    let server = server.await.unwrap().unwrap();
    assert_eq!(server.outcome, ServerEnd::Completed(ExitStatus::Code(0)));
    assert_eq!(server.stats.bytes_sent, len);
    assert_eq!(sum.await.unwrap(), RandomReader::expected(seed, len));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_carries_256_mib_intact_then_half_closes() {
    let pair = loopback_pair().await;
    let len = 256 * MIB;
    let seed = 12;
    let (sink, sum) = HashingWriter::new();
    let (got_tx, got_rx) = tokio::sync::oneshot::channel::<Checksum>();
    let server = tokio::spawn(async move {
        // The process exits once its stdin is closed, reporting what it read as its exit code.
        let io = ServerIo {
            stdin: boxed_write(sink),
            exit: Box::pin(async move {
                let sum = sum.await.unwrap();
                let _ = got_tx.send(sum);
                ExitStatus::Code(3)
            }),
            ..server_io(exits_with(0))
        };
        serve(pair.server, pair.protocol, io, &Config::default()).await
    });
    let io = ClientIo {
        stdin: boxed_read(RandomReader::new(seed, len, 32 * 1024)),
        ..ClientIo::default()
    };
    let done = attach(pair.client, pair.protocol, io, &Config::default())
        .await
        .unwrap();
    assert_eq!(done.outcome, ExitStatus::Code(3));
    assert_eq!(done.stats.bytes_sent, len);
    assert_eq!(got_rx.await.unwrap(), RandomReader::expected(seed, len));
    let server = server.await.unwrap().unwrap();
    assert_eq!(server.stats.bytes_received, len);
}

#[tokio::test]
async fn echo_half_close_output_arrives_after_stdin_eof_then_status() {
    let pair = loopback_pair().await;
    assert_eq!(pair.protocol, Protocol::V5);
    let server = tokio::spawn(async move {
        serve(
            pair.server,
            pair.protocol,
            cat_process(),
            &Config::default(),
        )
        .await
    });
    let (mut out_r, out_w) = tokio::io::duplex(1024);
    let io = ClientIo {
        stdin: boxed_read(&b"hello\nworld\n"[..]),
        stdout: boxed_write(out_w),
        ..ClientIo::default()
    };
    let done = attach(pair.client, pair.protocol, io, &Config::default())
        .await
        .unwrap();
    assert_eq!(done.outcome, ExitStatus::Code(0));
    let mut out = String::new();
    out_r.read_to_string(&mut out).await.unwrap();
    assert_eq!(out, "hello\nworld\n");
    assert_eq!(
        server.await.unwrap().unwrap().outcome,
        ServerEnd::Completed(ExitStatus::Code(0))
    );
}

#[tokio::test]
async fn exit_codes_round_trip() {
    for code in [0u8, 1, 7, 255] {
        let pair = loopback_pair().await;
        let server = tokio::spawn(async move {
            serve(
                pair.server,
                pair.protocol,
                server_io(exits_with(code)),
                &Config::default(),
            )
            .await
        });
        let done = attach(
            pair.client,
            pair.protocol,
            ClientIo::default(),
            &Config::default(),
        )
        .await
        .unwrap();
        assert_eq!(done.outcome, ExitStatus::Code(code));
        server.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn server_failure_reaches_the_client() {
    let pair = loopback_pair().await;
    let failure = ExitStatus::Failure {
        reason: "InternalError".into(),
        message: "runtime lost the container".into(),
    };
    let sent = failure.clone();
    tokio::spawn(async move {
        let io = server_io(Box::pin(async move { sent }));
        serve(pair.server, pair.protocol, io, &Config::default()).await
    });
    let done = attach(
        pair.client,
        pair.protocol,
        ClientIo::default(),
        &Config::default(),
    )
    .await
    .unwrap();
    assert_eq!(done.outcome, failure);
}

#[tokio::test]
async fn stdout_and_stderr_stay_apart() {
    let pair = loopback_pair().await;
    tokio::spawn(async move {
        let io = ServerIo {
            stdout: boxed_read(&b"to stdout"[..]),
            stderr: boxed_read(&b"to stderr"[..]),
            ..server_io(exits_with(0))
        };
        serve(pair.server, pair.protocol, io, &Config::default()).await
    });
    let (mut out_r, out_w) = tokio::io::duplex(1024);
    let (mut err_r, err_w) = tokio::io::duplex(1024);
    let io = ClientIo {
        stdout: boxed_write(out_w),
        stderr: boxed_write(err_w),
        ..ClientIo::default()
    };
    attach(pair.client, pair.protocol, io, &Config::default())
        .await
        .unwrap();
    let (mut out, mut err) = (String::new(), String::new());
    out_r.read_to_string(&mut out).await.unwrap();
    err_r.read_to_string(&mut err).await.unwrap();
    assert_eq!((out.as_str(), err.as_str()), ("to stdout", "to stderr"));
}

#[tokio::test]
async fn resizes_reach_the_server_in_order() {
    let pair = loopback_pair().await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen_by_server = seen.clone();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let mut done_tx = Some(done_tx);
        let io = ServerIo {
            on_resize: Some(Box::new(move |size| {
                let mut seen = seen_by_server.lock().unwrap();
                seen.push(size);
                if seen.len() == 3 {
                    done_tx.take().unwrap().send(()).unwrap();
                }
            })),
            exit: Box::pin(async move {
                done_rx.await.unwrap();
                ExitStatus::Code(0)
            }),
            ..server_io(exits_with(0))
        };
        serve(pair.server, pair.protocol, io, &Config::default()).await
    });
    let sizes = vec![
        TerminalSize { cols: 80, rows: 24 },
        TerminalSize {
            cols: 120,
            rows: 40,
        },
        TerminalSize { cols: 10, rows: 5 },
    ];
    let tap = Tap::new(None);
    let mut events = tap.subscribe(ObserverOptions::default());
    let io = ClientIo {
        resize: Some(Box::pin(
            futures_util::stream::iter(sizes.clone()).chain(futures_util::stream::pending()),
        )),
        tap: Some(tap),
        ..ClientIo::default()
    };
    attach(pair.client, pair.protocol, io, &Config::default())
        .await
        .unwrap();
    server.await.unwrap().unwrap();
    assert_eq!(*seen.lock().unwrap(), sizes);
    let mut tapped = Vec::new();
    while let Some(event) = events.recv().await {
        if let EventKind::Resize(size) = event.kind {
            tapped.push(size);
        }
    }
    assert_eq!(tapped, sizes);
}

#[tokio::test]
async fn client_leaving_ends_the_server_session() {
    let pair = loopback_pair().await;
    let server = tokio::spawn(async move {
        // A process that never ends on its own.
        let io = ServerIo {
            stdout: boxed_read(tokio::io::repeat(b'y')),
            ..server_io(Box::pin(std::future::pending()))
        };
        serve(pair.server, pair.protocol, io, &Config::default()).await
    });
    let mut client = pair.client;
    // Read a little output, then close politely.
    let first = client.next().await.unwrap().unwrap();
    assert!(matches!(first, Message::Binary(_)));
    client.close(None).await.unwrap();
    // A polite client keeps reading until the server's close reply.
    tokio::spawn(async move { while let Some(Ok(_)) = client.next().await {} });
    let end = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server session ended")
        .unwrap()
        .unwrap();
    assert_eq!(end.outcome, ServerEnd::ClientLeft);
}

#[tokio::test]
async fn peer_vanishing_mid_stream_ends_the_session_with_an_error() {
    let pair = loopback_pair().await;
    let server = tokio::spawn(async move {
        let io = ServerIo {
            stdout: boxed_read(tokio::io::repeat(b'y')),
            ..server_io(Box::pin(std::future::pending()))
        };
        serve(pair.server, pair.protocol, io, &Config::default()).await
    });
    // The client reads some output, then its socket disappears without a close handshake.
    let mut client = pair.client;
    for _ in 0..10 {
        client.next().await.unwrap().unwrap();
    }
    drop(client);
    let result = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server noticed the vanished client without hanging")
        .unwrap();
    let err = result.unwrap_err();
    assert!(
        matches!(err, Error::PeerVanished | Error::Send(_)),
        "unexpected error: {err:?}"
    );
}

#[tokio::test]
async fn server_vanishing_mid_stream_is_an_error_for_the_client() {
    let pair = loopback_pair().await;
    let mut server = pair.server;
    tokio::spawn(async move {
        server
            .send(Message::Binary(bytes::Bytes::from_static(b"\x01partial")))
            .await
            .unwrap();
        // Gone without a status or a close.
        drop(server);
    });
    let (mut out_r, out_w) = tokio::io::duplex(1024);
    let io = ClientIo {
        stdout: boxed_write(out_w),
        ..ClientIo::default()
    };
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        attach(pair.client, pair.protocol, io, &Config::default()),
    )
    .await
    .expect("client noticed without hanging")
    .unwrap_err();
    assert!(matches!(err, Error::PeerVanished), "{err:?}");
    let mut out = Vec::new();
    out_r.read_to_end(&mut out).await.unwrap();
    assert_eq!(out, b"partial");
}

/// Two raw WebSockets joined by an in-memory pipe; tokio's paused clock drives the timers.
async fn duplex_pair(
    capacity: usize,
) -> (WebSocketStream<DuplexStream>, WebSocketStream<DuplexStream>) {
    let (a, b) = tokio::io::duplex(capacity);
    let config = Some(kdbg_relay::session::websocket_config());
    let server = WebSocketStream::from_raw_socket(a, Role::Server, config).await;
    let client = WebSocketStream::from_raw_socket(b, Role::Client, config).await;
    (server, client)
}

#[tokio::test(start_paused = true)]
async fn silent_peer_is_declared_dead_after_the_timeout() {
    let (server, client) = duplex_pair(1024 * 1024).await;
    let started = tokio::time::Instant::now();
    let io = server_io(Box::pin(std::future::pending()));
    let err = serve(server, Protocol::V5, io, &Config::default())
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(err, Error::PeerTimeout(_)), "{err:?}");
    // Declared dead at the first keepalive tick past 61 s of silence.
    assert!(
        waited >= Duration::from_secs(61) && waited <= Duration::from_secs(66),
        "declared dead after {waited:?}"
    );
    assert!(err.to_string().contains("declared dead"));
    drop(client);
}

#[tokio::test(start_paused = true)]
async fn a_peer_answering_pings_stays_alive_while_idle() {
    let (server, client) = duplex_pair(1024 * 1024).await;
    let server = tokio::spawn(async move {
        let io = server_io(Box::pin(async {
            // Idle for five minutes, far past the peer timeout.
            tokio::time::sleep(Duration::from_secs(300)).await;
            ExitStatus::Code(0)
        }));
        serve(server, Protocol::V5, io, &Config::default()).await
    });
    let done = attach(
        client,
        Protocol::V5,
        ClientIo::default(),
        &Config::default(),
    )
    .await
    .unwrap();
    assert_eq!(done.outcome, ExitStatus::Code(0));
    assert_eq!(
        server.await.unwrap().unwrap().outcome,
        ServerEnd::Completed(ExitStatus::Code(0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_keeps_buffering_bounded() {
    // In-memory transport, so the kernel's socket buffers do not hide what the relay holds.
    let (server, client) = duplex_pair(64 * 1024).await;
    let source = RandomReader::new(5, 64 * MIB, 32 * 1024);
    let produced = source.produced.clone();
    tokio::spawn(async move {
        let io = ServerIo {
            stdout: boxed_read(source),
            ..server_io(Box::pin(std::future::pending()))
        };
        serve(server, Protocol::V5, io, &Config::default()).await
    });
    // The user's terminal: a 4 KiB pipe nobody reads for a while.
    let (mut terminal, out_w) = tokio::io::duplex(4 * 1024);
    let io = ClientIo {
        stdout: boxed_write(out_w),
        ..ClientIo::default()
    };
    tokio::spawn(async move { attach(client, Protocol::V5, io, &Config::default()).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let buffered = produced.load(Ordering::Relaxed);
    // Everything produced is somewhere between the source and the stalled reader: one read
    // chunk and tungstenite's write buffer on the server, the 64 KiB pipe, one message on the
    // client, and the 4 KiB terminal pipe.
    let bound = 32 * 1024 + (128 * 1024 + 32 * 1024) + 64 * 1024 + 2 * 33 * 1024 + 4 * 1024;
    assert!(buffered > 0, "nothing flowed");
    assert!(
        buffered <= bound as u64,
        "{buffered} bytes buffered while the consumer stalled (bound {bound})"
    );
    // Unstalled, the stream flows again.
    let mut sink = vec![0u8; 1024 * 1024];
    let mut read = 0usize;
    while read < 4 * 1024 * 1024 {
        read += terminal.read(&mut sink).await.unwrap();
    }
    assert!(produced.load(Ordering::Relaxed) >= 4 * MIB);
}

/// A session whose process prints `len` bytes and ends when `exit` does, carried to a
/// reader that takes nothing for `away`, then reads it all: the reader must get every byte,
/// then exit code 0.
async fn reader_away(config: Config, len: usize, exit: ExitFuture, away: Duration) {
    let (server, client) = duplex_pair(64 * 1024).await;
    reader_away_on(server, client, config, len, exit, away).await;
}

/// [`reader_away`] over the given WebSockets.
async fn reader_away_on<S, C>(
    server: WebSocketStream<S>,
    client: WebSocketStream<C>,
    config: Config,
    len: usize,
    exit: ExitFuture,
    away: Duration,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let output: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let expected = output.clone();
    let served = {
        let config = config.clone();
        tokio::spawn(async move {
            let io = ServerIo {
                stdout: boxed_read(std::io::Cursor::new(output)),
                ..server_io(exit)
            };
            serve(server, Protocol::V5, io, &config).await
        })
    };
    let (mut terminal, out_w) = tokio::io::duplex(4 * 1024);
    let io = ClientIo {
        stdout: boxed_write(out_w),
        ..ClientIo::default()
    };
    let attached = tokio::spawn(async move { attach(client, Protocol::V5, io, &config).await });
    tokio::time::sleep(away).await;
    let mut got = Vec::new();
    terminal.read_to_end(&mut got).await.unwrap();
    assert_eq!(got.len(), expected.len(), "bytes the user got");
    assert!(got == expected);
    let done = attached.await.unwrap().unwrap();
    assert_eq!(done.outcome, ExitStatus::Code(0));
    served.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_a_slow_reader_has_not_taken_yet_outlives_the_drain_time() {
    // `cmd | less`, nobody paging: the process has exited with its last output still between
    // it and the user. That output waits for the reader, however long past the drain time
    // (which is for output that stopped coming, not for output the reader has not taken).
    let config = Config {
        close_timeout: Duration::from_millis(200),
        ..Config::default()
    };
    // The process has exited; its output has not gone anywhere yet. Five drain times away.
    reader_away(
        config,
        MIB as usize,
        exits_with(0),
        Duration::from_millis(1000),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_read_from_an_exited_process_but_not_yet_sent_outlives_the_close_time() {
    // The same pager, with less output: the server has read all of it from the process (so
    // the drain is over) and holds the tail, then the status and the close frame, behind a
    // transport the reader has not emptied. The close handshake's time starts only once they
    // are sent; before that, they wait for the reader as the output did. (Pings at half the
    // close time, so the close handshake's own first deadline is the close time.)
    let config = Config {
        close_timeout: Duration::from_millis(200),
        keepalive_interval: Duration::from_millis(100),
        ..Config::default()
    };
    for len in [150 * 1024, 200 * 1024, 250 * 1024] {
        reader_away(
            config.clone(),
            len,
            exits_with(0),
            Duration::from_millis(1000),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_reader_that_still_pings_keeps_its_closing_session() {
    // Over real TCP: everything, the status and the close frame are in the kernel's buffers,
    // and the reader's client, paused, still pings. Were the server to give up on the close
    // handshake and close its socket, the next ping would meet a closed socket, and the
    // kernel's reset would throw away what the client had not read yet. A peer that is heard
    // is alive: the server waits for its close reply. The default timing's ratio: the
    // reader's first ping comes one close timeout after the session began.
    let config = Config {
        keepalive_interval: Duration::from_millis(200),
        close_timeout: Duration::from_millis(200),
        ..Config::default()
    };
    for len in [64 * 1024, 150 * 1024] {
        let pair = loopback_pair().await;
        reader_away_on(
            pair.server,
            pair.client,
            config.clone(),
            len,
            exits_with(0),
            Duration::from_millis(1000),
        )
        .await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_takes_nothing_is_ended_by_the_idle_timeout() {
    // What waits for a reader waits for a live one: a peer whose connection stays open but
    // that takes nothing at all (and answers no ping) is ended by the idle timeout, with the
    // close handshake it never finishes given one more.
    let (server, client) = duplex_pair(64 * 1024).await;
    let config = Config {
        close_timeout: Duration::from_millis(200),
        idle_timeout: Some(Duration::from_secs(10)),
        ..Config::default()
    };
    let io = ServerIo {
        stdout: boxed_read(std::io::Cursor::new(vec![7u8; MIB as usize])),
        ..server_io(exits_with(0))
    };
    let started = tokio::time::Instant::now();
    let end = tokio::time::timeout(
        Duration::from_secs(120),
        serve(server, Protocol::V5, io, &config),
    )
    .await
    .expect("the session ended on its own")
    .unwrap();
    let waited = started.elapsed();
    assert_eq!(end.outcome, ServerEnd::Idle);
    assert!(
        waited >= Duration::from_secs(20) && waited <= Duration::from_secs(25),
        "ended after {waited:?}"
    );
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_away_longer_than_the_peer_timeout_is_not_declared_dead() {
    // A pager read for minutes: the client answers no pings while its terminal takes
    // nothing, and the server's output waits. That is not a dead peer.
    let config = Config {
        keepalive_interval: Duration::from_millis(50),
        peer_timeout: Duration::from_millis(300),
        ..Config::default()
    };
    // The process runs through the reader's absence, five peer timeouts.
    let exit: ExitFuture = Box::pin(async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        ExitStatus::Code(0)
    });
    reader_away(config, 2 * MIB as usize, exit, Duration::from_millis(1500)).await;
}

#[tokio::test]
async fn observer_sees_output_and_a_slow_one_is_dropped_without_harm() {
    // Room for everything, and room for the start and the first read (4 KiB) only.
    let first_read = EVENT_OVERHEAD + EVENT_OVERHEAD + 4 * 1024;
    for budget in [64 << 20, first_read] {
        let pair = loopback_pair().await;
        let tap = Tap::new(None);
        let mut events = tap.subscribe(ObserverOptions {
            max_bytes: budget,
            input: false,
        });
        let len = 4 * MIB;
        let server = tokio::spawn(async move {
            let io = ServerIo {
                stdout: boxed_read(RandomReader::new(9, len, 32 * 1024)),
                tap: Some(tap),
                ..server_io(exits_with(4))
            };
            serve(pair.server, pair.protocol, io, &Config::default()).await
        });
        let (sink, sum) = HashingWriter::new();
        let io = ClientIo {
            stdout: boxed_write(sink),
            ..ClientIo::default()
        };
        let done = attach(pair.client, pair.protocol, io, &Config::default())
            .await
            .unwrap();
        assert_eq!(done.outcome, ExitStatus::Code(4));
        assert_eq!(sum.await.unwrap(), RandomReader::expected(9, len));
        server.await.unwrap().unwrap();
        // Nobody read the tap during the session.
        let mut tapped = Checksum::default();
        let mut exit = None;
        let mut last = None;
        while let Some(event) = events.recv().await {
            match &event.kind {
                EventKind::Output { data, .. } => tapped.update(data),
                EventKind::Exit(status) => exit = Some(status.clone()),
                _ => {}
            }
            last = Some(event.kind);
        }
        if budget == first_read {
            // Too slow: dropped after the first read, told so, the session unharmed.
            assert_eq!(tapped.len, 4 * 1024);
            assert_eq!(exit, None);
            assert_eq!(last, Some(EventKind::Dropped));
        } else {
            assert_eq!(tapped, RandomReader::expected(9, len));
            assert_eq!(exit, Some(ExitStatus::Code(4)));
        }
    }
}

#[tokio::test]
async fn observers_see_input_only_when_they_ask() {
    let pair = loopback_pair().await;
    let tap = Tap::new(Some(TerminalSize { cols: 80, rows: 24 }));
    let keen = tap.subscribe(ObserverOptions {
        input: true,
        ..ObserverOptions::default()
    });
    let quiet = tap.subscribe(ObserverOptions::default());
    let (stdin_w, mut stdin_r) = tokio::io::duplex(1024);
    let server = tokio::spawn(async move {
        let io = ServerIo {
            stdin: boxed_write(stdin_w),
            exit: Box::pin(async move {
                let mut typed = Vec::new();
                stdin_r.read_to_end(&mut typed).await.unwrap();
                ExitStatus::Code(0)
            }),
            tap: Some(tap),
            ..server_io(exits_with(0))
        };
        serve(pair.server, pair.protocol, io, &Config::default()).await
    });
    let io = ClientIo {
        stdin: boxed_read(&b"password\n"[..]),
        ..ClientIo::default()
    };
    attach(pair.client, pair.protocol, io, &Config::default())
        .await
        .unwrap();
    server.await.unwrap().unwrap();
    let kinds = |mut o: kdbg_relay::observer::Observer| async move {
        let mut kinds = Vec::new();
        while let Some(e) = o.recv().await {
            kinds.push(e.kind);
        }
        kinds
    };
    let start = EventKind::Start {
        size: Some(TerminalSize { cols: 80, rows: 24 }),
    };
    let keen = kinds(keen).await;
    assert_eq!(keen[0], start);
    assert!(keen.contains(&EventKind::Input(bytes::Bytes::from_static(b"password\n"))));
    let quiet = kinds(quiet).await;
    assert_eq!(quiet[0], start);
    assert!(!quiet.iter().any(|k| matches!(k, EventKind::Input(_))));
}

#[tokio::test]
async fn a_text_message_is_answered_with_a_status_and_a_close_frame() {
    let pair = loopback_pair().await;
    let mut client = pair.client;
    client.send(Message::text("hello")).await.unwrap();
    let io = server_io(Box::pin(std::future::pending()));
    let server =
        tokio::spawn(
            async move { serve(pair.server, pair.protocol, io, &Config::default()).await },
        );
    // The client learns why: a Status on channel 3, then a close frame with code 1003.
    let mut status = None;
    let mut close = None;
    while let Some(Ok(message)) = client.next().await {
        match message {
            // (An empty message on channel 3 is the "stream established" signal.)
            Message::Binary(data) if data.first() == Some(&3) && data.len() > 1 => {
                status = Some(serde_json::from_slice::<Status>(&data[1..]).unwrap());
            }
            Message::Close(frame) => {
                close = frame;
                break;
            }
            _ => {}
        }
    }
    let close = close.expect("a close frame");
    assert_eq!(close.code, CloseCode::Unsupported);
    assert!(close.reason.contains("text message"), "{}", close.reason);
    let status = status.expect("a status");
    assert_eq!(status.reason.as_deref(), Some("BadRequest"));
    assert!(
        status
            .message
            .as_deref()
            .unwrap()
            .contains("broke the channel protocol"),
        "{status:?}"
    );
    let done = server.await.unwrap().unwrap();
    assert!(
        matches!(&done.outcome, ServerEnd::ProtocolViolation(why) if why.contains("text message")),
        "{:?}",
        done.outcome
    );
}

#[tokio::test]
async fn unknown_channels_are_dropped_and_counted() {
    let pair = loopback_pair().await;
    let mut client = pair.client;
    let (stdin_w, mut stdin_r) = tokio::io::duplex(1024);
    let server = tokio::spawn(async move {
        let io = ServerIo {
            stdin: boxed_write(stdin_w),
            exit: Box::pin(async move {
                let mut got = Vec::new();
                stdin_r.read_to_end(&mut got).await.unwrap();
                assert_eq!(got, b"ab");
                ExitStatus::Code(0)
            }),
            ..server_io(exits_with(0))
        };
        serve(pair.server, pair.protocol, io, &Config::default()).await
    });
    for wire in [
        &b"\x00a"[..],
        b"\x09junk",
        b"\x07",
        b"\x01wrong way",
        b"\x00b",
        b"\xff\x00",
    ] {
        client
            .send(Message::Binary(bytes::Bytes::copy_from_slice(wire)))
            .await
            .unwrap();
    }
    while let Some(message) = client.next().await {
        if message.is_err() {
            break;
        }
    }
    let done = server.await.unwrap().unwrap();
    assert_eq!(done.stats.unknown_frames, 1);
    assert_eq!(done.stats.ignored_frames, 1);
    assert_eq!(done.stats.bytes_received, 2);
}

#[tokio::test]
async fn stdin_after_the_process_closed_it_is_dropped_not_fatal() {
    let pair = loopback_pair().await;
    let (stdin_w, stdin_r) = tokio::io::duplex(16);
    drop(stdin_r);
    tokio::spawn(async move {
        let io = ServerIo {
            stdin: boxed_write(stdin_w),
            stdout: boxed_read(&b"done"[..]),
            exit: Box::pin(async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                ExitStatus::Code(0)
            }),
            ..server_io(exits_with(0))
        };
        serve(pair.server, pair.protocol, io, &Config::default()).await
    });
    let (mut out_r, out_w) = tokio::io::duplex(1024);
    let io = ClientIo {
        stdin: boxed_read(&b"ignored input"[..]),
        stdout: boxed_write(out_w),
        ..ClientIo::default()
    };
    let done = attach(pair.client, pair.protocol, io, &Config::default())
        .await
        .unwrap();
    assert_eq!(done.outcome, ExitStatus::Code(0));
    let mut out = Vec::new();
    out_r.read_to_end(&mut out).await.unwrap();
    assert_eq!(out, b"done");
}

#[tokio::test]
async fn client_stdout_gone_is_reported_as_a_local_write_error() {
    let pair = loopback_pair().await;
    tokio::spawn(async move {
        let io = ServerIo {
            stdout: boxed_read(tokio::io::repeat(b'y')),
            ..server_io(Box::pin(std::future::pending()))
        };
        serve(pair.server, pair.protocol, io, &Config::default()).await
    });
    let (out_r, out_w) = tokio::io::duplex(1024);
    drop(out_r);
    let io = ClientIo {
        stdout: boxed_write(out_w),
        ..ClientIo::default()
    };
    let err = attach(pair.client, pair.protocol, io, &Config::default())
        .await
        .unwrap_err();
    assert_eq!(
        err.local_io().map(std::io::Error::kind),
        Some(std::io::ErrorKind::BrokenPipe)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_and_pongs_interleave_with_bulk_output_without_corrupting_it() {
    // Both ends ping every millisecond while 64 MiB flows: control frames written by
    // tungstenite and data frames written directly must never split each other.
    let chatty = Config {
        keepalive_interval: Duration::from_millis(1),
        ..Config::default()
    };
    // A small in-memory pipe as the connection: nearly every data frame is written in pieces,
    // so a control frame slipped in at the wrong moment would land inside one.
    let (server_ws, client_ws) = duplex_pair(8 * 1024).await;
    let len = 16 * MIB;
    let server_config = chatty.clone();
    let server = tokio::spawn(async move {
        let io = ServerIo {
            stdout: boxed_read(RandomReader::new(21, len, 32 * 1024)),
            ..server_io(exits_with(0))
        };
        serve(server_ws, Protocol::V5, io, &server_config).await
    });
    let (sink, sum) = HashingWriter::new();
    let io = ClientIo {
        stdout: boxed_write(sink),
        // A slow trickle of input keeps the server reading (and answering pings) mid-stream.
        stdin: boxed_read(RandomReader::new(22, 1024 * 1024, 64)),
        ..ClientIo::default()
    };
    let done = attach(client_ws, Protocol::V5, io, &chatty).await.unwrap();
    assert_eq!(done.outcome, ExitStatus::Code(0));
    assert_eq!(sum.await.unwrap(), RandomReader::expected(21, len));
    server.await.unwrap().unwrap();
}
