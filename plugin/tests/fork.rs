//! `--fork`: a pod whose container exits at once, on an image with no shell, debugged through
//! a copy of it whose container holds still. The API stand-in runs both pods as real
//! containers on the test Docker engine, with the kubelet's restarts (CrashLoopBackOff).

use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use kdbg_testkit as support;
use support::apiserver::{AGENT_NAMESPACE, Cluster, NODE, NodeRuntime, PodSecurity};
use support::engine::{ContainerdEngine, DockerEngine, Engine};
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
        support::import_image(&root, &image, &["ENTRYPOINT [\"/app\"]"]);
        let _ = std::fs::remove_dir_all(&root);
    }
    image
}

/// A stand-in cluster with namespace `shop` whose node runs pods on an engine, that node's
/// agent, and a scratch directory.
struct World {
    cluster: Cluster,
    agent: Agent,
    dir: PathBuf,
    /// The debug image, on the node's engine.
    tools: String,
}

impl World {
    /// On the test Docker engine.
    fn new(tag: &str) -> World {
        World::on(&DockerEngine, tag)
    }

    /// On `engine`, whose images the pods' specs name (the crashing image, the test image and
    /// the agent's image, which brings the hold) it is given.
    fn on(engine: &dyn Engine, tag: &str) -> World {
        let dir = std::env::temp_dir().join(format!(
            "kdbg-fork-{tag}-{}-{}",
            engine.name(),
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (runtime, tools) = if engine.name() == "docker" {
            (NodeRuntime::Docker, support::image())
        } else {
            for image in [
                crashing_image(),
                support::image(),
                support::ondemand_image(),
            ] {
                support::import_to_containerd(&image);
            }
            (NodeRuntime::Containerd, support::ctd_image())
        };
        World {
            cluster: Cluster::with_runtime("shop", runtime),
            agent: engine.agent(""),
            dir,
            tools,
        }
    }

    /// `kubectl apply` of `yaml`, which must succeed.
    fn apply(&self, yaml: &str) {
        let manifest = self.dir.join("manifest.yaml");
        std::fs::write(&manifest, yaml).unwrap();
        let applied = self
            .cluster
            .kubectl(&["apply", "-f", manifest.to_str().unwrap()]);
        assert!(applied.status.success(), "{}", text(&applied.stderr));
    }

    /// `kubectl-debug -n shop POD FLAGS --agent-image .. --image .. -- COMMAND`.
    fn fork(&self, pod: &str, flags: &[&str], command: &[&str]) -> Command {
        let hold = support::ondemand_image();
        let mut args = vec!["-n", "shop", pod];
        args.extend_from_slice(flags);
        args.extend(["--agent-image", &hold, "--image", &self.tools, "--"]);
        args.extend_from_slice(command);
        let mut cmd = self.cluster.debug(self.agent.port, &args);
        cmd.stdin(Stdio::null());
        cmd
    }

    /// The copies in `shop`, as `kubectl get -o name` prints them.
    fn copies(&self) -> String {
        self.cluster
            .pods_selected("shop", "debug.kubectl-debug.io/copy=true")
    }

    fn assert_no_copies_soon(&self) {
        eventually(Duration::from_secs(60), "the copy to go", || {
            self.copies().is_empty()
        });
    }

    /// `kubectl get pod NAME -n shop -o jsonpath=PATH`.
    fn get(&self, name: &str, path: &str) -> String {
        let out = self.cluster.kubectl(&[
            "get",
            "pod",
            name,
            "-n",
            "shop",
            "-o",
            &format!("jsonpath={path}"),
        ]);
        text(&out.stdout)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_crash_looping_pod_on_an_image_without_a_shell_is_debugged_through_a_copy() {
    a_crash_looping_pod_on_an_image_without_a_shell_is_debugged_through_a_copy_on(&DockerEngine);
}

#[test]
fn a_crash_looping_pod_on_an_image_without_a_shell_is_debugged_through_a_copy_on_containerd() {
    a_crash_looping_pod_on_an_image_without_a_shell_is_debugged_through_a_copy_on(
        &ContainerdEngine,
    );
}

fn a_crash_looping_pod_on_an_image_without_a_shell_is_debugged_through_a_copy_on(
    engine: &dyn Engine,
) {
    let world = World::on(engine, "crash");
    world.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: crash\n  namespace: shop\n  labels: {{app: crash, tier: back}}\nspec:\n  restartPolicy: Always\n  containers:\n  - name: app\n    image: {}\n    imagePullPolicy: Never\n    env: [{{name: FOO, value: bar}}]\n    workingDir: /\n    livenessProbe: {{exec: {{command: [/app, \"true\"]}}}}\n",
        crashing_image()
    ));
    let restarts = || {
        world
            .get("crash", "{.status.containerStatuses[0].restartCount}")
            .trim()
            .parse::<u32>()
            .unwrap_or(0)
    };
    // Restarted, and waiting out the back-off: between a restart and the status that says
    // the new container ended too, the pod reads Running and the agent finds it stopped.
    eventually(
        Duration::from_secs(60),
        "the pod to crash, restart and back off",
        || {
            restarts() >= 1
                && world
                    .get(
                        "crash",
                        "{.status.containerStatuses[0].state.waiting.reason}",
                    )
                    .trim()
                    == "CrashLoopBackOff"
        },
    );
    let original = world.get("crash", "{.metadata.uid}");

    // Without --fork: refused, saying how it ended and what to do.
    let refused = support::run(
        &mut world
            .cluster
            .debug(world.agent.port, &["-n", "shop", "crash", "--", "true"]),
        b"",
    );
    let said = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{said}");
    assert!(
        said.contains("it last exited with code 1") && said.contains("--fork"),
        "{said}"
    );

    // With --fork: the copy's container holds still; the session sees its env and files,
    // and the copy carries none of the original's labels.
    let script = "tr '\\0' '\\n' < /proc/1/environ | grep FOO; ls $TARGET_ROOT/app";
    let out = support::run(
        &mut world.fork("crash", &["--fork"], &["sh", "-c", script]),
        b"",
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(text(&out.stdout), "FOO=bar\n/target/app\n", "{stderr}");
    assert!(
        stderr.contains("debugging a copy of pod crash: shop/crash-debug-"),
        "{stderr}"
    );
    assert!(
        stderr
            .contains("The original container app ran: /app (the image's entrypoint /app; image ")
            && stderr.contains("kdbg-distroless:test), in /. Its files are at /target"),
        "{stderr}"
    );
    // The copy is gone; the original is the same pod, still restarting.
    world.assert_no_copies_soon();
    assert_eq!(world.get("crash", "{.metadata.uid}"), original);
}

#[test]
fn a_retained_copy_is_listed_attached_and_removed() {
    a_retained_copy_is_listed_attached_and_removed_on(&DockerEngine);
}

#[test]
fn a_retained_copy_is_listed_attached_and_removed_on_containerd() {
    a_retained_copy_is_listed_attached_and_removed_on(&ContainerdEngine);
}

fn a_retained_copy_is_listed_attached_and_removed_on(engine: &dyn Engine) {
    let world = World::on(engine, "retain");
    world.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: quick\n  namespace: shop\n  labels: {{app: quick, tier: back}}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: app\n    image: {}\n    imagePullPolicy: Never\n",
        crashing_image()
    ));
    let out = support::run(
        &mut world.fork(
            "quick",
            &["--fork", "--retain", "--fork-keep-labels", "tier"],
            &["true"],
        ),
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let kept = world.copies();
    assert!(kept.starts_with("pod/quick-debug-"), "{kept}");
    let copy = kept.trim().trim_start_matches("pod/").to_owned();
    let labels = world.get(&copy, "{.metadata.labels}");
    assert!(
        labels.contains("\"tier\":\"back\"") && !labels.contains("\"app\""),
        "{labels}"
    );
    // What selects the original by its app label (a Service, a ReplicaSet counting its
    // pods) does not see the copy.
    let selected =
        world
            .cluster
            .kubectl(&["get", "pods", "-n", "shop", "-l", "app=quick", "-o", "name"]);
    assert_eq!(text(&selected.stdout), "pod/quick\n");

    // `list` says whose copy it is: a COPY-OF column in wide, copyOf in JSON.
    let debug = |args: &[&str]| {
        let mut all = vec!["-n", "shop"];
        all.extend_from_slice(args);
        let out = support::run(&mut world.cluster.debug(world.agent.port, &all), b"");
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let wide = debug(&["list", "-o", "wide"]);
    let header = wide.lines().next().unwrap_or_default();
    let row = wide
        .lines()
        .find(|l| l.starts_with(&copy))
        .unwrap_or_else(|| panic!("{copy} not in {wide}"));
    assert!(
        header.ends_with("COPY-OF") && row.ends_with("quick"),
        "{wide}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&debug(&["list", &copy, "-o", "json"])).expect("list -o json is JSON");
    let item = &json["items"][0];
    assert_eq!(item["copyOf"], "quick", "{json}");
    let name = item["name"].as_str().unwrap().to_owned();

    // `attach` reaches its debug container, which sees the held container.
    let attached = debug(&[
        "attach",
        &copy,
        &name,
        "--",
        "sh",
        "-c",
        "ls /proc/1/root/app",
    ]);
    assert_eq!(attached, "/proc/1/root/app\n");

    // `rm --all` on the copy removes its retained debug container, then the copy.
    let said = debug(&["rm", &copy, "--all"]);
    assert!(
        said.contains("debug container ") && said.contains(&format!("copy {copy} deleted")),
        "{said}"
    );
    // The original is not a copy: rm --all leaves it be.
    assert!(!debug(&["rm", "quick", "--all"]).contains("deleted"));
    world.assert_no_copies_soon();
    assert_eq!(world.get("quick", "{.metadata.name}"), "quick");
}

#[test]
fn a_copy_killed_with_its_plugin_while_pending_is_deleted() {
    a_copy_killed_with_its_plugin_while_pending_is_deleted_on(&DockerEngine);
}

#[test]
fn a_copy_killed_with_its_plugin_while_pending_is_deleted_on_containerd() {
    a_copy_killed_with_its_plugin_while_pending_is_deleted_on(&ContainerdEngine);
}

fn a_copy_killed_with_its_plugin_while_pending_is_deleted_on(engine: &dyn Engine) {
    let world = World::on(engine, "killed");
    // An init container that never ends keeps the copy Pending, as a slow image pull would.
    world.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: slow\n  namespace: shop\nspec:\n  terminationGracePeriodSeconds: 1\n  initContainers:\n  - {{name: wait, image: {}, imagePullPolicy: Never, command: [sleep, '3600']}}\n  containers:\n  - {{name: app, image: {}, imagePullPolicy: Never}}\n",
        support::image(),
        crashing_image()
    ));
    let mut plugin = world
        .fork("slow", &["--fork", "-c", "app"], &["true"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(plugin.stderr.take().unwrap());
    let mut said = String::new();
    for line in stderr.lines() {
        let line = line.unwrap();
        said.push_str(&line);
        if line.contains("debugging a copy of pod slow") {
            break;
        }
    }
    assert!(world.copies().starts_with("pod/slow-debug-"), "{said}");
    // SIGKILL: the plugin cleans nothing up itself.
    plugin.kill().unwrap();
    plugin.wait().unwrap();
    world.assert_no_copies_soon();
    // The original is left as it was.
    assert_eq!(world.get("slow", "{.status.phase}"), "Pending");
}

#[test]
fn a_copy_that_cannot_start_says_why_and_is_deleted() {
    a_copy_that_cannot_start_says_why_and_is_deleted_on(&DockerEngine);
}

#[test]
fn a_copy_that_cannot_start_says_why_and_is_deleted_on_containerd() {
    a_copy_that_cannot_start_says_why_and_is_deleted_on(&ContainerdEngine);
}

fn a_copy_that_cannot_start_says_why_and_is_deleted_on(engine: &dyn Engine) {
    let world = World::on(engine, "noimage");
    world.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  restartPolicy: Never\n  containers:\n  - {{name: app, image: {}, imagePullPolicy: IfNotPresent}}\n",
        crashing_image()
    ));
    let missing = format!("{}/kdbg-missing:test", support::registry());
    let out = support::run(
        &mut world.fork(
            "web",
            &["--fork", "--set-image", &format!("app={missing}")],
            &["true"],
        ),
        b"",
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the copy's container app could not get its image {missing} (ErrImagePull: "
        )) && stderr.contains("--set-image")
            && stderr.contains("the copy was deleted"),
        "{stderr}"
    );
    world.assert_no_copies_soon();
}

#[test]
fn a_copy_refused_by_admission_says_why() {
    let world = World::new("admission");
    // Admitted before the namespace enforced the restricted level, as pods outlive labels.
    world.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  restartPolicy: Never\n  containers:\n  - {{name: app, image: {}, imagePullPolicy: Never}}\n",
        crashing_image()
    ));
    world
        .cluster
        .api
        .set_pod_security("shop", PodSecurity::Restricted);
    let out = support::run(&mut world.fork("web", &["--fork"], &["true"]), b"");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("namespace shop's Pod Security admission refused the copy of pod web: ")
            && stderr.contains("violates PodSecurity")
            && stderr.contains("pod-security.kubernetes.io/enforce"),
        "{stderr}"
    );
    assert!(world.copies().is_empty());
}

#[test]
fn a_user_who_may_not_create_pods_is_told_which_permission() {
    let world = World::new("rbac");
    world.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  restartPolicy: Never\n  containers:\n  - {{name: app, image: {}, imagePullPolicy: Never}}\n",
        crashing_image()
    ));
    support::users::users(&world.cluster);
    // alice may read pods and exec into them, but not create them.
    world
        .cluster
        .api
        .access
        .lock()
        .unwrap()
        .grant("alice", "get", "pods", "shop", "");
    let mut args = vec!["web", "--fork", "--agent-image"];
    let hold = support::ondemand_image();
    args.extend([hold.as_str(), "--", "true"]);
    let out = support::run(
        &mut support::users::as_user(
            &world.cluster,
            &world.dir,
            "alice-token",
            &world.agent,
            &args,
        ),
        b"",
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("you may not create the copy of pod web: --fork needs create, get and delete on pods in namespace shop"),
        "{stderr}"
    );
    assert!(world.copies().is_empty());
}

