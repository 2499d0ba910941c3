//! `pods/{name}/portforward` over WebSocket, as the API server and kubelet serve it to kube-rs
//! (`v4.channel.k8s.io`): for the i-th port of `?ports=`, channel 2i carries data and 2i+1
//! errors; the first message on each channel is the port, 2 bytes little-endian. For a pod the
//! stand-in's kubelet runs, it connects to 127.0.0.1:PORT inside the pod's network namespace,
//! as the kubelet does; for a pod a test registered, to the pod's IP.
//! kubectl's SPDY, over a WebSocket or an upgrade of its own, is in [`super::spdy`].

use std::os::fd::AsFd;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kdbg_relay::status::Status;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::{Shared, json, spdy};

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

/// Where a pod's ports are.
#[derive(Debug, Clone)]
pub enum Upstream {
    /// At this IP address.
    Address(String),
    /// On the loopback of this network namespace (`/proc/PID/ns/net`, open), that of the
    /// sandbox named.
    Namespace {
        /// The network namespace.
        netns: Arc<std::fs::File>,
        /// The sandbox container's ID, for messages.
        sandbox: String,
    },
}

impl Upstream {
    /// Connects to `port`; the error is the kubelet's message for the error stream.
    pub async fn connect(&self, port: u16) -> Result<TcpStream, String> {
        match self {
            Upstream::Address(ip) => TcpStream::connect((ip.as_str(), port))
                .await
                .map_err(|e| format!("error forwarding port {port} to pod: {e}")),
            Upstream::Namespace { netns, sandbox } => {
                let (sent, received) = tokio::sync::oneshot::channel();
                let netns = netns.clone();
                // A thread of its own enters the namespace (setns changes the calling thread
                // only) and makes the socket there: a socket stays in the namespace it was made
                // in. Never a runtime's thread, which would stay in the pod's namespace.
                std::thread::spawn(move || {
                    let connected = rustix::thread::move_into_link_name_space(
                        netns.as_fd(),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )
                    .map_err(std::io::Error::from)
                    .and_then(|()| {
                        let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                        std::net::TcpStream::connect_timeout(
                            &address,
                            std::time::Duration::from_secs(10),
                        )
                    });
                    let _ = sent.send(connected);
                });
                let connected = received
                    .await
                    .map_err(|_| std::io::Error::other("the connecting thread panicked"))
                    .and_then(|c| c)
                    .and_then(|tcp| {
                        tcp.set_nonblocking(true)?;
                        TcpStream::from_std(tcp)
                    });
                connected.map_err(|e| {
                    format!(
                        "error forwarding port {port} to pod {sandbox}, uid : failed to connect to localhost:{port} inside namespace \"{sandbox}\", IPv4: dial tcp4 127.0.0.1:{port}: {e}"
                    )
                })
            }
        }
    }
}

/// For a port-forward request: where the pod's ports are, and the ports asked.
pub(crate) fn forward_to(
    req: &Request<hyper::body::Incoming>,
    shared: &Shared,
) -> Option<(Upstream, Vec<u16>)> {
    let parts: Vec<&str> = req
        .uri()
        .path()
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    let ["api", "v1", "namespaces", ns, "pods", name, "portforward"] = parts.as_slice() else {
        return None;
    };
    let pod = shared
        .store
        .lock()
        .unwrap()
        .pods
        .get(&((*ns).to_owned(), (*name).to_owned()))
        .cloned()?;
    let ports = ports(req.uri().query().unwrap_or(""));
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    if shared.kubelet.has(&uid) {
        let (sandbox, pid) = shared.kubelet.sandbox(&uid)?;
        let netns = Arc::new(std::fs::File::open(format!("/proc/{pid}/ns/net")).ok()?);
        return Some((Upstream::Namespace { netns, sandbox }, ports));
    }
    let ip = pod.status.as_ref()?.pod_ip.clone()?;
    Some((Upstream::Address(ip), ports))
}

/// Accepts a port-forward upgrade and serves it: a WebSocket carrying `v4.channel.k8s.io`
/// (kube-rs) or tunnelling SPDY (kubectl), or an SPDY upgrade (kubectl's fallback).
pub(crate) fn upgrade(
    req: Request<hyper::body::Incoming>,
    (upstream, ports): (Upstream, Vec<u16>),
) -> Response<Full<Bytes>> {
    let headers = req.headers();
    let has = |name: &str, wanted: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case(wanted)))
    };
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    if has("upgrade", spdy::UPGRADE) && has("x-stream-protocol-version", spdy::PROTOCOL) {
        tokio::spawn(serve_spdy(req, upstream));
        let h = response.headers_mut();
        h.insert("connection", "Upgrade".parse().unwrap());
        h.insert("upgrade", spdy::UPGRADE.parse().unwrap());
        h.insert("x-stream-protocol-version", spdy::PROTOCOL.parse().unwrap());
        return response;
    }
    let protocol = if has("sec-websocket-protocol", PROTOCOL) && !ports.is_empty() {
        Some(PROTOCOL)
    } else if has("sec-websocket-protocol", spdy::TUNNELLED) {
        Some(spdy::TUNNELLED)
    } else {
        None
    };
    let key = headers.get("sec-websocket-key").cloned();
    let (Some(key), Some(protocol)) = (key, protocol) else {
        return json(
            StatusCode::BAD_REQUEST,
            &Status::http_error(
                400,
                "BadRequest",
                format!(
                    "port-forward needs a WebSocket upgrade offering {PROTOCOL} (with ?ports=) or {}, \
                     or an {} upgrade",
                    spdy::TUNNELLED,
                    spdy::UPGRADE
                ),
            ),
        );
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    tokio::spawn(serve(req, upstream, ports, protocol));
    let h = response.headers_mut();
    h.insert("connection", "Upgrade".parse().unwrap());
    h.insert("upgrade", "websocket".parse().unwrap());
    h.insert("sec-websocket-accept", accept.parse().unwrap());
    h.insert("sec-websocket-protocol", protocol.parse().unwrap());
    response
}

/// Serves an SPDY upgrade.
async fn serve_spdy(req: Request<hyper::body::Incoming>, upstream: Upstream) {
    if let Ok(upgraded) = hyper::upgrade::on(req).await {
        spdy::serve(TokioIo::new(upgraded), upstream).await;
    }
}

/// Serves the upgraded WebSocket: `protocol` is [`PROTOCOL`], forwarding each port to
/// `upstream`, or SPDY tunnelled in binary messages.
async fn serve(
    req: Request<hyper::body::Incoming>,
    upstream: Upstream,
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
        tokio::join!(spdy::serve(session, upstream), inbound, outbound);
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
    let tcp = match upstream.connect(port).await {
        Ok(tcp) => tcp,
        Err(e) => {
            let mut error = vec![1u8];
            error.extend_from_slice(e.as_bytes());
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
