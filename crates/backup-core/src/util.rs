//! Small helpers shared across the crate.

/// The host name, or `unknown`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The name of the user running the process (from the password database,
/// then the environment), or the numeric uid.
pub fn username() -> String {
    let uid = nix::unistd::Uid::effective();
    if let Ok(Some(user)) = nix::unistd::User::from_uid(uid) {
        return user.name;
    }
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| uid.to_string())
}

/// Formats a byte count with binary units, e.g. `1.5 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Parses a size such as `1MiB`, `16M`, `512k`, `64KB` or `1048576`
/// (binary units whatever the spelling: `k`, `kb` and `kib` all mean
/// 1024).
///
/// # Errors
///
/// A message naming the text, for a number or unit that does not parse
/// or a size that overflows.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a size"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("`{s}`: unknown unit (use KiB, MiB or GiB)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// Fills `buf` with random bytes from the operating system.
///
/// # Panics
///
/// Panics when the operating system has no random source, since nothing
/// can be encrypted safely without one.
pub fn fill_random(buf: &mut [u8]) {
    #[allow(clippy::expect_used)]
    getrandom::getrandom(buf).expect("the operating system random number generator failed");
}

/// The directory of local caches: `BACKUP_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/backup`, else `~/.cache/backup`.
pub(crate) fn cache_root() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("BACKUP_CACHE_DIR").filter(|d| !d.is_empty()) {
        return std::path::PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return std::path::PathBuf::from(dir).join("backup");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    std::path::PathBuf::from(home).join(".cache").join("backup")
}

/// Runs `f` on a blocking thread of the runtime; a panic or cancellation
/// of that thread is an [`Error::Generic`](crate::Error::Generic) of
/// `backend` (what the work was: "decoder", "capture").
pub(crate) async fn blocking<T: Send + 'static>(
    backend: &'static str,
    f: impl FnOnce() -> crate::Result<T> + Send + 'static,
) -> crate::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| crate::Error::Generic {
            backend,
            source: Box::new(e),
        })?
}
