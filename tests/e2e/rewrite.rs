//! Erasing data from snapshots (`backup rewrite`), issue 33: a leaked
//! file from files snapshots, one customer from PostgreSQL and MongoDB
//! snapshots. After `prune --repack-threshold 0` no pack holds the
//! erased bytes (every blob of every pack decrypted and searched through
//! the library), `verify --read-data` passes, everything else restores
//! as it was, and the audit trail says who erased what and why without
//! the erased values. Bad input changes nothing.

use std::collections::BTreeSet;
use std::fs;
use std::sync::Arc;

use backup_core::pack::{decode_blob, decode_header, header_length};
use backup_core::repo::Repository;
use backup_core::{FileKind, Id, Sink};
use backup_storage::LocalSink;
use backup_testkit::mongo::MongoServer;
use backup_testkit::postgres::PgCluster;
use mongodb::bson::{doc, Document};
use mongodb::sync::Client;

use crate::mongo_pitr::{newest, wait_stored, Follower};
use crate::util::{write, Scratch, PASSWORD};

/// How many stored blobs (data and trees, every pack, decrypted and
/// decompressed) and snapshot manifests contain `needle`.
fn stored_copies(s: &Scratch, needle: &[u8]) -> usize {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sink: Arc<dyn Sink> = Arc::new(LocalSink::new(s.path("repo")));
        let repo = Repository::open(sink.clone(), Some(PASSWORD.as_bytes()))
            .await
            .unwrap();
        let has = |b: &[u8]| b.windows(needle.len()).any(|w| w == needle);
        let mut found = 0;
        for info in sink.list(FileKind::Pack).await.unwrap() {
            let id: Id = info.name.parse().unwrap();
            let data = sink.get(FileKind::Pack, &info.name).await.unwrap();
            let len = header_length(&id, data.len() as u64, &data).unwrap() as usize;
            let end = data.len() - 4;
            let entries = decode_header(repo.key(), &id, &data[end - len..end]).unwrap();
            for e in entries {
                let stored = &data[e.offset as usize..(e.offset + e.length) as usize];
                let plain = decode_blob(repo.key(), repo.hasher(), &e, &id, stored).unwrap();
                if has(&plain) {
                    found += 1;
                }
            }
        }
        let (snapshots, _) = repo.snapshots().await.unwrap();
        for s in snapshots {
            if has(serde_json::to_string(&s.snapshot).unwrap().as_bytes()) {
                found += 1;
            }
        }
        found
    })
}

/// Snapshot ids with their times and tags.
fn listing(s: &Scratch) -> BTreeSet<(String, String, String)> {
    s.json(&["list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap().to_owned(),
                e["snapshot"]["time"].to_string(),
                e["snapshot"]["tags"].to_string(),
            )
        })
        .collect()
}

/// Times and tags only (ids change in a rewrite).
fn times_and_tags(s: &Scratch) -> BTreeSet<(String, String)> {
    listing(s).into_iter().map(|(_, t, g)| (t, g)).collect()
}

fn ids(s: &Scratch) -> BTreeSet<String> {
    listing(s).into_iter().map(|(i, _, _)| i).collect()
}

/// The audit trail as text, and its `rewrite` records.
fn audit(s: &Scratch) -> (String, Vec<serde_json::Value>) {
    let audit = s.json(&["audit"]);
    assert_eq!(audit["ok"], true, "{audit}");
    let records = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["operation"] == "rewrite")
        .cloned()
        .collect();
    (audit.to_string(), records)
}

