//! A kill at every storage write: each operation is run against a copy of
//! one prepared repository and killed with SIGKILL by the storage
//! failpoint (`BACKUP_FAILPOINT=write:N`, feature `failpoints`) before its
//! Nth put or delete, or after its last one; then the invariants are
//! checked, the operation is run again, and checked again.
//!
//! After every kill:
//! - `verify --read-data` passes (the dead process's lock does not block
//!   it: it names this host and a process that is gone);
//! - every listed snapshot restores byte for byte to the tree it was taken
//!   of, and every snapshot the operation does not remove is still listed;
//! - the audit chain is intact (`backup audit`);
//! - the operation run again completes, `verify --read-data` passes, and
//!   `backup unlock` (without `--all`) leaves no lock behind.
//!
//! CI runs at most [`CI_POINTS`] points per operation, spread over the
//! range with the first and the last included; `BACKUP_CRASH_ALL=1` runs
//! every point (`scripts/crash_matrix.sh`). With `BACKUP_CRASH_REPORT=FILE`
//! each point appends a line `operation<TAB>point<TAB>outcome` to FILE.
//! Outcomes: `ok` (nothing left over), `recovered-after-unlock` (the dead
//! process's lock stayed until `backup unlock`; it blocked nothing),
//! `recovered-after-overwrite` (a killed restore: the rerun into the
//! partly written directory is refused with a message naming
//! `--overwrite`, and the rerun with it gives the snapshot's tree).

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use backup_core::config::ChunkerParams;
use backup_core::keys::KdfParams;
use backup_core::repo::{InitOptions, Repository};
use backup_core::Sink;
use backup_storage::LocalSink;

use crate::util::{assert_same_tree, random_bytes, write, Scratch, PASSWORD};

/// Points per operation in CI.
const CI_POINTS: usize = 6;
/// The second key's password (key add, key remove).
const OTHER_PASSWORD: &str = "another password entirely";

/// Where a kill happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Point {
    /// Before the Nth storage write.
    Before(u64),
    /// After the Nth (the last) storage write.
    After(u64),
}

impl Point {
    pub(crate) fn spec(self) -> String {
        match self {
            Point::Before(n) => format!("write:{n}"),
            Point::After(n) => format!("after-write:{n}"),
        }
    }
}

/// The kill points of an operation with `writes` storage writes: before
/// each, and after the last; in CI a spread of at most [`CI_POINTS`].
pub(crate) fn points(writes: u64) -> Vec<Point> {
    let mut all: Vec<Point> = (1..=writes).map(Point::Before).collect();
    all.push(Point::After(writes));
    if std::env::var("BACKUP_CRASH_ALL").is_ok_and(|v| v == "1") || all.len() <= CI_POINTS {
        return all;
    }
    let last = all.len() - 1;
    let mut picked: Vec<usize> = (0..CI_POINTS).map(|i| i * last / (CI_POINTS - 1)).collect();
    picked.dedup();
    picked.into_iter().map(|i| all[i]).collect()
}

/// A prepared repository (and a copy destination), with the trees its
/// snapshots hold.
pub(crate) struct Base {
    pub(crate) s: Scratch,
    /// Snapshot id → the directory holding the tree it was taken of.
    pub(crate) snaps: Vec<(String, PathBuf)>,
    /// The source directory backups read (holding the newest version).
    pub(crate) src: PathBuf,
}

/// Initialises a repository at `path` with a fast key derivation (every
/// command derives the key once) and small packs (more write points).
fn init_repo(path: &Path) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sink: Arc<dyn Sink> = Arc::new(LocalSink::new(path));
        let opts = InitOptions {
            kdf: KdfParams::insecure_fast(),
            pack_size: 1024 * 1024,
            chunker: ChunkerParams::with_average(64 * 1024).unwrap(),
            ..InitOptions::default()
        };
        Repository::init(sink, Some(PASSWORD.as_bytes()), &opts)
            .await
            .unwrap();
    });
}

