//! `kdbg-init hold`'s spawner: sessions' processes started by the container's own main
//! process instead of through the runtime (`runc exec`, 50 ms, and the shim's copy of every
//! byte between the process's pipes and the agent's FIFOs).
//!
//! When the agent mounted [`SPAWN_DIR`], `hold` listens on [`SPAWN_SOCKET`] there (mode 0600,
//! its own user's; the directory is this container's alone, and the target reaches it only
//! with the ptrace access that would let it reach this process anyway). Per connection: one
//! request (spawn_request.rs) with the process's stdin, stdout and stderr as descriptors, or,
//! for a terminal, none: the spawner opens a terminal in the container's `/dev/pts` and sends
//! its master back. The process is forked from this one, so it is what `runc exec` would
//! make: the container's user, capabilities, seccomp filter, cgroup, environment (plus the
//! request's) and working directory; in a session of its own (`setsid`), with the terminal as
//! its controlling terminal. The reply is `ok PID\n`, or `error MESSAGE\n`. Then the agent
//! may write `signal N\n` lines (sent to the process while it has not been reaped), and the
//! spawner writes `exit CODE\n` (128 + signal when killed) once it ends, then closes.
//! Only root (the agent) and this container's own user may connect.

use std::ffi::{c_int, c_void};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use super::{SIG_SETMASK, SigInfo, SigSet, send, sigemptyset, sigprocmask, waitpid};
use crate::spawn_request::{MAX_REQUEST, Request, SPAWN_DIR, SPAWN_SOCKET, decode};

#[repr(C)]
struct IoVec {
    base: *mut c_void,
    len: usize,
}

/// glibc's `struct msghdr`.
#[repr(C)]
struct MsgHdr {
    name: *mut c_void,
    namelen: u32,
    iov: *mut IoVec,
    iovlen: usize,
    control: *mut c_void,
    controllen: usize,
    flags: c_int,
}

/// `struct ucred` (`SO_PEERCRED`).
#[repr(C)]
struct UCred {
    pid: i32,
    uid: u32,
    gid: u32,
}

unsafe extern "C" {
    fn recvmsg(fd: c_int, msg: *mut MsgHdr, flags: c_int) -> isize;
    fn sendmsg(fd: c_int, msg: *const MsgHdr, flags: c_int) -> isize;
    fn getsockopt(fd: c_int, level: c_int, name: c_int, value: *mut c_void, len: *mut u32)
    -> c_int;
    fn getuid() -> u32;
    fn open(path: *const std::ffi::c_char, flags: c_int, ...) -> c_int;
    fn ioctl(fd: c_int, request: u64, ...) -> c_int;
    fn setsid() -> c_int;
    fn waitid(idtype: c_int, id: u32, info: *mut SigInfo, options: c_int) -> c_int;
}

const SOL_SOCKET: c_int = 1;
const SO_PEERCRED: c_int = 17;
const SCM_RIGHTS: c_int = 1;
const MSG_CMSG_CLOEXEC: c_int = 0x4000_0000;
const O_RDWR: c_int = 2;
const O_NOCTTY: c_int = 0o400;
const O_CLOEXEC: c_int = 0o2_000_000;
const TIOCSCTTY: u64 = 0x540E;
const TIOCSPTLCK: u64 = 0x4004_5431;
const TIOCGPTN: u64 = 0x8004_5430;
const TIOCGPTPEER: u64 = 0x5441;
const P_PID: c_int = 1;
const WEXITED: c_int = 4;
const WNOWAIT: c_int = 0x0100_0000;
/// A `cmsghdr` (length, level, type) before its data.
const CMSG_HEADER: usize = 16;

