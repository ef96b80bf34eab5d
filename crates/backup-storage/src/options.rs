//! Typed storage options: a serde struct for configuration files and a
//! typed key enum for `key=value` pairs from command lines.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use backup_core::{Error, Result};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// One MiB.
const MIB: u64 = 1024 * 1024;

/// Options for building a storage backend.
///
/// Every field has a default; anything left unset for S3 or GCS comes from
/// the cloud's usual environment (see the crate documentation). Precedence,
/// lowest first: built-in defaults, environment, credentials in the URL,
/// these options.
///
/// In a configuration file (TOML, JSON, ...) the options nest by section and
/// reject unknown fields:
///
/// ```
/// # use backup_storage::StorageOptions;
/// let options: StorageOptions = serde_json::from_str(r#"{
///     "s3": { "endpoint": "http://127.0.0.1:9000", "allow-http": true },
///     "multipart": { "threshold": "64MiB", "part-size": "16MiB" },
///     "retry": { "max-attempts": 3, "max-elapsed": "20s" }
/// }"#).unwrap();
/// assert_eq!(options.multipart.threshold, 64 * 1024 * 1024);
/// ```
///
/// On a command line, the same settings are `key=value` pairs with the keys
/// of [`StorageOptionKey`], for example `s3.endpoint=http://127.0.0.1:9000`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct StorageOptions {
    /// Amazon S3 and S3-compatible stores.
    pub s3: S3Options,
    /// Google Cloud Storage.
    pub gcs: GcsOptions,
    /// HTTP client settings of the cloud backends.
    pub http: HttpOptions,
    /// Multipart uploads of large objects.
    pub multipart: MultipartOptions,
    /// The retry layer wrapped around every backend.
    pub retry: RetryOptions,
    /// `append-only`: this client never deletes or overwrites anything but
    /// lock files ([`crate::layers::AppendOnlySink`]).
    pub append_only: bool,
}

/// S3 settings; each overrides the matching `AWS_*` environment variable.
/// Secrets are read from configuration but never serialised.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct S3Options {
    /// Endpoint URL of an S3-compatible store (`MinIO`, Ceph, ...), for
    /// example `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    /// The bucket's region (`us-east-1` when unset anywhere).
    pub region: Option<String>,
    /// Allow plain-HTTP endpoints.
    pub allow_http: Option<bool>,
    /// Address buckets as `https://bucket.endpoint/` instead of the default
    /// path style `https://endpoint/bucket/`.
    pub virtual_hosted_style: Option<bool>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    #[serde(skip_serializing)]
    pub secret_access_key: Option<SecretString>,
    /// Session token of temporary credentials.
    #[serde(skip_serializing)]
    pub session_token: Option<SecretString>,
    /// The storage class of new data packs (packs of file contents and
    /// database rows); every other object (config, keys, index, snapshots,
    /// tree packs, locks, audit and capture records) stays in `STANDARD`.
    /// Unset: data packs are `STANDARD` too.
    pub data_storage_class: Option<S3StorageClass>,
    /// `s3.object-lock`: the bucket locks every object it stores (S3
    /// Object Lock with a default retention in this mode); deletes never
    /// remove or hide a locked object (module `object_lock`).
    pub object_lock: Option<S3ObjectLock>,
}

/// The S3 Object Lock mode a repository's bucket uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum S3ObjectLock {
    /// `GOVERNANCE`: users with `s3:BypassGovernanceRetention` can still
    /// delete.
    Governance,
    /// `COMPLIANCE`: nobody, not even the account's root user, can delete
    /// before the retention ends.
    Compliance,
}

impl S3ObjectLock {
    /// The mode as S3 spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            S3ObjectLock::Governance => "GOVERNANCE",
            S3ObjectLock::Compliance => "COMPLIANCE",
        }
    }
}

/// Parses `governance` or `compliance` (any case).
impl FromStr for S3ObjectLock {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "governance" => Ok(S3ObjectLock::Governance),
            "compliance" => Ok(S3ObjectLock::Compliance),
            _ => Err(Error::Config(format!(
                "unknown S3 Object Lock mode `{s}`; known: governance, compliance"
            ))),
        }
    }
}

