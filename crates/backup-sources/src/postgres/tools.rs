//! Finding and running the PostgreSQL client tools (`pg_dump`,
//! `pg_dumpall`), and collecting their exit status for `finish()`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};

use backup_core::source::AsyncReader;
use backup_core::{Error, Result};
use tokio::io::AsyncReadExt;

/// A found tool and its major version.
#[derive(Debug, Clone)]
pub(crate) struct Tool {
    pub(crate) path: PathBuf,
    pub(crate) version: String,
}

/// Server version number (`server_version_num`) to its major version.
pub(crate) fn major_of(version_num: u32) -> u32 {
    // 150018 → 15; before 10 (90624) the first part (9).
    version_num / 10_000
}

/// Human form of a major version (`15`; before 10, `9.x`).
pub(crate) fn major_name(major: u32) -> String {
    if major < 10 {
        format!("{major}.x")
    } else {
        major.to_string()
    }
}

/// Parses `pg_dump (PostgreSQL) 15.18 (Debian ...)` into (version, major).
pub(crate) fn parse_version_output(out: &str) -> Option<(String, u32)> {
    let v = out
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    let mut parts = v.split('.');
    let lead = |s: &str| -> Option<u32> {
        let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        s[..end].parse().ok()
    };
    let first = lead(parts.next()?)?;
    // Before 10 the major version had two parts (9.6); comparisons with
    // servers (10 and newer) only need the first.
    let major = first;
    Some((v.to_owned(), major))
}

/// Finds `name` (`pg_dump`, `pg_dumpall`) not older than the server.
///
/// `BACKUP_PG_BINDIR`, when set, is the only place looked at. Otherwise
/// Debian's `/usr/lib/postgresql/<major>/bin` directories (newest first)
/// and then `PATH` are tried.
pub(crate) async fn find_tool(name: &str, server_major: u32) -> Result<Tool> {
    let package = format!(
        "install the PostgreSQL {} client tools (Debian/Ubuntu: apt-get install postgresql-client-{}; RHEL: postgresql{}), or point BACKUP_PG_BINDIR at their bin directory",
        major_name(server_major),
        major_name(server_major),
        major_name(server_major)
    );
    let candidates = candidates(name);
    let mut older: Option<Tool> = None;
    for c in candidates {
        let Some((version, major)) = probe(&c).await else {
            continue;
        };
        let tool = Tool { path: c, version };
        if major >= server_major {
            return Ok(tool);
        }
        if older.is_none() {
            older = Some(tool);
        }
    }
    match older {
        Some(t) => Err(Error::source_failed(format!(
            "{name} {} ({}) is older than the server (PostgreSQL {}) and cannot dump it; {package}",
            t.version,
            t.path.display(),
            major_name(server_major)
        ))),
        None => Err(Error::source_failed(format!(
            "{name} was not found; {package}"
        ))),
    }
}

/// Where to look for `name`: `BACKUP_PG_BINDIR` alone when set, otherwise
/// Debian's `/usr/lib/postgresql/<major>/bin` (newest first), then `PATH`.
fn candidates(name: &str) -> Vec<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("BACKUP_PG_BINDIR").filter(|d| !d.is_empty()) {
        candidates.push(Path::new(&dir).join(name));
        return candidates;
    }
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let v: u32 = e.file_name().to_str()?.parse().ok()?;
                    Some((v, e.path().join("bin").join(name)))
                })
                .collect()
        })
        .unwrap_or_default();
    versioned.sort_by_key(|v| std::cmp::Reverse(v.0));
    candidates.extend(versioned.into_iter().map(|(_, p)| p));
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join(name)));
    }
    candidates
}

/// The version of a program (`--version`), when it runs.
async fn probe(path: &Path) -> Option<(String, u32)> {
    if !path.is_file() {
        return None;
    }
    let out = tokio::process::Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
        .ok()?;
    parse_version_output(&String::from_utf8_lossy(&out.stdout))
}

