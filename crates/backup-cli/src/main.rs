//! `backup`: the command-line front-end. It parses arguments, builds the
//! storage backend, source and target, runs one core operation and renders
//! the result; the work itself lives in the library crates.

// Doc comments of the argument structs are the `--help` text users read,
// where Markdown backticks would show literally.
#![allow(clippy::doc_markdown)]

mod cli;
mod commands;
mod context;
mod progress;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;

/// jemalloc returns freed chunk and pack buffers to the system steadily;
/// glibc's allocator, with one arena per thread, let peak memory creep up
/// with the size of the input.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Exit codes (DESIGN.md section 5).
pub(crate) mod exit {
    /// The operation failed.
    pub(crate) const FAILED: u8 = 1;
    /// Usage or configuration error.
    pub(crate) const USAGE: u8 = 2;
    /// Repository damage found.
    pub(crate) const DAMAGE: u8 = 3;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.global);
    let json = cli.global.json;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let result = runtime.block_on(commands::run(cli));
    // Background tasks (lock renewal, uploads) end with the runtime.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            let code = exit_code(&e);
            if json {
                let msg = serde_json::json!({"error": format!("{e:#}"), "exit_code": code});
                let _ = writeln!(std::io::stdout(), "{msg}");
            }
            eprintln!("error: {e:#}");
            if let Some(hint) = hint(&e) {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(code)
        }
    }
}

fn init_logging(g: &cli::GlobalArgs) {
    let default = match (g.quiet, g.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("BACKUP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
}

fn core_error(e: &anyhow::Error) -> Option<&backup_core::Error> {
    e.chain()
        .find_map(|c| c.downcast_ref::<backup_core::Error>())
}

/// Maps an error to the exit code of DESIGN.md.
pub(crate) fn exit_code(e: &anyhow::Error) -> u8 {
    if e.chain()
        .any(|c| c.downcast_ref::<context::UsageError>().is_some())
    {
        return exit::USAGE;
    }
    match core_error(e) {
        Some(backup_core::Error::Config(_) | backup_core::Error::UnsupportedVersion { .. }) => {
            exit::USAGE
        }
        Some(backup_core::Error::Corrupt { .. }) => exit::DAMAGE,
        _ => exit::FAILED,
    }
}

fn hint(e: &anyhow::Error) -> Option<&'static str> {
    match core_error(e)? {
        backup_core::Error::WrongPassword => Some("check BACKUP_PASSWORD / --password-file; `backup key list` shows the keys once you are in"),
        backup_core::Error::Corrupt { .. } => Some("run `backup verify --read-data` to find every damaged snapshot"),
        backup_core::Error::Locked(_) => Some("wait for the other operation to finish; if its process is gone, `backup unlock` removes expired locks"),
        _ => None,
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
