//! The agent's HTTP server: accepting connections (TLS, limits, idle and unauthenticated
//! ones), routing each request ([`route`]) and upgrading to WebSockets ([`upgrade`]). What
//! each endpoint does is in [`crate::endpoints`]. Every accepted socket counts as the agent's
//! activity until it closes ([`Held`]), for `lifecycle.exitWhenIdle`.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tracing::{debug, warn};

use crate::Agent;
use crate::auth::{Caller, CredentialRejected};

pub mod pending;
mod route;
pub(crate) mod upgrade;

pub(crate) use route::{Body, full, json, refuse, refuse_with};

impl Agent {
    /// Accepts connections on `listener` until shutdown: at most `limits.maxConnections` at
    /// once (past it, new ones are closed at once), each with `limits.headerTimeout` to send
    /// its first bytes, and again to finish its TLS handshake and to send its headers. When
    /// accepting fails (no file descriptors left), it backs off, up to a second, and says so
    /// once every ten seconds, not every time.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let open = Arc::new(tokio::sync::Semaphore::new(self.limits.max_connections));
        let pending = pending::Pending::new(self.limits.unauthenticated_cap());
        let mut backoff = Duration::ZERO;
        let mut warned: Option<std::time::Instant> = None;
        let mut refused = 0u64;
        let mut evictions = 0u64;
        loop {
            let (socket, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => {
                        backoff = Duration::ZERO;
                        accepted
                    }
                    Err(e) => {
                        backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                        if warned.is_none_or(|w| w.elapsed() >= Duration::from_secs(10)) {
                            warn!(error = %e, open = self.limits.max_connections - open.available_permits(), "accepting connections fails; backing off (too many open files? lower limits.maxConnections or raise the agent's file limit)");
                            warned = Some(std::time::Instant::now());
                        }
                        self.metrics.error("accept");
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            () = self.shutdown.cancelled() => break,
                        }
                        continue;
                    }
                },
                () = self.shutdown.cancelled() => break,
            };
            let Ok(permit) = open.clone().try_acquire_owned() else {
                refused += 1;
                if refused.is_power_of_two() {
                    warn!(%peer, refused, limit = self.limits.max_connections, "connection refused: limits.maxConnections connections are open");
                }
                self.metrics.error("connection_limit");
                drop(socket);
                continue;
            };
            let _ = socket.set_nodelay(true);
            let socket = Held {
                io: socket,
                _busy: self.activity.begin(),
            };
            let (ticket, evicted) = pending.admit();
            if evicted {
                evictions += 1;
                if evictions.is_power_of_two() {
                    warn!(%peer, evictions, limit = self.limits.unauthenticated_cap(), "the oldest unauthenticated connection was closed to make room: limits.maxUnauthenticated connections wait to authenticate");
                }
                self.metrics.error("unauthenticated_limit");
            }
            let agent = self.clone();
            let open = Open::new(permit, &self.metrics.connections_open);
            self.tracker.spawn(async move {
                let _open = open;
                let ticket = Arc::new(ticket);
                // Until its first bytes come, a connection costs only this small task: hyper's
                // buffers (16 KiB) and the TLS state are made when there is something to read,
                // so idle sockets held by the thousand cost the agent little memory, and one
                // closed without a word costs nothing more. (`readable` alone is no proof: it
                // reports a fresh socket ready; `peek` waits for a byte or the end.)
                let limit = agent.limits.header_timeout.0;
                let serving = async {
                    match tokio::time::timeout(limit, socket.io.peek(&mut [0u8])).await {
                        Ok(Ok(1..)) => {
                            let connection =
                                agent.serve_socket(socket, peer.to_string(), ticket.clone());
                            Box::pin(connection).await;
                        }
                        Ok(Ok(0)) => debug!(%peer, "connection closed before a request"),
                        Ok(Err(e)) => debug!(%peer, error = %e, "connection failed before a request"),
                        Err(_) => debug!(%peer, "nothing sent in limits.headerTimeout"),
                    }
                };
                tokio::select! {
                    () = serving => {}
                    () = ticket.evicted() => debug!(%peer, "closed unauthenticated to make room for newer connections"),
                }
            });
        }
    }

    /// Serves one accepted TCP connection that has something to read: through TLS when the
    /// agent has it, the handshake within `limits.headerTimeout`.
    async fn serve_socket(
        self: Arc<Self>,
        socket: Held<tokio::net::TcpStream>,
        peer: String,
        ticket: Arc<pending::Ticket>,
    ) {
        let Some(tls) = self.tls.clone() else {
            return self
                .serve_connection(socket, peer, None, Some(ticket))
                .await;
        };
        let limit = self.limits.header_timeout.0;
        match tokio::time::timeout(limit, tls.acceptor().accept(socket)).await {
            Ok(Ok(stream)) => {
                // Verified against the client CA by the handshake.
                let named = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|leaf| Arc::new(Caller::from_certificate(leaf)));
                self.serve_connection(stream, peer, named, Some(ticket))
                    .await
            }
            Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
            Err(_) => debug!(%peer, "TLS handshake not finished in limits.headerTimeout"),
        }
    }

    /// Serves one HTTP connection (a TCP socket, or an in-memory pipe for `kubectl-debug local`,
    /// which then exposes no port at all). `peer` names the client in logs; `certificate` is
    /// who the connection's verified client certificate names, if it presented one; `ticket`
    /// its place among the unauthenticated connections, given up at its first authenticated
    /// request.
    pub async fn serve_connection<IO>(
        self: Arc<Self>,
        io: IO,
        peer: String,
        certificate: Option<Arc<Result<Caller, CredentialRejected>>>,
        ticket: Option<Arc<pending::Ticket>>,
    ) where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let agent = self;
        let logged_peer = peer.clone();
        let header_timeout = agent.limits.header_timeout.0;
        let service = hyper::service::service_fn(move |req| {
            let agent = agent.clone();
            let peer = peer.clone();
            let certificate = certificate.clone();
            let ticket = ticket.clone();
            async move {
                let response = agent
                    .handle(req, &peer, certificate.as_deref(), ticket.as_deref())
                    .await;
                Ok::<_, Infallible>(response)
            }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(header_timeout)
            .max_buf_size(64 << 10)
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        if let Err(e) = connection.await {
            debug!(peer = %logged_peer, error = %e, "connection ended with an error");
        }
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: &str,
        certificate: Option<&Result<Caller, CredentialRejected>>,
        ticket: Option<&pending::Ticket>,
    ) -> Response<Body> {
        let agent = self.clone();
        let response = self.route(req, peer, certificate, ticket).await;
        let code = response.status();
        if code.is_client_error() || code.is_server_error() {
            agent.metrics.error(crate::metrics::kind_of(code.as_u16()));
        }
        response
    }
}

/// A connection's place under `limits.maxConnections`, counted in `connections_open` while
/// it is held.
struct Open {
    _permit: tokio::sync::OwnedSemaphorePermit,
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl Open {
    fn new(
        permit: tokio::sync::OwnedSemaphorePermit,
        gauge: &prometheus_client::metrics::gauge::Gauge,
    ) -> Open {
        gauge.inc();
        Open {
            _permit: permit,
            gauge: gauge.clone(),
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// An accepted socket, counted in [`Agent`]'s activity until it closes: a WebSocket's socket
/// outlives its HTTP connection's task (hyper hands it over at the upgrade), so a running
/// session or watcher keeps the agent busy too.
struct Held<IO> {
    io: IO,
    _busy: crate::state::Busy,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Held<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Held<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
