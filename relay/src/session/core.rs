//! The pump both roles share: one future polling named branches in turn over state it owns
//! outright, with the role's own work behind the [`Role`] trait.
//!
//! [`Core`] is everything but the role: the WebSocket, the local sources and sinks, the
//! control messages waiting to go out, the direct-write batch, the keepalive and the observer
//! tap. [`Pump`] drives a core and a role; a role sees the core through its trait methods,
//! so no branch ever asks which role it is in.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Sink as _, Stream as _};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Interval, MissedTickBehavior, Sleep};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::{debug, trace};

use super::stream::{Inbound, Sink, Source, stream_name};
use super::{BYTES_PER_POLL, Config, DIRECT_BATCH, Finished, Stats, TURNS_PER_POLL};
use crate::codec::{self, Frame, Protocol};
use crate::direct::DirectBatch;
use crate::error::{Error, ProtocolError};
use crate::observer::{EventKind, Tap};

/// What a pump's WebSocket runs over.
pub(crate) trait Socket: AsyncRead + AsyncWrite + Unpin {}
impl<S: AsyncRead + AsyncWrite + Unpin> Socket for S {}

/// Where the session is in its life.
pub(super) enum Phase {
    Running,
    /// A close frame went one way; nothing new is sent, and the connection gets until the
    /// deadline to finish the close handshake. While what was queued before the close frame
    /// (and the frame itself) still waits for room toward the peer, the handshake has not
    /// begun and the deadline keeps moving, up to the idle timeout without progress.
    Closing {
        deadline: Pin<Box<Sleep>>,
        /// `bytes_sent` when last seen, and when it last changed.
        progress: (u64, Instant),
    },
    /// The connection ended: finish local writes, then end.
    Finishing,
}

/// One end's part of a session: what it does with the peer's frames, its own work each turn,
/// and what the session's end means for it.
pub(super) trait Role {
    /// How a session of this role ends.
    type Outcome;

    /// Handles a frame from the peer (unknown channels are the core's).
    fn frame<S: Socket>(&mut self, core: &mut Core<'_, S>, frame: Frame) -> Result<(), Error>;

    /// Control messages of the role's own, queued just before the core sends what is queued
    /// (the client's terminal sizes). Returns whether it queued any.
    fn control<S: Socket>(&mut self, _core: &mut Core<'_, S>, _cx: &mut Context<'_>) -> bool {
        false
    }

    /// The role's own work this turn, after the sources were read. Returns whether it did
    /// any, and the outcome when the role has closed the session itself.
    fn poll<S: Socket>(
        &mut self,
        core: &mut Core<'_, S>,
        cx: &mut Context<'_>,
    ) -> Result<(bool, Option<Self::Outcome>), Error>;

    /// The peer broke the protocol (`error`, reading): the role may answer (a status and a
    /// close frame saying why) and end the session as the outcome it returns; `None` ends it
    /// with the error.
    fn violated<S: Socket>(
        &mut self,
        _core: &mut Core<'_, S>,
        _error: &Error,
    ) -> Option<Self::Outcome> {
        None
    }

    /// The connection ended before the role closed the session: cleanly (a close handshake,
    /// or the peer's close and then EOF) or with `error`.
    fn ended(
        &mut self,
        clean: bool,
        error: Option<tungstenite::Error>,
    ) -> Result<Self::Outcome, Error>;
}

/// The state both roles share.
pub(super) struct Core<'c, S> {
    pub ws: WebSocketStream<S>,
    pub protocol: Protocol,
    pub config: &'c Config,
    pub phase: Phase,
    pub sources: Vec<Source>,
    /// Sinks by channel: 0 on the server, 1 and 2 on the client.
    pub sinks: [Option<Sink>; 3],
    pub inbound: Option<Inbound>,
    /// Control messages waiting for the WebSocket: a handful at most (established signal,
    /// close signal, one resize, one ping, status, close).
    pub outbox: VecDeque<Message>,
    /// Frames were handed to the WebSocket since its last flush.
    pub unflushed: bool,
    /// Server: data frames bypass tungstenite's write buffer (see [`crate::direct`]).
    pub direct_writes: bool,
    /// Direct frames queued for the socket; while any are, tungstenite must not write.
    pub direct: DirectBatch,
    /// Direct frames were written since the socket was last flushed.
    raw_unflushed: bool,
    pub tap: Option<Tap>,
    keepalive: Interval,
    /// Something arrived since the last keepalive tick.
    heard: bool,
    last_heard: Instant,
    /// The peer broke the protocol: nothing more is read (the stream's state is unknown),
    /// what is queued goes out, and the session ends at the close deadline.
    pub stop_reading: bool,
    /// At the last turn of the sources, one had to wait for room in the WebSocket: the peer
    /// has not taken what came before (a pager nobody pages, a slow link).
    pub output_waits_for_peer: bool,
    pub stats: Stats,
}

