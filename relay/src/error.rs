//! The relay's errors: one enum for a session, one for protocol violations.

use std::io;
use std::time::Duration;

use tokio_tungstenite::tungstenite;

/// A peer broke the channel protocol.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// A close signal must be exactly `[255, channel]`.
    #[error("close signal of {0} bytes; the protocol requires exactly 2 ([255, channel])")]
    CloseSignalLength(usize),
    /// The channel protocols carry only binary messages.
    #[error("text message received; the channel protocol carries binary messages only")]
    TextMessage,
    /// The resize channel did not carry terminal sizes.
    #[error("bad terminal size on the resize channel: {0}")]
    Resize(String),
    /// The status channel did not carry a `metav1.Status`.
    #[error("bad Status document on the status channel: {0}")]
    Status(String),
    /// The server chose a subprotocol we did not offer, or none.
    #[error("server chose subprotocol {0:?}; expected v5.channel.k8s.io or v4.channel.k8s.io")]
    Subprotocol(Option<String>),
}

/// Why a session failed. Each variant names the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading local input (a process's output, or the user's stdin) failed.
    #[error("reading {stream}")]
    ReadLocal {
        /// `stdin`, `stdout` or `stderr`.
        stream: &'static str,
        /// The I/O error.
        source: io::Error,
    },
    /// Writing to a local output (the user's terminal, or a process's stdin) failed.
    #[error("writing {stream}")]
    WriteLocal {
        /// `stdin`, `stdout` or `stderr`.
        stream: &'static str,
        /// The I/O error.
        source: io::Error,
    },
    /// Receiving a WebSocket message failed.
    #[error("receiving from the WebSocket")]
    Receive(#[source] tungstenite::Error),
    /// Sending a WebSocket message failed.
    #[error("sending to the WebSocket")]
    Send(#[source] tungstenite::Error),
    /// The WebSocket handshake failed.
    #[error("opening the WebSocket")]
    Handshake(#[source] tungstenite::Error),
    /// The peer broke the protocol.
    #[error("peer broke the channel protocol")]
    Protocol(#[from] ProtocolError),
    /// Nothing arrived from the peer, not even a pong, for too long.
    #[error(
        "peer silent for {0:?} (not even answering pings): connection declared dead; check the network path to the peer"
    )]
    PeerTimeout(Duration),
    /// The connection ended without a WebSocket close handshake.
    #[error("connection lost: the peer went away without closing the session")]
    PeerVanished,
}

impl Error {
    /// The I/O error behind a local read or write, if that is what failed.
    pub fn local_io(&self) -> Option<&io::Error> {
        match self {
            Error::ReadLocal { source, .. } | Error::WriteLocal { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// An error and its causes on one line, `outer: inner: innermost`, each said once: a cause
/// whose text the line already holds (libraries often repeat their source in their own
/// message) is left out.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let said = e.to_string();
        if !said.is_empty() && !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct E {
        text: &'static str,
        source: Option<Box<E>>,
    }

    fn e(text: &'static str, source: Option<E>) -> E {
        E {
            text,
            source: source.map(Box::new),
        }
    }

    #[test]
    fn a_chain_says_each_cause_once() {
        let inner = e("connection refused", None);
        let repeated = e("client error (Connect)", Some(inner));
        let wrapped = e("client error (Connect)", Some(repeated));
        let top = e("reaching the agent", Some(wrapped));
        assert_eq!(
            chain(&top),
            "reaching the agent: client error (Connect): connection refused"
        );
    }
}
