//! Terminal session recordings: one event model, asciicast v2 and v3 writers, and a reader.
//!
//! The agent records debug sessions so that they can be replayed and audited with asciinema's
//! tools. This crate knows nothing of Kubernetes, WebSockets or clocks: the caller turns what it
//! sees into [`Event`]s with times since the start, and this crate turns them into lines.
//!
//! - [`event`]: the event model, independent of the file format;
//! - [`header`]: the header, including kubectl-debug's metadata and where it is written;
//! - [`format`](mod@format): the two asciicast versions and how times are written;
//! - [`writer`]: [`Recorder`] then [`Recording`], the writer's phases as types;
//! - [`reader`]: [`Reader`] for both versions;
//! - [`utf8`]: terminal bytes to text, chunk by chunk ([`Utf8Carry`]);
//! - [`error`]: what can fail.
//!
//! ```
//! use std::time::Duration;
//! use kdbg_recordings::{Format, Header, Reader, Recorder};
//!
//! let mut recording = Recorder::new(Format::V2, Vec::new()).start(&Header::new(80, 24))?;
//! recording.write_output(Duration::from_millis(250), "h\u{e9}".as_bytes())?;
//! let file = recording.finish()?;
//! let expected = "{\"version\":2,\"width\":80,\"height\":24}\n[0.250000, \"o\", \"h\u{e9}\"]\n";
//! assert_eq!(file, expected.as_bytes());
//!
//! let mut reader = Reader::new(&file[..])?;
//! assert_eq!(reader.header().cols, 80);
//! assert_eq!(reader.next_event()?.unwrap().time, Duration::from_millis(250));
//! # Ok::<(), kdbg_recordings::Error>(())
//! ```
//!
//! # Terminal data as text
//!
//! asciicast stores output and input as JSON strings, so bytes must become UTF-8. A character
//! split across two chunks of the same stream (output and input each have their own carry) is
//! written whole with the later chunk; invalid bytes become U+FFFD exactly as
//! [`String::from_utf8_lossy`] would replace them in the whole stream, wherever the chunks
//! were cut; a character still incomplete at the end becomes one U+FFFD. serde_json escapes
//! control characters (`\u001b`, `\r`, `\n`).
//!
//! # Crash safety and limits
//!
//! Each event is one complete line, handed to the writer in one `write` and flushed at once:
//! a crash loses at most the event being written, and a file cut short is read by [`Reader`]
//! up to its last complete line (marked [`Reader::is_truncated`]). asciinema 2.2 `cat` and
//! `play` print the output of every complete line of such a file, then fail on the broken one
//! with a Python traceback (exit status 1). A byte limit stops the recording before the event
//! that would exceed it; [`Recording::end_incomplete`] then marks the end with
//! `incomplete: <reason>`. Nothing panics; writes after a failure return the error.
//!
//! # What asciinema 2.2 (Debian's `asciinema` package) accepts
//!
//! Checked against its source and by `tests/asciinema.rs`:
//!
//! - v2 files with any event codes: `cat` and `play` only look at `"o"` events and skip the
//!   rest, so markers (`"m"`) are fine, and so would be `"x"` (not used in v2 here: asciicast v2
//!   does not define it). Unknown header keys, such as our nested metadata object, are ignored.
//! - v3 files not at all: "only asciicast v1 and v2 formats can be opened". Hence v2 is the
//!   default [`Format`].
//! - `asciinema cat` needs a terminal: it opens `/dev/tty` and fails without one (run it under
//!   `script -qec`); `asciinema play` falls back to playing without keyboard control.

pub mod error;
pub mod event;
pub mod format;
pub mod header;
mod line;
pub mod reader;
pub mod utf8;
pub mod writer;

pub use error::{Error, LineError, Stop};
pub use event::{Event, EventKind};
pub use format::{EXIT_MARKER_PREFIX, Format, INCOMPLETE_MARKER_PREFIX, TIME_UNIT};
pub use header::{Header, METADATA_KEY, Metadata};
pub use reader::Reader;
pub use utf8::Utf8Carry;
pub use writer::{Recorder, Recording, Truncate};
