//! The user's terminal: raw mode behind a guard that restores it on every exit path, and the
//! terminal's size, sent first and again on every SIGWINCH.

use std::io::IsTerminal;

use futures_util::StreamExt;
use kdbg_relay::TerminalSize;
use kdbg_relay::session::ResizeStream;
use rustix::termios::{self, OptionalActions, Termios};
use tokio::signal::unix::{SignalKind, signal};

/// Whether stdin is a terminal.
pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}

/// The terminal's size, read from stdout (or stdin when stdout is redirected).
pub fn size() -> Option<TerminalSize> {
    let probe = |fd| termios::tcgetwinsize(fd).ok();
    let ws = probe(rustix::stdio::stdout()).or_else(|| probe(rustix::stdio::stdin()))?;
    (ws.ws_col > 0 && ws.ws_row > 0).then_some(TerminalSize {
        cols: ws.ws_col,
        rows: ws.ws_row,
    })
}

/// The current size, then the new one after every SIGWINCH.
pub fn sizes() -> std::io::Result<ResizeStream> {
    let winch = signal(SignalKind::window_change())?;
    let first = futures_util::stream::iter(size());
    let changes = futures_util::stream::unfold(winch, |mut winch| async move {
        winch.recv().await?;
        Some((size(), winch))
    })
    .filter_map(std::future::ready);
    Ok(Box::pin(first.chain(changes)))
}

/// Puts stdin's terminal in raw mode until dropped; dropping restores the saved settings,
/// also when a `?` or a panic unwinds past it.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Enters raw mode.
    pub fn enter() -> std::io::Result<RawMode> {
        let stdin = rustix::stdio::stdin();
        let saved = termios::tcgetattr(stdin)?;
        let mut raw = saved.clone();
        raw.make_raw();
        termios::tcsetattr(stdin, OptionalActions::Now, &raw)?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(rustix::stdio::stdin(), OptionalActions::Now, &self.saved);
    }
}
