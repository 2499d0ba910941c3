//! Who owns a debug container: the process that created it, as `<boot id>/<pid>/<start
//! time>/<pid namespace>`, in the container's [`kdbg_runtimes::label::OWNER`] label. While
//! that process lives, the container is its to clean up; once it is gone (an agent that
//! restarted, a `local` killed with SIGKILL), any agent's reaper may remove what it left.
//!
//! The start time (in clock ticks since boot, from `/proc/<pid>/stat`) tells a process from a
//! later one that reuses its PID, and the boot ID a process from one of an earlier boot. The
//! PID namespace says whose numbering the PID is in: an agent in a PID namespace of its own
//! (without `hostPID`) is PID 1 there, and the node's init is PID 1 here, so an owner of
//! another namespace is not judged at all ([`Liveness::Unknown`]): its containers are left to
//! it, and to the reaper's rule for containers whose target is gone. (Before this, such an
//! agent took every other agent's sessions for orphans and removed them, and theirs its.)

/// This process as an owner: `<boot id>/<pid>/<start time>/<pid namespace>`.
pub fn this_process() -> String {
    let pid = std::process::id();
    format!(
        "{}/{pid}/{}/{}",
        boot_id(),
        start_time(pid).unwrap_or_default(),
        pid_namespace().unwrap_or_default()
    )
}

/// What can be told of an owner from this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// It runs.
    Alive,
    /// It has exited (or the label is not an owner's).
    Gone,
    /// It numbers its PID in another PID namespace than this process sees (an agent without
    /// `hostPID`, or this one without it): its PID here is another process's, if any.
    Unknown,
}

/// Whether `owner` names a process that is alive now. A process that has exited but that its
/// parent has not reaped yet (state `Z`, zombie, or `X`, dead) still has its `/proc` entry
/// and start time, and is not alive: an agent killed with SIGKILL whose parent reaps slowly
/// no longer owns its containers. An owner of another PID namespace is
/// [`Liveness::Unknown`]: judging it by a PID of ours would be judging another process (an
/// agent in a PID namespace of its own is PID 1 there, the node's init here), and removing
/// live sessions of another agent.
pub fn liveness(owner: &str) -> Liveness {
    let parts: Vec<&str> = owner.split('/').collect();
    let (boot, pid, start, namespace) = match parts.as_slice() {
        [boot, pid, start] => (*boot, *pid, *start, None),
        [boot, pid, start, namespace] => (*boot, *pid, *start, Some(*namespace)),
        _ => return Liveness::Gone,
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return Liveness::Gone;
    };
    if boot != boot_id() {
        return Liveness::Gone;
    }
    if let Some(namespace) = namespace
        && Some(namespace) != pid_namespace().as_deref()
    {
        return Liveness::Unknown;
    }
    match stat(pid) {
        Some((state, t)) if !matches!(state, 'Z' | 'X') && t.to_string() == start => {
            Liveness::Alive
        }
        _ => Liveness::Gone,
    }
}

/// Whether `owner` is alive, as far as this process can tell ([`liveness`]).
pub fn alive(owner: &str) -> bool {
    liveness(owner) == Liveness::Alive
}

/// This process's PID namespace, as `/proc/self/ns/pid` names it (`pid:[4026531836]`), its
/// inode number only.
fn pid_namespace() -> Option<String> {
    let link = std::fs::read_link("/proc/self/ns/pid").ok()?;
    let link = link.to_string_lossy();
    Some(
        link.trim_start_matches("pid:[")
            .trim_end_matches(']')
            .to_owned(),
    )
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
        let parts: Vec<&str> = me.split('/').collect();
        let (boot, pid, start) = (parts[0], parts[1], parts[2]);
        // The same PID started at another time: a later process that reused it.
        let later: u64 = start.parse::<u64>().unwrap() + 1;
        assert!(!alive(&format!("{boot}/{pid}/{later}")));
        // Another boot.
        assert!(!alive(&format!(
            "00000000-0000-0000-0000-000000000000/{pid}/{start}"
        )));
        for garbage in ["", "x", "a/b/c", "a/1/2/3/4"] {
            assert!(!alive(garbage), "{garbage}");
        }
        // An owner numbered in another PID namespace cannot be judged here; one without its
        // namespace (an older agent's label) is judged as before.
        let namespace = pid_namespace().unwrap();
        assert!(me.ends_with(&format!("/{namespace}")), "{me}");
        let elsewhere = format!("{boot}/1/{start}/1");
        assert_eq!(liveness(&elsewhere), Liveness::Unknown);
        let older = format!("{boot}/{pid}/{start}");
        assert_eq!(liveness(&older), Liveness::Alive);
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
