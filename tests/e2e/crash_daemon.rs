//! A kill at the storage writes of a daemon job run (issue 32): `backupd`
//! runs a files job on request and dies by the storage failpoint before
//! its Nth put or delete (its lock, packs, index, manifest, the lock's
//! release, its audit record), as `crash_points` does for the CLI. After
//! each kill:
//! - `verify --read-data` passes, the repository's earlier snapshots are
//!   listed, and a snapshot the killed run managed to write restores to
//!   the tree it was taken of;
//! - a daemon started again runs the job to success (the dead daemon's
//!   lock does not hold it up), its snapshot restores to the tree, and
//!   `backup unlock` leaves no lock.

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use crate::crash_points::{
    at_each_point, copy_tree, listed, lock_files, restores_to, unlocked_outcome, verify_ok,
    write_version, Base, Point,
};
use crate::daemon::{config, files_job, http, Daemon, TOKEN};
use crate::util::Scratch;

/// Asks the daemon on `port` to run the job now.
fn trigger(port: u16) -> bool {
    http(port, "POST", "/api/jobs/files/run", Some(TOKEN)).is_some_and(|(code, _)| code == 202)
}

/// Whether the daemon's last run of the job succeeded.
fn succeeded(d: &Daemon) -> bool {
    d.job("files")["last_run"]["result"] == "success"
}

/// The daemon's configuration in `p`: the files job of `base`'s tree, run
/// on request only.
fn job_config(p: &Scratch, base: &Base, name: &str, port: u16) -> std::path::PathBuf {
    config(p, name, port, &files_job(&base.src, "0 0 1 1 *"), "")
}

/// A daemon on a fresh copy of `base` started with `env`, its job run once:
/// `Some(true)` when the failpoint killed it, `Some(false)` when the run
/// and a SIGTERM shutdown finished first. The copy is returned beside.
fn run_once(base: &Base, env: &[(&str, &str)]) -> (Scratch, bool) {
    let p = base.copy();
    let port = backup_testkit::free_port();
    let cfg = job_config(&p, base, "backupd.toml", port);
    let mut d = Daemon::spawn(&p, &cfg, port, "daemon.log", env);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut triggered = false;
    loop {
        if let Some(status) = d.child.try_wait().unwrap() {
            assert_eq!(
                status.signal(),
                Some(9),
                "backupd ended ({status}) without being killed:\n{}",
                d.log()
            );
            return (p, true);
        }
        assert!(Instant::now() < deadline, "no end in sight:\n{}", d.log());
        if !triggered {
            triggered = trigger(port);
        } else if http(port, "GET", "/healthz", None).is_some() && succeeded(&d) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The run finished: the failpoint may still fire in the shutdown.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(d.child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = d.child.wait().unwrap();
    (p, status.signal() == Some(9))
}

#[test]
fn crash_daemon_job_run() {
    let base = Base::new();
    // The job backs up a version no snapshot holds yet, so the run writes
    // data packs.
    write_version(&base.src, 3);
    let tree = base.s.path("v3");
    copy_tree(&base.src, &tree);
    let writes = {
        let count = base.s.path("daemon-count");
        let count_s = count.to_string_lossy().into_owned();
        let (_, killed) = run_once(
            &base,
            &[
                ("BACKUP_FAILPOINT", "count"),
                ("BACKUP_FAILPOINT_COUNT_FILE", &count_s),
            ],
        );
        assert!(!killed);
        std::fs::read_to_string(&count)
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    at_each_point("daemon job run (files)", writes, |point: Point, _| {
        let spec = point.spec();
        let (p, killed) = run_once(&base, &[("BACKUP_FAILPOINT", &spec)]);
        let stale = lock_files(&p);
        verify_ok(&p);
        let before = listed(&p);
        for (id, _) in &base.snaps {
            assert!(before.contains_key(id), "finished snapshot {id} is gone");
        }
        for id in before.keys() {
            if !base.snaps.iter().any(|(s, _)| s == id) {
                restores_to(&p, &p.repo, id, &tree);
            }
        }
        if !killed {
            return "finished-before-point";
        }
        // A daemon started again runs the job to success.
        let port = backup_testkit::free_port();
        let cfg = job_config(&p, &base, "again.toml", port);
        let d = Daemon::start(&p, &cfg, port, "again.log");
        assert!(trigger(port));
        d.wait_for("the rerun to succeed", Duration::from_secs(120), || {
            succeeded(&d)
        });
        let id = d.job("files")["last_run"]["snapshot"]
            .as_str()
            .unwrap()
            .to_owned();
        d.stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(60));
        verify_ok(&p);
        let full = listed(&p).keys().find(|k| k.starts_with(&id)).cloned();
        restores_to(&p, &p.repo, full.as_deref().unwrap_or(&id), &tree);
        unlocked_outcome(&p, &stale)
    });
}
