//! MongoDB dump and restore throughput against bare driver baselines, in
//! one run, printed as ratios (see `benches/README.md`).
//!
//! `mongo_ratio BACKUP_BINARY [DOCS]`: starts a throwaway server
//! (`backup_testkit::mongo`, or `BENCH_MONGO_URL`), loads DOCS documents of
//! mixed shapes into four collections, then measures
//!
//! - dump: a bare driver `find()` scan of every collection (all at once,
//!   raw documents, nothing kept) against `backup create`;
//! - restore: a bare unordered `insert_many` loop with the same batch
//!   limits (documents read into memory first, untimed) against
//!   `backup restore --rename`, with the default parallelism and with
//!   `--jobs 1` (one writer, as the baseline);
//! - the peak RSS of the `backup` processes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures::TryStreamExt;
use mongodb::bson::{doc, spec::BinarySubtype, Binary, Bson, DateTime, Document, RawDocumentBuf};
use mongodb::Client;

fn run_backup(bin: &str, repo: &std::path::Path, args: &[&str]) -> (Duration, u64) {
    let (t, rss, _) = backup_benches::run_backup(bin, repo, args);
    (t, rss)
}

const DB: &str = "bench";
const COLLECTIONS: [&str; 4] = ["events", "orders", "profiles", "blobs"];

const KINDS: [&str; 3] = ["click", "view", "buy"];
const STATUSES: [&str; 4] = ["new", "paid", "shipped", "done"];

fn shape(coll: &str, i: u64) -> Document {
    let n = i as i64;
    match coll {
        "events" => {
            doc! {"_id": n, "ts": DateTime::from_millis(1_700_000_000_000 + n), "kind": KINDS[(i % 3) as usize], "user": (n * 7919) % 100_000, "v": (n as f64) * 0.5}
        }
        "orders" => {
            doc! {"_id": n, "customer": {"id": n % 5000, "name": format!("Customer {}", n % 5000), "address": {"street": format!("{} Main St", n % 999), "city": "Springfield", "zip": format!("{:05}", n % 99999)}},
            "items": (0..=(i % 8)).map(|k| Bson::Document(doc! {"sku": format!("SKU-{:06}", (n + k as i64) % 100_000), "qty": (k % 5 + 1) as i32, "price": 9.99 + k as f64})).collect::<Vec<_>>(),
            "status": STATUSES[(i % 4) as usize], "notes": "x".repeat((i % 400) as usize)}
        }
        "profiles" => {
            doc! {"_id": format!("user-{i:010}"), "bio": "lorem ipsum dolor sit amet ".repeat((1 + i % 40) as usize), "tags": (0..(i % 12)).map(|k| format!("tag{k}")).collect::<Vec<_>>(), "score": n % 1000, "active": i % 2 == 0}
        }
        _ => {
            doc! {"_id": n, "data": Binary { subtype: BinarySubtype::Generic, bytes: (0..(2048 + (i % 4096) as usize)).map(|k| ((k as u64 * 31 + i) % 251) as u8).collect() }}
        }
    }
}

/// Documents per collection: events 40%, orders 30%, profiles 20%, blobs 10%.
fn split(docs: u64) -> [u64; 4] {
    [docs * 4 / 10, docs * 3 / 10, docs * 2 / 10, docs / 10]
}

async fn load(c: &Client, docs: u64) -> u64 {
    let mut bytes = 0u64;
    for (coll, n) in COLLECTIONS.iter().zip(split(docs)) {
        let col = c.database(DB).collection::<RawDocumentBuf>(coll);
        let mut batch = Vec::new();
        for i in 0..n {
            let d = RawDocumentBuf::from_document(&shape(coll, i)).unwrap();
            bytes += d.as_bytes().len() as u64;
            batch.push(d);
            if batch.len() == 10_000 {
                col.insert_many(std::mem::take(&mut batch))
                    .ordered(false)
                    .await
                    .unwrap();
            }
        }
        if !batch.is_empty() {
            col.insert_many(batch).ordered(false).await.unwrap();
        }
    }
    bytes
}

/// The bare scan: every collection at once, raw documents counted and
/// dropped.
async fn bare_scan(c: &Client) -> (Duration, u64) {
    let t = Instant::now();
    let tasks: Vec<_> = COLLECTIONS
        .iter()
        .map(|coll| {
            let col = c.database(DB).collection::<RawDocumentBuf>(coll);
            tokio::spawn(async move {
                let mut cur = col.find(doc! {}).await.unwrap();
                let mut bytes = 0u64;
                while let Some(d) = cur.try_next().await.unwrap() {
                    bytes += d.as_bytes().len() as u64;
                }
                bytes
            })
        })
        .collect();
    let mut bytes = 0;
    for t in tasks {
        bytes += t.await.unwrap();
    }
    (t.elapsed(), bytes)
}

