//! The observer tap: recorders and live viewers see what a session carries without ever slowing
//! it down.
//!
//! A [`Tap`] fans every event out to any number of [`Observer`]s, which may join at any time
//! (a viewer joining a running session). The session never waits for an observer: events are
//! queued, and each observer may hold at most its byte budget of events it has not taken yet
//! ([`ObserverOptions::max_bytes`]; output data counts, and every event at least
//! [`EVENT_OVERHEAD`]). An observer past its budget is dropped, and its last event says so
//! ([`EventKind::Dropped`]), so a recording can mark itself incomplete instead of silently
//! stopping. Output chunks are shared with the session as `Bytes` (a reference count, never a
//! copy).
//!
//! Every observer's first event is [`EventKind::Start`] with the terminal size as the session
//! knows it at that moment (the size the client asked for at the start, or the latest resize),
//! so a recorder can write its header before any output. Observers see sizes within
//! [`TerminalSize::MAX_KEPT`]: a client may give its process any size the kernel takes, but a
//! screen kept for watchers costs memory by the cell. Keystrokes ([`EventKind::Input`]) go
//! only to observers that ask for them ([`ObserverOptions::input`]): they may hold passwords.
//!
//! Events are numbered ([`Event::seq`]). A tap can also keep the session's recent output and
//! sizes ([`Tap::keep_recent`]) for a reader that looks now and then instead of following
//! every event (a screen keeper, which needs the screen only when someone watches): keeping
//! costs the session a reference count per chunk, and the reader is woken at most once per
//! look ([`Recent::changed`]), where an observer would be woken per chunk. The numbers let a
//! reader of both (a screen built from the recent output, then live events from an observer)
//! meet exactly.
//!
//! Times come from tokio's clock, so tests can pause and advance it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::resize::TerminalSize;
use crate::status::ExitStatus;

/// What every event counts against an observer's budget, beyond its data.
pub const EVENT_OVERHEAD: usize = 64;

/// Something a session carried, with the moment it did.
#[derive(Debug, Clone)]
pub struct Event {
    /// When the session saw it (tokio's clock).
    pub at: Instant,
    /// Its number in the session: every observer sees events in this order. An observer's
    /// [`EventKind::Start`] carries the number the next event will have.
    pub seq: u64,
    /// What it was.
    pub kind: EventKind,
}

/// The kinds of [`Event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// The first event of every observer: the terminal size at this moment, if known.
    Start {
        /// The terminal size.
        size: Option<TerminalSize>,
    },
    /// Process output; `channel` is [`crate::codec::STDOUT`] or [`crate::codec::STDERR`].
    Output {
        /// Which stream.
        channel: u8,
        /// The bytes, shared with the session.
        data: Bytes,
    },
    /// The user's input (only for observers that asked for it).
    Input(Bytes),
    /// The terminal was resized.
    Resize(TerminalSize),
    /// The process ended.
    Exit(ExitStatus),
    /// The last event of an observer that fell behind by more than its budget: it was
    /// dropped, and sees nothing more of the session.
    Dropped,
}

impl EventKind {
    /// What the event counts against a budget.
    fn cost(&self) -> usize {
        EVENT_OVERHEAD
            + match self {
                EventKind::Output { data, .. } | EventKind::Input(data) => data.len(),
                _ => 0,
            }
    }
}

/// What an observer wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObserverOptions {
    /// The most it may fall behind, in bytes of events not taken yet.
    pub max_bytes: usize,
    /// Whether it sees the user's input.
    pub input: bool,
}

impl Default for ObserverOptions {
    fn default() -> Self {
        ObserverOptions {
            max_bytes: 4 << 20,
            input: false,
        }
    }
}

/// The session's end: fans events out to its observers. Clones share the observers, so
/// observers can be added while the session runs.
#[derive(Debug, Clone, Default)]
pub struct Tap {
    shared: Arc<Mutex<Shared>>,
}

#[derive(Debug, Default)]
struct Shared {
    observers: Vec<Subscriber>,
    size: Option<TerminalSize>,
    /// The session ended: no observer joins any more.
    ended: bool,
    /// The number the next event gets.
    seq: u64,
    /// The recent output and sizes, if kept.
    recent: Option<RecentBuffer>,
}

/// What [`Tap::keep_recent`] keeps.
#[derive(Debug)]
struct RecentBuffer {
    /// Output and resizes, with their numbers, oldest first.
    events: VecDeque<(u64, EventKind)>,
    /// What `events` cost ([`EventKind::cost`]: output bytes, and [`EVENT_OVERHEAD`] for
    /// every event, resizes included, so a flood of resizes is bounded like output), at
    /// most `cap` (the oldest go first).
    bytes: usize,
    cap: usize,
    /// The reader looked since the last change: the next change wakes it.
    armed: bool,
    notify: Arc<Notify>,
}

