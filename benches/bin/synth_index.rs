//! Fills an initialised repository with many small data blobs, for the
//! index-at-scale benchmark (`benches/index_scale.sh`, issue 32): BLOBS
//! blobs of 16 distinct bytes each, sealed and named as a backup would,
//! in packs of `PER_PACK` blobs (16 by default: the blob count of a 16 MiB
//! pack of 1 MiB chunks), with their index files. No snapshot refers to
//! them; the repository is as large, to its index, as one of `BLOBS` chunks.
//!
//! `synth_index REPO BLOBS [PER_PACK]`, the password in `BACKUP_PASSWORD`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use backup_core::index::{IndexFile, IndexPack, BLOBS_PER_INDEX_FILE};
use backup_core::pack::{BlobType, PackBuilder};
use backup_core::sink::{FileKind, PutMode};
use backup_ops::repository::{open, RepoSpec};
use futures::stream::{self, StreamExt};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: synth_index REPO BLOBS [PER_PACK]");
        std::process::exit(2);
    }
    let blobs: u64 = args[2].parse().expect("BLOBS must be a number");
    let per_pack: u64 = args.get(3).map_or(16, |s| s.parse().expect("PER_PACK"));
    let password = std::env::var("BACKUP_PASSWORD").expect("BACKUP_PASSWORD");
    let spec = RepoSpec::new(&args[1], &[]).unwrap();
    let repo = Arc::new(open(&spec, || Ok(password.into())).await.unwrap());
    let started = Instant::now();
    let packs = blobs.div_ceil(per_pack);
    // Packs are built on the blocking pool, a batch at a time, and stored
    // 32 at a time; an index file is written every BLOBS_PER_INDEX_FILE
    // blobs.
    let batch = (BLOBS_PER_INDEX_FILE as u64 / per_pack).max(1);
    let mut first = 0;
    let mut files = 0;
    while first < packs {
        let last = (first + batch).min(packs);
        let built: Vec<(IndexPack, bytes::Bytes)> = stream::iter(first..last)
            .map(|p| {
                let repo = repo.clone();
                tokio::task::spawn_blocking(move || {
                    let mut b = PackBuilder::with_capacity((per_pack * 64) as usize);
                    for i in p * per_pack..((p + 1) * per_pack).min(blobs) {
                        let plain = [i.to_le_bytes(), (!i).to_le_bytes()].concat();
                        let id = repo.hasher().hash(&plain);
                        let sealed = repo.key().seal(&plain);
                        b.add(BlobType::Data, id, false, plain.len() as u32, &sealed);
                    }
                    let f = b.finish(repo.key());
                    (
                        IndexPack {
                            id: f.id,
                            size: f.data.len() as u64,
                            blobs: f.entries,
                        },
                        f.data,
                    )
                })
            })
            .buffered(8)
            .map(|r| r.unwrap())
            .collect()
            .await;
        let mut index = Vec::with_capacity(built.len());
        let stored: Vec<()> = stream::iter(built)
            .map(|(pack, data)| {
                let name = pack.id.to_hex();
                index.push(pack);
                let repo = repo.clone();
                async move {
                    repo.sink()
                        .put(FileKind::Pack, &name, data, PutMode::Overwrite)
                        .await
                        .unwrap();
                }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        drop(stored);
        for f in IndexFile::split(index) {
            repo.save_file(FileKind::Index, &f).await.unwrap();
            files += 1;
        }
        first = last;
        eprintln!(
            "synth_index: {} of {packs} packs ({:.0} s)",
            last,
            started.elapsed().as_secs_f64()
        );
    }
    println!(
        "synth_index: {blobs} blobs in {packs} packs and {files} index files ({:.0} s)",
        started.elapsed().as_secs_f64()
    );
}
