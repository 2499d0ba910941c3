//! `kubectl-debug-agent --config FILE` (or `--config-yaml TEXT`): the node agent.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use kdbg_agent::auth::Authenticator;
use kdbg_agent::config::{AuthMode, Config, LogConfig, LogFormat};
use tracing::{error, info};

/// mimalloc gives freed memory back to the system within moments: with glibc's allocator the
/// agent kept about 75 MiB after a flood of 20,000 connections was over (its per-thread arenas
/// keep what they had; that was when every connection got hyper's buffers at once).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long running sessions get to end and clean up after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Connections the kernel queues for the agent to accept (capped by `net.core.somaxconn`).
/// With tokio's default of 128, a burst of connection attempts (a flood, or many clients at
/// once) overflowed the queue and the kernel dropped SYNs, each costing its client a second's
/// retransmit, a legitimate session's too; as many as `limits.maxConnections` by default.
const LISTEN_BACKLOG: u32 = 4096;

/// The kubectl-debug node agent: creates debug containers that join a pod's container and
/// relays their terminals to `kubectl-debug`.
#[derive(Parser)]
#[command(version)]
#[group(id = "configuration", required = true, multiple = false)]
struct Args {
    /// The YAML configuration file (see docs/agent.md).
    #[arg(long, value_name = "FILE", group = "configuration")]
    config: Option<PathBuf>,
    /// The configuration itself, as YAML (or JSON) text: for a pod with no ConfigMap (an
    /// on-demand agent's).
    #[arg(long, value_name = "YAML", group = "configuration")]
    config_yaml: Option<String>,
    /// Writes `kdbg-init` into DIR and exits: what a pod copy's init container runs
    /// (`kubectl-debug POD --fork`), so that the copy's target container can hold still with
    /// a static binary of ours whatever its image holds (distroless, scratch).
    #[arg(long, value_name = "DIR", group = "configuration")]
    install_init: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(dir) = &args.install_init {
        return match kdbg_agent::init::install(dir) {
            Ok(path) => {
                println!("{}", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("kubectl-debug-agent: {}", kdbg_agent::chain(&e));
                ExitCode::from(1)
            }
        };
    }
    // A bad configuration stops the agent before anything starts.
    let loaded = match (&args.config, &args.config_yaml) {
        (Some(path), _) => Config::load(path),
        (None, Some(text)) => Config::load_inline(text),
        (None, None) => {
            unreachable!("clap requires one of --config, --config-yaml and --install-init")
        }
    };
    let config = match loaded {
        Ok(config) => config,
        Err(e) => {
            eprintln!("kubectl-debug-agent: {}", kdbg_agent::chain(&e));
            return ExitCode::from(64);
        }
    };
    init_logging(&config.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{}", kdbg_agent::chain(e.as_ref()));
            ExitCode::from(1)
        }
    }
}

/// Logs to stderr as `log` says: text (colour only on a terminal: a DaemonSet's log is a
/// file) or JSON lines; `RUST_LOG`, when set, overrides the level.
fn init_logging(log: &LogConfig) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log.format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

