//! The agent's HTTP endpoints, as `kdbg_api::path` lists them. Refused requests get a 4xx or
//! 5xx with a `metav1.Status` JSON body saying what is wrong.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kdbg_api::{
    ContainerList, DebugRequest, PodScope, PullLine, PullRequest, Status, header as api_header,
    path,
};
use kdbg_relay::{Protocol, WebSocketStream};
use kdbg_runtimes::{AnyRuntime, Runtime};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::auth::Caller;
use crate::config::{Defaults, Lifecycle};
use crate::{containers, recordings, session};

mod guard;
pub mod pending;
mod views;

pub use guard::RECORDINGS_SUBRESOURCE;

/// Everything the endpoints share.
pub struct Agent {
    /// The node's runtime.
    pub runtime: AnyRuntime,
    /// What sessions run by default.
    pub defaults: Defaults,
    /// When sessions and containers end.
    pub lifecycle: Lifecycle,
    /// Where `kdbg-init` is on the node.
    pub init: std::path::PathBuf,
    /// This process as the owner of the containers it creates.
    pub owner: String,
    /// Cancelled when the agent stops.
    pub shutdown: CancellationToken,
    /// Every connection and session, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// The containers with sessions of this agent, and those sessions.
    pub live: session::Live,
    /// When the reaper first saw each orphaned container.
    pub orphans: containers::Orphans,
    /// The node's recordings.
    pub recordings: recordings::Recordings,
    /// The node's name.
    pub node: String,
    /// What `/metrics` shows.
    pub metrics: crate::metrics::Metrics,
    /// Who callers are and what they may do; `None`: anyone may do anything.
    pub auth: Option<Arc<crate::auth::Authenticator>>,
    /// What sessions may ask for.
    pub policy: crate::config::Policy,
    /// What one connection may hold.
    pub limits: crate::config::Limits,
    /// The sessions running, against `policy.maxSessions`.
    pub sessions: Arc<crate::admission::Sessions>,
    /// Held while a retained container is counted against `policy.maxRetained*` and created,
    /// so concurrent requests cannot both take the last place.
    pub retaining: tokio::sync::Mutex<()>,
    /// The listener's TLS; `None`: plain HTTP.
    pub tls: Option<Arc<crate::tls::Tls>>,
}

