//! The user's stdin, stdout and stderr for a session, reached without a thread hand-off where
//! the kind of file allows it.
//!
//! - A regular file or a device that is not a terminal (`> /dev/null`, `> out.bin`,
//!   `< file`): written and read in place, from the session's task. Such writes do not wait on
//!   a reader.
//! - A pipe or a terminal (`| wc -c`, the user's terminal): a description of its own, opened
//!   non-blocking through `/proc/self/fd/N`, and driven by the runtime's readiness like a
//!   socket (pipes through tokio's pipe types). Opening a new description, rather than
//!   setting `O_NONBLOCK` on the one the plugin inherited, leaves the shell and every other
//!   process sharing that one as they were. An output pipe is given room for 1 MiB.
//! - Anything else (a socket), or when that open fails: a thread of its own for output
//!   ([`ThreadWriter`]), tokio's stdin for input.
//!
//! The first two are the common cases; each write in the third costs two thread wake-ups. With
//! 1 GiB into /dev/null on containerd that was 394,000 context switches and 1.2 s of system time
//! in the plugin alone (see docs/performance.md).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use kdbg_relay::TerminalIo;
use kdbg_relay::session::{BoxRead, BoxWrite};
use rustix::fs::{FileType, Mode, OFlags};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::unix::pipe;

use crate::output::ThreadWriter;

/// How one of the user's streams is reached.
enum Reach {
    /// Read or written in place: the file never makes us wait on another process.
    InPlace(File),
    /// A pipe: a non-blocking description of its own, driven by readiness.
    Pipe(OwnedFd),
    /// A terminal: the same.
    Terminal(OwnedFd),
    /// Neither: the fallback.
    Fallback,
}

/// How to reach file descriptor `n` (0, 1 or 2) for `access` (`OFlags::RDONLY` or `WRONLY`).
fn reach(fd: BorrowedFd<'_>, n: u8, access: OFlags) -> Reach {
    let Ok(stat) = rustix::fs::fstat(fd) else {
        return Reach::Fallback;
    };
    let terminal = rustix::termios::isatty(fd);
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile | FileType::BlockDevice => {}
        FileType::CharacterDevice if !terminal => {}
        FileType::Fifo => return reopen(n, access, &stat).map_or(Reach::Fallback, Reach::Pipe),
        FileType::CharacterDevice => {
            return reopen(n, access, &stat).map_or(Reach::Fallback, Reach::Terminal);
        }
        _ => return Reach::Fallback,
    }
    match fd.try_clone_to_owned() {
        Ok(owned) => Reach::InPlace(File::from(owned)),
        Err(_) => Reach::Fallback,
    }
}

/// A new non-blocking description of the pipe or terminal behind file descriptor `n`, if it
/// can be opened and is still the same file.
fn reopen(n: u8, access: OFlags, stat: &rustix::fs::Stat) -> Option<OwnedFd> {
    let path = format!("/proc/self/fd/{n}");
    let flags = access | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    let fd = rustix::fs::open(&path, flags, Mode::empty()).ok()?;
    let again = rustix::fs::fstat(&fd).ok()?;
    (again.st_dev == stat.st_dev && again.st_ino == stat.st_ino).then_some(fd)
}

/// The user's stdout for a session.
pub fn stdout() -> BoxWrite {
    writer(rustix::stdio::stdout(), 1, ThreadWriter::stdout)
}

/// The user's stderr for a session.
pub fn stderr() -> BoxWrite {
    writer(rustix::stdio::stderr(), 2, ThreadWriter::stderr)
}

/// The user's stdin for a session.
pub fn stdin() -> BoxRead {
    match reach(rustix::stdio::stdin(), 0, OFlags::RDONLY) {
        Reach::InPlace(file) => Box::pin(InPlace(file)),
        Reach::Pipe(fd) => match pipe::Receiver::from_owned_fd(fd) {
            Ok(pipe) => Box::pin(pipe),
            Err(_) => Box::pin(tokio::io::stdin()),
        },
        Reach::Terminal(fd) => match TerminalIo::new(fd) {
            Ok(terminal) => Box::pin(terminal),
            Err(_) => Box::pin(tokio::io::stdin()),
        },
        Reach::Fallback => Box::pin(tokio::io::stdin()),
    }
}

fn writer(fd: BorrowedFd<'_>, n: u8, fallback: fn() -> ThreadWriter) -> BoxWrite {
    match reach(fd, n, OFlags::WRONLY) {
        Reach::InPlace(file) => Box::pin(InPlace(file)),
        Reach::Pipe(fd) => match pipe::Sender::from_owned_fd(fd) {
            Ok(pipe) => {
                // Room for 1 MiB (the system's default limit for any user; refused past the
                // user's pipe quota, then kept as it is): bulk output into `| cat` wakes the
                // reader, and waits for it, a sixteenth as often as a 64 KiB pipe would.
                let _ = rustix::pipe::fcntl_setpipe_size(&pipe, 1 << 20);
                Box::pin(pipe)
            }
            Err(_) => Box::pin(fallback()),
        },
        Reach::Terminal(fd) => match TerminalIo::new(fd) {
            Ok(terminal) => Box::pin(terminal),
            Err(_) => Box::pin(fallback()),
        },
        Reach::Fallback => Box::pin(fallback()),
    }
}

/// A file read and written in place.
struct InPlace(File);

impl AsyncWrite for InPlace {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(retry(|| (&self.0).write(buf)))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for InPlace {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = retry(|| (&self.0).read(buf.initialize_unfilled()))?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

/// A call, again while a signal interrupts it.
fn retry<T>(mut call: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match call() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}
