//! `kdbg-init`: the small init every debug container runs, provided by the agent (bind-mounted
//! read-only at `/.kubectl-debug/init`), so that a debug session leaves nothing behind in the
//! target's pid namespace.
//!
//! A debug container shares its target's pid namespace, whose PID 1 is the target's process:
//! it does not reap orphans, so a session's background processes would stay there as zombies
//! (or keep running) after the session. Hence:
//!
//! - `kdbg-init hold`: the container's main process. It holds the container (and so its
//!   filesystem and namespaces) between sessions, and exits on SIGTERM, SIGINT or SIGHUP.
//!   When the agent mounted a spawner directory, it also starts sessions' processes (`run`
//!   below) on the agent's request, in place of the runtime's exec: see spawner.rs.
//! - `kdbg-init run --session ID --grace SECS [--chroot] -- COMMAND...`: one session's process.
//!   It points `/target` (a symlink in the debug container's own filesystem) at the target's
//!   root, `/proc/<pid>/root` of the target's main process (`KDBG_TARGET_PID`, which the agent
//!   sets; 1 without it), and sets `TARGET_ROOT` to it; with `--chroot`, the command runs with
//!   that root as `/` instead (`chroot(2)`: nothing is mounted, nothing written in the
//!   target), `TARGET_ROOT=/`, the debug image's root at `DEBUG_ROOT` (`/proc/<this
//!   process>/root`) and its directories appended to `PATH`. It becomes
//!   a child subreaper (`PR_SET_CHILD_SUBREAPER`), so every orphan of the session is re-parented
//!   to it and reaped; runs COMMAND; when COMMAND exits, it kills whatever the session left
//!   running and reaps it, then exits with COMMAND's status (128 + signal when killed). On
//!   SIGTERM or SIGHUP (the session is being stopped, or its terminal went away) it sends
//!   SIGTERM to the whole session, and SIGKILL after SECS. The terminal's own signals (Ctrl-C,
//!   Ctrl-\, Ctrl-Z) are for the command: this process, in the terminal's foreground group
//!   with it, takes them without acting on them.
//! - `kdbg-init signal ID SIGNAL`: sends SIGNAL to the `run` process of session ID (Docker has
//!   no API to signal an exec'd process, so the agent execs this).
//! - `kdbg-init pack PATH` and `kdbg-init unpack [--into] PATH`: a tar of the target's PATH on
//!   stdout, or one from stdin unpacked there, resolving paths inside the target's root
//!   (`kubectl-debug cp`; see copy.rs and archive.rs).
//!
//! It is compiled by the agent's build script with `rustc` alone (no crates) and linked
//! statically (`crt-static`), so it runs in any image, glibc, musl or none. Being dependency
//! free, it declares the few libc functions it needs itself: that is the reason for the
//! `unsafe` blocks below, each a plain call with arguments whose layout glibc documents.

#![allow(unsafe_code)]

mod archive;
mod copy;
mod spawn_request;
mod spawner;
mod target_root;

use std::ffi::{CString, c_char, c_int};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

/// glibc's `sigset_t`: 1024 bits.
#[repr(C)]
struct SigSet([u64; 16]);

/// glibc's `siginfo_t` (128 bytes); only the signal number is read, through the return value.
#[repr(C)]
struct SigInfo([u64; 16]);

#[repr(C)]
struct TimeSpec {
    tv_sec: i64,
    tv_nsec: i64,
}

unsafe extern "C" {
    fn prctl(option: c_int, arg2: u64, arg3: u64, arg4: u64, arg5: u64) -> c_int;
    fn sigemptyset(set: *mut SigSet) -> c_int;
    fn sigaddset(set: *mut SigSet, signal: c_int) -> c_int;
    fn sigprocmask(how: c_int, set: *const SigSet, old: *mut SigSet) -> c_int;
    fn sigtimedwait(set: *const SigSet, info: *mut SigInfo, timeout: *const TimeSpec) -> c_int;
    fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
    fn kill(pid: c_int, signal: c_int) -> c_int;
    fn getpid() -> c_int;
    fn chroot(path: *const c_char) -> c_int;
    fn chdir(path: *const c_char) -> c_int;
}

