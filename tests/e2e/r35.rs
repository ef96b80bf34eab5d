//! Regression tests of issue 35 ("Paper cuts seen while measuring"): what
//! operators' scripts see of the output when it goes into files and pipes.
//! Each test names the item it reproduces.

use std::io::Read as _;
use std::process::Stdio;

use crate::util::{write, Scratch, PASSWORD};

/// The binary with the scratch repository's settings, as a plain command
/// (whose outputs can go to files).
fn plain(s: &Scratch) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_backup"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", s.dir.path())
        .env("BACKUP_REPOSITORY", &s.repo)
        .env("BACKUP_PASSWORD", PASSWORD)
        .stdin(Stdio::null());
    c
}

/// Initialises a format version 1 repository, which cannot record a FIFO:
/// a backup of [`tree_with_fifo`] into it leaves the FIFO out with a
/// warning (version 3 records FIFOs).
fn init_version_1(s: &Scratch) {
    s.ok(&["init", "--id-hash", "hmac-sha256"]);
}

/// A tree holding a fifo, which a backup into a version 1 repository
/// leaves out with a warning.
fn tree_with_fifo(s: &Scratch) -> std::path::PathBuf {
    let src = s.path("src");
    write(&src.join("a.txt"), b"a");
    let status = std::process::Command::new("mkfifo")
        .arg(src.join("pipe"))
        .status()
        .unwrap();
    assert!(status.success());
    src
}

