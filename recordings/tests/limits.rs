//! Failure handling: byte limits, I/O errors, and what is on disk after each event.

mod common;

use std::io::{self, Write};
use std::time::Duration;

use common::{read_all, scratch_file};
use kdbg_recordings::{Error, EventKind, Format, Header, Recorder, Stop};

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// The length of the header line of `Header::new(80, 24)`.
fn header_len(format: Format) -> usize {
    Recorder::new(format, Vec::new())
        .start(&Header::new(80, 24))
        .unwrap()
        .bytes_written() as usize
}

#[test]
fn the_byte_limit_stops_before_the_event_that_would_exceed_it() {
    let header_len = header_len(Format::V2) as u64;
    let first_line = b"[0.001000, \"o\", \"0123456789\"]\n".len() as u64;
    let limit = header_len + first_line + 10;
    let mut recording = Recorder::new(Format::V2, Vec::new())
        .with_byte_limit(limit)
        .start(&Header::new(80, 24))
        .unwrap();

    recording.write_output(ms(1), b"0123456789").unwrap();
    assert_eq!(recording.bytes_written(), header_len + first_line);
    let over = recording.write_output(ms(2), b"0123456789");
    assert!(
        matches!(over, Err(Error::ByteLimit { limit: l }) if l == limit),
        "{over:?}"
    );
    assert_eq!(recording.bytes_written(), header_len + first_line);
    let after = recording.write_output(ms(3), b"x");
    assert!(
        matches!(after, Err(Error::WriteAfterStop(Stop::ByteLimit { .. }))),
        "{after:?}"
    );
    assert!(matches!(recording.stopped(), Some(Stop::ByteLimit { .. })));

    let file = recording
        .end_incomplete(ms(4), "byte limit reached")
        .unwrap();
    let (reader, events) = read_all(&file);
    assert!(!reader.is_truncated());
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].time, ms(4));
    assert_eq!(
        events[1].kind,
        EventKind::Marker("incomplete: byte limit reached".into())
    );
}

/// A writer that accepts `room` bytes, then fails once; later writes succeed again.
#[derive(Debug)]
struct Flaky {
    data: Vec<u8>,
    room: usize,
    failed: bool,
}

impl Flaky {
    fn new(room: usize) -> Self {
        Flaky {
            data: Vec::new(),
            room,
            failed: false,
        }
    }
}

impl Write for Flaky {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.failed && self.data.len() + buf.len() > self.room {
            let n = self.room - self.data.len();
            if n == 0 {
                self.failed = true;
                return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
            }
            self.data.extend_from_slice(&buf[..n]);
            return Ok(n);
        }
        self.data.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_write_failing_mid_line_stops_the_recording_and_leaves_a_truncated_file() {
    let mut recording = Recorder::new(Format::V3, Flaky::new(header_len(Format::V3) + 40))
        .start(&Header::new(80, 24))
        .unwrap();
    recording.write_output(ms(1), b"first").unwrap();
    let failed = recording.write_output(ms(2), b"second, which does not fit");
    assert!(
        matches!(failed, Err(Error::WriteEvent(ref e)) if e.kind() == io::ErrorKind::StorageFull),
        "{failed:?}"
    );
    let stop = Stop::WriteFailed {
        kind: io::ErrorKind::StorageFull,
        partial_line: true,
    };
    assert_eq!(recording.stopped(), Some(stop));
    let after = recording.write_output(ms(3), b"third");
    assert!(
        matches!(after, Err(Error::WriteAfterStop(s)) if s == stop),
        "{after:?}"
    );

    // The writer works again, but a marker now would be glued to the half line.
    let ended = recording.end_incomplete(ms(4), "write failed");
    assert!(
        matches!(ended, Err(Error::WriteAfterStop(s)) if s == stop),
        "{ended:?}"
    );
}

#[test]
fn a_write_failing_mid_line_leaves_a_file_readable_up_to_the_failure() {
    let mut recording = Recorder::new(Format::V3, Flaky::new(header_len(Format::V3) + 40))
        .start(&Header::new(80, 24))
        .unwrap();
    recording.write_output(ms(1), b"first").unwrap();
    recording
        .write_output(ms(2), b"second, which does not fit")
        .unwrap_err();
    let (reader, events) = read_all(&recording.get_ref().data);
    assert_eq!(events.len(), 1);
    assert!(reader.is_truncated());
}

#[test]
fn a_write_failing_between_lines_can_still_be_marked_incomplete() {
    let first_line = b"[0.001000, \"o\", \"first\"]\n".len();
    let mut recording = Recorder::new(Format::V2, Flaky::new(header_len(Format::V2) + first_line))
        .start(&Header::new(80, 24))
        .unwrap();
    recording.write_output(ms(1), b"first").unwrap();
    recording
        .write(&common::event(
            2_000_000,
            EventKind::Resize { cols: 1, rows: 1 },
        ))
        .unwrap_err();
    let stop = Stop::WriteFailed {
        kind: io::ErrorKind::StorageFull,
        partial_line: false,
    };
    assert_eq!(recording.stopped(), Some(stop));

    let file = recording
        .end_incomplete(ms(3), "an earlier write failed")
        .unwrap()
        .data;
    let (reader, events) = read_all(&file);
    assert!(!reader.is_truncated());
    let kinds: Vec<EventKind> = events.into_iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Output("first".into()),
            EventKind::Marker("incomplete: an earlier write failed".into())
        ]
    );
}

