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

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use backup_storage::StorageOptions;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use percent_encoding::{percent_decode_str, utf8_percent_encode, NON_ALPHANUMERIC};
use serde::Deserialize;

use crate::server::ServerThread;

/// The bucket created at start.
pub const BUCKET: &str = "backup-test";

/// The smallest part GCS accepts in a multipart upload, the last excepted.
const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

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

#[derive(Debug, Default)]
struct State {
    buckets: BTreeMap<String, BTreeMap<String, Object>>,
    uploads: HashMap<String, Upload>,
    generation: i64,
    upload_counter: u64,
    page_size: usize,
    failures_left: u32,
    requests: Vec<String>,
}

impl State {
    fn next_generation(&mut self) -> i64 {
        // Generations are microsecond timestamps on GCS; keep them
        // increasing even when the clock does not move.
        let now = Utc::now().timestamp_micros();
        self.generation = now.max(self.generation + 1);
        self.generation
    }
}

#[derive(Debug, Clone)]
struct Object {
    data: Bytes,
    generation: i64,
    metageneration: i64,
    updated: DateTime<Utc>,
    etag: String,
    content_type: String,
}

#[derive(Debug)]
struct Upload {
    bucket: String,
    key: String,
    content_type: String,
    parts: BTreeMap<u32, (Bytes, String)>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The parsed target of a request.
struct Target {
    bucket: String,
    object: Option<String>,
    query: Vec<(String, String)>,
}

impl Target {
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn has(&self, name: &str) -> bool {
        self.query.iter().any(|(k, _)| k == name)
    }
}

type Reply = Response<Full<Bytes>>;

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

fn parse_target(path: &str, query: Option<&str>) -> Option<Target> {
    let path = path.strip_prefix('/')?;
    let (bucket, object) = match path.split_once('/') {
        Some((bucket, object)) if !object.is_empty() => (bucket, Some(object)),
        Some((bucket, _)) => (bucket, None),
        None => (path, None),
    };
    let decode = |s: &str| {
        percent_decode_str(s)
            .decode_utf8()
            .ok()
            .map(std::borrow::Cow::into_owned)
    };
    let query = query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((decode(&k.replace('+', " "))?, decode(&v.replace('+', " "))?))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Target {
        bucket: decode(bucket)?,
        object: match object {
            Some(o) => Some(decode(o)?),
            None => None,
        },
        query,
    })
}

/// Checks `x-goog-if-generation-match` against the current object.
fn precondition(headers: &HeaderMap, current: Option<&Object>) -> Result<(), Box<Reply>> {
    let Some(value) = headers.get("x-goog-if-generation-match") else {
        return Ok(());
    };
    let Some(wanted) = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
    else {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "Invalid x-goog-if-generation-match.",
        )));
    };
    let holds = match current {
        None => wanted == 0,
        Some(object) => object.generation == wanted,
    };
    if holds {
        Ok(())
    } else {
        Err(Box::new(error(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold.",
        )))
    }
}

fn etag_of(data: &[u8]) -> String {
    format!("\"{}\"", &backup_core::Id::hash(data).to_hex()[..32])
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned()
}

fn store(state: &mut State, bucket: &str, key: &str, data: Bytes, content_type: String) -> Object {
    let generation = state.next_generation();
    let object = Object {
        etag: etag_of(&data),
        data,
        generation,
        metageneration: 1,
        updated: Utc::now(),
        content_type,
    };
    if let Some(objects) = state.buckets.get_mut(bucket) {
        objects.insert(key.to_owned(), object.clone());
    }
    object
}

fn object<'a>(state: &'a State, target: &Target) -> Option<&'a Object> {
    state
        .buckets
        .get(&target.bucket)?
        .get(target.object.as_deref()?)
}

fn put(state: &mut State, target: &Target, headers: &HeaderMap, body: Bytes) -> Reply {
    if let Err(reply) = precondition(headers, object(state, target)) {
        return *reply;
    }
    let key = target.object.clone().unwrap_or_default();
    let stored = store(state, &target.bucket, &key, body, content_type(headers));
    with_object_headers(Response::builder().status(StatusCode::OK), &stored)
        .body(Full::new(Bytes::new()))
        .unwrap_or_else(|_| internal())
}

