//! The audit trail: one record per operation, chained by hash.
//!
//! Each record is written twice: to the repository's `audit/` directory and
//! as a line of a local JSON-lines log. In the repository, records are named
//! by their sequence number (16 decimal digits, from 1) and written
//! create-only; a record carries the SHA-256 of the previous record
//! (`prev`) and of itself (`hash`). Two writers racing for the same
//! sequence number cannot both succeed: the loser re-reads the end of the
//! chain and tries the next number, so the chain stays linear however many
//! processes append at once. Records are sealed with the repository key
//! like every other metadata file.
//!
//! [`verify_chain`] detects an altered record (its seal, its own hash or
//! the next record's `prev` no longer match), a removed record (a gap in
//! the sequence) and a removed tail (a record the local log knows of is
//! missing from the repository).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Error;
use crate::repo::Repository;
use crate::sink::{FileKind, PutMode, Sink, SinkExt};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What is hashed: every field of a record but its own hash, in this order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuditBody {
    /// Position in the repository's chain, from 1.
    pub seq: u64,
    /// `create`, `restore`, `verify`, `forget`, `prune`, `copy`, `key-add`, ...
    pub operation: String,
    /// When the operation ended.
    pub timestamp: DateTime<Utc>,
    /// Who ran it.
    pub user: String,
    /// Where it ran.
    pub host: String,
    /// The id of the key that opened the repository (the name of its file
    /// under `keys/`; keys have no other name). Absent from records of a
    /// repository opened without a key and from records written before
    /// keys were recorded, and then left out of the hashed JSON too, so
    /// their hashes stay valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `success` or `failure`.
    pub status: String,
    /// Operation-specific details (snapshot ids, error message, ...);
    /// never credentials.
    pub details: serde_json::Value,
    /// Hash of the previous record ([`GENESIS`] for the first).
    pub prev: String,
}

/// A record with its hash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// The hashed fields.
    #[serde(flatten)]
    pub body: AuditBody,
    /// SHA-256 (hex) of the JSON of [`AuditRecord::body`].
    pub hash: String,
}

impl AuditBody {
    /// The hash of this body.
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(&json))
    }
}

/// An operation to record.
#[derive(Debug, Clone)]
pub struct Operation {
    /// Operation name.
    pub operation: String,
    /// Whether it succeeded.
    pub success: bool,
    /// Details.
    pub details: serde_json::Value,
    /// Who did it, when it is not the OS user running this process: the
    /// daemon identity of an API request. `None` records
    /// [`crate::util::username`].
    pub user: Option<String>,
}

/// A line of the local log: the record, or (when the repository could not
/// be reached) only the operation, plus which repository it concerns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocalLine {
    /// The repository's id, when it was opened.
    pub repository: Option<String>,
    /// The repository's location (credentials removed).
    pub location: Option<String>,
    /// The record (`seq` 0, `prev` and `hash` empty when it is not in the
    /// repository's chain).
    #[serde(flatten)]
    pub record: AuditRecord,
}

/// The default local log path.
pub fn default_local_log() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BACKUP_AUDIT_LOG") {
        return Some(PathBuf::from(p));
    }
    if let Some(state) = std::env::var_os("XDG_STATE_HOME") {
        return Some(PathBuf::from(state).join("backup").join("audit.jsonl"));
    }
    std::env::var_os("HOME").map(|h| {
        PathBuf::from(h)
            .join(".local")
            .join("state")
            .join("backup")
            .join("audit.jsonl")
    })
}

fn name_of(seq: u64) -> String {
    format!("{seq:016}")
}

fn encode(repo: &Repository, record: &AuditRecord) -> Result<Bytes, Error> {
    let json = serde_json::to_vec(record)
        .map_err(|e| Error::Config(format!("cannot encode an audit record: {e}")))?;
    Ok(Bytes::from(repo.seal_for(FileKind::Audit, &json)))
}

fn decode(repo: &Repository, name: &str, bytes: &[u8]) -> Result<AuditRecord, Error> {
    let json = repo.open_for(FileKind::Audit, bytes, name)?;
    serde_json::from_slice(&json).map_err(|e| Error::corrupt(FileKind::Audit, name, e))
}