impl<'c, S: Socket> Core<'c, S> {
    pub fn new(
        ws: WebSocketStream<S>,
        protocol: Protocol,
        config: &'c Config,
        sources: Vec<Source>,
        tap: Option<Tap>,
        direct_writes: bool,
    ) -> Self {
        let start = Instant::now();
        let mut keepalive =
            tokio::time::interval_at(start + config.keepalive_interval, config.keepalive_interval);
        keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Core {
            ws,
            protocol,
            config,
            phase: Phase::Running,
            sources,
            sinks: [None, None, None],
            inbound: None,
            outbox: VecDeque::new(),
            unflushed: false,
            direct_writes,
            direct: DirectBatch::default(),
            raw_unflushed: false,
            tap,
            keepalive,
            heard: false,
            last_heard: start,
            stop_reading: false,
            output_waits_for_peer: false,
            stats: Stats::default(),
        }
    }

    /// A closing phase with its deadline: the close timeout, or two keepalive intervals if
    /// that is longer, so that a live peer (whose pings come at that interval, the same
    /// default on both ends) is heard before the deadline and gets more time (see
    /// [`Pump::poll_clocks`]); a peer that broke the protocol gets the close timeout.
    pub fn closing(&self) -> Phase {
        let first = if self.stop_reading {
            self.config.close_timeout
        } else {
            self.config
                .close_timeout
                .max(self.config.keepalive_interval * 2)
        };
        Phase::Closing {
            deadline: Box::pin(tokio::time::sleep(first)),
            progress: (self.stats.bytes_sent, Instant::now()),
        }
    }

    /// Hands an event to the observers, if any.
    pub fn observe(&self, kind: EventKind) {
        if let Some(tap) = &self.tap {
            tap.offer(kind);
        }
    }

    /// A frame for the other direction, dropped.
    pub fn ignore(&mut self, frame: &Frame) {
        debug!(
            channel = frame.channel(),
            "message for the other direction dropped"
        );
        self.stats.ignored_frames += 1;
    }

    /// Hands queued control messages to the WebSocket.
    fn send_control(&mut self, cx: &mut Context<'_>) -> Result<bool, Error> {
        let mut busy = false;
        while !self.outbox.is_empty() {
            match Pin::new(&mut self.ws).poll_ready(cx) {
                Poll::Pending => return Ok(busy),
                Poll::Ready(r) => r.map_err(Error::Send)?,
            }
            let message = self.outbox.pop_front().expect("checked non-empty");
            trace!(?message, "control message");
            Pin::new(&mut self.ws)
                .start_send(message)
                .map_err(Error::Send)?;
            self.unflushed = true;
            busy = true;
        }
        Ok(busy)
    }

