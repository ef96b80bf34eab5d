//! The HTTP interface: the status page (`/`), `/healthz`, `/metrics`,
//! `/api/jobs` and the run trigger.
//!
//! Access: the status page and `/api/jobs` follow one rule (`may_read`:
//! the API token or the read token, unless `status_page = "public"`);
//! the run trigger takes the API token only; `/healthz` and `/metrics`
//! are open, like every exporter's (they carry no errors, URLs or
//! secrets), so bind `listen` to an address only monitoring reaches.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use backup_ops::config::StatusPage;
use backup_ops::secret::{ExposeSecret, SecretString};
use prometheus_client::registry::Registry;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::state::{Status, TriggerError};

/// What the routes read.
#[derive(Clone)]
struct Api {
    status: Arc<Status>,
    registry: Arc<Registry>,
}

type Shared = State<Api>;

/// The routes over the daemon's state.
pub fn router(status: Arc<Status>) -> Router {
    let registry = Arc::new(crate::metrics::registry(Arc::clone(&status)));
    Router::new()
        .route("/", get(status_page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/jobs", get(jobs))
        .route("/api/jobs/{name}", get(one_job))
        .route("/api/jobs/{name}/run", post(run_job))
        .with_state(Api { status, registry })
}

/// Serves until `stop` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    status: Arc<Status>,
    stop: CancellationToken,
) {
    let app = router(status);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
    {
        tracing::error!(error = %e, "The HTTP server failed.");
    }
}

/// Whether the request carries `token`: as a bearer token, or as the
/// password of HTTP basic authentication (any user name), which browsers
/// ask for themselves.
fn presents(headers: &HeaderMap, token: &SecretString) -> bool {
    use base64::Engine as _;
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let given: Vec<u8> = if let Some(b) = value.strip_prefix("Bearer ") {
        b.as_bytes().to_vec()
    } else if let Some(b) = value.strip_prefix("Basic ") {
        match base64::engine::general_purpose::STANDARD.decode(b.trim()) {
            Ok(pair) => match pair.iter().position(|c| *c == b':') {
                Some(i) => pair[i + 1..].to_vec(),
                None => return false,
            },
            Err(_) => return false,
        }
    } else {
        return false;
    };
    // Compared in constant time: how much of a guess matches must not
    // show in the response time.
    given
        .as_slice()
        .ct_eq(token.expose_secret().as_bytes())
        .into()
}

/// The one rule for reading the daemon's state, the status page (`/`)
/// and `/api/jobs` alike: with `status_page = "public"` anyone may; else
/// the request must carry the API token or the read token (as a bearer
/// token or the password of basic authentication). `Some` is the answer
/// to a request that may not.
fn may_read(api: &Api, headers: &HeaderMap, what: &str) -> Option<Response> {
    if api.status.page_access() == StatusPage::Public {
        return None;
    }
    let tokens: Vec<SecretString> = [api.status.api_token(), api.status.read_token()]
        .into_iter()
        .flatten()
        .collect();
    if tokens.is_empty() {
        return Some(error(
            StatusCode::FORBIDDEN,
            &format!("{what} needs a token: set daemon.api_token or daemon.read_token, or daemon.status_page = \"public\""),
        ));
    }
    if tokens.iter().any(|t| presents(headers, t)) {
        return None;
    }
    tracing::warn!(what, "Refused a read without a valid token.");
    Some(
        (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            "Basic realm=\"backupd\", charset=\"UTF-8\"",
        )],
        "a token is required: the API token or the read token, as a bearer token or as the password of basic authentication\n",
    )
            .into_response(),
    )
}

async fn status_page(State(api): Shared, headers: HeaderMap) -> Response {
    if api.status.page_access() == StatusPage::Off {
        return error(
            StatusCode::NOT_FOUND,
            "the status page is off (daemon.status_page = \"off\")",
        );
    }
    if let Some(refused) = may_read(&api, &headers, "the status page") {
        return refused;
    }
    let started = std::time::Instant::now();
    let body = crate::page::render(&api.status);
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8".to_owned()),
            (header::CACHE_CONTROL, "no-store".to_owned()),
            (
                header::HeaderName::from_static("server-timing"),
                format!("render;dur={ms:.2}"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; img-src data:".to_owned(),
            ),
        ],
        body,
    )
        .into_response()
}

async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

async fn jobs(State(api): Shared, headers: HeaderMap) -> Response {
    if let Some(refused) = may_read(&api, &headers, "/api/jobs") {
        return refused;
    }
    Json(api.status.job_states()).into_response()
}

async fn one_job(State(api): Shared, Path(name): Path<String>, headers: HeaderMap) -> Response {
    if let Some(refused) = may_read(&api, &headers, "/api/jobs") {
        return refused;
    }
    match api.status.job(&name) {
        Some(j) => Json(j).into_response(),
        None => error(StatusCode::NOT_FOUND, &format!("no job named `{name}`")),
    }
}

fn error(status: StatusCode, msg: &str) -> Response {
    (status, Json(serde_json::json!({"error": msg}))).into_response()
}

async fn run_job(State(api): Shared, Path(name): Path<String>, headers: HeaderMap) -> Response {
    let Some(token) = api.status.api_token() else {
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
    // Compared in constant time: how much of a guess matches must not
    // show in the response time.
    let matches: bool = given
        .as_bytes()
        .ct_eq(token.expose_secret().as_bytes())
        .into();
    if !matches {
        tracing::warn!(job = %name, "Refused a run request without a valid token.");
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(serde_json::json!({"error": "a valid bearer token is required"})),
        )
            .into_response();
    }
    match api.status.trigger(&name) {
        Ok(()) => {
            tracing::info!(job = %name, "Run requested over HTTP.");
            (
                StatusCode::ACCEPTED,
                Json(serde_json::json!({"job": name, "queued": true})),
            )
                .into_response()
        }
        Err(TriggerError::AlreadyQueued) => {
            error(StatusCode::CONFLICT, "a run of this job is already queued")
        }
        Err(TriggerError::NoSuchJob(job)) => {
            error(StatusCode::NOT_FOUND, &format!("no job named `{job}`"))
        }
    }
}

/// `OpenMetrics` for scrapers that ask for it (Prometheus does), the
/// Prometheus text format otherwise (`curl`, `promtool check metrics`).
async fn metrics(State(api): Shared, headers: HeaderMap) -> impl IntoResponse {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    if crate::metrics::wants_openmetrics(accept) {
        (
            [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
            crate::metrics::render(&api.registry),
        )
    } else {
        (
            [(header::CONTENT_TYPE, crate::metrics::TEXT_CONTENT_TYPE)],
            crate::metrics::render_text(&api.registry),
        )
    }
}
