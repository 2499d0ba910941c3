//! The event model: what happened in a terminal session and when, independent of any file
//! format and of any clock.
//!
//! Times are [`Duration`]s since the recording's start, given by the caller: the recorder never
//! reads a clock, so tests are deterministic and the agent decides what "start" means. Each
//! format maps this one model to its own lines (see [`crate::Format`]).

use std::time::Duration;

use bytes::Bytes;

/// One thing that happened in a terminal session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// When it happened, since the start of the recording.
    pub time: Duration,
    /// What happened.
    pub kind: EventKind,
}

impl Event {
    /// An event of `kind` at `time` since the start of the recording.
    pub fn new(time: Duration, kind: EventKind) -> Self {
        Event { time, kind }
    }
}

/// What happened in a terminal session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// Bytes the process wrote to the terminal. Need not be valid UTF-8, and a character may be
    /// split across two events: the writer takes care of both (see the crate docs).
    Output(Bytes),
    /// Bytes the user typed, sent to the process's stdin. Same UTF-8 rules as
    /// [`EventKind::Output`], with a carry of its own.
    Input(Bytes),
    /// The terminal changed size.
    Resize {
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
    },
    /// A labelled point in time, e.g. `incomplete: byte limit reached`; the label may be empty.
    Marker(String),
    /// The session's main process exited with this status. In asciicast v2, which has no exit
    /// event, this is written as the marker `exit STATUS` (see [`crate::Format::V2`]).
    Exit(i32),
}
