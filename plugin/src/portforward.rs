//! One port of a pod, forwarded through the API server (`pods/NAME/portforward`, WebSocket,
//! `v4.channel.k8s.io`) as a byte stream: data on channel 0, the server's error on channel 1,
//! the first message on each the port, 2 bytes little-endian.
//!
//! Why not kube's `Portforwarder`: it hands every message between three tasks and through a
//! duplex pipe, and it can lose the server's error. When the server refuses (nothing listens on
//! the port in the pod) it sends the error, then closes; if a write of ours was queued first,
//! kube's loop fails on that write and drops the error, and the user saw "connection closed
//! before message completed" with no reason. Here the messages are read in order by whoever
//! reads the stream, so the error is always read before the end; a write the server can no
//! longer take is dropped until the read side has said why.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// The data channel of the one forwarded port.
const DATA: u8 = 0;
/// Its error channel.
const ERROR: u8 = 1;

/// What the port-forward's error channel said, if it said anything. It is set before the read
/// side ends, so whoever sees the stream end (or fail) can read it at once.
pub type Said = watch::Receiver<Option<String>>;

/// A forwarded port as a stream.
pub struct PortForward<S> {
    ws: WebSocketStream<S>,
    port: u16,
    /// Data read but not yet taken.
    pending: Bytes,
    /// Whether each channel's first message (the port) came.
    data_open: bool,
    error_open: bool,
    /// The read side ended (close, error, or the server's error message).
    ended: bool,
    /// A write failed: later writes are dropped until the read side ends.
    write_failed: bool,
    said: watch::Sender<Option<String>>,
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> PortForward<S> {
    /// The stream of `port` over `ws`, an upgraded `pods/NAME/portforward?ports=PORT`; and where
    /// its error channel reports.
    pub fn new(ws: WebSocketStream<S>, port: u16) -> (PortForward<S>, Said) {
        let (said, receiver) = watch::channel(None);
        let stream = PortForward {
            ws,
            port,
            pending: Bytes::new(),
            data_open: false,
            error_open: false,
            ended: false,
            write_failed: false,
            said,
        };
        (stream, receiver)
    }

    /// Ends the read side, with what the server said if it said something.
    fn end(&mut self, error: Option<String>) {
        self.ended = true;
        if error.is_some() {
            self.said.send_replace(error);
        }
    }

    /// The first message of a channel must be its port.
    fn check_port(&self, channel: u8, payload: &[u8]) -> io::Result<()> {
        if payload == self.port.to_le_bytes() {
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the port-forward's channel {channel} began with {payload:?}, not port {} (2 bytes, little-endian)",
                self.port
            ),
        ))
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> AsyncRead for PortForward<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.ended {
                return Poll::Ready(Ok(()));
            }
            let message = match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                None | Some(Ok(Message::Close(_))) => {
                    this.end(None);
                    continue;
                }
                Some(Err(e)) => {
                    this.end(None);
                    return Poll::Ready(Err(io::Error::other(e)));
                }
                Some(Ok(Message::Binary(message))) => message,
                // Pings are answered by tungstenite; text is not part of the protocol.
                Some(Ok(_)) => continue,
            };
            let Some((&channel, payload)) = message.split_first() else {
                continue;
            };
            match channel {
                DATA if !this.data_open => {
                    this.check_port(channel, payload)?;
                    this.data_open = true;
                }
                DATA => this.pending = message.slice(1..),
                ERROR if !this.error_open => {
                    this.check_port(channel, payload)?;
                    this.error_open = true;
                }
                // The port is unusable after an error: it ends the stream.
                ERROR => {
                    let text = String::from_utf8_lossy(payload).trim().to_owned();
                    this.end(Some(text).filter(|t| !t.is_empty()));
                }
                _ => {}
            }
        }
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> AsyncWrite for PortForward<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.write_failed {
            // Dropped: the server has stopped taking data, and the read side will say why.
            return if this.ended {
                Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
            } else {
                Poll::Ready(Ok(buf.len()))
            };
        }
        let mut ws = Pin::new(&mut this.ws);
        if let Err(e) = ready!(ws.as_mut().poll_ready(cx)) {
            return Poll::Ready(this.failed_write(buf.len(), e));
        }
        let mut message = Vec::with_capacity(buf.len() + 1);
        message.push(DATA);
        message.extend_from_slice(buf);
        if let Err(e) = ws.as_mut().start_send(Message::binary(message)) {
            return Poll::Ready(this.failed_write(buf.len(), e));
        }
        // Sent on its way now; a flush that cannot finish yet is finished by the next write
        // or flush.
        if let Poll::Ready(Err(e)) = ws.poll_flush(cx) {
            return Poll::Ready(this.failed_write(buf.len(), e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.write_failed {
            return Poll::Ready(Ok(()));
        }
        match ready!(Pin::new(&mut this.ws).poll_flush(cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(this.failed_write(0, e).map(|_| ())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.write_failed {
            return Poll::Ready(Ok(()));
        }
        match ready!(Pin::new(&mut this.ws).poll_close(cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(this.failed_write(0, e).map(|_| ())),
        }
    }
}

impl<S> PortForward<S> {
    /// A write the WebSocket refused: an error once the read side has ended (it said why),
    /// else the bytes are dropped so that the reader goes on to what the server said.
    fn failed_write(
        &mut self,
        n: usize,
        e: tokio_tungstenite::tungstenite::Error,
    ) -> io::Result<usize> {
        if self.ended {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, e));
        }
        tracing::debug!(error = %e, "a write to the port-forward failed; reading what it said");
        self.write_failed = true;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// A port-forward client and the server's side of its WebSocket.
    async fn pair(port: u16) -> (PortForward<tokio::io::DuplexStream>, Said, WsServer) {
        let (a, b) = tokio::io::duplex(256 * 1024);
        let client = WebSocketStream::from_raw_socket(a, Role::Client, None).await;
        let server = WebSocketStream::from_raw_socket(b, Role::Server, None).await;
        let (stream, said) = PortForward::new(client, port);
        (stream, said, server)
    }

    type WsServer = WebSocketStream<tokio::io::DuplexStream>;

    fn on(channel: u8, payload: &[u8]) -> Message {
        let mut message = vec![channel];
        message.extend_from_slice(payload);
        Message::binary(message)
    }

    #[tokio::test]
    async fn data_flows_both_ways_after_the_port_prefixes() {
        let (mut stream, said, mut server) = pair(10027).await;
        server.send(on(0, &10027u16.to_le_bytes())).await.unwrap();
        server.send(on(1, &10027u16.to_le_bytes())).await.unwrap();
        server.send(on(0, b"hello ")).await.unwrap();
        server.send(on(0, b"world")).await.unwrap();
        let mut got = [0u8; 11];
        stream.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello world");

        stream.write_all(b"ping").await.unwrap();
        stream.flush().await.unwrap();
        let Some(Ok(Message::Binary(sent))) = server.next().await else {
            panic!("no data message");
        };
        assert_eq!(&sent[..], b"\0ping");

        server.close(None).await.unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        assert_eq!(*said.borrow(), None, "closed without an error");
    }

    #[tokio::test]
    async fn the_servers_error_is_kept_even_when_a_write_was_first() {
        let (mut stream, said, mut server) = pair(8080).await;
        server.send(on(0, &8080u16.to_le_bytes())).await.unwrap();
        server.send(on(1, &8080u16.to_le_bytes())).await.unwrap();
        server
            .send(on(
                1,
                b"error forwarding port 8080 to pod: connection refused",
            ))
            .await
            .unwrap();
        server.close(None).await.unwrap();
        drop(server);
        // The client writes its request after the server has gone: the write is dropped.
        stream.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let _ = stream.flush().await;
        assert!(
            stream.write_failed,
            "the write after the server left failed, quietly"
        );
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        assert_eq!(
            said.borrow().as_deref(),
            Some("error forwarding port 8080 to pod: connection refused")
        );
        // Once the read side has said why, writes fail.
        assert!(stream.write_all(b"more").await.is_err());
    }

    #[tokio::test]
    async fn a_wrong_port_prefix_is_an_error_naming_it() {
        let (mut stream, _said, mut server) = pair(10027).await;
        server.send(on(0, &80u16.to_le_bytes())).await.unwrap();
        let mut buf = [0u8; 4];
        let e = stream.read(&mut buf).await.unwrap_err();
        assert!(e.to_string().contains("not port 10027"), "{e}");
    }
}
