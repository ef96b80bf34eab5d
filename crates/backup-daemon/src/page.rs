//! The status page (`/`): every job with its last and next run and state,
//! sizes and durations over time, restore points, drills with their RTO
//! and RPO, repository sizes and the newest audit records. Rendered on
//! the server from the daemon's state and history; one page with inline
//! style and SVG, no script and no external resource. Pending restore
//! requests come first, with their plans, and approve and deny buttons
//! for admins.

use std::fmt::Write as _;

use backup_ops::report::html::{
    anchor, audit_table, drills_table, escape, failures_list, job_charts, page, repositories_table,
    summary_list, time,
};
use backup_ops::report::{human_seconds, summarize, CaptureWindow, RepositoryUsage};
use chrono::Utc;

use backup_ops::access::{authorize, Action, Identity};

use crate::restores::{RequestState, RestoreRequest};
use crate::state::{JobState, Status};

/// The period the page's numbers cover.
const PERIOD_DAYS: i64 = 30;

fn state_badge(j: &JobState) -> &'static str {
    if j.running {
        "<span class=\"badge b-run\">running</span>"
    } else if j.drilling {
        "<span class=\"badge b-run\">drilling</span>"
    } else if j.consecutive_failures > 0 {
        "<span class=\"badge b-bad\">failing</span>"
    } else if j.last_success.is_some() {
        "<span class=\"badge b-ok\">ok</span>"
    } else {
        "<span class=\"badge b-idle\">no backup yet</span>"
    }
}

/// A job's restorable window and capture state, when its capture has
/// stored a window.
fn window(j: &JobState) -> Option<CaptureWindow> {
    let c = j.capture.as_ref()?;
    Some(CaptureWindow {
        kind: c.kind.clone(),
        from: c.window_start?,
        to: c.window_end?,
        lag_seconds: c.lag_seconds,
        streaming: Some(c.streaming),
        lag_bytes: Some(c.lag_bytes),
        gaps: Some(c.gaps_total),
        last_error: c.last_error.clone(),
    })
}

/// The pending restore requests with their plans; approve and deny
/// buttons (plain forms posting to the API, no script) only for an
/// identity that may approve, and never on its own request.
fn pending_restores(requests: &[RestoreRequest], viewer: &Identity) -> String {
    let pending: Vec<&RestoreRequest> = requests
        .iter()
        .filter(|r| r.state == RequestState::Pending)
        .collect();
    if pending.is_empty() {
        return String::new();
    }
    let may_approve = authorize(viewer, Action::ApproveRestore).is_ok();
    let mut out = String::from(
        "<section id=\"restore-requests\"><h2>Pending restore requests</h2><table><tr><th>Request</th><th>Job</th><th>Requested</th><th>Approvals</th><th>Expires</th><th>Plan</th><th></th></tr>",
    );
    for r in pending {
        let approvers: Vec<&str> = r.approvals.iter().map(|a| a.by.as_str()).collect();
        let plan: String = std::iter::once(escape(&r.plan.summary))
            .chain(r.plan.lines.iter().map(|l| escape(l)))
            .collect::<Vec<_>>()
            .join("<br>");
        let actions = if !may_approve {
            "<span class=\"muted\">approving needs the role admin</span>".to_owned()
        } else if r.requested.by == viewer.name {
            "<span class=\"muted\">your request: another admin approves</span>".to_owned()
        } else {
            format!(
                "<form method=\"post\" action=\"/api/restores/{id}/approve\"><button class=\"approve\" type=\"submit\">Approve</button></form><form method=\"post\" action=\"/api/restores/{id}/deny\"><button class=\"deny\" type=\"submit\">Deny</button></form>",
                id = escape(&r.id)
            )
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{} {}</td><td>{} of {}{}</td><td>{}</td><td class=\"plan\">{plan}</td><td>{actions}</td></tr>",
            escape(&r.id),
            escape(&r.ask.job),
            escape(&r.requested.by),
            time(r.requested.at),
            1 + approvers.len(),
            r.approvals_needed,
            if approvers.is_empty() {
                String::new()
            } else {
                format!(" ({})", escape(&approvers.join(", ")))
            },
            time(r.expires_at),
        );
    }
    out.push_str("</table></section>");
    out
}

