//! Restores through the daemon (issue 30): a protected PostgreSQL job
//! whose restores need a second admin, over real HTTP against a real
//! server; requests that are denied or expire never run; pending requests
//! survive a restart.

use std::time::Duration;

use backup_testkit::postgres::{PgCluster, PASSWORD as PG_PASSWORD};
use serde_json::Value;

use crate::daemon::{config, http, http_with, webhook_receiver, Daemon};
use crate::roles::token_users;
use crate::util::Scratch;

const OTTO: &str = "tok-otto-operator-3333";
const ADA: &str = "tok-ada-admin-4444";
const BEA: &str = "tok-bea-admin-5555";
const ABE: &str = "tok-abe-auditor-2222";

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// `POST path` with `body` as `token`: the status and the JSON answer.
fn post(d: &Daemon, path: &str, token: &str, body: &str) -> (u16, Value) {
    let (code, text) = http_with(d.port, "POST", path, Some(token), body).unwrap();
    (code, json(&text))
}

fn request(d: &Daemon, id: &str) -> Value {
    let (code, body) = http(d.port, "GET", &format!("/api/restores/{id}"), Some(OTTO)).unwrap();
    assert_eq!(code, 200, "{body}");
    json(&body)
}

/// `backup remote ARGS` as the holder of `token`: exit code, stdout,
/// stderr.
fn remote(s: &Scratch, port: u16, token: &str, args: &[&str]) -> (i32, String, String) {
    let out = s
        .cmd()
        .env("BACKUP_DAEMON_URL", format!("http://127.0.0.1:{port}"))
        .env("BACKUP_TOKEN", token)
        .arg("remote")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn rows(pg: &PgCluster) -> i64 {
    pg.psql("app", "SELECT count(*) FROM t")
        .trim()
        .parse()
        .unwrap()
}

/// Audit records of the local log about request `id`, in order.
fn trail(log: &std::path::Path, id: &str) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(json)
        .filter(|r| r["details"]["request"] == id)
        .collect()
}

/// Audit records of the local log of `operation`, in order.
fn trail_of(log: &std::path::Path, operation: &str) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(json)
        .filter(|r| r["operation"] == operation)
        .collect()
}

