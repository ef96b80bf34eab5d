//! The drill journal: what a running drill has created, written before it
//! creates it, so that the next drill of the same job finds and removes
//! what a killed one left behind.
//!
//! One file per job, `<state dir>/drills/<job>.json`, holding the drill's
//! process (id and start time, which tell a live drill from a dead one)
//! and its resources. A drill claims the file at its start: absent, it is
//! created; held by a live process, the drill is refused (two drills of
//! one job at once would share nothing but the name); held by a dead one,
//! its resources are the leftovers to remove.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Something a drill created that must go when it ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Resource {
    /// A directory the drill made (files, a data directory).
    Directory { path: PathBuf },
    /// A PostgreSQL server started on a restored data directory (its
    /// `postmaster.pid` names the process).
    PostgresServer { data_dir: PathBuf },
    /// Scratch databases (Redis: numbers) of a `kind` on a `server`
    /// (credentials removed), removed through the kind's
    /// [`backup_sources::drill::DrillSupport`].
    Databases {
        kind: String,
        server: String,
        names: Vec<String>,
    },
    /// A throwaway server process the drill started, and its working
    /// directory; its start time in clock ticks since boot tells a reused
    /// process id apart.
    #[serde(alias = "redis_server")]
    ThrowawayServer {
        pid: u32,
        start_ticks: u64,
        dir: PathBuf,
    },
    /// A PostgreSQL database, as earlier versions wrote it (read as
    /// [`Resource::Databases`], like the two below).
    PostgresDatabase { server: String, name: String },
    /// MongoDB databases, as earlier versions wrote them.
    MongoDatabases { server: String, names: Vec<String> },
    /// Redis database numbers, as earlier versions wrote them.
    RedisDatabases { server: String, dbs: Vec<u32> },
}

impl Resource {
    /// For people: what it is.
    pub(crate) fn describe(&self) -> String {
        match self {
            Resource::Directory { path } => format!("directory {}", path.display()),
            Resource::PostgresServer { data_dir } => {
                format!("PostgreSQL server on {}", data_dir.display())
            }
            Resource::Databases {
                kind,
                server,
                names,
            } => format!(
                "{kind} database{} {} on {server}",
                if names.len() == 1 { "" } else { "s" },
                names.join(", ")
            ),
            Resource::ThrowawayServer { pid, dir, .. } => {
                format!("throwaway server (pid {pid}) in {}", dir.display())
            }
            legacy => legacy.clone().upgraded().describe(),
        }
    }

    /// The resource in this version's terms (an earlier version's
    /// databases as [`Resource::Databases`]).
    pub(crate) fn upgraded(self) -> Resource {
        let (kind, server, names) = match self {
            Resource::PostgresDatabase { server, name } => ("postgres", server, vec![name]),
            Resource::MongoDatabases { server, names } => ("mongodb", server, names),
            Resource::RedisDatabases { server, dbs } => {
                ("redis", server, dbs.iter().map(u32::to_string).collect())
            }
            other => return other,
        };
        let kind = kind.to_owned();
        Resource::Databases {
            kind,
            server,
            names,
        }
    }
}

/// The journal file's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    pid: u32,
    start_ticks: u64,
    host: String,
    started: DateTime<Utc>,
    resources: Vec<Resource>,
}

/// A claimed journal: this process's drill of one job.
#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    entry: Entry,
}

/// The state (field 3 of `/proc/PID/stat`) of process `pid` and its start
/// time in clock ticks since boot (field 22), if there is such a process.
fn stat(pid: u32) -> Option<(String, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.to_owned();
    Some((state, fields.nth(18)?.parse().ok()?))
}

/// The start time of process `pid` in clock ticks since boot, if there is one.
pub(crate) fn process_start(pid: u32) -> Option<u64> {
    stat(pid).map(|(_, ticks)| ticks)
}

/// Whether the process `pid` that started at `start_ticks` still runs
/// (a zombie does not).
pub(crate) fn alive(pid: u32, start_ticks: u64) -> bool {
    stat(pid).is_some_and(|(state, ticks)| state != "Z" && state != "X" && ticks == start_ticks)
}

/// A file-name-safe form of a job name.
pub(crate) fn slug(name: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let clean = name.replace(|c: char| !safe(c), "_");
    if clean == name && !clean.is_empty() {
        clean
    } else {
        let digest = backup_core::Id::hash(name.as_bytes()).to_hex();
        format!("{clean}-{}", &digest[..8])
    }
}

