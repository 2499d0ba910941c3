//! Recording a session to asciicast: the bridge from the relay's observer tap to the
//! recordings crate, shared by the agent (recordings on the node) and the plugin
//! (`--record-local`, through this crate, which it links for `local` already). Not part of
//! the wire contract: `kdbg-api` has no threads and no files.
//!
//! A recorder runs on a thread of its own and never slows the session: it takes events from an
//! [`Observer`] (which the session never waits for) and writes lines in batches, flushing
//! whenever it has caught up, so the file is as current as the session whenever the session
//! pauses. What goes wrong ends the recording, never the session: past the byte limit or on a
//! failed write (a full disk), it marks the file `incomplete: <why>` where it can and stops
//! observing. A recorder that falls too far behind a flood of output (the tap drops it)
//! follows again at once, after the marker [`SKIPPED`], and the recording ends marked
//! incomplete: a flood cannot switch recording off for what follows it.

use std::fs::File;
use std::path::PathBuf;
use std::time::Duration;

use kdbg_recordings::{Error as RecordingError, Format, Header, Recorder, Recording};
use kdbg_relay::observer::{Event, EventKind, Observer, ObserverOptions};
use kdbg_relay::{ExitStatus, Tap, TerminalSize};
use tracing::{debug, warn};

/// How many bytes of lines wait before they are written even while events keep coming.
const BATCH: usize = 64 << 10;
/// How long a terminal session's recorder waits for the client's first terminal size before
/// it writes the header with the default size.
const FIRST_SIZE_WAIT: Duration = Duration::from_millis(500);
/// How long an observer on a thread of its own (a recorder, a screen keeper) pauses after
/// catching up before it waits for the next event: during a flood of output its queue fills
/// meanwhile, so the session does not have to wake it for every chunk (a wake-up costs the
/// session's thread a system call). Events are at most this much later in the file.
pub const LINGER: Duration = Duration::from_millis(1);
/// The marker where a recorder that fell behind skipped output.
pub const SKIPPED: &str = "skipped: the recorder fell behind a flood of output";
/// How far a recorder may fall behind its session before it skips output.
const BUDGET: usize = 32 << 20;
/// The marker that ends a recording whose session closed while its process ran (the client
/// left, or was idle too long).
pub const CLOSED_EARLY: &str = "the session closed before its process exited";
/// The size of a recording whose session has no terminal, or never said its size.
pub const DEFAULT_SIZE: TerminalSize = TerminalSize { cols: 80, rows: 24 };

/// What to record, and how.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// asciicast v2 or v3.
    pub format: Format,
    /// The most bytes the file may hold; past it, the recording stops with a marker.
    pub max_bytes: Option<u64>,
    /// The header; its size is replaced by the terminal's at the start.
    pub header: Header,
    /// Whether the session has a terminal (then its first size is waited for, briefly).
    pub tty: bool,
    /// Whether keystrokes are recorded.
    pub input: bool,
    /// The file, for logs.
    pub path: PathBuf,
}

/// How a recording ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It holds the whole session.
    Complete,
    /// It stopped early, for this reason (also in the file's last marker where it could be
    /// written).
    Incomplete(String),
}

