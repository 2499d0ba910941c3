//! Recording sessions on the agent, and watching them live, on the real engines: recordings
//! replayed by the real asciinema, the recording modes, failures of the disk, terminal sizes
//! under a real terminal (tmux), and a watcher joining a running session.

use kdbg_testkit as support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use kdbg_recordings::{EventKind, Reader};
use support::apiserver::{Cluster, running_pod};
use support::engine::{ContainerdEngine, DockerEngine, Engine, Targeted};
use support::tmux::{Tmux, shell_line};
use support::{run, text};

/// A scratch directory for one test, removed when it is done.
fn scratch(name: &str) -> support::Scratch {
    support::Scratch::new(&format!("rec-{name}"))
}

/// The agent configuration that records into `dir` with `mode`, and `more` keys.
fn recordings(dir: &Path, mode: &str, more: &str) -> String {
    format!(
        "recordings:\n  dir: \"{}\"\n  mode: {mode}\n{more}",
        dir.display()
    )
}

/// A pod `name` in namespace `shop` whose container `app` is `target`.
fn pod_of(name: &str, target: &dyn Targeted) -> Cluster {
    let cluster = Cluster::new("shop");
    cluster.api.add_pod(running_pod(
        "shop",
        name,
        &[("app", &target.pod_reference(), true)],
    ));
    cluster
}

/// The recordings under `dir`.
fn cast_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "cast") {
                found.push(path);
            }
        }
    }
    found
}

/// The one recording under `dir`, once its recorder has finished: its session's end reaches
/// the client first, and the recorder writes its lines (the header too, for a short session)
/// a moment later.
fn the_recording(dir: &Path) -> PathBuf {
    let mut found = cast_files(dir);
    assert_eq!(found.len(), 1, "one recording expected: {found:?}");
    let path = found.pop().unwrap();
    support::eventually(Duration::from_secs(10), "the recording to finish", || {
        // The file is made when the session starts; its header may still be on its way.
        if !std::fs::read(&path).unwrap().contains(&b'\n') {
            return false;
        }
        let (_, kinds, truncated) = events(&path);
        truncated
            || matches!(
                kinds.last(),
                Some(EventKind::Marker(_) | EventKind::Exit(_))
            )
    });
    path
}

/// Every event of a recording, and whether it ends in a line cut short.
fn events(path: &Path) -> (kdbg_recordings::Header, Vec<EventKind>, bool) {
    let data = std::fs::read(path).unwrap();
    let mut reader = Reader::new(&data[..]).unwrap();
    let mut kinds = Vec::new();
    while let Some(event) = reader.next_event().unwrap() {
        kinds.push(event.kind);
    }
    (reader.header().clone(), kinds, reader.is_truncated())
}

/// Runs asciinema with its configuration in a scratch directory (it would write one in
/// `$HOME` otherwise).
fn asciinema(dir: &Path) -> Command {
    assert!(
        Path::new("/usr/bin/asciinema").exists(),
        "asciinema is missing: scripts/test-world installs Debian's asciinema"
    );
    let mut command = Command::new("/usr/bin/asciinema");
    command
        .env("ASCIINEMA_CONFIG_HOME", dir.join("asciinema-config"))
        .env("ASCIINEMA_INSTALL_ID", "kdbg-plugin-tests")
        .stdin(Stdio::null());
    command
}

/// What `asciinema cat FILE` prints (under a pseudo-terminal, which it needs), with the
/// terminal's CR LF turned back into LF.
fn asciinema_cat(dir: &Path, cast: &Path) -> String {
    let printed = dir.join("cat.out");
    let line = format!(
        "{} cat '{}' > '{}'",
        shell_line(&asciinema(dir)),
        cast.display(),
        printed.display()
    );
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "asciinema cat: {}", text(&out.stdout));
    text(&std::fs::read(&printed).unwrap()).replace("\r\n", "\n")
}

/// What a test session prints: UTF-8, escapes, and enough lines to span several events.
const SCRIPT: &str = "printf 'h\\303\\251llo w\\303\\266rld \\342\\234\\223\\n'; seq 1 2000; printf '\\033[1mbold\\033[0m done\\n'";

