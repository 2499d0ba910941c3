//! A raw WebSocket client of the agent's sessions, for tests that speak the protocol
//! themselves (what kubectl-debug never sends, or must not be trusted to).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use kdbg_relay::handshake;
use kdbg_relay::tungstenite::Message;
use kdbg_relay::tungstenite::client::IntoClientRequest;

/// A session's WebSocket, as the agent's client end.
pub type Ws = kdbg_relay::WebSocketStream<tokio::net::TcpStream>;

/// A single-threaded runtime for a test's async part.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A WebSocket upgrade of `path?query` offering `protocol`, with `token` if any.
pub fn ws_request(
    address: &str,
    path: &str,
    query: &str,
    token: Option<&str>,
) -> kdbg_relay::tungstenite::handshake::client::Request {
    let mut request = format!("ws://{address}{path}?{query}")
        .into_client_request()
        .unwrap();
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

/// Opens a debug session with `query`; the socket and the session's ID.
pub async fn session(address: &str, query: &str, token: Option<&str>) -> (Ws, String) {
    let request = ws_request(address, kdbg_api::path::DEBUG, query, token);
    let socket = tokio::net::TcpStream::connect(address).await.unwrap();
    let (ws, _, headers) = handshake::connect(request, socket)
        .await
        .unwrap_or_else(|e| panic!("opening a session ({query}): {e:?}"));
    let id = headers
        .get(kdbg_api::header::SESSION)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (ws, id)
}

/// Sends `data` on `channel` (0 stdin, 4 resize).
pub async fn send(ws: &mut Ws, channel: u8, data: &[u8]) {
    let mut message = Vec::with_capacity(data.len() + 1);
    message.push(channel);
    message.extend_from_slice(data);
    ws.send(Message::binary(message)).await.unwrap();
}

/// Reads the session's output until it holds `word`, for at most 30 s.
pub async fn expect_output(ws: &mut Ws, word: &str) {
    output_until(ws, word).await;
}

/// Reads the session's output until it holds `word`, for at most 30 s; returns it.
pub async fn output_until(ws: &mut Ws, word: &str) -> String {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(Ok(message)) = ws.next().await {
            if let Message::Binary(data) = message
                && data.first() == Some(&1)
            {
                seen.extend_from_slice(&data[1..]);
                if String::from_utf8_lossy(&seen).contains(word) {
                    return true;
                }
            }
        }
        false
    })
    .await;
    assert!(
        found == Ok(true),
        "{word:?} not in the output: {}",
        String::from_utf8_lossy(&seen)
    );
    String::from_utf8_lossy(&seen).into_owned()
}
