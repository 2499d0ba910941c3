//! Recording and live views in the relay (in-process, both ends on their own threads) and the
//! asciicast encoder.

use std::fmt::Write as _;
use std::path::Path;

use crate::{GIB, TRANSFER, median_secs, read_json};

/// Events per encoding measurement (`benches/benches/recording.rs`).
const EVENTS: f64 = 1_000_000.0;

/// Appends the section.
pub fn section(out: &mut String, criterion: &Path, figures: &Path) -> Result<(), String> {
    writeln!(out, "\n## Recording and live views, in-process\n").unwrap();
    out.push_str(
        "The relay of the throughput table printing text (log lines) in 4 and 32 KiB chunks, \
         observed as the agent observes sessions: not at all; by the recorder (asciicast v2, \
         batched, to a file on local disk, on its own thread); by a terminal session's screen \
         keeper with nobody watching; and with one watcher. 64 MiB per transfer, medians of 20. \
         This is a second row: the real path is in the next section, where the recording pair \
         is measured as users run it.\n\n",
    );
    let outcomes = read_json(&figures.join("recording-outcomes.json")).unwrap_or_default();
    writeln!(
        out,
        "| chunk | plain | recorded | recorded / plain | recordings complete | screen kept | watched | watched / screen |"
    )
    .unwrap();
    writeln!(out, "|---|---|---|---|---|---|---|---|").unwrap();
    let mut rows = Vec::new();
    for kib in [4, 32] {
        let rate = |name: &str| -> Result<f64, String> {
            Ok(TRANSFER / median_secs(criterion, &format!("observed/{name}/{kib}"))?)
        };
        let (plain, recorded, screen, watched) = (
            rate("plain")?,
            rate("recorded")?,
            rate("screen")?,
            rate("watched")?,
        );
        let o = &outcomes[format!("recorded/{kib}")];
        let (runs, incomplete) = (
            o["runs"].as_u64().unwrap_or(0),
            o["incomplete"].as_u64().unwrap_or(0),
        );
        writeln!(
            out,
            "| {kib} KiB | {:.2} GiB/s | {:.2} GiB/s | {:.2}x | {} of {runs} | {:.2} GiB/s | {:.2} GiB/s | {:.2}x |",
            plain / GIB,
            recorded / GIB,
            recorded / plain,
            runs - incomplete,
            screen / GIB,
            watched / GIB,
            watched / screen
        )
        .unwrap();
        rows.push((kib, recorded / plain, watched / screen, incomplete));
    }
    // The targets are the real path's (the guide's rule: the path users take is the
    // verdict, a shortcut a second row); these rows are reported beside them.
    writeln!(
        out,
        "\n| in-process row (reported) | measured | the target's verdict row |\n|---|---|---|"
    )
    .unwrap();
    for (kib, recorded, watched, incomplete) in rows {
        writeln!(
            out,
            "| recording on against off, {kib} KiB chunks | {recorded:.2}x{} | `recorded_text`, >= 0.9x, next section |",
            if incomplete > 0 {
                ", recorder skipped output"
            } else {
                ""
            },
        )
        .unwrap();
        writeln!(
            out,
            "| watched against screen kept, {kib} KiB chunks | {watched:.2}x | the watcher's cost, <= 10%, next section |"
        )
        .unwrap();
    }
    out.push_str(
        "\nIn-process, the relay moves text at 2-3.5 GiB/s with both of this machine's 2 cores \
         busy (one per end): any observer that does work per byte takes CPU from the relay. The \
         recorder encodes about 1 GiB/s of text (below); when it falls behind it skips output \
         (marked in the recording, which then ends incomplete) rather than slow the session. A \
         watcher's output is encoded for it in runs of up to 64 KiB, a JSON line each. Through \
         a runtime, sessions move 150-600 MiB/s, where both keep up: the `recorded_text` pairs \
         and the watcher figure of the next section are the verdict rows.\n",
    );

    writeln!(out, "\n### Encoding 1 million output events\n").unwrap();
    out.push_str(
        "`benches/benches/recording.rs`: 1,000,000 events of one 82-byte log line each, to \
         nothing (the encoder alone) and to a file on local disk (batched, as the agent writes).\n\n",
    );
    writeln!(out, "| format | encoder alone | to a file |\n|---|---|---|").unwrap();
    for format in ["v2", "v3"] {
        let alone = EVENTS / median_secs(criterion, &format!("record/encode/{format}"))?;
        let file = EVENTS / median_secs(criterion, &format!("record/file/{format}"))?;
        writeln!(
            out,
            "| {format} | {:.1} M events/s | {:.1} M events/s |",
            alone / 1e6,
            file / 1e6
        )
        .unwrap();
    }
    Ok(())
}
