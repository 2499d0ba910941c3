//! Attaching to a Docker container over a raw connection to the engine's socket.
//!
//! bollard's attach stream does not end when the container exits (bollard issue #251), which
//! would leave every session waiting for output that never comes. The attach protocol is
//! simple, so we speak it ourselves, as the Docker CLI does: `POST /containers/{id}/attach`
//! with `Upgrade: tcp`, then the connection is the container's stdio. The engine closes it
//! when the container's output ends; closing our write half is the container's stdin EOF
//! (with `StdinOnce`).
//!
//! Without a tty, stdout and stderr arrive multiplexed in frames of an 8-byte header (stream
//! type, three zero bytes, big-endian length) and a payload; with a tty, as one raw stream.

use std::io;

use bytes::{Buf, BytesMut};
use kdbg_relay::session::{BoxRead, BoxWrite};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tracing::debug;

/// Capacity of the pipes that carry demultiplexed output.
const PIPE_CAPACITY: usize = 64 * 1024;
/// The longest answer header we accept from the engine.
const MAX_HEADER: usize = 16 * 1024;

/// The attached stdio of one container.
pub(crate) struct Attached {
    pub stdin: Option<BoxWrite>,
    pub stdout: Option<BoxRead>,
    pub stderr: Option<BoxRead>,
}

/// Attaches to container `id` through the engine at `socket`, speaking API `version`.
pub(crate) async fn attach(
    socket: &str,
    version: &str,
    id: &str,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
) -> io::Result<Attached> {
    let mut conn = UnixStream::connect(socket).await?;
    let request = format!(
        "POST /v{version}/containers/{id}/attach?stream=1&stdin={}&stdout={}&stderr={} HTTP/1.1\r\n\
         Host: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n",
        u8::from(stdin),
        u8::from(stdout),
        u8::from(stderr)
    );
    conn.write_all(request.as_bytes()).await?;
    let mut buf = BytesMut::with_capacity(4096);
    let header_end = loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            break end + 4;
        }
        if buf.len() > MAX_HEADER || conn.read_buf(&mut buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the engine closed the attach connection before answering",
            ));
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
        let message = serde_message(&body).unwrap_or_else(|| body.trim().to_owned());
        return Err(io::Error::other(format!(
            "the engine refused to attach (HTTP {code}): {message}"
        )));
    }
    let (read, write) = conn.into_split();
    let stdin: Option<BoxWrite> = stdin.then(|| Box::pin(write) as BoxWrite);
    // Bytes that came with the answer belong to the stream.
    let read = Box::pin(AsyncReadExt::chain(io::Cursor::new(buf.freeze()), read));
    if tty {
        return Ok(Attached {
            stdin,
            stdout: stdout.then_some(read as BoxRead),
            stderr: None,
        });
    }
    let (out_r, out_w) = tokio::io::simplex(PIPE_CAPACITY);
    let (err_r, err_w) = tokio::io::simplex(PIPE_CAPACITY);
    tokio::spawn(demultiplex(read, out_w, err_w));
    Ok(Attached {
        stdin,
        stdout: stdout.then(|| Box::pin(out_r) as BoxRead),
        stderr: stderr.then(|| Box::pin(err_r) as BoxRead),
    })
}

/// Splits Docker's multiplexed stream into stdout and stderr until it ends.
async fn demultiplex(
    mut from: impl AsyncRead + Unpin,
    mut out: tokio::io::WriteHalf<tokio::io::SimplexStream>,
    mut err: tokio::io::WriteHalf<tokio::io::SimplexStream>,
) {
    copy_frames(&mut from, &mut out, &mut err).await;
    // The halves of a simplex pipe end the reader's stream only when shut down explicitly.
    let _ = out.shutdown().await;
    let _ = err.shutdown().await;
}

async fn copy_frames(
    from: &mut (impl AsyncRead + Unpin),
    out: &mut tokio::io::WriteHalf<tokio::io::SimplexStream>,
    err: &mut tokio::io::WriteHalf<tokio::io::SimplexStream>,
) {
    let mut header = [0u8; 8];
    let mut payload = vec![0u8; 32 * 1024];
    loop {
        if from.read_exact(&mut header).await.is_err() {
            return;
        }
        let mut left = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
        while left > 0 {
            let want = left.min(payload.len());
            if from.read_exact(&mut payload[..want]).await.is_err() {
                return;
            }
            left -= want;
            let written = match header[0] {
                2 => err.write_all(&payload[..want]).await,
                // 1 is stdout; 0 (stdin) does not occur on output.
                _ => out.write_all(&payload[..want]).await,
            };
            if written.is_err() {
                debug!("output reader went away; dropping the rest");
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The `message` of the engine's JSON error body.
fn serde_message(body: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct EngineError {
        message: String,
    }
    let start = body.find('{')?;
    serde_json::from_str::<EngineError>(&body[start..])
        .ok()
        .map(|e| e.message)
}
