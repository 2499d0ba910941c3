//! Bounded waits: polling a condition, never a fixed sleep standing for readiness.

use std::time::{Duration, Instant};

use crate::*;

/// Waits (at most [`CLEANUP_BOUND`]) until `leftovers` finds nothing: an agent removes a debug
/// container just after it has sent the exit status, so the plugin may exit a moment before.
pub fn assert_removed_soon(leftovers: impl Fn() -> Vec<String>) {
    if let Err(left) = removed_within(CLEANUP_BOUND, &leftovers) {
        panic!("debug containers left after {CLEANUP_BOUND:?}: {left:?}");
    }
}

/// How long a cleanup may take before a test calls it missing. Cleanup takes well under a
/// second here; the bound is generous because the tests share a loaded 2-core machine with
/// each other and with the engines, and a cleanup that never comes fails it just the same.
pub const CLEANUP_BOUND: Duration = Duration::from_secs(15);

/// Like [`assert_removed_soon`], for a cleanup `agent` does on its own: a failure shows what
/// the agent logged meanwhile.
pub fn assert_agent_removed(leftovers: impl Fn() -> Vec<String>, agent: &Agent) {
    if let Err(left) = removed_within(CLEANUP_BOUND, &leftovers) {
        panic!(
            "debug containers left after {CLEANUP_BOUND:?}: {left:?}; the agent logged:\n{}",
            agent.log()
        );
    }
}

/// Waits up to `limit` for `leftovers` to be empty; what is left if they never are.
pub(crate) fn removed_within(
    limit: Duration,
    leftovers: &impl Fn() -> Vec<String>,
) -> Result<(), Vec<String>> {
    let deadline = Instant::now() + limit;
    loop {
        let left = leftovers();
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(left);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (at most [`READY_BOUND`]) until `leftovers` finds a debug container, and returns
/// its ID.
pub fn wait_for_debug_container(leftovers: impl Fn() -> Vec<String>) -> String {
    let mut found = None;
    eventually(READY_BOUND, "a debug container to appear", || {
        found = leftovers().pop();
        found.is_some()
    });
    found.expect("found")
}

/// How long something a test started may take to be ready (a container's process, a
/// listener, a resize reaching a terminal): a moment here; the bound is for a loaded 2-core
/// machine that runs the tests and the engines at once.
pub const READY_BOUND: Duration = Duration::from_secs(20);

/// Waits (at most `limit`) until `done` holds, asking every 50 ms; fails the test saying
/// `what` it waited for if it never does.
pub fn eventually(limit: Duration, what: &str, done: impl FnMut() -> bool) {
    assert!(
        within(limit, done),
        "timed out after {limit:?} waiting for {what}"
    );
}

/// Whether `done` holds within `limit`, asking every 50 ms: for a caller that says more than
/// [`eventually`] when it does not.
pub fn within(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (at most [`READY_BOUND`]) until `target`'s main process runs `command` (its program
/// and arguments, joined by spaces): its script has come to its final `exec`, so what it did
/// before (files written, daemons started) is done.
pub fn wait_for_exec(target: &dyn engine::Targeted, command: &str) {
    eventually(
        READY_BOUND,
        &format!("the target's script to exec {command:?}"),
        || runs(target.pid(), command),
    );
}

/// Whether process `pid` of this machine runs `command` (program and arguments joined by
/// spaces).
pub fn runs(pid: u32, command: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        let words: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|w| !w.is_empty())
            .map(text)
            .collect();
        words.join(" ") == command
    })
}

/// Waits (at most [`READY_BOUND`]) until something listens on TCP `port` in `target`'s
/// network namespace.
pub fn wait_for_listener(target: &dyn engine::Targeted, port: u16) {
    eventually(
        READY_BOUND,
        &format!("a listener on port {port} in the target"),
        || listens(target.pid(), port),
    );
}

/// Whether a TCP socket listens on `port` in the network namespace of process `pid`, as its
/// `/proc/PID/net/tcp` and `tcp6` list them.
pub fn listens(pid: u32, port: u16) -> bool {
    let wanted = format!("{port:04X}");
    ["tcp", "tcp6"].iter().any(|table| {
        std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).is_ok_and(|sockets| {
            sockets.lines().skip(1).any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                // `local_address` is `ADDRESS:PORT` in hex; state 0A is LISTEN.
                fields.len() > 3
                    && fields[1].rsplit(':').next() == Some(wanted.as_str())
                    && fields[3] == "0A"
            })
        })
    })
}
