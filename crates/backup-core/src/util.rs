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
