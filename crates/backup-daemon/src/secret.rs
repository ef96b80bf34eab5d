//! Secrets: values that never reach logs, and where to read them from.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use crate::config::ConfigError;

/// A secret string. Its `Debug` and `Display` print `<redacted>`, so a
/// secret inside any configuration or error type cannot end up in a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where a secret comes from: exactly one of an environment variable, a
/// file (its first line) or a command (its first line of output).
///
/// ```toml
/// password = { env = "BACKUP_PASSWORD" }
/// password = { file = "/etc/backupd/repo.pass" }
/// password = { command = "pass show backup/main" }
/// ```
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// Name of an environment variable holding the secret.
    pub env: Option<String>,
    /// A file whose first line is the secret.
    pub file: Option<PathBuf>,
    /// A shell command whose first line of output is the secret.
    pub command: Option<String>,
}

impl SecretRef {
    /// Checks that exactly one source is given.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `key` otherwise.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let n = usize::from(self.env.is_some())
            + usize::from(self.file.is_some())
            + usize::from(self.command.is_some());
        if n == 1 {
            Ok(())
        } else {
            Err(ConfigError::invalid(
                key,
                "give exactly one of `env`, `file` or `command`",
            ))
        }
    }

    /// Reads the secret.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `key` when the variable is unset, the file
    /// unreadable, the command fails, or the value is empty.
    pub fn resolve(&self, key: &str) -> Result<Secret, ConfigError> {
        self.validate(key)?;
        let value = if let Some(var) = &self.env {
            std::env::var(var).map_err(|_| {
                ConfigError::invalid(key, format!("environment variable {var} is not set"))
            })?
        } else if let Some(path) = &self.file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::invalid(key, format!("cannot read {}: {e}", path.display()))
            })?;
            text.lines().next().unwrap_or("").to_owned()
        } else if let Some(cmd) = &self.command {
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(cmd)
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::inherit())
                .output()
                .map_err(|e| ConfigError::invalid(key, format!("cannot run the command: {e}")))?;
            if !out.status.success() {
                return Err(ConfigError::invalid(
                    key,
                    format!("the command exited with {}", out.status),
                ));
            }
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        } else {
            String::new()
        };
        if value.is_empty() {
            return Err(ConfigError::invalid(key, "the secret is empty"));
        }
        Ok(Secret(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn sources() {
        let r = SecretRef {
            command: Some("echo s3cret; echo more".to_owned()),
            ..SecretRef::default()
        };
        assert_eq!(r.resolve("k").unwrap().expose(), "s3cret");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p");
        std::fs::write(&f, "filepw\nignored\n").unwrap();
        let r = SecretRef {
            file: Some(f),
            ..SecretRef::default()
        };
        assert_eq!(r.resolve("k").unwrap().expose(), "filepw");
        let none = SecretRef::default();
        assert!(none.resolve("k").is_err());
        let unset = SecretRef {
            env: Some("BACKUPD_TEST_SURELY_UNSET".to_owned()),
            ..SecretRef::default()
        };
        assert!(unset
            .resolve("k")
            .unwrap_err()
            .to_string()
            .contains("not set"));
    }
}
