//! Shared helpers: an in-memory source of files, a collecting writer,
//! repositories made for tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use backup_core::archiver::{backup, BackupOptions, BackupOutcome};
use backup_core::config::ChunkerParams;
use backup_core::keys::KdfParams;
use backup_core::progress::NoProgress;
use backup_core::repo::{IndexedRepository, InitOptions, Repository};
use backup_core::restorer::TreeWriter;
use backup_core::snapshot::SourceDescriptor;
use backup_core::source::{Content, Item, OnReadError, Source};
use backup_core::tree::{Node, NodeKind};
use backup_core::{MemorySink, Result, Sink};

/// A source of in-memory files: path -> content. Paths use `/`.
pub struct MapSource {
    items: std::vec::IntoIter<Item>,
}

pub fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

impl MapSource {
    pub fn new(files: &BTreeMap<String, Vec<u8>>) -> Self {
        // Build a nested structure, then emit in order.
        #[derive(Default)]
        struct Dir {
            dirs: BTreeMap<String, Dir>,
            files: BTreeMap<String, Vec<u8>>,
        }
        let mut root = Dir::default();
        for (p, data) in files {
            let parts: Vec<&str> = p.split('/').collect();
            let mut d = &mut root;
            for part in &parts[..parts.len() - 1] {
                d = d.dirs.entry((*part).to_owned()).or_default();
            }
            d.files
                .insert(parts[parts.len() - 1].to_owned(), data.clone());
        }
        fn emit(d: &Dir, out: &mut Vec<Item>) {
            let mut names: Vec<(&String, bool)> = d
                .dirs
                .keys()
                .map(|k| (k, true))
                .chain(d.files.keys().map(|k| (k, false)))
                .collect();
            names.sort();
            for (name, is_dir) in names {
                if is_dir {
                    let mut n = Node::new(name.as_str(), NodeKind::Dir);
                    n.mode = Some(0o755);
                    out.push(Item::Enter(n));
                    emit(&d.dirs[name], out);
                    out.push(Item::Leave);
                } else {
                    let data = d.files[name].clone();
                    let mut n = Node::new(name.as_str(), NodeKind::File);
                    n.size = data.len() as u64;
                    n.mtime_ns = Some(1);
                    out.push(Item::Leaf {
                        node: n,
                        content: Some(Content::Blocking(Box::new(move || {
                            Ok(Box::new(std::io::Cursor::new(data)) as _)
                        }))),
                        on_error: OnReadError::Fail,
                    });
                }
            }
        }
        let mut items = Vec::new();
        emit(&root, &mut items);
        MapSource {
            items: items.into_iter(),
        }
    }
}

#[async_trait]
impl Source for MapSource {
    fn descriptor(&self) -> SourceDescriptor {
        SourceDescriptor {
            kind: "files".into(),
            url: "/test".into(),
        }
    }
    async fn next(&mut self) -> Result<Option<Item>> {
        Ok(self.items.next())
    }
    async fn finish(&mut self) -> Result<serde_json::Value> {
        Ok(serde_json::Value::Null)
    }
}

/// Collects restored files in memory.
#[derive(Clone, Default)]
pub struct Collect(
    pub Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    Arc<Mutex<Option<(PathBuf, Vec<u8>)>>>,
);

impl TreeWriter for Collect {
    fn enter_dir(&mut self, _: &Path, _: &Node) -> Result<()> {
        Ok(())
    }
    fn leave_dir(&mut self, _: &Path, _: &Node) -> Result<()> {
        Ok(())
    }
    fn start_file(&mut self, p: &Path, _: &Node) -> Result<()> {
        *self.1.lock().unwrap() = Some((p.to_owned(), Vec::new()));
        Ok(())
    }
    fn write_data(&mut self, d: bytes::Bytes) -> Result<()> {
        self.1
            .lock()
            .unwrap()
            .as_mut()
            .unwrap()
            .1
            .extend_from_slice(&d);
        Ok(())
    }
    fn finish_file(&mut self, _: &Path, _: &Node) -> Result<()> {
        let (p, d) = self.1.lock().unwrap().take().unwrap();
        self.0
            .lock()
            .unwrap()
            .insert(p.to_string_lossy().into_owned(), d);
        Ok(())
    }
    fn abort_file(&mut self, _: &Path) {
        self.1.lock().unwrap().take();
    }
    fn symlink(&mut self, _: &Path, _: &Node) -> Result<()> {
        Ok(())
    }
}

pub fn init_opts() -> InitOptions {
    InitOptions {
        kdf: KdfParams::insecure_fast(),
        chunker: ChunkerParams::with_average(64 * 1024).unwrap(),
        pack_size: 1024 * 1024,
        ..InitOptions::default()
    }
}

pub fn sample() -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    files.insert("a.txt".to_owned(), b"hello".to_vec());
    files.insert("empty".to_owned(), Vec::new());
    files.insert("dir/big.bin".to_owned(), pseudo_random(3_000_000, 1));
    files.insert("dir/sub/dup.bin".to_owned(), pseudo_random(3_000_000, 1));
    files.insert("dir/sub/text".to_owned(), b"abc".repeat(100_000));
    files
}

/// A repository in memory with the sample files backed up: the raw sink
/// (to damage), the repository and the backup's outcome.
pub async fn backed_up() -> (MemorySink, Repository, BackupOutcome) {
    let mem = MemorySink::new();
    let sink: Arc<dyn Sink> = Arc::new(mem.clone());
    let repo = Repository::init(sink, Some(b"pw"), &init_opts())
        .await
        .unwrap();
    let indexed = repo.clone().load_index().await.unwrap();
    let out = backup(
        &indexed,
        &mut MapSource::new(&sample()),
        &BackupOptions::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    (mem, repo, out)
}

/// Opens the repository in `mem` again (as a new process would) with its
/// index.
pub async fn reopen(mem: &MemorySink) -> IndexedRepository {
    let sink: Arc<dyn Sink> = Arc::new(mem.clone());
    Repository::open(sink, Some(b"pw"))
        .await
        .unwrap()
        .load_index()
        .await
        .unwrap()
}
