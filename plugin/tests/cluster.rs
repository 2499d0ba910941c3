//! A cluster the way users have one: agents reached through the API server (port-forward),
//! or directly; several sessions from one workstation at once; no agent, or one not ready;
//! the shell function and completions in a real bash (and zsh); version, metrics and each
//! verb's help.

use kdbg_testkit as support;

use std::process::{Command, Stdio};

use support::apiserver::{AGENT_NAMESPACE, Cluster, agent_pod, running_pod};
use support::{Agent, Target, plugin, run, text};

/// A cluster whose pod `web-1` runs `target`, and an agent.
fn cluster_with(target: &Target) -> (Cluster, Agent) {
    let cluster = Cluster::new("shop");
    cluster.api.add_pod(running_pod(
        "shop",
        "web-1",
        &[("app", &target.pod_reference(), true)],
    ));
    (cluster, Agent::start())
}

#[test]
fn sessions_go_through_port_forwards_many_at_once_or_straight_to_the_node() {
    let target = Target::start("exec sleep 3600");
    let (cluster, agent) = cluster_with(&target);
    // Four sessions from one workstation at once, each with a port-forward of its own.
    let children: Vec<_> = (0..4)
        .map(|i| {
            cluster
                .debug(
                    agent.port,
                    &[
                        "web-1",
                        "--",
                        "sh",
                        "-c",
                        &format!("sleep 1; echo session-{i}"),
                    ],
                )
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), format!("session-{i}\n"));
    }
    // The node's IP, as before.
    let out = run(
        &mut cluster.debug(
            agent.port,
            &["--connect", "direct", "web-1", "--", "echo", "direct"],
        ),
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "direct\n");
    // The pull's progress goes the same way as the session (the image is present: no bar,
    // but the request is made): an agent reached only through the port-forward serves both.
    assert!(
        agent.log().contains("debug session started"),
        "{}",
        agent.log()
    );
}

#[test]
fn no_agent_on_the_node_or_one_not_ready_says_what_to_do() {
    let target = Target::start("exec sleep 3600");
    let (cluster, agent) = cluster_with(&target);
    cluster
        .api
        .add_pod(agent_pod("stand-in-node", "127.0.0.1", false));
    let out = run(
        &mut cluster.debug(agent.port, &["web-1", "--", "true"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("the kubectl-debug agent on node \"stand-in-node\" (pod kubectl-debug/kubectl-debug-agent-stand-in-node) is not ready: Pending (ContainersNotReady: containers with unready status: [agent])"),
        "{err}"
    );
    cluster
        .api
        .remove_pod(AGENT_NAMESPACE, "kubectl-debug-agent-stand-in-node");
    // (Without --agentless=never, an agent would be started on demand: tests/agentless.rs.)
    let out = run(
        &mut cluster.debug(agent.port, &["--agentless=never", "web-1", "--", "true"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("no kubectl-debug agent runs on node \"stand-in-node\" (no pod labelled app.kubernetes.io/name=kubectl-debug-agent in namespace kubectl-debug); install it with: kubectl apply -k")
            && err.contains("--agentless"),
        "{err}"
    );
    // Where the agents run is configurable.
    let mut moved = agent_pod("stand-in-node", "127.0.0.1", true);
    moved.metadata.namespace = Some("tools".into());
    moved.metadata.labels = Some([("app".to_owned(), "dbg".to_owned())].into());
    cluster.api.add_pod(moved);
    let out = run(
        &mut cluster.debug(
            agent.port,
            &[
                "--agent-namespace",
                "tools",
                "--agent-selector",
                "app=dbg",
                "web-1",
                "--",
                "echo",
                "found",
            ],
        ),
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "found\n");
    support::assert_removed_soon(|| target.leftovers());
}

#[test]
fn an_api_server_that_refuses_is_named_as_kubectl_names_it() {
    // A port nothing listens on.
    let port = support::free_port();
    let dir = support::Scratch::new("refused");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{port}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\nusers:\n- name: u\n  user: {{token: t}}\n"
        ),
    )
    .unwrap();
    for args in [
        &["web-1", "--", "true"][..],
        &["list"],
        &["rm", "web-1", "--all"],
    ] {
        let out = run(
            plugin().arg("--kubeconfig").arg(&kubeconfig).args(args),
            b"",
        );
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!(
                "The connection to the server 127.0.0.1:{port} was refused - did you specify the right host or port?"
            )),
            "{args:?}: {err}"
        );
        assert!(!err.contains("ServiceError"), "{err}");
    }
}

