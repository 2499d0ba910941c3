//! The stand-in's kubelet on the test world's containerd, checked as a user checks a
//! cluster: with the real kubectl, and `ctr` for what the node holds in `k8s.io`.

use super::*;
use crate::{ctd_image, ctr, import_to_containerd, registry};

/// A cluster on containerd whose namespace `shop` is the kubeconfig's, and a directory for
/// manifests (gone with the cluster).
fn cluster_on_containerd() -> (Cluster, PathBuf) {
    require_world();
    let cluster = Cluster::on_containerd("shop");
    let dir = cluster.dir.join("manifests");
    std::fs::create_dir_all(&dir).unwrap();
    (cluster, dir)
}

/// `ctr -n k8s.io` with `args`, which must succeed: its stdout.
fn ctr_ok(args: &[&str]) -> String {
    let out = ctr("k8s.io", args);
    assert!(out.status.success(), "ctr {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// containerd's containers of pod `shop/POD` (its sandbox's too) that `cluster` made.
fn ctd_containers_of(cluster: &Cluster, pod: &str) -> Vec<String> {
    let server = cluster.api.shared.kubelet.server();
    let filter =
        format!("labels.\"{POD_LABEL}\"==\"shop/{pod}\",labels.\"{SERVER_LABEL}\"==\"{server}\"");
    let out = ctr_ok(&["containers", "ls", "-q", &filter]);
    out.split_whitespace().map(str::to_owned).collect()
}

/// The container ID pod `pod`'s status gives container `index`, without its scheme; it must
/// be containerd's.
fn ctd_id(cluster: &Cluster, pod: &str, path: &str) -> String {
    let id = field(cluster, pod, path);
    id.strip_prefix("containerd://")
        .unwrap_or_else(|| panic!("a containerd container: {id:?}"))
        .to_owned()
}

#[test]
fn on_containerd_a_pod_runs_in_its_own_network_logs_forwards_and_goes_when_deleted() {
    let (cluster, dir) = cluster_on_containerd();
    let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = host.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut peer in host.incoming().flatten() {
            let _ = peer.write_all(b"HTTP/1.0 200 OK\r\n\r\nfrom the node\n");
        }
    });
    let manifest = dir.join("web.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {{app: web}}\nspec:\n  \
             terminationGracePeriodSeconds: 2\n  containers:\n  - name: app\n    image: {}\n    \
             imagePullPolicy: Always\n    \
             command: [sh, -c, 'mkdir /www; echo inside the pod > /www/index.html; \
             httpd -p 127.0.0.1:{port} -h /www; echo hi; hostname; ip -o link | cut -d: -f2; \
             exec sleep 3600']\n",
            ctd_image()
        ),
    )
    .unwrap();
    assert_eq!(
        ok(&cluster, &["apply", "-f", manifest.to_str().unwrap()]).trim(),
        "pod/web created"
    );
    let ready = cluster.kubectl(&["wait", "--for=condition=Ready", "pod/web", "--timeout=20s"]);
    assert!(
        ready.status.success(),
        "{}",
        ok(&cluster, &["describe", "pod", "web"])
    );
    let listed = ok(&cluster, &["get", "pods", "-l", "app=web"]);
    assert!(
        listed.lines().nth(1).is_some_and(|l| {
            l.split_whitespace().take(3).collect::<Vec<_>>() == ["web", "1/1", "Running"]
        }),
        "{listed}"
    );
    let id = ctd_id(&cluster, "web", ".status.containerStatuses[0].containerID");
    let image_id = field(&cluster, "web", ".status.containerStatuses[0].imageID");
    assert!(
        image_id.starts_with(&format!("{}/kdbg-tools@sha256:", registry())),
        "{image_id}"
    );
    let tasks = ctr_ok(&["tasks", "ls"]);
    assert!(
        tasks
            .lines()
            .any(|l| l.starts_with(&format!("{id} ")) && l.contains("RUNNING")),
        "{id} in {tasks}"
    );
    // Its own hostname and a network of loopback only, up.
    eventually(READY_BOUND, "the pod's output", || {
        text(&cluster.kubectl(&["logs", "web"]).stdout) == "hi\nweb\n lo\n"
    });
    assert_eq!(ok(&cluster, &["logs", "web", "--tail=2"]), "web\n lo\n");
    assert_eq!(ok(&cluster, &["logs", "web", "--limit-bytes=2"]), "hi");
    let runtime = ok(
        &cluster,
        &[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[0].status.nodeInfo.containerRuntimeVersion}",
        ],
    );
    assert!(runtime.starts_with("containerd://1."), "{runtime}");

    let forward = Forward::start(&cluster, "web", port);
    let response = forward.get();
    assert!(response.ends_with("\r\n\r\ninside the pod\n"), "{response}");
    drop(forward);

    let events = ok(
        &cluster,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=web",
        ],
    );
    assert!(events.contains("Successfully pulled image"), "{events}");
    let made = ctd_containers_of(&cluster, "web");
    assert_eq!(made.len(), 2, "the sandbox and app: {made:?}");
    assert_eq!(
        ok(&cluster, &["delete", "pod", "web"]).trim(),
        "pod \"web\" deleted"
    );
    let gone = refused(cluster.kubectl(&["get", "pod", "web"]));
    assert!(gone.contains("pods \"web\" not found"), "{gone}");
    assert_eq!(ctd_containers_of(&cluster, "web"), Vec::<String>::new());
    let tasks = ctr_ok(&["tasks", "ls"]);
    let snapshots = ctr_ok(&["snapshots", "ls"]);
    for id in &made {
        assert!(!tasks.contains(id.as_str()), "task {id} left: {tasks}");
        assert!(!snapshots.contains(id.as_str()), "snapshot {id} left");
    }
}

