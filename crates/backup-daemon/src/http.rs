//! The HTTP interface: the status page (`/`), `/healthz`, `/metrics`,
//! `/api/jobs`, `/api/audit`, the run trigger and restore requests
//! (`/api/restores`: list and request; `/api/restores/ID`: one;
//! `/api/restores/ID/approve` and `/deny`; see [`crate::restores`]).
//!
//! Access: every route but `/healthz` and `/metrics` goes through
//! `guard`, which proves who is asking (`prove`: the API token is an
//! admin, the read token a viewer, `[[daemon.users]]` carry their own
//! role and are proven by their token or, over TLS, by the subject of
//! their client certificate) and asks [`backup_ops::access::authorize`], the one decision
//! over the one permission table. A request without a valid token gets
//! 401; an identity whose role is too low gets 403 naming the role needed.
//! Both refusals of a presented token are recorded in the local audit log
//! (`api-refused`). `/healthz` and `/metrics` are open, like every
//! exporter's (they carry no errors, URLs or secrets), so bind `listen` to
//! an address only monitoring reaches. With `status_page = "public"`
//! anyone reads the status page and `/api/jobs` as `anonymous`.

use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use backup_ops::access::{authorize, Action, CertSubject, Identity, Role};
use backup_ops::audit::AuditLog;
use backup_ops::config::StatusPage;
use backup_ops::secret::{ExposeSecret, SecretString};
use prometheus_client::registry::Registry;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::state::{Status, TriggerError};
use crate::tls::{Peer, TlsListener};

/// What the routes read.
#[derive(Clone)]
struct Api {
    status: Arc<Status>,
    registry: Arc<Registry>,
    audit: AuditLog,
}

type Shared = State<Api>;

/// The routes over the daemon's state; refusals are recorded in `audit`.
pub fn router(status: Arc<Status>, audit: AuditLog) -> Router {
    let registry = Arc::new(crate::metrics::registry(Arc::clone(&status)));
    Router::new()
        .route("/", get(status_page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/jobs", get(jobs))
        .route("/api/jobs/{name}", get(one_job))
        .route("/api/jobs/{name}/run", post(run_job))
        .route("/api/audit", get(audit_lines))
        .route("/api/restores", get(list_restores).post(request_restore))
        .route("/api/restores/{id}", get(one_restore))
        .route("/api/restores/{id}/approve", post(approve_restore))
        .route("/api/restores/{id}/deny", post(deny_restore))
        .with_state(Api {
            status,
            registry,
            audit,
        })
}

/// Serves until `stop` is cancelled: HTTPS with `tls` (see
/// [`crate::tls`]), plain HTTP without.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    status: Arc<Status>,
    audit: AuditLog,
    stop: CancellationToken,
) {
    let app = router(status, audit).into_make_service_with_connect_info::<Peer>();
    let done = stop.clone();
    let result = match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { done.cancelled().await })
                .await
        }
        Some(config) => match TlsListener::new(listener, config, stop.clone()) {
            Ok(l) => {
                axum::serve(l, app)
                    .with_graceful_shutdown(async move { done.cancelled().await })
                    .await
            }
            Err(e) => Err(std::io::Error::other(e.to_string())),
        },
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "The HTTP server failed.");
    }
}

/// The token a request carries: as a bearer token, or as the password of
/// HTTP basic authentication (any user name), which browsers ask for
/// themselves. `None` when it carries none (or an unreadable header).
fn presented(headers: &HeaderMap) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())?;
    if let Some(b) = value.strip_prefix("Bearer ") {
        Some(b.trim().as_bytes().to_vec())
    } else if let Some(b) = value.strip_prefix("Basic ") {
        let pair = base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .ok()?;
        let i = pair.iter().position(|c| *c == b':')?;
        Some(pair[i + 1..].to_vec())
    } else {
        None
    }
}

/// Whether `given` is `token`, compared in constant time: how much of a
/// guess matches must not show in the response time.
fn same(given: &[u8], token: &SecretString) -> bool {
    given.ct_eq(token.expose_secret().as_bytes()).into()
}

