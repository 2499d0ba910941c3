//! `kubectl-debug cp`: files and directories copied between a pod's container and here.
//!
//! The copy is a debug session like any other (same agent, same checks, the image the
//! session's would be, the debug container removed afterwards unless `--retain`) whose
//! command is the agent's own static `kdbg-init` (`pack PATH` or `unpack PATH`), so neither
//! the target's image nor the debug image needs `tar`: a tar stream goes through the
//! session's stdout or stdin, and this end packs or unpacks it with the same code
//! (`agent/init/archive.rs`) and the same rules. The target's paths are resolved inside its
//! root, symlinks included, so none leads out of it; a name in an archive that would leave
//! the destination is refused; modes and modification times are kept.

use std::io::IsTerminal as _;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use kdbg_api::{DebugRequest, Profile, PullPolicy};
use kdbg_relay::session::{BoxRead, BoxWrite};
use kdbg_relay::{ClientIo, Config, ExitStatus};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::cli::Global;
use crate::cluster::Cluster;
use crate::localio;
use crate::{attach, pod};

#[path = "../../agent/init/archive.rs"]
mod archive;

/// `cp`.
#[derive(Debug, Args)]
pub struct CpArgs {
    /// The cluster and its agents.
    #[command(flatten)]
    pub global: Global,
    /// What to copy: POD:PATH, a local PATH, or - (a tar stream on stdin, unpacked into the
    /// pod's directory PATH).
    #[arg(value_name = "SOURCE")]
    pub source: String,
    /// Where to: POD:PATH, a local PATH, or - (a tar stream on stdout). Into it if it is a
    /// directory, else as it, like cp.
    #[arg(value_name = "DEST")]
    pub destination: String,
    /// The pod's container (default: the first).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// The debug container's image (default: the agent's); it needs nothing, not even tar.
    #[arg(long)]
    pub image: Option<String>,
    /// Keep the debug container afterwards.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub retain: Option<bool>,
    /// When to pull the image: Always, IfNotPresent (default) or Never.
    #[arg(long, value_name = "POLICY")]
    pub pull_policy: Option<PullPolicy>,
    /// A secret of the pod's namespace with registry credentials for the image
    /// (kubernetes.io/dockerconfigjson), read with your rights; repeatable. The pod's and its
    /// service account's imagePullSecrets are used too.
    #[arg(long = "image-pull-secret", value_name = "NAME")]
    pub image_pull_secrets: Vec<String>,
    /// The image's platform, os/arch[/variant] (default: the node's).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<kdbg_api::Platform>,
    /// What the debug container may do (see the debug verb's --profile); a target running as
    /// another user than the debug image's needs general or sysadmin.
    #[arg(long, value_name = "PROFILE")]
    pub profile: Option<Profile>,
}

/// One side of a copy, as the command line names it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    /// `POD:PATH`.
    Remote { pod: String, path: String },
    /// A local path.
    Local(PathBuf),
    /// `-`: stdin or stdout.
    Stream,
}

/// Reads one side: `-`, `POD:PATH` (`pod/NAME:PATH` too), or a local path (one that starts
/// with `/` or `.`, or has no `:` after a plain name).
fn end(arg: &str) -> End {
    if arg == "-" {
        return End::Stream;
    }
    if !arg.starts_with('/')
        && !arg.starts_with('.')
        && let Some((pod, path)) = arg.split_once(':')
    {
        // A pod (`pod/NAME` too), or the node itself (`node/NAME`).
        let name = crate::node::named(pod).unwrap_or_else(|| pod::pod_name(pod));
        if !name.is_empty() && !name.contains('/') && !path.is_empty() {
            return End::Remote {
                pod: pod.to_owned(),
                path: path.to_owned(),
            };
        }
    }
    End::Local(PathBuf::from(arg))
}

