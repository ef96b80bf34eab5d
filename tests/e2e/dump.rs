//! Taking one thing out of a snapshot without restoring it (`backup
//! dump`), issue 33: a file as it is, a directory as tar (checked by the
//! system's `tar`, not by our reader), a database snapshot's stream.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

use backup_testkit::redis::RedisServer;

use crate::util::{assert_same_tree, random_bytes, set_mtime, write, Scratch};

#[test]
fn dump_files_and_directories() {
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    let big = random_bytes(3 << 20, 11);
    write(&src.join("data/big.bin"), &big);
    write(&src.join("data/small.txt"), b"small\n");
    write(&src.join("empty"), b"");
    let long = "a-directory-name-well-past-the-hundred-bytes-a-plain-tar-header-holds-for-a-path-so-it-needs-gnu-long-names";
    write(&src.join(long).join("inner.txt"), b"deep");
    fs::set_permissions(
        src.join("data/small.txt"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::os::unix::fs::symlink("data/small.txt", src.join("link")).unwrap();
    fs::hard_link(src.join("data/small.txt"), src.join("hard")).unwrap();
    set_mtime(&src.join("data/big.bin"), 1_600_000_000, 0);
    let (id, _) = s.create(&src, &[]);

    // A file: its bytes, to standard output or to --output.
    let out = s.run(&["dump", "latest", "data/big.bin"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == big, "the dumped file differs");
    let to = s.path("small.out");
    s.ok(&[
        "dump",
        &id[..8],
        "/data/small.txt",
        "--output",
        to.to_str().unwrap(),
    ]);
    assert_eq!(fs::read(&to).unwrap(), b"small\n");
    let out = s.run(&["dump", "latest", "empty"]);
    assert!(out.status.success() && out.stdout.is_empty());

    // A directory, and the whole snapshot: tar archives that the system's
    // tar extracts into the same tree (modes, times, links, long names).
    let tarball = s.path("all.tar");
    s.ok(&["dump", "latest", "/", "-O", tarball.to_str().unwrap()]);
    let into = s.path("extracted");
    fs::create_dir_all(&into).unwrap();
    let x = Command::new("tar")
        .args(["-x", "-p", "-f"])
        .arg(&tarball)
        .arg("-C")
        .arg(&into)
        .output()
        .unwrap();
    assert!(
        x.status.success(),
        "tar -x: {}",
        String::from_utf8_lossy(&x.stderr)
    );
    assert_same_tree(&src, &into);
    let small = fs::metadata(into.join("data/small.txt")).unwrap();
    assert_eq!(small.mode() & 0o7777, 0o600);
    assert_eq!(
        small.ino(),
        fs::metadata(into.join("hard")).unwrap().ino(),
        "the hard link is a link again"
    );
    assert_eq!(
        fs::read_link(into.join("link")).unwrap().to_str(),
        Some("data/small.txt")
    );
    assert_eq!(
        fs::metadata(into.join("data/big.bin")).unwrap().mtime(),
        1_600_000_000
    );

    // A subdirectory: names start below it.
    let out = s.run(&["dump", "latest", "data"]);
    assert!(out.status.success());
    let listed = Command::new("tar")
        .args(["-t", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(&out.stdout)?;
            c.wait_with_output()
        })
        .unwrap();
    let mut names: Vec<String> = String::from_utf8(listed.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    names.sort();
    assert_eq!(names, ["big.bin", "small.txt"]);

    // Refusals say what is wrong and write nothing.
    let missing = s.path("missing.out");
    let err = s.fails(
        &[
            "dump",
            "latest",
            "data/nope",
            "-O",
            missing.to_str().unwrap(),
        ],
        1,
    );
    assert!(err.contains("`data/nope`"), "{err}");
    assert!(!missing.exists(), "no output file for a wrong path");
    let err = s.fails(&["dump", "latest", "link"], 2);
    assert!(err.contains("symbolic link"), "{err}");
    s.fails(&["dump", "ffffffff", "data"], 1);
}

#[test]
fn dump_a_database_stream() {
    let server = RedisServer::start();
    let mut con = server.connection();
    for i in 0..50 {
        redis::cmd("SET")
            .arg(format!("key:{i}"))
            .arg(format!("value {i}"))
            .exec(&mut con)
            .unwrap();
    }
    let s = Scratch::new();
    s.init();
    s.json(&["create", &server.url()]);
    // The stored RDB, as `backup ls` names it; redis-check-rdb reads it.
    let out = s.run(&["dump", "latest", "/dump.rdb"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.starts_with(b"REDIS"));
    let rdb = s.path("dump.rdb");
    fs::write(&rdb, &out.stdout).unwrap();
    let check = Command::new("redis-check-rdb").arg(&rdb).output().unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{text}");
    assert!(
        text.contains("keys read: 50") || text.contains("50 keys"),
        "{text}"
    );
}