#[test]
fn a_pod_with_init_containers_and_a_sidecar_is_copied_whole_under_restricted_security() {
    a_pod_with_init_containers_and_a_sidecar_is_copied_whole_under_restricted_security_on(
        &DockerEngine,
    );
}

#[test]
fn a_pod_with_init_containers_and_a_sidecar_is_copied_whole_under_restricted_security_on_containerd()
 {
    a_pod_with_init_containers_and_a_sidecar_is_copied_whole_under_restricted_security_on(
        &ContainerdEngine,
    );
}

fn a_pod_with_init_containers_and_a_sidecar_is_copied_whole_under_restricted_security_on(
    engine: &dyn Engine,
) {
    let world = World::on(engine, "multi");
    world
        .cluster
        .api
        .set_pod_security("shop", PodSecurity::Restricted);
    let context = "{runAsNonRoot: true, runAsUser: 1000, allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}, seccompProfile: {type: RuntimeDefault}}";
    world.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: multi\n  namespace: shop\nspec:\n  terminationGracePeriodSeconds: 1\n  volumes: [{{name: work, emptyDir: {{}}}}]\n  initContainers:\n  - {{name: prepare, image: {busybox}, imagePullPolicy: Never, command: [sh, -c, 'echo prepared > /work/state'], volumeMounts: [{{name: work, mountPath: /work}}], securityContext: {context}}}\n  containers:\n  - {{name: sidecar, image: {busybox}, imagePullPolicy: Never, command: [sleep, '3600'], securityContext: {context}}}\n  - {{name: app, image: {app}, imagePullPolicy: Never, args: [serve, --port, '8080'], volumeMounts: [{{name: work, mountPath: /work}}], securityContext: {context}}}\n",
        busybox = support::image(),
        app = crashing_image(),
    ));
    let out = support::run(
        &mut world.fork(
            "multi",
            &["-c", "app", "--fork"],
            &[
                "sh",
                "-c",
                "cat /proc/1/root/work/state; awk '/^Uid/ {print $2}' /proc/1/status",
            ],
        ),
        b"",
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // The original's init container ran in the copy; the held container runs as its user.
    assert_eq!(text(&out.stdout), "prepared\n1000\n", "{stderr}");
    assert!(
        stderr.contains("The original container app ran: /app serve --port 8080 (the image's entrypoint /app and the pod's args; image "),
        "{stderr}"
    );
    world.assert_no_copies_soon();
}

