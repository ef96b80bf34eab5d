//! `backup export --format rdb`: a snapshot as a `dump.rdb` that
//! `redis-server` loads at start-up.
//!
//! An RDB-mode snapshot's stream is written as it is (after its CRC64 and
//! key counts are checked); a key-mode snapshot is turned into an RDB from
//! its `DUMP` payloads (each payload is the value type and the value's RDB
//! encoding, which is what an RDB stores after the key).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use backup_core::reader::SnapshotReader;
use backup_core::{Error, Result};
use bytes::Bytes;
use futures::StreamExt;

use super::glob::KeyFilter;
use super::manifest::SnapshotInfo;
use super::rdb::{split_dump_payload, RdbWriter, MAX_RDB_VERSION};
use super::records::{read_records, show_key, Batch, Selection};
use super::source::{summarize, ChannelReader};
use crate::export::{ExportDetails, ExportReport, RdbExport};

/// Writes `snapshot` as an RDB file at `to` (which must not exist).
///
/// # Errors
///
/// Not a Redis snapshot, `to` exists, repository or write errors, or a
/// stream whose content does not match its manifest.
pub async fn export_rdb(snapshot: &SnapshotReader, to: &Path) -> Result<ExportReport> {
    let info = SnapshotInfo::load(snapshot).await?;
    if to.exists() {
        return Err(Error::Config(format!(
            "{} already exists; export into a new file",
            to.display()
        )));
    }
    let partial = partial_path(to);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&partial)
        .map_err(|e| Error::io(format!("creating {}", partial.display()), e))?;
    let result = if info.keys_mode {
        from_keys(snapshot, &info, file).await
    } else {
        from_rdb(snapshot, &info, file).await
    };
    let (bytes, keys) = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    // Publish without overwriting: a hard link fails if `to` appeared.
    let published = std::fs::hard_link(&partial, to)
        .map_err(|e| Error::io(format!("creating {}", to.display()), e));
    let _ = std::fs::remove_file(&partial);
    published?;
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(ExportReport {
        format: "rdb".to_owned(),
        path: to.to_path_buf(),
        bytes,
        details: ExportDetails::Rdb(RdbExport {
            keys,
            rdb_version: info.rdb_version,
            from_mode: info.mode(),
        }),
    })
}

fn partial_path(to: &Path) -> PathBuf {
    let mut name = to
        .file_name()
        .map(std::ffi::OsStr::to_os_string)
        .unwrap_or_default();
    name.push(format!(".partial-{}", std::process::id()));
    to.with_file_name(name)
}

async fn from_rdb(
    snapshot: &SnapshotReader,
    info: &SnapshotInfo,
    file: File,
) -> Result<(u64, u64)> {
    let (ptx, prx) = async_channel::bounded::<Bytes>(16);
    let parser = tokio::task::spawn_blocking(move || summarize(ChannelReader::new(prx)));
    let (ftx, frx) = async_channel::bounded::<Bytes>(16);
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
        let mut w = BufWriter::with_capacity(1 << 20, file);
        let mut n = 0u64;
        while let Ok(b) = frx.recv_blocking() {
            w.write_all(&b)?;
            n += b.len() as u64;
        }
        let f = w
            .into_inner()
            .map_err(std::io::IntoInnerError::into_error)?;
        f.sync_all()?;
        Ok(n)
    });
    let mut stream = snapshot.content(&info.stream);
    let mut failure = None;
    while let Some(r) = stream.next().await {
        match r {
            Ok(b) => {
                if ptx.send(b.clone()).await.is_err() || ftx.send(b).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(ptx);
    drop(ftx);
    let written = writer
        .await
        .map_err(|e| Error::target_caused("export writer failed", e))?
        .map_err(|e| Error::io("writing the RDB file", e));
    let parsed = parser
        .await
        .map_err(|e| Error::target_caused("export parser failed", e))?;
    if let Some(e) = failure {
        return Err(e);
    }
    let written = written?;
    let summary = parsed.map_err(|e| {
        Error::target_failed(format!(
            "the snapshot's RDB is not valid: {e} (run `backup verify --read-data`)"
        ))
    })?;
    for (db, n) in &info.databases {
        let got = summary.dbs.get(&u64::from(*db)).map_or(0, |(k, _)| *k);
        if got != *n {
            return Err(Error::target_failed(format!(
                "the snapshot's RDB holds {got} keys of database {db}, its manifest lists {n}"
            )));
        }
    }
    Ok((written, summary.keys()))
}

async fn from_keys(
    snapshot: &SnapshotReader,
    info: &SnapshotInfo,
    file: File,
) -> Result<(u64, u64)> {
    let sel = Selection {
        dbs: None,
        keys: KeyFilter::default(),
        payloads: true,
    };
    let (rx, handle) = read_records(snapshot, &info.stream, true, sel);
    let version = if info.rdb_version == 0 {
        9
    } else {
        info.rdb_version.min(MAX_RDB_VERSION)
    };
    let writer = tokio::task::spawn_blocking(move || -> Result<(u64, u64)> {
        let io = |e| Error::io("writing the RDB file", e);
        let mut w = RdbWriter::new(BufWriter::with_capacity(1 << 20, file), version).map_err(io)?;
        w.aux(b"redis-ver", b"backup-export").map_err(io)?;
        let mut db = None;
        let mut keys = 0u64;
        while let Ok(batch) = rx.recv_blocking() {
            match batch {
                Batch::Functions(p) => {
                    // A FUNCTION DUMP payload is function records followed
                    // by the version and CRC64.
                    let body = split_function_payload(&p)?;
                    w.raw(body).map_err(io)?;
                }
                Batch::Keys(recs) => {
                    for r in recs {
                        if db != Some(r.db) {
                            w.select_db(u64::from(r.db)).map_err(io)?;
                            db = Some(r.db);
                        }
                        let (t, value, v) = split_dump_payload(&r.payload).map_err(|e| {
                            Error::target_caused(format!("key {}", show_key(&r.key)), e)
                        })?;
                        if v > version {
                            return Err(Error::target_failed(format!(
                                "key {} has RDB version {v}, newer than the snapshot's {version}",
                                show_key(&r.key)
                            )));
                        }
                        w.key(r.expire_ms, t, &r.key, value).map_err(io)?;
                        keys += 1;
                    }
                }
            }
        }
        let out = w.finish().map_err(io)?;
        let f = out.into_inner().map_err(|e| io(e.into_error()))?;
        f.sync_all().map_err(io)?;
        // What is on disk: the end marker and the checksum included.
        let n = f.metadata().map_err(io)?.len();
        Ok((n, keys))
    });
    let written = writer
        .await
        .map_err(|e| Error::target_caused("export writer failed", e))?;
    let totals = handle
        .await
        .map_err(|e| Error::target_caused("reading the snapshot failed", e))??;
    let (bytes, keys) = written?;
    let seen: u64 = totals.seen.values().sum();
    if seen != keys {
        return Err(Error::target_failed(format!(
            "exported {keys} of the {seen} keys of the snapshot"
        )));
    }
    Ok((bytes, keys))
}

fn split_function_payload(p: &[u8]) -> Result<&[u8]> {
    if p.len() < 10 {
        return Err(Error::target_failed(
            "the snapshot's FUNCTION DUMP payload is too short",
        ));
    }
    let (body, crc) = p.split_at(p.len() - 8);
    if super::rdb::crc64(body).to_le_bytes() != crc {
        return Err(Error::target_failed(
            "the snapshot's FUNCTION DUMP payload has a wrong checksum",
        ));
    }
    Ok(&body[..body.len() - 2])
}
