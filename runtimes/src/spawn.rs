//! Sessions' processes started by the debug container's own main process, `kdbg-init hold`,
//! on our request (its spawner: `agent/init/spawner.rs`), in place of the runtime's exec.
//!
//! The runtime's exec costs a `runc exec` (about 50 ms) per session, and the shim then copies
//! every byte between the process's pipes (or terminal) and our FIFOs. Through the spawner the
//! process is forked by `hold`, which already is what `runc exec` would make of it (the
//! container's user, capabilities, seccomp filter, cgroup, environment, working directory),
//! and its stdio are our own pipes, or a terminal whose master we read and resize ourselves:
//! no copy between it and us. Both backends create their containers with a spawner directory
//! mounted at [`init::SPAWN_DIR`]; a container without one (made by an older agent), or whose
//! spawner does not answer, gets the runtime's exec as before.

use std::collections::HashMap;
use std::io::{self, IoSlice, IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kdbg_relay::{TerminalIo, TerminalSize};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use crate::containerd::stdio;
use crate::{Error, Process, ProcessSpec, Stdio, init};

/// How long a spawner that is not listening yet (its container just started) is waited for.
const LISTEN_WAIT: Duration = Duration::from_millis(200);
/// How long its answer to a request may take.
const ANSWER_WAIT: Duration = Duration::from_secs(10);
/// The code of a process whose spawner went away without saying how it ended: its
/// container stopped, killing it (as the runtimes report it).
const KILLED: i64 = 137;

/// The sessions started through spawners, by session ID (their exec ID).
#[derive(Debug, Clone, Default)]
pub(crate) struct Spawner(Arc<Mutex<HashMap<String, Spawned>>>);

#[derive(Debug)]
struct Spawned {
    /// The terminal's master, to resize.
    terminal: Option<TerminalIo>,
    /// Signals for the process.
    signals: mpsc::UnboundedSender<i32>,
    /// Its exit code, once it ended: every wait sees it (a wait given up, at the agent's
    /// shutdown, is followed by another).
    exit: watch::Receiver<Option<i64>>,
}

/// Our ends of a spawned process's stdio.
enum Ours {
    Pipes([Option<OwnedFd>; 3]),
    Terminal(OwnedFd),
}

/// A spawner's answer to a request.
struct Answer {
    conn: UnixStream,
    /// What it wrote after its answer (the process's exit, if it ended at once).
    rest: Vec<u8>,
    ours: Ours,
}

impl Spawner {
    /// Starts `process` through the spawner whose directory is `dir` on the node; `None`
    /// when there is none or it does not answer (said in the log): the runtime's exec then.
    /// An error once the spawner started it (no exec then: it would be a second process).
    pub(crate) async fn spawn(
        &self,
        dir: &Path,
        container: &str,
        process: &ProcessSpec,
    ) -> Option<Result<Process, Error>> {
        let socket = dir.join(init::SPAWN_SOCKET);
        let request = init::spawn_request(process);
        let tty = process.tty;
        let streams = [
            process.stdin && !tty,
            process.stdout && !tty,
            process.stderr && !tty,
        ];
        let answered =
            tokio::task::spawn_blocking(move || ask(&socket, &request, tty, streams)).await;
        let answer = match answered {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound && !dir.is_dir() => return None,
            Ok(Err(e)) => {
                tracing::info!(container, error = %e, "the container's spawner does not answer: its session is exec'd by the runtime");
                return None;
            }
            Err(_) => return None,
        };
        Some(self.started(process, answer).map_err(|e| Error::Call {
            operation: "following the session's process in debug container",
            object: container.to_owned(),
            source: Box::new(e),
        }))
    }

    /// Follows a started process: its stdio, its exit, signals for it.
    fn started(&self, process: &ProcessSpec, answer: Answer) -> io::Result<Process> {
        let Answer { conn, rest, ours } = answer;
        conn.set_nonblocking(true)?;
        let conn = tokio::net::UnixStream::from_std(conn)?;
        let mut stdio = Stdio::default();
        let mut terminal = None;
        match ours {
            Ours::Pipes([stdin, stdout, stderr]) => {
                if let Some(fd) = stdin {
                    stdio.stdin = Some(stdio::stdin_pipe(
                        tokio::net::unix::pipe::Sender::from_owned_fd(fd)?,
                    ));
                }
                if let Some(fd) = stdout {
                    stdio.stdout = Some(stdio::output_pipe(
                        tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?,
                    ));
                }
                if let Some(fd) = stderr {
                    stdio.stderr = Some(stdio::output_pipe(
                        tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?,
                    ));
                }
            }
            Ours::Terminal(master) => {
                rustix::io::ioctl_fionbio(&master, true)?;
                let master = TerminalIo::new(master)?;
                stdio.stdout = Some(Box::pin(master.clone()));
                if process.stdin {
                    stdio.stdin = Some(Box::pin(master.clone()));
                }
                terminal = Some(master);
            }
        }
        let (signals, mut signalled) = mpsc::unbounded_channel::<i32>();
        let (exit_tx, exit) = watch::channel(None);
        tokio::spawn(async move {
            let (read, mut write) = conn.into_split();
            let mut lines =
                tokio::io::BufReader::new(std::io::Cursor::new(rest).chain(read)).lines();
            let code = loop {
                tokio::select! {
                    line = lines.next_line() => match line {
                        Ok(Some(line)) => {
                            if let Some(code) = line.strip_prefix("exit ").and_then(|c| c.parse().ok()) {
                                break code;
                            }
                        }
                        // The spawner is gone, and the process with its container.
                        _ => break KILLED,
                    },
                    Some(signal) = signalled.recv() => {
                        let _ = write.write_all(format!("signal {signal}\n").as_bytes()).await;
                    }
                }
            };
            exit_tx.send_replace(Some(code));
        });
        self.lock().insert(
            process.session.clone(),
            Spawned {
                terminal,
                signals,
                exit,
            },
        );
        Ok(Process {
            id: process.session.clone(),
            stdio,
        })
    }

    /// Resizes the terminal of spawned process `exec`; `None` when it was not spawned.
    pub(crate) fn resize(&self, exec: &str, size: TerminalSize) -> Option<io::Result<()>> {
        let sessions = self.lock();
        let spawned = sessions.get(exec)?;
        let terminal = spawned.terminal.as_ref()?;
        let size = rustix::termios::Winsize {
            ws_row: size.rows,
            ws_col: size.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        Some(rustix::termios::tcsetwinsize(terminal, size).map_err(io::Error::from))
    }

    /// Waits for spawned process `exec` to end: its exit code; `None` when it was not spawned.
    pub(crate) async fn wait(&self, exec: &str) -> Option<i64> {
        let mut exit = self.lock().get(exec)?.exit.clone();
        let code = match exit.wait_for(Option::is_some).await {
            Ok(code) => code.unwrap_or(KILLED),
            // The follower is gone without a word: so is the process's container.
            Err(_) => KILLED,
        };
        self.lock().remove(exec);
        Some(code)
    }

    /// Sends `signal` to the spawned process of session `session`; false when it was not
    /// spawned.
    pub(crate) fn signal(&self, session: &str, signal: i32) -> bool {
        match self.lock().get(session) {
            Some(spawned) => {
                // Ended already when the spawner is gone.
                let _ = spawned.signals.send(signal);
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Spawned>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The spawner's socket in `dir`, once it listens (a container just started may not yet);
/// `NotFound` when the directory is not there (a container made without one).
fn connect(socket: &Path) -> io::Result<UnixStream> {
    let started = Instant::now();
    loop {
        match UnixStream::connect(socket) {
            Ok(conn) => return Ok(conn),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) && started.elapsed() < LISTEN_WAIT
                    && socket.parent().is_some_and(Path::is_dir) =>
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            // A container made without a spawner: said nowhere, it is the usual fallback.
            Err(e) if !socket.parent().is_some_and(Path::is_dir) => return Err(e),
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("{}: {e}", socket.display()),
                ));
            }
        }
    }
}

/// Sends `request` with the process's ends of the `streams` (stdin, stdout, stderr) it
/// attaches, and reads the answer: the spawner has started the process.
fn ask(socket: &Path, request: &[u8], tty: bool, streams: [bool; 3]) -> io::Result<Answer> {
    let conn = connect(socket)?;
    conn.set_read_timeout(Some(ANSWER_WAIT))?;
    let mut theirs: Vec<OwnedFd> = Vec::new();
    let mut ours: [Option<OwnedFd>; 3] = [None, None, None];
    for (i, attached) in streams.into_iter().enumerate() {
        if !attached {
            continue;
        }
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        // stdin: the process reads; stdout and stderr: it writes.
        let (mine, its) = if i == 0 { (write, read) } else { (read, write) };
        ours[i] = Some(mine);
        theirs.push(its);
    }
    let borrowed: Vec<_> = theirs.iter().map(AsFd::as_fd).collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !borrowed.is_empty() {
        control.push(SendAncillaryMessage::ScmRights(&borrowed));
    }
    let sent = rustix::net::sendmsg(
        &conn,
        &[IoSlice::new(request)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    if sent < request.len() {
        (&conn).write_all(&request[sent..])?;
    }
    // Ours to close now: the spawner's copies are the process's.
    drop(theirs);
    let mut got = Vec::new();
    let mut master = None;
    let line_end = loop {
        if let Some(end) = got.iter().position(|b| *b == b'\n') {
            break end;
        }
        let mut buf = [0u8; 256];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let received = rustix::net::recvmsg(
            &conn,
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )?;
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = message {
                for fd in fds {
                    master.get_or_insert(fd);
                }
            }
        }
        if received.bytes == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the spawner closed without an answer",
            ));
        }
        got.extend_from_slice(&buf[..received.bytes]);
    };
    let answer = String::from_utf8_lossy(&got[..line_end]).into_owned();
    let rest = got[line_end + 1..].to_vec();
    if let Some(error) = answer.strip_prefix("error ") {
        return Err(io::Error::other(format!("the spawner: {error}")));
    }
    if !answer.starts_with("ok ") {
        return Err(io::Error::other(format!("the spawner answered {answer:?}")));
    }
    let ours = match (tty, master) {
        (true, Some(master)) => Ours::Terminal(master),
        (true, None) => return Err(io::Error::other("the spawner sent no terminal")),
        (false, _) => Ours::Pipes(ours),
    };
    Ok(Answer { conn, rest, ours })
}

