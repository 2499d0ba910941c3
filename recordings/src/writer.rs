//! Writing a recording: [`Recorder`] before the header, [`Recording`] after it.
//!
//! The phases are types so the header is written exactly once: [`Recorder::start`] consumes
//! the recorder, writes the header and returns the only thing events can be written to.
//!
//! Every event is one complete line handed to the writer in one piece and flushed at once, so a
//! crash loses at most the event being written, and a file cut short stays readable up to its
//! last complete line. Nothing here panics: a failed write or a write past the byte limit stops
//! the recording, and from then on writes return an error ([`Error::WriteAfterStop`]).

use std::io::{self, Write};
use std::time::Duration;

use crate::error::{Error, Stop};
use crate::event::{Event, EventKind};
use crate::format::{self, Format};
use crate::header::{self, Header};
use crate::line;
use crate::utf8::Utf8Carry;

/// A recording that has not started: where and how to write it.
#[derive(Debug)]
pub struct Recorder<W> {
    format: Format,
    out: W,
    byte_limit: Option<u64>,
}

impl<W: Write> Recorder<W> {
    /// A recorder writing `format` to `out`, with no byte limit.
    ///
    /// `out` gets one `write` per line followed by a `flush`; a [`std::fs::File`] needs no
    /// buffer in front of it.
    pub fn new(format: Format, out: W) -> Self {
        Recorder {
            format,
            out,
            byte_limit: None,
        }
    }

    /// Limits the recording to `limit` bytes, header included. An event that would exceed it is
    /// not written; the recording stops instead (see [`Recording::end_incomplete`], whose
    /// marker may take the file up to one short line past the limit).
    pub fn with_byte_limit(mut self, limit: u64) -> Self {
        self.byte_limit = Some(limit);
        self
    }

    /// Writes the header and returns the live recording. The header is always written, even if
    /// it alone exceeds the byte limit.
    pub fn start(mut self, header: &Header) -> Result<Recording<W>, Error> {
        let mut line = Vec::with_capacity(256);
        header::encode(self.format, header, &mut line).map_err(|e| Error::WriteHeader(e.into()))?;
        self.out
            .write_all(&line)
            .and_then(|()| self.out.flush())
            .map_err(Error::WriteHeader)?;
        Ok(Recording {
            format: self.format,
            out: self.out,
            byte_limit: self.byte_limit,
            bytes_written: line.len() as u64,
            line,
            last_time: 0,
            output: Utf8Carry::default(),
            input: Utf8Carry::default(),
            stopped: None,
        })
    }
}

/// A recording whose header is written: events go here.
///
/// Times must not go backwards; an event earlier than the one before it is written at the
/// earlier event's time. Finish with [`Recording::finish`], or [`Recording::end_incomplete`]
/// after an error; dropping the recording loses only a carried incomplete character (at most 3
/// bytes of output and 3 of input), everything else is already written.
#[derive(Debug)]
pub struct Recording<W> {
    format: Format,
    out: W,
    byte_limit: Option<u64>,
    bytes_written: u64,
    /// The line being written, reused for every event.
    line: Vec<u8>,
    /// The rounded time of the last event written, in [`format::TIME_UNIT`]s.
    last_time: u64,
    output: Utf8Carry,
    input: Utf8Carry,
    stopped: Option<Stop>,
}

/// Which of the two text streams a chunk belongs to.
#[derive(Clone, Copy)]
enum Stream {
    Output,
    Input,
}

impl<W: Write> Recording<W> {
    /// Writes one event.
    ///
    /// Output and input are decoded as UTF-8 per stream (see the crate docs); a chunk that only
    /// starts a character writes nothing yet. Writing [`EventKind::Exit`] first writes any
    /// incomplete character still carried as U+FFFD: no more bytes can complete it.
    pub fn write(&mut self, event: &Event) -> Result<(), Error> {
        match &event.kind {
            EventKind::Output(data) => self.write_output(event.time, data),
            EventKind::Input(data) => self.write_input(event.time, data),
            EventKind::Resize { cols, rows } => {
                self.check_live()?;
                let (time, field) = self.stamp(event.time);
                line::push_resize(&mut self.line, field, *cols, *rows);
                self.commit(time, true)
            }
            EventKind::Marker(label) => {
                self.check_live()?;
                let (time, field) = self.stamp(event.time);
                line::push_text(&mut self.line, field, line::MARKER, label);
                self.commit(time, true)
            }
            EventKind::Exit(status) => {
                self.flush_carries(event.time)?;
                self.check_live()?;
                let (time, field) = self.stamp(event.time);
                line::push_exit(&mut self.line, self.format, field, *status);
                self.commit(time, true)
            }
        }
    }

    /// Writes output bytes at `time`: the same as [`Recording::write`] with
    /// [`EventKind::Output`], without building an event.
    pub fn write_output(&mut self, time: Duration, data: &[u8]) -> Result<(), Error> {
        self.write_text(Stream::Output, time, data)
    }

