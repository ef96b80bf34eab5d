//! The lifecycle of a PostgreSQL server started on a restored data
//! directory: [`RunningServer`] and its start (as the directory's owner,
//! on 127.0.0.1 and a private socket directory, archiving off, with more
//! shared buffers for replay when the host has them), the move of a time
//! target PostgreSQL refused to the last record it replayed (retarget),
//! the stop and what the server's log says about recovery
//! ([`StartReport`]), and the stop of a server a killed drill left
//! running.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use backup_core::{Error, Result};
use serde::Serialize;

/// What a temporary server started on the restored directory did.
#[derive(Debug, Clone, Serialize)]
pub struct StartReport {
    /// The port it listened on (127.0.0.1).
    pub port: u16,
    /// Seconds from start until it accepted connections (recovery
    /// included).
    pub seconds_to_ready: f64,
    /// Where recovery reached a consistent state, from the server's log.
    pub consistent_at: Option<String>,
    /// Where replay ended, from the server's log.
    pub redo_done_at: Option<String>,
    /// The time of the last transaction replayed, from the server's log.
    pub last_transaction: Option<String>,
    /// Where a point-in-time recovery stopped, from the server's log.
    pub reached: Option<String>,
    /// The `shared_buffers` (bytes) it replayed with, when this program
    /// gave it more than its configuration says (sized to hold the
    /// cluster within a quarter of the available memory; the configuration
    /// is unchanged).
    pub replay_shared_buffers: Option<u64>,
    /// Set when no transaction committed between a time target and the
    /// end of the available WAL (PostgreSQL then refuses to end recovery):
    /// the position of the last record replayed, which the recovery was
    /// moved to (`recovery_target_lsn`), the state at the target time.
    pub retargeted_to: Option<String>,
}

/// Starts `postgres` on a restored data directory (as its owner), waits
/// until it accepts connections (recovery done), reads what its log says
/// about recovery, and stops it (fast shutdown).
///
/// It listens on 127.0.0.1:`port` and a private socket directory, with
/// archiving off, so that it cannot reach what the original server
/// reaches (its WAL archive).
pub(crate) async fn start_and_stop(
    postgres: &Path,
    data_dir: &Path,
    port: u16,
    exits_at_target: bool,
) -> Result<StartReport> {
    Ok(
        start_server(postgres, data_dir, port, None, exits_at_target)
            .await?
            .stop()
            .await,
    )
}

/// A PostgreSQL server started on a restored data directory, running
/// until [`RunningServer::stop`] (or, should the handle be dropped, killed).
#[derive(Debug)]
pub struct RunningServer {
    child: tokio::process::Child,
    work: tempfile::TempDir,
    log_path: PathBuf,
    port: u16,
    ready: Duration,
    shared_buffers: Option<u64>,
    retargeted_to: Option<String>,
}

impl RunningServer {
    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The private directory of its socket, configuration and log.
    pub fn work_dir(&self) -> &Path {
        self.work.path()
    }

    /// Seconds from the start until it accepted connections (recovery
    /// included).
    pub fn seconds_to_ready(&self) -> f64 {
        self.ready.as_secs_f64()
    }

    /// Stops the server (fast shutdown, then a kill after 5 minutes) and
    /// reads what its log says about recovery.
    pub async fn stop(mut self) -> StartReport {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGINT,
            );
        }
        let stopped = tokio::time::timeout(Duration::from_secs(300), self.child.wait()).await;
        if stopped.is_err() {
            let _ = self.child.kill().await;
        }
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let after = |marker: &str| -> Option<String> {
            log.lines().find_map(|l| {
                l.find(marker)
                    .map(|i| l[i + marker.len()..].trim().to_owned())
            })
        };
        StartReport {
            port: self.port,
            seconds_to_ready: self.ready.as_secs_f64(),
            consistent_at: after("consistent recovery state reached at "),
            redo_done_at: after("redo done at ")
                .map(|s| s.split_whitespace().next().unwrap_or_default().to_owned()),
            last_transaction: after("last completed transaction was at log time "),
            reached: log.lines().find_map(|l| {
                l.find("recovery stopping ")
                    .map(|i| l[i..].trim().to_owned())
            }),
            replay_shared_buffers: self.shared_buffers,
            retargeted_to: self.retargeted_to,
        }
    }
}

