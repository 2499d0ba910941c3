//! `pods/{name}/portforward` over WebSocket, as the API server and kubelet serve it to kube-rs
//! (`v4.channel.k8s.io`): for the i-th port of `?ports=`, channel 2i carries data and 2i+1
//! errors; the first message on each channel is the port, 2 bytes little-endian. The stand-in
//! connects to the pod's IP and port, as the kubelet connects inside the pod's network.
//! kubectl's SPDY, over a WebSocket or an upgrade of its own, is in [`super::spdy`].

use futures_util::{SinkExt, StreamExt};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

/// The subprotocols a port-forward client may offer; the stand-in speaks the channel one.
pub const PROTOCOL: &str = "v4.channel.k8s.io";

/// The ports of a port-forward request's query.
pub fn ports(query: &str) -> Vec<u16> {
    form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == "ports")
        .flat_map(|(_, v)| {
            v.split(',')
                .filter_map(|p| p.trim().parse().ok())
                .collect::<Vec<u16>>()
        })
        .collect()
}

/// Serves an SPDY upgrade.
pub async fn serve_spdy(req: Request<hyper::body::Incoming>, ip: String) {
    if let Ok(upgraded) = hyper::upgrade::on(req).await {
        super::spdy::serve(TokioIo::new(upgraded), ip).await;
    }
}

/// Serves the upgraded WebSocket: `protocol` is [`PROTOCOL`], forwarding each port to
/// `ip:port`, or SPDY tunnelled in binary messages.
pub async fn serve(
    req: Request<hyper::body::Incoming>,
    ip: String,
    ports: Vec<u16>,
    protocol: &'static str,
) {
    let Ok(upgraded) = hyper::upgrade::on(req).await else {
        return;
    };
    let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
    let (mut sink, mut stream) = ws.split();
    if protocol != PROTOCOL {
        // SPDY's bytes in binary messages, both ways, through a pipe to the SPDY server.
        let (ours, session) = tokio::io::duplex(256 * 1024);
        let (mut from_session, mut to_session) = tokio::io::split(ours);
        let inbound = async {
            while let Some(Ok(message)) = stream.next().await {
                match message {
                    Message::Binary(data) if to_session.write_all(&data).await.is_err() => break,
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            let _ = to_session.shutdown().await;
        };
        let outbound = async {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n @ 1..) = from_session.read(&mut buf).await {
                if sink.send(Message::binary(buf[..n].to_vec())).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        };
        tokio::join!(super::spdy::serve(session, ip), inbound, outbound);
        return;
    }
    // One port per connection is what kube-rs and our plugin ask; more would multiplex the same
    // way, channel by channel.
    let Some(&port) = ports.first() else {
        let _ = sink.close().await;
        return;
    };
    let prefix = |channel: u8| {
        let mut message = vec![channel];
        message.extend_from_slice(&port.to_le_bytes());
        Message::binary(message)
    };
    if sink.send(prefix(0)).await.is_err() || sink.send(prefix(1)).await.is_err() {
        return;
    }
    let tcp = match tokio::net::TcpStream::connect((ip.as_str(), port)).await {
        Ok(tcp) => tcp,
        Err(e) => {
            let mut error = vec![1u8];
            error.extend_from_slice(format!("error forwarding port {port} to pod: {e}").as_bytes());
            let _ = sink.send(Message::binary(error)).await;
            let _ = sink.close().await;
            // The closing handshake, as RFC 6455 has it: read until the client's Close. A socket
            // closed with data of the client's unread (its request, sent meanwhile) is reset,
            // and a reset loses what the client had not read yet: the error.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                while let Some(Ok(message)) = stream.next().await {
                    if message.is_close() {
                        break;
                    }
                }
            })
            .await;
            return;
        }
    };
    let (mut read, mut write) = tcp.into_split();
    let upstream = async {
        while let Some(Ok(message)) = stream.next().await {
            match message {
                Message::Binary(data)
                    if data.first() == Some(&0)
                        && data.len() > 1
                        && write.write_all(&data[1..]).await.is_err() =>
                {
                    break;
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = write.shutdown().await;
    };
    let downstream = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match read.read(&mut buf[1..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf[0] = 0;
                    if sink
                        .send(Message::binary(buf[..=n].to_vec()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        let _ = sink.close().await;
    };
    tokio::join!(upstream, downstream);
}
