//! One table of a logical snapshot as CSV, `COPY` text or `INSERT`
//! statements ([`crate::item`]).
//!
//! The stored parts are `COPY ... TO STDOUT` text (UTF-8): rows end with
//! a newline, fields are separated by tabs, `\N` is NULL and a backslash
//! escapes the rest (`\t`, `\n`, `\\`, ..., octal `\123` and hex `\x41`).
//! CSV follows PostgreSQL's own CSV format: NULL is an empty unquoted
//! field, an empty string is `""`, and a field with a comma, quote,
//! newline or carriage return (or that reads `\.`) is quoted with quotes
//! doubled; the first line names the columns. `INSERT` statements give
//! every value as a string literal (PostgreSQL converts it with the
//! column type's input function, as `COPY` does), with `OVERRIDING
//! SYSTEM VALUE` so identity columns keep their values.

use std::io::{BufRead, BufReader, Write};

use backup_core::reader::SnapshotReader;
use backup_core::tree::Node;
use backup_core::{Error, Result};

use super::{part_name, Metadata, TableMeta};
use crate::item::{one_row, write_blocking, write_error, ItemDump, ItemFormat, OpenItem};
use crate::names::tree_name;

/// Writes the table `path` names (see [`crate::item::dump_item`]).
pub(crate) async fn dump_table(
    snapshot: &SnapshotReader,
    path: &str,
    format: ItemFormat,
    open: OpenItem,
) -> Result<ItemDump> {
    let s = snapshot.snapshot();
    if super::physical::is_physical(&s.metadata) {
        return Err(Error::Config(format!(
            "snapshot {} is a physical base backup: it holds the cluster's data files, not tables one by one; restore it (`backup restore {} --to DIR`, or `--at TIME`) and read the table from the restored server",
            snapshot.id().short(),
            snapshot.id().short()
        )));
    }
    let meta: Metadata =
        serde_json::from_value(s.metadata.clone()).map_err(|e| snapshot.damaged(e))?;
    let (index, _) = one_row(snapshot, path)?;
    let table = meta
        .tables
        .get(index)
        .cloned()
        .ok_or_else(|| snapshot.damaged("a table list shorter than its contents"))?;
    if table.kind == "partitioned" {
        return Err(Error::Config(format!(
            "{} is a partitioned table: its rows are in its partitions (`backup ls {}` lists them); dump each partition",
            table.qualified(),
            snapshot.id().short()
        )));
    }
    let parts = part_nodes(snapshot, &table).await?;
    let reader = snapshot.clone();
    let name = table.qualified();
    let (count, bytes) = write_blocking(format, open, move |out| {
        write_table(&reader, &table, &parts, format, out)
    })
    .await?;
    Ok(ItemDump {
        name,
        item: "table",
        format,
        count,
        bytes,
    })
}

/// The nodes of a table's stored parts, in order.
async fn part_nodes(snapshot: &SnapshotReader, table: &TableMeta) -> Result<Vec<Node>> {
    if table.parts == 0 {
        return Ok(Vec::new());
    }
    let missing = || snapshot.damaged(format!("no data for table {}", table.qualified()));
    let dir = snapshot
        .dir(&["tables", &tree_name(&table.schema), &tree_name(&table.name)])
        .await?
        .ok_or_else(missing)?;
    (0..table.parts)
        .map(|p| dir.get(&part_name(p)).cloned().ok_or_else(missing))
        .collect()
}