/// Starts `postgres` on a restored data directory (as its owner) and
/// waits until it accepts connections, or, when `exits_at_target`, until
/// it shuts down after reaching its recovery target. Its socket, log and (for a data
/// directory without one) configuration go into a new directory under
/// `work_parent` (the system's temporary directory when `None`).
pub(crate) async fn start_server(
    postgres: &Path,
    data_dir: &Path,
    port: u16,
    work_parent: Option<&Path>,
    exits_at_target: bool,
) -> Result<RunningServer> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(data_dir)
        .map_err(|e| Error::io(format!("reading {}", data_dir.display()), e))?;
    let (uid, gid) = (meta.uid(), meta.gid());
    let running_as_root = nix::unistd::Uid::effective().is_root();
    if running_as_root && uid == 0 {
        return Err(Error::target_failed(format!(
            "{} belongs to root and PostgreSQL does not run as root: restore into a directory owned by the server's user (for example `install -d -o postgres -m 700 DIR`)",
            data_dir.display()
        )));
    }
    let mut builder = tempfile::Builder::new();
    builder.prefix("backup-start-");
    let work = match work_parent {
        Some(dir) => builder.tempdir_in(dir),
        None => builder.tempdir(),
    }
    .map_err(|e| Error::io("creating a temporary directory", e))?;
    if running_as_root {
        std::os::unix::fs::chown(work.path(), Some(uid), Some(gid))
            .map_err(|e| Error::io("preparing a temporary directory", e))?;
    }
    let log_path = work.path().join("server.log");
    // A cluster whose configuration lives elsewhere (Debian keeps it in
    // /etc/postgresql) starts with an empty one.
    let mut config_args: Vec<std::ffi::OsString> = Vec::new();
    if !data_dir.join("postgresql.conf").exists() {
        for (name, setting, text) in [
            ("postgresql.conf", "config_file", ""),
            ("pg_hba.conf", "hba_file", "local all all trust\n"),
            ("pg_ident.conf", "ident_file", ""),
        ] {
            let p = work.path().join(name);
            std::fs::write(&p, text)
                .map_err(|e| Error::io(format!("writing {}", p.display()), e))?;
            if running_as_root {
                std::os::unix::fs::chown(&p, Some(uid), Some(gid))
                    .map_err(|e| Error::io("preparing a configuration file", e))?;
            }
            config_args.push("-c".into());
            config_args.push(format!("{setting}_file={}", p.display()).into());
        }
    }
    let owner = running_as_root.then_some((uid, gid));
    let mut pool =
        super::replay::shared_buffers_for_replay(postgres, data_dir, &config_args, owner).await;
    let mut retargeted_to = None;
    loop {
        let spawned = spawn_server(
            postgres,
            data_dir,
            port,
            &work,
            &log_path,
            &config_args,
            owner,
            pool,
            exits_at_target,
        )
        .await;
        match spawned {
            Err(e) if pool.is_some() && e.to_string().contains("shared memory") => {
                tracing::warn!(
                    "The server could not get {} MiB of shared buffers for replay; starting it with its own setting.",
                    pool.unwrap_or_default() >> 20
                );
                pool = None;
            }
            Err(e) => match retarget_past_last_commit(data_dir, &log_path) {
                Ok(Some(lsn)) if retargeted_to.is_none() => {
                    tracing::info!(
                        lsn = %lsn,
                        "No transaction committed between the target time and the end of the WAL: recovering to the last record instead."
                    );
                    retargeted_to = Some(lsn);
                }
                Ok(_) => return Err(e),
                Err(re) => {
                    tracing::warn!(error = %re, "Could not move the recovery target.");
                    return Err(e);
                }
            },
            Ok((child, ready)) => {
                return Ok(RunningServer {
                    child,
                    work,
                    log_path,
                    port,
                    ready,
                    shared_buffers: pool,
                    retargeted_to,
                })
            }
        }
    }
}

