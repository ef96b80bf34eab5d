//! Parsing repository URLs into a typed [`StorageUrl`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use backup_core::redact::redact_userinfo;
use backup_core::{Error, Result};

use secrecy::{ExposeSecret, SecretString};

/// Where a repository lives, parsed from a user-supplied string.
///
/// | written as | meaning |
/// |---|---|
/// | `/srv/backup`, `backup`, `./backup` | a local directory (relative paths stay relative) |
/// | `file:///srv/backup` | a local directory (absolute path only) |
/// | `s3://bucket/prefix` | Amazon S3 or an S3-compatible store |
/// | `gs://bucket/prefix` | Google Cloud Storage |
/// | `memory:` | a fresh, empty in-memory store |
/// | `memory://name` | the in-memory store `name`, shared within the process |
///
/// An S3 URL may carry an access key in its user-info part
/// (`s3://KEY_ID:SECRET@bucket/prefix`); the secret is kept in a
/// [`SecretString`] and never shown: [`fmt::Display`] and [`StorageUrl::redacted`]
/// print the URL without it. Prefer the environment (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`) over credentials in URLs, which tend to leak into
/// shell histories.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageUrl {
    /// A directory on a local (or mounted) file system.
    Local {
        /// The directory, as written (relative paths are not resolved).
        path: PathBuf,
    },
    /// An S3 bucket and key prefix.
    S3 {
        /// The bucket name.
        bucket: String,
        /// The key prefix without leading or trailing `/` (may be empty).
        prefix: String,
        /// Credentials written in the URL, if any.
        credentials: Option<UrlCredentials>,
    },
    /// A Google Cloud Storage bucket and object prefix.
    Gcs {
        /// The bucket name.
        bucket: String,
        /// The object prefix without leading or trailing `/` (may be empty).
        prefix: String,
    },
    /// An in-memory store, for tests and experiments.
    Memory {
        /// `Some(name)` for a store shared by every sink built from the same
        /// name in this process; `None` for a fresh private store.
        name: Option<String>,
    },
}

/// An access key written in the user-info part of an `s3://` URL.
#[derive(Clone)]
pub struct UrlCredentials {
    /// The access key id (not secret, but redacted from messages anyway).
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: SecretString,
}

impl Eq for UrlCredentials {}

impl PartialEq for UrlCredentials {
    fn eq(&self, other: &Self) -> bool {
        self.access_key_id == other.access_key_id
            && self.secret_access_key.expose_secret() == other.secret_access_key.expose_secret()
    }
}

impl fmt::Debug for UrlCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UrlCredentials(redacted)")
    }
}

impl StorageUrl {
    /// Parses a repository location.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the (redacted) input when it is empty, has an
    /// unknown scheme, lacks a bucket, or has a malformed path.
    pub fn parse(input: &str) -> Result<StorageUrl> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(Error::Config(
                "empty repository URL: give a directory, file:///path, s3://bucket/prefix, gs://bucket/prefix or memory:".to_owned(),
            ));
        }
        match split_scheme(trimmed) {
            None => Ok(StorageUrl::Local {
                path: PathBuf::from(trimmed),
            }),
            Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
                "file" => parse_file(trimmed, rest),
                "s3" | "s3a" => {
                    let (credentials, bucket, prefix) = parse_bucket_url(trimmed, rest, true)?;
                    Ok(StorageUrl::S3 {
                        bucket,
                        prefix,
                        credentials,
                    })
                }
                "gs" | "gcs" => {
                    let (_, bucket, prefix) = parse_bucket_url(trimmed, rest, false)?;
                    Ok(StorageUrl::Gcs { bucket, prefix })
                }
                "memory" | "mem" => parse_memory(trimmed, rest),
                other => Err(Error::Config(format!(
                    "unsupported repository URL `{}`: unknown scheme `{other}` (supported: a directory path, file://, s3://, gs://, memory:)",
                    redact_userinfo(trimmed)
                ))),
            },
        }
    }

    /// The URL with any credentials removed, safe for logs, manifests and
    /// audit records.
    pub fn redacted(&self) -> String {
        self.to_string()
    }

    /// The name of the backend this URL selects: `local`, `s3`, `gcs` or
    /// `memory`.
    pub fn backend(&self) -> &'static str {
        match self {
            StorageUrl::Local { .. } => "local",
            StorageUrl::S3 { .. } => "s3",
            StorageUrl::Gcs { .. } => "gcs",
            StorageUrl::Memory { .. } => "memory",
        }
    }
}

impl FromStr for StorageUrl {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        StorageUrl::parse(s)
    }
}

impl fmt::Display for StorageUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageUrl::Local { path } => write!(f, "{}", path.display()),
            StorageUrl::S3 { bucket, prefix, .. } => write_bucket(f, "s3", bucket, prefix),
            StorageUrl::Gcs { bucket, prefix } => write_bucket(f, "gs", bucket, prefix),
            StorageUrl::Memory { name: None } => f.write_str("memory:"),
            StorageUrl::Memory { name: Some(name) } => write!(f, "memory://{name}"),
        }
    }
}

impl fmt::Debug for StorageUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorageUrl({self})")
    }
}

fn write_bucket(
    f: &mut fmt::Formatter<'_>,
    scheme: &str,
    bucket: &str,
    prefix: &str,
) -> fmt::Result {
    if prefix.is_empty() {
        write!(f, "{scheme}://{bucket}")
    } else {
        write!(f, "{scheme}://{bucket}/{prefix}")
    }
}

