//! The server's part of a session (the agent): the process's stdout and stderr are the
//! sources, its stdin the sink; the client's resizes reach the process; when the process ends,
//! its output gets a bounded time to drain, then the status goes out and the server closes.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, BytesMut};
use tokio::time::Sleep;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::{debug, warn};

use super::ServerEnd;
use super::core::{Core, Phase, Role, Socket, vanished};
use super::stream::Inbound;
use super::{ExitFuture, ResizeHandler};
use crate::codec::{self, Frame};
use crate::error::Error;
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
    /// Set when the process ended: output gets this long to drain.
    pub drain_deadline: Option<Pin<Box<Sleep>>>,
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
        let mut busy = false;
        if let Some(fut) = &mut self.exit {
            let Poll::Ready(ended) = fut.as_mut().poll(cx) else {
                return Ok((false, None));
            };
            debug!(status = ?ended, "process ended");
            self.exit = None;
            self.status = Some(ended);
            self.drain_deadline = Some(Box::pin(tokio::time::sleep(core.config.close_timeout)));
            busy = true;
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
                "process ended but its output stayed open for {:?}; closing",
                core.config.close_timeout
            );
            core.sources.clear();
        }
        let ended = self.status.take().expect("set above");
        core.observe(EventKind::Exit(ended.clone()));
        let mut message = BytesMut::new();
        codec::begin_frame(&mut message, codec::STATUS, 128);
        message.put_slice(&ended.to_json());
        core.outbox.push_back(Message::Binary(message.freeze()));
        core.outbox.push_back(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })));
        core.phase = core.closing();
        Ok((true, Some(ServerEnd::Completed(ended))))
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
