//! Sessions' processes: exec'd into a debug container's task, with FIFOs (or a console) of
//! their own in `<fifoDir>/<container>/<session>/`; their exec ID is the session's ID.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    CloseIoRequest, DeleteProcessRequest, ExecProcessRequest, GetContainerRequest, KillRequest,
    ResizePtyRequest, StartRequest, WaitRequest,
};
use containerd_client::tonic::Code;
use kdbg_relay::session::BoxRead;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::oneshot;

use super::{ContainerdRuntime, StatusMessage, call, gone_ok, not_found_or, runtime_spec, stdio};
use crate::{Error, Process, ProcessSpec, Stdio};

/// The type URL of an OCI process spec in containerd's API.
const PROCESS_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

impl ContainerdRuntime {
    /// [`crate::Runtime::exec`].
    pub(crate) async fn exec_process(
        &self,
        id: &str,
        process: &ProcessSpec,
    ) -> Result<Process, Error> {
        let exec_id = process.session.clone();
        let container = ContainersClient::new(self.channel.clone())
            .get(self.request(GetContainerRequest { id: id.to_owned() }, None))
            .await
            .map_err(|e| not_found_or(id, e, "looking up debug container"))?
            .into_inner()
            .container
            .ok_or_else(|| Error::ContainerNotFound {
                name: id.to_owned(),
            })?;
        let spec: serde_json::Value = container
            .spec
            .as_ref()
            .and_then(|s| serde_json::from_slice(&s.value).ok())
            .ok_or_else(|| Error::Call {
                operation: "starting a process in debug container",
                object: id.to_owned(),
                source: "its OCI spec cannot be read".into(),
            })?;
        let exec_spec = runtime_spec::exec_process(&spec, process);
        let dir = self.options.fifo_dir.join(id).join(&exec_id);
        let close_stdin: stdio::CloseStdin = {
            let runtime = self.clone();
            let (id, exec_id) = (id.to_owned(), exec_id.clone());
            Box::new(move || {
                let Ok(handle) = tokio::runtime::Handle::try_current() else {
                    return;
                };
                handle.spawn(async move {
                    let request = runtime.request(
                        CloseIoRequest {
                            container_id: id.clone(),
                            exec_id,
                            stdin: true,
                        },
                        None,
                    );
                    if let Err(e) = TasksClient::new(runtime.channel.clone())
                        .close_io(request)
                        .await
                    {
                        tracing::debug!(container = id, error = %StatusMessage(e), "closing stdin");
                    }
                });
            })
        };
        let fifos = stdio::Fifos::open(&dir, process, close_stdin).map_err(|e| Error::Call {
            operation: "making the stdio FIFOs of a process of debug container",
            object: format!("{id} in {}", dir.display()),
            source: Box::new(e),
        })?;
        let (paths, opened) = fifos.into_parts();
        let mut tasks = TasksClient::new(self.channel.clone());
        let made = tasks
            .exec(self.request(
                ExecProcessRequest {
                    container_id: id.to_owned(),
                    exec_id: exec_id.clone(),
                    stdin: paths.stdin,
                    stdout: paths.stdout,
                    stderr: paths.stderr,
                    terminal: process.tty,
                    spec: Some(prost_types::Any {
                        type_url: PROCESS_TYPE.into(),
                        value: serde_json::to_vec(&exec_spec).unwrap_or_default(),
                    }),
                },
                None,
            ))
            .await;
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(call("starting a process in debug container", id)(e));
        }
        // Waited for before it starts: another client of the same containerd may delete an
        // exited process as soon as it sees it exit (dockerd does so for every process of
        // its containers), and its exit code would be lost with it. Polled once here, the
        // request is on the connection ahead of the start.
        let mut waiting = Box::pin({
            let mut tasks = tasks.clone();
            let request = self.request(
                WaitRequest {
                    container_id: id.to_owned(),
                    exec_id: exec_id.clone(),
                },
                None,
            );
            async move { tasks.wait(request).await }
        });
        let first = std::future::poll_fn(|cx| Poll::Ready(waiting.as_mut().poll(cx))).await;
        let (exited_tx, exited) = oneshot::channel();
        match first {
            Poll::Ready(waited) => {
                let _ = exited_tx.send(waited);
            }
            Poll::Pending => {
                tokio::spawn(async move {
                    let _ = exited_tx.send(waiting.await);
                });
            }
        }
        self.exits
            .lock()
            .unwrap()
            .insert((id.to_owned(), exec_id.clone()), exited);
        let started = tasks
            .start(self.request(
                StartRequest {
                    container_id: id.to_owned(),
                    exec_id: exec_id.clone(),
                },
                None,
            ))
            .await;
        if let Err(e) = started {
            self.exits
                .lock()
                .unwrap()
                .remove(&(id.to_owned(), exec_id.clone()));
            self.delete_process(id, &exec_id).await;
            return Err(call("starting a process in debug container", id)(e));
        }
        // The shim holds its ends now; ours alone decide when a stream ends.
        let mut stdio = opened.release_keepalives();
        self.outputs.hold(id, &exec_id, &mut stdio);
        Ok(Process { id: exec_id, stdio })
    }

    /// [`crate::Runtime::wait`].
    pub(crate) async fn wait_process(&self, id: &str, exec_id: &str) -> Result<i64, Error> {
        let early = self
            .exits
            .lock()
            .unwrap()
            .remove(&(id.to_owned(), exec_id.to_owned()));
        let waited = match early {
            Some(exited) => match exited.await {
                Ok(waited) => waited,
                Err(_) => Err(containerd_client::tonic::Status::unknown(
                    "the wait for the process was dropped",
                )),
            },
            None => {
                TasksClient::new(self.channel.clone())
                    .wait(self.request(
                        WaitRequest {
                            container_id: id.to_owned(),
                            exec_id: exec_id.to_owned(),
                        },
                        None,
                    ))
                    .await
            }
        };
        let code = match waited {
            Ok(r) => i64::from(r.into_inner().exit_status),
            // The task is gone (removed, or its main process ended and was deleted): the
            // process went with it.
            Err(e) if e.code() == Code::NotFound => 137,
            Err(e) => return Err(call("waiting for a process of debug container", id)(e)),
        };
        // Deleting a process has the shim close its end of the output once what it copies is
        // through, or after 2 s: with a reader behind (`| less`, a slow link) that would cut
        // the output. So it is deleted once our readers are gone (at EOF, or the session's
        // end); the exit code is known now.
        match self.outputs.released(id, exec_id) {
            Some(released) => {
                let runtime = self.clone();
                let (id, exec_id) = (id.to_owned(), exec_id.to_owned());
                tokio::spawn(async move {
                    let _ = released.await;
                    runtime.delete_process(&id, &exec_id).await;
                });
            }
            None => self.delete_process(id, exec_id).await,
        }
        Ok(code)
    }

    /// Frees what containerd holds for an ended process, and its FIFOs.
    async fn delete_process(&self, id: &str, exec_id: &str) {
        let deleted = TasksClient::new(self.channel.clone())
            .delete_process(self.request(
                DeleteProcessRequest {
                    container_id: id.to_owned(),
                    exec_id: exec_id.to_owned(),
                },
                None,
            ))
            .await;
        if let Err(e) = gone_ok(deleted) {
            tracing::debug!(container = id, exec_id, error = %StatusMessage(e), "deleting an ended process");
        }
        let _ = std::fs::remove_dir_all(self.options.fifo_dir.join(id).join(exec_id));
    }

    /// [`crate::Runtime::signal`].
    pub(crate) async fn signal_process(
        &self,
        id: &str,
        exec_id: &str,
        signal: i32,
    ) -> Result<(), Error> {
        let killed = TasksClient::new(self.channel.clone())
            .kill(self.request(
                KillRequest {
                    container_id: id.to_owned(),
                    exec_id: exec_id.to_owned(),
                    signal: u32::try_from(signal).unwrap_or(15),
                    all: false,
                },
                None,
            ))
            .await;
        match killed {
            Ok(_) => Ok(()),
            // Ended already.
            Err(e) if matches!(e.code(), Code::NotFound | Code::FailedPrecondition) => Ok(()),
            Err(e) => Err(call("signalling a process of debug container", id)(e)),
        }
    }

    /// [`crate::Runtime::resize`].
    pub(crate) async fn resize_process(
        &self,
        id: &str,
        exec_id: &str,
        size: kdbg_relay::TerminalSize,
    ) -> Result<(), Error> {
        TasksClient::new(self.channel.clone())
            .resize_pty(self.request(
                ResizePtyRequest {
                    container_id: id.to_owned(),
                    exec_id: exec_id.to_owned(),
                    width: u32::from(size.cols),
                    height: u32::from(size.rows),
                },
                None,
            ))
            .await
            .map(|_| ())
            .map_err(call("resizing the terminal of debug container", id))
    }
}