fn a_recorded_session_replays_what_it_printed(engine: &dyn Engine) {
    let pod = format!("recorded-{}", engine.name());
    let dir = scratch(&pod);
    let records = dir.join("recordings");
    // With the kubelet's labels: the recording names the container they name.
    let target = engine.pod_target("shop", &pod, false, "exec sleep 3600");
    let agent = engine.agent(&recordings(&records, "always", "  format: v2\n"));
    let cluster = pod_of(&pod, target.as_ref());

    let out = run(
        &mut cluster.debug(agent.port, &[&pod, "--", "sh", "-c", SCRIPT]),
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(printed.starts_with("héllo wörld ✓\n1\n2\n"), "{printed}");
    assert!(
        text(&out.stderr).contains("recorded by the kubectl-debug agent on node"),
        "the user is told: {}",
        text(&out.stderr)
    );

    // The file, where the configuration says, readable by root only.
    let cast = the_recording(&records);
    assert_eq!(cast.parent().unwrap(), records.join("shop").join(&pod));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&cast), 0o600);
    assert_eq!(mode(cast.parent().unwrap()), 0o700);
    assert_eq!(mode(&records.join("shop")), 0o700);
    let (header, kinds, truncated) = events(&cast);
    assert!(!truncated);
    assert!(
        header
            .title
            .as_deref()
            .unwrap()
            .starts_with(&format!("shop/{pod}/app by ")),
        "{header:?}"
    );
    assert_eq!(header.metadata.namespace.as_deref(), Some("shop"));
    assert_eq!(header.metadata.pod.as_deref(), Some(pod.as_str()));
    assert!(header.metadata.node.is_some() && header.metadata.image.is_some());
    // asciicast v2 has no exit event: the exit is a marker.
    assert_eq!(kinds.last(), Some(&EventKind::Marker("exit 0".into())));

    // asciinema itself replays exactly what the session printed.
    assert_eq!(asciinema_cat(&dir, &cast), printed);
    // Without a terminal (setsid), as the recordings crate's tests run it.
    let play = format!(
        "{} play -s 100 '{}'",
        shell_line(&asciinema(&dir)),
        cast.display()
    );
    let played = Command::new("setsid")
        .args(["--wait", "sh", "-c", &play])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(played.status.code(), Some(0), "{}", text(&played.stderr));

    // Listed, fetched and replayed through the agent.
    let session = cast.file_stem().unwrap().to_string_lossy().into_owned();
    let listed = run(
        &mut cluster.debug(agent.port, &["recordings", "list", &pod, "-o", "json"]),
        b"",
    );
    assert_eq!(listed.status.code(), Some(0), "{}", text(&listed.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let item = &listed["items"][0];
    assert_eq!(item["session"], session.as_str());
    assert_eq!(item["pod"], pod.as_str());
    assert_eq!(item["container"], "app");
    assert_eq!(item["incomplete"], false);
    assert_eq!(item["live"], false);
    assert_eq!(item["size"], std::fs::metadata(&cast).unwrap().len());
    let table = run(
        &mut cluster.debug(agent.port, &["recordings", "list", "-o", "wide"]),
        b"",
    );
    let table = text(&table.stdout);
    assert!(
        table.starts_with("SESSION   POD   ") || table.starts_with("SESSION"),
        "{table}"
    );
    assert!(
        table.contains(&session) && table.contains("Complete"),
        "{table}"
    );

    let fetched = dir.join("fetched.cast");
    let got = run(
        &mut cluster.debug(
            agent.port,
            &[
                "recordings",
                "get",
                &session,
                "-o",
                fetched.to_str().unwrap(),
            ],
        ),
        b"",
    );
    assert_eq!(got.status.code(), Some(0), "{}", text(&got.stderr));
    assert_eq!(
        std::fs::read(&fetched).unwrap(),
        std::fs::read(&cast).unwrap()
    );
    let to_stdout = run(
        &mut cluster.debug(agent.port, &["recordings", "get", &session]),
        b"",
    );
    assert_eq!(to_stdout.stdout, std::fs::read(&cast).unwrap());

    for what in [session.as_str(), fetched.to_str().unwrap()] {
        let replayed = run(&mut cluster.debug(agent.port, &["replay", what]), b"");
        assert_eq!(
            replayed.status.code(),
            Some(0),
            "{}",
            text(&replayed.stderr)
        );
        assert_eq!(text(&replayed.stdout), printed, "replay {what}");
    }
    let missing = run(
        &mut cluster.debug(agent.port, &["recordings", "get", "0123abc"]),
        b"",
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing.stderr).contains("no recording of session 0123abc"),
        "{}",
        text(&missing.stderr)
    );
}

