//! `runtime.kind: auto` against the real engines of the test world (`scripts/test-world`
//! exports their sockets): the first candidate whose socket exists and answers wins.

use kdbg_agent::config::{Config, RuntimeKindConfig};
use kdbg_agent::detect_runtime;
use kdbg_runtimes::AnyRuntime;

fn auto_config() -> kdbg_agent::config::RuntimeConfig {
    let text = "listen: \"127.0.0.1:0\"\ninsecure: true\nruntime:\n  kind: auto\ndefaults:\n  image: i\n  command: [sh]\n";
    Config::parse(text).unwrap().runtime
}

#[tokio::test]
async fn auto_takes_the_first_socket_that_answers_in_order() {
    let config = auto_config();
    let containerd = kdbg_testkit::containerd_socket();
    let docker = kdbg_testkit::docker_host();
    let absent = "/nonexistent/containerd.sock";
    let chosen = detect_runtime(
        &config,
        &[
            (RuntimeKindConfig::Containerd, absent),
            (RuntimeKindConfig::Containerd, &containerd),
            (RuntimeKindConfig::Docker, &docker),
        ],
    )
    .await
    .unwrap();
    assert!(matches!(chosen, AnyRuntime::Containerd(_)), "{chosen:?}");
    let chosen = detect_runtime(
        &config,
        &[
            (RuntimeKindConfig::Containerd, absent),
            (RuntimeKindConfig::Docker, &docker),
        ],
    )
    .await
    .unwrap();
    assert!(matches!(chosen, AnyRuntime::Docker(_)), "{chosen:?}");
}

#[tokio::test]
async fn auto_with_no_runtime_says_what_each_socket_said() {
    // A socket path that exists but is no runtime: a plain file.
    let bogus = std::env::temp_dir().join(format!("kdbg-not-a-socket-{}", std::process::id()));
    std::fs::write(&bogus, b"").unwrap();
    let bogus = bogus.display().to_string();
    let err = detect_runtime(
        &auto_config(),
        &[
            (
                RuntimeKindConfig::Containerd,
                "/nonexistent/containerd.sock",
            ),
            (RuntimeKindConfig::Containerd, &bogus),
        ],
    )
    .await
    .unwrap_err();
    let text = kdbg_agent::chain(&err);
    assert!(
        text.contains("/nonexistent/containerd.sock: absent"),
        "{text}"
    );
    assert!(text.contains(&bogus), "{text}");
    assert!(
        text.contains("set runtime.kind and runtime.endpoint"),
        "{text}"
    );
    let _ = std::fs::remove_file(&bogus);
}
