//! `backup mount DIR` (issue 33): a repository as a read-only FUSE file
//! system, read through the kernel and compared with what was backed up
//! (files) and with `backup dump` (a PostgreSQL table as CSV, Redis keys
//! as files).

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use backup_testkit::postgres::PgCluster;
use backup_testkit::redis::RedisServer;

use crate::util::{random_bytes, set_mtime, write, Scratch, PASSWORD};

/// Whether `dir` is a mount point now (`/proc/self/mountinfo`).
fn is_mounted(dir: &Path) -> bool {
    let dir = dir.to_str().unwrap();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(dir))
}

/// Polls `done` every 20 ms until it holds; panics with `what` after
/// `limit`.
fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `backup mount` running in the background; stopped (SIGTERM, then the
/// mount point released by force if need be) when dropped.
struct Mounted {
    child: Child,
    dir: PathBuf,
}

impl Mounted {
    fn start(s: &Scratch, dir: &Path, extra: &[&str]) -> Mounted {
        fs::create_dir_all(dir).unwrap();
        let dir = dir.canonicalize().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_backup"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", s.dir.path())
            .env("BACKUP_REPOSITORY", &s.repo)
            .env("BACKUP_PASSWORD", PASSWORD)
            .arg("mount")
            .arg(&dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut m = Mounted {
            child: cmd.spawn().unwrap(),
            dir,
        };
        wait_for(Duration::from_secs(30), "the mount", || {
            if let Some(status) = m.child.try_wait().unwrap() {
                let mut err = String::new();
                m.child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                panic!("backup mount exited ({status}): {err}");
            }
            is_mounted(&m.dir)
        });
        m
    }

    /// Sends SIGTERM and waits for the process to end; returns its stderr.
    fn stop(&mut self) -> (std::process::ExitStatus, String) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let mut status = None;
        wait_for(Duration::from_secs(20), "backup mount to end", || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            e.read_to_string(&mut err).unwrap();
        }
        (status.unwrap(), err)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.stop();
        }
        if is_mounted(&self.dir) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// The only entry of `dir`, besides `except`.
fn only_entry(dir: &Path, except: &[&str]) -> String {
    let names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !except.contains(&n.as_str()))
        .collect();
    assert_eq!(names.len(), 1, "{}: {names:?}", dir.display());
    names[0].clone()
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn mount_files_snapshot_read_through_the_kernel() {
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    let big = random_bytes(5 << 20, 33);
    write(&src.join("big.bin"), &big);
    write(&src.join("small.txt"), b"hello, mount\n");
    write(&src.join("empty"), b"");
    write(&src.join("nested/a/b/deep.txt"), b"deep down\n");
    std::os::unix::fs::symlink("nested/a/b/deep.txt", src.join("link")).unwrap();
    fs::set_permissions(src.join("small.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    set_mtime(&src.join("small.txt"), 1_700_000_000, 123_000_000);
    let set = Command::new("setfattr")
        .args(["-n", "user.note", "-v", "kept"])
        .arg(src.join("small.txt"))
        .status()
        .expect("setfattr (Debian: apt-get install attr)");
    assert!(set.success());
    let (id, _) = s.create(&src, &["--tag", "daily"]);

    // Refused before anything is mounted: a directory that is not empty.
    let busy = s.path("busy");
    write(&busy.join("x"), b"x");
    let err = s.fails(&["mount", busy.to_str().unwrap()], 2);
    assert!(err.contains("not empty"), "{err}");

    let mut m = Mounted::start(&s, &s.path("mnt"), &[]);
    let mnt = m.dir.clone();
    assert_eq!(names(&mnt), ["hosts", "ids", "snapshots", "tags"]);
    let time = only_entry(&mnt.join("snapshots"), &["latest"]);
    let snap = mnt.join("snapshots").join(&time);
    assert_eq!(
        fs::read_link(mnt.join("snapshots/latest")).unwrap(),
        Path::new(&time)
    );
    assert_eq!(
        names(&snap),
        ["big.bin", "empty", "link", "nested", "small.txt"]
    );

    // Contents byte for byte, metadata as stored.
    assert_eq!(fs::read(snap.join("big.bin")).unwrap(), big);
    assert_eq!(fs::read(snap.join("small.txt")).unwrap(), b"hello, mount\n");
    assert_eq!(fs::read(snap.join("empty")).unwrap(), b"");
    assert_eq!(
        fs::read(snap.join("nested/a/b/deep.txt")).unwrap(),
        b"deep down\n"
    );
    assert_eq!(
        fs::read_link(snap.join("link")).unwrap(),
        Path::new("nested/a/b/deep.txt")
    );
    assert_eq!(fs::read(snap.join("link")).unwrap(), b"deep down\n");
    let meta = fs::metadata(snap.join("small.txt")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!(
        (meta.mtime(), meta.mtime_nsec()),
        (1_700_000_000, 123_000_000)
    );
    assert_eq!(fs::metadata(snap.join("big.bin")).unwrap().len(), 5 << 20);
    let got = Command::new("getfattr")
        .args(["--only-values", "-n", "user.note"])
        .arg(snap.join("small.txt"))
        .output()
        .unwrap();
    assert_eq!(got.stdout, b"kept", "{got:?}");
    assert!(fs::metadata(snap.join("nested/a")).unwrap().is_dir());

    // A read in the middle, across blob boundaries.
    let mut f = fs::File::open(snap.join("big.bin")).unwrap();
    let at = (3 << 20) + 12_345;
    f.seek(SeekFrom::Start(at)).unwrap();
    let mut part = vec![0; 1 << 20];
    f.read_exact(&mut part).unwrap();
    assert_eq!(part, big[at as usize..at as usize + (1 << 20)]);

    // The host, tag and id views lead to the same snapshot.
    let host = only_entry(&mnt.join("hosts"), &[]);
    assert_eq!(names(&mnt.join("hosts").join(&host)), vec![time.clone()]);
    assert_eq!(
        fs::read(mnt.join("hosts").join(&host).join(&time).join("small.txt")).unwrap(),
        b"hello, mount\n"
    );
    assert_eq!(names(&mnt.join("tags")), ["daily"]);
    assert_eq!(
        fs::read(
            mnt.join("tags/daily")
                .join(&time)
                .join("nested/a/b/deep.txt")
        )
        .unwrap(),
        b"deep down\n"
    );
    assert_eq!(names(&mnt.join("ids")), [id[..8].to_owned()]);
    assert_eq!(names(&mnt.join("ids").join(&id[..8])), names(&snap));

    // Read-only: writes fail with EROFS.
    let e = fs::write(snap.join("new.txt"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(nix::libc::EROFS), "{e}");
    let e = fs::OpenOptions::new()
        .write(true)
        .open(snap.join("small.txt"))
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(nix::libc::EROFS), "{e}");
    let e = fs::remove_file(snap.join("small.txt")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(nix::libc::EROFS), "{e}");

    // SIGTERM unmounts and ends the process cleanly.
    drop(f);
    let (status, err) = m.stop();
    assert!(status.success(), "{status}: {err}");
    assert!(!is_mounted(&mnt), "{err}");
    assert!(names(&mnt).is_empty());
}

#[test]
fn mount_postgres_tables_as_csv() {
    let pg = PgCluster::start();
    pg.psql("postgres", "CREATE DATABASE app");
    pg.psql(
        "app",
        "CREATE SCHEMA sales;
         CREATE TABLE sales.orders (id int PRIMARY KEY, note text);
         INSERT INTO sales.orders SELECT i, 'order \"' || i || E'\",\n' FROM generate_series(1, 2000) i;
         CREATE TABLE public.empty (a int);
         CREATE VIEW public.recent AS SELECT * FROM sales.orders WHERE id > 1990;",
    );
    let s = Scratch::new();
    s.init();
    s.json(&["create", &pg.url("app")]);
    let want = s.ok(&["dump", "latest", "sales.orders"]);
    assert!(want.starts_with("id,note\n"), "{want}");

    let mut m = Mounted::start(&s, &s.path("mnt"), &[]);
    let snap = m.dir.join("snapshots/latest");
    assert_eq!(names(&snap), ["app"]);
    assert_eq!(names(&snap.join("app")), ["public", "sales"]);
    assert_eq!(names(&snap.join("app/public")), ["empty.csv"]);
    let orders = snap.join("app/sales/orders.csv");
    assert_eq!(fs::read_to_string(&orders).unwrap(), want);
    // Once rendered, its size is known; a read in the middle.
    assert_eq!(fs::metadata(&orders).unwrap().len(), want.len() as u64);
    let mut f = fs::File::open(&orders).unwrap();
    f.seek(SeekFrom::Start(1000)).unwrap();
    let mut part = vec![0; 500];
    f.read_exact(&mut part).unwrap();
    assert_eq!(part, want.as_bytes()[1000..1500]);
    // A second open while the first is open shares its rendering.
    assert_eq!(fs::read_to_string(&orders).unwrap(), want);
    drop(f);
    assert_eq!(
        fs::read_to_string(snap.join("app/public/empty.csv")).unwrap(),
        "a\n"
    );
    // Unmounted from outside (as `fusermount -u` does): the command ends.
    let umount = Command::new("umount").arg(&m.dir).status().unwrap();
    assert!(umount.success());
    let mut status = None;
    wait_for(Duration::from_secs(20), "backup mount to end", || {
        status = m.child.try_wait().unwrap();
        status.is_some()
    });
    assert!(status.unwrap().success());
    assert!(!is_mounted(&m.dir));
}

/// The entries of `dir` as bytes, sorted.
fn byte_names(dir: &Path) -> Vec<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let mut names: Vec<Vec<u8>> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    names.sort();
    names
}

#[test]
fn mount_redis_keys_as_files_like_dump() {
    use std::os::unix::ffi::OsStrExt;
    let server = RedisServer::start();
    let mut con = server.connection();
    let run = |con: &mut redis::Connection, args: &[&[u8]]| {
        let mut c = redis::cmd(std::str::from_utf8(args[0]).unwrap());
        for a in &args[1..] {
            c.arg(*a);
        }
        c.exec(con).unwrap();
    };
    let big = random_bytes(300_000, 7);
    run(&mut con, &[b"SET", b"user:1", b"alice"]);
    run(&mut con, &[b"SET", b"bin", b"\x00\xff\xfe raw"]);
    run(&mut con, &[b"SET", b"\xff\x00key", b"\x01binary\xff"]);
    run(&mut con, &[b"SET", b"big", &big]);
    run(&mut con, &[b"SET", b"path/with/slashes", b"deep"]);
    run(&mut con, &[b"SET", b"50%", b"percent"]);
    run(&mut con, &[b"SET", b"..", b"dots"]);
    run(&mut con, &[b"RPUSH", b"list", b"one", b"\xff"]);
    run(&mut con, &[b"HSET", b"hash", b"f1", b"v1"]);
    run(
        &mut con,
        &[b"ZADD", b"zset", b"1.5", b"low", b"inf", b"top"],
    );
    run(&mut con, &[b"XADD", b"stream", b"1-1", b"field", b"value"]);
    run(&mut con, &[b"SELECT", b"3"]);
    run(&mut con, &[b"SET", b"user:9", b"in db 3"]);
    let s = Scratch::new();
    s.init();
    s.json(&["create", &server.url()]);
    let dump = |args: &[&str]| {
        let out = s.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };

    let m = Mounted::start(&s, &s.path("mnt"), &[]);
    let snap = m.dir.join("snapshots/latest");
    assert_eq!(names(&snap), ["0", "3"]);
    let db0 = snap.join("0");
    let want: Vec<&[u8]> = vec![
        b"%2E.",
        b"50%25",
        b"big",
        b"bin",
        b"hash",
        b"list",
        b"path%2Fwith%2Fslashes",
        b"stream",
        b"user:1",
        b"zset",
        b"\xff%00key",
    ];
    assert_eq!(byte_names(&db0), want);
    assert_eq!(names(&snap.join("3")), ["user:9"]);

    // Every key with a name `backup dump` takes: the same bytes, and the
    // size listed before the file was opened.
    for (file, key) in [
        ("user:1", "user:1"),
        ("bin", "bin"),
        ("big", "big"),
        ("path%2Fwith%2Fslashes", "path/with/slashes"),
        ("50%25", "50%"),
        ("%2E.", ".."),
        ("list", "list"),
        ("hash", "hash"),
        ("zset", "zset"),
    ] {
        let want = dump(&["dump", "latest", &format!("0/{key}")]);
        let size = fs::metadata(db0.join(file)).unwrap().len();
        assert_eq!(size, want.len() as u64, "{key}");
        let got = fs::read(db0.join(file)).unwrap();
        assert!(got == want, "{key}: the mounted file differs from the dump");
    }
    assert_eq!(fs::read(db0.join("big")).unwrap(), big);
    assert_eq!(
        fs::read(snap.join("3/user:9")).unwrap(),
        dump(&["dump", "latest", "3/user:9"])
    );
    // A key whose name is not UTF-8, holding bytes that are not either.
    let odd = db0.join(std::ffi::OsStr::from_bytes(b"\xff%00key"));
    assert_eq!(fs::read(&odd).unwrap(), b"\x01binary\xff");
    // A stream has no plain rendering: its file holds the DUMP payload,
    // as `--format raw` writes it.
    assert_eq!(
        fs::read(db0.join("stream")).unwrap(),
        dump(&["dump", "latest", "0/stream", "--format", "raw"])
    );
    // A read in the middle of a large value.
    let mut f = fs::File::open(db0.join("big")).unwrap();
    f.seek(SeekFrom::Start(100_000)).unwrap();
    let mut part = vec![0; 1000];
    f.read_exact(&mut part).unwrap();
    assert_eq!(part, big[100_000..101_000]);
    assert_eq!(
        fs::metadata(db0.join("nosuch")).unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
}
