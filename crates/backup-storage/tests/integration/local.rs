//! The local-disk backend.

use std::fs;
use std::path::Path;

use backup_core::{Error, FileKind, PutMode, Sink, SinkExt};
use backup_storage::{build, LocalSink, StorageOptions, StorageUrl};
use backup_testkit::conformance::{random_name, Conformance};

fn sink_at(path: &Path) -> std::sync::Arc<dyn Sink> {
    build(
        &StorageUrl::parse(path.to_str().unwrap()).unwrap(),
        &StorageOptions::default(),
    )
    .unwrap()
}

#[tokio::test]
async fn conformance() {
    let dir = tempfile::tempdir().unwrap();
    let sink = sink_at(&dir.path().join("repo"));
    Conformance::default().run(sink).await;
    // Nothing but (now empty) directories is left behind: no temp files.
    let leftovers: Vec<_> = walk(&dir.path().join("repo"))
        .into_iter()
        .filter(|p| p.is_file())
        .collect();
    assert!(leftovers.is_empty(), "files left behind: {leftovers:?}");
}

#[tokio::test]
async fn conformance_through_file_url() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("repo").display());
    let sink = build(
        &StorageUrl::parse(&url).unwrap(),
        &StorageOptions::default(),
    )
    .unwrap();
    Conformance::default()
        .large_object_size(3 * 1024 * 1024)
        .run(sink)
        .await;
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            }
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn layout_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("deep/ly/nested/repo");
    let sink = LocalSink::new(&root);
    let pack = random_name();
    sink.put(FileKind::Pack, &pack, "pack".into(), PutMode::Create)
        .await
        .unwrap();
    sink.put(FileKind::Config, "config", "cfg".into(), PutMode::Create)
        .await
        .unwrap();
    sink.put(FileKind::Snapshot, "s1", "snap".into(), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(
        fs::read(root.join("data").join(&pack[..2]).join(&pack)).unwrap(),
        b"pack"
    );
    assert_eq!(fs::read(root.join("config")).unwrap(), b"cfg");
    assert_eq!(fs::read(root.join("snapshots/s1")).unwrap(), b"snap");
    assert_eq!(sink.location(), root.display().to_string());
}

#[tokio::test]
async fn interrupted_puts_are_invisible() {
    let dir = tempfile::tempdir().unwrap();
    let sink = LocalSink::new(dir.path());
    let pack = random_name();
    let sub = dir.path().join("data").join(&pack[..2]);
    fs::create_dir_all(&sub).unwrap();
    fs::create_dir_all(dir.path().join("keys")).unwrap();
    // What a crash in the middle of a put leaves: a temporary file next to
    // where the final one would be, possibly half written.
    fs::write(
        sub.join(format!(".{pack}.tmp-1234-0-deadbeef")),
        b"half a pa",
    )
    .unwrap();
    fs::write(dir.path().join("keys").join(".k1.tmp-1-2-3"), b"{").unwrap();
    fs::write(dir.path().join(".config.tmp-1-2-3"), b"{").unwrap();
    // Stray files that are not repository files are ignored as well.
    fs::write(sub.join("zz-not-in-its-directory"), b"x").unwrap();
    fs::create_dir_all(dir.path().join("data/not-a-pack-dir")).unwrap();
    fs::write(dir.path().join("data/not-a-pack-dir/abc"), b"x").unwrap();

    assert!(sink.list(FileKind::Pack).await.unwrap().is_empty());
    assert!(sink.list(FileKind::Key).await.unwrap().is_empty());
    assert!(sink.list(FileKind::Config).await.unwrap().is_empty());
    assert!(matches!(
        sink.get(FileKind::Pack, &pack).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        sink.get(FileKind::Key, "k1").await,
        Err(Error::NotFound { .. })
    ));

    // A later put of the same name works and is the only listed file.
    sink.put(FileKind::Pack, &pack, "whole pack".into(), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(
        sink.list_names(FileKind::Pack).await.unwrap(),
        std::slice::from_ref(&pack)
    );
    assert_eq!(sink.get(FileKind::Pack, &pack).await.unwrap(), "whole pack");
}

#[tokio::test]
async fn missing_root_lists_empty_and_reads_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let sink = LocalSink::new(dir.path().join("does-not-exist"));
    for kind in FileKind::ALL {
        assert!(sink.list(kind).await.unwrap().is_empty());
    }
    assert!(matches!(
        sink.get(FileKind::Config, "config").await,
        Err(Error::NotFound { .. })
    ));
    sink.delete(FileKind::Config, "config").await.unwrap();
}

#[tokio::test]
async fn root_that_is_a_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    fs::write(&file, b"x").unwrap();
    let sink = LocalSink::new(file.join("repo"));
    let err = sink
        .put(FileKind::Config, "config", "c".into(), PutMode::Create)
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("plain-file"), "{message}");
}