/// Records the buffer of every `write` call and counts flushes.
#[derive(Default)]
struct Calls {
    writes: Vec<Vec<u8>>,
    flushes: usize,
}

impl Write for Calls {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writes.push(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flushes += 1;
        Ok(())
    }
}

#[test]
fn each_event_is_one_write_of_one_whole_line_then_a_flush() {
    let mut recording = Recorder::new(Format::V3, Calls::default())
        .start(&Header::new(80, 24))
        .unwrap();
    recording
        .write_output(ms(1), "many\nlines\r\nof output é".as_bytes())
        .unwrap();
    recording.write_input(ms(2), b"\x03").unwrap();
    recording
        .write(&common::event(3_000_000, EventKind::Exit(130)))
        .unwrap();
    let calls = recording.get_ref();
    assert_eq!(calls.writes.len(), 4);
    assert_eq!(calls.flushes, 4);
    for line in &calls.writes {
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1, "{line:?}");
        assert!(line.ends_with(b"\n"));
    }
}

#[test]
fn an_event_is_on_disk_as_soon_as_it_is_written() {
    let path = scratch_file("prompt.cast");
    let file = io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut recording = Recorder::new(Format::V2, file)
        .start(&Header::new(80, 24))
        .unwrap();
    recording.write_output(ms(1), b"seen").unwrap();
    let on_disk = std::fs::read(&path).unwrap();
    let (reader, events) = read_all(&on_disk);
    assert!(!reader.is_truncated());
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::Output("seen".into()));
}

/// A disk of `capacity` bytes holding one file: writes past it are cut short, then fail.
#[derive(Debug)]
struct Disk {
    data: Vec<u8>,
    capacity: usize,
    writes: usize,
}

impl Disk {
    fn new(capacity: usize) -> Self {
        Disk {
            data: Vec::new(),
            capacity,
            writes: 0,
        }
    }
}