#[test]
fn on_containerd_containers_end_with_their_exit_codes_and_crash_loop() {
    let (cluster, dir) = cluster_on_containerd();
    // An image from the Docker engine, run by its entrypoint (`/app`: busybox, which knows
    // no applet `app`) with the pod's args.
    let distroless = "kdbg-distroless:test";
    import_to_containerd(distroless);
    let image = ctd_image();
    let run = |name: &str, restart: &str, script: &str| {
        let image = format!("--image={image}");
        let restart = format!("--restart={restart}");
        ok(
            &cluster,
            &["run", name, &image, &restart, "--", "sh", "-c", script],
        );
    };
    run("three", "Never", "echo bye; exit 3");
    run(
        "ticks",
        "Never",
        "sleep 1; for i in 1 2 3; do echo $i; sleep 1; done",
    );
    run("crash", "Always", "echo crashed; exit 1");
    ok(
        &cluster,
        &[
            "run",
            "nosuch",
            &format!("--image={image}"),
            "--restart=Never",
            "--command",
            "--",
            "/nosuch",
        ],
    );
    let manifest = dir.join("distroless.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: distroless}}\nspec:\n  \
             restartPolicy: Never\n  containers:\n  - name: app\n    \
             image: {distroless}\n    imagePullPolicy: Never\n    args: [--help]\n"
        ),
    )
    .unwrap();
    ok(&cluster, &["create", "-f", manifest.to_str().unwrap()]);

    eventually(READY_BOUND, "pod three Failed", || {
        field(&cluster, "three", ".status.phase") == "Failed"
    });
    let ended = ".status.containerStatuses[0].state.terminated";
    assert_eq!(field(&cluster, "three", &format!("{ended}.exitCode")), "3");
    assert_eq!(
        field(&cluster, "three", &format!("{ended}.reason")),
        "Error"
    );
    for time in ["startedAt", "finishedAt"] {
        let at = field(&cluster, "three", &format!("{ended}.{time}"));
        assert!(at.ends_with('Z'), "{time}: {at:?}");
    }
    assert_eq!(ok(&cluster, &["logs", "three"]), "bye\n");
    // Following a container that ended ends at once; one that runs, when it ends.
    assert_eq!(ok(&cluster, &["logs", "-f", "three"]), "bye\n");
    eventually(READY_BOUND, "pod ticks Running", || {
        field(&cluster, "ticks", ".status.phase") == "Running"
    });
    assert_eq!(ok(&cluster, &["logs", "-f", "ticks"]), "1\n2\n3\n");

    eventually(READY_BOUND, "pod nosuch Failed", || {
        field(&cluster, "nosuch", ".status.phase") == "Failed"
    });
    assert_eq!(
        field(&cluster, "nosuch", &format!("{ended}.reason")),
        "StartError"
    );
    let why = field(&cluster, "nosuch", &format!("{ended}.message"));
    assert!(why.contains("/nosuch"), "{why}");

    eventually(READY_BOUND, "pod distroless Failed", || {
        field(&cluster, "distroless", ".status.phase") == "Failed"
    });
    assert_eq!(
        field(&cluster, "distroless", &format!("{ended}.exitCode")),
        "127"
    );
    // The shim may still be copying the output when the task's exit is seen.
    eventually(READY_BOUND, "the distroless container's log", || {
        ok(&cluster, &["logs", "distroless"]).contains("app: applet not found")
    });
    let image_id = field(
        &cluster,
        "distroless",
        ".status.containerStatuses[0].imageID",
    );
    assert!(
        image_id.starts_with("docker.io/library/kdbg-distroless@sha256:"),
        "{image_id}"
    );

    // The first restart is at once; the next waits out the kubelet's back-off.
    eventually(READY_BOUND, "pod crash in CrashLoopBackOff", || {
        field(
            &cluster,
            "crash",
            ".status.containerStatuses[0].state.waiting.reason",
        ) == "CrashLoopBackOff"
    });
    let status = ".status.containerStatuses[0]";
    assert_eq!(field(&cluster, "crash", ".status.phase"), "Running");
    assert_eq!(
        field(&cluster, "crash", &format!("{status}.restartCount")),
        "1"
    );
    assert_eq!(
        field(
            &cluster,
            "crash",
            &format!("{status}.lastState.terminated.exitCode")
        ),
        "1"
    );
    assert_eq!(ok(&cluster, &["logs", "crash", "--previous"]), "crashed\n");
    let listed = ok(&cluster, &["get", "pod", "crash"]);
    assert!(listed.contains("CrashLoopBackOff"), "{listed}");

    ok(&cluster, &["delete", "pods", "--all", "--grace-period=1"]);
    for pod in ["three", "ticks", "nosuch", "distroless", "crash"] {
        eventually(
            READY_BOUND,
            &format!("pod {pod}'s containers removed"),
            || ctd_containers_of(&cluster, pod).is_empty(),
        );
    }
}