/// The modes files and directories copied here may have: the permission bits the user's
/// umask allows, never setuid, setgid or sticky (the pod's end chooses them, and it is not
/// trusted), as `tar` does for a user who is not root.
fn local_mask() -> u32 {
    // Read, not set and set back as umask(2) would need (other threads make files too).
    let umask = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Umask:"))?;
            u32::from_str_radix(line.trim_start_matches("Umask:").trim(), 8).ok()
        })
        .unwrap_or(0o022);
    0o777 & !umask
}

/// The last component of the pod's `path` (`/var/log/app/` → `app`); none for `/`.
fn asked_name(path: &str) -> Option<Vec<u8>> {
    path.split('/')
        .rfind(|part| !part.is_empty() && *part != ".")
        .map(|part| part.as_bytes().to_vec())
}

/// Which way the bytes go, and the local end.
enum Direction {
    /// From the pod to a local path, or to stdout (`None`).
    Down(Option<PathBuf>),
    /// From a local path, or a tar stream on stdin (`None`), to the pod.
    Up(Option<PathBuf>),
}

/// Runs `kubectl-debug cp`.
pub async fn run(global: &Global, args: CpArgs) -> anyhow::Result<ExitStatus> {
    let (pod, path, direction) = match (end(&args.source), end(&args.destination)) {
        (End::Remote { pod, path }, End::Local(local)) => (pod, path, Direction::Down(Some(local))),
        (End::Remote { pod, path }, End::Stream) => (pod, path, Direction::Down(None)),
        (End::Local(local), End::Remote { pod, path }) => (pod, path, Direction::Up(Some(local))),
        (End::Stream, End::Remote { pod, path }) => (pod, path, Direction::Up(None)),
        (End::Remote { .. }, End::Remote { .. }) => {
            bail!("cp copies between a pod and here: one of SOURCE and DEST must be local (or -)")
        }
        _ => bail!(
            "cp needs a pod's path, POD:PATH, as SOURCE or DEST (a local path with a colon: write it ./like:this)"
        ),
    };
    if path.split('/').rfind(|p| !p.is_empty() && *p != ".") == Some("..") {
        bail!("{pod}:{path}: name the file or directory itself, not ..");
    }
    if !path.starts_with('/') {
        bail!("{pod}:{path}: the pod's path must be absolute (it starts with /)");
    }
    if matches!(direction, Direction::Down(None)) && std::io::stdout().is_terminal() {
        bail!(
            "cp {pod}:{path} - writes a tar archive: send it to a file or a pipe (| tar -x), not the terminal"
        );
    }
    // The local end first: nothing is started for a copy that cannot be made here.
    let local_dest = match &direction {
        Direction::Down(Some(local)) => {
            let (dir, rename) = archive::destination(Path::new("/"), &absolute(local)?, false)
                .map_err(|e| anyhow::anyhow!("{}: {}", local.display(), archive::plain(&e)))?;
            // Into a directory here: every entry goes under the name of what was asked for,
            // whatever the stream says, so a tampered one cannot write beside it (a
            // .bashrc, a .git/hooks/...): the pod's end is not trusted.
            let rename = rename.or_else(|| asked_name(&path));
            Some((dir, rename))
        }
        Direction::Up(Some(local)) => {
            std::fs::symlink_metadata(local)
                .map_err(|e| anyhow::anyhow!("{}: {}", local.display(), archive::plain(&e)))?;
            None
        }
        _ => None,
    };
    let cluster = Cluster::connect(global).await?;
    // The node itself (`node/NAME:PATH`, its files as its / has them), or a pod's container.
    let (agent, place, node, found) = match crate::node::named(&pod) {
        Some(node) => {
            if let Some(container) = &args.container {
                bail!("-c {container}: node/{node} is the node itself: it has no containers");
            }
            let (agent, _) = crate::node::reach(&cluster, node).await?;
            let agent = agent.with_pull_secrets(crate::pullsecrets::PullSecrets::new(
                cluster.client.clone(),
                &cluster.namespace,
                &args.image_pull_secrets,
                &[],
                None,
            ));
            (agent, format!("node/{node}"), Some(node.to_owned()), None)
        }
        None => {
            let found = pod::resolve(
                cluster.client.clone(),
                &cluster.namespace,
                pod::pod_name(&pod),
                args.container.as_deref(),
            )
            .await?;
            let agent = cluster
                .agent_on(&found.node, &found.host_ip, Some(found.target.kind))
                .await?
                .with_pull_secrets(
                    found.pull_secrets(cluster.client.clone(), &args.image_pull_secrets),
                );
            (agent, found.pod.clone(), None, Some(found))
        }
    };
    let init = kdbg_runtimes::init::PATH.to_owned();
    let mut command = match &direction {
        // With its size first (for the progress bar) when there is a terminal to show it.
        Direction::Down(_) if std::io::stderr().is_terminal() => {
            vec![init, "pack".into(), "--size".into(), path.clone()]
        }
        Direction::Down(_) => vec![init, "pack".into(), path.clone()],
        Direction::Up(Some(_)) => vec![init, "unpack".into(), path.clone()],
        Direction::Up(None) => vec![init, "unpack".into(), "--into".into(), path.clone()],
    };
    if node.is_some() {
        // The node's files are its / bind-mounted at /host in a node debug container.
        command.splice(
            2..2,
            ["--root".to_owned(), kdbg_runtimes::HOST_ROOT.to_owned()],
        );
    }
    let mut request = DebugRequest {
        target: found.as_ref().map(|f| f.target.clone()),
        container: None,
        node,
        image: args.image.clone(),
        command,
        stdin: matches!(direction, Direction::Up(_)),
        stdout: true,
        stderr: true,
        tty: false,
        name: None,
        retain: args.retain.unwrap_or(false),
        pull_policy: args.pull_policy.unwrap_or_default(),
        platform: args.platform.clone(),
        pod_namespace: found.as_ref().map(|f| f.namespace.clone()),
        pod_name: found.as_ref().map(|f| f.pod.clone()),
        pod_container: found.as_ref().map(|f| f.container.clone()),
        user: std::env::var("USER").ok().filter(|u| !u.is_empty()),
        record: false,
        profile: args.profile,
        chroot: false,
        size: None,
    };
    let session = if request.pull_policy == PullPolicy::Never {
        agent.open_session(&request).await?
    } else {
        attach::open_pulling(&agent, &mut request).await?
    };
    // The debug container's (its IPC namespace, ...): not the copy's; shown with -v.
    for warning in &session.warnings {
        tracing::info!("{warning}");
    }
    if !session.protocol.has_close_signal() {
        bail!(
            "the agent speaks {}, which cannot end a copy's input: upgrade it",
            session.protocol.name()
        );
    }
    let kept = session.container.clone().filter(|_| request.retain);

    let progress = Progress::new();
    let mut io = ClientIo {
        stderr: Some(Box::pin(Messages {
            pod: place.clone(),
            partial: Vec::new(),
            shown: progress.shown.clone(),
            total: progress.total.clone(),
        })),
        ..ClientIo::default()
    };
    // The local end's work, on its own thread: whether all went well, and why not.
    let work: tokio::task::JoinHandle<Outcome>;
    match direction {
        Direction::Down(None) => {
            io.stdout = Some(progress.count_write(localio::stdout()));
            work = tokio::spawn(async { Outcome::Done(true) });
        }
        Direction::Down(Some(local)) => {
            let (reader, writer) = big_pipe()?;
            let writer = tokio::net::unix::pipe::Sender::from_owned_fd(OwnedFd::from(writer))
                .context("making a pipe")?;
            io.stdout = Some(progress.count_write(Box::pin(writer)));
            let (dir, rename) = local_dest.clone().expect("checked above");
            let shown = if rename.is_some() {
                local_parent(&local)
            } else {
                local.as_os_str().as_bytes().to_vec()
            };
            let messages = progress.shown.clone();
            work = tokio::task::spawn_blocking(move || {
                let mut reader = std::io::BufReader::with_capacity(256 * 1024, reader);
                let mut warn = |line: String| say(&messages, &line);
                match archive::unpack(
                    &mut reader,
                    &dir,
                    rename.as_deref(),
                    local_mask(),
                    &shown,
                    &mut warn,
                ) {
                    Ok(ok) => Outcome::Done(ok),
                    Err(stop) => Outcome::Stopped(stop),
                }
            });
        }
        Direction::Up(None) => {
            io.stdin = Some(progress.count_read(localio::stdin()));
            work = tokio::spawn(async { Outcome::Done(true) });
        }
        Direction::Up(Some(local)) => {
            let (reader, writer) = big_pipe()?;
            let reader = tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(reader))
                .context("making a pipe")?;
            io.stdin = Some(progress.count_read(Box::pin(reader)));
            let messages = progress.shown.clone();
            let total = progress.total.clone();
            work = tokio::task::spawn_blocking(move || {
                if messages.terminal {
                    total.store(archive::size_of(&local), Ordering::Relaxed);
                }
                let path =
                    absolute(&local).unwrap_or_else(|_| local.as_os_str().as_bytes().to_vec());
                let mut out = std::io::BufWriter::with_capacity(128 * 1024, writer);
                let mut warn = |line: String| say(&messages, &line);
                let shown = local.as_os_str().as_bytes();
                match archive::pack(Path::new("/"), &path, shown, &mut out, &mut warn) {
                    Ok(ok) => Outcome::Done(ok),
                    Err(e) => Outcome::Unsent(e),
                }
            });
        }
    }
    let ticker = progress.start();
    let relayed = kdbg_relay::attach(session.ws, session.protocol, io, &Config::default()).await;
    let local = work.await.unwrap_or(Outcome::Done(false));
    ticker.abort();
    progress.finish();
    let status = relayed?.outcome;
    let remote = match &status {
        ExitStatus::Code(code) => *code,
        ExitStatus::Ended { code, .. } => *code,
        ExitStatus::Failure { .. } => 1,
    };
    if remote > 128 && matches!(status, ExitStatus::Code(_)) {
        eprintln!(
            "error: the copy in {} was killed (signal {}): did its container stop?",
            if found.is_some() {
                format!("pod {place}")
            } else {
                place.clone()
            },
            remote - 128
        );
    }
    let local_ok = match local {
        Outcome::Done(ok) => ok,
        // What the pod's end said explains it: nothing came, or what came stopped short.
        Outcome::Stopped(archive::Stop::Truncated(None, _)) if remote != 0 => false,
        Outcome::Stopped(stop) => {
            eprintln!("error: copying {pod}:{path}: {stop}");
            false
        }
        Outcome::Unsent(_) if remote != 0 => false,
        Outcome::Unsent(e) => {
            eprintln!("error: sending the copy: {}", archive::plain(&e));
            false
        }
    };
    if let Some(name) = kept {
        eprintln!("{}", attach::kept_in_pod(&place)(&name));
    }
    Ok(match status {
        ExitStatus::Code(0) if !local_ok => ExitStatus::Code(1),
        status => status,
    })
}

