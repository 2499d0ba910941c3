//! The reader on files it did not write: cut short, commented, foreign, broken.

mod common;

use std::time::Duration;

use common::{read_all, record, sample_events, sample_header};
use kdbg_recordings::{Error, EventKind, Format, LineError, Reader};

/// Cutting a recording anywhere after its header loses at most the line that was cut: the
/// events of every complete line come back, without error, and the cut is reported.
#[test]
fn a_file_cut_anywhere_reads_up_to_its_last_complete_line() {
    for format in [Format::V2, Format::V3] {
        let file = record(format, &sample_header(), &sample_events());
        let (_, all) = read_all(&file);
        let header_end = file.iter().position(|&b| b == b'\n').unwrap() + 1;
        for cut in header_end..=file.len() {
            let part = &file[..cut];
            // Complete lines, plus the cut line when only its newline is missing.
            let complete = part.iter().filter(|&&b| b == b'\n').count() - 1;
            let unterminated_but_whole = part.ends_with(b"]");
            let expected = complete + usize::from(unterminated_but_whole);
            let (reader, events) = read_all(part);
            assert_eq!(events, all[..expected], "{format:?} cut at {cut}");
            let cut_mid_line = !part.ends_with(b"\n") && !unterminated_but_whole;
            assert_eq!(
                reader.is_truncated(),
                cut_mid_line,
                "{format:?} cut at {cut}"
            );
        }
    }
}

#[test]
fn a_last_line_with_its_newline_but_unfinished_json_is_a_truncation() {
    let file = b"{\"version\":2,\"width\":80,\"height\":24}\n[0.1, \"o\", \"a\"]\n[0.2, \"o\", \n";
    let (reader, events) = read_all(file);
    assert_eq!(events.len(), 1);
    assert!(reader.is_truncated());
}

#[test]
fn a_last_line_of_well_formed_json_with_bad_data_is_an_error_not_a_truncation() {
    let file = b"{\"version\":2,\"width\":80,\"height\":24}\n[0.1, \"r\", \"80by24\"]";
    assert!(matches!(failure(file), (2, LineError::Resize(_))));
}

#[test]
fn v3_comments_and_unknown_codes_are_skipped_but_their_intervals_count() {
    let file = b"{\"version\":3,\"term\":{\"cols\":80,\"rows\":24}}\n\
        # a comment\n\
        [0.5, \"o\", \"a\"]\n\
        [1.25, \"t\", \"a subtitle, say\"]\n\
        \n\
        # another one\n\
        [0.25, \"x\", \"3\"]\n";
    let (_, events) = read_all(file);
    let summary: Vec<(Duration, EventKind)> =
        events.into_iter().map(|e| (e.time, e.kind)).collect();
    assert_eq!(
        summary,
        [
            (Duration::from_millis(500), EventKind::Output("a".into())),
            (Duration::from_secs(2), EventKind::Exit(3)),
        ]
    );
}

#[test]
fn an_asciinema_2_file_with_a_null_variable_and_a_float_timestamp_reads() {
    let file = b"{\"version\": 2, \"width\": 100, \"height\": 30, \"timestamp\": 1504467315.9, \
        \"env\": {\"SHELL\": null, \"TERM\": \"screen\"}, \"theme\": {\"fg\": \"#ffffff\"}}\n\
        [0.248848, \"o\", \"hi\"]\n";
    let (reader, events) = read_all(file);
    let header = reader.header();
    assert_eq!(
        (header.cols, header.rows, header.timestamp),
        (100, 30, Some(1504467315))
    );
    assert_eq!(header.env.len(), 1);
    assert_eq!(header.env["TERM"], "screen");
    assert_eq!(events[0].time, Duration::from_micros(248_848));
}

/// The line number and the problem of a failed read.
fn failure(file: &[u8]) -> (u64, LineError) {
    let result = Reader::new(file).and_then(|mut reader| {
        while reader.next_event()?.is_some() {}
        Ok(())
    });
    match result {
        Err(Error::ReadLine { line, source }) => (line, source),
        other => panic!("expected a ReadLine error, got {other:?}"),
    }
}

#[test]
fn errors_name_the_line_and_the_problem() {
    let header = "{\"version\":3,\"term\":{\"cols\":80,\"rows\":24}}\n";
    let (line, problem) =
        failure(format!("{header}# c\n[1, \"o\", \"a\"]\n[oops\n[1, \"o\", \"b\"]\n").as_bytes());
    assert_eq!(line, 4);
    assert!(matches!(problem, LineError::Json(_)), "{problem:?}");

    let (line, problem) = failure(format!("{header}[1, \"r\", \"80*24\"]\n").as_bytes());
    assert_eq!(line, 2);
    assert!(
        matches!(problem, LineError::Resize(ref data) if data == "80*24"),
        "{problem:?}"
    );

    assert!(matches!(failure(b""), (1, LineError::NoHeader)));
    assert!(matches!(
        failure(b"{\"version\":1,\"width\":80}\n"),
        (1, LineError::Version(1))
    ));
    assert!(matches!(
        failure(b"{\"version\":2,\"width\":80}\n"),
        (1, LineError::MissingAttribute("height"))
    ));
    assert!(matches!(
        failure(b"{\"version\":3}\n"),
        (1, LineError::MissingAttribute("term"))
    ));
    assert!(matches!(
        failure(b"# comment first\n"),
        (1, LineError::Json(_))
    ));
}

#[test]
fn the_error_message_names_the_line() {
    let (line, problem) =
        failure(b"{\"version\":2,\"width\":80,\"height\":24}\n[1, \"x\", \"ok\"]\n");
    let error = Error::ReadLine {
        line,
        source: problem,
    };
    assert_eq!(error.to_string(), "reading line 2 of the recording");
    assert_eq!(
        std::error::Error::source(&error).unwrap().to_string(),
        "exit data \"ok\" is not an integer status"
    );
}
