//! Live view: a terminal session's screen, kept by the agent so that a colleague can watch
//! the session read-only, from its current screen.
//!
//! Every terminal session has a [`Screen`]: a thread that follows the session's output through
//! an observer of its tap and keeps a virtual terminal (asciinema's `avt`) of it, and fans the
//! output out to watchers. A watcher joining late first gets the virtual terminal's state as
//! escape sequences that redraw it, then the live output: the keeper handles joins and output
//! in one loop, so the snapshot and the live stream meet exactly. Watchers get asciicast v3
//! lines (the header, the screen as an output event, then output, resize and exit events), the
//! format of asciinema's live streams. Nothing a watcher sends reaches the session: watching
//! has no input path at all.
//!
//! The keeper costs the session next to nothing until someone watches: the tap keeps the last
//! [`PENDING`] bytes of output ([`Tap::keep_recent`]), and the keeper parses them once output
//! has paused for [`IDLE_PARSE`] (or when a watcher needs the screen), so the session never
//! wakes it per chunk and a flood of output is never parsed whole (a late watcher's screen is
//! then rebuilt from the flood's end, which for scrolling output is the screen). Only while
//! someone watches does the keeper observe every event, to pass it on; events are numbered, so
//! the screen and the live events meet exactly. The keeper never slows the session: if its
//! observer falls behind, it follows again and redraws its watchers' screens. A watcher that
//! cannot keep up skips output and is sent the whole screen again once it can.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use kdbg_recordings::{Event, EventKind, Format, Header, Recorder, Recording, Utf8Carry};
use kdbg_relay::observer::{EventKind as Seen, Observer, ObserverOptions};
use kdbg_relay::{Recent, Tap, TerminalSize};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

/// How far the keeper may fall behind the session before its observer is dropped.
const KEEPER_BUDGET: usize = 8 << 20;
/// Lines a watcher may have waiting before it skips output.
const WATCHER_QUEUE: usize = 1024;
/// The most output joined into one event for watchers. Its line is at most six times that
/// (JSON escapes a control byte as `\u0000`), well within the largest WebSocket message
/// either side takes ([`kdbg_relay::session::MAX_MESSAGE`]).
const JOINED_MAX: usize = 64 << 10;
/// How much unparsed output is kept: the end of a flood, enough to rebuild any screen.
pub const PENDING: usize = 1 << 20;
/// Output is parsed once it has paused this long (or when a watcher needs the screen).
pub const IDLE_PARSE: Duration = Duration::from_millis(100);
/// During a flood, output is parsed at least this often all the same.
const FLOOD_PARSE: Duration = Duration::from_secs(2);
/// Resets a terminal before a screen is drawn on it.
const RESET: &str = "\x1bc";

/// One session's screen, shared by its watchers. Clones share the keeper.
#[derive(Debug, Clone)]
pub struct Screen {
    joins: mpsc::UnboundedSender<mpsc::Sender<String>>,
    watchers: Arc<AtomicUsize>,
}

impl Screen {
    /// Starts keeping the screen of the session `tap` shows; `header` describes the session
    /// to watchers (its size is the screen's when they join).
    pub fn keep(tap: &Tap, header: Header) -> std::io::Result<Screen> {
        let (joins, joined) = mpsc::unbounded_channel();
        let watchers = Arc::new(AtomicUsize::new(0));
        let recent = tap.keep_recent(PENDING);
        let keeper = Keeper {
            tap: tap.clone(),
            recent: recent.clone(),
            header,
            joined,
            count: watchers.clone(),
            vt: Vt::new(tap.size().unwrap_or(crate::record::DEFAULT_SIZE)),
            parsed: recent.next_seq(),
            observer: None,
            watchers: Vec::new(),
            live: None,
            started: Instant::now(),
        };
        std::thread::Builder::new()
            .name("kdbg-screen".into())
            .stack_size(512 << 10)
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build();
                match runtime {
                    Ok(runtime) => runtime.block_on(keeper.run()),
                    Err(e) => warn!(error = %e, "live view unavailable: starting its runtime"),
                }
            })?;
        Ok(Screen { joins, watchers })
    }

    /// How many watchers the session has now.
    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::Relaxed)
    }

    /// Joins as a watcher: the lines to show (asciicast v3, header first), ending with the
    /// session. `None` if the session has ended.
    pub fn join(&self) -> Option<mpsc::Receiver<String>> {
        let (tx, rx) = mpsc::channel(WATCHER_QUEUE);
        self.joins.send(tx).ok()?;
        Some(rx)
    }
}