#[test]
fn rewrite_removes_a_leaked_file_from_files_snapshots() {
    const SECRET: &[u8] = b"AKIA-LEAKED-7f3a9c2e-do-not-keep";
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    write(&src.join("config/app.yml"), b"port: 8080\n");
    write(&src.join("config/secret.env"), SECRET);
    write(&src.join("data/notes.txt"), b"notes\n");
    for (i, tag) in ["daily", "weekly", "monthly"].iter().enumerate() {
        write(
            &src.join(format!("data/day{i}.txt")),
            format!("day {i}\n").as_bytes(),
        );
        s.create(
            &src,
            &[
                "--tag",
                tag,
                "--time",
                &format!("2026-01-0{}T00:00:00Z", i + 1),
            ],
        );
    }
    assert!(stored_copies(&s, SECRET) > 0);
    let before = times_and_tags(&s);
    let old_ids = ids(&s);

    // Refused before anything changes: no reason, nothing to remove, an
    // unknown snapshot, a bad pattern.
    s.fails(&["rewrite", "--exclude", "config/secret.env"], 2);
    s.fails(&["rewrite", "--reason", "leak"], 2);
    let err = s.fails(
        &[
            "rewrite",
            "feedface",
            "--exclude",
            "secret.env",
            "--reason",
            "leak",
        ],
        1,
    );
    assert!(err.contains("feedface"), "{err}");
    s.fails(&["rewrite", "--exclude", "[", "--reason", "leak"], 2);
    // A dry run says what would go and changes nothing.
    let out = s.ok(&[
        "rewrite",
        "--exclude",
        "config/secret.env",
        "--reason",
        "leaked key",
        "--dry-run",
    ]);
    assert!(out.contains("removed /config/secret.env"), "{out}");
    assert!(out.contains("3 snapshots would be rewritten"), "{out}");
    assert_eq!(ids(&s), old_ids);

    let out = s.json(&[
        "rewrite",
        "--exclude",
        "config/secret.env",
        "--reason",
        "leaked key INC-42",
    ]);
    assert_eq!(out["rewritten"].as_array().unwrap().len(), 3, "{out}");
    let new_ids = ids(&s);
    assert!(new_ids.is_disjoint(&old_ids), "new ids");
    assert_eq!(times_and_tags(&s), before, "same times and tags");
    for id in &new_ids {
        let tree = s.ok(&["ls", id, "-R"]);
        assert!(!tree.contains("secret.env"), "{tree}");
        assert!(tree.contains("/config/app.yml"), "{tree}");
        let shown = s.json(&["show", id]);
        let rewritten = &shown["snapshot"]["rewritten"];
        assert_eq!(rewritten["reason"], "leaked key INC-42", "{shown}");
        assert!(old_ids.contains(rewritten["from"].as_str().unwrap()));
    }
    // Again: nothing left to remove.
    let again = s.ok(&[
        "rewrite",
        "--exclude",
        "config/secret.env",
        "--reason",
        "again",
    ]);
    assert!(
        again.contains("0 snapshots rewritten, 3 held nothing"),
        "{again}"
    );
    assert_eq!(ids(&s), new_ids);

    s.ok(&["prune", "--repack-threshold", "0"]);
    assert_eq!(
        stored_copies(&s, SECRET),
        0,
        "the secret is gone from every pack"
    );
    s.ok(&["verify", "--read-data"]);
    let out = s.path("out");
    s.ok(&["restore", "latest", "--to", out.to_str().unwrap()]);
    assert!(!out.join("config/secret.env").exists());
    assert_eq!(
        fs::read(out.join("config/app.yml")).unwrap(),
        b"port: 8080\n"
    );
    assert_eq!(fs::read(out.join("data/day2.txt")).unwrap(), b"day 2\n");

    let (_, records) = audit(&s);
    let ok: Vec<_> = records
        .iter()
        .filter(|r| r["status"] == "success")
        .collect();
    assert!(!ok.is_empty(), "{records:?}");
    let last = ok
        .iter()
        .find(|r| r["details"]["reason"] == "leaked key INC-42")
        .unwrap();
    assert_eq!(last["details"]["changes"][0], "exclude config/secret.env");
    assert_eq!(last["details"]["rewritten"].as_array().unwrap().len(), 3);
}

