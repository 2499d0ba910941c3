//! Helpers shared by the integration tests: a sample session, and writing and reading whole
//! recordings in memory.

#![allow(dead_code)] // Each test file uses a different part of this module.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use kdbg_recordings::{Event, EventKind, Format, Header, Metadata, Reader, Recorder};

/// The header of the sample session, every attribute set.
pub fn sample_header() -> Header {
    let metadata = Metadata {
        pod: Some("web-1".into()),
        namespace: Some("default".into()),
        target: Some("app".into()),
        image: Some("busybox:1.36".into()),
        user: Some("alice".into()),
        session_id: Some("s-42".into()),
        node: Some("node-a".into()),
        node_level: None,
    };
    Header {
        cols: 80,
        rows: 24,
        timestamp: Some(1_700_000_000),
        command: Some("/bin/sh".into()),
        title: metadata.title(),
        env: [("TERM", "xterm-256color"), ("SHELL", "/bin/sh")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        idle_time_limit: Some(2.0),
        metadata,
    }
}

/// The sample session: typing, a character split across two chunks, escapes, a resize at a
/// time that needs rounding, a marker, invalid bytes and an exit.
pub fn sample_events() -> Vec<Event> {
    vec![
        output(100_000_000, b"$ "),
        input(500_000_000, b"l"),
        input(600_000_000, b"s\r"),
        output(700_000_000, b"caf\xc3"),
        output(700_000_400, b"\xa9\r\n\x1b[1mbold\x1b[0m\r\n"),
        event(
            1_234_567_500,
            EventKind::Resize {
                cols: 100,
                rows: 30,
            },
        ),
        event(2_000_000_000, EventKind::Marker("checkpoint".into())),
        output(2_500_000_000, b"bad \xff\xfe byte\r\n"),
        event(3_000_000_000, EventKind::Exit(0)),
    ]
}

/// An event at `nanos` since the start.
pub fn event(nanos: u64, kind: EventKind) -> Event {
    Event::new(Duration::from_nanos(nanos), kind)
}

/// An output event at `nanos` since the start.
pub fn output(nanos: u64, data: &[u8]) -> Event {
    event(nanos, EventKind::Output(Bytes::copy_from_slice(data)))
}

/// An input event at `nanos` since the start.
pub fn input(nanos: u64, data: &[u8]) -> Event {
    event(nanos, EventKind::Input(Bytes::copy_from_slice(data)))
}

/// Records `events` after `header` in memory and returns the file.
pub fn record(format: Format, header: &Header, events: &[Event]) -> Vec<u8> {
    let mut recording = Recorder::new(format, Vec::new()).start(header).unwrap();
    for event in events {
        recording.write(event).unwrap();
    }
    recording.finish().unwrap()
}

/// Reads a whole recording: its reader (for the header and truncation) and its events.
pub fn read_all(file: &[u8]) -> (Reader<&[u8]>, Vec<Event>) {
    let mut reader = Reader::new(file).unwrap();
    let mut events = Vec::new();
    while let Some(event) = reader.next_event().unwrap() {
        events.push(event);
    }
    (reader, events)
}

/// All output of `events`, concatenated.
pub fn all_output(events: &[Event]) -> Vec<u8> {
    let mut all = Vec::new();
    for event in events {
        if let EventKind::Output(data) = &event.kind {
            all.extend_from_slice(data);
        }
    }
    all
}

/// A path for a file named `name` in cargo's scratch directory for integration tests, with
/// no file there yet. Each test uses its own names; the files of the last run stay there to be
/// looked at.
pub fn scratch_file(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kdbg-recordings");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}
