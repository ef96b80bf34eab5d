//! Dropping the namespaces a restore replaces and creating its
//! collections with their options.

use backup_core::{Error, Result};
use mongodb::bson::{doc, Document};

use super::snapshot::Planned;
use super::state::Restore;

impl Restore<'_> {
    /// Replace what is there (the CLI took a safety backup).
    pub(super) async fn drop_existing(&self) -> Result<()> {
        for p in self.plan() {
            if self.exists(p) && self.opts.drop {
                self.conn
                    .client
                    .database(&p.db)
                    .collection::<Document>(&p.coll)
                    .drop()
                    .await
                    .map_err(|e| self.conn.error(&format!("dropping {}", p.target_ns()), e))?;
            }
        }
        Ok(())
    }

    /// Collections with their options, before the data.
    pub(super) async fn create_collections(&self) -> Result<()> {
        let reuse = |p: &Planned| !self.opts.drop && self.exists(p);
        self.progress.set_phase("collections");
        let plan = self.plan();
        for p in plan.iter().filter(|p| !p.meta.is_view() && !reuse(p)) {
            let mut cmd = doc! {"create": p.coll.clone()};
            for (k, v) in p.options() {
                cmd.insert(k, v);
            }
            self.conn
                .client
                .database(&p.db)
                .run_command(cmd)
                .await
                .map_err(|e| {
                    let cause = self.conn.error("creating a collection", e);
                    let again = cause.is_retryable();
                    let msg = format!(
                        "creating collection {} with its options {} failed: {cause}; the target server may not support one of these options (collections created so far are left in place)",
                        p.target_ns(),
                        p.options(),
                    );
                    Error::target_explained(msg, cause, again)
                })?;
            self.record_created(p);
        }
        Ok(())
    }
}
