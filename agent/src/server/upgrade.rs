//! The agent's one WebSocket upgrade, for every WebSocket endpoint (sessions and live views):
//! the request checked by the relay's one server-side handshake check
//! ([`kdbg_relay::handshake::check_upgrade`]), the `101` answer, and the socket once hyper
//! hands the connection over, with a session's limits (1 MiB messages, not the library's
//! 64 MiB).

use std::future::Future;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kdbg_relay::WebSocketStream;
use kdbg_relay::handshake::check_upgrade;
use kdbg_relay::tungstenite::protocol::Role;

use super::{Body, full, refuse};

/// The agent's end of an upgraded connection.
pub(crate) type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// An accepted upgrade: the `101` to answer with (to which the endpoint may add headers),
/// the subprotocol chosen, and the socket, which comes once the answer is sent (an endpoint
/// awaits it in a task of its own).
pub(crate) struct Accepted<S> {
    /// The answer.
    pub response: Response<Body>,
    /// The subprotocol chosen.
    pub protocol: &'static str,
    /// The socket to come.
    pub socket: S,
}

/// Accepts `req`'s upgrade to a WebSocket speaking one of `supported` (best first). A
/// request that is not a proper upgrade gets a 400 saying why.
#[allow(clippy::result_large_err)] // a refusal is answered once, at once
pub(crate) fn accept(
    req: Request<Incoming>,
    supported: &[&'static str],
) -> Result<
    Accepted<impl Future<Output = Result<Socket, hyper::Error>> + Send + 'static>,
    Response<Body>,
> {
    let upgrade = check_upgrade(req.headers(), req.uri().path(), supported)
        .map_err(|refused| refuse(StatusCode::BAD_REQUEST, &refused.to_string()))?;
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *response.headers_mut() = upgrade.response_headers();
    let socket = async move {
        let upgraded = hyper::upgrade::on(req).await?;
        Ok(WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            Some(kdbg_relay::session::websocket_config()),
        )
        .await)
    };
    Ok(Accepted {
        response,
        protocol: upgrade.protocol,
        socket,
    })
}