/// A watcher: where its lines go, from which event on, and whether it skipped output (it then
/// needs the screen).
struct Watcher {
    tx: mpsc::Sender<String>,
    from: u64,
    behind: bool,
}

/// What became of lines sent to a watcher.
enum Sent {
    All,
    Full,
    Gone,
}

struct Keeper {
    tap: Tap,
    recent: Recent,
    header: Header,
    joined: mpsc::UnboundedReceiver<mpsc::Sender<String>>,
    count: Arc<AtomicUsize>,
    vt: Vt,
    /// The number of the first event not in the virtual terminal yet.
    parsed: u64,
    /// Every event, while someone watches.
    observer: Option<Observer>,
    watchers: Vec<Watcher>,
    /// The live stream for every watcher, encoded once; `None` while nobody watches.
    live: Option<Recording<Vec<u8>>>,
    started: Instant,
}

/// The virtual terminal and what feeds it.
struct Vt {
    vt: avt::Vt,
    text: Utf8Carry,
}

impl Vt {
    fn new(size: TerminalSize) -> Vt {
        Vt {
            vt: avt::Vt::builder()
                .size(usize::from(size.cols.max(1)), usize::from(size.rows.max(1)))
                .scrollback_limit(0)
                .build(),
            text: Utf8Carry::default(),
        }
    }

    fn size(&self) -> (u16, u16) {
        let (cols, rows) = self.vt.size();
        (
            u16::try_from(cols).unwrap_or(u16::MAX),
            u16::try_from(rows).unwrap_or(u16::MAX),
        )
    }
}

impl Keeper {
    async fn run(mut self) {
        let mut ended = false;
        while !ended {
            tokio::select! {
                biased;
                Some(watcher) = self.joined.recv() => self.join(watcher),
                event = next(&mut self.observer) => match event {
                    Some(event) => {
                        // Whatever else came, then a pause: during a flood the queue fills
                        // while the keeper sleeps, instead of waking it for every chunk.
                        let mut batch = vec![event];
                        while let Some(Ok(Some(event))) = self.observer.as_mut().map(Observer::try_recv) {
                            batch.push(event);
                        }
                        self.handle_all(batch);
                        tokio::time::sleep(crate::record::LINGER).await;
                    }
                    None => ended = true,
                },
                // Watched, the screen is parsed when a watcher needs it; the observer says when
                // the session ends.
                () = self.recent.changed(), if self.observer.is_none() => {
                    ended = self.settle().await;
                }
            }
            self.count.store(self.watchers.len(), Ordering::Relaxed);
            if self.watchers.is_empty() && self.observer.is_some() {
                self.live = None;
                self.observer = None;
                // Catches up, and asks to be woken by the next output again.
                ended = ended || self.parse();
            }
        }
        self.count.store(0, Ordering::Relaxed);
        debug!("session over; its live view ends");
    }

    /// Output came: waits until it pauses (at most [`FLOOD_PARSE`]), then parses it. Returns
    /// whether the session has ended (then nobody can watch any more: nothing is parsed).
    async fn settle(&mut self) -> bool {
        let flood = Instant::now();
        let mut seen = self.recent.next_seq();
        loop {
            if self.recent.ended() {
                return true;
            }
            tokio::time::sleep(IDLE_PARSE).await;
            let now = self.recent.next_seq();
            if self.recent.ended() {
                return true;
            }
            if now == seen || flood.elapsed() >= FLOOD_PARSE || !self.joined.is_empty() {
                break;
            }
            seen = now;
        }
        self.parse()
    }

