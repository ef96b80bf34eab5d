//! An in-process fake of the Google Cloud Storage XML API, for tests.
//!
//! No GCS emulator that accepts the writes of `object_store` can be installed
//! here, so this module implements the part of the XML API that a backup
//! repository uses, following Google's reference
//! (<https://cloud.google.com/storage/docs/xml-api/overview>), as a real
//! HTTP server on 127.0.0.1 keeping objects in memory:
//!
//! | request | operation |
//! |---|---|
//! | `PUT /BUCKET/OBJECT` | upload, with `x-goog-if-generation-match` (`0`: only if absent) |
//! | `PUT /BUCKET/OBJECT` + `x-goog-copy-source: BUCKET/SOURCE` | copy, with the same precondition on the destination |
//! | `GET /BUCKET/OBJECT` (+ `Range: bytes=...`) | download, `206` with `Content-Range` for ranges, `416` past the end |
//! | `HEAD /BUCKET/OBJECT` | metadata |
//! | `DELETE /BUCKET/OBJECT` | delete (`404` when absent) |
//! | `GET /BUCKET?list-type=2&prefix=&delimiter=&start-after=&continuation-token=&max-keys=` | `ListBucketResult` |
//! | `POST /BUCKET/OBJECT?uploads` | initiate a multipart upload |
//! | `PUT /BUCKET/OBJECT?partNumber=N&uploadId=ID` | upload a part |
//! | `POST /BUCKET/OBJECT?uploadId=ID` + `CompleteMultipartUpload` XML | complete (parts of at least 5 MiB but the last) |
//! | `DELETE /BUCKET/OBJECT?uploadId=ID` | abort |
//!
//! Responses carry `x-goog-generation`, `x-goog-metageneration`, `ETag`,
//! `Last-Modified`, `Content-Length` and errors as `<Error><Code>..`
//! documents. Every object write gets a new generation number, so
//! generation preconditions behave as on GCS, atomically.
//!
//! The GCS client of `object_store` is pointed at the fake with a service-account
//! file carrying `gcs_base_url` and `disable_oauth: true`
//! ([`GcsServer::storage_options`] writes one).
//!
//! The server ([`GcsServer`]) and the routing of requests are here; the
//! buckets and objects in memory are in `state`, the parsed request in
//! `request`, the responses in `reply`, and the operations in `objects`
//! (upload, copy, download, delete), `list` and `multipart`.

mod list;
mod multipart;
mod objects;
mod reply;
mod request;
mod state;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use backup_storage::StorageOptions;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;

use self::list::list;
use self::multipart::{abort, complete, initiate, upload_part};
use self::objects::{copy, delete, get, put};
use self::reply::{error, Reply};
use self::request::parse_target;
use self::state::{lock, State};
use crate::server::ServerThread;

/// The bucket created at start.
pub const BUCKET: &str = "backup-test";

/// A running fake; stops and forgets its objects when dropped.
#[derive(Debug)]
pub struct GcsServer {
    server: ServerThread,
    state: Arc<Mutex<State>>,
    dir: tempfile::TempDir,
}

impl GcsServer {
    /// Starts the fake on a free port of 127.0.0.1 with an empty bucket
    /// [`BUCKET`].
    ///
    /// # Panics
    ///
    /// When the server cannot start; the message says why.
    pub fn start() -> GcsServer {
        crate::install_tls_provider();
        let state = Arc::new(Mutex::new(State {
            page_size: 1000,
            ..State::default()
        }));
        lock(&state)
            .buckets
            .insert(BUCKET.to_owned(), BTreeMap::new());
        let shared = Arc::clone(&state);
        let service = service_fn(move |req: Request<Incoming>| {
            let state = Arc::clone(&shared);
            async move { Ok::<_, Infallible>(handle(&state, req).await) }
        });
        let server = ServerThread::start("gcs-fake-server", service);
        let dir = tempfile::Builder::new()
            .prefix("backup-testkit-gcs-")
            .tempdir()
            .unwrap_or_else(|e| panic!("GCS fake: cannot create a temporary directory: {e}"));
        GcsServer { server, state, dir }
    }