/// Makes the spawner directory `dir` of container `container`: writable by the container's
/// user whoever it is (sticky, so none removes another's files). On the node it is reached
/// only through its parent, made root's alone here: the socket in it belongs to the
/// container's user, which may be a user of the node too.
pub(crate) fn make_dir(container: &str, dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let made = std::fs::create_dir_all(dir)
        .and_then(|()| match dir.parent() {
            Some(parent) => {
                std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700))
            }
            None => Ok(()),
        })
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777)));
    made.map_err(|e| Error::Call {
        operation: "making the spawner directory of debug container",
        object: format!("{container} in {}", dir.display()),
        source: Box::new(e),
    })
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read};
    use std::os::unix::net::UnixListener;

    use tokio::io::AsyncReadExt;

    use super::*;

    fn process(session: &str) -> ProcessSpec {
        ProcessSpec {
            session: session.into(),
            command: vec!["sh".into()],
            tty: false,
            stdin: false,
            stdout: true,
            stderr: false,
            grace: Duration::from_secs(1),
            target_pid: None,
            chroot: false,
        }
    }

    /// A spawner of the test's own, speaking kdbg-init's side for one connection: it takes
    /// the stdout descriptor, writes `hello` into it, answers, then waits for a signal line
    /// and reports the signal as the exit (`128 + N`).
    fn spawner(dir: &Path) -> std::thread::JoinHandle<Vec<u8>> {
        let listener = UnixListener::bind(dir.join(init::SPAWN_SOCKET)).unwrap();
        std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            let mut length = [0u8; 4];
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let got = rustix::net::recvmsg(
                &conn,
                &mut [IoSliceMut::new(&mut length)],
                &mut control,
                RecvFlags::empty(),
            )
            .unwrap();
            assert_eq!(got.bytes, 4);
            let mut fds = Vec::new();
            for message in control.drain() {
                if let RecvAncillaryMessage::ScmRights(received) = message {
                    fds.extend(received);
                }
            }
            let mut payload = vec![0; u32::from_le_bytes(length) as usize];
            (&conn).read_exact(&mut payload).unwrap();
            assert_eq!(fds.len(), 1, "stdout alone is attached");
            let mut stdout = std::fs::File::from(fds.pop().unwrap());
            stdout.write_all(b"hello").unwrap();
            drop(stdout);
            (&conn).write_all(b"ok 42\n").unwrap();
            let mut line = String::new();
            BufReader::new(&conn).read_line(&mut line).unwrap();
            let signal: i64 = line
                .trim()
                .strip_prefix("signal ")
                .unwrap()
                .parse()
                .unwrap();
            (&conn)
                .write_all(format!("exit {}\n", 128 + signal).as_bytes())
                .unwrap();
            payload
        })
    }

    #[tokio::test]
    async fn a_spawned_process_is_read_signalled_and_waited_for_more_than_once() {
        let base = std::env::temp_dir().join(format!("kdbg-spawn-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        // Made root's alone, as the agent's own directories are.
        let dir = base.join("c1");
        make_dir("c1", &dir).unwrap();
        let mode = |p: &Path| {
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
                & 0o7777
        };
        assert_eq!(mode(&base), 0o700);
        assert_eq!(mode(&dir), 0o1777);
        let server = spawner(&dir);
        let spawner = Spawner::default();
        let mut started = spawner
            .spawn(&dir, "c1", &process("s1"))
            .await
            .expect("the spawner answers")
            .unwrap();
        assert_eq!(started.id, "s1");
        let mut out = String::new();
        let mut stdout = started.stdio.stdout.take().unwrap();
        stdout.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello");
        // A wait given up (the agent shutting down) leaves the exit to the next one.
        let given_up = tokio::time::timeout(Duration::from_millis(50), spawner.wait("s1")).await;
        assert!(given_up.is_err(), "the process has not ended");
        assert!(spawner.signal("s1", 15));
        assert_eq!(spawner.wait("s1").await, Some(143));
        assert_eq!(spawner.wait("s1").await, None, "forgotten once waited for");
        assert!(!spawner.signal("s1", 15));
        let payload = server.join().unwrap();
        assert!(payload.starts_with(b"1\0o\0"), "{payload:?}");
        // No spawner directory: none, and the runtime's exec is used.
        let none = spawner
            .spawn(&dir.join("absent"), "c1", &process("s2"))
            .await;
        assert!(none.is_none());
        let _ = std::fs::remove_dir_all(&base);
    }
}
