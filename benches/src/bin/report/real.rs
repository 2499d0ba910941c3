//! The path users take (`benches/real-path`): a separate agent process and the pod verb
//! through the API stand-in, against the runtime's own exec, every pair in the same run.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::{read_json, verdict};

/// The pairs of `benches/real-path`: name, what ours runs, what theirs runs, and the target
/// (the least throughput ratio, or for setup the most time ratio).
const PAIRS: [(&str, &str, &str, Target); 21] = [
    (
        "stdout_head",
        "`POD -- head -c N /dev/zero` > /dev/null",
        "exec T head -c N /dev/zero",
        Target::AtLeast(1.0),
    ),
    (
        "stdout_head_pipe",
        "the same `| wc -c`",
        "the same `| wc -c`",
        Target::AtLeast(1.0),
    ),
    (
        "stdout_dd",
        "`POD -- dd if=/dev/zero bs=1M count=N` > /dev/null",
        "exec T dd ...",
        Target::AtLeast(1.0),
    ),
    (
        "stdout_dd_pipe",
        "the same `| wc -c`",
        "the same `| wc -c`",
        Target::AtLeast(1.0),
    ),
    (
        "tty_head",
        "`POD -t -- head -c N/4 /dev/zero` (under `script`)",
        "exec -t T head ... (under `script`)",
        Target::AtLeast(1.0),
    ),
    (
        "tty_head_pipe",
        "the same `| wc -c`",
        "the same `| wc -c`",
        Target::AtLeast(1.0),
    ),
    (
        "tty_dd",
        "`POD -t -- dd if=/dev/zero bs=1M count=N/4` (under `script`)",
        "exec -t T dd ... (under `script`)",
        Target::AtLeast(1.0),
    ),
    (
        "tty_dd_pipe",
        "the same `| wc -c`",
        "the same `| wc -c`",
        Target::AtLeast(1.0),
    ),
    (
        "stdin_wc",
        "`head -c N/4 /dev/zero \\| POD -i -- wc -c`",
        "the same into exec -i T wc -c",
        Target::AtLeast(0.9),
    ),
    (
        "stdout_head_portforward",
        "`stdout_head` through the port-forward (the default `--connect`)",
        "exec T head -c N /dev/zero",
        Target::Reported,
    ),
    (
        "stdout_dd_portforward",
        "`stdout_dd` through the port-forward",
        "exec T dd ...",
        Target::Reported,
    ),
    (
        "stdin_wc_portforward",
        "`stdin_wc` through the port-forward",
        "the same into exec -i T wc -c",
        Target::Reported,
    ),
    (
        "stdout_head_exec",
        "`stdout_head` exec'd by the runtime (`runtime.spawner: false`; on Docker through the engine's containerd)",
        "exec T head -c N /dev/zero",
        Target::Reported,
    ),
    (
        "stdin_wc_exec",
        "`stdin_wc` exec'd by the runtime (`runtime.spawner: false`)",
        "the same into exec -i T wc -c",
        Target::Reported,
    ),
    (
        "stdout_head_dockerd",
        "`stdout_head` through dockerd's exec (Docker only: the fallback when the engine's containerd is out of reach)",
        "exec T head -c N /dev/zero",
        Target::Reported,
    ),
    (
        "stdin_wc_dockerd",
        "`stdin_wc` through dockerd's exec (Docker only: the fallback)",
        "the same into exec -i T wc -c",
        Target::Reported,
    ),
    (
        "setup",
        "`POD -- true`",
        "run --rm joining T's namespaces, `true`",
        Target::AtMost(1.0),
    ),
    (
        "setup_session_only",
        "`POD --pull-policy Never -- true` (the same request as the default when the image is present)",
        "run --rm joining T's namespaces, `true`",
        Target::ReportedTime,
    ),
    (
        "setup_auth",
        "`POD -- true` to an agent that authenticates and authorizes its callers through the API server (TokenReview, SubjectAccessReview, cached for 10 s), as deployed",
        "run --rm joining T's namespaces, `true`",
        Target::AtMost(1.0),
    ),
    (
        "setup_exec",
        "`POD -- true` exec'd by the runtime (`runtime.spawner: false`)",
        "run --rm joining T's namespaces, `true`",
        Target::ReportedTime,
    ),
    (
        "recorded_text",
        "`POD -- sh -c 'yes LINE \\| head -c N'`, agent recording (v2, local disk)",
        "the same, agent not recording",
        Target::AtLeast(0.9),
    ),
];

#[derive(Clone, Copy)]
enum Target {
    /// Throughput: ours at least this fraction of theirs.
    AtLeast(f64),
    /// Time: ours at most this multiple of theirs.
    AtMost(f64),
    /// Throughput, no target: a second row that shows what a part of the path costs.
    Reported,
    /// Time, no target: the same for setup.
    ReportedTime,
}

/// The section's heading, from the newline before it.
pub const HEADING: &str = "\n## The path users take: a separate agent, the pod verb";

