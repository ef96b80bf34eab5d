//! Scratch copies: where a drill restores, with what options, and how the
//! copy is removed again. Files and physical PostgreSQL copies are new
//! directories; a database copy is planned, checked and removed by its
//! kind's [`DrillSupport`].

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use backup_core::redact::redact_url;
use backup_core::snapshot::Snapshot;
use backup_core::target::{RestoreOptions, Target};
use backup_sources::drill::{
    escape, need_location, percent_decode, url_database, with_path, DataDirectory, DrillSupport,
    ScratchPlan, ThrowawayServer,
};
use backup_sources::{Kind, TargetSpec};

use super::journal::{process_start, Resource};
use crate::error::{Error, Result};

/// A scratch copy being made.
pub(crate) enum Scratch {
    /// Files, restored by `target` into the new directory `dir`.
    Files {
        dir: PathBuf,
        target: Box<dyn Target>,
    },
    /// A physical PostgreSQL snapshot, restored into the data directory
    /// `data` (`data` in the drill's new directory `dir`) and started as a
    /// server; checks connect as `user` with `password`, by default to
    /// `database`.
    Physical {
        dir: PathBuf,
        data: DataDirectory,
        user: String,
        password: Option<String>,
        database: String,
    },
    /// A database snapshot, restored by `target` into the scratch
    /// databases of `plan` (on `throwaway`, when the drill started a
    /// server), with the kind's `support`.
    Databases {
        support: Box<dyn DrillSupport>,
        plan: ScratchPlan,
        throwaway: Option<Box<ThrowawayServer>>,
        target: Box<dyn Target>,
    },
}

/// The kind a snapshot's manifest names.
pub(super) fn kind_named(name: &str) -> Option<Kind> {
    Kind::ALL.into_iter().find(|k| k.name() == name)
}

/// A kind's refusal of a scratch location is the request's fault: a
/// usage error with the kind's message.
fn usage(e: backup_core::Error) -> Error {
    match e {
        backup_core::Error::Config(m) => Error::usage(m),
        e => e.into(),
    }
}

/// The scratch directory's parent `target`, which must exist; a drill
/// without one needs `what`.
fn scratch_parent(target: Option<&str>, what: &str) -> Result<PathBuf> {
    let target = target.ok_or_else(|| usage(need_location(what)))?;
    let path = PathBuf::from(target.strip_prefix("file://").unwrap_or(target));
    if !path.is_dir() {
        return Err(Error::usage(format!(
            "the drill's scratch location {} is not a directory: create it (for physical PostgreSQL drills, owned by the server's user)",
            path.display()
        )));
    }
    Ok(path)
}

impl Scratch {
    /// Plans the scratch copy of `snapshot` at `target`; `source_url` gives
    /// physical drills the role their checks connect as (both with
    /// credentials); `canary`: the drill wrote a canary to the source,
    /// which a database copy restores too.
    pub(crate) async fn plan(
        snapshot: &Snapshot,
        target: Option<&str>,
        source_url: Option<&str>,
        name: &str,
        stamp: &str,
        canary: bool,
    ) -> Result<(Scratch, RestoreOptions)> {
        let kind = snapshot.source.kind.as_str();
        let physical = snapshot.metadata["mode"] == "physical";
        let dir_name = format!("backup-drill-{}-{stamp}", super::journal::slug(name));
        let unsupported = || {
            Error::usage(format!(
                "snapshots of {kind} sources cannot be drilled by this build"
            ))
        };
        let scratch = match (kind_named(kind), physical) {
            (Some(Kind::Files), false) => {
                let dir = scratch_parent(target, "a directory")?.join(dir_name);
                let target = TargetSpec::new(dir.to_string_lossy().into_owned())?.open()?;
                Scratch::Files { dir, target }
            }
            (Some(Kind::Postgres), true) => {
                let parent = scratch_parent(target, "a directory owned by the server's user")?;
                let dir = parent.join(dir_name);
                let (user, password) = match source_url.and_then(|u| url::Url::parse(u).ok()) {
                    Some(u) if !u.username().is_empty() => (
                        percent_decode(u.username()),
                        u.password().map(percent_decode),
                    ),
                    _ => ("postgres".to_owned(), None),
                };
                Scratch::Physical {
                    data: DataDirectory::new(dir.join("data"))?,
                    dir,
                    user,
                    password,
                    database: source_url
                        .and_then(url_database)
                        .unwrap_or_else(|| "postgres".to_owned()),
                }
            }
            (Some(Kind::Files), true) | (None, _) => return Err(unsupported()),
            (Some(kind), _) => {
                let support = backup_sources::drill::support(kind).map_err(|_| unsupported())?;
                // On the server `target`, or on a throwaway server started
                // now when the kind wants one there.
                let throwaway = support
                    .start_throwaway(target)
                    .await
                    .map_err(usage)?
                    .map(Box::new);
                let server = throwaway.as_ref().map_or(target, |t| Some(t.url.as_str()));
                let planned = support
                    .plan(snapshot, server, stamp, canary)
                    .map_err(usage)
                    .and_then(|(plan, opts)| {
                        let target = TargetSpec::new(plan.restore_url.clone())?.open()?;
                        Ok((target, plan, opts))
                    });
                let (target, plan, opts) = match planned {
                    Ok(p) => p,
                    Err(e) => {
                        if let Some(t) = throwaway {
                            t.stop().await;
                        }
                        return Err(e);
                    }
                };
                let scratch = Scratch::Databases {
                    support,
                    plan,
                    throwaway,
                    target,
                };
                return Ok((scratch, opts));
            }
        };
        Ok((scratch, RestoreOptions::default()))
    }