/// Renders the page for `viewer` (who sees approve buttons depends on
/// their role).
pub fn render(status: &Status, viewer: &Identity) -> String {
    let now = Utc::now();
    let since = now - chrono::Duration::days(PERIOD_DAYS);
    let states = status.job_states();
    let sizes = status.repo_sizes();
    let space = status.repo_space();
    let repos: Vec<RepositoryUsage> = sizes
        .into_iter()
        .map(|(name, size)| RepositoryUsage {
            free: space.get(&name).map(|s| s.0),
            total: space.get(&name).map(|s| s.1),
            name,
            size,
        })
        .collect();
    let mut body = String::with_capacity(64 * 1024);
    body.push_str(&pending_restores(&status.restores.list(), viewer));
    body.push_str("<section><h2>Jobs</h2><table><tr><th>Job</th><th>State</th><th>Last run</th><th>Next run</th><th>Last success</th><th>Last drill</th><th>Next drill</th><th>Capture</th><th>Added by last run</th></tr>");
    for j in &states {
        let last_run = j.last_run.as_ref().map_or_else(
            || "-".to_owned(),
            |r| {
                format!(
                    "{} <span class=\"{}\">{}</span> <span class=\"muted\">({}, {})</span>",
                    time(r.finished),
                    if r.result == "success" { "ok" } else { "bad" },
                    escape(r.result),
                    human_seconds((r.finished - r.started).num_milliseconds() as f64 / 1000.0),
                    escape(r.trigger)
                )
            },
        );
        let drill = j.last_drill.as_ref().map_or_else(
            || "-".to_owned(),
            |d| {
                format!(
                    "{} <span class=\"{}\">{}</span> RTO {} RPO {}",
                    time(d.finished),
                    if d.ok { "ok" } else { "bad" },
                    if d.ok { "passed" } else { "failed" },
                    d.rto_seconds.map_or_else(|| "-".to_owned(), human_seconds),
                    d.rpo_seconds.map_or_else(|| "-".to_owned(), human_seconds)
                )
            },
        );
        let capture = j.capture.as_ref().map_or_else(
            || "-".to_owned(),
            |c| {
                format!(
                    "<span class=\"{}\">{}</span> lag {}",
                    if c.streaming { "ok" } else { "bad" },
                    if c.streaming { "running" } else { "stopped" },
                    human_seconds(c.lag_seconds)
                )
            },
        );
        let _ = write!(
            body,
            "<tr><td><a href=\"#job-{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{capture}</td><td>{}</td></tr>",
            anchor(&j.name),
            escape(&j.name),
            state_badge(j),
            last_run,
            j.next_run.map_or_else(|| "-".to_owned(), time),
            j.last_success.map_or_else(|| "-".to_owned(), time),
            drill,
            j.next_drill.map_or_else(|| "-".to_owned(), time),
            backup_core::util::human_bytes(j.last_bytes_added)
        );
    }
    body.push_str("</table></section>");
    status.with_history(|h| {
        for j in &states {
            let Some(history) = h.jobs.get_mut(&j.name) else {
                continue;
            };
            // The capture as the daemon sees it now.
            history.capture = window(j);
            let history = &*history;
            let summary = summarize(history, Some(since), now);
            let error = j
                .last_run
                .as_ref()
                .and_then(|r| r.error.as_deref())
                .filter(|_| j.consecutive_failures > 0)
                .map(|e| format!("<p class=\"bad\">Last error: {}</p>", escape(e)))
                .unwrap_or_default();
            let _ = write!(
                body,
                "<section id=\"job-{}\"><h2>{} {}</h2>{error}{}<h3>Last {PERIOD_DAYS} days</h3>{}<h3>Drills</h3>{}{}</section>",
                anchor(&j.name),
                escape(&j.name),
                state_badge(j),
                summary_list(history, &summary),
                job_charts(history),
                drills_table(history, 10),
                failures_list(history, 5)
            );
        }
        let _ = write!(
            body,
            "<section><h2>Repositories</h2>{}</section><section><h2>Recent audit records</h2>{}</section>",
            repositories_table(&repos),
            audit_table(&h.audit, 20)
        );
    });
    page(
        "backupd",
        &format!(
            "{} · {} · {} · backup {}",
            backup_core::util::hostname(),
            backup_ops::report::count(states.len(), "job", "jobs"),
            time(now),
            env!("CARGO_PKG_VERSION")
        ),
        &body,
    )
}