/// Finds the server program `postgres` of exactly `major` (a data
/// directory only starts with its own major version).
///
/// # Errors
///
/// A message saying which package provides it, and which versions were
/// found instead.
pub(crate) async fn find_server(major: u32) -> std::result::Result<Tool, String> {
    let mut others = Vec::new();
    for c in candidates("postgres") {
        let Some((version, m)) = probe(&c).await else {
            continue;
        };
        if m == major {
            return Ok(Tool { path: c, version });
        }
        others.push(format!("{version} at {}", c.display()));
    }
    let name = major_name(major);
    let found = if others.is_empty() {
        "none is installed".to_owned()
    } else {
        format!("found only {}", others.join(", "))
    };
    Err(format!(
        "the PostgreSQL {name} server is needed to start this data directory and {found}: install it (Debian/Ubuntu: apt-get install postgresql-{name}; RHEL: postgresql{name}-server), or point BACKUP_PG_BINDIR at its bin directory"
    ))
}

/// A tool process whose exit status `finish()` checks.
struct Running {
    label: String,
    child: tokio::process::Child,
    stderr: tokio::task::JoinHandle<String>,
}

/// The tool processes started by a backup.
#[derive(Default, Clone)]
pub(crate) struct Processes {
    running: Arc<Mutex<Vec<Running>>>,
}

impl std::fmt::Debug for Processes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Processes")
    }
}

/// Most stderr bytes kept per process.
const STDERR_LIMIT: usize = 64 * 1024;

impl Processes {
    /// Starts `tool args` with `env`, returns its standard output; the exit
    /// status is checked by [`Processes::finish`].
    pub(crate) fn spawn(
        &self,
        label: &str,
        tool: &Path,
        args: &[String],
        env: &[(String, String)],
    ) -> Result<AsyncReader> {
        let mut cmd = tokio::process::Command::new(tool);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::source_caused(format!("cannot start {}", tool.display()), e))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::source_failed(format!("{label}: no standard output")))?;
        let mut stderr = child
            .stderr
            .take()
            .ok_or_else(|| Error::source_failed(format!("{label}: no standard error")))?;
        let stderr = tokio::spawn(async move {
            let mut kept = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match stderr.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if kept.len() < STDERR_LIMIT {
                            kept.extend_from_slice(&buf[..n.min(STDERR_LIMIT - kept.len())]);
                        }
                    }
                }
            }
            String::from_utf8_lossy(&kept).trim().to_owned()
        });
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Running {
                label: label.to_owned(),
                child,
                stderr,
            });
        Ok(Box::new(stdout))
    }

    /// Waits for every process; the first failure is returned.
    pub(crate) async fn finish(&self) -> Result<()> {
        let running =
            std::mem::take(&mut *self.running.lock().unwrap_or_else(PoisonError::into_inner));
        let mut first_err = None;
        for mut r in running {
            let status = r.child.wait().await;
            let stderr = (&mut r.stderr).await.unwrap_or_default();
            let failed = match status {
                Ok(s) if s.success() => None,
                Ok(s) => Some(format!("{s}")),
                Err(e) => Some(format!("could not be waited for: {e}")),
            };
            if let Some(why) = failed {
                if first_err.is_none() {
                    let detail = if stderr.is_empty() {
                        String::new()
                    } else {
                        format!(": {stderr}")
                    };
                    first_err = Some(Error::source_failed(format!(
                        "{} failed ({why}){detail}; the snapshot was not saved",
                        r.label
                    )));
                }
            } else if !stderr.is_empty() {
                tracing::warn!(tool = %r.label, "{stderr}");
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            parse_version_output("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"),
            Some(("15.18".to_owned(), 15))
        );
        assert_eq!(
            parse_version_output("pg_dump (PostgreSQL) 9.6.24"),
            Some(("9.6.24".to_owned(), 9))
        );
        assert_eq!(
            parse_version_output("pg_dump (PostgreSQL) 17beta1"),
            Some(("17beta1".to_owned(), 17))
        );
        assert_eq!(major_of(150_018), 15);
        assert_eq!(major_of(90_624), 9);
        assert_eq!(major_name(9), "9.x");
    }
}
