//! What the writer writes, the reader reads back: header, events and absolute times.

mod common;

use std::time::Duration;

use common::{event, input, output, read_all, record, sample_header};
use kdbg_recordings::{EventKind, Format, Header};

/// Events at whole microseconds, every kind, valid UTF-8: they must come back unchanged.
fn exact_events() -> Vec<kdbg_recordings::Event> {
    vec![
        output(1_000, "\u{1b}[32mgrün\u{1b}[0m\r\n".as_bytes()),
        input(250_001_000, b"exit\r"),
        event(
            250_001_000,
            EventKind::Resize {
                cols: 132,
                rows: 43,
            },
        ),
        event(999_999_000, EventKind::Marker(String::new())),
        output(3_600_000_001_000, b"\x07\x00tab\tquote\"back\\slash"),
        event(3_600_000_002_000, EventKind::Exit(-9)),
    ]
}

#[test]
fn v3_round_trip_gives_back_header_and_events() {
    let file = record(Format::V3, &sample_header(), &exact_events());
    let (reader, events) = read_all(&file);
    assert_eq!(reader.format(), Format::V3);
    assert_eq!(*reader.header(), sample_header());
    assert_eq!(events, exact_events());
    assert!(!reader.is_truncated());
}

#[test]
fn v2_round_trip_gives_back_header_and_events_with_the_exit_as_a_marker() {
    let file = record(Format::V2, &sample_header(), &exact_events());
    let (reader, events) = read_all(&file);
    assert_eq!(reader.format(), Format::V2);
    assert_eq!(*reader.header(), sample_header());
    let mut expected = exact_events();
    expected.last_mut().unwrap().kind = EventKind::Marker("exit -9".into());
    assert_eq!(events, expected);
}

#[test]
fn a_minimal_header_round_trips_in_both_formats() {
    for format in [Format::V2, Format::V3] {
        let file = record(format, &Header::new(1, 2), &[]);
        let (reader, events) = read_all(&file);
        assert_eq!(*reader.header(), Header::new(1, 2), "{format:?}");
        assert!(events.is_empty());
    }
}

#[test]
fn times_come_back_rounded_to_the_microsecond_and_never_going_backwards() {
    let written = [
        output(1_499, b"a"),
        output(2_500, b"b"),
        output(1_000, b"c"),
        output(10_000, b"d"),
    ];
    for format in [Format::V2, Format::V3] {
        let (_, events) = read_all(&record(format, &Header::new(80, 24), &written));
        let times: Vec<Duration> = events.iter().map(|e| e.time).collect();
        let micros = [1, 3, 3, 10].map(Duration::from_micros);
        assert_eq!(times, micros, "{format:?}");
    }
}