/// The exits of started processes, awaited from before they started, by container and exec
/// ID.
pub(super) type Exits = Arc<
    Mutex<
        HashMap<
            (String, String),
            oneshot::Receiver<
                Result<
                    containerd_client::tonic::Response<
                        containerd_client::services::v1::WaitResponse,
                    >,
                    containerd_client::tonic::Status,
                >,
            >,
        >,
    >,
>;

/// The output readers of processes, and who waits for them to be gone.
#[derive(Debug, Clone, Default)]
pub(super) struct Outputs(Arc<Mutex<HashMap<String, oneshot::Receiver<()>>>>);

impl Outputs {
    /// Wraps `stdio`'s output readers so that [`Outputs::released`] for this process resolves
    /// once both are dropped.
    pub(super) fn hold(&self, id: &str, exec_id: &str, stdio: &mut Stdio) {
        let (held, released) = oneshot::channel();
        let held = Arc::new(held);
        for reader in [&mut stdio.stdout, &mut stdio.stderr] {
            if let Some(inner) = reader.take() {
                *reader = Some(Box::pin(Held {
                    inner,
                    _held: held.clone(),
                }));
            }
        }
        self.lock().insert(key(id, exec_id), released);
    }

    /// Resolves once the process's output readers are gone; `None` if they were not held.
    pub(super) fn released(&self, id: &str, exec_id: &str) -> Option<oneshot::Receiver<()>> {
        self.lock().remove(&key(id, exec_id))
    }

