//! Protected restore targets (issue 30): a restore requested through the
//! daemon into a `[targets.NAME]` with `protected = true` waits for a
//! second person even when its job is not protected; the restore the
//! daemon runs shows its progress in bytes; audit records name the key
//! that opened the repository.

use std::time::Duration;

use serde_json::Value;

use crate::daemon::{config, files_job, http, http_with, Daemon};
use crate::roles::token_users;
use crate::util::{files_under, random_bytes, write, Scratch};

const OTTO: &str = "tok-otto-operator-3333";
const ADA: &str = "tok-ada-admin-4444";

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn ask(d: &Daemon, to: &std::path::Path) -> (u16, Value) {
    let body = serde_json::json!({"job": "files", "to": to}).to_string();
    let (code, text) = http_with(d.port, "POST", "/api/restores", Some(OTTO), &body).unwrap();
    (code, json(&text))
}

fn request(d: &Daemon, id: &str) -> Value {
    let (code, text) = http(d.port, "GET", &format!("/api/restores/{id}"), Some(ADA)).unwrap();
    assert_eq!(code, 200, "{text}");
    json(&text)
}

/// `POST path` as a browser submits a form of the status page: basic
/// authentication, an empty form body, `Origin` and `Sec-Fetch-Site`.
/// The status and the response's head.
fn form_post(port: u16, path: &str, user: &str, token: &str, origin: &str) -> (u16, String) {
    use base64::Engine as _;
    use std::io::{Read as _, Write as _};
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"));
    let site = if origin.ends_with(&format!("127.0.0.1:{port}")) {
        "same-origin"
    } else {
        "cross-site"
    };
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Basic {basic}\r\n\
         Origin: {origin}\r\nSec-Fetch-Site: {site}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let code = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
    let head = resp.split("\r\n\r\n").next().unwrap_or("").to_owned() + "\r\n";
    (code, head)
}

/// Waits for request `id` to end; returns it and whether it was ever seen
/// running with bytes counted.
fn wait_done(d: &Daemon, id: &str) -> (Value, bool) {
    let mut seen_running = false;
    let mut last = Value::Null;
    d.wait_for("the restore", Duration::from_secs(120), || {
        last = request(d, id);
        if last["state"] == "running" && last["progress"]["bytes_done"].as_u64() > Some(0) {
            seen_running = true;
        }
        last["state"] == "succeeded" || last["state"] == "failed"
    });
    (last, seen_running)
}

#[test]
fn r30_a_protected_target_needs_approval_for_any_job() {
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    write(&src.join("small.txt"), b"protected target");
    write(&src.join("big.bin"), &random_bytes(24 << 20, 30));
    let port = backup_testkit::free_port();
    let log = s.path("audit.jsonl");
    let prod = s.path("prod");
    let mut extra = format!(
        "[audit]\nlocal_log = \"{}\"\n\n[targets.prod]\nurl = \"{}\"\nprotected = true\n",
        log.display(),
        prod.display()
    );
    extra += &token_users(&[("otto", "operator", OTTO), ("ada", "admin", ADA)]);
    // The job itself is not protected.
    let cfg = config(
        &s,
        "targets.toml",
        port,
        &files_job(&src, "0 0 3 * * *"),
        &extra,
    );
    let d = Daemon::start(&s, &cfg, port, "targets.log");
    let (code, _) = http(port, "POST", "/api/jobs/files/run", Some(OTTO)).unwrap();
    assert_eq!(code, 202);
    d.wait_for("the backup", Duration::from_secs(120), || {
        !d.job("files")["last_success"].is_null()
    });

    // Into the protected target (a directory under it): pending, for the
    // target's sake.
    let (code, held) = ask(&d, &prod.join("restored"));
    assert_eq!(code, 201, "{held}");
    assert_eq!(held["state"], "pending", "{held}");
    assert_eq!(held["approvals_needed"], 2, "{held}");
    assert_eq!(held["protected_targets"], serde_json::json!(["prod"]));
    let held_id = held["id"].as_str().unwrap().to_owned();

    // Anywhere else: the unprotected job's restore runs at once, and its
    // progress counts bytes up to the total.
    let elsewhere = s.path("elsewhere");
    let (code, free) = ask(&d, &elsewhere);
    assert_eq!(code, 201, "{free}");
    assert_eq!(free["approvals_needed"], 1, "{free}");
    assert_eq!(free["protected_targets"], serde_json::json!([]));
    let (done, seen_running) = wait_done(&d, free["id"].as_str().unwrap());
    assert_eq!(done["state"], "succeeded", "{done}");
    let p = &done["progress"];
    assert_eq!(p["phase"], "restore", "{done}");
    let total = p["bytes_total"].as_u64().unwrap();
    assert!(total >= 24 << 20, "{done}");
    assert_eq!(p["bytes_done"].as_u64(), Some(total), "{done}");
    assert!(!files_under(&elsewhere).is_empty());
    eprintln!("progress seen while running: {seen_running}");

    // Nothing was written into the protected target before an approval.
    assert!(files_under(&prod).is_empty());
    // The status page's Approve button, as a browser submits it: a form
    // with the page's basic-auth credentials. Another site's page posting
    // the same form is refused and changes nothing.
    let approve = format!("/api/restores/{held_id}/approve");
    let (code, head) = form_post(port, &approve, "ada", ADA, "http://evil.example");
    assert_eq!(code, 403, "{head}");
    assert_eq!(request(&d, &held_id)["state"], "pending");
    let (code, head) = form_post(
        port,
        &approve,
        "otto",
        OTTO,
        &format!("http://127.0.0.1:{port}"),
    );
    assert_eq!(code, 403, "an operator's form is refused too: {head}");
    let (code, head) = form_post(
        port,
        &approve,
        "ada",
        ADA,
        &format!("http://127.0.0.1:{port}"),
    );
    assert_eq!(code, 303, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("location: /\r\n"),
        "{head}"
    );
    let (done, _) = wait_done(&d, &held_id);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(files_under(&prod).iter().any(|f| f.ends_with("small.txt")));

    // Every record of the repository's chain names the key that opened
    // it: the file under keys/.
    let records: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(json)
        .filter(|r| r["seq"].as_u64() > Some(0))
        .collect();
    assert!(
        records.iter().any(|r| r["operation"] == "restore"),
        "{records:?}"
    );
    for r in &records {
        let key = r["key"].as_str().unwrap_or_else(|| panic!("no key: {r}"));
        assert_eq!(key.len(), 64, "{r}");
        assert!(
            std::path::Path::new(&s.repo)
                .join("keys")
                .join(key)
                .exists(),
            "{r}"
        );
    }
    let request = records
        .iter()
        .find(|r| {
            r["operation"] == "restore-request" && r["details"]["request"] == held_id.as_str()
        })
        .unwrap();
    assert_eq!(
        request["details"]["protected_targets"],
        serde_json::json!(["prod"])
    );
    drop(d);
}