/// Writes every part of the table in `format`; returns the rows.
fn write_table(
    reader: &SnapshotReader,
    table: &TableMeta,
    parts: &[Node],
    format: ItemFormat,
    out: &mut dyn Write,
) -> Result<u64> {
    // Rows are assembled here and written in large pieces.
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 17);
    match format {
        ItemFormat::Csv => {
            csv_row(table.columns.iter().map(|c| Some(c.as_bytes())), &mut buf);
        }
        ItemFormat::Sql => {
            writeln!(
                out,
                "-- {} ({} rows) from snapshot {}\nSET standard_conforming_strings = on;\nBEGIN;",
                table.qualified(),
                table.rows,
                reader.id().short()
            )
            .map_err(write_error)?;
        }
        _ => {}
    }
    let insert = if table.columns.is_empty() {
        format!("INSERT INTO {} DEFAULT VALUES;\n", table.quoted())
    } else {
        format!(
            "INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE VALUES (",
            table.quoted(),
            table.column_list()
        )
    };
    let mut rows = 0u64;
    let mut row = Row::default();
    for node in parts {
        let mut content = reader.blocking_content(node);
        let fail = |content: &mut backup_core::reader::ContentReader, e: std::io::Error| {
            content.take_error().unwrap_or_else(|| write_error(e))
        };
        if format == ItemFormat::Copy {
            let n = std::io::copy(&mut content, out).map_err(|e| fail(&mut content, e))?;
            if n != node.size {
                return Err(reader.damaged(format!(
                    "a part of {} holds {n} bytes, its entry says {}",
                    table.qualified(),
                    node.size
                )));
            }
            continue;
        }
        let mut lines = BufReader::with_capacity(1 << 16, &mut content);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = match lines.read_until(b'\n', &mut line) {
                Ok(n) => n,
                Err(e) => {
                    drop(lines);
                    return Err(fail(&mut content, e));
                }
            };
            if n == 0 {
                break;
            }
            if line.pop() != Some(b'\n') {
                return Err(
                    reader.damaged(format!("a part of {} ends inside a row", table.qualified()))
                );
            }
            row.parse(&line).map_err(|e| {
                reader.damaged(format!("row {} of {}: {e}", rows + 1, table.qualified()))
            })?;
            rows += 1;
            if table.columns.is_empty() {
                buf.extend_from_slice(if format == ItemFormat::Sql {
                    insert.as_bytes()
                } else {
                    b"\n"
                });
            } else if row.len() != table.columns.len() {
                return Err(reader.damaged(format!(
                    "row {rows} of {} has {} fields for {} columns",
                    table.qualified(),
                    row.len(),
                    table.columns.len()
                )));
            } else if format == ItemFormat::Csv {
                csv_row(row.fields(), &mut buf);
            } else {
                sql_row(&insert, row.fields(), &mut buf);
            }
            if buf.len() >= 1 << 16 {
                out.write_all(&buf).map_err(write_error)?;
                buf.clear();
            }
        }
        drop(lines);
        if let Some(e) = content.take_error() {
            return Err(e);
        }
        if content.bytes_read() != node.size {
            return Err(reader.damaged(format!(
                "a part of {} holds {} bytes, its entry says {}",
                table.qualified(),
                content.bytes_read(),
                node.size
            )));
        }
    }
    if format == ItemFormat::Copy {
        // Rows are counted by the manifest: copying does not parse them.
        rows = table.rows;
    }
    if format == ItemFormat::Sql {
        buf.extend_from_slice(b"COMMIT;\n");
    }
    out.write_all(&buf).map_err(write_error)?;
    Ok(rows)
}

/// One `COPY` text row split into fields, escapes undone: the values
/// one after another in one buffer, reused from row to row.
#[derive(Debug, Default)]
pub(crate) struct Row {
    data: Vec<u8>,
    /// Per field: its range in `data`, `None` for NULL.
    spans: Vec<Option<(usize, usize)>>,
}

impl Row {
    pub(crate) fn len(&self) -> usize {
        self.spans.len()
    }

    pub(crate) fn fields(&self) -> impl Iterator<Item = Option<&[u8]>> {
        self.spans
            .iter()
            .map(|s| s.map(|(from, to)| &self.data[from..to]))
    }

    /// Splits `line` (without its newline) into fields.
    pub(crate) fn parse(&mut self, line: &[u8]) -> std::result::Result<(), String> {
        self.data.clear();
        self.spans.clear();
        for raw in line.split(|b| *b == b'\t') {
            if raw == b"\\N" {
                self.spans.push(None);
                continue;
            }
            let start = self.data.len();
            if memchr::memchr(b'\\', raw).is_none() {
                self.data.extend_from_slice(raw);
            } else {
                unescape(raw, &mut self.data)?;
            }
            self.spans.push(Some((start, self.data.len())));
        }
        Ok(())
    }
}