/// Appends the section for `real-docker.json` and `real-containerd.json`.
pub fn section(out: &mut String, figures: &Path) {
    writeln!(out, "{HEADING}\n").unwrap();
    out.push_str(
        "`benches/real-path docker|containerd`: the real `kubectl-debug POD` through the \
         Kubernetes API stand-in (its own process, `benches/src/bin/apiserver.rs`, the tests' \
         stand-in) to a `kubectl-debug-agent` process on 127.0.0.1, against the runtime's own \
         exec (`docker exec`, `ctr task exec`), each pair in the same run, medians. Throughput \
         ratios are theirs' time over ours (above 1: we are faster); setup is ours' time over \
         theirs'. The verdict rows reach the agent directly (`--connect direct`), since a \
         cluster's `kubectl exec` crosses the same API server and kubelet a port-forward does; \
         the `_portforward` rows add the stand-in's port-forward (the pod verb's default) and are \
         reported beside them. The agent has sessions' processes started by the debug \
         container's own `kdbg-init` (its spawner, as deployed), writing into the agent's own \
         pipes; the `_exec` rows have the runtime exec them instead (`runtime.spawner: false`, \
         as for a container made without a spawner: on Docker through the engine's containerd), \
         and on Docker the `_dockerd` rows through dockerd's exec, the last fallback.\n",
    );
    for runtime in ["docker", "containerd"] {
        let file = figures.join(format!("real-{runtime}.json"));
        let figures = match read_json(&file) {
            Ok(figures) => figures,
            Err(e) => {
                writeln!(out, "\n{runtime}: not measured in this run ({e}).").unwrap();
                continue;
            }
        };
        table(out, runtime, &figures);
    }
}

fn table(out: &mut String, runtime: &str, f: &Value) {
    let mib = f["bytes"].as_f64().unwrap_or(0.0) / (1024.0 * 1024.0);
    writeln!(
        out,
        "\n### {} ({}), N = {mib:.0} MiB, {} run(s) per throughput pair{}\n",
        runtime,
        f["version"].as_str().unwrap_or("?"),
        f["stdout_head"]["runs"].as_u64().unwrap_or(0),
        if f["smoke"].as_bool() == Some(true) {
            " (smoke run: not figures)"
        } else {
            ""
        }
    )
    .unwrap();
    writeln!(
        out,
        "| pair | ours | theirs | ours ms | theirs ms | ratio | target | |"
    )
    .unwrap();
    writeln!(out, "|---|---|---|---|---|---|---|---|").unwrap();
    for (name, ours, theirs, target) in PAIRS {
        let pair = &f[name];
        let (Some(mine), Some(their)) = (pair["ours_ms"].as_f64(), pair["theirs_ms"].as_f64())
        else {
            continue;
        };
        let (ratio, wanted, ok) = match target {
            Target::AtLeast(t) => (their / mine, format!(">= {t:.1}x"), their / mine >= t),
            Target::AtMost(t) => (mine / their, format!("<= {t:.1}x"), mine / their <= t),
            Target::Reported => (their / mine, "reported".to_owned(), true),
            Target::ReportedTime => (mine / their, "reported".to_owned(), true),
        };
        let verdict = match target {
            Target::Reported | Target::ReportedTime => "",
            _ => verdict(ok),
        };
        writeln!(
            out,
            "| {name} | {ours} | {theirs} | {mine:.0} | {their:.0} | {ratio:.2}x | {wanted} | {verdict} |"
        )
        .unwrap();
    }
    // Rounds of keystrokes, each side in turn; the verdict is the median round's (an older
    // run's figures have one round).
    let rounds: Vec<(&Value, &Value)> = match f["keystroke_rounds"].as_array() {
        Some(rounds) => rounds.iter().map(|r| (&r["ours"], &r["theirs"])).collect(),
        None => vec![(&f["keystroke_ours"], &f["keystroke_theirs"])],
    };
    let q = |v: &Value, q: &str| v[q].as_f64().unwrap_or(f64::NAN);
    let mut by_ratio: Vec<(f64, &Value, &Value)> = rounds
        .iter()
        .map(|(ours, theirs)| (q(ours, "p99_us") / q(theirs, "p99_us"), *ours, *theirs))
        .collect();
    by_ratio.sort_by(|a, b| a.0.total_cmp(&b.0));
    if let Some(&(keystroke, ours, theirs)) = by_ratio.get(by_ratio.len() / 2) {
        let spread = match by_ratio.as_slice() {
            [_] => String::new(),
            [low, .., high] => format!(
                " (median of {} rounds, {:.2}x-{:.2}x)",
                by_ratio.len(),
                low.0,
                high.0
            ),
            [] => String::new(),
        };
        writeln!(
            out,
            "| keystroke | `POD -i -- cat`, one byte echoed | exec -i T cat | p50 {:.0} us, p99 {:.0} us | p50 {:.0} us, p99 {:.0} us | p99 {keystroke:.2}x{spread} | p99 <= 1.2x | {} |",
            q(ours, "p50_us"),
            q(ours, "p99_us"),
            q(theirs, "p50_us"),
            q(theirs, "p99_us"),
            verdict(keystroke <= 1.2),
        )
        .unwrap();
    }
    let last = f["recording_last_line"].as_str().unwrap_or("");
    writeln!(
        out,
        "\nThe recording of the last `recorded_text` run: {:.0} MiB, ending `{}`{}.",
        f["recording_bytes"].as_f64().unwrap_or(0.0) / (1024.0 * 1024.0),
        last.replace('|', "\\|"),
        if last.contains("incomplete") {
            " (**the recorder skipped output**)"
        } else {
            " (complete)"
        }
    )
    .unwrap();
    cpu(out, runtime, &f["cpu_dd"]);
    setup_and_stdin(out, f);
    if let Some(w) = f["watched_tty"].as_object() {
        let (mine, their) = (
            w["ours_ms"].as_f64().unwrap_or(f64::NAN),
            w["theirs_ms"].as_f64().unwrap_or(f64::NAN),
        );
        writeln!(
            out,
            "\nA terminal session printing N/4 of text watched by `kubectl-debug watch` from its \
             second second on took {mine:.0} ms, unwatched {their:.0} ms: a watcher costs {:.0}% \
             (target <= 10%: {}).",
            (mine / their - 1.0) * 100.0,
            verdict(mine <= their * 1.1)
        )
        .unwrap();
    }
}

