//! The contract with `kdbg-init`, the small init every debug container runs (the agent
//! provides the binary; see `agent/init/kdbg-init.rs`).

use crate::ProcessSpec;

/// Where it is in every debug container.
pub const PATH: &str = "/.kubectl-debug/init";

/// The main process of a debug container: holds it until SIGTERM.
pub fn hold_args() -> Vec<String> {
    vec![PATH.into(), "hold".into()]
}

/// The environment variable that gives `kdbg-init run` the PID of the target's main process
/// in the debug container's pid namespace; 1 without it. An environment variable, not an
/// argument, so that the `kdbg-init` of a container retained by an older agent still runs
/// the session (without `/target`).
pub const TARGET_PID_ENV: &str = "KDBG_TARGET_PID";

/// A session's process: `command` under a subreaper that reaps and kills what the session
/// leaves, and stops it with SIGTERM then SIGKILL after `grace`; with `chroot`
/// (`--chroot`), in the target's root. With [`run_env`] in its environment.
pub fn run_args(process: &ProcessSpec) -> Vec<String> {
    let mut args = vec![
        PATH.into(),
        "run".into(),
        "--session".into(),
        process.session.clone(),
        "--grace".into(),
        process.grace.as_secs().to_string(),
    ];
    if process.chroot {
        args.push("--chroot".into());
    }
    args.push("--".into());
    args.extend_from_slice(&process.command);
    args
}

/// What a session's process has in its environment beyond the container's: where the
/// target's main process is ([`TARGET_PID_ENV`]).
pub fn run_env(process: &ProcessSpec) -> Vec<String> {
    process
        .target_pid
        .map(|pid| format!("{TARGET_PID_ENV}={pid}"))
        .into_iter()
        .collect()
}

/// The PID of process `host_pid` (as the agent's pid namespace numbers it: the node's, where
/// the runtimes report PIDs) in its own, innermost pid namespace, which its debug containers
/// share: the last field of `NSpid` in its `/proc/<pid>/status`. `None` when the agent cannot
/// tell (it is not in the node's pid namespace, or the process is gone).
pub fn pid_in_own_namespace(host_pid: u32) -> Option<u32> {
    let own = std::fs::read_to_string("/proc/self/status").ok()?;
    // Only PIDs of the initial pid namespace are the runtimes': an agent in another one
    // would read someone else's /proc/<pid>.
    if nspid(&own)?.len() != 1 {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{host_pid}/status")).ok()?;
    let pids = nspid(&status)?;
    if pids.first() != Some(&host_pid) {
        return None;
    }
    pids.last().copied()
}

/// The `NSpid` line of a `/proc/<pid>/status`: the PID in each pid namespace, outermost first.
pub fn nspid(status: &str) -> Option<Vec<u32>> {
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    let pids: Option<Vec<u32>> = line.split_whitespace().map(|p| p.parse().ok()).collect();
    pids.filter(|p| !p.is_empty())
}

/// Where the agent mounts each debug container's spawner directory: `kdbg-init hold` listens
/// on [`SPAWN_SOCKET`] in it and starts sessions' processes (see `agent/init/spawner.rs`).
pub const SPAWN_DIR: &str = "/.kubectl-debug/spawn";

/// The spawner's socket, in [`SPAWN_DIR`].
pub const SPAWN_SOCKET: &str = "sock";

/// The request that has `kdbg-init hold`'s spawner start `process` ([`run_args`] with
/// [`run_env`], and `TERM` for a terminal), length first: see `agent/init/spawn_request.rs`.
/// Without a terminal, the attached streams' descriptors go with it, stdin, stdout, stderr.
pub fn spawn_request(process: &ProcessSpec) -> Vec<u8> {
    let streams: String = [
        (process.tty, 't'),
        (process.stdin, 'i'),
        (process.stdout || process.tty, 'o'),
        (process.stderr && !process.tty, 'e'),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, c)| *c)
    .collect();
    let args = run_args(process);
    let mut env = run_env(process);
    if process.tty {
        env.push("TERM=xterm".into());
    }
    let mut payload = Vec::new();
    let streams = if streams.is_empty() {
        "-".into()
    } else {
        streams
    };
    let fields = ["1".to_owned(), streams, args.len().to_string()];
    for field in fields.iter().chain(&args).chain(&env) {
        payload.extend_from_slice(field.as_bytes());
        payload.push(0);
    }
    let mut request = (payload.len() as u32).to_le_bytes().to_vec();
    request.extend_from_slice(&payload);
    request
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn process(chroot: bool, target_pid: Option<u32>) -> ProcessSpec {
        ProcessSpec {
            session: "s1".into(),
            command: vec!["sh".into(), "-c".into(), "id".into()],
            tty: false,
            stdin: false,
            stdout: true,
            stderr: true,
            grace: Duration::from_secs(5),
            target_pid,
            chroot,
        }
    }

    #[test]
    fn run_args_and_env_say_chroot_and_the_target() {
        let plain = process(false, None);
        assert_eq!(
            run_args(&plain),
            [
                PATH,
                "run",
                "--session",
                "s1",
                "--grace",
                "5",
                "--",
                "sh",
                "-c",
                "id"
            ]
        );
        assert!(run_env(&plain).is_empty());
        let chrooted = process(true, Some(42));
        assert_eq!(
            run_args(&chrooted),
            [
                PATH,
                "run",
                "--session",
                "s1",
                "--grace",
                "5",
                "--chroot",
                "--",
                "sh",
                "-c",
                "id"
            ]
        );
        assert_eq!(run_env(&chrooted), ["KDBG_TARGET_PID=42"]);
    }

    #[test]
    fn nspid_is_read_outermost_first() {
        let status = "Name:\tsleep\nTgid:\t4242\nNSpid:\t4242\t7\nNSpgid:\t4242\t7\n";
        assert_eq!(nspid(status), Some(vec![4242, 7]));
        assert_eq!(nspid("NSpid:\t12\n"), Some(vec![12]));
        assert_eq!(nspid("Name:\tx\n"), None);
        assert_eq!(nspid("NSpid:\tx\n"), None);
        // This process: the first field is its PID as this namespace numbers it.
        let me = std::fs::read_to_string("/proc/self/status").unwrap();
        assert_eq!(nspid(&me).unwrap()[0], std::process::id());
        if nspid(&me).unwrap().len() == 1 {
            assert_eq!(
                pid_in_own_namespace(std::process::id()),
                Some(std::process::id())
            );
        }
    }
}
