//! The seccomp filters of debug containers: an allow-list, like the runtimes' own defaults.
//!
//! Every call not named here fails with EPERM (`defaultAction` `SCMP_ACT_ERRNO`,
//! `defaultErrnoRet` 1). [`ALLOWED`] is what every profile may call: what shells, busybox,
//! coreutils, strace, gdb, tcpdump, curl, ps and interpreters need, and what glibc and musl do
//! at start-up and when they create threads. It was written by hand from the Linux syscall
//! tables (x86_64, i386, x32, arm64, arm), in the spirit of Docker's and containerd's default
//! profiles; the capabilities of each profile ([`Profile::capabilities`]) still gate what the
//! kernel checks for them (raw sockets, interface and route changes, tracing other users'
//! processes, and so on).
//!
//! What each profile may do beyond that:
//!
//! | calls                                 | general | netadmin | sysadmin | restricted |
//! |---------------------------------------|---------|----------|----------|------------|
//! | [`ALLOWED`]                           | yes     | yes      | yes      | yes        |
//! | `clone`                               | threads and processes, no `CLONE_NEW*` flag | same | any flags | same as general |
//! | `clone3`                              | ENOSYS  | ENOSYS   | yes      | ENOSYS     |
//! | `unshare`, `setns` (nsenter)          | no      | no       | yes      | no         |
//! | `bpf`, `perf_event_open` (tracing)    | no      | no       | yes      | no         |
//! | [`NEVER`] (mounts, modules, kexec, keyrings, user faults, io_uring, clocks, ...) | no | no | no | no |
//!
//! So general, netadmin and restricted cannot create namespaces (user namespaces included),
//! load BPF, open perf events, use the kernel keyrings, kexec, load modules or mount; sysadmin,
//! whose use a node-level permission check gates, may create and join namespaces and trace the
//! node with BPF and perf, but cannot mount, load modules, kexec, reboot, swap or turn on
//! process accounting either.
//!
//! `clone3` takes its flags in a struct, which seccomp cannot read: where namespaces are
//! refused it fails with ENOSYS, so that glibc falls back to `clone`, whose flags the filter
//! does read. Names the kernel or libseccomp of a node does not know are skipped by runc, so
//! the list may name calls newer than some nodes.

use serde_json::{Value, json};

use crate::Profile;