#[test]
fn a_taken_name_is_passed_over() {
    let world = World::new("taken");
    let taken = world.cluster.kubectl(&[
        "run",
        "web-debug-aaaaa",
        "-n",
        "shop",
        "--image",
        &support::image(),
        "--image-pull-policy",
        "Never",
        "--restart",
        "Never",
        "--",
        "sleep",
        "3600",
    ]);
    assert!(taken.status.success(), "{}", text(&taken.stderr));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let created = runtime.block_on(async {
        let kubeconfig = kube::config::Kubeconfig::read_from(&world.cluster.kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
            kube::Api::namespaced(kube::Client::try_from(config).unwrap(), "shop");
        let suffixes = ["aaaaa", "bbbbb"].map(String::from).into_iter();
        let make = |name: &str| -> anyhow::Result<k8s_openapi::api::core::v1::Pod> {
            Ok(serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "shop"},
                "spec": {"containers": [{"name": "c", "image": support::image(), "imagePullPolicy": "Never", "command": ["sleep", "3600"]}]}
            }))?)
        };
        let created = kdbg_plugin::fork::create(&pods, "web", suffixes.clone(), make)
            .await
            .unwrap();
        // Every name taken: an error naming them and what to do.
        let all_taken = kdbg_plugin::fork::create(&pods, "web", suffixes, make)
            .await
            .unwrap_err()
            .to_string();
        (created.metadata.name.unwrap(), all_taken)
    });
    assert_eq!(created.0, "web-debug-bbbbb");
    assert!(
        created
            .1
            .contains("web-debug-aaaaa, web-debug-bbbbb are taken")
            && created.1.contains("rm COPY --all"),
        "{}",
        created.1
    );
    // The namesake is untouched.
    assert_eq!(
        world.get("web-debug-aaaaa", "{.metadata.name}"),
        "web-debug-aaaaa"
    );
}

