//! An in-tree fake runtime for the agent's unit tests: it records every call and plays a
//! scripted process (output, optional echo of stdin, exit code) in place of a container.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use kdbg_relay::TerminalSize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use crate::{
    Created, DebugContainer, DebugSpec, Error, PullPolicy, PullProgress, Runtime, Stdio, TargetRef,
};

/// What the fake's containers do.
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// Written to stdout at start.
    pub stdout: Bytes,
    /// Written to stderr at start.
    pub stderr: Bytes,
    /// Copy stdin to stdout until stdin ends (then exit); otherwise exit after the output.
    pub echo_stdin: bool,
    /// Stay running after the output until removed (like a shell nobody types into).
    pub linger: bool,
    /// The exit code.
    pub exit_code: i64,
}

/// A call the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// [`Runtime::check_target`].
    CheckTarget(String),
    /// [`Runtime::ensure_image`].
    EnsureImage(String, PullPolicy),
    /// [`Runtime::create`], with the spec.
    Create(Box<DebugSpec>),
    /// [`Runtime::attach`].
    Attach(String),
    /// [`Runtime::start`].
    Start(String),
    /// [`Runtime::resize`].
    Resize(String, TerminalSize),
    /// [`Runtime::wait`].
    Wait(String),
    /// [`Runtime::remove`].
    Remove(String),
    /// [`Runtime::stop`].
    Stop(String),
    /// [`Runtime::list`].
    List,
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<Call>,
    /// Target ID -> its state (`running`, `exited`, ...).
    targets: HashMap<String, String>,
    images: Vec<String>,
    next_id: u64,
    containers: BTreeMap<String, FakeContainer>,
}

#[derive(Debug)]
struct FakeContainer {
    spec: DebugSpec,
    stdin: Option<tokio::io::DuplexStream>,
    stdout: Option<tokio::io::DuplexStream>,
    stderr: Option<tokio::io::DuplexStream>,
    exit: watch::Sender<Option<i64>>,
    process: Option<tokio::task::JoinHandle<()>>,
}

/// The fake runtime. Clones share state.
#[derive(Debug, Clone, Default)]
pub struct FakeRuntime {
    state: Arc<Mutex<State>>,
    script: Arc<Mutex<Script>>,
}

impl FakeRuntime {
    /// A fake whose containers run `script`; add targets and images before use.
    pub fn new(script: Script) -> FakeRuntime {
        let fake = FakeRuntime::default();
        *fake.script.lock().unwrap() = script;
        fake
    }

    /// Adds a target container in `state` (`running`, `exited`, ...).
    pub fn add_target(&self, id: &str, state: &str) {
        self.lock().targets.insert(id.to_owned(), state.to_owned());
    }

    /// Marks `image` as present.
    pub fn add_image(&self, image: &str) {
        self.lock().images.push(image.to_owned());
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// IDs of the containers that exist (created and not removed).
    pub fn containers(&self) -> Vec<String> {
        self.lock().containers.keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake runtime state poisoned")
    }

    fn record(&self, call: Call) {
        self.lock().calls.push(call);
    }

    fn unknown(id: &str) -> Error {
        Error::Call {
            operation: "using debug container",
            object: id.to_owned(),
            source: "no such container".into(),
        }
    }
}

impl Runtime for FakeRuntime {
    async fn check_target(&self, target: &TargetRef) -> Result<(), Error> {
        self.record(Call::CheckTarget(target.id.clone()));
        match self.lock().targets.get(&target.id) {
            None => Err(Error::TargetNotFound {
                target: target.clone(),
            }),
            Some(state) if state != "running" => Err(Error::TargetNotRunning {
                target: target.clone(),
                state: state.clone(),
            }),
            Some(_) => Ok(()),
        }
    }

    async fn ensure_image(
        &self,
        image: &str,
        policy: PullPolicy,
        progress: Option<mpsc::Sender<PullProgress>>,
    ) -> Result<(), Error> {
        self.record(Call::EnsureImage(image.to_owned(), policy));
        let present = self.lock().images.iter().any(|i| i == image);
        if policy.needs_pull(image, present)? {
            if let Some(tx) = progress {
                let _ = tx.try_send(PullProgress {
                    id: None,
                    status: format!("Pulled {image}"),
                    current: None,
                    total: None,
                });
            }
            self.lock().images.push(image.to_owned());
        }
        Ok(())
    }

