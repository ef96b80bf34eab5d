//! What a physical restore checks before it writes anything, beyond the
//! snapshot and the destinations: that a server can be started on the
//! result (`--start`) and that the restored server's `restore_command`
//! works when the server runs it.
//!
//! A failure here leaves everything as it was. Found late, the same
//! problems cost a whole restore (a data directory written, then a server
//! that cannot start or cannot fetch WAL) and left it behind.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use backup_core::repo::Repository;
use backup_core::{Error, Result};

/// The user a restored server will run as, for messages.
fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(
            || format!("uid {uid}"),
            |u| format!("`{}` (uid {uid})", u.name),
        )
}

/// The nearest directory at or above `dir` that exists.
fn existing_ancestor(dir: &Path) -> PathBuf {
    let mut p = dir.to_path_buf();
    while !p.is_dir() {
        if !p.pop() {
            return PathBuf::from("/");
        }
    }
    p
}

/// `--start PORT` can run a server on `data_dir`: it would not belong to
/// root (PostgreSQL refuses to run as root), and nothing listens on
/// 127.0.0.1:`port`.
///
/// # Errors
///
/// [`Error::Config`] saying what to change; nothing was written.
pub(crate) fn check_start(data_dir: &Path, owner: Option<(u32, u32)>, port: u16) -> Result<()> {
    if owner.is_some_and(|(uid, _)| uid == 0) {
        return Err(Error::Config(format!(
            "--start: {} would belong to root, and PostgreSQL does not run as root: create it for the server's user first (for example `install -d -o postgres -m 700 {}`); nothing was written",
            data_dir.display(),
            data_dir.display()
        )));
    }
    if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", port)) {
        return Err(Error::Config(format!(
            "--start {port}: 127.0.0.1:{port} cannot be used ({e}); choose a free port; nothing was written"
        )));
    }
    Ok(())
}

/// Runs the restored server's `restore_command` once, as the user the
/// server will run as (`owner`, when this process is root), from the
/// directory above the data directory, for a timeline history file no
/// repository holds: it must run (`backup` executable by that user),
/// reach and open the repository with a password-less key, and answer
/// "not there". `command` builds the `restore_command` for a key file.
///
/// The server inherits this process's environment only when this process
/// starts it (`started_here`). Otherwise, when the command works only
/// with this environment's storage settings (`AWS_*`, `GOOGLE_*`), a
/// warning names them: the server needs them in its own environment, or
/// an instance role, or recovery stops where the base backup ends.
///
/// # Errors
///
/// [`Error::Config`] with what the command printed and what to change;
/// nothing was written.
pub(crate) async fn check_restore_command(
    repo: &Repository,
    data_dir: &Path,
    owner: Option<(u32, u32)>,
    started_here: bool,
    command: impl Fn(Option<&Path>) -> String,
) -> Result<()> {
    let work = tempfile::Builder::new()
        .prefix("backup-restore-check-")
        .tempdir()
        .map_err(|e| Error::io("creating a temporary directory", e))?;
    let own = |p: &Path| -> Result<()> {
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(p, Some(uid), Some(gid))
                .map_err(|e| Error::io(format!("setting the owner of {}", p.display()), e))?;
        }
        Ok(())
    };
    own(work.path())?;
    let key = if repo.key().encrypts() {
        let path = work.path().join("check.backup-key");
        super::pitr::write_plain_key(repo, &path, owner)?;
        Some(path)
    } else {
        None
    };
    // A history file of a timeline no cluster reaches.
    let probe = command(key.as_deref())
        .replace("%f", "FFFFFFFF.history")
        .replace("%p", &work.path().join("probe").display().to_string());
    let from = existing_ancestor(data_dir.parent().unwrap_or(Path::new("/")));
    let run = |without: &[String]| {
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(format!(
                "cd {} && {probe}",
                super::pitr::shell_quote(&from.display().to_string())
            ))
            .current_dir(work.path())
            .env("HOME", work.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for name in without {
            cmd.env_remove(name);
        }
        if let Some((uid, gid)) = owner {
            cmd.uid(uid).gid(gid);
        }
        async move {
            let out = cmd
                .output()
                .await
                .map_err(|e| Error::io("running the restore_command check", e))?;
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            // `wal fetch` answers a file it does not have with exit status
            // 1 and, with --quiet, nothing on standard error.
            let works = out.status.success() || (out.status.code() == Some(1) && stderr.is_empty());
            Ok::<_, Error>((works, out.status, stderr))
        }
    };
    let (works, status, stderr) = run(&[]).await?;
    if works {
        let settings: Vec<String> = std::env::vars_os()
            .filter_map(|(k, _)| k.into_string().ok())
            .filter(|k| k.starts_with("AWS_") || k.starts_with("GOOGLE_"))
            .collect();
        if !started_here && !settings.is_empty() && !run(&settings).await?.0 {
            tracing::warn!(
                settings = %settings.join(", "),
                "The restored server's restore_command reaches the repository only with this environment's storage settings: give the server the same settings (its service's environment) or an instance role before you start it, or recovery stops where the base backup ends."
            );
        }
        return Ok(());
    }
    let who = match owner {
        Some((uid, _)) => format!("the server's user {}", user_name(uid)),
        None => "this user".to_owned(),
    };
    Err(Error::Config(format!(
        "the restored server's restore_command would fail: run as {who} from {}, `{}` exited with {}{}. Install `backup` where that user can run it (for example /usr/local/bin, and run that copy), and make the repository and the directory above the data directory readable by it; nothing was written",
        from.display(),
        probe,
        status,
        if stderr.is_empty() {
            String::new()
        } else {
            format!(": {stderr}")
        }
    )))
}
