//! `backup drill`: restore drills of every kind into scratch copies on
//! real servers, passing and failing (a check that fails, a damaged pack,
//! an RTO over the limit), the scratch copy removed every time, and the
//! leftover of a drill killed with SIGKILL removed by the next one.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backup_testkit::mongo::MongoServer;
use backup_testkit::postgres::{PgCluster, PASSWORD as PG_PASSWORD};
use backup_testkit::redis::RedisServer;

use crate::util::{files_under, random_bytes, write, Scratch, PASSWORD};

/// A configuration with one repository and `jobs`.
fn drill_config(s: &Scratch, jobs: &str) -> PathBuf {
    let text = format!(
        "[repositories.main]\nurl = \"{}\"\npassword = {{ env = \"BACKUP_PASSWORD\" }}\n\n{jobs}",
        s.repo
    );
    let path = s.path("backup.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Entries directly in `dir` (the scratch location must be empty again).
fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn record(v: &serde_json::Value) -> &serde_json::Value {
    &v["record"]
}

/// Runs `backup --json drill ARGS`, expecting exit `code`; returns the
/// document.
fn drill_json(s: &Scratch, args: &[&str], code: i32) -> serde_json::Value {
    let mut a = vec!["--json", "drill"];
    a.extend_from_slice(args);
    let out = s.run(&a);
    assert_eq!(
        out.status.code(),
        Some(code),
        "`backup {}`:\n{}\n{}",
        a.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn files_drills_pass_fail_and_are_recorded() {
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    write(&src.join("a.txt"), b"hello drill");
    write(&src.join("dir/big.bin"), &random_bytes(3_000_000, 7));
    let (id, _) = s.create(&src, &["--time", "2026-01-01T00:00:00Z"]);
    let scratch = s.path("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let (src_s, scratch_s) = (src.to_str().unwrap(), scratch.to_str().unwrap());

    // A passing drill, with a command check that sees the copy.
    let v = drill_json(
        &s,
        &[
            "--source",
            src_s,
            "--target",
            scratch_s,
            "--check-command",
            "test \"$(cat \"$BACKUP_DRILL_PATH/a.txt\")\" = 'hello drill'",
        ],
        0,
    );
    let r = record(&v);
    assert_eq!(r["ok"], true, "{v}");
    assert_eq!(r["snapshot"], id.as_str());
    assert_eq!(r["point_kind"], "latest-snapshot");
    assert!(r["rto_seconds"].as_f64().unwrap() > 0.0, "{r}");
    // The snapshot is stamped 2026-01-01: the RPO is its age.
    assert!(r["rpo_seconds"].as_f64().unwrap() > 3600.0, "{r}");
    let phases: Vec<&str> = r["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(phases[..2], ["prepare", "fetch"], "{r}");
    assert!(phases.contains(&"load"), "{r}");
    let checks = r["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2, "{r}");
    assert!(checks.iter().all(|c| c["ok"] == true), "{r}");
    assert_eq!(r["bytes"], 3_000_000 + 11);
    assert!(entries(&scratch).is_empty(), "scratch copy left behind");

    // A failing check: exit 1, recorded, the copy removed all the same.
    let v = drill_json(
        &s,
        &[
            "--source",
            src_s,
            "--target",
            scratch_s,
            "--check-command",
            "echo missing orders >&2; exit 3",
        ],
        1,
    );
    let r = record(&v);
    assert_eq!(r["ok"], false);
    let failed = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["ok"] == false)
        .unwrap();
    assert!(
        failed["detail"]
            .as_str()
            .unwrap()
            .contains("missing orders"),
        "{r}"
    );
    assert!(entries(&scratch).is_empty());

    // An RTO over the limit fails the drill, the checks passing.
    let v = drill_json(
        &s,
        &["--source", src_s, "--target", scratch_s, "--max-rto", "1ms"],
        1,
    );
    assert_eq!(record(&v)["rto_exceeded"], true, "{v}");
    assert!(record(&v)["checks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["ok"] == true));

    // A damaged pack: exit 3, the error in the record, nothing left.
    let pack = files_under(&Path::new(&s.repo).join("data"))
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut data = std::fs::read(&pack).unwrap();
    data[1_500_000] ^= 0x55;
    std::fs::write(&pack, data).unwrap();
    let v = drill_json(&s, &["--source", src_s, "--target", scratch_s], 3);
    let err = record(&v)["error"].as_str().unwrap().to_owned();
    assert!(err.contains("damage") || err.contains("corrupt"), "{err}");
    assert!(entries(&scratch).is_empty());

    // Every drill is in the repository, sealed, and in the audit trail.
    let list = s.json(&["drill", "--history"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 4, "{list:?}");
    let oks: Vec<bool> = list
        .iter()
        .map(|d| d["record"]["ok"].as_bool().unwrap())
        .collect();
    assert_eq!(oks, [true, false, false, false]);
    let human = s.ok(&["drill", "--history"]);
    assert!(
        human.contains("passed") && human.contains("FAILED"),
        "{human}"
    );
    let audit = s.json(&["audit"]);
    let drills = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["operation"] == "drill")
        .count();
    assert_eq!(drills, 4);

    // Bad input: clear errors, non-zero exits.
    let e = s.fails(&["drill"], 2);
    assert!(e.contains("say what to drill"), "{e}");
    let e = s.fails(
        &[
            "drill",
            "--source",
            src_s,
            "--target",
            "/nonexistent/scratch",
        ],
        2,
    );
    assert!(e.contains("is not a directory"), "{e}");
    let e = s.fails(
        &[
            "drill",
            "--source",
            "/no/such/source",
            "--target",
            scratch_s,
        ],
        1,
    );
    assert!(e.contains("latest"), "{e}");
}

/// Runs `backup ARGS` in the background and waits until `ready` exists
/// (the drill's check started); returns the child.
fn drill_until(s: &Scratch, args: &[&str], ready: &Path) -> std::process::Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_backup"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", s.dir.path())
        .env("BACKUP_REPOSITORY", &s.repo)
        .env("BACKUP_PASSWORD", PASSWORD);
    for (k, v) in &s.env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !ready.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the drill ended before it got to its check"
        );
        assert!(t0.elapsed() < Duration::from_secs(120), "drill too slow");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// Whether process `pid` runs (exists and is not a zombie).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .unwrap_or("Z");
        state != "Z" && state != "X"
    })
}

fn kill9(child: &mut std::process::Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = child.wait();
}

#[test]
fn a_killed_files_drill_is_cleaned_up_by_the_next() {
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    write(&src.join("a.txt"), b"x");
    s.create(&src, &[]);
    let scratch = s.path("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let ready = s.path("checking");
    let check = format!("touch {}; sleep 20", ready.display());
    let mut child = drill_until(
        &s,
        &[
            "drill",
            "--source",
            src.to_str().unwrap(),
            "--target",
            scratch.to_str().unwrap(),
            "--check-command",
            &check,
        ],
        &ready,
    );
    kill9(&mut child);
    let left = entries(&scratch);
    assert_eq!(left.len(), 1, "the killed drill's copy is there: {left:?}");
    let v = drill_json(
        &s,
        &[
            "--source",
            src.to_str().unwrap(),
            "--target",
            scratch.to_str().unwrap(),
        ],
        0,
    );
    let removed = record(&v)["leftovers_removed"].as_array().unwrap().clone();
    assert_eq!(removed.len(), 1, "{v}");
    assert!(removed[0].as_str().unwrap().contains(&left[0]), "{v}");
    assert!(entries(&scratch).is_empty());
}

#[test]
fn postgres_logical_drill_with_sql_checks() {
    let pg = PgCluster::start();
    pg.psql("postgres", "CREATE DATABASE shop");
    pg.psql(
        "shop",
        "CREATE TABLE orders (id int PRIMARY KEY, paid bool);\n\
         INSERT INTO orders SELECT g, g % 2 = 0 FROM generate_series(1, 1000) g;\n\
         CREATE INDEX ON orders (paid);",
    );
    let mut s = Scratch::new();
    s.env.push(("PGPW".into(), PG_PASSWORD.into()));
    s.init();
    let server = format!("postgres://postgres@127.0.0.1:{}/", pg.port());
    let cfg = drill_config(
        &s,
        &format!(
            r#"
[jobs.shop]
repository = "main"
source = "postgres://postgres@127.0.0.1:{port}/shop"
source_password = {{ env = "PGPW" }}
schedule = "0 3 * * *"

[jobs.shop.drill]
target = "{server}"
target_password = {{ env = "PGPW" }}
max_rto = "10m"

[[jobs.shop.drill.checks]]
type = "sql"
query = "SELECT count(*) FROM orders WHERE paid"
expect = "= 500"

[[jobs.shop.drill.checks]]
type = "command"
command = ["sh", "-c", "case \"$BACKUP_DRILL_URL\" in *shop_drill_*) exit 0;; *) exit 1;; esac"]
"#,
            port = pg.port()
        ),
    );
    let cfg_s = cfg.to_str().unwrap();
    s.ok(&["--config", cfg_s, "create", "--job", "shop"]);
    let v = drill_json(&s, &["--config", cfg_s, "shop"], 0);
    let r = record(&v);
    assert_eq!(r["ok"], true, "{v}");
    assert!(r["target"].as_str().unwrap().contains("shop_drill_"), "{r}");
    assert!(!r["target"].as_str().unwrap().contains(PG_PASSWORD));
    let names: Vec<&str> = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        names[0].starts_with("built-in: rows per table"),
        "{names:?}"
    );
    let phases: Vec<&str> = r["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(
        phases.contains(&"load") && phases.contains(&"indexes"),
        "{phases:?}"
    );
    let dbs = pg.psql(
        "postgres",
        "SELECT string_agg(datname, ',') FROM pg_database",
    );
    assert!(!dbs.contains("_drill_"), "scratch database left: {dbs}");

    // A condition that does not hold fails the drill; the database goes.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("= 500", "> 900");
    std::fs::write(&cfg, text).unwrap();
    let v = drill_json(&s, &["--config", cfg_s, "shop"], 1);
    let failed: Vec<&serde_json::Value> = record(&v)["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .collect();
    assert_eq!(failed.len(), 1, "{v}");
    assert!(
        failed[0]["detail"]
            .as_str()
            .unwrap()
            .contains("got 500, expected > 900"),
        "{v}"
    );
    let dbs = pg.psql(
        "postgres",
        "SELECT string_agg(datname, ',') FROM pg_database",
    );
    assert!(!dbs.contains("_drill_"), "scratch database left: {dbs}");
}

#[test]
fn postgres_physical_drill_starts_the_copy_and_survives_a_kill() {
    let pg = PgCluster::start();
    pg.psql(
        "postgres",
        &format!(
            "CREATE ROLE repl LOGIN REPLICATION SUPERUSER PASSWORD '{PG_PASSWORD}'; CREATE DATABASE src;"
        ),
    );
    pg.psql(
        "src",
        "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 5000) g;",
    );
    let mut s = Scratch::new();
    s.env.push(("PGPW".into(), PG_PASSWORD.into()));
    s.init();
    let scratch = PgCluster::owned_tempdir("drill-");
    let source = format!("postgres://repl@127.0.0.1:{}/src?mode=physical", pg.port());
    let cfg = drill_config(
        &s,
        &format!(
            r#"
[jobs.cluster]
repository = "main"
source = "{source}"
source_password = {{ env = "PGPW" }}
schedule = "0 3 * * *"

[jobs.cluster.drill]
target = "{scratch}"

[[jobs.cluster.drill.checks]]
type = "sql"
query = "SELECT count(*) FROM t"
expect = "5000"
"#,
            scratch = scratch.path().display()
        ),
    );
    let cfg_s = cfg.to_str().unwrap();
    s.ok(&["--config", cfg_s, "create", "--job", "cluster"]);
    let v = drill_json(&s, &["--config", cfg_s, "cluster"], 0);
    let r = record(&v);
    assert_eq!(r["ok"], true, "{v}");
    let phases: Vec<&str> = r["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(phases.last(), Some(&"recovery"), "{phases:?}");
    let checks = r["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 3, "{r}");
    assert!(checks.iter().all(|c| c["ok"] == true), "{r}");
    assert!(entries(scratch.path()).is_empty());

    // Killed while its server runs: the next drill stops that server and
    // removes the data directory.
    let ready = s.path("checking");
    let text = std::fs::read_to_string(&cfg).unwrap()
        + &format!(
            "\n[[jobs.cluster.drill.checks]]\ntype = \"command\"\ncommand = [\"sh\", \"-c\", \"touch {}; sleep 20\"]\n",
            ready.display()
        );
    std::fs::write(&cfg, text).unwrap();
    let mut child = drill_until(&s, &["--config", cfg_s, "drill", "cluster"], &ready);
    kill9(&mut child);
    let left = entries(scratch.path());
    assert_eq!(left.len(), 1, "{left:?}");
    let pid_file = scratch.path().join(&left[0]).join("data/postmaster.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(running(pid), "the copy's server runs");
    std::fs::remove_file(&ready).unwrap();
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("sleep 20", "true");
    std::fs::write(&cfg, text).unwrap();
    let v = drill_json(&s, &["--config", cfg_s, "cluster"], 0);
    let removed = record(&v)["leftovers_removed"].as_array().unwrap().clone();
    assert!(
        removed
            .iter()
            .any(|r| r.as_str().unwrap().contains("PostgreSQL server")),
        "{v}"
    );
    assert!(!running(pid), "leftover server stopped");
    assert!(entries(scratch.path()).is_empty());
}

#[test]
fn mongo_drill_into_renamed_databases() {
    let m = MongoServer::start();
    let client = mongodb::sync::Client::with_uri_str(m.url("")).unwrap();
    let coll = client
        .database("app")
        .collection::<mongodb::bson::Document>("orders");
    let docs: Vec<_> = (0..300)
        .map(|i| mongodb::bson::doc! {"_id": i, "paid": i % 3 == 0})
        .collect();
    coll.insert_many(docs).run().unwrap();
    let s = Scratch::new();
    s.init();
    let cfg = drill_config(
        &s,
        &format!(
            r#"
[jobs.app]
repository = "main"
source = "{url}"
schedule = "0 3 * * *"

[jobs.app.drill]
target = "{url}"

[[jobs.app.drill.checks]]
type = "mongo_count"
collection = "app.orders"
filter = '{{"paid": true}}'
min = 100
"#,
            url = m.url("")
        ),
    );
    let cfg_s = cfg.to_str().unwrap();
    s.ok(&["--config", cfg_s, "create", "--job", "app"]);
    let v = drill_json(&s, &["--config", cfg_s, "app"], 0);
    assert_eq!(record(&v)["ok"], true, "{v}");
    let names = client.list_database_names().run().unwrap();
    assert!(
        !names.iter().any(|n| n.contains("_drill_")),
        "scratch databases left: {names:?}"
    );
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("min = 100", "min = 101");
    std::fs::write(&cfg, text).unwrap();
    let v = drill_json(&s, &["--config", cfg_s, "app"], 1);
    let detail = record(&v)["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["ok"] == false)
        .unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        detail.contains("100 documents, expected at least 101"),
        "{detail}"
    );
    let names = client.list_database_names().run().unwrap();
    assert!(!names.iter().any(|n| n.contains("_drill_")), "{names:?}");
}

#[test]
fn redis_drills_on_a_throwaway_server_and_a_scratch_database() {
    let r = RedisServer::start();
    let mut con = r.connection();
    for i in 0..200 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(&mut con)
            .unwrap();
    }
    let _: () = redis::cmd("SET")
        .arg("flags")
        .arg("on")
        .query(&mut con)
        .unwrap();
    let s = Scratch::new();
    s.init();
    let jobs = |target: &str| {
        format!(
            r#"
[jobs.cache]
repository = "main"
source = "{url}"
schedule = "0 3 * * *"

[jobs.cache.drill]
{target}

[[jobs.cache.drill.checks]]
type = "redis_key"
key = "flags"

[[jobs.cache.drill.checks]]
type = "redis_dbsize"
min = 201
"#,
            url = r.url()
        )
    };
    let cfg = drill_config(&s, &jobs(""));
    let cfg_s = cfg.to_str().unwrap();
    s.ok(&["--config", cfg_s, "create", "--job", "cache"]);
    // No target: a throwaway redis-server.
    let v = drill_json(&s, &["--config", cfg_s, "cache"], 0);
    let rec = record(&v);
    assert_eq!(rec["ok"], true, "{v}");
    assert!(
        rec["target"].as_str().unwrap().contains("throwaway"),
        "{rec}"
    );
    assert_eq!(rec["checks"].as_array().unwrap().len(), 3);
    // A scratch database of the same server; emptied afterwards.
    let cfg = drill_config(
        &s,
        &jobs(&format!("target = \"{}/7\"", r.url().trim_end_matches('/'))),
    );
    let v = drill_json(&s, &["--config", cfg.to_str().unwrap(), "cache"], 0);
    assert_eq!(record(&v)["ok"], true, "{v}");
    assert_eq!(r.dbsize(7), 0, "the scratch database was emptied");
    assert_eq!(r.dbsize(0), 201, "the source is untouched");
    // A scratch database that holds keys is refused before anything.
    let _: () = redis::cmd("SELECT").arg(7).query(&mut con).unwrap();
    let _: () = redis::cmd("SET")
        .arg("mine")
        .arg("1")
        .query(&mut con)
        .unwrap();
    let e = s.fails(&["--config", cfg.to_str().unwrap(), "drill", "cache"], 2);
    assert!(e.contains("holds 1 keys"), "{e}");
    assert_eq!(
        r.dbsize(7),
        1,
        "a database the drill did not fill is left alone"
    );
    let _ = PASSWORD;
}

/// A Redis job with a captured stream: `point = "random"` restores the
/// base and replays the stream to a random time of the window, into a
/// scratch database kept for inspection; the counter there is what the
/// writer had acknowledged by that time. `--point canary` finds the key
/// it wrote in the copy.
#[test]
fn redis_pitr_drill_replays_to_a_random_point_of_the_window() {
    use crate::redis_pitr::{repl_offset, wait_captured, Follower};
    let r = RedisServer::start();
    let s = Scratch::new();
    s.init();
    let cfg = drill_config(
        &s,
        &format!(
            r#"
[jobs.cache]
repository = "main"
source = "{url}"
schedule = "0 3 * * *"
capture = "continuous"

[jobs.cache.drill]
target = "{url}/7"
point = "random"

[[jobs.cache.drill.checks]]
type = "redis_key"
key = "n"
"#,
            url = r.url()
        ),
    );
    let cfg_s = cfg.to_str().unwrap();
    let mut con = r.connection();
    let _: () = redis::cmd("SET").arg("n").arg(0).query(&mut con).unwrap();
    let follower = Follower::start_with(&s, &r.url(), &["--job", "cache"]);
    wait_captured(&s, 0);
    // INCRs over three seconds, each with the time it was acknowledged,
    // 100 ms apart: a follower starved of the CPU for a moment (a loaded
    // CI machine) still stamps each within one INCR of its own.
    let mut acked = Vec::new();
    for _ in 0..30 {
        let _: i64 = redis::cmd("INCR").arg("n").query(&mut con).unwrap();
        acked.push(chrono::Utc::now());
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_captured(&s, repl_offset(&mut con));
    follower.stop();

    let v = drill_json(&s, &["--config", cfg_s, "cache", "--keep"], 0);
    let rec = record(&v);
    assert_eq!(rec["ok"], true, "{v}");
    assert_eq!(rec["point_kind"], "random-point-in-window", "{rec}");
    let at = chrono::DateTime::parse_from_rfc3339(rec["point"].as_str().unwrap()).unwrap();
    let before = acked.iter().filter(|t| **t <= at).count() as i64;
    let _: () = redis::cmd("SELECT").arg(7).query(&mut con).unwrap();
    let n: i64 = redis::cmd("GET").arg("n").query(&mut con).unwrap();
    // A command arrives at the follower within moments of its
    // acknowledgement, on either side of it.
    assert!(
        (before - 1..=before + 1).contains(&n),
        "at {at}: n = {n}, {before} INCRs acknowledged by then"
    );

    // `point = "canary"`: a key written to the source while the stream
    // is captured, found in the copy replayed to the offset after it.
    let _: () = redis::cmd("FLUSHDB").query(&mut con).unwrap();
    let follower = Follower::start_with(&s, &r.url(), &["--job", "cache"]);
    let v = drill_json(&s, &["--config", cfg_s, "cache", "--point", "canary"], 0);
    follower.stop();
    let rec = record(&v);
    assert_eq!(rec["ok"], true, "{v}");
    assert_eq!(rec["point_kind"], "canary", "{rec}");
    let canary = rec["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str().unwrap().contains("backup_drill:canary:"))
        .unwrap_or_else(|| panic!("no canary check: {rec}"));
    assert_eq!(canary["ok"], true, "{canary}");
    // The canary is in the source, with its week-long expiry.
    let _: () = redis::cmd("SELECT").arg(0).query(&mut con).unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("backup_drill:canary:*")
        .query(&mut con)
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let ttl: i64 = redis::cmd("TTL").arg(&keys[0]).query(&mut con).unwrap();
    assert!(ttl > 6 * 24 * 3600, "TTL {ttl}");
}

/// A point-in-time drill (`point = "random"`): the newest base backup is
/// replayed, with the WAL `backup wal receive` captured, to a random time
/// of the restorable window; the copy holds exactly the marker rows
/// committed up to that time, and the RPO is that time's age.
#[test]
fn postgres_pitr_drill_replays_to_a_random_point_of_the_window() {
    use crate::postgres_pitr::{cluster, repl_url, write_markers, Receiver};
    let pg = cluster(&[]);
    let mut s = Scratch::new();
    s.env.push(("PGPW".into(), PG_PASSWORD.into()));
    s.init();
    let scratch = PgCluster::owned_tempdir("drill-pitr-");
    let counted = s.path("counted");
    let cfg = drill_config(
        &s,
        &format!(
            r#"
[jobs.pitr]
repository = "main"
source = "postgres://postgres@127.0.0.1:{port}/postgres?mode=physical"
source_password = {{ env = "PGPW" }}
schedule = "0 3 * * *"

[jobs.pitr.drill]
target = "{scratch}"
point = "random"

[[jobs.pitr.drill.checks]]
type = "command"
command = ["sh", "-c", "{psql} -Atc 'SELECT count(*) FROM markers' \"$BACKUP_DRILL_URL\" > {counted}"]
"#,
            port = pg.port(),
            scratch = scratch.path().display(),
            psql = pg.bin("psql").display(),
            counted = counted.display(),
        ),
    );
    let cfg_s = cfg.to_str().unwrap();
    let receiver = Receiver::start(&s, &repl_url(&pg));
    std::thread::sleep(Duration::from_secs(1));
    s.ok(&["--config", cfg_s, "create", "--job", "pitr"]);
    // Markers go on while the receiver stops: a time target needs a
    // commit after it, and the window ends when the WAL was stored.
    std::thread::scope(|t| {
        t.spawn(|| write_markers(&pg, 6));
        std::thread::sleep(Duration::from_secs(4));
        receiver.stop();
    });
    // A base backup taken now has no WAL after it: the window is the
    // previous base's, which reaches as far.
    s.ok(&["--config", cfg_s, "create", "--job", "pitr"]);

    let v = drill_json(&s, &["--config", cfg_s, "pitr"], 0);
    let r = record(&v);
    assert_eq!(r["ok"], true, "{v}");
    assert_eq!(r["point_kind"], "random-point-in-window", "{r}");
    let at = r["point"].as_str().unwrap().to_owned();
    let phases: Vec<&str> = r["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(phases.last(), Some(&"recovery"), "{phases:?}");
    // Markers committed up to the point are there, later ones are not (a
    // marker's time is taken just before its commit).
    let n: u64 = std::fs::read_to_string(&counted)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let count = |sql: &str| -> u64 { pg.psql("postgres", sql).trim().parse().unwrap() };
    let upto = count(&format!(
        "SELECT count(*) FROM markers WHERE ts <= '{at}'::timestamptz"
    ));
    let before = count(&format!(
        "SELECT count(*) FROM markers WHERE ts <= '{at}'::timestamptz - interval '100 ms'"
    ));
    assert!(
        before <= n && n <= upto,
        "replayed to {at}: {n} markers, expected {before}..={upto}"
    );
    let rpo = r["rpo_seconds"].as_f64().unwrap();
    assert!(rpo > 0.0, "{r}");
    assert!(entries(scratch.path()).is_empty(), "scratch copy left");

    // `--point latest` overrides the job's: the newest base backup as it
    // is.
    let v = drill_json(&s, &["--config", cfg_s, "pitr", "--point", "latest"], 0);
    assert_eq!(record(&v)["point_kind"], "latest-snapshot", "{v}");
    let n: u64 = std::fs::read_to_string(&counted)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        n,
        count("SELECT count(*) FROM markers"),
        "the newest base backup was taken after the markers"
    );

    // `--point canary`: a row written to the source while WAL is captured
    // must be in the copy replayed to just after it; the RPO is how long
    // it took to be captured.
    let receiver = Receiver::start(&s, &repl_url(&pg));
    let v = drill_json(&s, &["--config", cfg_s, "pitr", "--point", "canary"], 0);
    receiver.stop();
    let r = record(&v);
    assert_eq!(r["ok"], true, "{v}");
    assert_eq!(r["point_kind"], "canary", "{r}");
    let canary = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str().unwrap().contains("backup_drill_canary"))
        .unwrap_or_else(|| panic!("no canary check: {r}"));
    assert_eq!(canary["ok"], true, "{canary}");
    let written = pg.psql("postgres", "SELECT count(*) FROM backup_drill_canary");
    assert_eq!(written.trim(), "1");
    let rpo = r["rpo_seconds"].as_f64().unwrap();
    assert!(rpo > 0.0 && rpo < 120.0, "{r}");
    // The newer markers came after the base backup and before the canary.
    let n: u64 = std::fs::read_to_string(&counted)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(n, count("SELECT count(*) FROM markers"));
}

/// A MongoDB job with a captured oplog: `point = "random"` restores the
/// base replayed to a random second of the window (exactly the inserts of
/// that second and before are in the kept copy), and `--point canary`
/// finds a document written to the source just before the drill.
#[test]
#[allow(clippy::too_many_lines)] // One scenario: capture, random point, canary.
fn mongo_pitr_drill_replays_to_a_random_point_of_the_window() {
    use mongodb::bson::{doc, Document, Timestamp};
    let m = MongoServer::start();
    let url = m.url("");
    let client = mongodb::sync::Client::with_uri_str(&url).unwrap();
    let orders = client.database("app").collection::<Document>("orders");
    orders
        .insert_many((0..50).map(|i| doc! {"_id": i, "paid": true}))
        .run()
        .unwrap();
    let s = Scratch::new();
    s.init();
    let cfg = drill_config(
        &s,
        &format!(
            r#"
[jobs.app]
repository = "main"
source = "{url}"
schedule = "0 3 * * *"

[jobs.app.drill]
target = "{url}"
point = "random"

[[jobs.app.drill.checks]]
type = "mongo_count"
collection = "app.orders"
min = 50
"#
        ),
    );
    let cfg_s = cfg.to_str().unwrap();
    s.ok(&["--config", cfg_s, "create", "--job", "app"]);
    let follow = || {
        Command::new(env!("CARGO_BIN_EXE_backup"))
            .args(["oplog", "follow", &url, "--slice-time", "1s"])
            .env("BACKUP_REPOSITORY", &s.repo)
            .env("BACKUP_PASSWORD", PASSWORD)
            .env("HOME", s.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut follower = follow();
    // Inserts over four seconds, then a later write in another database
    // (the follower stores the newest timestamp once a later one shows
    // nothing else shares it).
    for i in 100..200 {
        orders
            .insert_one(doc! {"_id": i, "paid": false})
            .run()
            .unwrap();
        std::thread::sleep(Duration::from_millis(40));
    }
    std::thread::sleep(Duration::from_millis(1100));
    client
        .database("other")
        .collection::<Document>("t")
        .insert_one(doc! {"_id": 1})
        .run()
        .unwrap();
    let inserts: Vec<(Timestamp, i64)> = client
        .database("local")
        .collection::<Document>("oplog.rs")
        .find(doc! {"ns": "app.orders", "op": "i"})
        .sort(doc! {"ts": 1})
        .run()
        .unwrap()
        .map(|d| {
            let d = d.unwrap();
            let id = d.get_document("o").unwrap().get("_id").unwrap().clone();
            (
                d.get_timestamp("ts").unwrap(),
                id.as_i64().or(id.as_i32().map(i64::from)).unwrap(),
            )
        })
        .filter(|(_, id)| *id >= 100)
        .collect();
    let last = inserts.last().unwrap().0;
    let start = Instant::now();
    loop {
        let listed = s.json(&["pitr"]);
        let to = listed[0]["windows"][0]["to"]
            .as_str()
            .unwrap_or("0:0")
            .to_owned();
        let (secs, inc) = to.split_once(':').unwrap();
        let to: (u32, u32) = (secs.parse().unwrap(), inc.parse().unwrap());
        if to >= (last.time, last.increment) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not captured: {listed:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = follower.kill();
    let _ = follower.wait();

    // A random second of the window, kept for inspection.
    let v = drill_json(&s, &["--config", cfg_s, "app", "--keep"], 0);
    let r = record(&v);
    assert_eq!(r["ok"], true, "{v}");
    assert_eq!(r["point_kind"], "random-point-in-window", "{r}");
    let at = chrono::DateTime::parse_from_rfc3339(r["point"].as_str().unwrap()).unwrap();
    let second = u32::try_from(at.timestamp()).unwrap();
    let want: Vec<i64> = inserts
        .iter()
        .filter(|(ts, _)| ts.time <= second)
        .map(|(_, id)| *id)
        .collect();
    let names = client.list_database_names().run().unwrap();
    let kept: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with("app_drill_"))
        .collect();
    assert_eq!(kept.len(), 1, "{names:?}");
    // Only the snapshot's databases are restored: `other`, created after
    // the base, is not written under its own name by the replay.
    assert!(
        !names.iter().any(|n| n.starts_with("other_drill")),
        "{names:?}"
    );
    let copy = client.database(kept[0]).collection::<Document>("orders");
    let mut got: Vec<i64> = copy
        .find(doc! {"_id": {"$gte": 100}})
        .run()
        .unwrap()
        .map(|d| d.unwrap().get_i32("_id").map(i64::from).unwrap())
        .collect();
    got.sort_unstable();
    assert_eq!(got, want, "replayed to {at}");
    assert_eq!(
        copy.count_documents(doc! {"_id": {"$lt": 100}})
            .run()
            .unwrap(),
        50
    );
    let replayed = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str().unwrap().contains("replayed"))
        .unwrap_or_else(|| panic!("no built-in check of the replayed copy: {r}"));
    assert_eq!(replayed["ok"], true, "{replayed}");
    client.database(kept[0]).drop().run().unwrap();

    // The canary: written while the oplog is captured, found in the copy
    // replayed to its write; the RPO is how long it took to be stored.
    let mut follower = follow();
    let v = drill_json(&s, &["--config", cfg_s, "app", "--point", "canary"], 0);
    let _ = follower.kill();
    let _ = follower.wait();
    let r = record(&v);
    assert_eq!(r["ok"], true, "{v}");
    assert_eq!(r["point_kind"], "canary", "{r}");
    let canary = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str().unwrap().contains("backup_drill.canary"))
        .unwrap_or_else(|| panic!("no canary check: {r}"));
    assert_eq!(canary["ok"], true, "{canary}");
    let rpo = r["rpo_seconds"].as_f64().unwrap();
    assert!(rpo > 0.0 && rpo < 120.0, "{r}");
    assert_eq!(
        client
            .database("backup_drill")
            .collection::<Document>("canary")
            .count_documents(doc! {})
            .run()
            .unwrap(),
        1
    );
    let names = client.list_database_names().run().unwrap();
    assert!(!names.iter().any(|n| n.contains("_drill_")), "{names:?}");
}

/// Every drill attempt is a record (issue 28, item 12): a canary drill
/// of a physical job whose URL names no database (the README's
/// `postgres://repl@host/`) writes to the job's `canary_database`
/// (default `postgres`) and, when the role may not, fails saying it was
/// the canary and what to change; `--point random` without captured WAL
/// fails with exit 2. Both are in `drill --history` and in the report.
#[test]
fn drills_that_fail_before_restoring_are_recorded() {
    let pg = crate::postgres_pitr::cluster(&[]);
    let mut s = Scratch::new();
    s.env.push(("PGPW".into(), PG_PASSWORD.into()));
    s.init();
    let scratch = PgCluster::owned_tempdir("drill-early-");
    let cfg = drill_config(
        &s,
        &format!(
            r#"
[jobs.cluster]
repository = "main"
source = "postgres://repl@127.0.0.1:{port}/?mode=physical"
source_password = {{ env = "PGPW" }}
schedule = "0 3 * * *"

[jobs.cluster.drill]
target = "{scratch}"
point = "canary"
"#,
            port = pg.port(),
            scratch = scratch.path().display(),
        ),
    );
    let cfg_s = cfg.to_str().unwrap();
    s.ok(&["--config", cfg_s, "create", "--job", "cluster"]);

    // The role `repl` may connect to `postgres` (not to a database named
    // after it, which libpq would pick) but not create a table there.
    let v = drill_json(&s, &["--config", cfg_s, "cluster"], 1);
    let r = record(&v);
    assert_eq!(r["ok"], false, "{v}");
    assert_eq!(r["point_kind"], "canary", "{r}");
    let error = r["error"].as_str().unwrap();
    assert!(
        error.contains("canary")
            && error.contains("database `postgres`")
            && error.contains("canary_database")
            && error.contains("permission denied"),
        "{error}"
    );
    assert!(v["id"].is_string(), "stored: {v}");

    let v = drill_json(&s, &["--config", cfg_s, "cluster", "--point", "random"], 2);
    let r = record(&v);
    assert_eq!(r["ok"], false, "{v}");
    assert_eq!(r["point_kind"], "random-point-in-window", "{r}");
    assert!(r.get("rto_seconds").is_none(), "{r}");
    assert!(entries(scratch.path()).is_empty(), "nothing was written");

    let history = s.json(&["--config", cfg_s, "drill", "--history"]);
    let history = history.as_array().unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
    assert!(history.iter().all(|h| h["record"]["ok"] == false));
    let out = s.run(&["--config", cfg_s, "drill", "--history"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("FAILED").count(), 2, "{text}");

    let report = s.json(&[
        "--config", cfg_s, "report", "--since", "1d", "--format", "json",
    ]);
    let job = report["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["history"]["name"] == "cluster")
        .unwrap();
    assert_eq!(job["summary"]["drills"], 2, "{job}");
    assert_eq!(job["summary"]["drills_passed"], 0, "{job}");
}
