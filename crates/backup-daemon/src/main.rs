//! `backupd`: runs the jobs of a configuration file on their schedules.

// Doc comments of the argument struct are the `--help` text users read,
// where Markdown backticks would show literally.
#![allow(clippy::doc_markdown)]

use std::path::PathBuf;
use std::process::ExitCode;

use backup_ops::config::{Config, LogFormat};
use clap::Parser;

/// Runs backup jobs on schedule, with retention, verification, alerts,
/// metrics and an HTTP status API.
#[derive(Debug, Parser)]
#[command(name = "backupd", version, about)]
struct Args {
    /// The configuration file.
    #[arg(long, short = 'c', env = "BACKUP_CONFIG", value_name = "FILE")]
    config: PathBuf,
    /// Validate the configuration (and read its secrets), then exit.
    #[arg(long)]
    check_config: bool,
    /// Log format, overriding daemon.log_format: human or json.
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Colour in log lines: auto (only on a terminal, never with NO_COLOR
    /// set or TERM=dumb), always or never.
    #[arg(long, value_name = "WHEN", default_value = "auto")]
    color: backup_ops::log::Color,
}

/// jemalloc, built to purge freed pages from a background thread a second
/// after they are freed (`.cargo/config.toml`), so that an idle daemon
/// gives back what loading its history took.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let format = match args.log_format.as_deref() {
        None => config.daemon.log_format,
        Some("json") => LogFormat::Json,
        Some("human") => LogFormat::Human,
        Some(other) => {
            eprintln!("error: unknown log format `{other}`: use human or json");
            return ExitCode::from(2);
        }
    };
    init_logging(format, args.color);
    install_tls_provider();
    let daemon = match backup_daemon::scheduler::Daemon::new(config, &args.config) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        let c = daemon.config();
        let problems = c.check_secrets();
        if !problems.is_empty() {
            for p in problems {
                eprintln!("error: {}: {p}", args.config.display());
            }
            return ExitCode::from(2);
        }
        println!(
            "configuration {} is valid: {} repositories, {} jobs, {} notification channels",
            args.config.display(),
            c.repositories.len(),
            c.jobs.len(),
            c.notifications.len()
        );
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(backup_daemon::scheduler::run(daemon));
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "backupd failed.");
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(format: LogFormat, color: backup_ops::log::Color) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BACKUPD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Its own report of a failed write would go to the same closed
        // standard error, with a panic.
        .log_internal_errors(false)
        .with_ansi(color.for_stderr())
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

/// The one TLS crypto provider of the process (rustls with *ring*), chosen
/// here, in the binary, for every library that makes TLS connections.
fn install_tls_provider() {
    // Fails only when a provider is installed already, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
