//! `GET /api/v1/pull`: an image made present, with its progress streamed.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::Response;
use hyper::header::{self, HeaderValue};
use kdbg_api::{PullLine, PullRequest};
use kdbg_runtimes::Runtime;

use crate::Agent;
use crate::auth::Caller;
use crate::server::{Body, refuse_with};

impl Agent {
    /// Makes sure an image is present as a pull policy says, streaming progress as JSON lines
    /// (`{"id":..,"status":..,"current":..,"total":..}`) and a last line that says how it ended.
    /// Admitted as a session would be: the image against `policy.images`, and the target
    /// as the named pod's and, if it is the node, with the node-level permission.
    pub(crate) async fn pull(&self, request: PullRequest, caller: &Caller) -> Response<Body> {
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
}
