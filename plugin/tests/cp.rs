//! `kubectl-debug cp` end to end, on both engines, through the API stand-in: files and
//! directories both ways with their modes and times, symlinks copied as symlinks (never
//! followed out of the target's root), names with newlines and non-UTF-8 bytes, `-` as a tar
//! stream, many small files, a missing path, names that would leave the destination, a
//! target with no `tar`, a target that dies in the middle of a copy, and one out of reach.

use kdbg_testkit as support;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::apiserver::{Cluster, running_pod};
use support::engine::{ContainerdEngine, DockerEngine, Engine};
use support::{CtdTarget, Target, ctr, docker, run, text};

/// 2001-01-01T00:00:00Z and 2003-03-03T03:03:03Z.
const OLD: i64 = 978_307_200;
const OLDER_UP: i64 = 1_046_660_583;

/// What the target holds: files with a mode and a time, a subdirectory, a symlink out of its
/// root and one inside it, names with a newline and a non-UTF-8 byte, 10,000 small files, a
/// large sparse file; and no `tar`.
const FIXTURE: &str = r#"set -e
mkdir -p /data/dir/sub /data/many
echo hello > /data/dir/file
chmod 640 /data/dir/file
touch -d '2001-01-01 00:00:00' /data/dir/file
echo deeper > /data/dir/sub/inner
ln -s /etc/passwd /data/dir/abs
ln -s ../file /data/dir/sub/rel
printf nl > "/data/dir/new
line"
printf raw > "/data/dir/$(printf 'raw\377')"
touch -d '2001-01-01 00:00:00' /data/dir/sub
ln -s /.kubectl-debug/init /data/init-link
i=0; while [ $i -lt 10000 ]; do echo $i > /data/many/f$i; i=$((i+1)); done
truncate -s 3G /data/big
rm -f "$(which tar)"
echo ready > /ready
exec sleep 3600
"#;

/// A target of one engine.
enum Started {
    Docker(Target),
    Containerd(CtdTarget),
}

impl Started {
    fn start(engine: &dyn Engine, script: &str) -> Started {
        match engine.name() {
            "docker" => Started::Docker(Target::start(script)),
            _ => Started::Containerd(CtdTarget::start(script)),
        }
    }

    fn pod_reference(&self) -> String {
        match self {
            Started::Docker(t) => t.pod_reference(),
            Started::Containerd(t) => t.reference(),
        }
    }

    /// `sh -c script` in the target itself (which must succeed); its output.
    fn exec(&self, script: &str) -> Output {
        match self {
            Started::Docker(t) => docker(&["exec", &t.name, "sh", "-c", script]),
            Started::Containerd(t) => {
                static N: AtomicUsize = AtomicUsize::new(0);
                let exec_id = format!("cp-probe-{}", N.fetch_add(1, Ordering::Relaxed));
                ctr(
                    "k8s.io",
                    &[
                        "task",
                        "exec",
                        "--exec-id",
                        &exec_id,
                        &t.id,
                        "sh",
                        "-c",
                        script,
                    ],
                )
            }
        }
    }

