//! `kubectl-debug node/NAME` on both real engines, against the API stand-in's node with an
//! agent that reviews every caller: dave (who may `create nodes/proxy`) gets a shell in the
//! node's own namespaces with its root filesystem at /host; alice (who may debug pods, not
//! the node) is refused with a 403 naming the permission and nothing is created; an unknown
//! node is an error naming it; and `--retain`, `list node/NAME`, `attach node/NAME NAME` and
//! `rm node/NAME --all` work as they do for pods. With no agent on the node, an on-demand
//! agent (`--agentless`) does the same.

use kdbg_testkit as support;

use support::apiserver::access::AGENT_TOKEN;
use support::apiserver::{AGENT_NAMESPACE, Cluster, NODE, NodeRuntime};
use support::engine::{ContainerdEngine, DockerEngine, Engine};
use support::users::{debug_as as debug, kubernetes_auth, scratch, users};
use support::{DEBUG_NAMESPACE, assert_removed_soon, ctr, docker, run, text};

/// The debug containers of the node itself on `engine` (those labelled with the node).
fn node_containers(engine: &dyn Engine) -> Vec<String> {
    let key = kdbg_runtimes::label::NODE;
    let out = match engine.name() {
        "docker" => docker(&["ps", "-aq", "--filter", &format!("label={key}={NODE}")]),
        _ => ctr(
            DEBUG_NAMESPACE,
            &[
                "containers",
                "ls",
                "-q",
                &format!("labels.\"{key}\"==\"{NODE}\""),
            ],
        ),
    };
    text(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// What this machine (the stand-in's node) says of itself: its host name and the PID
/// namespace of its kernel's threads (`kthreadd`, PID 2, always in the node's namespaces; PID
/// 1 here, the sandbox's init, refuses to be inspected from a container's exec'd process).
fn this_node() -> String {
    let hostname = std::fs::read_to_string("/etc/hostname").unwrap();
    let pid_ns = std::fs::read_link("/proc/2/ns/pid").unwrap();
    format!("{}\n{}\n", hostname.trim(), pid_ns.display())
}

fn node_debugging(engine: &dyn Engine) {
    let name = engine.name();
    let dir = scratch(&format!("node-{name}"));
    let cluster = Cluster::new("shop");
    users(&cluster);
    let kubeconfig = cluster
        .api
        .kubeconfig_with_token(&dir, "agent.kubeconfig", AGENT_TOKEN);
    let agent = engine.agent(&kubernetes_auth(&kubeconfig, ""));
    let node = format!("node/{NODE}");
    let sees = "cat /host/etc/hostname; readlink /proc/2/ns/pid";

    // dave may debug the node: a shell in its namespaces, its files at /host.
    let (code, out, err) = debug(
        &cluster,
        &dir,
        "dave-token",
        &agent,
        &[&node, "--", "sh", "-c", sees],
    );
    assert_eq!(code, Some(0), "{out}{err}\nagent:\n{}", agent.log());
    assert_eq!(out, this_node(), "{err}");
    assert!(
        agent.log().contains(&format!("node/{NODE}")),
        "the audit line names the node:\n{}",
        agent.log()
    );
    // The node's own tools, through its root.
    let (code, out, err) = debug(
        &cluster,
        &dir,
        "dave-token",
        &agent,
        &[&node, "--", "chroot", "/host", "cat", "/etc/hostname"],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out, this_node().lines().next().unwrap().to_owned() + "\n");
    assert_removed_soon(|| node_containers(engine));

    // alice may debug pods, not the node: 403 naming the permission, nothing created.
    let (code, _, err) = debug(
        &cluster,
        &dir,
        "alice-token",
        &agent,
        &[&node, "--", "true"],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "Forbidden: user \"alice\" may not create nodes/proxy of node \"{NODE}\""
        )),
        "{err}"
    );
    assert!(node_containers(engine).is_empty());

    // cp reads and writes the node's files, under the same check.
    let copied = dir.join("hostname");
    let remote = format!("{node}:/etc/hostname");
    let (code, out, err) = debug(
        &cluster,
        &dir,
        "dave-token",
        &agent,
        &["cp", &remote, copied.to_str().unwrap()],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        std::fs::read_to_string(&copied).unwrap(),
        std::fs::read_to_string("/etc/hostname").unwrap()
    );
    let (code, _, err) = debug(
        &cluster,
        &dir,
        "alice-token",
        &agent,
        &["cp", &remote, dir.join("refused").to_str().unwrap()],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("may not create nodes/proxy"), "{err}");
    assert!(!dir.join("refused").exists());
    assert_removed_soon(|| node_containers(engine));

    // A node the cluster does not have: named, with how to list the nodes.
    let (code, _, err) = debug(
        &cluster,
        &dir,
        "dave-token",
        &agent,
        &["node/no-such-node", "--", "true"],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(
            "nodes \"no-such-node\" not found; kubectl get nodes lists the cluster's nodes"
        ),
        "{err}"
    );

    // Kept, listed, attached to, removed, with node/NAME in place of a pod.
    let kept = format!("node-{name}-kept");
    let (code, _, err) = debug(
        &cluster,
        &dir,
        "dave-token",
        &agent,
        &[&node, "--retain", "--name", &kept, "--", "true"],
    );
    assert_eq!(code, Some(0), "{err}\nagent:\n{}", agent.log());
    assert!(
        err.contains(&format!("kubectl-debug attach {node} {kept}")),
        "{err}"
    );
    let (code, out, err) = debug(&cluster, &dir, "dave-token", &agent, &["list", &node]);
    assert_eq!(code, Some(0), "{err}");
    let row = out
        .lines()
        .find(|l| l.contains(&kept))
        .unwrap_or_else(|| panic!("{kept} not listed:\n{out}{err}"));
    assert!(row.contains(&node), "{out}");
    let (code, _, err) = debug(&cluster, &dir, "alice-token", &agent, &["list", &node]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("nodes/proxy"), "{err}");
    let (code, out, err) = debug(
        &cluster,
        &dir,
        "dave-token",
        &agent,
        &["attach", &node, &kept, "--", "sh", "-c", sees],
    );
    assert_eq!(code, Some(0), "{err}\nagent:\n{}", agent.log());
    assert_eq!(out, this_node(), "{err}");
    let (code, out, err) = debug(
        &cluster,
        &dir,
        "dave-token",
        &agent,
        &["rm", &node, "--all"],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&format!("{kept} removed")), "{out}{err}");
    assert_removed_soon(|| node_containers(engine));
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_node_is_debugged_with_nodes_proxy_on_docker() {
    node_debugging(&DockerEngine);
}

