//! The one client of an agent: everything the plugin asks of an agent goes through
//! [`AgentClient`], over one connect strategy ([`Transport`]) chosen in one place, so the
//! verbs never build a request, a URL or a connection themselves.
//!
//! Transports: a TCP connection to `host:port` (a node's agent, or `local --agent`), or an
//! agent inside this process reached over an in-memory pipe (`local`). Headers every request
//! carries are added in [`AgentClient::request`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Either, Empty, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use kdbg_api::{
    ContainerItem, ContainerList, DebugRequest, Endpoint, ImageConfig, ImageConfigRequest,
    PodScope, PullLine, PullProgress, PullRequest, RecordingItem, RecordingList, Status,
    WatchRequest, header, path,
};
use kdbg_relay::{Error as RelayError, Protocol, WebSocketStream, handshake, tungstenite};
use tokio::io::{AsyncRead, AsyncWrite};

/// How long to try reaching an agent over TCP.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to an agent.
pub trait Connection: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Connection for T {}

/// A connection of any transport.
pub type Conn = Box<dyn Connection>;

/// How the plugin reaches an agent.
pub enum Transport {
    /// TCP to `address` (`host:port`); `node` names the agent's node in errors.
    Tcp {
        /// `host:port`.
        address: String,
        /// The node, when the agent is a node's.
        node: Option<String>,
    },
    /// An agent in this process (`local`), over an in-memory pipe: no port is opened.
    InProcess(Arc<kdbg_agent::Agent>),
    /// A port-forward through the API server to `port` of agent pod `pod` (one per
    /// connection: no local port is bound).
    PortForward {
        /// The agent pods' API (their namespace).
        pods: Box<kube::Api<k8s_openapi::api::core::v1::Pod>>,
        /// The agent pod.
        pod: String,
        /// The agent's port in its pod.
        port: u16,
        /// The node.
        node: String,
    },
}

/// A debug session opened on an agent: the WebSocket and what the agent said with it.
pub struct Session {
    /// The session's WebSocket.
    pub ws: WebSocketStream<Conn>,
    /// The subprotocol the agent chose.
    pub protocol: Protocol,
    /// Warnings for the user.
    pub warnings: Vec<String>,
    /// The debug container's name, if the agent said it.
    pub container: Option<String>,
    /// The session's ID, if the agent said it.
    pub id: Option<String>,
    /// The node whose agent records the session, when it does.
    pub recorded_on: Option<String>,
    /// The agent's node, when known.
    pub node: Option<String>,
}

/// The client of one agent.
pub struct AgentClient {
    transport: Transport,
    /// What the last port-forward's error channel said, if anything.
    forward_error: std::sync::Mutex<Option<crate::portforward::Said>>,
    /// The user's bearer token, for agents that check callers.
    bearer: Option<String>,
    /// TLS to the agent, when it serves TLS.
    tls: Option<crate::credentials::AgentTls>,
    /// Where a pull's registry credential may come from.
    pull_secrets: Option<crate::pullsecrets::PullSecrets>,
}

impl AgentClient {
    /// A client of the agent that `transport` reaches.
    pub fn new(transport: Transport) -> AgentClient {
        AgentClient {
            transport,
            forward_error: std::sync::Mutex::default(),
            bearer: None,
            tls: None,
            pull_secrets: None,
        }
    }

    /// The same client, whose pulls send a credential from `secrets` when one matches.
    pub fn with_pull_secrets(mut self, secrets: crate::pullsecrets::PullSecrets) -> AgentClient {
        self.pull_secrets = Some(secrets);
        self
    }

    /// Where a pull's registry credential may come from, if anywhere.
    pub fn pull_secrets(&self) -> Option<&crate::pullsecrets::PullSecrets> {
        self.pull_secrets.as_ref()
    }

    /// The same client, presenting `bearer` and speaking TLS as `tls` says.
    pub fn with_access(
        mut self,
        bearer: Option<String>,
        tls: Option<crate::credentials::AgentTls>,
    ) -> AgentClient {
        self.bearer = bearer;
        self.tls = tls;
        self
    }

