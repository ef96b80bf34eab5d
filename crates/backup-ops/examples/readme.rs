//! The smallest complete program of the README's "Use it from Rust"
//! (kept identical to it by `tests/examples.rs`, and built and run as a
//! project of its own by `tests/external_project.rs`).

use backup_ops::{backup, open, open_source, open_target, restore, BackupRequest};
use backup_ops::{InitOptions, RepoSpec, Repository, RestoreRequest};
use backup_ops::{SourceSpec, TargetSpec, Unattended};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let spec = RepoSpec::new("/srv/backup", &[])?; // s3://bucket/prefix: feature "s3"
    Repository::init(spec.sink()?, Some(b"secret"), &InitOptions::default()).await?;
    let repo = open(&spec, || Ok("secret".into())).await?;

    // A directory into a new directory, a database into a new database.
    for (from, to) in [
        ("/var/lib/app", "/tmp/app-restored"),
        ("postgres://db/app", "postgres://db/app_restored"),
    ] {
        let source = SourceSpec::plain(from)?;
        let reading = open_source(&source).await?;
        let req = BackupRequest::default();
        let done = backup(&repo, reading, &source, &req, &Unattended, None).await?;

        let target = TargetSpec::new(to)?;
        let req = RestoreRequest {
            snapshot: done.id.ok_or("dry run")?.to_string(),
            ..Default::default()
        };
        let into = open_target(&target, &req.options)?;
        let restored = restore(&repo, into.as_ref(), &target, &req, &Unattended).await?;
        println!("{from}: snapshot {} into {to}", restored.snapshot.id);
    }
    Ok(())
}
