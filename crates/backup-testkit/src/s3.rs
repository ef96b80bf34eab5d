//! A real S3 server for tests: the `s3s-fs` crate served in-process on
//! 127.0.0.1, storing objects in a temporary directory.
//!
//! ```no_run
//! # async fn demo() {
//! use backup_testkit::s3::S3Server;
//!
//! let server = S3Server::start();
//! let url = backup_storage::StorageUrl::parse(&server.url("repo")).unwrap();
//! let sink = backup_storage::build(&url, &server.storage_options()).unwrap();
//! # }
//! ```
//!
//! The server checks AWS Signature V4 with the fixed keys
//! [`ACCESS_KEY_ID`] and [`SECRET_ACCESS_KEY`], supports conditional puts
//! (`If-None-Match: *`), multipart uploads (parts of at least 5 MiB but the
//! last), multipart copies, ranged gets and `list-type=2` listings.
//!
//! `s3s-fs` checks a condition and then writes, in two steps; real S3 does
//! both atomically. So that tests of concurrent create-only writes see S3's
//! behaviour, this server runs requests carrying `If-None-Match` or
//! `If-Match` one at a time.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use backup_storage::{SecretString, StorageOptions};
use http::Request;
use hyper::body::Incoming;
use hyper::service::Service;
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};

use crate::server::ServerThread;

/// The access key id the server accepts.
pub const ACCESS_KEY_ID: &str = "backup-testkit";
/// The secret access key the server accepts.
pub const SECRET_ACCESS_KEY: &str = "backup-testkit-secret-key";
/// The region clients sign for.
pub const REGION: &str = "us-east-1";
/// The bucket created at start.
pub const BUCKET: &str = "backup-test";

/// A running S3 server; stops and deletes its data when dropped.
#[derive(Debug)]
pub struct S3Server {
    server: ServerThread,
    dir: tempfile::TempDir,
    requests: Arc<Mutex<Vec<String>>>,
    faults: Arc<Faults>,
}

/// The fault plan of a server: every `every`th request fails.
#[derive(Debug)]
struct Faults {
    every: u64,
    /// Requests received.
    seen: AtomicU64,
    /// Faults injected.
    injected: AtomicU64,
}

/// How a request fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Refused before it is applied: `503 SlowDown`.
    Refused,
    /// Applied, then answered `500 InternalError`.
    LostResponse,
}

impl Faults {
    /// Whether (and how) the next request, with `method`, fails.
    fn next(&self, method: &http::Method) -> Option<Fault> {
        let n = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
        if self.every == 0 || n % self.every != 0 {
            return None;
        }
        self.injected.fetch_add(1, Ordering::Relaxed);
        if method == http::Method::PUT && (n / self.every) % 2 == 0 {
            Some(Fault::LostResponse)
        } else {
            Some(Fault::Refused)
        }
    }
}

/// An S3 error response.
fn error_response(status: http::StatusCode, code: &str) -> s3s::HttpResponse {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected by the test server</Message></Error>"
    );
    let mut resp = http::Response::new(s3s::Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/xml"),
    );
    resp
}

impl S3Server {
    /// Starts a server on a free port of 127.0.0.1 with an empty bucket
    /// [`BUCKET`].
    ///
    /// # Panics
    ///
    /// When the server cannot start; the message says why.
    pub fn start() -> S3Server {
        Self::start_with_faults(0)
    }

