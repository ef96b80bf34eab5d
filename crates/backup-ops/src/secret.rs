//! Secrets: where to read them from, and values that never reach a log.
//!
//! Values are [`SecretString`]s (the `secrecy` crate): their `Debug`
//! prints `[REDACTED]` and reading one takes an explicit
//! [`ExposeSecret::expose_secret`].

use std::path::PathBuf;

pub use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::error::ConfigError;

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
    /// A secret read from the environment variable `name`.
    pub fn env(name: impl Into<String>) -> Self {
        SecretRef {
            env: Some(name.into()),
            ..SecretRef::default()
        }
    }

    /// A secret read from the first line of `path`.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        SecretRef {
            file: Some(path.into()),
            ..SecretRef::default()
        }
    }

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

    /// Reads the secret; `key` names it in errors (a dotted configuration
    /// key, or a variable or option name).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `key` when the variable is unset, the file
    /// unreadable, the command fails, or the value is empty.
    pub fn resolve(&self, key: &str) -> Result<SecretString, ConfigError> {
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
        Ok(SecretString::from(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted() {
        let s = SecretString::from("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.expose_secret(), "hunter2");
    }

    #[test]
    fn sources() {
        let r = SecretRef {
            command: Some("echo s3cret; echo more".to_owned()),
            ..SecretRef::default()
        };
        assert_eq!(r.resolve("k").unwrap().expose_secret(), "s3cret");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p");
        std::fs::write(&f, "filepw\nignored\n").unwrap();
        assert_eq!(
            SecretRef::file(&f).resolve("k").unwrap().expose_secret(),
            "filepw"
        );
        std::fs::write(&f, "\n").unwrap();
        assert!(SecretRef::file(&f)
            .resolve("k")
            .unwrap_err()
            .to_string()
            .contains("empty"));
        assert!(SecretRef::default().resolve("k").is_err());
        assert!(SecretRef::env("BACKUPD_TEST_SURELY_UNSET")
            .resolve("k")
            .unwrap_err()
            .to_string()
            .contains("not set"));
        let two = SecretRef {
            env: Some("A".into()),
            file: Some("/x".into()),
            command: None,
        };
        assert!(two.validate("k").is_err());
    }
}