/// Splits `scheme:rest` when `input` starts with a URL scheme. Plain paths
/// (including ones containing a colon later on, like `backups/a:b`) give
/// `None`.
fn split_scheme(input: &str) -> Option<(&str, &str)> {
    let colon = input.find(':')?;
    let scheme = &input[..colon];
    let mut chars = scheme.chars();
    let first = chars.next()?;
    let valid = first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !valid {
        return None;
    }
    let rest = &input[colon + 1..];
    // `name:` alone is a URL only for the schemes we know without `//`;
    // anything else without `//` is a relative path such as `backup:2024`.
    let known_without_slashes = matches!(
        scheme.to_ascii_lowercase().as_str(),
        "memory" | "mem" | "file" | "s3" | "gs"
    );
    if rest.starts_with("//") || known_without_slashes {
        Some((scheme, rest))
    } else {
        None
    }
}

fn parse_file(input: &str, rest: &str) -> Result<StorageUrl> {
    let Some(after) = rest.strip_prefix("//") else {
        return Err(Error::Config(format!(
            "malformed repository URL `{input}`: write file:///absolute/path (three slashes) or a plain path"
        )));
    };
    let (host, path) = match after.find('/') {
        Some(i) => (&after[..i], &after[i..]),
        None => (after, ""),
    };
    if !(host.is_empty() || host.eq_ignore_ascii_case("localhost")) {
        return Err(Error::Config(format!(
            "malformed repository URL `{input}`: file URLs cannot name a remote host `{host}`; write file:///absolute/path"
        )));
    }
    if path.is_empty() {
        return Err(Error::Config(format!(
            "malformed repository URL `{input}`: no path after file://"
        )));
    }
    if path.contains(['?', '#']) {
        return Err(Error::Config(format!(
            "malformed repository URL `{input}`: query strings and fragments are not supported in file URLs"
        )));
    }
    let decoded = percent_decode(path).ok_or_else(|| {
        Error::Config(format!(
            "malformed repository URL `{input}`: invalid percent-encoding in the path"
        ))
    })?;
    Ok(StorageUrl::Local {
        path: Path::new(&decoded).to_path_buf(),
    })
}

fn parse_memory(input: &str, rest: &str) -> Result<StorageUrl> {
    let name = match rest.strip_prefix("//") {
        None if rest.is_empty() => None,
        None => Some(rest),
        Some(name) => Some(name.trim_end_matches('/')),
    };
    match name {
        None | Some("") => Ok(StorageUrl::Memory { name: None }),
        Some(name) if name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) => {
            Ok(StorageUrl::Memory {
                name: Some(name.to_owned()),
            })
        }
        Some(_) => Err(Error::Config(format!(
            "malformed repository URL `{input}`: an in-memory store name may only use letters, digits, `-`, `_` and `.`"
        ))),
    }
}

type BucketParts = (Option<UrlCredentials>, String, String);

fn parse_bucket_url(input: &str, rest: &str, allow_credentials: bool) -> Result<BucketParts> {
    let shown = redact_userinfo(input);
    let Some(after) = rest.strip_prefix("//") else {
        return Err(Error::Config(format!(
            "malformed repository URL `{shown}`: expected `scheme://bucket/prefix`"
        )));
    };
    if after.contains(['?', '#']) {
        return Err(Error::Config(format!(
            "malformed repository URL `{shown}`: query strings and fragments are not supported; pass settings as storage options or environment variables"
        )));
    }
    let (authority, path) = match after.find('/') {
        Some(i) => (&after[..i], &after[i + 1..]),
        None => (after, ""),
    };
    let (userinfo, bucket) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let credentials = match userinfo {
        None => None,
        Some(_) if !allow_credentials => {
            return Err(Error::Config(format!(
                "malformed repository URL `{shown}`: credentials cannot be given in this URL; use the backend's usual environment (for example GOOGLE_APPLICATION_CREDENTIALS)"
            )))
        }
        Some(info) => {
            let (id, secret) = info.split_once(':').ok_or_else(|| {
                Error::Config(format!(
                    "malformed repository URL `{shown}`: credentials in a URL must be `KEY_ID:SECRET@`"
                ))
            })?;
            let decode = |s: &str| {
                percent_decode(s).ok_or_else(|| {
                    Error::Config(format!(
                        "malformed repository URL `{shown}`: invalid percent-encoding in the credentials"
                    ))
                })
            };
            Some(UrlCredentials {
                access_key_id: decode(id)?,
                secret_access_key: SecretString::from(decode(secret)?),
            })
        }
    };
    if bucket.is_empty() {
        return Err(Error::Config(format!(
            "malformed repository URL `{shown}`: missing bucket name (expected `scheme://bucket/prefix`)"
        )));
    }
    if !bucket
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(Error::Config(format!(
            "malformed repository URL `{shown}`: invalid bucket name `{bucket}` (letters, digits, `.`, `-` and `_` only)"
        )));
    }
    let prefix = path.trim_matches('/');
    for segment in prefix.split('/').filter(|_| !prefix.is_empty()) {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(Error::Config(format!(
                "malformed repository URL `{shown}`: invalid prefix `{prefix}` (empty, `.` or `..` path segments)"
            )));
        }
        if segment.chars().any(char::is_control) {
            return Err(Error::Config(format!(
                "malformed repository URL `{shown}`: control characters in the prefix"
            )));
        }
    }
    Ok((credentials, bucket.to_owned(), prefix.to_owned()))
}

/// Removes the user-info part of a URL-like string, for error messages about
/// input that did not even parse.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b").as_deref(), Some("a b"));
        assert_eq!(percent_decode("a%2"), None);
        assert_eq!(percent_decode("%zz"), None);
    }
}