fn copy(state: &mut State, target: &Target, headers: &HeaderMap) -> Reply {
    let source = headers
        .get("x-goog-copy-source")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let source = source.trim_start_matches('/');
    let Some((bucket, key)) = source.split_once('/') else {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "Invalid x-goog-copy-source.",
        );
    };
    let decode = |s: &str| {
        percent_decode_str(s)
            .decode_utf8()
            .ok()
            .map(std::borrow::Cow::into_owned)
    };
    let (Some(bucket), Some(key)) = (decode(bucket), decode(key)) else {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "Invalid x-goog-copy-source.",
        );
    };
    let Some(source) = state
        .buckets
        .get(&bucket)
        .and_then(|o| o.get(&key))
        .cloned()
    else {
        return error(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            "The specified key does not exist.",
        );
    };
    if let Err(reply) = precondition(headers, object(state, target)) {
        return *reply;
    }
    let dest = target.object.clone().unwrap_or_default();
    let stored = store(
        state,
        &target.bucket,
        &dest,
        source.data,
        source.content_type,
    );
    let body = format!(
        "<?xml version='1.0' encoding='UTF-8'?><CopyObjectResult><LastModified>{}</LastModified><ETag>{}</ETag></CopyObjectResult>",
        stored.updated.to_rfc3339_opts(SecondsFormat::Millis, true),
        xml_escape(&stored.etag)
    );
    xml_reply(
        with_object_headers(Response::builder().status(StatusCode::OK), &stored),
        body,
    )
}

fn get(state: &State, target: &Target, headers: &HeaderMap, with_body: bool) -> Reply {
    if target
        .param("generation")
        .is_some_and(|g| object(state, target).is_none_or(|o| o.generation.to_string() != g))
    {
        return error(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            "The specified key does not exist.",
        );
    }
    let Some(object) = object(state, target) else {
        return if with_body {
            error(
                StatusCode::NOT_FOUND,
                "NoSuchKey",
                "The specified key does not exist.",
            )
        } else {
            empty(StatusCode::NOT_FOUND)
        };
    };
    if let Some(wanted) = headers
        .get(http::header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        if wanted.trim() != "*" && wanted.trim() != object.etag {
            return error(
                StatusCode::PRECONDITION_FAILED,
                "PreconditionFailed",
                "At least one of the pre-conditions you specified did not hold.",
            );
        }
    }
    if let Some(wanted) = headers
        .get(http::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        if wanted.trim() == "*" || wanted.trim() == object.etag {
            return empty(StatusCode::NOT_MODIFIED);
        }
    }
    let size = object.data.len() as u64;
    let range = match headers
        .get(http::header::RANGE)
        .and_then(|v| v.to_str().ok())
    {
        None => None,
        Some(text) => match parse_range(text, size) {
            Ok(range) => Some(range),
            Err(()) => {
                return error(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "InvalidRange",
                    "The requested range cannot be satisfied.",
                )
            }
        },
    };
    let mut builder = with_object_headers(Response::builder(), object)
        .header("x-goog-stored-content-length", size)
        .header(http::header::CONTENT_TYPE, &object.content_type)
        .header(http::header::ACCEPT_RANGES, "bytes");
    let data = match range {
        Some((start, end)) => {
            builder = builder.status(StatusCode::PARTIAL_CONTENT).header(
                http::header::CONTENT_RANGE,
                format!("bytes {start}-{end}/{size}"),
            );
            object.data.slice(start as usize..=end as usize)
        }
        None => object.data.clone(),
    };
    builder = builder.header(http::header::CONTENT_LENGTH, data.len());
    let body = if with_body { data } else { Bytes::new() };
    builder.body(Full::new(body)).unwrap_or_else(|_| internal())
}