    /// Parses the output and sizes kept since the last time; returns whether the session has
    /// ended.
    fn parse(&mut self) -> bool {
        let taken = self.recent.take(self.parsed);
        if taken.skipped {
            debug!("live view: output skipped during a flood; the screen is rebuilt from its end");
        }
        for (_, event) in taken.events {
            match event {
                Seen::Output { data, .. } => {
                    self.vt.vt.feed_str(self.vt.text.decode(&data));
                }
                Seen::Resize(size) => {
                    self.vt
                        .vt
                        .resize(usize::from(size.cols.max(1)), usize::from(size.rows.max(1)));
                }
                _ => {}
            }
        }
        self.parsed = taken.next;
        taken.ended
    }

    /// A new watcher: the header and the screen, then what follows.
    fn join(&mut self, tx: mpsc::Sender<String>) {
        if self.observer.is_none() {
            // Observed first, parsed second: no event falls between the two.
            self.observer = Some(self.tap.subscribe(ObserverOptions {
                max_bytes: KEEPER_BUDGET,
                input: false,
            }));
        }
        if self.parse() {
            return;
        }
        let (cols, rows) = self.vt.size();
        let mut header = self.header.clone();
        (header.cols, header.rows) = (cols, rows);
        let lines = Recorder::new(Format::V3, Vec::new())
            .start(&header)
            .and_then(|mut first| {
                first.write_output(Duration::ZERO, self.screen().as_bytes())?;
                Ok(take_lines(&mut first))
            });
        let lines = match lines {
            Ok(lines) => lines,
            Err(e) => {
                warn!(error = %kdbg_api::error_chain(&e), "live view: encoding the screen");
                return;
            }
        };
        if !matches!(send_all(&tx, &lines), Sent::All) {
            return;
        }
        if self.live.is_none() {
            // Its header is not sent: each watcher got its own.
            self.live = Recorder::new(Format::V3, Vec::new())
                .start(&Header::new(cols, rows))
                .ok()
                .map(|mut live| {
                    live.get_mut().clear();
                    live
                });
        }
        self.watchers.push(Watcher {
            tx,
            from: self.parsed,
            behind: false,
        });
    }

    /// The screen as escape sequences that draw it on a reset terminal.
    fn screen(&self) -> String {
        [RESET, &self.vt.vt.dump()].concat()
    }

    /// Events for the watchers, as they came in one wake-up. Output that came in a row is
    /// passed on as one event (up to [`JOINED_MAX`]), one line for each watcher rather than one
    /// per chunk read (a flood through a terminal comes in reads of 4 KiB at most), unless a
    /// watcher's screen ends within it.
    fn handle_all(&mut self, batch: Vec<kdbg_relay::Event>) {
        // The first of the run, and the run's bytes once there is more than its own.
        let mut run: Option<(kdbg_relay::Event, Option<BytesMut>)> = None;
        for event in batch {
            if let Seen::Output { data, .. } = &event.kind {
                let fits = |first: &kdbg_relay::Event, joined: &Option<BytesMut>| {
                    let had = match (joined, &first.kind) {
                        (Some(joined), _) => joined.len(),
                        (None, Seen::Output { data, .. }) => data.len(),
                        (None, _) => 0,
                    };
                    had + data.len() <= JOINED_MAX
                };
                match &mut run {
                    Some((first, joined))
                        if fits(first, joined) && !self.splits(first.seq, event.seq) =>
                    {
                        let joined = joined.get_or_insert_with(|| match &first.kind {
                            Seen::Output { data, .. } => BytesMut::from(&data[..]),
                            _ => BytesMut::new(),
                        });
                        joined.extend_from_slice(data);
                        continue;
                    }
                    _ => {}
                }
                if let Some(done) = run.replace((event, None)) {
                    self.handle_run(done);
                }
                continue;
            }
            if let Some(done) = run.take() {
                self.handle_run(done);
            }
            self.handle(event);
        }
        if let Some(done) = run {
            self.handle_run(done);
        }
    }

    /// Whether a watcher's screen ends between events `first` and `last` (it has the one, not
    /// the other).
    fn splits(&self, first: u64, last: u64) -> bool {
        self.watchers
            .iter()
            .any(|w| first < w.from && w.from <= last)
    }

