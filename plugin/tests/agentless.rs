//! Agentless mode: with no agent on the target's node, the plugin starts one as a pod on that
//! node for the command and deletes it afterwards. The API stand-in runs the pod as a real
//! container of the agent's image (scripts/agent-image's, from this tree) on the test engine,
//! its port-forward reaching into the pod's own network namespace, as a kubelet would.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kdbg_testkit as support;
use support::apiserver::{AGENT_NAMESPACE, Cluster, NODE, running_pod};
use support::engine::{ContainerdEngine, DockerEngine, Engine, Targeted};
use support::{eventually, text, within};

const ON_DEMAND: &str = "app.kubernetes.io/component=on-demand";

/// A stand-in cluster with pod shop/web on `engine` and no agent on its node, and a plugin
/// configuration that points on-demand agents at the test world's sockets and image.
struct World {
    cluster: Cluster,
    web: Box<dyn Targeted>,
    config: PathBuf,
    dir: PathBuf,
    image: String,
}

impl World {
    fn new(engine: &dyn Engine, tag: &str, extra: &str) -> World {
        let cluster = Cluster::new("shop");
        // No DaemonSet agent on the node.
        cluster
            .api
            .remove_pod(AGENT_NAMESPACE, &format!("kubectl-debug-agent-{NODE}"));
        let web = engine.pod_target("shop", "web", false, "exec sleep 3600");
        cluster.api.add_pod(running_pod(
            "shop",
            "web",
            &[("app", &web.pod_reference(), true)],
        ));
        let dir = std::env::temp_dir().join(format!("kdbg-agentless-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let docker = support::docker_host();
        let docker = docker.strip_prefix("unix://").unwrap_or(&docker);
        let config = dir.join("debug-config");
        std::fs::write(
            &config,
            format!(
                "agentImage: {}\nagentImagePullPolicy: Never\nagentStartTimeout: 60s\nagentExitWhenIdle: 2s\nagentRuntimeSockets: {{docker: {docker}, containerd: {}}}\n{extra}",
                support::ondemand_image(),
                support::containerd_socket(),
            ),
        )
        .unwrap();
        let image = if engine.name() == "docker" {
            support::image()
        } else {
            support::ctd_image()
        };
        World {
            cluster,
            web,
            config,
            dir,
            image,
        }
    }

    /// `kubectl-debug ARGS` against the stand-in, with the world's plugin configuration.
    fn debug(&self, args: &[&str]) -> Command {
        let mut cmd = support::plugin();
        cmd.arg("--kubeconfig")
            .arg(&self.cluster.kubeconfig)
            .arg("--plugin-config")
            .arg(&self.config)
            .args(["-n", "shop"])
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// `kubectl-debug web --image IMAGE -- COMMAND...`, started in the background.
    fn session(&self, command: &[&str], log: &Path) -> Child {
        let mut args = vec!["web", "--image", &self.image, "--"];
        args.extend_from_slice(command);
        self.debug(&args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap()
    }

    /// [`World::session`], once its on-demand agent runs and its debug container exists;
    /// the agent's pod.
    fn session_on_its_agent(&self, command: &[&str], log: &Path) -> (Child, String) {
        let session = self.session(command, log);
        let pod = self.running_agent();
        eventually(
            Duration::from_secs(30),
            "the session's debug container",
            || self.web.leftovers().len() == 1,
        );
        (session, pod)
    }

    /// The on-demand agents' pods and their phases.
    fn agents(&self) -> Vec<(String, String)> {
        let out = self.cluster.kubectl(&[
            "get",
            "pods",
            "-n",
            AGENT_NAMESPACE,
            "-l",
            ON_DEMAND,
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.status.phase}{\"\\n\"}{end}",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(n, p)| (n.to_owned(), p.to_owned()))
            .collect()
    }

    /// Waits until no on-demand agent's pod is left.
    fn assert_no_agents_soon(&self) {
        eventually(
            Duration::from_secs(60),
            "the on-demand agent's pod to go",
            || self.agents().is_empty(),
        );
    }

    /// The one on-demand agent's pod, once it runs.
    fn running_agent(&self) -> String {
        let mut found = String::new();
        eventually(
            Duration::from_secs(60),
            "an on-demand agent's pod to run",
            || match self.agents().as_slice() {
                [(name, phase)] if phase == "Running" => {
                    found.clone_from(name);
                    true
                }
                _ => false,
            },
        );
        found
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self.cluster.kubectl(&[
            "delete",
            "pods",
            "-n",
            AGENT_NAMESPACE,
            "-l",
            ON_DEMAND,
            "--grace-period=0",
        ]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn debugs_with_no_agent_installed_and_leaves_nothing(engine: &dyn Engine) {
    let world = World::new(engine, &format!("main-{}", engine.name()), "");
    let out = support::run(
        &mut world.debug(&[
            "web",
            "--image",
            &world.image,
            "--",
            "echo",
            "from-agentless",
        ]),
        b"",
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(text(&out.stdout), "from-agentless\n");
    assert!(
        stderr.contains(&format!(
            "starting an agent on node {NODE} (pod kubectl-debug/kubectl-debug-agent-{NODE}-"
        )),
        "{stderr}"
    );
    world.assert_no_agents_soon();
    support::assert_removed_soon(|| world.web.leftovers());
}

#[test]
fn debugs_with_no_agent_installed_and_leaves_nothing_on_docker() {
    debugs_with_no_agent_installed_and_leaves_nothing(&DockerEngine);
}

#[test]
fn debugs_with_no_agent_installed_and_leaves_nothing_on_containerd() {
    debugs_with_no_agent_installed_and_leaves_nothing(&ContainerdEngine);
}

#[test]
fn never_says_how_to_start_one() {
    let world = World::new(&DockerEngine, "never", "");
    let out = support::run(
        &mut world.debug(&[
            "web",
            "--agentless=never",
            "--image",
            &world.image,
            "--",
            "true",
        ]),
        b"",
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("no kubectl-debug agent runs on node \"{NODE}\""))
            && stderr.contains("--agentless"),
        "{stderr}"
    );
    assert!(world.agents().is_empty());
}

#[test]
fn an_absent_agent_image_is_named_and_its_pod_deleted() {
    let world = World::new(&DockerEngine, "noimage", "");
    let out = support::run(
        &mut world.debug(&[
            "web",
            "--agent-image",
            "kdbg-missing-agent:test",
            "--image",
            &world.image,
            "--",
            "true",
        ]),
        b"",
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the on-demand agent's image kdbg-missing-agent:test could not be pulled")
            && stderr.contains("--agent-image"),
        "{stderr}"
    );
    world.assert_no_agents_soon();
    assert!(world.web.leftovers().is_empty());
}

#[test]
fn only_the_plugins_token_opens_the_agent() {
    let world = World::new(&DockerEngine, "token", "");
    let log = world.dir.join("session.log");
    let (mut session, pod) = world.session_on_its_agent(&["sleep", "60"], &log);
    // A port-forward of our own (the user may make one: the API server allows it), without
    // the token or with another: 401, and nothing is created.
    let mut forward = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&world.cluster.kubeconfig)
        .args([
            "-n",
            AGENT_NAMESPACE,
            "port-forward",
            &format!("pod/{pod}"),
            ":10027",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let port = forwarded_port(&mut forward);
    for token in [
        None,
        Some("forged"),
        Some("0000000000000000000000000000000000000000000000000000000000000000"),
    ] {
        for path in [
            "/version",
            "/api/v1/containers",
            "/api/v1/pull?image=busybox",
        ] {
            let mut curl = Command::new("curl");
            curl.args(["-s", "-o", "/dev/null", "-w", "%{http_code}"]);
            if let Some(token) = token {
                curl.args(["-H", &format!("Authorization: Bearer {token}")]);
            }
            let out = curl
                .arg(format!("http://127.0.0.1:{port}{path}"))
                .output()
                .unwrap();
            assert_eq!(text(&out.stdout), "401", "{token:?} {path}");
        }
    }
    assert_eq!(
        world.web.leftovers().len(),
        1,
        "a refused caller created something: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let _ = forward.kill();
    let _ = forward.wait();
    let _ = session.kill();
    let _ = session.wait();
}

/// The local port `kubectl port-forward` says it listens on.
fn forwarded_port(forward: &mut Child) -> u16 {
    use std::io::BufRead as _;
    let stdout = forward.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    // "Forwarding from 127.0.0.1:PORT -> 10027"
    let line = lines.next().unwrap().unwrap();
    let port = line
        .split_once("127.0.0.1:")
        .and_then(|(_, rest)| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("kubectl port-forward said {line:?}"));
    std::thread::spawn(move || for _ in lines {});
    port
}

#[test]
fn a_killed_plugins_agent_is_deleted_by_its_watchdog() {
    let world = World::new(&DockerEngine, "sigkill", "");
    let log = world.dir.join("session.log");
    let (mut session, _) = world.session_on_its_agent(&["sleep", "300"], &log);
    session.kill().unwrap(); // SIGKILL: nothing of the plugin runs after it
    session.wait().unwrap();
    support::assert_removed_soon(|| world.web.leftovers());
    world.assert_no_agents_soon();
}

#[test]
fn an_agent_whose_plugin_and_watchdog_were_killed_ends_by_itself_and_the_next_run_deletes_it() {
    let world = World::new(&DockerEngine, "sigkill2", "");
    let log = world.dir.join("session.log");
    let (mut session, pod) = world.session_on_its_agent(&["sleep", "300"], &log);
    // Both killed with SIGKILL: nothing of the plugin runs after it.
    let watchdog = support::watchdog_of(session.id()).expect("the plugin's watchdog");
    let killed = Command::new("kill")
        .args(["-KILL", &watchdog.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    session.kill().unwrap();
    session.wait().unwrap();
    // The session's peer is gone: its container goes, then (agentExitWhenIdle: 2s) the
    // agent exits 0 and its pod ends Succeeded.
    support::assert_removed_soon(|| world.web.leftovers());
    eventually(
        Duration::from_secs(60),
        "the agent's pod to succeed",
        || world.agents() == [(pod.clone(), "Succeeded".to_owned())],
    );
    // The next run deletes the finished pod of the earlier one.
    let out = support::run(
        &mut world.debug(&["web", "--image", &world.image, "--", "true"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    world.assert_no_agents_soon();
}

#[test]
fn a_pod_deleted_mid_session_ends_it_saying_so() {
    let world = World::new(&DockerEngine, "deleted", "");
    let log = world.dir.join("session.log");
    let (mut session, pod) = world.session_on_its_agent(&["sleep", "300"], &log);
    let out = world
        .cluster
        .kubectl(&["delete", "pod", "-n", AGENT_NAMESPACE, &pod]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        within(Duration::from_secs(60), || session
            .try_wait()
            .unwrap()
            .is_some()),
        "the session outlived its agent's pod"
    );
    let status = session.wait().unwrap();
    assert_ne!(status.code(), Some(0));
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(
        stderr.contains(&format!(
            "the on-demand agent's pod kubectl-debug/{pod} was deleted during the session"
        )),
        "{stderr}"
    );
    support::assert_removed_soon(|| world.web.leftovers());
}

#[test]
fn two_users_on_one_node_get_two_agents_and_sigterm_deletes_them() {
    let world = World::new(&DockerEngine, "two", "");
    let (a, b) = (world.dir.join("a.log"), world.dir.join("b.log"));
    let mut first = world.session(&["sleep", "300"], &a);
    let mut second = world.session(&["sleep", "300"], &b);
    eventually(
        Duration::from_secs(60),
        "two on-demand agents running",
        || {
            let agents = world.agents();
            agents.len() == 2 && agents.iter().all(|(_, phase)| phase == "Running")
        },
    );
    eventually(
        Duration::from_secs(30),
        "both sessions' debug containers",
        || world.web.leftovers().len() == 2,
    );
    for child in [&mut first, &mut second] {
        let pid = child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        assert!(
            within(Duration::from_secs(30), || child
                .try_wait()
                .unwrap()
                .is_some()),
            "the plugin did not end on SIGTERM"
        );
        assert_eq!(child.wait().unwrap().code(), Some(143));
    }
    world.assert_no_agents_soon();
    support::assert_removed_soon(|| world.web.leftovers());
}

#[test]
fn the_api_servers_refusals_say_what_to_do() {
    let world = World::new(&DockerEngine, "refusals", "");
    let attempt = |extra: &[&str], kubeconfig: Option<&Path>| {
        let mut cmd = support::plugin();
        cmd.arg("--kubeconfig")
            .arg(kubeconfig.unwrap_or(&world.cluster.kubeconfig))
            .arg("--plugin-config")
            .arg(&world.config)
            .args(["-n", "shop"])
            .args(extra)
            .args(["web", "--image", &world.image, "--", "true"]);
        let out = support::run(&mut cmd, b"");
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        text(&out.stderr)
    };
    // No such namespace.
    let said = attempt(&["--agent-namespace", "nope"], None);
    assert!(
        said.contains("namespace nope does not exist") && said.contains("deploy/agentless"),
        "{said}"
    );
    // A user who may not create pods there.
    support::users::users(&world.cluster);
    let bob = world
        .cluster
        .api
        .kubeconfig_with_token(&world.dir, "bob.kubeconfig", "bob-token");
    let said = attempt(&[], Some(&bob));
    assert!(
        said.contains("create, get and delete on pods and create on pods/portforward in namespace kubectl-debug"),
        "{said}"
    );
    // A namespace whose Pod Security level refuses host namespaces and hostPath volumes.
    world
        .cluster
        .api
        .set_pod_security(AGENT_NAMESPACE, support::apiserver::PodSecurity::Baseline);
    let said = attempt(&[], None);
    assert!(
        said.contains("label it pod-security.kubernetes.io/enforce=privileged")
            && said.contains("violates PodSecurity"),
        "{said}"
    );
    assert!(world.agents().is_empty());
    assert!(world.web.leftovers().is_empty());
}

#[test]
fn a_retained_container_outlives_its_agent_and_rm_starts_another_to_remove_it() {
    let world = World::new(&DockerEngine, "retain", "");
    let out = support::run(
        &mut world.debug(&["web", "--retain", "--image", &world.image, "--", "true"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // The agent's pod goes; the retained container stays.
    world.assert_no_agents_soon();
    assert_eq!(world.web.leftovers().len(), 1);
    // `rm` (and `list`, for one pod) start an agent of their own.
    let listed = support::run(&mut world.debug(&["list", "web"]), b"");
    assert_eq!(listed.status.code(), Some(0), "{}", text(&listed.stderr));
    assert!(
        text(&listed.stdout).contains("web-dbg-"),
        "{}",
        text(&listed.stdout)
    );
    let removed = support::run(&mut world.debug(&["rm", "web", "--all"]), b"");
    assert_eq!(removed.status.code(), Some(0), "{}", text(&removed.stderr));
    support::assert_removed_soon(|| world.web.leftovers());
    world.assert_no_agents_soon();
}

#[test]
fn a_list_over_nodes_asks_only_their_agents_and_names_the_others() {
    let cluster = Cluster::new("shop");
    let agent = support::Agent::start();
    let web = DockerEngine.pod_target("shop", "web", false, "exec sleep 3600");
    cluster.api.add_pod(running_pod(
        "shop",
        "web",
        &[("app", &web.pod_reference(), true)],
    ));
    // A pod on a node without an agent.
    cluster.api.add_pod(support::apiserver::pod_on_node(
        "shop",
        "db",
        &[("app", "docker://0123456789ab", true)],
        "node-b",
        "127.0.0.2",
    ));
    let out = support::run(&mut cluster.debug(agent.port, &["list"]), b"");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("warning: node node-b not asked: no kubectl-debug agent runs there; --agentless=always starts one on each for this command"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("not asked").count(), 1, "{stderr}");
    let pods = cluster.kubectl(&[
        "get",
        "pods",
        "-n",
        AGENT_NAMESPACE,
        "-l",
        ON_DEMAND,
        "-o",
        "name",
    ]);
    assert_eq!(text(&pods.stdout), "", "a list started an agent");
}

#[test]
fn an_on_demand_agent_leaves_other_agents_sessions_alone() {
    let world = World::new(&DockerEngine, "others", "");
    // Another agent's session on the node: `local`'s in-process agent, in this machine's PID
    // namespace.
    let local = support::plugin()
        .args(["local", &world.web.pod_reference(), "--image", &world.image])
        .args(["--", "sh", "-c", "sleep 6; echo survived"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "the local session's debug container",
        || world.web.leftovers().len() == 1,
    );
    // An agent started on demand (its reaper runs as it starts) with a session of its own.
    let out = support::run(
        &mut world.debug(&[
            "web",
            "--agentless=always",
            "--image",
            &world.image,
            "--",
            "true",
        ]),
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // The other session ran to its end.
    let local = local.wait_with_output().unwrap();
    assert_eq!(
        (local.status.code(), text(&local.stdout)),
        (Some(0), "survived\n".to_owned()),
        "{}",
        text(&local.stderr)
    );
    world.assert_no_agents_soon();
}
