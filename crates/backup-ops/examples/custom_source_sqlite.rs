//! A fifth kind of source, written outside the workspace's crates: a
//! SQLite database taken with SQLite's online backup API (a consistent
//! copy while other connections keep writing), backed up through the same
//! pipeline as files and databases, and restored as a file.
//!
//! ```text
//! cargo run -p backup-ops --example custom_source_sqlite -- REPO_DIR DB_FILE RESTORE_DIR
//! ```
//! The repository password is read from `BACKUP_PASSWORD`.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use backup_core::repo::{InitOptions, Repository};
use backup_core::snapshot::SourceDescriptor;
use backup_core::source::{BlockingReader, Content, Item, OnReadError, Source};
use backup_core::tree::{Node, NodeKind};
use backup_ops::backup::{backup_source, BackupRequest};
use backup_ops::repository::{open, RepoSpec};
use backup_ops::restore::{open_target, restore, RestoreRequest};
use backup_ops::Unattended;
use backup_sources::TargetSpec;

/// The name of the one file the snapshot holds.
const FILE_NAME: &str = "database.sqlite";

/// A SQLite database file, copied with the online backup API when the
/// walk starts.
pub struct SqliteSource {
    path: PathBuf,
    /// The consistent copy, read by the pipeline; removed with the source.
    copy: Option<tempfile::TempPath>,
    done: bool,
    pages: i64,
}

impl SqliteSource {
    /// A source for the database at `path` (nothing is read yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteSource {
            path: path.into(),
            copy: None,
            done: false,
            pages: 0,
        }
    }
}

/// Copies `src` into a new temporary file with the online backup API.
fn online_copy(src: &Path) -> rusqlite::Result<(tempfile::TempPath, i64)> {
    let tmp = tempfile::NamedTempFile::new()
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?
        .into_temp_path();
    let from =
        rusqlite::Connection::open_with_flags(src, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut to = rusqlite::Connection::open(&tmp)?;
    {
        let backup = rusqlite::backup::Backup::new(&from, &mut to)?;
        backup.run_to_completion(256, std::time::Duration::ZERO, None)?;
    }
    let pages: i64 = to.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    Ok((tmp, pages))
}

#[async_trait]
impl Source for SqliteSource {
    fn descriptor(&self) -> SourceDescriptor {
        SourceDescriptor {
            kind: "sqlite".to_owned(),
            url: self.path.display().to_string(),
        }
    }

    async fn next(&mut self) -> backup_core::Result<Option<Item>> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        let src = self.path.clone();
        let (copy, pages) = tokio::task::spawn_blocking(move || online_copy(&src))
            .await
            .map_err(|e| backup_core::Error::io("sqlite backup", std::io::Error::other(e)))?
            .map_err(|e| backup_core::Error::io("sqlite backup", std::io::Error::other(e)))?;
        let meta = std::fs::metadata(&copy)
            .map_err(|e| backup_core::Error::io("reading the sqlite copy", e))?;
        let mut node = Node::new(FILE_NAME, NodeKind::File);
        node.size = meta.len();
        node.mode = Some(0o600);
        let path = copy.to_path_buf();
        self.copy = Some(copy);
        self.pages = pages;
        let open = move || -> std::io::Result<BlockingReader> {
            Ok(Box::new(std::fs::File::open(&path)?))
        };
        Ok(Some(Item::Leaf {
            node,
            content: Some(Content::Blocking(Box::new(open))),
            on_error: OnReadError::Fail,
        }))
    }

    async fn finish(&mut self) -> backup_core::Result<serde_json::Value> {
        Ok(serde_json::json!({ "pages": self.pages }))
    }
}

/// Backs the database at `db` up into the repository at `repo_url`
/// (created when missing) and restores the snapshot into `restore_dir`;
/// returns the path of the restored database file.
pub async fn run(
    repo_url: &str,
    password: &str,
    db: &Path,
    restore_dir: &Path,
) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let spec = RepoSpec::new(repo_url, &[])?;
    if Repository::read_config(spec.sink()?.as_ref())
        .await
        .is_err()
    {
        Repository::init(
            spec.sink()?,
            Some(password.as_bytes()),
            &InitOptions::default(),
        )
        .await?;
    }
    let repo = open(&spec, || Ok(password.into())).await?;

    let source = Box::new(SqliteSource::new(db));
    let outcome =
        backup_source(&repo, source, &BackupRequest::default(), &Unattended, None).await?;
    let id = outcome.id.ok_or("no snapshot written")?;
    println!(
        "snapshot {} of {}: {} bytes",
        id.short(),
        db.display(),
        outcome.snapshot.stats.logical_bytes
    );

    let target_spec = TargetSpec::new(restore_dir.to_string_lossy())?;
    let req = RestoreRequest {
        snapshot: id.to_string(),
        ..RestoreRequest::default()
    };
    let target = open_target(&target_spec, &req.options)?;
    restore(&repo, target.as_ref(), &target_spec, &req, &Unattended).await?;
    Ok(restore_dir.join(FILE_NAME))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [repo, db, out] = args.as_slice() else {
        return Err("usage: custom_source_sqlite REPO DB_FILE RESTORE_DIR".into());
    };
    let password = std::env::var("BACKUP_PASSWORD").map_err(|_| "set BACKUP_PASSWORD")?;
    let restored = run(repo, &password, Path::new(db), Path::new(out)).await?;
    println!("restored to {}", restored.display());
    Ok(())
}
