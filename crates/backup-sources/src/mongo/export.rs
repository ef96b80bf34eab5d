//! `backup export --format mongodump`: a snapshot written as a `mongodump`
//! directory (`<db>/<coll>.bson`, `<db>/<coll>.metadata.json`,
//! `oplog.bson` when the oplog was captured, and `admin/system.users.bson`
//! and `admin/system.roles.bson` when users were backed up) for
//! `mongorestore`.

use std::fmt::Write as _;
use std::path::Path;

use backup_core::reader::SnapshotReader;
use backup_core::{Error, Result};
use futures::StreamExt;
use mongodb::bson::{Bson, Document};
use tokio::io::AsyncWriteExt;

use super::target::{load, Loaded, Planned};
use crate::export::{ExportDetails, ExportReport, MongodumpExport};

/// Writes `value` as canonical extended JSON, keeping the field order of
/// documents (index keys are ordered).
pub(crate) fn canonical_json(value: &Bson, out: &mut String) {
    match value {
        Bson::Document(d) => document_json(d, out),
        Bson::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.clone().into_canonical_extjson().to_string()),
    }
}

fn document_json(d: &Document, out: &mut String) {
    out.push('{');
    for (i, (k, v)) in d.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::Value::String(k.clone()).to_string());
        out.push(':');
        canonical_json(v, out);
    }
    out.push('}');
}

/// The `.metadata.json` of one collection or view, as `mongodump` writes it.
pub(crate) fn metadata_json(p: &Planned) -> String {
    let mut d = Document::new();
    d.insert("options", Bson::Document(p.options()));
    let indexes: Vec<Bson> = p
        .indexes()
        .into_iter()
        .map(|mut spec| {
            spec.remove("ns");
            Bson::Document(spec)
        })
        .collect();
    d.insert("indexes", Bson::Array(indexes));
    d.insert("uuid", p.meta.uuid.clone().unwrap_or_default());
    d.insert("collectionName", p.meta.name.clone());
    d.insert("type", p.meta.kind.clone());
    let mut out = String::new();
    document_json(&d, &mut out);
    out
}

/// The longest escaped collection name `mongodump` writes whole; longer
/// ones are cut to [`TRUNCATED_TO`] bytes and get `%24` and a hash of the
/// name (so that `<name>.metadata.json.gz` stays within 255 bytes).
const MAX_ESCAPED: usize = 238;
const TRUNCATED_TO: usize = 208;

/// A collection name as the base of its dump files, as `mongodump` makes
/// it: percent-escaped like a URL path segment (Go's `url.PathEscape`:
/// letters, digits, `-_.~` and `$&:=@` stay, every other byte becomes
/// `%XX`), and `+` escaped too, so that a reader that decodes it as a
/// query string (`+` as a space) gets the name back as well as
/// `mongorestore` (`url.PathUnescape`). An escaped name over 238 bytes is
/// cut to 208 and ends with `%24` and the unpadded URL-safe base64 SHA-1
/// of the name; `mongorestore` then reads the name from the metadata
/// file.
pub(crate) fn collection_file_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for &b in name.as_bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'_' | b'.' | b'~' | b'$' | b'&' | b':' | b'=' | b'@'
            );
        if keep {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    if out.len() > MAX_ESCAPED {
        use base64::Engine as _;
        use sha1::Digest as _;
        let hash = sha1::Sha1::digest(name.as_bytes());
        let mut cut = out[..TRUNCATED_TO].to_owned();
        cut.push_str("%24");
        cut.push_str(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash));
        return cut;
    }
    out
}

async fn write_stream(
    snapshot: &SnapshotReader,
    node: Option<&backup_core::tree::Node>,
    path: &Path,
) -> Result<u64> {
    let mut f = tokio::fs::File::create(path)
        .await
        .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
    let mut n = 0u64;
    if let Some(node) = node {
        let mut s = snapshot.content(node);
        while let Some(chunk) = s.next().await {
            let chunk = chunk?;
            n += chunk.len() as u64;
            f.write_all(&chunk)
                .await
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        }
    }
    f.sync_all()
        .await
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    Ok(n)
}

/// Writes the snapshot as a `mongodump` directory at `to` (which must not
/// exist, or be an empty directory).
///
/// # Errors
///
/// [`Error::Config`] for a snapshot of another kind or a non-empty `to`;
/// repository and write errors.
pub(crate) async fn export_mongodump(snapshot: &SnapshotReader, to: &Path) -> Result<ExportReport> {
    if let Ok(mut rd) = std::fs::read_dir(to) {
        if rd.next().is_some() {
            return Err(Error::Config(format!(
                "{} is not empty: export into a new or empty directory",
                to.display()
            )));
        }
    } else if to.exists() {
        return Err(Error::Config(format!(
            "{} exists and is not a directory: export into a new or empty directory",
            to.display()
        )));
    }
    let all = |db: &str, coll: &str| Some((db.to_owned(), coll.to_owned()));
    let loaded = load(snapshot, &all).await?;
    for p in &loaded.collections {
        check_db_dir_name(&p.meta.db)?;
    }
    let existed = to.exists();
    tokio::fs::create_dir_all(to)
        .await
        .map_err(|e| Error::io(format!("creating {}", to.display()), e))?;
    let written = write_dump(snapshot, to, &loaded).await;
    if written.is_err() {
        // Nothing half-written is left behind: the directory is removed
        // when the export created it, emptied otherwise.
        if existed {
            if let Ok(rd) = std::fs::read_dir(to) {
                for e in rd.flatten() {
                    let p = e.path();
                    let _ = if p.is_dir() {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    };
                }
            }
        } else {
            let _ = std::fs::remove_dir_all(to);
        }
    }
    written
}

