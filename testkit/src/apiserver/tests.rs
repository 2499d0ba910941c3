//! The stand-in's kubelet on the test world's Docker engine, checked as a user checks a
//! cluster: with the real kubectl, and docker for what the node holds.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use super::*;
use crate::{READY_BOUND, docker, eventually, require_world, text};

mod containerd;

/// A cluster whose namespace `shop` is the kubeconfig's, and a directory for manifests (gone
/// with the cluster).
fn cluster() -> (Cluster, PathBuf) {
    require_world();
    let cluster = Cluster::new("shop");
    let dir = cluster.dir.join("manifests");
    std::fs::create_dir_all(&dir).unwrap();
    (cluster, dir)
}

/// kubectl with `args`, which must succeed: its stdout.
fn ok(cluster: &Cluster, args: &[&str]) -> String {
    let out = cluster.kubectl(args);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// kubectl with `args`, which must fail: its stderr.
fn refused(out: Output) -> String {
    assert!(!out.status.success(), "succeeded: {}", text(&out.stdout));
    text(&out.stderr)
}

/// `kubectl get pod NAME -o jsonpath=PATH`.
fn field(cluster: &Cluster, pod: &str, path: &str) -> String {
    let jsonpath = format!("jsonpath={{{path}}}");
    text(
        &cluster
            .kubectl(&["get", "pod", pod, "-o", &jsonpath])
            .stdout,
    )
}

/// The engine's containers of pod `shop/NAME` (its sandbox's too) that `cluster` made
/// (another test process may have left its own pod of that name).
fn containers_of(cluster: &Cluster, pod: &str) -> Vec<String> {
    let filter = format!("label={POD_LABEL}=shop/{pod}");
    let server = format!(
        "label={SERVER_LABEL}={}",
        cluster.api.shared.kubelet.server()
    );
    let out = docker(&["ps", "-aq", "--filter", &filter, "--filter", &server]);
    text(&out.stdout).lines().map(str::to_owned).collect()
}

/// `kubectl port-forward pod/NAME :PORT`, once it listens; killed when dropped.
struct Forward {
    child: Child,
    local: u16,
}

impl Forward {
    fn start(cluster: &Cluster, pod: &str, port: u16) -> Forward {
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&cluster.kubeconfig)
            .args(["port-forward", &format!("pod/{pod}"), &format!(":{port}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running kubectl port-forward");
        let mut line = String::new();
        let mut said = BufReader::new(child.stdout.take().unwrap());
        said.read_line(&mut line).unwrap();
        // It says "Handling connection for ..." for each connection, and ends when it cannot.
        std::thread::spawn(move || std::io::copy(&mut said, &mut std::io::sink()));
        // "Forwarding from 127.0.0.1:41234 -> 8080"
        let local = line
            .split_whitespace()
            .nth(2)
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok());
        let Some(local) = local else {
            let _ = child.kill();
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("kubectl port-forward said {line:?}: {err}");
        };
        Forward { child, local }
    }

    /// `GET /` through it: the response, headers and body.
    fn get(&self) -> String {
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", self.local)).unwrap();
        tcp.set_read_timeout(Some(READY_BOUND)).unwrap();
        tcp.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let mut response = String::new();
        tcp.read_to_string(&mut response).unwrap();
        response
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `POST`s `pod` to namespace `namespace`'s pods as the holder of `token`, as kube-rs does:
/// the status code and the body.
fn post(
    api: &ApiServer,
    namespace: &str,
    token: &str,
    pod: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let body = serde_json::to_vec(pod).unwrap();
    let address = api.url.trim_start_matches("http://");
    let mut tcp = std::net::TcpStream::connect(address).unwrap();
    let head = format!(
        "POST /api/v1/namespaces/{namespace}/pods HTTP/1.1\r\nHost: {address}\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).unwrap();
    tcp.write_all(&body).unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).unwrap();
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (code, serde_json::from_str(body).unwrap_or_default())
}

#[test]
fn a_created_pod_runs_in_a_network_of_its_own_forwards_there_and_goes_when_deleted() {
    let (cluster, dir) = cluster();
    // The node's loopback has a server on PORT too: a port-forward that reached it would say
    // so, and the pod could not listen on PORT if it shared the node's network.
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
             command: [sh, -c, 'mkdir /www; echo inside the pod > /www/index.html; \
             httpd -p 127.0.0.1:{port} -h /www; echo hi; exec sleep 3600']\n",
            crate::image()
        ),
    )
    .unwrap();
    let said = ok(&cluster, &["apply", "-f", manifest.to_str().unwrap()]);
    assert_eq!(said.trim(), "pod/web created");
    eventually(READY_BOUND, "pod web Running", || {
        field(&cluster, "web", ".status.phase") == "Running"
    });
    ok(
        &cluster,
        &["wait", "--for=condition=Ready", "pod/web", "--timeout=20s"],
    );
    let listed = ok(&cluster, &["get", "pods", "-l", "app=web"]);
    assert!(
        listed.lines().nth(1).is_some_and(|l| {
            l.split_whitespace().take(3).collect::<Vec<_>>() == ["web", "1/1", "Running"]
        }),
        "{listed}"
    );
    eventually(READY_BOUND, "the pod's output", || {
        text(&cluster.kubectl(&["logs", "web"]).stdout) == "hi\n"
    });
    let id = field(&cluster, "web", ".status.containerStatuses[0].containerID");
    let id = id.strip_prefix("docker://").expect("a Docker container");
    let links = text(&docker(&["exec", id, "ip", "-o", "link"]).stdout);
    let names: Vec<&str> = links.lines().filter_map(|l| l.split(':').nth(1)).collect();
    assert_eq!(
        names,
        [" lo"],
        "the pod's network has loopback only: {links}"
    );

    let forward = Forward::start(&cluster, "web", port);
    let response = forward.get();
    assert!(response.ends_with("\r\n\r\ninside the pod\n"), "{response}");
    drop(forward);

    let said = ok(&cluster, &["delete", "pod", "web"]);
    assert_eq!(said.trim(), "pod \"web\" deleted");
    let gone = refused(cluster.kubectl(&["get", "pod", "web"]));
    assert!(gone.contains("pods \"web\" not found"), "{gone}");
    assert_eq!(containers_of(&cluster, "web"), Vec::<String>::new());
    let events = ok(
        &cluster,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=web",
        ],
    );
    for reason in ["Scheduled", "Pulled", "Created", "Started", "Killing"] {
        assert!(events.contains(reason), "{reason} in {events}");
    }
}