impl PartialEq for S3Options {
    fn eq(&self, other: &Self) -> bool {
        self.endpoint == other.endpoint
            && self.region == other.region
            && self.allow_http == other.allow_http
            && self.virtual_hosted_style == other.virtual_hosted_style
            && self.access_key_id == other.access_key_id
            && same_secret(
                self.secret_access_key.as_ref(),
                other.secret_access_key.as_ref(),
            )
            && same_secret(self.session_token.as_ref(), other.session_token.as_ref())
            && self.data_storage_class == other.data_storage_class
            && self.object_lock == other.object_lock
    }
}

/// Whether two optional secrets hold the same value.
fn same_secret(a: Option<&SecretString>, b: Option<&SecretString>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.expose_secret() == b.expose_secret(),
        (None, None) => true,
        _ => false,
    }
}

/// Google Cloud Storage settings; each overrides the matching `GOOGLE_*`
/// environment variable. Secrets are never serialised.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct GcsOptions {
    /// Base URL of the XML API (default `https://storage.googleapis.com`).
    pub base_url: Option<String>,
    /// Path of a service-account JSON key file.
    pub service_account_path: Option<PathBuf>,
    /// A service-account JSON key, inline.
    #[serde(skip_serializing)]
    pub service_account_key: Option<SecretString>,
    /// The storage class of new data packs; every other object keeps the
    /// bucket's default class. Every GCS class is readable at once (only
    /// the price of reading differs), so nothing ever needs thawing.
    pub data_storage_class: Option<GcsStorageClass>,
}

impl PartialEq for GcsOptions {
    fn eq(&self, other: &Self) -> bool {
        self.base_url == other.base_url
            && self.service_account_path == other.service_account_path
            && same_secret(
                self.service_account_key.as_ref(),
                other.service_account_key.as_ref(),
            )
            && self.data_storage_class == other.data_storage_class
    }
}

/// Declares a storage class enum with its wire names.
macro_rules! storage_classes {
    ($(#[$doc:meta])* $name:ident, $cloud:literal, [$($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)?]) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// Every class, in documentation order.
            pub const ALL: &[$name] = &[$($name::$variant),+];

            /// The class as the cloud's API spells it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        /// Parses the API spelling, case-insensitively (`-` may stand for
        /// `_`).
        impl FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self> {
                let wanted = s.trim().to_ascii_uppercase().replace('-', "_");
                $name::ALL
                    .iter()
                    .copied()
                    .find(|c| c.as_str() == wanted)
                    .ok_or_else(|| {
                        let known: Vec<&str> = $name::ALL.iter().map(|c| c.as_str()).collect();
                        Error::Config(format!(
                            "unknown {} storage class `{s}`; known classes: {}",
                            $cloud,
                            known.join(", ")
                        ))
                    })
            }
        }
    };
}

storage_classes!(
    /// An Amazon S3 storage class for data packs.
    S3StorageClass,
    "S3",
    [
        /// `STANDARD`: the default class.
        Standard = "STANDARD",
        /// `STANDARD_IA`: infrequent access, readable at once, 30-day minimum.
        StandardIa = "STANDARD_IA",
        /// `GLACIER_IR`: Glacier Instant Retrieval, readable at once, 90-day
        /// minimum.
        GlacierIr = "GLACIER_IR",
        /// `GLACIER`: Glacier Flexible Retrieval; objects must be restored
        /// (thawed) before they can be read.
        Glacier = "GLACIER",
        /// `DEEP_ARCHIVE`: Glacier Deep Archive; objects must be restored
        /// before they can be read (12 to 48 hours).
        DeepArchive = "DEEP_ARCHIVE",
    ]
);

impl S3StorageClass {
    /// Whether objects of this class must be restored (thawed) with
    /// `RestoreObject` before a GET succeeds.
    pub fn is_archive(self) -> bool {
        matches!(self, S3StorageClass::Glacier | S3StorageClass::DeepArchive)
    }
}

storage_classes!(
    /// A Google Cloud Storage class for data packs. All are readable at
    /// once; they differ in price and minimum storage duration.
    GcsStorageClass,
    "GCS",
    [
        /// `STANDARD`.
        Standard = "STANDARD",
        /// `NEARLINE`: 30-day minimum.
        Nearline = "NEARLINE",
        /// `COLDLINE`: 90-day minimum.
        Coldline = "COLDLINE",
        /// `ARCHIVE`: 365-day minimum.
        Archive = "ARCHIVE",
    ]
);

/// HTTP client settings of the cloud backends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct HttpOptions {
    /// Time allowed to open a connection.
    #[serde(with = "duration_text")]
    pub connect_timeout: Duration,
    /// Time allowed for one whole request, body included.
    #[serde(with = "duration_text")]
    pub request_timeout: Duration,
    /// How many times the HTTP client itself retries a failed request
    /// (connection errors, 5xx) before reporting it to the retry layer.
    pub client_retries: u32,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(120),
            client_retries: 2,
        }
    }
}

