//! `kubectl-debug cp` (issue 23) against the baselines, in the same run: `docker cp` (the
//! engine copies straight from the container's filesystem, no session) and `kubectl cp`'s
//! path, a `tar` at each end of a session (`tar -c | kubectl-debug POD -i -- tar -x` into
//! `/proc/1/root`, and back), which needs `tar` in the debug image. Each goes the way users go:
//! the plugin through the Kubernetes API stand-in and a port-forward to the node's agent, a
//! separate agent process of this tree, on the test Docker engine; the data into a local
//! directory (the page cache), a 256 MiB file and a directory of 10,000 files of 1 KiB, each
//! way; and again with the agent reached directly (`--connect direct`, no port-forward). Where
//! the time goes: the same command's cost with nothing to copy (a session that runs `true`),
//! and, for the large file, the engine's own exec carrying the same bytes (`docker exec -i
//! ... cat`), the floor of any copy whose bytes cross an exec session's streams.
//!
//! Writes `target/kdbg-bench/cp.json` for `report` (run it through `benches/cp`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use kdbg_testkit::apiserver::{Cluster, running_pod};
use kdbg_testkit::engine::{DockerEngine, Engine};
use kdbg_testkit::{Agent, text};

const RUNS: usize = 3;
const BIG_MIB: usize = 256;
const SMALL_FILES: usize = 10_000;

