//! PostgreSQL backups and restores against throwaway clusters started by
//! the tests (`backup_testkit::postgres`).

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backup_testkit::postgres::PgCluster;

use crate::util::Scratch;

pub(crate) const SCHEMA: &str = include_str!("postgres_schema.sql");

/// A dump with the lines that differ between any two dumps removed (the
/// random `\restrict` key, version banners).
fn normalized(dump: &str) -> String {
    dump.lines()
        .filter(|l| {
            !l.starts_with("\\restrict")
                && !l.starts_with("\\unrestrict")
                && !l.starts_with("-- Dumped from")
                && !l.starts_with("-- Dumped by")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Schema (exact) and data (rows sorted) of a database, as `pg_dump` sees it.
fn dump_both(pg: &PgCluster, db: &str) -> (String, Vec<String>) {
    let schema = normalized(&pg.pg_dump(db, &["--schema-only"]));
    let mut data = columns_by_name(&normalized(&pg.pg_dump(db, &["--data-only"])));
    data.sort();
    (schema, data)
}

/// The lines of a data dump with every COPY block's columns put in name
/// order: a restored inheritance child may number its columns differently
/// (`pg_dump` and `pg_restore` do the same), which is not a difference in data.
fn columns_by_name(dump: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut perm: Option<Vec<usize>> = None;
    for line in dump.lines() {
        if line == "\\." {
            perm = None;
            out.push(line.to_owned());
            continue;
        }
        if let Some(p) = &perm {
            let fields: Vec<&str> = line.split('\t').collect();
            out.push(p.iter().map(|&i| fields[i]).collect::<Vec<_>>().join("\t"));
            continue;
        }
        if line.starts_with("COPY ") && line.ends_with("FROM stdin;") {
            if let (Some(a), Some(b)) = (line.find(" ("), line.rfind(") FROM")) {
                let cols: Vec<&str> = line[a + 2..b].split(", ").collect();
                let mut order: Vec<usize> = (0..cols.len()).collect();
                order.sort_by_key(|&i| cols[i]);
                let sorted: Vec<&str> = order.iter().map(|&i| cols[i]).collect();
                out.push(format!(
                    "{} ({}) FROM stdin;",
                    &line[..a],
                    sorted.join(", ")
                ));
                perm = Some(order);
                continue;
            }
        }
        out.push(line.to_owned());
    }
    out
}

pub(crate) fn assert_same_db(a: (&PgCluster, &str), b: (&PgCluster, &str)) {
    let (sa, da) = dump_both(a.0, a.1);
    let (sb, db) = dump_both(b.0, b.1);
    if sa != sb {
        let diff: Vec<String> = sa
            .lines()
            .zip(sb.lines())
            .filter(|(x, y)| x != y)
            .take(20)
            .map(|(x, y)| format!("- {x}\n+ {y}"))
            .collect();
        panic!(
            "schemas differ ({} vs {} lines):\n{}",
            sa.lines().count(),
            sb.lines().count(),
            diff.join("\n")
        );
    }
    assert_eq!(da.len(), db.len(), "data dumps differ in length");
    let diff: Vec<String> = da
        .iter()
        .zip(&db)
        .filter(|(x, y)| x != y)
        .take(10)
        .map(|(x, y)| format!("- {x}\n+ {y}"))
        .collect();
    assert!(diff.is_empty(), "data differs:\n{}", diff.join("\n"));
}

fn setup() -> (PgCluster, Scratch) {
    let pg = PgCluster::start();
    pg.psql("postgres", "CREATE DATABASE src");
    pg.psql("src", SCHEMA);
    let s = Scratch::new();
    s.init();
    (pg, s)
}

fn scalar(pg: &PgCluster, db: &str, sql: &str) -> String {
    pg.psql(db, sql).trim().to_owned()
}

#[test]
fn fidelity_round_trip_matches_pg_dump() {
    let (pg, s) = setup();
    let v = s.json(&["create", &pg.url("src"), "--tag", "pg"]);
    let id = v["id"].as_str().unwrap().to_owned();
    let meta = &v["snapshot"]["metadata"];
    assert!(meta["server_version"]
        .as_str()
        .unwrap()
        .starts_with(char::is_numeric));
    assert!(
        meta["snapshot_lsn"].as_str().unwrap().contains('/'),
        "{meta}"
    );
    let tables = meta["tables"].as_array().unwrap();
    let sink = tables
        .iter()
        .find(|t| t["name"] == "kitchen_sink")
        .expect("kitchen_sink in the manifest");
    assert_eq!(sink["rows"], 2501);
    assert!(sink["bytes"].as_u64().unwrap() > 100_000);
    let orders = tables.iter().find(|t| t["name"] == "orders").unwrap();
    assert_eq!(orders["rows"], 5000);
    // The URL is recorded without the password.
    let url = v["snapshot"]["source"]["url"].as_str().unwrap();
    assert!(!url.contains(backup_testkit::postgres::PASSWORD), "{url}");

    let out = s.json(&["restore", &id, "--to", &pg.url("copy")]);
    assert_eq!(out["report"]["details"]["action"], "create the database");
    assert_same_db((&pg, "src"), (&pg, "copy"));
    // Sequences continue where they were; identity too.
    assert_eq!(
        scalar(
            &pg,
            "copy",
            "SELECT nextval('sales.customers_customer_id_seq')"
        ),
        "5001"
    );
    assert_eq!(
        scalar(&pg, "copy", "SELECT count(*) FROM pg_largeobject_metadata"),
        "2"
    );
    assert_eq!(
        scalar(
            &pg,
            "copy",
            "SELECT ispopulated FROM pg_matviews WHERE matviewname = 'daily'"
        ),
        "t"
    );
    assert_eq!(
        scalar(
            &pg,
            "copy",
            "SELECT ispopulated FROM pg_matviews WHERE matviewname = 'never_filled'"
        ),
        "f"
    );
    // Verify can restore into a scratch database and compare row counts.
    s.ok(&["verify", &id, "--restore-test", &pg.url("scratch")]);
    assert_eq!(
        scalar(
            &pg,
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'scratch'"
        ),
        "0"
    );
}

#[test]
fn selective_restore_takes_tables_and_their_dependents() {
    let (pg, s) = setup();
    let v = s.json(&["create", &pg.url("src")]);
    let id = v["id"].as_str().unwrap().to_owned();
    let out = s.json(&[
        "restore",
        &id,
        "--to",
        &pg.url("part"),
        "--include",
        "sales.*",
        "--exclude",
        "sales.audit",
    ]);
    let skipped = out["report"]["details"]["skipped"].to_string();
    assert!(skipped.contains("audit"), "{skipped}");
    let tables = scalar(
        &pg,
        "part",
        "SELECT string_agg(schemaname || '.' || tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
    );
    assert_eq!(tables, "sales.customers,sales.orders");
    assert_eq!(
        scalar(&pg, "part", "SELECT count(*) FROM sales.orders"),
        "5000"
    );
    // Dependent objects came along: indexes, foreign key, views,
    // materialized views; objects of the excluded audit table did not.
    assert_eq!(
        scalar(
            &pg,
            "part",
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'orders'"
        ),
        "4"
    );
    assert_eq!(
        scalar(
            &pg,
            "part",
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f'"
        ),
        "1"
    );
    assert_eq!(
        scalar(
            &pg,
            "part",
            "SELECT count(*) FROM pg_views WHERE schemaname = 'sales'"
        ),
        "1"
    );
    assert_eq!(
        scalar(&pg, "part", "SELECT count(*) FROM sales.daily"),
        scalar(&pg, "src", "SELECT count(*) FROM sales.daily")
    );

    // A partitioned table brings its partitions.
    s.ok(&[
        "restore",
        &id,
        "--to",
        &pg.url("parts"),
        "--include",
        "public.measurements",
    ]);
    assert_eq!(
        scalar(&pg, "parts", "SELECT count(*) FROM public.measurements"),
        scalar(&pg, "src", "SELECT count(*) FROM public.measurements")
    );
    assert_eq!(
        scalar(&pg, "parts", "SELECT count(*) FROM pg_inherits"),
        scalar(&pg, "src", "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE c.relname LIKE 'measurements%'")
    );
    // Patterns that select nothing are a usage error.
    let err = s.fails(
        &[
            "restore",
            &id,
            "--to",
            &pg.url("none"),
            "--include",
            "nope.*",
        ],
        2,
    );
    assert!(err.contains("select no table"), "{err}");
}

#[test]
fn restore_to_another_cluster_and_over_existing_with_drop() {
    let (pg, s) = setup();
    let other = PgCluster::start();
    // With the roles (globals), so that ownership and grants to the
    // `reporting` role can be restored on the other cluster.
    let v = s.json(&["create", &pg.url("src"), "--pg-globals"]);
    let id = v["id"].as_str().unwrap().to_owned();
    s.ok(&["restore", &id, "--to", &other.url("elsewhere")]);
    assert_same_db((&pg, "src"), (&other, "elsewhere"));

    // Over an existing, changed database: refused without --drop.
    other.psql(
        "elsewhere",
        "DELETE FROM sales.orders WHERE order_id < 100; CREATE TABLE public.extra (x int);",
    );
    let err = s.fails(&["restore", &id, "--to", &other.url("elsewhere")], 1);
    assert!(err.contains("not empty") && err.contains("--drop"), "{err}");
    assert_eq!(
        scalar(&other, "elsewhere", "SELECT count(*) FROM sales.orders"),
        "4901"
    );

    // With --drop: a safety backup first, then the snapshot replaces it.
    let out = s.json(&[
        "restore",
        &id,
        "--to",
        &other.url("elsewhere"),
        "--drop",
        "--yes",
    ]);
    let safety = out["safety_backup"]
        .as_str()
        .expect("a safety backup")
        .to_owned();
    assert_same_db((&pg, "src"), (&other, "elsewhere"));
    // The safety backup holds what was replaced.
    s.ok(&["restore", &safety, "--to", &other.url("before")]);
    assert_eq!(
        scalar(&other, "before", "SELECT count(*) FROM sales.orders"),
        "4901"
    );
    assert_eq!(
        scalar(&other, "before", "SELECT count(*) FROM public.extra"),
        "0"
    );

    // Selective --drop replaces only the selected table.
    other.psql(
        "elsewhere",
        "DELETE FROM sales.orders; INSERT INTO public.vehicles (wheels) VALUES (9);",
    );
    s.ok(&[
        "restore",
        &id,
        "--to",
        &other.url("elsewhere"),
        "--include",
        "sales.orders",
        "--drop",
        "--yes",
    ]);
    assert_eq!(
        scalar(&other, "elsewhere", "SELECT count(*) FROM sales.orders"),
        "5000"
    );
    assert_eq!(
        scalar(
            &other,
            "elsewhere",
            "SELECT count(*) FROM ONLY public.vehicles"
        ),
        "51"
    );
    assert_eq!(
        scalar(
            &other,
            "elsewhere",
            "SELECT count(*) FROM pg_trigger WHERE tgname = 'orders_audit'"
        ),
        "1"
    );
}

#[test]
fn dry_run_changes_nothing() {
    let (pg, s) = setup();
    let v = s.json(&["create", &pg.url("src")]);
    let id = v["id"].as_str().unwrap().to_owned();
    let out = s.ok(&["restore", &id, "--to", &pg.url("fresh"), "--dry-run"]);
    assert!(out.contains("would create the database"), "{out}");
    assert!(out.contains("sales.orders 5000 rows"), "{out}");
    assert!(out.contains("dry run: nothing was changed"), "{out}");
    assert_eq!(
        scalar(
            &pg,
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'fresh'"
        ),
        "0"
    );
    pg.psql("postgres", "CREATE DATABASE busy");
    pg.psql(
        "busy",
        "CREATE TABLE keep (x int); INSERT INTO keep VALUES (1), (2);",
    );
    let before = dump_both(&pg, "busy");
    let j = s.json(&[
        "restore",
        &id,
        "--to",
        &pg.url("busy"),
        "--drop",
        "--dry-run",
    ]);
    assert_eq!(j["report"]["dry_run"], true);
    assert_eq!(
        j["report"]["details"]["action"],
        "drop and recreate the database"
    );
    assert!(j["safety_backup"].is_null());
    assert_eq!(dump_both(&pg, "busy"), before);
    let snaps = s.json(&["list"]);
    assert_eq!(snaps.as_array().map(Vec::len), Some(1), "{snaps}");
}

#[test]
fn concurrent_writer_transactions_are_all_in_or_all_out() {
    let pg = PgCluster::start();
    pg.psql("postgres", "CREATE DATABASE live");
    pg.psql(
        "live",
        "CREATE TABLE a (tx int, n int); CREATE TABLE b (tx int, n int); \
         CREATE TABLE filler AS SELECT i, repeat(md5(i::text), 8) AS pad FROM generate_series(1, 400000) i;",
    );
    // The writer: many transactions, each writing 3 rows to `a` and 2 to
    // `b`, committed one after the other.
    let mut script = String::new();
    for tx in 1..=20_000 {
        let _ = writeln!(
            script,
            "BEGIN; INSERT INTO a VALUES ({tx},1),({tx},2),({tx},3); INSERT INTO b VALUES ({tx},1),({tx},2); COMMIT;"
        );
    }
    let mut writer = pg
        .tool("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "live", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = writer.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        use std::io::Write as _;
        let _ = stdin.write_all(script.as_bytes());
    });
    let start = Instant::now();
    while scalar(&pg, "live", "SELECT count(*) FROM b")
        .parse::<u64>()
        .unwrap()
        < 200
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "writer did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = Scratch::new();
    s.init();
    let v = s.json(&["create", &pg.url("live")]);
    let still_writing = writer.try_wait().unwrap().is_none();
    feeder.join().unwrap();
    assert!(writer.wait().unwrap().success());
    let id = v["id"].as_str().unwrap().to_owned();
    s.ok(&["restore", &id, "--to", &pg.url("frozen")]);
    let torn = scalar(
        &pg,
        "frozen",
        "SELECT count(*) FROM (SELECT tx FROM a GROUP BY tx HAVING count(*) <> 3 \
         UNION ALL SELECT tx FROM b GROUP BY tx HAVING count(*) <> 2 \
         UNION ALL (SELECT tx FROM a EXCEPT SELECT tx FROM b) \
         UNION ALL (SELECT tx FROM b EXCEPT SELECT tx FROM a)) x",
    );
    assert_eq!(torn, "0", "some transactions are only partly in the backup");
    let got: u64 = scalar(&pg, "frozen", "SELECT count(DISTINCT tx) FROM a")
        .parse()
        .unwrap();
    assert!(
        got >= 200,
        "the backup missed transactions committed before it ({got})"
    );
    assert!(
        got < 20_000 || !still_writing,
        "the writer was still running, yet the backup holds every transaction"
    );
    let final_count: u64 = scalar(&pg, "live", "SELECT count(DISTINCT tx) FROM a")
        .parse()
        .unwrap();
    assert_eq!(final_count, 20_000);
}

#[test]
fn pgbench_update_of_one_percent_adds_little() {
    let pg = PgCluster::start();
    pg.psql("postgres", "CREATE DATABASE bench");
    let out = pg
        .tool("pgbench")
        // Scale 20 (2 M rows, ~200 MiB of COPY text): large against the
        // 1 MiB average chunk, so that where the repository's random gear
        // seed puts chunk boundaries does not decide the result.
        .args(["-i", "-s", "20", "-q", "bench"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pgbench -i failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = Scratch::new();
    s.init();
    let first = s.json(&["create", &pg.url("bench")]);
    let stored1 = first["snapshot"]["stats"]["bytes_stored"].as_u64().unwrap();
    // 1% of the accounts (a contiguous range, as a day's activity on
    // recent rows would be) and some history.
    pg.psql(
        "bench",
        "UPDATE pgbench_accounts SET abalance = abalance + 7 WHERE aid <= 20000; \
         INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) SELECT 1, 1, i, 7, now() FROM generate_series(1, 300) i;",
    );
    let second = s.json(&["create", &pg.url("bench")]);
    let stored2 = second["snapshot"]["stats"]["bytes_stored"]
        .as_u64()
        .unwrap();
    // The rows moved to the table's end, so two regions of the COPY text
    // changed: about a chunk (1 MiB on average, 4 MiB at most, where the
    // repository's random gear seed cuts) around each, and compressed. A
    // second full copy would store as much as the first.
    assert!(
        stored2 * 100 <= stored1 * 15,
        "second backup stored {stored2} bytes, more than 15% of the first's {stored1}"
    );
    let id = second["id"].as_str().unwrap().to_owned();
    s.ok(&["restore", &id, "--to", &pg.url("bench2")]);
    assert_eq!(
        scalar(&pg, "bench2", "SELECT sum(abalance) FROM pgbench_accounts"),
        "140000"
    );
}

#[test]
fn clear_errors() {
    let (pg, s) = setup();
    // Wrong password.
    let bad = pg
        .url("src")
        .replace(backup_testkit::postgres::PASSWORD, "wrong");
    let err = s.fails(&["create", &bad], 1);
    assert!(
        err.contains("authentication") && err.contains("password"),
        "{err}"
    );
    assert!(!err.contains("wrong@"), "the password leaked: {err}");
    // Unreachable server.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = s.fails(
        &[
            "create",
            &format!("postgres://postgres:x@127.0.0.1:{port}/src"),
        ],
        1,
    );
    assert!(
        err.contains("cannot connect") && err.contains("running"),
        "{err}"
    );
    // pg_dump missing.
    let empty = s.path("no-tools");
    std::fs::create_dir_all(&empty).unwrap();
    let out = s
        .cmd()
        .env("BACKUP_PG_BINDIR", &empty)
        .args(["create", &pg.url("src")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("pg_dump was not found") && err.contains("postgresql-client-"),
        "{err}"
    );
    // pg_dump older than the server.
    let old = s.path("old-tools");
    std::fs::create_dir_all(&old).unwrap();
    let fake = old.join("pg_dump");
    std::fs::write(&fake, "#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n").unwrap();
    Command::new("chmod")
        .args(["755", fake.to_str().unwrap()])
        .status()
        .unwrap();
    let out = s
        .cmd()
        .env("BACKUP_PG_BINDIR", &old)
        .args(["create", &pg.url("src")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("older than the server"), "{err}");
    // Permission denied on a table.
    pg.psql(
        "src",
        "CREATE ROLE limited LOGIN PASSWORD 'limited'; GRANT USAGE ON SCHEMA sales TO limited; \
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO limited; GRANT SELECT ON sales.orders TO limited;",
    );
    let limited = format!("postgres://limited:limited@127.0.0.1:{}/src", pg.port());
    let err = s.fails(&["create", &limited, "--include", "sales.*"], 1);
    assert!(
        err.contains("may not read") && err.contains("sales.customers"),
        "{err}"
    );
    // No snapshot was written by any of these.
    let snaps = s.json(&["list"]);
    assert_eq!(snaps.as_array().map(Vec::len), Some(0), "{snaps}");
}

/// The COPY workers speak the wire protocol themselves (not through
/// `tokio-postgres`): they must authenticate with MD5 and cleartext
/// passwords as well as SCRAM, and use TLS when the URL asks for it (here a
/// rule rejects any connection of that user without TLS), and still bring
/// every row.
#[test]
fn workers_authenticate_with_md5_cleartext_and_tls() {
    use std::os::unix::fs::PermissionsExt;

    let (pg, s) = setup();
    // A table past the readers' 1 MiB pacing threshold.
    pg.psql(
        "src",
        "CREATE TABLE wide AS SELECT i, repeat(md5(i::text), 4) AS pad FROM generate_series(1, 40000) i;",
    );
    pg.psql(
        "postgres",
        "SET password_encryption = 'md5';
         CREATE ROLE md5user LOGIN SUPERUSER PASSWORD 'md5-secret';
         CREATE ROLE plainuser LOGIN SUPERUSER PASSWORD 'plain-secret';
         RESET password_encryption;
         CREATE ROLE tlsuser LOGIN SUPERUSER PASSWORD 'tls-secret';",
    );
    // A self-signed certificate for the server.
    let dir = pg.dir();
    let (crt, key) = (dir.join("server.crt"), dir.join("server.key"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .expect("running openssl (apt-get install -y openssl)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    if let Some(user) = pg.run_as() {
        let st = Command::new("chown")
            .arg(user)
            .arg(&key)
            .arg(&crt)
            .status()
            .unwrap();
        assert!(st.success());
    }
    let hba = dir.join("data/pg_hba.conf");
    let rules = "host all md5user 127.0.0.1/32 md5\n\
                 host all plainuser 127.0.0.1/32 password\n\
                 hostnossl all tlsuser 127.0.0.1/32 reject\n\
                 hostssl all tlsuser 127.0.0.1/32 scram-sha-256\n";
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(&hba, format!("{rules}{old}")).unwrap();
    pg.psql(
        "postgres",
        &format!(
            "ALTER SYSTEM SET ssl = on; ALTER SYSTEM SET ssl_cert_file = '{}'; ALTER SYSTEM SET ssl_key_file = '{}'; SELECT pg_reload_conf();",
            crt.display(),
            key.display()
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while scalar(&pg, "postgres", "SHOW ssl") != "on" {
        assert!(Instant::now() < deadline, "the server did not turn TLS on");
        std::thread::sleep(Duration::from_millis(100));
    }

    let port = pg.port();
    let cases = [
        ("md5user", "md5-secret", ""),
        ("plainuser", "plain-secret", ""),
        ("tlsuser", "tls-secret", "?sslmode=require"),
    ];
    for (i, (user, password, query)) in cases.iter().enumerate() {
        let url = format!("postgres://{user}:{password}@127.0.0.1:{port}/src{query}");
        let v = s.json(&["create", &url]);
        let tables = v["snapshot"]["metadata"]["tables"].as_array().unwrap();
        let wide = tables.iter().find(|t| t["name"] == "wide").unwrap();
        assert_eq!(wide["rows"], 40000, "{user}");
        let id = v["id"].as_str().unwrap().to_owned();
        let target = format!("copy{i}");
        s.ok(&["restore", &id, "--to", &pg.url(&target)]);
        assert_same_db((&pg, "src"), (&pg, &target));
    }
    // Without TLS the same user is turned away, and the error says so.
    let err = s.fails(
        &[
            "create",
            &format!("postgres://tlsuser:tls-secret@127.0.0.1:{port}/src?sslmode=disable"),
        ],
        1,
    );
    assert!(
        err.contains("pg_hba.conf") || err.contains("rejects"),
        "{err}"
    );
}
