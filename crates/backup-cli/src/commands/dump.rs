//! `backup dump`.

use std::io::{IsTerminal, Write};

use anyhow::Result;
use backup_core::snapshot::SnapshotFilter;
use backup_ops::dump::{dump, DumpRequest, DumpShape};
use backup_sources::item::ItemFormat;

use super::{bytes, normalize_source, parse_time};
use crate::cli::DumpArgs;
use crate::context::Ctx;

pub(crate) async fn run(ctx: &Ctx, a: DumpArgs) -> Result<u8> {
    let req = DumpRequest {
        snapshot: a.snapshot.clone(),
        filter: SnapshotFilter {
            source: a.source.as_deref().map(normalize_source),
            ..SnapshotFilter::default()
        },
        path: a.path.clone(),
        format: a.format,
        at: a.at.as_deref().map(parse_time).transpose()?,
        cold: super::tier::cold_read(ctx, &a.cold, false)?,
    };
    let repo = ctx.open().await?;
    let output = a.output.clone();
    let open = Box::new(
        move |shape: DumpShape| -> backup_ops::Result<Box<dyn Write + Send>> {
            match &output {
                // Created only now: a wrong path leaves no empty file.
                Some(path) => {
                    let f = std::fs::File::create(path).map_err(|e| {
                        backup_core::Error::io(format!("creating {}", path.display()), e)
                    })?;
                    Ok(Box::new(std::io::BufWriter::with_capacity(1 << 20, f)))
                }
                None if shape == DumpShape::Tar && std::io::stdout().is_terminal() => {
                    Err(backup_ops::Error::Usage(
                        "a directory is written as a tar archive, not to a terminal: redirect standard output (`> dir.tar`, `| tar -x`) or use --output FILE".to_owned(),
                    ))
                }
                None if matches!(shape, DumpShape::Item(ItemFormat::Bson | ItemFormat::Raw))
                    && std::io::stdout().is_terminal() =>
                {
                    Err(backup_ops::Error::Usage(
                        "BSON and DUMP payloads are binary, not for a terminal: redirect standard output or use --output FILE".to_owned(),
                    ))
                }
                None => Ok(Box::new(std::io::BufWriter::with_capacity(
                    1 << 20,
                    std::io::stdout(),
                ))),
            }
        },
    );
    let outcome = dump(&repo, &req, open, ctx).await?;
    if ctx.global.json {
        // Standard output holds the data: the summary goes to stderr.
        eprintln!(
            "{}",
            serde_json::json!({
                "snapshot": outcome.snapshot.id.to_hex(),
                "format": match outcome.shape {
                    DumpShape::Tar => "tar",
                    DumpShape::Content => "content",
                    DumpShape::Item(f) => f.name(),
                },
                "item": outcome.item.as_ref().map(|i| i.item),
                "name": outcome.item.as_ref().map(|i| i.name.clone()),
                "entries": outcome.entries,
                "bytes": outcome.bytes,
                "cold": outcome.cold,
            })
        );
    } else if ctx.human() && (a.output.is_some() || !std::io::stdout().is_terminal()) {
        let what = match (&outcome.shape, &outcome.item) {
            (DumpShape::Tar, _) => format!("{} entries as tar", outcome.entries),
            (DumpShape::Item(f), Some(i)) if i.item == "key" => format!("key {} as {f}", i.name),
            (DumpShape::Item(f), Some(i)) => format!(
                "{} {} ({} {}) as {f}",
                i.item,
                i.name,
                i.count,
                if i.item == "table" {
                    "rows"
                } else {
                    "documents"
                }
            ),
            _ => "1 file".to_owned(),
        };
        if let Some(cold) = &outcome.cold {
            note!("{}", super::tier::thaw_line(cold, "the dump reads"));
        }
        note!(
            "dumped {what}, {} of content, from snapshot {}",
            bytes(outcome.bytes),
            outcome.snapshot.id.short()
        );
    }
    Ok(0)
}
