//! Building the indexes of the restored collections, after the data.

use mongodb::bson::{doc, Bson};

use super::super::oplog::clean_index_spec;
use super::state::Restore;

/// What building the indexes did.
pub(super) struct Indexes {
    /// Indexes built.
    pub(super) built: usize,
    /// Indexes that could not be built (each with the reason).
    pub(super) failures: Vec<String>,
}

impl Restore<'_> {
    /// Indexes after the data; one that cannot be built is reported.
    pub(super) async fn build_indexes(&self) -> Indexes {
        self.progress.set_phase("indexes");
        let conn = self.conn;
        let mut index_failures = Vec::new();
        let mut built = 0usize;
        for p in self.plan().iter().filter(|p| !p.meta.is_view()) {
            for spec in p.indexes() {
                if spec.get_str("name").ok() == Some("_id_")
                    || spec.get_bool("clustered").unwrap_or(false)
                {
                    continue;
                }
                let spec = clean_index_spec(&spec);
                let name = spec.get_str("name").unwrap_or("?").to_owned();
                let r = conn
                    .client
                    .database(&p.db)
                    .run_command(doc! {"createIndexes": p.coll.clone(), "indexes": [Bson::Document(spec.clone())]})
                    .await;
                match r {
                    Ok(_) => built += 1,
                    Err(e) => index_failures.push(format!(
                        "index {name} {} on {}: {}",
                        spec.get_document("key")
                            .map(ToString::to_string)
                            .unwrap_or_default(),
                        p.target_ns(),
                        conn.error("building an index", e)
                    )),
                }
            }
        }
        Indexes {
            built,
            failures: index_failures,
        }
    }
}
