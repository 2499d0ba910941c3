//! Helpers shared by the relay's integration tests: loopback WebSocket pairs, deterministic
//! random streams and checksumming sinks.
#![allow(dead_code, missing_docs)]

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use kdbg_relay::handshake;
use kdbg_relay::{Protocol, WebSocketStream};
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// A server and a client WebSocket connected over 127.0.0.1, after the real handshake.
pub struct Pair {
    pub server: WebSocketStream<TcpStream>,
    pub client: WebSocketStream<TcpStream>,
    pub protocol: Protocol,
    pub query: Option<String>,
}

pub async fn loopback_pair() -> Pair {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepting = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        handshake::accept(socket).await.unwrap()
    });
    let socket = TcpStream::connect(addr).await.unwrap();
    socket.set_nodelay(true).unwrap();
    let url = format!("ws://{addr}/exec?command=sh&stdin=true");
    let (client, client_protocol, _) = handshake::connect(url, socket).await.unwrap();
    let (server, protocol, uri) = accepting.await.unwrap();
    server.get_ref().set_nodelay(true).unwrap();
    assert_eq!(protocol, client_protocol);
    Pair {
        server,
        client,
        protocol,
        query: uri.query().map(str::to_owned),
    }
}

/// FNV-1a over a stream, one byte at a time: position-sensitive, so reordered or lost bytes
/// change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checksum {
    pub hash: u64,
    pub len: u64,
}

impl Default for Checksum {
    fn default() -> Self {
        Checksum {
            hash: 0xcbf2_9ce4_8422_2325,
            len: 0,
        }
    }
}

impl Checksum {
    pub fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.hash = (self.hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.len += data.len() as u64;
    }
}

/// `len` pseudo-random bytes, served in reads of at most `chunk`, checksummed as they go.
pub struct RandomReader {
    rng: SmallRng,
    left: u64,
    chunk: usize,
    pub sum: Checksum,
    /// Bytes produced so far, visible from outside.
    pub produced: Arc<AtomicU64>,
}

impl RandomReader {
    pub fn new(seed: u64, len: u64, chunk: usize) -> Self {
        RandomReader {
            rng: SmallRng::seed_from_u64(seed),
            left: len,
            chunk,
            sum: Checksum::default(),
            produced: Arc::default(),
        }
    }

    /// The checksum of the whole stream, computed without serving it.
    pub fn expected(seed: u64, len: u64) -> Checksum {
        let mut r = RandomReader::new(seed, len, 1 << 16);
        let mut buf = vec![0u8; 1 << 16];
        while r.left > 0 {
            let n = r.fill(&mut buf);
            r.sum.update(&buf[..n]);
        }
        r.sum
    }

    fn fill(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.chunk).min(self.left as usize);
        self.rng.fill_bytes(&mut out[..n]);
        self.left -= n as u64;
        n
    }
}

impl AsyncRead for RandomReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let n = this.fill(buf.initialize_unfilled());
        this.sum
            .update(&buf.initialized()[buf.filled().len()..buf.filled().len() + n]);
        buf.advance(n);
        this.produced.fetch_add(n as u64, Ordering::Relaxed);
        Poll::Ready(Ok(()))
    }
}

/// A sink that checksums what it is given and reports it when shut down.
pub struct HashingWriter {
    pub sum: Checksum,
    done: Option<tokio::sync::oneshot::Sender<Checksum>>,
}

impl HashingWriter {
    pub fn new() -> (Self, tokio::sync::oneshot::Receiver<Checksum>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (
            HashingWriter {
                sum: Checksum::default(),
                done: Some(tx),
            },
            rx,
        )
    }
}

impl AsyncWrite for HashingWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.sum.update(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let sum = self.sum;
        if let Some(tx) = self.done.take() {
            let _ = tx.send(sum);
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for HashingWriter {
    fn drop(&mut self) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(self.sum);
        }
    }
}
