//! The agent's HTTP and session behaviour over the in-tree fake runtime: what it asks the
//! runtime for, what it refuses and how, and that it always cleans up.

use std::time::Duration;

use kdbg_agent::Settings;
use kdbg_agent::config::Defaults;
use kdbg_api::DebugRequest;
use kdbg_relay::status::Status;
use kdbg_relay::{ClientIo, Config, ExitStatus, TerminalSize, attach, handshake, tungstenite};
use kdbg_runtimes::fake::{Call, FakeRuntime, Script};
use kdbg_runtimes::{AnyRuntime, label};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Running {
    fake: FakeRuntime,
    address: String,
}

async fn agent(script: Script) -> Running {
    let fake = FakeRuntime::new(script);
    fake.add_target("t1", "running");
    fake.add_target("t2", "exited");
    fake.add_image("tools:1");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let settings = Settings {
        defaults: Defaults {
            image: "tools:1".into(),
            command: vec!["bash".into()],
        },
        init_dir: std::env::temp_dir().join(format!("kdbg-fake-init-{}", std::process::id())),
        ..Settings::default()
    };
    kdbg_agent::spawn(AnyRuntime::Fake(fake.clone()), settings, listener).unwrap();
    Running { fake, address }
}

fn request(target: &str) -> DebugRequest {
    DebugRequest::from_query(&format!("target=docker://{target}&stdout=1&stderr=1")).unwrap()
}

type Opened = (
    kdbg_relay::WebSocketStream<TcpStream>,
    kdbg_relay::Protocol,
    tungstenite::http::HeaderMap,
);

async fn open(address: &str, request: &DebugRequest) -> Result<Opened, kdbg_relay::Error> {
    let socket = TcpStream::connect(address).await.unwrap();
    let url = format!("ws://{address}/api/v1/debug?{}", request.to_query());
    handshake::connect(url, socket).await
}

async fn wait_until(mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("condition not met within 5 s");
}

/// What the agent at `address` lists (`GET /api/v1/containers`).
async fn listed(address: &str) -> kdbg_api::ContainerList {
    let mut socket = TcpStream::connect(address).await.unwrap();
    // HTTP/1.0: the agent closes the connection after its answer, which ends the body.
    let request = format!("GET {} HTTP/1.0\r\n\r\n", kdbg_api::path::CONTAINERS);
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.split_whitespace().nth(1) == Some("200"), "{answer}");
    serde_json::from_str(body).unwrap()
}

fn kind(call: &Call) -> &'static str {
    match call {
        Call::CheckTarget(_) => "check",
        Call::EnsureImage(..) => "image",
        Call::Create(_) => "create",
        Call::Start(_) => "start",
        Call::Exec(..) => "exec",
        Call::Signal(..) => "signal",
        Call::Inspect(_) => "inspect",
        Call::Wait(_) => "wait",
        Call::Remove(_) => "remove",
        Call::Stop(_) => "stop",
        Call::Resize(..) => "resize",
        Call::List => "list",
        Call::ImageConfig(_) => "image-config",
    }
}

#[tokio::test]
async fn a_session_creates_joins_relays_and_removes() {
    let running = agent(Script {
        stdout: "hello\n".into(),
        stderr: "oops\n".into(),
        exit_code: 3,
        ..Script::default()
    })
    .await;
    let mut req = request("t1");
    req.pod_namespace = Some("prod".into());
    req.pod_name = Some("web-1".into());
    req.user = Some("alice".into());
    let (ws, protocol, _) = open(&running.address, &req).await.unwrap();
    let (mut out_r, out_w) = tokio::io::duplex(1024);
    let (mut err_r, err_w) = tokio::io::duplex(1024);
    let io = ClientIo {
        stdout: Some(Box::pin(out_w)),
        stderr: Some(Box::pin(err_w)),
        ..ClientIo::default()
    };
    let done = attach(ws, protocol, io, &Config::default()).await.unwrap();
    assert_eq!(done.outcome, ExitStatus::Code(3));
    let (mut out, mut err) = (String::new(), String::new());
    out_r.read_to_string(&mut out).await.unwrap();
    err_r.read_to_string(&mut err).await.unwrap();
    assert_eq!((out.as_str(), err.as_str()), ("hello\n", "oops\n"));
    let fake = running.fake.clone();
    wait_until(|| fake.containers().is_empty()).await;
    let calls = running.fake.calls();
    let Some(Call::Create(spec)) = calls.iter().find(|c| matches!(c, Call::Create(_))) else {
        panic!("no create in {calls:?}");
    };
    assert_eq!(spec.image, "tools:1", "the agent's default image");
    let Some(Call::Exec(_, process)) = calls.iter().find(|c| matches!(c, Call::Exec(..))) else {
        panic!("no exec in {calls:?}");
    };
    assert_eq!(process.command, ["bash"], "the agent's default command");
    assert!(!process.chroot);
    assert_eq!(spec.labels[label::TARGET], "docker://t1");
    assert_eq!(spec.labels[label::POD_NAMESPACE], "prod");
    assert_eq!(spec.labels[label::POD_NAME], "web-1");
    assert_eq!(spec.labels[label::USER], "alice");
    assert_eq!(spec.labels[label::RETAIN], "false");
    assert!(spec.labels.contains_key(label::SESSION));
    assert!(spec.labels.contains_key(label::CREATED_AT));
    assert!(spec.labels.contains_key(label::OWNER));
    // Checked, image ensured, created, started (its holder), the session's process exec'd
    // with its stdio attached, waited for, removed. (The reaper's listings aside.)
    let kinds: Vec<&str> = calls.iter().map(kind).filter(|k| *k != "list").collect();
    assert_eq!(
        kinds,
        [
            "check", "image", "create", "start", "exec", "wait", "remove"
        ]
    );
}

