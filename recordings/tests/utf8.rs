//! Terminal bytes become valid JSON text: split characters whole, invalid bytes as U+FFFD.

mod common;

use std::time::Duration;

use common::{all_output, event, input, output, read_all, record};
use kdbg_recordings::{Event, EventKind, Format, Header, Recorder};

fn text(events: &[Event]) -> Vec<(Duration, &'static str, String)> {
    events
        .iter()
        .map(|e| match &e.kind {
            EventKind::Output(data) => (e.time, "o", String::from_utf8(data.to_vec()).unwrap()),
            EventKind::Input(data) => (e.time, "i", String::from_utf8(data.to_vec()).unwrap()),
            other => (e.time, "other", format!("{other:?}")),
        })
        .collect()
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

#[test]
fn a_character_split_across_chunks_is_written_whole_with_the_later_chunk() {
    let euro = "€".as_bytes();
    let written = [
        output(1_000_000, &euro[..1]),
        output(2_000_000, &euro[1..2]),
        output(3_000_000, &euro[2..]),
    ];
    let file = record(Format::V2, &Header::new(80, 24), &written);
    assert_eq!(
        file.iter().filter(|&&b| b == b'\n').count(),
        2,
        "header and one event"
    );
    let (_, events) = read_all(&file);
    assert_eq!(text(&events), [(ms(3), "o", "€".to_owned())]);
}

#[test]
fn output_and_input_carry_their_own_incomplete_characters() {
    let written = [
        output(1_000_000, b"\xe2\x82"),
        input(2_000_000, b"\xc3"),
        input(3_000_000, b"\xa9"),
        output(4_000_000, b"\xac!"),
    ];
    let (_, events) = read_all(&record(Format::V3, &Header::new(80, 24), &written));
    assert_eq!(
        text(&events),
        [(ms(3), "i", "é".to_owned()), (ms(4), "o", "€!".to_owned())]
    );
}

#[test]
fn invalid_bytes_become_replacement_characters() {
    let written = [output(
        1_000_000,
        b"a\xffb\xc0\xafc\xed\xa0\x80d\xf0\x9f\x98e",
    )];
    let (_, events) = read_all(&record(Format::V2, &Header::new(80, 24), &written));
    assert_eq!(
        text(&events),
        [(
            ms(1),
            "o",
            "a\u{FFFD}b\u{FFFD}\u{FFFD}c\u{FFFD}\u{FFFD}\u{FFFD}d\u{FFFD}e".to_owned()
        )]
    );
}

#[test]
fn a_character_still_incomplete_at_the_end_becomes_one_replacement_character() {
    let mut recording = Recorder::new(Format::V2, Vec::new())
        .start(&Header::new(80, 24))
        .unwrap();
    recording.write_output(ms(5), b"ok\xf0\x9f\x98").unwrap();
    let (_, events) = read_all(&recording.finish().unwrap());
    assert_eq!(
        text(&events),
        [
            (ms(5), "o", "ok".to_owned()),
            (ms(5), "o", "\u{FFFD}".to_owned())
        ]
    );
}

#[test]
fn an_exit_first_writes_what_is_carried() {
    let written = [
        output(1_000_000, b"x\xe2"),
        input(1_000_000, b"\xc3"),
        event(9_000_000, EventKind::Exit(1)),
    ];
    let (_, events) = read_all(&record(Format::V3, &Header::new(80, 24), &written));
    assert_eq!(
        text(&events),
        [
            (ms(1), "o", "x".to_owned()),
            (ms(9), "o", "\u{FFFD}".to_owned()),
            (ms(9), "i", "\u{FFFD}".to_owned()),
            (ms(9), "other", "Exit(1)".to_owned()),
        ]
    );
}

/// Any byte soup cut into any chunks reads back as `String::from_utf8_lossy` of the whole.
#[test]
fn any_chunking_of_any_bytes_reads_back_as_from_utf8_lossy_of_the_whole() {
    // A small linear congruential generator: deterministic, no dependency.
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    // Bytes biased towards the interesting ones: ASCII, lead bytes, continuation bytes.
    let alphabet: &[u8] = b"a\n\x1b\x00\x80\xbf\xc2\xc3\xe2\xed\xef\xf0\xf4\xff\xa9\x82\x9f";
    for round in 0..200 {
        let soup: Vec<u8> = (0..next() % 64)
            .map(|_| alphabet[next() % alphabet.len()])
            .collect();
        let mut written = Vec::new();
        let mut rest = &soup[..];
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(1 + next() % rest.len().min(5));
            written.push(output(written.len() as u64 * 1000, chunk));
            rest = tail;
        }
        for format in [Format::V2, Format::V3] {
            let (_, events) = read_all(&record(format, &Header::new(80, 24), &written));
            assert_eq!(
                String::from_utf8(all_output(&events)).unwrap(),
                String::from_utf8_lossy(&soup),
                "round {round}: {soup:x?}"
            );
        }
    }
}
