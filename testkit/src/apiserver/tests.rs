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
    let path = format!("/api/v1/namespaces/{namespace}/pods");
    request(api, "POST", &path, token, Some(pod))
}

/// `method` `path` (with `body`, JSON) as the holder of `token`, as kube-rs asks (kubectl
/// sends no token over plain HTTP): the status code and the body.
fn request(
    api: &ApiServer,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    let body = body
        .map(|b| serde_json::to_vec(b).unwrap())
        .unwrap_or_default();
    let address = api.url.trim_start_matches("http://");
    let mut tcp = std::net::TcpStream::connect(address).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\n\
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

/// A cluster whose namespace `shop` is the kubeconfig's, and a directory for manifests, for
/// tests that run no pod (no Docker needed).
fn api_only() -> (Cluster, PathBuf) {
    let cluster = Cluster::new("shop");
    let dir = cluster.dir.join("manifests");
    std::fs::create_dir_all(&dir).unwrap();
    (cluster, dir)
}

/// `kubectl get KIND NAME -o json` (in the kubeconfig's namespace).
fn object(cluster: &Cluster, kind: &str, name: &str) -> serde_json::Value {
    serde_json::from_str(&ok(cluster, &["get", kind, name, "-o", "json"])).unwrap()
}

/// Secret data value `value` (base64, as JSON carries it) decoded.
fn decoded(value: &serde_json::Value) -> String {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.as_str().expect("base64 text"))
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn kubectl_creates_secrets_and_reads_them_back() {
    let (cluster, _dir) = api_only();
    let said = ok(
        &cluster,
        &[
            "create",
            "secret",
            "docker-registry",
            "regcred",
            "--docker-server=registry.example:5000",
            "--docker-username=alice",
            "--docker-password=s3cret",
        ],
    );
    assert_eq!(said.trim(), "secret/regcred created");
    let secret = object(&cluster, "secret", "regcred");
    assert_eq!(secret["kind"], "Secret");
    assert_eq!(secret["apiVersion"], "v1");
    assert_eq!(secret["type"], "kubernetes.io/dockerconfigjson");
    let meta = &secret["metadata"];
    assert_eq!(meta["namespace"], "shop");
    for field in ["uid", "resourceVersion", "creationTimestamp"] {
        assert!(meta[field].is_string(), "{field} in {secret}");
    }
    let config: serde_json::Value =
        serde_json::from_str(&decoded(&secret["data"][".dockerconfigjson"])).unwrap();
    let auth = &config["auths"]["registry.example:5000"];
    assert_eq!(auth["username"], "alice");
    assert_eq!(auth["password"], "s3cret");
    assert_eq!(decoded(&auth["auth"]), "alice:s3cret");
    let described = ok(&cluster, &["describe", "secret", "regcred"]);
    assert!(
        described.contains("kubernetes.io/dockerconfigjson"),
        "{described}"
    );
    let one = ok(&cluster, &["get", "secret", "regcred", "--no-headers"]);
    assert!(
        one.starts_with("regcred   kubernetes.io/dockerconfigjson   1 "),
        "{one}"
    );

    let said = ok(
        &cluster,
        &["create", "secret", "generic", "plain", "--from-literal=k=v"],
    );
    assert_eq!(said.trim(), "secret/plain created");
    let plain = object(&cluster, "secret", "plain");
    assert_eq!(plain["type"], "Opaque");
    assert_eq!(decoded(&plain["data"]["k"]), "v");

    let listed = ok(&cluster, &["get", "secrets"]);
    let rows: Vec<Vec<&str>> = listed
        .lines()
        .map(|l| l.split_whitespace().take(3).collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec!["NAME", "TYPE", "DATA"],
            vec!["plain", "Opaque", "1"],
            vec!["regcred", "kubernetes.io/dockerconfigjson", "1"],
        ],
        "{listed}"
    );
    assert!(listed.lines().next().unwrap().ends_with("AGE"), "{listed}");
    let names = ok(&cluster, &["get", "secrets", "-o", "name"]);
    assert_eq!(names, "secret/plain\nsecret/regcred\n");
    let typed = ok(
        &cluster,
        &[
            "get",
            "secrets",
            "--field-selector",
            "type=Opaque",
            "-o",
            "name",
        ],
    );
    assert_eq!(typed, "secret/plain\n");
    let list: serde_json::Value =
        serde_json::from_str(&ok(&cluster, &["get", "secrets", "-A", "-o", "json"])).unwrap();
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2), "{list}");

    let said = refused(cluster.kubectl(&["get", "secret", "nosuch"]));
    assert!(said.contains("secrets \"nosuch\" not found"), "{said}");
    let said =
        refused(cluster.kubectl(&["create", "secret", "generic", "plain", "--from-literal=k=v"]));
    assert!(said.contains("secrets \"plain\" already exists"), "{said}");
    let said = refused(cluster.kubectl(&[
        "-n",
        "nope",
        "create",
        "secret",
        "generic",
        "x",
        "--from-literal=k=v",
    ]));
    assert!(said.contains("namespaces \"nope\" not found"), "{said}");
}

