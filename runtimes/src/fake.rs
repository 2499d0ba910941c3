//! An in-tree fake runtime for the agent's tests (cargo feature `fake`): it records every call
//! and plays a scripted process (output, optional echo of stdin, exit code) for every session
//! in place of a real one, in containers that hold as real debug containers do.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kdbg_relay::TerminalSize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use crate::{
    ContainerState, Created, DebugContainer, DebugSpec, Error, ImageConfig, Process, ProcessSpec,
    PullPolicy, PullProgress, Runtime, Stdio, TargetInfo, TargetRef,
};

/// What the fake's session processes do.
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// Written to stdout at start.
    pub stdout: Bytes,
    /// Written to stderr at start.
    pub stderr: Bytes,
    /// Copy stdin to stdout until stdin ends (then exit); otherwise exit after the output.
    pub echo_stdin: bool,
    /// Stay running after the output until signalled (like a shell nobody types into).
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
    /// [`Runtime::start`].
    Start(String),
    /// [`Runtime::exec`], with the process.
    Exec(String, Box<ProcessSpec>),
    /// [`Runtime::resize`].
    Resize(String, TerminalSize),
    /// [`Runtime::wait`].
    Wait(String),
    /// [`Runtime::signal`]: container, session, signal.
    Signal(String, String, i32),
    /// [`Runtime::inspect`].
    Inspect(String),
    /// [`Runtime::stop`].
    Stop(String),
    /// [`Runtime::remove`].
    Remove(String),
    /// [`Runtime::list`].
    List,
    /// [`Runtime::image_config`], with the target's ID.
    ImageConfig(String),
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<Call>,
    /// Target ID -> its state (`running`, `exited`, ...).
    targets: HashMap<String, String>,
    target_labels: HashMap<String, BTreeMap<String, String>>,
    images: Vec<String>,
    /// Target ID -> its image's config (see [`FakeRuntime::set_image_config`]).
    image_configs: HashMap<String, ImageConfig>,
    next_id: u64,
    containers: BTreeMap<String, FakeContainer>,
    /// Signals still to be lost (see [`FakeRuntime::lose_signals`]).
    lost_signals: usize,
}

#[derive(Debug)]
struct FakeContainer {
    spec: DebugSpec,
    state: ContainerState,
    /// Session processes by exec ID.
    execs: HashMap<String, FakeExec>,
}

#[derive(Debug)]
struct FakeExec {
    session: String,
    exit: watch::Sender<Option<i64>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeExec {
    fn kill(&self, code: i64) {
        self.task.abort();
        self.exit.send_if_modified(|exit| {
            let unset = exit.is_none();
            if unset {
                *exit = Some(code);
            }
            unset
        });
    }
}

/// The fake runtime. Clones share state.
#[derive(Debug, Clone, Default)]
pub struct FakeRuntime {
    state: Arc<Mutex<State>>,
    script: Arc<Mutex<Script>>,
}

impl FakeRuntime {
    /// A fake whose session processes run `script`; add targets and images before use.
    pub fn new(script: Script) -> FakeRuntime {
        let fake = FakeRuntime::default();
        *fake.script.lock().unwrap() = script;
        fake
    }

    /// Adds (or changes) a target container in `state` (`running`, `exited`, ...).
    pub fn add_target(&self, id: &str, state: &str) {
        self.lock().targets.insert(id.to_owned(), state.to_owned());
    }

