//! A debug container's stdio through FIFOs, the way containerd's shim expects them.
//!
//! We make the FIFOs and open our ends before the task exists: stdout/stderr for reading,
//! stdin for writing. Opening a FIFO's write end needs a reader, and a reader with no writer
//! reads end-of-file, so until the shim has opened its ends (during task creation) we hold a
//! keepalive of the other end; after that the shim's ends and ours decide when each stream
//! ends: the shim closing stdout is ours. Stdin is different: the shim keeps a write end of
//! its own, so the process sees EOF only after we close ours *and* ask the shim to close its
//! (`CloseIO`); [`StdinFifo`] does both, in that order, so nothing written is lost.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use rustix::fs::{CWD, FileType, Mode, mknodat};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::unix::pipe::{OpenOptions, Receiver, Sender};
use tokio::time::Instant;

use crate::{ProcessSpec, Stdio};

/// The FIFO paths given to containerd; empty when a stream is not attached.
#[derive(Debug, Default)]
pub(super) struct Paths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
}

/// Our opened ends, with the keepalives held until the shim has its ends.
pub(super) struct Opened {
    stdio: Stdio,
    _keep_stdin: Option<Receiver>,
    _keep_out: Vec<Sender>,
}

impl Opened {
    /// Drops the keepalives (call once the task exists) and gives the stdio.
    pub fn release_keepalives(self) -> Stdio {
        self.stdio
    }
}

/// What closes the shim's side of stdin once ours is closed.
pub(super) type CloseStdin = Box<dyn FnOnce() + Send>;

/// Our end of the stdin FIFO: shutting it down (or dropping it) closes it, then tells the shim.
struct StdinFifo {
    pipe: Option<Sender>,
    close: Option<CloseStdin>,
    /// The FIFO was made large, the first time input did not fit.
    enlarged: bool,
}

impl StdinFifo {
    fn close(&mut self) {
        self.pipe = None;
        if let Some(close) = self.close.take() {
            close();
        }
    }
}

impl AsyncWrite for StdinFifo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let Some(pipe) = this.pipe.as_mut() else {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        };
        let written = Pin::new(&mut *pipe).poll_write(cx, buf);
        let fell_short = match &written {
            Poll::Ready(Ok(n)) => *n < buf.len(),
            Poll::Ready(Err(_)) => false,
            Poll::Pending => true,
        };
        if fell_short && !this.enlarged {
            // Bulk input (a file piped in, cp): room for a whole input frame (up to 256 KiB),
            // so a frame is one write, not one per 64 KiB the shim takes. Only then, since a
            // FIFO's room counts against the user's pipe quota.
            this.enlarged = true;
            enlarge(&*pipe);
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.pipe.as_mut() {
            Some(pipe) => Pin::new(pipe).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.close();
        Poll::Ready(Ok(()))
    }
}

impl Drop for StdinFifo {
    fn drop(&mut self) {
        self.close();
    }
}

/// What the shim's FIFOs may hold: room for the shim to go on writing output while we pause,
/// and for a whole input frame.
const FIFO_SIZE: usize = 1024 * 1024;
/// How long bulk output is left to pile up in its FIFO between reads.
const BULK_PAUSE: Duration = Duration::from_micros(200);
/// Output at this rate or more is bulk: 64 KiB a millisecond (64 MB/s).
const BULK_BYTES_PER_MS: usize = 64 * 1024;
/// A FIFO smaller than this is never paused: it would fill during the pause and hold the
/// process back.
const PAUSE_MIN_CAPACITY: usize = 512 * 1024;

/// Makes `fifo` [`FIFO_SIZE`] large if the kernel allows (`fs.pipe-max-size`, the
/// user's pipe quota), and returns what it holds.
fn enlarge(fifo: &impl std::os::fd::AsFd) -> usize {
    let _ = rustix::pipe::fcntl_setpipe_size(fifo, FIFO_SIZE);
    rustix::pipe::fcntl_getpipe_size(fifo).unwrap_or(0)
}

/// Our end of an output FIFO.
///
/// The shim copies a process's output into the FIFO as it comes, often 4 KiB at a time, and
/// every write would wake us (and, through our frame, the client) if we kept waiting on the
/// FIFO's readiness: two wake-ups per write where the runtime's own exec has one. So while
/// output comes in bulk, we stop watching the FIFO (deregistered from the reactor, so its
/// writes wake nobody), let it fill for [`BULK_PAUSE`] (a timerfd: the runtime's timers count
/// whole milliseconds, in which 1 MiB fills at 1 GB/s), and read what piled up in a few large
/// reads. The FIFO is made large (1 MiB) at the first bulk output, not before: its room
/// counts against the user's pipe quota (`fs.pipe-user-pages-soft`), past which the kernel
/// gives that user's new pipes a fraction of their default room. Output slower than
/// [`BULK_BYTES_PER_MS`] (a terminal, a log) is read as soon as it comes: the pause never
/// delays interactive output.
struct OutputFifo {
    state: FifoState,
    /// What the FIFO holds once made large for bulk output (0 before); no pauses if it
    /// could not be.
    capacity: usize,
    /// Wakes a pause's end; made at the first pause.
    timer: Option<AsyncFd<OwnedFd>>,
    /// Pauses so far.
    pauses: u64,
    /// Bytes read since `since`: the rate that decides whether output is bulk.
    bytes: usize,
    since: Instant,
}

