//! `--fork`: a pod whose container exits at once, on an image with no shell, debugged through
//! a copy of it whose container holds still. The API stand-in runs both pods as real
//! containers on the test Docker engine, with the kubelet's restarts (CrashLoopBackOff).

use std::time::Duration;

use kdbg_testkit as support;
use support::apiserver::Cluster;
use support::{Agent, eventually, text};

/// An image with no shell and nothing but a program that exits 1 at once (busybox's binary as
/// `/app`, which knows no applet of that name): what distroless images are to a debugger.
fn crashing_image() -> String {
    let image = "kdbg-distroless:test".to_owned();
    let present = std::process::Command::new("/usr/bin/docker")
        .args(["image", "inspect", &image])
        .env("DOCKER_HOST", support::docker_host())
        .output()
        .unwrap();
    if !present.status.success() {
        let root = std::env::temp_dir().join(format!("kdbg-distroless-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::copy("/bin/busybox", root.join("app")).unwrap();
        let tar = std::process::Command::new("tar")
            .arg("-C")
            .arg(&root)
            .args(["-c", "app"])
            .output()
            .unwrap();
        assert!(tar.status.success());
        let mut import = std::process::Command::new("/usr/bin/docker")
            .args(["import", "--change", "ENTRYPOINT [\"/app\"]", "-", &image])
            .env("DOCKER_HOST", support::docker_host())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        import.stdin.take().unwrap().write_all(&tar.stdout).unwrap();
        assert!(import.wait().unwrap().success());
        let _ = std::fs::remove_dir_all(&root);
    }
    image
}

fn copies(cluster: &Cluster) -> String {
    let out = cluster.kubectl(&[
        "get",
        "pods",
        "-n",
        "shop",
        "-l",
        "debug.kubectl-debug.io/copy=true",
        "-o",
        "name",
    ]);
    text(&out.stdout)
}

#[test]
fn a_crash_looping_pod_on_an_image_without_a_shell_is_debugged_through_a_copy() {
    let cluster = Cluster::new("shop");
    let agent = Agent::start();
    let dir = std::env::temp_dir().join(format!("kdbg-fork-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = dir.join("crash.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: crash\n  namespace: shop\n  labels: {{app: crash, tier: back}}\nspec:\n  restartPolicy: Always\n  containers:\n  - name: app\n    image: {}\n    imagePullPolicy: Never\n    env: [{{name: FOO, value: bar}}]\n    workingDir: /\n    livenessProbe: {{exec: {{command: [/app, \"true\"]}}}}\n",
            crashing_image()
        ),
    )
    .unwrap();
    let applied = cluster.kubectl(&["apply", "-f", manifest.to_str().unwrap()]);
    assert!(applied.status.success(), "{}", text(&applied.stderr));
    let restarts = || {
        let out = cluster.kubectl(&[
            "get",
            "pod",
            "crash",
            "-n",
            "shop",
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}",
        ]);
        text(&out.stdout).trim().parse::<u32>().unwrap_or(0)
    };
    eventually(
        Duration::from_secs(60),
        "the pod to crash and restart",
        || restarts() >= 1,
    );
    let uid = |c: &Cluster| {
        text(
            &c.kubectl(&[
                "get",
                "pod",
                "crash",
                "-n",
                "shop",
                "-o",
                "jsonpath={.metadata.uid}",
            ])
            .stdout,
        )
    };
    let original = uid(&cluster);

    // Without --fork: refused, saying how it ended and what to do.
    let refused = support::run(
        &mut cluster.debug(agent.port, &["-n", "shop", "crash", "--", "true"]),
        b"",
    );
    let said = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{said}");
    assert!(
        said.contains("it last exited with code 1") && said.contains("--fork"),
        "{said}"
    );

    // With --fork: the copy's container holds still; the session sees its env and files.
    let out = support::run(
        &mut cluster.debug(
            agent.port,
            &[
                "-n",
                "shop",
                "crash",
                "--fork",
                "--agent-image",
                &support::ondemand_image(),
                "--image",
                &support::image(),
                "--",
                "sh",
                "-c",
                "tr '\\0' '\\n' < /proc/1/environ | grep FOO; ls /proc/1/root/app",
            ],
        ),
        b"",
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(text(&out.stdout), "FOO=bar\n/proc/1/root/app\n", "{stderr}");
    assert!(
        stderr.contains("debugging a copy of pod crash: shop/crash-debug-"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "The original container app ran: the image's entrypoint (the pod does not set a command), in /."
        ),
        "{stderr}"
    );
    // The copy is gone; the original is the same pod, still restarting.
    eventually(Duration::from_secs(60), "the copy to go", || {
        copies(&cluster).is_empty()
    });
    assert_eq!(uid(&cluster), original);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_retained_copy_stays_until_removed() {
    let cluster = Cluster::new("shop");
    let agent = Agent::start();
    let created = cluster.kubectl(&[
        "run",
        "quick",
        "-n",
        "shop",
        "--image",
        &crashing_image(),
        "--image-pull-policy",
        "Never",
        "--restart",
        "Never",
    ]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let out = support::run(
        &mut cluster.debug(
            agent.port,
            &[
                "-n",
                "shop",
                "quick",
                "--fork",
                "--retain",
                "--agent-image",
                &support::ondemand_image(),
                "--image",
                &support::image(),
                "--",
                "true",
            ],
        ),
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let kept = copies(&cluster);
    assert!(kept.starts_with("pod/quick-debug-"), "{kept}");
    let copy = kept.trim().trim_start_matches("pod/").to_owned();
    // `rm --all` on the copy removes its retained debug container, then the copy.
    let removed = support::run(
        &mut cluster.debug(agent.port, &["-n", "shop", "rm", &copy, "--all"]),
        b"",
    );
    let said = text(&removed.stdout);
    assert_eq!(removed.status.code(), Some(0), "{}", text(&removed.stderr));
    assert!(
        said.contains("debug container ") && said.contains(&format!("copy {copy} deleted")),
        "{said}"
    );
    // The original is not a copy: rm --all leaves it be.
    let original = support::run(
        &mut cluster.debug(agent.port, &["-n", "shop", "rm", "quick", "--all"]),
        b"",
    );
    assert_eq!(
        original.status.code(),
        Some(0),
        "{}",
        text(&original.stderr)
    );
    assert!(!text(&original.stdout).contains("deleted"));
    eventually(Duration::from_secs(60), "the copy to go", || {
        copies(&cluster).is_empty()
    });
}
