//! The tablespaces of a physical restore: where each goes
//! (`--tablespace-map OID=DIR`), the places checked before anything is
//! written, the links in `pg_tblspc`, and `tablespace_map` rewritten for
//! relocated ones.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use backup_core::target::RestoreOptions;
use backup_core::{Error, Result};
use serde::Serialize;

use super::super::meta::PhysicalMeta;
use super::dirs::{absolute, check_empty};

/// Where a tablespace went.
#[derive(Debug, Clone, Serialize)]
pub struct TablespacePlacement {
    /// Its OID.
    pub oid: u32,
    /// Where it was on the backed-up server.
    pub original: String,
    /// Where it was restored.
    pub location: String,
}

/// Parses `--tablespace-map OID=DIR` against the snapshot's tablespaces.
pub(super) fn tablespace_places(
    opts: &RestoreOptions,
    meta: &PhysicalMeta,
) -> Result<Vec<TablespacePlacement>> {
    let mut mapped: HashMap<u32, PathBuf> = HashMap::new();
    for m in &opts.tablespace_map {
        let (oid, dir) = m
            .split_once('=')
            .ok_or_else(|| Error::Config(format!("--tablespace-map `{m}`: use OID=DIRECTORY")))?;
        let oid: u32 = oid.trim().parse().map_err(|_| {
            Error::Config(format!(
                "--tablespace-map `{m}`: `{oid}` is not a tablespace OID"
            ))
        })?;
        if !meta.tablespaces.iter().any(|t| t.oid == oid) {
            let known: Vec<String> = meta
                .tablespaces
                .iter()
                .map(|t| format!("{} ({})", t.oid, t.location))
                .collect();
            return Err(Error::Config(format!(
                "--tablespace-map {oid}: the snapshot has no tablespace {oid}; it has {}",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            )));
        }
        if dir.is_empty() {
            return Err(Error::Config(format!(
                "--tablespace-map `{m}`: empty directory"
            )));
        }
        if mapped.insert(oid, absolute(Path::new(dir))?).is_some() {
            return Err(Error::Config(format!(
                "--tablespace-map names tablespace {oid} twice"
            )));
        }
    }
    Ok(meta
        .tablespaces
        .iter()
        .map(|t| TablespacePlacement {
            oid: t.oid,
            original: t.location.clone(),
            location: mapped
                .get(&t.oid)
                .map_or_else(|| t.location.clone(), |p| p.display().to_string()),
        })
        .collect())
}

/// Refuses tablespace places that overlap the data directory or each
/// other, and places that exist and are not empty directories.
pub(super) fn check_places(data_dir: &Path, places: &[TablespacePlacement]) -> Result<()> {
    let mut seen = HashSet::new();
    for p in places {
        let dest = PathBuf::from(&p.location);
        if dest.starts_with(data_dir) || data_dir.starts_with(&dest) {
            return Err(Error::Config(format!(
                "tablespace {} would be restored to {}, which overlaps the data directory {}; give it another place with --tablespace-map {}=DIRECTORY",
                p.oid,
                dest.display(),
                data_dir.display(),
                p.oid
            )));
        }
        if !seen.insert(dest.clone()) {
            return Err(Error::Config(format!(
                "two tablespaces would be restored to {}; give each its own place with --tablespace-map",
                dest.display()
            )));
        }
        check_empty(&dest, &format!("the place of tablespace {}", p.oid))?;
    }
    Ok(())
}

/// The links in `pg_tblspc` to the tablespaces' places (the server would
/// make them from `tablespace_map` at its first start; made now, the data
/// directory is complete for tools that read it before, such as
/// `pg_verifybackup`).
pub(super) fn link_tablespaces(
    data_dir: &Path,
    places: &[TablespacePlacement],
    owner: Option<(u32, u32)>,
) -> Result<()> {
    let dir = data_dir.join("pg_tblspc");
    if !places.is_empty() {
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    }
    for p in places {
        let link = dir.join(p.oid.to_string());
        std::os::unix::fs::symlink(&p.location, &link)
            .map_err(|e| Error::io(format!("linking {}", link.display()), e))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::lchown(&link, Some(uid), Some(gid))
                .map_err(|e| Error::io(format!("setting the owner of {}", link.display()), e))?;
        }
    }
    Ok(())
}

/// `tablespace_map` with relocated tablespaces' new places (`OID PATH`
/// lines).
pub(super) fn rewrite_tablespace_map(original: &[u8], places: &[TablespacePlacement]) -> Vec<u8> {
    let text = String::from_utf8_lossy(original);
    let mut out = String::new();
    for line in text.lines() {
        let oid = line.split(' ').next().unwrap_or_default();
        if let Some(p) = places.iter().find(|p| p.oid.to_string() == oid) {
            out.push_str(oid);
            out.push(' ');
            out.push_str(&p.location);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tablespace_maps_are_rewritten() {
        let places = vec![TablespacePlacement {
            oid: 16384,
            original: "/srv/ts".into(),
            location: "/new/ts".into(),
        }];
        assert_eq!(
            rewrite_tablespace_map(b"16384 /srv/ts\n16385 /other\n", &places),
            b"16384 /new/ts\n16385 /other\n"
        );
        assert_eq!(
            absolute(Path::new("/a/./b/../c")).unwrap(),
            PathBuf::from("/a/c")
        );
    }
}
