//! The `herald` command: parses arguments, sets up logging, runs one subcommand
//! and maps its result to an exit code with the whole error chain.

mod cli;
mod client;
mod cmd;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of the system allocator: sled copies a tree node on every
/// write, and glibc's allocator spends a third of a bulk import in its locks
/// (docs/BENCHMARKS.md, Ingest). Built without transparent huge pages
/// (`no_thp`), which would round each thread's first allocations up to 2 MiB of
/// resident memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // The devnet's live view is the output; keep its logs to warnings.
    // Kademlia warns (every 5 minutes, and as the devnet's first node starts)
    // that it cannot look for peers while the node knows none: noise for a
    // node meant to work offline.
    let quiet = matches!(cli.command, cli::Command::Devnet(_));
    init_logging(if quiet {
        "warn,libp2p_kad=error"
    } else {
        "info,libp2p=warn,libp2p_kad=error,sled=warn"
    });
    match cmd::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        // As a command stopped by SIGPIPE: 128 + 13, and nothing printed.
        Err(error) if cmd::Output::reader_gone(&error) => ExitCode::from(141),
        Err(error) => {
            eprintln!("error: {error}");
            // A cause the message above already says (errors that print
            // their source) is not repeated.
            let mut said = error.to_string();
            for cause in error.chain().skip(1) {
                let cause = cause.to_string();
                if !said.contains(&cause) {
                    eprintln!("  caused by: {cause}");
                }
                said = cause;
            }
            ExitCode::FAILURE
        }
    }
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HERALD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours for a terminal only, not for a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
