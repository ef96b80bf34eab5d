//! Point-in-time restores of physical snapshots (from the base backup
//! [`super::driver::WalDriver`] chooses): the captured WAL checked before
//! anything is written, and the recovery settings that make the restored
//! server replay to the target.
//!
//! **Inclusive rule.** A time or position target includes what happened at
//! it: transactions committed at exactly `--at` are restored
//! (PostgreSQL's `recovery_target_inclusive`, on by default), and with
//! `--at-lsn` the record at that position is replayed. The same rule holds
//! for MongoDB's `--at` (entries up to and including that second).

use std::path::{Path, PathBuf};

use backup_core::repo::Repository;
use backup_core::snapshot::SnapshotFilter;
use backup_core::target::{RecoveryPoint, RestoreOptions};
use backup_core::{Error, Id, Result};
use chrono::{DateTime, Utc};

use super::driver::cluster_windows;
use super::lsn::Lsn;
use super::meta::PhysicalMeta;
use super::wal::{read_history, WalMap};
use crate::capture::kind::Position;
use crate::capture::window::Inventory;

/// What a point-in-time restore will replay.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Coverage {
    /// Timelines followed, oldest first.
    pub timelines: Vec<u32>,
    /// The end of the captured WAL without a gap from the base.
    pub end: String,
    /// When the last of it was captured.
    pub end_time: Option<DateTime<Utc>>,
}

/// Checks that the repository holds the WAL from the base backup's stop to
/// the target without a gap, on the timelines leading to it: that the
/// target lies in the window `backup pitr` lists for `base`
/// (`driver::cluster_windows`) on the last timeline of the path
/// that has one, up to where the path leaves that timeline.
///
/// # Errors
///
/// [`Error::Config`] naming the missing range and the nearest restorable
/// points when it does not; storage errors.
pub async fn check_coverage(
    repo: &Repository,
    base: Id,
    meta: &PhysicalMeta,
    opts: &RestoreOptions,
) -> Result<Coverage> {
    let stop = Lsn::parse(&meta.stop_lsn)?;
    if let Some(at) = opts.at {
        if at > Utc::now() {
            return Err(Error::Config(format!(
                "--at {} is in the future",
                at.to_rfc3339()
            )));
        }
        if at < meta.stopped_at {
            return Err(Error::Config(format!(
                "--at {} is before the base backup ended ({}): choose an older base backup or a later time",
                at.to_rfc3339(),
                meta.stopped_at.to_rfc3339()
            )));
        }
    }
    let inventory = Inventory::read(repo).await?;
    let cluster = &meta.system_identifier;
    let map = WalMap::of(
        repo,
        cluster,
        inventory.records.iter().map(|(n, _)| n.clone()),
    );
    let path = timeline_path(repo, &map, meta.stop_timeline, opts).await?;
    let timelines = path.iter().map(|p| p.0).collect();
    if opts.point == Some(RecoveryPoint::Immediate) {
        return Ok(Coverage {
            timelines,
            end: format!("{}/{stop}", meta.stop_timeline),
            end_time: Some(meta.stopped_at),
        });
    }
    let listed = cluster_windows(repo, &inventory, &SnapshotFilter::default(), cluster).await?;
    let wal = |timeline, lsn: Lsn| Position::Wal {
        timeline,
        lsn: lsn.0,
    };
    let from = wal(meta.stop_timeline, stop);
    let (end, end_time) = path
        .iter()
        .rev()
        .find_map(|&(tli, left)| {
            let w = listed
                .windows
                .iter()
                .find(|w| w.timeline == Some(tli) && w.bases.contains(&base))?;
            Some((left.map_or(w.to, |s| w.to.min(wal(tli, s))), w.to_time))
        })
        .filter(|(end, _)| *end > from)
        .unwrap_or((from, None));
    let gap_after = listed
        .gaps
        .iter()
        .find(|g| g.timeline == end.timeline() && (g.from <= end && end < g.to || g.from >= end));
    let base_end = format!("({}, {from})", meta.stopped_at.format("%Y-%m-%dT%H:%M:%SZ"));
    let window = if end == from {
        format!("no WAL is captured after the base backup's end {base_end}, so it restores only to that end")
    } else {
        format!(
            "WAL is captured without a gap from the base backup's end {base_end} to {end}{}",
            end_time
                .map(|t| format!(" ({})", t.format("%Y-%m-%dT%H:%M:%SZ")))
                .unwrap_or_default()
        )
    };
    let gap_text = gap_after
        .map(|g| {
            format!(
                "; then {} to {} is missing (not captured before the server removed it)",
                g.from.short(),
                g.to
            )
        })
        .unwrap_or_default();
    let short = |what: String| -> Error {
        Error::Config(format!(
            "{what} is not restorable: {window}{gap_text}. Restore to a point inside that window, or from a later base backup"
        ))
    };
    match (&opts.at, &opts.point) {
        (Some(at), _) => {
            // The last piece was received after the target. (PostgreSQL
            // itself refuses to finish a recovery that found no commit after
            // the target: a target after the last captured commit fails at
            // the first start, it is never silently short.)
            if end_time.is_none_or(|t| t < *at) {
                return Err(short(format!("--at {}", at.to_rfc3339())));
            }
        }
        (None, Some(RecoveryPoint::Lsn(l))) => {
            let target = Lsn::parse(l).map_err(|_| {
                Error::Config(format!("--at-lsn `{l}` is not a WAL position (X/X)"))
            })?;
            if !matches!(end, Position::Wal { lsn, .. } if target.0 < lsn) {
                return Err(short(format!("--at-lsn {l}")));
            }
        }
        _ => {
            if end == from {
                return Err(short("the target".to_owned()));
            }
        }
    }
    Ok(Coverage {
        timelines,
        end: end.to_string(),
        end_time,
    })
}

