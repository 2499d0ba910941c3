//! `kubectl-debug`: parses the command line, sets up logging, and runs the verb
//! ([`kdbg_plugin::run`]).

use std::process::ExitCode;

use clap::Parser;
use kdbg_plugin::cli::Cli;

fn main() -> ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == kdbg_plugin::cleanup::WATCHDOG)
    {
        return kdbg_plugin::cleanup::watchdog();
    }
    let cli = match Cli::try_parse_from(kdbg_plugin::cli::verb_first(std::env::args_os().collect()))
    {
        Ok(cli) => cli,
        // Help and version go to stdout and succeed; usage errors are our errors: exit 1.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(1);
        }
    };
    kdbg_plugin::init_logging(cli.common.verbosity);
    kdbg_plugin::run(cli)
}