/// The recent output of a session, for a reader that looks now and then; see
/// [`Tap::keep_recent`].
#[derive(Debug, Clone)]
pub struct Recent {
    tap: Tap,
    notify: Arc<Notify>,
}

/// What [`Recent::take`] found.
#[derive(Debug, Default)]
pub struct Taken {
    /// Output and resizes since the number asked for, with their numbers.
    pub events: Vec<(u64, EventKind)>,
    /// Some of what was asked for is gone (it was more than the buffer keeps).
    pub skipped: bool,
    /// The number to ask from next time: the session's next event's.
    pub next: u64,
    /// The session has ended.
    pub ended: bool,
}

impl Recent {
    /// Resolves once the session has printed or resized since the last [`Recent::take`] (or
    /// ended). Cancel-safe.
    pub async fn changed(&self) {
        self.notify.notified().await;
    }

    /// The output and resizes numbered `from` and later that are still kept; looking re-arms
    /// [`Recent::changed`].
    pub fn take(&self, from: u64) -> Taken {
        let mut shared = self.tap.lock();
        let next = shared.seq;
        let ended = shared.ended;
        let Some(recent) = &mut shared.recent else {
            return Taken {
                next,
                ended,
                ..Taken::default()
            };
        };
        recent.armed = true;
        let oldest = recent.events.front().map_or(next, |(seq, _)| *seq);
        Taken {
            events: recent
                .events
                .iter()
                .filter(|(seq, _)| *seq >= from)
                .cloned()
                .collect(),
            skipped: from < oldest,
            next,
            ended,
        }
    }

    /// The number the session's next event will have.
    pub fn next_seq(&self) -> u64 {
        self.tap.lock().seq
    }

    /// Whether the session has ended.
    pub fn ended(&self) -> bool {
        self.tap.lock().ended
    }
}

#[derive(Debug)]
struct Subscriber {
    tx: mpsc::UnboundedSender<Event>,
    /// Bytes queued and not yet taken.
    queued: Arc<AtomicUsize>,
    options: ObserverOptions,
}

/// An observer's end.
#[derive(Debug)]
pub struct Observer {
    rx: mpsc::UnboundedReceiver<Event>,
    queued: Arc<AtomicUsize>,
}

impl Observer {
    /// The next event; `None` once the session has ended (or after [`EventKind::Dropped`]).
    ///
    /// # Cancel safety
    /// Cancel-safe: an event is taken only when this resolves.
    pub async fn recv(&mut self) -> Option<Event> {
        let event = self.rx.recv().await?;
        Some(self.taken(event))
    }

    /// The next event, waiting on this thread (for an observer on a thread of its own, such
    /// as a recorder writing files). Not for use inside an async runtime.
    pub fn blocking_recv(&mut self) -> Option<Event> {
        let event = self.rx.blocking_recv()?;
        Some(self.taken(event))
    }

    /// The next event if one is queued; `Ok(None)` when none is, `Err(())` once the stream
    /// has ended.
    #[allow(clippy::result_unit_err)]
    pub fn try_recv(&mut self) -> Result<Option<Event>, ()> {
        match self.rx.try_recv() {
            Ok(event) => Ok(Some(self.taken(event))),
            Err(mpsc::error::TryRecvError::Empty) => Ok(None),
            Err(mpsc::error::TryRecvError::Disconnected) => Err(()),
        }
    }

    fn taken(&self, event: Event) -> Event {
        self.queued.fetch_sub(event.kind.cost(), Ordering::Relaxed);
        event
    }
}

