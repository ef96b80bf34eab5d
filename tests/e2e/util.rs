//! Helpers: a scratch repository, running the binary, building and
//! comparing trees.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use tempfile::TempDir;

pub const PASSWORD: &str = "correct horse battery staple";

/// A scratch directory with a repository path inside.
pub struct Scratch {
    pub dir: TempDir,
    pub repo: String,
    pub env: Vec<(String, String)>,
}

impl Scratch {
    /// A scratch dir whose repository is a local directory (not created).
    /// Others may enter the directory (a temporary directory is private to
    /// its creator): a restored PostgreSQL server's `restore_command` runs
    /// as the server's user and reads the repository, as it would on a
    /// real host.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let repo = dir.path().join("repo").to_string_lossy().into_owned();
        Scratch {
            dir,
            repo,
            env: Vec::new(),
        }
    }

    /// A scratch dir with another repository URL and environment.
    pub fn with_repo(repo: String, env: Vec<(String, String)>) -> Self {
        let mut s = Self::new();
        s.repo = repo;
        s.env = env;
        s
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The binary with repository and password set.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_backup"));
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("BACKUP_REPOSITORY", &self.repo)
            .env("BACKUP_PASSWORD", PASSWORD);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.timeout(std::time::Duration::from_secs(300));
        c
    }

    /// Runs the binary and returns its output, whatever the exit code.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "`backup {}` failed ({:?}):\n{}\n{}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs with `--json` and parses the output.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    /// Runs, asserts the exit code, returns stderr.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "`backup {}`: expected exit {code}\nstdout: {}\nstderr: {stderr}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        stderr
    }

    pub fn init(&self) {
        self.ok(&["init"]);
    }

    /// Backs up `path`; returns the snapshot id and the `--json` document.
    pub fn create(&self, path: &Path, extra: &[&str]) -> (String, serde_json::Value) {
        let p = path.to_str().unwrap();
        let mut args = vec!["create", p];
        args.extend_from_slice(extra);
        let v = self.json(&args);
        (v["id"].as_str().unwrap().to_owned(), v)
    }
}

/// Deterministic pseudo-random bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn write(path: &Path, data: &[u8]) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    fs::write(path, data).unwrap();
}

/// Sets a file's mtime (nanosecond precision) without following links.
pub fn set_mtime(path: &Path, secs: i64, nanos: u32) {
    let t = filetime::FileTime::from_unix_time(secs, nanos);
    filetime::set_symlink_file_times(path, t, t).unwrap();
}

/// What is compared of one entry.
#[derive(Debug, PartialEq, Eq)]
pub enum Entry {
    File {
        mode: u32,
        uid: u32,
        gid: u32,
        mtime: (i64, i64),
        digest: [u8; 32],
        len: u64,
    },
    Dir {
        mode: u32,
        uid: u32,
        gid: u32,
        mtime: (i64, i64),
    },
    Link {
        target: PathBuf,
        uid: u32,
        gid: u32,
        mtime: (i64, i64),
    },
}

/// Every entry below `root`, keyed by relative path (root itself excluded).
pub fn snapshot_tree(root: &Path) -> BTreeMap<PathBuf, Entry> {
    use sha2::Digest;
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_owned();
            let mtime = (m.mtime(), m.mtime_nsec());
            let entry = if m.file_type().is_symlink() {
                Entry::Link {
                    target: fs::read_link(&p).unwrap(),
                    uid: m.uid(),
                    gid: m.gid(),
                    mtime,
                }
            } else if m.is_dir() {
                stack.push(p.clone());
                Entry::Dir {
                    mode: m.permissions().mode() & 0o7777,
                    uid: m.uid(),
                    gid: m.gid(),
                    mtime,
                }
            } else {
                let data = fs::read(&p).unwrap();
                Entry::File {
                    mode: m.permissions().mode() & 0o7777,
                    uid: m.uid(),
                    gid: m.gid(),
                    mtime,
                    digest: sha2::Sha256::digest(&data).into(),
                    len: data.len() as u64,
                }
            };
            out.insert(rel, entry);
        }
    }
    out
}

/// Asserts two trees are identical, listing every difference.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let ta = snapshot_tree(a);
    let tb = snapshot_tree(b);
    let mut diffs = Vec::new();
    for (k, v) in &ta {
        match tb.get(k) {
            None => diffs.push(format!("missing in restore: {}", k.display())),
            Some(w) if w != v => diffs.push(format!("{}: {v:?} != {w:?}", k.display())),
            Some(_) => {}
        }
    }
    for k in tb.keys() {
        if !ta.contains_key(k) {
            diffs.push(format!("extra in restore: {}", k.display()));
        }
    }
    assert!(diffs.is_empty(), "trees differ:\n{}", diffs.join("\n"));
}

/// Whether the tests run as root (owners can be set and restored).
pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// Every file below `dir` (recursively).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Prints `line` and appends it to the file named by the environment
/// variable `var`, when set (the reports of the crash matrix and the soak).
pub fn report_line(var: &str, line: &str) {
    use std::io::Write as _;
    println!("{line}");
    if let Some(path) = std::env::var_os(var) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        writeln!(f, "{line}").unwrap();
    }
}