#[test]
fn pods_end_as_their_containers_end_and_restart_per_their_policy() {
    let (cluster, _dir) = cluster();
    let image = crate::image();
    let run = |name: &str, restart: &str, script: &str| {
        let image = format!("--image={image}");
        let restart = format!("--restart={restart}");
        ok(
            &cluster,
            &["run", name, &image, &restart, "--", "sh", "-c", script],
        );
    };
    run("three", "Never", "echo bye; exit 3");
    run("done", "Never", "true");
    run("crash", "Always", "echo crashed; exit 1");
    eventually(READY_BOUND, "pod three Failed", || {
        field(&cluster, "three", ".status.phase") == "Failed"
    });
    let ended = ".status.containerStatuses[0].state.terminated";
    assert_eq!(field(&cluster, "three", &format!("{ended}.exitCode")), "3");
    assert_eq!(
        field(&cluster, "three", &format!("{ended}.reason")),
        "Error"
    );
    assert_eq!(ok(&cluster, &["logs", "three"]), "bye\n");
    eventually(READY_BOUND, "pod done Succeeded", || {
        field(&cluster, "done", ".status.phase") == "Succeeded"
    });
    // The first restart is at once; the next waits out the kubelet's back-off.
    eventually(READY_BOUND, "pod crash in CrashLoopBackOff", || {
        field(
            &cluster,
            "crash",
            ".status.containerStatuses[0].state.waiting.reason",
        ) == "CrashLoopBackOff"
    });
    assert_eq!(field(&cluster, "crash", ".status.phase"), "Running");
    assert_eq!(
        field(
            &cluster,
            "crash",
            ".status.containerStatuses[0].restartCount"
        ),
        "1"
    );
    assert_eq!(ok(&cluster, &["logs", "crash", "--previous"]), "crashed\n");
    let events = ok(
        &cluster,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=crash",
        ],
    );
    assert!(
        events.contains("Back-off restarting failed container crash"),
        "{events}"
    );
    ok(&cluster, &["delete", "pods", "--all", "--grace-period=1"]);
    // Finished pods go from the API at once; the kubelet removes their containers after.
    for pod in ["three", "done", "crash"] {
        eventually(
            READY_BOUND,
            &format!("pod {pod}'s containers removed"),
            || containers_of(&cluster, pod).is_empty(),
        );
    }
}