impl Journal {
    /// Claims the journal of `name` in `dir`; returns it and the
    /// resources a dead drill left behind, newest first (the order to
    /// remove them in). Errors: a live drill of the same job; the
    /// directory cannot be written.
    pub(crate) fn claim(dir: &Path, name: &str) -> Result<(Journal, Vec<Resource>)> {
        let dir = dir.join("drills");
        std::fs::create_dir_all(&dir).map_err(|e| {
            backup_core::Error::io(
                format!("creating the drill journal directory {}", dir.display()),
                e,
            )
        })?;
        let path = dir.join(format!("{}.json", slug(name)));
        let pid = std::process::id();
        let host = backup_core::util::hostname();
        let old = std::fs::read_to_string(&path).ok();
        let leftovers: Vec<Resource> = match old.as_deref().map(serde_json::from_str::<Entry>) {
            None => Vec::new(),
            // This process's own entry is a leftover too: the daemon
            // runs one drill of a job at a time.
            Some(Ok(old))
                if old.host == host && old.pid != pid && alive(old.pid, old.start_ticks) =>
            {
                return Err(Error::usage(format!(
                    "a drill of {name} is running already (process {} since {}); wait for it to end",
                    old.pid,
                    old.started.to_rfc3339()
                )));
            }
            // Newest first: a server goes before its directory.
            Some(Ok(old)) => old
                .resources
                .into_iter()
                .rev()
                .map(Resource::upgraded)
                .collect(),
            Some(Err(e)) => {
                tracing::warn!(path = %path.display(), error = %e, "Ignoring an unreadable drill journal.");
                Vec::new()
            }
        };
        let entry = Entry {
            pid,
            start_ticks: process_start(pid).unwrap_or(0),
            host,
            started: Utc::now(),
            // The leftovers stay listed until they are removed.
            resources: leftovers.iter().rev().cloned().collect(),
        };
        let journal = Journal { path, entry };
        journal.write()?;
        Ok((journal, leftovers))
    }

    fn write(&self) -> Result<()> {
        let text = serde_json::to_vec_pretty(&self.entry)
            .map_err(|e| backup_core::Error::Config(format!("encoding the drill journal: {e}")))?;
        let tmp = self
            .path
            .with_extension(format!("json.tmp-{}", self.entry.pid));
        let io = |e| {
            backup_core::Error::io(
                format!("writing the drill journal {}", self.path.display()),
                e,
            )
        };
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        Ok(())
    }

    /// Notes a resource before the drill creates it; an error when the
    /// journal cannot be written (the drill must not create what a later
    /// one could not find).
    pub(crate) fn add(&mut self, r: Resource) -> Result<()> {
        self.entry.resources.push(r);
        self.write()
    }

    /// Forgets a resource once it is gone (or kept on purpose); an error
    /// when the journal cannot be written.
    pub(crate) fn remove(&mut self, r: &Resource) -> Result<()> {
        self.entry.resources.retain(|x| x != r);
        self.write()
    }

    /// The resources noted and not yet removed, newest first.
    pub(crate) fn resources(&self) -> Vec<Resource> {
        self.entry.resources.iter().rev().cloned().collect()
    }

    /// Ends the claim: the journal file is removed.
    pub(crate) fn release(self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "Could not remove the drill journal.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_refuse_live_drills_and_return_dead_ones_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, left) = Journal::claim(dir.path(), "db/main").unwrap();
        assert!(left.is_empty());
        let r = Resource::Directory {
            path: "/scratch/x".into(),
        };
        j.add(r.clone()).unwrap();
        // A live process (init, here) holds it: a claim is refused.
        let path = dir
            .path()
            .join("drills")
            .join(format!("{}.json", slug("db/main")));
        let mut entry: Entry =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        entry.pid = 1;
        entry.start_ticks = process_start(1).unwrap();
        std::fs::write(&path, serde_json::to_vec(&entry).unwrap()).unwrap();
        let e = Journal::claim(dir.path(), "db/main")
            .unwrap_err()
            .to_string();
        assert!(e.contains("running already"), "{e}");
        // A journal of a dead process yields its resources.
        entry.pid = u32::MAX;
        std::fs::write(&path, serde_json::to_vec(&entry).unwrap()).unwrap();
        let (j2, left) = Journal::claim(dir.path(), "db/main").unwrap();
        assert_eq!(left, vec![r.clone()]);
        // Until removed, the leftovers stay in the new journal.
        assert_eq!(j2.resources(), vec![r]);
        j2.release();
        assert!(!path.exists());
        assert_eq!(slug("ok-name_1"), "ok-name_1");
        assert!(slug("a b").starts_with("a_b-"));
    }

    #[test]
    fn earlier_versions_resources_are_read_as_databases() {
        let old: Vec<Resource> = serde_json::from_str(
            r#"[{"type":"postgres_database","server":"postgres://h/","name":"a_drill_1"},
                {"type":"redis_databases","server":"redis://h","dbs":[3]},
                {"type":"redis_server","pid":1,"start_ticks":2,"dir":"/tmp/x"}]"#,
        )
        .unwrap();
        let new: Vec<Resource> = old.into_iter().map(Resource::upgraded).collect();
        assert_eq!(
            new[0],
            Resource::Databases {
                kind: "postgres".to_owned(),
                server: "postgres://h/".to_owned(),
                names: vec!["a_drill_1".to_owned()],
            }
        );
        assert_eq!(new[1].describe(), "redis database 3 on redis://h");
        assert!(matches!(new[2], Resource::ThrowawayServer { pid: 1, .. }));
    }

    #[test]
    fn process_start_of_this_process() {
        let pid = std::process::id();
        let t = process_start(pid).unwrap();
        assert!(alive(pid, t));
        assert!(!alive(pid, t + 1));
    }
}
