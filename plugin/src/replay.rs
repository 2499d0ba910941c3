//! `kubectl-debug replay FILE|SESSION [--speed X] [--idle-time-limit S]`: plays a recording
//! (asciicast v2 or v3) in the terminal with its timing; without a terminal, prints its
//! output at once.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{Context as _, bail};
use kdbg_recordings::{EventKind, Reader};

use crate::cli::{Global, ReplayArgs};
use crate::recordings;

/// Runs `replay`.
pub async fn run(global: &Global, args: ReplayArgs) -> anyhow::Result<()> {
    if !(args.speed.is_finite() && args.speed > 0.0) {
        bail!("--speed must be a positive number, not {}", args.speed);
    }
    if args
        .idle_time_limit
        .is_some_and(|s| !(s.is_finite() && s >= 0.0))
    {
        bail!("--idle-time-limit must be a number of seconds, 0 or more");
    }
    let data = if recordings::is_file(&args.recording) {
        std::fs::read(&args.recording)
            .with_context(|| format!("reading recording {}", args.recording))?
    } else if args.recording.contains('/') || args.recording.ends_with(".cast") {
        bail!(
            "recording file {} not found (a SESSION from kubectl-debug recordings list has no / or .cast)",
            args.recording
        );
    } else {
        let mut data = Vec::new();
        recordings::fetch(global, &args.recording, args.all_namespaces, &mut data).await?;
        data
    };
    let timed = std::io::stdout().is_terminal();
    tokio::task::spawn_blocking(move || play(&data, &args, timed))
        .await
        .context("replaying")?
}

/// Plays `data` to stdout: with its timing when `timed`, else as fast as possible.
fn play(data: &[u8], args: &ReplayArgs, timed: bool) -> anyhow::Result<()> {
    let mut reader = Reader::new(data).context("reading the recording")?;
    let header = reader.header().clone();
    let limit = args
        .idle_time_limit
        .or(header.idle_time_limit)
        .map(Duration::from_secs_f64);
    if timed
        && let Some(size) = crate::terminal::size()
        && (size.cols < header.cols || size.rows < header.rows)
    {
        eprintln!(
            "Warning: the recording is {}x{}, this terminal {}x{}: it may look garbled; enlarge the terminal.",
            header.cols, header.rows, size.cols, size.rows
        );
    }
    let mut out = std::io::stdout().lock();
    let start = std::time::Instant::now();
    // Where playback is in the recording's time, pauses shortened by the limit.
    let mut played = Duration::ZERO;
    let mut last = Duration::ZERO;
    while let Some(event) = reader.next_event().context("reading the recording")? {
        let mut pause = event.time.saturating_sub(last);
        last = event.time;
        if let Some(limit) = limit {
            pause = pause.min(limit);
        }
        played += pause;
        let EventKind::Output(text) = event.kind else {
            continue;
        };
        if timed {
            let due = played.div_f64(args.speed);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                out.flush()?;
                std::thread::sleep(wait);
            }
        }
        out.write_all(&text)?;
    }
    out.flush()?;
    if reader.is_truncated() {
        eprintln!("Warning: the recording ends in a line cut short (its writer stopped mid-line).");
    }
    Ok(())
}
