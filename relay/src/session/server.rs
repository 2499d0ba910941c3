//! The server's part of a session (the agent): the process's stdout and stderr are the
//! sources, its stdin the sink; the client's resizes reach the process; when the process ends,
//! its output gets a bounded time to drain, then the status goes out and the server closes.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::time::{Instant, Interval, MissedTickBehavior, Sleep};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::{debug, warn};

use super::ServerEnd;
use super::core::{Core, Phase, Role, Socket, vanished};
use super::stream::Inbound;
use super::{ExitFuture, ResizeHandler};
use crate::codec::{self, Frame};
use crate::error::{Error, ProtocolError};
use crate::observer::EventKind;
use crate::resize::ResizeDecoder;
use crate::status::ExitStatus;

/// The server's own state.
pub(super) struct Server {
    /// Resolves when the process ends; `None` once it has.
    pub exit: Option<ExitFuture>,
    /// How the process ended, until the status goes out.
    pub status: Option<ExitStatus>,
    pub on_resize: Option<ResizeHandler>,
    pub resize: ResizeDecoder,
    /// Set when the process ended: output may go quiet this long before the session closes
    /// without it (a background process holding the pipe open). Each time output moves, or
    /// waits for the client to take what came before, the wait starts again: output the
    /// process wrote is never cut off because the machine is slow to carry it or the user
    /// is slow to read it (`| less`, paused).
    pub drain_deadline: Option<Pin<Box<Sleep>>>,
    /// The bytes sent when the drain deadline was last set.
    pub drained_at: u64,
    /// The idle timeout, if the session has one.
    pub idle: Option<Idle>,
}

/// The idle timeout: how long nothing went either way, looked at every tick.
pub(super) struct Idle {
    timeout: Duration,
    warning: Duration,
    /// The channel the warning goes out on: the terminal's (stdout), or stderr without one.
    warn_on: u8,
    tick: Interval,
    /// Bytes moved either way when last looked at, and when that count last changed.
    moved: u64,
    active_at: Instant,
    warned: bool,
}

impl Idle {
    pub fn new(timeout: Duration, warning: Duration, warn_on: u8) -> Idle {
        // Looked at often enough to be within a tenth of the timeout, at most once a minute.
        let every = (timeout / 10).clamp(Duration::from_millis(50), Duration::from_secs(60));
        let mut tick = tokio::time::interval_at(Instant::now() + every, every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Idle {
            timeout,
            warning: warning.min(timeout),
            warn_on,
            tick,
            moved: 0,
            active_at: Instant::now(),
            warned: false,
        }
    }

    /// Looks at the session's counters; returns the message to send, if one is due, and
    /// whether the session is over.
    fn poll(&mut self, moved: u64, cx: &mut Context<'_>) -> (Option<String>, bool) {
        let mut due = (None, false);
        while self.tick.poll_tick(cx).is_ready() {
            let now = Instant::now();
            if moved != self.moved {
                self.moved = moved;
                self.active_at = now;
                self.warned = false;
            }
            let idle = now.duration_since(self.active_at);
            if idle >= self.timeout {
                return (None, true);
            }
            if !self.warned && idle >= self.timeout - self.warning {
                self.warned = true;
                let left = self.timeout - idle;
                due.0 = Some(format!(
                    "\r\nkubectl-debug: no input or output for {}s; this session ends in {}s unless something happens\r\n",
                    idle.as_secs(),
                    left.as_secs().max(1)
                ));
            }
        }
        due
    }
}

impl Role for Server {
    type Outcome = ServerEnd;

    fn frame<S: Socket>(&mut self, core: &mut Core<'_, S>, frame: Frame) -> Result<(), Error> {
        match frame {
            Frame::Stdin(data) => {
                if let Some(tap) = &core.tap
                    && tap.wants_input()
                {
                    tap.offer(EventKind::Input(data.clone()));
                }
                core.inbound = Some(Inbound::Data(codec::STDIN, data));
            }
            Frame::Close(codec::STDIN) => core.inbound = Some(Inbound::Shutdown(codec::STDIN)),
            Frame::Resize(payload) => {
                for size in self.resize.feed(&payload)? {
                    if let Some(handler) = &mut self.on_resize {
                        handler(size);
                    }
                    core.observe(EventKind::Resize(size));
                }
            }
            other => core.ignore(&other),
        }
        Ok(())
    }