/// Who a token proves: the API token (an admin), the read token (a
/// viewer), or a `[[daemon.users]]` entry whose Argon2 hash it matches
/// (verified off the async threads, once per token and configuration).
/// `None` for a token nobody has.
async fn identify(status: &Arc<Status>, given: Vec<u8>) -> Option<Identity> {
    if status.api_token().is_some_and(|t| same(&given, &t)) {
        return Some(Identity {
            name: "api_token".to_owned(),
            role: Role::Admin,
        });
    }
    if status.read_token().is_some_and(|t| same(&given, &t)) {
        return Some(Identity {
            name: "read_token".to_owned(),
            role: Role::Viewer,
        });
    }
    let users = status.users();
    if users.is_empty() {
        return None;
    }
    let digest: [u8; 32] = Sha256::digest(&given).into();
    if let Some(known) = status.proven(&digest) {
        return Some(known);
    }
    let found = tokio::task::spawn_blocking(move || {
        let token = String::from_utf8(given).ok()?;
        users
            .iter()
            .find(|u| {
                u.token_hash
                    .as_deref()
                    .is_some_and(|h| backup_ops::access::verify_token(h, &token))
            })
            .map(|u| Identity {
                name: u.name.clone(),
                role: u.role,
            })
    })
    .await
    .ok()
    .flatten()?;
    status.remember(digest, found.clone());
    Some(found)
}

/// Who the user with the certificate subject `cert` is: the
/// `[[daemon.users]]` entry whose `cert_subject` it is. `None` for a
/// subject nobody has.
fn identify_cert(status: &Status, cert: &CertSubject) -> Option<Identity> {
    status
        .users()
        .iter()
        .find(|u| u.cert_subject.as_deref().is_some_and(|c| cert.is(c)))
        .map(|u| Identity {
            name: u.name.clone(),
            role: u.role,
        })
}

/// What the routes need to know about a request to decide on it: the
/// method and path (for refusals), the headers (the token) and, over TLS,
/// the subject of the verified client certificate.
struct Asker {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    cert: Option<CertSubject>,
}

impl<S: Send + Sync> FromRequestParts<S> for Asker {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Asker {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
            cert: parts
                .extensions
                .get::<ConnectInfo<Peer>>()
                .and_then(|c| c.0.cert.clone()),
        })
    }
}

/// Records a refusal in the local audit log (never the token).
async fn audit_refusal(api: &Api, asker: &Asker, details: serde_json::Value) {
    let mut details = details;
    details["method"] = serde_json::json!(asker.method.as_str());
    details["path"] = serde_json::json!(asker.uri.path());
    if let Some(cert) = &asker.cert {
        details["certificate"] = serde_json::json!(cert.dn);
    }
    let user = details["identity"].as_str().map(str::to_owned);
    for w in api
        .audit
        .record_as(None, user.as_deref(), "api-refused", false, details)
        .await
    {
        tracing::warn!("{w}");
    }
}

/// Who a request proves to be: by its token, by its client certificate,
/// or by both when they name the same user. `Err` is the refusal (401,
/// audited) of a token or certificate nobody has, or of the two naming
/// different users; `Ok(None)` is a request that presented neither.
async fn prove(api: &Api, asker: &Asker, action: Action) -> Result<Option<Identity>, Response> {
    let refuse = |reason: &'static str| async move {
        tracing::warn!(
            path = asker.uri.path(),
            certificate = asker.cert.as_ref().map(|c| c.dn.as_str()),
            "Refused a request: {reason}."
        );
        audit_refusal(
            api,
            asker,
            serde_json::json!({"reason": reason, "action": action.as_str()}),
        )
        .await;
        unauthorized()
    };
    let by_cert = match &asker.cert {
        Some(cert) => match identify_cert(&api.status, cert) {
            Some(who) => Some(who),
            None => return Err(refuse("unknown certificate subject").await),
        },
        None => None,
    };
    let by_token = match presented(&asker.headers) {
        Some(given) => match identify(&api.status, given).await {
            Some(who) => Some(who),
            None => return Err(refuse("unknown token").await),
        },
        None => None,
    };
    match (by_cert, by_token) {
        (Some(c), Some(t)) if c.name != t.name => {
            Err(refuse("the certificate and the token are of different users").await)
        }
        (c, t) => Ok(t.or(c)),
    }
}

