//! The relay: Kubernetes' remote-command channel protocol (`v5.channel.k8s.io`, and
//! `v4.channel.k8s.io` peers) over one WebSocket, zero-copy on tokio.
//!
//! This crate knows bytes, tokio and WebSockets, and nothing of Kubernetes' API, container
//! runtimes or recordings: the agent and the plugin both build on it, and any Kubernetes exec
//! client can talk to a server built on it.
//!
//! - [`codec`]: the channel framing as pure functions;
//! - [`resize`] and [`status`]: the JSON carried on the resize and status channels;
//! - [`session`]: the pump, [`serve`] on the server side and [`attach`] on the client side;
//! - [`observer`]: the tap through which recorders and live viewers see a session;
//! - [`handshake`]: opening the WebSocket with subprotocol negotiation.

pub mod codec;
mod direct;
pub mod error;
pub mod handshake;
pub mod observer;
pub mod resize;
pub mod session;
pub mod status;
mod terminal_io;

pub use codec::{Frame, Protocol};
pub use error::{Error, ProtocolError, chain as error_chain};
pub use observer::{Event, EventKind, Observer, ObserverOptions, Recent, Taken, Tap};
pub use resize::TerminalSize;
pub use session::{ClientIo, Config, Finished, ServerEnd, ServerIo, Stats, attach, serve};
pub use status::ExitStatus;
pub use terminal_io::TerminalIo;
pub use tokio_tungstenite::WebSocketStream;
pub use tokio_tungstenite::tungstenite;