/// Parses `bytes=a-b`, `bytes=a-` or `bytes=-n` into an inclusive range.
fn parse_range(text: &str, size: u64) -> Result<(u64, u64), ()> {
    let spec = text.trim().strip_prefix("bytes=").ok_or(())?;
    let (first, last) = spec.split_once('-').ok_or(())?;
    let (start, end) = match (first.trim(), last.trim()) {
        ("", n) => {
            let n: u64 = n.parse().map_err(|_| ())?;
            if n == 0 {
                return Err(());
            }
            (size.saturating_sub(n), size.checked_sub(1).ok_or(())?)
        }
        (a, "") => (a.parse().map_err(|_| ())?, size.checked_sub(1).ok_or(())?),
        (a, b) => {
            let a: u64 = a.parse().map_err(|_| ())?;
            let b: u64 = b.parse().map_err(|_| ())?;
            if b < a {
                return Err(());
            }
            (a, b.min(size.saturating_sub(1)))
        }
    };
    if start >= size {
        return Err(());
    }
    Ok((start, end))
}

fn delete(state: &mut State, target: &Target) -> Reply {
    let key = target.object.as_deref().unwrap_or("");
    let removed = state
        .buckets
        .get_mut(&target.bucket)
        .and_then(|objects| objects.remove(key));
    match removed {
        Some(_) => empty(StatusCode::NO_CONTENT),
        None => error(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            "The specified key does not exist.",
        ),
    }
}

/// One entry of a listing, in key order: an object, or a common prefix
/// when a delimiter groups keys.
enum Entry<'a> {
    Object(&'a str, &'a Object),
    Prefix(String),
}

fn list(state: &State, target: &Target) -> Reply {
    let Some(objects) = state.buckets.get(&target.bucket) else {
        return error(
            StatusCode::NOT_FOUND,
            "NoSuchBucket",
            "The specified bucket does not exist.",
        );
    };
    let prefix = target.param("prefix").unwrap_or("");
    let delimiter = target.param("delimiter").filter(|d| !d.is_empty());
    let max_keys = target
        .param("max-keys")
        .and_then(|m| m.parse::<usize>().ok())
        .unwrap_or(usize::MAX)
        .min(state.page_size)
        .max(1);
    let token = match target.param("continuation-token") {
        Some(token) => match decode_token(token) {
            Some(key) => Some(key),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "InvalidArgument",
                    "Invalid continuation token.",
                )
            }
        },
        None => None,
    };
    let after = match (token, target.param("start-after")) {
        (Some(t), Some(s)) => Some(if t.as_str() >= s { t } else { s.to_owned() }),
        (Some(t), None) => Some(t),
        (None, Some(s)) => Some(s.to_owned()),
        (None, None) => None,
    };

    let mut entries: Vec<Entry<'_>> = Vec::new();
    for (key, object) in objects.range(prefix.to_owned()..) {
        if !key.starts_with(prefix) {
            break;
        }
        let rest = &key[prefix.len()..];
        match delimiter.and_then(|d| rest.find(d).map(|i| (d, i))) {
            Some((d, i)) => {
                let common = format!("{prefix}{}{d}", &rest[..i]);
                if !matches!(entries.last(), Some(Entry::Prefix(p)) if *p == common) {
                    entries.push(Entry::Prefix(common));
                }
            }
            None => entries.push(Entry::Object(key, object)),
        }
    }
    let key_of = |e: &Entry<'_>| match e {
        Entry::Object(k, _) => (*k).to_owned(),
        Entry::Prefix(p) => p.clone(),
    };
    let remaining: Vec<&Entry<'_>> = entries
        .iter()
        .filter(|e| {
            after
                .as_ref()
                .is_none_or(|a| key_of(e).as_str() > a.as_str())
        })
        .collect();
    let page = &remaining[..remaining.len().min(max_keys)];
    let truncated = remaining.len() > page.len();

    let mut xml = String::from("<?xml version='1.0' encoding='UTF-8'?><ListBucketResult xmlns='http://doc.s3.amazonaws.com/2006-03-01'>");
    let _ = write!(
        xml,
        "<Name>{}</Name><Prefix>{}</Prefix><KeyCount>{}</KeyCount><MaxKeys>{max_keys}</MaxKeys><IsTruncated>{truncated}</IsTruncated>",
        xml_escape(&target.bucket),
        xml_escape(prefix),
        page.len()
    );
    for entry in page {
        match entry {
            Entry::Object(key, object) => write!(
                xml,
                "<Contents><Key>{}</Key><Generation>{}</Generation><MetaGeneration>{}</MetaGeneration><LastModified>{}</LastModified><ETag>{}</ETag><Size>{}</Size></Contents>",
                xml_escape(key),
                object.generation,
                object.metageneration,
                object.updated.to_rfc3339_opts(SecondsFormat::Millis, true),
                xml_escape(&object.etag),
                object.data.len()
            ),
            Entry::Prefix(p) => write!(xml, "<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>", xml_escape(p)),
        }
        .unwrap_or_default();
    }
    if truncated {
        if let Some(last) = page.last() {
            let _ = write!(
                xml,
                "<NextContinuationToken>{}</NextContinuationToken>",
                encode_token(&key_of(last))
            );
        }
    }
    xml.push_str("</ListBucketResult>");
    xml_reply(Response::builder().status(StatusCode::OK), xml)
}