    /// What the journal must know before the restore writes anything.
    pub(crate) fn resources(&self) -> Vec<Resource> {
        match self {
            Scratch::Files { dir, .. } => vec![Resource::Directory { path: dir.clone() }],
            Scratch::Physical { dir, .. } => vec![
                Resource::Directory { path: dir.clone() },
                Resource::PostgresServer {
                    data_dir: dir.join("data"),
                },
            ],
            Scratch::Databases {
                throwaway: Some(t), ..
            } => vec![Resource::ThrowawayServer {
                pid: t.pid,
                start_ticks: process_start(t.pid).unwrap_or(0),
                dir: t.dir.clone(),
            }],
            Scratch::Databases { support, plan, .. } => vec![Resource::Databases {
                kind: support.kind().name().to_owned(),
                server: redact_url(&plan.server),
                names: plan.scratch_databases(),
            }],
        }
    }

    /// Creates what must exist before the restore: a physical copy's
    /// drill directory, owned (when running as root) like the scratch
    /// location, so that the server's user can run the data directory.
    pub(crate) fn create(&self) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let Scratch::Physical { dir, .. } = self else {
            return Ok(());
        };
        std::fs::create_dir(dir).map_err(|e| {
            backup_core::Error::io(
                format!("creating the scratch directory {}", dir.display()),
                e,
            )
        })?;
        let parent = dir
            .parent()
            .filter(|_| nix::unistd::Uid::effective().is_root());
        if let Some(m) = parent.and_then(|p| std::fs::metadata(p).ok()) {
            std::os::unix::fs::chown(dir, Some(m.uid()), Some(m.gid())).map_err(|e| {
                backup_core::Error::io(format!("giving {} to its parent's owner", dir.display()), e)
            })?;
        }
        Ok(())
    }

    /// The restore target.
    pub(crate) fn target(&self) -> &dyn Target {
        match self {
            Scratch::Files { target, .. } | Scratch::Databases { target, .. } => target.as_ref(),
            Scratch::Physical { data, .. } => data.target(),
        }
    }

    /// Where the copy is, for records and messages (no credentials).
    pub(crate) fn describe(&self) -> String {
        match self {
            Scratch::Files { dir, .. } => dir.display().to_string(),
            Scratch::Physical { dir, .. } => dir.join("data").display().to_string(),
            Scratch::Databases {
                plan, throwaway, ..
            } => match &plan.listing {
                None => redact_url(&plan.url),
                Some(listing) => format!(
                    "{}{} ({listing})",
                    redact_url(&plan.server),
                    throwaway
                        .as_ref()
                        .map(|t| format!(" (throwaway {})", t.program))
                        .unwrap_or_default(),
                ),
            },
        }
    }

    /// Checks what must hold before anything is written: the scratch
    /// directory's name is free, the scratch databases are
    /// ([`DrillSupport::occupied`]).
    pub(crate) async fn check_free(&self) -> Result<()> {
        let taken = match self {
            Scratch::Files { dir, .. } | Scratch::Physical { dir, .. } => dir.exists().then(|| {
                format!(
                    "{} exists already; a drill restores into a new directory",
                    dir.display()
                )
            }),
            Scratch::Databases { support, plan, .. } => {
                support
                    .occupied(&plan.server, &plan.scratch_databases())
                    .await?
            }
        };
        taken.map_or(Ok(()), |why| Err(Error::usage(why)))
    }

    /// The URL of the copy for checks and commands: with credentials and,
    /// for databases, the (first) scratch database.
    pub(crate) fn url(&self, port: Option<u16>) -> String {
        match self {
            Scratch::Files { dir, .. } => dir.display().to_string(),
            Scratch::Physical {
                user,
                password,
                database,
                ..
            } => physical_url(user, password.as_deref(), port, database),
            Scratch::Databases { plan, .. } => plan.url.clone(),
        }
    }

    /// Removes the copy (the data directory's server is stopped before).
    pub(crate) async fn remove(&mut self) -> Result<()> {
        match self {
            Scratch::Files { dir, target } => {
                let _ = target.discard().await;
                remove_dir(dir)
            }
            Scratch::Physical { dir, .. } => {
                backup_sources::drill::stop_leftover_server(&dir.join("data")).await?;
                remove_dir(dir)
            }
            Scratch::Databases {
                support,
                plan,
                throwaway,
                ..
            } => match throwaway.take() {
                Some(t) => {
                    t.stop().await;
                    Ok(())
                }
                None => Ok(support
                    .remove(&plan.server, &plan.scratch_databases())
                    .await?),
            },
        }
    }
}