    /// The same, checked to succeed: its stdout. (`ctr task exec` now and then loses the
    /// output of a quick process: an empty one is asked again.)
    fn sh(&self, script: &str) -> String {
        for _ in 0..5 {
            let out = self.exec(script);
            assert!(out.status.success(), "{script}: {}", text(&out.stderr));
            if !out.stdout.is_empty() {
                return text(&out.stdout);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        String::new()
    }

    fn kill(&self) {
        match self {
            Started::Docker(t) => {
                docker(&["kill", &t.name]);
            }
            Started::Containerd(t) => t.stop(),
        }
    }
}

/// A local scratch directory, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("kdbg-cp-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn cp(cluster: &Cluster, port: u16, args: &[&str], stdin: &[u8]) -> Output {
    let mut all = vec!["cp"];
    all.extend_from_slice(args);
    run(&mut cluster.debug(port, &all), stdin)
}

fn ok(out: &Output, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn mtime(path: &Path) -> i64 {
    std::fs::symlink_metadata(path).unwrap().mtime()
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

fn copies_go_both_ways(engine: &dyn Engine) {
    let pod = format!("cp-{}", engine.name());
    let target = Started::start(engine, FIXTURE);
    support::eventually(Duration::from_secs(30), "the target's files", || {
        target.sh("cat /ready 2>/dev/null || true") == "ready\n"
    });
    // Like a distroless image: no tar in the target.
    assert_eq!(target.sh("which tar || echo none"), "none\n");
    let agent = engine.agent("");
    let cluster = Cluster::new("shop");
    cluster.api.add_pod(running_pod(
        "shop",
        &pod,
        &[("app", &target.pod_reference(), true)],
    ));
    let port = agent.port;
    let here = Scratch::new(engine.name());
    let remote = |path: &str| format!("{pod}:{path}");

    // A file, to a new name: its bytes, mode and time.
    let out = cp(
        &cluster,
        port,
        &[&remote("/data/dir/file"), &here.arg("file")],
        b"",
    );
    ok(&out, "a file down");
    assert_eq!(std::fs::read(here.path("file")).unwrap(), b"hello\n");
    assert_eq!(mode(&here.path("file")), 0o640);
    assert_eq!(mtime(&here.path("file")), OLD);

    // Into an existing directory, as cp does.
    std::fs::create_dir(here.path("into")).unwrap();
    let out = cp(
        &cluster,
        port,
        &[&remote("/data/dir/file"), &here.arg("into")],
        b"",
    );
    ok(&out, "a file into a directory");
    assert_eq!(std::fs::read(here.path("into/file")).unwrap(), b"hello\n");

    // A directory: its subdirectory, symlinks as symlinks (the absolute one is not
    // followed), odd names.
    let out = cp(
        &cluster,
        port,
        &[&remote("/data/dir"), &here.arg("dir")],
        b"",
    );
    ok(&out, "a directory down");
    let dir = here.path("dir");
    assert_eq!(std::fs::read(dir.join("sub/inner")).unwrap(), b"deeper\n");
    assert_eq!(
        std::fs::read_link(dir.join("abs")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(
        std::fs::read_link(dir.join("sub/rel")).unwrap(),
        Path::new("../file")
    );
    assert_eq!(std::fs::read(dir.join("new\nline")).unwrap(), b"nl");
    let raw = dir.join(std::ffi::OsStr::from_bytes(b"raw\xff"));
    assert_eq!(std::fs::read(raw).unwrap(), b"raw");
    assert_eq!(mtime(&dir.join("sub")), OLD);
    assert_eq!(mode(&dir.join("file")), 0o640);

    // `-`: a tar stream on stdout, which tar reads.
    let out = cp(&cluster, port, &[&remote("/data/dir"), "-"], b"");
    ok(&out, "a directory to stdout");
    let listed = text(&tar(&["-t"], &out.stdout));
    for name in ["dir/", "dir/file", "dir/sub/inner", "dir/abs"] {
        assert!(listed.lines().any(|l| l == name), "{name} not in {listed}");
    }

    // Many small files.
    let out = cp(
        &cluster,
        port,
        &[&remote("/data/many"), &here.arg("many")],
        b"",
    );
    ok(&out, "many files down");
    assert_eq!(
        std::fs::read_dir(here.path("many")).unwrap().count(),
        10_000
    );
    assert_eq!(std::fs::read(here.path("many/f499")).unwrap(), b"499\n");

    // A missing path: exit 1, the message names it, nothing is left here.
    let out = cp(&cluster, port, &[&remote("/nope"), &here.arg("nope")], b"");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!("error: {pod}:/nope: No such file or directory")),
        "{}",
        text(&out.stderr)
    );
    assert!(!here.path("nope").exists());
    // A missing local source: refused before anything starts.
    let out = cp(
        &cluster,
        port,
        &[&here.arg("absent"), &remote("/tmp/x")],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("absent: No such file or directory"),
        "{}",
        text(&out.stderr)
    );

    // A symlink in the target is resolved in the target's root, never the debug container's
    // (where /.kubectl-debug/init exists), and `..` stops at the target's root.
    let out = cp(
        &cluster,
        port,
        &[&remote("/data/init-link/"), &here.arg("init")],
        b"",
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(!here.path("init").exists());
    let out = cp(
        &cluster,
        port,
        &[&remote("/data/../../../../ready"), &here.arg("ready")],
        b"",
    );
    ok(&out, "a path with ..");
    assert_eq!(std::fs::read(here.path("ready")).unwrap(), b"ready\n");

    // Up: a file with its mode and time, a directory with a subdirectory, a symlink, odd
    // names.
    let up = here.path("up");
    std::fs::create_dir_all(up.join("sub")).unwrap();
    std::fs::write(up.join("file"), b"up\n").unwrap();
    std::fs::set_permissions(up.join("file"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let when = std::time::UNIX_EPOCH + Duration::from_secs(OLDER_UP as u64);
    std::fs::File::options()
        .write(true)
        .open(up.join("file"))
        .unwrap()
        .set_modified(when)
        .unwrap();
    std::fs::write(up.join("sub/new\nline"), b"x").unwrap();
    std::fs::write(up.join(std::ffi::OsStr::from_bytes(b"raw\xfe")), b"y").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", up.join("abs")).unwrap();
    let out = cp(
        &cluster,
        port,
        &[&here.arg("up/file"), &remote("/tmp/up-file")],
        b"",
    );
    ok(&out, "a file up");
    assert_eq!(
        target.sh("cat /tmp/up-file; stat -c '%a %Y' /tmp/up-file"),
        format!("up\n600 {OLDER_UP}\n")
    );
    let out = cp(&cluster, port, &[&here.arg("up"), &remote("/tmp/up")], b"");
    ok(&out, "a directory up");
    assert_eq!(
        target.sh(
            "cat /tmp/up/file; readlink /tmp/up/abs; cat '/tmp/up/sub/new\nline'; cat /tmp/up/raw*"
        ),
        "up\n/etc/passwd\nxy"
    );
    // A destination whose parent is missing: exit 1, named.
    let out = cp(
        &cluster,
        port,
        &[&here.arg("up"), &remote("/no/such/up")],
        b"",
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!(
            "error: {pod}:/no/such/up: No such file or directory"
        )),
        "{}",
        text(&out.stderr)
    );
    // Into an existing directory.
    let out = cp(
        &cluster,
        port,
        &[&here.arg("up/file"), &remote("/tmp")],
        b"",
    );
    ok(&out, "a file up into a directory");
    assert_eq!(target.sh("cat /tmp/file"), "up\n");
    // Many small files up.
    let out = cp(
        &cluster,
        port,
        &[&here.arg("many"), &remote("/tmp/many")],
        b"",
    );
    ok(&out, "many files up");
    assert_eq!(target.sh("ls /tmp/many | wc -l").trim(), "10000");

    // `-` on stdin: a tar stream unpacked into a directory; one whose names leave it is
    // refused.
    let stream = tar(&["-C", here.0.to_str().unwrap(), "-c", "file"], b"");
    let out = cp(&cluster, port, &["-", &remote("/tmp")], &stream);
    ok(&out, "a stream up");
    let escaping = escaping_tar(&here);
    let out = cp(&cluster, port, &["-", &remote("/tmp/many")], &escaping);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("../evil: refused"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(target.sh("test -e /tmp/evil || echo absent"), "absent\n");

    // The target dies in the middle of a copy: a clear error, the partial file removed.
    let mut copying = cluster
        .debug(port, &["cp", &remote("/data/big"), &here.arg("big")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    support::eventually(Duration::from_secs(30), "the copy to start", || {
        std::fs::metadata(here.path("big")).is_ok_and(|m| m.len() > 10 << 20)
    });
    target.kill();
    let out = wait(copying.id(), &mut copying);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("error: "), "{stderr}");
    assert!(stderr.contains("partial file"), "{stderr}");
    assert!(!here.path("big").exists(), "{stderr}");
}

/// Waits for a spawned copy (a minute at most).
fn wait(pid: u32, child: &mut std::process::Child) -> Output {
    let finished = support::within(Duration::from_secs(60), || {
        child.try_wait().unwrap().is_some()
    });
    if !finished {
        let _ = Command::new("kill").arg(pid.to_string()).status();
    }
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    let status = child.wait().unwrap();
    assert!(finished, "the copy did not end: {stderr}");
    Output {
        status,
        stdout: Vec::new(),
        stderr: stderr.into_bytes(),
    }
}

/// `tar ARGS -f -` with `stdin`; its stdout (a listing, or an archive).
fn tar(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let mut child = Command::new("tar")
        .args(args)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), stdin).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// A tar whose one entry is `../evil` (GNU tar keeps it with -P).
fn escaping_tar(here: &Scratch) -> Vec<u8> {
    std::fs::create_dir_all(here.path("deep")).unwrap();
    std::fs::write(here.path("evil"), b"evil").unwrap();
    let out = Command::new("tar")
        .current_dir(here.path("deep"))
        .args(["-P", "-c", "../evil"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    out.stdout
}

#[test]
fn cp_on_docker() {
    copies_go_both_ways(&DockerEngine);
}

#[test]
fn cp_on_containerd() {
    copies_go_both_ways(&ContainerdEngine);
}

/// On a terminal, a copy that lasts shows its progress on stderr, and clears it at the end.
#[test]
fn a_long_copy_shows_its_progress_on_a_terminal() {
    let target = Started::start(
        &DockerEngine,
        "truncate -s 256M /big && echo ready > /ready && exec sleep 3600",
    );
    support::eventually(Duration::from_secs(30), "the target's file", || {
        target.sh("cat /ready 2>/dev/null || true") == "ready\n"
    });
    let agent = DockerEngine.agent("");
    let cluster = Cluster::new("shop");
    cluster.api.add_pod(running_pod(
        "shop",
        "cp-progress",
        &[("app", &target.pod_reference(), true)],
    ));
    let tmux = support::tmux::Tmux::new("cp-progress");
    let command =
        support::tmux::shell_line(&cluster.debug(agent.port, &["cp", "cp-progress:/big", "-"]));
    // Its stdout is a pipe whose reader waits: the copy lasts, stderr is the terminal.
    tmux.start(
        "s",
        100,
        10,
        &format!("{command} | (sleep 3; cat >/dev/null); echo EXIT=$?; sleep 30"),
    );
    // The pod's end says the size first: a bar.
    tmux.wait_for("s", " of 256.0 MiB, ");
    let screen = tmux.wait_for("s", "EXIT=0");
    assert!(!screen.contains(" of 256.0 MiB"), "{screen}");
}

#[test]
fn copies_into_a_full_disk_or_a_read_only_root_say_so_and_leave_nothing() {
    // A read-only root with a 1 MiB file system in it, and 4 MiB to copy into it.
    let target = Target::start_with(
        &["--read-only", "--tmpfs", "/small:size=1m"],
        "echo ready > /small/ready; exec sleep 3600",
    );
    let started = Started::Docker(target);
    support::eventually(Duration::from_secs(30), "the target", || {
        started.sh("cat /small/ready 2>/dev/null || true") == "ready\n"
    });
    started.sh("rm /small/ready; echo ok");
    let agent = DockerEngine.agent("");
    let cluster = Cluster::new("shop");
    cluster.api.add_pod(running_pod(
        "shop",
        "full",
        &[("app", &started.pod_reference(), true)],
    ));
    let here = Scratch::new("full");
    std::fs::write(here.path("big"), vec![7u8; 4 << 20]).unwrap();
    let out = cp(
        &cluster,
        agent.port,
        &[&here.arg("big"), "full:/small/big"],
        b"",
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("full:/small/big") && stderr.contains("No space left on device"),
        "{stderr}"
    );
    // Nothing half-written stays behind, and what was there is untouched.
    assert_eq!(started.sh("ls -A /small; echo end"), "end\n");
    // Where nothing may be written: the file system says why, named.
    let out = cp(
        &cluster,
        agent.port,
        &[&here.arg("big"), "full:/etc/big"],
        b"",
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("full:/etc/big") && stderr.contains("Read-only file system"),
        "{stderr}"
    );
}

#[test]
fn a_1_gib_file_comes_down_whole() {
    let target = Target::start("truncate -s 1G /gig && echo ready > /ready && exec sleep 3600");
    let started = Started::Docker(target);
    support::eventually(Duration::from_secs(30), "the target", || {
        started.sh("cat /ready 2>/dev/null || true") == "ready\n"
    });
    let agent = DockerEngine.agent("");
    let cluster = Cluster::new("shop");
    cluster.api.add_pod(running_pod(
        "shop",
        "gig",
        &[("app", &started.pod_reference(), true)],
    ));
    let here = Scratch::new("gig");
    let out = cp(&cluster, agent.port, &["gig:/gig", &here.arg("gig")], b"");
    ok(&out, "1 GiB down");
    let mut file = std::fs::File::open(here.path("gig")).unwrap();
    let (mut total, mut buf) = (0u64, vec![0u8; 1 << 20]);
    loop {
        use std::io::Read as _;
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(buf[..n].iter().all(|b| *b == 0), "not the target's bytes");
        total += n as u64;
    }
    assert_eq!(total, 1 << 30);
}

/// A target running as another user, and a debug container without CAP_SYS_PTRACE (profile
/// restricted): the kernel keeps the target's files from it. Either way the copy says so,
/// names the path and the way out, exits 1 and leaves nothing here; profile general copies.
fn a_permission_error_says_so(engine: &dyn Engine) {
    let target = Started::start(
        engine,
        "echo 'app:x:1000:1000::/tmp:/bin/sh' >> /etc/passwd; exec su -s /bin/sh app -c 'exec sleep 3600'",
    );
    support::eventually(Duration::from_secs(30), "the target as uid 1000", || {
        target.sh("stat -c %u /proc/1 2>/dev/null || true") == "1000\n"
    });
    let agent = engine.agent("");
    let cluster = Cluster::new("shop");
    cluster.api.add_pod(running_pod(
        "shop",
        "locked",
        &[("app", &target.pod_reference(), true)],
    ));
    let here = Scratch::new(&format!("locked-{}", engine.name()));
    let restricted = ["--profile", "restricted"];

    let got = here.arg("passwd");
    let out = cp(
        &cluster,
        agent.port,
        &[&restricted[..], &["locked:/etc/passwd", &got]].concat(),
        b"",
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("locked:/etc/passwd")
            && stderr.contains("Permission denied")
            && stderr.contains("profile general"),
        "{stderr}"
    );
    assert!(!here.path("passwd").exists(), "{stderr}");

    std::fs::write(here.path("note"), b"note\n").unwrap();
    let out = cp(
        &cluster,
        agent.port,
        &[&restricted[..], &[&here.arg("note"), "locked:/tmp/note"]].concat(),
        b"",
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("locked:/tmp/note")
            && stderr.contains("Permission denied")
            && stderr.contains("profile general"),
        "{stderr}"
    );
    assert_eq!(target.sh("ls -A /tmp; echo end"), "end\n");

    // With CAP_SYS_PTRACE the same file comes down.
    let out = cp(&cluster, agent.port, &["locked:/etc/passwd", &got], b"");
    ok(&out, "with profile general");
    assert!(
        std::fs::read_to_string(&got)
            .unwrap()
            .contains("app:x:1000"),
        "not the target's passwd"
    );
}

#[test]
fn a_permission_error_says_so_on_docker() {
    a_permission_error_says_so(&DockerEngine);
}

#[test]
fn a_permission_error_says_so_on_containerd() {
    a_permission_error_says_so(&ContainerdEngine);
}
