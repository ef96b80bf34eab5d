//! Validation of file names handed to a sink.

use backup_core::{Error, FileKind, Result};

/// Checks that `name` is a valid file name of `kind`: one non-empty path
/// component that [`FileKind::name_from_path`] recovers from
/// [`FileKind::path`], not hidden (a leading `.` marks temporary files) and
/// free of control characters and backslashes.
///
/// Every backend applies the same rule, so a repository written to one
/// backend can be copied to another.
pub(crate) fn check_name(kind: FileKind, name: &str) -> Result<()> {
    let round_trips =
        kind == FileKind::Config || kind.name_from_path(&kind.path(name)).as_deref() == Some(name);
    if name.is_empty()
        || name.starts_with('.')
        || name.len() > 200
        || name.contains(['/', '\\'])
        || name.chars().any(char::is_control)
        || !round_trips
    {
        return Err(Error::Config(format!(
            "invalid {kind} file name `{}`",
            name.escape_debug()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name(FileKind::Pack, &"ab".repeat(32)).is_ok());
        assert!(check_name(FileKind::Config, "config").is_ok());
        assert!(check_name(FileKind::Key, "k1").is_ok());
        assert!(check_name(FileKind::Pack, "a").is_err());
        assert!(check_name(FileKind::Key, "").is_err());
        assert!(check_name(FileKind::Key, ".hidden").is_err());
        assert!(check_name(FileKind::Key, "a/b").is_err());
        assert!(check_name(FileKind::Key, "..").is_err());
        assert!(check_name(FileKind::Key, "a\nb").is_err());
    }
}
