//! A writer thread fed through a bounded channel: the user's stdout or stderr when it is
//! neither a file, a pipe nor a terminal (a socket), which [`crate::localio`] reaches without
//! one.
//!
//! tokio's own stdout hands every write to its blocking pool and waits for it before taking the
//! next, one frame at a time; this measured 12% short of `docker exec` on a 1 GiB stream. A
//! dedicated thread takes chunks as they come, several in flight, and flushes only when the
//! session asks. The channel is bounded, so a slow terminal still slows the session down.

use std::future::Future;
use std::io::{self, Write};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::PollSender;

/// Chunks queued for the writer thread.
const QUEUE: usize = 16;

enum Item {
    Data(Bytes),
    Flush(oneshot::Sender<()>),
}

/// An `AsyncWrite` that a thread writes to `out`.
pub struct ThreadWriter {
    tx: PollSender<Item>,
    flushing: Option<oneshot::Receiver<()>>,
    /// Data was queued behind the flush in progress: that flush's answer does not cover it.
    behind: bool,
    /// The error that stopped the thread, if one did.
    failed: Arc<Mutex<Option<io::Error>>>,
}

impl ThreadWriter {
    /// Starts a thread writing to `out`.
    pub fn spawn<W: Write + Send + 'static>(name: &str, mut out: W) -> ThreadWriter {
        let (tx, mut rx) = mpsc::channel::<Item>(QUEUE);
        let failed = Arc::new(Mutex::new(None));
        let failure = failed.clone();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                while let Some(item) = rx.blocking_recv() {
                    let result = match item {
                        Item::Data(data) => out.write_all(&data),
                        Item::Flush(ack) => {
                            let r = out.flush();
                            let _ = ack.send(());
                            r
                        }
                    };
                    if let Err(e) = result {
                        *failure.lock().unwrap() = Some(e);
                        return;
                    }
                }
                let _ = out.flush();
            })
            .expect("starting an output thread");
        ThreadWriter {
            tx: PollSender::new(tx),
            flushing: None,
            behind: false,
            failed,
        }
    }

    /// Stdout, written unbuffered by its thread: straight to the file descriptor when it can be
    /// duplicated, skipping std's line buffering (which scans every chunk for a newline).
    pub fn stdout() -> ThreadWriter {
        use std::os::fd::AsFd;
        match io::stdout().as_fd().try_clone_to_owned() {
            Ok(fd) => ThreadWriter::spawn("stdout", std::fs::File::from(fd)),
            Err(_) => ThreadWriter::spawn("stdout", io::stdout()),
        }
    }

    /// Stderr, written by its thread.
    pub fn stderr() -> ThreadWriter {
        ThreadWriter::spawn("stderr", io::stderr())
    }

    fn gone(&self) -> io::Error {
        match self.failed.lock().unwrap().take() {
            Some(e) => e,
            None => io::ErrorKind::BrokenPipe.into(),
        }
    }

    /// Sends into the slot [`Self::poll_reserve`] got.
    fn send(&mut self, item: Item) -> io::Result<()> {
        self.tx.send_item(item).map_err(|_| self.gone())
    }

    fn poll_reserve(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if ready!(self.tx.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(self.gone()));
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ThreadWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_reserve(cx))?;
        self.send(Item::Data(Bytes::copy_from_slice(buf)))?;
        if self.flushing.is_some() {
            self.behind = true;
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.flushing.is_none() {
                ready!(self.poll_reserve(cx))?;
                let (ack, done) = oneshot::channel();
                self.send(Item::Flush(ack))?;
                self.flushing = Some(done);
                self.behind = false;
            }
            let done = self.flushing.as_mut().expect("set above");
            let acked = ready!(Pin::new(done).poll(cx));
            self.flushing = None;
            if acked.is_err() {
                return Poll::Ready(Err(self.gone()));
            }
            // Data written while that flush was on its way is flushed by another one: the
            // session ends (and the plugin exits) only once everything is out.
            if !std::mem::take(&mut self.behind) {
                return Poll::Ready(Ok(()));
            }
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    /// A terminal that takes its time: every write and flush takes 50 ms.
    struct Slow(Arc<Mutex<Vec<u8>>>);

    impl Write for Slow {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            std::thread::sleep(Duration::from_millis(50));
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            std::thread::sleep(Duration::from_millis(50));
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_flush_covers_what_was_written_while_an_earlier_one_was_on_its_way() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let mut out = ThreadWriter::spawn("test", Slow(written.clone()));
        out.write_all(b"a").await.unwrap();
        // A flush on its way (the relay starts one whenever it goes idle)...
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(Pin::new(&mut out).poll_flush(&mut cx).is_pending());
        // ...then the last output, then the session's end: its flush must cover "b".
        out.write_all(b"b").await.unwrap();
        out.flush().await.unwrap();
        assert_eq!(*written.lock().unwrap(), b"ab");
    }
}