/// The bare restore: per collection, batches as the restore makes them
/// (up to `maxMessageSizeBytes` - 64 KiB but at most 8 MiB, and
/// `maxWriteBatchSize`), sent with
/// unordered `insert_many` one after another. Reading is not timed.
async fn bare_insert(c: &Client, max_bytes: usize, max_count: usize) -> Duration {
    let mut total = Duration::ZERO;
    for coll in COLLECTIONS {
        let src = c.database(DB).collection::<RawDocumentBuf>(coll);
        let dst = c.database("bench_bare").collection::<RawDocumentBuf>(coll);
        let mut batches: Vec<Vec<RawDocumentBuf>> = vec![Vec::new()];
        let mut size = 0usize;
        let mut cur = src.find(doc! {}).await.unwrap();
        while let Some(d) = cur.try_next().await.unwrap() {
            let len = d.as_bytes().len();
            let last = batches.last_mut().unwrap();
            if !last.is_empty() && (size + len > max_bytes || last.len() >= max_count) {
                batches.push(Vec::new());
                size = 0;
            }
            size += len;
            batches.last_mut().unwrap().push(d);
        }
        let t = Instant::now();
        for b in batches {
            if !b.is_empty() {
                dst.insert_many(b).ordered(false).await.unwrap();
            }
        }
        total += t.elapsed();
    }
    total
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let bin = args
        .next()
        .expect("usage: mongo_ratio BACKUP_BINARY [DOCS]");
    let docs: u64 = args
        .next()
        .map_or(2_000_000, |d| d.parse().expect("DOCS is a number"));
    let server;
    let url = if let Ok(u) = std::env::var("BENCH_MONGO_URL") {
        u
    } else {
        server = backup_testkit::mongo::MongoServer::start();
        server.url("")
    };
    let c = Client::with_uri_str(&url).await.unwrap();
    let _ = c.database(DB).drop().await;
    let _ = c.database("bench_bare").drop().await;
    let _ = c.database("bench_restored").drop().await;
    let _ = c.database("bench_restored1").drop().await;
    let t = Instant::now();
    let bytes = load(&c, docs).await;
    eprintln!(
        "loaded {docs} documents, {} MB, in {:.0} s",
        bytes / 1_000_000,
        t.elapsed().as_secs_f64()
    );
    let hello = c
        .database("admin")
        .run_command(doc! {"hello": 1})
        .await
        .unwrap();
    let max_message = hello
        .get_i32("maxMessageSizeBytes")
        .map_or(48_000_000, |v| v as usize);
    let max_count = hello
        .get_i32("maxWriteBatchSize")
        .map_or(100_000, |v| v as usize);

    let repo = tempfile::tempdir().unwrap();
    let repo_path = repo.path().join("repo");
    run_backup(&bin, &repo_path, &["init"]);

    // Dump: interleave baseline and ours.
    let (scan, scanned) = bare_scan(&c).await;
    assert_eq!(scanned, bytes);
    let (base, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
    let src = format!("{}/{DB}?{query}", base.trim_end_matches('/'));
    let (dump, dump_rss) = run_backup(&bin, &repo_path, &["create", &src]);

    // Restore.
    // The restore's limits: maxMessageSizeBytes - 64 KiB, at most 8 MiB.
    let max_bytes = max_message.saturating_sub(64 * 1024).min(8 * 1024 * 1024);
    let bare = bare_insert(&c, max_bytes, max_count).await;
    let (restore, restore_rss) = run_backup(
        &bin,
        &repo_path,
        &[
            "restore",
            "latest",
            "--to",
            &url,
            "--rename",
            &format!("{DB}:bench_restored"),
        ],
    );
    // The same restore with one collection at a time and one writer,
    // like the baseline (the Python test server gets slower with
    // concurrent writers; a real mongod gets faster).
    let (restore1, restore1_rss) = run_backup(
        &bin,
        &repo_path,
        &[
            "restore",
            "latest",
            "--to",
            &url,
            "--rename",
            &format!("{DB}:bench_restored1"),
            "--jobs",
            "1",
        ],
    );
    for db in ["bench_restored", "bench_restored1"] {
        let mut restored = 0;
        for coll in COLLECTIONS {
            restored += c
                .database(db)
                .collection::<Document>(coll)
                .count_documents(doc! {})
                .await
                .unwrap();
        }
        assert_eq!(
            restored,
            split(docs).iter().sum::<u64>(),
            "every document restored into {db}"
        );
    }

    println!(
        "mongo dump throughput ratio (ours / bare find scan) = {:.2}   (target >= 0.8)",
        scan.as_secs_f64() / dump.as_secs_f64()
    );
    println!(
        "mongo restore throughput ratio (ours / bare insert_many) = {:.2}   (target >= 1.0)",
        bare.as_secs_f64() / restore.as_secs_f64()
    );
    println!(
        "mongo restore --jobs 1 throughput ratio (ours / bare insert_many) = {:.2}   (one writer, as the baseline)",
        bare.as_secs_f64() / restore1.as_secs_f64()
    );
    println!(
        "peak RSS: dump {} MB, restore {} MB, restore --jobs 1 {} MB   (target < 300)",
        dump_rss / 1024,
        restore_rss / 1024,
        restore1_rss / 1024
    );
    println!(
        "({docs} documents, {} MB of BSON, 4 collections)",
        bytes / 1_000_000
    );
}
