//! Carrying the user's terminal to a debug session on an agent: the WebSocket handshake, the
//! terminal's raw mode and size, and the relay's client side over the user's stdio.

use anyhow::{Context as _, anyhow};
use kdbg_agent::request::DebugRequest;
use kdbg_agent::server::{DEBUG_PATH, WARNING_HEADER};
use kdbg_relay::status::Status;
use kdbg_relay::{ClientIo, Config, Error as RelayError, ExitStatus, handshake, tungstenite};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::output::ThreadWriter;
use crate::terminal;

/// Decides `-i`/`-t` like `kubectl exec`: on a terminal with neither flag, both; `-t` without
/// a terminal on stdin is dropped with a warning.
pub fn interactive(stdin: bool, tty: bool) -> (bool, bool) {
    let on_terminal = terminal::stdin_is_terminal();
    if !stdin && !tty {
        return (on_terminal, on_terminal);
    }
    if tty && !on_terminal {
        eprintln!("Unable to use a TTY - input is not a terminal or the right kind of file");
        return (stdin, false);
    }
    (stdin || tty, tty)
}

/// Runs a session for `request` on the agent at the other end of `stream` (reached as `host`),
/// and returns the remote command's exit status.
pub async fn run<S>(stream: S, host: &str, request: &DebugRequest) -> anyhow::Result<ExitStatus>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let url = format!("ws://{host}{DEBUG_PATH}?{}", request.to_query());
    let (ws, protocol, headers) = match handshake::connect(url, stream).await {
        Ok(connected) => connected,
        Err(RelayError::Handshake(tungstenite::Error::Http(response))) => {
            return Err(anyhow!(refusal_message(
                response.status().as_u16(),
                response.body().as_deref()
            )));
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("opening a debug session on the agent at {host}"));
        }
    };
    for warning in headers.get_all(WARNING_HEADER) {
        eprintln!("Warning: {}", String::from_utf8_lossy(warning.as_bytes()));
    }
    // Raw mode for the session only; the guard restores the terminal on every way out.
    let _raw = if request.tty {
        Some(terminal::RawMode::enter().context("putting the terminal in raw mode")?)
    } else {
        None
    };
    let io = ClientIo {
        stdin: request
            .stdin
            .then(|| Box::pin(tokio::io::stdin()) as kdbg_relay::session::BoxRead),
        stdout: Some(Box::pin(ThreadWriter::stdout())),
        stderr: (!request.tty).then(|| Box::pin(ThreadWriter::stderr()) as _),
        resize: if request.tty {
            Some(terminal::sizes().context("watching the terminal's size")?)
        } else {
            None
        },
        tap: None,
    };
    let done = kdbg_relay::attach(ws, protocol, io, &Config::default()).await?;
    Ok(done.outcome)
}

/// What a refused request means, from its `metav1.Status` body when there is one.
pub fn refusal_message(code: u16, body: Option<&[u8]>) -> String {
    let status = body.and_then(|b| serde_json::from_slice::<Status>(b).ok());
    match status.and_then(|s| s.message) {
        Some(message) => message,
        None => format!(
            "the agent refused the debug session with HTTP {code}{}",
            body.map(|b| format!(": {}", String::from_utf8_lossy(b)))
                .unwrap_or_default()
        ),
    }
}
