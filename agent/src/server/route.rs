//! Routing one request: parsed into a [`kdbg_api::Endpoint`] first (a request that does not
//! parse is refused with what is wrong before anything else), then the caller authenticated
//! and authorised for that endpoint ([`crate::endpoints::guard`]), then handed to the
//! endpoint. Every answer but a session's upgrade is JSON (or a stream); every refusal is a
//! `metav1.Status`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use kdbg_api::{Endpoint, Status};
use tracing::info;

use super::pending;
use crate::Agent;
use crate::auth::{Caller, CredentialRejected};
use crate::session;

impl Agent {
    pub(super) async fn route(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: &str,
        certificate: Option<&Result<Caller, CredentialRejected>>,
        ticket: Option<&pending::Ticket>,
    ) -> Response<Body> {
        let query = req.uri().query().unwrap_or("");
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
        let endpoint = match Endpoint::parse(req.method().as_str(), req.uri().path(), query) {
            Ok(endpoint) => endpoint,
            Err(unroutable) => {
                let code = StatusCode::from_u16(unroutable.code()).unwrap_or(StatusCode::NOT_FOUND);
                return refuse(code, &unroutable.to_string());
            }
        };
        // Open to anyone: probes and scrapers.
        match endpoint {
            Endpoint::Healthz => return text(StatusCode::OK, "ok\n"),
            Endpoint::Metrics => {
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
        if let Err(refused) = self.authorize(&endpoint, &caller).await {
            info!(target: "audit", peer, user = caller.user.as_str(), method = req.method().as_str(), path = req.uri().path(), decision = "forbidden", "request refused");
            return refused;
        }
        match endpoint {
            Endpoint::Healthz | Endpoint::Metrics => unreachable!("answered above"),
            Endpoint::Version => json(
                StatusCode::OK,
                &kdbg_api::VersionInfo {
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    runtime: self.runtime.name().to_owned(),
                    node: self.node.clone(),
                },
            ),
            Endpoint::Debug(request) => self.debug(req, request, peer, caller).await,
            Endpoint::Pull(request) => self.pull(req, request, &caller).await,
            Endpoint::Containers(scope) => self.containers(&scope, &caller).await,
            Endpoint::RemoveContainer { name, scope } => self.remove(&name, &scope, &caller).await,
            Endpoint::Recordings(scope) => self.recordings(scope, &caller).await,
            Endpoint::Recording { session, scope } => {
                self.recording(&session, scope, &caller).await
            }
            Endpoint::Watch(request) => self.watch(req, request, peer, &caller).await,
            Endpoint::ImageConfig(request) => self.image_config(request, peer, &caller).await,
        }
    }
}

/// The body of every response: whole, or streamed (pull progress, a recording).
pub type Body = BoxBody<Bytes, Infallible>;

/// A whole body.
pub(crate) fn full(bytes: Bytes) -> Body {
    Full::new(bytes).boxed()
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

/// A JSON answer.
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
