//! The containerd backend against a real containerd + runc (started by `scripts/test-world`,
//! which exports `KDBG_CONTAINERD` and pulls the test image into `k8s.io`).

use std::process::Command;

use kdbg_runtimes::containerd::{ContainerdRuntime, DEBUG_NAMESPACE, KUBERNETES_NAMESPACE};
use kdbg_runtimes::{Error, Runtime, TargetRef, label};

fn socket() -> String {
    std::env::var("KDBG_CONTAINERD").expect(
        "KDBG_CONTAINERD is not set: run the tests with scripts/test, which starts containerd",
    )
}

fn image() -> String {
    let registry = std::env::var("KDBG_TEST_REGISTRY").expect("KDBG_TEST_REGISTRY is not set");
    format!("{registry}/kdbg-tools:test")
}

fn ctr(args: &[&str]) -> std::process::Output {
    Command::new("ctr")
        .args(["--address", &socket(), "-n", KUBERNETES_NAMESPACE])
        .args(args)
        .output()
        .expect("running ctr")
}

/// A container in `k8s.io`, as a pod's would be, removed when dropped.
struct Target(String);

impl Target {
    fn new(tag: &str) -> Target {
        Target(format!("kdbg-ctd-{tag}-{}", std::process::id()))
    }

    fn reference(&self) -> TargetRef {
        format!("containerd://{}", self.0).parse().unwrap()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = ctr(&["task", "kill", "-s", "KILL", &self.0]);
        let _ = ctr(&["task", "delete", "-f", &self.0]);
        let _ = ctr(&["container", "delete", &self.0]);
    }
}

async fn runtime() -> ContainerdRuntime {
    ContainerdRuntime::connect(&format!("unix://{}", socket()), KUBERNETES_NAMESPACE)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_running_target_gives_the_pid_whose_namespaces_a_debug_container_joins() {
    let rt = runtime().await;
    assert!(
        rt.version().starts_with('1') || rt.version().starts_with('2'),
        "{}",
        rt.version()
    );
    let target = Target::new("run");
    let out = ctr(&["run", "-d", &image(), &target.0, "sleep", "3603"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid = rt.target_pid(&target.reference()).await.unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert_eq!(cmdline, b"sleep\x003603\x00");
    for ns in ["pid", "net", "ipc", "uts"] {
        assert!(std::path::Path::new(&format!("/proc/{pid}/ns/{ns}")).exists());
    }
}

#[tokio::test]
async fn targets_that_cannot_be_joined_are_refused_with_their_state() {
    let rt = runtime().await;
    let missing: TargetRef = "containerd://kdbg-no-such".parse().unwrap();
    let err = rt.target_pid(&missing).await.unwrap_err();
    assert!(matches!(err, Error::TargetNotFound { .. }), "{err:?}");

    let created = Target::new("created");
    let out = ctr(&["container", "create", &image(), &created.0, "true"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = rt.target_pid(&created.reference()).await.unwrap_err();
    assert!(err.to_string().contains("created, with no task"), "{err}");

    let exited = Target::new("exited");
    let out = ctr(&["run", &image(), &exited.0, "true"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = rt.target_pid(&exited.reference()).await.unwrap_err();
    assert!(
        matches!(&err, Error::TargetNotRunning { state, .. } if state == "stopped" || state == "created, with no task"),
        "{err:?}"
    );

    let docker: TargetRef = "docker://abc".parse().unwrap();
    assert!(matches!(
        rt.target_pid(&docker).await.unwrap_err(),
        Error::WrongRuntime { .. }
    ));
}

#[tokio::test]
async fn a_wrong_socket_is_a_clear_connect_error() {
    let err = ContainerdRuntime::connect("/nonexistent/containerd.sock", KUBERNETES_NAMESPACE)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/containerd.sock"));
}

#[tokio::test]
async fn listing_finds_labelled_containers_in_our_namespace_only() {
    let rt = runtime().await;
    let in_ours = |args: &[&str]| {
        Command::new("ctr")
            .args(["--address", &socket(), "-n", DEBUG_NAMESPACE])
            .args(args)
            .output()
            .expect("running ctr")
    };
    let out = in_ours(&["images", "pull", "--plain-http", &image()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours = format!("kdbg-ctd-debug-{}", std::process::id());
    let session_label = format!("{}=s-{}", label::SESSION, std::process::id());
    let out = in_ours(&[
        "container",
        "create",
        "--label",
        &session_label,
        &image(),
        &ours,
        "true",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A pod's container, even with the same label, is never listed.
    let theirs = Target::new("list");
    let out = ctr(&[
        "container",
        "create",
        "--label",
        &session_label,
        &image(),
        &theirs.0,
        "true",
    ]);
    assert!(out.status.success());
    let listed = rt.list().await.unwrap();
    let _ = in_ours(&["container", "delete", &ours]);
    let mine = listed
        .iter()
        .find(|c| c.id == ours)
        .expect("our debug container listed");
    assert_eq!(
        mine.labels.get(label::SESSION).map(String::as_str),
        Some(format!("s-{}", std::process::id()).as_str())
    );
    assert_eq!(
        mine.state,
        kdbg_runtimes::ContainerState::Created,
        "no task yet"
    );
    assert!(listed.iter().all(|c| c.id != theirs.0));
}

#[tokio::test]
async fn a_targets_image_config_is_read_from_the_content_store_of_its_namespace() {
    let rt = runtime().await;
    // A created container will do: the image is what it was made from, running or not.
    let target = Target::new("imgcfg");
    let out = ctr(&["container", "create", &image(), &target.0, "sleep", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = rt.image_config(&target.reference()).await.unwrap();
    // The test image: `CMD ["/bin/sh"]` and nothing else (scripts/test-world).
    assert_eq!(config.image, image());
    assert_eq!(config.cmd, Some(vec!["/bin/sh".to_owned()]));
    assert_eq!(
        (config.entrypoint, config.working_dir, config.user),
        (None, None, None)
    );

    // An image record gone since the container was made: named, with the way out.
    let alias = format!(
        "{}/kdbg-tools:imgcfg-{}",
        std::env::var("KDBG_TEST_REGISTRY").unwrap(),
        std::process::id()
    );
    assert!(ctr(&["images", "tag", &image(), &alias]).status.success());
    let orphan = Target::new("imgcfg-orphan");
    assert!(
        ctr(&["container", "create", &alias, &orphan.0, "true"])
            .status
            .success()
    );
    assert!(ctr(&["images", "rm", &alias]).status.success());
    let err = rt.image_config(&orphan.reference()).await.unwrap_err();
    assert!(matches!(err, Error::TargetImage { .. }), "{err:?}");
    let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(
        text.contains(&alias) && text.contains("crictl pull"),
        "{text}"
    );

    let missing: TargetRef = "containerd://kdbg-no-such".parse().unwrap();
    assert!(matches!(
        rt.image_config(&missing).await.unwrap_err(),
        Error::TargetNotFound { .. }
    ));
    let docker: TargetRef = "docker://abc".parse().unwrap();
    assert!(matches!(
        rt.image_config(&docker).await.unwrap_err(),
        Error::WrongRuntime { .. }
    ));
}