/// How the local end of a copy went.
enum Outcome {
    /// To the end; whether every entry could be read or written.
    Done(bool),
    /// Unpacking stopped.
    Stopped(archive::Stop),
    /// Packing stopped: the session went away.
    Unsent(std::io::Error),
}

/// `path` made absolute (against the working directory), as bytes.
/// A pipe between the archive's thread and the session, of 1 MiB where the system allows
/// (the default 64 KiB would wake each end for every few frames).
fn big_pipe() -> anyhow::Result<(std::io::PipeReader, std::io::PipeWriter)> {
    let (reader, writer) = std::io::pipe().context("making a pipe")?;
    let _ = rustix::pipe::fcntl_setpipe_size(&writer, 1024 * 1024);
    Ok((reader, writer))
}

fn absolute(path: &Path) -> anyhow::Result<Vec<u8>> {
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .context("reading the working directory")?
            .join(path)
    };
    Ok(path.as_os_str().as_bytes().to_vec())
}

/// The directory part of a local path as the user wrote it.
fn local_parent(path: &Path) -> Vec<u8> {
    let bytes = path.as_os_str().as_bytes();
    let trimmed = bytes.strip_suffix(b"/").unwrap_or(bytes);
    match trimmed.iter().rposition(|&b| b == b'/') {
        Some(0) => b"/".to_vec(),
        Some(at) => trimmed[..at].to_vec(),
        None => b".".to_vec(),
    }
}

