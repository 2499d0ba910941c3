//! Image pull progress: the plugin asks the agent to make sure the debug image is present
//! before the session, and shows the progress on stderr: a bar redrawn in place on a terminal,
//! one line per step otherwise.

use std::io::{IsTerminal, Write};

use anyhow::{Context as _, bail};
use bytes::{Buf, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use kdbg_agent::request::{DebugRequest, PullRequest};
use kdbg_agent::server::PULL_PATH;
use kdbg_runtimes::PullPolicy;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};

/// The pull a debug request needs first, if any (none with policy `Never`: the agent checks
/// the image is present when the session starts).
pub fn wanted(request: &DebugRequest) -> Option<PullRequest> {
    (request.pull_policy != PullPolicy::Never).then(|| PullRequest {
        target: Some(request.target.clone()),
        image: request.image.clone(),
        policy: request.pull_policy,
    })
}

/// One line of the agent's pull stream.
#[derive(Debug, Deserialize)]
struct Line {
    id: Option<String>,
    status: Option<String>,
    current: Option<u64>,
    total: Option<u64>,
    done: Option<bool>,
    error: Option<String>,
}

/// Asks the agent at the other end of `stream` (reached as `host`) to make sure the image is
/// present, showing progress until it is.
pub async fn run<S>(stream: S, host: &str, request: &PullRequest) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("talking HTTP to the agent at {host}"))?;
    tokio::spawn(connection);
    let uri = format!("{PULL_PATH}?{}", request.to_query());
    let req = Request::get(uri)
        .header(hyper::header::HOST, host)
        .body(Empty::<bytes::Bytes>::new())?;
    let response = sender
        .send_request(req)
        .await
        .with_context(|| format!("asking the agent at {host} for the image"))?;
    let status = response.status();
    let mut body = response.into_body();
    if !status.is_success() {
        let bytes = body.collect().await?.to_bytes();
        bail!(crate::attach::refusal_message(
            status.as_u16(),
            Some(&bytes)
        ));
    }
    let mut shown = Display::new(std::io::stderr().is_terminal());
    let mut pending = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.with_context(|| format!("reading pull progress from {host}"))?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        pending.extend_from_slice(data);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Line = serde_json::from_slice(&pending[..end])
                .context("reading pull progress: the agent sent something else")?;
            pending.advance(end + 1);
            if let Some(error) = line.error {
                shown.finish();
                bail!(error);
            }
            if line.done == Some(true) {
                shown.finish();
                return Ok(());
            }
            shown.update(&line);
        }
    }
    shown.finish();
    bail!("the agent at {host} ended the pull without saying how it went")
}

/// What the user sees.
struct Display {
    terminal: bool,
    last: Option<(Option<String>, String)>,
    open_line: bool,
}

impl Display {
    fn new(terminal: bool) -> Display {
        Display {
            terminal,
            last: None,
            open_line: false,
        }
    }

    fn update(&mut self, line: &Line) {
        let status = line.status.clone().unwrap_or_default();
        let prefix = line
            .id
            .as_deref()
            .map(|id| format!("{id}: "))
            .unwrap_or_default();
        let key = (line.id.clone(), status.clone());
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let bar = match (line.current, line.total) {
                (Some(current), Some(total)) if total > 0 => {
                    let filled = (current.min(total) * 30 / total) as usize;
                    format!(
                        " [{}{}] {:.1}/{:.1} MB",
                        "=".repeat(filled),
                        " ".repeat(30 - filled),
                        current as f64 / 1e6,
                        total as f64 / 1e6
                    )
                }
                _ => String::new(),
            };
            let same_line =
                self.open_line && self.last.as_ref().is_some_and(|(id, _)| *id == line.id);
            if same_line {
                let _ = write!(err, "\r\x1b[2K");
            } else if self.open_line {
                let _ = writeln!(err);
            }
            let _ = write!(err, "{prefix}{status}{bar}");
            let _ = err.flush();
            self.open_line = true;
        } else if self.last.as_ref() != Some(&key) {
            let _ = writeln!(err, "{prefix}{status}");
        }
        self.last = Some(key);
    }

    fn finish(&mut self) {
        if self.open_line {
            eprintln!();
            self.open_line = false;
        }
    }
}
