//! Checks several tests share: confinement, terminals, slow readers, the syscall probe.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::*;

/// What a debug container tries with SYS_ADMIN: undo the read-only /proc/sys and /sys (from
/// there, `kernel.core_pattern` or a cgroup `release_agent` reach the node), and enter the
/// target's mount namespace (what SYS_ADMIN is granted for).
pub const SYS_ADMIN_PROBE: &str = "umount /proc/sys && echo UMOUNTED; \
     mount -o remount,rw /sys && echo REMOUNTED; \
     echo 1 > /proc/sys/kernel/core_uses_pid && echo WROTE_SYSCTL; \
     nsenter -t 1 -m -- ls /bin/sleep && echo NSENTER_OK";

/// The probe's outcome: mounts and sysctl writes refused, nsenter working.
pub fn assert_sys_admin_is_confined(out: &Output) {
    let stdout = text(&out.stdout);
    for escape in ["UMOUNTED", "REMOUNTED", "WROTE_SYSCTL"] {
        assert!(
            !stdout.contains(escape),
            "{escape}:\n{stdout}\n{}",
            text(&out.stderr)
        );
    }
    assert!(
        stdout.contains("NSENTER_OK"),
        "{stdout}\n{}",
        text(&out.stderr)
    );
}

/// An interactive session through a real pty (tmux, 100x30): `command` must open `sh` in a
/// debug container and then `echo EXIT=$?`. Checks the prompt, that stdin is a terminal whose
/// size follows a resize to 120x40, and that `exit 3` ends the session with code 3.
pub fn pty_session(tag: &str, command: &str) {
    let tmux = tmux::Tmux::new(tag);
    tmux.start(
        "e2e",
        100,
        30,
        &format!("{command}; echo EXIT=$?; sleep 30"),
    );
    tmux.wait_for("e2e", "/ #");
    tmux.line("e2e", "stty size; tty");
    tmux.wait_for("e2e", "30 100");
    tmux.wait_for("e2e", "/dev/pts/");
    tmux.resize("e2e", 120, 40);
    // The new size reaches the container's terminal a moment after the window's.
    tmux.retype_until("e2e", "stty size", "40 120");
    tmux.line("e2e", "exit 3");
    tmux.wait_for("e2e", "EXIT=3");
}

/// `kubectl-debug ... -- cat big.log | less`, nobody paging: sessions printing one size of
/// output each, concurrently, into readers that take nothing for 7 s (past the agent's 5 s
/// drain time and containerd's 2 s for a deleted process's output), then read it all. Which
/// size ends with output still behind the process when it exits depends on the buffers on
/// the way, so there are five (the default `policy.maxSessions.perTarget`); each of them lost
/// its tail on one runtime or the other before the agent waited for slow readers.
/// `session(script)` runs `sh -c script` in a debug session of `agent`.
pub fn a_paused_reader_gets_every_byte(agent: &Agent, session: impl Fn(&str) -> Command) {
    let sizes = [192, 256, 384, 768, 1024].map(|kb| kb * 1000);
    let running: Vec<_> = sizes
        .iter()
        .map(|size| {
            let child = session(&format!("head -c {size} /dev/zero"))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (*size, child)
        })
        .collect();
    // The pause is the scenario, not a wait for something: 7 s is past the agent's 5 s drain
    // time and containerd's 2 s, as above.
    std::thread::sleep(Duration::from_secs(7));
    let mut short = Vec::new();
    for (size, child) in running {
        let out = child.wait_with_output().unwrap();
        if out.status.code() != Some(0) || out.stdout.len() != size {
            short.push(format!(
                "{size} bytes: got {} (exit {:?}): {}",
                out.stdout.len(),
                out.status.code(),
                text(&out.stderr)
            ));
        }
    }
    assert!(
        short.is_empty(),
        "{short:#?}\nthe agent's log:\n{}",
        agent.log()
    );
}

/// The syscall probe (`assets/syscall_probe.rs`: each syscall the debug profiles' seccomp
/// filters decide on, tried), built once per test process as a static binary with `rustc`
/// alone, so that it runs in any image.
pub fn syscall_probe() -> Vec<u8> {
    static PROBE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    PROBE
        .get_or_init(|| {
            let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/syscall_probe.rs");
            let out =
                std::env::temp_dir().join(format!("kdbg-syscall-probe-{}", std::process::id()));
            let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
            let built = Command::new(rustc)
                .args([
                    "--edition",
                    "2024",
                    "-C",
                    "target-feature=+crt-static",
                    "-C",
                    "opt-level=s",
                ])
                .args(["-C", "panic=abort", "-o"])
                .arg(&out)
                .arg(&source)
                .output()
                .expect("running rustc");
            assert!(
                built.status.success(),
                "building the probe: {}",
                text(&built.stderr)
            );
            std::fs::read(&out).unwrap()
        })
        .clone()
}

/// A session's command that says what started its `kdbg-init run` (its parent's parent):
/// `started-by=/.kubectl-debug/init hold` for the container's spawner, `started-by=` with
/// parent 0 for the runtime's exec (its parent is outside the pid namespace). With `--rm`, it
/// also removes the spawner's socket first, as a container made without a spawner has none.
pub fn session_starter(remove_socket: bool) -> String {
    format!(
        "{}p=$(grep PPid /proc/$PPID/status | cut -f2); \
         echo \"started-by=$(cat /proc/$p/cmdline 2>/dev/null | tr '\\0' ' ') parent=$p\"",
        if remove_socket {
            "rm /.kubectl-debug/spawn/sock && "
        } else {
            ""
        }
    )
}

/// Asserts that `out` (of a session running [`session_starter`]) was started by the
/// container's spawner (`spawned`) or by the runtime's exec.
pub fn assert_started_by(out: &Output, spawned: bool) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("started-by="))
        .unwrap_or_default();
    if spawned {
        assert!(line.contains("/.kubectl-debug/init hold"), "{stdout}");
    } else {
        assert!(line.ends_with(" parent=0"), "exec'd: {stdout}");
    }
}
