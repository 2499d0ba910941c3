//! `--platform` on both real engines, with an index of two platforms built in the loopback
//! registry (this machine's, and linux/arm64/v8 whose config says so): by default the node's
//! entry is pulled; `--platform linux/arm64/v8` pulls the other (its files still run here, so
//! the session runs, and the config the engine holds says which was chosen); a platform the
//! index lacks fails with the platforms it has.

use kdbg_testkit as support;

use support::apiserver::{Cluster, running_pod};
use support::engine::{ContainerdEngine, DockerEngine, Engine};
use support::images::{TwoPlatforms, two_platform_image};
use support::{DEBUG_NAMESPACE, ctr, docker, run, text};

/// The architecture of the config the engine holds for `image`, as it would run it.
fn held_architecture(engine: &dyn Engine, multi: &TwoPlatforms) -> String {
    match engine.name() {
        "docker" => {
            let out = docker(&["image", "inspect", "-f", "{{.Architecture}}", &multi.image]);
            text(&out.stdout).trim().to_owned()
        }
        _ => {
            // The other entry's config is in the content store only if it was pulled.
            let out = ctr(DEBUG_NAMESPACE, &["content", "ls", "-q"]);
            if text(&out.stdout).lines().any(|d| d == multi.other_config) {
                "arm64".to_owned()
            } else {
                std::env::consts::ARCH.replace("x86_64", "amd64")
            }
        }
    }
}

/// Forgets the image, so the next pull chooses afresh.
fn forget(engine: &dyn Engine, multi: &TwoPlatforms) {
    match engine.name() {
        "docker" => {
            docker(&["image", "rm", "-f", &multi.image]);
        }
        _ => {
            ctr(DEBUG_NAMESPACE, &["images", "rm", &multi.image]);
            ctr(DEBUG_NAMESPACE, &["content", "rm", &multi.other_config]);
        }
    }
}

fn platforms(engine: &dyn Engine) {
    let multi = two_platform_image();
    let cluster = Cluster::new("shop");
    let agent = engine.agent("");
    let web = engine.pod_target("shop", "web", false, "exec sleep 3600");
    cluster.api.add_pod(running_pod(
        "shop",
        "web",
        &[("app", &web.pod_reference(), true)],
    ));
    let debug = |extra: &[&str]| {
        let mut cmd = cluster.debug(agent.port, &["-n", "shop", "web", "--image", &multi.image]);
        cmd.args(extra).args(["--", "echo", "ran"]);
        let out = run(&mut cmd, b"");
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let native_arch = multi.native.trim_start_matches("linux/").to_owned();

    // The node's entry by default.
    forget(engine, &multi);
    let (code, out, err) = debug(&[]);
    assert_eq!(code, Some(0), "{out}{err}\nagent:\n{}", agent.log());
    assert_eq!(out, "ran\n", "{err}");
    assert_eq!(held_architecture(engine, &multi), native_arch);

    // The other entry when asked for.
    forget(engine, &multi);
    let (code, out, err) = debug(&["--platform", &multi.other]);
    assert_eq!(code, Some(0), "{out}{err}\nagent:\n{}", agent.log());
    assert_eq!(out, "ran\n", "{err}");
    assert_eq!(held_architecture(engine, &multi), "arm64");

    // A platform the index lacks: the platforms it has.
    forget(engine, &multi);
    let (code, _, err) = debug(&["--platform", "linux/s390x"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no linux/s390x variant"), "{err}");
    for has in [&multi.native, &multi.other] {
        assert!(err.contains(has.as_str()), "{has} not named in:\n{err}");
    }

    // Not a platform at all: refused before anything is asked.
    let (code, _, err) = debug(&["--platform", "s390x"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("os/arch[/variant]"), "{err}");
    forget(engine, &multi);
}

#[test]
fn platforms_are_chosen_from_an_index_on_docker() {
    platforms(&DockerEngine);
}

#[test]
fn platforms_are_chosen_from_an_index_on_containerd() {
    platforms(&ContainerdEngine);
}