const SHOP: &str = r"
CREATE SCHEMA sales;
CREATE TABLE sales.customers (
    id int PRIMARY KEY,
    name text NOT NULL,
    email text NOT NULL UNIQUE
);
CREATE TABLE sales.orders (
    id serial PRIMARY KEY,
    customer_id int NOT NULL REFERENCES sales.customers (id),
    amount numeric NOT NULL CHECK (amount > 0)
);
INSERT INTO sales.customers VALUES
    (1, 'Ada', 'ada@example.com'),
    (2, 'Brian', 'brian@example.com'),
    (3, 'Zelda Forgetme', 'forget-me-please@example.com'),
    (4, 'Dora', 'dora@example.com');
INSERT INTO sales.orders (customer_id, amount) VALUES (1, 10), (3, 20), (2, 30), (3, 40), (4, 50);
";

/// Rows of both tables except customer 3's, as text.
const OTHERS: &str = "SELECT string_agg(c::text, ';' ORDER BY c.id) FROM sales.customers c WHERE id <> 3 \
    UNION ALL SELECT string_agg(o::text, ';' ORDER BY o.id) FROM sales.orders o WHERE customer_id <> 3";

#[test]
fn rewrite_erases_a_customer_from_postgres_snapshots() {
    const EMAIL: &[u8] = b"forget-me-please@example.com";
    let pg = PgCluster::start();
    pg.psql("postgres", "CREATE DATABASE app");
    pg.psql("app", SHOP);
    let s = Scratch::new();
    s.init();
    for i in 0..4 {
        pg.psql(
            "app",
            &format!(
                "INSERT INTO sales.orders (customer_id, amount) VALUES (1, {})",
                100 + i
            ),
        );
        s.json(&[
            "create",
            &pg.url("app"),
            "--tag",
            "nightly",
            "--time",
            &format!("2026-02-0{}T00:00:00Z", i + 1),
        ]);
    }
    assert!(stored_copies(&s, EMAIL) > 0);
    let old_ids = ids(&s);
    let before = times_and_tags(&s);

    // Bad input: each refused, nothing changed.
    let err = s.fails(
        &[
            "rewrite",
            "--pg-delete",
            "sales.nosuch:id = 3",
            "--reason",
            "r",
        ],
        1,
    );
    assert!(err.contains("sales.nosuch"), "{err}");
    let err = s.fails(
        &[
            "rewrite",
            "--pg-delete",
            "sales.customers:nocol = 3",
            "--reason",
            "r",
        ],
        2,
    );
    assert!(err.contains("no column `nocol`"), "{err}");
    let err = s.fails(
        &["rewrite", "--pg-delete", "customers id 3", "--reason", "r"],
        2,
    );
    assert!(err.contains("schema.table:column = value"), "{err}");
    assert_eq!(ids(&s), old_ids);

    let out = s.json(&[
        "rewrite",
        "--pg-delete",
        "sales.customers:email = forget-me-please@example.com",
        "--pg-delete",
        "sales.orders:customer_id = 3",
        "--reason",
        "GDPR erasure request 2026-117",
    ]);
    let rewritten = out["rewritten"].as_array().unwrap();
    assert_eq!(rewritten.len(), 4, "{out}");
    for r in rewritten {
        assert_eq!(r["removed"]["sales.customers"]["records"], 1, "{out}");
        assert_eq!(r["removed"]["sales.orders"]["records"], 2, "{out}");
    }
    assert!(ids(&s).is_disjoint(&old_ids));
    assert_eq!(times_and_tags(&s), before);
    // The manifest's counts follow.
    let shown = s.json(&["show", "latest"]);
    let tables = shown["snapshot"]["metadata"]["tables"].as_array().unwrap();
    let rows = |name: &str| {
        tables.iter().find(|t| t["name"] == name).unwrap()["rows"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(rows("customers"), 3, "{shown}");
    assert_eq!(rows("orders"), 3 + 4, "{shown}");

    s.ok(&["prune", "--repack-threshold", "0"]);
    assert_eq!(
        stored_copies(&s, EMAIL),
        0,
        "no pack holds the erased email"
    );
    s.ok(&["verify", "--read-data"]);

    // Every other row restores as it was, and the constraints hold
    // (the restore builds the foreign key and checks after the rows).
    let want = pg.psql("app", OTHERS);
    for (i, id) in ids(&s).iter().enumerate() {
        let db = format!("restored{i}");
        s.ok(&["restore", id, "--to", &pg.url(&db)]);
        let q = |sql: &str| pg.psql(&db, sql).trim().to_owned();
        assert_eq!(
            q("SELECT count(*) FROM sales.customers WHERE id = 3 OR email LIKE 'forget-me%'"),
            "0"
        );
        assert_eq!(
            q("SELECT count(*) FROM sales.orders WHERE customer_id = 3"),
            "0"
        );
        assert_eq!(
            q("SELECT count(*) FROM sales.orders o LEFT JOIN sales.customers c ON c.id = o.customer_id WHERE c.id IS NULL"),
            "0"
        );
        assert_eq!(
            q("SELECT count(*) FROM pg_constraint WHERE conrelid = 'sales.orders'::regclass AND contype = 'f' AND convalidated"),
            "1"
        );
        let got = pg.psql(&db, OTHERS);
        if id == &latest_id(&s) {
            assert_eq!(got, want, "the latest snapshot holds every other row");
        }
        assert!(got.contains("Ada") && got.contains("Dora"), "{got}");
    }

    // Who, what and why, without the value.
    let (text, records) = audit(&s);
    assert!(
        !text.contains("forget-me-please"),
        "the audit trail repeats the value"
    );
    let r = records
        .iter()
        .find(|r| r["status"] == "success")
        .expect("a rewrite record");
    assert_eq!(r["details"]["reason"], "GDPR erasure request 2026-117");
    assert_eq!(r["details"]["changes"][0], "sales.customers:email = ?");
    assert!(r["user"].is_string());
    let shown = s.json(&["show", "latest"]).to_string();
    assert!(!shown.contains("forget-me-please"));
}

fn latest_id(s: &Scratch) -> String {
    s.json(&["show", "latest"])["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn rewrite_refuses_physical_postgres_snapshots() {
    let pg = PgCluster::start();
    pg.psql(
        "postgres",
        "CREATE TABLE t (a int); INSERT INTO t VALUES (1)",
    );
    let s = Scratch::new();
    s.init();
    s.json(&["create", &format!("{}?mode=physical", pg.url("postgres"))]);
    let before = ids(&s);
    let err = s.fails(
        &["rewrite", "--pg-delete", "public.t:a = 1", "--reason", "r"],
        2,
    );
    assert!(err.contains("physical"), "{err}");
    assert!(err.contains("logical"), "{err}");
    assert_eq!(ids(&s), before);
}

/// Erasing one person from MongoDB snapshots while `oplog follow`
/// captured the oplog: the captured slices still hold the person (listed
/// by `rewrite`, kept by prune) until `--drop-captures-before` deletes
/// them.
#[test]
fn rewrite_erases_a_person_from_mongodb_snapshots() {
    const EMAIL: &[u8] = b"erase-this-person@example.com";
    let server = MongoServer::start();
    let client = Client::with_uri_str(server.url("")).unwrap();
    let people = client.database("crm").collection::<Document>("people");
    let s = Scratch::new();
    s.init();
    // A base before the person arrives: the follower resumes right after
    // it, so the person's insert is captured however late it connects.
    people
        .insert_one(doc! {"_id": 1, "email": "a@example.com", "name": "A"})
        .run()
        .unwrap();
    s.json(&["create", &server.url("")]);
    let follower = Follower::start(&s, &server.url(""));
    // The follower is tailing (it stored a write made after the base)
    // before the person arrives: the snapshots below are bases too, and a
    // follower that connected after them would resume after the newest.
    client
        .database("crm")
        .collection::<Document>("warmup")
        .insert_one(doc! {"_id": 1})
        .run()
        .unwrap();
    wait_stored(&s, newest(&client));
    people
        .insert_many([
            doc! {"_id": 2, "email": "erase-this-person@example.com", "name": "Forget Me"},
            doc! {"_id": 3, "email": "c@example.com", "name": "C"},
        ])
        .run()
        .unwrap();
    for i in 0..3 {
        people
            .insert_one(doc! {"_id": 10 + i, "email": format!("n{i}@example.com")})
            .run()
            .unwrap();
        s.json(&["create", &server.url("")]);
    }
    wait_stored(&s, newest(&client));
    follower.stop();
    assert!(stored_copies(&s, EMAIL) > 0);
    let old_ids = ids(&s);
    let err = s.fails(
        &[
            "rewrite",
            "--mongo-delete",
            "crm.nobody:{\"a\": 1}",
            "--reason",
            "r",
        ],
        1,
    );
    assert!(err.contains("crm.nobody"), "{err}");
    s.fails(
        &[
            "rewrite",
            "--mongo-delete",
            "crm.people:{\"a\": {\"$gt\": 1}}",
            "--reason",
            "r",
        ],
        2,
    );
    s.fails(
        &[
            "rewrite",
            "--mongo-delete",
            "crm.people:not json",
            "--reason",
            "r",
        ],
        2,
    );
    assert_eq!(ids(&s), old_ids);

    let filter = r#"crm.people:{"email": "erase-this-person@example.com"}"#;
    let out = s.json(&[
        "rewrite",
        "--mongo-delete",
        filter,
        "--reason",
        "erasure request 9",
    ]);
    let rewritten = out["rewritten"].as_array().unwrap();
    assert_eq!(rewritten.len(), 3, "{out}");
    for r in rewritten {
        assert_eq!(r["removed"]["crm.people"]["records"], 1, "{out}");
    }
    // The captured oplog is listed, and kept: it still holds the person.
    let captures = out["captures"].as_array().unwrap();
    assert!(!captures.is_empty(), "{out}");
    assert!(captures
        .iter()
        .all(|c| c["kind"] == "mongodb-oplog" && c["dropped"] == false));
    s.ok(&["prune", "--repack-threshold", "0"]);
    assert!(stored_copies(&s, EMAIL) > 0, "the captured oplog keeps it");

    // Dropping the captures: nothing left to rewrite, every slice deleted.
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let out = s.json(&[
        "rewrite",
        "--mongo-delete",
        filter,
        "--reason",
        "erasure request 9, captures",
        "--drop-captures-before",
        &tomorrow,
    ]);
    assert_eq!(out["rewritten"].as_array().unwrap().len(), 0, "{out}");
    let captures = out["captures"].as_array().unwrap();
    assert!(
        !captures.is_empty() && captures.iter().all(|c| c["dropped"] == true),
        "{out}"
    );
    s.ok(&["prune", "--repack-threshold", "0"]);
    assert_eq!(
        stored_copies(&s, EMAIL),
        0,
        "no pack holds the erased document"
    );
    s.ok(&["verify", "--read-data"]);

    let other = MongoServer::start();
    let oc = Client::with_uri_str(other.url("")).unwrap();
    s.ok(&["restore", "latest", "--to", &other.url("")]);
    let got: Vec<Document> = oc
        .database("crm")
        .collection::<Document>("people")
        .find(doc! {})
        .sort(doc! {"_id": 1})
        .run()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let want: Vec<Document> = people
        .find(doc! {"_id": {"$ne": 2}})
        .sort(doc! {"_id": 1})
        .run()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, want);
    let (text, records) = audit(&s);
    assert!(!text.contains("erase-this-person"));
    assert!(records
        .iter()
        .any(|r| r["details"]["captures_dropped"].is_array()));
}

/// Erasing one user's keys from Redis snapshots of both modes (RDB over
/// replication, and key by key): every other key, of every type and
/// encoding, with its TTL, restores as it was; the RDB's checksum is made
/// anew, so a restore reads it; the counts in the manifest follow.
#[test]
fn rewrite_erases_a_users_keys_from_redis_snapshots() {
    const VALUE: &[u8] = b"Erase Me 42";
    const NAME: &[u8] = b"user:42:name";
    let src = backup_testkit::redis::RedisServer::start();
    crate::redis::populate(&src);
    let mut con = src.connection();
    redis::pipe()
        .cmd("SET")
        .arg(NAME)
        .arg(VALUE)
        .cmd("HSET")
        .arg("user:42:cart")
        .arg("item")
        .arg("book")
        .cmd("SET")
        .arg("user:420:name")
        .arg("Keep Me")
        .cmd("SELECT")
        .arg(1)
        .cmd("SET")
        .arg("user:42:session")
        .arg("token")
        .arg("EX")
        .arg(3600)
        .cmd("SELECT")
        .arg(0)
        .exec(&mut con)
        .unwrap();
    let keep = |db: u32| -> Vec<(Vec<u8>, String, bool)> {
        src.key_digests(db)
            .into_iter()
            .filter(|(k, _, _)| !k.starts_with(b"user:42:"))
            .collect()
    };
    let want: Vec<_> = [0, 1, 5].into_iter().map(keep).collect();
    let before: Vec<u64> = [0, 1].into_iter().map(|db| src.dbsize(db)).collect();

    let s = Scratch::new();
    s.init();
    let rdb = s.json(&["create", &src.url()])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let keys = s.json(&["create", &format!("{}?mode=keys", src.url())])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(stored_copies(&s, VALUE) >= 2);
    let old_ids = ids(&s);
    for bad in ["", "*"] {
        let err = s.fails(&["rewrite", "--redis-delete", bad, "--reason", "r"], 2);
        assert!(err.contains("--redis-delete"), "{err}");
    }
    assert_eq!(ids(&s), old_ids);

    let out = s.json(&[
        "rewrite",
        "--redis-delete",
        "user:42:*",
        "--reason",
        "erasure request 77",
    ]);
    let rewritten = out["rewritten"].as_array().unwrap();
    assert_eq!(rewritten.len(), 2, "{out}");
    for r in rewritten {
        assert_eq!(r["removed"]["db 0"]["records"], 2, "{out}");
        assert_eq!(r["removed"]["db 1"]["records"], 1, "{out}");
    }
    // A pattern that matches nothing changes nothing.
    let out = s.json(&["rewrite", "--redis-delete", "nobody:*", "--reason", "r"]);
    assert_eq!(out["rewritten"].as_array().unwrap().len(), 0, "{out}");

    s.ok(&["prune", "--repack-threshold", "0"]);
    assert_eq!(
        stored_copies(&s, VALUE),
        0,
        "no pack holds the erased value"
    );
    assert_eq!(stored_copies(&s, NAME), 0, "no pack holds the erased key");
    s.ok(&["verify", "--read-data"]);

    for old in [&rdb, &keys] {
        let list = s.json(&["list"]);
        let entry = list
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["snapshot"]["rewritten"]["from"].as_str() == Some(old.as_str()))
            .unwrap_or_else(|| panic!("no replacement of {old}: {list}"));
        let new = entry["id"].as_str().unwrap().to_owned();
        let meta = entry["snapshot"]["metadata"].clone();
        assert_eq!(meta["databases"]["0"]["keys"], before[0] - 2, "{meta}");
        assert_eq!(meta["databases"]["1"]["keys"], before[1] - 1, "{meta}");
        let dst = backup_testkit::redis::RedisServer::start();
        s.ok(&["restore", &new, "--to", &dst.url()]);
        for (i, db) in [0, 1, 5].into_iter().enumerate() {
            assert_eq!(dst.key_digests(db), want[i], "db {db} after {old}");
        }
    }
    let (text, records) = audit(&s);
    assert!(
        !text.contains("user:42"),
        "the audit trail repeats the pattern"
    );
    let r = records
        .iter()
        .find(|r| r["status"] == "success")
        .expect("a rewrite record");
    assert_eq!(r["details"]["reason"], "erasure request 77");
}
