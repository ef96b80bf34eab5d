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
    #[arg(
        long,
        short = 'c',
        env = "BACKUP_CONFIG",
        value_name = "FILE",
        required_unless_present_any = ["completions", "man"]
    )]
    config: Option<PathBuf>,
    /// Check the configuration, then exit: the file, its secrets (and
    /// the certificate files of daemon.tls), and
    /// that every repository opens with its password (exit 2 for a
    /// problem of the file, 1 for a repository that is missing or refuses
    /// the password; a repository not reachable now is only a warning,
    /// since the daemon retries). Fast enough for ExecStartPre.
    #[arg(long)]
    check_config: bool,
    /// With --check-config: also what `backup health` checks but backup
    /// ages: every repository accepts writes and every job's source
    /// answers; any failure exits 1.
    #[arg(long, requires = "check_config")]
    deep: bool,
    /// Log format, overriding daemon.log_format: human or json.
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Colour in log lines: auto (only on a terminal, never with NO_COLOR
    /// set or TERM=dumb), always or never.
    #[arg(long, value_name = "WHEN", default_value = "auto")]
    color: backup_ops::log::Color,
    /// Print the completion script for SHELL (bash, zsh, fish, elvish or
    /// powershell) on standard output, then exit.
    #[arg(long, value_name = "SHELL", conflicts_with = "man")]
    completions: Option<clap_complete::Shell>,
    /// Write the man page backupd.8 into DIR (created when missing), then
    /// exit.
    #[arg(long, value_name = "DIR")]
    man: Option<PathBuf>,
}

/// `--completions` and `--man`: what packages install, from the definition
/// clap parses. `None` when neither was asked for.
fn generate(args: &Args) -> Option<ExitCode> {
    use clap::CommandFactory as _;
    if let Some(shell) = args.completions {
        let mut command = Args::command();
        clap_complete::generate(
            shell,
            &mut command,
            "backupd",
            &mut std::io::stdout().lock(),
        );
        return Some(ExitCode::SUCCESS);
    }
    let dir = args.man.as_deref()?;
    let written = std::fs::create_dir_all(dir).and_then(|()| {
        clap_mangen::Man::new(Args::command())
            .section("8")
            .generate_to(dir)
    });
    Some(match written {
        Ok(path) => {
            eprintln!("wrote {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "error: cannot write the man page into {}: {e}",
                dir.display()
            );
            ExitCode::from(1)
        }
    })
}

/// jemalloc, built to purge freed pages from a background thread a second
/// after they are freed (`.cargo/config.toml`), so that an idle daemon
/// gives back what loading its history took.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(code) = generate(&args) {
        return code;
    }
    let Some(config_path) = args.config.as_deref() else {
        eprintln!("error: --config FILE is required");
        return ExitCode::from(2);
    };
    let config = match Config::load(config_path) {
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
    let daemon = match backup_daemon::scheduler::Daemon::new(config, config_path) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
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
    if args.check_config {
        return runtime.block_on(check_config(&daemon, &args));
    }
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

/// `--check-config [--deep]`: the file and its secrets, then the
/// repositories (and with `--deep` the sources).
async fn check_config(daemon: &backup_daemon::scheduler::Daemon, args: &Args) -> ExitCode {
    use backup_ops::health::{startup, Depth};
    use backup_ops::report::count;
    let c = daemon.config();
    // Present: main returned before the daemon existed otherwise.
    let path = args.config.clone().unwrap_or_default();
    let file = path.display();
    let problems = c.check_secrets();
    if !problems.is_empty() {
        for p in problems {
            eprintln!("error: {file}: {p}");
        }
        return ExitCode::from(2);
    }
    if let Some(tls) = &c.daemon.tls {
        if let Err(e) = backup_daemon::tls::server_config(tls) {
            eprintln!("error: {file}: daemon.tls: {e:#}");
            return ExitCode::from(2);
        }
    }
    let depth = if args.deep { Depth::Deep } else { Depth::Open };
    let checks = match startup(&c, depth).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {file}: {}", backup_core::error::report(&e));
            return ExitCode::from(2);
        }
    };
    let mut failed = 0;
    for s in &checks {
        let what = format!("{} {}", s.check.kind.name(), s.check.name);
        if s.check.ok {
            println!("ok    {what}: {}", s.check.message);
        } else if s.transient && depth == Depth::Open {
            eprintln!(
                "warning: {what}: {} (not reachable now; the daemon retries)",
                s.check.message
            );
        } else {
            failed += 1;
            eprintln!("error: {what}: {}", s.check.message);
        }
    }
    if failed > 0 {
        eprintln!(
            "error: {file}: {} failed{}",
            count(failed, "check", "checks"),
            if args.deep {
                ""
            } else {
                " (the file itself is valid)"
            }
        );
        return ExitCode::from(1);
    }
    println!(
        "configuration {file} is valid: {}, {}, {}{}",
        count(c.repositories.len(), "repository", "repositories"),
        count(c.jobs.len(), "job", "jobs"),
        count(
            c.notifications.len(),
            "notification channel",
            "notification channels"
        ),
        if args.deep {
            "; repositories accept writes and sources answer"
        } else {
            "; repositories open with their passwords (--deep also checks writes and sources)"
        }
    );
    ExitCode::SUCCESS
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