#[test]
fn r30_restore_request_of_a_protected_postgres_job() {
    let pg = PgCluster::start();
    pg.psql("postgres", "CREATE DATABASE app");
    pg.psql(
        "app",
        "CREATE TABLE t (id int PRIMARY KEY, v text); \
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g;",
    );
    let s = Scratch::new();
    s.init();
    let pw = s.path("pg.pass");
    std::fs::write(&pw, PG_PASSWORD).unwrap();
    let (hook_port, hooks) = webhook_receiver();
    let port = backup_testkit::free_port();
    let log = s.path("audit.jsonl");
    let job = format!(
        "[jobs.pg]\nrepository = \"main\"\nsource = \"postgres://postgres@127.0.0.1:{}/app\"\n\
         source_password = {{ file = \"{}\" }}\nschedule = \"0 0 1 1 *\"\nprotected = true\napprovals = 2\n",
        pg.port(),
        pw.display()
    );
    let mut extra = format!(
        "[audit]\nlocal_log = \"{}\"\n\n[notifications.hook]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{hook_port}/hook\"\n",
        log.display()
    );
    extra += &token_users(&[
        ("otto", "operator", OTTO),
        ("ada", "admin", ADA),
        ("bea", "admin", BEA),
        ("abe", "auditor", ABE),
    ]);
    let cfg = config(&s, "backupd.toml", port, &job, &extra);
    let d = Daemon::start(&s, &cfg, port, "daemon.log");
    let (code, _) = http(port, "POST", "/api/jobs/pg/run", Some(OTTO)).unwrap();
    assert_eq!(code, 202);
    // The job's state and the audit trail are written one after the
    // other: wait for both.
    d.wait_for(
        "the backup and its audit record",
        Duration::from_secs(60),
        || !d.job("pg")["last_success"].is_null() && !trail_of(&log, "create").is_empty(),
    );
    // The run asked for over the API is the operator's in the trail.
    let created = trail_of(&log, "create");
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["user"], "otto");
    assert_eq!(created[0]["details"]["trigger"], "manual");
    pg.psql("app", "DELETE FROM t WHERE id > 10");
    assert_eq!(rows(&pg), 10);

    // The operator asks; the request waits with its plan.
    let ask = r#"{"job": "pg", "drop": true}"#;
    let (code, first) = post(&d, "/api/restores", OTTO, ask);
    assert_eq!(code, 201, "{first}");
    assert_eq!(first["state"], "pending", "{first}");
    assert_eq!(first["approvals_needed"], 2);
    let summary = first["plan"]["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("would restore snapshot") && summary.contains("replacing"),
        "{first}"
    );
    assert_eq!(
        first["plan"]["snapshot"].as_str().unwrap().len(),
        64,
        "{first}"
    );
    assert!(!first["target"].as_str().unwrap().contains(PG_PASSWORD));
    let a_id = first["id"].as_str().unwrap().to_owned();
    // The operator cannot approve (an admin's action), not even their own.
    let (code, refused) = post(&d, &format!("/api/restores/{a_id}/approve"), OTTO, "");
    assert_eq!(code, 403, "{refused}");
    assert_eq!(refused["needed"], "admin");

    // An admin's own request: never approved by that admin, denied by
    // another, and never run.
    let (code, own_ask) = post(&d, "/api/restores", ADA, ask);
    assert_eq!(code, 201, "{own_ask}");
    let b_id = own_ask["id"].as_str().unwrap().to_owned();
    let (code, own) = post(&d, &format!("/api/restores/{b_id}/approve"), ADA, "");
    assert_eq!(code, 403, "{own}");
    assert!(own["error"].as_str().unwrap().contains("cannot approve"));
    // The status page in a browser: the pending request with its plan;
    // buttons for an admin, none for an auditor or on one's own request.
    let page = |who: &str, token: &str| {
        let profile = tempfile::tempdir().unwrap();
        let url = format!("http://{who}:{token}@127.0.0.1:{port}/");
        let out = crate::drill_daemon::chromium_run(profile.path(), &url, "--dump-dom");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let admin = page("bea", BEA);
    assert!(
        admin.contains("Pending restore requests") && admin.contains(&a_id),
        "{admin}"
    );
    assert!(admin.contains("would restore snapshot"), "{admin}");
    assert!(
        admin.contains(&format!("/api/restores/{a_id}/approve")) && admin.contains(">Approve<"),
        "{admin}"
    );
    let auditor = page("abe", ABE);
    assert!(auditor.contains(&a_id) && auditor.contains("would restore snapshot"));
    assert!(
        !auditor.contains(">Approve<") && !auditor.contains("/approve"),
        "{auditor}"
    );
    assert!(auditor.contains("approving needs the role admin"));
    let own = page("ada", ADA);
    assert!(
        own.contains("your request: another admin approves"),
        "{own}"
    );

    let (code, denied) = post(&d, &format!("/api/restores/{b_id}/deny"), BEA, "");
    assert_eq!((code, &denied["state"]), (200, &Value::from("denied")));
    let (code, late) = post(&d, &format!("/api/restores/{b_id}/approve"), BEA, "");
    assert_eq!(code, 409, "{late}");

    // The CLI: pending requests with their plan; refusals are clear.
    let (code, out, err) = remote(&s, port, ADA, &["approvals", "--json"]);
    assert_eq!(code, 0, "{err}");
    let pending = json(&out);
    assert_eq!(pending.as_array().unwrap().len(), 1, "{out}");
    assert_eq!(pending[0]["id"], a_id.as_str());
    let (code, out, _) = remote(&s, port, ADA, &["approvals"]);
    assert!(code == 0 && out.contains("plan: would restore"), "{out}");
    let (code, _, err) = remote(&s, port, OTTO, &["approve", &a_id]);
    assert_eq!(code, 1);
    assert!(err.contains("403") && err.contains("admin"), "{err}");
    let out = s.cmd().args(["remote", "approvals"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BACKUP_DAEMON_URL"));

    // A second admin approves: the daemon restores, with a safety backup.
    let (code, out, err) = remote(&s, port, ADA, &["approve", &a_id]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = remote(&s, port, ADA, &["approve", &a_id]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("409"), "{err}");
    d.wait_for(
        "the approved restore and its audit record",
        Duration::from_secs(60),
        || {
            let st = request(&d, &a_id)["state"].clone();
            (st == "succeeded" || st == "failed") && trail(&log, &a_id).len() >= 3
        },
    );
    let done = request(&d, &a_id);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(!done["report"]["safety_backup"].is_null(), "{done}");
    assert_eq!(rows(&pg), 100);

    // The trail: requester, approver, executor, in order.
    let tr = trail(&log, &a_id);
    let ops: Vec<(&str, &str)> = tr
        .iter()
        .map(|r| {
            (
                r["operation"].as_str().unwrap(),
                r["user"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(ops.len(), 3, "{tr:#?}");
    assert_eq!(ops[0], ("restore-request", "otto"));
    assert_eq!(ops[1], ("restore-approve", "ada"));
    assert_eq!(ops[2].0, "restore");
    assert_eq!(tr[2]["status"], "success");
    assert!(tr[2]["details"]["executed_by"]
        .as_str()
        .unwrap()
        .starts_with("backupd"));
    assert_eq!(tr[2]["details"]["requested_by"], "otto");
    assert_eq!(tr[2]["details"]["approved_by"], serde_json::json!(["ada"]));
    // The same records are in the repository's chain.
    let chain = s.json(&["audit", "--json", "--user", "ada"]);
    assert!(
        chain["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["operation"] == "restore-approve"
                && r["user"] == "ada"
                && r["details"]["request"] == a_id.as_str()),
        "{chain:#}"
    );

    // Notifications on request, approval and completion.
    let mut events = Vec::new();
    while let Ok(v) = hooks.recv_timeout(Duration::from_secs(5)) {
        events.push(v["event"].as_str().unwrap_or_default().to_owned());
        if events.iter().any(|e| e == "restore_finished") {
            break;
        }
    }
    for e in ["restore_requested", "restore_approved", "restore_finished"] {
        assert!(events.iter().any(|x| x == e), "{e} missing in {events:?}");
    }

    // A pending request survives a restart; with a short expiry a new one
    // expires unapproved and never runs.
    pg.psql("app", "INSERT INTO t VALUES (1000, 'after the restore')");
    let (code, out, err) = remote(
        &s,
        port,
        OTTO,
        &["restore", "--job", "pg", "--drop", "--json"],
    );
    assert_eq!(code, 0, "{err}");
    let kept = json(&out);
    assert_eq!(kept["state"], "pending", "{out}");
    let p_id = kept["id"].as_str().unwrap().to_owned();
    let (code, _) = d.stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(30));
    assert_eq!(code, 0);
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("[daemon]\n", "[daemon]\nrestore_expiry = \"1s\"\n");
    std::fs::write(&cfg, text).unwrap();
    let d = Daemon::start(&s, &cfg, port, "daemon2.log");
    assert_eq!(request(&d, &p_id)["state"], "pending");
    assert_eq!(request(&d, &b_id)["state"], "denied");
    let (code, short) = post(&d, "/api/restores", OTTO, ask);
    assert_eq!(code, 201, "{short}");
    let e_id = short["id"].as_str().unwrap().to_owned();
    d.wait_for("the expiry", Duration::from_secs(20), || {
        request(&d, &e_id)["state"] == "expired"
    });
    let (code, late) = post(&d, &format!("/api/restores/{e_id}/approve"), ADA, "");
    assert_eq!(code, 409, "{late}");
    assert_eq!(rows(&pg), 101, "a denied or expired request ran");
    // The report's section of restores names requester and approver.
    let md = s.ok(&["report", "--format", "markdown"]);
    assert!(md.contains("## Restores"), "{md}");
    assert!(md.contains(&format!("| {a_id} | otto | ada |")), "{md}");
    for id in [&b_id, &e_id] {
        assert!(
            trail(&log, id).iter().all(|r| r["operation"] != "restore"),
            "{id} ran"
        );
    }
    drop(d);
}
