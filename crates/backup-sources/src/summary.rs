//! What a database snapshot holds, for people: one row per table,
//! collection or database, read from the snapshot's metadata (so a build
//! without a kind's feature still describes its snapshots).

use serde_json::Value;

use crate::names::tree_name;

/// One table, collection or database of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ContentRow {
    /// `schema.table`, `db.collection` or the database number.
    pub name: String,
    /// Rows, documents or keys.
    pub count: u64,
    /// Bytes of data, when the snapshot records them per row.
    pub bytes: Option<u64>,
    /// What else is worth knowing (`view`, `partitioned`, keys with an
    /// expiry, ...), possibly empty.
    pub note: String,
    /// Where the row sits, outermost first, one name per level of
    /// [`Contents::levels`]: `[database, schema, table]`, `[database,
    /// collection]` or `[database number]` (the PostgreSQL database is
    /// empty when the metadata does not name it).
    pub path: Vec<String>,
    /// The snapshot tree's directory that holds the row's data streams
    /// (components from the root, as the kind stores them); `None` when
    /// the kind keeps all rows in one stream (Redis).
    pub tree: Option<Vec<String>>,
}

/// The contents of a database snapshot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Contents {
    /// What a row is: `table`, `collection` or `database`.
    pub item: &'static str,
    /// What its count counts: `rows`, `documents` or `keys`.
    pub counted: &'static str,
    /// What each component of [`ContentRow::path`] names (`database`,
    /// `schema`, `table`, `collection`).
    pub levels: &'static [&'static str],
    /// One per table, collection or database, in the snapshot's order.
    pub rows: Vec<ContentRow>,
}

impl ContentRow {
    /// Whether the row lies at or under `path` (components, outermost
    /// first): its [`ContentRow::path`] starts with them. A single
    /// component also matches the row's dotted [`ContentRow::name`]
    /// (`public.orders`, `shop.orders`) or a prefix of it up to a dot.
    pub fn is_under(&self, path: &[&str]) -> bool {
        if path.len() <= self.path.len() && path.iter().zip(&self.path).all(|(a, b)| a == b) {
            return true;
        }
        match path {
            [one] => {
                self.name == *one
                    || self
                        .name
                        .strip_prefix(one)
                        .is_some_and(|rest| rest.starts_with('.'))
            }
            _ => false,
        }
    }
}

/// The contents of a snapshot of `kind` (`postgres`, `mongodb`, `redis`)
/// from its metadata; `None` for other kinds (files) or metadata that
/// lists nothing.
pub fn contents(kind: &str, metadata: &Value) -> Option<Contents> {
    let u = |v: &Value| v.as_u64().unwrap_or(0);
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let contents = match kind {
        "postgres" => Contents {
            item: "table",
            counted: "rows",
            levels: &["database", "schema", "table"],
            rows: metadata["tables"]
                .as_array()?
                .iter()
                .map(|t| ContentRow {
                    name: format!("{}.{}", s(&t["schema"]), s(&t["name"])),
                    path: vec![s(&metadata["database"]), s(&t["schema"]), s(&t["name"])],
                    // As the logical source stores a table's COPY parts.
                    tree: Some(vec![
                        "tables".to_owned(),
                        tree_name(&s(&t["schema"])),
                        tree_name(&s(&t["name"])),
                    ]),
                    count: u(&t["rows"]),
                    bytes: t["bytes"].as_u64(),
                    note: match t["kind"].as_str() {
                        Some("partitioned") => "partitioned (rows in its partitions)".to_owned(),
                        _ if t["partition_of"].is_array() => format!(
                            "partition of {}",
                            t["partition_of"]
                                .as_array()
                                .map(|p| p
                                    .iter()
                                    .filter_map(Value::as_str)
                                    .collect::<Vec<_>>()
                                    .join("."))
                                .unwrap_or_default()
                        ),
                        _ => String::new(),
                    },
                })
                .collect(),
        },
        "mongodb" => Contents {
            item: "collection",
            counted: "documents",
            levels: &["database", "collection"],
            rows: metadata["collections"]
                .as_array()?
                .iter()
                .map(|c| {
                    let kind = s(&c["kind"]);
                    ContentRow {
                        name: format!("{}.{}", s(&c["db"]), s(&c["name"])),
                        path: vec![s(&c["db"]), s(&c["name"])],
                        // As the MongoDB source stores a collection.
                        tree: Some(vec![
                            "databases".to_owned(),
                            tree_name(&s(&c["db"])),
                            tree_name(&s(&c["name"])),
                        ]),
                        count: u(&c["documents"]),
                        bytes: c["bytes"].as_u64(),
                        note: if kind == "collection" {
                            format!("{} indexes", u(&c["indexes"]))
                        } else {
                            kind
                        },
                    }
                })
                .collect(),
        },
        "redis" => {
            let mut rows: Vec<(u64, ContentRow)> = metadata["databases"]
                .as_object()?
                .iter()
                .map(|(db, d)| {
                    let mut notes = Vec::new();
                    if u(&d["expires"]) > 0 {
                        notes.push(format!("{} with an expiry", u(&d["expires"])));
                    }
                    if u(&d["empty_keys"]) > 0 {
                        notes.push(format!("{} empty keys skipped", u(&d["empty_keys"])));
                    }
                    (
                        db.parse().unwrap_or(u64::MAX),
                        ContentRow {
                            name: db.clone(),
                            path: vec![db.clone()],
                            tree: None,
                            count: u(&d["keys"]),
                            bytes: None,
                            note: notes.join(", "),
                        },
                    )
                })
                .collect();
            rows.sort_by_key(|(n, _)| *n);
            Contents {
                item: "database",
                counted: "keys",
                levels: &["database"],
                rows: rows.into_iter().map(|(_, r)| r).collect(),
            }
        }
        _ => return None,
    };
    Some(contents)
}

