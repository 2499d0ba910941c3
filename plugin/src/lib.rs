//! `kubectl-debug`: a shell in a debug container that shares a pod's (or a local container's)
//! namespaces. The remote command's exit code is ours; our own errors exit 1.
//!
//! - [`cli`]: the command line;
//! - [`client`]: the one client of an agent, over one connect strategy;
//! - [`pod`]: `kubectl-debug POD` and `attach`, through the Kubernetes API;
//! - [`node`]: `kubectl-debug node/NAME`, a debug container in the node's own namespaces;
//! - [`list`] and [`rm`]: the debug containers, listed and removed;
//! - [`cp`]: files and directories copied between a pod's container and here;
//! - [`recordings`], [`replay`] and [`watch`]: recorded sessions, listed, fetched and played,
//!   and running ones watched;
//! - [`local`]: `kubectl-debug local` and its verbs, with no cluster;
//! - [`attach`]: a session's terminal, shared by every verb that opens one;
//! - [`pull`], [`output`], [`terminal`]: pull progress, the user's stdout and stderr, and the
//!   user's terminal.

pub mod attach;
pub mod cleanup;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod cp;
pub mod credentials;
pub mod fork;
pub mod list;
pub mod local;
pub mod localio;
pub mod node;
pub mod ondemand;
pub mod output;
pub mod pod;
pub mod portforward;
pub mod pull;
pub mod pullsecrets;
pub mod recordings;
pub mod replay;
pub mod rm;
pub mod shell;
pub mod terminal;
pub mod version;
pub mod watch;

use std::io::ErrorKind;
use std::process::ExitCode;

use cli::{Cli, Verb};
use kdbg_relay::ExitStatus;
use tokio::signal::unix::{SignalKind, signal};

/// Sends logs to stderr: none but our own messages unless `-v`/`--v=N` asks (like kubectl's
/// `-v`) or `KUBECTL_DEBUG_LOG` names a filter; colour only on a terminal.
pub fn init_logging(verbosity: u8) {
    use std::io::IsTerminal;
    let level = match verbosity {
        0 => "off",
        1..=3 => "info",
        4..=5 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("KUBECTL_DEBUG_LOG")
        .unwrap_or_else(|_| level.into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// Runs the verb `cli` names and maps the outcome to the process's exit code.
pub fn run(cli: Cli) -> ExitCode {
    // One thread: a session is one task, and waking a second worker for each frame that
    // arrives cost the plugin as much CPU again as the session itself (docs/performance.md).
    // Blocking work (archives, a cp's local end) goes to the blocking pool.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async move {
        let verb = verb(cli);
        // SIGINT and SIGTERM end the command, but not before the pods it started (on-demand
        // agents, copies) are deleted; after a SIGKILL, its watchdog deletes them.
        let (mut interrupt, mut terminate) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        );
        let signalled = async {
            match (&mut interrupt, &mut terminate) {
                (Ok(i), Ok(t)) => tokio::select! {
                    _ = i.recv() => 130,
                    _ = t.recv() => 143,
                },
                _ => std::future::pending().await,
            }
        };
        let result = tokio::select! {
            result = verb => result,
            code = signalled => {
                cleanup::clean_up(false).await;
                return Ok(ExitStatus::Code(code));
            }
        };
        let failed = !matches!(result, Ok(ExitStatus::Code(0)));
        if let Some(note) = cleanup::clean_up(failed).await {
            eprintln!("kubectl-debug: {note}");
        }
        result
    });
    // A blocked read of stdin must not keep the process alive after the session.
    runtime.shutdown_background();
    match result {
        Ok(ExitStatus::Code(code)) => ExitCode::from(code),
        Ok(ExitStatus::Ended { code, message, .. }) => {
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
        Ok(ExitStatus::Failure { reason, message }) => {
            eprintln!("error: {message} ({reason})");
            ExitCode::from(1)
        }
        Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) if refused_by_the_api_server(&e) => {
            // What was being done, then the cause as kubectl says it (in place of the
            // client library's chain: "ServiceError: client error (Connect): ...").
            let server = cluster::SERVER.get().map_or("", String::as_str);
            eprintln!(
                "error: {e}: The connection to the server {server} was refused - did you specify the right host or port? (check the kubeconfig's server, --kubeconfig and --context)"
            );
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {}", kdbg_api::error_chain(e.as_ref()));
            ExitCode::from(1)
        }
    }
}

/// Runs the verb `cli` names.
async fn verb(mut cli: Cli) -> anyhow::Result<ExitStatus> {
    let done = |()| ExitStatus::Code(0);
    config::PluginConfig::load(cli.common.plugin_config.as_deref())?.apply(&mut cli);
    match cli.verb {
        Some(Verb::Local(local)) => local.run().await,
        Some(Verb::List(args)) => list::run(&args.global.clone(), args).await.map(done),
        Some(Verb::Attach(args)) => pod::attach(&args.global.clone(), args).await,
        Some(Verb::Rm(args)) => rm::run(&args.global.clone(), args).await.map(done),
        Some(Verb::Cp(args)) => cp::run(&args.global.clone(), args).await,
        Some(Verb::Recordings(args)) => match args.verb {
            cli::RecordingsVerb::List(args) => recordings::list(&args.global.clone(), args).await,
            cli::RecordingsVerb::Get(args) => recordings::get(&args.global.clone(), args).await,
        }
        .map(done),
        Some(Verb::Replay(args)) => replay::run(&args.global.clone(), args).await.map(done),
        Some(Verb::Watch(args)) => watch::run(&args.global.clone(), args).await.map(done),
        Some(Verb::Version(args)) => version::run(args).await.map(done),
        Some(Verb::Completion(args)) => {
            print!("{}", shell::completion(args.shell));
            Ok(ExitStatus::Code(0))
        }
        Some(Verb::ShellInit(args)) => {
            print!("{}", shell::init(args.shell));
            Ok(ExitStatus::Code(0))
        }
        None => {
            let pod = cli.pod.expect("clap requires POD without a verb");
            pod::run(&cli.global, &pod, cli.container.as_deref(), cli.debug).await
        }
    }
}

/// Whether the error is the Kubernetes API server refusing the connection: a client error
/// of kube's whose cause is a refused TCP connection.
fn refused_by_the_api_server(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|cause| cause.downcast_ref::<kube::Error>().is_some())
        && e.chain().any(|cause| {
            cause
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == ErrorKind::ConnectionRefused)
        })
}

/// Whether the error is our stdout having gone away (`kubectl-debug ... | head`): not an error.
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<kdbg_relay::Error>()
            .and_then(kdbg_relay::Error::local_io)
            .is_some_and(|io| io.kind() == ErrorKind::BrokenPipe)
    })
}
