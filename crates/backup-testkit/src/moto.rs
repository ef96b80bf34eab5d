//! Throwaway moto servers (`moto_server`, from the Python package index):
//! S3 with storage classes, `RestoreObject` and Object Lock, KMS keys, IAM users and
//! their policies (enforced on request: [`MotoServer::enforce_iam`]), on
//! 127.0.0.1 with a free port, stopped by process id when the handle is
//! dropped.
//!
//! The server is found through `BACKUP_TEST_MOTO` (set by
//! `scripts/test.sh`), then the workspace's `.venv`, then `PATH`. When it is
//! missing, [`MotoServer::start`] panics with the command that installs it:
//! tests never skip.
//!
//! What moto does with archive classes (checked against moto 5.2.5): a GET
//! of a `GLACIER` or `DEEP_ARCHIVE` object answers 403 `InvalidObjectState`;
//! `RestoreObject` answers 202 and completes at once (`HEAD` then shows
//! `x-amz-restore: ongoing-request="false", expiry-date="..."`), so the
//! "still thawing" state cannot be seen against it; a copy onto the same
//! key with `x-amz-storage-class` changes the class and drops any restored
//! copy. Each request is logged (`"GET /bucket/key HTTP/1.1" 200`), which
//! [`MotoServer::requests`] reads back.

#![allow(clippy::expect_used)] // Test support: failing to set up is a test failure.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MISSING: &str = "moto_server (the S3 test server with storage classes) not found: run ./scripts/test.sh, which installs moto[server]==5.2.5 into .venv and sets BACKUP_TEST_MOTO";

/// The bucket every server starts with.
pub const BUCKET: &str = "cold-bucket";

/// A running moto server with the bucket [`BUCKET`].
#[derive(Debug)]
pub struct MotoServer {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

/// The path of `moto_server`.
///
/// # Panics
///
/// When it cannot be found, with the setup command to run.
pub fn server_binary() -> PathBuf {
    crate::venv_tool("BACKUP_TEST_MOTO", "moto_server", MISSING)
}

impl MotoServer {
    /// Starts a server, waits until it answers and creates [`BUCKET`].
    ///
    /// # Panics
    ///
    /// When the server is missing or does not start.
    pub fn start() -> Self {
        let bin = server_binary();
        let dir = tempfile::Builder::new()
            .prefix("moto-test-")
            .tempdir()
            .expect("creating a temporary directory");
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = crate::free_port();
            let log_path = dir.path().join(format!("server-{port}.log"));
            let log = std::fs::File::create(&log_path).expect("log file");
            let mut child = Command::new(&bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log file"))
                .stderr(log)
                .spawn()
                .expect("starting moto_server");
            if wait_ready(&mut child, port, Duration::from_secs(60)) {
                let server = MotoServer { dir, port, child };
                let (status, body) = server.raw("PUT", &format!("/{BUCKET}"));
                assert!(status == 200, "creating the test bucket: {status} {body}");
                return server;
            }
            stop_child(&mut child);
            last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
        }
        panic!("moto_server did not start:\n{last_log}");
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `s3://cold-bucket/<prefix>`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}")
    }

    /// `AWS_*` settings for a child process (a CLI under test).
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// One unsigned HTTP/1.1 request (moto accepts any credentials or
    /// none); returns the status and body.
    fn raw(&self, method: &str, path: &str) -> (u16, String) {
        self.request(method, path, &[], "")
    }

