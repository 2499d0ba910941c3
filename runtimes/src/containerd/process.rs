//! Sessions' processes: exec'd into a debug container's task, with FIFOs (or a console) of
//! their own in `<fifoDir>/<container>/<session>/`; their exec ID is the session's ID.

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    CloseIoRequest, DeleteProcessRequest, ExecProcessRequest, GetContainerRequest, KillRequest,
    ResizePtyRequest, StartRequest, WaitRequest,
};
use containerd_client::tonic::Code;

use super::{ContainerdRuntime, StatusMessage, call, gone_ok, not_found_or, runtime_spec, stdio};
use crate::{Error, Process, ProcessSpec};

/// The type URL of an OCI process spec in containerd's API.
const PROCESS_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

impl ContainerdRuntime {
    /// [`crate::Runtime::exec`].
    pub(super) async fn exec_process(
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
            self.delete_process(id, &exec_id).await;
            return Err(call("starting a process in debug container", id)(e));
        }
        // The shim holds its ends now; ours alone decide when a stream ends.
        Ok(Process {
            id: exec_id,
            stdio: opened.release_keepalives(),
        })
    }

    /// [`crate::Runtime::wait`].
    pub(super) async fn wait_process(&self, id: &str, exec_id: &str) -> Result<i64, Error> {
        let waited = TasksClient::new(self.channel.clone())
            .wait(self.request(
                WaitRequest {
                    container_id: id.to_owned(),
                    exec_id: exec_id.to_owned(),
                },
                None,
            ))
            .await;
        let code = match waited {
            Ok(r) => i64::from(r.into_inner().exit_status),
            // The task is gone (removed, or its main process ended and was deleted): the
            // process went with it.
            Err(e) if e.code() == Code::NotFound => 137,
            Err(e) => return Err(call("waiting for a process of debug container", id)(e)),
        };
        self.delete_process(id, exec_id).await;
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
    pub(super) async fn signal_process(
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
    pub(super) async fn resize_process(
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