/// What every profile may call, unconditionally, on every ABI of the architecture (names that
/// an ABI does not have are ignored there: `open` on arm64, `socketcall` on x86_64).
pub const ALLOWED: &[&str] = &[
    // Processes: creation (but `clone`: see `CLONE_NAMESPACE_FLAGS`), execution, exit.
    "fork",
    "vfork",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "wait4",
    "waitid",
    "waitpid",
    "restart_syscall",
    // Thread and process set-up by the C libraries and language runtimes.
    "set_tid_address",
    "set_robust_list",
    "get_robust_list",
    "rseq",
    "arch_prctl",
    "set_thread_area",
    "get_thread_area",
    "prctl",
    "personality",
    "seccomp",
    "membarrier",
    // Identity: processes, groups, sessions.
    "getpid",
    "getppid",
    "gettid",
    "getpgid",
    "setpgid",
    "getpgrp",
    "getsid",
    "setsid",
    // Credentials and capabilities (the kernel checks SETUID, SETGID and SETPCAP).
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "getresuid",
    "getresgid",
    "getgroups",
    "setuid",
    "setgid",
    "setreuid",
    "setregid",
    "setresuid",
    "setresgid",
    "setfsuid",
    "setfsgid",
    "setgroups",
    "getuid32",
    "geteuid32",
    "getgid32",
    "getegid32",
    "getresuid32",
    "getresgid32",
    "getgroups32",
    "setuid32",
    "setgid32",
    "setreuid32",
    "setregid32",
    "setresuid32",
    "setresgid32",
    "setfsuid32",
    "setfsgid32",
    "setgroups32",
    "capget",
    "capset",
    // Debugging: the kernel's ptrace access checks apply (SYS_PTRACE beyond one's own).
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "pidfd_open",
    "pidfd_send_signal",
    "pidfd_getfd",
    // Signals.
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "sigreturn",
    "rt_sigpending",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_sigqueueinfo",
    "rt_tgsigqueueinfo",
    "sigaltstack",
    "kill",
    "tkill",
    "tgkill",
    "signalfd",
    "signalfd4",
    "pause",
    "alarm",
    // Scheduling, limits and accounting of one's own processes.
    "sched_yield",
    "sched_getaffinity",
    "sched_setaffinity",
    "sched_getparam",
    "sched_setparam",
    "sched_getscheduler",
    "sched_setscheduler",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_getattr",
    "sched_setattr",
    "getpriority",
    "setpriority",
    "ioprio_get",
    "ioprio_set",
    "getcpu",
    "getrlimit",
    "setrlimit",
    "ugetrlimit",
    "prlimit64",
    "getrusage",
    "times",
    "sysinfo",
    "uname",
    "getrandom",
    // Memory.
    "brk",
    "mmap",
    "mmap2",
    "munmap",
    "mremap",
    "mprotect",
    "msync",
    "mincore",
    "madvise",
    "mlock",
    "mlock2",
    "munlock",
    "mlockall",
    "munlockall",
    "memfd_create",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "get_mempolicy",
    "set_mempolicy",
    "mbind",
    "map_shadow_stack",
    "mseal",
    // Clocks and timers: reading only (setting the time is in `NEVER`).
    "time",
    "gettimeofday",
    "clock_gettime",
    "clock_gettime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "nanosleep",
    "getitimer",
    "setitimer",
    "timer_create",
    "timer_settime",
    "timer_settime64",
    "timer_gettime",
    "timer_gettime64",
    "timer_getoverrun",
    "timer_delete",
    "timerfd_create",
    "timerfd_settime",
    "timerfd_settime64",
    "timerfd_gettime",
    "timerfd_gettime64",
    // File descriptors and I/O.
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "pwrite64",
    "preadv",
    "pwritev",
    "preadv2",
    "pwritev2",
    "lseek",
    "_llseek",
    "close",
    "close_range",
    "dup",
    "dup2",
    "dup3",
    "pipe",
    "pipe2",
    "fcntl",
    "fcntl64",
    "ioctl",
    "flock",
    "fsync",
    "fdatasync",
    "sync",
    "syncfs",
    "sync_file_range",
    "sync_file_range2",
    "arm_sync_file_range",
    "fallocate",
    "fadvise64",
    "fadvise64_64",
    "arm_fadvise64_64",
    "readahead",
    "cachestat",
    "sendfile",
    "sendfile64",
    "splice",
    "tee",
    "vmsplice",
    "copy_file_range",
    "truncate",
    "truncate64",
    "ftruncate",
    "ftruncate64",
    // Linux native asynchronous I/O (io_uring is in `NEVER`).
    "io_setup",
    "io_destroy",
    "io_submit",
    "io_cancel",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    // Paths: opening, metadata, directories, links.
    "open",
    "openat",
    "openat2",
    "creat",
    "access",
    "faccessat",
    "faccessat2",
    "stat",
    "lstat",
    "fstat",
    "newfstatat",
    "stat64",
    "lstat64",
    "fstat64",
    "fstatat64",
    "statx",
    "statfs",
    "fstatfs",
    "statfs64",
    "fstatfs64",
    "getdents",
    "getdents64",
    "getcwd",
    "chdir",
    "fchdir",
    "chroot",
    "umask",
    "readlink",
    "readlinkat",
    "rename",
    "renameat",
    "renameat2",
    "mkdir",
    "mkdirat",
    "rmdir",
    "link",
    "linkat",
    "unlink",
    "unlinkat",
    "symlink",
    "symlinkat",
    "mknod",
    "mknodat",
    "chmod",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "chown",
    "fchown",
    "lchown",
    "fchownat",
    "chown32",
    "fchown32",
    "lchown32",
    "utime",
    "utimes",
    "futimesat",
    "utimensat",
    "utimensat_time64",
    "getxattr",
    "lgetxattr",
    "fgetxattr",
    "getxattrat",
    "setxattr",
    "lsetxattr",
    "fsetxattr",
    "setxattrat",
    "listxattr",
    "llistxattr",
    "flistxattr",
    "listxattrat",
    "removexattr",
    "lremovexattr",
    "fremovexattr",
    "removexattrat",
    // Waiting for events.
    "select",
    "_newselect",
    "pselect6",
    "pselect6_time64",
    "poll",
    "ppoll",
    "ppoll_time64",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "eventfd",
    "eventfd2",
    "inotify_init",
    "inotify_init1",
    "inotify_add_watch",
    "inotify_rm_watch",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futex_wait",
    "futex_wake",
    "futex_requeue",
    // Sockets (`socketcall` multiplexes them on i386).
    "socket",
    "socketpair",
    "bind",
    "listen",
    "accept",
    "accept4",
    "connect",
    "getsockname",
    "getpeername",
    "send",
    "sendto",
    "sendmsg",
    "sendmmsg",
    "recv",
    "recvfrom",
    "recvmsg",
    "recvmmsg",
    "recvmmsg_time64",
    "shutdown",
    "setsockopt",
    "getsockopt",
    "socketcall",
    // System V and POSIX IPC (`ipc` multiplexes System V IPC on i386).
    "shmget",
    "shmat",
    "shmdt",
    "shmctl",
    "semget",
    "semop",
    "semctl",
    "semtimedop",
    "semtimedop_time64",
    "msgget",
    "msgsnd",
    "msgrcv",
    "msgctl",
    "ipc",
    "mq_open",
    "mq_unlink",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_notify",
    "mq_getsetattr",
    // arm's private calls (cache maintenance, TLS, the debugger's breakpoint trap).
    "breakpoint",
    "cacheflush",
    "set_tls",
    // x86_64: the return trampoline of user-space probes; it fails unless the kernel's
    // trampoline makes it, and kernels before 6.14 filtered it like any call.
    "uretprobe",
];

