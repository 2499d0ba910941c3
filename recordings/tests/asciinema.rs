//! asciinema 2.2 itself (Debian's `asciinema` package, /usr/bin/asciinema) reads our files.
//!
//! `asciinema cat` opens `/dev/tty` and fails without a controlling terminal, so it runs under
//! `script -qec`, which gives it one; its stdout goes to a file. `asciinema play` falls back to
//! playing without keyboard control when there is no terminal; it runs under `setsid` so it has
//! none even when the tests are started from one.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{
    all_output, event, input, output, record, sample_events, sample_header, scratch_file,
};
use kdbg_recordings::{EventKind, Format};

const ASCIINEMA: &str = "/usr/bin/asciinema";

/// The asciinema binary, or `None` (with a message saying the test is skipped) if it is not
/// installed. These tests check asciinema 2.x's behaviour; another major version fails them.
fn asciinema() -> Option<PathBuf> {
    let path = PathBuf::from(ASCIINEMA);
    if !path.exists() {
        eprintln!("SKIPPED: {ASCIINEMA} is missing; install Debian's `asciinema` package (2.2)");
        return None;
    }
    // Through command(): a bare first run creates ~/.config/asciinema, racing the other
    // tests' (seen on a fresh machine: an empty version, asciinema having failed).
    let version = command(ASCIINEMA).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(
        version.starts_with("asciinema 2."),
        "expected asciinema 2.x, found {version:?}"
    );
    Some(path)
}

/// Writes `file` to a fresh scratch path.
fn save(name: &str, file: &[u8]) -> PathBuf {
    let path = scratch_file(name);
    std::fs::write(&path, file).unwrap();
    path
}

/// Runs asciinema with its configuration in a scratch directory, not in `$HOME`, and with an
/// install id given, so it writes none: asciinema creates its configuration directory without
/// locking, and tests running at the same time would race for it.
fn command(program: &str) -> Command {
    let mut command = Command::new(program);
    command
        .env("ASCIINEMA_CONFIG_HOME", scratch_file("asciinema-config"))
        .env("ASCIINEMA_INSTALL_ID", "kdbg-recordings-tests")
        .stdin(Stdio::null());
    command
}

/// `asciinema cat FILE` under a pseudo-terminal: its exit status and the bytes it printed.
fn cat(asciinema: &Path, cast: &Path) -> (Output, Vec<u8>) {
    let printed = scratch_file(&format!(
        "{}.out",
        cast.file_name().unwrap().to_string_lossy()
    ));
    let shell = format!(
        "{} cat '{}' > '{}'",
        asciinema.display(),
        cast.display(),
        printed.display()
    );
    let run = command("script")
        .args(["-qec", &shell, "/dev/null"])
        .output()
        .unwrap();
    (run, std::fs::read(&printed).unwrap())
}

/// `asciinema play -s 100 FILE` without a terminal.
fn play(asciinema: &Path, cast: &Path) -> Output {
    command("setsid")
        .arg("--wait")
        .arg(asciinema)
        .args(["play", "-s", "100"])
        .arg(cast)
        .output()
        .unwrap()
}

/// A session with everything asciinema 2.2 has to skip or decode: input, resize, markers, the
/// exit marker, escapes, a split character and invalid bytes, and our metadata in the header.
fn session() -> Vec<kdbg_recordings::Event> {
    let mut events = sample_events();
    events.insert(
        3,
        output(650_000_000, "\u{1b}]0;title\u{7}\t😀 ".as_bytes()),
    );
    events.insert(4, output(660_000_000, b"\xf0\x9f"));
    events.insert(5, input(670_000_000, b"\xe2"));
    events.insert(6, output(680_000_000, b"\x98\x80\x00\x7f"));
    events.insert(
        7,
        event(690_000_000, EventKind::Marker("a \"quoted\" label".into())),
    );
    events
}

#[test]
fn asciinema_cat_prints_exactly_the_recorded_output() {
    let Some(asciinema) = asciinema() else { return };
    let events = session();
    let cast = save(
        "cat.v2.cast",
        &record(Format::V2, &sample_header(), &events),
    );
    let (run, printed) = cat(&asciinema, &cast);
    assert!(run.status.success(), "{run:?}");
    let expected = String::from_utf8_lossy(&all_output(&events)).into_owned();
    assert_eq!(String::from_utf8_lossy(&printed), expected);
    assert_eq!(printed, expected.as_bytes());
}

#[test]
fn asciinema_play_without_a_terminal_prints_exactly_the_recorded_output() {
    let Some(asciinema) = asciinema() else { return };
    let events = session();
    let cast = save(
        "play.v2.cast",
        &record(Format::V2, &sample_header(), &events),
    );
    let run = play(&asciinema, &cast);
    assert!(run.status.success(), "{run:?}");
    let expected = String::from_utf8_lossy(&all_output(&events)).into_owned();
    assert_eq!(String::from_utf8_lossy(&run.stdout), expected);
}

#[test]
fn asciinema_2_refuses_v3_files() {
    let Some(asciinema) = asciinema() else { return };
    let cast = save(
        "play.v3.cast",
        &record(Format::V3, &sample_header(), &session()),
    );
    let run = play(&asciinema, &cast);
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert!(run.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("only asciicast v1 and v2 formats can be opened"),
        "{stderr}"
    );
}

/// A file cut mid-line: asciinema 2.2 prints the output of every complete line, then fails on
/// the broken one (a Python traceback, exit status 1).
#[test]
fn asciinema_cat_of_a_truncated_file_prints_up_to_the_last_complete_line() {
    let Some(asciinema) = asciinema() else { return };
    let events = session();
    let file = record(Format::V2, &sample_header(), &events);
    let (_, complete) = common::read_all(&file);
    // Cut the last output line ("bad \u{FFFD}\u{FFFD} byte") in its middle.
    let last_output = file.windows(4).rposition(|w| w == b"bad ").unwrap();
    let cast = save("truncated.v2.cast", &file[..last_output + 2]);
    let (run, printed) = cat(&asciinema, &cast);
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    let before_cut: Vec<_> = complete
        .into_iter()
        .filter(|e| e.time < std::time::Duration::from_millis(2_500))
        .collect();
    assert_eq!(
        String::from_utf8_lossy(&printed),
        String::from_utf8_lossy(&all_output(&before_cut))
    );
}