    /// Whether a data frame can be handed over now: with direct writes, the batch has room and
    /// tungstenite's buffer is flushed; otherwise tungstenite has room.
    pub(super) fn ready_for_frame(&mut self, cx: &mut Context<'_>) -> Result<bool, Error> {
        if !self.direct_writes {
            return Ok(Pin::new(&mut self.ws)
                .poll_ready(cx)
                .map_err(Error::Send)?
                .is_ready());
        }
        if self.direct.queued() >= DIRECT_BATCH && !self.poll_direct(cx)? {
            return Ok(false);
        }
        if self.unflushed {
            if Pin::new(&mut self.ws)
                .poll_flush(cx)
                .map_err(Error::Send)?
                .is_pending()
            {
                return Ok(false);
            }
            self.unflushed = false;
        }
        Ok(true)
    }

    /// Writes the queued direct frames. Returns whether none is left.
    fn poll_direct(&mut self, cx: &mut Context<'_>) -> Result<bool, Error> {
        if self.direct.is_empty() {
            return Ok(true);
        }
        match self.direct.poll_write(self.ws.get_mut(), cx) {
            Poll::Pending => Ok(false),
            Poll::Ready(Ok(())) => {
                self.raw_unflushed = true;
                Ok(true)
            }
            Poll::Ready(Err(e)) => Err(Error::Send(tungstenite::Error::Io(e))),
        }
    }

    /// Whether anything handed to this end is not yet out to the socket: control messages
    /// (a status, a close frame), direct frames, or tungstenite's or the socket's buffer.
    fn sends_waiting(&self) -> bool {
        !self.outbox.is_empty() || !self.direct.is_empty() || self.unflushed || self.raw_unflushed
    }

    /// Pushes out what is queued and buffered for the socket. Returns whether the socket is
    /// free for tungstenite again after queued direct frames (reading may resume).
    fn flush_socket(&mut self, cx: &mut Context<'_>) -> Result<bool, Error> {
        if !self.direct.is_empty() {
            return self.poll_direct(cx);
        }
        if self.unflushed
            && let Poll::Ready(r) = Pin::new(&mut self.ws).poll_flush(cx)
        {
            r.map_err(Error::Send)?;
            self.unflushed = false;
        }
        if self.raw_unflushed
            && let Poll::Ready(r) = Pin::new(self.ws.get_mut()).poll_flush(cx)
        {
            r.map_err(|e| Error::Send(tungstenite::Error::Io(e)))?;
            self.raw_unflushed = false;
        }
        Ok(false)
    }

    /// A local source reached EOF.
    pub(super) fn source_ended(&mut self, channel: u8) {
        debug!(stream = stream_name(channel), "local source ended");
        if channel == codec::STDIN && self.protocol.has_close_signal() {
            self.outbox
                .push_back(Message::Binary(Frame::Close(codec::STDIN).encode()));
        }
    }

    /// Keepalive pings and the dead-peer check. Returns whether it queued work.
    fn poll_keepalive(&mut self, cx: &mut Context<'_>) -> Result<bool, Error> {
        let mut busy = false;
        while self.keepalive.poll_tick(cx).is_ready() {
            let now = Instant::now();
            // While a slow local sink holds us back from reading, the peer's silence is ours;
            // while our output waits for room, the peer is busy with what it has (a pager
            // nobody pages answers no pings for as long as its reader is away). A dead peer
            // then ends with TCP's own timeout, or the server's idle timeout.
            if self.heard || self.inbound.is_some() || self.output_waits_for_peer {
                self.heard = false;
                self.last_heard = now;
            } else if now.duration_since(self.last_heard) >= self.config.peer_timeout {
                return Err(Error::PeerTimeout(now.duration_since(self.last_heard)));
            }
            let ping_queued = self.outbox.iter().any(|m| matches!(m, Message::Ping(_)));
            if !ping_queued {
                self.outbox.push_back(Message::Ping(Bytes::new()));
                busy = true;
            }
        }
        Ok(busy)
    }
}

/// A core and a role: one session.
pub(super) struct Pump<'c, S, R: Role> {
    core: Core<'c, S>,
    role: R,
    /// How the session ended, once known.
    outcome: Option<R::Outcome>,
}