/// Copies `from` to `to` with `cp -a` (times and modes kept).
pub(crate) fn copy_tree(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success(), "cp -a {} {}", from.display(), to.display());
}

/// Writes version `v` of the source tree: files change between versions,
/// some stay.
pub(crate) fn write_version(src: &Path, v: u64) {
    for f in 0..6u64 {
        // File f changes in versions where (f + v) % 3 == 0, and always in 0.
        if v == 0 || (f + v) % 3 == 0 {
            write(
                &src.join(format!("d{}/f{f}", f % 2)),
                &random_bytes(200_000 + 60_000 * f as usize, v * 100 + f),
            );
        }
    }
    write(
        &src.join(format!("new-in-{v}")),
        &random_bytes(90_000, 7_000 + v),
    );
}

impl Base {
    /// A repository with three snapshots of one source (versions 0, 1, 2)
    /// and an empty, initialised destination repository `dest`.
    pub(crate) fn new() -> Base {
        let mut s = Scratch::new();
        s.env = vec![(
            "BACKUP_AUDIT_LOG".to_owned(),
            s.path("audit.jsonl").to_string_lossy().into_owned(),
        )];
        init_repo(&s.path("repo"));
        init_repo(&s.path("dest"));
        let src = s.path("src");
        let mut snaps = Vec::new();
        for v in 0..3u64 {
            write_version(&src, v);
            let (id, _) = s.create(&src, &[]);
            let tree = s.path(&format!("v{v}"));
            copy_tree(&src, &tree);
            snaps.push((id, tree));
        }
        Base { s, snaps, src }
    }

    /// A fresh copy of the repositories and the local audit log, with the
    /// environment every command of a point runs with.
    pub(crate) fn copy(&self) -> Scratch {
        let mut p = Scratch::new();
        for name in ["repo", "dest", "audit.jsonl"] {
            let from = self.s.path(name);
            if from.exists() {
                copy_tree(&from, &p.path(name));
            }
        }
        p.env = vec![
            (
                "BACKUP_AUDIT_LOG".to_owned(),
                p.path("audit.jsonl").to_string_lossy().into_owned(),
            ),
            (
                "BACKUP_TO_REPOSITORY".to_owned(),
                p.path("dest").to_string_lossy().into_owned(),
            ),
            ("BACKUP_TO_PASSWORD".to_owned(), PASSWORD.to_owned()),
        ];
        p
    }
}

/// The arguments of an operation in a point's scratch.
type Args<'a> = Box<dyn Fn(&Scratch) -> Vec<String> + 'a>;
/// A rerun: returns a note for the outcome when it needed more than
/// running the operation again.
type Rerun<'a> = Box<dyn Fn(&Scratch, &[String]) -> Option<&'static str> + 'a>;

/// One operation under test.
struct Case<'a> {
    name: &'static str,
    base: &'a Base,
    /// The operation's arguments in a point's scratch.
    args: Args<'a>,
    /// Snapshots the operation never removes (they must stay listed).
    keeps: Vec<String>,
    /// The tree a snapshot the operation adds holds (backup).
    adds: Option<PathBuf>,
    /// Checks after a kill, beside the common ones.
    after_kill: Box<dyn Fn(&Scratch) + 'a>,
    /// Runs the operation again; returns a note for the outcome when the
    /// rerun needed more than running it again.
    rerun: Rerun<'a>,
    /// Checks once the rerun completed.
    done: Box<dyn Fn(&Scratch) + 'a>,
}

impl<'a> Case<'a> {
    fn new(
        name: &'static str,
        base: &'a Base,
        args: impl Fn(&Scratch) -> Vec<String> + 'a,
    ) -> Self {
        Case {
            name,
            base,
            args: Box::new(args),
            keeps: base.snaps.iter().map(|(id, _)| id.clone()).collect(),
            adds: None,
            after_kill: Box::new(|_| {}),
            rerun: Box::new(|s, args| {
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                s.ok(&a);
                None
            }),
            done: Box::new(|_| {}),
        }
    }

