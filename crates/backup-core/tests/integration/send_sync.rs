//! Compile-time checks that the pipeline's futures and the storage trait
//! objects can move between threads (a multi-threaded runtime needs it).

use std::sync::Arc;

use backup_core::archiver::{backup, BackupOptions};
use backup_core::filter::PathFilter;
use backup_core::progress::NoProgress;
use backup_core::repo::IndexedRepository;
use backup_core::restorer::{restore_tree, TreeWriter};
use backup_core::source::Source;
use backup_core::{FileKind, Id, Sink};

fn is_send<T: Send>(_: &T) {}
fn is_send_sync<T: Send + Sync + ?Sized>() {}

fn pipeline_futures_are_send(
    repo: &IndexedRepository,
    source: &mut dyn Source,
    writer: Box<dyn TreeWriter>,
) {
    is_send(&backup(
        repo,
        source,
        &BackupOptions::default(),
        Arc::new(NoProgress),
    ));
    is_send(&restore_tree(
        repo,
        Id::default(),
        &PathFilter::all(),
        writer,
        Arc::new(NoProgress),
    ));
}

fn sink_futures_are_send(sink: &Arc<dyn Sink>) {
    is_send(&sink.get(FileKind::Pack, "x"));
    is_send(&sink.list(FileKind::Pack));
    is_send(&sink.put(
        FileKind::Pack,
        "x",
        bytes::Bytes::new(),
        backup_core::PutMode::Create,
    ));
    is_send(&sink.delete(FileKind::Pack, "x"));
    is_send(&sink.get_range(FileKind::Pack, "x", 0..1));
}

#[test]
fn trait_objects_are_send_and_sync() {
    is_send_sync::<dyn Sink>();
    is_send_sync::<IndexedRepository>();
}
