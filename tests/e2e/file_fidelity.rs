//! File fidelity of a system backup (issue 34): hard links, extended
//! attributes, POSIX ACLs, file capabilities, sparse files, FIFOs, device
//! nodes, inode flags, nanosecond times and owners, as root and as an
//! ordinary user.
//!
//! The trees are compared by Debian's own tools (`find -printf`,
//! `getfattr`, `getfacl`, `lsattr`, `du`, `stat`, `cmp`), not by the code
//! under test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use crate::util::{is_root, set_mtime, write, Scratch};

/// Runs `program args` in `dir`; its standard output.
fn tool(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (Debian packages attr, acl, e2fsprogs)"));
    assert!(
        out.status.success(),
        "{program} {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn sh(script: &str) {
    let out = Command::new("sh").args(["-ec", script]).output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The blocks of a recursive `getfattr` or `getfacl` listing (one per
/// file, headed `# file: PATH`), keyed by path: their walk order is the
/// directory's, which differs between two trees.
fn blocks(listing: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for block in listing.split("\n\n") {
        let mut lines = block.lines();
        let Some(head) = lines.next() else { continue };
        if let Some(path) = head.strip_prefix("# file: ") {
            let rest: Vec<&str> = lines.collect();
            out.insert(path.to_owned(), rest.join("\n"));
        }
    }
    out
}

/// Every entry but `skip`: path, type, mode, owner, group, mtime with
/// nanoseconds and size (directories' sizes left out: they depend on the
/// file system's history).
fn entries(dir: &Path, skip: &[&str]) -> BTreeSet<String> {
    tool(
        dir,
        "find",
        &[
            ".",
            "-mindepth",
            "1",
            "-printf",
            "%p|%y|%m|%U|%G|%u|%g|%T@|%s\n",
        ],
    )
    .lines()
    .filter(|l| !skip.iter().any(|s| l.starts_with(&format!("./{s}|"))))
    .map(|l| {
        let f: Vec<&str> = l.split('|').collect();
        if f[1] == "d" {
            f[..8].join("|")
        } else {
            l.to_owned()
        }
    })
    .collect()
}

/// The hard link groups: the sets of paths that share an inode.
fn link_groups(dir: &Path) -> BTreeSet<Vec<String>> {
    let mut by_inode: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in tool(dir, "find", &[".", "-type", "f", "-printf", "%i %p\n"]).lines() {
        let (ino, path) = l.split_once(' ').unwrap();
        by_inode
            .entry(ino.to_owned())
            .or_default()
            .push(path.to_owned());
    }
    by_inode
        .into_values()
        .filter(|g| g.len() > 1)
        .map(|mut g| {
            g.sort();
            g
        })
        .collect()
}

/// Allocated bytes of a file.
fn allocated(path: &Path) -> u64 {
    let out = tool(
        path.parent().unwrap(),
        "du",
        &["-B1", path.file_name().unwrap().to_str().unwrap()],
    );
    out.split_whitespace().next().unwrap().parse().unwrap()
}

/// Compares two trees with the checkers above.
fn assert_same_system_tree(src: &Path, out: &Path, skip: &[&str]) {
    assert_eq!(entries(src, skip), entries(out, skip), "find -printf");
    let xattrs = ["-R", "-P", "-h", "-d", "-m", "-", "-e", "hex", "."];
    let a = blocks(&tool(src, "getfattr", &xattrs));
    let b = blocks(&tool(out, "getfattr", &xattrs));
    assert!(!a.is_empty(), "the source tree has extended attributes");
    assert_eq!(a, b, "getfattr");
    let acls = ["-R", "-P", "-n", "--skip-base", "."];
    let a = blocks(&tool(src, "getfacl", &acls));
    let b = blocks(&tool(out, "getfacl", &acls));
    assert!(!a.is_empty(), "the source tree has ACLs");
    assert_eq!(a, b, "getfacl");
    assert_eq!(link_groups(src), link_groups(out), "hard links");
    assert!(!link_groups(src).is_empty());
    for l in tool(src, "find", &[".", "-type", "f"]).lines() {
        tool(src, "cmp", &[l, out.join(l).to_str().unwrap()]);
    }
    // Holes stay holes: the restored file takes no more room than the
    // original (block rounding aside).
    let (a, b) = (
        allocated(&src.join("sparse.img")),
        allocated(&out.join("sparse.img")),
    );
    assert!(a < 1 << 20, "the test's sparse file is sparse ({a} bytes)");
    assert!(
        b <= a + 16 * 1024,
        "sparse.img: {b} bytes allocated, {a} at the source"
    );
}

/// A tree of what an ordinary user can make: extended attributes in the
/// user namespace, ACLs (access and default), hard links in and across
/// directories, a sparse file, a FIFO, a socket, nanosecond times, and
/// permissions a restore may or may not create files with.
fn user_tree(root: &Path) {
    write(&root.join("plain.txt"), b"plain\n");
    write(&root.join("xattr.txt"), b"with attributes\n");
    write(&root.join("acl.txt"), b"with an ACL\n");
    write(&root.join("dacl/inside.txt"), b"inherits\n");
    write(&root.join("links/a"), b"one file, three names\n");
    std::fs::create_dir_all(root.join("other")).unwrap();
    std::fs::hard_link(root.join("links/a"), root.join("links/b")).unwrap();
    std::fs::hard_link(root.join("links/a"), root.join("other/c")).unwrap();
    write(&root.join("pair1"), b"two names\n");
    std::fs::hard_link(root.join("pair1"), root.join("pair2")).unwrap();
    let r = root.display();
    sh(&format!(
        "cd '{r}'
         setfattr -n user.comment -v hello xattr.txt
         setfattr -n user.binary -v 0x00ff10 xattr.txt
         setfattr -n user.on-dir -v yes dacl
         setfacl -m u:65534:r,g:65534:rw acl.txt
         setfacl -d -m u:65534:rx,o::- dacl
         truncate -s 48M sparse.img
         printf 'data in the middle' | dd of=sparse.img bs=1 seek=1048576 conv=notrunc status=none
         printf 'data near the end' | dd of=sparse.img bs=1 seek=40000000 conv=notrunc status=none
         mkfifo fifo
         printf g > group-reads && chmod 640 group-reads
         printf o > owner-reads && chmod 400 owner-reads
         printf e > all-write && chmod 666 all-write
         printf n > not-group && chmod 604 not-group
         python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind(\"sock\")'"
    ));
    set_mtime(&root.join("plain.txt"), 1_600_000_000, 123_456_789);
    set_mtime(&root.join("fifo"), 1_500_000_000, 987_654_321);
    set_mtime(&root.join("links/a"), 1_400_000_000, 1);
    set_mtime(&root.join("dacl"), 1_300_000_000, 7);
}

/// What only root makes: a file capability, a trusted attribute, device
/// nodes, owners by name and number, a setuid file and inode flags.
fn root_tree(root: &Path) {
    user_tree(root);
    write(&root.join("cap-bin"), b"#!/bin/sh\n");
    write(&root.join("trusted.txt"), b"t\n");
    write(&root.join("owned/by-nobody"), b"n\n");
    write(&root.join("owned/by-number"), b"u\n");
    write(&root.join("setuid"), b"s\n");
    write(&root.join("immutable.txt"), b"cannot change\n");
    write(&root.join("append.log"), b"only grows\n");
    write(&root.join("nodump.txt"), b"not for dump\n");
    let r = root.display();
    // security.capability: version 2, effective, CAP_NET_RAW permitted.
    sh(&format!(
        "cd '{r}'
         chmod 755 cap-bin
         setfattr -n security.capability -v 0x0100000200200000000000000000000000000000 cap-bin
         setfattr -n trusted.note -v secret trusted.txt
         mknod null-like c 1 3
         mknod block-like b 7 200
         chown nobody:nogroup owned/by-nobody
         chown 4242:4343 owned/by-number
         chmod 4755 setuid
         chattr +d nodump.txt"
    ));
    set_mtime(&root.join("null-like"), 1_450_000_000, 450);
    set_mtime(&root.join("owned"), 1_350_000_000, 350);
}

/// Sets the immutable and append-only flags (last: nothing changes the
/// files afterwards).
fn set_flags(root: &Path) {
    sh(&format!(
        "cd '{}' && chattr +i immutable.txt && chattr +a append.log",
        root.display()
    ));
}

/// Clears the flags that stop a temporary directory from being removed.
fn clear_flags(dirs: &[&Path]) {
    for d in dirs {
        for f in ["immutable.txt", "append.log"] {
            let p = d.join(f);
            if p.exists() {
                let _ = Command::new("chattr").args(["-i", "-a"]).arg(&p).status();
            }
        }
    }
}

fn flags_of(dir: &Path) -> String {
    tool(
        dir,
        "lsattr",
        &[
            "-d",
            "immutable.txt",
            "append.log",
            "nodump.txt",
            "plain.txt",
        ],
    )
    .lines()
    .map(|l| l.split_whitespace().next().unwrap().to_owned() + "\n")
    .collect()
}

/// As root, everything a system backup of `/etc` or `/home` meets comes
/// back as it was, checked by Debian's tools; a socket is skipped with a
/// note (exit 0); owners follow names unless `--numeric-owner`, and
/// `--no-owner` leaves them to root; a hard-linked file restored without
/// its first name gets its content.
#[test]
fn a_system_tree_round_trips_as_root() {
    assert!(
        is_root(),
        "this test checks what only root can restore; run the tests as root (as CI does)"
    );
    let s = Scratch::new();
    let src = s.path("src");
    root_tree(&src);
    set_flags(&src);
    let out = s.path("restored");
    let result = std::panic::catch_unwind(|| {
        s.init();
        let run = s
            .cmd()
            .args(["create", src.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(0), "{stderr}");
        assert_eq!(
            stderr.matches("socket skipped").count(),
            1,
            "one note for the socket: {stderr}"
        );
        assert!(stderr.contains("socket skipped"), "{stderr}");
        let text = s.ok(&["restore", "latest", "--to", out.to_str().unwrap()]);
        assert!(!text.contains("warning"), "{text}");
        assert_same_system_tree(&src, &out, &["sock"]);
        assert!(!out.join("sock").exists());
        let flags = flags_of(&out);
        assert_eq!(flags_of(&src), flags, "lsattr");
        let first: Vec<&str> = flags.lines().collect();
        assert!(
            first[0].contains('i') && first[1].contains('a') && first[2].contains('d'),
            "{flags}"
        );
        let devices = |d: &Path| tool(d, "stat", &["-c", "%n %F %t:%T", "null-like", "block-like"]);
        assert_eq!(devices(&src), devices(&out));
        // --no-owner: everything is root's; --numeric-owner keeps numbers.
        let plain = s.path("no-owner");
        s.ok(&[
            "restore",
            "latest",
            "--to",
            plain.to_str().unwrap(),
            "--no-owner",
        ]);
        let owners = |d: &Path| {
            tool(
                d,
                "stat",
                &["-c", "%u:%g", "owned/by-nobody", "owned/by-number"],
            )
        };
        assert_eq!(owners(&plain), "0:0\n0:0\n");
        let numeric = s.path("numeric");
        s.ok(&[
            "restore",
            "latest",
            "--to",
            numeric.to_str().unwrap(),
            "--numeric-owner",
        ]);
        assert_eq!(owners(&numeric), owners(&src));
        // Only the third name of a hard-linked file: restored with content.
        let one = s.path("one-name");
        s.ok(&[
            "restore",
            "latest",
            "--to",
            one.to_str().unwrap(),
            "--include",
            "other/c",
        ]);
        assert_eq!(
            std::fs::read(one.join("other/c")).unwrap(),
            b"one file, three names\n"
        );
        // The independent reader, written from REPOSITORY_FORMAT.md,
        // restores the same tree (inode flags aside, which it leaves).
        let by_spec = s.path("by-spec");
        let v = crate::format_reader::reader_json(
            &s.repo,
            crate::util::PASSWORD,
            &["restore".as_ref(), "latest".as_ref(), by_spec.as_os_str()],
        );
        assert_eq!(v["hard_links"], 3, "{v}");
        assert_eq!(v["specials"], 3, "{v}");
        assert_same_system_tree(&src, &by_spec, &["sock"]);
        // The file restore check compares what it can.
        let scratch = s.path("restore-test");
        s.ok(&[
            "verify",
            "latest",
            "--restore-test",
            scratch.to_str().unwrap(),
        ]);
        assert!(
            !scratch.exists(),
            "the check's restore, immutable files and all, is removed"
        );
        clear_flags(&[&plain, &numeric]);
    });
    clear_flags(&[&src, &out]);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// Runs `backup ARGS` as the user nobody (65534) with `home` and the
/// repository `repo`: its exit code and its outputs.
fn nobody(home: &Path, repo: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_backup"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("BACKUP_REPOSITORY", repo)
        .env("BACKUP_PASSWORD", crate::util::PASSWORD)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// As an ordinary user, a tree of what such a user can make round-trips,
/// and restoring root's snapshot says what needs root instead of failing.
#[test]
fn a_user_tree_round_trips_as_an_ordinary_user() {
    assert!(
        is_root(),
        "the test switches to an ordinary user with setpriv; run the tests as root (as CI does)"
    );
    let s = Scratch::new();
    let home = s.path("home");
    std::fs::create_dir_all(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    let as_nobody = |args: &[&str]| nobody(&home, &home.join("repo"), args);
    // The user's own tree (made here, then given to the user: a change
    // of owner keeps attributes, ACLs, links and times).
    let src = home.join("src");
    user_tree(&src);
    sh(&format!("chown -R -h 65534:65534 '{}'", src.display()));
    let (code, text) = as_nobody(&["init"]);
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = as_nobody(&["create", src.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{text}");
    let out = home.join("restored");
    let (code, text) = as_nobody(&["restore", "latest", "--to", out.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{text}");
    assert_same_system_tree(&src, &out, &["sock"]);
    // Root's snapshot, restored by the user: what needs root is named.
    let rooted = s.path("rooted");
    root_tree(&rooted);
    let root_repo = Scratch::new();
    root_repo.init();
    root_repo.create(&rooted, &[]);
    // The user may read the repository and take its shared lock.
    sh(&format!("chmod -R a+rwX '{}'", root_repo.repo));
    let back = home.join("from-root");
    let (code, text) = nobody(
        &home,
        Path::new(&root_repo.repo),
        &["restore", "latest", "--to", back.to_str().unwrap()],
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("device nodes were not restored: creating them needs root"),
        "{text}"
    );
    assert!(
        text.contains("`trusted` namespace were not restored"),
        "{text}"
    );
    assert!(
        text.contains("`security` namespace were not restored"),
        "{text}"
    );
    assert_eq!(
        std::fs::read(back.join("links/b")).unwrap(),
        b"one file, three names\n"
    );
    assert_eq!(link_groups(&rooted), link_groups(&back));
}

/// A repository of format version 2 (made before version 3) is still read
/// and written: a backup into it keeps what version 2 holds, says in one
/// warning what it left out (exit 4), and leaves FIFOs out; older
/// programs can still read it, since nothing of version 3 is written; a
/// copy of a version 3 snapshot into it is refused rather than dropping
/// what it holds.
#[test]
fn a_version_2_repository_keeps_its_format() {
    let s = Scratch::new();
    s.init();
    let config = Path::new(&s.repo).join("config");
    let version = || -> serde_json::Value {
        serde_json::from_slice::<serde_json::Value>(&std::fs::read(&config).unwrap()).unwrap()
    };
    let mut v = version();
    assert_eq!(v["version"], 3, "{v}");
    v["version"] = 2.into();
    std::fs::write(&config, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let src = s.path("src");
    write(&src.join("a.txt"), b"a\n");
    std::fs::hard_link(src.join("a.txt"), src.join("b.txt")).unwrap();
    sh(&format!(
        "cd '{}' && setfattr -n user.k -v v a.txt && mkfifo pipe",
        src.display()
    ));
    let run = s
        .cmd()
        .args(["create", src.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("repository format version 2 cannot record")
            && stderr.contains("hard links")
            && stderr.contains("extended attributes"),
        "{stderr}"
    );
    assert!(stderr.contains("pipe: special file left out"), "{stderr}");
    let out = s.path("out");
    s.ok(&["restore", "latest", "--to", out.to_str().unwrap()]);
    assert!(!out.join("pipe").exists());
    assert_eq!(std::fs::read(out.join("b.txt")).unwrap(), b"a\n");
    assert!(
        link_groups(&out).is_empty(),
        "hard links are copies in version 2"
    );
    assert_eq!(tool(&out, "getfattr", &["-d", "a.txt"]), "");
    assert_eq!(version()["version"], 2);
    // A copy must keep everything: a version 3 snapshot with a hard link
    // is not copied into this version 2 repository.
    let newer = Scratch::new();
    newer.init();
    newer.create(&src, &[]);
    let run = newer
        .cmd()
        .env("BACKUP_TO_PASSWORD", crate::util::PASSWORD)
        .args(["copy", "--to-repo", &s.repo])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{stderr}");
    assert!(
        stderr.contains("format version 2 cannot record") && stderr.contains("hard links"),
        "{stderr}"
    );
    assert_eq!(
        s.json(&["list"]).as_array().unwrap().len(),
        1,
        "nothing was copied"
    );
}

#[test]
fn a_hard_linked_file_is_read_once_and_restored_as_links() {
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    let big = crate::util::random_bytes(3_000_000, 34);
    write(&src.join("a/big.dat"), &big);
    std::fs::create_dir_all(src.join("b")).unwrap();
    std::fs::create_dir_all(src.join("c")).unwrap();
    std::fs::hard_link(src.join("a/big.dat"), src.join("b/big.dat")).unwrap();
    std::fs::hard_link(src.join("a/big.dat"), src.join("c/big-too.dat")).unwrap();
    write(&src.join("small.txt"), b"small\n");
    let (_, first) = s.create(&src, &[]);
    let stat = |k: &str| first["snapshot"]["stats"][k].as_u64().unwrap();
    assert_eq!(stat("files"), 4, "{first}");
    assert_eq!(stat("logical_bytes"), 3 * 3_000_000 + 6, "{first}");
    assert_eq!(
        stat("bytes_read"),
        3_000_000 + 6,
        "the later names are not read again: {first}"
    );
    let out = s.path("out");
    s.ok(&["restore", "latest", "--to", out.to_str().unwrap()]);
    assert_eq!(link_groups(&src), link_groups(&out));
    assert_eq!(std::fs::read(out.join("c/big-too.dat")).unwrap(), big);
    // Over a tree where the first name is kept as it was, a later name
    // gets its own content.
    let over = s.path("over");
    write(&over.join("a/big.dat"), b"kept as it was\n");
    s.ok(&[
        "restore",
        "latest",
        "--to",
        over.to_str().unwrap(),
        "--overwrite",
        "never",
    ]);
    assert_eq!(
        std::fs::read(over.join("a/big.dat")).unwrap(),
        b"kept as it was\n"
    );
    assert_eq!(std::fs::read(over.join("b/big.dat")).unwrap(), big);
    assert_eq!(std::fs::read(over.join("c/big-too.dat")).unwrap(), big);
}
