//! A kill at the storage writes of database backups (issue 32): a
//! PostgreSQL logical backup, a MongoDB backup and a Redis backup, each
//! into a repository that holds an older snapshot of the same source,
//! killed by the storage failpoint before its Nth put or delete (or after
//! its last), as `crash_points` does for files. After each kill:
//! - `verify --read-data` passes and the older snapshot is still listed;
//! - a snapshot the killed run managed to write restores to the source;
//! - the backup run again completes (the dead process's lock does not
//!   block it), its snapshot restores to the source (compared with the
//!   suites' own checkers: `pg_dump` of both databases, raw BSON of every
//!   collection, Redis `DEBUG DIGEST`), and `backup unlock` leaves no lock.
//!
//! The source changes between the older snapshot and the killed backup, so
//! the killed run writes data packs, not only its manifest.

use backup_testkit::mongo::MongoServer;
use backup_testkit::postgres::PgCluster;
use backup_testkit::redis::RedisServer;
use mongodb::bson::{doc, Document};
use mongodb::sync::Client;

use crate::crash_points::{
    assert_killed, at_each_point, copy_tree, count_writes, listed, lock_files, unlocked_outcome,
    verify_ok, Point,
};
use crate::util::Scratch;

/// Restores snapshot `id` of a point's repository (the `n`th restore of
/// a case) and compares it with the source.
type RestoresSame<'a> = Box<dyn Fn(&Scratch, &str, usize) + 'a>;

/// One database backup under the failpoint.
struct DbCase<'a> {
    name: &'static str,
    /// The source, as `backup create` takes it.
    url: String,
    /// Compares a restored snapshot with the source.
    restores_same: RestoresSame<'a>,
}

impl DbCase<'_> {
    /// Takes the older snapshot, lets `change` alter the source, counts the
    /// backup's writes, then kills it at each point and checks; panics
    /// listing every failed point.
    fn run(&self, change: impl FnOnce()) {
        let base = Scratch::new();
        base.init();
        let older = base.json(&["create", &self.url])["id"]
            .as_str()
            .unwrap()
            .to_owned();
        change();
        let args = ["create".to_owned(), self.url.clone()];
        let writes = count_writes(&copy(&base), self.name, &args);
        at_each_point(self.name, writes, |point, n| {
            self.point(&base, &older, point, n)
        });
    }

    /// One kill point (the `n`th); returns the outcome.
    fn point(&self, base: &Scratch, older: &str, point: Point, n: usize) -> &'static str {
        let p = copy(base);
        let out = p
            .cmd()
            .env("BACKUP_FAILPOINT", point.spec())
            .args(["create", &self.url])
            .output()
            .unwrap();
        let finished = out.status.success();
        if !finished {
            assert_killed(&out);
        }
        let stale = lock_files(&p);
        verify_ok(&p);
        let before = listed(&p);
        assert!(before.contains_key(older), "the older snapshot is gone");
        assert!(before.len() <= 2, "{before:?}");
        for id in before.keys().filter(|id| *id != older) {
            (self.restores_same)(&p, id, 2 * n);
        }
        if finished {
            // This run wrote less than the counting run (how data falls
            // into packs depends on timing) and finished before the point.
            assert_eq!(before.len(), 2, "a finished run left no snapshot");
            return "finished-before-point";
        }
        let rerun = p.json(&["create", &self.url]);
        let id = rerun["id"].as_str().unwrap();
        verify_ok(&p);
        (self.restores_same)(&p, id, 2 * n + 1);
        unlocked_outcome(&p, &stale)
    }
}

/// A fresh copy of `base`'s repository in a scratch of its own.
fn copy(base: &Scratch) -> Scratch {
    let p = Scratch::new();
    copy_tree(
        std::path::Path::new(&base.repo),
        std::path::Path::new(&p.repo),
    );
    p
}

#[test]
fn crash_postgres_logical_backup() {
    let pg = PgCluster::start();
    pg.psql("postgres", "CREATE DATABASE src");
    pg.psql("src", crate::postgres::SCHEMA);
    let case = DbCase {
        name: "backup (PostgreSQL logical)",
        url: pg.url("src"),
        restores_same: Box::new(|p, id, n| {
            let db = format!("copy_{n}");
            p.ok(&["restore", id, "--to", &pg.url(&db)]);
            crate::postgres::assert_same_db((&pg, "src"), (&pg, &db));
            pg.psql("postgres", &format!("DROP DATABASE {db}"));
        }),
    };
    case.run(|| {
        pg.psql(
            "src",
            "CREATE TABLE crash_rows AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g",
        );
    });
}

#[test]
fn crash_mongodb_backup() {
    let m = MongoServer::start();
    let c = Client::with_uri_str(m.url("")).unwrap();
    let src = c.database("src");
    src.collection::<Document>("orders")
        .insert_many((0..500).map(|i| doc! {"_id": i, "sku": format!("s{i}"), "qty": i % 7}))
        .run()
        .unwrap();
    let url = m.url("");
    let case = DbCase {
        name: "backup (MongoDB)",
        url: url.clone(),
        restores_same: Box::new(|p, id, n| {
            let db = format!("copy_{n}");
            p.ok(&[
                "restore",
                id,
                "--to",
                &url,
                "--include",
                "src.*",
                "--rename",
                &format!("src:{db}"),
            ]);
            crate::mongo::assert_same_db((&c, "src"), (&c, &db));
            c.database(&db).drop().run().unwrap();
        }),
    };
    case.run(|| {
        src.collection::<Document>("events")
            .insert_many((0..3000).map(|i| doc! {"_id": i, "payload": format!("{i:0>200}")}))
            .run()
            .unwrap();
    });
}

#[test]
fn crash_redis_backup() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    let mut con = source.connection();
    for i in 0..300 {
        redis::cmd("SET")
            .arg(format!("k:{i}"))
            .arg(i)
            .exec(&mut con)
            .unwrap();
    }
    let case = DbCase {
        name: "backup (Redis)",
        url: source.url(),
        restores_same: Box::new(|p, id, _| {
            p.ok(&[
                "restore",
                id,
                "--to",
                &target.url(),
                "--drop",
                "-y",
                "--no-safety-backup",
            ]);
            assert_eq!(target.digest(), source.digest());
        }),
    };
    case.run(|| {
        for i in 0..2000 {
            redis::cmd("HSET")
                .arg(format!("h:{}", i % 50))
                .arg(format!("f{i}"))
                .arg(format!("{i:0>100}"))
                .exec(&mut con)
                .unwrap();
        }
    });
}

#[test]
fn crash_postgres_physical_backup() {
    let pg = crate::postgres_pitr::cluster(&[]);
    let digest = |c: &PgCluster| {
        c.psql(
            "postgres",
            "SELECT count(*), sum(hashtext(v)) FROM crash_rows; SELECT count(*) FROM markers",
        )
    };
    pg.psql(
        "postgres",
        "CREATE TABLE crash_rows AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 1000) g",
    );
    let case = DbCase {
        name: "backup (PostgreSQL physical)",
        url: format!("{}?mode=physical", pg.url("postgres")),
        restores_same: Box::new(|p, id, _| {
            let target = PgCluster::owned_tempdir("pg-crash-");
            let data = target.path().join("data");
            p.ok(&["restore", id, "--to", data.to_str().unwrap()]);
            let copy = PgCluster::start_existing(target, data);
            assert_eq!(digest(&copy), digest(&pg));
        }),
    };
    case.run(|| {
        pg.psql(
            "postgres",
            "INSERT INTO crash_rows SELECT g, md5(g::text) FROM generate_series(1001, 30000) g",
        );
    });
}