fn main() {
    let cluster = Cluster::new("bench");
    let target = DockerEngine.pod_target("bench", "web", false, "exec sleep 3600");
    cluster.api.add_pod(running_pod(
        "bench",
        "web",
        &[("app", &target.pod_reference(), true)],
    ));
    let container = container_name(&target.pod_reference());
    let agent = Agent::start();
    let dir = std::env::temp_dir().join(format!("kdbg-bench-cp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let source = dir.join("source");
    std::fs::create_dir_all(source.join("small")).unwrap();
    let chunk: Vec<u8> = (0..1024 * 1024).map(|i| (i * 7 + i / 4096) as u8).collect();
    let big: Vec<u8> = chunk.repeat(BIG_MIB);
    std::fs::write(source.join("big"), &big).unwrap();
    for i in 0..SMALL_FILES {
        std::fs::write(
            source.join("small").join(format!("f{i:05}")),
            &chunk[..1024],
        )
        .unwrap();
    }
    let plugin = |args: &[&str]| {
        let mut cmd = cluster.debug(agent.port, &["-n", "bench"]);
        cmd.args(args);
        cmd
    };
    let image = kdbg_testkit::image();
    let mut figures = serde_json::Map::new();
    // Nothing to copy: what every command pays before its first byte.
    let empty = median(RUNS, || {
        timed(plugin(&["web", "--image", &image, "--", "true"]).stdin(Stdio::null()))
    });
    figures.insert("session_ms".into(), empty.into());
    // `kubectl-debug [--connect direct] cp FROM TO`, timed: through the port-forward, or with
    // the agent reached directly.
    let cp = |direct: bool, from: &str, to: &str| {
        let mut args = if direct {
            vec!["--connect", "direct"]
        } else {
            Vec::new()
        };
        args.extend(["cp", "--image", &image, from, to]);
        timed(plugin(&args).stdin(Stdio::null()))
    };
    // `cp big` or `cp small` measures only that case (for a profile of one of them).
    let only = std::env::args().nth(1);
    for (what, name) in [("big", "big"), ("small", "small")] {
        if only.as_deref().is_some_and(|only| only != what) {
            continue;
        }
        let local = source.join(name);
        let down = dir.join(format!("down-{what}"));
        // Up: into the target's /tmp, removed between runs.
        let clean = || {
            kdbg_testkit::docker(&["exec", &container, "rm", "-rf", &format!("/tmp/{name}")]);
        };
        let remote = format!("web:/tmp/{name}");
        let up = |direct| {
            median(RUNS, || {
                clean();
                cp(direct, local.to_str().unwrap(), &remote)
            })
        };
        let ours_up = up(false);
        // The same, with the agent reached directly (no port-forward through the API server).
        let direct_up = up(true);
        let docker_up = median(RUNS, || {
            clean();
            timed(&mut docker_cmd(&[
                "cp",
                local.to_str().unwrap(),
                &format!("{container}:/tmp/{name}"),
            ]))
        });
        let tar_up = median(RUNS, || {
            clean();
            let mut tar = Command::new("tar");
            tar.arg("-C").arg(&source).args(["-cf", "-", name]);
            let tools = [
                "web",
                "--image",
                &image,
                "-i",
                "--",
                "tar",
                "-xf",
                "-",
                "-C",
                "/proc/1/root/tmp",
            ];
            piped(&mut tar, &mut plugin(&tools))
        });
        check_size(&container, name, &local);
        // The floor of any copy through an exec session: the engine's own exec carrying the
        // same bytes into a file in the target, with no debug container, agent or archive.
        let exec_up = (what == "big").then(|| {
            median(RUNS, || {
                let file = std::fs::File::open(&local).unwrap();
                let sh = "cat > /tmp/exec-big";
                timed(docker_cmd(&["exec", "-i", &container, "sh", "-c", sh]).stdin(file))
            })
        });
        // Down: from the target (as the last upload left it) into a fresh local directory.
        let fresh = || {
            let _ = std::fs::remove_dir_all(&down);
            std::fs::create_dir_all(&down).unwrap();
        };
        let down_to = down.join(name);
        let down_cp = |direct| {
            let copied = median(RUNS, || {
                fresh();
                cp(direct, &remote, down_to.to_str().unwrap())
            });
            same_tree(&local, &down_to);
            copied
        };
        let ours_down = down_cp(false);
        let direct_down = down_cp(true);
        let exec_down = (what == "big").then(|| {
            median(RUNS, || {
                fresh();
                let file = std::fs::File::create(down.join(name)).unwrap();
                let path = format!("/tmp/{name}");
                let mut cmd = docker_cmd(&["exec", &container, "cat", &path]);
                let started = Instant::now();
                let out = cmd.stdout(file).output().expect("running docker exec");
                assert!(out.status.success(), "{cmd:?}: {}", text(&out.stderr));
                started.elapsed().as_secs_f64() * 1000.0
            })
        });
        let docker_down = median(RUNS, || {
            fresh();
            timed(&mut docker_cmd(&[
                "cp",
                &format!("{container}:/tmp/{name}"),
                down.join(name).to_str().unwrap(),
            ]))
        });
        let tar_down = median(RUNS, || {
            fresh();
            let tools = [
                "web",
                "--image",
                &image,
                "--",
                "tar",
                "-cf",
                "-",
                "-C",
                "/proc/1/root/tmp",
                name,
            ];
            let mut untar = Command::new("tar");
            untar.arg("-C").arg(&down).args(["-xf", "-"]);
            let mut first = plugin(&tools);
            piped(first.stdin(Stdio::null()), &mut untar)
        });
        same_tree(&local, &down.join(name));
        for (row, ms) in [("exec_up", exec_up), ("exec_down", exec_down)] {
            if let Some(ms) = ms {
                figures.insert(format!("{what}_{row}_ms"), ms.into());
            }
        }
        for (row, ms) in [
            ("ours_up", ours_up),
            ("direct_up", direct_up),
            ("direct_down", direct_down),
            ("docker_up", docker_up),
            ("tar_up", tar_up),
            ("ours_down", ours_down),
            ("docker_down", docker_down),
            ("tar_down", tar_down),
        ] {
            figures.insert(format!("{what}_{row}_ms"), ms.into());
        }
    }
    figures.insert("runs".into(), RUNS.into());
    figures.insert("big_mib".into(), BIG_MIB.into());
    figures.insert("small_files".into(), SMALL_FILES.into());
    let figures = serde_json::Value::Object(figures);
    let out = Path::new("target/kdbg-bench");
    std::fs::create_dir_all(out).unwrap();
    std::fs::write(out.join("cp.json"), figures.to_string()).unwrap();
    println!("{figures}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `first | second` to their ends, which must both succeed; the wall time in ms.
fn piped(first: &mut Command, second: &mut Command) -> f64 {
    let started = Instant::now();
    let mut writer = first
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running the pipe's first command");
    let out = second
        .stdin(writer.stdout.take().expect("its stdout"))
        .stdout(Stdio::null())
        .output()
        .expect("running the pipe's second command");
    let wrote = writer.wait_with_output().expect("the pipe's first command");
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    assert!(wrote.status.success(), "{first:?}: {}", text(&wrote.stderr));
    assert!(out.status.success(), "{second:?}: {}", text(&out.stderr));
    ms
}

/// `docker ARGS` on the test engine.
fn docker_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new("/usr/bin/docker");
    cmd.args(args)
        .env("DOCKER_HOST", kdbg_testkit::docker_host());
    cmd
}

/// The container's ID, from a pod status' `docker://ID`.
fn container_name(reference: &str) -> String {
    reference.trim_start_matches("docker://").to_owned()
}

/// Runs `cmd` to its end, which must succeed; its wall time in ms.
fn timed(cmd: &mut Command) -> f64 {
    let started = Instant::now();
    let out = cmd.stdout(Stdio::null()).output().expect("running a copy");
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    assert!(out.status.success(), "{:?}: {}", cmd, text(&out.stderr));
    ms
}

/// The median of `runs` runs of `run`.
fn median(runs: usize, mut run: impl FnMut() -> f64) -> f64 {
    let mut values: Vec<f64> = (0..runs).map(|_| run()).collect();
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// What was copied up is whole in the target: as many bytes under `/tmp/NAME` as `local` has.
fn check_size(container: &str, name: &str, local: &Path) {
    let out = kdbg_testkit::docker(&["exec", container, "du", "-s", "-b", &format!("/tmp/{name}")]);
    let remote: u64 = text(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(remote >= bytes(local), "/tmp/{name} holds {remote} bytes");
}

/// The bytes of the files under `path`.
fn bytes(path: &Path) -> u64 {
    let meta = std::fs::symlink_metadata(path).unwrap();
    if meta.is_dir() {
        std::fs::read_dir(path)
            .unwrap()
            .map(|e| bytes(&e.unwrap().path()))
            .sum()
    } else {
        meta.len()
    }
}

/// `copy` has the files of `original`, byte for byte.
fn same_tree(original: &Path, copy: &Path) {
    let out = Command::new("diff")
        .arg("-r")
        .arg(original)
        .arg(copy)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stdout));
}
