//! Memory for a server this program starts to replay WAL (`restore
//! --start`, `verify --restore-test`, drills).
//!
//! Replay is one process applying records to pages through the buffer
//! pool. When the pages it touches do not fit in `shared_buffers`, every
//! record that finds its page evicted costs a read of that page and a write
//! of a dirty one (measured on pgbench scale 100 after 120 s of writes,
//! 256 MB of buffers: 6.4 of the 10.2 s of replay were system time). A
//! server started only to replay, and stopped again, can be given a pool
//! that holds the cluster: the cluster's own configuration is not changed,
//! the next start uses it.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;

/// Bytes in a mebibyte.
const MIB: u64 = 1 << 20;

/// The `shared_buffers` in bytes to start a replaying server with, when
/// that is larger than what its configuration says: the size of the
/// cluster's relation data and an eighth more (pages added by the WAL),
/// at most a quarter of the memory available now (`MemAvailable`, and the
/// cgroup's limit less its use when there is one). `None` keeps the
/// configured value: it is as large already, its value could not be read,
/// or memory is short (the pool is never made smaller than configured).
///
/// `config_args` are the `-c` arguments the server is started with that
/// locate its configuration; `owner` is the uid and gid to read it as
/// (when this process is root).
pub(crate) async fn shared_buffers_for_replay(
    postgres: &Path,
    data_dir: &Path,
    config_args: &[OsString],
    owner: Option<(u32, u32)>,
) -> Option<u64> {
    let configured = configured_shared_buffers(postgres, data_dir, config_args, owner).await?;
    let dir = data_dir.to_owned();
    let data = tokio::task::spawn_blocking(move || relation_bytes(&dir))
        .await
        .ok()?;
    choose(data, available_memory()?, configured)
}

/// The pool for `data` bytes of relations with `available` bytes of
/// memory, when larger than `configured` (see
/// [`shared_buffers_for_replay`]); whole mebibytes.
fn choose(data: u64, available: u64, configured: u64) -> Option<u64> {
    let want = data.saturating_add(data / 8).min(available / 4) / MIB * MIB;
    (want > configured).then_some(want)
}

/// `postgres -C shared_buffers` in bytes.
async fn configured_shared_buffers(
    postgres: &Path,
    data_dir: &Path,
    config_args: &[OsString],
    owner: Option<(u32, u32)>,
) -> Option<u64> {
    let show = |name: &'static str| {
        let mut cmd = tokio::process::Command::new(postgres);
        cmd.arg("-D")
            .arg(data_dir)
            .args(config_args)
            .args(["-C", name])
            .stdin(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = owner {
            cmd.uid(uid).gid(gid);
        }
        async move {
            let out = cmd.output().await.ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        }
    };
    let block: u64 = show("block_size").await?.parse().ok()?;
    parse_setting(&show("shared_buffers").await?, block)
}

/// A memory setting as `postgres -C` prints it: a number of blocks, or a
/// number with a unit (`kB`, `MB`, `GB`, `TB`), in bytes.
fn parse_setting(text: &str, block: u64) -> Option<u64> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let scale = match unit.trim() {
        "" => block,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// Bytes of regular files under `base`, `global` and each tablespace of
/// `data_dir` (symbolic links in `pg_tblspc` followed).
fn relation_bytes(data_dir: &Path) -> u64 {
    fn walk(dir: &Path) -> u64 {
        let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
        entries
            .filter_map(|e| Some((std::fs::metadata(e.path()).ok()?, e.path())))
            .filter(|(meta, _)| meta.is_dir() || meta.is_file())
            .map(|(meta, path)| {
                if meta.is_dir() {
                    walk(&path)
                } else {
                    meta.len()
                }
            })
            .sum()
    }
    let subs = ["base", "global", "pg_tblspc"];
    subs.iter().map(|sub| walk(&data_dir.join(sub))).sum()
}

/// Memory available to a new process now: `MemAvailable`, and no more
/// than the cgroup (v2) limit less its current use.
fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let mut available = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())?
        .checked_mul(1024)?;
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    if let Some(path) = cgroup.lines().find_map(|l| l.strip_prefix("0::")) {
        let dir = Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
        let read = |name: &str| -> Option<u64> {
            std::fs::read_to_string(dir.join(name))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        if let (Some(max), Some(current)) = (read("memory.max"), read("memory.current")) {
            available = available.min(max.saturating_sub(current));
        }
    }
    Some(available)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_in_blocks_and_units() {
        assert_eq!(parse_setting("32768", 8192), Some(256 * MIB));
        assert_eq!(parse_setting("128MB", 8192), Some(128 * MIB));
        assert_eq!(parse_setting("2GB", 8192), Some(2048 * MIB));
        assert_eq!(parse_setting("512kB", 8192), Some(512 * 1024));
        assert_eq!(parse_setting("many", 8192), None);
        assert_eq!(parse_setting("12 parsecs", 8192), None);
    }

    #[test]
    fn the_pool_holds_the_cluster_within_a_quarter_of_memory() {
        let gib = 1 << 30;
        // 1.5 GiB of relations, 24 GiB free, 256 MiB configured.
        assert_eq!(choose(3 * gib / 2, 24 * gib, 256 * MIB), Some(1728 * MIB));
        // Memory is the limit: a quarter of 4 GiB.
        assert_eq!(choose(100 * gib, 4 * gib, 256 * MIB), Some(gib));
        // Already large enough: keep the setting.
        assert_eq!(choose(gib, 24 * gib, 8 * gib), None);
        assert_eq!(choose(50 * MIB, 24 * gib, 128 * MIB), None);
        assert_eq!(choose(50 * MIB, 24 * gib, 16 * MIB), Some(56 * MIB));
        // Short of memory: never below what is configured.
        assert_eq!(choose(100 * gib, 512 * MIB, 256 * MIB), None);
    }

    #[test]
    fn memory_is_read() {
        let m = available_memory().expect("MemAvailable");
        assert!(m > 16 * MIB, "{m}");
    }
}
