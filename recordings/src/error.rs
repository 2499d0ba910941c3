//! The crate's errors: one enum for what failed, one for what was wrong with a line read.
//!
//! Writing never panics: a failed write, or a write past the byte limit, stops the recording and
//! says why; every later write returns [`Error::WriteAfterStop`] with that reason.

use std::io;

/// Why a recording or reading one failed. Each variant names the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing the header line failed.
    #[error("writing the recording's header")]
    WriteHeader(#[source] io::Error),
    /// Writing (or flushing) an event line failed. The recording has stopped.
    #[error("writing an event to the recording")]
    WriteEvent(#[source] io::Error),
    /// The event would have taken the recording past its byte limit, so it was not written.
    /// The recording has stopped; [`crate::Recording::end_incomplete`] can still mark the end.
    #[error("the recording reached its byte limit of {limit} bytes")]
    ByteLimit {
        /// The limit given to [`crate::Recorder::with_byte_limit`].
        limit: u64,
    },
    /// A write to a recording that had already stopped.
    #[error("writing to a recording that has stopped")]
    WriteAfterStop(#[source] Stop),
    /// Flushing the last bytes when finishing the recording failed.
    #[error("finishing the recording")]
    Finish(#[source] io::Error),
    /// Reading or understanding one line of a recording failed. Line 1 is the header.
    #[error("reading line {line} of the recording")]
    ReadLine {
        /// The line number, counting from 1.
        line: u64,
        /// What was wrong with it.
        source: LineError,
    },
}

/// Why a recording stopped accepting events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Stop {
    /// An event would have exceeded the byte limit.
    #[error("it reached its byte limit of {limit} bytes")]
    ByteLimit {
        /// The limit.
        limit: u64,
    },
    /// Writing an event failed.
    #[error("an earlier write failed ({kind})")]
    WriteFailed {
        /// The kind of the I/O error (the error itself was returned by the failed write).
        kind: io::ErrorKind,
        /// Whether the output may now end in part of a line. If so, nothing more is written,
        /// not even a marker: a marker glued to half a line would be one unreadable line in
        /// the middle of the file, while a half line at the end reads as a truncated file.
        partial_line: bool,
    },
}

/// What was wrong with a line of a recording.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// Reading from the input failed.
    #[error("I/O error")]
    Io(#[from] io::Error),
    /// The input is empty: there is not even a header.
    #[error("the input is empty; an asciicast file starts with a header line")]
    NoHeader,
    /// The line is not JSON of the expected shape (a header object or a 3-element event array).
    #[error("not an asciicast line")]
    Json(#[from] serde_json::Error),
    /// The header names a format version this crate does not read.
    #[error("asciicast version {0}; only versions 2 and 3 can be read")]
    Version(u64),
    /// The header lacks a required attribute.
    #[error("the header lacks the required attribute `{0}`")]
    MissingAttribute(&'static str),
    /// An event's time is negative, not a number, or too large.
    #[error("event time {0} is not a non-negative number of seconds")]
    Time(f64),
    /// A resize event's data is not `COLSxROWS`.
    #[error("resize data {0:?} is not COLSxROWS")]
    Resize(String),
    /// An exit event's data is not an integer status.
    #[error("exit data {0:?} is not an integer status")]
    Exit(String),
}