impl Write for Disk {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.capacity - self.data.len();
        if room == 0 {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
        }
        let n = room.min(buf.len());
        self.data.extend_from_slice(&buf[..n]);
        self.writes += 1;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl kdbg_recordings::Truncate for Disk {
    fn truncate_to(&mut self, len: u64) -> io::Result<()> {
        self.data.truncate(len as usize);
        Ok(())
    }
}

#[test]
fn a_full_disk_cuts_back_to_whole_lines_and_makes_room_for_the_incomplete_marker() {
    let header = header_len(Format::V2);
    let line = b"[0.001000, \"o\", \"0123456789\"]\n".len();
    // Room for the header, three lines and half of a fourth.
    let mut recording = Recorder::new(Format::V2, Disk::new(header + 3 * line + line / 2))
        .start(&Header::new(80, 24))
        .unwrap();
    for i in 1..=3 {
        recording.write_output(ms(i), b"0123456789").unwrap();
    }
    let full = recording.write_output(ms(4), b"0123456789");
    assert!(matches!(full, Err(Error::WriteEvent(_))), "{full:?}");
    assert!(matches!(
        recording.stopped(),
        Some(Stop::WriteFailed {
            partial_line: true,
            ..
        })
    ));

    let disk = recording
        .end_incomplete_repairing(ms(5), "disk full")
        .unwrap();
    let (reader, events) = read_all(&disk.data);
    assert!(!reader.is_truncated(), "the half line is gone");
    let kinds: Vec<EventKind> = events.into_iter().map(|e| e.kind).collect();
    // The marker did not fit after three lines: the third made room for it.
    assert_eq!(
        kinds,
        [
            EventKind::Output("0123456789".into()),
            EventKind::Output("0123456789".into()),
            EventKind::Marker("incomplete: disk full".into()),
        ]
    );
}

#[test]
fn a_repair_never_takes_back_the_header() {
    let header = header_len(Format::V3);
    let mut recording = Recorder::new(Format::V3, Disk::new(header + 5))
        .start(&Header::new(80, 24))
        .unwrap();
    recording.write_output(ms(1), b"hello").unwrap_err();
    let failed = recording.end_incomplete_repairing(ms(2), "disk full");
    assert!(failed.is_err());
}

#[test]
fn batched_lines_reach_the_writer_in_one_write_when_flushed_or_when_the_batch_fills() {
    let line = b"[0.001000, \"o\", \"0123456789\"]\n".len();
    let mut recording = Recorder::new(Format::V2, Calls::default())
        .batched(3 * line)
        .start(&Header::new(80, 24))
        .unwrap();
    recording.write_output(ms(1), b"0123456789").unwrap();
    recording.write_output(ms(1), b"0123456789").unwrap();
    assert_eq!(
        recording.get_ref().writes.len(),
        1,
        "only the header so far"
    );
    recording.flush().unwrap();
    assert_eq!(recording.get_ref().writes.len(), 2);
    assert_eq!(recording.get_ref().writes[1].len(), 2 * line);
    for _ in 0..3 {
        recording.write_output(ms(1), b"0123456789").unwrap();
    }
    assert_eq!(
        recording.get_ref().writes.len(),
        3,
        "a full batch goes at once"
    );
    recording.write_output(ms(2), b"last").unwrap();
    let calls = recording.finish().unwrap();
    assert_eq!(calls.writes.len(), 4, "finishing hands over the rest");
    let file: Vec<u8> = calls.writes.concat();
    let (reader, events) = read_all(&file);
    assert!(!reader.is_truncated());
    assert_eq!(events.len(), 6);
}

#[test]
fn a_batched_recording_past_its_limit_keeps_what_it_accepted_before_the_marker() {
    let header = header_len(Format::V2) as u64;
    let line = b"[0.001000, \"o\", \"0123456789\"]\n".len() as u64;
    let mut recording = Recorder::new(Format::V2, Vec::new())
        .batched(1 << 16)
        .with_byte_limit(header + 2 * line)
        .start(&Header::new(80, 24))
        .unwrap();
    recording.write_output(ms(1), b"0123456789").unwrap();
    recording.write_output(ms(1), b"0123456789").unwrap();
    recording.write_output(ms(1), b"0123456789").unwrap_err();
    let file = recording
        .end_incomplete_repairing(ms(2), "byte limit reached")
        .unwrap();
    let (_, events) = read_all(&file);
    assert_eq!(events.len(), 3);
    assert_eq!(
        events[2].kind,
        EventKind::Marker("incomplete: byte limit reached".into())
    );
}
