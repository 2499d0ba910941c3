//! The node's registry mirrors on the real containerd, read the way containerd's own client
//! reads them: `hosts.toml` under a `config_path` directory, k3s's `registries.yaml`, and the
//! agent's own `runtime.mirrors`. The mirror is the test world's pull-through cache in front of
//! the loopback registry, for registries (`*.invalid`) the agent cannot reach at all, as an
//! air-gapped node reaches `docker.io` only through its mirror. A mirror that is down is passed
//! over for the next, then the registry itself; a broken or unknown-keyed `hosts.toml` is an
//! error naming the file and line, and no pull is attempted with half a configuration.
//!
//! Docker nodes are not tested here: the engine pulls with its own mirrors (daemon.json).

use kdbg_testkit as support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{
    Agent, CtdTarget, DEBUG_NAMESPACE, ctr, mirror_registry, plugin, registry, run, text,
};

/// A directory of this test's own, removed when it is done.
fn scratch(tag: &str) -> support::Scratch {
    support::Scratch::new(&format!("mirrors-{tag}"))
}

/// Writes `<config_path>/<dir>/hosts.toml`.
fn hosts_toml(config_path: &Path, dir: &str, toml: &str) -> PathBuf {
    let dir = config_path.join(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("hosts.toml");
    std::fs::write(&file, toml).unwrap();
    file
}

/// `kubectl-debug local TARGET --agent ADDRESS --image IMAGE --pull-policy Always -- echo ran`.
fn pull(target: &CtdTarget, agent: &Agent, image: &str) -> (Option<i32>, String, String) {
    let mut cmd: Command = plugin();
    cmd.args(["local", &target.reference(), "--agent", &agent.address()])
        .args([
            "--image",
            image,
            "--pull-policy",
            "Always",
            "--",
            "echo",
            "ran",
        ]);
    let out = run(&mut cmd, b"");
    // Forgotten after, unless it is the test world's own image, which other tests (on-demand
    // agents, which may not pull from a plain-HTTP registry) expect to find.
    if image.contains(".invalid/") {
        let _ = ctr(DEBUG_NAMESPACE, &["images", "rm", image]);
    }
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn mirrors_of_the_node_and_the_agent_are_tried_in_order() {
    let mirror = mirror_registry();
    let config_path = scratch("certs.d");
    // A mirror that is down first, then the pull-through cache; the registry itself cannot be
    // reached (no such name).
    let air_gapped = hosts_toml(
        &config_path,
        "upstream.invalid",
        &format!(
            "server = \"https://upstream.invalid\"\n\
             \n\
             [host.\"http://127.0.0.1:1\"]\n  capabilities = [\"pull\", \"resolve\"]\n\
             \n\
             [host.\"http://{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ),
    );
    // Only a mirror that is down: the registry itself serves.
    let registry = registry();
    let port = registry.rsplit(':').next().unwrap();
    hosts_toml(
        &config_path,
        &format!("127.0.0.1_{port}_"),
        "[host.\"http://127.0.0.1:1\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
    );
    // Every host down.
    hosts_toml(
        &config_path,
        "dead.invalid",
        "server = \"https://dead.invalid\"\n[host.\"http://127.0.0.1:1\"]\n",
    );
    let broken = hosts_toml(
        &config_path,
        "broken.invalid",
        &format!("server = \"https://broken.invalid\"\n[host.\"http://{mirror}\"\n"),
    );
    let unknown = hosts_toml(
        &config_path,
        "unknown.invalid",
        &format!(
            "server = \"https://unknown.invalid\"\n[host.\"http://{mirror}\"]\n  capability = [\"pull\"]\n"
        ),
    );
    // k3s's file, for a registry config_path has no directory for.
    let k3s = config_path.join("registries.yaml");
    std::fs::write(
        &k3s,
        format!("mirrors:\n  k3s.invalid:\n    endpoint:\n      - \"http://{mirror}\"\n"),
    )
    .unwrap();
    let runtime = format!(
        "  configPath: \"{}\"\n  k3sRegistries: \"{}\"\n  mirrors:\n    agent.invalid:\n      hosts:\n        - url: \"http://{mirror}\"\n",
        config_path.display(),
        k3s.display()
    );
    let fifos = scratch("fifo");
    let agent = Agent::containerd(&fifos, &runtime);
    let target = CtdTarget::start("exec sleep 3600");

    // Through the node's mirror, the one that is down passed over.
    let (code, out, err) = pull(&target, &agent, "upstream.invalid/kdbg-tools:test");
    assert_eq!(code, Some(0), "{err}\nagent:\n{}", agent.log());
    assert_eq!(out, "ran\n", "{err}");
    assert!(
        err.contains(&format!(
            "Pulling from kdbg-tools (http://{mirror}, configured in {})",
            air_gapped.display()
        )),
        "{err}"
    );
    assert!(
        agent.log().contains("http://127.0.0.1:1"),
        "the mirror that is down is not in the log:\n{}",
        agent.log()
    );

    // The mirror down, the registry itself.
    let image = format!("{registry}/kdbg-tools:test");
    let (code, out, err) = pull(&target, &agent, &image);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "ran\n", "{err}");
    assert!(
        err.contains(&format!("Pulling from kdbg-tools (http://{registry})")),
        "{err}"
    );

    // k3s's registries.yaml, and the agent's own runtime.mirrors.
    let (code, _, err) = pull(&target, &agent, "k3s.invalid/kdbg-tools:test");
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains(&format!("configured in {}", k3s.display())),
        "{err}"
    );
    let (code, _, err) = pull(&target, &agent, "agent.invalid/kdbg-tools:test");
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("configured in runtime.mirrors"), "{err}");

    // Every host down: each named, in the order tried.
    let (code, _, err) = pull(&target, &agent, "dead.invalid/kdbg-tools:test");
    assert_eq!(code, Some(1), "{err}");
    let down = err.find("http://127.0.0.1:1").expect(&err);
    let upstream = err.find("https://dead.invalid").expect(&err);
    assert!(down < upstream, "{err}");

    // Broken TOML and an unknown key: the file and the line, nothing pulled.
    let (code, _, err) = pull(&target, &agent, "broken.invalid/kdbg-tools:test");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("{}:2:", broken.display())), "{err}");
    let (code, _, err) = pull(&target, &agent, "unknown.invalid/kdbg-tools:test");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("{}:3:", unknown.display())), "{err}");
    assert!(err.contains("unknown key \"capability\""), "{err}");
    // Refused before any host was asked.
    assert!(!err.contains("no host could serve it"), "{err}");
    support::assert_removed_soon(|| target.leftovers());
}