#[test]
fn docker_config_secrets_need_their_key_holding_json() {
    let (cluster, dir) = api_only();
    let said = refused(cluster.kubectl(&[
        "create",
        "secret",
        "generic",
        "nokey",
        "--type=kubernetes.io/dockerconfigjson",
        "--from-literal=other=x",
    ]));
    assert!(
        said.contains("Secret \"nokey\" is invalid: data[.dockerconfigjson]: Required value"),
        "{said}"
    );
    let said = refused(cluster.kubectl(&[
        "create",
        "secret",
        "generic",
        "oldkey",
        "--type=kubernetes.io/dockercfg",
        "--from-literal=other=x",
    ]));
    assert!(
        said.contains("Secret \"oldkey\" is invalid: data[.dockercfg]: Required value"),
        "{said}"
    );
    let manifest = dir.join("bad.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: bad}\ntype: kubernetes.io/dockerconfigjson\n\
         stringData: {.dockerconfigjson: '{not json'}\n",
    )
    .unwrap();
    let said = refused(cluster.kubectl(&["create", "-f", manifest.to_str().unwrap()]));
    assert!(
        said.contains(
            "Secret \"bad\" is invalid: data[.dockerconfigjson]: Invalid value: \
             \"<secret contents redacted>\": invalid character 'n' looking for beginning of \
             object key string"
        ),
        "{said}"
    );
    let said = refused(cluster.kubectl(&["get", "secret", "bad"]));
    assert!(said.contains("secrets \"bad\" not found"), "{said}");

    // The API's own answer: 422 Invalid, the cause the field's.
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "raw"},
        "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "W10="}
    });
    let (code, status) = request(
        &cluster.api,
        "POST",
        "/api/v1/namespaces/shop/secrets",
        "stand-in-token",
        Some(&secret),
    );
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(
        status["message"],
        "Secret \"raw\" is invalid: data[.dockerconfigjson]: Invalid value: \
         \"<secret contents redacted>\": json: cannot unmarshal array into Go value of type \
         map[string]interface {}"
    );
    assert_eq!(status["details"]["kind"], "Secret");
    assert_eq!(status["details"]["name"], "raw");
    assert_eq!(
        status["details"]["causes"][0]["field"],
        "data[.dockerconfigjson]"
    );

    // What no create takes, a test can still plant.
    cluster.api.add_secret(
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "planted", "namespace": "shop"},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": "e25vdCBqc29u"}
        }))
        .unwrap(),
    );
    let planted = object(&cluster, "secret", "planted");
    assert_eq!(decoded(&planted["data"][".dockerconfigjson"]), "{not json");
    assert!(planted["metadata"]["uid"].is_string(), "{planted}");
    assert!(cluster.api.secret("shop", "planted").is_some());
}