    /// Notices the process's end, and once its output has drained (or the drain time is up),
    /// sends the status and closes.
    fn poll<S: Socket>(
        &mut self,
        core: &mut Core<'_, S>,
        cx: &mut Context<'_>,
    ) -> Result<(bool, Option<ServerEnd>), Error> {
        if !matches!(core.phase, Phase::Running) {
            return Ok((false, None));
        }
        if let Some(idle) = &mut self.idle {
            let moved = core.stats.bytes_sent + core.stats.bytes_received;
            let (warning, over) = idle.poll(moved, cx);
            if let Some(text) = warning {
                let mut message = BytesMut::new();
                codec::begin_frame(&mut message, idle.warn_on, text.len());
                message.put_slice(text.as_bytes());
                core.outbox.push_back(Message::Binary(message.freeze()));
            }
            if over {
                let timeout = idle.timeout;
                return Ok((
                    true,
                    Some(close(core, idle_status(timeout), ServerEnd::Idle)),
                ));
            }
        }
        let mut busy = false;
        if let Some(fut) = &mut self.exit {
            let Poll::Ready(ended) = fut.as_mut().poll(cx) else {
                return Ok((false, None));
            };
            debug!(status = ?ended, "process ended");
            self.exit = None;
            self.status = Some(ended);
            self.drain_deadline = Some(Box::pin(tokio::time::sleep(core.config.close_timeout)));
            self.drained_at = core.stats.bytes_sent;
            busy = true;
        }
        if let Some(deadline) = &mut self.drain_deadline
            && (core.stats.bytes_sent != self.drained_at || core.output_waits_for_peer)
        {
            self.drained_at = core.stats.bytes_sent;
            deadline
                .as_mut()
                .reset(Instant::now() + core.config.close_timeout);
        }
        let drained = core.sources.is_empty();
        let out_of_time = self
            .drain_deadline
            .as_mut()
            .is_some_and(|d| d.as_mut().poll(cx).is_ready());
        if !drained && !out_of_time {
            return Ok((busy, None));
        }
        if !drained {
            warn!(
                "process ended but its output stayed open and quiet for {:?}; closing",
                core.config.close_timeout
            );
            core.sources.clear();
        }
        let ended = self.status.take().expect("set above");
        core.observe(EventKind::Exit(ended.clone()));
        Ok((
            true,
            Some(close(core, ended.clone(), ServerEnd::Completed(ended))),
        ))
    }

    fn violated<S: Socket>(&mut self, core: &mut Core<'_, S>, error: &Error) -> Option<ServerEnd> {
        if !matches!(core.phase, Phase::Running) {
            return None;
        }
        let (code, reason) = violation(error)?;
        let why = crate::error::chain(error);
        warn!(error = %why, "the client broke the channel protocol; ending the session");
        let message = format!("the client broke the channel protocol ({why}): the session ended");
        core.outbox.clear();
        Some(close_with(
            core,
            ExitStatus::Failure {
                reason: "BadRequest".into(),
                message: message.clone(),
            },
            code,
            &reason,
            ServerEnd::ProtocolViolation(message),
        ))
    }

    fn ended(
        &mut self,
        clean: bool,
        error: Option<tungstenite::Error>,
    ) -> Result<ServerEnd, Error> {
        if clean {
            Ok(ServerEnd::ClientLeft)
        } else {
            Err(vanished(error))
        }
    }
}

/// Sends `status` and a normal close; the session ends as `end`.
fn close<S: Socket>(core: &mut Core<'_, S>, status: ExitStatus, end: ServerEnd) -> ServerEnd {
    close_with(core, status, CloseCode::Normal, "", end)
}

/// Sends `status` and a close frame with `code` and `reason`; the session ends as `end`.
fn close_with<S: Socket>(
    core: &mut Core<'_, S>,
    status: ExitStatus,
    code: CloseCode,
    reason: &str,
    end: ServerEnd,
) -> ServerEnd {
    let mut message = BytesMut::new();
    codec::begin_frame(&mut message, codec::STATUS, 128);
    message.put_slice(&status.to_json());
    core.outbox.push_back(Message::Binary(message.freeze()));
    core.outbox.push_back(Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    })));
    core.phase = core.closing();
    end
}

/// The close code and a short reason (a close frame's reason is at most 123 bytes) for a
/// protocol violation by the client, if `error` is one.
fn violation(error: &Error) -> Option<(CloseCode, String)> {
    use tungstenite::Error as Ws;
    let (code, reason) = match error {
        Error::Protocol(p @ ProtocolError::TextMessage) => (CloseCode::Unsupported, p.to_string()),
        Error::Protocol(p) => (CloseCode::Protocol, p.to_string()),
        Error::Receive(Ws::Protocol(p)) => (CloseCode::Protocol, p.to_string()),
        Error::Receive(Ws::Capacity(c)) => (CloseCode::Size, c.to_string()),
        Error::Receive(Ws::Utf8(_)) => (CloseCode::Invalid, "invalid UTF-8".to_owned()),
        _ => return None,
    };
    let mut reason = reason;
    if reason.len() > 120 {
        let mut cut = 120;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
    }
    Some((code, reason))
}

/// The status of a session ended for idleness.
fn idle_status(timeout: Duration) -> ExitStatus {
    ExitStatus::Failure {
        reason: "IdleTimeout".into(),
        message: format!(
            "the session had no input or output for {}s, so it ended (the agent's lifecycle.idleTimeout)",
            timeout.as_secs()
        ),
    }
}