/// Listens on [`SPAWN_SOCKET`] when the agent mounted [`SPAWN_DIR`], serving each connection
/// on a thread of its own; returns whether it listens.
pub fn serve() -> bool {
    if !std::path::Path::new(SPAWN_DIR).is_dir() {
        return false;
    }
    // A socket left by an earlier run of this container.
    let _ = std::fs::remove_file(SPAWN_SOCKET);
    let listener = match UnixListener::bind(SPAWN_SOCKET) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!(
                "kdbg-init: cannot listen on {SPAWN_SOCKET} ({e}): sessions are started by the runtime"
            );
            return false;
        }
    };
    let _ = std::fs::set_permissions(
        SPAWN_SOCKET,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    );
    let listening = std::thread::Builder::new().spawn(move || {
        for conn in listener.incoming() {
            match conn {
                // A thread that cannot be made drops the connection (the agent then execs
                // through the runtime) rather than aborting this process and its container.
                Ok(conn) => {
                    let _ = std::thread::Builder::new().spawn(move || serve_one(conn));
                }
                // Out of descriptors, say: tried again, not in a busy loop.
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        }
    });
    if listening.is_err() {
        let _ = std::fs::remove_file(SPAWN_SOCKET);
        return false;
    }
    true
}

fn serve_one(conn: UnixStream) {
    let started = peer_allowed(&conn).and_then(|()| {
        let (payload, fds) = receive(&conn)?;
        let request = decode(&payload)?;
        if fds.len() != request.descriptors() {
            return Err(format!(
                "the request came with {} descriptors, not {}",
                fds.len(),
                request.descriptors()
            ));
        }
        spawn(&request, fds)
    });
    let (pid, master) = match started {
        Ok(started) => started,
        Err(e) => {
            let _ = (&conn).write_all(format!("error {}\n", e.replace('\n', " ")).as_bytes());
            return;
        }
    };
    if send_reply(&conn, &format!("ok {pid}\n"), master.as_ref()).is_err() {
        // The agent is gone: the process goes on, as an exec'd one would.
        return;
    }
    drop(master);
    let reaped = Arc::new(Mutex::new(false));
    if let Ok(reader) = conn.try_clone() {
        let reaped = reaped.clone();
        // Without this thread (none could be made) signals go unanswered; the exit is still
        // reported.
        let _ = std::thread::Builder::new().spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                let Some(Ok(signal)) = line.strip_prefix("signal ").map(str::parse::<c_int>) else {
                    continue;
                };
                let reaped = reaped.lock().unwrap_or_else(|e| e.into_inner());
                // A reaped PID may be another process's by now.
                if !*reaped {
                    send(pid, signal);
                }
            }
        });
    }
    let code = wait_for(pid, &reaped);
    let _ = (&conn).write_all(format!("exit {code}\n").as_bytes());
    let _ = conn.shutdown(std::net::Shutdown::Both);
}

/// Waits for `pid` to end, then reaps it with `reaped` held; its exit code.
fn wait_for(pid: c_int, reaped: &Mutex<bool>) -> i64 {
    let mut info = SigInfo([0; 16]);
    // Waited for without reaping: until reaped below, `pid` is this process's zombie, so a
    // signal sent meanwhile cannot reach another process.
    // SAFETY: `info` is a valid, writable siginfo_t.
    while unsafe { waitid(P_PID, pid as u32, &mut info, WEXITED | WNOWAIT) } != 0 {
        if std::io::Error::last_os_error().raw_os_error() != Some(4) {
            break;
        }
    }
    let mut reaped = reaped.lock().unwrap_or_else(|e| e.into_inner());
    let mut status: c_int = 0;
    // SAFETY: `status` is a valid, writable int.
    let found = unsafe { waitpid(pid, &mut status, 0) };
    *reaped = true;
    if found != pid {
        return 137;
    }
    let signalled = status & 0x7f;
    if signalled == 0 {
        i64::from((status >> 8) & 0xff)
    } else {
        128 + i64::from(signalled)
    }
}

