//! `GET /api/v1/image-config` on both real engines of the test world (`scripts/test-world`),
//! through the real agent binary checking callers with the API stand-in: a target's answer is
//! its image's real `Entrypoint`, `Cmd`, `WorkingDir` and `User` (an image made with
//! `docker import --change`, and the test image), not what the container was told to run;
//! and a caller is refused what a debug session of that target would refuse them.

use std::process::Command;
use std::sync::OnceLock;

use kdbg_api::{Endpoint, ImageConfig, ImageConfigRequest};
use kdbg_testkit as support;
use support::engine::{ContainerdEngine, DockerEngine, Engine};
use support::users::{World, raw};
use support::{ctr, docker, registry, text};

/// An image whose config says `ENTRYPOINT ["/app", "--serve"]`, `CMD ["--port", "80"]`,
/// `WORKDIR /srv`, `USER 65534` (and holds busybox's `sleep`), on the test Docker engine,
/// and in containerd's `k8s.io` (through the loopback registry); made once per test process.
/// Its names on Docker and containerd.
fn entry_image() -> &'static (String, String) {
    static IMAGE: OnceLock<(String, String)> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let local = "kdbg-entry:test".to_owned();
        let root = std::env::temp_dir().join(format!("kdbg-entry-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::create_dir_all(root.join("srv")).unwrap();
        std::fs::create_dir_all(root.join("tmp")).unwrap();
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
        for applet in ["sh", "sleep"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        support::import_image(
            &root,
            &local,
            &[
                "ENTRYPOINT [\"/app\", \"--serve\"]",
                "CMD [\"--port\", \"80\"]",
                "WORKDIR /srv",
                "USER 65534",
                "ENV PATH=/bin",
            ],
        );
        let _ = std::fs::remove_dir_all(&root);
        let remote = format!("{}/kdbg-entry:test", registry());
        docker(&["tag", &local, &remote]);
        docker(&["push", "-q", &remote]);
        let pulled = ctr("k8s.io", &["images", "pull", "--plain-http", &remote]);
        assert!(pulled.status.success(), "{}", text(&pulled.stderr));
        (local, remote)
    })
}

/// A container of pod `shop/entry` made from [`entry_image`], running `sleep` in place of
/// its entrypoint; removed when dropped.
struct EntryTarget {
    engine: &'static str,
    id: String,
}

impl EntryTarget {
    fn start(engine: &str) -> EntryTarget {
        let (local, remote) = entry_image();
        let id = format!("kdbg-imgcfg-{engine}-{}", std::process::id());
        let labels = [
            "io.kubernetes.pod.namespace=shop",
            "io.kubernetes.pod.name=entry",
            "io.kubernetes.container.name=app",
        ];
        if engine == "docker" {
            let mut args = vec!["run", "-d", "--name", &id, "--network", "none"];
            for l in &labels {
                args.extend(["--label", l]);
            }
            args.extend(["--entrypoint", "/bin/sleep", local, "3600"]);
            docker(&args);
            EntryTarget {
                engine: "docker",
                id,
            }
        } else {
            let mut args = vec!["run", "-d"];
            for l in &labels {
                args.extend(["--label", l]);
            }
            args.extend([remote.as_str(), &id, "/bin/sleep", "3600"]);
            let out = ctr("k8s.io", &args);
            assert!(out.status.success(), "ctr run: {}", text(&out.stderr));
            EntryTarget {
                engine: "containerd",
                id,
            }
        }
    }

    fn reference(&self) -> String {
        format!("{}://{}", self.engine, self.id)
    }
}

impl Drop for EntryTarget {
    fn drop(&mut self) {
        if self.engine == "docker" {
            let _ = Command::new("/usr/bin/docker")
                .args(["rm", "-f", &self.id])
                .env("DOCKER_HOST", support::docker_host())
                .output();
        } else {
            let _ = ctr("k8s.io", &["task", "kill", "-s", "KILL", &self.id]);
            let _ = ctr("k8s.io", &["task", "delete", "-f", &self.id]);
            let _ = ctr("k8s.io", &["container", "delete", &self.id]);
        }
    }
}