    /// The base URL of the XML API, `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// The bucket created at start.
    pub fn bucket(&self) -> &'static str {
        BUCKET
    }

    /// Creates another (empty) bucket.
    pub fn create_bucket(&self, name: &str) {
        lock(&self.state)
            .buckets
            .entry(name.to_owned())
            .or_default();
    }

    /// The repository URL `gs://BUCKET/prefix`.
    pub fn url(&self, prefix: &str) -> String {
        format!("gs://{BUCKET}/{}", prefix.trim_matches('/'))
    }

    /// The service-account JSON that points `object_store` at this fake
    /// without OAuth.
    pub fn service_account_json(&self) -> String {
        format!(
            r#"{{"gcs_base_url": "{}", "disable_oauth": true, "client_email": "", "private_key": "", "private_key_id": ""}}"#,
            self.base_url()
        )
    }

    /// Writes [`GcsServer::service_account_json`] to `path`.
    ///
    /// # Panics
    ///
    /// When the file cannot be written.
    pub fn write_service_account_file(&self, path: &Path) {
        std::fs::write(path, self.service_account_json())
            .unwrap_or_else(|e| panic!("GCS fake: cannot write {}: {e}", path.display()));
    }

    /// The path of a service-account file for this fake, inside the fake's
    /// own temporary directory (written on first use).
    pub fn service_account_path(&self) -> PathBuf {
        let path = self.dir.path().join("service-account.json");
        if !path.exists() {
            self.write_service_account_file(&path);
        }
        path
    }

    /// Storage options that point `backup-storage` at this fake: the
    /// service-account file. See [`crate::test_storage_options`] for the
    /// multipart and retry settings.
    pub fn storage_options(&self) -> StorageOptions {
        let mut options = crate::test_storage_options();
        options.gcs.service_account_path = Some(self.service_account_path());
        options
    }

    /// A sink for the repository under `prefix`, built by
    /// [`backup_storage::build`] (so with the retry layer) from
    /// [`Self::url`] and [`Self::storage_options`].
    ///
    /// # Panics
    ///
    /// When the sink cannot be built.
    pub fn sink(&self, prefix: &str) -> std::sync::Arc<dyn backup_core::Sink> {
        let url = backup_storage::StorageUrl::parse(&self.url(prefix))
            .unwrap_or_else(|e| panic!("GCS test server: bad URL: {e}"));
        backup_storage::build(&url, &self.storage_options())
            .unwrap_or_else(|e| panic!("GCS test server: cannot build a sink: {e}"))
    }

    /// The same settings as `GOOGLE_*` environment variables, for a child
    /// process.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![(
            "GOOGLE_SERVICE_ACCOUNT".to_owned(),
            self.service_account_path().display().to_string(),
        )]
    }

    /// Lists at most `n` objects per page, to exercise pagination.
    pub fn set_page_size(&self, n: usize) {
        lock(&self.state).page_size = n.max(1);
    }

    /// Answers the next `n` requests with `503 Service Unavailable`.
    pub fn fail_next_requests(&self, n: u32) {
        lock(&self.state).failures_left = n;
    }

    /// Every request received so far, as `METHOD /path?query`, followed by
    /// ` [if-generation-match=N]` when it carried that precondition.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.state).requests.clone()
    }

    /// The names of the objects in `bucket`, sorted.
    pub fn object_names(&self, bucket: &str) -> Vec<String> {
        lock(&self.state)
            .buckets
            .get(bucket)
            .map(|objects| objects.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The number of multipart uploads started and not yet completed or
    /// aborted.
    pub fn open_uploads(&self) -> usize {
        lock(&self.state).uploads.len()
    }
}

/// Answers one request: with an injected failure when one is due,
/// otherwise by the operation its method and target name.
async fn handle(state: &Mutex<State>, req: Request<Incoming>) -> Reply {
    let (parts, body) = req.into_parts();
    let line = format!(
        "{} {}{}",
        parts.method,
        parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        parts
            .headers
            .get("x-goog-if-generation-match")
            .and_then(|v| v.to_str().ok())
            .map(|v| format!(" [if-generation-match={v}]"))
            .unwrap_or_default()
    );
    {
        let mut state = lock(state);
        state.requests.push(line);
        if state.failures_left > 0 {
            state.failures_left -= 1;
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "Injected failure.",
            );
        }
    }
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return error(StatusCode::BAD_REQUEST, "IncompleteBody", &e.to_string()),
    };
    let Some(target) = parse_target(parts.uri.path(), parts.uri.query()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidURI",
            "Could not parse the request URI.",
        );
    };
    let mut state = lock(state);
    if !state.buckets.contains_key(&target.bucket) {
        return error(
            StatusCode::NOT_FOUND,
            "NoSuchBucket",
            "The specified bucket does not exist.",
        );
    }
    let headers = &parts.headers;
    match (&parts.method, target.object.is_some()) {
        (&Method::GET, false) if target.param("list-type") == Some("2") => list(&state, &target),
        (_, false) => error(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            "Only list-type=2 listings are supported on buckets.",
        ),
        (&Method::PUT, true) if target.has("uploadId") => upload_part(&mut state, &target, body),
        (&Method::PUT, true) if headers.contains_key("x-goog-copy-source") => {
            copy(&mut state, &target, headers)
        }
        (&Method::PUT, true) => put(&mut state, &target, headers, body),
        (&Method::POST, true) if target.has("uploads") => initiate(&mut state, &target, headers),
        (&Method::POST, true) if target.has("uploadId") => {
            complete(&mut state, &target, headers, &body)
        }
        (&Method::GET, true) => get(&state, &target, headers, true),
        (&Method::HEAD, true) => get(&state, &target, headers, false),
        (&Method::DELETE, true) if target.has("uploadId") => abort(&mut state, &target),
        (&Method::DELETE, true) => delete(&mut state, &target),
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "Unsupported method.",
        ),
    }
}