const PR_SET_CHILD_SUBREAPER: c_int = 36;
const SIG_BLOCK: c_int = 0;
const SIG_SETMASK: c_int = 2;
const WNOHANG: c_int = 1;
const SIGHUP: c_int = 1;
const SIGINT: c_int = 2;
const SIGQUIT: c_int = 3;
const SIGKILL: c_int = 9;
const SIGTERM: c_int = 15;
const SIGCHLD: c_int = 17;
const SIGTSTP: c_int = 20;
const SIGTTIN: c_int = 21;
const SIGTTOU: c_int = 22;
/// How often `run` looks again without a signal (a safety net; SIGCHLD wakes it at once).
const TICK: Duration = Duration::from_millis(200);
/// How long `run` waits for the session's last processes to die after SIGKILL.
const LAST_REAP: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    // `pack` and `unpack` take paths, which need not be UTF-8: see copy.rs.
    let raw: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if let Some(verb @ ("pack" | "unpack")) = raw.first().and_then(|v| v.to_str()) {
        return copy::main(verb == "unpack", &raw[1..]);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["hold"] => hold(),
        ["run", "--session", session, "--grace", grace, rest @ ..] => {
            let (chroot, rest) = match rest {
                ["--chroot", rest @ ..] => (true, rest),
                rest => (false, rest),
            };
            match (grace.parse::<u64>(), rest) {
                (Ok(grace), ["--", command @ ..]) if !command.is_empty() => {
                    run(session, Duration::from_secs(grace), chroot, command)
                }
                _ => usage(),
            }
        }
        ["signal", session, signal] => match signal.parse::<c_int>() {
            Ok(signal) => signal_session(session, signal),
            Err(_) => usage(),
        },
        _ => usage(),
    }
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: kdbg-init hold | run --session ID --grace SECS [--chroot] -- COMMAND... | signal ID SIGNAL"
    );
    ExitCode::from(2)
}

/// Blocks the signals we wait for, so they queue until `sigtimedwait` takes them.
fn block_signals() -> SigSet {
    let mut set = SigSet([0; 16]);
    // SAFETY: `set` is a valid, writable sigset_t for the duration of each call.
    unsafe {
        sigemptyset(&mut set);
        for signal in [
            SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGCHLD, SIGTSTP, SIGTTIN, SIGTTOU,
        ] {
            sigaddset(&mut set, signal);
        }
        sigprocmask(SIG_BLOCK, &set, std::ptr::null_mut());
    }
    set
}

/// The next blocked signal, or `None` after `timeout`.
fn wait_signal(set: &SigSet, timeout: Duration) -> Option<c_int> {
    let mut info = SigInfo([0; 16]);
    let timeout = TimeSpec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    // SAFETY: all three pointers are valid for the call; the kernel writes only `info`.
    let signal = unsafe { sigtimedwait(set, &mut info, &timeout) };
    (signal > 0).then_some(signal)
}

/// Reaps every exited child; returns the status of `main` if it was among them.
fn reap(main: c_int) -> Option<u8> {
    let mut main_status = None;
    loop {
        let mut status: c_int = 0;
        // SAFETY: `status` is a valid, writable int.
        let pid = unsafe { waitpid(-1, &mut status, WNOHANG) };
        if pid <= 0 {
            return main_status;
        }
        if pid == main {
            let signalled = status & 0x7f;
            main_status = Some(if signalled == 0 {
                ((status >> 8) & 0xff) as u8
            } else {
                (128 + signalled) as u8
            });
        }
    }
}

fn send(pid: c_int, signal: c_int) {
    // SAFETY: kill takes plain integers; a pid that is gone is an error we ignore.
    unsafe {
        kill(pid, signal);
    }
}

fn hold() -> ExitCode {
    // Blocked before the spawner's threads start, so they inherit it and the signals queue
    // for the wait below.
    let set = block_signals();
    let spawning = spawner::serve();
    loop {
        match wait_signal(&set, Duration::from_secs(3600)) {
            Some(SIGTERM | SIGINT | SIGHUP) => {
                if spawning {
                    let _ = std::fs::remove_file(spawn_request::SPAWN_SOCKET);
                }
                return ExitCode::SUCCESS;
            }
            // The spawner's threads reap its children; nothing else is ours, but a zombie is
            // never left.
            _ if !spawning => {
                reap(0);
            }
            _ => {}
        }
    }
}

/// Points [`target_root::TARGET_LINK`] at `root` (atomically, so that sessions starting
/// together agree); returns where the session finds the target's root: the link, or `root`
/// itself when the link cannot be made (a read-only debug image, a user other than root, or
/// the image's own `/target`).
fn link_target(root: &str) -> String {
    let link = target_root::TARGET_LINK;
    match std::fs::read_link(link) {
        Ok(current) if current.as_os_str() == root => return link.to_owned(),
        // Ours, from an earlier session: replaced.
        Ok(current) if current.to_str().is_some_and(|c| c.starts_with("/proc/")) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        _ => {
            eprintln!(
                "kdbg-init: {link} is the debug image's; the target's root is at {root} ($TARGET_ROOT)"
            );
            return root.to_owned();
        }
    }
    // SAFETY: getpid takes nothing and cannot fail.
    let aside = format!("/.kdbg-target.{}", unsafe { getpid() });
    let made =
        std::os::unix::fs::symlink(root, &aside).and_then(|()| std::fs::rename(&aside, link));
    match made {
        Ok(()) => link.to_owned(),
        Err(e) => {
            let _ = std::fs::remove_file(&aside);
            eprintln!(
                "kdbg-init: cannot make {link} ({e}); the target's root is at {root} ($TARGET_ROOT)"
            );
            root.to_owned()
        }
    }
}