/// What the setup and stdin rows are made of.
fn setup_and_stdin(out: &mut String, f: &Value) {
    let ms = |pair: &str, side: &str| f[pair][side].as_f64().unwrap_or(f64::NAN);
    if f["setup_session_only"].is_object() {
        writeln!(
            out,
            "\nSetup is one request to the agent: with `IfNotPresent` \
             (the default) the plugin opens the session as if the policy were `Never`, and asks \
             for a pull (with its progress) only when the agent answers that the image is \
             absent. `setup_session_only` (`--pull-policy Never`) is that same request: {:.0} ms \
             against {:.0} ms for the default and {:.0} ms for theirs.",
            ms("setup_session_only", "ours_ms"),
            ms("setup", "ours_ms"),
            ms("setup", "theirs_ms"),
        )
        .unwrap();
    }
    writeln!(
        out,
        "\nstdin, the other direction: {:.0} ms reaching the agent directly, {:.0} ms through the \
         port-forward, {:.0} ms for theirs (docs/performance.md says what was tried on it).",
        ms("stdin_wc", "ours_ms"),
        ms("stdin_wc_portforward", "ours_ms"),
        ms("stdin_wc", "theirs_ms"),
    )
    .unwrap();
}

/// Where the CPU of one more `stdout_dd` run went, each side.
fn cpu(out: &mut String, runtime: &str, cpu: &Value) {
    let (Some(ours), Some(theirs)) = (cpu["ours"].as_object(), cpu["theirs"].as_object()) else {
        return;
    };
    let s = |side: &serde_json::Map<String, Value>, key: &str| {
        side.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN)
    };
    let client = if runtime == "docker" {
        "`docker` CLI"
    } else {
        "`ctr`"
    };
    writeln!(
        out,
        "\nWhere the CPU goes (one more `stdout_dd` run each side; CPU seconds, user and system): \
         ours {:.2} s on the whole machine, of which the plugin {:.2}, the agent {:.2}, the API \
         stand-in {:.2} (the agent reached directly: it only answers the pod lookup), and the \
         rest (engine, shims, dd) {:.2}; \
         theirs {:.2} s, of which the {client} {:.2} and the rest {:.2}.",
        s(ours, "machine_s"),
        s(ours, "client_s"),
        s(ours, "agent_s"),
        s(ours, "apiserver_s"),
        s(ours, "machine_s") - s(ours, "client_s") - s(ours, "agent_s") - s(ours, "apiserver_s"),
        s(theirs, "machine_s"),
        s(theirs, "client_s"),
        s(theirs, "machine_s") - s(theirs, "client_s"),
    )
    .unwrap();
    let added = s(ours, "agent_s") + s(ours, "apiserver_s");
    let runtime_exec = if runtime == "docker" {
        "docker exec"
    } else {
        "ctr task exec"
    };
    writeln!(
        out,
        "\nWhat each path has that the other has not: ours has the agent (the process's pipes \
         into channel frames on a WebSocket), and through a port-forward a second process (here \
         the API stand-in; in a cluster the API server and the kubelet: the `_portforward` rows); \
         `{runtime_exec}`'s has the runtime's copy of every byte between the process and its \
         client (containerd's shim, and on Docker dockerd too), which ours skips since the \
         process writes into the agent's pipes (the `_exec` rows pay it). The agent and the \
         stand-in used {added:.2} s, {:.0}% of all the CPU of theirs for the same bytes, on 2 \
         cores that every process of the path shares.",
        added / s(theirs, "machine_s") * 100.0,
    )
    .unwrap();
}
