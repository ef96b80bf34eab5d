//! Opening a repository: the one place where a URL, storage options, a
//! password and an optional key file become an open [`Repository`].

use std::path::PathBuf;
use std::sync::Arc;

use backup_core::config::Encryption;
use backup_core::repo::Repository;
use backup_core::Sink;
use backup_storage::{StorageOptions, StorageUrl};
use secrecy::ExposeSecret;

use crate::config::{Config, ConfigError};
use crate::error::{Error, Result, ResultExt};
use crate::secret::{SecretRef, SecretString};

/// Where a repository is and what unlocks it.
#[derive(Debug, Clone)]
pub struct RepoSpec {
    /// The repository URL (a path, `file://`, `s3://`, `gs://`).
    pub url: StorageUrl,
    /// Storage options.
    pub options: StorageOptions,
    /// A stand-alone key file (from `key export`) to open it with instead
    /// of the keys stored in it.
    pub key_file: Option<PathBuf>,
    /// Where the password comes from, when no one is asked.
    pub password: Option<SecretRef>,
    /// How to name the password in errors (a variable, a configuration
    /// key).
    pub password_key: String,
}

impl RepoSpec {
    /// A repository given by URL and `key=value` storage options.
    ///
    /// # Errors
    ///
    /// [`backup_core::Error::Config`] for a malformed URL or option.
    pub fn new(url: &str, options: &[String]) -> Result<Self> {
        let url = StorageUrl::parse(url)?;
        let mut opts = StorageOptions::default();
        for pair in options {
            opts.set_pair(pair)?;
        }
        Ok(RepoSpec {
            url,
            options: opts,
            key_file: None,
            password: None,
            password_key: "the repository password".to_owned(),
        })
    }

    /// The repository `name` of a configuration file, with its password
    /// reference.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for an unknown name or invalid settings.
    pub fn configured(config: &Config, name: &str) -> Result<Self> {
        let cfg = config.repository(name)?;
        let url = StorageUrl::parse(&cfg.url)?;
        Ok(RepoSpec {
            url,
            options: cfg.storage_options(name)?,
            key_file: None,
            password: cfg.password.clone(),
            password_key: format!("repositories.{name}.password"),
        })
    }

    /// The storage backend, with the retry layer.
    ///
    /// # Errors
    ///
    /// [`backup_core::Error::Config`] for a backend this build lacks or
    /// invalid options.
    pub fn sink(&self) -> Result<Arc<dyn Sink>> {
        Ok(backup_storage::build(&self.url, &self.options)?)
    }

    /// The URL without credentials.
    pub fn redacted(&self) -> String {
        self.url.redacted()
    }
}