/// The timelines from the base's timeline to the one recovery follows,
/// each with where recovery leaves it for the next (from the history
/// file): `--timeline N`, `current` (the base's), or the newest whose
/// history includes the base's timeline (`latest`, the default, as
/// PostgreSQL).
async fn timeline_path(
    repo: &Repository,
    map: &WalMap,
    base_tli: u32,
    opts: &RestoreOptions,
) -> Result<Vec<(u32, Option<Lsn>)>> {
    let target = match opts.timeline.as_deref() {
        Some("current") => base_tli,
        Some("latest") | None => map
            .ranges
            .keys()
            .chain(map.history.keys())
            .copied()
            .max()
            .unwrap_or(base_tli)
            .max(base_tli),
        Some(n) => n
            .parse()
            .map_err(|_| Error::Config(format!("--timeline `{n}`: a number, latest or current")))?,
    };
    if target == base_tli {
        return Ok(vec![(base_tli, None)]);
    }
    let n = map.history.get(&target).ok_or_else(|| {
        Error::Config(format!(
            "the history file of timeline {target} is not in the repository, so the way from the base backup's timeline {base_tli} to it is unknown"
        ))
    })?;
    let mut path: Vec<(u32, Option<Lsn>)> = read_history(repo, n)
        .await?
        .into_iter()
        .map(|(t, left)| (t, Some(left)))
        .collect();
    path.push((target, None));
    match path.iter().position(|p| p.0 == base_tli) {
        Some(i) => Ok(path[i..].to_vec()),
        None => Err(Error::Config(format!(
            "timeline {target} does not descend from the base backup's timeline {base_tli}; give --timeline {base_tli} or choose a base backup of timeline {target}"
        ))),
    }
}

/// The comment that opens the block of settings [`write_recovery`] adds to
/// `postgresql.auto.conf`.
pub(crate) const RECOVERY_HEADER: &str = "# Point-in-time recovery, written by `backup restore`.";

/// The settings [`recovery_settings`] may write.
const RECOVERY_KEYS: [&str; 9] = [
    "restore_command",
    "recovery_end_command",
    "recovery_target_time",
    "recovery_target_lsn",
    "recovery_target_xid",
    "recovery_target_name",
    "recovery_target",
    "recovery_target_action",
    "recovery_target_timeline",
];