enum FifoState {
    /// Read through the reactor's readiness.
    Watched(Receiver),
    /// Not watched until the timer fires.
    Paused(OwnedFd),
    /// A state change failed half-way (it reported its error).
    Broken,
}

impl OutputFifo {
    fn new(fifo: Receiver) -> OutputFifo {
        OutputFifo {
            state: FifoState::Watched(fifo),
            capacity: 0,
            timer: None,
            pauses: 0,
            bytes: 0,
            since: Instant::now(),
        }
    }

    /// The FIFO has nothing now: whether to pause. Output is bulk when it came at
    /// [`BULK_BYTES_PER_MS`] or more since the last look (looks are a millisecond or more
    /// apart, or a pause apart). After a pause that let the FIFO fill half-way, no pause:
    /// the process is faster than pauses allow, and is read as it writes until the next look.
    fn should_pause(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.since);
        if elapsed < BULK_PAUSE / 2 {
            // Too soon to tell a rate from a burst.
            return false;
        }
        let allowed = BULK_BYTES_PER_MS as u128 * elapsed.as_micros() / 1000;
        let fast = self.bytes as u128 >= allowed;
        if fast && self.capacity == 0 {
            // The first bulk output: made large only now, since a FIFO's room counts against
            // the user's pipe quota whether or not it is used.
            self.capacity = match &self.state {
                FifoState::Watched(fifo) => enlarge(fifo),
                _ => 0,
            };
        }
        let bulk = fast && self.capacity >= PAUSE_MIN_CAPACITY && self.bytes < self.capacity / 2;
        if bulk || elapsed >= Duration::from_millis(1) {
            self.bytes = 0;
            self.since = now;
        }
        bulk
    }

    /// Arms the timer for one pause, making it first if needed.
    fn arm(&mut self) -> io::Result<()> {
        use rustix::time::{Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec};
        if self.timer.is_none() {
            let fd = rustix::time::timerfd_create(
                TimerfdClockId::Monotonic,
                TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
            )?;
            // Deprecated as unsound for descriptors the caller may close while registered;
            // the registration owns this one (the safe successor is an `unsafe fn`).
            #[allow(deprecated)]
            let timer = AsyncFd::new(fd)?;
            self.timer = Some(timer);
        }
        let timer = self.timer.as_ref().expect("made above");
        let pause = Itimerspec {
            it_interval: Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: Timespec {
                tv_sec: 0,
                tv_nsec: BULK_PAUSE.as_nanos() as _,
            },
        };
        rustix::time::timerfd_settime(timer.get_ref(), TimerfdTimerFlags::empty(), &pause)?;
        Ok(())
    }

    /// Whether the armed timer has fired (its count read, so it can be armed again).
    fn poll_timer(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let timer = self.timer.as_ref().expect("armed before a pause");
        loop {
            let mut ready = ready!(timer.poll_read_ready(cx))?;
            let mut count = [0u8; 8];
            match ready.try_io(|fd| Ok(rustix::io::read(fd.get_ref(), &mut count)?)) {
                Ok(result) => return Poll::Ready(result.map(|_| ())),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncRead for OutputFifo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                FifoState::Watched(fifo) => {
                    let before = buf.filled().len();
                    match Pin::new(fifo).poll_read(cx, buf) {
                        Poll::Ready(Ok(())) => {
                            this.bytes += buf.filled().len() - before;
                            return Poll::Ready(Ok(()));
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        // A timer that cannot be armed: no pause.
                        Poll::Pending if !this.should_pause() || this.arm().is_err() => {
                            return Poll::Pending;
                        }
                        Poll::Pending => {}
                    }
                    let FifoState::Watched(fifo) =
                        std::mem::replace(&mut this.state, FifoState::Broken)
                    else {
                        unreachable!("matched above")
                    };
                    this.state = FifoState::Paused(fifo.into_nonblocking_fd()?);
                    this.pauses += 1;
                }
                FifoState::Paused(_) => {
                    ready!(this.poll_timer(cx))?;
                    let FifoState::Paused(fd) =
                        std::mem::replace(&mut this.state, FifoState::Broken)
                    else {
                        unreachable!("matched above")
                    };
                    this.state = FifoState::Watched(Receiver::from_owned_fd_unchecked(fd)?);
                }
                FifoState::Broken => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            }
        }
    }
}

