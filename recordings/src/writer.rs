//! Writing a recording: [`Recorder`] before the header, [`Recording`] after it.
//!
//! The phases are types so the header is written exactly once: [`Recorder::start`] consumes
//! the recorder, writes the header and returns the only thing events can be written to.
//!
//! Every event is one complete line handed to the writer in one piece and flushed at once, so a
//! crash loses at most the event being written, and a file cut short stays readable up to its
//! last complete line. A recorder that keeps up with a fast stream can batch instead
//! ([`Recorder::batched`]): lines wait in memory until [`Recording::flush`] (or until a batch is
//! full) and go to the writer in one write, still whole lines only. Nothing here panics: a failed
//! write or a write past the byte limit stops the recording, and from then on writes return an
//! error ([`Error::WriteAfterStop`]). A writer that can be cut back ([`Truncate`], such as a
//! file) lets [`Recording::end_incomplete_repairing`] mark the end even after a write left half
//! a line behind, or the disk is full.

use std::collections::VecDeque;
use std::io::{self, Seek, Write};
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
    batch: usize,
}

/// How many of the last lines' positions a recording remembers, so that a repair can take
/// back that many events to make room for its marker on a full disk.
const REMEMBERED_LINES: usize = 8;

/// A writer whose end can be cut back: what [`Recording::end_incomplete_repairing`] needs to
/// remove half a line or make room for its marker.
pub trait Truncate {
    /// Cuts the data back to `len` bytes; the next write goes at the new end.
    fn truncate_to(&mut self, len: u64) -> io::Result<()>;
}

impl Truncate for std::fs::File {
    fn truncate_to(&mut self, len: u64) -> io::Result<()> {
        self.set_len(len)?;
        self.seek(io::SeekFrom::Start(len)).map(drop)
    }
}