    async fn create(&self, spec: &DebugSpec) -> Result<Created, Error> {
        self.record(Call::Create(Box::new(spec.clone())));
        let mut state = self.lock();
        state.next_id += 1;
        let id = format!("fake{:04}", state.next_id);
        state.containers.insert(
            id.clone(),
            FakeContainer {
                spec: spec.clone(),
                stdin: None,
                stdout: None,
                stderr: None,
                exit: watch::channel(None).0,
                process: None,
            },
        );
        Ok(Created {
            id,
            warnings: Vec::new(),
        })
    }

    async fn attach(&self, id: &str, spec: &DebugSpec) -> Result<Stdio, Error> {
        self.record(Call::Attach(id.to_owned()));
        let mut state = self.lock();
        let container = state
            .containers
            .get_mut(id)
            .ok_or_else(|| Self::unknown(id))?;
        let (stdin_w, stdin_r) = tokio::io::duplex(64 * 1024);
        let (stdout_w, stdout_r) = tokio::io::duplex(64 * 1024);
        let (stderr_w, stderr_r) = tokio::io::duplex(64 * 1024);
        container.stdin = Some(stdin_r);
        container.stdout = Some(stdout_w);
        container.stderr = Some(stderr_w);
        Ok(Stdio {
            stdin: spec.stdin.then(|| Box::pin(stdin_w) as _),
            stdout: spec.stdout.then(|| Box::pin(stdout_r) as _),
            stderr: (spec.stderr && !spec.tty).then(|| Box::pin(stderr_r) as _),
        })
    }

    async fn start(&self, id: &str) -> Result<(), Error> {
        self.record(Call::Start(id.to_owned()));
        let script = self.script.lock().unwrap().clone();
        let mut state = self.lock();
        let container = state
            .containers
            .get_mut(id)
            .ok_or_else(|| Self::unknown(id))?;
        let mut stdin = container.stdin.take();
        let mut stdout = container.stdout.take();
        let mut stderr = container.stderr.take();
        let exit = container.exit.clone();
        container.process = Some(tokio::spawn(async move {
            if let Some(out) = &mut stdout {
                let _ = out.write_all(&script.stdout).await;
            }
            if let Some(err) = &mut stderr {
                let _ = err.write_all(&script.stderr).await;
            }
            drop(stderr);
            if script.echo_stdin {
                if let (Some(input), Some(out)) = (&mut stdin, &mut stdout) {
                    let mut buf = vec![0u8; 4096];
                    while let Ok(n) = input.read(&mut buf).await {
                        if n == 0 || out.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            } else if script.linger {
                std::future::pending::<()>().await;
            }
            drop(stdout);
            exit.send_replace(Some(script.exit_code));
        }));
        Ok(())
    }

    async fn resize(&self, id: &str, size: TerminalSize) -> Result<(), Error> {
        self.record(Call::Resize(id.to_owned(), size));
        Ok(())
    }

    async fn wait(&self, id: &str) -> Result<i64, Error> {
        self.record(Call::Wait(id.to_owned()));
        let mut exit = self
            .lock()
            .containers
            .get(id)
            .ok_or_else(|| Self::unknown(id))?
            .exit
            .subscribe();
        loop {
            if let Some(code) = *exit.borrow_and_update() {
                return Ok(code);
            }
            if exit.changed().await.is_err() {
                // Removed while running: killed.
                return Ok(137);
            }
        }
    }

    async fn remove(&self, id: &str) -> Result<(), Error> {
        self.record(Call::Remove(id.to_owned()));
        if let Some(container) = self.lock().containers.remove(id) {
            if let Some(process) = container.process {
                process.abort();
            }
            container.exit.send_replace(Some(137));
        }
        Ok(())
    }

    async fn stop(&self, id: &str, _grace: std::time::Duration) -> Result<(), Error> {
        self.record(Call::Stop(id.to_owned()));
        if let Some(container) = self.lock().containers.get_mut(id) {
            if let Some(process) = container.process.take() {
                process.abort();
            }
            container.exit.send_if_modified(|code| {
                let unset = code.is_none();
                if unset {
                    *code = Some(143);
                }
                unset
            });
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<DebugContainer>, Error> {
        self.record(Call::List);
        Ok(self
            .lock()
            .containers
            .iter()
            .map(|(id, c)| DebugContainer {
                id: id.clone(),
                name: c.spec.name.clone().unwrap_or_else(|| id.clone()),
                image: c.spec.image.clone(),
                state: "running".into(),
                labels: c.spec.labels.clone(),
            })
            .collect())
    }
}
