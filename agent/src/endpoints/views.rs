//! The endpoints that look at sessions without taking part: `GET /api/v1/recordings` (and
//! one recording) and `GET /api/v1/watch` (a live view).

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use kdbg_api::{PodScope, RecordingList, WatchRequest, path};
use kdbg_relay::WebSocketStream;
use kdbg_relay::tungstenite::Message;
use kdbg_relay::tungstenite::protocol::CloseFrame;
use kdbg_relay::tungstenite::protocol::frame::coding::CloseCode;
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::Agent;
use crate::auth::Caller;
use crate::server::{Body, json, refuse, refuse_with, upgrade};
use crate::session::NoScreen;

impl Agent {
    /// The recordings in a scope, as a [`RecordingList`]. Recordings of sessions that gave
    /// the node itself are listed only to callers allowed the node: a list of one pod's is
    /// refused with the reason, a wider one leaves them out.
    pub(crate) async fn recordings(
        self: Arc<Self>,
        scope: PodScope,
        caller: &Caller,
    ) -> Response<Body> {
        let (agent, wanted) = (self.clone(), scope.clone());
        let found = match tokio::task::spawn_blocking(move || {
            agent.recordings.list_with_node_level(&wanted)
        })
        .await
        {
            Ok(found) => found,
            Err(e) => {
                return refuse(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("listing recordings failed: {e}"),
                );
            }
        };
        let mut items = Vec::with_capacity(found.len());
        for (item, why) in found {
            let subject = format!("the recording of session {}", item.session);
            match self.require_node(caller, &subject, why.as_deref()).await {
                Ok(()) => items.push(item),
                Err(refusal) if scope.pod.is_some() => return refuse_with(refusal),
                Err(_) => debug!(
                    session = item.session.as_str(),
                    "left out of a list: node-level"
                ),
            }
        }
        json(StatusCode::OK, &RecordingList { items })
    }

    /// One recording, streamed as written (asciicast).
    pub(crate) async fn recording(
        self: Arc<Self>,
        session: &str,
        scope: PodScope,
        caller: &Caller,
    ) -> Response<Body> {
        let (agent, wanted) = (self.clone(), session.to_owned());
        let found =
            tokio::task::spawn_blocking(move || agent.recordings.find(&wanted, &scope)).await;
        let path = match found {
            Ok(Ok(path)) => path,
            Ok(Err(missing)) => return refuse(StatusCode::NOT_FOUND, &missing.to_string()),
            Err(e) => return refuse(StatusCode::NOT_FOUND, &e.to_string()),
        };
        let (agent, read) = (self.clone(), path.clone());
        let why = tokio::task::spawn_blocking(move || agent.recordings.node_level_of(&read))
            .await
            .unwrap_or(Some("its header could not be read".into()));
        let subject = format!("the recording of session {session}");
        if let Err(refusal) = self.require_node(caller, &subject, why.as_deref()).await {
            return refuse_with(refusal);
        }
        let file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) => {
                return refuse(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("opening the recording of session {session}: {e}"),
                );
            }
        };
        let length = file.metadata().await.map(|m| m.len()).ok();
        let frames = tokio_util::io::ReaderStream::new(file)
            .map(|chunk| chunk.map(hyper::body::Frame::data));
        let mut response = Response::new(BodyExt::boxed(StreamBody::new(frames.map(
            |r: Result<hyper::body::Frame<Bytes>, std::io::Error>| {
                // A read error cuts the body short; the client sees a truncated recording.
                Ok::<_, std::convert::Infallible>(
                    r.unwrap_or_else(|_| hyper::body::Frame::data(Bytes::new())),
                )
            },
        ))));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-asciicast"),
        );
        if let Some(length) = length {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        response
    }

    /// A running session's live view, read-only: a WebSocket speaking
    /// [`path::WATCH_PROTOCOL`].
    pub(crate) async fn watch(
        self: Arc<Self>,
        req: Request<Incoming>,
        request: WatchRequest,
        peer: &str,
        caller: &Caller,
    ) -> Response<Body> {
        let upgrade::Accepted {
            response, socket, ..
        } = match upgrade::accept(req, &[path::WATCH_PROTOCOL]) {
            Ok(accepted) => accepted,
            Err(refused) => return refused,
        };
        let wanted = &request.session;
        let in_pod = match (&request.scope.namespace, &request.scope.pod) {
            (Some(ns), Some(pod)) => format!(" of pod {ns}/{pod}"),
            _ => String::new(),
        };
        let watched = match self.live.screen(wanted, &request.scope) {
            Ok(found) => found,
            Err(NoScreen::NotFound) => {
                return refuse(
                    StatusCode::NOT_FOUND,
                    &format!(
                        "no running session or debug container {wanted:?}{in_pod} on node {}; kubectl-debug list shows the running ones",
                        self.node
                    ),
                );
            }
            Err(NoScreen::NoTerminal) => {
                return refuse(
                    StatusCode::CONFLICT,
                    &format!(
                        "session {wanted:?} has no terminal (it was started with --tty=false): only terminal sessions can be watched"
                    ),
                );
            }
            Err(NoScreen::Ambiguous(sessions)) => {
                return refuse(
                    StatusCode::CONFLICT,
                    &format!(
                        "debug container {wanted:?} has {} sessions ({}): watch one of them by its ID",
                        sessions.len(),
                        sessions.join(", ")
                    ),
                );
            }
        };
        let (session, screen) = (watched.session, watched.screen);
        let subject = format!("session {session}");
        if let Err(refusal) = self
            .require_node(caller, &subject, watched.node_level.as_deref())
            .await
        {
            return refuse_with(refusal);
        }
        let Some(lines) = screen.join() else {
            return refuse(
                StatusCode::NOT_FOUND,
                &format!("session {session} has just ended"),
            );
        };
        let span = info_span!("watch", session.id = %session, %peer);
        span.in_scope(|| info!("watcher joined"));
        self.tracker.spawn(
            async move {
                match socket.await {
                    Ok(ws) => {
                        relay_view(ws, lines).await;
                        info!("watcher left");
                    }
                    Err(e) => warn!(error = %e, "WebSocket upgrade failed"),
                }
            }
            .instrument(span),
        );
        response
    }
}

