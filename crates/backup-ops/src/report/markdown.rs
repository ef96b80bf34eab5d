//! Reports as Markdown: the same numbers as the HTML page, in tables.

use std::fmt::Write as _;

use backup_core::util::human_bytes;

use super::{html::time, human_seconds, Report};

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), human_seconds)
}

fn met(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => " (met)",
        Some(false) => " (MISSED)",
        None => "",
    }
}

/// A report as Markdown.
#[allow(clippy::many_single_char_names)] // r, j, h, s: the report and its parts.
pub(super) fn report(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Backup report\n\n{} to {}\n",
        r.since.map_or_else(|| "everything".to_owned(), time),
        time(r.generated)
    );
    out.push_str("| Job | Runs | Success rate | Last success | Worst RPO | Last RTO | Drills passed | Restorable |\n");
    out.push_str("|---|---|---|---|---|---|---|---|\n");
    for j in &r.jobs {
        let s = &j.summary;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {}{} | {}{} | {}/{} | {} |",
            cell(&j.history.name),
            s.runs,
            s.success_rate
                .map_or_else(|| "-".to_owned(), |x| format!("{:.1}%", x * 100.0)),
            s.last_success.map_or_else(|| "-".to_owned(), time),
            secs(s.worst_rpo_seconds),
            met(s.rpo_met),
            secs(s.last_rto_seconds),
            met(s.rto_met),
            s.drills_passed,
            s.drills,
            super::restorable_brief(s)
        );
    }
    for j in &r.jobs {
        let (h, s) = (&j.history, &j.summary);
        let _ = writeln!(out, "\n## {}\n", cell(&h.name));
        let _ = writeln!(out, "- Source: {} ({})", h.source, h.kind);
        let _ = writeln!(
            out,
            "- Runs: {} ({} succeeded, {} failed); durations: median {}, longest {}",
            s.runs,
            s.succeeded,
            s.failed,
            secs(s.median_duration_seconds),
            secs(s.max_duration_seconds)
        );
        let _ = writeln!(
            out,
            "- Sizes: newest snapshot {}, added {}, stored {}",
            s.latest_size.map_or_else(|| "-".to_owned(), human_bytes),
            human_bytes(s.bytes_added),
            human_bytes(s.bytes_stored)
        );
        let _ = writeln!(
            out,
            "- RPO: {} {}{}{}; RTO: last {}, worst {}{}{}",
            if s.capture.is_some() {
                "capture lag"
            } else {
                "worst gap"
            },
            secs(s.worst_rpo_seconds),
            h.objectives
                .rpo_seconds
                .map(|o| format!(", objective {}", human_seconds(o)))
                .unwrap_or_default(),
            met(s.rpo_met),
            secs(s.last_rto_seconds),
            secs(s.worst_rto_seconds),
            h.objectives
                .rto_seconds
                .map(|o| format!(", objective {}", human_seconds(o)))
                .unwrap_or_default(),
            met(s.rto_met)
        );
        let _ = writeln!(
            out,
            "- Verifications: {} ({} failed); restorable: {}{}",
            s.verifications,
            s.verifications_failed,
            super::restorable_brief(s),
            match (&s.capture, s.oldest_point, s.newest_point) {
                (Some(c), _, _) => format!(" from {} to {}", time(c.from), time(c.to)),
                (None, Some(a), Some(b)) => format!(" from {} to {}", time(a), time(b)),
                _ => String::new(),
            }
        );
        if !h.drills.is_empty() {
            out.push_str("\n| Drill | Result | RTO | RPO | Problems |\n|---|---|---|---|---|\n");
            for d in h.drills.iter().rev().take(10) {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} |",
                    time(d.time),
                    if d.ok { "passed" } else { "FAILED" },
                    secs(d.rto_seconds),
                    secs(d.rpo_seconds),
                    cell(&d.problems.join("; "))
                );
            }
        }
        let failed: Vec<_> = h.runs.iter().rev().filter(|r| !r.ok).take(5).collect();
        if !failed.is_empty() {
            out.push_str("\nFailed runs:\n\n");
            for f in failed {
                let _ = writeln!(
                    out,
                    "- {}: {}",
                    time(f.time),
                    cell(f.error.as_deref().unwrap_or(""))
                );
            }
        }
    }
    if !r.restores.is_empty() {
        out.push_str("\n## Restores\n\n| Time | Job | Target | Snapshot | Result | Request | Requested by | Approved by | Run by |\n|---|---|---|---|---|---|---|---|---|\n");
        for x in &r.restores {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                time(x.time),
                cell(x.job.as_deref().unwrap_or("-")),
                cell(&x.target),
                cell(&x.snapshot),
                if x.ok { "restored" } else { "FAILED" },
                cell(x.request.as_deref().unwrap_or("-")),
                cell(&x.requested_by),
                cell(&if x.approved_by.is_empty() {
                    "-".to_owned()
                } else {
                    x.approved_by.join(", ")
                }),
                cell(&x.executed_by)
            );
        }
    }
    if !r.repositories.is_empty() {
        out.push_str("\n## Repositories\n\n| Repository | Size | Free |\n|---|---|---|\n");
        for repo in &r.repositories {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                cell(&repo.name),
                human_bytes(repo.size),
                repo.free.map_or_else(|| "-".to_owned(), human_bytes)
            );
        }
    }
    out
}
