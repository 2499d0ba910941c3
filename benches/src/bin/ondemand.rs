//! Agentless mode's cost (issue 21): the time from the command to the first byte of its
//! output, `kubectl-debug POD -- echo`, with an agent started on demand against the node's
//! DaemonSet agent, in the same run, the agent image present on the node. Both go the way
//! users go: the pod verb, through the Kubernetes API stand-in and a port-forward; the
//! DaemonSet agent is a separate process of this tree, the on-demand one a pod the stand-in
//! runs as a container of the agent's image (`KDBG_ONDEMAND_IMAGE`). Where the on-demand
//! time goes comes from the plugin's own log (`-v`): the pod created, running, the agent
//! answering through the port-forward, then the session.
//!
//! Writes `target/kdbg-bench/ondemand.json` for `report` (run it through `benches/ondemand`).

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kdbg_testkit::apiserver::{AGENT_NAMESPACE, Cluster, NODE, running_pod};
use kdbg_testkit::engine::{DockerEngine, Engine};
use kdbg_testkit::{Agent, eventually, text};

const RUNS: usize = 7;

/// One command's figures: to the first byte of output, and the on-demand phases (ms since
/// the command started) when it logged them.
#[derive(Default, Clone, Copy)]
struct Run {
    first_byte_ms: f64,
    created_ms: Option<f64>,
    running_ms: Option<f64>,
    serving_ms: Option<f64>,
}

fn main() {
    let cluster = Cluster::new("bench");
    let web = DockerEngine.pod_target("bench", "web", false, "exec sleep 3600");
    cluster.api.add_pod(running_pod(
        "bench",
        "web",
        &[("app", &web.pod_reference(), true)],
    ));
    let agent = Agent::start();
    let dir = std::env::temp_dir().join(format!("kdbg-ondemand-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let docker = kdbg_testkit::docker_host();
    let config = dir.join("debug-config");
    std::fs::write(
        &config,
        format!(
            "agentImage: {}\nagentImagePullPolicy: Never\nagentRuntimeSockets: {{docker: {}}}\n",
            kdbg_testkit::ondemand_image(),
            docker.strip_prefix("unix://").unwrap_or(&docker)
        ),
    )
    .unwrap();
    let command = |mode: &str| {
        let mut cmd = kdbg_testkit::plugin();
        cmd.arg("--kubeconfig")
            .arg(&cluster.kubeconfig)
            .arg("--plugin-config")
            .arg(&config)
            .args(["-n", "bench", "-v", "--agent-port"])
            .arg(agent.port.to_string())
            .arg(format!("--agentless={mode}"))
            .args([
                "web",
                "--image",
                &kdbg_testkit::image(),
                "--",
                "echo",
                "first",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    };
    let on_demand_pods = || {
        cluster
            .pods_selected(AGENT_NAMESPACE, "app.kubernetes.io/component=on-demand")
            .lines()
            .count()
    };
    // One of each first, not counted: the page cache, the engine's first container.
    let (mut daemon, mut demand) = (Vec::new(), Vec::new());
    for i in 0..=RUNS {
        for (mode, runs) in [("never", &mut daemon), ("always", &mut demand)] {
            let run = measure(&mut command(mode));
            eventually(Duration::from_secs(60), "the on-demand pod to go", || {
                on_demand_pods() == 0
            });
            if i > 0 {
                runs.push(run);
            }
        }
    }
    let median = |runs: &[Run], pick: fn(&Run) -> Option<f64>| {
        let mut values: Vec<f64> = runs.iter().filter_map(pick).collect();
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let first = |r: &Run| Some(r.first_byte_ms);
    let figures = serde_json::json!({
        "runs": RUNS,
        "node": NODE,
        "daemonset_ms": median(&daemon, first),
        "ondemand_ms": median(&demand, first),
        "created_ms": median(&demand, |r| r.created_ms),
        "running_ms": median(&demand, |r| r.running_ms),
        "serving_ms": median(&demand, |r| r.serving_ms),
    });
    let out = std::path::Path::new("target/kdbg-bench");
    std::fs::create_dir_all(out).unwrap();
    std::fs::write(out.join("ondemand.json"), figures.to_string()).unwrap();
    println!("{figures}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `cmd`, timing the first byte of its stdout, and reads the on-demand phases from its
/// log.
fn measure(cmd: &mut Command) -> Run {
    let started = Instant::now();
    let mut child = cmd.spawn().expect("running kubectl-debug");
    let mut stdout = child.stdout.take().unwrap();
    let mut byte = [0u8; 1];
    let n = stdout.read(&mut byte).unwrap();
    let first_byte_ms = started.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(n, 1, "no output");
    let mut rest = Vec::new();
    let _ = stdout.read_to_end(&mut rest);
    let out = child.wait_with_output().unwrap();
    let log = text(&out.stderr);
    assert!(out.status.success(), "{log}");
    // The plugin logs ms since it created the pod (and, for the first, since it began).
    let ms = |what: &str| {
        log.lines()
            .find(|l| l.contains(what))
            .and_then(|l| l.split("ms=").nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    let created = ms("on-demand agent: pod created");
    let running = log
        .lines()
        .find(|l| l.contains("on-demand agent: pod phase") && l.contains("Running"))
        .and_then(|l| l.split("ms=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok());
    Run {
        first_byte_ms,
        created_ms: created,
        running_ms: created.zip(running).map(|(c, r)| c + r),
        serving_ms: created
            .zip(ms("on-demand agent: serving"))
            .map(|(c, s)| c + s),
    }
}