/// What only the sysadmin profile may call: `clone` with any flags and `clone3` (new
/// namespaces), `unshare` and `setns` (nsenter), `bpf` and `perf_event_open` (node-wide
/// tracing).
pub const SYSADMIN_ONLY: &[&str] = &[
    "clone",
    "clone3",
    "unshare",
    "setns",
    "bpf",
    "perf_event_open",
];

/// The `CLONE_NEW*` flags `clone` may create namespaces with: mount (`0x0002_0000`), cgroup,
/// UTS, IPC, user, pid and network (`0x0200_0000` to `0x4000_0000`). Outside sysadmin, `clone`
/// is allowed only when its flags (first argument on every supported ABI) have none of them.
pub const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// What no profile may call, whatever its capabilities: mounts (old and new API) and file
/// handles, which could undo the read-only `/proc/sys` and `/sys` or reach outside the
/// container's filesystem; modules, kexec, reboot, swap and process accounting, which act on the
/// node; the kernel keyrings, `userfaultfd` and io_uring, frequent sources of kernel exploits;
/// setting clocks, the kernel log, quotas, raw I/O ports, vm86, Landlock, fanotify and old
/// calls nothing needs. None of them is in a filter: they fall to the default action (EPERM).
pub const NEVER: &[&str] = &[
    // Mounts, and opening files by handle.
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "open_tree_attr",
    "mount_setattr",
    "name_to_handle_at",
    "open_by_handle_at",
    // The node itself.
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    // Kernel attack surface.
    "keyctl",
    "add_key",
    "request_key",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    // Clocks, logs, quotas, hardware, and obsolete calls.
    "settimeofday",
    "stime",
    "clock_settime",
    "clock_settime64",
    "clock_adjtime",
    "clock_adjtime64",
    "adjtimex",
    "syslog",
    "quotactl",
    "quotactl_fd",
    "lookup_dcookie",
    "nfsservctl",
    "uselib",
    "vm86",
    "vm86old",
    "iopl",
    "ioperm",
    "vhangup",
    "fanotify_init",
    "landlock_create_ruleset",
    "landlock_add_rule",
    "landlock_restrict_self",
];

/// EPERM: what refused calls fail with.
const EPERM: u32 = 1;

/// ENOSYS: what `clone3` fails with outside sysadmin, so that the C library falls back to
/// `clone`.
const ENOSYS: u32 = 38;