/// A database name as a directory name: `mongodump` uses it as it is (and
/// `mongorestore` reads it so); MongoDB does not allow `/` or NUL in one.
fn check_db_dir_name(db: &str) -> Result<()> {
    if db.is_empty() || db == "." || db == ".." || db.contains(['/', '\0']) {
        return Err(Error::target_failed(format!(
            "database `{db}` cannot be a directory of a mongodump export"
        )));
    }
    Ok(())
}

/// Writes the files of the export into `to`.
async fn write_dump(snapshot: &SnapshotReader, to: &Path, loaded: &Loaded) -> Result<ExportReport> {
    let mut bytes = 0u64;
    let mut files = 0u64;
    for p in &loaded.collections {
        let dir = to.join(&p.meta.db);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let base = collection_file_name(&p.meta.name);
        if !p.meta.is_view() {
            bytes += write_stream(
                snapshot,
                p.documents.as_ref(),
                &dir.join(format!("{base}.bson")),
            )
            .await?;
            files += 1;
        }
        let meta = metadata_json(p);
        let path = dir.join(format!("{base}.metadata.json"));
        tokio::fs::write(&path, meta.as_bytes())
            .await
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        bytes += meta.len() as u64;
        files += 1;
    }
    // Users and roles where mongodump puts them for a whole deployment;
    // mongorestore merges them (_mergeAuthzCollections).
    if !loaded.users.is_empty() || !loaded.roles.is_empty() {
        let dir = to.join("admin");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        for (name, docs) in [
            ("system.users", &loaded.users),
            ("system.roles", &loaded.roles),
        ] {
            let mut buf = Vec::new();
            for d in docs {
                let mut d = d.clone();
                // Derived from the credentials; not a system.users field.
                d.remove("mechanisms");
                d.to_writer(&mut buf)
                    .map_err(|e| Error::source_caused(format!("encoding {name}"), e))?;
            }
            let path = dir.join(format!("{name}.bson"));
            tokio::fs::write(&path, &buf)
                .await
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
            bytes += buf.len() as u64;
            files += 1;
        }
    }
    let mut oplog_entries = 0;
    if let Some(node) = &loaded.oplog {
        bytes += write_stream(snapshot, Some(node), &to.join("oplog.bson")).await?;
        files += 1;
        oplog_entries = loaded.meta.oplog.as_ref().map_or(0, |o| o.entries);
    }
    Ok(ExportReport {
        format: "mongodump".to_owned(),
        path: to.to_path_buf(),
        bytes,
        details: ExportDetails::Mongodump(MongodumpExport {
            files,
            collections: loaded
                .collections
                .iter()
                .filter(|p| !p.meta.is_view())
                .count(),
            views: loaded
                .collections
                .iter()
                .filter(|p| p.meta.is_view())
                .count(),
            oplog_entries,
            users: loaded.users.len(),
            roles: loaded.roles.len(),
            restore_with: if loaded.oplog.is_some() {
                format!("mongorestore --oplogReplay --dir {}", to.display())
            } else {
                format!("mongorestore --dir {}", to.display())
            },
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;

    #[test]
    fn file_names_are_escaped_as_mongodump_escapes_them() {
        assert_eq!(collection_file_name("orders"), "orders");
        assert_eq!(collection_file_name("a+b"), "a%2Bb");
        assert_eq!(collection_file_name("with space"), "with%20space");
        assert_eq!(collection_file_name("cafés"), "caf%C3%A9s");
        assert_eq!(collection_file_name("100%"), "100%25");
        assert_eq!(collection_file_name("a/b?c,d;e"), "a%2Fb%3Fc%2Cd%3Be");
        assert_eq!(
            collection_file_name("$x&y:z=w@v~u.t-s_r"),
            "$x&y:z=w@v~u.t-s_r"
        );
        assert_eq!(collection_file_name("(x)!*'"), "%28x%29%21%2A%27");
        // Too long: 208 bytes, `%24`, the URL-safe base64 of the name's SHA-1.
        let long = "c".repeat(247);
        let name = collection_file_name(&long);
        assert_eq!(name.len(), 238);
        assert_eq!(
            name,
            format!("{}%24HCju5hiNrXsLAfmRjcM4xr_86AQ", "c".repeat(208))
        );
        assert_eq!(collection_file_name(&"d".repeat(238)).len(), 238);
    }

    #[test]
    fn canonical_json_keeps_order_and_types() {
        let d = doc! {"key": {"b": 1, "a": -1_i64}, "f": 1.5, "n": f64::NAN};
        let mut s = String::new();
        canonical_json(&Bson::Document(d), &mut s);
        assert_eq!(
            s,
            r#"{"key":{"b":{"$numberInt":"1"},"a":{"$numberLong":"-1"}},"f":{"$numberDouble":"1.5"},"n":{"$numberDouble":"NaN"}}"#
        );
    }
}