/// When and how large objects are uploaded in parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct MultipartOptions {
    /// Objects of at least this many bytes are uploaded in parts.
    #[serde(with = "size_text")]
    pub threshold: u64,
    /// Size of each part but the last. S3 and GCS need at least 5 MiB.
    #[serde(with = "size_text")]
    pub part_size: u64,
    /// Parts uploaded at the same time, per object.
    pub concurrency: usize,
}

impl Default for MultipartOptions {
    fn default() -> Self {
        MultipartOptions {
            threshold: 32 * MIB,
            part_size: 16 * MIB,
            concurrency: 4,
        }
    }
}

/// Settings of the retry layer ([`crate::layers::RetrySink`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryOptions {
    /// Attempts per operation, the first included (1 disables retries).
    pub max_attempts: u32,
    /// Delay before the first retry; doubles with each retry.
    #[serde(with = "duration_text")]
    pub initial_backoff: Duration,
    /// Upper bound of one delay.
    #[serde(with = "duration_text")]
    pub max_backoff: Duration,
    /// No retry starts once this much time has passed since the first
    /// attempt.
    #[serde(with = "duration_text")]
    pub max_elapsed: Duration,
}

impl Default for RetryOptions {
    fn default() -> Self {
        RetryOptions {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            max_elapsed: Duration::from_secs(30),
        }
    }
}

/// The key of one storage option, as written in `key=value` pairs.
///
/// Parsing rejects unknown keys with [`Error::Config`] listing the known
/// ones, so a typo never silently falls back to a default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum StorageOptionKey {
    /// `s3.endpoint`: [`S3Options::endpoint`].
    S3Endpoint,
    /// `s3.region`: [`S3Options::region`].
    S3Region,
    /// `s3.allow-http`: [`S3Options::allow_http`].
    S3AllowHttp,
    /// `s3.virtual-hosted-style`: [`S3Options::virtual_hosted_style`].
    S3VirtualHostedStyle,
    /// `s3.access-key-id`: [`S3Options::access_key_id`].
    S3AccessKeyId,
    /// `s3.secret-access-key`: [`S3Options::secret_access_key`].
    S3SecretAccessKey,
    /// `s3.session-token`: [`S3Options::session_token`].
    S3SessionToken,
    /// `s3.data-storage-class`: [`S3Options::data_storage_class`].
    S3DataStorageClass,
    /// `s3.object-lock`: [`S3Options::object_lock`].
    S3ObjectLock,
    /// `gcs.base-url`: [`GcsOptions::base_url`].
    GcsBaseUrl,
    /// `gcs.service-account-path`: [`GcsOptions::service_account_path`].
    GcsServiceAccountPath,
    /// `gcs.service-account-key`: [`GcsOptions::service_account_key`].
    GcsServiceAccountKey,
    /// `gcs.data-storage-class`: [`GcsOptions::data_storage_class`].
    GcsDataStorageClass,
    /// `http.connect-timeout`: [`HttpOptions::connect_timeout`].
    HttpConnectTimeout,
    /// `http.request-timeout`: [`HttpOptions::request_timeout`].
    HttpRequestTimeout,
    /// `http.client-retries`: [`HttpOptions::client_retries`].
    HttpClientRetries,
    /// `multipart.threshold`: [`MultipartOptions::threshold`].
    MultipartThreshold,
    /// `multipart.part-size`: [`MultipartOptions::part_size`].
    MultipartPartSize,
    /// `multipart.concurrency`: [`MultipartOptions::concurrency`].
    MultipartConcurrency,
    /// `retry.max-attempts`: [`RetryOptions::max_attempts`].
    RetryMaxAttempts,
    /// `retry.initial-backoff`: [`RetryOptions::initial_backoff`].
    RetryInitialBackoff,
    /// `retry.max-backoff`: [`RetryOptions::max_backoff`].
    RetryMaxBackoff,
    /// `retry.max-elapsed`: [`RetryOptions::max_elapsed`].
    RetryMaxElapsed,
    /// `append-only`: [`StorageOptions::append_only`].
    AppendOnly,
}