#[test]
fn a_recorded_session_replays_what_it_printed_on_docker() {
    a_recorded_session_replays_what_it_printed(&DockerEngine);
}

#[test]
fn a_recorded_session_replays_what_it_printed_on_containerd() {
    a_recorded_session_replays_what_it_printed(&ContainerdEngine);
}

#[test]
fn optional_records_only_with_record_and_off_refuses_record() {
    let dir = scratch("modes");
    let target = DockerEngine.target("exec sleep 3600");
    let cluster = pod_of("modes", target.as_ref());

    let optional = DockerEngine.agent(&recordings(&dir.join("optional"), "optional", ""));
    let quiet = run(
        &mut cluster.debug(optional.port, &["modes", "--", "echo", "unrecorded"]),
        b"",
    );
    assert_eq!(quiet.status.code(), Some(0), "{}", text(&quiet.stderr));
    assert!(cast_files(&dir.join("optional")).is_empty());
    let asked = run(
        &mut cluster.debug(
            optional.port,
            &["modes", "--record", "--", "echo", "recorded"],
        ),
        b"",
    );
    assert_eq!(asked.status.code(), Some(0), "{}", text(&asked.stderr));
    let (_, kinds, _) = events(&the_recording(&dir.join("optional")));
    assert_eq!(kinds[0], EventKind::Output("recorded\n".into()));

    let off = DockerEngine.agent("");
    let refused = run(
        &mut cluster.debug(off.port, &["modes", "--record", "--", "true"]),
        b"",
    );
    assert_eq!(refused.status.code(), Some(1));
    let err = text(&refused.stderr);
    assert!(
        err.contains("does not record sessions") && err.contains("--record-local"),
        "{err}"
    );
    assert!(target.leftovers().is_empty(), "nothing was created");
}

