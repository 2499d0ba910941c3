//! Who owns a debug container: the process that created it, as `<boot id>/<pid>/<start
//! time>`, in the container's [`kdbg_runtimes::label::OWNER`] label. While that process lives,
//! the container is its to clean up; once it is gone (an agent that restarted, a `local`
//! killed with SIGKILL), any agent's reaper may remove what it left.
//!
//! The start time (in clock ticks since boot, from `/proc/<pid>/stat`) tells a process from a
//! later one that reuses its PID, and the boot ID a process from one of an earlier boot. An
//! agent in a container of its own sees its own pid namespace: a restarted agent is PID 1
//! again, but with another start time, so it is told from its predecessor.

/// This process as an owner.
pub fn this_process() -> String {
    let pid = std::process::id();
    format!(
        "{}/{pid}/{}",
        boot_id(),
        start_time(pid).unwrap_or_default()
    )
}

/// Whether `owner` names a process that is alive now. A process that has exited but that its
/// parent has not reaped yet (state `Z`, zombie, or `X`, dead) still has its `/proc` entry
/// and start time, and is not alive: an agent killed with SIGKILL whose parent reaps slowly
/// no longer owns its containers.
pub fn alive(owner: &str) -> bool {
    let mut parts = owner.split('/');
    let (Some(boot), Some(pid), Some(start), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    boot == boot_id()
        && stat(pid).is_some_and(|(state, t)| !matches!(state, 'Z' | 'X') && t.to_string() == start)
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Field 22 of `/proc/<pid>/stat`: when the process started, in clock ticks since boot.
fn start_time(pid: u32) -> Option<u64> {
    stat(pid).map(|(_, start)| start)
}

/// Fields 3 and 22 of `/proc/<pid>/stat`: the process's state (`R`, `S`, `Z`...) and when it
/// started, in clock ticks since boot.
fn stat(pid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields follow the last ')'.
    let mut fields = stat[stat.rfind(')')? + 2..].split(' ');
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_others_are_told_apart() {
        let me = this_process();
        assert!(alive(&me), "{me}");
        let (boot, rest) = me.split_once('/').unwrap();
        let (pid, start) = rest.split_once('/').unwrap();
        // The same PID started at another time: a later process that reused it.
        let later: u64 = start.parse::<u64>().unwrap() + 1;
        assert!(!alive(&format!("{boot}/{pid}/{later}")));
        // Another boot.
        assert!(!alive(&format!(
            "00000000-0000-0000-0000-000000000000/{pid}/{start}"
        )));
        for garbage in ["", "x", "a/b/c", "a/1/2/3"] {
            assert!(!alive(garbage), "{garbage}");
        }
        // A child that has exited.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let owner = format!("{boot}/{pid}/{}", start_time(pid).unwrap_or_default());
        child.wait().unwrap();
        assert!(!alive(&owner));
    }

    #[test]
    fn a_zombie_is_not_alive() {
        // A child that exits and is not reaped yet: its /proc entry stays, in state Z.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "read _"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let (boot, start) = (boot_id(), start_time(pid).unwrap());
        let owner = format!("{boot}/{pid}/{start}");
        assert!(alive(&owner));
        drop(child.stdin.take());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while stat(pid).is_some_and(|(state, _)| state != 'Z') {
            assert!(
                std::time::Instant::now() < deadline,
                "the child did not exit"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(stat(pid).map(|(state, _)| state), Some('Z'));
        assert!(!alive(&owner), "a zombie owns nothing");
        child.wait().unwrap();
    }
}