/// What a watcher may send in data messages (a client's stray keystrokes) before it is closed
/// with 1008: watching is read-only.
pub const WATCHER_INPUT_ALLOWANCE: usize = 4096;

/// Sends the view's lines to the watcher until the session ends or the watcher leaves. What
/// the watcher sends is read (to see it leave, and to answer pings) and dropped; past
/// [`WATCHER_INPUT_ALLOWANCE`] bytes of it, the watcher is closed with 1008 (policy).
async fn relay_view<S>(mut ws: WebSocketStream<S>, mut lines: mpsc::Receiver<String>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut told = false;
    let mut input = 0usize;
    loop {
        tokio::select! {
            line = lines.recv() => match line {
                Some(line) => {
                    // With what else is queued (a bounded batch), then one flush: a write
                    // to the socket for them all, not one for each line.
                    if ws.feed(Message::text(line)).await.is_err() {
                        return;
                    }
                    for _ in 0..64 {
                        let Ok(line) = lines.try_recv() else { break };
                        if ws.feed(Message::text(line)).await.is_err() {
                            return;
                        }
                    }
                    if ws.flush().await.is_err() {
                        return;
                    }
                }
                None => {
                    let close = CloseFrame {
                        code: CloseCode::Normal,
                        reason: "the session ended".into(),
                    };
                    let _ = ws.close(Some(close)).await;
                    // Wait (bounded) for the watcher's close, so it sees ours.
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                        while let Some(Ok(_)) = ws.next().await {}
                    })
                    .await;
                    return;
                }
            },
            message = ws.next() => match message {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                    input += message.len();
                    if input > WATCHER_INPUT_ALLOWANCE {
                        warn!(bytes = input, "a watcher kept sending input; closed (1008): watching is read-only");
                        let close = CloseFrame {
                            code: CloseCode::Policy,
                            reason: "a live view is read-only: send nothing".into(),
                        };
                        let _ = ws.close(Some(close)).await;
                        return;
                    }
                    if !told {
                        debug!("a watcher sent input; watching is read-only, dropped");
                        told = true;
                    }
                }
                Some(Ok(_)) => {}
            },
        }
    }
}
