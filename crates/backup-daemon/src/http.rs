//! The HTTP interface: `/healthz`, `/metrics`, `/api/jobs` and the run
//! trigger.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::daemon::Daemon;

type Shared = State<Arc<Daemon>>;

/// The routes.
pub fn router(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/jobs", get(jobs))
        .route("/api/jobs/{name}", get(one_job))
        .route("/api/jobs/{name}/run", post(run_job))
        .with_state(daemon)
}

/// Serves until `stop` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    daemon: Arc<Daemon>,
    stop: CancellationToken,
) {
    let app = router(daemon);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
    {
        tracing::error!(error = %e, "The HTTP server failed.");
    }
}

async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

async fn jobs(State(d): Shared) -> impl IntoResponse {
    Json(d.job_states())
}

async fn one_job(State(d): Shared, Path(name): Path<String>) -> Response {
    match d.job_states().into_iter().find(|j| j.name == name) {
        Some(j) => Json(j).into_response(),
        None => error(StatusCode::NOT_FOUND, &format!("no job named `{name}`")),
    }
}

fn error(status: StatusCode, msg: &str) -> Response {
    (status, Json(serde_json::json!({"error": msg}))).into_response()
}

/// Compares in time independent of where the strings differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn run_job(State(d): Shared, Path(name): Path<String>, headers: HeaderMap) -> Response {
    let Some(token) = d.api_token() else {
        return error(
            StatusCode::FORBIDDEN,
            "the run trigger is disabled: set daemon.api_token in the configuration",
        );
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !same(given.as_bytes(), token.expose().as_bytes()) {
        tracing::warn!(job = %name, "Refused a run request without a valid token.");
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(serde_json::json!({"error": "a valid bearer token is required"})),
        )
            .into_response();
    }
    match d.trigger(&name) {
        Ok(true) => {
            tracing::info!(job = %name, "Run requested over HTTP.");
            (
                StatusCode::ACCEPTED,
                Json(serde_json::json!({"job": name, "queued": true})),
            )
                .into_response()
        }
        Ok(false) => error(StatusCode::CONFLICT, "a run of this job is already queued"),
        Err(e) => error(StatusCode::NOT_FOUND, &e),
    }
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text exposition of the daemon's state.
pub fn render_metrics(d: &Daemon) -> String {
    let now = Utc::now();
    let jobs = d.job_states();
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let per_job = |f: &dyn Fn(&crate::daemon::JobState) -> Option<f64>| -> Vec<(String, f64)> {
        jobs.iter()
            .filter_map(|j| f(j).map(|v| (format!("{{job=\"{}\"}}", label(&j.name)), v)))
            .collect()
    };
    family(
        "backupd_job_last_success_timestamp_seconds",
        "gauge",
        "Time of the job's newest snapshot (Unix seconds).",
        per_job(&|j| j.last_success.map(|t| t.timestamp() as f64)),
    );
    family(
        "backupd_job_seconds_since_last_success",
        "gauge",
        "Age of the job's newest snapshot.",
        per_job(&|j| {
            j.last_success
                .map(|t| (now - t).num_milliseconds() as f64 / 1000.0)
        }),
    );
    family(
        "backupd_job_max_age_seconds",
        "gauge",
        "The job's maximum acceptable backup age.",
        per_job(&|j| j.max_age_seconds.map(|s| s as f64)),
    );
    family(
        "backupd_job_last_duration_seconds",
        "gauge",
        "Duration of the job's last successful run.",
        per_job(&|j| Some(j.last_duration_seconds)),
    );
    family(
        "backupd_job_last_bytes_read",
        "gauge",
        "Bytes read from the source by the last successful run.",
        per_job(&|j| Some(j.last_bytes_read as f64)),
    );
    family(
        "backupd_job_last_bytes_added",
        "gauge",
        "New bytes the last successful run added to the repository (before compression).",
        per_job(&|j| Some(j.last_bytes_added as f64)),
    );
    family(
        "backupd_job_last_bytes_stored",
        "gauge",
        "Bytes the last successful run stored (compressed and encrypted).",
        per_job(&|j| Some(j.last_bytes_stored as f64)),
    );
    family(
        "backupd_job_successes_total",
        "counter",
        "Successful runs since the daemon started.",
        per_job(&|j| Some(j.successes_total as f64)),
    );
    family(
        "backupd_job_failures_total",
        "counter",
        "Failed runs since the daemon started.",
        per_job(&|j| Some(j.failures_total as f64)),
    );
    family(
        "backupd_job_consecutive_failures",
        "gauge",
        "Failed runs since the last success.",
        per_job(&|j| Some(j.consecutive_failures as f64)),
    );
    family(
        "backupd_job_slots_skipped_total",
        "counter",
        "Scheduled runs left to another daemon sharing the repository.",
        per_job(&|j| Some(j.slots_skipped_total as f64)),
    );
    family(
        "backupd_job_running",
        "gauge",
        "1 while a run of the job is in progress.",
        per_job(&|j| Some(if j.running { 1.0 } else { 0.0 })),
    );
    family(
        "backupd_job_next_run_timestamp_seconds",
        "gauge",
        "Next scheduled run (Unix seconds).",
        per_job(&|j| j.next_run.map(|t| t.timestamp() as f64)),
    );
    family(
        "backupd_job_last_verify_ok",
        "gauge",
        "1 when the last verification found no problem, 0 when it failed.",
        per_job(&|j| j.last_verify.as_ref().map(|v| if v.ok { 1.0 } else { 0.0 })),
    );
    family(
        "backupd_repository_size_bytes",
        "gauge",
        "Stored size of the repository (packs, index, snapshots, keys).",
        d.repo_sizes()
            .into_iter()
            .map(|(r, s)| (format!("{{repository=\"{}\"}}", label(&r)), s as f64))
            .collect(),
    );
    let n = d.notifier();
    family(
        "backupd_notifications_delivered_total",
        "counter",
        "Notifications delivered.",
        vec![(String::new(), n.delivered() as f64)],
    );
    family(
        "backupd_notifications_failed_total",
        "counter",
        "Notifications given up on after retries.",
        vec![(String::new(), n.failed() as f64)],
    );
    out
}

async fn metrics(State(d): Shared) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render_metrics(&d),
    )
}
