//! The agent under a connection flood (`benches/flood`), against itself idle in the same run.

use std::fmt::Write as _;
use std::path::Path;

use crate::{read_json, verdict};

/// The section's heading, as it starts in RESULTS.md.
pub const HEADING: &str = "\n## The agent under a connection flood";

/// Appends the section, if `benches/flood` ran.
pub fn section(out: &mut String, figures: &Path) {
    let Ok(f) = read_json(&figures.join("flood.json")) else {
        return;
    };
    let num = |key: &str| f[key].as_f64().unwrap_or(f64::NAN);
    writeln!(out, "{HEADING}\n").unwrap();
    writeln!(
        out,
        "A separate agent process on loopback (`benches/flood`), on the test Docker. Session \
         setup, median of 5 sessions running `true`: the pod verb through the Kubernetes API \
         stand-in (its own process) and a port-forward, as users reach an agent, and, reported \
         beside it, `kubectl-debug local --agent` straight to the agent's port. Measured with \
         nothing else connected, with {} idle and {} slowloris connections held open, with \
         {} more held open beside them by two other processes (the oldest unauthenticated \
         connections are closed to make room: `limits.maxUnauthenticated`), and after {} \
         connection attempts (up to 5,000 open at once; they took {:.1} s, {} failed \
         to connect); the agent's RSS at each step.\n",
        num("idle"),
        num("slowloris"),
        num("many_held"),
        num("attempts"),
        num("attempts_s"),
        num("attempts_refused")
    )
    .unwrap();
    writeln!(
        out,
        "| state | session setup (pod verb) | `local --agent` (reported) | agent RSS | target | |"
    )
    .unwrap();
    writeln!(out, "|---|---|---|---|---|---|").unwrap();
    let setup = |state: &str| {
        (
            num(&format!("setup_{state}_ms")),
            num(&format!("setup_{state}_local_ms")),
        )
    };
    let (idle, idle_local) = setup("idle");
    writeln!(
        out,
        "| idle | {idle:.0} ms | {idle_local:.0} ms | {:.1} MiB | | |",
        num("rss_idle_mib")
    )
    .unwrap();
    let (held, held_local) = setup("held");
    let held_ok = held - idle <= 1000.0 && num("rss_held_mib") < 64.0;
    writeln!(
        out,
        "| connections held | {held:.0} ms | {held_local:.0} ms | {:.1} MiB | setup <= idle + 1 s, RSS < 64 MiB | {} |",
        num("rss_held_mib"),
        verdict(held_ok)
    )
    .unwrap();
    let (many, many_local) = setup("many_held");
    writeln!(
        out,
        "| and {:.0} more held (made in {:.1} s) | {many:.0} ms | {many_local:.0} ms | {:.1} MiB | setup <= 1 s, RSS < 128 MiB | {} |",
        num("many_held"),
        num("many_held_s"),
        num("rss_many_held_mib"),
        verdict(many <= 1000.0 && num("rss_many_held_mib") < 128.0)
    )
    .unwrap();
    let (after, after_local) = setup("after_flood");
    writeln!(
        out,
        "| right after the attempts | {after:.0} ms | {after_local:.0} ms | {:.1} MiB | setup <= 1 s | {} |",
        num("rss_peak_after_flood_mib"),
        verdict(after <= 1000.0)
    )
    .unwrap();
    writeln!(
        out,
        "| header timeout later | | | {:.1} MiB | RSS < 64 MiB | {} |",
        num("rss_after_flood_mib"),
        verdict(num("rss_after_flood_mib") < 64.0)
    )
    .unwrap();
}
