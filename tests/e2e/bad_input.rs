//! Bad input ends with a clear message, the right exit code, and no change.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::{files_under, random_bytes, write, Scratch};

/// The repository's files, except the audit trail, which records failed
/// operations too (DESIGN.md section 7).
fn repo_files(s: &Scratch) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let audit = Path::new(&s.repo).join("audit");
    files_under(Path::new(&s.repo))
        .into_iter()
        .filter(|p| !p.starts_with(&audit))
        .map(|p| {
            let d = fs::read(&p).unwrap();
            (p, d)
        })
        .collect()
}

#[test]
fn wrong_password_unknown_snapshot_and_missing_repository() {
    let s = Scratch::new();
    let err = s.fails(&["list"], 1);
    assert!(
        err.contains("no repository found") && err.contains("backup init"),
        "{err}"
    );
    s.init();
    let src = s.path("src");
    write(&src.join("f"), b"data");
    s.create(&src, &[]);
    let before = repo_files(&s);
    let out = s
        .cmd()
        .env("BACKUP_PASSWORD", "not the password")
        .args(["list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong password"));
    let err = s.fails(
        &["restore", "0123abcd", "--to", s.path("x").to_str().unwrap()],
        1,
    );
    assert!(err.contains("snapshot `0123abcd` not found"), "{err}");
    let err = s.fails(&["show", "not-hex!"], 2);
    assert!(err.contains("not a snapshot id"), "{err}");
    let err = s.fails(&["create", s.path("does-not-exist").to_str().unwrap()], 1);
    assert!(err.contains("does-not-exist"), "{err}");
    // The cause (the operating system's error) is shown once, not once per
    // layer that passed it on.
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    let err = s.fails(&["init"], 2);
    assert!(err.contains("already exists"), "{err}");
    assert!(before == repo_files(&s), "the repository changed");
    let out = s
        .cmd()
        .env_remove("BACKUP_PASSWORD")
        .args(["list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BACKUP_PASSWORD"));
}

/// A setting of one kind of source given for another is a usage error that
/// names it, before anything is read or written.
#[test]
fn settings_of_another_kind_of_source_are_refused() {
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    write(&src.join("f"), b"data");
    let before = repo_files(&s);
    let src = src.to_str().unwrap();
    for (flags, says) in [
        (&["--pg-globals"][..], "PostgreSQL"),
        (&["--mongo-users"][..], "MongoDB"),
        (&["--mode", "keys"][..], "Redis"),
    ] {
        let mut args = vec!["create", src];
        args.extend_from_slice(flags);
        let err = s.fails(&args, 2);
        assert!(err.contains(flags[0]) && err.contains(says), "{err}");
    }
    assert!(before == repo_files(&s), "the repository changed");
}

#[test]
fn malformed_urls() {
    let s = Scratch::new();
    for url in ["s3://", "gs:///prefix", "ftp://host/x", ""] {
        let out = s
            .cmd()
            .env("BACKUP_REPOSITORY", url)
            .args(["list"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{url}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("error:"), "{url}: {err}");
    }
    s.init();
    let err = s.fails(&["create", "gopher://x"], 2);
    assert!(err.contains("gopher"), "{err}");
}

#[test]
fn non_empty_restore_target_is_refused() {
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    write(&src.join("f"), &random_bytes(1000, 1));
    s.create(&src, &[]);
    let target = s.path("target");
    write(&target.join("precious"), b"keep me");
    let err = s.fails(&["restore", "latest", "--to", target.to_str().unwrap()], 1);
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(files_under(&target), vec![target.join("precious")]);
    assert_eq!(fs::read(target.join("precious")).unwrap(), b"keep me");
    let err = s.fails(
        &[
            "restore",
            "latest",
            "--to",
            target.join("precious").to_str().unwrap(),
        ],
        1,
    );
    assert!(err.contains("not a directory"), "{err}");
    let err = s.fails(
        &[
            "restore",
            "latest",
            "--to",
            s.path("new").to_str().unwrap(),
            "--drop",
        ],
        2,
    );
    assert!(err.contains("--drop"), "{err}");
}

#[test]
fn newer_repository_version_is_refused() {
    let s = Scratch::new();
    s.init();
    let config = Path::new(&s.repo).join("config");
    let text = fs::read_to_string(&config)
        .unwrap()
        .replace("\"version\": 3", "\"version\": 5");
    fs::write(&config, text).unwrap();
    let err = s.fails(&["list"], 2);
    assert!(
        err.contains("version 5") && err.contains("upgrade"),
        "{err}"
    );
}

#[test]
fn unreachable_s3_endpoint() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = Scratch::with_repo(
        "s3://bucket/repo".to_owned(),
        vec![
            (
                "AWS_ENDPOINT_URL".into(),
                format!("http://127.0.0.1:{port}"),
            ),
            ("AWS_ALLOW_HTTP".into(), "true".into()),
            ("AWS_ACCESS_KEY_ID".into(), "k".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "s".into()),
            ("AWS_REGION".into(), "us-east-1".into()),
        ],
    );
    let started = Instant::now();
    let err = s.fails(&["init", "-o", "retry.max-elapsed=3s"], 1);
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(
        err.contains(&port.to_string()) || err.contains("127.0.0.1"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
