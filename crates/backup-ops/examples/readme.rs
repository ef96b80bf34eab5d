//! The smallest complete program of the README's "Use it from Rust"
//! (kept identical to it by `tests/examples.rs`).

use backup_core::repo::{InitOptions, Repository};
use backup_ops::backup::{backup, open_source, BackupRequest};
use backup_ops::repository::{open, RepoSpec};
use backup_ops::restore::{open_target, restore, RestoreRequest};
use backup_ops::Unattended;
use backup_sources::{SourceSpec, TargetSpec};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let repo = RepoSpec::new("/srv/backup", &[])?; // or s3://bucket/prefix
    Repository::init(repo.sink()?, Some(b"secret"), &InitOptions::default()).await?;
    let repo = open(&repo, || Ok("secret".into())).await?;

    let source = SourceSpec::plain("/var/lib/app")?; // or postgres://..., mongodb://...
    let req = BackupRequest::default();
    let done = backup(
        &repo,
        open_source(&source).await?,
        &source,
        &req,
        &Unattended,
        None,
    )
    .await?;

    let target = TargetSpec::new("/tmp/app-restored")?;
    let req = RestoreRequest {
        snapshot: done.id.ok_or("dry run")?.to_string(),
        ..Default::default()
    };
    restore(
        &repo,
        open_target(&target, &req.options)?.as_ref(),
        &target,
        &req,
        &Unattended,
    )
    .await?;
    Ok(())
}
