//! The `callgate` command.

use callgate::cli::fold::{FoldError, FoldOptions, fold};
use callgate::reduce::{DEFAULT_BASE_URL, DEFAULT_MAX_CALLS};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc: the reducer allocates small strings per event, and glibc's allocator cost ~9% of fold time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A gateway from Genesys T-Server events to live GWS Voice API call resources.
#[derive(Parser)]
#[command(name = "callgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fold events (JSON lines) into call resources, or into notifications with --updates.
    Fold {
        /// Public base URL for uri, deviceUri and parentCallUri.
        #[arg(long, default_value = DEFAULT_BASE_URL)]
        base_url: String,
        /// Print every notification (with seq) instead of the final resources.
        #[arg(long)]
        updates: bool,
        /// The most call resources held at once; events that would create more are ignored.
        #[arg(long, default_value_t = DEFAULT_MAX_CALLS * 10)]
        max_calls: usize,
        /// Event files, read in order; none or `-` reads standard input.
        files: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Fold {
            base_url,
            updates,
            max_calls,
            files,
        } => {
            let options = FoldOptions {
                base_url,
                updates,
                inputs: files,
                max_calls,
            };
            let result = fold(
                &options,
                &mut std::io::stdin().lock(),
                &mut std::io::stdout().lock(),
                &mut std::io::stderr().lock(),
            );
            match result {
                Ok(counts) if counts.rejected > 0 => ExitCode::from(1),
                Ok(_) => ExitCode::SUCCESS,
                Err(FoldError::Output(err)) if err.kind() == std::io::ErrorKind::BrokenPipe => {
                    ExitCode::from(2)
                }
                Err(err) => {
                    eprintln!("callgate fold: {err}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