impl StorageOptionKey {
    /// Every key, in documentation order.
    pub const ALL: [StorageOptionKey; 24] = [
        StorageOptionKey::S3Endpoint,
        StorageOptionKey::S3Region,
        StorageOptionKey::S3AllowHttp,
        StorageOptionKey::S3VirtualHostedStyle,
        StorageOptionKey::S3AccessKeyId,
        StorageOptionKey::S3SecretAccessKey,
        StorageOptionKey::S3SessionToken,
        StorageOptionKey::S3DataStorageClass,
        StorageOptionKey::S3ObjectLock,
        StorageOptionKey::GcsBaseUrl,
        StorageOptionKey::GcsServiceAccountPath,
        StorageOptionKey::GcsServiceAccountKey,
        StorageOptionKey::GcsDataStorageClass,
        StorageOptionKey::HttpConnectTimeout,
        StorageOptionKey::HttpRequestTimeout,
        StorageOptionKey::HttpClientRetries,
        StorageOptionKey::MultipartThreshold,
        StorageOptionKey::MultipartPartSize,
        StorageOptionKey::MultipartConcurrency,
        StorageOptionKey::RetryMaxAttempts,
        StorageOptionKey::RetryInitialBackoff,
        StorageOptionKey::RetryMaxBackoff,
        StorageOptionKey::RetryMaxElapsed,
        StorageOptionKey::AppendOnly,
    ];

    /// The key as written in `key=value` pairs.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageOptionKey::S3Endpoint => "s3.endpoint",
            StorageOptionKey::S3Region => "s3.region",
            StorageOptionKey::S3AllowHttp => "s3.allow-http",
            StorageOptionKey::S3VirtualHostedStyle => "s3.virtual-hosted-style",
            StorageOptionKey::S3AccessKeyId => "s3.access-key-id",
            StorageOptionKey::S3SecretAccessKey => "s3.secret-access-key",
            StorageOptionKey::S3SessionToken => "s3.session-token",
            StorageOptionKey::S3DataStorageClass => "s3.data-storage-class",
            StorageOptionKey::S3ObjectLock => "s3.object-lock",
            StorageOptionKey::GcsBaseUrl => "gcs.base-url",
            StorageOptionKey::GcsServiceAccountPath => "gcs.service-account-path",
            StorageOptionKey::GcsServiceAccountKey => "gcs.service-account-key",
            StorageOptionKey::GcsDataStorageClass => "gcs.data-storage-class",
            StorageOptionKey::HttpConnectTimeout => "http.connect-timeout",
            StorageOptionKey::HttpRequestTimeout => "http.request-timeout",
            StorageOptionKey::HttpClientRetries => "http.client-retries",
            StorageOptionKey::MultipartThreshold => "multipart.threshold",
            StorageOptionKey::MultipartPartSize => "multipart.part-size",
            StorageOptionKey::MultipartConcurrency => "multipart.concurrency",
            StorageOptionKey::RetryMaxAttempts => "retry.max-attempts",
            StorageOptionKey::RetryInitialBackoff => "retry.initial-backoff",
            StorageOptionKey::RetryMaxBackoff => "retry.max-backoff",
            StorageOptionKey::RetryMaxElapsed => "retry.max-elapsed",
            StorageOptionKey::AppendOnly => "append-only",
        }
    }

    /// Whether values of this key are secrets that must not be logged.
    pub fn is_secret(self) -> bool {
        matches!(
            self,
            StorageOptionKey::S3SecretAccessKey
                | StorageOptionKey::S3SessionToken
                | StorageOptionKey::GcsServiceAccountKey
        )
    }
}

impl fmt::Display for StorageOptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StorageOptionKey {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let wanted = s.trim().to_ascii_lowercase().replace('_', "-");
        StorageOptionKey::ALL
            .into_iter()
            .find(|k| k.as_str() == wanted)
            .ok_or_else(|| {
                let known: Vec<&str> = StorageOptionKey::ALL.iter().map(|k| k.as_str()).collect();
                Error::Config(format!(
                    "unknown storage option `{s}`; known options: {}",
                    known.join(", ")
                ))
            })
    }
}

