//! `kubectl-debug cp` (`benches/cp`) against `docker cp` and a `tar` at each end of a session.

use std::fmt::Write as _;
use std::path::Path;

use crate::{read_json, verdict};

/// The section's heading, as it starts in RESULTS.md.
pub const HEADING: &str = "\n## Copying files: `cp`";

/// Appends the section, if `benches/cp` ran.
pub fn section(out: &mut String, figures: &Path) {
    let Ok(f) = read_json(&figures.join("cp.json")) else {
        return;
    };
    let num = |key: &str| f[key].as_f64().unwrap_or(f64::NAN);
    let (mib, files) = (num("big_mib"), num("small_files"));
    writeln!(out, "{HEADING}\n").unwrap();
    writeln!(
        out,
        "Wall time of each command to its end, median of {} runs, in the same run: \
         `kubectl-debug cp` (a debug session whose command is the debug container's own static \
         helper, through the Kubernetes API stand-in, a port-forward and a separate agent \
         process of this tree, on the test Docker engine); `docker cp` (the engine reads the \
         container's filesystem itself: no session, no debug container); and kubectl cp's \
         path, `tar` at both ends of a session (`tar -c | kubectl-debug POD -i -- tar -x -C \
         /proc/1/root/tmp`, and back), which needs `tar` in the debug image. Into and from \
         the target's `/tmp` and a local directory on the same disk. Speed is against `docker \
         cp`: its time over ours. The verdict is on the rows with the agent reached \
         directly (`--connect direct`), as in the real-path section: `docker cp` crosses no \
         API server, and a cluster's `kubectl cp` crosses the same one; the rows through the \
         stand-in's port-forward are beside them.\n",
        num("runs")
    )
    .unwrap();
    writeln!(
        out,
        "| | kubectl-debug cp | the same, agent reached directly | docker cp | tar through a session | speed vs docker cp (direct) | the same, port-forward | target | |"
    )
    .unwrap();
    writeln!(out, "|---|---|---|---|---|---|---|---|---|").unwrap();
    for (what, label, target) in [
        ("big", format!("{mib:.0} MiB file"), Some(0.9)),
        (
            "small",
            format!("{} files of 1 KiB", thousands(files)),
            None,
        ),
    ] {
        for (way, into) in [("up", "into the pod"), ("down", "from the pod")] {
            let ours = num(&format!("{what}_ours_{way}_ms"));
            let direct = num(&format!("{what}_direct_{way}_ms"));
            let docker = num(&format!("{what}_docker_{way}_ms"));
            let tar = num(&format!("{what}_tar_{way}_ms"));
            let (speed, forwarded) = (docker / direct, docker / ours);
            let (goal, met) = match target {
                Some(goal) => (format!(">= {goal}x"), verdict(speed >= goal).to_owned()),
                None => ("none".to_owned(), String::new()),
            };
            writeln!(
                out,
                "| {label}, {into} | {ours:.0} ms | {direct:.0} ms | {docker:.0} ms | {tar:.0} ms | {speed:.2}x | {forwarded:.2}x | {goal} | {met} |"
            )
            .unwrap();
        }
    }
    let session = num("session_ms");
    let per_file = |way: &str| (num(&format!("small_ours_{way}_ms")) - session) / files * 1000.0;
    let big_up = num("big_ours_up_ms") - session;
    let docker_up = num("big_docker_up_ms");
    // What the session's start explains, and what it does not: said as the figures say it.
    let start_explains = if num("big_ours_up_ms") <= docker_up {
        "and the whole copy, the session's start included, is within `docker cp`'s time"
    } else if big_up <= docker_up {
        "so it is the session's start that costs the difference, not the copy"
    } else {
        "so the session's start is not all of the difference: the copy itself is slower \
         than the engine's (where that goes: the next paragraph)"
    };
    let small_tar = num("small_tar_up_ms").min(num("small_tar_down_ms"));
    let small_ours = num("small_ours_up_ms").min(num("small_ours_down_ms"));
    let against_tar = if small_ours > small_tar {
        "busybox's `tar` through a session does the same work faster, so our helper's \
         per-entry work is heavier than it needs to be"
    } else {
        "no slower than busybox's `tar` through a session"
    };
    writeln!(
        out,
        "\nWhere the time goes. A session with nothing to copy (`kubectl-debug POD -- true`: \
         the plugin's start, the pod and agent lookups, the debug container created and \
         removed) takes {session:.0} ms; every `cp` pays it and `docker cp` does not. Without \
         it the {mib:.0} MiB upload takes {big_up:.0} ms against `docker cp`'s \
         {docker_up:.0} ms, {start_explains}. For the small files the rest is per file, \
         {:.0} µs a file into the pod and {:.0} µs a file from it: the per-entry work at both \
         ends (a 512-byte header, open, write, chmod and utimes, each path resolved inside \
         the target's root), since the {} files make only about 15 MiB of tar; {against_tar}. \
         These are inferences from the figures, not a profile.",
        per_file("up"),
        per_file("down"),
        thousands(files)
    )
    .unwrap();
    // What the exec streams alone cost: the engine's own exec carrying the same bytes.
    let (exec_up, exec_down) = (num("big_exec_up_ms"), num("big_exec_down_ms"));
    let docker_down = num("big_docker_down_ms");
    let (direct_up, direct_down) = (num("big_direct_up_ms"), num("big_direct_down_ms"));
    let compare = |ours: f64, exec: f64| if ours <= exec { "less" } else { "more" };
    let lever = if direct_up > docker_up {
        "Into the pod what we add to the streams is the session's start (above): without it \
         the copy is within `docker cp`'s time."
    } else {
        "Into the pod we are within `docker cp`'s time, the session's start included."
    };
    writeln!(
        out,
        "\nWhat the exec streams cost. A copy's bytes cross a session's streams: the session's \
         process is started by the debug container's own `kdbg-init` and reads and writes the \
         agent's own pipes, so they cross neither containerd's shim nor dockerd (both only when \
         the session is exec'd by the runtime: `runtime.spawner: false`, or a container made \
         without a spawner); `docker exec` crosses both, and `docker cp` none of them. The \
         engine's own exec carrying the same {mib:.0} MiB, with \
         no debug container, agent, relay or archive (`docker exec -i TARGET sh -c 'cat > \
         FILE' < FILE`, and `docker exec TARGET cat FILE > FILE`), takes {exec_up:.0} ms into \
         the pod and {exec_down:.0} ms from it, against `docker cp`'s {docker_up:.0} ms and \
         {docker_down:.0} ms. Our whole copy with the agent reached directly, the session's \
         start included, takes {direct_up:.0} ms into the pod ({} than `docker exec` alone) \
         and {direct_down:.0} ms from it ({} than `docker exec` alone). {lever}",
        compare(direct_up, exec_up),
        compare(direct_down, exec_down),
    )
    .unwrap();
}

/// `n` with thousands separated by commas, as the rest of RESULTS.md writes them.
fn thousands(n: f64) -> String {
    let digits = format!("{n:.0}");
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
