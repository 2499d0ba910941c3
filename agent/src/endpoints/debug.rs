//! `GET /api/v1/debug`: a debug session, and its lines in the audit log.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};
use kdbg_api::{DebugRequest, Target, header as api_header};
use kdbg_relay::Protocol;
use tracing::{Instrument, info, info_span, warn};

use crate::Agent;
use crate::auth::Caller;
use crate::config::Defaults;
use crate::server::{Body, refuse, refuse_with, upgrade};
use crate::session;

impl Agent {
    /// A debug session: admitted (the caller's permission on the pod, the target, the
    /// node's policy), its container prepared, then the WebSocket relayed until it ends.
    pub(crate) async fn debug(
        self: Arc<Self>,
        req: Request<Incoming>,
        mut request: DebugRequest,
        peer: &str,
        caller: Caller,
    ) -> Response<Body> {
        let upgrade::Accepted {
            mut response,
            protocol,
            socket,
        } = match upgrade::accept(req, &Protocol::NAMES) {
            Ok(accepted) => accepted,
            Err(refused) => return refused,
        };
        let protocol = Protocol::from_name(protocol).expect("one of Protocol::NAMES");
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
            .joins()
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
                match socket.await {
                    Ok(ws) => {
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
    fn of(caller: &Caller, request: &DebugRequest, defaults: &Defaults, peer: &str) -> Audit {
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
            // The node itself is named as `node/NAME`, as the user wrote it.
            pod: match &request.node {
                Some(node) => format!("node/{node}"),
                None => format!(
                    "{}/{}",
                    request.pod_namespace.as_deref().unwrap_or("-"),
                    request.pod_name.as_deref().unwrap_or("-")
                ),
            },
            target: match (&request.container, request.joins()) {
                (Some(name), Some(Target::Node(node))) => {
                    format!("container {name} of node://{node}")
                }
                (_, Some(target)) => target.to_string(),
                (Some(name), None) => name.clone(),
                (None, None) => String::new(),
            },
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