/// Root (the agent, on the node) and this container's own user may connect.
fn peer_allowed(conn: &UnixStream) -> Result<(), String> {
    let mut cred = UCred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<UCred>() as u32;
    // SAFETY: `cred` and `len` are valid and writable, `len` is `cred`'s size.
    let got = unsafe {
        getsockopt(
            conn.as_raw_fd(),
            SOL_SOCKET,
            SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    // SAFETY: getuid takes nothing and cannot fail.
    let own = unsafe { getuid() };
    if got != 0 || (cred.uid != 0 && cred.uid != own) {
        return Err(format!("user {} may not start processes here", cred.uid));
    }
    Ok(())
}

/// One request: its payload and the descriptors that came with it.
fn receive(conn: &UnixStream) -> Result<(Vec<u8>, Vec<OwnedFd>), String> {
    let fail = |e: std::io::Error| format!("reading the request: {e}");
    let mut length = [0u8; 4];
    let mut fds = Vec::new();
    let mut got = 0;
    while got < length.len() {
        let n = receive_some(conn, &mut length[got..], &mut fds).map_err(fail)?;
        if n == 0 {
            return Err("the request ended early".into());
        }
        got += n;
    }
    let len = u32::from_le_bytes(length) as usize;
    if len > MAX_REQUEST {
        return Err(format!("the request is larger than {MAX_REQUEST} bytes"));
    }
    let mut payload = vec![0; len];
    let mut got = 0;
    while got < len {
        let n = receive_some(conn, &mut payload[got..], &mut fds).map_err(fail)?;
        if n == 0 {
            return Err("the request ended early".into());
        }
        got += n;
    }
    Ok((payload, fds))
}

/// `recvmsg` into `buf`, adding any descriptors that came to `fds` (at most 3 a message).
fn receive_some(
    conn: &UnixStream,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> std::io::Result<usize> {
    let mut control = [0u64; 8];
    let mut iov = IoVec {
        base: buf.as_mut_ptr().cast(),
        len: buf.len(),
    };
    let mut msg = MsgHdr {
        name: std::ptr::null_mut(),
        namelen: 0,
        iov: &mut iov,
        iovlen: 1,
        control: control.as_mut_ptr().cast(),
        controllen: std::mem::size_of_val(&control),
        flags: 0,
    };
    let n = loop {
        // SAFETY: every pointer in `msg` is valid for the lengths it gives.
        let n = unsafe { recvmsg(conn.as_raw_fd(), &mut msg, MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let bytes: &[u8] = bytemuck(&control);
    let mut at = 0;
    while at + CMSG_HEADER <= msg.controllen.min(bytes.len()) {
        let word = |i: usize| u64::from_ne_bytes(bytes[at + i..at + i + 8].try_into().unwrap());
        let cmsg_len = word(0) as usize;
        let level = word(8) as u32 as c_int;
        let kind = (word(8) >> 32) as u32 as c_int;
        if cmsg_len < CMSG_HEADER || at + cmsg_len > bytes.len() {
            break;
        }
        if level == SOL_SOCKET && kind == SCM_RIGHTS {
            for raw in bytes[at + CMSG_HEADER..at + cmsg_len].chunks_exact(4) {
                let fd = RawFd::from_ne_bytes(raw.try_into().unwrap());
                // SAFETY: the kernel just installed this descriptor for us; nothing else owns it.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
        at += cmsg_len.div_ceil(8) * 8;
    }
    Ok(n)
}

fn bytemuck(words: &[u64; 8]) -> &[u8] {
    // SAFETY: any u64 array is valid as bytes, with the same lifetime and length in bytes.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast(), std::mem::size_of_val(words)) }
}

/// Sends `text`, with `fd` when there is one.
fn send_reply(conn: &UnixStream, text: &str, fd: Option<&OwnedFd>) -> std::io::Result<()> {
    let mut control = [0u64; 3];
    let mut iov = IoVec {
        base: text.as_ptr() as *mut c_void,
        len: text.len(),
    };
    let mut msg = MsgHdr {
        name: std::ptr::null_mut(),
        namelen: 0,
        iov: &mut iov,
        iovlen: 1,
        control: std::ptr::null_mut(),
        controllen: 0,
        flags: 0,
    };
    if let Some(fd) = fd {
        control[0] = (CMSG_HEADER + 4) as u64;
        control[1] = (SOL_SOCKET as u32 as u64) | ((SCM_RIGHTS as u32 as u64) << 32);
        control[2] = fd.as_raw_fd() as u32 as u64;
        msg.control = control.as_mut_ptr().cast();
        msg.controllen = CMSG_HEADER + 8;
    }
    // SAFETY: every pointer in `msg` is valid for the lengths it gives; sendmsg only reads.
    let sent = unsafe { sendmsg(conn.as_raw_fd(), &msg, 0) };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if (sent as usize) < text.len() {
        (&*conn).write_all(&text.as_bytes()[sent as usize..])?;
    }
    Ok(())
}

/// A new terminal in the container's `/dev/pts`: its master and its slave.
fn open_terminal() -> Result<(OwnedFd, OwnedFd), String> {
    let fail = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    // SAFETY: a valid C string; the flags are plain integers.
    let master = unsafe { open(c"/dev/ptmx".as_ptr(), O_RDWR | O_NOCTTY | O_CLOEXEC) };
    if master < 0 {
        return Err(fail("opening /dev/ptmx"));
    }
    // SAFETY: just opened, owned by nothing else.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    let unlock: c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int through the pointer.
    if unsafe { ioctl(master.as_raw_fd(), TIOCSPTLCK, &unlock) } != 0 {
        return Err(fail("unlocking the terminal"));
    }
    // The slave through the master (no path lookup), else by its number.
    // SAFETY: TIOCGPTPEER takes open flags as its integer argument.
    let mut slave = unsafe {
        ioctl(
            master.as_raw_fd(),
            TIOCGPTPEER,
            O_RDWR | O_NOCTTY | O_CLOEXEC,
        )
    };
    if slave < 0 {
        let mut number: u32 = 0;
        // SAFETY: TIOCGPTN writes one unsigned int through the pointer.
        if unsafe { ioctl(master.as_raw_fd(), TIOCGPTN, &mut number) } != 0 {
            return Err(fail("numbering the terminal"));
        }
        let path = std::ffi::CString::new(format!("/dev/pts/{number}")).expect("no NUL");
        // SAFETY: a valid C string; the flags are plain integers.
        slave = unsafe { open(path.as_ptr(), O_RDWR | O_NOCTTY | O_CLOEXEC) };
        if slave < 0 {
            return Err(fail("opening the terminal"));
        }
    }
    // SAFETY: just opened, owned by nothing else.
    Ok((master, unsafe { OwnedFd::from_raw_fd(slave) }))
}

/// Starts the request's process; its PID and, with a terminal, the terminal's master.
fn spawn(request: &Request, fds: Vec<OwnedFd>) -> Result<(c_int, Option<OwnedFd>), String> {
    let mut command = Command::new(&request.args[0]);
    command.args(&request.args[1..]);
    for entry in &request.env {
        let (name, value) = entry.split_once('=').expect("checked by decode");
        // A terminal's type: the container's own, if it says.
        if name == "TERM" && std::env::var_os("TERM").is_some() {
            continue;
        }
        command.env(name, value);
    }
    let mut master = None;
    if request.tty {
        let (ours, slave) = open_terminal()?;
        let clone = |fd: &OwnedFd| fd.try_clone().map_err(|e| format!("the terminal: {e}"));
        command
            .stdin(Stdio::from(clone(&slave)?))
            .stdout(Stdio::from(clone(&slave)?))
            .stderr(Stdio::from(slave));
        master = Some(ours);
    } else {
        let mut fds = fds.into_iter();
        let mut next = |attached: bool| match attached {
            true => fds.next().map_or_else(Stdio::null, Stdio::from),
            false => Stdio::null(),
        };
        command
            .stdin(next(request.streams[0]))
            .stdout(next(request.streams[1]))
            .stderr(next(request.streams[2]));
    }
    let tty = request.tty;
    // SAFETY: only async-signal-safe calls run in the child: sigemptyset, sigprocmask,
    // setsid and ioctl.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
            // This process blocks the signals it waits for; the child gets them as usual.
            let mut empty = SigSet([0; 16]);
            sigemptyset(&mut empty);
            sigprocmask(SIG_SETMASK, &empty, std::ptr::null_mut());
            if setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if tty && ioctl(0, TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .map_err(|e| format!("cannot run {:?}: {e}", request.args[0]))?;
    Ok((child.id() as c_int, master))
}
