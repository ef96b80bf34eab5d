//! `backupd --check-config`: a configuration is validated, its secrets
//! read and its repositories opened without starting anything; with
//! `--deep` writes and sources are probed too. (The daemon's end-to-end
//! tests, which run scheduled jobs against real repositories, are in
//! `tests/e2e`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

fn check(config: &Path, envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_backupd"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(["--check-config", "--config"])
        .arg(config);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

const CONFIG: &str = r#"
[daemon]
listen = "127.0.0.1:0"
api_token = { env = "CHECK_TOKEN" }

[repositories.main]
url = "/tmp/backupd-check-config-repo"
password = { env = "CHECK_PASSWORD" }
options = { "retry.max-attempts" = "3" }

[jobs.files]
repository = "main"
source = "/srv/data"
schedule = "0 0 * * *"
"#;

/// A repository at `dir` with the password `p`, and a configuration
/// naming it whose job backs up `source`.
fn configured(dir: &Path, source: &Path) -> std::path::PathBuf {
    use backup_core::keys::KdfParams;
    use backup_core::repo::{InitOptions, Repository};
    let repo = dir.join("repo");
    let sink = backup_ops::repository::RepoSpec::new(repo.to_str().unwrap(), &[])
        .unwrap()
        .sink()
        .unwrap();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(Repository::init(
            sink,
            Some(b"p"),
            &InitOptions {
                kdf: KdfParams::insecure_fast(),
                ..InitOptions::default()
            },
        ))
        .unwrap();
    let path = dir.join("backupd.toml");
    std::fs::write(
        &path,
        CONFIG
            .replace("/tmp/backupd-check-config-repo", repo.to_str().unwrap())
            .replace("/srv/data", source.to_str().unwrap()),
    )
    .unwrap();
    path
}

#[test]
fn a_valid_configuration_and_its_secrets_pass() {
    let dir = tempfile::tempdir().unwrap();
    let path = configured(dir.path(), dir.path());
    let out = check(&path, &[("CHECK_TOKEN", "t"), ("CHECK_PASSWORD", "p")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("is valid: 1 repository, 1 job, 0 notification channels"),
        "{stdout}"
    );
    assert!(stdout.contains("repository main: opens"), "{stdout}");
}

/// What `backup health` would find fails `--check-config` too: a
/// repository that is not there or a wrong password at once, a source
/// that is not there with `--deep`.
#[test]
fn a_missing_repository_or_a_wrong_password_fails_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = configured(dir.path(), dir.path());
    let out = check(&path, &[("CHECK_TOKEN", "t"), ("CHECK_PASSWORD", "wrong")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("repository main") && err.contains("password"),
        "{err}"
    );

    std::fs::remove_dir_all(dir.path().join("repo")).unwrap();
    let out = check(&path, &[("CHECK_TOKEN", "t"), ("CHECK_PASSWORD", "p")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("repository main"), "{err}");
    // How to create it, as the README says (issue 28 item 17).
    assert!(err.contains("--repo main init"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let path = configured(dir.path(), &dir.path().join("no-such-source"));
    let env = [("CHECK_TOKEN", "t"), ("CHECK_PASSWORD", "p")];
    assert!(
        check(&path, &env).status.success(),
        "sources are probed with --deep only"
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_backupd"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env)
        .args(["--check-config", "--deep", "--config"])
        .arg(&path);
    let out = cmd.output().unwrap();
    let (stdout, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}{err}");
    assert!(stdout.contains("accepts writes"), "{stdout}");
    assert!(
        err.contains("source files") && err.contains("no-such-source"),
        "{err}"
    );
}

#[test]
fn a_missing_secret_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backupd.toml");
    std::fs::write(&path, CONFIG).unwrap();
    let out = check(&path, &[("CHECK_TOKEN", "t")]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("repositories.main.password") && err.contains("CHECK_PASSWORD"),
        "{err}"
    );
}

#[test]
fn unknown_keys_and_storage_options_name_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backupd.toml");
    std::fs::write(
        &path,
        CONFIG.replace("retry.max-attempts", "retry.max-atempts"),
    )
    .unwrap();
    let out = check(&path, &[("CHECK_TOKEN", "t"), ("CHECK_PASSWORD", "p")]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 9") && err.contains("retry.max-atempts"),
        "{err}"
    );
    std::fs::write(&path, format!("{CONFIG}colour = \"blue\"\n")).unwrap();
    let out = check(&path, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 15") && err.contains("colour"), "{err}");
}