/// Whether a browser sent the request from another site's page: its
/// `Sec-Fetch-Site` says so, or its `Origin` is not the host it was sent
/// to. A browser adds its cached basic-auth credentials and its client
/// certificate to such a request by itself, so without this check any
/// page an admin visits could approve restores. Clients that are not
/// browsers send neither header.
fn cross_site(asker: &Asker) -> bool {
    let get = |name: &str| {
        asker
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if let Some(site) = get("sec-fetch-site") {
        if !matches!(site.as_str(), "same-origin" | "none") {
            return true;
        }
    }
    match get("origin") {
        None => false,
        Some(origin) => {
            let authority = origin.split_once("://").map_or("", |(_, a)| a);
            get("host").is_none_or(|host| !authority.eq_ignore_ascii_case(&host))
        }
    }
}

/// The one gate of the API: proves who asks (a token, a client
/// certificate) and whether their role may do `action`. `Err` is the
/// response to send instead: 401 without a valid token or certificate,
/// 403 naming the role needed.
async fn guard(api: &Api, asker: &Asker, action: Action) -> Result<Identity, Response> {
    let page = api.status.page_access();
    if action == Action::ReadStatus && page == StatusPage::Public {
        return Ok(Identity {
            name: "anonymous".to_owned(),
            role: Role::Viewer,
        });
    }
    if asker.method != Method::GET && asker.method != Method::HEAD && cross_site(asker) {
        tracing::warn!(
            path = asker.uri.path(),
            "Refused a cross-site request (another site's page posting with the browser's credentials)."
        );
        audit_refusal(
            api,
            asker,
            serde_json::json!({"reason": "cross-site request", "action": action.as_str()}),
        )
        .await;
        return Err(error(
            StatusCode::FORBIDDEN,
            "a cross-site request: only the daemon's own pages and clients without an Origin header may change anything",
        ));
    }
    let Some(identity) = prove(api, asker, action).await? else {
        if api.status.api_token().is_none()
            && api.status.read_token().is_none()
            && api.status.users().is_empty()
        {
            return Err(error(
                StatusCode::FORBIDDEN,
                &format!("{} needs a token or a client certificate: configure [[daemon.users]], daemon.api_token or daemon.read_token (or daemon.status_page = \"public\" for the status page)", asker.uri.path()),
            ));
        }
        return Err(unauthorized());
    };
    match authorize(&identity, action) {
        Ok(()) => Ok(identity),
        Err(refusal) => {
            tracing::warn!(
                identity = %identity.name,
                role = %identity.role,
                needed = %refusal.needed,
                path = asker.uri.path(),
                "Refused a request: the role is too low."
            );
            audit_refusal(
                api,
                asker,
                serde_json::json!({
                    "identity": identity.name,
                    "role": identity.role,
                    "action": action.as_str(),
                    "needed": refusal.needed,
                }),
            )
            .await;
            Err((
                StatusCode::FORBIDDEN,
                Json(serde_json::json!({
                    "error": refusal.to_string(),
                    "needed": refusal.needed,
                    "role": identity.role,
                    "identity": identity.name,
                })),
            )
                .into_response())
        }
    }
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            "Basic realm=\"backupd\", charset=\"UTF-8\"",
        )],
        "a token is required: a user's token, the API token or the read token, as a bearer token or as the password of basic authentication\n",
    )
        .into_response()
}

async fn status_page(State(api): Shared, asker: Asker) -> Response {
    if api.status.page_access() == StatusPage::Off {
        return error(
            StatusCode::NOT_FOUND,
            "the status page is off (daemon.status_page = \"off\")",
        );
    }
    let viewer = match guard(&api, &asker, Action::ReadStatus).await {
        Ok(who) => who,
        Err(refused) => return refused,
    };
    let started = std::time::Instant::now();
    let body = crate::page::render(&api.status, &viewer);
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
                "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'"
                    .to_owned(),
            ),
        ],
        body,
    )
        .into_response()
}

async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

async fn jobs(State(api): Shared, asker: Asker) -> Response {
    if let Err(refused) = guard(&api, &asker, Action::ReadStatus).await {
        return refused;
    }
    Json(api.status.job_states()).into_response()
}