    /// Counts the operation's writes, then kills it at each point and
    /// checks; panics listing every failed point.
    fn run(&self) {
        let p = self.base.copy();
        let writes = count_writes(&p, self.name, &(self.args)(&p));
        at_each_point(self.name, writes, |point, _| self.point(point));
    }

    /// One kill point; returns the outcome.
    fn point(&self, point: Point) -> &'static str {
        let p = self.base.copy();
        let args = (self.args)(&p);
        let out = p
            .cmd()
            .env("BACKUP_FAILPOINT", point.spec())
            .args(&args)
            .output()
            .unwrap();
        if out.status.success() {
            // This run wrote less than the counting run did (how blobs
            // fall into packs depends on timing): it finished before the
            // point, and must have left what a finished run leaves.
            self.check_repository(&p);
            (self.done)(&p);
            return "finished-before-point";
        }
        assert_killed(&out);
        let stale = lock_files(&p);
        self.check_repository(&p);
        (self.after_kill)(&p);
        let note = (self.rerun)(&p, &args);
        verify_ok(&p);
        p.ok(&["unlock"]);
        assert_eq!(lock_files(&p), Vec::<String>::new(), "locks after unlock");
        (self.done)(&p);
        note.unwrap_or(if stale.is_empty() {
            "ok"
        } else {
            "recovered-after-unlock"
        })
    }

    /// The common invariants after a kill.
    fn check_repository(&self, p: &Scratch) {
        verify_ok(p);
        let listed = listed(p);
        for id in &self.keeps {
            assert!(listed.contains_key(id), "finished snapshot {id} is gone");
        }
        for id in listed.keys() {
            let tree = match self.base.snaps.iter().find(|(s, _)| s == id) {
                Some((_, tree)) => tree.clone(),
                None => self
                    .adds
                    .clone()
                    .unwrap_or_else(|| panic!("unexpected snapshot {id}")),
            };
            restores_to(p, &p.repo, id, &tree);
        }
        let audit = p.run(&["audit"]);
        assert!(
            audit.status.success(),
            "audit chain: {}",
            String::from_utf8_lossy(&audit.stderr)
        );
    }
}

/// The run `out` was killed by the failpoint (SIGKILL).
pub(crate) fn assert_killed(out: &Output) {
    assert_eq!(
        out.status.signal(),
        Some(9),
        "not killed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The storage writes of `args` run in `p` (the failpoint's count).
pub(crate) fn count_writes(p: &Scratch, name: &str, args: &[String]) -> u64 {
    let count = p.path("failpoint-count");
    let out = p
        .cmd()
        .env("BACKUP_FAILPOINT", "count")
        .env("BACKUP_FAILPOINT_COUNT_FILE", &count)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name}: the counting run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let writes = std::fs::read_to_string(&count)
        .unwrap()
        .trim()
        .parse::<u64>()
        .unwrap();
    assert!(writes > 0, "{name}: no storage write counted");
    writes
}

/// Runs `point` (given the point and its ordinal) at each kill point of
/// an operation with `writes` writes, reports each outcome, and panics
/// listing every point that failed.
pub(crate) fn at_each_point(name: &str, writes: u64, point: impl Fn(Point, usize) -> &'static str) {
    let mut failed = Vec::new();
    for (n, at) in points(writes).into_iter().enumerate() {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| point(at, n)));
        let line = match outcome {
            Ok(note) => note.to_owned(),
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                failed.push(format!("{name} at {}: {msg}", at.spec()));
                "FAILED".to_owned()
            }
        };
        report(name, &format!("{}/{writes}", at.spec()), &line);
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

/// Appends a point's outcome (`point` as the report shows it) to
/// `BACKUP_CRASH_REPORT` (and prints it).
pub(crate) fn report(op: &str, point: &str, outcome: &str) {
    let line = format!("{op}\t{point}\t{outcome}");
    crate::util::report_line("BACKUP_CRASH_REPORT", &line);
}