/// Sequence numbers present in `audit/`, sorted; other names are returned
/// separately.
async fn sequence(repo: &Repository) -> Result<(Vec<u64>, Vec<String>), Error> {
    let mut seqs = Vec::new();
    let mut other = Vec::new();
    for n in repo.sink().list_names(FileKind::Audit).await? {
        match n.parse::<u64>() {
            Ok(s) if n.len() == 16 && s > 0 => seqs.push(s),
            _ => other.push(n),
        }
    }
    seqs.sort_unstable();
    Ok((seqs, other))
}

/// Appends a record to the repository's chain.
///
/// # Errors
///
/// Storage errors, an unreadable last record, or losing the race for the
/// next sequence number 50 times in a row.
pub async fn append(repo: &Repository, op: &Operation) -> Result<AuditRecord, Error> {
    for attempt in 0..50u32 {
        let (seqs, _) = sequence(repo).await?;
        let (seq, prev) = match seqs.last() {
            Some(&last) => {
                let name = name_of(last);
                let bytes = repo.sink().get(FileKind::Audit, &name).await?;
                (last + 1, decode(repo, &name, &bytes)?.hash)
            }
            None => (1, GENESIS.to_owned()),
        };
        let body = AuditBody {
            seq,
            operation: op.operation.clone(),
            timestamp: Utc::now(),
            user: op.user.clone().unwrap_or_else(crate::util::username),
            host: crate::util::hostname(),
            key: repo.key_id().map(|k| k.to_hex()),
            status: if op.success { "success" } else { "failure" }.to_owned(),
            details: op.details.clone(),
            prev,
        };
        let record = AuditRecord {
            hash: body.digest(),
            body,
        };
        match repo
            .sink()
            .put(
                FileKind::Audit,
                &name_of(seq),
                encode(repo, &record)?,
                PutMode::Create,
            )
            .await
        {
            Ok(()) => return Ok(record),
            Err(Error::AlreadyExists { .. }) => {
                // Another writer took this number: back off a little and
                // chain onto its record.
                let jitter = u64::from(std::process::id() % 7) + u64::from(attempt) * 5;
                tokio::time::sleep(Duration::from_millis(10 + jitter)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::Transient {
        backend: "audit",
        message: "too many concurrent writers of the audit trail".to_owned(),
    })
}

/// The newest records of the repository's chain, newest first: read from
/// the end of the sequence back until a record is older than `since` or
/// `max` were read. Records that cannot be read are skipped (`backup
/// audit` reports them); this is for reports, not for checking the chain.
///
/// # Errors
///
/// Storage errors while listing.
pub async fn read_recent(
    repo: &Repository,
    since: Option<DateTime<Utc>>,
    max: usize,
) -> Result<Vec<AuditRecord>, Error> {
    use futures::stream::{self, StreamExt};
    let (seqs, _) = sequence(repo).await?;
    let mut out = Vec::new();
    // Read in batches of 32, in parallel, from the newest back.
    for batch in seqs.rchunks(32) {
        let mut read: Vec<(u64, Option<AuditRecord>)> = stream::iter(batch.iter().copied())
            .map(|seq| async move {
                let name = name_of(seq);
                let rec = match repo.sink().get(FileKind::Audit, &name).await {
                    Ok(bytes) => decode(repo, &name, &bytes).ok(),
                    Err(_) => None,
                };
                (seq, rec)
            })
            .buffer_unordered(16)
            .collect()
            .await;
        read.sort_by_key(|r| std::cmp::Reverse(r.0));
        for rec in read.into_iter().filter_map(|(_, r)| r) {
            if since.is_some_and(|s| rec.body.timestamp < s) || out.len() >= max {
                return Ok(out);
            }
            out.push(rec);
        }
    }
    Ok(out)
}

/// Appends a line to the local log, creating its directory.
///
/// # Errors
///
/// I/O errors.
pub fn append_local(path: &Path, line: &LocalLine) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut text = serde_json::to_string(line).map_err(std::io::Error::other)?;
    text.push('\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    // One write of the whole line: appends of other processes do not
    // interleave with it.
    f.write_all(text.as_bytes())?;
    f.sync_data()
}

/// Records an operation in the repository (when given) and the local log.
/// Failures are returned as warnings: an audit problem never turns a
/// successful operation into a failed one, but is reported.
pub async fn record(
    repo: Option<&Repository>,
    local_log: Option<&Path>,
    op: &Operation,
) -> Vec<String> {
    let mut warnings = Vec::new();
    let record = match repo {
        Some(r) => match append(r, op).await {
            Ok(rec) => Some(rec),
            Err(e) => {
                warnings.push(format!(
                    "could not append the audit record to the repository: {e}"
                ));
                None
            }
        },
        None => None,
    };
    let record = record.unwrap_or_else(|| AuditRecord {
        body: AuditBody {
            seq: 0,
            operation: op.operation.clone(),
            timestamp: Utc::now(),
            user: op.user.clone().unwrap_or_else(crate::util::username),
            host: crate::util::hostname(),
            key: repo.and_then(Repository::key_id).map(|k| k.to_hex()),
            status: if op.success { "success" } else { "failure" }.to_owned(),
            details: op.details.clone(),
            prev: String::new(),
        },
        hash: String::new(),
    });
    if let Some(path) = local_log {
        let line = LocalLine {
            repository: repo.map(|r| r.config().id.clone()),
            location: repo.map(|r| r.sink().location()),
            record,
        };
        if let Err(e) = append_local(path, &line) {
            warnings.push(format!(
                "could not append to the local audit log {}: {e}",
                path.display()
            ));
        }
    }
    warnings
}

/// The outcome of [`verify_chain`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChainReport {
    /// Records read, in order.
    pub records: Vec<AuditRecord>,
    /// Everything wrong with the chain.
    pub problems: Vec<String>,
}

impl ChainReport {
    /// Whether the chain is intact.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Reads and checks the whole chain; `local` lines (of any repository)
/// are checked against it too.
///
/// # Errors
///
/// Storage errors while listing or reading (damage is reported, not
/// returned as an error).
pub async fn verify_chain(repo: &Repository, local: &[LocalLine]) -> Result<ChainReport, Error> {
    let mut report = ChainReport::default();
    let (seqs, other) = sequence(repo).await?;
    for n in other {
        report
            .problems
            .push(format!("audit/{n} is not a record name (unexpected file)"));
    }
    let mut expected_seq = 1;
    let mut prev_hash: Option<String> = Some(GENESIS.to_owned());
    for seq in seqs {
        if seq != expected_seq {
            let missing = if seq == expected_seq + 1 {
                format!("record {expected_seq} is missing (removed)")
            } else {
                format!(
                    "records {expected_seq} to {} are missing (removed)",
                    seq - 1
                )
            };
            report.problems.push(missing);
            prev_hash = None;
        }
        expected_seq = seq + 1;
        let name = name_of(seq);
        let rec = match repo.sink().get(FileKind::Audit, &name).await {
            Ok(b) => decode(repo, &name, &b),
            Err(e) => Err(e),
        };
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                report
                    .problems
                    .push(format!("record {seq} cannot be read (altered?): {e}"));
                prev_hash = None;
                continue;
            }
        };
        if rec.body.seq != seq {
            report.problems.push(format!(
                "record {seq} says it is record {} (moved or altered)",
                rec.body.seq
            ));
        }
        if rec.body.digest() != rec.hash {
            report.problems.push(format!(
                "record {seq} was altered: its content does not match its hash"
            ));
        }
        if let Some(p) = &prev_hash {
            if *p != rec.body.prev {
                report.problems.push(format!(
                    "record {seq} does not chain to record {}: the previous record was altered or replaced",
                    seq - 1
                ));
            }
        }
        prev_hash = Some(rec.hash.clone());
        report.records.push(rec);
    }
    let id = &repo.config().id;
    for line in local {
        if line.repository.as_deref() != Some(id.as_str()) || line.record.body.seq == 0 {
            continue;
        }
        let seq = line.record.body.seq;
        match report.records.iter().find(|r| r.body.seq == seq) {
            Some(r) if r.hash == line.record.hash => {}
            Some(_) => report.problems.push(format!(
                "record {seq} differs from the copy in the local audit log"
            )),
            None => report.problems.push(format!(
                "record {seq} is in the local audit log but missing from the repository (removed)"
            )),
        }
    }
    report.problems.dedup();
    Ok(report)
}

/// Reads the local log; lines that do not parse are returned as problems.
pub fn read_local(path: &Path) -> (Vec<LocalLine>, Vec<String>) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return (Vec::new(), Vec::new());
    };
    let mut lines = Vec::new();
    let mut problems = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<LocalLine>(l) {
            Ok(line) => {
                if line.record.body.seq > 0 && line.record.body.digest() != line.record.hash {
                    problems.push(format!(
                        "local audit log {} line {}: altered (hash mismatch)",
                        path.display(),
                        i + 1
                    ));
                }
                lines.push(line);
            }
            Err(e) => problems.push(format!(
                "local audit log {} line {}: {e}",
                path.display(),
                i + 1
            )),
        }
    }
    (lines, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn repo() -> Repository {
        crate::test_support::memory_repo().await
    }

    fn op(name: &str) -> Operation {
        Operation {
            operation: name.to_owned(),
            success: true,
            details: serde_json::json!({"n": name}),
            user: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_name_the_key_and_older_records_still_verify() {
        let r = repo().await;
        let key = r.key_id().expect("opened with a key").to_hex();
        let rec = append(&r, &op("create")).await.unwrap();
        assert_eq!(rec.body.key.as_deref(), Some(key.as_str()));
        let json = serde_json::to_value(&rec).unwrap();
        assert_eq!(json["key"], key.as_str());
        // A record of a writer that recorded no key: the field is left out
        // of its JSON and of its hash, and it reads back the same.
        let mut old = rec.body.clone();
        old.key = None;
        let text = serde_json::to_string(&old).unwrap();
        assert!(!text.contains("\"key\""), "{text}");
        let back: AuditBody = serde_json::from_str(&text).unwrap();
        assert_eq!(back.digest(), old.digest());
        assert_ne!(old.digest(), rec.body.digest());
        let rep = verify_chain(&r, &[]).await.unwrap();
        assert!(rep.is_ok(), "{:?}", rep.problems);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn recent_records_newest_first() {
        let r = repo().await;
        for i in 0..40 {
            append(&r, &op(&format!("op{i}"))).await.unwrap();
        }
        let recent = read_recent(&r, None, 35).await.unwrap();
        assert_eq!(recent.len(), 35);
        assert_eq!(recent[0].body.operation, "op39");
        assert_eq!(recent[34].body.operation, "op5");
        let future = Utc::now() + chrono::Duration::hours(1);
        assert!(read_recent(&r, Some(future), 100).await.unwrap().is_empty());
        assert_eq!(read_recent(&r, None, 1000).await.unwrap().len(), 40);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chain_and_tamper() {
        let r = repo().await;
        for i in 0..4 {
            append(&r, &op(&format!("op{i}"))).await.unwrap();
        }
        let rep = verify_chain(&r, &[]).await.unwrap();
        assert!(rep.is_ok(), "{:?}", rep.problems);
        assert_eq!(rep.records.len(), 4);

        // Replace record 2 with a re-sealed, edited one.
        let name = name_of(2);
        let mut rec = decode(
            &r,
            &name,
            &r.sink().get(FileKind::Audit, &name).await.unwrap(),
        )
        .unwrap();
        rec.body.status = "failure".to_owned();
        r.sink()
            .put(
                FileKind::Audit,
                &name,
                encode(&r, &rec).unwrap(),
                PutMode::Overwrite,
            )
            .await
            .unwrap();
        let rep = verify_chain(&r, &[]).await.unwrap();
        assert!(
            rep.problems
                .iter()
                .any(|p| p.contains("record 2 was altered")),
            "{:?}",
            rep.problems
        );

        // Even with its hash recomputed, record 3 no longer chains.
        rec.hash = rec.body.digest();
        r.sink()
            .put(
                FileKind::Audit,
                &name,
                encode(&r, &rec).unwrap(),
                PutMode::Overwrite,
            )
            .await
            .unwrap();
        let rep = verify_chain(&r, &[]).await.unwrap();
        assert!(
            rep.problems
                .iter()
                .any(|p| p.contains("record 3 does not chain")),
            "{:?}",
            rep.problems
        );

        r.sink().delete(FileKind::Audit, &name_of(3)).await.unwrap();
        let rep = verify_chain(&r, &[]).await.unwrap();
        assert!(
            rep.problems
                .iter()
                .any(|p| p.contains("record 3 is missing")),
            "{:?}",
            rep.problems
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_keep_one_chain() {
        let r = repo().await;
        let mut tasks = Vec::new();
        for w in 0..4 {
            let r = r.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..5 {
                    append(&r, &op(&format!("w{w}-{i}"))).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let rep = verify_chain(&r, &[]).await.unwrap();
        assert!(rep.is_ok(), "{:?}", rep.problems);
        assert_eq!(rep.records.len(), 20);
    }
}