    /// `error` with what the port-forward said went wrong, if it said anything (it is read, in
    /// order, before the stream ends).
    fn explain(&self, error: anyhow::Error) -> anyhow::Error {
        if self.tls.is_none() && answered_with_tls(&error) {
            return error.context(format!(
                "{} answered with TLS, and this plugin spoke plain HTTP: it has no CA for the agents; give it with --agent-ca FILE, agentCA in the plugin config, or the kubectl-debug-agent-ca ConfigMap in the agents' namespace",
                self.describe()
            ));
        }
        if self.tls.is_some() && answered_in_plain_http(&error) {
            return error.context(format!(
                "{} answered in plain HTTP, and this plugin spoke TLS (it has a CA for the agents): the agent serves without tls (insecure: true); configure its tls, or give this plugin no CA for it",
                self.describe()
            ));
        }
        if let Some(alert) = certificate_refused(&error) {
            return error.context(format!(
                "{} refused the kubeconfig user's client certificate ({alert}); agents accept certificates signed by the cluster's client CA (or their auth.clientCAFile): use a certificate the API server accepts, or a token",
                self.describe()
            ));
        }
        let said = self
            .forward_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .and_then(|said| said.borrow().clone());
        match said {
            Some(said) => error.context(format!(
                "the port-forward to {} failed: {said}",
                self.describe()
            )),
            None => error,
        }
    }

    /// The authority requests name (the `Host` header and the URL's host).
    fn authority(&self) -> &str {
        match &self.transport {
            Transport::Tcp { address, .. } => address,
            Transport::InProcess(_) => "local",
            Transport::PortForward { pod, .. } => pod,
        }
    }

    /// The agent as errors name it.
    fn describe(&self) -> String {
        match &self.transport {
            Transport::Tcp {
                address,
                node: Some(node),
            } => format!("the kubectl-debug agent of node {node} at {address}"),
            Transport::Tcp {
                address,
                node: None,
            } => format!("the kubectl-debug agent at {address}"),
            Transport::InProcess(_) => "the kubectl-debug agent in this process".into(),
            Transport::PortForward { pod, node, .. } => {
                format!(
                    "the kubectl-debug agent of node {node} (pod {pod}, through a port-forward)"
                )
            }
        }
    }

    /// A new connection to the agent: TLS when the agent's CA is known.
    async fn connect(&self) -> anyhow::Result<Conn> {
        let conn = self.connect_plain().await?;
        let Some(tls) = &self.tls else {
            return Ok(conn);
        };
        let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
        let stream = connector
            .connect(tls.name.clone(), conn)
            .await
            .with_context(|| {
                format!(
                    "TLS with {} (verifying its certificate for {:?} against the agents' CA: --agent-ca, agentCA in the plugin config, or the kubectl-debug-agent-ca ConfigMap)",
                    self.describe(),
                    tls.name
                )
            })?;
        Ok(Box::new(stream))
    }