    /// One HTTP/1.1 request with `headers` and `body`; returns the status
    /// and body (the headers, for a `HEAD`).
    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connecting to moto");
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.port,
            body.len()
        );
        for (name, value) in headers {
            request.push_str(name);
            request.push_str(": ");
            request.push_str(value);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        request.push_str(body);
        stream
            .write_all(request.as_bytes())
            .expect("writing a request to moto");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .expect("reading moto's answer");
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = match response.split_once("\r\n\r\n") {
            // A `HEAD` has no body: its answer is the headers.
            Some((head, _)) if method == "HEAD" => head.to_owned(),
            Some((_, body)) => body.to_owned(),
            None => String::new(),
        };
        (status, body)
    }

    /// A request to another service than S3: moto routes it by the
    /// credential scope of its `Authorization` header, which it does not
    /// check while IAM enforcement ([`MotoServer::enforce_iam`]) is off.
    fn service(&self, service: &str, headers: &[(&str, &str)], body: &str) -> String {
        let auth = fake_auth(service);
        let mut all = vec![("Authorization", auth.as_str())];
        all.extend_from_slice(headers);
        let (status, answer) = self.request("POST", "/", &all, body);
        assert_eq!(status, 200, "moto {service} request {body}: {answer}");
        answer
    }

    /// One KMS JSON action; returns the answer.
    fn kms(&self, action: &str, body: &str) -> String {
        let target = format!("TrentService.{action}");
        self.service(
            "kms",
            &[
                ("Content-Type", "application/x-amz-json-1.1"),
                ("X-Amz-Target", &target),
            ],
            body,
        )
    }

    /// Creates a symmetric KMS key; returns its ARN.
    pub fn kms_create_key(&self) -> String {
        let answer = self.kms("CreateKey", r#"{"Description":"backup test key"}"#);
        between(&answer, "\"Arn\": \"", "\"")
            .or_else(|| between(&answer, "\"Arn\":\"", "\""))
            .unwrap_or_else(|| panic!("no key ARN in {answer}"))
            .to_owned()
    }

    /// Disables the KMS key `arn` (moto 5.2.5 still decrypts with it).
    pub fn kms_disable_key(&self, arn: &str) {
        // moto's DisableKey takes the key id, not the ARN.
        let id = arn.rsplit('/').next().unwrap_or(arn);
        self.kms("DisableKey", &format!(r#"{{"KeyId":"{id}"}}"#));
    }

    /// Creates the IAM user `name` allowed exactly `actions` (such as
    /// `kms:Encrypt`) on every resource; returns its access key id and
    /// secret.
    pub fn iam_user(&self, name: &str, actions: &[&str]) -> (String, String) {
        self.iam_user_with(name, &[(actions, &["*"])])
    }

    /// Creates the IAM user `name` allowed, for each `(actions, resources)`
    /// statement, those actions on those resources (ARNs, `*` wildcards);
    /// returns its access key id and secret.
    pub fn iam_user_with(&self, name: &str, statements: &[(&[&str], &[&str])]) -> (String, String) {
        let form = [("Content-Type", "application/x-www-form-urlencoded")];
        let call =
            |params: &str| self.service("iam", &form, &format!("{params}&Version=2010-05-08"));
        call(&format!("Action=CreateUser&UserName={name}"));
        let quoted = |items: &[&str]| {
            items
                .iter()
                .map(|a| format!("\"{a}\""))
                .collect::<Vec<_>>()
                .join(",")
        };
        let statements: Vec<String> = statements
            .iter()
            .map(|(actions, resources)| {
                format!(
                    r#"{{"Effect":"Allow","Action":[{}],"Resource":[{}]}}"#,
                    quoted(actions),
                    quoted(resources)
                )
            })
            .collect();
        let policy = format!(
            r#"{{"Version":"2012-10-17","Statement":[{}]}}"#,
            statements.join(",")
        );
        call(&format!(
            "Action=PutUserPolicy&UserName={name}&PolicyName=test&PolicyDocument={}",
            encode(&policy)
        ));
        let answer = call(&format!("Action=CreateAccessKey&UserName={name}"));
        let id = between(&answer, "<AccessKeyId>", "</AccessKeyId>").expect("access key id");
        let secret =
            between(&answer, "<SecretAccessKey>", "</SecretAccessKey>").expect("secret key");
        (id.to_owned(), secret.to_owned())
    }

    /// Turns moto's IAM enforcement on (every later request must be signed
    /// by an IAM user's key and allowed by its policies) or off.
    pub fn enforce_iam(&self, on: bool) {
        let (status, body) = self.request(
            "POST",
            "/moto-api/reset-auth",
            &[],
            if on { "0" } else { "inf" },
        );
        assert_eq!(status, 200, "switching moto's IAM enforcement: {body}");
    }

    /// Creates `bucket` with S3 Object Lock and a default retention of
    /// `days` days in `mode` (`GOVERNANCE` or `COMPLIANCE`).
    pub fn create_locked_bucket(&self, bucket: &str, mode: &str, days: u32) {
        let (status, body) = self.request(
            "PUT",
            &format!("/{bucket}"),
            &[("x-amz-bucket-object-lock-enabled", "true")],
            "",
        );
        assert_eq!(status, 200, "creating the locked bucket: {body}");
        let rule = format!(
            "<ObjectLockConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>{mode}</Mode><Days>{days}</Days></DefaultRetention></Rule></ObjectLockConfiguration>"
        );
        let (status, body) = self.request("PUT", &format!("/{bucket}?object-lock"), &[], &rule);
        assert_eq!(status, 200, "setting the default retention: {body}");
    }

    /// Moves the retention of every object below `prefix` in `bucket` to
    /// `until` (RFC 3339), as if time had passed; moto lets a governance
    /// lock be shortened with the bypass header.
    pub fn set_retention(&self, bucket: &str, prefix: &str, mode: &str, until: &str) {
        let body = format!(
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{mode}</Mode><RetainUntilDate>{until}</RetainUntilDate></Retention>"
        );
        for (key, _) in self.objects(bucket, prefix) {
            let (status, answer) = self.request(
                "PUT",
                &format!("/{bucket}/{key}?retention"),
                &[
                    ("x-amz-bypass-governance-retention", "true"),
                    // moto checks this before it sees `?retention`.
                    ("x-amz-sdk-checksum-algorithm", "SHA256"),
                    // moto answers 403 to an unsigned request for a
                    // private object; it does not check the signature.
                    ("Authorization", &fake_auth("s3")),
                ],
                &body,
            );
            assert_eq!(status, 200, "setting the retention of {key}: {answer}");
        }
    }

    /// The retain-until date (as moto states it) of `key` in `bucket`, or
    /// `None` when the object has no retention.
    pub fn retention(&self, bucket: &str, key: &str) -> Option<String> {
        // moto 5.2.5 has no `GetObjectRetention`; `HEAD` states it.
        let (status, head) = self.request(
            "HEAD",
            &format!("/{bucket}/{key}"),
            &[("Authorization", &fake_auth("s3"))],
            "",
        );
        assert_eq!(status, 200, "reading the retention of {key}: {head}");
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("x-amz-object-lock-retain-until-date"))
            .map(|(_, value)| value.trim().to_owned())
    }

    /// The delete markers below `prefix` in `bucket` (keys that a plain
    /// `DELETE` hid while their versions stay stored).
    pub fn delete_markers(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let (status, body) = self.raw("GET", &format!("/{bucket}?versions&prefix={prefix}"));
        assert_eq!(status, 200, "listing versions: {body}");
        body.split("<DeleteMarker>")
            .skip(1)
            .filter_map(|m| between(m, "<Key>", "</Key>"))
            .map(str::to_owned)
            .collect()
    }

    /// Every object below `prefix` with its storage class, from a
    /// `ListObjectsV2` (`(key, class)`, keys relative to the bucket).
    pub fn storage_classes(&self, prefix: &str) -> Vec<(String, String)> {
        self.objects(BUCKET, prefix)
    }

    /// Every object below `prefix` in `bucket` with its storage class.
    pub fn objects(&self, bucket: &str, prefix: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut path = format!("/{bucket}?list-type=2&prefix={prefix}");
            if let Some(t) = &token {
                path.push_str("&continuation-token=");
                path.push_str(&encode(t));
            }
            let (status, body) = self.raw("GET", &path);
            assert_eq!(status, 200, "listing the test bucket: {body}");
            for item in body.split("<Contents>").skip(1) {
                let key = between(item, "<Key>", "</Key>").unwrap_or_default();
                let class = between(item, "<StorageClass>", "</StorageClass>")
                    .unwrap_or("STANDARD")
                    .to_owned();
                out.push((key.to_owned(), class));
            }
            token = between(&body, "<NextContinuationToken>", "</NextContinuationToken>")
                .map(str::to_owned);
            if token.is_none() {
                return out;
            }
        }
    }

    /// The requests the server logged so far, as `METHOD /path?query`.
    pub fn requests(&self) -> Vec<String> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.dir.path()).expect("reading the log directory") {
            let log = std::fs::read_to_string(entry.expect("log entry").path()).unwrap_or_default();
            for line in log.lines() {
                // Werkzeug colours some lines (202, errors) with ANSI codes.
                let line = strip_ansi(line);
                let Some(request) = between(&line, "\"", " HTTP/1.1\"") else {
                    continue;
                };
                out.push(request.to_owned());
            }
        }
        out
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

fn wait_ready(child: &mut Child, port: u16, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// An `Authorization` header moto routes by (to `service`) and, while
/// IAM enforcement is off, does not check.
fn fake_auth(service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=00"
    )
}

/// `line` without ANSI escape sequences (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn stop_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}