/// After a recovery to a time that PostgreSQL refused to end ("recovery
/// ended before configured recovery target was reached": no transaction
/// committed or aborted between the target and the end of the WAL it
/// could fetch), moves the target in `postgresql.auto.conf` from
/// `recovery_target_time` to `recovery_target_lsn` at the last record it
/// replayed (its log's "redo done at"). Every commit in that WAL is before
/// the target time, so the state there is the state at the target; an
/// LSN rather than no target at all, so that WAL captured since is not
/// replayed too. Returns that position; `None` when the log or the
/// configuration is not of that case.
fn retarget_past_last_commit(data_dir: &Path, log_path: &Path) -> Result<Option<String>> {
    use std::fmt::Write as _;
    let log = std::fs::read_to_string(log_path).unwrap_or_default();
    if !log.contains("recovery ended before configured recovery target was reached") {
        return Ok(None);
    }
    // Only when every fetch found what it asked for or nothing at all: a
    // fetch that failed (a wrong key, damaged data, a hole) ended the WAL
    // early, and that recovery is short, not past the last commit.
    if let Some(failed) = super::wal::fetch_failed(data_dir) {
        tracing::warn!(failed = %failed.trim(), "Fetching WAL failed during recovery.");
        return Ok(None);
    }
    let Some(lsn) = log.lines().find_map(|l| {
        l.split_once("redo done at ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .map(str::to_owned)
    }) else {
        return Ok(None);
    };
    let auto = data_dir.join("postgresql.auto.conf");
    let text = std::fs::read_to_string(&auto)
        .map_err(|e| Error::io(format!("reading {}", auto.display()), e))?;
    let is_time_target = |l: &str| {
        l.trim_start()
            .strip_prefix("recovery_target_time")
            .is_some_and(|r| r.trim_start().starts_with('='))
    };
    let promotes = !text.lines().any(|l| {
        let l = l.trim_start();
        l.starts_with("recovery_target_action") && !l.contains("promote")
    });
    if !promotes || !text.lines().any(is_time_target) {
        return Ok(None);
    }
    let mut out = String::with_capacity(text.len() + 200);
    for l in text.lines() {
        if is_time_target(l) {
            let _ = write!(
                out,
                "# {l}\n# No transaction committed between that time and the end of the WAL:\n# the state then is the state after the last record (`backup restore --start`).\nrecovery_target_lsn = '{lsn}'\n"
            );
        } else {
            out.push_str(l);
            out.push('\n');
        }
    }
    // Rewritten in place: the file keeps its owner and mode.
    std::fs::write(&auto, out).map_err(|e| Error::io(format!("writing {}", auto.display()), e))?;
    Ok(Some(lsn))
}

/// Starts the server (see [`start_server`]) with `pool` bytes of shared
/// buffers when given, and waits until it accepts connections or reaches
/// its target and exits; returns the process and the time that took.
#[allow(clippy::too_many_arguments)]
async fn spawn_server(
    postgres: &Path,
    data_dir: &Path,
    port: u16,
    work: &tempfile::TempDir,
    log_path: &Path,
    config_args: &[std::ffi::OsString],
    owner: Option<(u32, u32)>,
    pool: Option<u64>,
    exits_at_target: bool,
) -> Result<(tokio::process::Child, Duration)> {
    let log = std::fs::File::create(log_path).map_err(|e| Error::io("creating a log file", e))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(log_path, Some(uid), Some(gid))
            .map_err(|e| Error::io("preparing a log file", e))?;
    }
    let mut cmd = tokio::process::Command::new(postgres);
    cmd.arg("-D")
        .arg(data_dir)
        .args(["-p", &port.to_string()])
        .args(["-c", "listen_addresses=127.0.0.1"])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", work.path().display()))
        .args(["-c", "archive_mode=off"])
        // Connections only once recovery has ended (a point-in-time
        // recovery otherwise accepts read-only ones while it replays).
        .args(["-c", "hot_standby=off"])
        .args(["-c", "logging_collector=off"])
        .args(["-c", "log_destination=stderr"])
        .args(config_args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| Error::io("log file", e))?)
        .stderr(log)
        .kill_on_drop(true);
    if let Some(bytes) = pool {
        // Huge pages sized for the configured pool may not cover this one.
        cmd.arg("-c")
            .arg(format!("shared_buffers={}MB", bytes >> 20))
            .args(["-c", "huge_pages=try"]);
    }
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid).env("HOME", work.path());
    }
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io(format!("starting {}", postgres.display()), e))?;
    let pg_isready = postgres.with_file_name("pg_isready");
    let ready = loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(log_path).unwrap_or_default();
            if exits_at_target && status.success() && log.contains("recovery stopping") {
                break started.elapsed();
            }
            return Err(Error::target_failed(format!(
                "{}the server stopped ({status}) before accepting connections; its log ends with:\n{}",
                key_line(&log).map(|l| format!("PostgreSQL: {l}\n")).unwrap_or_default(),
                tail(&log, 15)
            )));
        }
        let ok = tokio::process::Command::new(&pg_isready)
            .arg("-h")
            .arg(work.path())
            .args(["-p", &port.to_string(), "-q"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success());
        if ok {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(6 * 3600) {
            let _ = child.kill().await;
            return Err(Error::target_failed(
                "the server did not accept connections within 6 hours",
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    Ok((child, ready))
}

/// Whether process `pid` exists and is not a zombie.
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// Stops a server a killed drill left running on `data_dir` (the process
/// `postmaster.pid` names, when it is a `postgres` process of that
/// directory): an immediate shutdown, then a kill after 30 seconds.
/// Returns whether there was one.
///
/// # Errors
///
/// Signals that cannot be sent.
pub async fn stop_leftover_server(data_dir: &Path) -> Result<bool> {
    let Ok(text) = std::fs::read_to_string(data_dir.join("postmaster.pid")) else {
        return Ok(false);
    };
    let Some(pid) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok())
    else {
        return Ok(false);
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let is_postgres = String::from_utf8_lossy(&cmdline).contains("postgres");
    let pid_dir = text.lines().nth(1).map(str::trim).unwrap_or_default();
    let same_dir = Path::new(pid_dir) == data_dir
        || std::fs::canonicalize(pid_dir).ok() == std::fs::canonicalize(data_dir).ok();
    if !is_postgres || !same_dir {
        return Ok(false);
    }
    let target = nix::unistd::Pid::from_raw(pid);
    nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGQUIT).map_err(|e| {
        Error::target_failed(format!(
            "stopping the server (pid {pid}) left running on {}: {e}",
            data_dir.display()
        ))
    })?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while running(pid) {
        if Instant::now() > deadline {
            let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL);
            tokio::time::sleep(Duration::from_millis(200)).await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(true)
}

/// The line of a server log that says why recovery or the start failed:
/// PostgreSQL's own words about the recovery target first, then the first
/// fatal error (without its time and process prefix).
fn key_line(log: &str) -> Option<String> {
    const RECOVERY: [&str; 4] = [
        "recovery ended before configured recovery target was reached",
        "requested recovery stop point is before consistent recovery point",
        "recovery target",
        "could not find",
    ];
    let message = |l: &str| -> String {
        ["PANIC:", "FATAL:", "ERROR:", "LOG:"]
            .iter()
            .find_map(|p| l.find(p).map(|i| l[i..].to_owned()))
            .unwrap_or_else(|| l.trim().to_owned())
    };
    for phrase in RECOVERY {
        if let Some(l) = log
            .lines()
            .find(|l| l.contains(phrase) && (l.contains("FATAL:") || l.contains("PANIC:")))
        {
            return Some(message(l));
        }
    }
    log.lines()
        .find(|l| l.contains("FATAL:") || l.contains("PANIC:"))
        .map(message)
}

/// The last `lines` lines of a server log, without what our own readiness
/// probes made it write (refused connections while it replays).
fn tail(text: &str, lines: usize) -> String {
    let mut all: Vec<&str> = Vec::new();
    let mut skip_detail = false;
    for l in text.lines() {
        if l.contains("the database system is not accepting connections")
            || l.contains("the database system is starting up")
        {
            skip_detail = true;
            continue;
        }
        if skip_detail && l.contains("DETAIL:") {
            continue;
        }
        skip_detail = false;
        all.push(l);
    }
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_recovery_is_told_by_postgresql_s_own_line_without_our_probes() {
        let log = "\
2026-11-25 21:49:28.909 UTC [1] FATAL:  the database system is not accepting connections
2026-11-25 21:49:28.909 UTC [1] DETAIL:  Hot standby mode is disabled.
2026-11-25 21:49:28.960 UTC [2] LOG:  restored log file \"000000010000000000000006\" from archive
2026-11-25 21:49:28.981 UTC [2] LOG:  redo done at 0/6000910
2026-11-25 21:49:28.981 UTC [2] FATAL:  recovery ended before configured recovery target was reached
2026-11-25 21:49:28.983 UTC [3] FATAL:  the database system is not accepting connections
2026-11-25 21:49:28.983 UTC [3] DETAIL:  Hot standby mode is disabled.
2026-11-25 21:49:28.993 UTC [4] LOG:  database system is shut down
";
        assert_eq!(
            key_line(log).as_deref(),
            Some("FATAL:  recovery ended before configured recovery target was reached")
        );
        let t = tail(log, 15);
        assert!(
            !t.contains("not accepting connections") && !t.contains("Hot standby"),
            "{t}"
        );
        assert_eq!(t.lines().count(), 4, "{t}");
        assert_eq!(
            key_line("x LOG:  ok\ny FATAL:  data directory has invalid permissions\n").as_deref(),
            Some("FATAL:  data directory has invalid permissions")
        );
        assert_eq!(key_line("x LOG:  ok\n"), None);
    }

    /// A recovery PostgreSQL would not end because no commit followed its
    /// time target moves to the last record, but not one whose WAL fetch
    /// failed (it is short, not past the last commit), nor one that
    /// should pause or shut down there, nor one of another target kind.
    #[test]
    fn a_time_target_past_the_last_commit_moves_to_the_last_record() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("pg_wal")).unwrap();
        let log = dir.path().join("server.log");
        std::fs::write(
            &log,
            "LOG:  redo done at 0/3000060 system usage: CPU\n\
             FATAL:  recovery ended before configured recovery target was reached\n",
        )
        .unwrap();
        let auto = data.join("postgresql.auto.conf");
        let conf = |target: &str, action: &str| {
            format!(
                "restore_command = 'x'\n{target}\nrecovery_target_action = '{action}'\nrecovery_target_timeline = 'latest'\n"
            )
        };
        let time = "recovery_target_time = '2026-11-20 14:30:00.000000+00'";
        std::fs::write(&auto, conf(time, "promote")).unwrap();
        assert_eq!(
            retarget_past_last_commit(&data, &log).unwrap().as_deref(),
            Some("0/3000060")
        );
        let text = std::fs::read_to_string(&auto).unwrap();
        assert!(
            text.contains("\nrecovery_target_lsn = '0/3000060'\n"),
            "{text}"
        );
        assert!(text.contains(&format!("# {time}")), "{text}");
        assert!(!text.lines().any(|l| l.starts_with("recovery_target_time ")));
        // Not for other actions or targets.
        for (target, action) in [(time, "pause"), ("recovery_target_xid = '900'", "promote")] {
            std::fs::write(&auto, conf(target, action)).unwrap();
            assert_eq!(retarget_past_last_commit(&data, &log).unwrap(), None);
            assert_eq!(
                std::fs::read_to_string(&auto).unwrap(),
                conf(target, action)
            );
        }
        // Not after a failed fetch.
        std::fs::write(&auto, conf(time, "promote")).unwrap();
        super::super::wal::note_fetch_failed(
            "000000010000000000000004",
            &data.join("pg_wal").join("RECOVERYXLOG"),
            "wrong key",
        );
        assert_eq!(retarget_past_last_commit(&data, &log).unwrap(), None);
        // Nor when the server stopped for another reason.
        std::fs::remove_dir_all(data.join("pg_wal")).unwrap();
        std::fs::write(
            &log,
            "FATAL:  could not locate required checkpoint record\n",
        )
        .unwrap();
        assert_eq!(retarget_past_last_commit(&data, &log).unwrap(), None);
    }
}