    async fn connect_plain(&self) -> anyhow::Result<Conn> {
        match &self.transport {
            Transport::Tcp { address, node } => {
                let stream = tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    tokio::net::TcpStream::connect(address),
                )
                .await
                .map_err(|_| anyhow!("timed out after {CONNECT_TIMEOUT:?}"))
                .and_then(|r| r.map_err(anyhow::Error::from))
                .with_context(|| match node {
                    Some(_) => format!(
                        "reaching {}; check that the agent DaemonSet runs on that node and that its port is open to you (or set --agent-port)",
                        self.describe()
                    ),
                    None => format!(
                        "reaching {}: is it running there, and is the port open?",
                        self.describe()
                    ),
                })?;
                stream.set_nodelay(true)?;
                Ok(Box::new(stream))
            }
            Transport::InProcess(agent) => {
                let (ours, theirs) = tokio::io::duplex(256 * 1024);
                tokio::spawn(
                    agent
                        .clone()
                        .serve_connection(theirs, "local".into(), None, None),
                );
                Ok(Box::new(ours))
            }
            Transport::PortForward {
                pods, pod, port, ..
            } => {
                let opening = || {
                    format!(
                        "opening a port-forward to {} (this needs create on pods/portforward in its namespace; or reach agents by node IP with --connect direct)",
                        self.describe()
                    )
                };
                let request = kube::core::Request::new(pods.resource_url())
                    .portforward(pod, &[*port])
                    .with_context(opening)?;
                let connection = pods
                    .as_ref()
                    .clone()
                    .into_client()
                    .connect(request)
                    .await
                    .with_context(opening)?;
                let (stream, said) =
                    crate::portforward::PortForward::new(connection.into_stream(), *port);
                *self
                    .forward_error
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(said);
                Ok(Box::new(stream))
            }
        }
    }

    /// A request for `path_and_query`, with the headers every request carries.
    fn request(&self, method: Method, path_and_query: &str) -> hyper::http::request::Builder {
        let builder = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(hyper::header::HOST, self.authority());
        match &self.bearer {
            Some(token) => builder.header(hyper::header::AUTHORIZATION, format!("Bearer {token}")),
            None => builder,
        }
    }

    /// Sends a request to `endpoint`; a refusal is an error saying what the agent said
    /// ([`Refused`], with the status code).
    async fn send(&self, endpoint: Endpoint) -> anyhow::Result<Response<Incoming>> {
        let method = Method::from_bytes(endpoint.method().as_bytes()).expect("a known method");
        let path_and_query = &endpoint.uri();
        let body = endpoint.body().map(Bytes::from);
        let mut result = self
            .send_once(method.clone(), path_and_query, body.clone())
            .await;
        // A port-forward now and then ends a connection before the agent's answer is all
        // through (seen with kube's port-forwarder under load); a GET (a list, the version)
        // or a pull, which asks for the same image again, may be asked again, once.
        if (method == Method::GET || matches!(endpoint, Endpoint::Pull(_)))
            && matches!(self.transport, Transport::PortForward { .. })
            && let Err(e) = &result
            && e.chain().any(|c| {
                c.downcast_ref::<hyper::Error>()
                    .is_some_and(hyper::Error::is_incomplete_message)
            })
        {
            tracing::debug!(error = %e, "the port-forward closed early; asking again");
            result = self.send_once(method, path_and_query, body).await;
        }
        match result {
            Ok(response) => Ok(response),
            Err(e) if e.downcast_ref::<Refused>().is_some() => Err(e),
            Err(e) => Err(self.explain(e)),
        }
    }

    async fn send_once(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<Response<Incoming>> {
        let stream = self.connect().await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("talking HTTP to {}", self.describe()))?;
        tokio::spawn(connection);
        let request = match body {
            Some(body) => self
                .request(method, path_and_query)
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Either::Left(Full::new(body)))?,
            None => self
                .request(method, path_and_query)
                .body(Either::Right(Empty::<Bytes>::new()))?,
        };
        let response = sender
            .send_request(request)
            .await
            .with_context(|| format!("asking {}", self.describe()))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let code = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Err(Refused::new(code, Some(&body)).into())
    }

    /// Asks the agent to make sure an image is present, handing each progress line to `show`.
    pub async fn pull(
        &self,
        request: &PullRequest,
        mut show: impl FnMut(&PullProgress),
    ) -> anyhow::Result<()> {
        let response = self.send(Endpoint::Pull(request.clone())).await?;
        let mut body = response.into_body();
        let mut pending = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame =
                frame.with_context(|| format!("reading pull progress from {}", self.describe()))?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            pending.extend_from_slice(data);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: PullLine = serde_json::from_slice(&pending[..end])
                    .context("reading pull progress: the agent sent something else")?;
                pending.advance(end + 1);
                match line {
                    PullLine::Error { error } => bail!(error),
                    PullLine::Done { .. } => return Ok(()),
                    PullLine::Progress(progress) => show(&progress),
                }
            }
        }
        bail!(
            "{} ended the pull without saying how it went",
            self.describe()
        )
    }

    /// Opens a debug session.
    pub async fn open_session(&self, request: &DebugRequest) -> anyhow::Result<Session> {
        match self.open_session_once(request).await {
            Ok(session) => Ok(session),
            Err(e) if e.downcast_ref::<Refused>().is_some() => Err(e),
            Err(e) => Err(self.explain(e)),
        }
    }

    async fn open_session_once(&self, request: &DebugRequest) -> anyhow::Result<Session> {
        let stream = self.connect().await?;
        let url = format!(
            "ws://{}{}",
            self.authority(),
            Endpoint::Debug(request.clone()).uri()
        );
        let mut upgrade = tungstenite::client::IntoClientRequest::into_client_request(url)?;
        if let Some(token) = &self.bearer {
            upgrade.headers_mut().insert(
                hyper::header::AUTHORIZATION,
                format!("Bearer {token}").parse()?,
            );
        }
        let (ws, protocol, headers) = match handshake::connect(upgrade, stream).await {
            Ok(connected) => connected,
            Err(RelayError::Handshake(tungstenite::Error::Http(response))) => {
                let code = response.status().as_u16();
                return Err(Refused::new(code, response.body().as_deref()).into());
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("opening a debug session on {}", self.describe()));
            }
        };
        let text =
            |v: &tungstenite::http::HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
        Ok(Session {
            ws,
            protocol,
            warnings: headers.get_all(header::WARNING).iter().map(text).collect(),
            container: headers.get(header::CONTAINER).map(text),
            id: headers.get(header::SESSION).map(text),
            recorded_on: headers.get(header::RECORDING).map(text),
            node: match &self.transport {
                Transport::Tcp { node, .. } => node.clone(),
                Transport::PortForward { node, .. } => Some(node.clone()),
                Transport::InProcess(agent) => Some(agent.node().to_owned()),
            },
        })
    }

    /// The debug containers on the agent's node, in `scope`.
    pub async fn list(&self, scope: &PodScope) -> anyhow::Result<Vec<ContainerItem>> {
        let response = self.send(Endpoint::Containers(scope.clone())).await?;
        let body = response.into_body().collect().await?.to_bytes();
        let list: ContainerList = serde_json::from_slice(&body)
            .with_context(|| format!("reading the container list of {}", self.describe()))?;
        Ok(list.items)
    }

    /// Removes debug container `name`, which must be in `scope`; a refusal is a [`Refused`].
    pub async fn remove(&self, name: &str, scope: &PodScope) -> anyhow::Result<ContainerItem> {
        let response = self
            .send(Endpoint::RemoveContainer {
                name: name.to_owned(),
                scope: scope.clone(),
            })
            .await?;
        let body = response.into_body().collect().await?.to_bytes();
        serde_json::from_slice(&body)
            .with_context(|| format!("reading what {} removed", self.describe()))
    }
}