#[test]
fn a_missing_image_is_err_image_pull_with_a_warning_event() {
    let (cluster, _dir) = cluster();
    ok(
        &cluster,
        &[
            "run",
            "nosuch",
            "--image=kdbg-missing:test",
            "--restart=Never",
        ],
    );
    let waiting = ".status.containerStatuses[0].state.waiting.reason";
    eventually(READY_BOUND, "ErrImagePull", || {
        let reason = field(&cluster, "nosuch", waiting);
        reason == "ErrImagePull" || reason == "ImagePullBackOff"
    });
    assert_eq!(field(&cluster, "nosuch", ".status.phase"), "Pending");
    let events = ok(
        &cluster,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=nosuch",
        ],
    );
    let warning = events
        .lines()
        .find(|l| l.contains("Failed to pull image \"kdbg-missing:test\""))
        .unwrap_or_else(|| panic!("no pull failure in {events}"));
    assert!(warning.contains("Warning"), "{warning}");
    let described = ok(&cluster, &["describe", "pod", "nosuch"]);
    assert!(described.contains("Error: ErrImagePull"), "{described}");
}

#[test]
fn the_spec_reaches_the_container_env_host_pid_host_paths_and_security_context() {
    let (cluster, dir) = cluster();
    let data = dir.join("data/made-by-the-kubelet");
    let init = std::fs::read_to_string("/proc/1/comm").unwrap();
    let manifest = dir.join("spec.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: spec\nspec:\n  hostPID: true\n  \
             restartPolicy: Never\n  containers:\n  - name: app\n    image: {image}\n    \
             command: [sh, -c]\n    args: ['echo $NODE $GREETING; cat /proc/1/comm; \
             touch /x 2>/dev/null || echo read-only; grep CapEff /proc/self/status; \
             echo written > /data/file']\n    \
             env:\n    - {{name: GREETING, value: hello}}\n    \
             - name: NODE\n      valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}\n    \
             securityContext:\n      runAsUser: 0\n      readOnlyRootFilesystem: true\n      \
             allowPrivilegeEscalation: false\n      capabilities: {{drop: [ALL]}}\n    \
             volumeMounts:\n    - {{name: data, mountPath: /data}}\n  volumes:\n  \
             - name: data\n    hostPath: {{path: {path}, type: DirectoryOrCreate}}\n",
            image = crate::image(),
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
        format!("{NODE} hello\n{init}read-only\nCapEff:\t0000000000000000\n")
    );
    assert_eq!(
        std::fs::read_to_string(data.join("file")).unwrap(),
        "written\n"
    );
    ok(&cluster, &["delete", "pod", "spec"]);
    eventually(READY_BOUND, "pod spec's containers removed", || {
        containers_of(&cluster, "spec").is_empty()
    });
}