/// Items 1, 2 and 4: with standard error in a file, a warning is one
/// line in the CLI's own `warning:` form without colour codes (also with
/// `NO_COLOR` and `TERM=dumb`; `--color always` forces them); the run
/// exits with its own "saved with omissions" code, and its last line says
/// that the snapshot was saved and what it lacks.
#[test]
fn r35_1_2_4_warnings_are_single_plain_lines_and_omissions_have_their_exit_code() {
    let s = Scratch::new();
    init_version_1(&s);
    let src = tree_with_fifo(&s);
    let src = src.to_str().unwrap();
    let err_file = s.path("stderr.txt");
    for env in [None, Some(("NO_COLOR", "1")), Some(("TERM", "dumb"))] {
        let mut cmd = plain(&s);
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let out = cmd
            .args(["create", src])
            .stderr(std::fs::File::create(&err_file).unwrap())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(4), "{env:?}");
        let stderr = std::fs::read_to_string(&err_file).unwrap();
        assert!(!stderr.contains('\x1b'), "{env:?}: {stderr:?}");
        let lines: Vec<&str> = stderr.lines().collect();
        let about_fifo: Vec<&&str> = lines.iter().filter(|l| l.contains("pipe")).collect();
        assert_eq!(about_fifo.len(), 1, "one line per warning: {stderr}");
        assert!(about_fifo[0].starts_with("warning: "), "{stderr}");
        assert!(!stderr.contains("WARN"), "{stderr}");
        let last = lines.last().unwrap();
        assert!(
            last.contains("saved with omissions") && last.contains("1 entry could not be read"),
            "{stderr}"
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(
            stdout.contains("snapshot ") && stdout.contains(" saved"),
            "{stdout}"
        );
    }
    let out = s
        .cmd()
        .args(["--color", "always", "create", src])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\x1b[33mwarning\x1b[0m: "));
    // The saved snapshot is there, without the fifo.
    let list = s.json(&["list"]);
    assert_eq!(list.as_array().unwrap().len(), 4, "{list}");
    // A bad colour choice is a usage error.
    s.fails(&["--color", "sometimes", "list"], 2);
}

/// Item 3: the destination password of `copy` comes from `BACKUP_TO_*`,
/// and the error says so; a new password's error names its own sources.
#[test]
fn r35_3_password_errors_name_the_variables_that_give_them() {
    let s = Scratch::new();
    s.init();
    let dest = s.path("dest").to_str().unwrap().to_owned();
    let d = Scratch::with_repo(dest.clone(), Vec::new());
    d.init();
    let err = s.fails(&["copy", "--to-repo", &dest], 2);
    assert!(
        err.contains("BACKUP_TO_PASSWORD")
            && err.contains("BACKUP_TO_PASSWORD_FILE")
            && err.contains("--to-password-file"),
        "{err}"
    );
    assert!(!err.contains("set BACKUP_PASSWORD "), "{err}");
    // A wrong destination password: the hint names the destination's
    // variables, not the source's.
    let mut cmd = s.cmd();
    let out = cmd
        .env("BACKUP_TO_PASSWORD", "wrong")
        .args(["copy", "--to-repo", &dest])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("hint: check the destination's password"),
        "{err}"
    );
    // key add without a new password.
    let err = s.fails(&["key", "add"], 2);
    assert!(
        err.contains("BACKUP_NEW_PASSWORD") && err.contains("--new-password-file"),
        "{err}"
    );
    // The repository's own password, missing.
    let out = s
        .cmd()
        .env_remove("BACKUP_PASSWORD")
        .args(["list"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("set BACKUP_PASSWORD or BACKUP_PASSWORD_FILE"),
        "{err}"
    );
    let _ = PASSWORD;
}

/// Runs `backup ARGS` (split at spaces) with both outputs into a pipe
/// whose reader exits at once; returns its exit status as bash saw it.
fn into_closed_pipe(s: &Scratch, args: &str) -> String {
    let status_file = s.path("status");
    let status = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            r#""$0" {args} 2>&1 | true; echo "${{PIPESTATUS[0]}}" > "$1""#
        ))
        .arg(env!("CARGO_BIN_EXE_backup"))
        .arg(&status_file)
        .env("BACKUP_REPOSITORY", &s.repo)
        .env("BACKUP_PASSWORD", PASSWORD)
        .env("HOME", s.dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read_to_string(&status_file)
        .unwrap()
        .trim()
        .to_owned()
}

/// Issue 28 item 11 (closed pipes): a command whose reader went away ends
/// quietly, never with a panic (exit 101): `--json list` with its output
/// closed, and a warning `create` with both outputs closed.
#[test]
fn r28_11_a_closed_pipe_ends_a_command_quietly() {
    let s = Scratch::new();
    init_version_1(&s);
    let src = tree_with_fifo(&s);
    for _ in 0..3 {
        s.create(&s.path("src/a.txt"), &[]);
    }
    // The reader closes at once.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_backup"))
        .env("BACKUP_REPOSITORY", &s.repo)
        .env("BACKUP_PASSWORD", PASSWORD)
        .env("HOME", s.dir.path())
        .args(["--json", "list"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert_ne!(status.code(), Some(101), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // create with a warning, standard output and error both into a pipe
    // whose reader exits at once.
    let src_arg = format!("create {}", src.display());
    assert_ne!(into_closed_pipe(&s, &src_arg), "101", "create panicked");
    // Every command that prints, its output closed.
    for args in [
        "list",
        "show latest",
        "stats",
        "pitr",
        "audit",
        "key list",
        "verify",
        "drill --history",
        "report",
        "--json list",
        "--json stats",
        "--help",
        "restore --help",
    ] {
        assert_ne!(
            into_closed_pipe(&s, args),
            "101",
            "`backup {args}` panicked"
        );
    }
    // The snapshot was saved all the same.
    let list = s.json(&["list", "--source", src.to_str().unwrap()]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
}

/// Issue 34 (`--log-format json`): every line `backup` writes on standard
/// error is one JSON object, warnings and the final error included.
#[test]
fn r34_json_log_lines_are_one_object_each() {
    let s = Scratch::new();
    init_version_1(&s);
    let src = tree_with_fifo(&s);
    let out = plain(&s)
        .args(["--log-format", "json", "create", src.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(lines.iter().all(|l| l["level"] == "WARN"), "{stderr}");
    assert!(
        lines[1]["message"]
            .as_str()
            .unwrap()
            .contains("saved with omissions"),
        "{stderr}"
    );
    // The final error, with its exit code.
    let out = plain(&s)
        .env("BACKUP_LOG_FORMAT", "json")
        .args(["show", "ffffffff"])
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let line: serde_json::Value = serde_json::from_str(stderr.trim()).unwrap();
    assert_eq!(line["level"], "ERROR", "{stderr}");
    assert_eq!(
        line["exit_code"].as_u64(),
        out.status.code().map(|c| c as u64)
    );
    assert!(
        line["message"].as_str().unwrap().contains("ffffffff"),
        "{stderr}"
    );
}
