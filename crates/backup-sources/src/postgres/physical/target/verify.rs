//! Restored files compared with the snapshot's backup manifest: re-read
//! after a restore (size and CRC-32C).

use std::path::Path;

use backup_core::{Error, Result};

use super::super::manifest::{crc32c_bytes, crc32c_of, Manifest};
use super::tablespaces::TablespacePlacement;

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
