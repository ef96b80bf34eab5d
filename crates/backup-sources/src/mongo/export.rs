//! `backup export --format mongodump`: a snapshot written as a `mongodump`
//! directory (`<db>/<coll>.bson`, `<db>/<coll>.metadata.json`,
//! `oplog.bson` when the oplog was captured, and `admin/system.users.bson`
//! and `admin/system.roles.bson` when users were backed up) for
//! `mongorestore`.

use std::path::Path;

use backup_core::reader::SnapshotReader;
use backup_core::{Error, Result};
use futures::StreamExt;
use mongodb::bson::{Bson, Document};
use tokio::io::AsyncWriteExt;

use super::target::{load, Planned};
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

/// Name of a database or collection as a file name (`mongodump` escapes
/// path separators the same way).
fn file_name(name: &str) -> String {
    name.replace('%', "%25").replace('/', "%2F")
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
    tokio::fs::create_dir_all(to)
        .await
        .map_err(|e| Error::io(format!("creating {}", to.display()), e))?;
    let mut bytes = 0u64;
    let mut files = 0u64;
    for p in &loaded.collections {
        let dir = to.join(file_name(&p.meta.db));
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let base = file_name(&p.meta.name);
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
