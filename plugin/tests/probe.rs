//! What a hostile probe of the agent found, each closed and tested from outside against the
//! agent as a separate process on the real engines: a terminal size or a flood of them that
//! the agent would keep, attach and the other endpoints reaching the node without the node
//! check, profiles with node-level power by default, a lock-out by held sockets, pulls outside
//! the policy, oversized watch messages, unlimited retained containers, forged audit lines and
//! a recording that named what the client said.

use kdbg_testkit as support;

use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use kdbg_relay::tungstenite::Message;
use kdbg_relay::tungstenite::protocol::frame::coding::CloseCode;
use support::apiserver::{Cluster, running_pod};
use support::engine::{ContainerdEngine, DockerEngine, Engine, Targeted};
use support::users::{World, raw, scratch, upgrade};
use support::ws::{expect_output, output_until, runtime, send, session, ws_request};
use support::{Agent, run, text};

/// A terminal session in `target` running each line it reads (a shell without line
/// editing: an interactive one would ask the terminal where its cursor is, and wait).
fn shell_query(target: &dyn Targeted) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("target", &target.pod_reference())
        .append_pair("stdin", "1")
        .append_pair("stdout", "1")
        .append_pair("tty", "1");
    for arg in ["sh", "-c", "while read -r l; do eval \"$l\"; done"] {
        query.append_pair("command", arg);
    }
    query.finish()
}

/// The agent's RSS must stay under 128 MiB whatever one client sent.
fn assert_rss_bounded(agent: &Agent, after: &str) {
    if let Some(rss) = agent.rss_kib() {
        assert!(
            rss < 128 * 1024,
            "agent RSS {rss} KiB after {after}\n{}",
            agent.log()
        );
    }
}