/// Appends `raw` to `value` with its backslash escapes undone.
fn unescape(raw: &[u8], value: &mut Vec<u8>) -> std::result::Result<(), String> {
    let mut pos = 0;
    while let Some(&byte) = raw.get(pos) {
        pos += 1;
        if byte != b'\\' {
            value.push(byte);
            continue;
        }
        let Some(&escaped) = raw.get(pos) else {
            return Err("a backslash ends a field".to_owned());
        };
        pos += 1;
        let digit =
            |pos: usize, radix: u32| raw.get(pos).and_then(|d| char::from(*d).to_digit(radix));
        match escaped {
            b'b' => value.push(0x08),
            b'f' => value.push(0x0c),
            b'n' => value.push(b'\n'),
            b'r' => value.push(b'\r'),
            b't' => value.push(b'\t'),
            b'v' => value.push(0x0b),
            b'0'..=b'7' => {
                let mut code = u32::from(escaped - b'0');
                for _ in 0..2 {
                    let Some(d) = digit(pos, 8) else { break };
                    code = code * 8 + d;
                    pos += 1;
                }
                value.push((code & 0xff) as u8);
            }
            b'x' if digit(pos, 16).is_some() => {
                let mut code = 0u32;
                for _ in 0..2 {
                    let Some(d) = digit(pos, 16) else { break };
                    code = code * 16 + d;
                    pos += 1;
                }
                value.push((code & 0xff) as u8);
            }
            other => value.push(other),
        }
    }
    Ok(())
}

/// Appends one CSV line in PostgreSQL's CSV format to `out`.
fn csv_row<'a>(fields: impl Iterator<Item = Option<&'a [u8]>>, out: &mut Vec<u8>) {
    for (i, f) in fields.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let Some(f) = f else { continue };
        let quote = f.is_empty()
            || f == b"\\."
            || f.iter().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'));
        if !quote {
            out.extend_from_slice(f);
            continue;
        }
        push_quoted(out, f, b'"');
    }
    out.push(b'\n');
}

/// Appends `f` between `quote`s, each `quote` inside it doubled.
fn push_quoted(out: &mut Vec<u8>, f: &[u8], quote: u8) {
    out.push(quote);
    for &b in f {
        if b == quote {
            out.push(quote);
        }
        out.push(b);
    }
    out.push(quote);
}

/// Appends one `INSERT` statement to `out`: `insert` ends with `VALUES (`.
fn sql_row<'a>(insert: &str, fields: impl Iterator<Item = Option<&'a [u8]>>, out: &mut Vec<u8>) {
    out.extend_from_slice(insert.as_bytes());
    for (i, f) in fields.enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        let Some(f) = f else {
            out.extend_from_slice(b"NULL");
            continue;
        };
        push_quoted(out, f, b'\'');
    }
    out.extend_from_slice(b");\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(line: &[u8]) -> Vec<Option<Vec<u8>>> {
        let mut row = Row::default();
        row.parse(line).unwrap();
        row.fields().map(|f| f.map(<[u8]>::to_vec)).collect()
    }

    #[test]
    fn copy_text_escapes_are_undone() {
        assert_eq!(
            row(b"1\t\\N\ta\\tb\\nc\\\\d\t\\101\\x42\\7\\q\t"),
            vec![
                Some(b"1".to_vec()),
                None,
                Some(b"a\tb\nc\\d".to_vec()),
                Some(b"AB\x07q".to_vec()),
                Some(Vec::new()),
            ]
        );
        assert!(Row::default().parse(b"a\\").is_err());
    }

    #[test]
    fn csv_quotes_what_postgres_quotes() {
        let mut out = Vec::new();
        let fields: [Option<&[u8]>; 7] = [
            None,
            Some(b""),
            Some(b"plain"),
            Some(b"a,b"),
            Some(b"say \"hi\""),
            Some(b"l1\nl2"),
            Some(b"\\."),
        ];
        csv_row(fields.into_iter(), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            ",\"\",plain,\"a,b\",\"say \"\"hi\"\"\",\"l1\nl2\",\"\\.\"\n"
        );
    }

    #[test]
    fn sql_literals_double_quotes() {
        let mut out = Vec::new();
        let fields: [Option<&[u8]>; 2] = [Some(b"it's"), None];
        sql_row(
            "INSERT INTO t (a, b) VALUES (",
            fields.into_iter(),
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "INSERT INTO t (a, b) VALUES ('it''s', NULL);\n"
        );
    }
}