/// The seccomp profile of a debug container of `profile`, in the format the OCI runtime spec
/// (`linux.seccomp`) and Docker (`--security-opt seccomp=`) share: [`ALLOWED`], plus
/// [`SYSADMIN_ONLY`] for sysadmin or a `clone` without namespace flags and a `clone3` failing
/// with ENOSYS for the others; everything else fails with EPERM. The filter covers every ABI of
/// this machine's architecture.
pub fn seccomp_profile(profile: Profile) -> Value {
    let architectures: &[&str] = match std::env::consts::ARCH {
        "x86_64" => &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "aarch64" => &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        _ => &[],
    };
    let syscalls = if profile == Profile::Sysadmin {
        let names = [ALLOWED, SYSADMIN_ONLY].concat();
        vec![json!({"names": names, "action": "SCMP_ACT_ALLOW"})]
    } else {
        vec![
            json!({"names": ALLOWED, "action": "SCMP_ACT_ALLOW"}),
            json!({
                "names": ["clone"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{
                    "index": 0,
                    "value": CLONE_NAMESPACE_FLAGS,
                    "valueTwo": 0,
                    "op": "SCMP_CMP_MASKED_EQ"
                }]
            }),
            json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS}),
        ]
    };
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": architectures,
        "syscalls": syscalls
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The rules of `profile`'s filter.
    fn rules(profile: Profile) -> Vec<Value> {
        seccomp_profile(profile)["syscalls"]
            .as_array()
            .expect("syscalls")
            .clone()
    }

    /// The names of one rule.
    fn names(rule: &Value) -> Vec<&str> {
        rule["names"]
            .as_array()
            .expect("names")
            .iter()
            .map(|n| n.as_str().expect("a name"))
            .collect()
    }

    /// The rules of `profile` that name `call`.
    fn rules_for(profile: Profile, call: &str) -> Vec<Value> {
        rules(profile)
            .into_iter()
            .filter(|r| names(r).contains(&call))
            .collect()
    }

    /// Whether `profile` allows `call` whatever its arguments.
    fn allows(profile: Profile, call: &str) -> bool {
        rules_for(profile, call)
            .iter()
            .any(|r| r["action"] == "SCMP_ACT_ALLOW" && r.get("args").is_none())
    }

    #[test]
    fn refuses_by_default_with_eperm() {
        for profile in Profile::ALL {
            let filter = seccomp_profile(profile);
            assert_eq!(filter["defaultAction"], "SCMP_ACT_ERRNO", "{profile}");
            assert_eq!(filter["defaultErrnoRet"], 1, "{profile}");
            if std::env::consts::ARCH == "x86_64" {
                assert_eq!(
                    filter["architectures"],
                    json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
                );
            }
        }
    }

    #[test]
    fn no_name_twice() {
        for profile in Profile::ALL {
            let all: Vec<String> = rules(profile)
                .iter()
                .flat_map(|r| names(r).into_iter().map(str::to_owned).collect::<Vec<_>>())
                .collect();
            let unique: BTreeSet<&String> = all.iter().collect();
            assert_eq!(unique.len(), all.len(), "{profile}: a name twice");
        }
        for list in [ALLOWED, SYSADMIN_ONLY, NEVER] {
            let unique: BTreeSet<&&str> = list.iter().collect();
            assert_eq!(unique.len(), list.len());
        }
        for call in SYSADMIN_ONLY.iter().chain(NEVER) {
            assert!(!ALLOWED.contains(call), "{call}");
        }
        for call in NEVER {
            assert!(!SYSADMIN_ONLY.contains(call), "{call}");
        }
    }

    #[test]
    fn names_are_well_formed() {
        for call in ALLOWED.iter().chain(SYSADMIN_ONLY).chain(NEVER) {
            assert!(
                !call.is_empty()
                    && call
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{call:?}"
            );
        }
    }

    #[test]
    fn never_is_in_no_rule() {
        for profile in Profile::ALL {
            for call in NEVER {
                assert!(rules_for(profile, call).is_empty(), "{profile}: {call}");
            }
        }
    }

    #[test]
    fn namespaces_and_tracing_for_sysadmin_only() {
        for profile in Profile::ALL {
            let sysadmin = profile == Profile::Sysadmin;
            for call in [
                "bpf",
                "perf_event_open",
                "unshare",
                "setns",
                "clone",
                "clone3",
            ] {
                assert_eq!(allows(profile, call), sysadmin, "{profile}: {call}");
            }
            for call in ["bpf", "perf_event_open", "unshare", "setns"] {
                assert_eq!(
                    rules_for(profile, call).is_empty(),
                    !sysadmin,
                    "{profile}: {call}"
                );
            }
            for call in [
                "keyctl",
                "add_key",
                "request_key",
                "mount",
                "init_module",
                "kexec_load",
            ] {
                assert!(!allows(profile, call), "{profile}: {call}");
            }
        }
    }

    #[test]
    fn clone_without_namespace_flags_outside_sysadmin() {
        let flags = [
            0x0002_0000u64, // CLONE_NEWNS
            0x0200_0000,    // CLONE_NEWCGROUP
            0x0400_0000,    // CLONE_NEWUTS
            0x0800_0000,    // CLONE_NEWIPC
            0x1000_0000,    // CLONE_NEWUSER
            0x2000_0000,    // CLONE_NEWPID
            0x4000_0000,    // CLONE_NEWNET
        ];
        assert_eq!(
            flags.iter().fold(0, |all, f| all | f),
            CLONE_NAMESPACE_FLAGS
        );
        assert_eq!(CLONE_NAMESPACE_FLAGS, 2_114_060_288);
        for profile in [Profile::General, Profile::Netadmin, Profile::Restricted] {
            assert_eq!(
                rules_for(profile, "clone"),
                [json!({
                    "names": ["clone"],
                    "action": "SCMP_ACT_ALLOW",
                    "args": [{
                        "index": 0,
                        "value": 2_114_060_288u64,
                        "valueTwo": 0,
                        "op": "SCMP_CMP_MASKED_EQ"
                    }]
                })],
                "{profile}"
            );
        }
        let sysadmin = rules_for(Profile::Sysadmin, "clone");
        assert!(sysadmin.iter().all(|r| r.get("args").is_none()));
    }

    #[test]
    fn clone3_fails_with_enosys_outside_sysadmin() {
        for profile in [Profile::General, Profile::Netadmin, Profile::Restricted] {
            assert_eq!(
                rules_for(profile, "clone3"),
                [json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38})],
                "{profile}"
            );
        }
        assert!(allows(Profile::Sysadmin, "clone3"));
    }

    #[test]
    fn everyday_calls_for_every_profile() {
        let everyday = "read write openat close fstat newfstatat statx mmap mprotect brk \
            rt_sigaction rt_sigprocmask ioctl execve wait4 exit_group futex set_robust_list rseq \
            prlimit64 getrandom ptrace process_vm_readv socket connect sendto recvfrom setsockopt \
            epoll_pwait poll getdents64 setresuid capset prctl seccomp chroot";
        for profile in Profile::ALL {
            for call in everyday.split_whitespace() {
                assert!(allows(profile, call), "{profile}: {call}");
            }
        }
    }

    #[test]
    fn profiles_differ_only_where_intended() {
        let base: BTreeSet<&str> = ALLOWED.iter().copied().collect();
        for profile in Profile::ALL {
            let allowed: BTreeSet<String> = rules(profile)
                .iter()
                .filter(|r| r["action"] == "SCMP_ACT_ALLOW" && r.get("args").is_none())
                .flat_map(|r| names(r).into_iter().map(str::to_owned).collect::<Vec<_>>())
                .collect();
            let extra: BTreeSet<&str> = allowed
                .iter()
                .map(String::as_str)
                .filter(|c| !base.contains(c))
                .collect();
            let expected: BTreeSet<&str> = if profile == Profile::Sysadmin {
                SYSADMIN_ONLY.iter().copied().collect()
            } else {
                BTreeSet::new()
            };
            assert_eq!(extra, expected, "{profile}");
            assert!(base.iter().all(|c| allowed.contains(*c)), "{profile}");
        }
    }
}