impl AgentClient {
    /// What the image of `request`'s target says to run ([`path::IMAGE_CONFIG`]): its
    /// entrypoint, cmd, working directory and user. The agent admits the target as a debug
    /// session's; a refusal is a [`Refused`] (404 from an agent older than the endpoint:
    /// [`Refused::no_endpoint`]).
    pub async fn image_config(&self, request: &ImageConfigRequest) -> anyhow::Result<ImageConfig> {
        let response = self.send(Endpoint::ImageConfig(request.clone())).await?;
        let body = response.into_body().collect().await?.to_bytes();
        serde_json::from_slice(&body).with_context(|| {
            format!(
                "reading the image config of {} from {}",
                request.target,
                self.describe()
            )
        })
    }

    /// The agent's version.
    pub async fn version(&self) -> anyhow::Result<kdbg_api::VersionInfo> {
        let response = self.send(Endpoint::Version).await?;
        let body = response.into_body().collect().await?.to_bytes();
        serde_json::from_slice(&body)
            .with_context(|| format!("reading the version of {}", self.describe()))
    }

    /// The recordings on the agent's node, in `scope`.
    pub async fn recordings(&self, scope: &PodScope) -> anyhow::Result<Vec<RecordingItem>> {
        let response = self.send(Endpoint::Recordings(scope.clone())).await?;
        let body = response.into_body().collect().await?.to_bytes();
        let list: RecordingList = serde_json::from_slice(&body)
            .with_context(|| format!("reading the recording list of {}", self.describe()))?;
        Ok(list.items)
    }

    /// Recording `session` (in `scope`), streamed to `out`; returns the bytes written.
    pub async fn recording(
        &self,
        session: &str,
        scope: &PodScope,
        out: &mut (dyn std::io::Write + Send),
    ) -> anyhow::Result<u64> {
        let response = self
            .send(Endpoint::Recording {
                session: session.to_owned(),
                scope: scope.clone(),
            })
            .await?;
        let mut body = response.into_body();
        let mut written = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame
                .with_context(|| format!("reading recording {session} from {}", self.describe()))?;
            if let Some(data) = frame.data_ref() {
                out.write_all(data)?;
                written += data.len() as u64;
            }
        }
        out.flush()?;
        Ok(written)
    }

    /// Joins a running session as a watcher: a WebSocket of asciicast v3 lines.
    pub async fn watch(&self, request: &WatchRequest) -> anyhow::Result<WebSocketStream<Conn>> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let stream = self.connect().await?;
        let url = format!(
            "ws://{}{}",
            self.authority(),
            Endpoint::Watch(request.clone()).uri()
        );
        let mut ws_request = url.into_client_request()?;
        ws_request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            tungstenite::http::HeaderValue::from_static(path::WATCH_PROTOCOL),
        );
        if let Some(token) = &self.bearer {
            ws_request.headers_mut().insert(
                hyper::header::AUTHORIZATION,
                format!("Bearer {token}").parse()?,
            );
        }
        match tokio_tungstenite::client_async(ws_request, stream).await {
            Ok((ws, _)) => Ok(ws),
            Err(tungstenite::Error::Http(response)) => {
                Err(Refused::new(response.status().as_u16(), response.body().as_deref()).into())
            }
            Err(e) => Err(e).with_context(|| format!("watching a session on {}", self.describe())),
        }
    }
}