#[test]
fn always_with_a_directory_that_cannot_be_written_refuses_before_creating_anything() {
    let dir = scratch("unwritable");
    // A regular file where a directory should be: not even root can create under it.
    let blocker = dir.join("not-a-directory");
    std::fs::write(&blocker, b"").unwrap();
    let records = blocker.join("recordings");
    let target = DockerEngine.target("exec sleep 3600");
    let agent = DockerEngine.agent(&recordings(&records, "always", ""));
    let cluster = pod_of("unwritable", target.as_ref());
    let out = run(
        &mut cluster.debug(agent.port, &["unwritable", "--", "true"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&records.display().to_string()) && err.contains("recordings.mode: always"),
        "{err}"
    );
    assert!(
        target.leftovers().is_empty(),
        "no debug container was created"
    );
}

/// Mounts a tmpfs of `size` at `dir`; unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount: {}", text(&out.stderr));
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_or_max_bytes_ends_the_recording_not_the_session() {
    let dir = scratch("full");
    let target = DockerEngine.target("exec sleep 3600");
    let cluster = pod_of("full", target.as_ref());
    let lines = 100_000;
    let script = format!("seq 1 {lines}; echo still-here");

    // A disk of 64 KiB, and a limit of 20,000 bytes.
    let disk = dir.join("disk");
    let _tmpfs = Tmpfs::mount(&disk, "64k");
    let limited = dir.join("limited");
    for (records, more, why) in [
        (disk.clone(), "", "incomplete: "),
        (
            limited.clone(),
            "  maxBytes: 20000\n",
            "incomplete: it reached maxBytes (20000 bytes)",
        ),
    ] {
        let agent = DockerEngine.agent(&recordings(&records, "always", more));
        let out = run(
            &mut cluster.debug(agent.port, &["full", "--", "sh", "-c", &script]),
            b"",
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let printed = text(&out.stdout);
        assert_eq!(
            printed.lines().count(),
            lines + 1,
            "the session got everything"
        );
        assert!(printed.ends_with("still-here\n"));

        let cast = the_recording(&records);
        let (_, kinds, truncated) = events(&cast);
        assert!(!truncated, "readable to its last line");
        let text_recorded: String = kinds
            .iter()
            .filter_map(|k| match k {
                EventKind::Output(data) => Some(String::from_utf8_lossy(data).into_owned()),
                _ => None,
            })
            .collect();
        assert!(text_recorded.starts_with("1\n2\n3\n"));
        assert!(
            printed.starts_with(&text_recorded),
            "a prefix of the session"
        );
        assert!(text_recorded.len() < printed.len());
        match kinds.last() {
            Some(EventKind::Marker(label)) => assert!(label.starts_with(why), "{label}"),
            other => panic!("ends with {other:?}"),
        }
        let listed = run(
            &mut cluster.debug(agent.port, &["recordings", "list", "full", "-o", "json"]),
            b"",
        );
        let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
        assert_eq!(listed["items"][0]["incomplete"], true, "{listed}");
        assert!(agent.log().contains("recording stopped"), "{}", agent.log());
    }
}

#[test]
fn a_terminal_session_records_its_first_size_and_every_resize_but_no_keystrokes() {
    let dir = scratch("tty");
    let records = dir.join("recordings");
    let target = DockerEngine.target("exec sleep 3600");
    let agent = DockerEngine.agent(&recordings(&records, "always", ""));
    let cluster = pod_of("tty", target.as_ref());
    let tmux = Tmux::new("rec-tty");
    let command = shell_line(&cluster.debug(agent.port, &["tty", "-it", "--", "sh"]));
    tmux.start("s", 100, 30, &format!("{command}; echo EXIT=$?; sleep 30"));
    tmux.wait_for("s", "/ #");
    tmux.line("s", "echo secret-$((1+1))");
    tmux.wait_for("s", "secret-2");
    // Each new size reaches the container's terminal a moment after the window's.
    tmux.resize("s", 120, 40);
    tmux.retype_until("s", "stty size", "40 120");
    tmux.resize("s", 90, 25);
    tmux.retype_until("s", "stty size", "25 90");
    tmux.line("s", "exit");
    tmux.wait_for("s", "EXIT=0");

    let (header, kinds, _) = events(&the_recording(&records));
    assert_eq!((header.cols, header.rows), (100, 30));
    assert_eq!(header.env.get("TERM").map(String::as_str), Some("xterm"));
    let resizes: Vec<&EventKind> = kinds
        .iter()
        .filter(|k| matches!(k, EventKind::Resize { .. }))
        .collect();
    assert_eq!(
        resizes,
        [
            &EventKind::Resize {
                cols: 120,
                rows: 40
            },
            &EventKind::Resize { cols: 90, rows: 25 }
        ]
    );
    assert!(
        !kinds.iter().any(|k| matches!(k, EventKind::Input(_))),
        "input: false records no keystrokes"
    );
}

fn a_watcher_sees_the_screen_then_live_output_and_cannot_type(engine: &dyn Engine) {
    let pod = format!("watched-{}", engine.name());
    let target = engine.target("exec sleep 3600");
    let agent = engine.agent("");
    let cluster = pod_of(&pod, target.as_ref());
    let tmux = Tmux::new("watch");
    let command = shell_line(&cluster.debug(agent.port, &[&pod, "-it", "--", "sh"]));
    tmux.start(
        "user",
        100,
        30,
        &format!("{command}; echo EXIT=$?; sleep 30"),
    );
    tmux.wait_for("user", "/ #");
    tmux.line("user", "echo before-$((6*7))");
    tmux.wait_for("user", "before-42");

    // The session, as `list` shows it.
    let listed = run(
        &mut cluster.debug(agent.port, &["list", &pod, "-o", "json"]),
        b"",
    );
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let name = listed["items"][0]["name"].as_str().unwrap().to_owned();
    let session = listed["items"][0]["session"].as_str().unwrap().to_owned();
    assert_eq!(listed["items"][0]["watchers"], 0);

    // A watcher joining late sees the current screen at once...
    let watch = shell_line(&cluster.debug(agent.port, &["watch", &pod, &name]));
    tmux.start(
        "watcher",
        100,
        30,
        &format!("{watch}; echo WATCH=$?; sleep 30"),
    );
    tmux.wait_for("watcher", "before-42");
    let watching = run(
        &mut cluster.debug(agent.port, &["list", &pod, "-o", "json"]),
        b"",
    );
    let watching: serde_json::Value = serde_json::from_slice(&watching.stdout).unwrap();
    assert_eq!(watching["items"][0]["watchers"], 1);
    let wide = run(
        &mut cluster.debug(agent.port, &["list", &pod, "-o", "wide"]),
        b"",
    );
    assert!(
        text(&wide.stdout).contains("WATCHERS"),
        "{}",
        text(&wide.stdout)
    );

    // ...then what follows.
    tmux.line("user", "echo after-$((6*8))");
    tmux.wait_for("watcher", "after-48");
    // A flood too (4 MiB of text), to its end.
    tmux.line(
        "user",
        "yes 'a line of text, over and over, to flood the screen' | head -c 4194304; echo; echo flood-$((9*9))",
    );
    tmux.wait_for("user", "flood-81");
    let watched = tmux.wait_for("watcher", "flood-81");
    assert!(!watched.contains("broke off"), "{watched}");

    // What the watcher types goes nowhere: not through the plugin...
    tmux.line("watcher", "echo typed-by-watcher");
    // ...nor straight to the agent's endpoint.
    let url = format!(
        "ws://{}/api/v1/watch?session={session}&podNamespace=shop&podName={pod}",
        agent.address()
    );
    let mut request =
        kdbg_relay::tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "v3.asciicast".parse().unwrap());
    let stream = std::net::TcpStream::connect(agent.address()).unwrap();
    let (mut ws, _) = kdbg_relay::tungstenite::client(request, stream).unwrap();
    let header = ws.read().unwrap();
    assert!(
        header.to_text().unwrap().contains("\"version\":3"),
        "{header:?}"
    );
    ws.send(kdbg_relay::tungstenite::Message::text(
        "echo typed-over-ws\r",
    ))
    .unwrap();
    ws.send(kdbg_relay::tungstenite::Message::binary(
        b"\x00echo typed-over-ws-stdin\r".to_vec(),
    ))
    .unwrap();
    // The session goes on, and shows only its user's typing.
    tmux.line("user", "echo user-still-$((7*7))");
    let screen = tmux.wait_for("user", "user-still-49");
    // Nothing marks input dropped, so: the watchers typed before the user did, and the
    // user's line has come through the agent to the shell and back to the screen; had the
    // agent passed the watchers' keys on, the same way would have brought them by now, and
    // 500 ms more leaves room for a loaded machine.
    std::thread::sleep(Duration::from_millis(500));
    let screen = screen + &tmux.screen("user");
    assert!(
        !screen.contains("typed-by-watcher") && !screen.contains("typed-over-ws"),
        "{screen}"
    );
    drop(ws);

    // The watcher leaves with q; the session ends for its user; a watcher of a session gone
    // is told.
    tmux.keys("watcher", &["q"]);
    tmux.wait_for("watcher", "WATCH=0");
    tmux.line("user", "exit");
    tmux.wait_for("user", "EXIT=0");
    let mut gone = run(
        &mut cluster.debug(agent.port, &["watch", &pod, &session]),
        b"",
    );
    // The agent forgets the session just after telling its client.
    for _ in 0..50 {
        if gone.status.code() == Some(1) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        gone = run(
            &mut cluster.debug(agent.port, &["watch", &pod, &session]),
            b"",
        );
    }
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        text(&gone.stderr).contains("no running session"),
        "{}",
        text(&gone.stderr)
    );
}

