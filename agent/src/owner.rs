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

/// Whether `owner` names a process that is alive now.
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
    boot == boot_id() && start_time(pid).is_some_and(|t| t.to_string() == start)
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Field 22 of `/proc/<pid>/stat`: when the process started, in clock ticks since boot.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
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
}
