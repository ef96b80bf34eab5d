//! Names of database objects as snapshot tree names, shared by the
//! database sources and targets.

/// Encodes a database object's name (schema, table, database, collection)
/// as a snapshot tree name: `%`, `/` and NUL are percent-encoded, and so
/// are the dots of `.` and `..`.
pub(crate) fn tree_name(name: &str) -> String {
    if name == "." || name == ".." {
        return name.replace('.', "%2E");
    }
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            '\0' => out.push_str("%00"),
            c => out.push(c),
        }
    }
    out
}