#[test]
fn the_api_server_refuses_in_its_own_words() {
    let (cluster, dir) = cluster();
    let image = format!("--image={}", crate::image());
    let said = refused(cluster.kubectl(&["-n", "nope", "run", "x", &image]));
    assert!(said.contains("namespaces \"nope\" not found"), "{said}");
    let said = refused(cluster.kubectl(&["run", "Not_A_Name", &image]));
    assert!(said.contains("The Pod \"Not_A_Name\" is invalid"), "{said}");
    // On another node: no kubelet here runs it.
    let elsewhere = dir.join("elsewhere.yaml");
    std::fs::write(
        &elsewhere,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: elsewhere}\nspec:\n  nodeName: other\n  \
         containers: [{name: app, image: x}]\n",
    )
    .unwrap();
    let file = elsewhere.to_str().unwrap();
    ok(&cluster, &["create", "-f", file]);
    let said = refused(cluster.kubectl(&["create", "-f", file]));
    assert!(said.contains("pods \"elsewhere\" already exists"), "{said}");
    assert_eq!(field(&cluster, "elsewhere", ".status.phase"), "Pending");

    // kubectl sends no token over plain HTTP (client-go applies credentials over TLS only);
    // kube-rs, the plugin's client, does: as it asks.
    cluster
        .api
        .access
        .lock()
        .unwrap()
        .user("bob-token", "bob", &[]);
    let elsewhere = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bobs"},
        "spec": {"nodeName": "other", "containers": [{"name": "app", "image": "x"}]}
    });
    let (code, status) = post(&cluster.api, AGENT_NAMESPACE, "bob-token", &elsewhere);
    assert_eq!(code, 403, "{status}");
    assert_eq!(
        status["message"],
        "pods is forbidden: User \"bob\" cannot create resource \"pods\" in API group \"\" in \
         the namespace \"kubectl-debug\""
    );
    let grants = &cluster.api.access;
    grants
        .lock()
        .unwrap()
        .grant("bob", "create", "pods", AGENT_NAMESPACE, "");
    let (code, status) = post(&cluster.api, AGENT_NAMESPACE, "bob-token", &elsewhere);
    assert_eq!(code, 201, "{status}");

    cluster
        .api
        .set_pod_security("locked", PodSecurity::Baseline);
    let host = dir.join("host.yaml");
    std::fs::write(
        &host,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: host}\nspec:\n  hostPID: true\n  \
         containers: [{name: app, image: x, volumeMounts: [{name: runtime-socket, mountPath: /s}]}]\n  \
         volumes: [{name: runtime-socket, hostPath: {path: /run/x.sock}}]\n",
    )
    .unwrap();
    let said = refused(cluster.kubectl(&["-n", "locked", "create", "-f", host.to_str().unwrap()]));
    assert!(
        said.contains(
            "pods \"host\" is forbidden: violates PodSecurity \"baseline:latest\": host \
             namespaces (hostPID=true), hostPath volumes (volume \"runtime-socket\")"
        ),
        "{said}"
    );
}

/// A manifest of pod `name` whose init container `init` runs `init_script`, then container
/// `app` runs `app_script`; both mount emptyDir `shared` at /shared (read-only in `app`).
/// (The init container's pull policy is spelled out: the stand-in's API server defaults
/// regular containers' only.)
fn with_init(name: &str, restart: &str, init_script: &str, app_script: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  \
         restartPolicy: {restart}\n  terminationGracePeriodSeconds: 1\n  \
         volumes: [{{name: shared, emptyDir: {{}}}}]\n  initContainers:\n  \
         - name: init\n    image: {image}\n    imagePullPolicy: IfNotPresent\n    command: [sh, -c, '{init_script}']\n    \
         volumeMounts: [{{name: shared, mountPath: /shared}}]\n  containers:\n  \
         - name: app\n    image: {image}\n    command: [sh, -c, '{app_script}']\n    \
         volumeMounts: [{{name: shared, mountPath: /shared, readOnly: true}}]\n",
        image = crate::image(),
    )
}

/// The engine's containers of pod `shop/POD` named `container` by the kubelet's label, that
/// `cluster` made.
fn containers_named(cluster: &Cluster, pod: &str, container: &str) -> Vec<String> {
    let pod = format!("label={POD_LABEL}=shop/{pod}");
    let name = format!("label=io.kubernetes.container.name={container}");
    let server = format!(
        "label={SERVER_LABEL}={}",
        cluster.api.shared.kubelet.server()
    );
    let out = docker(&[
        "ps", "-aq", "--filter", &pod, "--filter", &name, "--filter", &server,
    ]);
    text(&out.stdout).lines().map(str::to_owned).collect()
}

