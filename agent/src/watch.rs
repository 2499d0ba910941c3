//! Live view: a terminal session's screen, kept by the agent so that a colleague can watch
//! the session read-only, from its current screen.
//!
//! Every terminal session has a [`Screen`]: a thread that follows the session's output through
//! an observer of its tap into a virtual terminal (asciinema's `avt`), and fans the output out
//! to watchers. A watcher joining late first gets the virtual terminal's state as escape
//! sequences that redraw it, then the live output: the keeper handles joins and output in one
//! loop, so the snapshot and the live stream meet exactly. Watchers get asciicast v3 lines (the
//! header, the snapshot as an output event, then output, resize and exit events), the format
//! of asciinema's live streams. Nothing a watcher sends reaches the session: watching has no
//! input path at all.
//!
//! The keeper never slows the session: its observer is dropped if it falls more than its
//! budget behind (it then starts observing again, and says so to its watchers: the screen may
//! miss what it skipped until the program redraws), and a watcher that does not keep up is
//! cut off.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kdbg_recordings::{Event, EventKind, Format, Header, Recorder, Recording, Utf8Carry};
use kdbg_relay::observer::{EventKind as Seen, Observer, ObserverOptions};
use kdbg_relay::{Tap, TerminalSize};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

/// How far the keeper may fall behind the session before its observer is dropped.
const KEEPER_BUDGET: usize = 8 << 20;
/// Lines a watcher may have waiting before it is cut off.
const WATCHER_QUEUE: usize = 1024;

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
        let observer = tap.subscribe(ObserverOptions {
            max_bytes: KEEPER_BUDGET,
            input: false,
        });
        let keeper = Keeper {
            tap: tap.clone(),
            header,
            joined,
            watchers: watchers.clone(),
        };
        std::thread::Builder::new()
            .name("kdbg-screen".into())
            .stack_size(512 << 10)
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build();
                match runtime {
                    Ok(runtime) => runtime.block_on(keeper.run(observer)),
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

struct Keeper {
    tap: Tap,
    header: Header,
    joined: mpsc::UnboundedReceiver<mpsc::Sender<String>>,
    watchers: Arc<AtomicUsize>,
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
}

impl Keeper {
    async fn run(mut self, mut observer: Observer) {
        let mut size = kdbg_api::record::DEFAULT_SIZE;
        let mut vt = Vt::new(size);
        let started = Instant::now();
        let mut watchers: Vec<mpsc::Sender<String>> = Vec::new();
        // The live stream for every watcher, encoded once; `None` while nobody watches.
        let mut live: Option<Recording<Vec<u8>>> = None;
        loop {
            tokio::select! {
                biased;
                Some(watcher) = self.joined.recv() => {
                    let (cols, rows) = vt.vt.size();
                    match self.snapshot(&vt, cols, rows) {
                        Ok(lines) if send_all(&watcher, &lines) => {
                            if live.is_none() {
                                live = self.encoder(cols, rows).ok();
                            }
                            watchers.push(watcher);
                        }
                        Ok(_) => {}
                        Err(e) => warn!(error = %kdbg_api::error_chain(&e), "live view: encoding the screen"),
                    }
                }
                event = observer.recv() => {
                    let Some(event) = event else { break };
                    let at = event.at.saturating_duration_since(started);
                    let event = match event.kind {
                        Seen::Start { size: Some(start) } => {
                            if start != size {
                                size = start;
                                vt.vt.resize(usize::from(size.cols.max(1)), usize::from(size.rows.max(1)));
                            }
                            None
                        }
                        Seen::Output { data, .. } => {
                            vt.vt.feed_str(vt.text.decode(&data));
                            Some(EventKind::Output(data))
                        }
                        Seen::Resize(new) => {
                            size = new;
                            vt.vt.resize(usize::from(size.cols.max(1)), usize::from(size.rows.max(1)));
                            Some(EventKind::Resize { cols: size.cols, rows: size.rows })
                        }
                        Seen::Exit(status) => {
                            if let Some(live) = &mut live {
                                for kind in kdbg_api::record::exit_events(&status) {
                                    let _ = live.write(&Event::new(at, kind));
                                }
                                let lines = take_lines(live);
                                watchers.retain(|w| send_all(w, &lines));
                            }
                            None
                        }
                        Seen::Dropped => {
                            warn!("live view fell behind its session; it follows again from now");
                            observer = self.tap.subscribe(ObserverOptions {
                                max_bytes: KEEPER_BUDGET,
                                input: false,
                            });
                            Some(EventKind::Marker("the live view skipped output it could not keep up with".into()))
                        }
                        Seen::Start { size: None } | Seen::Input(_) => None,
                    };
                    if let (Some(kind), Some(encoder)) = (event, &mut live)
                        && encoder.write(&Event::new(at, kind)).is_ok()
                    {
                        let lines = take_lines(encoder);
                        watchers.retain(|w| send_all(w, &lines));
                    }
                }
            }
            self.watchers.store(watchers.len(), Ordering::Relaxed);
            if watchers.is_empty() {
                live = None;
            }
        }
        self.watchers.store(0, Ordering::Relaxed);
        debug!("session over; its live view ends");
    }

    /// The first lines a watcher gets: the header with the screen's size, then the screen.
    fn snapshot(
        &self,
        vt: &Vt,
        cols: usize,
        rows: usize,
    ) -> Result<Vec<String>, kdbg_recordings::Error> {
        let mut header = self.header.clone();
        header.cols = u16::try_from(cols).unwrap_or(u16::MAX);
        header.rows = u16::try_from(rows).unwrap_or(u16::MAX);
        let mut recording = Recorder::new(Format::V3, Vec::new()).start(&header)?;
        recording.write_output(Duration::ZERO, vt.vt.dump().as_bytes())?;
        Ok(take_lines(&mut recording))
    }

    /// The encoder of the live stream (its header is not sent: each watcher got its own).
    fn encoder(
        &self,
        cols: usize,
        rows: usize,
    ) -> Result<Recording<Vec<u8>>, kdbg_recordings::Error> {
        let header = Header::new(
            u16::try_from(cols).unwrap_or(u16::MAX),
            u16::try_from(rows).unwrap_or(u16::MAX),
        );
        let mut encoder = Recorder::new(Format::V3, Vec::new()).start(&header)?;
        encoder.get_mut().clear();
        Ok(encoder)
    }
}

/// The lines written so far, taken out of the encoder.
fn take_lines(recording: &mut Recording<Vec<u8>>) -> Vec<String> {
    let bytes = std::mem::take(recording.get_mut());
    // The encoder writes JSON: always UTF-8.
    let text = String::from_utf8(bytes).unwrap_or_default();
    text.lines().map(str::to_owned).collect()
}

/// Queues `lines` for a watcher; false if it left or fell too far behind (then it is cut off).
fn send_all(watcher: &mpsc::Sender<String>, lines: &[String]) -> bool {
    for line in lines {
        if let Err(e) = watcher.try_send(line.clone()) {
            if matches!(e, mpsc::error::TrySendError::Full(_)) {
                warn!("a watcher fell behind its session and was cut off");
            }
            return false;
        }
    }
    true
}