/// The CA client certificates must chain to: `auth.clientCAFile`, else the cluster's own
/// client CA when the agent may read it; none without Kubernetes authentication.
async fn client_ca(
    config: &Config,
    auth: Option<&kdbg_agent::auth::Authenticator>,
) -> kdbg_agent::tls::ClientCa {
    use kdbg_agent::tls::ClientCa;
    let Some(auth) = auth.filter(|_| config.auth.mode == AuthMode::Kubernetes) else {
        return ClientCa::None;
    };
    if !config.auth.client_ca_file.trim().is_empty() {
        return ClientCa::File(config.auth.client_ca_file.trim().into());
    }
    match auth.cluster_client_ca().await {
        Ok(pem) => {
            info!(
                "client certificates accepted: signed by the cluster's client CA (kube-system/{})",
                kdbg_agent::auth::CLUSTER_CLIENT_CA.0
            );
            ClientCa::Pem {
                pem,
                source: format!(
                    "ConfigMap kube-system/{} ({})",
                    kdbg_agent::auth::CLUSTER_CLIENT_CA.0,
                    kdbg_agent::auth::CLUSTER_CLIENT_CA.1
                ),
            }
        }
        Err(why) => {
            info!(%why, "client certificates not accepted, bearer tokens only (set auth.clientCAFile to accept them)");
            ClientCa::None
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let runtime = kdbg_agent::connect_runtime(&config.runtime)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "{}; is the runtime running, and is its socket mounted into the agent (runtime.endpoint)?",
                kdbg_agent::chain(&e)
            )
        })?;
    let listener =
        listen(config.listen).with_context(|| format!("listening on {}", config.listen))?;
    // The address bound, which tells the port when the config asked for any (`:0`).
    let bound = listener.local_addr().unwrap_or(config.listen);
    let mut settings = kdbg_agent::Settings::from_config(&config);
    fit_file_limit(&mut settings.limits);
    settings.auth = match config.auth.mode {
        AuthMode::Kubernetes => Some(Authenticator::connect(&config.auth).await?),
        AuthMode::Token => {
            let sha256 = config.auth.token_digest().context("auth.tokenSha256")?;
            Some(Authenticator::token(sha256, config.auth.user.trim()))
        }
        AuthMode::None => None,
    }
    .map(std::sync::Arc::new);
    if let Some(tls) = &config.tls {
        let client_ca = client_ca(&config, settings.auth.as_deref()).await;
        let tls = kdbg_agent::tls::Tls::load(tls, client_ca)?;
        settings.tls = Some(std::sync::Arc::new(tls));
    }
    let (agent, serving) = kdbg_agent::spawn(runtime, settings, listener)?;
    let exit_when_idle = config.lifecycle.exit_when_idle;
    info!(listen = %bound, tls = config.tls.is_some(), auth = ?config.auth.mode, runtime = ?config.runtime.kind, endpoint = ?config.runtime.endpoint, %exit_when_idle, "agent ready");
    tokio::select! {
        () = shutdown_signal() => info!("shutting down: telling sessions, removing their containers"),
        () = agent.idle_for(exit_when_idle.0) => info!(
            "no session and no connection for {exit_when_idle} (lifecycle.exitWhenIdle): shutting down, removing unretained debug containers"
        ),
    }
    agent.stop(SHUTDOWN_GRACE).await;
    let _ = serving.await;
    Ok(())
}

/// Files the agent keeps for itself beyond its connections: the runtime's sockets, the
/// sessions' streams and recordings.
const RESERVED_FILES: u64 = 256;

/// Raises the agent's file limit to its hard limit (a node's default soft limit, often 1,024,
/// would let a few held sockets lock every client out), and keeps the connections that wait
/// to authenticate below what it allows: unless `limits.maxUnauthenticated` is set, three
/// quarters of what the files leave after [`RESERVED_FILES`], when that is less than three
/// quarters of `limits.maxConnections`.
fn fit_file_limit(limits: &mut kdbg_agent::config::Limits) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut files = getrlimit(Resource::Nofile);
    if files.current != files.maximum {
        files.current = files.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, files) {
            tracing::warn!(error = %e, "could not raise the file limit to its hard limit");
        }
    }
    let Some(soft) = getrlimit(Resource::Nofile).current else {
        return;
    };
    let room = usize::try_from(soft.saturating_sub(RESERVED_FILES)).unwrap_or(usize::MAX);
    if limits.max_unauthenticated == 0 {
        limits.max_unauthenticated = (limits.max_connections.min(room) / 4 * 3).max(1);
    }
    if limits.max_connections > room {
        tracing::warn!(
            files = soft,
            max_connections = limits.max_connections,
            "limits.maxConnections is more than the file limit leaves room for; raise the agent's file limit (ulimit -n) or lower limits.maxConnections"
        );
    }
    info!(
        files = soft,
        max_connections = limits.max_connections,
        max_unauthenticated = limits.max_unauthenticated,
        "connection limits"
    );
}

/// Resolves on SIGTERM or SIGINT.
/// A listener on `address` with room for [`LISTEN_BACKLOG`] connections not yet accepted.
fn listen(address: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
