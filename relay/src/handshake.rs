//! Opening a channel-protocol WebSocket on either end, with subprotocol negotiation.
//!
//! The server side offers [`accept`] for plain sockets; servers that route HTTP themselves
//! (the agent) negotiate with [`Protocol::negotiate`] and wrap the upgraded connection with
//! [`WebSocketStream::from_raw_socket`] and [`websocket_config`].

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};

use crate::codec::Protocol;
use crate::error::{Error, ProtocolError};
use crate::session::websocket_config;
use crate::status::Status;

/// Accepts a WebSocket on `stream`, choosing the best subprotocol the client offered. Returns
/// the socket, the protocol and the request's URI (for its query parameters). A client that
/// offers none of ours gets a 400 with a `metav1.Status` body saying what to offer.
// The callback's error type is tungstenite's `ErrorResponse`; it is built once per refused
// handshake, so its size does not matter.
#[allow(clippy::result_large_err)]
pub async fn accept<S>(stream: S) -> Result<(WebSocketStream<S>, Protocol, Uri), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut chosen = None;
    let mut uri = Uri::default();
    let callback = |request: &Request, mut response: Response| {
        uri = request.uri().clone();
        let offered = request
            .headers()
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok());
        match Protocol::negotiate(offered) {
            Some(protocol) => {
                chosen = Some(protocol);
                response.headers_mut().insert(
                    header::SEC_WEBSOCKET_PROTOCOL,
                    HeaderValue::from_static(protocol.name()),
                );
                Ok(response)
            }
            None => Err(refusal(
                StatusCode::BAD_REQUEST,
                &format!(
                    "no supported subprotocol offered; offer {} in Sec-WebSocket-Protocol",
                    Protocol::offer()
                ),
            )),
        }
    };
    let ws =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(websocket_config()))
            .await
            .map_err(Error::Handshake)?;
    let protocol = chosen.expect("the callback accepted the handshake");
    Ok((ws, protocol, uri))
}

/// A refused upgrade with a `metav1.Status` JSON body, as Kubernetes servers answer.
pub fn refusal(code: StatusCode, message: &str) -> ErrorResponse {
    let body = Status::for_http(code, message);
    let mut response = ErrorResponse::new(Some(
        serde_json::to_string(&body).expect("a Status always serialises"),
    ));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Opens a WebSocket over an established `stream` to `request` (a `ws://` URL or a prepared
/// request), offering every protocol we speak. Returns the socket, the protocol the server
/// chose, and the headers of the server's answer.
pub async fn connect<S, R>(
    request: R,
    stream: S,
) -> Result<(WebSocketStream<S>, Protocol, HeaderMap), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
    R: IntoClientRequest + Unpin,
{
    let mut request = request.into_client_request().map_err(Error::Handshake)?;
    request.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_str(&Protocol::offer()).expect("protocol names are ASCII"),
    );
    let (ws, response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(websocket_config()))
            .await
            .map_err(Error::Handshake)?;
    let chosen = response
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok());
    let protocol = chosen
        .and_then(Protocol::from_name)
        .ok_or_else(|| ProtocolError::Subprotocol(chosen.map(str::to_owned)))?;
    Ok((ws, protocol, response.into_parts().0.headers))
}
