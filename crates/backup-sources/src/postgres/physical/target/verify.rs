//! Restored files compared with the snapshot's backup manifest (size and
//! CRC-32C): each as the restore writes it, and all of them re-read after
//! a restore.

use std::path::Path;

use backup_core::{Error, FileKind, Result};

use super::super::manifest::{crc32c_bytes, crc32c_of, Manifest, ManifestFile};
use super::tablespaces::TablespacePlacement;

/// Compares a restored file's size and CRC-32C with its manifest entry.
///
/// # Errors
///
/// [`Error::Corrupt`] naming the file when they differ.
pub(crate) fn check_restored_file(
    key: &[u8],
    entry: &ManifestFile,
    size: u64,
    crc: u32,
) -> Result<()> {
    let mismatch = |what: String| {
        Error::corrupt(
            FileKind::Snapshot,
            String::from_utf8_lossy(key),
            format!("the restored file does not match the backup manifest: {what}"),
        )
    };
    if entry.size != size {
        return Err(mismatch(format!(
            "{size} bytes restored, {} listed",
            entry.size
        )));
    }
    if let Some((alg, sum)) = &entry.checksum {
        let got = crc32c_bytes(crc);
        if alg == "CRC32C" && *sum != got {
            return Err(mismatch(format!(
                "CRC-32C {} restored, {} listed",
                hex::encode(got),
                hex::encode(sum)
            )));
        }
    }
    Ok(())
}

/// Re-reads every listed file of a restored data directory and compares
/// size and CRC-32C with the manifest.
pub(super) fn compare_files(
    data_dir: &Path,
    places: &[TablespacePlacement],
    manifest: &Manifest,
) -> Result<Vec<String>> {
    use std::os::unix::ffi::OsStrExt;
    let mut diffs = Vec::new();
    for (path, entry) in &manifest.files {
        // Tablespace files are where the restore put them (the links in
        // pg_tblspc appear at the first start).
        let p = places
            .iter()
            .find_map(|t| {
                let prefix = format!("pg_tblspc/{}/", t.oid);
                path.strip_prefix(prefix.as_bytes())
                    .map(|rest| Path::new(&t.location).join(std::ffi::OsStr::from_bytes(rest)))
            })
            .unwrap_or_else(|| data_dir.join(std::ffi::OsStr::from_bytes(path)));
        let shown = String::from_utf8_lossy(path);
        let f = match std::fs::File::open(&p) {
            Ok(f) => f,
            Err(e) => {
                diffs.push(format!("{shown}: {e}"));
                continue;
            }
        };
        let (size, crc) =
            crc32c_of(f, u64::MAX).map_err(|e| Error::io(format!("reading {}", p.display()), e))?;
        if size != entry.size {
            diffs.push(format!(
                "{shown}: {size} bytes, the manifest lists {}",
                entry.size
            ));
        } else if let Some((alg, sum)) = &entry.checksum {
            if alg == "CRC32C" && *sum != crc32c_bytes(crc) {
                diffs.push(format!("{shown}: its CRC-32C differs from the manifest's"));
            }
        }
    }
    diffs.sort();
    Ok(diffs)
}
