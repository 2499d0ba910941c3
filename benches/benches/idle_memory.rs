//! Memory held by idle sessions: heap bytes (buffers, tasks, sockets' user-space state)
//! counted by a global allocator, divided by the number of sessions. Kernel socket buffers are
//! not heap and are not counted.

// Counting heap bytes needs a global allocator, and implementing `GlobalAlloc` is `unsafe` by
// definition. The implementation only forwards to `System` with the caller's own arguments.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use kdbg_benches::{figures_dir, runtime};
use kdbg_relay::session::websocket_config;
use kdbg_relay::{
    ClientIo, Config, ExitStatus, Protocol, ServerIo, WebSocketStream, attach, serve,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::Role;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call forwards the caller's pointer and layout unchanged to `System`, which
// upholds `GlobalAlloc`'s contract; the counter has no effect on memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Sessions measured together.
const SESSIONS: usize = 200;

fn main() {
    let rt = runtime();
    let per_pair = rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Warm up the runtime's own structures so they are not charged to the sessions.
        let _ = open_idle_pair(&listener, addr).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let before = LIVE.load(Ordering::Relaxed);
        let mut keep = Vec::new();
        for _ in 0..SESSIONS {
            keep.push(open_idle_pair(&listener, addr).await);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = LIVE.load(Ordering::Relaxed);
        let per_pair = (after - before) as f64 / SESSIONS as f64;
        drop(keep);
        per_pair
    });
    let per_end = per_pair / 2.0;
    println!(
        "idle session memory: {:.1} KiB per pair (agent end + plugin end), {:.1} KiB per end",
        per_pair / 1024.0,
        per_end / 1024.0
    );
    if std::env::args().any(|a| a == "--bench") {
        let dir = figures_dir();
        std::fs::create_dir_all(&dir).expect("figures dir");
        let json = serde_json::json!({
            "sessions": SESSIONS,
            "per_pair_kib": per_pair / 1024.0,
            "per_end_kib": per_end / 1024.0,
        });
        std::fs::write(dir.join("idle_memory.json"), json.to_string()).expect("write figures");
    }
}

/// A server session and a client session over loopback TCP, with a keystroke echoed through
/// them, then left idle. The returned handles keep both alive.
async fn open_idle_pair(
    listener: &TcpListener,
    addr: std::net::SocketAddr,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::task::JoinHandle<()>,
    tokio::io::DuplexStream,
    tokio::io::DuplexStream,
) {
    let connecting = TcpStream::connect(addr);
    let ((server_socket, _), client_socket) =
        tokio::join!(async { listener.accept().await.unwrap() }, async {
            connecting.await.unwrap()
        });
    let config = Some(websocket_config());
    let server_ws = WebSocketStream::from_raw_socket(server_socket, Role::Server, config).await;
    let client_ws = WebSocketStream::from_raw_socket(client_socket, Role::Client, config).await;
    // The process: `cat`.
    let (stdin_w, mut stdin_r) = tokio::io::duplex(256);
    let (mut stdout_w, stdout_r) = tokio::io::duplex(256);
    let server = tokio::spawn(async move {
        let io = ServerIo {
            stdin: Some(Box::pin(stdin_w)),
            stdout: Some(Box::pin(stdout_r)),
            stderr: None,
            on_resize: None,
            exit: Box::pin(async move {
                let _ = tokio::io::copy(&mut stdin_r, &mut stdout_w).await;
                ExitStatus::Code(0)
            }),
            tap: None,
        };
        let _ = serve(server_ws, Protocol::V5, io, &Config::default()).await;
    });
    // The user's keyboard and screen.
    let (mut keyboard, stdin_r) = tokio::io::duplex(256);
    let (stdout_w, mut screen) = tokio::io::duplex(256);
    let client = tokio::spawn(async move {
        let io = ClientIo {
            stdin: Some(Box::pin(stdin_r)),
            stdout: Some(Box::pin(stdout_w)),
            ..ClientIo::default()
        };
        let _ = attach(client_ws, Protocol::V5, io, &Config::default()).await;
    });
    keyboard.write_all(b"k").await.unwrap();
    let mut echo = [0u8; 1];
    screen.read_exact(&mut echo).await.unwrap();
    (server, client, keyboard, screen)
}
