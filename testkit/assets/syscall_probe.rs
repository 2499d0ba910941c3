//! `syscall_probe`: tries, inside a debug container, each syscall the debug profiles' seccomp
//! filters decide on (see `runtimes/src/seccomp.rs`), and prints one line per call, `NAME ok`
//! or `NAME errno=N`, then `done`. The tests of the profiles run it in containers of each
//! profile and compare its lines with what the profile should allow.
//!
//! Every call is made so that it has no effect, whether it is allowed or not: namespaces are
//! created in children that exit at once, mounts and unmounts name a path that does not
//! exist, keys and modules name nothing that exists, kexec names no valid architecture, and
//! the file descriptors of a BPF map or perf event are closed. A filter refusing a call makes
//! it fail with EPERM (1), or ENOSYS (38) for `clone3`; an allowed call gets the kernel's own
//! answer, which tells the two apart for `mount` and `umount2` (ENOENT), `setns` (EBADF),
//! `add_key` (EINVAL), `init_module` (ENOEXEC), `finit_module` (EBADF) and `delete_module`
//! (ENOENT) when the capability they need is there; without it, the kernel's own EPERM comes
//! first for the modules and kexec, so those lines are informational. `getpid` is the control.
//!
//! Built with `rustc` alone, statically, so it runs in any image:
//! `rustc --edition 2024 -C target-feature=+crt-static -C opt-level=s -C panic=abort -o probe syscall_probe.rs`

#![allow(unsafe_code)]

use std::ffi::c_void;

unsafe extern "C" {
    fn syscall(n: i64, ...) -> i64;
    fn __errno_location() -> *mut i32;
    fn fork() -> i32;
    fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
    fn close(fd: i32) -> i32;
    fn _exit(status: i32) -> !;
}

/// The syscall numbers, per architecture.
#[cfg(target_arch = "x86_64")]
mod nr {
    pub const GETPID: i64 = 39;
    pub const UNSHARE: i64 = 272;
    pub const CLONE: i64 = 56;
    pub const CLONE3: i64 = 435;
    pub const BPF: i64 = 321;
    pub const PERF_EVENT_OPEN: i64 = 298;
    pub const KEYCTL: i64 = 250;
    pub const ADD_KEY: i64 = 248;
    pub const KEXEC_LOAD: i64 = 246;
    pub const INIT_MODULE: i64 = 175;
    pub const FINIT_MODULE: i64 = 313;
    pub const DELETE_MODULE: i64 = 176;
    pub const MOUNT: i64 = 165;
    pub const UMOUNT2: i64 = 166;
    pub const SETNS: i64 = 308;
    pub const PROCESS_VM_READV: i64 = 310;
}

/// The syscall numbers, per architecture (arm64 uses the generic table).
#[cfg(target_arch = "aarch64")]
mod nr {
    pub const GETPID: i64 = 172;
    pub const UNSHARE: i64 = 97;
    pub const CLONE: i64 = 220;
    pub const CLONE3: i64 = 435;
    pub const BPF: i64 = 280;
    pub const PERF_EVENT_OPEN: i64 = 241;
    pub const KEYCTL: i64 = 219;
    pub const ADD_KEY: i64 = 217;
    pub const KEXEC_LOAD: i64 = 104;
    pub const INIT_MODULE: i64 = 105;
    pub const FINIT_MODULE: i64 = 273;
    pub const DELETE_MODULE: i64 = 106;
    pub const MOUNT: i64 = 40;
    pub const UMOUNT2: i64 = 39;
    pub const SETNS: i64 = 268;
    pub const PROCESS_VM_READV: i64 = 270;
}

const CLONE_NEWUSER: i64 = 0x1000_0000;
const SIGCHLD: i64 = 17;
const BPF_MAP_CREATE: i64 = 0;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const PERF_TYPE_SOFTWARE: u32 = 1;
const KEYCTL_GET_KEYRING_ID: i64 = 0;
const KEY_SPEC_SESSION_KEYRING: i64 = -3;
/// Architecture bits of `kexec_load`'s flags that name no architecture: the call fails with
/// EINVAL once allowed, so that it never loads or unloads anything.
const KEXEC_ARCH_INVALID: i64 = 0xffff_0000;
/// A path that does not exist, for `mount` and `umount2`.
const NO_PATH: &[u8] = b"/kdbg-probe-nonexistent\0";

/// `struct iovec`.
#[repr(C)]
struct IoVec {
    base: *mut c_void,
    len: usize,
}

/// The calling thread's errno.
fn errno() -> i32 {
    // SAFETY: glibc's per-thread errno, always a valid pointer.
    unsafe { *__errno_location() }
}

/// Makes syscall `n` with `args` (at most six; the kernel ignores the zeros after them).
///
/// # Safety
///
/// Pointers among `args` must point to live memory laid out as the call expects.
unsafe fn sys(n: i64, args: &[i64]) -> i64 {
    let mut a = [0i64; 6];
    a[..args.len()].copy_from_slice(args);
    // SAFETY: the caller's.
    unsafe { syscall(n, a[0], a[1], a[2], a[3], a[4], a[5]) }
}

/// A C string's address, as a syscall argument.
fn c(s: &[u8]) -> i64 {
    debug_assert_eq!(s.last(), Some(&0));
    s.as_ptr() as i64
}

/// Prints `name`'s outcome from a raw syscall's return value.
fn report(name: &str, ret: i64) {
    if ret == -1 {
        println!("{name} errno={}", errno());
    } else {
        println!("{name} ok");
    }
}

