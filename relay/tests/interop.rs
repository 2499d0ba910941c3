//! Interoperability with peers written directly on tungstenite, byte by byte from the protocol
//! description, without the relay's codec: a minimal v5 (and v4) client against our server,
//! and a kubelet-like server against our client.

// tungstenite's handshake callback returns its large ErrorResponse by value.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use kdbg_relay::session::{BoxRead, BoxWrite};
use kdbg_relay::{ClientIo, Config, ExitStatus, ServerIo, TerminalSize, attach, handshake, serve};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, protocol::CloseFrame};

/// Starts our server on 127.0.0.1 with a `cat`-like process that exits with `code` once its
/// stdin ends.
async fn our_server(code: u8) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let (ws, protocol, _) = handshake::accept(socket).await.unwrap();
        let (stdin_w, mut stdin_r) = tokio::io::duplex(4096);
        let (mut stdout_w, stdout_r) = tokio::io::duplex(4096);
        let process = tokio::spawn(async move {
            tokio::io::copy(&mut stdin_r, &mut stdout_w).await.unwrap();
        });
        let stdin: BoxWrite = Box::pin(stdin_w);
        let stdout: BoxRead = Box::pin(stdout_r);
        let io = ServerIo {
            stdin: Some(stdin),
            stdout: Some(stdout),
            stderr: None,
            on_resize: None,
            exit: Box::pin(async move {
                process.await.unwrap();
                ExitStatus::Code(code)
            }),
            tap: None,
        };
        serve(ws, protocol, io, &Config::default()).await.unwrap();
    });
    addr
}

async fn raw_client(
    addr: std::net::SocketAddr,
    offer: &str,
) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let mut request = format!("ws://{addr}/api/v1/debug?stdin=1&stdout=1")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(offer).unwrap(),
    );
    let socket = TcpStream::connect(addr).await.unwrap();
    let (ws, response) = tokio_tungstenite::client_async(request, socket)
        .await
        .unwrap();
    let chosen = response.headers().get("Sec-WebSocket-Protocol").unwrap();
    assert_eq!(chosen, offer.split(',').next().unwrap().trim());
    ws
}

/// Collects every message until the server's close frame.
async fn until_close(
    ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>,
) -> (Vec<Bytes>, Option<CloseFrame>) {
    let mut binaries = Vec::new();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("server kept talking")
            .expect("stream ended before a close frame")
            .unwrap();
        match message {
            Message::Binary(b) => binaries.push(b),
            Message::Close(frame) => return (binaries, frame),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected message {other:?}"),
        }
    }
}

#[tokio::test]
async fn raw_v5_client_half_closes_and_gets_success() {
    let addr = our_server(0).await;
    let mut ws = raw_client(addr, "v5.channel.k8s.io, v4.channel.k8s.io").await;
    ws.send(Message::Binary(Bytes::from_static(b"\x00hello")))
        .await
        .unwrap();
    ws.send(Message::Binary(Bytes::from_static(
        b"\x04{\"Width\":80,\"Height\":24}\n",
    )))
    .await
    .unwrap();
    ws.send(Message::Binary(Bytes::from_static(&[255, 0])))
        .await
        .unwrap();
    let (messages, close) = until_close(&mut ws).await;
    // The stream-established signal comes first: the stdout channel byte alone.
    assert_eq!(&messages[0][..], &[1]);
    let stdout: Vec<u8> = messages[1..messages.len() - 1]
        .iter()
        .flat_map(|m| {
            assert_eq!(m[0], 1, "only stdout before the status");
            m[1..].to_vec()
        })
        .collect();
    assert_eq!(stdout, b"hello");
    let status = messages.last().unwrap();
    assert_eq!(status[0], 3);
    let json: serde_json::Value = serde_json::from_slice(&status[1..]).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"metadata": {}, "status": "Success"})
    );
    assert_eq!(close.unwrap().code, CloseCode::Normal);
}

