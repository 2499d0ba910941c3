//! The test world `scripts/test-world` starts: checked once, and its engines, registries and images.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Once;

use crate::*;

/// The variables `scripts/test-world` exports, each of which some test reads.
pub(crate) const WORLD_VARIABLES: [&str; 11] = [
    "DOCKER_HOST",
    "KDBG_DOCKER_CONTAINERD",
    "KDBG_CONTAINERD",
    "KDBG_TEST_REGISTRY",
    "KDBG_AUTH_REGISTRY",
    "KDBG_AUTH_CONFIG",
    "KDBG_MIRROR_REGISTRY",
    "KDBG_TOKEN_REGISTRY",
    "KDBG_TOKEN_REALM",
    "KDBG_TOKEN_KEY",
    "KDBG_TOKEN_CERT",
];

/// Checks, once per test process, that the test world is up: the variables
/// `scripts/test-world` exports are set and its engines' sockets are there. If not, ends the
/// process (exit status 2) with one line naming `scripts/test`. Every helper that needs the
/// world calls it, so tests need not.
pub fn require_world() {
    static CHECKED: Once = Once::new();
    // Other tests' threads wait here while the first checks; if it ends the process, they
    // never run on into a panic of their own.
    CHECKED.call_once(|| {
        if let Some(why) = world_missing() {
            no_world(&why);
        }
    });
}

/// What of the test world is missing, if anything.
pub(crate) fn world_missing() -> Option<String> {
    let missing = WORLD_VARIABLES
        .iter()
        .find(|name| std::env::var_os(name).is_none_or(|v| v.is_empty()));
    if let Some(name) = missing {
        return Some(format!("{name} is not set"));
    }
    let docker = std::env::var("DOCKER_HOST").unwrap_or_default();
    if let Some(socket) = docker.strip_prefix("unix://")
        && !Path::new(socket).exists()
    {
        return Some(format!("no Docker engine socket at {socket}"));
    }
    let containerd = std::env::var("KDBG_CONTAINERD").unwrap_or_default();
    if !Path::new(&containerd).exists() {
        return Some(format!("no containerd socket at {containerd}"));
    }
    None
}

/// Ends the test process: the test world is not there (`why`).
pub(crate) fn no_world(why: &str) -> ! {
    stop_tests(&format!(
        "the test world is not running ({why}): run the tests with scripts/test, which starts it"
    ))
}

/// Ends the test process with exit status 2 and `line` on its stderr, once: tests running
/// on other threads that get here meanwhile wait for the end instead of saying it again.
pub(crate) fn stop_tests(line: &str) -> ! {
    static STOPPING: Once = Once::new();
    STOPPING.call_once(|| {
        // Straight to the process's stderr: the test harness captures what a test's thread
        // prints with `eprintln!`, and that would go with the process.
        let _ = writeln!(std::io::stderr(), "{line}");
        std::process::exit(2);
    });
    std::process::exit(2)
}

/// The test Docker engine's address (`unix://...`), as `DOCKER_HOST` names it.
pub fn docker_host() -> String {
    world_variable("DOCKER_HOST")
}

/// A variable of the test world, once [`require_world`] has checked it is set.
pub(crate) fn world_variable(name: &str) -> String {
    require_world();
    std::env::var(name).unwrap_or_else(|_| no_world(&format!("{name} is not set")))
}

/// The tools image the Docker tests debug with.
pub fn image() -> String {
    std::env::var("KDBG_TEST_IMAGE").unwrap_or_else(|_| "kdbg-busybox:test".into())
}

/// Runs `/usr/bin/docker` (Debian's client, which talks to Debian's engine) with `args` on the
/// test engine; fails the test unless it succeeds.
pub fn docker(args: &[&str]) -> Output {
    let out = Command::new("/usr/bin/docker")
        .args(args)
        .env("DOCKER_HOST", docker_host())
        .output()
        .expect("running docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The full ID of a container.
pub fn container_id(name: &str) -> String {
    let out = docker(&["inspect", "-f", "{{.Id}}", name]);
    text(&out.stdout).trim().to_owned()
}

/// The test containerd's socket.
pub fn containerd_socket() -> String {
    world_variable("KDBG_CONTAINERD")
}

/// The loopback registry, `host:port`.
pub fn registry() -> String {
    world_variable("KDBG_TEST_REGISTRY")
}

/// The loopback registry that wants a password, `host:port`.
pub fn auth_registry() -> String {
    world_variable("KDBG_AUTH_REGISTRY")
}

/// The pull-through cache of the loopback registry, `host:port`: a mirror for tests.
pub fn mirror_registry() -> String {
    world_variable("KDBG_MIRROR_REGISTRY")
}

/// The tools image containerd tests debug with, served by the loopback registry.
pub fn ctd_image() -> String {
    format!("{}/kdbg-tools:test", registry())
}

/// `ctr` on the test containerd, in `namespace`.
pub fn ctr(namespace: &str, args: &[&str]) -> Output {
    Command::new("ctr")
        .args(["--address", &containerd_socket(), "-n", namespace])
        .args(args)
        .output()
        .expect("running ctr")
}

/// Makes image `image` on the test Docker engine from directory `root` (its whole filesystem)
/// and the Dockerfile instructions `changes` (`ENTRYPOINT ["/app"]`, `WORKDIR /srv`...), as
/// `docker import --change` does; fails the test unless it succeeds.
pub fn import_image(root: &std::path::Path, image: &str, changes: &[&str]) {
    let tar = Command::new("tar")
        .arg("-C")
        .arg(root)
        .args(["-c", "."])
        .output()
        .expect("running tar");
    assert!(tar.status.success(), "tar: {}", text(&tar.stderr));
    let mut args = vec!["import"];
    for change in changes {
        args.extend(["--change", change]);
    }
    args.extend(["-", image]);
    let mut import = Command::new("/usr/bin/docker")
        .args(&args)
        .env("DOCKER_HOST", docker_host())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("running docker import");
    use std::io::Write as _;
    import
        .stdin
        .take()
        .expect("docker import's stdin")
        .write_all(&tar.stdout)
        .expect("writing to docker import");
    assert!(
        import.wait().expect("docker import").success(),
        "docker import {image}"
    );
}

/// Copies image `image` of the test Docker engine into containerd's `k8s.io` namespace, as
/// `docker save IMAGE | ctr images import -` does: there it is named as the CRI plugin
/// resolves the name (`kdbg-distroless:test` as `docker.io/library/kdbg-distroless:test`), for
/// pods of a stand-in on containerd ([`apiserver::NodeRuntime::Containerd`]). Fails the test
/// unless it succeeds.
pub fn import_to_containerd(image: &str) {
    let mut save = Command::new("/usr/bin/docker")
        .args(["save", image])
        .env("DOCKER_HOST", docker_host())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("running docker save");
    let archive = save.stdout.take().expect("docker save's stdout");
    let import = Command::new("ctr")
        .args(["--address", &containerd_socket(), "-n", "k8s.io"])
        .args(["images", "import", "-"])
        .stdin(archive)
        .output()
        .expect("running ctr images import");
    let saved = save.wait().expect("docker save");
    assert!(saved.success(), "docker save {image}: {saved}");
    assert!(
        import.status.success(),
        "ctr images import of {image}: {}",
        text(&import.stderr)
    );
}

/// The agent's image that on-demand agents run (`scripts/test` builds it from this tree with
/// `scripts/agent-image`): on the test Docker engine, where the API stand-in's kubelet runs
/// pods.
pub fn ondemand_image() -> String {
    world_variable("KDBG_ONDEMAND_IMAGE")
}