    /// Output events in a row, `first` with all their bytes.
    fn handle_run(&mut self, (mut first, joined): (kdbg_relay::Event, Option<BytesMut>)) {
        if let (Seen::Output { data, .. }, Some(joined)) = (&mut first.kind, joined) {
            *data = joined.freeze();
        }
        self.handle(first);
    }

    /// An event for the watchers.
    fn handle(&mut self, event: kdbg_relay::Event) {
        let at = event.at.saturating_duration_since(self.started);
        let kinds = match event.kind {
            Seen::Output { data, .. } => vec![EventKind::Output(data)],
            Seen::Resize(size) => vec![EventKind::Resize {
                cols: size.cols,
                rows: size.rows,
            }],
            Seen::Exit(status) => crate::record::exit_events(&status),
            Seen::Dropped => {
                debug!("live view fell behind its session; its watchers get the screen again");
                self.observer = Some(self.tap.subscribe(ObserverOptions {
                    max_bytes: KEEPER_BUDGET,
                    input: false,
                }));
                for watcher in &mut self.watchers {
                    watcher.behind = true;
                }
                Vec::new()
            }
            Seen::Start { .. } | Seen::Input(_) => Vec::new(),
        };
        self.broadcast(event.seq, kinds, at);
    }

    /// Sends event `seq` to the watchers that have not had it in their screen; one that
    /// skipped output gets the screen instead, once it has room for it.
    fn broadcast(&mut self, seq: u64, kinds: Vec<EventKind>, at: Duration) {
        let Some(live) = &mut self.live else { return };
        for kind in kinds {
            let _ = live.write(&Event::new(at, kind));
        }
        let lines = take_lines(live);
        let mut screen = None;
        let mut watchers = std::mem::take(&mut self.watchers);
        watchers.retain_mut(|watcher| {
            let sent = if watcher.behind {
                if watcher.tx.capacity() < WATCHER_QUEUE / 2 {
                    return !watcher.tx.is_closed();
                }
                let screen = screen.get_or_insert_with(|| self.redraw(at));
                watcher.from = self.parsed;
                send_all(&watcher.tx, screen)
            } else if seq < watcher.from || lines.is_empty() {
                return true;
            } else {
                send_all(&watcher.tx, &lines)
            };
            match sent {
                Sent::All => {
                    watcher.behind = false;
                    true
                }
                Sent::Full => {
                    watcher.behind = true;
                    true
                }
                Sent::Gone => false,
            }
        });
        self.watchers = watchers;
    }

    /// The whole screen, as one output event of the live stream.
    fn redraw(&mut self, at: Duration) -> Vec<String> {
        self.parse();
        let screen = self.screen();
        let Some(live) = &mut self.live else {
            return Vec::new();
        };
        let _ = live.write_output(at, screen.as_bytes());
        take_lines(live)
    }
}

/// The next event of `observer`, if there is one; pending forever if there is none.
async fn next(observer: &mut Option<Observer>) -> Option<kdbg_relay::Event> {
    match observer {
        Some(observer) => observer.recv().await,
        None => std::future::pending().await,
    }
}

/// The lines written so far, taken out of the encoder.
fn take_lines(recording: &mut Recording<Vec<u8>>) -> Vec<String> {
    let bytes = std::mem::take(recording.get_mut());
    // The encoder writes JSON: always UTF-8.
    let text = String::from_utf8(bytes).unwrap_or_default();
    text.lines().map(str::to_owned).collect()
}