    /// Writes input bytes at `time`: the same as [`Recording::write`] with
    /// [`EventKind::Input`], without building an event.
    pub fn write_input(&mut self, time: Duration, data: &[u8]) -> Result<(), Error> {
        self.write_text(Stream::Input, time, data)
    }

    /// Bytes handed to the writer so far, header included.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Why the recording stopped, if it did.
    pub fn stopped(&self) -> Option<Stop> {
        self.stopped
    }

    /// The writer, e.g. to look at what a stopped recording left behind.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// The format being written.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Ends the recording normally: writes any carried incomplete character as U+FFFD, flushes,
    /// and returns the writer. Fails if the recording had stopped.
    pub fn finish(mut self) -> Result<W, Error> {
        let time = format::from_units(self.last_time);
        self.flush_carries(time)?;
        self.out.flush().map_err(Error::Finish)?;
        Ok(self.out)
    }

    /// Ends a recording that cannot go on (byte limit reached, write failed, or any reason of
    /// the caller's) with the marker `incomplete: <reason>` at `time`, and returns the writer.
    ///
    /// The marker is written even past the byte limit. It is not written when a failed write
    /// may have left part of a line behind ([`Stop::WriteFailed`] with `partial_line`): the
    /// file then ends in a truncated line, which readers handle, and this returns the error.
    pub fn end_incomplete(mut self, time: Duration, reason: &str) -> Result<W, Error> {
        let partial = |stop: &Stop| {
            matches!(
                stop,
                Stop::WriteFailed {
                    partial_line: true,
                    ..
                }
            )
        };
        if let Some(stop) = self.stopped.filter(partial) {
            return Err(Error::WriteAfterStop(stop));
        }
        self.line.clear();
        let (time, field) = self.stamp(time);
        let label = [format::INCOMPLETE_MARKER_PREFIX, reason].concat();
        line::push_text(&mut self.line, field, line::MARKER, &label);
        self.commit(time, false)?;
        Ok(self.out)
    }

    fn write_text(&mut self, stream: Stream, time: Duration, data: &[u8]) -> Result<(), Error> {
        self.check_live()?;
        let (time, field) = self.stamp(time);
        let (carry, code) = match stream {
            Stream::Output => (&mut self.output, line::OUTPUT),
            Stream::Input => (&mut self.input, line::INPUT),
        };
        let text = carry.decode(data);
        if text.is_empty() {
            return Ok(());
        }
        line::push_text(&mut self.line, field, code, text);
        self.commit(time, true)
    }

    /// Writes each stream's carried incomplete character as one U+FFFD at `time`.
    fn flush_carries(&mut self, time: Duration) -> Result<(), Error> {
        self.check_live()?;
        for stream in [Stream::Output, Stream::Input] {
            let (carry, code) = match stream {
                Stream::Output => (&mut self.output, line::OUTPUT),
                Stream::Input => (&mut self.input, line::INPUT),
            };
            if let Some(text) = carry.finish() {
                self.check_live()?;
                let (time, field) = self.stamp(time);
                line::push_text(&mut self.line, field, code, text);
                self.commit(time, true)?;
            }
        }
        Ok(())
    }

    /// `time` in units, never before the last event's, and the event's `time` field: the
    /// same in v2, the interval since the last event in v3.
    fn stamp(&self, time: Duration) -> (u64, u64) {
        let time = format::to_units(time).max(self.last_time);
        match self.format {
            Format::V2 => (time, time),
            Format::V3 => (time, time - self.last_time),
        }
    }

    /// Starts a line: fails if the recording has stopped, else empties the line buffer.
    fn check_live(&mut self) -> Result<(), Error> {
        self.line.clear();
        match self.stopped {
            Some(stop) => Err(Error::WriteAfterStop(stop)),
            None => Ok(()),
        }
    }

    /// Writes the line in `self.line` (an event at `time`) in one piece and flushes it; with
    /// `limited`, only if it fits under the byte limit.
    fn commit(&mut self, time: u64, limited: bool) -> Result<(), Error> {
        let len = self.line.len() as u64;
        if let Some(limit) = self.byte_limit.filter(|_| limited)
            && self.bytes_written.saturating_add(len) > limit
        {
            self.line.clear();
            self.stopped = Some(Stop::ByteLimit { limit });
            return Err(Error::ByteLimit { limit });
        }
        let mut done = 0;
        let result = loop {
            match self.out.write(&self.line[done..]) {
                Ok(0) => break Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    done += n;
                    if done == self.line.len() {
                        break self.out.flush();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.bytes_written += done as u64;
        self.line.clear();
        match result {
            Ok(()) => {
                self.last_time = time;
                Ok(())
            }
            Err(e) => {
                // A failed flush may leave any part of the line behind in a buffered writer.
                let partial_line = done > 0;
                self.stopped = Some(Stop::WriteFailed {
                    kind: e.kind(),
                    partial_line,
                });
                Err(Error::WriteEvent(e))
            }
        }
    }
}
