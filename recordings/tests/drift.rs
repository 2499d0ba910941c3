//! v3 writes intervals; rounding each one alone would drift. A million events 1/3 ms apart
//! (each interval 333.33... µs) must come back at their true times within one time unit.

mod common;

use std::time::Duration;

use kdbg_recordings::{Format, Header, Reader, Recorder, TIME_UNIT};

const EVENTS: u64 = 1_000_000;

/// The true time of event `i`: `i / 3` milliseconds, to the nanosecond.
fn true_time(i: u64) -> Duration {
    Duration::from_nanos(i * 1_000_000 / 3)
}

#[test]
fn a_million_v3_intervals_add_up_to_the_true_time() {
    let mut recording = Recorder::new(Format::V3, Vec::new())
        .start(&Header::new(80, 24))
        .unwrap();
    for i in 1..=EVENTS {
        recording.write_output(true_time(i), b".").unwrap();
    }
    let file = recording.finish().unwrap();

    let mut reader = Reader::new(&file[..]).unwrap();
    let mut i = 0;
    let mut worst = Duration::ZERO;
    while let Some(event) = reader.next_event().unwrap() {
        i += 1;
        worst = worst.max(event.time.abs_diff(true_time(i)));
    }
    assert_eq!(i, EVENTS);
    // Rounding each interval alone would have lost a third of a microsecond per event, a
    // third of a second by the end.
    assert!(worst <= TIME_UNIT / 2, "worst error {worst:?}");
}