/// Queues `lines` for a watcher.
fn send_all(watcher: &mpsc::Sender<String>, lines: &[String]) -> Sent {
    for line in lines {
        match watcher.try_send(line.clone()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Sent::Full,
            Err(mpsc::error::TrySendError::Closed(_)) => return Sent::Gone,
        }
    }
    Sent::All
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kdbg_relay::codec::STDOUT;

    use super::*;

    fn output(tap: &Tap, text: &str) {
        tap.offer(Seen::Output {
            channel: STDOUT,
            data: Bytes::copy_from_slice(text.as_bytes()),
        });
    }

    /// The next line a watcher gets, as (code, data); the header as ("header", line).
    async fn next(lines: &mut mpsc::Receiver<String>) -> (String, String) {
        let line = tokio::time::timeout(Duration::from_secs(5), lines.recv())
            .await
            .expect("a line within 5 s")
            .expect("the view goes on");
        if line.starts_with('{') {
            return ("header".into(), line);
        }
        let (_, code, data): (f64, String, String) = serde_json::from_str(&line).unwrap();
        (code, data)
    }

    #[tokio::test]
    async fn a_late_watcher_gets_the_screen_then_each_later_event_once() {
        let tap = Tap::new(Some(TerminalSize { cols: 40, rows: 5 }));
        let screen = Screen::keep(&tap, Header::default()).unwrap();
        output(&tap, "first line\r\n");
        let mut watcher = screen.join().unwrap();
        let (kind, header) = next(&mut watcher).await;
        assert_eq!(kind, "header");
        assert!(
            header.contains("\"cols\":40") && header.contains("\"rows\":5"),
            "{header}"
        );
        let (code, drawn) = next(&mut watcher).await;
        assert_eq!(code, "o");
        assert!(
            drawn.starts_with(RESET) && drawn.contains("first line"),
            "{drawn:?}"
        );
        output(&tap, "second");
        assert_eq!(next(&mut watcher).await, ("o".into(), "second".into()));
        tap.offer(Seen::Resize(TerminalSize { cols: 50, rows: 6 }));
        assert_eq!(next(&mut watcher).await, ("r".into(), "50x6".into()));
        assert_eq!(screen.watchers(), 1);
        tap.offer(Seen::Exit(kdbg_relay::ExitStatus::Code(3)));
        assert_eq!(next(&mut watcher).await, ("x".into(), "3".into()));
        tap.end();
        assert!(
            tokio::time::timeout(Duration::from_secs(5), watcher.recv())
                .await
                .unwrap()
                .is_none(),
            "the view ends with the session"
        );
    }

    #[tokio::test]
    async fn output_that_comes_in_a_row_reaches_a_watcher_whole_in_fewer_lines() {
        let tap = Tap::new(Some(TerminalSize { cols: 80, rows: 24 }));
        let screen = Screen::keep(&tap, Header::default()).unwrap();
        let mut watcher = screen.join().unwrap();
        next(&mut watcher).await;
        next(&mut watcher).await;
        let mut sent = String::new();
        for n in 0..2000 {
            let chunk = format!("chunk {n} é\r\n");
            output(&tap, &chunk);
            sent.push_str(&chunk);
        }
        // Past JOINED_MAX, a line of its own: each fits a WebSocket message.
        for n in 0..64 {
            let chunk = format!("{n:04}").repeat(1024);
            output(&tap, &chunk);
            sent.push_str(&chunk);
        }
        output(&tap, "end");
        sent.push_str("end");
        let (mut got, mut lines) = (String::new(), 0);
        while got.len() < sent.len() {
            let (code, data) = next(&mut watcher).await;
            assert_eq!(code, "o");
            assert!(
                data.len() <= JOINED_MAX,
                "{} bytes in one event",
                data.len()
            );
            got.push_str(&data);
            lines += 1;
        }
        assert_eq!(got, sent);
        assert!(lines <= 1000, "{lines} lines for 2065 chunks");
    }

    #[tokio::test]
    async fn after_a_flood_the_screen_is_rebuilt_from_its_end() {
        let tap = Tap::new(Some(TerminalSize { cols: 80, rows: 4 }));
        let screen = Screen::keep(&tap, Header::default()).unwrap();
        let line = "x".repeat(79) + "\r\n";
        for _ in 0..(4 * PENDING / line.len()) {
            output(&tap, &line);
        }
        output(&tap, "the end of the flood");
        let mut watcher = screen.join().unwrap();
        next(&mut watcher).await;
        let (_, drawn) = next(&mut watcher).await;
        assert!(drawn.contains("the end of the flood"), "{drawn:?}");
    }
}