/// Our end of a pipe into a process's stdin (see [`crate::spawn`]): made large at the first
/// input that does not fit, as the stdin FIFO is; dropping it is the process's end of input.
pub(crate) fn stdin_pipe(pipe: Sender) -> kdbg_relay::session::BoxWrite {
    Box::pin(StdinFifo {
        pipe: Some(pipe),
        close: None,
        enlarged: false,
    })
}

/// Our end of a pipe a process writes its output into (see [`crate::spawn`]), read as an
/// output FIFO is.
pub(crate) fn output_pipe(pipe: Receiver) -> kdbg_relay::session::BoxRead {
    Box::pin(OutputFifo::new(pipe))
}

/// FIFOs made and opened for one container.
pub(super) struct Fifos {
    paths: Paths,
    opened: Opened,
}

impl Fifos {
    /// Makes the FIFOs `spec` needs in `dir` (created, mode 0700) and opens our ends;
    /// `close_stdin` runs once our stdin is closed.
    pub fn open(dir: &Path, spec: &ProcessSpec, close_stdin: CloseStdin) -> io::Result<Fifos> {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        let mut paths = Paths::default();
        let mut stdio = Stdio::default();
        let mut keep_stdin = None;
        let mut keep_out = Vec::new();
        if spec.stdin {
            let path = make(dir, "stdin")?;
            let keep = OpenOptions::new().open_receiver(&path)?;
            let ours = OpenOptions::new().open_sender(&path)?;
            keep_stdin = Some(keep);
            stdio.stdin = Some(Box::pin(StdinFifo {
                pipe: Some(ours),
                close: Some(close_stdin),
                enlarged: false,
            }));
            paths.stdin = path.display().to_string();
        }
        // With a terminal, output comes on stdout only. Without one, the shim is given both
        // FIFOs (containerd's shim fails to start a process whose stdout or stderr path is
        // empty while the other is not), and a stream the client did not ask for is read and
        // dropped, as Docker drops it.
        let streams = [
            ("stdout", spec.stdout || spec.tty, true),
            ("stderr", spec.stderr && !spec.tty, !spec.tty),
        ];
        for (name, wanted, made) in streams {
            if !made {
                continue;
            }
            let path = make(dir, name)?;
            let ours = OpenOptions::new().open_receiver(&path)?;
            keep_out.push(OpenOptions::new().open_sender(&path)?);
            let path_text = path.display().to_string();
            if !wanted {
                discard(ours);
                if name == "stdout" {
                    paths.stdout = path_text;
                } else {
                    paths.stderr = path_text;
                }
                continue;
            }
            let ours = Box::pin(OutputFifo::new(ours));
            if name == "stdout" {
                stdio.stdout = Some(ours);
                paths.stdout = path_text;
            } else {
                stdio.stderr = Some(ours);
                paths.stderr = path_text;
            }
        }
        Ok(Fifos {
            paths,
            opened: Opened {
                stdio,
                _keep_stdin: keep_stdin,
                _keep_out: keep_out,
            },
        })
    }

    /// The paths for containerd and our ends.
    pub fn into_parts(self) -> (Paths, Opened) {
        (self.paths, self.opened)
    }
}

/// Reads what comes on `unwanted` and drops it, until its writers are gone, so a process
/// writing to a stream nobody asked for never blocks on a full pipe.
fn discard(mut unwanted: Receiver) {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(async move {
            let _ = tokio::io::copy(&mut unwanted, &mut tokio::io::sink()).await;
        });
    }
}

