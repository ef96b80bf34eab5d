//! `backup`: the command-line front-end. It parses arguments, builds the
//! storage backend, source and target, runs one core operation and renders
//! the result; the work itself lives in the library crates.

// Doc comments of the argument structs are the `--help` text users read,
// where Markdown backticks would show literally.
#![allow(clippy::doc_markdown)]

mod cli;
mod commands;
mod context;
mod errors;
mod progress;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;
use crate::errors::{exit_code, is_broken_pipe, ops_error, report};

/// jemalloc returns freed chunk and pack buffers to the system steadily;
/// glibc's allocator, with one arena per thread, let peak memory creep up
/// with the size of the input.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use backup_ops::exit;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(code) = commands::wal::fetch_prefetched(&cli.command) {
        return ExitCode::from(code);
    }
    init_logging(&cli.global);
    install_tls_provider();
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
            let message = report(&e);
            if json {
                let msg = serde_json::json!({"error": message, "exit_code": code});
                let _ = writeln!(std::io::stdout(), "{msg}");
            }
            eprintln!("error: {message}");
            if let Some(hint) = ops_error(&e).and_then(backup_ops::Error::hint) {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(code)
        }
    }
}

/// The one TLS crypto provider of the process (rustls with *ring*), chosen
/// here, in the binary, for every library that makes TLS connections.
fn install_tls_provider() {
    // Fails only when a provider is installed already, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
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