#[tokio::test]
async fn resizes_reach_the_runtime_and_retained_containers_stay() {
    let running = agent(Script {
        echo_stdin: true,
        ..Script::default()
    })
    .await;
    let req =
        DebugRequest::from_query("target=docker://t1&stdin=1&stdout=1&tty=1&retain=1").unwrap();
    let (ws, protocol, _) = open(&running.address, &req).await.unwrap();
    let (mut out_r, out_w) = tokio::io::duplex(1024);
    let io = ClientIo {
        stdin: Some(Box::pin(&b"typed"[..])),
        stdout: Some(Box::pin(out_w)),
        resize: Some(Box::pin(futures_util::stream::iter([TerminalSize {
            cols: 132,
            rows: 43,
        }]))),
        ..ClientIo::default()
    };
    let done = attach(ws, protocol, io, &Config::default()).await.unwrap();
    assert_eq!(done.outcome, ExitStatus::Code(0));
    let mut out = String::new();
    out_r.read_to_string(&mut out).await.unwrap();
    assert_eq!(out, "typed");
    let fake = running.fake.clone();
    wait_until(|| {
        fake.calls().iter().any(|c| {
            matches!(
                c,
                Call::Resize(
                    _,
                    TerminalSize {
                        cols: 132,
                        rows: 43
                    }
                )
            )
        })
    })
    .await;
    // The session is over once the agent lists no session in the container: the agent
    // forgets a session and decides whether its container goes in one step, with no await
    // between, so a wrong removal would have been asked of the runtime by then.
    let mut polls = 0;
    while listed(&running.address)
        .await
        .items
        .iter()
        .any(|c| !c.sessions.is_empty())
    {
        polls += 1;
        assert!(polls < 200, "the session still listed after 5 s");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(running.fake.containers().len(), 1, "retained");
    let calls = running.fake.calls();
    assert!(!calls.iter().any(|c| kind(c) == "remove"));
    assert!(
        !calls.iter().any(|c| kind(c) == "stop"),
        "the retained container holds, between sessions"
    );
}

#[tokio::test]
async fn a_client_that_vanishes_gets_its_container_removed() {
    // Its process is told to stop (SIGTERM) before the container goes. With a signal lost
    // (the plugin killed just as the container appeared: a Docker exec's process starts after
    // the engine answers, so the first SIGTERM finds none), it is sent again: waiting the whole
    // grace (10 s, plus slack) for a process nobody signalled would keep the container that
    // long, beyond wait_until's 5 s.
    for lost in [0, 1] {
        let running = agent(Script {
            linger: true,
            ..Script::default()
        })
        .await;
        running.fake.lose_signals(lost);
        let (ws, _, _) = open(&running.address, &request("t1")).await.unwrap();
        let fake = running.fake.clone();
        wait_until(|| fake.calls().iter().any(|c| kind(c) == "exec")).await;
        drop(ws);
        let fake = running.fake.clone();
        wait_until(|| fake.containers().is_empty()).await;
        let signals = running
            .fake
            .calls()
            .iter()
            .filter(|c| matches!(c, Call::Signal(_, _, 15)))
            .count();
        assert!(
            signals > lost,
            "{lost} lost, SIGTERM sent {signals} time(s)"
        );
    }
}

/// A refused request: its status code and `metav1.Status` body.
async fn refused(address: &str, query: &str) -> (u16, Status) {
    let socket = TcpStream::connect(address).await.unwrap();
    let url = format!("ws://{address}/api/v1/debug?{query}");
    match handshake::connect(url, socket).await {
        Err(kdbg_relay::Error::Handshake(tungstenite::Error::Http(response))) => {
            let status: Status =
                serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            (response.status().as_u16(), status)
        }
        Ok(_) => panic!("{query} was accepted"),
        Err(e) => panic!("{query}: {e:?}"),
    }
}

#[tokio::test]
async fn bad_requests_get_a_status_that_says_why_and_create_nothing() {
    let running = agent(Script::default()).await;
    let cases = [
        ("target=docker://t1", 400, "one of stdin, stdout, stderr"),
        (
            "target=docker://t1&stdout=1&tty=1&stderr=1",
            400,
            "tty and stderr",
        ),
        ("stdout=1", 400, "target is required"),
        (
            "target=docker://nope&stdout=1",
            404,
            "docker://nope not found",
        ),
        ("target=docker://t2&stdout=1", 409, "is exited, not running"),
        (
            "target=docker://t1&stdout=1&image=absent:1&pullPolicy=Never",
            400,
            "image absent:1 is not present",
        ),
    ];
    for (query, code, message) in cases {
        let (got, status) = refused(&running.address, query).await;
        assert_eq!(got, code, "{query}");
        assert_eq!(status.kind.as_deref(), Some("Status"));
        assert_eq!(status.code, Some(code));
        // The reasons a client acts on (the plugin pulls, or reads the pod again); the
        // others name the code.
        let reason = if message.starts_with("image absent") {
            kdbg_api::reason::IMAGE_ABSENT
        } else if code == 409 {
            kdbg_api::reason::TARGET_NOT_RUNNING
        } else if code == 400 {
            "BadRequest"
        } else {
            "NotFound"
        };
        assert_eq!(status.reason.as_deref(), Some(reason), "{query}");
        let text = status.message.unwrap_or_default();
        assert!(text.contains(message), "{query}: {text}");
    }
    assert!(running.fake.containers().is_empty());
    assert!(!running.fake.calls().iter().any(|c| kind(c) == "create"));
}

/// A debug container made directly in the fake, with these labels.
async fn made(fake: &FakeRuntime, name: &str, labels: &[(&str, &str)]) -> String {
    use kdbg_runtimes::Runtime as _;
    let spec = kdbg_runtimes::DebugSpec {
        target: "docker://t1".parse().unwrap(),
        image: "tools:1".into(),
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        init: "/x".into(),
        profile: kdbg_runtimes::Profile::default(),
        platform: None,
    };
    let id = fake.create(&spec).await.unwrap().id;
    fake.start(&id).await.unwrap();
    id
}

#[tokio::test]
async fn the_reaper_removes_what_nobody_owns_and_retained_containers_past_their_age() {
    let fake = FakeRuntime::new(Script::default());
    fake.add_target("t1", "running");
    let mut settings = Settings {
        init_dir: std::env::temp_dir().join(format!("kdbg-reap-init-{}", std::process::id())),
        ..Settings::default()
    };
    settings.lifecycle.orphan_max_age = kdbg_agent::duration::GoDuration(Duration::ZERO);
    settings.lifecycle.retained_max_age =
        kdbg_agent::duration::GoDuration(Duration::from_secs(3600));
    let agent = kdbg_agent::agent(AnyRuntime::Fake(fake.clone()), settings).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (fresh, old) = (now.to_string(), (now - 7200).to_string());
    let dead_owner = "0000/1/1";
    let me = kdbg_agent::owner::this_process();
    let s = |k: &'static str, v: &'static str| (k, v);
    let session = s(label::SESSION, "s");
    let orphan_target = (label::TARGET, "docker://gone");
    let live_target = (label::TARGET, "docker://t1");
    let mine_unretained = made(
        &fake,
        "alive-owner",
        &[
            session,
            live_target,
            (label::RETAIN, "false"),
            (label::OWNER, me.as_str()),
            (label::CREATED_AT, fresh.as_str()),
        ],
    )
    .await;
    let dead_unretained = made(
        &fake,
        "dead-owner",
        &[
            session,
            live_target,
            (label::RETAIN, "false"),
            (label::OWNER, dead_owner),
            (label::CREATED_AT, fresh.as_str()),
        ],
    )
    .await;
    let kept_retained = made(
        &fake,
        "kept",
        &[
            session,
            live_target,
            (label::RETAIN, "true"),
            (label::OWNER, dead_owner),
            (label::CREATED_AT, fresh.as_str()),
        ],
    )
    .await;
    let too_old = made(
        &fake,
        "too-old",
        &[
            session,
            live_target,
            (label::RETAIN, "true"),
            (label::OWNER, dead_owner),
            (label::CREATED_AT, old.as_str()),
        ],
    )
    .await;
    let orphan = made(
        &fake,
        "orphan",
        &[
            session,
            orphan_target,
            (label::RETAIN, "true"),
            (label::OWNER, dead_owner),
            (label::CREATED_AT, fresh.as_str()),
        ],
    )
    .await;
    kdbg_agent::containers::reap(&agent).await;
    let left = fake.containers();
    // This agent's own container whose session is over goes too: nobody else will remove it.
    assert!(!left.contains(&mine_unretained), "{left:?}");
    assert!(!left.contains(&dead_unretained), "{left:?}");
    assert!(!left.contains(&too_old), "{left:?}");
    assert!(!left.contains(&orphan), "{left:?}");
    assert_eq!(left, [kept_retained]);
}

#[tokio::test]
async fn list_says_running_idle_exited_or_orphaned() {
    let fake = FakeRuntime::new(Script::default());
    fake.add_target("t1", "running");
    let settings = Settings {
        init_dir: std::env::temp_dir().join(format!("kdbg-list-init-{}", std::process::id())),
        ..Settings::default()
    };
    let agent = kdbg_agent::agent(AnyRuntime::Fake(fake.clone()), settings).unwrap();
    let session = (label::SESSION, "s");
    made(
        &fake,
        "idle",
        &[
            session,
            (label::TARGET, "docker://t1"),
            (label::POD_NAMESPACE, "shop"),
            (label::POD_NAME, "web-1"),
        ],
    )
    .await;
    let stopped = made(
        &fake,
        "stopped",
        &[
            session,
            (label::TARGET, "docker://t1"),
            (label::POD_NAMESPACE, "shop"),
            (label::POD_NAME, "web-1"),
        ],
    )
    .await;
    {
        use kdbg_runtimes::Runtime as _;
        fake.stop(&stopped, Duration::ZERO).await.unwrap();
    }
    made(
        &fake,
        "orphan",
        &[
            session,
            (label::TARGET, "docker://gone"),
            (label::POD_NAMESPACE, "shop"),
            (label::POD_NAME, "web-2"),
        ],
    )
    .await;
    let all = kdbg_agent::containers::list(&agent, &kdbg_api::PodScope::default())
        .await
        .unwrap();
    let status = |name: &str| {
        all.iter()
            .find(|i| i.name == name)
            .unwrap()
            .status
            .to_string()
    };
    assert_eq!(status("idle"), "Idle");
    assert_eq!(status("stopped"), "Exited (0)");
    assert_eq!(status("orphan"), "Orphaned");
    let scope = kdbg_api::PodScope {
        namespace: Some("shop".into()),
        pod: Some("web-1".into()),
        node: None,
    };
    let pod = kdbg_agent::containers::list(&agent, &scope).await.unwrap();
    assert_eq!(pod.len(), 2);
    // Removal checks the pod: another pod's container is not found.
    let err = kdbg_agent::containers::find_in(&agent, "orphan", &scope)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");
    let idle = kdbg_agent::containers::find_in(&agent, "idle", &scope)
        .await
        .unwrap();
    kdbg_agent::containers::remove(&agent, &idle).await.unwrap();
}

#[tokio::test]
async fn chroot_reaches_the_sessions_process() {
    let running = agent(Script::default()).await;
    let mut req = request("t1");
    req.chroot = true;
    let (ws, protocol, _) = open(&running.address, &req).await.unwrap();
    let io = ClientIo {
        stdout: Some(Box::pin(tokio::io::sink())),
        stderr: Some(Box::pin(tokio::io::sink())),
        ..ClientIo::default()
    };
    attach(ws, protocol, io, &Config::default()).await.unwrap();
    let calls = running.fake.calls();
    let Some(Call::Exec(_, process)) = calls.iter().find(|c| matches!(c, Call::Exec(..))) else {
        panic!("no exec in {calls:?}");
    };
    assert!(process.chroot, "{process:?}");
    // The fake's target has no PID: kdbg-init then goes through PID 1.
    assert_eq!(process.target_pid, None);
}
