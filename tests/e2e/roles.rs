//! Roles of the daemon's API (issue 30): every role against every
//! endpoint over real HTTP, refusals naming the role needed and recorded
//! in the audit log, tokens stored only as hashes.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};

use crate::daemon::{config, files_job, http, Daemon, TOKEN};
use crate::util::{write, Scratch};

/// The hash `backup token hash` prints for `token` read on stdin.
pub(crate) fn hash(token: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_backup"))
        .args(["token", "hash"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{token}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let h = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(h.starts_with("$argon2id$"), "{h}");
    assert!(!h.contains(token));
    h
}

/// `[[daemon.users]]` entries, one per `(name, role, token)`, each with
/// the hash of its token.
pub(crate) fn token_users(users: &[(&str, &str, &str)]) -> String {
    let mut toml = String::new();
    for (name, role, token) in users {
        writeln!(
            toml,
            "\n[[daemon.users]]\nname = \"{name}\"\nrole = \"{role}\"\ntoken_hash = \"{}\"",
            hash(token)
        )
        .unwrap();
    }
    toml
}

#[test]
fn r30_each_role_against_each_endpoint() {
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    write(&src.join("a.txt"), b"roles");
    let port = backup_testkit::free_port();
    let users = [
        ("vera", "viewer", "tok-vera-viewer-1111"),
        ("abe", "auditor", "tok-abe-auditor-2222"),
        ("otto", "operator", "tok-otto-operator-3333"),
        ("ada", "admin", "tok-ada-admin-4444"),
    ];
    let log = s.path("audit.jsonl");
    let mut extra = format!("[audit]\nlocal_log = \"{}\"\n", log.display());
    extra += &token_users(&users);
    let cfg = config(
        &s,
        "roles.toml",
        port,
        &files_job(&src, "0 0 3 * * *"),
        &extra,
    );
    let text = std::fs::read_to_string(&cfg).unwrap();
    for (_, _, token) in users {
        assert!(
            !text.contains(token),
            "the configuration holds a plain token"
        );
    }
    let d = Daemon::start(&s, &cfg, port, "roles.log");

    // Who asks, with their rank (0 viewer .. 3 admin).
    let mut who: Vec<(&str, &str, usize)> = users
        .iter()
        .enumerate()
        .map(|(i, (name, _, token))| (*name, *token, i))
        .collect();
    who.push(("api_token", TOKEN, 3));
    // Each endpoint with the least role that may use it.
    let endpoints = [
        ("GET", "/", 0, "viewer"),
        ("GET", "/api/jobs", 0, "viewer"),
        ("GET", "/api/jobs/files", 0, "viewer"),
        ("GET", "/api/audit", 1, "auditor"),
        ("POST", "/api/jobs/files/run", 2, "operator"),
        ("GET", "/api/restores", 0, "viewer"),
        // Allowed, then refused by what they ask: no body (400), no such
        // request (404).
        ("POST", "/api/restores", 2, "operator"),
        ("POST", "/api/restores/r-none/approve", 3, "admin"),
        ("POST", "/api/restores/r-none/deny", 3, "admin"),
    ];
    let mut refusals = Vec::new();
    for (method, path, needed, role_name) in endpoints {
        for (name, token, rank) in &who {
            let (code, body) = http(port, method, path, Some(token)).unwrap();
            if *rank >= needed {
                assert!(
                    [200, 202, 409, 400, 404].contains(&code),
                    "{name} {method} {path}: {code} {body}"
                );
            } else {
                assert_eq!(code, 403, "{name} {method} {path}: {body}");
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(v["needed"], role_name, "{body}");
                assert_eq!(v["identity"], *name, "{body}");
                assert!(v["error"].as_str().unwrap().contains(role_name), "{body}");
                refusals.push((name.to_string(), path));
            }
        }
        // Without a token, or with one nobody has: 401.
        assert_eq!(http(port, method, path, None).unwrap().0, 401, "{path}");
        assert_eq!(
            http(port, method, path, Some("tok-nobody")).unwrap().0,
            401,
            "{path}"
        );
    }
    assert_eq!(
        refusals.len(),
        1 + 2 + 2 + 3 + 3,
        "the viewer on the audit; viewer and auditor on the run and the restore request; all but admins on approve and deny"
    );
    // Open to all, as before.
    assert_eq!(http(port, "GET", "/metrics", None).unwrap().0, 200);
    assert_eq!(http(port, "GET", "/healthz", None).unwrap().0, 200);

    // Every refusal of a presented token is in the audit log, naming who
    // and what was needed; no token is.
    let lines = std::fs::read_to_string(&log).unwrap();
    let records: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &serde_json::Value| r["operation"] == "api-refused")
        .collect();
    for (name, path) in &refusals {
        assert!(
            records
                .iter()
                .any(|r| r["details"]["identity"] == name.as_str()
                    && r["details"]["path"] == *path
                    && r["status"] == "failure"),
            "no refusal of {name} on {path} in:\n{lines}"
        );
    }
    let unknown = records
        .iter()
        .filter(|r| r["details"]["reason"] == "unknown token")
        .count();
    assert_eq!(unknown, endpoints.len(), "{lines}");
    for (_, _, token) in users {
        assert!(!lines.contains(token));
    }
    assert!(!lines.contains("tok-nobody"));
    drop(d);
}

#[test]
fn r30_a_plain_token_in_the_configuration_is_refused() {
    let s = Scratch::new();
    let port = backup_testkit::free_port();
    let src = s.path("src");
    // `backupd --check-config` of a configuration with one user `extra`
    // describes: refused, with its message.
    let refused = |file: &str, extra: &str| {
        let cfg = config(&s, file, port, &files_job(&src, "0 0 3 * * *"), extra);
        let out = Command::new(crate::daemon::backupd_bin())
            .arg("--config")
            .arg(&cfg)
            .arg("--check-config")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{err}");
        err
    };
    let err = refused(
        "plain.toml",
        "[[daemon.users]]\nname = \"ann\"\nrole = \"admin\"\ntoken_hash = \"tok-plain\"\n",
    );
    assert!(
        err.contains("daemon.users[0].token_hash") && err.contains("backup token hash"),
        "{err}"
    );
    let err = refused(
        "role.toml",
        "[[daemon.users]]\nname = \"ann\"\nrole = \"root\"\ntoken_hash = \"x\"\n",
    );
    assert!(err.contains("root") && err.contains("operator"), "{err}");
}

#[test]
fn r30_token_new_prints_a_token_once_with_its_hash() {
    let s = Scratch::new();
    let v = s.json(&["token", "new"]);
    let token = v["token"].as_str().unwrap();
    let hash = v["token_hash"].as_str().unwrap();
    assert!(token.starts_with("bkp_"));
    assert!(hash.starts_with("$argon2id$") && !hash.contains(token));
    // An empty token is refused with a clear message.
    let out = Command::new(env!("CARGO_BIN_EXE_backup"))
        .args(["token", "hash"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("the token is empty"));
}
