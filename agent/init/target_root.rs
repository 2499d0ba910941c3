//! Where a session finds its target's root filesystem, and the `PATH` of a `--chroot`
//! session: pure functions of `kdbg-init` (a module of it; the agent's tests include it too).
//!
//! The debug container shares its target's pid namespace, so the target's main process is
//! visible there and `/proc/<pid>/root` is the target's root, as the target sees it (its
//! volumes and its `/proc` included). The agent says which PID that is in
//! [`TARGET_PID_ENV`] (1 when it does not say: the target's own PID namespace's init).

/// The environment variable through which the agent gives `kdbg-init run` the PID of the
/// target's main process as the debug container's pid namespace numbers it.
pub const TARGET_PID_ENV: &str = "KDBG_TARGET_PID";

/// Where a session finds the target's root: a symlink in the debug container's own
/// filesystem (never in the target's).
pub const TARGET_LINK: &str = "/target";

/// Why a target's root may be out of reach, and the way out: `/proc/<pid>/root` of a process
/// of another user needs CAP_SYS_PTRACE (ptrace access mode read).
pub const NEEDS_PTRACE: &str =
    "a target running as another user needs CAP_SYS_PTRACE: --profile general or sysadmin";

/// The PATH when the debug container's environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The PID of the target's main process from [`TARGET_PID_ENV`]'s value: 1 when it is
/// absent or not a PID.
pub fn target_pid(value: Option<&str>) -> u32 {
    value
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|pid| *pid > 0)
        .unwrap_or(1)
}

/// The target's root, through process `pid`.
pub fn proc_root(pid: u32) -> String {
    format!("/proc/{pid}/root")
}

/// The `PATH` of a `--chroot` session: `path`'s directories (looked up in the target's
/// files), then the same directories of the debug image, under `debug_root`.
pub fn chroot_path(path: Option<&str>, debug_root: &str) -> String {
    let path = path.filter(|p| !p.is_empty()).unwrap_or(DEFAULT_PATH);
    let debug = path
        .split(':')
        .filter(|dir| dir.starts_with('/'))
        .map(|dir| format!("{debug_root}{}", dir.trim_end_matches('/')));
    std::iter::once(path.to_owned())
        .chain(debug)
        .collect::<Vec<_>>()
        .join(":")
}
