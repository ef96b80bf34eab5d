//! End-to-end pipeline tests against the in-memory sink.

use std::sync::Arc;

use async_trait::async_trait;
use backup_core::archiver::{backup, BackupOptions};
use backup_core::crypto::IdHash;
use backup_core::filter::PathFilter;
use backup_core::pack::BlobType;
use backup_core::progress::NoProgress;
use backup_core::repo::{InitOptions, Repository};
use backup_core::restorer::restore_tree;
use backup_core::snapshot::{SnapshotFilter, SourceDescriptor};
use backup_core::source::{Content, Item, OnReadError, Source};
use backup_core::tree::{Node, NodeKind};
use backup_core::verify::{verify, VerifyOptions};
use backup_core::{FileKind, MemorySink, Result, Sink};

use crate::support::{init_opts, pseudo_random, sample, Collect, MapSource};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_restore_verify_round_trip() {
    round_trip(IdHash::Blake3).await;
}

/// A format version 1 repository (HMAC-SHA-256 ids), as `init --id-hash
/// hmac-sha256` or an older build made it, is read and written as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_repository_round_trips() {
    round_trip(IdHash::HmacSha256).await;
}

async fn round_trip(id_hash: IdHash) {
    let mem = MemorySink::new();
    let sink: Arc<dyn Sink> = Arc::new(mem.clone());
    let opts = InitOptions {
        id_hash,
        ..init_opts()
    };
    let repo = Repository::init(sink.clone(), Some(b"pw"), &opts)
        .await
        .unwrap();
    let raw = sink.get(FileKind::Config, "config").await.unwrap();
    let cfg: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    match id_hash {
        IdHash::Blake3 => {
            assert_eq!(cfg["version"], 3, "{cfg}");
            assert_eq!(cfg["id_hash"], "blake3", "{cfg}");
        }
        IdHash::HmacSha256 => {
            // Byte for byte what a version 1 build writes: no new field.
            assert_eq!(cfg["version"], 1, "{cfg}");
            assert!(cfg.get("id_hash").is_none(), "{cfg}");
        }
    }
    let repo = repo.load_index().await.unwrap();
    let files = sample();
    let out = backup(
        &repo,
        &mut MapSource::new(&files),
        &BackupOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    let st = &out.snapshot.stats;
    assert_eq!(st.files, 5);
    assert_eq!(st.dirs, 2);
    // The duplicate file and the repetitive text dedup and compress.
    assert!(st.bytes_added < 3_400_000, "{st:?}");
    assert!(st.bytes_stored < st.bytes_added);

    let repo = Repository::open(sink.clone(), Some(b"pw"))
        .await
        .unwrap()
        .load_index()
        .await
        .unwrap();
    let snap = repo
        .find_snapshot("latest", &SnapshotFilter::default())
        .await
        .unwrap();
    assert_eq!(Some(snap.id), out.id);
    assert_eq!(repo.config().id_hash, id_hash);
    // Every blob is named by the repository's keyed hash.
    let key = repo.key();
    let first = snap.snapshot.tree;
    let tree = repo.read_blob(BlobType::Tree, &first).await.unwrap();
    assert_eq!(key.blob_id(id_hash, &tree), first);
    let got = Collect::default();
    let stats = restore_tree(
        &repo,
        snap.snapshot.tree,
        &PathFilter::all(),
        Box::new(got.clone()),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert_eq!(stats.files, 5);
    assert_eq!(*got.0.lock().unwrap(), files);

    // Subset.
    let got = Collect::default();
    let filter = PathFilter::new(&["dir/sub".to_owned()], &["dup.bin".to_owned()]).unwrap();
    restore_tree(
        &repo,
        snap.snapshot.tree,
        &filter,
        Box::new(got.clone()),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert_eq!(
        got.0.lock().unwrap().keys().collect::<Vec<_>>(),
        vec!["dir/sub/text"]
    );

    let report = verify(
        repo.clone().into_inner(),
        &VerifyOptions {
            snapshots: None,
            read_data_percent: Some(100.0),
            ..VerifyOptions::default()
        },
        &NoProgress,
    )
    .await
    .unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert!(report.packs_read > 0);

    // Wrong password.
    assert!(matches!(
        Repository::open(sink.clone(), Some(b"nope"))
            .await
            .unwrap_err(),
        backup_core::Error::WrongPassword
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_backup_of_same_data_adds_nothing_new() {
    let sink: Arc<dyn Sink> = Arc::new(MemorySink::new());
    let repo = Repository::init(sink.clone(), Some(b"pw"), &init_opts())
        .await
        .unwrap();
    let mut repo = repo.load_index().await.unwrap();
    let files = sample();
    let first = backup(
        &repo,
        &mut MapSource::new(&files),
        &BackupOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    repo.set_index((*first.index).clone());
    let second = backup(
        &repo,
        &mut MapSource::new(&files),
        &BackupOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert_eq!(second.snapshot.stats.bytes_added, 0);
    assert_eq!(second.snapshot.tree, first.snapshot.tree);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_byte_in_pack_is_found_and_restore_fails() {
    let mem = MemorySink::new();
    let sink: Arc<dyn Sink> = Arc::new(mem.clone());
    let repo = Repository::init(sink.clone(), Some(b"pw"), &init_opts())
        .await
        .unwrap();
    let repo = repo.load_index().await.unwrap();
    let files = sample();
    let out = backup(
        &repo,
        &mut MapSource::new(&files),
        &BackupOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    // Damage the first data blob of some pack.
    let (pack, entries) = out
        .index
        .entries_by_pack()
        .unwrap()
        .into_iter()
        .find(|(_, es)| {
            es.iter()
                .any(|e| e.blob_type == backup_core::pack::BlobType::Data)
        })
        .unwrap();
    let e = entries
        .iter()
        .find(|e| e.blob_type == backup_core::pack::BlobType::Data)
        .unwrap();
    let mut data = sink
        .get(FileKind::Pack, &pack.to_hex())
        .await
        .unwrap()
        .to_vec();
    data[e.offset as usize + 20] ^= 0x40;
    mem.tamper(FileKind::Pack, &pack.to_hex(), data.into());

    let repo = Repository::open(sink.clone(), Some(b"pw")).await.unwrap();
    let report = verify(
        repo.clone(),
        &VerifyOptions {
            snapshots: None,
            read_data_percent: Some(100.0),
            ..VerifyOptions::default()
        },
        &NoProgress,
    )
    .await
    .unwrap();
    assert!(!report.is_ok());
    assert_eq!(report.damaged_snapshots, vec![out.id.unwrap().to_hex()]);
    let repo = repo.load_index().await.unwrap();
    let err = restore_tree(
        &repo,
        out.snapshot.tree,
        &PathFilter::all(),
        Box::new(Collect::default()),
        Arc::new(NoProgress),
    )
    .await
    .unwrap_err();
    assert!(err.is_corruption(), "{err}");
}

/// A source of hand-made items (directories given as Enter/Leave).
struct ItemSource {
    items: std::vec::IntoIter<Item>,
    /// Items handed out after `gate` was raised.
    after_gate: Arc<std::sync::atomic::AtomicUsize>,
    gate: Arc<std::sync::atomic::AtomicBool>,
}

#[async_trait]
impl Source for ItemSource {
    fn descriptor(&self) -> SourceDescriptor {
        SourceDescriptor {
            kind: "test".into(),
            url: "test://items".into(),
        }
    }
    fn concurrency(&self) -> usize {
        2
    }
    async fn next(&mut self) -> Result<Option<Item>> {
        if self.gate.load(std::sync::atomic::Ordering::SeqCst) {
            self.after_gate
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            // Give the failed read's task time to finish.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        Ok(self.items.next())
    }
    async fn finish(&mut self) -> Result<serde_json::Value> {
        Ok(serde_json::Value::Null)
    }
}

/// A new repository in memory, index loaded.
async fn empty_repo() -> backup_core::repo::IndexedRepository {
    let sink: Arc<dyn Sink> = Arc::new(MemorySink::new());
    Repository::init(sink, Some(b"pw"), &init_opts())
        .await
        .unwrap()
        .load_index()
        .await
        .unwrap()
}

fn dir(name: &str) -> Item {
    Item::Enter(Node::new(name, NodeKind::Dir))
}

fn stream(
    name: &str,
    open: impl FnOnce() -> std::io::Result<Box<dyn std::io::Read + Send>> + Send + 'static,
) -> Item {
    Item::Leaf {
        node: Node::new(name, NodeKind::Stream),
        content: Some(Content::Blocking(Box::new(open))),
        on_error: OnReadError::Fail,
    }
}

/// A stream in one directory is still being read when the walk goes on to
/// the next directory: here the first stream can only end once the second
/// was read, which a walk that waited at each `Leave` would never allow
/// (the reader gives up after 30 s, failing the test instead of hanging).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directories_do_not_wait_for_their_slow_entries() {
    let repo = empty_repo().await;
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let items = vec![
        dir("a"),
        stream("slow", move || {
            rx.recv_timeout(std::time::Duration::from_secs(30))
                .map_err(|_| std::io::Error::other("the second directory was never read"))?;
            Ok(Box::new(std::io::Cursor::new(b"slow data".to_vec())) as _)
        }),
        Item::Leave,
        dir("b"),
        stream("fast", move || {
            let _ = tx.send(());
            Ok(Box::new(std::io::Cursor::new(pseudo_random(200_000, 3))) as _)
        }),
        Item::Leave,
    ];
    let mut src = ItemSource {
        items: items.into_iter(),
        after_gate: Arc::default(),
        gate: Arc::default(),
    };
    let out = backup(
        &repo,
        &mut src,
        &BackupOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    let names: Vec<&str> = out
        .snapshot
        .streams
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["a/slow", "b/fast"]);
    assert_eq!(out.snapshot.streams[0].size, 9);
    assert_eq!(out.snapshot.streams[1].size, 200_000);
    assert_eq!(out.snapshot.stats.dirs, 2);
}

/// A read that fails fails the backup with its error before the walk has
/// started everything else, even though its directory was already left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_read_stops_the_walk() {
    let repo = empty_repo().await;
    let gate: Arc<std::sync::atomic::AtomicBool> = Arc::default();
    let raise = gate.clone();
    let mut items = vec![
        dir("a"),
        stream("bad", move || {
            raise.store(true, std::sync::atomic::Ordering::SeqCst);
            Err(std::io::Error::other("the disk said no"))
        }),
        Item::Leave,
    ];
    for i in 0..200 {
        items.push(dir(&format!("d{i:03}")));
        items.push(stream("s", || {
            Ok(Box::new(std::io::Cursor::new(b"x".to_vec())) as _)
        }));
        items.push(Item::Leave);
    }
    let after_gate: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
    let mut src = ItemSource {
        items: items.into_iter(),
        after_gate: after_gate.clone(),
        gate,
    };
    let err = backup(
        &repo,
        &mut src,
        &BackupOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("the disk said no"), "{err}");
    let later = after_gate.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        later < 100,
        "the walk went on for {later} items after the failure"
    );
}

/// A reader that yields `data`, then ends with `ChangedWhileRead` when
/// `changed`, as a file written to during its read does.
struct Changing {
    data: std::io::Cursor<Vec<u8>>,
    changed: bool,
}

impl std::io::Read for Changing {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.data.read(buf)?;
        if n == 0 && self.changed {
            return Err(backup_core::source::ChangedWhileRead::error());
        }
        Ok(n)
    }
}

/// Yields two files whose reads say they changed: `once` on its first
/// read only, `always` on both.
struct ChangingSource(std::vec::IntoIter<Item>);

#[async_trait]
impl Source for ChangingSource {
    fn descriptor(&self) -> SourceDescriptor {
        SourceDescriptor {
            kind: "files".into(),
            url: "/changing".into(),
        }
    }
    async fn next(&mut self) -> Result<Option<Item>> {
        Ok(self.0.next())
    }
    async fn finish(&mut self) -> Result<serde_json::Value> {
        Ok(serde_json::Value::Null)
    }
}

/// A file that changed while it was read is read again: the second read
/// is stored; when it changed again too, it is stored with a warning
/// naming it (never silently).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_changed_while_read_is_read_again() {
    use std::sync::atomic::{AtomicU32, Ordering};
    let mem = MemorySink::new();
    let sink: Arc<dyn Sink> = Arc::new(mem.clone());
    let repo = Repository::init(sink, Some(b"pw"), &init_opts())
        .await
        .unwrap()
        .load_index()
        .await
        .unwrap();
    let leaf = |name: &str, always: bool| {
        let opens = Arc::new(AtomicU32::new(0));
        let mut node = Node::new(name, NodeKind::File);
        node.size = 5;
        Item::Leaf {
            node,
            content: Some(Content::Reopenable(Box::new(move |_: &mut Node| {
                let n = opens.fetch_add(1, Ordering::SeqCst);
                let data = if n == 0 {
                    b"torn".to_vec()
                } else {
                    b"whole".to_vec()
                };
                Ok(Box::new(Changing {
                    data: std::io::Cursor::new(data),
                    changed: n == 0 || always,
                }) as _)
            }))),
            on_error: OnReadError::Skip,
        }
    };
    let mut source = ChangingSource(vec![leaf("always", true), leaf("once", false)].into_iter());
    let out = backup(
        &repo,
        &mut source,
        &BackupOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    let warnings = &out.snapshot.warnings;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("always: changed while it was read, twice"),
        "{warnings:?}"
    );
    let repo = crate::support::reopen(&mem).await;
    let collect = Collect::default();
    restore_tree(
        &repo,
        out.snapshot.tree,
        &PathFilter::all(),
        Box::new(collect.clone()),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    let got = collect.0.lock().unwrap().clone();
    assert_eq!(got["once"], b"whole");
    assert_eq!(got["always"], b"whole");
}

/// A snapshot saved after a reader read the index (a backup of the same
/// source finishing meanwhile) is not damage: `covering` reads the index
/// again, and the snapshot's trees and data are then found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_saved_after_the_index_was_read_is_covered() {
    let mem = MemorySink::new();
    let sink: Arc<dyn Sink> = Arc::new(mem.clone());
    Repository::init(sink, Some(b"pw"), &init_opts())
        .await
        .unwrap();
    let early = crate::support::reopen(&mem).await;
    let writer = crate::support::reopen(&mem).await;
    let out = backup(
        &writer,
        &mut MapSource::new(&sample()),
        &BackupOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    let tree = out.snapshot.tree;
    let stale = early.load_tree(&tree).await.unwrap_err();
    assert!(
        matches!(stale, backup_core::Error::Corrupt { .. }),
        "{stale}"
    );
    let covered = early.covering(&tree).await.unwrap();
    let restored = Collect::default();
    restore_tree(
        &covered,
        tree,
        &PathFilter::all(),
        Box::new(restored.clone()),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert_eq!(*restored.0.lock().unwrap(), sample());
    // An index that already holds the tree is kept, not read again.
    let again = covered.clone().covering(&tree).await.unwrap();
    assert!(Arc::ptr_eq(again.index(), covered.index()));
}
