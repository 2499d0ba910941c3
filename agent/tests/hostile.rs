//! Clients that break the channel protocol, over the fake runtime: each gets a status on
//! channel 3 and a close frame saying why (not a dropped connection), its container is
//! removed, and a session running beside it never notices.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use kdbg_agent::Settings;
use kdbg_api::DebugRequest;
use kdbg_relay::status::Status;
use kdbg_relay::{ClientIo, Config, ExitStatus, attach, handshake, tungstenite};
use kdbg_runtimes::AnyRuntime;
use kdbg_runtimes::fake::{FakeRuntime, Script};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

async fn agent() -> (FakeRuntime, String) {
    let fake = FakeRuntime::new(Script {
        echo_stdin: true,
        ..Script::default()
    });
    fake.add_target("t1", "running");
    fake.add_image("tools:1");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let settings = Settings {
        init_dir: std::env::temp_dir().join(format!("kdbg-hostile-init-{}", std::process::id())),
        // Violators' sessions may still be closing when the next opens.
        policy: kdbg_agent::config::Policy {
            max_sessions: kdbg_agent::config::MaxSessions::UNLIMITED,
            ..Default::default()
        },
        ..Settings::default()
    };
    kdbg_agent::spawn(AnyRuntime::Fake(fake.clone()), settings, listener).unwrap();
    (fake, address)
}

type Ws = kdbg_relay::WebSocketStream<TcpStream>;

async fn open(address: &str) -> (Ws, kdbg_relay::Protocol) {
    let request = DebugRequest::from_query(
        "target=docker://t1&image=tools:1&stdin=1&stdout=1&pullPolicy=Never",
    )
    .unwrap();
    let socket = TcpStream::connect(address).await.unwrap();
    let url = format!("ws://{address}/api/v1/debug?{}", request.to_query());
    let (ws, protocol, _) = handshake::connect(url, socket).await.unwrap();
    (ws, protocol)
}

/// A session opened by a client with no limits of its own (so it can send what the agent
/// must refuse): tungstenite's defaults, which buffer any message.
async fn open_unlimited(address: &str) -> Ws {
    use tungstenite::client::IntoClientRequest as _;
    let request = DebugRequest::from_query(
        "target=docker://t1&image=tools:1&stdin=1&stdout=1&pullPolicy=Never",
    )
    .unwrap();
    let mut upgrade = format!("ws://{address}/api/v1/debug?{}", request.to_query())
        .into_client_request()
        .unwrap();
    upgrade.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v5.channel.k8s.io".parse().unwrap(),
    );
    let socket = TcpStream::connect(address).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(upgrade, socket)
        .await
        .unwrap();
    ws
}

/// What the agent sends until it closes: the status (channel 3) and the close frame.
async fn until_closed(
    ws: &mut (impl futures_util::Stream<Item = Result<Message, tungstenite::Error>> + Unpin),
) -> (Option<Status>, Option<(CloseCode, String)>) {
    let mut status = None;
    let read = async {
        while let Some(message) = ws.next().await {
            match message {
                Ok(Message::Binary(data)) if data.first() == Some(&3) && data.len() > 1 => {
                    status = serde_json::from_slice(&data[1..]).ok();
                }
                Ok(Message::Close(frame)) => {
                    return frame.map(|f| (f.code, f.reason.to_string()));
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    };
    let closed = tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the agent neither answered nor closed in 20 s");
    (status, closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_get_a_status_and_a_close_frame_and_harm_no_other_session() {
    let (fake, address) = agent().await;
    // A well-behaved session, running throughout.
    let (bystander, protocol) = open(&address).await;
    let (mut bystander_in, stdin) = tokio::io::duplex(1 << 16);
    let (stdout, mut bystander_out) = tokio::io::duplex(1 << 16);
    let bystander = tokio::spawn(async move {
        let io = ClientIo {
            stdin: Some(Box::pin(stdin)),
            stdout: Some(Box::pin(stdout)),
            ..ClientIo::default()
        };
        attach(bystander, protocol, io, &Config::default()).await
    });
    bystander_in.write_all(b"before\n").await.unwrap();

    let huge = {
        let mut m = vec![0u8; 100 << 20];
        m[0] = 0;
        Bytes::from(m)
    };
    let cases: Vec<(&str, Vec<Message>, CloseCode)> = vec![
        (
            "a text message",
            vec![Message::Text("hello".into())],
            CloseCode::Unsupported,
        ),
        (
            "a truncated close signal",
            vec![Message::Binary(Bytes::from_static(&[255]))],
            CloseCode::Protocol,
        ),
        (
            "garbage on the resize channel",
            vec![Message::Binary(Bytes::from_static(
                b"\x04{\"Width\":\"wide\"}",
            ))],
            CloseCode::Protocol,
        ),
        (
            "an enormous terminal size",
            vec![Message::Binary(Bytes::from_static(
                b"\x04{\"Width\":99999999999,\"Height\":1}",
            ))],
            CloseCode::Protocol,
        ),
        (
            "a 100 MiB message",
            vec![Message::Binary(huge)],
            CloseCode::Size,
        ),
    ];
    for (what, messages, code) in cases {
        let ws = open_unlimited(&address).await;
        let (mut sink, mut stream) = ws.split();
        // Sent while the answer is read: the agent stops reading a huge message early, so
        // its sending may never finish.
        let sending = tokio::spawn(async move {
            for message in messages {
                if sink.send(message).await.is_err() {
                    break;
                }
            }
            sink
        });
        let (status, closed) = until_closed(&mut stream).await;
        sending.abort();
        let (got, reason) = closed.unwrap_or_else(|| panic!("{what}: no close frame"));
        assert_eq!(got, code, "{what}: {reason}");
        let status = status.unwrap_or_else(|| panic!("{what}: no status on channel 3"));
        assert_eq!(status.reason.as_deref(), Some("BadRequest"), "{what}");
        assert!(
            status
                .message
                .as_deref()
                .unwrap_or("")
                .contains("broke the channel protocol"),
            "{what}: {status:?}"
        );
    }

    // Frames a client must not send (stdout, stderr, status) are dropped, as the kubelet
    // drops them; a ping flood is answered; the session goes on.
    let (mut ws, _) = open(&address).await;
    for channel in [1u8, 2, 3] {
        ws.send(Message::Binary(Bytes::from(vec![channel, b'x'])))
            .await
            .unwrap();
    }
    for _ in 0..10_000 {
        ws.feed(Message::Ping(Bytes::new())).await.unwrap();
    }
    ws.flush().await.unwrap();
    ws.send(Message::Binary(Bytes::from_static(b"\x00alive\n")))
        .await
        .unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(message)) = ws.next().await {
            if let Message::Binary(data) = message
                && data.first() == Some(&1)
                && data[1..].starts_with(b"alive")
            {
                return true;
            }
        }
        false
    })
    .await
    .unwrap();
    assert!(
        echoed,
        "the session stopped after frames for the other direction"
    );
    drop(ws);

    // The bystander never noticed.
    let mut seen = vec![0u8; 7];
    bystander_out.read_exact(&mut seen).await.unwrap();
    assert_eq!(&seen, b"before\n");
    bystander_in.write_all(b"after\n").await.unwrap();
    let mut seen = vec![0u8; 6];
    bystander_out.read_exact(&mut seen).await.unwrap();
    assert_eq!(&seen, b"after\n");
    drop(bystander_in);
    let done = bystander.await.unwrap().unwrap();
    assert_eq!(done.outcome, ExitStatus::Code(0));
    // Every violator's container is gone.
    for _ in 0..200 {
        if fake.containers().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("containers left: {:?}", fake.containers());
}
