//! The client's part of a session (the plugin): the user's stdin is the source, the user's
//! stdout and stderr the sinks; terminal sizes go out as they change; the server's status says
//! how the remote command ended.

use std::task::{Context, Poll};

use bytes::{BufMut, BytesMut};
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::debug;

use super::ResizeStream;
use super::core::{Core, Phase, Role, Socket, vanished};
use super::stream::Inbound;
use crate::codec::{self, Frame};
use crate::error::Error;
use crate::observer::EventKind;
use crate::status::ExitStatus;

/// The client's own state.
pub(super) struct Client {
    /// Terminal sizes to send; `None` once the stream ended.
    pub resize: Option<ResizeStream>,
    /// The status the server sent.
    pub status: Option<ExitStatus>,
}

impl Role for Client {
    type Outcome = ExitStatus;

    fn frame<S: Socket>(&mut self, core: &mut Core<'_, S>, frame: Frame) -> Result<(), Error> {
        match frame {
            Frame::Stdout(data) => output(core, codec::STDOUT, data),
            Frame::Stderr(data) => output(core, codec::STDERR, data),
            Frame::Status(json) => {
                let parsed = ExitStatus::from_json(&json)?;
                debug!(?parsed, "status received");
                core.observe(EventKind::Exit(parsed.clone()));
                self.status = Some(parsed);
            }
            other => core.ignore(&other),
        }
        Ok(())
    }

    /// The next terminal size, once the one before has gone out.
    fn control<S: Socket>(&mut self, core: &mut Core<'_, S>, cx: &mut Context<'_>) -> bool {
        let Some(sizes) = &mut self.resize else {
            return false;
        };
        if !core.outbox.is_empty() || !matches!(core.phase, Phase::Running) {
            return false;
        }
        match sizes.as_mut().poll_next(cx) {
            Poll::Pending => false,
            Poll::Ready(None) => {
                self.resize = None;
                false
            }
            Poll::Ready(Some(size)) => {
                let mut message = BytesMut::new();
                codec::begin_frame(&mut message, codec::RESIZE, 32);
                message.put_slice(&size.to_json());
                core.outbox.push_back(Message::Binary(message.freeze()));
                core.observe(EventKind::Resize(size));
                true
            }
        }
    }

    fn poll<S: Socket>(
        &mut self,
        _core: &mut Core<'_, S>,
        _cx: &mut Context<'_>,
    ) -> Result<(bool, Option<ExitStatus>), Error> {
        // The client never closes first: the server says when the command ended.
        Ok((false, None))
    }

    fn ended(
        &mut self,
        clean: bool,
        error: Option<tungstenite::Error>,
    ) -> Result<ExitStatus, Error> {
        match self.status.take() {
            Some(status) => Ok(status),
            // A server that closes normally without a status reports success, as kubectl
            // assumes.
            None if clean => Ok(ExitStatus::Code(0)),
            None => Err(vanished(error)),
        }
    }
}

/// Output from the server: shown to observers, then written to its sink.
fn output<S: Socket>(core: &mut Core<'_, S>, channel: u8, data: bytes::Bytes) {
    core.observe(EventKind::Output {
        channel,
        data: data.clone(),
    });
    core.inbound = Some(Inbound::Data(channel, data));
}