/// Where messages go: stderr, clearing the progress line first when there is one.
struct Shown {
    /// stderr is a terminal: progress is shown.
    terminal: bool,
    /// A progress line is on the screen.
    drawn: AtomicBool,
}

/// Prints one message of a copy: `error: ...`, or `warning: ...` as it says.
fn say(shown: &Shown, line: &str) {
    let clear = if shown.drawn.swap(false, Ordering::Relaxed) {
        "\r\x1b[K"
    } else {
        ""
    };
    if line.starts_with("warning: ") {
        eprintln!("{clear}{line}");
    } else {
        eprintln!("{clear}error: {line}");
    }
}

/// The debug container's stderr: the helper's messages (`kdbg-cp: PATH: reason`) as ours,
/// naming the pod (`error: web-1:PATH: reason`); anything else as it is.
struct Messages {
    pod: String,
    partial: Vec<u8>,
    shown: Arc<Shown>,
    /// Where `kdbg-cp: size N` (`pack --size`) goes.
    total: Arc<AtomicU64>,
}

impl Messages {
    fn line(&self, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        match line.strip_prefix(archive::MESSAGE_PREFIX) {
            Some(message) if message.starts_with("size ") => {
                if let Ok(size) = message["size ".len()..].trim().parse() {
                    self.total.store(size, Ordering::Relaxed);
                }
            }
            Some(message) => {
                let (warning, message) = match message.strip_prefix("warning: ") {
                    Some(rest) => (true, rest),
                    None => (false, message),
                };
                let named = if message.starts_with('/') {
                    format!("{}:{message}", self.pod)
                } else {
                    message.to_owned()
                };
                if warning {
                    say(&self.shown, &format!("warning: {named}"));
                } else {
                    say(&self.shown, &named);
                }
            }
            None => {
                let clear = if self.shown.drawn.swap(false, Ordering::Relaxed) {
                    "\r\x1b[K"
                } else {
                    ""
                };
                eprintln!("{clear}{line}");
            }
        }
    }
}