impl<'c, S: Socket, R: Role> Pump<'c, S, R> {
    pub fn new(core: Core<'c, S>, role: R) -> Self {
        Pump {
            core,
            role,
            outcome: None,
        }
    }

    /// Runs the session to its end. Observers see the end of their stream however it ends.
    pub async fn run(mut self) -> Result<Finished<R::Outcome>, Error> {
        let result = poll_fn(|cx| self.poll_session(cx)).await;
        if let Some(tap) = &self.core.tap {
            tap.end();
        }
        result?;
        let outcome = self
            .outcome
            .take()
            .expect("a finished session has an outcome");
        Ok(Finished {
            outcome,
            stats: self.core.stats,
        })
    }

    /// One wake-up of the session: turns every branch until none can make progress.
    fn poll_session(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let core = &mut self.core;
        let moved_before = core.stats.bytes_sent + core.stats.bytes_received;
        for _ in 0..TURNS_PER_POLL {
            let core = &mut self.core;
            if core.stats.bytes_sent + core.stats.bytes_received - moved_before >= BYTES_PER_POLL {
                // Let the observers and other sessions on this thread run.
                break;
            }
            let mut busy = core.drain_inbound(cx)?;
            if let Phase::Finishing = core.phase {
                let clean = core.flush_sinks(cx)?;
                if busy {
                    continue;
                }
                if core.inbound.is_some() || !clean {
                    return Poll::Pending;
                }
                return Poll::Ready(Ok(()));
            }
            // While a direct frame is half written, tungstenite must not touch the socket:
            // control messages and reading (which writes queued pongs) wait for it.
            if core.poll_direct(cx)? {
                busy |= self.role.control(core, cx);
                busy |= core.send_control(cx)?;
                busy |= match self.receive(cx) {
                    Ok(busy) => busy,
                    Err(e) => {
                        // Nothing more is read from a peer that broke the protocol (set first:
                        // its closing phase gets no patience).
                        self.core.stop_reading = true;
                        match self.role.violated(&mut self.core, &e) {
                            Some(outcome) => {
                                debug!(error = %e, "the peer broke the protocol; told it and closing");
                                self.outcome.get_or_insert(outcome);
                                true
                            }
                            None => return Poll::Ready(Err(e)),
                        }
                    }
                };
            }
            let core = &mut self.core;
            busy |= core.pump_sources(cx)?;
            let (worked, closed) = self.role.poll(core, cx)?;
            busy |= worked;
            if let Some(outcome) = closed {
                self.outcome = Some(outcome);
            }
            if busy {
                continue;
            }
            // Idle: push out what is queued and buffered, then check the clocks.
            let core = &mut self.core;
            if core.flush_socket(cx)? {
                continue;
            }
            core.flush_sinks(cx)?;
            if self.poll_clocks(cx)? {
                continue;
            }
            return Poll::Pending;
        }
        // Out of turns: let other tasks run, then come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Reads messages from the peer until the socket has nothing more or a message must wait
    /// for a slow local sink.
    fn receive(&mut self, cx: &mut Context<'_>) -> Result<bool, Error> {
        let mut busy = false;
        let mut turns = 0;
        if self.core.stop_reading {
            return Ok(false);
        }
        while self.core.inbound.is_none() && turns < TURNS_PER_POLL {
            if matches!(self.core.phase, Phase::Finishing) {
                break;
            }
            turns += 1;
            let message = match Pin::new(&mut self.core.ws).poll_next(cx) {
                Poll::Pending => break,
                Poll::Ready(None) => {
                    self.connection_ended(None)?;
                    return Ok(true);
                }
                Poll::Ready(Some(Err(e))) => {
                    self.connection_ended(Some(e))?;
                    return Ok(true);
                }
                Poll::Ready(Some(Ok(message))) => message,
            };
            busy = true;
            self.core.heard = true;
            match message {
                Message::Binary(data) => {
                    if let Phase::Running = self.core.phase {
                        self.handle_frame(data)?;
                    }
                }
                Message::Text(_) => return Err(ProtocolError::TextMessage.into()),
                // tungstenite queued the pong; make sure it leaves promptly.
                Message::Ping(_) => self.core.unflushed = true,
                Message::Pong(_) | Message::Frame(_) => {}
                Message::Close(frame) => {
                    debug!(?frame, "peer closed the WebSocket");
                    // tungstenite queued the reply; the stream ends after it is flushed.
                    self.core.unflushed = true;
                    if let Phase::Running = self.core.phase {
                        self.core.outbox.clear();
                        self.core.phase = self.core.closing();
                    }
                }
            }
        }
        Ok(busy)
    }

    fn handle_frame(&mut self, message: Bytes) -> Result<(), Error> {
        let Some(frame) = Frame::decode(message)? else {
            return Ok(());
        };
        trace!(channel = frame.channel(), "frame received");
        if let Frame::Unknown { channel, .. } = frame {
            debug!(channel, "message on unknown channel dropped");
            self.core.stats.unknown_frames += 1;
            return Ok(());
        }
        self.role.frame(&mut self.core, frame)
    }

    /// The WebSocket stream ended, cleanly (`None`, or a closed-connection error after a close
    /// handshake) or not.
    fn connection_ended(&mut self, error: Option<tungstenite::Error>) -> Result<(), Error> {
        let clean = matches!(error, None | Some(tungstenite::Error::ConnectionClosed));
        if self.outcome.is_none() {
            self.outcome = Some(self.role.ended(clean, error)?);
        }
        self.core.phase = Phase::Finishing;
        Ok(())
    }

    /// Keepalive pings, the dead-peer check, and the close deadline. Returns whether it queued
    /// work.
    fn poll_clocks(&mut self, cx: &mut Context<'_>) -> Result<bool, Error> {
        let waiting = self.core.sends_waiting();
        let sent = self.core.stats.bytes_sent;
        if let Phase::Closing { deadline, progress } = &mut self.core.phase {
            let now = Instant::now();
            if progress.0 != sent {
                *progress = (sent, now);
            }
            let heard = std::mem::take(&mut self.core.heard);
            // A reader that paused (`cmd | less`) has not taken what came before the close
            // frame, or has not read the frame yet: that is not a peer slow to close. While
            // what came before waits for room, the handshake has not begun; while the peer
            // is heard (its pings), it is alive, and closing the socket under it would have
            // its next ping answered by a reset that throws away what it has not read. The
            // idle timeout bounds a peer that takes nothing at all; one that broke the
            // protocol gets no such patience.
            let stalled_too_long = self
                .core
                .config
                .idle_timeout
                .is_some_and(|idle| now.duration_since(progress.1) >= idle);
            if !stalled_too_long && !self.core.stop_reading {
                let config = &self.core.config;
                let patience = if heard {
                    Some(config.peer_timeout)
                } else if waiting {
                    Some(config.close_timeout)
                } else {
                    None
                };
                if let Some(patience) = patience
                    && now + patience > deadline.deadline()
                {
                    deadline.as_mut().reset(now + patience);
                }
            }
            if deadline.as_mut().poll(cx).is_ready() {
                debug!("close handshake not finished in time; ending anyway");
                self.connection_ended(None)?;
                return Ok(true);
            }
            // No pings once a close frame went out or came in.
            return Ok(false);
        }
        self.core.poll_keepalive(cx)
    }
}

/// The error for a connection that ended without a close handshake.
pub(super) fn vanished(error: Option<tungstenite::Error>) -> Error {
    match error {
        None
        | Some(tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        )) => Error::PeerVanished,
        Some(tungstenite::Error::Io(e))
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::ConnectionAborted
            ) =>
        {
            Error::PeerVanished
        }
        Some(other) => Error::Receive(other),
    }
}