/// The recovery settings for `postgresql.auto.conf`: `restore_command`,
/// and a `recovery_end_command` (`end_command`) that removes what only the
/// recovery needed once it ends (see [`end_recovery`]).
pub(crate) fn recovery_settings(
    opts: &RestoreOptions,
    restore_command: &str,
    end_command: &str,
) -> Vec<(String, String)> {
    let target = match (&opts.at, &opts.point) {
        (Some(at), _) => Some((
            "recovery_target_time",
            at.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string(),
        )),
        (None, Some(RecoveryPoint::Lsn(l))) => Some(("recovery_target_lsn", l.clone())),
        (None, Some(RecoveryPoint::Xid(x))) => Some(("recovery_target_xid", x.clone())),
        (None, Some(RecoveryPoint::Name(n))) => Some(("recovery_target_name", n.clone())),
        (None, Some(RecoveryPoint::Immediate)) => Some(("recovery_target", "immediate".into())),
        _ => None,
    };
    let mut s = vec![
        ("restore_command", restore_command.to_owned()),
        ("recovery_end_command", end_command.to_owned()),
    ];
    s.extend(target);
    let action = opts.target_action.as_deref().unwrap_or("promote");
    s.push(("recovery_target_action", action.to_owned()));
    let timeline = opts.timeline.as_deref().unwrap_or("latest");
    s.push(("recovery_target_timeline", timeline.to_owned()));
    s.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// Writes `recovery.signal` and appends the settings to
/// `postgresql.auto.conf` (created when missing), owned like the data
/// directory.
pub(crate) fn write_recovery(
    data_dir: &Path,
    settings: &[(String, String)],
    owner: Option<(u32, u32)>,
) -> Result<()> {
    use std::fmt::Write as _;
    let signal = data_dir.join("recovery.signal");
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create(true).truncate(true);
    write_owned(&signal, &mut open, 0o600, &[], owner)?;
    let mut text = format!("\n{RECOVERY_HEADER}\n");
    for (k, v) in settings {
        let _ = writeln!(text, "{k} = '{}'", v.replace('\'', "''"));
    }
    let auto = data_dir.join("postgresql.auto.conf");
    let mut open = std::fs::OpenOptions::new();
    open.append(true).create(true);
    write_owned(&auto, &mut open, 0o600, text.as_bytes(), owner)
}

/// Writes `bytes` to `path` opened with `open` (a new file gets `mode`),
/// syncs it, and gives it to `owner` when given.
fn write_owned(
    path: &Path,
    open: &mut std::fs::OpenOptions,
    mode: u32,
    bytes: &[u8],
    owner: Option<(u32, u32)>,
) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    open.mode(mode)
        .open(path)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(|e| Error::io(format!("setting the owner of {}", path.display()), e))?;
    }
    Ok(())
}

/// Writes a key file that opens the repository without a password beside
/// the data directory (`<DIR>.backup-key`, mode 0600, owned by the data
/// directory's owner), for `restore_command`; `None` for an unencrypted
/// repository.
pub(crate) fn write_key_file(
    repo: &Repository,
    data_dir: &Path,
    owner: Option<(u32, u32)>,
) -> Result<Option<PathBuf>> {
    if !repo.key().encrypts() {
        return Ok(None);
    }
    let path = key_file_path(data_dir);
    let _ = std::fs::remove_file(&path);
    write_plain_key(repo, &path, owner)?;
    Ok(Some(path))
}

/// Writes the repository's key without a password to the new file `path`
/// (mode 0600, synced, owned by `owner` when given).
pub(crate) fn write_plain_key(
    repo: &Repository,
    path: &Path,
    owner: Option<(u32, u32)>,
) -> Result<()> {
    let bytes = repo.export_plain_key()?;
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    write_owned(path, &mut open, 0o600, &bytes, owner)
}

/// Where [`write_key_file`] puts the key file of `data_dir`:
/// `<DIR>.backup-key`, beside it.
pub(crate) fn key_file_path(data_dir: &Path) -> PathBuf {
    let mut name = data_dir
        .file_name()
        .map(std::ffi::OsStr::to_os_string)
        .unwrap_or_default();
    name.push(".backup-key");
    data_dir.with_file_name(name)
}

/// The `restore_command` for a restored cluster: `program` (the `backup`
/// binary with the arguments that reach the repository), the key file,
/// the cluster and its segment size.
pub(crate) fn restore_command(program: &str, key: Option<&Path>, meta: &PhysicalMeta) -> String {
    let key = key
        .map(|k| format!(" --key-file {}", shell_quote(&k.display().to_string())))
        .unwrap_or_default();
    format!(
        "{program}{key} --quiet wal fetch --cluster {} --segment-size {} %f \"%p\"",
        meta.system_identifier, meta.wal_segment_size
    )
}

/// The `recovery_end_command` for a restored cluster: `program` ends the
/// recovery's traces in the data directory (the server runs it there once
/// recovery ends): the key file, WAL fetched ahead and not used, and the
/// recovery settings (see [`end_recovery`]).
pub(crate) fn end_command(program: &str, key: Option<&Path>) -> String {
    let key = key
        .map(|k| format!(" --remove-key {}", shell_quote(&k.display().to_string())))
        .unwrap_or_default();
    format!("{program} --quiet wal recovery-end{key}")
}

