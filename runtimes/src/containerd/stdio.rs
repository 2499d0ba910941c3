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
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use rustix::fs::{CWD, FileType, Mode, mknodat};
use tokio::io::AsyncWrite;
use tokio::net::unix::pipe::{OpenOptions, Receiver, Sender};

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
        match self.pipe.as_mut() {
            Some(pipe) => Pin::new(pipe).poll_write(cx, buf),
            None => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
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
            if name == "stdout" {
                stdio.stdout = Some(Box::pin(ours));
                paths.stdout = path_text;
            } else {
                stdio.stderr = Some(Box::pin(ours));
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
}