#[test]
fn every_namespace_has_a_default_service_account_and_others_round_trip() {
    let (cluster, dir) = api_only();
    cluster.api.add_namespace("fresh");
    let account = object(&cluster, "sa", "default");
    assert_eq!(account["kind"], "ServiceAccount");
    assert_eq!(account["metadata"]["namespace"], "shop");
    let namespace = dir.join("ns.yaml");
    std::fs::write(
        &namespace,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: made}\n",
    )
    .unwrap();
    ok(&cluster, &["create", "-f", namespace.to_str().unwrap()]);
    for ns in ["fresh", "made", "kube-system"] {
        let account: serde_json::Value = serde_json::from_str(&ok(
            &cluster,
            &["get", "sa", "default", "-n", ns, "-o", "json"],
        ))
        .unwrap();
        assert_eq!(account["metadata"]["name"], "default");
        assert_eq!(account["metadata"]["namespace"], ns);
        assert!(account["metadata"]["uid"].is_string(), "{account}");
    }
    // The API answers that the object is not found; kubectl, seeing that, asks for the
    // namespace and says what is missing.
    let path = "/api/v1/namespaces/nope/serviceaccounts/default";
    let (code, status) = request(&cluster.api, "GET", path, "stand-in-token", None);
    assert_eq!(code, 404, "{status}");
    assert_eq!(status["message"], "serviceaccounts \"default\" not found");
    let said = refused(cluster.kubectl(&["get", "sa", "default", "-n", "nope"]));
    assert!(said.contains("namespaces \"nope\" not found"), "{said}");

    let manifest = dir.join("puller.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: puller}\n\
         imagePullSecrets: [{name: regcred}]\n",
    )
    .unwrap();
    let said = ok(&cluster, &["apply", "-f", manifest.to_str().unwrap()]);
    assert_eq!(said.trim(), "serviceaccount/puller created");
    let puller = object(&cluster, "serviceaccount", "puller");
    assert_eq!(
        puller["imagePullSecrets"],
        serde_json::json!([{"name": "regcred"}])
    );
    let said = ok(&cluster, &["create", "serviceaccount", "made"]);
    assert_eq!(said.trim(), "serviceaccount/made created");
    let said = refused(cluster.kubectl(&["create", "-f", manifest.to_str().unwrap()]));
    assert!(
        said.contains("serviceaccounts \"puller\" already exists"),
        "{said}"
    );

    let listed = ok(&cluster, &["get", "sa"]);
    let rows: Vec<Vec<&str>> = listed
        .lines()
        .map(|l| l.split_whitespace().take(2).collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec!["NAME", "SECRETS"],
            vec!["default", "0"],
            vec!["made", "0"],
            vec!["puller", "0"],
        ],
        "{listed}"
    );

    // Pods: the ServiceAccount admission plugin's defaults and its refusal. (On another node:
    // no kubelet here runs them.)
    let pod = |name: &str, extra: &str| {
        let file = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &file,
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: other\n  \
                 containers: [{{name: app, image: x}}]\n{extra}"
            ),
        )
        .unwrap();
        cluster.kubectl(&["create", "-f", file.to_str().unwrap()])
    };
    assert!(pod("plain", "").status.success());
    assert_eq!(
        field(&cluster, "plain", ".spec.serviceAccountName"),
        "default"
    );
    assert!(
        pod("pulls", "  serviceAccountName: puller\n")
            .status
            .success()
    );
    assert_eq!(
        field(&cluster, "pulls", ".spec.imagePullSecrets[*].name"),
        "regcred"
    );
    let own = "  serviceAccountName: puller\n  imagePullSecrets: [{name: mine}]\n";
    assert!(pod("own", own).status.success());
    assert_eq!(
        field(&cluster, "own", ".spec.imagePullSecrets[*].name"),
        "mine"
    );
    let said = refused(pod("lost", "  serviceAccountName: nosuch\n"));
    assert!(
        said.contains(
            "pods \"lost\" is forbidden: error looking up service account shop/nosuch: \
             serviceaccount \"nosuch\" not found"
        ),
        "{said}"
    );
    // A registered pod keeps what it is given.
    let mut registered = running_pod("shop", "registered", &[("app", "docker://x", true)]);
    let spec = registered.spec.as_mut().unwrap();
    spec.service_account_name = Some("elsewhere".into());
    spec.image_pull_secrets = Some(vec![
        serde_json::from_value(serde_json::json!({"name": "k"})).unwrap(),
    ]);
    cluster.api.add_pod(registered);
    let spec = cluster.api.pod("shop", "registered").unwrap().spec.unwrap();
    assert_eq!(spec.service_account_name.as_deref(), Some("elsewhere"));
    assert_eq!(spec.image_pull_secrets.unwrap()[0].name, "k");

    cluster.api.add_service_account(
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "added", "namespace": "fresh"},
            "imagePullSecrets": [{"name": "k"}]
        }))
        .unwrap(),
    );
    let added = ok(&cluster, &["get", "sa", "-n", "fresh", "-o", "name"]);
    assert_eq!(added, "serviceaccount/added\nserviceaccount/default\n");
    assert!(cluster.api.service_account("fresh", "added").is_some());
}

