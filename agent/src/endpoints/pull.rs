//! `GET /api/v1/pull`: an image made present, with its progress streamed; `POST` with a
//! registry credential in the body ([`kdbg_api::PullBody`]), used for that pull only.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::Response;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, StatusCode};
use kdbg_api::{PullBody, PullLine, PullRequest};
use kdbg_runtimes::Runtime;

use crate::Agent;
use crate::auth::Caller;
use crate::server::{Body, refuse, refuse_with};

impl Agent {
    /// Makes sure an image is present as a pull policy says, streaming progress as JSON lines
    /// (`{"id":..,"status":..,"current":..,"total":..}`) and a last line that says how it ended.
    /// Admitted as a session would be: the image against `policy.images`, and the target
    /// as the named pod's and, if it is the node, with the node-level permission.
    ///
    /// A credential in the body is read only after the caller is admitted, and is used for
    /// this pull and dropped with it: it is never logged, audited, labelled or written.
    pub(crate) async fn pull(
        &self,
        req: Request<Incoming>,
        mut request: PullRequest,
        caller: &Caller,
    ) -> Response<Body> {
        if let Err(refusal) = self.admit_pull(caller, &request).await {
            return refuse_with(refusal);
        }
        if req.method() == hyper::Method::POST {
            match read_body(req).await {
                Ok(body) => request.credential = body.credential,
                Err(why) => return refuse(StatusCode::BAD_REQUEST, &why),
            }
        }
        let credential = request.credential.take();
        let platform = request.platform.take();
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
                    tokio::join!(
                        runtime.ensure_image(
                            &image,
                            policy,
                            Some(progress_tx),
                            kdbg_runtimes::PullOptions {
                                credential: credential.as_ref(),
                                platform: platform.as_ref(),
                            },
                        ),
                        forward
                    );
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
}

/// How long a pull's body may take to arrive: a few hundred bytes, sent with the request.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The body of a `POST` pull, at most [`PullBody::MAX_BYTES`], within [`BODY_TIMEOUT`] (a
/// caller trickling it does not hold the request open). Errors say where the JSON is wrong
/// by line and column only: serde's messages may quote a value, and this one may be a
/// password.
async fn read_body(req: Request<Incoming>) -> Result<PullBody, String> {
    let limited = http_body_util::Limited::new(req.into_body(), PullBody::MAX_BYTES);
    let unreadable = || {
        format!(
            "the pull's body could not be read within {}s, or is larger than {} bytes",
            BODY_TIMEOUT.as_secs(),
            PullBody::MAX_BYTES
        )
    };
    let bytes = tokio::time::timeout(BODY_TIMEOUT, limited.collect())
        .await
        .map_err(|_| unreadable())?
        .map_err(|_| unreadable())?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "the pull's body is not a pull body ({{\"credential\": {{\"key\", \"source\", \"username\", \"password\"}}}}): wrong at line {} column {}",
            e.line(),
            e.column()
        )
    })
}