/// A key in a configuration file's option table (`options = { "s3.region"
/// = "..." }`): an unknown key fails while the file is read, so the error
/// points at its line.
impl<'de> Deserialize<'de> for StorageOptionKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl StorageOptions {
    /// Sets one option from its textual value.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the key when the value does not parse
    /// (secrets are not echoed).
    pub fn set(&mut self, key: StorageOptionKey, value: &str) -> Result<()> {
        let value = value.trim();
        let bad = |what: &str| {
            let shown = if key.is_secret() { "***" } else { value };
            Error::Config(format!(
                "invalid value `{shown}` for storage option `{key}`: expected {what}"
            ))
        };
        let text = || Some(value.to_owned());
        match key {
            StorageOptionKey::S3Endpoint => self.s3.endpoint = text(),
            StorageOptionKey::S3Region => self.s3.region = text(),
            StorageOptionKey::S3AllowHttp => {
                self.s3.allow_http = Some(parse_bool(value).ok_or_else(|| bad("true or false"))?);
            }
            StorageOptionKey::S3VirtualHostedStyle => {
                self.s3.virtual_hosted_style =
                    Some(parse_bool(value).ok_or_else(|| bad("true or false"))?);
            }
            StorageOptionKey::S3AccessKeyId => self.s3.access_key_id = text(),
            StorageOptionKey::S3SecretAccessKey => {
                self.s3.secret_access_key = Some(SecretString::from(value));
            }
            StorageOptionKey::S3SessionToken => {
                self.s3.session_token = Some(SecretString::from(value));
            }
            StorageOptionKey::S3DataStorageClass => {
                self.s3.data_storage_class = Some(value.parse()?);
            }
            StorageOptionKey::S3ObjectLock => {
                self.s3.object_lock = Some(value.parse()?);
            }
            StorageOptionKey::GcsDataStorageClass => {
                self.gcs.data_storage_class = Some(value.parse()?);
            }
            StorageOptionKey::GcsBaseUrl => self.gcs.base_url = text(),
            StorageOptionKey::GcsServiceAccountPath => {
                self.gcs.service_account_path = Some(PathBuf::from(value));
            }
            StorageOptionKey::GcsServiceAccountKey => {
                self.gcs.service_account_key = Some(SecretString::from(value));
            }
            StorageOptionKey::HttpConnectTimeout => {
                self.http.connect_timeout =
                    parse_duration(value).ok_or_else(|| bad("a duration such as `5s`"))?;
            }
            StorageOptionKey::HttpRequestTimeout => {
                self.http.request_timeout =
                    parse_duration(value).ok_or_else(|| bad("a duration such as `2m`"))?;
            }
            StorageOptionKey::HttpClientRetries => {
                self.http.client_retries = value.parse().map_err(|_| bad("a whole number"))?;
            }
            StorageOptionKey::MultipartThreshold => {
                self.multipart.threshold =
                    parse_size(value).ok_or_else(|| bad("a size such as `32MiB`"))?;
            }
            StorageOptionKey::MultipartPartSize => {
                self.multipart.part_size =
                    parse_size(value).ok_or_else(|| bad("a size such as `16MiB`"))?;
            }
            StorageOptionKey::MultipartConcurrency => {
                self.multipart.concurrency = value.parse().map_err(|_| bad("a whole number"))?;
            }
            StorageOptionKey::RetryMaxAttempts => {
                self.retry.max_attempts = value.parse().map_err(|_| bad("a whole number"))?;
            }
            StorageOptionKey::RetryInitialBackoff => {
                self.retry.initial_backoff =
                    parse_duration(value).ok_or_else(|| bad("a duration such as `200ms`"))?;
            }
            StorageOptionKey::RetryMaxBackoff => {
                self.retry.max_backoff =
                    parse_duration(value).ok_or_else(|| bad("a duration such as `5s`"))?;
            }
            StorageOptionKey::RetryMaxElapsed => {
                self.retry.max_elapsed =
                    parse_duration(value).ok_or_else(|| bad("a duration such as `30s`"))?;
            }
            StorageOptionKey::AppendOnly => {
                self.append_only = parse_bool(value).ok_or_else(|| bad("true or false"))?;
            }
        }
        Ok(())
    }

    /// Sets one option from a `key=value` pair.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a missing `=`, an unknown key or a bad value.
    pub fn set_pair(&mut self, pair: &str) -> Result<()> {
        let (key, value) = pair.split_once('=').ok_or_else(|| {
            Error::Config(format!(
                "invalid storage option `{}`: expected key=value",
                pair.split_once(':').map_or(pair, |(k, _)| k)
            ))
        })?;
        self.set(key.parse()?, value)
    }