/// What [`end_recovery`] removed.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RecoveryEnded {
    /// The key file, when it was there.
    pub key_file: Option<PathBuf>,
    /// Whether WAL fetched ahead and not used was removed.
    pub prefetched: bool,
    /// The recovery settings removed from `postgresql.auto.conf`.
    pub settings: Vec<String>,
}

/// Removes, once a point-in-time recovery of `data_dir` has ended, what
/// only the recovery needed: the password-less key file `key` beside the
/// data directory, the WAL `wal fetch` fetched ahead
/// (`pg_wal/.backup-prefetch`), and the settings `backup restore` added to
/// `postgresql.auto.conf` (its block, and anywhere a `restore_command` or
/// `recovery_end_command` of this program's; the file is replaced
/// atomically, keeping its owner and mode). Safe to run twice. The
/// server runs it as its `recovery_end_command`; `restore --start` runs it
/// after a recovery that promoted.
///
/// # Errors
///
/// I/O errors reading or writing those files.
pub fn end_recovery(data_dir: &Path, key: Option<&Path>) -> Result<RecoveryEnded> {
    use std::os::unix::fs::MetadataExt;
    /// `Ok(None)` when `path` is absent.
    fn present<T>(r: std::io::Result<T>, doing: &str, path: &Path) -> Result<Option<T>> {
        match r {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("{doing} {}", path.display()), e)),
        }
    }
    let mut ended = RecoveryEnded::default();
    if let Some(k) = key {
        if present(std::fs::remove_file(k), "removing", k)?.is_some() {
            ended.key_file = Some(k.to_owned());
        }
    }
    let prefetch = data_dir.join("pg_wal").join(".backup-prefetch");
    ended.prefetched =
        present(std::fs::remove_dir_all(&prefetch), "removing", &prefetch)?.is_some();
    let auto = data_dir.join("postgresql.auto.conf");
    let Some(text) = present(std::fs::read_to_string(&auto), "reading", &auto)? else {
        return Ok(ended);
    };
    let (kept, removed) = without_recovery_settings(&text);
    if removed.is_empty() {
        return Ok(ended);
    }
    let tmp = data_dir.join("postgresql.auto.conf.backup-tmp");
    let meta = std::fs::metadata(&auto)
        .map_err(|e| Error::io(format!("reading {}", auto.display()), e))?;
    let _ = std::fs::remove_file(&tmp);
    let owner = nix::unistd::Uid::effective()
        .is_root()
        .then(|| (meta.uid(), meta.gid()));
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    write_owned(&tmp, &mut open, meta.mode() & 0o777, kept.as_bytes(), owner)?;
    std::fs::rename(&tmp, &auto)
        .map_err(|e| Error::io(format!("replacing {}", auto.display()), e))?;
    ended.settings = removed;
    Ok(ended)
}

/// `postgresql.auto.conf` without the recovery settings `backup restore`
/// wrote, and the names of the settings taken out.
fn without_recovery_settings(text: &str) -> (String, Vec<String>) {
    let key_of = |line: &str| -> Option<String> {
        let (k, _) = line.split_once('=')?;
        let k = k.trim();
        (!k.is_empty() && !k.starts_with('#')).then(|| k.to_owned())
    };
    // A restore_command or recovery_end_command of this program's, also
    // where ALTER SYSTEM rewrote the file without our comment.
    let ours = |line: &str| {
        matches!(
            key_of(line).as_deref(),
            Some("restore_command" | "recovery_end_command")
        ) && (line.contains(" wal fetch ") || line.contains(" wal recovery-end"))
    };
    let mut kept = String::with_capacity(text.len());
    let mut removed = Vec::new();
    let mut in_block = false;
    for line in text.lines() {
        if line.trim() == RECOVERY_HEADER {
            in_block = true;
            continue;
        }
        if in_block {
            let t = line.trim_start();
            if t.starts_with('#') {
                continue;
            }
            match key_of(t) {
                Some(k) if RECOVERY_KEYS.contains(&k.as_str()) => {
                    removed.push(k);
                    continue;
                }
                _ => in_block = false,
            }
        }
        if ours(line) {
            removed.extend(key_of(line));
            continue;
        }
        kept.push_str(line);
        kept.push('\n');
    }
    if !removed.is_empty() {
        kept.push_str("# The point-in-time recovery by `backup restore` has ended; its settings were removed.\n");
    }
    (kept, removed)
}

/// Quotes a word for the shell the server runs `restore_command` with.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:=,@+".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests;