/// Records the session `tap` shows into `file` on a new thread; the thread ends with the
/// session (or when the recording stops), calls `then` with how the recording ended, and
/// returns that. It observes from now: nothing the session does after this returns is missed.
pub fn spawn(
    tap: &Tap,
    file: File,
    options: RecordOptions,
    then: impl FnOnce(&Outcome) + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<Outcome>> {
    let observer = subscribe(tap, &options);
    let tap = tap.clone();
    std::thread::Builder::new()
        .name("kdbg-recorder".into())
        .stack_size(256 << 10)
        .spawn(move || {
            let outcome = record(&tap, observer, file, &options);
            then(&outcome);
            outcome
        })
}

fn subscribe(tap: &Tap, options: &RecordOptions) -> Observer {
    tap.subscribe(ObserverOptions {
        max_bytes: BUDGET,
        input: options.input,
    })
}

/// Records what `observer` (of `tap`) sees into `file` until the session ends; see [`spawn`].
pub fn record(tap: &Tap, mut observer: Observer, file: File, options: &RecordOptions) -> Outcome {
    let path = options.path.display().to_string();
    let Some(first) = observer.blocking_recv() else {
        return Outcome::Incomplete("the session ended before it started".into());
    };
    let started = first.at;
    let mut size = match first.kind {
        EventKind::Start { size } => size,
        _ => None,
    };
    // A terminal's size comes as the client's first message; wait a little for it, so the
    // header has the size the user's terminal had at the start.
    let mut early = Vec::new();
    if size.is_none() && options.tty {
        let deadline = std::time::Instant::now() + FIRST_SIZE_WAIT;
        while size.is_none() && std::time::Instant::now() < deadline {
            match observer.try_recv() {
                Ok(Some(Event {
                    kind: EventKind::Resize(s),
                    ..
                })) if early.is_empty() => size = Some(s),
                Ok(Some(event)) => early.push(event),
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(()) => break,
            }
        }
    }
    let size = size.unwrap_or(DEFAULT_SIZE);
    let mut header = options.header.clone();
    (header.cols, header.rows) = (size.cols, size.rows);
    let mut recorder = Recorder::new(options.format, file).batched(BATCH);
    if let Some(limit) = options.max_bytes {
        recorder = recorder.with_byte_limit(limit);
    }
    let mut recording = match recorder.start(&header) {
        Ok(recording) => recording,
        Err(e) => {
            let why = format!("writing the header failed: {}", crate::chain(&e));
            warn!(recording = %path, error = %why, "recording stopped; the session goes on");
            return Outcome::Incomplete(why);
        }
    };
    let mut early = early.into_iter();
    let mut last = Duration::ZERO;
    let mut exited = false;
    let mut skipped = 0u64;
    loop {
        let event = match early.next() {
            Some(event) => event,
            None => match observer.try_recv() {
                Ok(Some(event)) => event,
                Ok(None) => {
                    // Caught up: what is batched goes to the file, then a pause, then a wait.
                    if let Err(e) = recording.flush() {
                        return stop(recording, last, &e, &path);
                    }
                    std::thread::sleep(LINGER);
                    match observer.try_recv() {
                        Ok(Some(event)) => event,
                        Ok(None) => match observer.blocking_recv() {
                            Some(event) => event,
                            None => break,
                        },
                        Err(()) => break,
                    }
                }
                Err(()) => break,
            },
        };
        if matches!(event.kind, EventKind::Exit(_)) {
            exited = true;
        }
        last = event.at.saturating_duration_since(started);
        match write(&mut recording, last, event.kind) {
            Ok(Step::Go) => {}
            Ok(Step::Exited) => break,
            Ok(Step::Dropped) => {
                // Follow again at once; what the session did meanwhile is lost, and said.
                skipped += 1;
                observer = subscribe(tap, options);
                debug!(recording = %path, "the recorder fell behind a flood of output and skipped some");
                let marker = kdbg_recordings::EventKind::Marker(SKIPPED.into());
                if let Err(e) = recording.write(&kdbg_recordings::Event::new(last, marker)) {
                    return stop(recording, last, &e, &path);
                }
            }
            Err(e) => return stop(recording, last, &e, &path),
        }
    }
    if !exited {
        let closed = kdbg_recordings::EventKind::Marker(CLOSED_EARLY.into());
        if let Err(e) = recording.write(&kdbg_recordings::Event::new(last, closed)) {
            return stop(recording, last, &e, &path);
        }
    }
    if skipped > 0 {
        let why = format!(
            "output was skipped {skipped} times: the recorder fell behind floods of output"
        );
        warn!(recording = %path, "recording incomplete: {why}");
        return end_incomplete(recording, last, why, &path);
    }
    // What is batched goes out first, where a failure (a disk that fills just now) can still
    // be repaired: the file cut back to whole lines and marked incomplete, as mid-session.
    if let Err(e) = recording.flush() {
        return stop(recording, last, &e, &path);
    }
    match recording.finish() {
        Ok(_) => {
            debug!(recording = %path, "recording complete");
            Outcome::Complete
        }
        Err(e) => {
            let why = format!("finishing it failed: {}", crate::chain(&e));
            warn!(recording = %path, error = %why, "recording incomplete");
            Outcome::Incomplete(why)
        }
    }
}

enum Step {
    Go,
    Exited,
    Dropped,
}

fn write(
    recording: &mut Recording<File>,
    at: Duration,
    kind: EventKind,
) -> Result<Step, RecordingError> {
    match kind {
        EventKind::Output { data, .. } => recording.write_output(at, &data)?,
        EventKind::Input(data) => recording.write_input(at, &data)?,
        EventKind::Resize(size) => recording.write(&kdbg_recordings::Event::new(
            at,
            kdbg_recordings::EventKind::Resize {
                cols: size.cols,
                rows: size.rows,
            },
        ))?,
        EventKind::Exit(status) => {
            for event in exit_events(&status) {
                recording.write(&kdbg_recordings::Event::new(at, event))?;
            }
            return Ok(Step::Exited);
        }
        EventKind::Dropped => return Ok(Step::Dropped),
        EventKind::Start { .. } => {}
    }
    Ok(Step::Go)
}

/// How a session's end is recorded: its exit code, after what happened when the user was told.
pub fn exit_events(status: &ExitStatus) -> Vec<kdbg_recordings::EventKind> {
    use kdbg_recordings::EventKind as Rec;
    match status {
        ExitStatus::Code(code) => vec![Rec::Exit(i32::from(*code))],
        ExitStatus::Ended { code, message, .. } => {
            vec![Rec::Marker(message.clone()), Rec::Exit(i32::from(*code))]
        }
        ExitStatus::Failure { message, .. } => vec![Rec::Marker(message.clone())],
    }
}

/// The recording failed: logs, marks it incomplete where it can.
fn stop(recording: Recording<File>, at: Duration, error: &RecordingError, path: &str) -> Outcome {
    let why = match error {
        RecordingError::ByteLimit { limit } => format!("it reached maxBytes ({limit} bytes)"),
        other => crate::chain(other),
    };
    warn!(recording = %path, "recording stopped: {why}; the session goes on");
    end_incomplete(recording, at, why, path)
}

fn end_incomplete(recording: Recording<File>, at: Duration, why: String, path: &str) -> Outcome {
    if let Err(e) = recording.end_incomplete_repairing(at, &why) {
        warn!(recording = %path, error = %crate::chain(&e), "could not mark the recording incomplete");
    }
    Outcome::Incomplete(why)
}
