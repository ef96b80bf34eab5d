//! The README's program as a Rust project of its own: a new Cargo
//! project outside this workspace, in a temporary directory, depending on
//! `backup-ops` by path with nothing but the README's dependency lines,
//! builds the program and runs it against a real PostgreSQL server. What
//! it restored is compared with what it backed up, byte for byte and row
//! for row.
//!
//! The project takes the workspace's `Cargo.lock` (the same versions) and
//! `[profile.dev*]` settings and builds into the workspace's target
//! directory, so the dependencies compiled for the workspace with the same
//! features are reused. The four library crates compile again (a path
//! dependency outside the workspace, with the features of `backup-ops`'s
//! defaults, is not the workspace's build of the same crate), at
//! `opt-level = 0`: a fifth of the CPU time of the workspace's level 1, and
//! the program's work here is small (the compression, hashing and
//! encryption crates keep their optimised builds).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The README's program, as `examples/readme.rs` holds it (the two are
/// kept identical by `tests/examples.rs`).
fn readme_program() -> &'static str {
    let example = include_str!("../examples/readme.rs");
    example.split_once("\n\n").map(|(_, body)| body).unwrap()
}

/// The workspace's target directory: this test runs from
/// `target/debug/deps/`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_path_buf()
}

/// Replaces `from` (which must occur) in the program.
fn place(program: &str, from: &str, to: &str) -> String {
    assert!(program.contains(from), "the program has no {from}");
    program.replace(from, to)
}

#[test]
fn readme_program_is_short() {
    let lines = readme_program().lines().count();
    assert!(lines < 40, "the README's program has {lines} lines");
}

#[test]
fn readme_program_builds_outside_the_workspace_and_restores_a_directory_and_a_database() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();

    // The data: a directory of several files, and a database.
    let data = dir.path().join("app");
    std::fs::create_dir_all(data.join("conf")).unwrap();
    std::fs::write(data.join("conf/app.yml"), "port: 8080\n").unwrap();
    let blob: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(data.join("blob.bin"), &blob).unwrap();
    let pg = backup_testkit::postgres::PgCluster::start();
    pg.psql("postgres", "CREATE DATABASE app");
    pg.psql(
        "app",
        "CREATE TABLE orders (id serial PRIMARY KEY, item text, qty int, at timestamptz);
         INSERT INTO orders (item, qty, at)
           SELECT 'item ' || g, g % 9, '2026-01-01'::timestamptz + g * interval '1 min'
           FROM generate_series(1, 2000) g;",
    );

    // The project: the README's dependency lines and program, with this
    // test's places.
    let project = dir.path().join("service");
    std::fs::create_dir_all(project.join("src")).unwrap();
    let manifest = std::fs::read_to_string(workspace.join("Cargo.toml")).unwrap();
    let profiles = &manifest[manifest.find("[profile.dev").unwrap()..];
    let profiles = &profiles[..profiles.find("[profile.release]").unwrap()];
    let mut unoptimised = String::new();
    for name in [
        "backup-core",
        "backup-storage",
        "backup-sources",
        "backup-ops",
    ] {
        writeln!(unoptimised, "[profile.dev.package.{name}]\nopt-level = 0").unwrap();
    }
    std::fs::write(
        project.join("Cargo.toml"),
        format!(
            "[package]\nname = \"service\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
             [dependencies]\nbackup-ops = {{ path = {:?} }}\n\
             tokio = {{ version = \"1\", features = [\"macros\", \"rt-multi-thread\"] }}\n\n\
             {profiles}
{unoptimised}",
            workspace.join("crates/backup-ops")
        ),
    )
    .unwrap();
    std::fs::copy(workspace.join("Cargo.lock"), project.join("Cargo.lock")).unwrap();
    let restored = dir.path().join("restored");
    let program = readme_program();
    let program = place(
        program,
        "/srv/backup",
        dir.path().join("repo").to_str().unwrap(),
    );
    let program = place(&program, "/var/lib/app", data.to_str().unwrap());
    let program = place(&program, "/tmp/app-restored", restored.to_str().unwrap());
    let program = place(&program, "postgres://db/", &pg.url(""));
    std::fs::write(project.join("src/main.rs"), program).unwrap();

    // At a lower priority: the build takes the CPU that the tests running
    // beside it leave idle while they wait on their servers.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let built = Command::new("nice")
        .args(["-n", "10"])
        .arg(&cargo)
        .args(["build", "--offline", "--quiet"])
        .current_dir(&project)
        .env("CARGO_TARGET_DIR", target_dir())
        .env_remove("CARGO_MANIFEST_DIR")
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "the project did not build:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let ran = Command::new(target_dir().join("debug/service"))
        .current_dir(&project)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&ran.stdout);
    assert!(
        ran.status.success(),
        "the program failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert_eq!(stdout.lines().count(), 2, "{stdout}");

    assert_eq!(
        std::fs::read(restored.join("conf/app.yml")).unwrap(),
        b"port: 8080\n"
    );
    assert_eq!(std::fs::read(restored.join("blob.bin")).unwrap(), blob);
    let rows = |db: &str| pg.psql(db, "SELECT id, item, qty, at FROM orders ORDER BY id");
    assert_eq!(rows("app_restored").lines().count(), 2000);
    assert_eq!(rows("app_restored"), rows("app"));
}
