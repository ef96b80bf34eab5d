//! Keys erased from a Redis snapshot ([`crate::erase`]): the snapshot's
//! one stream is copied with every key whose name matches a pattern left
//! out, in every database. An RDB keeps everything else byte for byte
//! and gets a new checksum ([`super::rdb::RdbFilter`]); a key-level
//! stream has its key frames dropped and its end count lowered. The
//! manifest's key counts (per database, with expiring keys, and in
//! total) follow, so a restore's count check still holds.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::{Arc, Mutex, PoisonError};

use backup_core::reader::{ContentReader, SnapshotReader};
use backup_core::rewrite::{ContentFilter, Edits};
use backup_core::source::BlockingReader;
use backup_core::tree::Node;
use backup_core::{Error, Result};

use super::keyfile::{Frame, FrameReader, FrameWriter};
use super::manifest::{SnapshotInfo, KEYS_STREAM, RDB_STREAM};
use super::rdb::{KeyEntry, RdbFilter};
use crate::erase::{KindEdits, RedisDelete, Removed};

/// Keys removed from one database that had an expiry.
type Expiring = Arc<Mutex<BTreeMap<u64, u64>>>;

struct RedisEdits {
    keys_mode: bool,
    patterns: Arc<Vec<RedisDelete>>,
    removed: Arc<Removed>,
    expiring: Expiring,
}

/// The item name removed keys are counted under: `db N`.
fn item(db: u64) -> String {
    format!("db {db}")
}

/// The edits `erasures` make to the Redis snapshot `reader` reads: every
/// pattern applies to every Redis snapshot (which keys match is known
/// only by reading).
///
/// # Errors
///
/// A damaged manifest.
pub(crate) async fn edits(reader: &SnapshotReader, erasures: &[RedisDelete]) -> Result<KindEdits> {
    let removed = Arc::new(Removed::default());
    if erasures.is_empty() {
        return Ok(KindEdits {
            edits: None,
            applies: Vec::new(),
            removed,
        });
    }
    let info = SnapshotInfo::load(reader).await?;
    let edits = RedisEdits {
        keys_mode: info.keys_mode,
        patterns: Arc::new(erasures.to_vec()),
        removed: removed.clone(),
        expiring: Expiring::default(),
    };
    Ok(KindEdits {
        edits: Some(Arc::new(edits)),
        applies: erasures.iter().map(RedisDelete::describe).collect(),
        removed,
    })
}

/// Counts a removed key.
fn count(removed: &Removed, expiring: &Expiring, db: u64, expires: bool, bytes: u64) {
    removed.add(&item(db), 1, bytes);
    if expires {
        *expiring
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(db)
            .or_default() += 1;
    }
}

impl RedisEdits {
    fn rdb(&self) -> ContentFilter {
        let patterns = self.patterns.clone();
        let removed = self.removed.clone();
        let expiring = self.expiring.clone();
        Box::new(move |content: ContentReader| {
            let keep = move |k: &KeyEntry| {
                let hit = patterns.iter().any(|p| p.matches(&k.key));
                if hit {
                    // The value's size is not known here: the key's is.
                    count(
                        &removed,
                        &expiring,
                        k.db,
                        k.expire_ms.is_some(),
                        k.key.len() as u64,
                    );
                }
                !hit
            };
            match RdbFilter::new(std::io::BufReader::with_capacity(1 << 16, content), keep) {
                Ok(f) => Box::new(f) as BlockingReader,
                Err(e) => Box::new(Failed(Some(std::io::Error::other(format!("the RDB: {e}")))))
                    as BlockingReader,
            }
        })
    }

    fn keys(&self) -> ContentFilter {
        let patterns = self.patterns.clone();
        let removed = self.removed.clone();
        let expiring = self.expiring.clone();
        Box::new(move |content: ContentReader| {
            match FrameReader::new(std::io::BufReader::with_capacity(1 << 16, content)) {
                Ok(frames) => Box::new(KeyFrames {
                    frames,
                    out: FrameWriter::new(),
                    pos: 0,
                    db: 0,
                    done: false,
                    patterns,
                    removed,
                    expiring,
                }) as BlockingReader,
                Err(e) => Box::new(Failed(Some(std::io::Error::other(e)))) as BlockingReader,
            }
        })
    }
}

/// A reader that fails once with the error it holds (a stream whose
/// header could not be read).
struct Failed(Option<std::io::Error>);

impl Read for Failed {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        match self.0.take() {
            Some(e) => Err(e),
            None => Ok(0),
        }
    }
}

/// A key-level stream with the matching key frames left out.
struct KeyFrames<R> {
    frames: FrameReader<R>,
    out: FrameWriter,
    /// Bytes of `out.buf` already handed out.
    pos: usize,
    db: u32,
    done: bool,
    patterns: Arc<Vec<RedisDelete>>,
    removed: Arc<Removed>,
    expiring: Expiring,
}

impl<R: Read> KeyFrames<R> {
    fn fill(&mut self) -> std::io::Result<()> {
        let _ = self.out.buf.split_to(self.pos);
        self.pos = 0;
        while self.out.buf.len() < 1 << 16 && !self.done {
            let Some(frame) = self.frames.next_frame().map_err(std::io::Error::other)? else {
                self.done = true;
                break;
            };
            match frame {
                Frame::Db(db) => {
                    self.db = db;
                    self.out.db(db);
                }
                Frame::Key {
                    key,
                    expire_ms,
                    payload,
                } => {
                    if self.patterns.iter().any(|p| p.matches(&key)) {
                        count(
                            &self.removed,
                            &self.expiring,
                            u64::from(self.db),
                            expire_ms.is_some(),
                            (key.len() + payload.len()) as u64,
                        );
                    } else {
                        self.out.key(&key, expire_ms, &payload);
                    }
                }
                Frame::Functions(p) => self.out.functions(&p),
                Frame::End(_) => {
                    self.out.end();
                    self.done = true;
                }
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for KeyFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.out.buf.len() && !self.done {
            self.fill()?;
        }
        let n = buf.len().min(self.out.buf.len() - self.pos);
        buf[..n].copy_from_slice(&self.out.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Edits for RedisEdits {
    fn drops(&self, _path: &str, _node: &Node) -> bool {
        false
    }

    fn filter(&self, path: &str, _node: &Node) -> Option<ContentFilter> {
        match (path, self.keys_mode) {
            (RDB_STREAM, false) => Some(self.rdb()),
            (KEYS_STREAM, true) => Some(self.keys()),
            _ => None,
        }
    }

    fn metadata(&self, original: &serde_json::Value) -> Result<serde_json::Value> {
        let mut meta = original.clone();
        let counts = self.removed.counts();
        let expiring = self
            .expiring
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let damaged = || Error::Config("a Redis manifest without its key counts".to_owned());
        let mut total = 0u64;
        for (name, c) in &counts {
            let Some(db) = name.strip_prefix("db ") else {
                continue;
            };
            let d = meta
                .get_mut("databases")
                .and_then(|d| d.get_mut(db))
                .ok_or_else(damaged)?;
            let less_expiring = db
                .parse::<u64>()
                .ok()
                .and_then(|n| expiring.get(&n))
                .copied()
                .unwrap_or(0);
            for (key, less) in [("keys", c.records), ("expires", less_expiring)] {
                if let Some(v) = d.get(key).and_then(serde_json::Value::as_u64) {
                    d[key] = v.saturating_sub(less).into();
                }
            }
            total += c.records;
        }
        if let Some(v) = meta.get("keys").and_then(serde_json::Value::as_u64) {
            meta["keys"] = v.saturating_sub(total).into();
        }
        Ok(meta)
    }
}