#[test]
fn a_users_grants_decide_its_secret_and_service_account_reads_and_creates() {
    let (cluster, _dir) = api_only();
    ok(
        &cluster,
        &[
            "create",
            "secret",
            "generic",
            "regcred",
            "--from-literal=k=v",
        ],
    );
    let api = &cluster.api;
    api.access.lock().unwrap().user("bob-token", "bob", &[]);
    for (resource, name, kind) in [
        ("secrets", "regcred", "Secret"),
        ("serviceaccounts", "default", "ServiceAccount"),
    ] {
        let one = format!("/api/v1/namespaces/shop/{resource}/{name}");
        let all = format!("/api/v1/namespaces/shop/{resource}");
        let (code, status) = request(api, "GET", &one, "bob-token", None);
        assert_eq!(code, 403, "{status}");
        assert_eq!(status["reason"], "Forbidden");
        assert_eq!(
            status["message"],
            format!(
                "{resource} \"{name}\" is forbidden: User \"bob\" cannot get resource \
                 \"{resource}\" in API group \"\" in the namespace \"shop\""
            )
        );
        assert_eq!(status["details"]["kind"], resource);
        let (code, status) = request(api, "GET", &all, "bob-token", None);
        assert_eq!(code, 403, "{status}");
        assert_eq!(
            status["message"],
            format!(
                "{resource} is forbidden: User \"bob\" cannot list resource \"{resource}\" in \
                 API group \"\" in the namespace \"shop\""
            )
        );
        let (code, status) = request(
            api,
            "GET",
            &format!("/api/v1/{resource}"),
            "bob-token",
            None,
        );
        assert_eq!(code, 403, "{status}");
        assert!(
            status["message"]
                .as_str()
                .unwrap()
                .ends_with("at the cluster scope"),
            "{status}"
        );
        let new =
            serde_json::json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": "new"}});
        let (code, status) = request(api, "POST", &all, "bob-token", Some(&new));
        assert_eq!(code, 403, "{status}");
        assert_eq!(
            status["message"],
            format!(
                "{resource} is forbidden: User \"bob\" cannot create resource \"{resource}\" \
                 in API group \"\" in the namespace \"shop\""
            )
        );

        let mut table = api.access.lock().unwrap();
        table.grant("bob", "get", resource, "shop", name);
        table.grant("bob", "list", resource, "shop", "");
        table.grant("bob", "create", resource, "shop", "");
        drop(table);
        let (code, got) = request(api, "GET", &one, "bob-token", None);
        assert_eq!(code, 200, "{got}");
        assert_eq!(got["kind"], kind);
        assert_eq!(got["metadata"]["name"], name);
        let (code, listed) = request(api, "GET", &all, "bob-token", None);
        assert_eq!(code, 200, "{listed}");
        assert_eq!(listed["kind"], format!("{kind}List"));
        let (code, made) = request(api, "POST", &all, "bob-token", Some(&new));
        assert_eq!(code, 201, "{made}");
        // The grant names one object: another is still refused.
        let other = format!("/api/v1/namespaces/shop/{resource}/new");
        let (code, _) = request(api, "GET", &other, "bob-token", None);
        assert_eq!(code, 403);
        // Its reviews (an agent asking for bob) say the same.
        let review = serde_json::json!({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": "bob", "resourceAttributes": {
                "verb": "get", "resource": resource, "namespace": "shop", "name": name}}
        });
        let path = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
        let (code, answer) = request(api, "POST", path, access::AGENT_TOKEN, Some(&review));
        assert_eq!(code, 201, "{answer}");
        assert_eq!(answer["status"]["allowed"], true, "{answer}");
    }
    // kubectl (no token over plain HTTP: the administrator) reads them all.
    let names = ok(&cluster, &["get", "secrets,sa", "-o", "name"]);
    assert_eq!(
        names,
        "secret/new\nsecret/regcred\nserviceaccount/default\nserviceaccount/new\n"
    );
}
