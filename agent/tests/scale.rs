//! A thousand sessions at once through one agent (over the in-tree fake runtime, which echoes
//! what it is sent): every session gets exactly its own bytes back, and every container goes.

use std::sync::Arc;
use std::time::Duration;

use kdbg_agent::Settings;
use kdbg_api::DebugRequest;
use kdbg_relay::{ClientIo, Config, ExitStatus, attach, handshake};
use kdbg_runtimes::AnyRuntime;
use kdbg_runtimes::fake::{FakeRuntime, Script};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

const SESSIONS: usize = 1000;
const BYTES: usize = 64 * 1024;

/// `len` bytes that depend on `seed`: each session's are its own.
fn pattern(seed: usize, len: usize) -> Vec<u8> {
    let mut state = (seed as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_sessions_through_one_agent_lose_no_byte() {
    let fake = FakeRuntime::new(Script {
        echo_stdin: true,
        ..Script::default()
    });
    fake.add_target("t1", "running");
    fake.add_image("tools:1");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let settings = Settings {
        init_dir: std::env::temp_dir().join(format!("kdbg-scale-init-{}", std::process::id())),
        // Every session of the run at once, whoever and wherever: no policy limit.
        policy: kdbg_agent::config::Policy {
            max_sessions: kdbg_agent::config::MaxSessions::UNLIMITED,
            ..Default::default()
        },
        ..Settings::default()
    };
    kdbg_agent::spawn(AnyRuntime::Fake(fake.clone()), settings, listener).unwrap();
    let request = DebugRequest::from_query(
        "target=docker://t1&image=tools:1&stdin=1&stdout=1&pullPolicy=Never",
    )
    .unwrap();
    // Every session is open before any sends a byte: they are concurrent, not in turn.
    let all_open = Arc::new(tokio::sync::Barrier::new(SESSIONS));
    let sessions = (0..SESSIONS).map(|i| {
        let (address, request, all_open) = (address.clone(), request.clone(), all_open.clone());
        tokio::spawn(async move {
            let socket = TcpStream::connect(&address).await.unwrap();
            let url = format!("ws://{address}/api/v1/debug?{}", request.to_query());
            let (ws, protocol, _) = handshake::connect(url, socket).await.unwrap();
            all_open.wait().await;
            let sent = pattern(i, BYTES);
            let (mut out_r, out_w) = tokio::io::duplex(16 * 1024);
            let reading = tokio::spawn(async move {
                let mut got = Vec::with_capacity(BYTES);
                out_r.read_to_end(&mut got).await.unwrap();
                got
            });
            let io = ClientIo {
                stdin: Some(Box::pin(std::io::Cursor::new(sent.clone()))),
                stdout: Some(Box::pin(out_w)),
                ..ClientIo::default()
            };
            let done = attach(ws, protocol, io, &Config::default()).await.unwrap();
            assert_eq!(done.outcome, ExitStatus::Code(0), "session {i}");
            let got = reading.await.unwrap();
            assert!(
                got == sent,
                "session {i}: {} of {} bytes, or not its own",
                got.len(),
                sent.len()
            );
        })
    });
    for session in futures_util::future::join_all(sessions).await {
        session.unwrap();
    }
    for _ in 0..200 {
        if fake.containers().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} containers left", fake.containers().len());
}