fn run(session: &str, grace: Duration, chroot_target: bool, command: &[&str]) -> ExitCode {
    let set = block_signals();
    // SAFETY: prctl with integer arguments.
    if unsafe { prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        eprintln!(
            "kdbg-init: cannot become a child subreaper; orphans of session {session} go to the target's PID 1"
        );
    }
    let pid = target_root::target_pid(std::env::var(target_root::TARGET_PID_ENV).ok().as_deref());
    let root = target_root::proc_root(pid);
    let mut spawn = Command::new(command[0]);
    spawn
        .args(&command[1..])
        .env_remove(target_root::TARGET_PID_ENV);
    if chroot_target {
        // Reached first, so that what stops the chroot is said plainly.
        if let Err(e) = std::fs::read_dir(&root) {
            eprintln!(
                "kdbg-init: --chroot: cannot reach the target's root {root}: {e}{}",
                if e.kind() == std::io::ErrorKind::PermissionDenied {
                    format!(" ({})", target_root::NEEDS_PTRACE)
                } else {
                    String::new()
                }
            );
            return ExitCode::from(126);
        }
        // SAFETY: getpid takes nothing and cannot fail.
        let debug_root = target_root::proc_root(unsafe { getpid() } as u32);
        let path = target_root::chroot_path(std::env::var("PATH").ok().as_deref(), &debug_root);
        spawn
            .env("TARGET_ROOT", "/")
            .env("DEBUG_ROOT", &debug_root)
            .env("PATH", path);
        let Ok(root) = CString::new(root.clone()) else {
            return usage();
        };
        // SAFETY: chroot and chdir take C strings that outlive the call; the child is the
        // fork of a single-threaded process.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut spawn, move || {
                if chroot(root.as_ptr()) != 0 || chdir(c"/".as_ptr()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    } else {
        spawn.env("TARGET_ROOT", link_target(&root));
    }
    // The child inherits our blocked signals: it must get them as usual, so its mask is
    // emptied between fork and exec.
    // SAFETY: only sigemptyset and sigprocmask run in the child, both async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut spawn, || {
            let mut empty = SigSet([0; 16]);
            sigemptyset(&mut empty);
            sigprocmask(SIG_SETMASK, &empty, std::ptr::null_mut());
            Ok(())
        });
    }
    let child = match spawn.spawn() {
        Ok(child) => child,
        Err(e) => {
            // EPERM: the chroot (EACCES would be the command's own permissions).
            if chroot_target && e.raw_os_error() == Some(1) {
                eprintln!(
                    "kdbg-init: --chroot: cannot run {:?} in the target's root {root}: {e} (chroot needs CAP_SYS_CHROOT: the debug image's user must be root)",
                    command[0]
                );
            } else {
                eprintln!("kdbg-init: cannot run {:?}: {e}", command[0]);
            }
            return ExitCode::from(if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            });
        }
    };
    let main = child.id() as c_int;
    let mut kill_at: Option<Instant> = None;
    let status = loop {
        if let Some(status) = reap(main) {
            break status;
        }
        if kill_at.is_some_and(|at| Instant::now() >= at) {
            signal_descendants(SIGKILL);
        }
        match wait_signal(&set, TICK) {
            Some(SIGTERM | SIGHUP) if kill_at.is_none() => {
                signal_descendants(SIGTERM);
                kill_at = Some(Instant::now() + grace);
            }
            _ => {}
        }
    };
    // The command is over: so is whatever it left running.
    let deadline = Instant::now() + LAST_REAP;
    while signal_descendants(SIGKILL) > 0 && Instant::now() < deadline {
        wait_signal(&set, Duration::from_millis(20));
        reap(main);
    }
    ExitCode::from(status)
}

/// Sends `signal` to every process below this one; returns how many there were.
fn signal_descendants(signal: c_int) -> usize {
    // SAFETY: getpid takes nothing and cannot fail.
    let me = unsafe { getpid() };
    let parents = processes();
    let mut count = 0;
    for &(pid, _) in &parents {
        let mut ancestor = pid;
        // Walk up at most as many steps as there are processes.
        for _ in 0..parents.len() {
            let Some(&(_, parent)) = parents.iter().find(|(p, _)| *p == ancestor) else {
                break;
            };
            if parent == me {
                send(pid, signal);
                count += 1;
                break;
            }
            if parent <= 1 {
                break;
            }
            ancestor = parent;
        }
    }
    count
}

/// Every process of this pid namespace, with its parent.
fn processes() -> Vec<(c_int, c_int)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<c_int>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // The command name may hold spaces and parentheses: the fields follow the last ')'.
            let rest = &stat[stat.rfind(')')? + 2..];
            let parent = rest.split(' ').nth(1)?.parse().ok()?;
            Some((pid, parent))
        })
        .collect()
}

fn signal_session(session: &str, signal: c_int) -> ExitCode {
    let mut found = false;
    for (pid, _) in processes() {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let is_session = args.len() > 3
            && args[0].ends_with(b"init")
            && args[1] == b"run"
            && args[2] == b"--session"
            && args[3] == session.as_bytes();
        if is_session {
            send(pid, signal);
            found = true;
        }
    }
    if found {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