impl Tap {
    /// A tap with no observers yet; `size` is the terminal size at the start, if known.
    pub fn new(size: Option<TerminalSize>) -> Tap {
        let tap = Tap::default();
        tap.lock().size = size.map(TerminalSize::kept);
        tap
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds an observer; its first event is [`EventKind::Start`]. An observer added after the
    /// session ended gets only that event.
    pub fn subscribe(&self, options: ObserverOptions) -> Observer {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let mut shared = self.lock();
        let start = EventKind::Start { size: shared.size };
        queued.fetch_add(start.cost(), Ordering::Relaxed);
        let _ = tx.send(Event {
            at: Instant::now(),
            seq: shared.seq,
            kind: start,
        });
        if !shared.ended {
            shared.observers.push(Subscriber {
                tx,
                queued: queued.clone(),
                options,
            });
        }
        Observer { rx, queued }
    }

    /// The terminal size as the session knows it now, if known.
    pub fn size(&self) -> Option<TerminalSize> {
        self.lock().size
    }

    /// How many observers there are.
    pub fn observers(&self) -> usize {
        self.lock().observers.len()
    }

    /// Keeps the session's output and resizes from now on, `cap` bytes of them at most
    /// (output bytes, and [`EVENT_OVERHEAD`] for each event), for a reader that looks now and then.
    pub fn keep_recent(&self, cap: usize) -> Recent {
        let notify = Arc::new(Notify::new());
        self.lock().recent = Some(RecentBuffer {
            events: VecDeque::new(),
            bytes: 0,
            cap,
            armed: true,
            notify: notify.clone(),
        });
        Recent {
            tap: self.clone(),
            notify,
        }
    }

    /// Hands `kind` to every observer that wants it, without waiting; drops those past their
    /// budget (telling them) and those that went away.
    pub fn offer(&self, kind: EventKind) {
        // Observers keep screens and write headers of the sizes they see: they see sizes
        // within TerminalSize::MAX_KEPT (the process itself got the size asked for).
        let kind = match kind {
            EventKind::Resize(size) => EventKind::Resize(size.kept()),
            other => other,
        };
        let mut shared = self.lock();
        if let EventKind::Resize(size) = kind {
            // The size it already is (a client's first message repeating the size it gave
            // with its request): nothing changes, nothing to tell.
            if shared.size == Some(size) {
                return;
            }
            shared.size = Some(size);
        }
        let seq = shared.seq;
        shared.seq += 1;
        if let Some(recent) = &mut shared.recent
            && matches!(kind, EventKind::Output { .. } | EventKind::Resize(_))
        {
            recent.keep(seq, &kind);
        }
        if shared.observers.is_empty() {
            return;
        }
        let at = Instant::now();
        let cost = kind.cost();
        let input = matches!(kind, EventKind::Input(_));
        shared.observers.retain(|o| {
            if input && !o.options.input {
                return true;
            }
            let queued = o.queued.fetch_add(cost, Ordering::Relaxed) + cost;
            if queued > o.options.max_bytes {
                warn!(
                    limit = o.options.max_bytes,
                    "session observer fell behind and was dropped; the session goes on"
                );
                let _ = o.tx.send(Event {
                    at,
                    seq,
                    kind: EventKind::Dropped,
                });
                return false;
            }
            let kept =
                o.tx.send(Event {
                    at,
                    seq,
                    kind: kind.clone(),
                })
                .is_ok();
            if !kept {
                debug!("session observer went away");
            }
            kept
        });
    }

    /// Whether any observer wants the user's input (so the session need not offer it).
    pub fn wants_input(&self) -> bool {
        self.lock().observers.iter().any(|o| o.options.input)
    }

    /// The session is over: observers see the end of their stream once they have taken what
    /// is queued.
    pub fn end(&self) {
        let mut shared = self.lock();
        shared.ended = true;
        shared.observers.clear();
        if let Some(recent) = &shared.recent {
            recent.notify.notify_one();
        }
    }
}

impl RecentBuffer {
    fn keep(&mut self, seq: u64, kind: &EventKind) {
        self.bytes += kind.cost();
        self.events.push_back((seq, kind.clone()));
        while self.bytes > self.cap {
            match self.events.pop_front() {
                Some((_, gone)) => self.bytes -= gone.cost(),
                None => break,
            }
        }
        if self.armed {
            self.armed = false;
            self.notify.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(text: &'static str) -> EventKind {
        EventKind::Output {
            channel: crate::codec::STDOUT,
            data: Bytes::from_static(text.as_bytes()),
        }
    }

    #[tokio::test]
    async fn every_observer_starts_with_the_current_size_and_sees_what_follows() {
        let size = TerminalSize { cols: 80, rows: 24 };
        let tap = Tap::new(Some(size));
        let early = tap.subscribe(ObserverOptions::default());
        tap.offer(output("a"));
        let bigger = TerminalSize {
            cols: 120,
            rows: 40,
        };
        tap.offer(EventKind::Resize(bigger));
        let late = tap.subscribe(ObserverOptions::default());
        tap.offer(output("b"));
        tap.end();
        let kinds = |mut o: Observer| async move {
            let mut kinds = Vec::new();
            while let Some(e) = o.recv().await {
                kinds.push(e.kind);
            }
            kinds
        };
        assert_eq!(
            kinds(early).await,
            [
                EventKind::Start { size: Some(size) },
                output("a"),
                EventKind::Resize(bigger),
                output("b")
            ]
        );
        assert_eq!(
            kinds(late).await,
            [EventKind::Start { size: Some(bigger) }, output("b")]
        );
    }

    #[tokio::test]
    async fn input_goes_only_to_observers_that_ask() {
        let tap = Tap::new(None);
        let mut quiet = tap.subscribe(ObserverOptions::default());
        let mut keen = tap.subscribe(ObserverOptions {
            input: true,
            ..ObserverOptions::default()
        });
        assert!(tap.wants_input());
        tap.offer(EventKind::Input(Bytes::from_static(b"secret")));
        tap.end();
        quiet.recv().await.unwrap();
        assert!(quiet.recv().await.is_none());
        keen.recv().await.unwrap();
        assert_eq!(
            keen.recv().await.unwrap().kind,
            EventKind::Input(Bytes::from_static(b"secret"))
        );
    }

    #[tokio::test]
    async fn an_observer_past_its_budget_is_dropped_and_told() {
        let tap = Tap::new(None);
        let mut slow = tap.subscribe(ObserverOptions {
            max_bytes: 1000,
            input: false,
        });
        let mut fast = tap.subscribe(ObserverOptions {
            max_bytes: 1000,
            input: false,
        });
        let chunk = Bytes::from(vec![b'x'; 300]);
        for _ in 0..10 {
            tap.offer(EventKind::Output {
                channel: 1,
                data: chunk.clone(),
            });
            // The fast one keeps up.
            while fast.queued.load(Ordering::Relaxed) > 0 {
                fast.recv().await.unwrap();
            }
        }
        assert_eq!(tap.observers(), 1);
        let mut last = None;
        while let Some(e) = slow.recv().await {
            last = Some(e.kind);
        }
        assert_eq!(last, Some(EventKind::Dropped));
    }

    #[tokio::test]
    async fn recent_output_is_kept_to_its_cap_numbered_and_wakes_its_reader_once() {
        let tap = Tap::new(None);
        // Room for two one-byte outputs and a resize.
        let recent = tap.keep_recent(3 * EVENT_OVERHEAD + 2);
        tap.offer(output("a"));
        tap.offer(EventKind::Resize(TerminalSize { cols: 9, rows: 9 }));
        tap.offer(output("b"));
        recent.changed().await;
        let taken = recent.take(0);
        assert_eq!(taken.next, 3);
        assert!(!taken.skipped);
        let numbers: Vec<u64> = taken.events.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(numbers, [0, 1, 2]);
        // Past the cap, the oldest output goes, and a reader from before it is told.
        tap.offer(output("c"));
        let taken = recent.take(3);
        assert_eq!(taken.events.len(), 1);
        let from_start = recent.take(0);
        assert!(from_start.skipped);
        assert_eq!(from_start.events.first().map(|(seq, _)| *seq), Some(1));
        // Every look re-arms: one wake for many changes.
        tap.offer(output("d"));
        tap.offer(output("e"));
        tokio::time::timeout(std::time::Duration::from_secs(1), recent.changed())
            .await
            .unwrap();
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), recent.changed())
                .await
                .is_err(),
            "woken once"
        );
        tap.end();
        recent.changed().await;
        assert!(recent.take(0).ended);
    }

