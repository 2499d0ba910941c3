//! The contract with `kdbg-init`, the small init every debug container runs (the agent
//! provides the binary; see `agent/init/kdbg-init.rs`).

use std::time::Duration;

/// Where it is in every debug container.
pub const PATH: &str = "/.kubectl-debug/init";

/// The main process of a debug container: holds it until SIGTERM.
pub fn hold_args() -> Vec<String> {
    vec![PATH.into(), "hold".into()]
}

/// A session's process: `command` under a subreaper that reaps and kills what the session
/// leaves, and stops it with SIGTERM then SIGKILL after `grace`.
pub fn run_args(session: &str, grace: Duration, command: &[String]) -> Vec<String> {
    let mut args = vec![
        PATH.into(),
        "run".into(),
        "--session".into(),
        session.into(),
        "--grace".into(),
        grace.as_secs().to_string(),
        "--".into(),
    ];
    args.extend_from_slice(command);
    args
}

/// Sends `signal` to session `session`'s process.
pub fn signal_args(session: &str, signal: i32) -> Vec<String> {
    vec![
        PATH.into(),
        "signal".into(),
        session.into(),
        signal.to_string(),
    ]
}
