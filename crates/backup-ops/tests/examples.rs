//! The example programs (`examples/`), run by their own code: each
//! example's `run` function is compiled into this test and driven against
//! real repositories and servers the test starts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

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