/// After a rerun: `backup unlock` leaves no lock; the outcome is `ok`, or
/// `recovered-after-unlock` when the killed run's lock files (`stale`)
/// stayed until then.
pub(crate) fn unlocked_outcome(p: &Scratch, stale: &[String]) -> &'static str {
    p.ok(&["unlock"]);
    assert_eq!(lock_files(p), Vec::<String>::new(), "locks after unlock");
    if stale.is_empty() {
        "ok"
    } else {
        "recovered-after-unlock"
    }
}

/// Lock files (64-hex names) under the repository's `locks/`.
pub(crate) fn lock_files(p: &Scratch) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(Path::new(&p.repo).join("locks")) else {
        return Vec::new();
    };
    let mut out: Vec<String> = rd
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    out.sort();
    out
}

fn output_text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `verify --read-data` of the point's repository passes.
pub(crate) fn verify_ok(p: &Scratch) {
    let out = p.run(&["verify", "--read-data"]);
    assert!(
        out.status.success(),
        "verify --read-data: {}",
        output_text(&out)
    );
}

/// Listed snapshots: id → time.
pub(crate) fn listed(p: &Scratch) -> BTreeMap<String, String> {
    p.json(&["list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_owned(),
                s["snapshot"]["time"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Restores snapshot `id` of `repo` and compares it with `tree`.
pub(crate) fn restores_to(p: &Scratch, repo: &str, id: &str, tree: &Path) {
    let out = p.path(&format!("restored-{}", &id[..12]));
    let _ = std::fs::remove_dir_all(&out);
    let run = p
        .cmd()
        .env("BACKUP_REPOSITORY", repo)
        .args(["restore", id, "--to", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "restore {id} from {repo}: {}",
        output_text(&run)
    );
    assert_same_tree(tree, &out);
    std::fs::remove_dir_all(&out).unwrap();
}

/// The same scratch on the destination repository of `copy`.
fn on_dest(p: &Scratch) -> Scratch {
    let mut env = p.env.clone();
    env.retain(|(k, _)| k != "BACKUP_AUDIT_LOG");
    env.push((
        "BACKUP_AUDIT_LOG".to_owned(),
        p.path("dest-audit.jsonl").to_string_lossy().into_owned(),
    ));
    Scratch {
        dir: tempfile::tempdir().unwrap(),
        repo: p.path("dest").to_string_lossy().into_owned(),
        env,
    }
}

/// Every snapshot in the copy destination restores to the tree of the
/// source snapshot with the same time; returns how many there are.
fn dest_snapshots_restore(p: &Scratch, base: &Base, src_times: &BTreeMap<String, String>) -> usize {
    let d = on_dest(p);
    verify_ok(&d);
    let listed = listed(&d);
    for (id, time) in &listed {
        let (src_id, _) = src_times
            .iter()
            .find(|(_, t)| *t == time)
            .unwrap_or_else(|| panic!("copied snapshot {id} has no original at {time}"));
        let tree = &base.snaps.iter().find(|(s, _)| s == src_id).unwrap().1;
        restores_to(&d, &d.repo, id, tree);
    }
    listed.len()
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn crash_backup() {
    let base = Base::new();
    // The operation backs up version 3 of the source.
    write_version(&base.src, 3);
    let v3 = base.s.path("v3");
    copy_tree(&base.src, &v3);
    let src = base.src.to_string_lossy().into_owned();
    let mut case = Case::new("backup", &base, move |_| strings(&["create", &src]));
    case.adds = Some(v3.clone());
    case.done = Box::new(|p| {
        let listed = listed(p);
        let latest = listed
            .keys()
            .find(|id| !base.snaps.iter().any(|(s, _)| s == *id));
        restores_to(p, &p.repo, latest.expect("the rerun's snapshot"), &v3);
    });
    case.run();
}

#[test]
fn crash_forget() {
    let base = Base::new();
    let mut case = Case::new("forget", &base, |_| {
        strings(&["forget", "--keep-last", "1"])
    });
    case.keeps = vec![base.snaps[2].0.clone()];
    case.done = Box::new(|p| {
        assert_eq!(
            listed(p).keys().cloned().collect::<Vec<_>>(),
            vec![base.snaps[2].0.clone()]
        );
    });
    case.run();
}

#[test]
fn crash_prune() {
    let base = Base::new();
    base.s.ok(&["forget", "--keep-last", "1"]);
    let base = Base {
        snaps: vec![base.snaps[2].clone()],
        ..base
    };
    let case = Case::new("prune", &base, |_| {
        strings(&["prune", "--repack-threshold", "1"])
    });
    let case = Case {
        done: Box::new(|p| {
            // Nothing is left to free.
            let v = p.json(&["prune", "--dry-run", "--repack-threshold", "1"]);
            assert_eq!(v["bytes_freed"].as_u64().unwrap_or(0), 0, "{v}");
        }),
        ..case
    };
    case.run();
}

#[test]
fn crash_copy() {
    let base = Base::new();
    let mut src_times = BTreeMap::new();
    for (id, _) in &base.snaps {
        let v = base.s.json(&["show", id]);
        src_times.insert(
            id.clone(),
            v["snapshot"]["time"].as_str().unwrap().to_owned(),
        );
    }
    let mut case = Case::new("copy", &base, |_| strings(&["copy"]));
    case.after_kill = Box::new(|p| {
        dest_snapshots_restore(p, &base, &src_times);
    });
    case.done = Box::new(|p| {
        assert_eq!(dest_snapshots_restore(p, &base, &src_times), 3);
    });
    case.run();
}

#[test]
fn crash_repair_index() {
    let base = Base::new();
    let case = Case::new("repair index", &base, |_| strings(&["repair", "index"]));
    case.run();
}

#[test]
fn crash_key_add() {
    let base = Base::new();
    let pwfile = base.s.path("new-password");
    write(&pwfile, OTHER_PASSWORD.as_bytes());
    let pw = pwfile.to_string_lossy().into_owned();
    let mut case = Case::new("key add", &base, move |_| {
        strings(&["key", "add", "--new-password-file", &pw])
    });
    case.done = Box::new(|p| {
        let other = p
            .cmd()
            .env("BACKUP_PASSWORD", OTHER_PASSWORD)
            .args(["list"])
            .output()
            .unwrap();
        assert!(other.status.success(), "{}", output_text(&other));
    });
    case.run();
}

#[test]
fn crash_key_remove() {
    let base = Base::new();
    let pwfile = base.s.path("new-password");
    write(&pwfile, OTHER_PASSWORD.as_bytes());
    base.s.ok(&[
        "key",
        "add",
        "--new-password-file",
        pwfile.to_str().unwrap(),
    ]);
    let keys = base.s.json(&["key", "list"]);
    let other = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == false)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let id = other.clone();
    let mut case = Case::new("key remove", &base, move |_| {
        strings(&["key", "remove", &id])
    });
    case.rerun = Box::new(|p, args| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = p.run(&a);
        if out.status.success() {
            return None;
        }
        // The key went before the kill: the rerun says so.
        let text = output_text(&out);
        assert!(text.contains("not found"), "rerun of key remove: {text}");
        Some("ok (rerun: key not found)")
    });
    case.done = Box::new(|p| {
        let keys = p.json(&["key", "list"]);
        assert!(
            !keys
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["id"] == other.as_str()),
            "{keys}"
        );
        let gone = p
            .cmd()
            .env("BACKUP_PASSWORD", OTHER_PASSWORD)
            .args(["list"])
            .output()
            .unwrap();
        assert!(!gone.status.success(), "the removed key still opens");
    });
    case.run();
}

#[test]
fn crash_restore() {
    let base = Base::new();
    let (id, tree) = base.snaps[2].clone();
    let target = |p: &Scratch| p.path("target").to_string_lossy().into_owned();
    let id2 = id.clone();
    let mut case = Case::new("restore", &base, move |p| {
        strings(&["restore", &id2, "--to", &target(p)])
    });
    case.rerun = Box::new(|p, args| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = p.run(&a);
        if out.status.success() {
            return None;
        }
        // A partly written target: refused with what to do, then accepted
        // with --overwrite.
        let text = output_text(&out);
        assert!(text.contains("--overwrite"), "rerun of restore: {text}");
        let mut again = a.clone();
        again.extend(["--overwrite", "if-changed", "--delete"]);
        p.ok(&again);
        Some("recovered-after-overwrite")
    });
    case.done = Box::new(|p| assert_same_tree(&tree, &p.path("target")));
    case.run();
}

/// Issue 32 (found by `crash_prune`): a pack's header counted as unused
/// space, so a small pack was repacked by every prune and a prune never
/// left a repository that the next prune found nothing to do in.
#[test]
fn crash_r32_prune_converges() {
    let base = Base::new();
    base.s.ok(&["forget", "--keep-last", "1"]);
    base.s.ok(&["prune", "--repack-threshold", "1"]);
    let v = base
        .s
        .json(&["prune", "--dry-run", "--repack-threshold", "1"]);
    assert_eq!(v["packs_repacked"], 0, "{v}");
    assert_eq!(v["bytes_freed"], 0, "{v}");
}

/// A restore killed (at a random time, not by the failpoint: a restore
/// writes its target, not the repository) once the target holds a file:
/// the rerun is refused with a message naming `--overwrite`, and the rerun
/// with it gives the snapshot's tree. Should the restore end before the
/// kill, the rerun is checked all the same.
#[test]
fn crash_restore_mid_write() {
    let base = Base::new();
    let (id, tree) = base.snaps[2].clone();
    let p = base.copy();
    let target = p.path("target");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_backup"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", p.dir.path())
        .env("BACKUP_REPOSITORY", &p.repo)
        .env("BACKUP_PASSWORD", PASSWORD)
        .envs(p.env.iter().map(|(k, v)| (k, v)))
        .args(["restore", &id, "--to", target.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let killed = loop {
        if child.try_wait().unwrap().is_some() {
            break false;
        }
        if crate::util::files_under(&target)
            .iter()
            .any(|f| f.is_file())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            break true;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    };
    let status = child.wait().unwrap();
    verify_ok(&p);
    let again = ["restore", id.as_str(), "--to", target.to_str().unwrap()];
    let out = p.run(&again);
    let outcome = if out.status.success() {
        "ok"
    } else {
        let text = output_text(&out);
        assert!(text.contains("--overwrite"), "rerun of restore: {text}");
        let mut with = again.to_vec();
        with.extend(["--overwrite", "if-changed", "--delete"]);
        p.ok(&with);
        "recovered-after-overwrite"
    };
    assert_same_tree(&tree, &target);
    p.ok(&["unlock"]);
    assert_eq!(lock_files(&p), Vec::<String>::new(), "locks after unlock");
    let line = format!(
        "restore (random time)\t{}\t{outcome}",
        if killed && status.signal() == Some(9) {
            "target-has-a-file"
        } else {
            "ended-before-kill"
        }
    );
    crate::util::report_line("BACKUP_CRASH_REPORT", &line);
}

/// A drill of the newest files snapshot killed at each of its writes
/// (its lock, the lock's release, the drill record, the audit record): the
/// repository stays whole, and the next drill passes and removes the copy
/// a killed one left in the scratch directory.
#[test]
fn crash_drill() {
    let base = Base::new();
    let src = base.src.to_string_lossy().into_owned();
    let scratch = |p: &Scratch| {
        let dir = p.path("drill-scratch");
        std::fs::create_dir_all(&dir).unwrap();
        dir.to_string_lossy().into_owned()
    };
    let mut case = Case::new("drill (files)", &base, move |p| {
        strings(&["drill", "--source", &src, "--target", &scratch(p)])
    });
    case.done = Box::new(|p| {
        let left: Vec<_> = std::fs::read_dir(p.path("drill-scratch"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "drill copies left behind: {left:?}");
    });
    case.run();
}
