//! The example programs (`examples/`), run by their own code: each
//! example's `run` function is compiled into this test and driven against
//! real repositories and servers the test starts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

#[allow(dead_code, unreachable_pub, missing_docs)]
#[path = "../examples/custom_source_sqlite.rs"]
mod sqlite;

/// A SQLite database backed up by the custom source round-trips: the
/// restored file opens and holds every row, including rows written by
/// another connection before the backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_sqlite_source_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT NOT NULL, qty INTEGER);",
    )
    .unwrap();
    for i in 0..2000 {
        conn.execute(
            "INSERT INTO orders (item, qty) VALUES (?1, ?2)",
            rusqlite::params![format!("item-{i}"), i % 7],
        )
        .unwrap();
    }
    let repo = dir.path().join("repo");
    let out = dir.path().join("restored");
    let restored = sqlite::run(repo.to_str().unwrap(), "pw", &db, &out)
        .await
        .unwrap();

    let copy = rusqlite::Connection::open(&restored).unwrap();
    let check: String = copy
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let rows = |c: &rusqlite::Connection| -> Vec<(i64, String, i64)> {
        let mut stmt = c
            .prepare("SELECT id, item, qty FROM orders ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    };
    assert_eq!(rows(&copy).len(), 2000);
    assert_eq!(rows(&copy), rows(&conn));

    // A second backup of the changed database is a second snapshot of
    // the same source, restored just as well.
    conn.execute("DELETE FROM orders WHERE qty = 0", [])
        .unwrap();
    let out2 = dir.path().join("restored2");
    let restored2 = sqlite::run(repo.to_str().unwrap(), "pw", &db, &out2)
        .await
        .unwrap();
    let copy2 = rusqlite::Connection::open(&restored2).unwrap();
    assert_eq!(rows(&copy2), rows(&conn));
}

#[allow(dead_code, unreachable_pub, missing_docs)]
#[path = "../examples/files_progress_cancel.rs"]
mod files;

/// The files example reports progress up to every byte of the directory,
/// and a backup cancelled from its own progress callback (half-way
/// through) writes no snapshot, while the next run completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_backup_reports_progress_and_cancels() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mut total = 0u64;
    for i in 0..40u64 {
        let body: Vec<u8> = (0..256 * 1024u64)
            .map(|j| (j.wrapping_mul(31).wrapping_add(i * 7919) % 251) as u8)
            .collect();
        total += body.len() as u64;
        std::fs::write(data.join(format!("file-{i:02}.bin")), body).unwrap();
    }
    let repo = dir.path().join("repo");
    let repo = repo.to_str().unwrap();

    // Cancelled from the callback once a quarter is read.
    let cancel = tokio_util::sync::CancellationToken::new();
    let token = cancel.clone();
    let ended = files::run(
        repo,
        "pw",
        &data,
        move |read, _| {
            if read >= total / 4 {
                token.cancel();
            }
        },
        &cancel,
    )
    .await
    .unwrap();
    assert_eq!(ended, files::Ended::Cancelled);
    let spec = backup_ops::repository::RepoSpec::new(repo, &[]).unwrap();
    let opened = backup_ops::repository::open(&spec, || Ok("pw".into()))
        .await
        .unwrap();
    assert!(opened.snapshots().await.unwrap().0.is_empty());

    // A full run: the callback saw every byte.
    let seen = Arc::new(AtomicU64::new(0));
    let seen2 = Arc::clone(&seen);
    let ended = files::run(
        repo,
        "pw",
        &data,
        move |read, _| {
            seen2.fetch_max(read, Ordering::Relaxed);
        },
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(matches!(ended, files::Ended::Snapshot(_)));
    assert_eq!(seen.load(Ordering::Relaxed), total);
    assert_eq!(opened.snapshots().await.unwrap().0.len(), 1);
}

/// The README's smallest complete program is `examples/readme.rs`, which
/// the test script builds and clippy checks: the two stay identical.
#[test]
fn readme_program_is_the_readme_example() {
    let readme = include_str!("../../../README.md");
    let example = include_str!("../examples/readme.rs");
    let start = readme
        .find("```rust,no_run\n")
        .expect("README has the program")
        + "```rust,no_run\n".len();
    let len = readme[start..].find("```").unwrap();
    let program = &readme[start..start + len];
    let body = example.split_once("\n\n").map(|(_, body)| body).unwrap();
    assert_eq!(program, body, "README and examples/readme.rs differ");
}

#[allow(dead_code, unreachable_pub, missing_docs)]
#[path = "../examples/postgres_to_s3_hourly.rs"]
mod hourly;

/// The hourly service backs a real PostgreSQL database up into a real S3
/// server: its schedule's first run happens at once and is exposed by
/// `last()`, a failing run (the database gone) is exposed too, and the
/// snapshot in S3 restores into a new database with every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hourly_postgres_service_backs_up_into_s3() {
    use backup_ops::repository::{open, RepoSpec};
    use backup_ops::restore::{open_target, restore, RestoreRequest};
    use backup_sources::TargetSpec;

    let s3 = backup_testkit::s3::S3Server::start();
    let pg = backup_testkit::postgres::PgCluster::start();
    pg.psql("postgres", "CREATE DATABASE app");
    pg.psql(
        "app",
        "CREATE TABLE events (id serial PRIMARY KEY, body text NOT NULL);
         INSERT INTO events (body) SELECT 'event ' || g FROM generate_series(1, 3000) g;",
    );
    let mut spec = RepoSpec::new(&s3.url("hourly"), &[]).unwrap();
    spec.options = s3.storage_options();
    let service = hourly::HourlyBackup::new(spec.clone(), "pw", &pg.url("app")).unwrap();
    assert!(service.last().is_none());

    // The schedule: an hour's period, its first run at once.
    let stop = tokio_util::sync::CancellationToken::new();
    let runner = service.clone();
    let token = stop.clone();
    let schedule =
        tokio::spawn(async move { runner.run_every(Duration::from_secs(3600), &token).await });
    let first = loop {
        if let Some(r) = service.last() {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.cancel();
    schedule.await.unwrap();
    let id = first.outcome.clone().expect("the first run succeeded");
    assert!(first.bytes > 0);

    // A run against a database that is gone is a failure, exposed.
    let broken = hourly::HourlyBackup::new(spec.clone(), "pw", &pg.url("missing")).unwrap();
    let failed = broken.run_once().await;
    assert!(failed.outcome.is_err(), "{failed:?}");
    assert!(broken.last().unwrap().outcome.is_err());

    // The snapshot in S3 restores.
    let repo = open(&spec, || Ok("pw".into())).await.unwrap();
    let target_spec = TargetSpec::new(pg.url("copy")).unwrap();
    let req = RestoreRequest {
        snapshot: id,
        ..RestoreRequest::default()
    };
    let target = open_target(&target_spec, &req.options).unwrap();
    restore(
        &repo,
        target.as_ref(),
        &target_spec,
        &req,
        &backup_ops::Unattended,
    )
    .await
    .unwrap();
    let count = pg.psql("copy", "SELECT count(*), max(body) FROM events");
    assert!(count.contains("3000"), "{count}");
}

#[allow(dead_code, unreachable_pub, missing_docs)]
#[path = "../examples/mongo_pitr.rs"]
mod pitr;

/// The PITR example against a real MongoDB-protocol replica set: a base,
/// the oplog followed by the library's task, and the database restored
/// as it was at a second between two batches of writes holds exactly the
/// first batch and the update made before that second, beside the
/// original, which keeps everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_database_restores_to_a_second_from_the_followed_oplog() {
    use mongodb::bson::{doc, Document};

    let server = backup_testkit::mongo::MongoServer::start();
    let url = server.url("");
    let client = mongodb::Client::with_uri_str(&url).await.unwrap();
    let orders = client.database("shop").collection::<Document>("orders");
    orders
        .insert_many((0..50).map(|i| doc! {"_id": i, "qty": 1}))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let repo_url = dir.path().join("repo");
    let repo = pitr::repository(repo_url.to_str().unwrap(), "pw")
        .await
        .unwrap();
    let capture = pitr::Capture::start(&repo, &url).await.unwrap();

    // After the base: a batch and an update, then the chosen second, then
    // a second batch and a delete that the restore must not see.
    orders
        .insert_many((50..80).map(|i| doc! {"_id": i, "qty": 2}))
        .await
        .unwrap();
    orders
        .update_one(doc! {"_id": 0}, doc! {"$set": {"qty": 7}})
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let at = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    orders
        .insert_many((80..100).map(|i| doc! {"_id": i, "qty": 3}))
        .await
        .unwrap();
    orders.delete_one(doc! {"_id": 1}).await.unwrap();
    capture
        .wait_for(&repo, at, Duration::from_secs(30))
        .await
        .unwrap();
    let summary = capture.stop().await.unwrap();
    assert!(summary.entries >= 31, "{summary:?}");

    let done = pitr::restore_to(&repo, &url, "shop", "shop_at", at)
        .await
        .unwrap();
    let (bases, _) = repo.snapshots().await.unwrap();
    assert_eq!(bases.len(), 1, "the capture's base is the only snapshot");
    assert_eq!(done.snapshot.id, bases[0].id);
    let ids_qty = |name: &'static str| {
        let client = client.clone();
        async move {
            use futures::TryStreamExt;
            let docs: Vec<Document> = client
                .database(name)
                .collection::<Document>("orders")
                .find(doc! {})
                .sort(doc! {"_id": 1})
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            docs.iter()
                .map(|d| (d.get_i32("_id").unwrap(), d.get_i32("qty").unwrap()))
                .collect::<Vec<_>>()
        }
    };
    let mut expected: Vec<(i32, i32)> = (0..80).map(|i| (i, if i < 50 { 1 } else { 2 })).collect();
    expected[0].1 = 7;
    assert_eq!(ids_qty("shop_at").await, expected);
    assert_eq!(ids_qty("shop").await.len(), 99);
}