#[test]
fn a_copy_is_debugged_through_an_agent_started_on_demand() {
    let world = World::new("ondemand");
    // No DaemonSet agent on the node.
    world
        .cluster
        .api
        .remove_pod(AGENT_NAMESPACE, &format!("kubectl-debug-agent-{NODE}"));
    let docker = support::docker_host();
    let config = world.dir.join("debug-config");
    std::fs::write(
        &config,
        format!(
            "agentImage: {}\nagentImagePullPolicy: Never\nagentStartTimeout: 60s\nagentExitWhenIdle: 2s\nagentRuntimeSockets: {{docker: {}, containerd: {}}}\n",
            support::ondemand_image(),
            docker.strip_prefix("unix://").unwrap_or(&docker),
            support::containerd_socket(),
        ),
    )
    .unwrap();
    world.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: crash\n  namespace: shop\nspec:\n  restartPolicy: Never\n  containers:\n  - {{name: app, image: {}, imagePullPolicy: Never, command: [/app, serve]}}\n",
        crashing_image()
    ));
    let mut cmd = support::plugin();
    cmd.arg("--kubeconfig")
        .arg(&world.cluster.kubeconfig)
        .arg("--plugin-config")
        .arg(&config)
        .args([
            "-n",
            "shop",
            "crash",
            "--fork",
            "--image",
            &support::image(),
        ])
        .args(["--", "ls", "/proc/1/root/app"])
        .stdin(Stdio::null());
    let out = support::run(&mut cmd, b"");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(text(&out.stdout), "/proc/1/root/app\n", "{stderr}");
    assert!(
        stderr.contains("starting an agent on node")
            && stderr.contains("The original container app ran: /app serve."),
        "{stderr}"
    );
    world.assert_no_copies_soon();
    eventually(Duration::from_secs(60), "the agent's pod to go", || {
        world
            .cluster
            .pods_selected(AGENT_NAMESPACE, "app.kubernetes.io/component=on-demand")
            .is_empty()
    });
}