    #[tokio::test]
    async fn a_flood_of_resizes_is_kept_within_the_cap() {
        // The hostile probe's 150 MiB of resize messages: each kept event costs at least
        // EVENT_OVERHEAD, so what the buffer holds stays under its cap however many come.
        let tap = Tap::new(None);
        let cap = 64 << 10;
        let recent = tap.keep_recent(cap);
        for i in 0..100_000u32 {
            let n = u16::try_from(i % 500).unwrap_or(0) + 1;
            tap.offer(EventKind::Resize(TerminalSize { cols: n, rows: n }));
        }
        let taken = recent.take(0);
        assert!(taken.skipped);
        assert!(
            taken.events.len() <= cap / EVENT_OVERHEAD,
            "{} resizes kept",
            taken.events.len()
        );
        // The latest size is still there to rebuild the screen with.
        assert_eq!(
            taken.events.last().map(|(_, kind)| kind.clone()),
            Some(EventKind::Resize(TerminalSize {
                cols: 500,
                rows: 500
            }))
        );
    }

    #[tokio::test]
    async fn observers_see_sizes_within_what_is_kept() {
        let huge = TerminalSize {
            cols: u16::MAX,
            rows: u16::MAX,
        };
        let tap = Tap::new(Some(huge));
        assert_eq!(tap.size(), Some(TerminalSize::MAX_KEPT));
        let mut observer = tap.subscribe(ObserverOptions::default());
        tap.offer(EventKind::Resize(TerminalSize {
            cols: 120,
            rows: u16::MAX,
        }));
        assert_eq!(
            observer.recv().await.map(|e| e.kind),
            Some(EventKind::Start {
                size: Some(TerminalSize::MAX_KEPT)
            })
        );
        assert_eq!(
            observer.recv().await.map(|e| e.kind),
            Some(EventKind::Resize(TerminalSize {
                cols: 120,
                rows: 1000
            }))
        );
    }
}
