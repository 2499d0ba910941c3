//! The observer tap: a recorder or a metrics collector sees what a session carries without ever
//! slowing it down.
//!
//! Output chunks are handed over as `Bytes` clones (a reference count, never a copy). The tap is a
//! bounded channel filled with `try_send`: if the observer falls behind and the channel is full,
//! the session drops the tap with a warning and goes on. An observer that went away is dropped
//! quietly.

use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::resize::TerminalSize;
use crate::status::ExitStatus;

/// Something a session carried, with the moment it did.
#[derive(Debug, Clone)]
pub struct Event {
    /// When the session saw it.
    pub at: Instant,
    /// What it was.
    pub kind: EventKind,
}

/// The kinds of [`Event`].
#[derive(Debug, Clone)]
pub enum EventKind {
    /// Process output; `channel` is [`crate::codec::STDOUT`] or [`crate::codec::STDERR`].
    Output {
        /// Which stream.
        channel: u8,
        /// The bytes, shared with the session.
        data: Bytes,
    },
    /// The terminal was resized.
    Resize(TerminalSize),
    /// The process ended.
    Exit(ExitStatus),
}

/// The session's end of an observer channel.
#[derive(Debug)]
pub struct Tap {
    tx: mpsc::Sender<Event>,
}

/// Why a tap was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapDropped {
    /// The observer fell `capacity` events behind.
    TooSlow,
    /// The observer's receiver was dropped.
    Gone,
}

impl Tap {
    /// A tap and the observer's receiver; the observer may fall at most `capacity` events behind.
    pub fn new(capacity: usize) -> (Tap, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Tap { tx }, rx)
    }

    /// Offers an event without waiting. An error means the tap must be dropped.
    pub fn offer(&self, kind: EventKind) -> Result<(), TapDropped> {
        let event = Event {
            at: Instant::now(),
            kind,
        };
        self.tx.try_send(event).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => TapDropped::TooSlow,
            mpsc::error::TrySendError::Closed(_) => TapDropped::Gone,
        })
    }
}