/// Asks the agent at `address`, as the user of `token`, for the image config of `target`
/// of pod `shop/pod`: the status code and the body.
fn ask(address: &str, token: &str, target: &str, ns: &str, pod: &str) -> (u16, String) {
    let uri = Endpoint::ImageConfig(ImageConfigRequest {
        target: target.parse().unwrap(),
        pod_namespace: Some(ns.into()),
        pod_name: Some(pod.into()),
    })
    .uri();
    raw(
        address,
        &format!(
            "GET {uri} HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        ),
    )
}

fn image_configs_are_read_and_guarded(engine: &dyn Engine) {
    let name = engine.name();
    let world = World::new(engine, &format!("imgcfg-{name}"), "");
    let address = world.agent.address();
    let entry = EntryTarget::start(name);

    // The image's config, not the container's command (`sleep`, given in its place).
    let (code, body) = ask(&address, "alice-token", &entry.reference(), "shop", "entry");
    assert_eq!(code, 200, "{body}\nagent:\n{}", world.agent.log());
    let config: ImageConfig = serde_json::from_str(&body).unwrap();
    let words = |w: &[&str]| Some(w.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
    assert_eq!(config.entrypoint, words(&["/app", "--serve"]), "{body}");
    assert_eq!(config.cmd, words(&["--port", "80"]), "{body}");
    assert_eq!(config.working_dir.as_deref(), Some("/srv"), "{body}");
    assert_eq!(config.user.as_deref(), Some("65534"), "{body}");
    assert!(config.image.contains("kdbg-entry:test"), "{body}");

    // The test image: `CMD ["/bin/sh"]` and nothing else.
    let (code, body) = ask(
        &address,
        "alice-token",
        &world.web.pod_reference(),
        "shop",
        "web",
    );
    assert_eq!(code, 200, "{body}");
    let config: ImageConfig = serde_json::from_str(&body).unwrap();
    assert_eq!(config.entrypoint, None, "{body}");
    assert_eq!(config.cmd, words(&["/bin/sh"]), "{body}");
    assert_eq!(config.working_dir, None, "{body}");

    // Refused what a debug session would be refused.
    for (token, target, pod, code, says) in [
        (
            "bob-token",
            entry.reference(),
            "entry",
            403,
            "Forbidden: user \\\"bob\\\" may not create pods/exec of pod \\\"entry\\\" in namespace \\\"shop\\\"",
        ),
        (
            "carol-token",
            entry.reference(),
            "entry",
            401,
            "token has expired",
        ),
        (
            "alice-token",
            world.vault.pod_reference(),
            "web",
            403,
            "belongs to pod bank/vault, not shop/web",
        ),
        (
            "alice-token",
            world.host.pod_reference(),
            "node-exporter",
            403,
            "gives the node itself",
        ),
    ] {
        let (got, body) = ask(&address, token, &target, "shop", pod);
        assert_eq!(got, code, "{token} {target}: {body}");
        assert!(body.contains(says), "{token} {target}: {body}");
    }
    // The node's permission opens a target that is the node.
    let (code, body) = ask(
        &address,
        "dave-token",
        &world.host.pod_reference(),
        "shop",
        "node-exporter",
    );
    assert_eq!(code, 200, "{body}");
    let log = world.agent.log();
    assert!(
        log.contains("image config read") && log.contains("image config refused"),
        "audit lines:\n{log}"
    );
}

#[test]
fn docker_answers_a_targets_image_config_to_whom_may_debug_it() {
    image_configs_are_read_and_guarded(&DockerEngine);
}

#[test]
fn containerd_answers_a_targets_image_config_to_whom_may_debug_it() {
    image_configs_are_read_and_guarded(&ContainerdEngine);
}