/// Opens the repository `spec` names. An encrypted repository opens with
/// its KMS keys when it has some and the service lets this host decrypt
/// (no password is asked then); otherwise it needs a password: from
/// `spec.password` when set, otherwise from `ask` (a prompt, or an error
/// saying how to give one), which is only called for an encrypted
/// repository. When KMS keys exist but none opens and no password can be
/// had, the KMS error is returned.
///
/// # Errors
///
/// [`backup_core::Error::NoRepository`], a newer format
/// ([`backup_core::Error::UnsupportedVersion`], checked before any password
/// is asked), a wrong password, an unreadable key file, storage errors.
pub async fn open(
    spec: &RepoSpec,
    ask: impl FnOnce() -> Result<SecretString>,
) -> Result<Repository> {
    let sink = spec.sink()?;
    let config = Repository::read_config(sink.as_ref()).await?;
    if config.encryption == Encryption::None {
        return Ok(Repository::open(sink, None).await?);
    }
    let key_file = match &spec.key_file {
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            backup_core::Error::io(format!("reading key file {}", path.display()), e)
        })?),
        None => None,
    };
    // A key file without a password (`key export --no-password`) opens
    // at once: no password is asked, no key derivation runs.
    if let Some(key) = &key_file {
        if backup_core::keys::KeyFile::decode(key, "key file")?.is_plain() {
            return Ok(Repository::open_with_key_file(sink, key, b"").await?);
        }
    }
    if let Some(key) = &key_file {
        let password = match &spec.password {
            Some(r) => r.resolve(&spec.password_key)?,
            None => ask()?,
        };
        let password = password.expose_secret().as_bytes();
        return Ok(Repository::open_with_key_file(sink, key, password).await?);
    }
    // Keys held by a KMS open the repository with no password; when they
    // are refused or unreachable, a password key is the break-glass way in.
    // A write-only KMS key is taken only when no password is given: a
    // given password may open a full key.
    let kms = backup_storage::kms::client();
    let kms_error = match Repository::open_with_kms(sink.clone(), kms.as_ref()).await {
        Ok(Some(repo)) if !(repo.key().is_write_only() && spec.password.is_some()) => {
            return Ok(repo)
        }
        Ok(Some(writer)) => {
            let password = spec
                .password
                .as_ref()
                .map(|r| r.resolve(&spec.password_key))
                .transpose()?;
            let password = password.as_ref().map(|p| p.expose_secret().as_bytes());
            return match Repository::open(sink, password).await {
                Err(backup_core::Error::WrongPassword) => Ok(writer),
                other => Ok(other?),
            };
        }
        Ok(None) => None,
        Err(e) => Some(e),
    };
    let password = match (&spec.password, kms_error) {
        (Some(r), _) => r.resolve(&spec.password_key)?,
        (None, None) => ask()?,
        (None, Some(kms_error)) => match ask() {
            Ok(password) => password,
            Err(_) => return Err(kms_error.into()),
        },
    };
    Ok(Repository::open(sink, Some(password.expose_secret().as_bytes())).await?)
}

/// A password that must be given but was not: the error front-ends return
/// from their `ask` when they cannot prompt.
pub fn no_password(how: &str) -> Error {
    Error::Config(ConfigError::invalid(
        "password",
        format!("the repository is encrypted and no password was given: {how}"),
    ))
}

/// Opens the repository `name` of a configuration file.
///
/// # Errors
///
/// As [`open`]; a configuration error when the repository is encrypted
/// and the file does not say where its password comes from.
pub async fn open_configured(config: &Config, name: &str) -> Result<Repository> {
    let spec = RepoSpec::configured(config, name)?;
    open(&spec, || {
        Err(Error::Config(ConfigError::invalid(
            &format!("repositories.{name}.password"),
            "the repository is encrypted: say where its password comes from",
        )))
    })
    .await
    .map_err(|e| match e.core() {
        Some(backup_core::Error::NoRepository { .. }) => e.with_hint(format!(
            "create it with `backup --config FILE --repo {name} init`"
        )),
        _ => e,
    })
    .with_context(|| format!("opening repository {name}"))
}

/// Checks that a repository accepts writes: a probe object is created
/// under `locks/`, read back and removed.
///
/// # Errors
///
/// Why it does not.
pub async fn check_writable(repo: &Repository) -> Result<()> {
    use backup_core::{FileKind, Id, PutMode};
    let name = format!("probe-{}", Id::random().to_hex());
    let data = bytes::Bytes::from_static(b"backup health probe");
    let sink = repo.sink();
    sink.put(FileKind::Lock, &name, data.clone(), PutMode::Create)
        .await
        .context("the repository does not accept writes")?;
    let back = sink.get(FileKind::Lock, &name).await;
    let deleted = sink.delete(FileKind::Lock, &name).await;
    if back.context("reading the probe back")? != data {
        return Err(Error::from(backup_core::Error::corrupt(
            FileKind::Lock,
            name,
            "the repository returned different data for the probe object",
        )));
    }
    deleted.context("removing the probe object")?;
    Ok(())
}

/// The total size of the repository's objects, in bytes.
///
/// # Errors
///
/// Storage errors while listing.
pub async fn size(repo: &Repository) -> Result<u64> {
    use backup_core::FileKind;
    let mut total = 0;
    for kind in [
        FileKind::Pack,
        FileKind::Index,
        FileKind::Snapshot,
        FileKind::Key,
    ] {
        total += repo
            .sink()
            .list(kind)
            .await?
            .iter()
            .map(|o| o.size)
            .sum::<u64>();
    }
    Ok(total)
}