    /// Forgets the processes of container `id` (removed with it).
    pub(super) fn forget_container(&self, id: &str) {
        let prefix = key(id, "");
        self.lock().retain(|k, _| !k.starts_with(&prefix));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Receiver<()>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn key(id: &str, exec_id: &str) -> String {
    format!("{id}/{exec_id}")
}

/// An output reader; the last one dropped tells [`Outputs::released`].
struct Held {
    inner: BoxRead,
    _held: Arc<oneshot::Sender<()>>,
}

impl AsyncRead for Held {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.inner.as_mut().poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader() -> Option<BoxRead> {
        Some(Box::pin(tokio::io::empty()))
    }

    #[tokio::test]
    async fn a_process_is_released_once_both_its_readers_are_gone() {
        let outputs = Outputs::default();
        let mut stdio = Stdio {
            stdin: None,
            stdout: reader(),
            stderr: reader(),
        };
        outputs.hold("c1", "s1", &mut stdio);
        let mut released = outputs.released("c1", "s1").expect("held");
        assert!(outputs.released("c1", "s1").is_none(), "handed out once");
        drop(stdio.stdout.take());
        assert!(
            matches!(
                released.try_recv(),
                Err(oneshot::error::TryRecvError::Empty)
            ),
            "stderr is still read"
        );
        drop(stdio.stderr.take());
        assert!(
            released.await.is_err(),
            "released: the sender went with the readers"
        );
        // A removed container's processes are forgotten.
        let mut other = Stdio {
            stdin: None,
            stdout: reader(),
            stderr: None,
        };
        outputs.hold("c2", "s1", &mut other);
        outputs.forget_container("c2");
        assert!(outputs.released("c2", "s1").is_none());
    }
}