    /// Gives target `id` labels (a pod's, as the kubelet sets them).
    pub fn label_target(&self, id: &str, labels: &[(&str, &str)]) {
        self.lock().target_labels.insert(
            id.to_owned(),
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
    }

    /// Removes a target container, as a deleted pod's.
    pub fn remove_target(&self, id: &str) {
        self.lock().targets.remove(id);
    }

    /// Gives target `id` an image whose config is `config` (without, a target's image is
    /// `fake:latest` with `Cmd` `["sh"]`).
    pub fn set_image_config(&self, id: &str, config: ImageConfig) {
        self.lock().image_configs.insert(id.to_owned(), config);
    }

    /// Marks `image` as present.
    pub fn add_image(&self, image: &str) {
        self.lock().images.push(image.to_owned());
    }

    /// The next `n` signals find no process, as a Docker exec's process that is not there
    /// yet: the engine answers the start of an exec before its process runs.
    pub fn lose_signals(&self, n: usize) {
        self.lock().lost_signals = n;
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// IDs of the containers that exist (created and not removed).
    pub fn containers(&self) -> Vec<String> {
        self.lock().containers.keys().cloned().collect()
    }

    /// How many session processes run now.
    pub fn running_processes(&self) -> usize {
        self.lock()
            .containers
            .values()
            .flat_map(|c| c.execs.values())
            .filter(|e| e.exit.borrow().is_none())
            .count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake runtime state poisoned")
    }

    fn record(&self, call: Call) {
        self.lock().calls.push(call);
    }

    fn unknown(id: &str) -> Error {
        Error::ContainerNotFound {
            name: id.to_owned(),
        }
    }

    fn snapshot(id: &str, c: &FakeContainer) -> DebugContainer {
        DebugContainer {
            id: id.to_owned(),
            name: c.spec.name.clone(),
            image: c.spec.image.clone(),
            state: c.state.clone(),
            labels: c.spec.labels.clone(),
        }
    }
}

impl Runtime for FakeRuntime {
    async fn check_target(&self, target: &TargetRef) -> Result<TargetInfo, Error> {
        self.record(Call::CheckTarget(target.id.clone()));
        let state = self.lock().targets.get(&target.id).cloned();
        match state {
            None => Err(Error::TargetNotFound {
                target: target.clone(),
            }),
            Some(state) if state != "running" => Err(Error::TargetNotRunning {
                target: target.clone(),
                state,
            }),
            Some(_) => Ok(TargetInfo {
                labels: self
                    .lock()
                    .target_labels
                    .get(&target.id)
                    .cloned()
                    .unwrap_or_default(),
                pid: None,
            }),
        }
    }

    async fn ensure_image(
        &self,
        image: &str,
        policy: PullPolicy,
        progress: Option<mpsc::Sender<PullProgress>>,
        _options: crate::PullOptions<'_>,
    ) -> Result<(), Error> {
        self.record(Call::EnsureImage(image.to_owned(), policy));
        let present = self.lock().images.iter().any(|i| i == image);
        if crate::needs_pull(policy, image, present)? {
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
        if state.containers.values().any(|c| c.spec.name == spec.name) {
            return Err(Error::NameTaken {
                name: spec.name.clone(),
                source: "a fake container has it".into(),
            });
        }
        state.next_id += 1;
        let id = format!("fake{:04}", state.next_id);
        state.containers.insert(
            id.clone(),
            FakeContainer {
                spec: spec.clone(),
                state: ContainerState::Created,
                execs: HashMap::new(),
            },
        );
        Ok(Created {
            id,
            warnings: Vec::new(),
        })
    }

    async fn start(&self, id: &str) -> Result<(), Error> {
        self.record(Call::Start(id.to_owned()));
        let mut state = self.lock();
        let container = state
            .containers
            .get_mut(id)
            .ok_or_else(|| Self::unknown(id))?;
        container.state = ContainerState::Running;
        Ok(())
    }

    async fn exec(&self, id: &str, process: &ProcessSpec) -> Result<Process, Error> {
        self.record(Call::Exec(id.to_owned(), Box::new(process.clone())));
        let script = self.script.lock().unwrap().clone();
        let mut state = self.lock();
        let next = state.next_id + 1;
        state.next_id = next;
        let container = state
            .containers
            .get_mut(id)
            .ok_or_else(|| Self::unknown(id))?;
        if container.state != ContainerState::Running {
            return Err(Error::Call {
                operation: "starting a process in debug container",
                object: id.to_owned(),
                source: "it is not running".into(),
            });
        }
        let (stdin_w, mut stdin) = tokio::io::duplex(64 * 1024);
        let (mut stdout, stdout_r) = tokio::io::duplex(64 * 1024);
        let (mut stderr, stderr_r) = tokio::io::duplex(64 * 1024);
        let (exit, _) = watch::channel(None);
        let done = exit.clone();
        let task = tokio::spawn(async move {
            let _ = stdout.write_all(&script.stdout).await;
            let _ = stderr.write_all(&script.stderr).await;
            drop(stderr);
            if script.echo_stdin {
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = stdin.read(&mut buf).await {
                    if n == 0 || stdout.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            } else if script.linger {
                std::future::pending::<()>().await;
            }
            drop(stdout);
            done.send_replace(Some(script.exit_code));
        });
        let exec_id = format!("exec{next:04}");
        container.execs.insert(
            exec_id.clone(),
            FakeExec {
                session: process.session.clone(),
                exit,
                task,
            },
        );
        Ok(Process {
            id: exec_id,
            stdio: Stdio {
                stdin: process.stdin.then(|| Box::pin(stdin_w) as _),
                stdout: process.stdout.then(|| Box::pin(stdout_r) as _),
                stderr: (process.stderr && !process.tty).then(|| Box::pin(stderr_r) as _),
            },
        })
    }

    async fn resize(&self, id: &str, _exec: &str, size: TerminalSize) -> Result<(), Error> {
        self.record(Call::Resize(id.to_owned(), size));
        Ok(())
    }

    async fn wait(&self, id: &str, exec: &str) -> Result<i64, Error> {
        self.record(Call::Wait(exec.to_owned()));
        let mut exit = self
            .lock()
            .containers
            .get(id)
            .and_then(|c| c.execs.get(exec))
            .ok_or_else(|| Self::unknown(id))?
            .exit
            .subscribe();
        let code = loop {
            if let Some(code) = *exit.borrow_and_update() {
                break code;
            }
            if exit.changed().await.is_err() {
                break 137;
            }
        };
        if let Some(container) = self.lock().containers.get_mut(id) {
            container.execs.remove(exec);
        }
        Ok(code)
    }

    async fn signal(&self, id: &str, session: &str, signal: i32) -> Result<(), Error> {
        self.record(Call::Signal(id.to_owned(), session.to_owned(), signal));
        let mut state = self.lock();
        if state.lost_signals > 0 {
            state.lost_signals -= 1;
            return Ok(());
        }
        if let Some(container) = state.containers.get(id) {
            for exec in container.execs.values().filter(|e| e.session == session) {
                exec.kill(128 + i64::from(signal));
            }
        }
        Ok(())
    }

    async fn inspect(&self, id: &str) -> Result<DebugContainer, Error> {
        self.record(Call::Inspect(id.to_owned()));
        let state = self.lock();
        let container = state.containers.get(id).ok_or_else(|| Self::unknown(id))?;
        Ok(Self::snapshot(id, container))
    }

    async fn stop(&self, id: &str, _grace: Duration) -> Result<(), Error> {
        self.record(Call::Stop(id.to_owned()));
        if let Some(container) = self.lock().containers.get_mut(id) {
            for exec in container.execs.values() {
                exec.kill(143);
            }
            if container.state == ContainerState::Running {
                container.state = ContainerState::Exited {
                    code: 0,
                    oom_killed: false,
                };
            }
        }
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), Error> {
        self.record(Call::Remove(id.to_owned()));
        if let Some(container) = self.lock().containers.remove(id) {
            for exec in container.execs.values() {
                exec.kill(137);
            }
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<DebugContainer>, Error> {
        self.record(Call::List);
        Ok(self
            .lock()
            .containers
            .iter()
            .map(|(id, c)| Self::snapshot(id, c))
            .collect())
    }

    async fn image_config(&self, target: &TargetRef) -> Result<ImageConfig, Error> {
        self.record(Call::ImageConfig(target.id.clone()));
        let state = self.lock();
        if !state.targets.contains_key(&target.id) {
            return Err(Error::TargetNotFound {
                target: target.clone(),
            });
        }
        Ok(state
            .image_configs
            .get(&target.id)
            .cloned()
            .unwrap_or_else(|| {
                ImageConfig::new("fake:latest", None, Some(vec!["sh".into()]), None, None)
            }))
    }
}