/// `postgres://user:password@127.0.0.1:port/database` (`port` `None`:
/// 5432).
pub(crate) fn physical_url(
    user: &str,
    password: Option<&str>,
    port: Option<u16>,
    database: &str,
) -> String {
    let auth = match password {
        Some(p) => format!("{}:{}", escape(user), escape(p)),
        None => escape(user),
    };
    let port = port.unwrap_or(5432);
    format!("postgres://{auth}@127.0.0.1:{port}/{}", escape(database))
}

fn remove_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(backup_core::Error::io(format!("removing {}", dir.display()), e).into()),
    }
}

/// Removes what a killed drill left behind; `current` is this drill's
/// target URL (credentials included), used when it is the same server.
pub(crate) async fn remove_leftover(r: &Resource, current: Option<&str>) -> Result<()> {
    match &r.clone().upgraded() {
        Resource::Directory { path } => remove_dir(path),
        Resource::PostgresServer { data_dir } => {
            backup_sources::drill::stop_leftover_server(data_dir).await?;
            Ok(())
        }
        Resource::Databases {
            kind,
            server,
            names,
        } => {
            let kind = kind_named(kind)
                .ok_or_else(|| Error::usage(format!("unknown kind of source `{kind}`")))?;
            let support = backup_sources::drill::support(kind)?;
            let root = |url: &str| redact_url(&with_path(url, "/").unwrap_or_default());
            let server = current
                .filter(|c| root(c) == root(server))
                .unwrap_or(server);
            Ok(support.remove(server, names).await?)
        }
        Resource::ThrowawayServer {
            pid,
            start_ticks,
            dir,
        } => {
            if super::journal::alive(*pid, *start_ticks) {
                let target = nix::unistd::Pid::from_raw(*pid as i32);
                let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL);
                let deadline = Instant::now() + Duration::from_secs(10);
                while super::journal::alive(*pid, *start_ticks) && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            remove_dir(dir)
        }
        legacy => Err(Error::usage(format!("cannot remove {}", legacy.describe()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn physical_urls() {
        assert_eq!(
            physical_url("postgres", Some("p w"), Some(5555), "postgres"),
            "postgres://postgres:p%20w@127.0.0.1:5555/postgres"
        );
    }
}