/// The newest audit records the daemon knows of, newest first.
async fn audit_lines(State(api): Shared, asker: Asker) -> Response {
    if let Err(refused) = guard(&api, &asker, Action::ReadAudit).await {
        return refused;
    }
    Json(api.status.with_history(|h| h.audit.clone())).into_response()
}

async fn one_job(State(api): Shared, Path(name): Path<String>, asker: Asker) -> Response {
    if let Err(refused) = guard(&api, &asker, Action::ReadStatus).await {
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

async fn run_job(State(api): Shared, Path(name): Path<String>, asker: Asker) -> Response {
    let who = match guard(&api, &asker, Action::RunJob).await {
        Ok(who) => who,
        Err(refused) => return refused,
    };
    match api.status.trigger(&name, Some(&who.name)) {
        Ok(()) => {
            tracing::info!(job = %name, identity = %who.name, "Run requested over HTTP.");
            (
                StatusCode::ACCEPTED,
                Json(serde_json::json!({"job": name, "queued": true, "by": who.name})),
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

/// Every restore request, newest first.
async fn list_restores(State(api): Shared, asker: Asker) -> Response {
    if let Err(refused) = guard(&api, &asker, Action::ReadStatus).await {
        return refused;
    }
    Json(api.status.restores.list()).into_response()
}

async fn one_restore(State(api): Shared, Path(id): Path<String>, asker: Asker) -> Response {
    if let Err(refused) = guard(&api, &asker, Action::ReadStatus).await {
        return refused;
    }
    match api.status.restores.get(&id) {
        Some(r) => Json(r).into_response(),
        None => error(StatusCode::NOT_FOUND, &format!("no restore request `{id}`")),
    }
}

/// Sends `command` to the restore desk and turns its answer into a
/// response with `ok` as the success status.
async fn ask_desk(
    api: &Api,
    ok: StatusCode,
    command: impl FnOnce(
        tokio::sync::oneshot::Sender<Result<crate::restores::RestoreRequest, (u16, String)>>,
    ) -> crate::restores::DeskCommand,
) -> Response {
    let Some(desk) = api.status.restores.desk() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is starting: try again",
        );
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    if desk.send(command(tx)).await.is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is shutting down",
        );
    }
    match rx.await {
        Ok(Ok(r)) => (ok, Json(r)).into_response(),
        Ok(Err((code, msg))) => error(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &msg,
        ),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is shutting down",
        ),
    }
}

/// `POST /api/restores` with a [`crate::restores::RestoreAsk`] as JSON:
/// 201 with the request (pending, or approved and starting).
async fn request_restore(State(api): Shared, asker: Asker, body: axum::body::Bytes) -> Response {
    let who = match guard(&api, &asker, Action::RequestRestore).await {
        Ok(who) => who,
        Err(refused) => return refused,
    };
    let ask: crate::restores::RestoreAsk = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("the body is not a restore request: {e} (send JSON: {{\"job\": NAME, \"snapshot\", \"at\", \"to\", \"include\", \"exclude\", \"drop\"}})"),
            )
        }
    };
    ask_desk(&api, StatusCode::CREATED, |reply| {
        crate::restores::DeskCommand::Create {
            ask,
            by: who.name,
            reply,
        }
    })
    .await
}

/// Whether the request is the submission of an HTML form (the status
/// page's approve and deny buttons).
fn from_form(asker: &Asker) -> bool {
    asker
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

async fn decide_restore(api: &Api, id: String, asker: &Asker, approve: bool) -> Response {
    let who = match guard(api, asker, Action::ApproveRestore).await {
        Ok(who) => who,
        Err(refused) => return refused,
    };
    let answer = ask_desk(api, StatusCode::OK, |reply| {
        crate::restores::DeskCommand::Decide {
            id,
            by: who.name,
            approve,
            reply,
        }
    })
    .await;
    // A button of the status page: back to the page, which shows the
    // request's new state.
    if from_form(asker) && answer.status().is_success() {
        return (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    }
    answer
}

async fn approve_restore(State(api): Shared, Path(id): Path<String>, asker: Asker) -> Response {
    decide_restore(&api, id, &asker, true).await
}

async fn deny_restore(State(api): Shared, Path(id): Path<String>, asker: Asker) -> Response {
    decide_restore(&api, id, &asker, false).await
}