impl Truncate for Vec<u8> {
    fn truncate_to(&mut self, len: u64) -> io::Result<()> {
        self.truncate(usize::try_from(len).unwrap_or(usize::MAX));
        Ok(())
    }
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
            batch: 0,
        }
    }

    /// Batches lines: they wait in memory until [`Recording::flush`], or until `bytes` of them
    /// wait, then go to the writer in one write (and one flush). For a recorder that drains a
    /// queue of events: flushing whenever the queue is empty keeps the file as current as the
    /// queue, while a burst costs one write per batch instead of one per event.
    pub fn batched(mut self, bytes: usize) -> Self {
        self.batch = bytes;
        self
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
        let header_len = line.len() as u64;
        Ok(Recording {
            format: self.format,
            out: self.out,
            byte_limit: self.byte_limit,
            bytes_written: header_len,
            whole: header_len,
            starts: VecDeque::with_capacity(REMEMBERED_LINES),
            pending: Vec::with_capacity(self.batch),
            pending_ends: Vec::new(),
            batch: self.batch,
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
    /// Bytes accepted (handed to the writer, or batched), header included.
    bytes_written: u64,
    /// Bytes of whole lines the writer has, header included.
    whole: u64,
    /// Where the last few lines the writer has start.
    starts: VecDeque<u64>,
    /// Lines accepted and not yet handed to the writer (batching only).
    pending: Vec<u8>,
    /// Where each line in `pending` ends.
    pending_ends: Vec<usize>,
    /// Hand `pending` over once it holds this many bytes; 0: every line at once.
    batch: usize,
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

    /// Bytes accepted so far (handed to the writer, or waiting in a batch), header included.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Hands any batched lines to the writer in one write, and flushes it. Without batching
    /// there is never anything waiting.
    pub fn flush(&mut self) -> Result<(), Error> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if let Some(stop) = self.stopped {
            return Err(Error::WriteAfterStop(stop));
        }
        self.hand_over()
    }

    /// Why the recording stopped, if it did.
    pub fn stopped(&self) -> Option<Stop> {
        self.stopped
    }

    /// The writer, e.g. to look at what a stopped recording left behind.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// The writer, e.g. to take the lines written to a buffer. Taking bytes from it is fine;
    /// the recording does not look at what it wrote.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
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
        self.flush()?;
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
        self.write_marker_now(time, reason)?;
        Ok(self.out)
    }

    /// [`Recording::end_incomplete`] for a writer that can be cut back: after a write that
    /// left half a line behind, cuts the file back to its last whole line first; when the
    /// marker does not fit (a full disk), takes back the last events one by one (up to
    /// eight) until it does. The header is never taken back. Fails, with the file ending in
    /// whole lines, if the marker cannot be written even so.
    pub fn end_incomplete_repairing(mut self, time: Duration, reason: &str) -> Result<W, Error>
    where
        W: Truncate,
    {
        if matches!(
            self.stopped,
            Some(Stop::WriteFailed {
                partial_line: true,
                ..
            })
        ) {
            self.out
                .truncate_to(self.whole)
                .map_err(Error::WriteEvent)?;
            self.stopped = Some(Stop::WriteFailed {
                kind: io::ErrorKind::Other,
                partial_line: false,
            });
        }
        loop {
            match self.write_marker_now(time, reason) {
                Ok(()) => return Ok(self.out),
                Err(e) => {
                    // Whatever the failed marker left behind goes, and the last event with it.
                    let Some(start) = self.starts.pop_back() else {
                        let _ = self.out.truncate_to(self.whole);
                        return Err(e);
                    };
                    self.out.truncate_to(start).map_err(Error::WriteEvent)?;
                    self.whole = start;
                }
            }
        }
    }

    /// Writes the `incomplete` marker at once, past the byte limit and after a stop, after
    /// any batched lines.
    fn write_marker_now(&mut self, time: Duration, reason: &str) -> Result<(), Error> {
        // Batched lines were accepted (a failed write leaves none): they go first.
        if !self.pending.is_empty() {
            self.hand_over()?;
        }
        self.line.clear();
        let (time, field) = self.stamp(time);
        let label = [format::INCOMPLETE_MARKER_PREFIX, reason].concat();
        line::push_text(&mut self.line, field, line::MARKER, &label);
        self.pending_ends.clear();
        std::mem::swap(&mut self.line, &mut self.pending);
        self.pending_ends.push(self.pending.len());
        let result = self.hand_over();
        std::mem::swap(&mut self.line, &mut self.pending);
        result?;
        self.last_time = time;
        Ok(())
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

    /// Accepts the line in `self.line` (an event at `time`): hands it to the writer in one
    /// piece and flushes, or adds it to the batch; with `limited`, only if it fits under the
    /// byte limit.
    fn commit(&mut self, time: u64, limited: bool) -> Result<(), Error> {
        let len = self.line.len() as u64;
        if let Some(limit) = self.byte_limit.filter(|_| limited)
            && self.bytes_written.saturating_add(len) > limit
        {
            self.line.clear();
            self.stopped = Some(Stop::ByteLimit { limit });
            return Err(Error::ByteLimit { limit });
        }
        if self.batch > 0 {
            self.pending.extend_from_slice(&self.line);
            self.pending_ends.push(self.pending.len());
            self.line.clear();
            self.bytes_written += len;
            self.last_time = time;
            if self.pending.len() >= self.batch {
                return self.hand_over();
            }
            return Ok(());
        }
        std::mem::swap(&mut self.line, &mut self.pending);
        self.pending_ends.push(self.pending.len());
        let result = self.hand_over();
        std::mem::swap(&mut self.line, &mut self.pending);
        self.bytes_written += len;
        if result.is_ok() {
            self.last_time = time;
        }
        result
    }

    /// Writes `pending` (whole lines) in one piece and flushes; on failure, stops the
    /// recording, noting whether the writer may now end in part of a line.
    fn hand_over(&mut self) -> Result<(), Error> {
        let mut done = 0;
        let mut flushing = false;
        let result = loop {
            match self.out.write(&self.pending[done..]) {
                Ok(0) => break Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    done += n;
                    if done == self.pending.len() {
                        flushing = true;
                        break self.out.flush();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        // Remember where the lines now with the writer start, and how far they are whole.
        let mut at = 0;
        for &end in self.pending_ends.iter().take_while(|&&end| end <= done) {
            if self.starts.len() == REMEMBERED_LINES {
                self.starts.pop_front();
            }
            self.starts.push_back(self.whole + at as u64);
            at = end;
        }
        self.whole += at as u64;
        self.pending.clear();
        self.pending_ends.clear();
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                // A write that stopped mid-line leaves part of it behind; a failed flush may
                // leave any part of the lines behind in a buffered writer.
                let partial_line = done > 0 && (flushing || at != done);
                self.stopped = Some(Stop::WriteFailed {
                    kind: e.kind(),
                    partial_line,
                });
                Err(Error::WriteEvent(e))
            }
        }
    }
}