/// Continuation tokens are opaque to clients: hex of the last key.
fn encode_token(key: &str) -> String {
    key.bytes().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

fn decode_token(token: &str) -> Option<String> {
    if token.len() % 2 != 0 {
        return None;
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

fn initiate(state: &mut State, target: &Target, headers: &HeaderMap) -> Reply {
    state.upload_counter += 1;
    let generation = state.next_generation();
    let id = format!("upload-{}-{generation}", state.upload_counter);
    let key = target.object.clone().unwrap_or_default();
    state.uploads.insert(
        id.clone(),
        Upload {
            bucket: target.bucket.clone(),
            key: key.clone(),
            content_type: content_type(headers),
            parts: BTreeMap::new(),
        },
    );
    let xml = format!(
        "<?xml version='1.0' encoding='UTF-8'?><InitiateMultipartUploadResult xmlns='http://s3.amazonaws.com/doc/2006-03-01/'><Bucket>{}</Bucket><Key>{}</Key><UploadId>{}</UploadId></InitiateMultipartUploadResult>",
        xml_escape(&target.bucket),
        xml_escape(&key),
        xml_escape(&id)
    );
    xml_reply(Response::builder().status(StatusCode::OK), xml)
}

fn find_upload<'a>(
    state: &'a mut State,
    target: &Target,
) -> Result<(String, &'a mut Upload), Box<Reply>> {
    let id = target.param("uploadId").unwrap_or("").to_owned();
    match state.uploads.get_mut(&id) {
        Some(upload)
            if upload.bucket == target.bucket
                && Some(upload.key.as_str()) == target.object.as_deref() =>
        {
            Ok((id, upload))
        }
        _ => Err(Box::new(error(
            StatusCode::NOT_FOUND,
            "NoSuchUpload",
            "The requested upload was not found.",
        ))),
    }
}

fn upload_part(state: &mut State, target: &Target, body: Bytes) -> Reply {
    let Some(number) = target
        .param("partNumber")
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| (1..=10_000).contains(n))
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "Invalid partNumber.",
        );
    };
    let (_, upload) = match find_upload(state, target) {
        Ok(found) => found,
        Err(reply) => return *reply,
    };
    let etag = etag_of(&body);
    upload.parts.insert(number, (body, etag.clone()));
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::ETAG, etag)
        .body(Full::new(Bytes::new()))
        .unwrap_or_else(|_| internal())
}

#[derive(Deserialize)]
struct CompleteRequest {
    #[serde(rename = "Part", default)]
    parts: Vec<CompletePart>,
}

#[derive(Deserialize)]
struct CompletePart {
    #[serde(rename = "PartNumber")]
    number: u32,
    #[serde(rename = "ETag")]
    etag: String,
}