    /// Like [`Self::start`], with faults: every `every`th request (none
    /// when 0) fails. Alternately, such a request is refused before it is
    /// applied (`503 SlowDown`, as S3 throttles) or, when it is a `PUT`,
    /// applied and then answered `500 InternalError` (a response lost after
    /// the write, which a client cannot tell from a failed one); other
    /// methods are always refused before. [`Self::faults`] counts them.
    ///
    /// # Panics
    ///
    /// When the server cannot start; the message says why.
    pub fn start_with_faults(every: u64) -> S3Server {
        crate::install_tls_provider();
        let dir = tempfile::Builder::new()
            .prefix("backup-testkit-s3-")
            .tempdir()
            .unwrap_or_else(|e| panic!("S3 test server: cannot create a temporary directory: {e}"));
        std::fs::create_dir(dir.path().join(BUCKET))
            .unwrap_or_else(|e| panic!("S3 test server: cannot create the bucket directory: {e}"));
        let fs = s3s_fs::FileSystem::new(dir.path()).unwrap_or_else(|e| {
            panic!(
                "S3 test server: cannot open {}: {e:?}",
                dir.path().display()
            )
        });
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY_ID, SECRET_ACCESS_KEY));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let faults = Arc::new(Faults {
            every,
            seen: AtomicU64::new(0),
            injected: AtomicU64::new(0),
        });
        let service = SerialConditions {
            inner: builder.build(),
            conditional: Arc::new(tokio::sync::Mutex::new(())),
            requests: Arc::clone(&requests),
            faults: Arc::clone(&faults),
        };
        let server = ServerThread::start("s3-test-server", service);
        S3Server {
            server,
            dir,
            requests,
            faults,
        }
    }

    /// Faults injected so far (see [`Self::start_with_faults`]).
    pub fn faults(&self) -> u64 {
        self.faults.injected.load(Ordering::Relaxed)
    }

    /// The endpoint URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// The bucket created at start.
    pub fn bucket(&self) -> &'static str {
        BUCKET
    }

    /// Creates another (empty) bucket.
    ///
    /// # Panics
    ///
    /// When the bucket directory cannot be created.
    pub fn create_bucket(&self, name: &str) {
        std::fs::create_dir_all(self.dir.path().join(name))
            .unwrap_or_else(|e| panic!("S3 test server: cannot create bucket {name}: {e}"));
    }

    /// The repository URL `s3://BUCKET/prefix`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}/{}", prefix.trim_matches('/'))
    }

    /// Storage options that point `backup-storage` at this server: endpoint,
    /// plain HTTP, path-style requests, region and the server's keys. See
    /// [`crate::test_storage_options`] for the multipart and retry
    /// settings.
    pub fn storage_options(&self) -> StorageOptions {
        let mut options = crate::test_storage_options();
        options.s3.endpoint = Some(self.endpoint());
        options.s3.allow_http = Some(true);
        options.s3.virtual_hosted_style = Some(false);
        options.s3.region = Some(REGION.to_owned());
        options.s3.access_key_id = Some(ACCESS_KEY_ID.to_owned());
        options.s3.secret_access_key = Some(SecretString::from(SECRET_ACCESS_KEY));
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
            .unwrap_or_else(|e| panic!("S3 test server: bad URL: {e}"));
        backup_storage::build(&url, &self.storage_options())
            .unwrap_or_else(|e| panic!("S3 test server: cannot build a sink: {e}"))
    }

    /// The same settings as `AWS_*` environment variables, for a child
    /// process (a CLI under test).
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Every request received so far, as `METHOD /path?query`, followed by
    /// ` [conditional]` when it carried `If-None-Match` or `If-Match`.
    pub fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The directory holding the server's buckets (one sub-directory each).
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Runs conditional requests one at a time and records every request.
#[derive(Clone)]
struct SerialConditions {
    inner: S3Service,
    conditional: Arc<tokio::sync::Mutex<()>>,
    requests: Arc<Mutex<Vec<String>>>,
    faults: Arc<Faults>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl Service<Request<Incoming>> for SerialConditions {
    type Response = s3s::HttpResponse;
    type Error = s3s::HttpError;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let conditional = req.headers().contains_key(http::header::IF_NONE_MATCH)
            || req.headers().contains_key(http::header::IF_MATCH);
        let fault = self.faults.next(req.method());
        let line = format!(
            "{} {}{}{}",
            req.method(),
            req.uri().path_and_query().map_or("/", |p| p.as_str()),
            if conditional { " [conditional]" } else { "" },
            match fault {
                Some(Fault::Refused) => " [fault: refused]",
                Some(Fault::LostResponse) => " [fault: response lost]",
                None => "",
            }
        );
        self.requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(line);
        if fault == Some(Fault::Refused) {
            return Box::pin(async {
                Ok(error_response(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    "SlowDown",
                ))
            });
        }
        let inner = self.inner.clone();
        let lock = Arc::clone(&self.conditional);
        Box::pin(async move {
            let _serial = if conditional {
                Some(lock.lock_owned().await)
            } else {
                None
            };
            let resp = Service::call(&inner, req).await?;
            if fault == Some(Fault::LostResponse) && resp.status().is_success() {
                return Ok(error_response(
                    http::StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                ));
            }
            Ok(resp)
        })
    }
}
