//! Agentless mode's cost (`benches/ondemand`): an on-demand agent against the DaemonSet's.

use std::fmt::Write as _;
use std::path::Path;

use crate::{read_json, verdict};

/// The section's heading, as it starts in RESULTS.md.
pub const HEADING: &str = "\n## An agent started on demand";

/// Appends the section, if `benches/ondemand` ran.
pub fn section(out: &mut String, figures: &Path) {
    let Ok(f) = read_json(&figures.join("ondemand.json")) else {
        return;
    };
    let num = |key: &str| f[key].as_f64().unwrap_or(f64::NAN);
    writeln!(out, "{HEADING}\n").unwrap();
    writeln!(
        out,
        "`kubectl-debug POD -- echo first`, the pod verb through the Kubernetes API stand-in \
         and a port-forward, from the command to the first byte of its output: with the node's \
         DaemonSet agent (a separate agent process of this tree) and with `--agentless=always` \
         (an agent pod the stand-in runs as a container of the agent's image, present on the \
         node, on the test Docker), alternating, median of {} each. Both rows are the path \
         users take (no in-process agent). The output goes into a pipe, which the first byte \
         is read from; /dev/null has no first byte to time, and the throughput rows into \
         /dev/null and a pipe are in the sections above.\n",
        num("runs")
    )
    .unwrap();
    writeln!(
        out,
        "| | DaemonSet agent | on-demand agent | difference | target | |"
    )
    .unwrap();
    writeln!(out, "|---|---|---|---|---|---|").unwrap();
    let (daemon, demand) = (num("daemonset_ms"), num("ondemand_ms"));
    writeln!(
        out,
        "| first byte of output | {daemon:.0} ms | {demand:.0} ms | +{:.0} ms | <= +2000 ms | {} |",
        demand - daemon,
        verdict(demand - daemon <= 2000.0)
    )
    .unwrap();
    let (created, running, serving) = (num("created_ms"), num("running_ms"), num("serving_ms"));
    writeln!(
        out,
        "\nWhere the on-demand time goes (medians, from the plugin's `-v` log): earlier runs' \
         finished pods looked for and the pod created, {created:.0} ms after the on-demand \
         path began; its container started (phase Running), {:.0} ms more; the agent \
         answering through a port-forward, {:.0} ms more; the rest of the {demand:.0} ms is \
         the plugin's start, the pod and DaemonSet lookups, and the session itself (as with \
         the DaemonSet agent). The stand-in's kubelet starts the pod with the Docker CLI on \
         this machine; a real cluster adds its scheduler's and kubelet's own latency (the \
         pod is already pinned with nodeName, so no scheduling), which this does not \
         measure.",
        running - created,
        serving - running
    )
    .unwrap();
}
