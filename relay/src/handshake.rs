//! Opening a WebSocket on either end, with subprotocol negotiation.
//!
//! The server side has one check of an upgrade request, [`check_upgrade`]: the agent's
//! endpoints (which route HTTP themselves, over hyper) answer with its [`Upgrade`], and
//! [`accept`], for plain sockets (tests and benchmarks), runs it in tungstenite's handshake.
//! The client side is [`connect`].

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};

use crate::codec::Protocol;
use crate::error::{Error, ProtocolError};
use crate::session::websocket_config;
use crate::status::Status;

/// Why a server refuses an upgrade request; it answers 400 with this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeRefused {
    /// Not an upgrade to a WebSocket.
    #[error(
        "{endpoint} is a WebSocket endpoint: send Connection: Upgrade and Upgrade: websocket (e.g. use kubectl-debug)"
    )]
    NotUpgrade {
        /// The path asked for.
        endpoint: String,
    },
    /// A WebSocket version other than RFC 6455's.
    #[error("Sec-WebSocket-Version must be 13")]
    Version,
    /// No key to answer.
    #[error("Sec-WebSocket-Key is missing")]
    NoKey,
    /// None of the endpoint's subprotocols offered.
    #[error("no supported subprotocol offered; offer {offer} in Sec-WebSocket-Protocol")]
    NoProtocol {
        /// What the endpoint speaks.
        offer: String,
    },
}

/// An upgrade request a server accepts: the key to answer and the subprotocol chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// The client's `Sec-WebSocket-Key`.
    pub key: String,
    /// The subprotocol chosen: the first of the endpoint's that the client offered.
    pub protocol: &'static str,
}

/// Checks an upgrade request to `endpoint`, which speaks `supported` (best first): an
/// upgrade to a WebSocket, version 13, with a key, offering one of `supported`.
pub fn check_upgrade(
    headers: &HeaderMap,
    endpoint: &str,
    supported: &[&'static str],
) -> Result<Upgrade, UpgradeRefused> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has_token(header::UPGRADE, "websocket") || !has_token(header::CONNECTION, "upgrade") {
        return Err(UpgradeRefused::NotUpgrade {
            endpoint: endpoint.to_owned(),
        });
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v != "13")
    {
        return Err(UpgradeRefused::Version);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .ok_or(UpgradeRefused::NoKey)?
        .to_owned();
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let protocol = supported
        .iter()
        .find(|p| offered.contains(p))
        .ok_or_else(|| UpgradeRefused::NoProtocol {
            offer: supported.join(", "),
        })?;
    Ok(Upgrade { key, protocol })
}

impl Upgrade {
    /// The headers of the `101 Switching Protocols` that accepts it.
    pub fn response_headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(
            header::SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_str(&derive_accept_key(self.key.as_bytes()))
                .expect("base64 is ASCII"),
        );
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(self.protocol),
        );
        headers
    }
}

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
        match check_upgrade(request.headers(), request.uri().path(), &Protocol::NAMES) {
            Ok(upgrade) => {
                chosen = Protocol::from_name(upgrade.protocol);
                response.headers_mut().insert(
                    header::SEC_WEBSOCKET_PROTOCOL,
                    HeaderValue::from_static(upgrade.protocol),
                );
                Ok(response)
            }
            Err(refused) => Err(refusal(StatusCode::BAD_REQUEST, &refused.to_string())),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn request(protocols: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        headers.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        for p in protocols {
            headers.append(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_str(p).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn negotiation_prefers_v5_and_accepts_v4() {
        let chosen = |offered: &[&str]| {
            check_upgrade(&request(offered), "/x", &Protocol::NAMES).map(|u| u.protocol)
        };
        assert_eq!(
            chosen(&["v4.channel.k8s.io, v5.channel.k8s.io"]),
            Ok("v5.channel.k8s.io")
        );
        assert_eq!(
            chosen(&["channel.k8s.io", "v4.channel.k8s.io"]),
            Ok("v4.channel.k8s.io")
        );
        assert_eq!(
            chosen(&["base64.channel.k8s.io"]),
            Err(UpgradeRefused::NoProtocol {
                offer: "v5.channel.k8s.io, v4.channel.k8s.io".into()
            })
        );
    }

    #[test]
    fn an_upgrade_is_answered_as_rfc_6455_says() {
        let upgrade =
            check_upgrade(&request(&["v4.channel.k8s.io"]), "/x", &Protocol::NAMES).unwrap();
        let answer = upgrade.response_headers();
        // RFC 6455 section 1.3's example key and answer.
        assert_eq!(
            answer[header::SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(answer[header::SEC_WEBSOCKET_PROTOCOL], "v4.channel.k8s.io");
        let mut plain = request(&["v4.channel.k8s.io"]);
        plain.remove(header::UPGRADE);
        assert_eq!(
            check_upgrade(&plain, "/x", &Protocol::NAMES),
            Err(UpgradeRefused::NotUpgrade {
                endpoint: "/x".into()
            })
        );
        let mut old = request(&["v4.channel.k8s.io"]);
        old.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert_eq!(
            check_upgrade(&old, "/x", &Protocol::NAMES),
            Err(UpgradeRefused::Version)
        );
    }
}
