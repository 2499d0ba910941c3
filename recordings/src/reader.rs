//! Reading a recording of either version back into the event model.
//!
//! The replay and the tests use this. Times come out absolute (since the start) whatever the
//! version. A recording whose writer died mid-line is normal here, not an error: a last line
//! cut short ends the events cleanly and [`Reader::is_truncated`] says so.

use std::io::BufRead;
use std::time::Duration;

use crate::error::{Error, LineError};
use crate::event::Event;
use crate::format::Format;
use crate::header::{self, Header};
use crate::line;

/// Reads a recording: the header at once, then events one by one.
///
/// Skipped on the way: empty lines, v3 comment lines (`#...`), and events with codes this
/// crate does not know (v3's interval still counts, so later times stay right), as the spec
/// requires of readers.
#[derive(Debug)]
pub struct Reader<R> {
    input: R,
    format: Format,
    header: Header,
    /// Number of the last line read.
    line_no: u64,
    buf: Vec<u8>,
    /// v3: the sum of the intervals read so far.
    clock: Duration,
    truncated: bool,
    done: bool,
}

/// One line as read.
enum Line {
    /// The end of the input.
    End,
    /// A line, and whether it ended with a newline.
    Text { complete: bool },
}

impl<R: BufRead> Reader<R> {
    /// Reads the header and detects the version from it. A header cut short is an error, not a
    /// truncation: there is nothing before it to read.
    pub fn new(input: R) -> Result<Self, Error> {
        let mut reader = Reader {
            input,
            format: Format::V2,
            header: Header::default(),
            line_no: 0,
            buf: Vec::new(),
            clock: Duration::ZERO,
            truncated: false,
            done: false,
        };
        if let Line::End = reader.read_line()? {
            return Err(reader.error(LineError::NoHeader));
        }
        let (format, header) = header::decode(&reader.buf).map_err(|e| reader.error(e))?;
        reader.format = format;
        reader.header = header;
        Ok(reader)
    }

    /// The version found in the header.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The next event, `Ok(None)` at the end of the recording (clean or truncated).
    ///
    /// After an error, or at the end, it keeps returning `Ok(None)`.
    pub fn next_event(&mut self) -> Result<Option<Event>, Error> {
        while !self.done {
            let complete = match self.read_line() {
                Ok(Line::Text { complete }) => complete,
                Ok(Line::End) => break,
                Err(e) => {
                    self.done = true;
                    return Err(e);
                }
            };
            let text = self.buf.trim_ascii();
            if text.is_empty() || (self.format == Format::V3 && text.starts_with(b"#")) {
                continue;
            }
            let parsed = match line::parse(text) {
                Ok(parsed) => parsed,
                Err(e) => {
                    self.done = true;
                    if self.is_cut_short(complete, &e) {
                        self.truncated = true;
                        break;
                    }
                    return Err(self.error(e));
                }
            };
            let time = match self.format {
                Format::V2 => parsed.time,
                Format::V3 => match self.clock.checked_add(parsed.time) {
                    Some(time) => time,
                    None => {
                        self.done = true;
                        return Err(self.error(LineError::Time(parsed.time.as_secs_f64())));
                    }
                },
            };
            self.clock = time;
            if let Some(kind) = parsed.kind {
                return Ok(Some(Event { time, kind }));
            }
        }
        self.done = true;
        Ok(None)
    }

    /// Whether the recording ended in a line cut short (its writer stopped mid-line). Known
    /// once [`Reader::next_event`] has returned `Ok(None)`.
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }

    /// Whether a line that is not valid JSON is the remains of a write cut short: a last line
    /// without its newline (no strict prefix of an event line is valid JSON), or a last line
    /// whose JSON just stops. Well-formed JSON with bad data is an error wherever it is.
    fn is_cut_short(&mut self, complete: bool, error: &LineError) -> bool {
        let LineError::Json(error) = error else {
            return false;
        };
        // If looking ahead fails, the line's own error is reported.
        !complete || (error.is_eof() && self.input.fill_buf().is_ok_and(|rest| rest.is_empty()))
    }

    /// Reads the next line into `self.buf`.
    fn read_line(&mut self) -> Result<Line, Error> {
        self.buf.clear();
        let n = self
            .input
            .read_until(b'\n', &mut self.buf)
            .map_err(|e| Error::ReadLine {
                line: self.line_no + 1,
                source: e.into(),
            })?;
        if n == 0 {
            return Ok(Line::End);
        }
        self.line_no += 1;
        Ok(Line::Text {
            complete: self.buf.ends_with(b"\n"),
        })
    }

    fn error(&self, source: LineError) -> Error {
        Error::ReadLine {
            line: self.line_no.max(1),
            source,
        }
    }
}

impl<R: BufRead> Iterator for Reader<R> {
    type Item = Result<Event, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_event().transpose()
    }
}
