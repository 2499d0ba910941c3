//! `kubectl-debug`: a shell in a debug container that shares a pod's (or a local container's)
//! namespaces. The remote command's exit code is ours; our own errors exit 1.

mod attach;
mod cli;
mod local;
mod output;
mod pod;
mod pull;
mod terminal;

use std::io::ErrorKind;
use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Verb};
use kdbg_relay::ExitStatus;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version go to stdout and succeed; usage errors are our errors: exit 1.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(1);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KUBECTL_DEBUG_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async move {
        match cli.verb {
            Some(Verb::Local(local)) => local.run().await,
            None => {
                let pod = cli.pod.expect("clap requires POD without a verb");
                pod::run(&cli.global, &pod, cli.container.as_deref(), cli.debug).await
            }
        }
    });
    // A blocked read of stdin must not keep the process alive after the session.
    runtime.shutdown_background();
    match result {
        Ok(ExitStatus::Code(code)) => ExitCode::from(code),
        Ok(ExitStatus::Failure { reason, message }) => {
            eprintln!("error: {message} ({reason})");
            ExitCode::from(1)
        }
        Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
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