/// The agent refused a request: its status code and what it said.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    /// The HTTP status code.
    pub code: u16,
    /// The agent's message.
    pub message: String,
    /// The `metav1.Status` reason (see [`kdbg_api::reason`]), when the body has one.
    pub reason: Option<String>,
}

impl Refused {
    /// The refusal with status `code` and `body`.
    pub fn new(code: u16, body: Option<&[u8]>) -> Refused {
        let status = body.and_then(|b| serde_json::from_slice::<Status>(b).ok());
        let reason = status.as_ref().and_then(|s| s.reason.clone());
        Refused {
            code,
            message: refusal_message(code, status, body),
            reason,
        }
    }

    /// Whether `error` is the agent saying it has no such endpoint: an agent older than it
    /// (the agent answers 404 only for a path it does not serve).
    pub fn no_endpoint(error: &anyhow::Error) -> bool {
        error
            .downcast_ref::<Refused>()
            .is_some_and(|r| r.code == 404 && r.message.starts_with("no endpoint "))
    }

    /// Whether `error` is the agent saying the image is absent and the policy `Never`.
    pub fn image_absent(error: &anyhow::Error) -> bool {
        Refused::reason_is(error, kdbg_api::reason::IMAGE_ABSENT)
    }

    /// Whether `error` is the agent saying the target is there but not running.
    pub fn target_not_running(error: &anyhow::Error) -> bool {
        Refused::reason_is(error, kdbg_api::reason::TARGET_NOT_RUNNING)
    }

    fn reason_is(error: &anyhow::Error, reason: &str) -> bool {
        error
            .downcast_ref::<Refused>()
            .is_some_and(|r| r.reason.as_deref() == Some(reason))
    }
}

/// What a refused request means, from its `metav1.Status` body when there is one.
fn refusal_message(code: u16, status: Option<Status>, body: Option<&[u8]>) -> String {
    match status.and_then(|s| s.message) {
        Some(message) => message,
        None => format!(
            "the agent refused the request with HTTP {code}{}",
            body.map(|b| format!(": {}", String::from_utf8_lossy(b)))
                .unwrap_or_default()
        ),
    }
}

/// Whether `error` is a plain HTTP client reading a TLS server's answer: the first bytes of
/// a TLS record (an alert, `0x15 0x03 ...`) are not an HTTP version (hyper's "invalid HTTP
/// version parsed", httparse's "invalid HTTP version").
fn answered_with_tls(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|cause| cause.to_string().contains("invalid HTTP version"))
}

/// Whether `error` is a TLS client reading a plain HTTP server's answer (`HTTP/1.1 400`, no
/// TLS record).
fn answered_in_plain_http(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        let rustls_error = match cause.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()),
            None => cause.downcast_ref::<rustls::Error>(),
        };
        matches!(rustls_error, Some(rustls::Error::InvalidMessage(_)))
    })
}

/// The TLS alert with which an agent refused the client's certificate, if `error` is one.
fn certificate_refused(error: &anyhow::Error) -> Option<String> {
    use rustls::AlertDescription as A;
    error.chain().find_map(|cause| {
        let rustls_error = match cause.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref()?.downcast_ref::<rustls::Error>()?,
            None => cause.downcast_ref::<rustls::Error>()?,
        };
        match rustls_error {
            rustls::Error::AlertReceived(
                alert @ (A::UnknownCA
                | A::BadCertificate
                | A::CertificateUnknown
                | A::CertificateExpired
                | A::CertificateRevoked
                | A::UnsupportedCertificate
                | A::CertificateRequired),
            ) => Some(format!("{alert:?}")),
            _ => None,
        }
    })
}