/// Makes the FIFO `dir/name` (replacing a stale one), readable and writable by root only.
fn make(dir: &Path, name: &str) -> io::Result<PathBuf> {
    let path = dir.join(name);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    mknodat(CWD, &path, FileType::Fifo, Mode::RUSR | Mode::WUSR, 0)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn spec(tty: bool) -> ProcessSpec {
        ProcessSpec {
            session: "s".into(),
            command: vec!["sh".into()],
            tty,
            stdin: true,
            stdout: true,
            stderr: true,
            grace: std::time::Duration::from_secs(1),
            target_pid: None,
            chroot: false,
        }
    }

    /// The shim's side, played by plain file opens: stdin read, stdout written.
    #[tokio::test]
    async fn streams_end_when_the_other_side_closes_not_before() {
        let dir = std::env::temp_dir().join(format!("kdbg-fifo-test-{}", std::process::id()));
        let closed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = closed.clone();
        let close = Box::new(move || flag.store(true, std::sync::atomic::Ordering::SeqCst));
        let fifos = Fifos::open(&dir, &spec(false), close).unwrap();
        let (paths, opened) = fifos.into_parts();
        assert!(!paths.stderr.is_empty());
        let shim_in = std::fs::File::open(&paths.stdin).unwrap();
        let shim_out = std::fs::OpenOptions::new()
            .write(true)
            .open(&paths.stdout)
            .unwrap();
        let stdio = opened.release_keepalives();
        let (mut stdin, mut stdout) = (stdio.stdin.unwrap(), stdio.stdout.unwrap());
        stdin.write_all(b"hello").await.unwrap();
        stdin.shutdown().await.unwrap();
        assert!(
            closed.load(std::sync::atomic::Ordering::SeqCst),
            "the shim is told"
        );
        drop(stdin);
        let mut got = String::new();
        std::io::Read::read_to_string(&mut &shim_in, &mut got).unwrap();
        assert_eq!(got, "hello", "the shim sees our stdin, then its end");
        std::io::Write::write_all(&mut &shim_out, b"out").unwrap();
        drop(shim_out);
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"out");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_terminal_has_no_stderr() {
        let dir = std::env::temp_dir().join(format!("kdbg-fifo-tty-{}", std::process::id()));
        let (paths, opened) = Fifos::open(&dir, &spec(true), Box::new(|| {}))
            .unwrap()
            .into_parts();
        assert!(paths.stderr.is_empty() && !paths.stdout.is_empty());
        assert!(opened.release_keepalives().stderr.is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Lets `ms` pass on the test's clock, then finds the FIFO empty.
    async fn look_after(fifo: &mut OutputFifo, ms: u64) {
        tokio::time::advance(Duration::from_millis(ms)).await;
        let mut scratch = [0u8; 64];
        let mut empty = ReadBuf::new(&mut scratch);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let polled = Pin::new(fifo).poll_read(&mut cx, &mut empty);
        assert!(polled.is_pending(), "nothing to read");
    }

    /// Output that came at bulk rate is left to pile up for a pause, then read in large
    /// reads; output at a trickle is read as it comes; every byte arrives once, in order, and
    /// the end of output after it. (The clock that measures the rate is the test's; the pause
    /// itself is real.)
    #[tokio::test(start_paused = true)]
    async fn bulk_output_is_read_after_a_pause_and_a_trickle_at_once() {
        use std::io::Write;
        let (shim, ours) = tokio::net::unix::pipe::pipe().unwrap();
        let mut shim = std::fs::File::from(shim.into_blocking_fd().unwrap());
        let mut fifo = OutputFifo::new(ours);
        let pattern = |from: usize, len: usize| -> Vec<u8> {
            (from..from + len).map(|i| (i % 251) as u8).collect()
        };

        // A trickle first: the FIFO stays as the kernel made it.
        shim.write_all(b"hello\n").unwrap();
        let mut hello = [0u8; 6];
        fifo.read_exact(&mut hello).await.unwrap();
        look_after(&mut fifo, 5).await;
        assert_eq!(
            (fifo.pauses, fifo.capacity),
            (0, 0),
            "a trickle neither pauses nor grows"
        );

        // 64 KiB (all the default FIFO holds) in a millisecond: bulk. Once it is read, the
        // FIFO is made large and not watched...
        shim.write_all(&pattern(0, 64 * 1024)).unwrap();
        let mut got = vec![0u8; 64 * 1024];
        fifo.read_exact(&mut got).await.unwrap();
        look_after(&mut fifo, 1).await;
        assert_eq!(fifo.pauses, 1, "bulk output pauses");
        assert_eq!(fifo.capacity, FIFO_SIZE, "the FIFO is made large");
        assert!(matches!(fifo.state, FifoState::Paused(_)));
        // ...what comes meanwhile waits in the FIFO, and is read after the pause.
        shim.write_all(&pattern(64 * 1024, 300 * 1024)).unwrap();
        let mut more = vec![0u8; 300 * 1024];
        fifo.read_exact(&mut more).await.unwrap();
        got.extend_from_slice(&more);
        assert_eq!(got, pattern(0, 364 * 1024), "every byte once, in order");

        // Output slowing to a trickle is watched again: a line in 5 ms, no pause.
        look_after(&mut fifo, 5).await;
        let pauses = fifo.pauses;
        shim.write_all(b"a line\n").unwrap();
        let mut line = [0u8; 7];
        fifo.read_exact(&mut line).await.unwrap();
        assert_eq!(&line, b"a line\n");
        look_after(&mut fifo, 5).await;
        assert_eq!(fifo.pauses, pauses, "a trickle does not pause");
        assert!(matches!(fifo.state, FifoState::Watched(_)));

        drop(shim);
        let mut rest = Vec::new();
        fifo.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "end of output once the shim closes");
    }
}
