//! Sessions at scale through one agent process (the real agent over the fake runtime,
//! `fake-agent`): the agent's resident memory with 1,000 idle sessions open, against the same
//! agent with none, and 100 sessions streaming at once (each echoing its own bytes back),
//! their aggregate throughput and that no byte is lost. Leaves its figures in
//! `target/kdbg-bench/sessions.json` for the report.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kdbg_api::DebugRequest;
use kdbg_benches::figures_dir;
use kdbg_relay::{ClientIo, Config, ExitStatus, attach, handshake};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const IDLE: usize = 1000;
const STREAMING: usize = 100;
const STREAM_BYTES: usize = 8 << 20;

/// A `fake-agent` process on a free port; stopped when dropped.
struct FakeAgent {
    child: Child,
    address: String,
}

impl FakeAgent {
    fn start(mode: &str) -> FakeAgent {
        let port = kdbg_testkit::free_port();
        let address = format!("127.0.0.1:{port}");
        let binary = std::env::current_exe()
            .unwrap()
            .with_file_name("fake-agent");
        let mut child = Command::new(binary)
            .args([&address, mode])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting fake-agent (cargo build --release -p kdbg-benches --bins)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        FakeAgent { child, address }
    }

    /// Resident memory, in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn request(stdin: bool) -> DebugRequest {
    let stdin = if stdin { "&stdin=1" } else { "" };
    DebugRequest::from_query(&format!(
        "target=docker://t1&image=tools:1&stdout=1&pullPolicy=Never{stdin}"
    ))
    .unwrap()
}

async fn open(
    address: &str,
    request: &DebugRequest,
) -> (kdbg_relay::WebSocketStream<TcpStream>, kdbg_relay::Protocol) {
    let socket = TcpStream::connect(address).await.unwrap();
    let url = format!("ws://{address}/api/v1/debug?{}", request.to_query());
    let (ws, protocol, _) = handshake::connect(url, socket).await.unwrap();
    (ws, protocol)
}

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

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Idle: the agent's RSS with 1,000 sessions open, each with its (fake) process.
        let agent = FakeAgent::start("linger");
        // One session first, so what every session shares (buffers, the runtime's threads)
        // is in the baseline, not in the per-session figure.
        let warm = open(&agent.address, &request(false)).await;
        let idle_session = |(ws, protocol)| async move {
            attach(ws, protocol, ClientIo::default(), &Config::default()).await
        };
        let warm_task = tokio::spawn(idle_session(warm));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = agent.rss_kib();
        let mut idle = Vec::with_capacity(IDLE);
        for _ in 0..IDLE {
            let opened = open(&agent.address, &request(false)).await;
            idle.push(tokio::spawn(idle_session(opened)));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = agent.rss_kib();
        let per_session = (after.saturating_sub(before)) as f64 / IDLE as f64;
        eprintln!(
            "idle: agent RSS {before} KiB with 1 session, {after} KiB with {} ({per_session:.1} KiB per session)",
            IDLE + 1
        );
        for task in idle {
            task.abort();
        }
        warm_task.abort();
        drop(agent);

        // Streaming: 100 sessions at once, each echoing 8 MiB of its own back.
        let agent = FakeAgent::start("echo");
        let all_open = Arc::new(tokio::sync::Barrier::new(STREAMING + 1));
        let mut streams = Vec::new();
        for i in 0..STREAMING {
            let (ws, protocol) = open(&agent.address, &request(true)).await;
            let all_open = all_open.clone();
            streams.push(tokio::spawn(async move {
                let sent = pattern(i, STREAM_BYTES);
                let (mut out_r, out_w) = tokio::io::duplex(64 * 1024);
                let reading = tokio::spawn(async move {
                    let mut got = Vec::with_capacity(STREAM_BYTES);
                    out_r.read_to_end(&mut got).await.unwrap();
                    got
                });
                all_open.wait().await;
                let io = ClientIo {
                    stdin: Some(Box::pin(std::io::Cursor::new(sent.clone()))),
                    stdout: Some(Box::pin(out_w)),
                    ..ClientIo::default()
                };
                let done = attach(ws, protocol, io, &Config::default()).await.unwrap();
                assert_eq!(done.outcome, ExitStatus::Code(0));
                let got = reading.await.unwrap();
                u64::from(got == sent) * got.len() as u64
            }));
        }
        all_open.wait().await;
        let start = Instant::now();
        let mut intact = 0u64;
        for stream in streams {
            intact += stream.await.unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        let total = (STREAMING * STREAM_BYTES) as u64;
        let lost = total - intact;
        let mib_s = total as f64 / secs / (1 << 20) as f64;
        eprintln!(
            "streaming: {STREAMING} sessions echoed {} MiB in {secs:.2} s ({mib_s:.0} MiB/s each way), {lost} bytes lost or wrong",
            total >> 20
        );
        let figures = serde_json::json!({
            "idle_sessions": IDLE, "rss_before_kib": before, "rss_after_kib": after,
            "rss_per_session_kib": per_session,
            "streaming_sessions": STREAMING, "stream_bytes": STREAM_BYTES,
            "streaming_secs": secs, "streaming_mib_s": mib_s, "bytes_lost": lost,
        });
        std::fs::create_dir_all(figures_dir()).unwrap();
        std::fs::write(figures_dir().join("sessions.json"), figures.to_string()).unwrap();
    });
}