/// The metadata's top-level values that are not lists or maps (server
/// version, positions, modes, totals), as `name value` pairs for people.
pub fn scalars(metadata: &Value) -> Vec<(String, String)> {
    let Some(map) = metadata.as_object() else {
        return Vec::new();
    };
    map.iter()
        .filter_map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return None,
            };
            Some((k.clone(), text))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_per_kind() {
        let pg = json!({"server_version": "15.2", "tables": [
            {"schema": "public", "name": "t", "kind": "table", "rows": 3, "bytes": 30},
            {"schema": "public", "name": "m", "kind": "partitioned", "rows": 0, "bytes": 0},
            {"schema": "public", "name": "m1", "kind": "table", "partition_of": ["public", "m"], "rows": 1, "bytes": 9}
        ]});
        let c = contents("postgres", &pg).unwrap();
        assert_eq!((c.item, c.counted), ("table", "rows"));
        assert_eq!(c.rows[0].name, "public.t");
        assert_eq!(c.rows[0].bytes, Some(30));
        assert!(c.rows[1].note.starts_with("partitioned"));
        assert_eq!(c.rows[2].note, "partition of public.m");
        assert_eq!(c.rows[0].path, ["", "public", "t"]);
        assert_eq!(
            c.rows[0].tree.as_deref(),
            Some(&["tables".to_owned(), "public".to_owned(), "t".to_owned()][..])
        );
        assert!(c.rows[0].is_under(&["public.t"]));
        assert!(c.rows[0].is_under(&["public"]));
        assert!(c.rows[0].is_under(&["", "public"]));
        assert!(!c.rows[0].is_under(&["publ"]));
        assert_eq!(
            scalars(&pg),
            vec![("server_version".to_owned(), "15.2".to_owned())]
        );

        let mongo = json!({"collections": [
            {"db": "shop", "name": "orders", "kind": "collection", "documents": 5, "bytes": 500, "indexes": 2},
            {"db": "shop", "name": "v", "kind": "view", "documents": 0, "bytes": 0, "indexes": 0}
        ]});
        let c = contents("mongodb", &mongo).unwrap();
        assert_eq!(c.rows[0].note, "2 indexes");
        assert_eq!(c.rows[1].note, "view");

        let redis = json!({"databases": {"10": {"keys": 1, "expires": 0}, "2": {"keys": 4, "expires": 1, "empty_keys": 2}}});
        let c = contents("redis", &redis).unwrap();
        assert_eq!(c.rows[0].name, "2");
        assert_eq!(c.rows[0].note, "1 with an expiry, 2 empty keys skipped");
        assert_eq!(c.rows[1].name, "10");
        assert!(contents("files", &json!({})).is_none());
    }
}