#[test]
fn a_node_is_debugged_with_nodes_proxy_on_containerd() {
    node_debugging(&ContainerdEngine);
}

/// With no agent on the node, `--agentless` starts one there for the command (its token is
/// the authorisation: its starter may debug the node), and deletes it afterwards.
fn node_debugging_on_demand(engine: &dyn Engine) {
    let name = engine.name();
    let runtime = match name {
        "docker" => NodeRuntime::Docker,
        _ => {
            // The stand-in runs the agent's pod on containerd: its image must be there.
            support::import_to_containerd(&support::ondemand_image());
            NodeRuntime::Containerd
        }
    };
    let cluster = Cluster::with_runtime("shop", runtime);
    cluster
        .api
        .remove_pod(AGENT_NAMESPACE, &format!("kubectl-debug-agent-{NODE}"));
    let dir = scratch(&format!("node-ondemand-{name}"));
    let docker = support::docker_host();
    let docker = docker.strip_prefix("unix://").unwrap_or(&docker).to_owned();
    let config = dir.join("debug-config");
    std::fs::write(
        &config,
        format!(
            "agentImage: {}\nagentImagePullPolicy: Never\nagentStartTimeout: 60s\nagentExitWhenIdle: 2s\nagentRuntimeSockets: {{docker: {docker}, containerd: {}}}\n",
            support::ondemand_image(),
            support::containerd_socket(),
        ),
    )
    .unwrap();
    let image = match name {
        "docker" => support::image(),
        _ => support::ctd_image(),
    };
    let out = run(
        support::plugin()
            .arg("--kubeconfig")
            .arg(&cluster.kubeconfig)
            .arg("--plugin-config")
            .arg(&config)
            .args(["--agentless", &format!("node/{NODE}"), "--image", &image])
            .args([
                "--",
                "sh",
                "-c",
                "cat /host/etc/hostname; readlink /proc/2/ns/pid",
            ]),
        b"",
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{}{err}", text(&out.stdout));
    assert_eq!(text(&out.stdout), this_node(), "{err}");
    assert!(
        err.contains(&format!("starting an agent on node {NODE}")),
        "{err}"
    );
    assert_removed_soon(|| node_containers(engine));
    support::eventually(
        std::time::Duration::from_secs(60),
        "the on-demand agent's pod to go",
        || {
            let out = cluster.kubectl(&[
                "get",
                "pods",
                "-n",
                AGENT_NAMESPACE,
                "-l",
                "app.kubernetes.io/component=on-demand",
                "-o",
                "name",
            ]);
            out.status.success() && text(&out.stdout).trim().is_empty()
        },
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_node_is_debugged_by_an_on_demand_agent_on_docker() {
    node_debugging_on_demand(&DockerEngine);
}

#[test]
fn a_node_is_debugged_by_an_on_demand_agent_on_containerd() {
    node_debugging_on_demand(&ContainerdEngine);
}