#[test]
fn a_watcher_sees_the_screen_then_live_output_and_cannot_type_on_docker() {
    a_watcher_sees_the_screen_then_live_output_and_cannot_type(&DockerEngine);
}

#[test]
fn a_watcher_sees_the_screen_then_live_output_and_cannot_type_on_containerd() {
    a_watcher_sees_the_screen_then_live_output_and_cannot_type(&ContainerdEngine);
}

#[test]
fn record_local_keeps_a_copy_on_the_users_machine() {
    let dir = scratch("local-copy");
    let target = support::Target::start("exec sleep 3600");
    let file = dir.join("mine.cast");
    let out = run(
        support::plugin()
            .args(["local", &target.reference(), "--image"])
            .arg(support::image())
            .arg("--record-local")
            .arg(&file)
            .args(["--", "sh", "-c", SCRIPT]),
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!("Recording saved to {}", file.display())),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(asciinema_cat(&dir, &file), text(&out.stdout));
    // An existing file is not overwritten.
    let again = run(
        support::plugin()
            .args(["local", &target.reference(), "--image"])
            .arg(support::image())
            .arg("--record-local")
            .arg(&file)
            .args(["--", "true"]),
        b"",
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("must not exist yet"),
        "{}",
        text(&again.stderr)
    );
}