#[tokio::test]
async fn raw_v4_client_is_accepted_and_echoed() {
    let addr = our_server(42).await;
    let mut ws = raw_client(addr, "v4.channel.k8s.io").await;
    ws.send(Message::Binary(Bytes::from_static(b"\x00x")))
        .await
        .unwrap();
    // v4 has no close signal: closing our side of stdin is impossible, so the process only
    // ends when the client leaves. Here the fake process ends when its stdin does, which a
    // v4 client cannot cause; so check the echo, then leave politely.
    let first = ws.next().await.unwrap().unwrap();
    assert_eq!(first, Message::Binary(Bytes::from_static(&[1])));
    let echo = ws.next().await.unwrap().unwrap();
    assert_eq!(echo, Message::Binary(Bytes::from_static(b"\x01x")));
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn raw_v5_client_sees_non_zero_exit_in_kubelet_shape() {
    let addr = our_server(42).await;
    let mut ws = raw_client(addr, "v5.channel.k8s.io").await;
    ws.send(Message::Binary(Bytes::from_static(&[255, 0])))
        .await
        .unwrap();
    let (messages, close) = until_close(&mut ws).await;
    let status = messages.last().unwrap();
    assert_eq!(status[0], 3);
    let json: serde_json::Value = serde_json::from_slice(&status[1..]).unwrap();
    assert_eq!(json["status"], "Failure");
    assert_eq!(json["reason"], "NonZeroExitCode");
    assert_eq!(
        json["details"]["causes"][0],
        serde_json::json!({"reason": "ExitCode", "message": "42"})
    );
    assert_eq!(close.unwrap().code, CloseCode::Normal);
}

#[tokio::test]
async fn client_offering_nothing_we_speak_gets_a_status_body() {
    let addr = our_server(0).await;
    let mut request = format!("ws://{addr}/").into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("base64.channel.k8s.io"),
    );
    let socket = TcpStream::connect(addr).await.unwrap();
    let err = tokio_tungstenite::client_async(request, socket)
        .await
        .unwrap_err();
    let tokio_tungstenite::tungstenite::Error::Http(response) = err else {
        panic!("expected an HTTP refusal, got {err:?}");
    };
    assert_eq!(response.status(), 400);
    let body: serde_json::Value =
        serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
    assert_eq!(body["kind"], "Status");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("v5.channel.k8s.io")
    );
}

#[tokio::test]
async fn our_client_against_a_kubelet_like_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let callback = |req: &Request, mut resp: Response| {
            let offered = req.headers()["Sec-WebSocket-Protocol"].to_str().unwrap();
            assert!(offered.starts_with("v5.channel.k8s.io"), "{offered}");
            resp.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_static("v5.channel.k8s.io"),
            );
            Ok(resp)
        };
        let mut ws = tokio_tungstenite::accept_hdr_async(socket, callback)
            .await
            .unwrap();
        ws.send(Message::Binary(Bytes::from_static(&[1])))
            .await
            .unwrap();
        // Read until the client's stdin is done, noting the terminal size it sent first.
        let mut first_resize = None;
        let mut stdin = Vec::new();
        loop {
            let Message::Binary(m) = ws.next().await.unwrap().unwrap() else {
                continue;
            };
            match m[0] {
                0 => stdin.extend_from_slice(&m[1..]),
                4 if first_resize.is_none() => first_resize = Some(m.slice(1..)),
                255 => {
                    assert_eq!(&m[..], &[255, 0]);
                    break;
                }
                _ => {}
            }
        }
        ws.send(Message::Binary(Bytes::from_static(b"\x01out:")))
            .await
            .unwrap();
        let mut echoed = vec![1u8];
        echoed.extend_from_slice(&stdin);
        ws.send(Message::Binary(echoed.into())).await.unwrap();
        ws.send(Message::Binary(Bytes::from_static(b"\x02err")))
            .await
            .unwrap();
        let status = br#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 42], exit code 42","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"42"}]}}"#;
        let mut frame = vec![3u8];
        frame.extend_from_slice(status);
        ws.send(Message::Binary(frame.into())).await.unwrap();
        ws.close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }))
        .await
        .unwrap();
        while let Some(Ok(_)) = ws.next().await {}
        first_resize
    });
    let socket = TcpStream::connect(addr).await.unwrap();
    let (ws, protocol, _) = handshake::connect(format!("ws://{addr}/exec"), socket)
        .await
        .unwrap();
    let (mut out_r, out_w) = tokio::io::duplex(1024);
    let (mut err_r, err_w) = tokio::io::duplex(1024);
    let io = ClientIo {
        stdin: Some(Box::pin(&b"typed"[..])),
        stdout: Some(Box::pin(out_w)),
        stderr: Some(Box::pin(err_w)),
        resize: Some(Box::pin(
            futures_util::stream::iter([TerminalSize {
                cols: 100,
                rows: 50,
            }])
            .chain(futures_util::stream::pending()),
        )),
        tap: None,
    };
    let done = attach(ws, protocol, io, &Config::default()).await.unwrap();
    assert_eq!(done.outcome, ExitStatus::Code(42));
    let (mut out, mut err) = (String::new(), String::new());
    out_r.read_to_string(&mut out).await.unwrap();
    err_r.read_to_string(&mut err).await.unwrap();
    assert_eq!(out, "out:typed");
    assert_eq!(err, "err");
    let resize = server.await.unwrap().expect("a terminal size was sent");
    assert_eq!(&resize[..], b"{\"Width\":100,\"Height\":50}\n");
}