    /// Builds options from `key=value` pairs, later pairs winning.
    ///
    /// # Errors
    ///
    /// As [`StorageOptions::set_pair`].
    pub fn from_pairs<I, S>(pairs: I) -> Result<StorageOptions>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut options = StorageOptions::default();
        for pair in pairs {
            options.set_pair(pair.as_ref())?;
        }
        Ok(options)
    }

    /// Checks values that are valid on their own but not together, or out
    /// of range.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the offending option.
    pub fn validate(&self) -> Result<()> {
        if self.retry.max_attempts == 0 {
            return Err(Error::Config(
                "storage option `retry.max-attempts` must be at least 1".to_owned(),
            ));
        }
        if self.multipart.concurrency == 0 {
            return Err(Error::Config(
                "storage option `multipart.concurrency` must be at least 1".to_owned(),
            ));
        }
        if self.multipart.part_size == 0 {
            return Err(Error::Config(
                "storage option `multipart.part-size` must be at least 1 byte".to_owned(),
            ));
        }
        if self.http.connect_timeout.is_zero() || self.http.request_timeout.is_zero() {
            return Err(Error::Config(
                "storage options `http.connect-timeout` and `http.request-timeout` must be positive".to_owned(),
            ));
        }
        Ok(())
    }

    /// Checks the multipart settings against the minimum part size of a
    /// cloud store (5 MiB for S3 and GCS).
    #[cfg_attr(not(any(feature = "s3", feature = "gcs")), allow(dead_code))]
    pub(crate) fn validate_cloud_parts(&self, backend: &str) -> Result<()> {
        const MIN_PART: u64 = 5 * MIB;
        if self.multipart.part_size < MIN_PART {
            return Err(Error::Config(format!(
                "storage option `multipart.part-size` is {} bytes but {backend} needs parts of at least 5MiB",
                self.multipart.part_size
            )));
        }
        Ok(())
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

fn parse_duration(value: &str) -> Option<Duration> {
    humantime::parse_duration(value).ok()
}

/// Parses `1234`, `64KiB`, `32MiB`, `1GiB`, `10MB` (decimal), `5M` (binary).
pub(crate) fn parse_size(value: &str) -> Option<u64> {
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(split);
    let number: u64 = digits.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return None,
    };
    number.checked_mul(factor)
}

fn format_size(bytes: u64) -> String {
    for (unit, factor) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= factor && bytes % factor == 0 {
            return format!("{}{unit}", bytes / factor);
        }
    }
    bytes.to_string()
}

/// Serde of durations as human-readable text (`5s`, `1m 30s`).
mod duration_text {
    use std::time::Duration;

    use serde::{de, Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&humantime::format_duration(*value).to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text)
            .map_err(|e| de::Error::custom(format!("invalid duration `{text}`: {e}")))
    }
}

/// Serde of byte sizes as a number or text (`32MiB`).
mod size_text {
    use serde::{de, Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }

    // Serde's `with` hands the field by reference.
    #[allow(clippy::trivially_copy_pass_by_ref)]
    pub(super) fn serialize<S: Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_size(*value))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        match Size::deserialize(deserializer)? {
            Size::Bytes(n) => Ok(n),
            Size::Text(text) => super::parse_size(&text).ok_or_else(|| {
                de::Error::custom(format!("invalid size `{text}`: expected for example 32MiB"))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("123"), Some(123));
        assert_eq!(parse_size("5MiB"), Some(5 * MIB));
        assert_eq!(parse_size("5 m"), Some(5 * MIB));
        assert_eq!(parse_size("2kb"), Some(2000));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("5 parsecs"), None);
        assert_eq!(format_size(32 * MIB), "32MiB");
        assert_eq!(format_size(1000), "1000");
    }

    #[test]
    fn storage_classes_parse() {
        assert_eq!(
            "glacier-ir".parse::<S3StorageClass>().unwrap(),
            S3StorageClass::GlacierIr
        );
        assert!("DEEP_ARCHIVE"
            .parse::<S3StorageClass>()
            .unwrap()
            .is_archive());
        assert!("COLD".parse::<S3StorageClass>().is_err());
        assert_eq!(
            "coldline".parse::<GcsStorageClass>().unwrap(),
            GcsStorageClass::Coldline
        );
        let mut o = StorageOptions::default();
        let err = o.set_pair("s3.data-storage-class=ICE").unwrap_err();
        assert!(err.to_string().contains("DEEP_ARCHIVE"), "{err}");
    }

    #[test]
    fn every_key_round_trips() {
        for key in StorageOptionKey::ALL {
            assert_eq!(key.as_str().parse::<StorageOptionKey>().unwrap(), key);
        }
    }
}