/// Item 1 and 6: one 65535x65535 resize (the process gets it; the agent's screen for
/// watchers and its recording do not), 150 MiB of resizes, and watchers that send: the
/// agent's memory stays bounded and the session beside them goes on.
fn a_client_cannot_make_the_agent_keep_what_it_sends(engine: &dyn Engine) {
    let target = engine.target("exec sleep 3600");
    let dir = scratch(&format!("keep-{}", engine.name()));
    let agent = engine.agent(&format!(
        "recordings:\n  dir: \"{}\"\n  mode: always\n",
        dir.join("recordings").display()
    ));
    let address = agent.address();
    let query = shell_query(target.as_ref());
    runtime().block_on(async {
        let (mut bystander, _) = session(&address, &query, None).await;
        send(&mut bystander, 0, b"echo by-$((1+1))\n").await;
        expect_output(&mut bystander, "by-2").await;

        let (mut huge, id) = session(&address, &query, None).await;
        // The process gets the size its client asked for (the runtime applies it a moment
        // later; busybox's stty shows sizes under 30,000, so this one is 20,000 square: the
        // agent would keep 400 million cells of it).
        send(&mut huge, 4, br#"{"Width":20000,"Height":20000}"#).await;
        let mut sized = String::new();
        for n in 0..50 {
            send(
                &mut huge,
                0,
                format!("stty size; echo sized-{n}-done\n").as_bytes(),
            )
            .await;
            sized = output_until(&mut huge, &format!("sized-{n}-done\r\n")).await;
            if sized.contains("20000 20000") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(sized.contains("20000 20000"), "{sized}\n{}", agent.log());
        // And the probe's message.
        send(&mut huge, 4, br#"{"Width":65535,"Height":65535}"#).await;
        // The screen keeper parses after a pause in the output: 100 ms of quiet
        // (`IDLE_PARSE`, agent/src/watch.rs). 2 s is twenty of those, for a loaded machine;
        // nothing shows that it has parsed but the memory this checks.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_rss_bounded(&agent, "a 65535x65535 terminal");

        // 150 MiB of resizes, 1 MiB messages of about 40,000 sizes each.
        let mut flood = Vec::with_capacity(1 << 20);
        let mut n = 0u32;
        while flood.len() < (1 << 20) - 64 {
            n += 1;
            let side = 1 + n % 999;
            flood.extend_from_slice(format!("{{\"Width\":{side},\"Height\":{side}}}").as_bytes());
        }
        for _ in 0..150 {
            send(&mut huge, 4, &flood).await;
        }
        send(&mut huge, 0, b"echo after-$((3+3))\n").await;
        expect_output(&mut huge, "after-6").await;
        // As above: the output has paused, and the keeper parses within 100 ms of that.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_rss_bounded(&agent, "150 MiB of resizes");
        send(&mut bystander, 0, b"echo still-$((4+4))\n").await;
        expect_output(&mut bystander, "still-8").await;

        // A watcher may not send 64 MiB messages (the library's default): 2 MiB closes it.
        let watch = |id: &str| {
            let mut request = ws_request(
                &address,
                kdbg_api::path::WATCH,
                &format!("session={id}"),
                None,
            );
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                kdbg_api::path::WATCH_PROTOCOL.parse().unwrap(),
            );
            request
        };
        let (mut watcher, _) = tokio_tungstenite::connect_async(watch(&id)).await.unwrap();
        let _ = watcher.send(Message::binary(vec![b'x'; 2 << 20])).await;
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match watcher.next().await {
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return true,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await;
        assert_eq!(ended, Ok(true), "a watcher's 2 MiB message was taken");
        // Nor keep typing into a read-only view: closed with 1008 past a small allowance.
        let (mut watcher, _) = tokio_tungstenite::connect_async(watch(&id)).await.unwrap();
        let mut code = None;
        for _ in 0..16 {
            if watcher.send(Message::text("k".repeat(1024))).await.is_err() {
                break;
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(Ok(message)) = watcher.next().await {
                if let Message::Close(frame) = message {
                    code = frame.map(|f| f.code);
                    return;
                }
            }
        })
        .await;
        assert_eq!(code, Some(CloseCode::Policy), "{}", agent.log());

        // Every session still works, and the recording's sizes are within the kept maximum.
        send(&mut huge, 0, b"echo end-$((5+5)); exit\n").await;
        expect_output(&mut huge, "end-10").await;
        send(&mut bystander, 0, b"exit\n").await;
    });
    // The recordings' sizes (header and resize events) are within the kept maximum, and the
    // huge one is there, clamped.
    let mut sizes = Vec::new();
    for cast in walk(&dir.join("recordings")) {
        let text = std::fs::read_to_string(&cast).unwrap();
        let mut lines = text.lines();
        let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        sizes.push((
            header["width"].as_u64().unwrap(),
            header["height"].as_u64().unwrap(),
        ));
        for line in lines {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            if event[1] == "r" {
                let (cols, rows) = event[2].as_str().unwrap().split_once('x').unwrap();
                sizes.push((cols.parse().unwrap(), rows.parse().unwrap()));
            }
        }
    }
    assert!(
        sizes.iter().all(|&(c, r)| c <= 1000 && r <= 1000),
        "{sizes:?}"
    );
    assert!(sizes.contains(&(1000, 1000)), "{sizes:?}");
    support::assert_removed_soon(|| target.leftovers());
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn a_client_cannot_make_the_agent_keep_what_it_sends_on_docker() {
    a_client_cannot_make_the_agent_keep_what_it_sends(&DockerEngine);
}

#[test]
fn a_client_cannot_make_the_agent_keep_what_it_sends_on_containerd() {
    a_client_cannot_make_the_agent_keep_what_it_sends(&ContainerdEngine);
}

/// One raw request with `token`, `Connection: close`: its status and body.
fn request(address: &str, method: &str, target: &str, token: &str) -> (u16, String) {
    raw(
        address,
        &format!(
            "{method} {target} HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        ),
    )
}

/// A WebSocket upgrade of the watch endpoint, as raw bytes.
fn watch_upgrade(query: &str, token: &str) -> String {
    format!(
        "GET /api/v1/watch?{query} HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer {token}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v3.asciicast\r\n\r\n"
    )
}

/// Items 2, 3 (sysadmin) and 5: a debug container of a hostPID pod, made by dave (who may
/// debug the node), and every endpoint that touches it, as alice (who may debug the pod but
/// not the node: 403 naming nodes/proxy) and as dave (allowed). Pulls follow the policy.
fn every_endpoint_checks_the_node(engine: &dyn Engine) {
    let _retaining = RETAINING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let name = engine.name();
    let image = match name {
        "docker" => support::image(),
        _ => support::ctd_image(),
    };
    let recordings = support::Scratch::new(&format!("node-{name}"));
    let world = World::new(
        engine,
        &format!("node-{name}"),
        &format!(
            "recordings:\n  dir: \"{}\"\n  mode: always\npolicy:\n  images: [\"{image}\"]\n",
            recordings.display()
        ),
    );
    let World {
        web,
        vault,
        host,
        agent,
        ..
    } = &world;
    let address = agent.address();
    let host_ref = host.pod_reference();
    let pod = "podNamespace=shop&podName=node-exporter";
    let container = format!("node-{name}-{}", std::process::id());

    runtime().block_on(async {
        // Dave's retained terminal session in the node's PID namespace, left running.
        let (mut daves, session_id) = session(
            &address,
            &format!(
                "target={host_ref}&{pod}&stdin=1&stdout=1&tty=1&command=sh&retain=1&name={container}"
            ),
            Some("dave-token"),
        )
        .await;
        send(&mut daves, 0, b"echo dave-$((1+1))\n").await;
        expect_output(&mut daves, "dave-2").await;

        let endpoints: Vec<(&str, String)> = vec![
            ("new session", upgrade(&format!("target={host_ref}&{pod}&stdout=1&command=true"), None)),
            ("attach", upgrade(&format!("container={container}&{pod}&stdout=1&command=true"), None)),
            ("list", format!("GET /api/v1/containers?{pod}")),
            ("watch", watch_upgrade(&format!("session={session_id}&{pod}"), "TOKEN")),
            ("recordings", format!("GET /api/v1/recordings?{pod}")),
            ("recording", format!("GET /api/v1/recordings/{session_id}?{pod}")),
            ("pull", format!("GET /api/v1/pull?image={image}&target={host_ref}&{pod}")),
            (
                "sysadmin profile",
                upgrade(
                    &format!(
                        "target={}&podNamespace=shop&podName=web&stdout=1&command=true&profile=sysadmin",
                        web.pod_reference()
                    ),
                    None,
                ),
            ),
            ("rm", format!("DELETE /api/v1/containers/{container}?{pod}")),
        ];
        let ask = |what: &str, line: &str, token: &str| {
            if line.contains("Upgrade: websocket") {
                let with_token = if line.contains("Bearer TOKEN") {
                    line.replace("Bearer TOKEN", &format!("Bearer {token}"))
                } else {
                    line.replacen("\r\n", &format!("\r\nAuthorization: Bearer {token}\r\n"), 1)
                };
                let (code, body) = raw(&address, &with_token);
                (format!("{what}: {code} {body}"), code, body)
            } else {
                let (method, target) = line.split_once(' ').unwrap();
                let (code, body) = request(&address, method, target, token);
                (format!("{what}: {code} {body}"), code, body)
            }
        };
        for (what, line) in &endpoints {
            let (said, code, body) = ask(what, line, "alice-token");
            assert_eq!(code, 403, "alice, {said}\n{}", agent.log());
            assert!(
                body.contains("gives the node itself") && body.contains("create nodes/proxy"),
                "alice, {said}"
            );
        }
        // A list of the whole namespace leaves the node-level container out.
        let (code, body) = request(&address, "GET", "/api/v1/containers?podNamespace=shop", "alice-token");
        assert_eq!(code, 200, "{body}");
        assert!(!body.contains(&container), "{body}");
        // The control: dave may do each, rm last.
        for (what, line) in &endpoints {
            let (said, code, body) = ask(what, line, "dave-token");
            assert!(
                code == 101 || code == 200,
                "dave, {said}\n{}",
                agent.log()
            );
            match *what {
                "list" => assert!(body.contains(&container), "{said}"),
                "recordings" => assert!(body.contains(&session_id), "{said}"),
                _ => {}
            }
        }
        drop(daves);
    });

    // Pulls are admitted as sessions are: the image policy, and the target's own pod.
    let web_ref = web.pod_reference();
    let (code, body) = request(
        &address,
        "GET",
        &format!(
            "/api/v1/pull?image=evil.example/tools:1&target={web_ref}&podNamespace=shop&podName=web"
        ),
        "alice-token",
    );
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("policy.images"), "{body}");
    let (code, body) = request(
        &address,
        "GET",
        &format!(
            "/api/v1/pull?image={image}&target={}&podNamespace=shop&podName=web",
            vault.pod_reference()
        ),
        "alice-token",
    );
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("belongs to pod bank/vault"), "{body}");
    world.assert_clean();
}

#[test]
fn every_endpoint_checks_the_node_on_docker() {
    every_endpoint_checks_the_node(&DockerEngine);
}

#[test]
fn every_endpoint_checks_the_node_on_containerd() {
    every_endpoint_checks_the_node(&ContainerdEngine);
}

/// Item 3: each profile's seccomp filter, seen from inside its debug container by a static
/// program that makes each call: what it refuses (errno) and what it allows.
fn profiles_refuse_what_they_say(engine: &dyn Engine) {
    let target = engine.target("exec sleep 3600");
    let cluster = Cluster::new("shop");
    cluster.api.add_pod(running_pod(
        "shop",
        "web",
        &[("app", &target.pod_reference(), true)],
    ));
    let agent = engine.agent("");
    let probe = support::syscall_probe();
    let run_probe = |profile: &str| {
        let out = run(
            &mut cluster.debug(
                agent.port,
                &[
                    "web",
                    "--profile",
                    profile,
                    "-i",
                    "--",
                    "sh",
                    "-c",
                    "cat >/tmp/probe && chmod +x /tmp/probe && /tmp/probe",
                ],
            ),
            &probe,
        );
        let said = text(&out.stdout);
        assert!(
            said.ends_with("done\n"),
            "{profile}: {said}\n{}",
            text(&out.stderr)
        );
        said.lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(call, result)| (call.to_owned(), result.to_owned()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    const EPERM: &str = "errno=1";
    let never = [
        "keyctl",
        "add_key",
        "kexec_load",
        "init_module",
        "finit_module",
        "delete_module",
        "mount",
        "umount2",
    ];
    for profile in ["general", "netadmin", "restricted", "sysadmin"] {
        let seen = run_probe(profile);
        let of = |call: &str| seen.get(call).map(String::as_str).unwrap_or("absent");
        assert_eq!(of("getpid"), "ok", "{profile}: {seen:?}");
        assert_eq!(of("process_vm_readv"), "ok", "{profile}: {seen:?}");
        for call in never {
            assert_eq!(of(call), EPERM, "{profile}: {call}: {seen:?}");
        }
        if profile == "sysadmin" {
            for call in ["unshare", "clone", "clone3", "bpf", "perf_event_open"] {
                assert_eq!(of(call), "ok", "{profile}: {call}: {seen:?}");
            }
            // Allowed: refused by the kernel for the bad descriptor, not by the filter.
            assert_eq!(of("setns"), "errno=9", "{profile}: {seen:?}");
        } else {
            for call in ["unshare", "clone", "bpf", "perf_event_open", "setns"] {
                assert_eq!(of(call), EPERM, "{profile}: {call}: {seen:?}");
            }
            // ENOSYS, so that C libraries fall back to clone, whose flags the filter reads.
            assert_eq!(of("clone3"), "errno=38", "{profile}: {seen:?}");
        }
    }
    support::assert_removed_soon(|| target.leftovers());
}

#[test]
fn profiles_refuse_what_they_say_on_docker() {
    profiles_refuse_what_they_say(&DockerEngine);
}

#[test]
fn profiles_refuse_what_they_say_on_containerd() {
    profiles_refuse_what_they_say(&ContainerdEngine);
}

/// Holds `count` connections to `address` open in a process of its own (a process may
/// have 20,000 files here, and raising that takes a privilege the tests may not have): this
/// test binary running [`hold_connections`]. Ends when dropped.
struct Holder(std::process::Child);

impl Holder {
    fn start(address: &str, count: usize) -> Holder {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "hold_connections",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("KDBG_HOLD", address)
            .env("KDBG_HOLD_COUNT", count.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let held = std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            // (libtest may print the test's name on the same line first.)
            .find_map(|l| l.split_once("held ").map(|(_, n)| n.to_owned()))
            .expect("the holder says how many it holds");
        let held: usize = held.trim().parse().unwrap();
        assert!(held + 100 >= count, "only {held} of {count} connected");
        Holder(child)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run by [`Holder`]: holds `KDBG_HOLD_COUNT` connections to `KDBG_HOLD` until its standard
/// input closes.
#[test]
#[ignore = "a helper process of held_connections_lock_nobody_out"]
fn hold_connections() {
    use std::io::Read;
    let Ok(address) = std::env::var("KDBG_HOLD") else {
        return;
    };
    let count: usize = std::env::var("KDBG_HOLD_COUNT").unwrap().parse().unwrap();
    let held: Vec<TcpStream> = (0..count)
        .filter_map(|_| TcpStream::connect(&address).ok())
        .collect();
    println!("\nheld {}", held.len());
    let _ = std::io::stdin().read(&mut [0u8]);
}

/// Item 4: 20,000 connections held open without a word do not lock anyone out: an
/// authenticated session is served beside them and `/healthz` answers.
#[test]
fn held_connections_lock_nobody_out() {
    let world = World::new(&DockerEngine, "held", "limits:\n  headerTimeout: 120s\n");
    let (cluster, agent) = (&world.cluster, &world.agent);
    let address = agent.address();
    let started = Instant::now();
    let held = [
        Holder::start(&address, 10_000),
        Holder::start(&address, 10_000),
    ];
    eprintln!("20,000 connections held in {:?}", started.elapsed());
    // The newest are open, the oldest have been closed to make room.
    let (code, _) = raw(
        &address,
        "GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        code,
        200,
        "/healthz beside 20,000 held connections\n{}",
        agent.log()
    );
    let started = Instant::now();
    let out = run(
        &mut support::users::as_user(
            cluster,
            &world.dir,
            "alice-token",
            agent,
            &["web", "--", "echo", "served"],
        ),
        b"",
    );
    eprintln!(
        "a session beside 20,000 held connections: {:?}",
        started.elapsed()
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out.stderr),
        agent.log()
    );
    assert_eq!(text(&out.stdout), "served\n");
    assert!(agent.metric("kubectl_debug_agent_errors_total{kind=\"unauthenticated_limit\"}") > 0);
    drop(held);
    world.assert_clean();
}

/// Held by the tests of this file that retain containers: the node's limit counts every
/// retained container on the engine.
static RETAINING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Item 7: `policy.maxRetainedPerUser` and `policy.maxRetainedPerNode`.
fn retained_containers_are_limited(engine: &dyn Engine) {
    let _retaining = RETAINING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let target = engine.target("exec sleep 3600");
    let cluster = Cluster::new("shop");
    cluster.api.add_pod(running_pod(
        "shop",
        "keeper",
        &[("app", &target.pod_reference(), true)],
    ));
    // Room for three more than the engine holds (earlier tests' may be there, any agent's).
    let node_limit = engine.retained() + 3;
    let agent = engine.agent(&format!(
        "policy:\n  maxRetainedPerUser: 2\n  maxRetainedPerNode: {node_limit}\n"
    ));
    let retain = |user: &str| {
        let out = run(
            cluster
                .debug(agent.port, &["keeper", "--retain", "--", "true"])
                .env("USER", user),
            b"",
        );
        (out.status.code(), text(&out.stderr))
    };
    for _ in 0..2 {
        let (code, err) = retain("erin");
        assert_eq!(code, Some(0), "{err}");
    }
    let (code, err) = retain("erin");
    assert_eq!(code, Some(1));
    assert!(
        err.contains("policy.maxRetainedPerUser: 2")
            && err.contains("kubectl-debug rm")
            && err.contains("kubectl-debug list"),
        "{err}"
    );
    let (code, err) = retain("frank");
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = retain("frank");
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!("policy.maxRetainedPerNode: {node_limit}")),
        "{err}"
    );
    // Without --retain, sessions go on as usual.
    let out = run(
        &mut cluster.debug(agent.port, &["keeper", "--", "echo", "ok"]),
        b"",
    );
    assert_eq!(text(&out.stdout), "ok\n", "{}", text(&out.stderr));
    let out = run(
        &mut cluster.debug(agent.port, &["rm", "keeper", "--all"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    support::assert_removed_soon(|| target.leftovers());
}

#[test]
fn retained_containers_are_limited_on_docker() {
    retained_containers_are_limited(&DockerEngine);
}

#[test]
fn retained_containers_are_limited_on_containerd() {
    retained_containers_are_limited(&ContainerdEngine);
}

/// Item 8: newlines, quotes and escape sequences in everything a client sends stay inside
/// their field of one audit line, in the text format and in JSON.
#[test]
fn audit_lines_cannot_be_forged() {
    let target = DockerEngine.target("exec sleep 3600");
    let forged = "x\nINFO audit: event=\"session started\" user=FORGED \"q\" \u{1b}[2J";
    let encoded: String = form_urlencoded::byte_serialize(forged.as_bytes()).collect();
    for format in ["text", "json"] {
        let agent = DockerEngine.agent(&format!("log:\n  format: {format}\n"));
        let address = agent.address();
        // Started (then ended), and refused (no such image), each with the forged values.
        for image in [None, Some("absent.example/none:1")] {
            let mut query = format!(
                "target={}&stdout=1&pullPolicy=Never&command=echo&command={encoded}&user={encoded}&podNamespace={encoded}&podName={encoded}&podContainer={encoded}",
                target.pod_reference()
            );
            if let Some(image) = image {
                query.push_str(&format!("&image={image}"));
            }
            let (code, body) = raw(&address, &upgrade(&query, None));
            assert!(code == 101 || code == 400, "{code} {body}");
        }
        let wait = Instant::now();
        while !agent.log().contains("session ended") && wait.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = agent.log();
        // Every line that carries the forged values is a whole event of the agent's (it
        // starts with the agent's timestamp, or is a JSON object), with no raw escape.
        let carrying: Vec<&str> = log.lines().filter(|l| l.contains("FORGED")).collect();
        let json = |line: &str| {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("not one JSON event ({e}): {line:?}"))
        };
        for line in &carrying {
            assert!(!line.contains('\u{1b}'), "{format}: a raw escape: {line:?}");
            if format == "json" {
                json(line);
            } else {
                assert!(
                    line.starts_with(|c: char| c.is_ascii_digit()),
                    "{format}: a line that is not an event of the agent's: {line:?}\n{log}"
                );
            }
        }
        // Started, ended, refused: one audit line each, its values whole.
        for event in ["session started", "session ended", "session refused"] {
            let lines: Vec<&str> = carrying
                .iter()
                .copied()
                .filter(|l| match format {
                    "json" => json(l)["fields"]["event"] == event,
                    _ => l.contains(&format!("event=\"{event}\"")),
                })
                .collect();
            assert_eq!(lines.len(), 1, "{format}: {event}:\n{log}");
            if format == "json" {
                let fields = &json(lines[0])["fields"];
                assert_eq!(fields["user"].as_str(), Some(forged), "{}", lines[0]);
                let pod = format!("{forged}/{forged}");
                assert_eq!(fields["pod"].as_str(), Some(pod.as_str()), "{}", lines[0]);
            } else {
                assert!(lines[0].contains("user=\"x\\nINFO audit"), "{}", lines[0]);
            }
        }
    }
    support::assert_removed_soon(|| target.leftovers());
}

/// Item 9: the recording names what the agent verified (the kubelet's labels of the target),
/// not the client's `podContainer`.
fn recordings_name_what_the_agent_verified(engine: &dyn Engine) {
    let name = engine.name();
    let dir = scratch(&format!("verified-{name}"));
    let records = dir.join("recordings");
    let target = engine.pod_target("shop", "web", false, "exec sleep 3600");
    let agent = engine.agent(&format!(
        "recordings:\n  dir: \"{}\"\n  mode: always\n",
        records.display()
    ));
    let query = format!(
        "target={}&stdout=1&command=true&podNamespace=shop&podName=web&podContainer=other&user=alice",
        target.pod_reference()
    );
    let (code, body) = raw(&agent.address(), &upgrade(&query, None));
    assert_eq!(code, 101, "{body}");
    let wait = Instant::now();
    let cast = loop {
        let found = walk(&records);
        if let Some(file) = found.first()
            && std::fs::read_to_string(file).is_ok_and(|c| c.lines().count() > 1)
        {
            break std::fs::read_to_string(file).unwrap();
        }
        assert!(
            wait.elapsed() < Duration::from_secs(10),
            "no recording:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let header: serde_json::Value = serde_json::from_str(cast.lines().next().unwrap()).unwrap();
    assert_eq!(header["title"], "shop/web/app by alice", "{header}");
    assert_eq!(header["kubectl_debug"]["target"], "app", "{header}");
    assert!(!cast.lines().next().unwrap().contains("other"), "{header}");
    support::assert_removed_soon(|| target.leftovers());
}

#[test]
fn recordings_name_what_the_agent_verified_on_docker() {
    recordings_name_what_the_agent_verified(&DockerEngine);
}

#[test]
fn recordings_name_what_the_agent_verified_on_containerd() {
    recordings_name_what_the_agent_verified(&ContainerdEngine);
}