#[test]
fn on_containerd_an_init_container_fills_an_empty_dir_the_app_reads() {
    let (cluster, dir) = cluster_on_containerd();
    let manifest = dir.join("ready.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: ready}}\nspec:\n  \
             terminationGracePeriodSeconds: 1\n  \
             volumes: [{{name: shared, emptyDir: {{}}}}]\n  initContainers:\n  \
             - name: init\n    image: {image}\n    imagePullPolicy: IfNotPresent\n    \
             command: [sh, -c, 'sleep 1; echo ready > /shared/flag']\n    \
             volumeMounts: [{{name: shared, mountPath: /shared}}]\n  containers:\n  \
             - name: app\n    image: {image}\n    \
             command: [sh, -c, 'cat /shared/flag; \
             touch /shared/x 2>/dev/null || echo read-only; sleep 3600']\n    \
             volumeMounts: [{{name: shared, mountPath: /shared, readOnly: true}}]\n",
            image = ctd_image(),
        ),
    )
    .unwrap();
    ok(&cluster, &["create", "-f", manifest.to_str().unwrap()]);
    eventually(READY_BOUND, "pod ready Running", || {
        field(&cluster, "ready", ".status.phase") == "Running"
    });
    eventually(READY_BOUND, "the app's output", || {
        text(&cluster.kubectl(&["logs", "ready"]).stdout) == "ready\nread-only\n"
    });
    let init = ".status.initContainerStatuses[0]";
    assert_eq!(
        field(
            &cluster,
            "ready",
            &format!("{init}.state.terminated.reason")
        ),
        "Completed"
    );
    ctd_id(&cluster, "ready", &format!("{init}.containerID"));
    assert_eq!(ok(&cluster, &["logs", "ready", "-c", "init"]), "");
    ok(&cluster, &["delete", "pod", "ready", "--grace-period=1"]);
    assert_eq!(ctd_containers_of(&cluster, "ready"), Vec::<String>::new());
}

#[test]
fn on_containerd_the_spec_reaches_the_container_user_env_host_pid_and_capabilities() {
    let (cluster, dir) = cluster_on_containerd();
    let data = dir.join("data/made-by-the-kubelet");
    let init = std::fs::read_to_string("/proc/1/comm").unwrap();
    let manifest = dir.join("spec.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: spec\nspec:\n  hostPID: true\n  \
             restartPolicy: Never\n  securityContext: {{supplementalGroups: [7]}}\n  \
             containers:\n  - name: app\n    image: {image}\n    workingDir: /data\n    \
             command: [sh, -c]\n    args: ['echo $NODE $GREETING; cat /proc/1/comm; id; pwd; \
             touch /x 2>/dev/null || echo read-only; grep CapEff /proc/self/status; \
             echo written > /data/file']\n    \
             env:\n    - {{name: GREETING, value: hello}}\n    \
             - name: NODE\n      valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}\n    \
             securityContext:\n      runAsUser: 0\n      runAsGroup: 5\n      \
             readOnlyRootFilesystem: true\n      \
             capabilities: {{drop: [ALL], add: [CHOWN]}}\n    \
             volumeMounts:\n    - {{name: data, mountPath: /data}}\n  volumes:\n  \
             - name: data\n    hostPath: {{path: {path}, type: DirectoryOrCreate}}\n",
            image = ctd_image(),
            path = data.display(),
        ),
    )
    .unwrap();
    ok(&cluster, &["create", "-f", manifest.to_str().unwrap()]);
    eventually(READY_BOUND, "pod spec Succeeded", || {
        field(&cluster, "spec", ".status.phase") == "Succeeded"
    });
    assert_eq!(
        ok(&cluster, &["logs", "spec"]),
        format!(
            "{NODE} hello\n{init}uid=0(root) gid=5 groups=5,7\n/data\n\
             read-only\nCapEff:\t0000000000000001\n"
        )
    );
    assert_eq!(
        std::fs::read_to_string(data.join("file")).unwrap(),
        "written\n"
    );
    ok(&cluster, &["delete", "pod", "spec"]);
    eventually(READY_BOUND, "pod spec's containers removed", || {
        ctd_containers_of(&cluster, "spec").is_empty()
    });
}
