//! A terminal's descriptor as tokio I/O, for the two ends of a session that hold one: the
//! user's terminal in the plugin, and a process's pseudo-terminal master in the agent.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The errno of a terminal whose other side is gone (Linux's EIO): a pseudo-terminal master
/// once the last holder of its slave has closed it, or a terminal that has hung up.
const EIO: i32 = 5;

/// A terminal on a non-blocking descriptor, driven by the runtime's readiness like a socket.
/// Clones share the descriptor, so one task may read while another writes. A terminal whose
/// other side is gone reads as its end; shutting it down does nothing (a terminal has no end
/// of input but the one its user types).
#[derive(Clone, Debug)]
pub struct TerminalIo(Arc<AsyncFd<File>>);

impl TerminalIo {
    /// Registers `fd`, which must be non-blocking, with the runtime.
    pub fn new(fd: OwnedFd) -> io::Result<TerminalIo> {
        // Deprecated as unsound for descriptors the caller may close while registered; the
        // registration owns this one, so nothing else can close it (tokio's safe successor,
        // `register`, is an `unsafe fn` the workspace denies).
        #[allow(deprecated)]
        AsyncFd::new(File::from(fd)).map(|fd| TerminalIo(Arc::new(fd)))
    }
}

impl AsFd for TerminalIo {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.get_ref().as_fd()
    }
}

/// `call`, again while a signal interrupts it.
fn retry<T>(mut call: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match call() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

impl AsyncRead for TerminalIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut ready = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match ready.try_io(|fd| retry(|| fd.get_ref().read(unfilled))) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.raw_os_error() == Some(EIO) => return Poll::Ready(Ok(())),
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for TerminalIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut ready = ready!(self.0.poll_write_ready(cx))?;
            match ready.try_io(|fd| retry(|| fd.get_ref().write(buf))) {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::TerminalIo;

    /// Any non-blocking descriptor works the same; a socket pair stands in for the terminal
    /// (the spawner's tests and the end-to-end tests drive real ones).
    #[tokio::test]
    async fn clones_read_and_write_one_descriptor_until_its_end() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let io = TerminalIo::new(ours.into()).unwrap();
        let (mut reader, mut writer) = (io.clone(), io);
        let peer = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let mut theirs = theirs;
            let mut got = [0u8; 5];
            theirs.read_exact(&mut got).unwrap();
            theirs.write_all(&vec![b'y'; 1 << 20]).unwrap();
            got
        });
        writer.write_all(b"hello").await.unwrap();
        let mut back = Vec::new();
        reader.read_to_end(&mut back).await.unwrap();
        assert_eq!(peer.join().unwrap(), *b"hello");
        assert_eq!(back.len(), 1 << 20);
        assert!(back.iter().all(|&b| b == b'y'));
    }
}