#[test]
fn retention_runs_when_the_agent_starts() {
    let dir = scratch("retention");
    let records = dir.join("recordings");
    let old = records.join("shop/gone/0ld5e55i0n.cast");
    std::fs::create_dir_all(old.parent().unwrap()).unwrap();
    std::fs::write(&old, "{\"version\":2,\"width\":80,\"height\":24}\n").unwrap();
    let file = std::fs::File::options().write(true).open(&old).unwrap();
    file.set_modified(std::time::SystemTime::now() - Duration::from_secs(2 * 3600))
        .unwrap();
    let agent = DockerEngine.agent(&recordings(
        &records,
        "optional",
        "  retention: {maxAge: \"1h\", maxTotalBytes: 1000000}\n",
    ));
    support::eventually(Duration::from_secs(10), "the old recording to go", || {
        !old.exists()
    });
    assert!(
        agent
            .log()
            .contains("older than recordings.retention.maxAge"),
        "{}",
        agent.log()
    );
}

/// A terminal session whose client says its size with the request (as kubectl-debug does)
/// and sends no resize message: the recording's header has that size, from the start (it had
/// 80x24, then a resize event, when the first resize came after the header).
fn a_recording_starts_at_the_size_the_client_said(engine: &dyn Engine) {
    let pod = format!("sized-{}", engine.name());
    let dir = scratch(&pod);
    let records = dir.join("recordings");
    let target = engine.target("exec sleep 3600");
    let agent = engine.agent(&recordings(&records, "always", "  format: v2\n"));
    let query = format!(
        "target={}&stdin=1&stdout=1&tty=1&cols=123&rows=45&command=sh&command=-c&command=sleep%201%3B%20stty%20size",
        target.pod_reference()
    );
    support::ws::runtime().block_on(async {
        let (mut ws, _) = support::ws::session(&agent.address(), &query, None).await;
        // The process has the size without a resize message.
        support::ws::expect_output(&mut ws, "45 123").await;
    });
    let cast = the_recording(&records);
    let (header, kinds, _) = events(&cast);
    assert_eq!((header.cols, header.rows), (123, 45), "{header:?}");
    assert!(
        !kinds.iter().any(|k| matches!(k, EventKind::Resize { .. })),
        "{kinds:?}"
    );
    support::assert_removed_soon(|| target.leftovers());
}

#[test]
fn a_recording_starts_at_the_size_the_client_said_on_docker() {
    a_recording_starts_at_the_size_the_client_said(&DockerEngine);
}

#[test]
fn a_recording_starts_at_the_size_the_client_said_on_containerd() {
    a_recording_starts_at_the_size_the_client_said(&ContainerdEngine);
}