/// Waits for child `pid` and returns its exit code (`None` if a signal killed it).
fn wait_child(pid: i32) -> Option<i32> {
    let mut status = 0;
    // SAFETY: a plain call; `status` outlives it.
    while unsafe { waitpid(pid, &mut status, 0) } == -1 && errno() == 4 {}
    (status & 0x7f == 0).then_some((status >> 8) & 0xff)
}

/// Runs `call` in a forked child, so that what it changes (namespaces) stays there, and
/// prints its outcome, passed back as the child's exit code.
fn in_child(name: &str, call: impl FnOnce() -> i64) {
    // SAFETY: the child only makes the call and exits, without touching the parent's state.
    match unsafe { fork() } {
        -1 => println!("{name} fork-errno={}", errno()),
        0 => {
            let code = if call() == -1 { errno() } else { 0 };
            // SAFETY: exits the child at once, without running the parent's destructors.
            unsafe { _exit(code) }
        }
        pid => match wait_child(pid) {
            Some(0) => println!("{name} ok"),
            Some(code) => println!("{name} errno={code}"),
            None => println!("{name} killed"),
        },
    }
}

/// Reports a call that creates a process (`clone`, `clone3`): the child exits at once.
fn report_spawn(name: &str, ret: i64) {
    match ret {
        // SAFETY: in the child: exit at once.
        0 => unsafe { _exit(0) },
        -1 => report(name, -1),
        pid => {
            wait_child(pid as i32);
            println!("{name} ok");
        }
    }
}

/// Reports a call returning a file descriptor, and closes it.
fn report_fd(name: &str, ret: i64) {
    report(name, ret);
    if ret >= 0 {
        // SAFETY: the descriptor the call just returned, ours to close.
        unsafe { close(ret as i32) };
    }
}

fn main() {
    // SAFETY (every `sys` below): the pointers passed are to this function's buffers and
    // C strings, laid out as each call expects.
    report("getpid", unsafe { sys(nr::GETPID, &[]) });

    in_child("unshare", || unsafe { sys(nr::UNSHARE, &[CLONE_NEWUSER]) });
    report_spawn("clone", unsafe {
        sys(nr::CLONE, &[CLONE_NEWUSER | SIGCHLD])
    });
    // struct clone_args (88 bytes): flags, pidfd, child_tid, parent_tid, exit_signal, ...
    let mut clone_args = [0i64; 11];
    clone_args[0] = CLONE_NEWUSER;
    clone_args[4] = SIGCHLD;
    report_spawn("clone3", unsafe {
        sys(nr::CLONE3, &[clone_args.as_ptr() as i64, 88])
    });

    // union bpf_attr for BPF_MAP_CREATE: map_type, key_size, value_size, max_entries.
    let mut map_attr = [0u32; 16];
    map_attr[..4].copy_from_slice(&[BPF_MAP_TYPE_ARRAY, 4, 4, 1]);
    let attr = map_attr.as_ptr() as i64;
    report_fd("bpf", unsafe { sys(nr::BPF, &[BPF_MAP_CREATE, attr, 64]) });

    // struct perf_event_attr, first version (64 bytes): type, size, config (0: cpu-clock),
    // and at byte 40 the flags disabled, exclude_kernel and exclude_hv: this process's own
    // user-space clock, which even a strict perf_event_paranoid lets the capable open.
    let mut perf_attr = [0u64; 8];
    perf_attr[0] = u64::from(PERF_TYPE_SOFTWARE) | (64 << 32);
    perf_attr[5] = 1 | (1 << 5) | (1 << 6);
    let attr = perf_attr.as_ptr() as i64;
    report_fd("perf_event_open", unsafe {
        sys(nr::PERF_EVENT_OPEN, &[attr, 0, -1, -1, 0])
    });

    let session = KEY_SPEC_SESSION_KEYRING;
    report("keyctl", unsafe {
        sys(nr::KEYCTL, &[KEYCTL_GET_KEYRING_ID, session, 0])
    });
    // Keyring 0 is no keyring: EINVAL once allowed, and no key is created.
    let key = [c(b"user\0"), c(b"kdbg\0"), c(b"x\0"), 1, 0];
    report("add_key", unsafe { sys(nr::ADD_KEY, &key) });
    report("kexec_load", unsafe {
        sys(nr::KEXEC_LOAD, &[0, 0, 0, KEXEC_ARCH_INVALID])
    });
    report("init_module", unsafe {
        sys(nr::INIT_MODULE, &[0, 0, c(b"\0")])
    });
    report("finit_module", unsafe {
        sys(nr::FINIT_MODULE, &[-1, c(b"\0"), 0])
    });
    report("delete_module", unsafe {
        sys(nr::DELETE_MODULE, &[c(b"kdbg_none\0"), 0])
    });
    let mount = [c(b"none\0"), c(NO_PATH), c(b"tmpfs\0"), 0, 0];
    report("mount", unsafe { sys(nr::MOUNT, &mount) });
    report("umount2", unsafe { sys(nr::UMOUNT2, &[c(NO_PATH), 0]) });
    report("setns", unsafe { sys(nr::SETNS, &[-1, 0]) });

    // Reads 8 bytes of this process's own memory.
    let source = 0x6b64_6267_u64;
    let mut copy = 0u64;
    let local = IoVec {
        base: (&raw mut copy).cast(),
        len: 8,
    };
    let remote = IoVec {
        base: (&raw const source).cast_mut().cast(),
        len: 8,
    };
    let (local, remote) = (&raw const local as i64, &raw const remote as i64);
    let pid = unsafe { sys(nr::GETPID, &[]) };
    match unsafe { sys(nr::PROCESS_VM_READV, &[pid, local, 1, remote, 1, 0]) } {
        8 if copy == source => println!("process_vm_readv ok"),
        -1 => report("process_vm_readv", -1),
        n => println!("process_vm_readv short={n}"),
    }

    println!("done");
}
