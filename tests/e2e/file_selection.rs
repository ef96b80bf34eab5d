//! What a files backup leaves out or keeps to (issue 34): caches, marker
//! files, large files, exclude files, `--files-from` lists (newline and
//! NUL separated), and other file systems mounted below the source.

use std::path::Path;
use std::process::Command;

use crate::util::{files_under, write, Scratch};

/// The relative paths of every file and directory below `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = walk(dir, dir);
    out.sort();
    out
}

fn walk(root: &Path, dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        out.push(p.strip_prefix(root).unwrap().display().to_string());
        if p.symlink_metadata().unwrap().is_dir() {
            out.extend(walk(root, &p));
        }
    }
    out
}

fn restore(s: &Scratch, to: &str) -> std::path::PathBuf {
    let out = s.path(to);
    s.ok(&["restore", "latest", "--to", out.to_str().unwrap()]);
    out
}

#[test]
fn caches_markers_large_files_and_exclude_files_are_left_out() {
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    write(&src.join("keep/a.txt"), b"a");
    write(
        &src.join("cache/CACHEDIR.TAG"),
        b"Signature: 8a477f597d28d172789f06886806bc55\n# a cache\n",
    );
    write(&src.join("cache/blob"), b"cached");
    write(&src.join("cache/sub/deep"), b"cached");
    // Not a cache: the tag lacks the signature.
    write(
        &src.join("notcache/CACHEDIR.TAG"),
        b"Signature: something else\n",
    );
    write(&src.join("notcache/x"), b"x");
    write(&src.join("private/.nobackup"), b"");
    write(&src.join("private/secret"), b"s");
    write(&src.join("big.iso"), &vec![7u8; 2 << 20]);
    write(&src.join("small.bin"), &vec![7u8; 1000]);
    write(&src.join("build/out.o"), b"o");
    write(&src.join("notes.tmp"), b"t");
    let patterns = s.path("patterns");
    write(&patterns, b"# build products\nbuild\n\n*.tmp\n");
    let src_arg = src.to_str().unwrap();
    s.ok(&[
        "create",
        src_arg,
        "--exclude-caches",
        "--exclude-if-present",
        ".nobackup",
        "--exclude-larger-than",
        "1MiB",
        "--exclude-file",
        patterns.to_str().unwrap(),
    ]);
    let out = restore(&s, "out");
    assert_eq!(
        listing(&out),
        [
            "cache",
            "cache/CACHEDIR.TAG",
            "keep",
            "keep/a.txt",
            "notcache",
            "notcache/CACHEDIR.TAG",
            "notcache/x",
            "private",
            "private/.nobackup",
            "small.bin",
        ]
    );
    // A missing exclude file is a usage error and saves nothing.
    let err = s.fails(
        &["create", src_arg, "--exclude-file", "/nonexistent/patterns"],
        2,
    );
    assert!(
        err.contains("cannot read --exclude-file /nonexistent/patterns"),
        "{err}"
    );
    // Files options on a database source are refused.
    let err = s.fails(&["create", "redis://127.0.0.1:1", "--exclude-caches"], 2);
    assert!(err.contains("applies to files sources"), "{err}");
}

#[test]
fn files_from_lists_back_up_only_what_they_name() {
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    write(&src.join("etc/app/app.yml"), b"app");
    write(&src.join("etc/app/other.yml"), b"other");
    write(&src.join("etc/hosts"), b"hosts");
    write(&src.join("var/lib/data/1"), b"1");
    write(&src.join("var/lib/data/2"), b"2");
    write(&src.join("var/log/big.log"), b"log");
    write(&src.join("with space/and\nnewline"), b"odd");
    let list = s.path("list");
    write(
        &list,
        format!(
            "# what matters\netc/app/app.yml\n{}/var/lib/data\n./etc/hosts\r\nmissing/file\n",
            src.display()
        )
        .as_bytes(),
    );
    let src_arg = src.to_str().unwrap();
    let run = s
        .cmd()
        .args(["create", src_arg, "--files-from", list.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("missing/file: listed in --files-from but not found"),
        "{stderr}"
    );
    let out = restore(&s, "out");
    assert_eq!(
        listing(&out),
        [
            "etc",
            "etc/app",
            "etc/app/app.yml",
            "etc/hosts",
            "var",
            "var/lib",
            "var/lib/data",
            "var/lib/data/1",
            "var/lib/data/2",
        ]
    );
    // NUL-separated, as `find -print0` writes: names with newlines.
    let list0 = s.path("list0");
    write(&list0, b"with space/and\nnewline\0etc/hosts\0");
    s.ok(&[
        "create",
        src_arg,
        "--files-from",
        list0.to_str().unwrap(),
        "-0",
    ]);
    let out0 = restore(&s, "out0");
    assert_eq!(files_under(&out0).len(), 2, "{:?}", listing(&out0));
    assert_eq!(
        std::fs::read(out0.join("with space/and\nnewline")).unwrap(),
        b"odd"
    );
    // Paths outside the source, `..`, and empty lists are refused.
    let bad = s.path("bad");
    for (text, says) in [
        ("/etc/passwd\n", "is outside the source directory"),
        ("etc/../../x\n", "leaves the source directory"),
        ("# nothing\n\n", "name no path"),
    ] {
        write(&bad, text.as_bytes());
        let err = s.fails(
            &["create", src_arg, "--files-from", bad.to_str().unwrap()],
            2,
        );
        assert!(err.contains(says), "{text:?}: {err}");
    }
    let err = s.fails(&["create", src_arg, "-0"], 2);
    assert!(err.contains("--files-from"), "{err}");
}

/// A tmpfs mounted inside the source: with `--one-file-system` its mount
/// point is kept, empty; without, its files are backed up.
#[test]
fn one_file_system_keeps_mount_points_empty() {
    assert!(
        crate::util::is_root(),
        "mounting a tmpfs needs root; run the tests as root (as CI does)"
    );
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    write(&src.join("here.txt"), b"here");
    let mnt = src.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let status = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=4m",
            "backup-test",
            mnt.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success(), "mount -t tmpfs");
    let result = std::panic::catch_unwind(|| {
        write(&mnt.join("elsewhere.txt"), b"on the tmpfs");
        let src_arg = src.to_str().unwrap();
        s.ok(&["create", src_arg, "--one-file-system"]);
        let out = restore(&s, "one");
        assert_eq!(listing(&out), ["here.txt", "mnt"]);
        s.ok(&["create", src_arg]);
        let out = restore(&s, "all");
        assert_eq!(listing(&out), ["here.txt", "mnt", "mnt/elsewhere.txt"]);
    });
    let _ = Command::new("umount").arg(&mnt).status();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
