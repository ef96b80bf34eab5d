//! `backupd --check-config`: a configuration is validated and its secrets
//! read without starting anything. (The daemon's end-to-end tests, which
//! run scheduled jobs against real repositories, are in `tests/e2e`.)
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

#[test]
fn a_valid_configuration_and_its_secrets_pass() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backupd.toml");
    std::fs::write(&path, CONFIG).unwrap();
    let out = check(&path, &[("CHECK_TOKEN", "t"), ("CHECK_PASSWORD", "p")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("is valid: 1 repositories, 1 jobs, 0 notification channels"),
        "{stdout}"
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
