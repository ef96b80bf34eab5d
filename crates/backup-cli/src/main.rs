//! `backup`: the command-line front-end. It parses arguments, builds the
//! storage backend, source and target, runs one core operation and renders
//! the result; the work itself lives in the library crates.

// Doc comments of the argument structs are the `--help` text users read,
// where Markdown backticks would show literally.
#![allow(clippy::doc_markdown)]

/// `eprintln!` that never panics: a closed standard error (`2>&1 | head
/// -1`) ends nothing but the message.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod cli;
mod commands;
mod context;
mod errors;
mod progress;

use std::io::Write as _;
use std::process::ExitCode;

use crate::cli::Cli;
use crate::errors::{exit_code, is_broken_pipe, ops_error, report};

/// jemalloc returns freed chunk and pack buffers to the system steadily;
/// glibc's allocator, with one arena per thread, let peak memory creep up
/// with the size of the input.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use backup_ops::exit;

fn main() -> ExitCode {
    quiet_broken_pipe();
    let cli = parse();
    if let Some(code) = commands::wal::fetch_prefetched(&cli.command) {
        return ExitCode::from(code);
    }
    init_logging(&cli.global);
    install_tls_provider();
    let json = cli.global.json;
    let json_log = cli.global.log_format == backup_ops::config::LogFormat::Json;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            note!("error: cannot start the async runtime: {e}");
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
            let hint = ops_error(&e).and_then(backup_ops::Error::hint);
            if json_log {
                // One object a line, like every other log line.
                tracing::error!(
                    exit_code = code,
                    hint = hint.as_deref().unwrap_or(""),
                    "{message}"
                );
            } else {
                note!("error: {message}");
                if let Some(hint) = hint {
                    note!("hint: {hint}");
                }
            }
            ExitCode::from(code)
        }
    }
}

/// A write to a closed pipe that panics somewhere below us (the CLI's
/// own output never does: it reports or ignores the error) ends the
/// process quietly with the status a shell gives a process killed by
/// SIGPIPE, instead of a panic message and exit 101.
fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("Broken pipe") {
            std::process::exit(128 + 13);
        }
        default(info);
    }));
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Its own report of a failed write would go to the same closed
        // standard error, with a panic.
        .log_internal_errors(false);
    let _ = match g.log_format {
        backup_ops::config::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_target(false)
            .try_init(),
        backup_ops::config::LogFormat::Human => builder
            .event_format(backup_ops::log::OneLine {
                ansi: g.color.for_stderr(),
            })
            .try_init(),
    };
}

/// Parses the arguments; clap's own help and errors follow `--color` too.
fn parse() -> Cli {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let color = match color_flag(&args) {
        Some("always") => clap::ColorChoice::Always,
        Some("never") => clap::ColorChoice::Never,
        _ if backup_ops::log::Color::Auto.for_stderr() => clap::ColorChoice::Auto,
        _ => clap::ColorChoice::Never,
    };
    let matches = Cli::command().color(color).get_matches_from(args);
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// The value of `--color` before clap has parsed anything.
fn color_flag(args: &[std::ffi::OsString]) -> Option<&str> {
    let mut it = args.iter().filter_map(|a| a.to_str());
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix("--color=") {
            return Some(v);
        }
        if a == "--color" {
            return it.next();
        }
    }
    None
}
