//! The kinds of files in a repository and where each lives.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The kinds of files in a repository; each maps to a fixed prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// The single `config` file.
    Config,
    /// Key files under `keys/`.
    Key,
    /// Snapshot manifests under `snapshots/`.
    Snapshot,
    /// Index files under `index/`.
    Index,
    /// Pack files under `data/XX/`.
    Pack,
    /// Lock files under `locks/`.
    Lock,
    /// Audit records under `audit/`.
    Audit,
    /// Capture records (WAL, oplog) under `captures/`.
    Capture,
    /// Restore drill records under `drills/`.
    Drill,
}

impl FileKind {
    /// Every kind, in a stable order.
    pub const ALL: [FileKind; 9] = [
        FileKind::Config,
        FileKind::Key,
        FileKind::Snapshot,
        FileKind::Index,
        FileKind::Pack,
        FileKind::Lock,
        FileKind::Audit,
        FileKind::Capture,
        FileKind::Drill,
    ];

    /// The directory of this kind, relative to the repository root
    /// (`config` for the config file itself).
    pub fn prefix(self) -> &'static str {
        match self {
            FileKind::Config => "config",
            FileKind::Key => "keys",
            FileKind::Snapshot => "snapshots",
            FileKind::Index => "index",
            FileKind::Pack => "data",
            FileKind::Lock => "locks",
            FileKind::Audit => "audit",
            FileKind::Capture => "captures",
            FileKind::Drill => "drills",
        }
    }

    /// The path of the file `name` of this kind, relative to the repository
    /// root. Packs are spread over 256 sub-directories named by the first two
    /// hex digits of their name; the config file is always `config`.
    pub fn path(self, name: &str) -> String {
        match self {
            FileKind::Config => "config".to_owned(),
            FileKind::Pack => {
                let sub = name.get(..2).unwrap_or("00");
                format!("data/{sub}/{name}")
            }
            _ => format!("{}/{name}", self.prefix()),
        }
    }

    /// Recovers the file name from a path produced by [`FileKind::path`];
    /// `None` when the path does not belong to this kind.
    pub fn name_from_path(self, path: &str) -> Option<String> {
        let path = path.trim_start_matches('/');
        match self {
            FileKind::Config => (path == "config").then(|| "config".to_owned()),
            FileKind::Pack => {
                let rest = path.strip_prefix("data/")?;
                let (sub, name) = rest.split_once('/')?;
                (sub.len() == 2 && !name.is_empty() && !name.contains('/') && name.starts_with(sub))
                    .then(|| name.to_owned())
            }
            _ => {
                let rest = path.strip_prefix(self.prefix())?.strip_prefix('/')?;
                (!rest.is_empty() && !rest.contains('/')).then(|| rest.to_owned())
            }
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Config => "config",
            FileKind::Key => "key",
            FileKind::Snapshot => "snapshot",
            FileKind::Index => "index",
            FileKind::Pack => "pack",
            FileKind::Lock => "lock",
            FileKind::Audit => "audit record",
            FileKind::Capture => "capture record",
            FileKind::Drill => "drill record",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip() {
        let id = "ab".repeat(32);
        for kind in FileKind::ALL {
            let path = kind.path(&id);
            let name = kind.name_from_path(&path).unwrap();
            if kind == FileKind::Config {
                assert_eq!(name, "config");
            } else {
                assert_eq!(name, id);
            }
        }
        assert_eq!(FileKind::Pack.path(&id), format!("data/ab/{id}"));
        assert_eq!(FileKind::Pack.name_from_path("data/ab/cd00"), None);
        assert_eq!(FileKind::Key.name_from_path("keys/x/y"), None);
    }
}