#[test]
fn the_plugin_config_file_sets_defaults_that_flags_override() {
    let target = Target::start("exec sleep 3600");
    let (cluster, agent) = cluster_with(&target);
    let dir = support::Scratch::new("plugin-config");
    let config = dir.join("debug-config");
    std::fs::write(
        &config,
        format!(
            "agentPort: {}\ncommand: [echo, from-the-file]\nretain: true\n",
            agent.port
        ),
    )
    .unwrap();
    // No --agent-port: the file's. Its command, and --retain=false beating its retain.
    let mut command = plugin();
    command
        .env("KUBECTL_DEBUG_CONFIG", &config)
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args(["web-1", "--retain=false"]);
    let out = run(&mut command, b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "from-the-file\n");
    assert!(
        !text(&out.stderr).contains("is kept"),
        "{}",
        text(&out.stderr)
    );
    support::assert_removed_soon(|| target.leftovers());
    // A typo in the file is an error naming it and the key.
    std::fs::write(&config, "retian: true\n").unwrap();
    let out = run(
        plugin()
            .env("KUBECTL_DEBUG_CONFIG", &config)
            .arg("--kubeconfig")
            .arg(&cluster.kubeconfig)
            .args(["web-1", "--", "true"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("retian") && err.contains(&config.display().to_string()),
        "{err}"
    );
}

/// Runs `script` in a real bash with the plugin's directory first on PATH (the real kubectl
/// stays on it) and `KUBECONFIG` set.
fn bash(cluster: &Cluster, script: &str) -> std::process::Output {
    let plugin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_kubectl-debug"))
        .parent()
        .unwrap()
        .to_owned();
    let path = format!(
        "{}:{}",
        plugin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("bash")
        .args(["--norc", "--noprofile", "-c", script])
        .env("PATH", path)
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("DOCKER_HOST", support::docker_host())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn shell_init_sends_kubectl_debug_here_and_the_rest_to_kubectl() {
    let target = Target::start("exec sleep 3600");
    let (cluster, agent) = cluster_with(&target);
    let init = "source <(kubectl-debug shell-init bash)";
    // Ours: a pod.
    let out = bash(
        &cluster,
        &format!(
            "{init}; kubectl debug --agent-port {} web-1 -- echo through-kubectl",
            agent.port
        ),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "through-kubectl\n");
    // Ours: a verb.
    let out = bash(
        &cluster,
        &format!("{init}; kubectl debug list --agent-port {}", agent.port),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // The session above may still be being removed: a table, or none.
    assert!(
        text(&out.stderr).contains("No debug containers found")
            || text(&out.stdout).starts_with("POD "),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // The help is ours, and says how to reach the built-in.
    let out = bash(&cluster, &format!("{init}; kubectl debug --help"));
    let help = text(&out.stdout);
    assert!(
        help.contains("kubectl-debug") && help.contains("command kubectl debug --help"),
        "{help}"
    );
    // kubectl's own: other commands, and the built-in's forms.
    let out = bash(&cluster, &format!("{init}; kubectl get pods -o name"));
    assert_eq!(text(&out.stdout).trim(), "pod/web-1");
    for built_in in [
        "node/stand-in-node -it --image=busybox",
        "web-1 -it --copy-to=web-1-copy --image=busybox",
        "web-1 --profile=general --image=busybox",
    ] {
        let out = bash(&cluster, &format!("{init}; kubectl debug {built_in}"));
        let err = text(&out.stderr);
        // The stand-in serves neither nodes nor ephemeral containers: kubectl's own error.
        assert!(
            !err.contains("kubectl-debug") && out.status.code() != Some(0),
            "{built_in}: {err}"
        );
    }
}

#[test]
fn completions_load_into_bash_and_zsh_and_complete_verbs_flags_and_pods() {
    let cluster = Cluster::new("shop");
    cluster
        .api
        .add_pod(running_pod("shop", "web-1", &[("app", "docker://x", true)]));
    let complete = |words: &str| {
        let out = bash(
            &cluster,
            &format!(
                "source <(kubectl-debug completion bash); COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); COMP_LINE=\"{words}\"; COMP_POINT=${{#COMP_LINE}}; _kubectl_debug_with_pods kubectl-debug \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\""
            ),
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    assert!(complete("kubectl-debug li").lines().any(|l| l == "list"));
    assert!(
        complete("kubectl-debug list --all-n")
            .lines()
            .any(|l| l == "--all-namespaces")
    );
    assert!(
        complete("kubectl-debug we").lines().any(|l| l == "web-1"),
        "pods from the cluster"
    );
    assert!(
        complete("kubectl-debug attach we")
            .lines()
            .any(|l| l == "web-1")
    );
    if let Ok(zsh) = Command::new("zsh")
        .args(["-f", "-c", "autoload -U compinit && compinit -u && source <(\"$KDBG\" completion zsh) && print -r -- ${+functions[_kubectl-debug]}"])
        .env("KDBG", env!("CARGO_BIN_EXE_kubectl-debug"))
        .output()
    {
        assert_eq!(text(&zsh.stdout).trim(), "1", "{}", text(&zsh.stderr));
    }
}

#[test]
fn version_metrics_and_each_verbs_help() {
    let target = Target::start("exec sleep 3600");
    let (cluster, agent) = cluster_with(&target);
    let out = run(
        &mut cluster.debug(agent.port, &["web-1", "--", "echo", "counted"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "counted\n");
    let out = run(
        &mut cluster.debug(agent.port, &["version", "-o", "json"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let version: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(version["clientVersion"], env!("CARGO_PKG_VERSION"));
    let agents = version["agents"].as_array().unwrap();
    assert!(
        agents
            .iter()
            .any(|a| a["node"] == "stand-in-node" && a["runtime"] == "docker"),
        "{version}"
    );
    // Prometheus' text format, counting the session above.
    assert_eq!(
        agent
            .metric("kubectl_debug_agent_sessions_total{runtime=\"docker\",outcome=\"completed\"}"),
        1
    );
    // "counted\n" out, nothing in.
    assert_eq!(agent.metric("kubectl_debug_agent_relayed_bytes_total"), 8);
    // Each verb's help shows the flags that apply to it.
    let help = |args: &[&str]| text(&run(plugin().args(args), b"").stdout);
    let local = help(&["local", "--help"]);
    for flag in [
        "--kubeconfig",
        "--namespace",
        "--context",
        "--agent-port",
        "--connect",
    ] {
        assert!(!local.contains(flag), "local --help lists {flag}:\n{local}");
    }
    let list = help(&["list", "--help"]);
    for flag in [
        "--kubeconfig",
        "--namespace",
        "--connect",
        "--agent-namespace",
    ] {
        assert!(list.contains(flag), "list --help lacks {flag}:\n{list}");
    }
    // -t without a terminal: kubectl's message, and the session goes on.
    let out = run(
        &mut cluster.debug(agent.port, &["web-1", "-t", "--", "echo", "no-tty"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "no-tty\n");
    assert!(
        text(&out.stderr)
            .contains("Unable to use a TTY - input is not a terminal or the right kind of file")
    );
}
