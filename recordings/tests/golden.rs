//! The sample session written in both formats equals the expected files byte for byte.
//!
//! The expected files in `tests/golden/` were written by hand from the spec, not generated.
//! After a deliberate change of format, `KDBG_BLESS=1 cargo test -p kdbg-recordings --test
//! golden` rewrites them; review the diff before committing it.

mod common;

use std::path::PathBuf;

use kdbg_recordings::Format;

fn check(format: Format, name: &str) {
    let written = common::record(format, &common::sample_header(), &common::sample_events());
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("KDBG_BLESS").is_some() {
        std::fs::write(&path, &written).unwrap();
    }
    let expected = std::fs::read(&path).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&written),
        String::from_utf8_lossy(&expected),
        "{} differs",
        path.display()
    );
    assert_eq!(written, expected);
}

#[test]
fn v2_matches_the_golden_file() {
    check(Format::V2, "session.v2.cast");
}

#[test]
fn v3_matches_the_golden_file() {
    check(Format::V3, "session.v3.cast");
}