impl AsyncWrite for Messages {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.partial.extend_from_slice(buf);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            self.line(&line[..line.len() - 1]);
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line);
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for Messages {
    fn drop(&mut self) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line);
        }
    }
}

/// Bytes moved, shown on a terminal (stderr) for copies that take more than a moment.
struct Progress {
    moved: Arc<AtomicU64>,
    /// The bytes to move, when known (0: not known).
    total: Arc<AtomicU64>,
    shown: Arc<Shown>,
    started: Instant,
}

/// Shown only for copies that last longer than this.
const QUIET: Duration = Duration::from_secs(1);

impl Progress {
    fn new() -> Progress {
        Progress {
            moved: Arc::default(),
            total: Arc::default(),
            shown: Arc::new(Shown {
                terminal: std::io::stderr().is_terminal(),
                drawn: AtomicBool::new(false),
            }),
            started: Instant::now(),
        }
    }

    fn count_read(&self, inner: BoxRead) -> BoxRead {
        Box::pin(Counted {
            inner,
            moved: self.moved.clone(),
        })
    }

    fn count_write(&self, inner: BoxWrite) -> BoxWrite {
        Box::pin(CountedWrite {
            inner,
            moved: self.moved.clone(),
        })
    }

    /// Draws the line every so often, on a terminal.
    fn start(&self) -> tokio::task::JoinHandle<()> {
        let (moved, total, shown, started) = (
            self.moved.clone(),
            self.total.clone(),
            self.shown.clone(),
            self.started,
        );
        tokio::spawn(async move {
            if !shown.terminal {
                return;
            }
            tokio::time::sleep(QUIET).await;
            loop {
                let bytes = moved.load(Ordering::Relaxed);
                let total = total.load(Ordering::Relaxed);
                let rate = bytes as f64 / started.elapsed().as_secs_f64().max(0.001);
                let line = if let Some(done) = (bytes.min(total) * 100).checked_div(total) {
                    let done = done as usize;
                    let bar = format!("{}{}", "#".repeat(done / 4), ".".repeat(25 - done / 4));
                    format!(
                        "[{bar}] {done:3}% {} of {}, {}/s",
                        size(bytes),
                        size(total),
                        size(rate as u64)
                    )
                } else {
                    format!("{} copied, {}/s", size(bytes), size(rate as u64))
                };
                eprint!("\r\x1b[K{line}");
                shown.drawn.store(true, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    }

    /// Clears the line, if one was drawn.
    fn finish(&self) {
        if self.shown.drawn.swap(false, Ordering::Relaxed) {
            eprint!("\r\x1b[K");
        }
    }
}

/// A byte count for people.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

struct Counted {
    inner: BoxRead,
    moved: Arc<AtomicU64>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = self.inner.as_mut().poll_read(cx, buf);
        let read = buf.filled().len() - before;
        self.moved.fetch_add(read as u64, Ordering::Relaxed);
        polled
    }
}

struct CountedWrite {
    inner: BoxWrite,
    moved: Arc<AtomicU64>,
}

impl AsyncWrite for CountedWrite {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = self.inner.as_mut().poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled {
            self.moved.fetch_add(*n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.inner.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.inner.as_mut().poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sides_of_a_copy_are_told_apart() {
        let remote = |pod: &str, path: &str| End::Remote {
            pod: pod.into(),
            path: path.into(),
        };
        assert_eq!(end("web-1:/etc/hosts"), remote("web-1", "/etc/hosts"));
        assert_eq!(end("pod/list:/x"), remote("pod/list", "/x"));
        assert_eq!(
            end("node/n1:/etc/os-release"),
            remote("node/n1", "/etc/os-release")
        );
        assert_eq!(end("-"), End::Stream);
        assert_eq!(asked_name("/var/log/app/"), Some(b"app".to_vec()));
        assert_eq!(asked_name("/etc/hosts"), Some(b"hosts".to_vec()));
        assert_eq!(asked_name("/"), None);
        for local in ["./a:b", "/tmp/a:b", "dir/file:x", "plain", "web-1:"] {
            assert_eq!(end(local), End::Local(local.into()), "{local}");
        }
    }

    #[test]
    fn what_a_pod_sends_stays_under_what_was_asked_for_with_safe_modes() {
        let dir = std::env::temp_dir().join(format!("kdbg-cp-hostile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // What a tampered pod end might send for `cp POD:/var/log/app.log ~`: a .bashrc
        // beside it, setuid.
        let source = dir.join("src");
        std::fs::create_dir_all(&source).unwrap();
        std::fs::write(source.join(".bashrc"), b"evil").unwrap();
        std::fs::set_permissions(
            source.join(".bashrc"),
            std::os::unix::fs::PermissionsExt::from_mode(0o4777),
        )
        .unwrap();
        let mut tar = Vec::new();
        let mut warn = |line: String| panic!("{line}");
        let path = source.join(".bashrc");
        let path = path.as_os_str().as_bytes();
        assert!(archive::pack(Path::new("/"), path, path, &mut tar, &mut warn).unwrap());
        let home = dir.join("home");
        std::fs::create_dir_all(&home).unwrap();
        let (into, rename) =
            archive::destination(Path::new("/"), home.as_os_str().as_bytes(), false).unwrap();
        assert_eq!(rename, None, "an existing directory");
        let rename = rename.or_else(|| asked_name("/var/log/app.log"));
        let mask = 0o777 & !0o022;
        archive::unpack(
            &mut &tar[..],
            &into,
            rename.as_deref(),
            mask,
            b"~",
            &mut warn,
        )
        .unwrap();
        assert!(
            !home.join(".bashrc").exists(),
            "written beside what was asked"
        );
        let got = home.join("app.log");
        assert_eq!(std::fs::read(&got).unwrap(), b"evil");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&got).unwrap().permissions(),
        );
        assert_eq!(mode & 0o7777, 0o755, "no setuid, the umask honoured");
        assert!(local_mask() & 0o7000 == 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_tree_goes_through_the_archive_and_back() {
        let dir = std::env::temp_dir().join(format!("kdbg-cp-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let source = dir.join("src");
        std::fs::create_dir_all(source.join("sub")).unwrap();
        std::fs::write(source.join("sub/f"), b"data").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", source.join("abs")).unwrap();
        let mut tar = Vec::new();
        let mut warn = |line: String| panic!("{line}");
        let path = source.as_os_str().as_bytes();
        assert!(archive::pack(Path::new("/"), path, path, &mut tar, &mut warn).unwrap());
        let copy = dir.join("copy");
        let (into, rename) =
            archive::destination(Path::new("/"), copy.as_os_str().as_bytes(), false).unwrap();
        assert_eq!(rename.as_deref(), Some(&b"copy"[..]));
        let unpacked = archive::unpack(
            &mut &tar[..],
            &into,
            rename.as_deref(),
            0o7777,
            b"x",
            &mut warn,
        )
        .unwrap();
        assert!(unpacked);
        assert_eq!(std::fs::read(copy.join("sub/f")).unwrap(), b"data");
        assert_eq!(
            std::fs::read_link(copy.join("abs")).unwrap(),
            Path::new("/etc/passwd")
        );
        // Through a symlink inside a root: never out of it.
        std::fs::create_dir(copy.join("etc")).unwrap();
        let found = archive::resolve_in(&copy, b"/abs", true).unwrap();
        assert_eq!(found.real, copy.join("etc/passwd"));
        // Cut short: the partial file is removed and named.
        let cut = &tar[..tar.len() - 1024 - 600];
        let mut quiet = |_: String| {};
        let stop = archive::unpack(&mut &cut[..], &into, Some(b"cut"), 0o7777, b"x", &mut quiet)
            .unwrap_err();
        assert!(stop.to_string().contains("ended early"), "{stop}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A one-file archive whose entry is named `name`.
    fn archive_of(dir: &Path, name: &[u8]) -> Vec<u8> {
        let file = dir.join("one");
        std::fs::write(&file, b"1").unwrap();
        let mut tar = Vec::new();
        let path = file.as_os_str().as_bytes();
        archive::pack(Path::new("/"), path, path, &mut tar, &mut |l| panic!("{l}")).unwrap();
        // The header's name, and its checksum again.
        tar[..100].fill(0);
        tar[..name.len()].copy_from_slice(name);
        tar[148..156].fill(b' ');
        let sum: u32 = tar[..512].iter().map(|&b| u32::from(b)).sum();
        tar[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        tar
    }

    #[test]
    fn names_that_leave_the_destination_are_refused() {
        let dir = std::env::temp_dir().join(format!("kdbg-cp-refuse-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let into = dir.join("into");
        std::fs::create_dir_all(&into).unwrap();
        let mut quiet = |_: String| {};
        for name in [&b"../evil"[..], b"a/../../evil", b"/etc/evil"] {
            let tar = archive_of(&dir, name);
            let stop = archive::unpack(&mut &tar[..], &into, None, 0o7777, b"here", &mut quiet)
                .unwrap_err();
            assert!(stop.to_string().contains("refused"), "{stop}");
        }
        assert!(!dir.join("evil").exists());
        // Nor through a symlink already there.
        std::os::unix::fs::symlink(&dir, into.join("link")).unwrap();
        let tar = archive_of(&dir, b"link/evil");
        let mut said = Vec::new();
        let mut warn = |line: String| said.push(line);
        let unpacked =
            archive::unpack(&mut &tar[..], &into, None, 0o7777, b"here", &mut warn).unwrap();
        assert!(!unpacked);
        assert!(said[0].contains("here/link/evil: refused"), "{said:?}");
        assert!(!dir.join("evil").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(3 << 20), "3.0 MiB");
    }
}