fn complete(state: &mut State, target: &Target, headers: &HeaderMap, body: &[u8]) -> Reply {
    let request: CompleteRequest = match std::str::from_utf8(body)
        .ok()
        .and_then(|text| quick_xml::de::from_str(text).ok())
    {
        Some(request) => request,
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                "MalformedXML",
                "Invalid CompleteMultipartUpload body.",
            )
        }
    };
    if request.parts.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "At least one part is required.",
        );
    }
    let current = object(state, target).cloned();
    let (id, upload) = match find_upload(state, target) {
        Ok(found) => found,
        Err(reply) => return *reply,
    };
    let mut data = Vec::new();
    let mut previous = 0;
    let count = request.parts.len();
    for (index, part) in request.parts.iter().enumerate() {
        if part.number <= previous {
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidPartOrder",
                "Parts must be in ascending order.",
            );
        }
        previous = part.number;
        let Some((bytes, etag)) = upload.parts.get(&part.number) else {
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidPart",
                "A listed part was not uploaded.",
            );
        };
        if etag.trim_matches('"') != part.etag.trim().trim_matches('"') {
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidPart",
                "A part's ETag does not match.",
            );
        }
        if index + 1 < count && bytes.len() < MIN_PART_SIZE {
            return error(
                StatusCode::BAD_REQUEST,
                "EntityTooSmall",
                "Your proposed upload is smaller than the minimum allowed object size.",
            );
        }
        data.extend_from_slice(bytes);
    }
    if let Err(reply) = precondition(headers, current.as_ref()) {
        return *reply;
    }
    let content_type = upload.content_type.clone();
    state.uploads.remove(&id);
    let key = target.object.clone().unwrap_or_default();
    let stored = store(state, &target.bucket, &key, Bytes::from(data), content_type);
    let xml = format!(
        "<?xml version='1.0' encoding='UTF-8'?><CompleteMultipartUploadResult xmlns='http://s3.amazonaws.com/doc/2006-03-01/'><Location>/{}/{}</Location><Bucket>{}</Bucket><Key>{}</Key><ETag>{}</ETag></CompleteMultipartUploadResult>",
        utf8_percent_encode(&target.bucket, NON_ALPHANUMERIC),
        utf8_percent_encode(&key, NON_ALPHANUMERIC),
        xml_escape(&target.bucket),
        xml_escape(&key),
        xml_escape(&stored.etag)
    );
    xml_reply(
        with_object_headers(Response::builder().status(StatusCode::OK), &stored),
        xml,
    )
}

fn abort(state: &mut State, target: &Target) -> Reply {
    match find_upload(state, target) {
        Ok((id, _)) => {
            state.uploads.remove(&id);
            empty(StatusCode::NO_CONTENT)
        }
        Err(reply) => *reply,
    }
}

fn with_object_headers(
    builder: http::response::Builder,
    object: &Object,
) -> http::response::Builder {
    builder
        .header("x-goog-generation", object.generation)
        .header("x-goog-metageneration", object.metageneration)
        .header(http::header::ETAG, &object.etag)
        .header(
            http::header::LAST_MODIFIED,
            object
                .updated
                .format("%a, %d %b %Y %H:%M:%S GMT")
                .to_string(),
        )
}

fn xml_reply(builder: http::response::Builder, xml: String) -> Reply {
    builder
        .header(http::header::CONTENT_TYPE, "application/xml; charset=UTF-8")
        .body(Full::new(Bytes::from(xml)))
        .unwrap_or_else(|_| internal())
}

fn error(status: StatusCode, code: &str, message: &str) -> Reply {
    let xml = format!(
        "<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{}</Message></Error>",
        xml_escape(message)
    );
    xml_reply(Response::builder().status(status), xml)
}

fn empty(status: StatusCode) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::new()));
    *reply.status_mut() = status;
    reply
}

fn internal() -> Reply {
    empty(StatusCode::INTERNAL_SERVER_ERROR)
}

fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-3", 10), Ok((0, 3)));
        assert_eq!(parse_range("bytes=5-", 10), Ok((5, 9)));
        assert_eq!(parse_range("bytes=-4", 10), Ok((6, 9)));
        assert_eq!(parse_range("bytes=8-20", 10), Ok((8, 9)));
        assert_eq!(parse_range("bytes=10-12", 10), Err(()));
        assert_eq!(parse_range("bytes=3-1", 10), Err(()));
        assert_eq!(parse_range("bytes=0-0", 0), Err(()));
    }

    #[test]
    fn tokens_round_trip() {
        assert_eq!(
            decode_token(&encode_token("data/ab/abc")).as_deref(),
            Some("data/ab/abc")
        );
        assert_eq!(decode_token("zz"), None);
    }
}
