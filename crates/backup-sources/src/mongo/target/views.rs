//! Creating the restored views, after their sources.

use backup_core::Result;
use mongodb::bson::doc;

use super::snapshot::Planned;
use super::state::Restore;

/// Orders views so that a view comes after the views it reads from.
fn view_order(views: &[&Planned]) -> Vec<usize> {
    let mut done: Vec<bool> = vec![false; views.len()];
    let mut order = Vec::new();
    for _ in 0..views.len() {
        for (i, v) in views.iter().enumerate() {
            if done[i] {
                continue;
            }
            let source = v.options().get_str("viewOn").unwrap_or("").to_owned();
            let waits = views.iter().enumerate().any(|(j, w)| {
                !done[j] && j != i && w.meta.db == v.meta.db && w.meta.name == source
            });
            if !waits {
                done[i] = true;
                order.push(i);
            }
        }
    }
    // Cycles cannot exist on a server; keep any leftovers in order.
    order.extend((0..views.len()).filter(|i| !done[*i]));
    order
}

impl Restore<'_> {
    /// Views after their sources; returns how many there were.
    pub(super) async fn create_views(&self) -> Result<usize> {
        self.progress.set_phase("views");
        let views: Vec<&Planned> = self.plan().iter().filter(|p| p.meta.is_view()).collect();
        for i in view_order(&views) {
            let v = views[i];
            let mut cmd = doc! {"create": v.coll.clone()};
            for (k, val) in v.options() {
                if k == "viewOn" {
                    let src = val.as_str().unwrap_or_default();
                    let mapped =
                        (self.map)(&v.meta.db, src).map_or_else(|| src.to_owned(), |(_, c)| c);
                    cmd.insert("viewOn", mapped);
                } else {
                    cmd.insert(k, val);
                }
            }
            let conn = self.conn;
            conn.client
                .database(&v.db)
                .run_command(cmd)
                .await
                .map_err(|e| conn.error(&format!("creating view {}", v.target_ns()), e))?;
            self.record_created(v);
        }
        Ok(views.len())
    }
}