#[test]
fn init_containers_run_to_completion_first_sharing_the_pods_volumes_and_network() {
    let (cluster, dir) = cluster();
    let manifest = dir.join("ready.yaml");
    // The init container takes its time: an app started before it ends finds no flag.
    let pod = with_init(
        "ready",
        "Always",
        "sleep 1; echo ready > /shared/flag",
        "cat /shared/flag; sleep 3600",
    );
    std::fs::write(&manifest, pod).unwrap();
    ok(&cluster, &["create", "-f", manifest.to_str().unwrap()]);
    eventually(READY_BOUND, "pod ready Running", || {
        field(&cluster, "ready", ".status.phase") == "Running"
    });
    // The app read what the init container wrote: it ran after, over the same directory.
    eventually(READY_BOUND, "the app's output", || {
        text(&cluster.kubectl(&["logs", "ready"]).stdout) == "ready\n"
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
    assert_eq!(field(&cluster, "ready", &format!("{init}.ready")), "true");
    let initialized = r#".status.conditions[?(@.type=="Initialized")].status"#;
    assert_eq!(field(&cluster, "ready", initialized), "True");

    // The init container is the kubelet's, in the pod's network namespace.
    let made = containers_named(&cluster, "ready", "init");
    assert_eq!(made.len(), 1, "{made:?}");
    let network = docker(&[
        "inspect",
        "--format",
        "{{.HostConfig.NetworkMode}}",
        &made[0],
    ]);
    assert!(
        text(&network.stdout).starts_with("container:"),
        "{}",
        text(&network.stdout)
    );
    // The app's mount is read-only, as its volumeMount says.
    let id = field(
        &cluster,
        "ready",
        ".status.containerStatuses[0].containerID",
    );
    let id = id.strip_prefix("docker://").expect("a Docker container");
    let script = "touch /shared/other 2>&1 && echo written; true";
    let written = text(&docker(&["exec", id, "sh", "-c", script]).stdout);
    assert!(written.contains("Read-only file system"), "{written}");

    let events = ok(
        &cluster,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=ready",
        ],
    );
    for said in [
        "Created container: init",
        "Started container init",
        "Started container app",
    ] {
        assert!(events.contains(said), "{said} in {events}");
    }
    ok(&cluster, &["delete", "pod", "ready", "--grace-period=1"]);
    assert_eq!(containers_of(&cluster, "ready"), Vec::<String>::new());
}

#[test]
fn a_failed_init_container_fails_a_pod_never_restarted_and_is_retried_otherwise() {
    let (cluster, dir) = cluster();
    for (name, restart) in [("broken", "Never"), ("retried", "OnFailure")] {
        let manifest = dir.join(format!("{name}.yaml"));
        let pod = with_init(
            name,
            restart,
            "echo failing; exit 1",
            "echo ran; sleep 3600",
        );
        std::fs::write(&manifest, pod).unwrap();
        ok(&cluster, &["create", "-f", manifest.to_str().unwrap()]);
    }
    let init = ".status.initContainerStatuses[0]";
    eventually(READY_BOUND, "pod broken Failed", || {
        field(&cluster, "broken", ".status.phase") == "Failed"
    });
    let ended = format!("{init}.state.terminated");
    assert_eq!(field(&cluster, "broken", &format!("{ended}.exitCode")), "1");
    assert_eq!(
        field(&cluster, "broken", &format!("{ended}.reason")),
        "Error"
    );
    let app = ".status.containerStatuses[0].state.waiting.reason";
    assert_eq!(field(&cluster, "broken", app), "PodInitializing");
    let initialized = r#".status.conditions[?(@.type=="Initialized")].reason"#;
    assert_eq!(
        field(&cluster, "broken", initialized),
        "ContainersNotInitialized"
    );
    // kubectl describe reads the init container's end from initContainerStatuses.
    let described = ok(&cluster, &["describe", "pod", "broken"]);
    let section = described
        .split_once("Init Containers:")
        .and_then(|(_, rest)| rest.split_once("Containers:"))
        .map_or("", |(init, _)| init);
    for said in ["Terminated", "Error", "Exit Code:    1"] {
        assert!(section.contains(said), "{said} in {described}");
    }

    // Retried with the crash back-off: the first retry at once, the next after 10 s.
    eventually(
        READY_BOUND,
        "pod retried's init in CrashLoopBackOff",
        || {
            field(&cluster, "retried", &format!("{init}.state.waiting.reason"))
                == "CrashLoopBackOff"
        },
    );
    assert_eq!(
        field(&cluster, "retried", &format!("{init}.restartCount")),
        "1"
    );
    assert_eq!(field(&cluster, "retried", ".status.phase"), "Pending");
    assert_eq!(field(&cluster, "retried", app), "PodInitializing");
    let events = ok(
        &cluster,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=retried",
        ],
    );
    assert!(
        events.contains("Back-off restarting failed container init"),
        "{events}"
    );

    for pod in ["broken", "retried"] {
        assert_eq!(
            containers_named(&cluster, pod, "app"),
            Vec::<String>::new(),
            "{pod}'s app ran"
        );
    }
    ok(&cluster, &["delete", "pods", "--all", "--grace-period=1"]);
    for pod in ["broken", "retried"] {
        eventually(
            READY_BOUND,
            &format!("pod {pod}'s containers removed"),
            || containers_of(&cluster, pod).is_empty(),
        );
    }
}