impl Agent {
    /// Stops the agent: tells every session, removes every unretained debug container it
    /// created (first, so their output ends and sessions can send their status at once), waits
    /// at most `grace` for sessions to finish, then removes what is left whatever the clients
    /// do. Retained containers stay.
    pub async fn stop(&self, grace: Duration) {
        self.shutdown.cancel();
        self.tracker.close();
        self.remove_unretained(grace).await;
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            warn!("sessions still running after {grace:?}; removing their containers and exiting");
        }
        self.remove_unretained(grace).await;
    }

    /// Removes the live containers that are not retained, in parallel, waiting at most `limit`.
    async fn remove_unretained(&self, limit: Duration) {
        let ids = self.live.unretained();
        if ids.is_empty() {
            return;
        }
        let removals = ids.iter().map(|id| async move {
            match self.runtime.remove(id).await {
                Ok(()) => info!(container = %id, "debug container removed at shutdown"),
                Err(e) => warn!(container = %id, error = %crate::chain(&e), "removing debug container at shutdown"),
            }
        });
        if tokio::time::timeout(limit, futures_util::future::join_all(removals))
            .await
            .is_err()
        {
            warn!(containers = ?ids, "removing debug containers took longer than {limit:?}");
        }
    }

    /// Runs the reaper (and the recordings' retention) now, then every
    /// `lifecycle.reapInterval` until shutdown.
    pub async fn reap_periodically(self: Arc<Self>) {
        let every = self.lifecycle.reap_interval.0.max(Duration::from_secs(1));
        loop {
            containers::reap(&self).await;
            if self.recordings.config().mode != crate::config::RecordingMode::Off {
                let agent = self.clone();
                let _ =
                    tokio::task::spawn_blocking(move || agent.recordings.enforce_retention()).await;
            }
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = self.shutdown.cancelled() => return,
            }
        }
    }

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
                    match tokio::time::timeout(limit, socket.peek(&mut [0u8])).await {
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
        socket: tokio::net::TcpStream,
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
        certificate: Option<Arc<Result<Caller, String>>>,
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
        certificate: Option<&Result<Caller, String>>,
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

    async fn route(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: &str,
        certificate: Option<&Result<Caller, String>>,
        ticket: Option<&pending::Ticket>,
    ) -> Response<Body> {
        let query = req.uri().query().unwrap_or("").to_owned();
        if query.len() > self.limits.max_query_bytes {
            return refuse(
                StatusCode::URI_TOO_LONG,
                &format!(
                    "the query is {} bytes, more than this agent takes (limits.maxQueryBytes: {})",
                    query.len(),
                    self.limits.max_query_bytes
                ),
            );
        }
        // Open to anyone: probes and scrapers.
        match (req.method(), req.uri().path()) {
            (&Method::GET, path::HEALTHZ) => return text(StatusCode::OK, "ok\n"),
            (&Method::GET, path::METRICS) => {
                let mut response = Response::new(full(Bytes::from(self.metrics.encode())));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
                );
                return response;
            }
            _ => {}
        }
        let caller = match self.caller(&req, certificate).await {
            Ok(caller) => {
                if let Some(ticket) = ticket {
                    ticket.authenticated();
                }
                caller
            }
            Err(refused) => {
                info!(target: "audit", peer, method = req.method().as_str(), path = req.uri().path(), decision = "unauthenticated", "request refused");
                return refused;
            }
        };
        if let Err(refused) = self
            .authorize(req.method(), req.uri().path(), &query, &caller)
            .await
        {
            info!(target: "audit", peer, user = caller.user.as_str(), method = req.method().as_str(), path = req.uri().path(), decision = "forbidden", "request refused");
            return refused;
        }
        let name = path::container_name(req.uri().path()).map(str::to_owned);
        match (req.method(), req.uri().path(), name) {
            (&Method::GET, path::VERSION, _) => json(
                StatusCode::OK,
                &kdbg_api::VersionInfo {
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    runtime: self.runtime.name().to_owned(),
                    node: self.node.clone(),
                },
            ),
            (&Method::GET, path::DEBUG, _) => self.debug(req, peer, caller).await,
            (&Method::GET, path::CONTAINERS, _) => self.containers(&query, &caller).await,
            (&Method::DELETE, _, Some(name)) => self.remove(&name, &query, &caller).await,
            (&Method::GET, path::PULL, _) => self.pull(&query, &caller).await,
            (&Method::GET, path::RECORDINGS, _) => self.recordings(&query, &caller).await,
            (&Method::GET, path::WATCH, _) => self.watch(req, peer, &caller).await,
            (&Method::GET, wanted, _) if path::recording_session(wanted).is_some() => {
                let session = path::recording_session(wanted)
                    .unwrap_or_default()
                    .to_owned();
                self.recording(&session, &query, &caller).await
            }
            (method, wanted, name) => {
                let known = path::ENDPOINTS
                    .iter()
                    .map(|(m, p)| format!("{m} {p}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let exists = name.is_some() || path::ENDPOINTS.iter().any(|(_, p)| *p == wanted);
                let code = if exists {
                    StatusCode::METHOD_NOT_ALLOWED
                } else {
                    StatusCode::NOT_FOUND
                };
                refuse(
                    code,
                    &format!("no endpoint {method} {wanted}; the agent serves {known}"),
                )
            }
        }
    }

    /// Makes sure an image is present as a pull policy says, streaming progress as JSON lines
    /// (`{"id":..,"status":..,"current":..,"total":..}`) and a last line that says how it ended.
    /// Admitted as a session would be: the image against `policy.images`, and the target
    /// as the named pod's and, if it is the node, with the node-level permission.
    async fn pull(&self, query: &str, caller: &Caller) -> Response<Body> {
        let request = match PullRequest::from_query(query) {
            Ok(request) => request,
            Err(message) => return refuse(StatusCode::BAD_REQUEST, &message),
        };
        if let Err(refusal) = self.admit_pull(caller, &request).await {
            return refuse_with(refusal);
        }
        let (progress_tx, mut progress) = tokio::sync::mpsc::channel(64);
        let (lines_tx, lines) = tokio::sync::mpsc::channel::<Bytes>(64);
        let runtime = self.runtime.clone();
        let image = request.image.unwrap_or_else(|| self.defaults.image.clone());
        let policy = request.policy;
        let shutdown = self.shutdown.clone();
        let (pulls, pull_seconds) = (
            self.metrics.pulls.clone(),
            self.metrics.pull_seconds.clone(),
        );
        let started = std::time::Instant::now();
        // The pull and its progress run in one tracked task (shutdown waits for it, or cuts it
        // short: what it wrote is under a lease that expires). A client that leaves does not
        // stop the pull: the session it was for will want the image.
        self.tracker.spawn(async move {
            let forward = async {
                while let Some(p) = progress.recv().await {
                    let line = PullLine::Progress(p).to_line();
                    if lines_tx.send(Bytes::from(line)).await.is_err() {
                        break;
                    }
                }
            };
            let pulling = async {
                let (pulled, ()) =
                    tokio::join!(runtime.ensure_image(&image, policy, Some(progress_tx)), forward);
                pulled
            };
            let last = tokio::select! {
                pulled = pulling => {
                    let outcome = if pulled.is_ok() { "done" } else { "failed" };
                    pulls.get_or_create(&crate::metrics::Kind { kind: outcome.into() }).inc();
                    pull_seconds.observe(started.elapsed().as_secs_f64());
                    match pulled {
                        Ok(()) => PullLine::done(),
                        Err(e) => PullLine::Error {
                            error: crate::chain(&e),
                        },
                    }
                }
                () = shutdown.cancelled() => PullLine::Error {
                    error: format!("pulling {image}: the kubectl-debug agent on this node is shutting down; try again when it is back"),
                },
            };
            let _ = lines_tx.send(Bytes::from(last.to_line())).await;
        });
        let frames = futures_util::stream::unfold(lines, |mut lines| async move {
            let line = lines.recv().await?;
            Some((Ok::<_, Infallible>(hyper::body::Frame::data(line)), lines))
        });
        let mut response = Response::new(StreamBody::new(frames).boxed());
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        response
    }

    /// The debug containers in a scope. Those that give the node itself are listed only to
    /// callers allowed the node: a list of one pod's is refused with the reason, a wider one
    /// leaves them out.
    async fn containers(&self, query: &str, caller: &Caller) -> Response<Body> {
        let scope = match PodScope::from_query(query) {
            Ok(scope) => scope,
            Err(message) => return refuse(StatusCode::BAD_REQUEST, &message),
        };
        let found = match containers::find_all(self, &scope).await {
            Ok(found) => found,
            Err(e) => return refuse_with(session::Refusal::from(e)),
        };
        let mut shown = Vec::with_capacity(found.len());
        for c in found {
            match self.admit_container(caller, &c).await {
                Ok(()) => shown.push(c),
                Err(refusal) if scope.pod.is_some() => return refuse_with(refusal),
                Err(_) => debug!(
                    container = c.name.as_str(),
                    "left out of a list: node-level"
                ),
            }
        }
        json(
            StatusCode::OK,
            &ContainerList {
                items: containers::items(self, &shown).await,
            },
        )
    }

    async fn remove(&self, name: &str, query: &str, caller: &Caller) -> Response<Body> {
        let scope = match PodScope::from_query(query) {
            Ok(scope) => scope,
            Err(message) => return refuse(StatusCode::BAD_REQUEST, &message),
        };
        let found = match containers::find_in(self, name, &scope).await {
            Ok(found) => found,
            Err(e) => return refuse_with(session::Refusal::from(e)),
        };
        if let Err(refusal) = self.admit_container(caller, &found).await {
            return refuse_with(refusal);
        }
        match containers::remove(self, &found).await {
            Ok(item) => json(StatusCode::OK, &item),
            Err(e) => refuse_with(session::Refusal::from(e)),
        }
    }

    async fn debug(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: &str,
        caller: crate::auth::Caller,
    ) -> Response<Body> {
        let mut request = match DebugRequest::from_query(req.uri().query().unwrap_or("")) {
            Ok(request) => request,
            Err(message) => return refuse(StatusCode::BAD_REQUEST, &message),
        };
        let (key, protocol) = match websocket_handshake(&req) {
            Ok(ok) => ok,
            Err(message) => return refuse(StatusCode::BAD_REQUEST, &message),
        };
        let audit = Audit::of(&caller, &request, &self.defaults, peer);
        let slot = match self.admit(&caller, &mut request).await {
            Ok(slot) => slot,
            Err(refusal) => {
                audit.refused(&refusal);
                return refuse_with(refusal);
            }
        };
        let id = session::new_session_id();
        let target = request
            .target
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        let span = info_span!("session", session.id = %id, %target, container = request.container.as_deref().unwrap_or(""), user = request.user.as_deref().unwrap_or("unknown"), %peer);
        // Prepared in a task of its own: if the client goes away meanwhile, hyper drops this
        // future, but the preparation finishes and its guard cleans up what it made.
        let preparing = {
            let (agent, request, id) = (self.clone(), request.clone(), id.clone());
            self.tracker.spawn(
                async move { session::prepare(&agent, &request, &id).await }
                    .instrument(span.clone()),
            )
        };
        let prepared = match preparing.await {
            Ok(Ok(prepared)) => prepared,
            Err(e) => {
                return refuse(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("preparing the debug container failed: {e}"),
                );
            }
            Ok(Err(refusal)) => {
                span.in_scope(|| info!(error = refusal.message.as_str(), "debug request refused"));
                audit.refused(&refusal);
                return refuse_with(refusal);
            }
        };
        let recording = prepared.recording_path();
        audit.started(prepared.name(), recording.as_deref());
        span.in_scope(|| info!(container = prepared.name(), "debug session started"));
        let mut response = switching_protocols(&key, protocol.name());
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(prepared.name()) {
            headers.insert(api_header::CONTAINER, value);
        }
        if let Ok(value) = HeaderValue::from_str(&id) {
            headers.insert(api_header::SESSION, value);
        }
        if prepared.recorded()
            && let Ok(value) = HeaderValue::from_str(&self.node)
        {
            headers.insert(api_header::RECORDING, value);
        }
        for warning in &prepared.warnings {
            if let Ok(value) = HeaderValue::from_str(warning) {
                headers.append(api_header::WARNING, value);
            }
        }
        self.tracker.spawn(
            async move {
                match hyper::upgrade::on(req).await {
                    Ok(upgraded) => {
                        let ws = WebSocketStream::from_raw_socket(
                            TokioIo::new(upgraded),
                            Role::Server,
                            Some(kdbg_relay::session::websocket_config()),
                        )
                        .await;
                        let summary = session::run(prepared, ws, protocol).await;
                        audit.ended(&summary);
                    }
                    // Dropping `prepared` ends the session.
                    Err(e) => warn!(error = %e, "WebSocket upgrade failed"),
                }
                drop(slot);
            }
            .instrument(span),
        );
        response
    }
}

/// A session's lines in the audit log (target `audit`, one JSON object a line with
/// `log.format: json`): its start or refusal, and its end. Every value a client may have
/// chosen is logged as a string field, never with `%` (Display): the text format quotes and
/// escapes string fields (newlines, quotes, escape sequences), so one event is one line and
/// a value cannot forge another field or line; the JSON format escapes them as JSON.
#[derive(Debug, Clone)]
struct Audit {
    user: String,
    groups: String,
    verified: bool,
    pod: String,
    target: String,
    image: String,
    command: String,
    peer: String,
}

impl Audit {
    fn of(
        caller: &crate::auth::Caller,
        request: &DebugRequest,
        defaults: &Defaults,
        peer: &str,
    ) -> Audit {
        let command = if request.command.is_empty() {
            &defaults.command
        } else {
            &request.command
        };
        Audit {
            user: if caller.verified {
                caller.user.clone()
            } else {
                request.user.clone().unwrap_or_else(|| "unknown".into())
            },
            groups: caller.groups.join(","),
            verified: caller.verified,
            pod: format!(
                "{}/{}",
                request.pod_namespace.as_deref().unwrap_or("-"),
                request.pod_name.as_deref().unwrap_or("-")
            ),
            target: request
                .target
                .as_ref()
                .map(ToString::to_string)
                .or_else(|| request.container.clone())
                .unwrap_or_default(),
            image: request
                .image
                .clone()
                .unwrap_or_else(|| defaults.image.clone()),
            // As a JSON array: arguments keep their boundaries (`["sh","-c","a b"]`).
            command: serde_json::to_string(command).unwrap_or_default(),
            peer: peer.to_owned(),
        }
    }

    fn refused(&self, refusal: &session::Refusal) {
        info!(target: "audit", event = "session refused", user = self.user.as_str(), groups = self.groups.as_str(), verified = self.verified, pod = self.pod.as_str(), target = self.target.as_str(), image = self.image.as_str(), command = self.command.as_str(), peer = self.peer.as_str(), decision = refusal.decision(), code = refusal.code, reason = refusal.message.as_str(), "audit");
    }

    fn started(&self, container: &str, recording: Option<&str>) {
        info!(target: "audit", event = "session started", user = self.user.as_str(), groups = self.groups.as_str(), verified = self.verified, pod = self.pod.as_str(), target = self.target.as_str(), container, image = self.image.as_str(), command = self.command.as_str(), peer = self.peer.as_str(), decision = "allowed", recording = recording.unwrap_or(""), "audit");
    }

    fn ended(&self, summary: &session::Summary) {
        info!(target: "audit", event = "session ended", user = self.user.as_str(), pod = self.pod.as_str(), target = self.target.as_str(), image = self.image.as_str(), outcome = summary.outcome, status = %summary.status, bytes_out = summary.bytes_out, bytes_in = summary.bytes_in, "audit");
    }
}

/// The body of every response: whole, or streamed (pull progress).
pub type Body = BoxBody<Bytes, Infallible>;

pub(crate) fn full(bytes: Bytes) -> Body {
    Full::new(bytes).boxed()
}

/// Checks an upgrade request to `endpoint`; returns its key and the subprotocols offered.
fn websocket_key<'a>(
    req: &'a Request<Incoming>,
    endpoint: &str,
) -> Result<(String, impl Iterator<Item = &'a str>), String> {
    let headers = req.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has_token(header::UPGRADE, "websocket") || !has_token(header::CONNECTION, "upgrade") {
        return Err(format!(
            "{endpoint} is a WebSocket endpoint: send Connection: Upgrade and Upgrade: websocket (e.g. use kubectl-debug)"
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v != "13")
    {
        return Err("Sec-WebSocket-Version must be 13".into());
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .ok_or("Sec-WebSocket-Key is missing")?
        .to_owned();
    let offered = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok());
    Ok((key, offered))
}

/// Checks a session's upgrade request; returns its key and the chosen subprotocol.
fn websocket_handshake(req: &Request<Incoming>) -> Result<(String, Protocol), String> {
    let (key, offered) = websocket_key(req, path::DEBUG)?;
    let protocol = Protocol::negotiate(offered).ok_or_else(|| {
        format!(
            "no supported subprotocol offered; offer {} in Sec-WebSocket-Protocol",
            Protocol::offer()
        )
    })?;
    Ok((key, protocol))
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

/// The answer accepting an upgrade with `key`, speaking `protocol`.
fn switching_protocols(key: &str, protocol: &'static str) -> Response<Body> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&derive_accept_key(key.as_bytes())).expect("base64 is ASCII"),
    );
    headers.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(protocol),
    );
    response
}

/// A refusal with its status and a `metav1.Status` body.
pub(crate) fn refuse_with(refusal: session::Refusal) -> Response<Body> {
    let code = StatusCode::from_u16(refusal.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match refusal.reason {
        Some(reason) => json(
            code,
            &Status::http_error(code.as_u16(), reason, refusal.message),
        ),
        None => refuse(code, &refusal.message),
    }
}

fn text(code: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(full(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = code;
    response
}

pub(crate) fn json(code: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).expect("JSON values serialise");
    let mut response = Response::new(full(Bytes::from(body)));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A refusal with a `metav1.Status` body, as Kubernetes servers send.
pub fn refuse(code: StatusCode, message: &str) -> Response<Body> {
    json(code, &Status::for_http(code, message))
}
