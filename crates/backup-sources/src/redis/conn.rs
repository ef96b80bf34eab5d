//! Redis URLs, connections and error messages.
//!
//! Commands go through the `redis` crate's multiplexed connection. The
//! replication stream (`PSYNC`), which that crate does not expose, uses a
//! raw TCP or TLS connection of our own ([`RawConn`]).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use backup_core::{Error, Result};
use redis::aio::MultiplexedConnection;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// How long to wait for a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a TLS connection may take before the server is probed for a
/// plain-text reply.
const PROBE_AFTER: Duration = Duration::from_secs(1);
/// How long to wait for a command's reply (long pipelines, `DEBUG
/// DIGEST` of a large dataset).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(600);

/// How a source reads the data (the registry's [`crate::RedisMode`]).
pub use crate::options::RedisMode as Mode;

/// A parsed `redis://` or `rediss://` URL.
#[derive(Clone)]
pub struct RedisUrl {
    /// TLS (`rediss://`).
    pub tls: bool,
    /// Host name or address.
    pub host: String,
    /// Port (6379 by default).
    pub port: u16,
    /// ACL user name.
    pub username: Option<String>,
    /// Password (never printed).
    pub password: Option<String>,
    /// Database from the path.
    pub db: Option<u32>,
    /// `?mode=`.
    pub mode: Mode,
    /// Whether the URL said `mode=` itself.
    mode_in_url: bool,
    /// `?tls-ca=`: a PEM file of certificate authorities to trust instead
    /// of the system's.
    pub tls_ca: Option<PathBuf>,
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl RedisUrl {
    /// Parses a URL.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a malformed URL, a bad database number or an
    /// unknown query parameter; the message never contains the password.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::Config(format!(
                "`{}` is not a valid Redis URL: {why}",
                backup_core::redact::redact_url(s)
            ))
        };
        let u = url::Url::parse(s).map_err(|e| bad(&e.to_string()))?;
        let tls = match u.scheme() {
            "redis" => false,
            "rediss" => true,
            other => {
                return Err(bad(&format!(
                    "scheme `{other}` (use redis:// or rediss://)"
                )))
            }
        };
        let host = u
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = u.port().unwrap_or(6379);
        let decode = |v: &str| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8()
                .map(std::borrow::Cow::into_owned)
                .map_err(|_| bad("user name or password is not valid percent-encoded UTF-8"))
        };
        let username = match u.username() {
            "" => None,
            n => Some(decode(n)?),
        };
        let password = u.password().map(decode).transpose()?;
        let path = u.path().trim_matches('/');
        let db = if path.is_empty() {
            None
        } else {
            Some(path.parse::<u32>().map_err(|_| {
                bad(&format!(
                    "`/{path}` is not a database number (use /0, /1, ...)"
                ))
            })?)
        };
        let mut mode = Mode::Rdb;
        let mut mode_in_url = false;
        let mut tls_ca = None;
        for (k, v) in u.query_pairs() {
            match k.as_ref() {
                "mode" => {
                    mode_in_url = true;
                    mode = match v.as_ref() {
                        "rdb" => Mode::Rdb,
                        "keys" => Mode::Keys,
                        other => {
                            return Err(bad(&format!(
                                "mode `{other}`: use mode=rdb (the default) or mode=keys"
                            )))
                        }
                    }
                }
                "tls-ca" => {
                    if !tls {
                        return Err(bad("tls-ca applies to rediss:// URLs"));
                    }
                    tls_ca = Some(PathBuf::from(v.as_ref()));
                }
                other => {
                    return Err(bad(&format!(
                        "unknown parameter `{other}` (known: mode, tls-ca)"
                    )))
                }
            }
        }
        if u.fragment().is_some() {
            return Err(bad("fragments (#...) are not supported"));
        }
        Ok(RedisUrl {
            tls,
            host,
            port,
            username,
            password,
            db,
            mode,
            mode_in_url,
            tls_ca,
        })
    }

    /// The URL read with `mode` (from `--mode` or a job), which must agree
    /// with a `mode=` the URL gives itself.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the two contradict each other.
    pub fn with_mode(mut self, mode: Option<Mode>) -> Result<Self> {
        let Some(mode) = mode else {
            return Ok(self);
        };
        if self.mode_in_url && self.mode != mode {
            return Err(Error::Config(format!(
                "--mode {} contradicts mode={} in the URL; give one of them",
                mode.as_str(),
                self.mode.as_str()
            )));
        }
        self.mode = mode;
        Ok(self)
    }

    /// The URL without credentials, as recorded in manifests and printed.
    pub fn redacted(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let mut s = format!("{scheme}://{host}:{}", self.port);
        if let Some(db) = self.db {
            let _ = write!(s, "/{db}");
        }
        let mut q = Vec::new();
        if self.mode == Mode::Keys {
            q.push("mode=keys".to_owned());
        }
        if let Some(ca) = &self.tls_ca {
            q.push(format!("tls-ca={}", ca.display()));
        }
        if !q.is_empty() {
            s.push('?');
            s.push_str(&q.join("&"));
        }
        s
    }

    /// `host:port` for messages.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn client(&self) -> Result<redis::Client> {
        let addr = if self.tls {
            redis::ConnectionAddr::TcpTls {
                host: self.host.clone(),
                port: self.port,
                insecure: false,
                tls_params: None,
            }
        } else {
            redis::ConnectionAddr::Tcp(self.host.clone(), self.port)
        };
        let mut settings = redis::RedisConnectionInfo::default().set_skip_set_lib_name();
        if let Some(u) = &self.username {
            settings = settings.set_username(u);
        }
        if let Some(p) = &self.password {
            settings = settings.set_password(p);
        }
        let info = redis::IntoConnectionInfo::into_connection_info(addr)
            .map_err(|e| self.error("configuring the connection", e))?
            .set_redis_settings(settings);
        let client = if let Some(ca) = &self.tls_ca {
            let pem = std::fs::read(ca)
                .map_err(|e| Error::io(format!("reading the TLS CA file {}", ca.display()), e))?;
            redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            )
        } else {
            redis::Client::open(info)
        };
        client.map_err(|e| self.error("configuring the connection", e))
    }

    /// Opens a command connection (authenticated; database 0 selected).
    ///
    /// # Errors
    ///
    /// Connection and authentication failures, with a clear message.
    pub async fn connect(&self) -> Result<MultiplexedConnection> {
        let client = self.client()?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let connecting = client.get_multiplexed_async_connection_with_config(&config);
        let mut con = if self.tls {
            // A TLS client talking to a plain-text server may wait for a
            // handshake that never comes: find out after a second.
            tokio::pin!(connecting);
            tokio::select! {
                r = &mut connecting => match r {
                    Ok(c) => c,
                    Err(e) if self.answers_plain_text().await => {
                        return Err(self.plain_text_error(&e.to_string()));
                    }
                    Err(e) => return Err(self.error("connecting (TLS) to", e)),
                },
                () = self.plain_text_after(PROBE_AFTER) => {
                    return Err(self.plain_text_error("no TLS handshake"));
                }
            }
        } else {
            connecting
                .await
                .map_err(|e| self.error("connecting to", e))?
        };
        // A server that requires a password answers the first command
        // with NOAUTH; find out now rather than in the middle of the work.
        redis::cmd("PING")
            .query_async::<()>(&mut con)
            .await
            .map_err(|e| self.error("connecting to", e))?;
        Ok(con)
    }

    /// Whether a plain-text Redis answers on the URL's port (a `rediss://`
    /// URL given for a server without TLS there): a `PING` on a separate
    /// connection gets a RESP reply.
    async fn answers_plain_text(&self) -> bool {
        let probe = async {
            let mut tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .ok()?;
            tcp.write_all(b"PING\r\n").await.ok()?;
            let mut first = [0u8; 1];
            tcp.read_exact(&mut first).await.ok()?;
            Some(first[0] == b'+' || first[0] == b'-')
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(2), probe).await,
            Ok(Some(true))
        )
    }

    /// Resolves after `delay` if the server turns out to answer in plain
    /// text; never otherwise.
    async fn plain_text_after(&self, delay: Duration) {
        tokio::time::sleep(delay).await;
        if !self.answers_plain_text().await {
            std::future::pending::<()>().await;
        }
    }

    /// The error for a `rediss://` URL whose server speaks plain text.
    fn plain_text_error(&self, detail: &str) -> Error {
        let addr = self.address();
        Error::Config(format!(
            "TLS handshake with {addr} failed ({detail}): the server answers in plain text on this port, it does not speak TLS there; use redis://{addr} for it, or the port of its TLS listener (tls-port) with rediss://"
        ))
    }

    /// Turns a driver error into an error that says what failed and what
    /// to do; the driver's error is kept as its source, with the verdict
    /// of `retryable`.
    pub fn error(&self, doing: &str, e: redis::RedisError) -> Error {
        let addr = self.address();
        let text = e.to_string();
        let code = e.code().unwrap_or("");
        if code == "NOAUTH" || text.contains("NOAUTH") {
            return self.noauth_error();
        }
        if code == "WRONGPASS"
            || text.contains("WRONGPASS")
            || text.contains("invalid password")
            || e.kind() == redis::ErrorKind::AuthenticationFailed
        {
            return Error::PermissionDenied(format!(
                "Redis at {addr} refused the user name or password in the URL (WRONGPASS): check them"
            ));
        }
        let again = retryable(&e);
        let msg = if code == "NOPERM" || text.contains("NOPERM") {
            format!("Redis at {addr}: {doing}: the user lacks a permission ({text}); grant it in the server's ACL")
        } else if e.is_io_error() || e.is_connection_refusal() || e.is_timeout() {
            format!("{doing} {addr}: {text}; check that the server runs and is reachable")
        } else {
            format!("Redis at {addr}: {doing}: {text}")
        };
        Error::source_explained(msg, e, again)
    }

    /// The error for a server that wants a password the URL lacks.
    pub fn noauth_error(&self) -> Error {
        let addr = self.address();
        Error::PermissionDenied(format!(
            "Redis at {addr} requires a password (NOAUTH): put it in the URL (redis://:PASSWORD@{addr} or redis://USER:PASSWORD@{addr})"
        ))
    }

    /// The error for a refused `AUTH` (the reply line).
    fn auth_error(&self, line: &str) -> Error {
        let addr = self.address();
        if line.contains("WRONGPASS") || line.contains("invalid") {
            Error::PermissionDenied(format!(
                "Redis at {addr} refused the user name or password in the URL (WRONGPASS): check them"
            ))
        } else {
            Error::PermissionDenied(format!("Redis at {addr}: AUTH failed: {line}"))
        }
    }

    /// Opens a raw connection for the replication protocol and
    /// authenticates it.
    ///
    /// # Errors
    ///
    /// Connection, TLS and authentication failures.
    pub async fn connect_raw(&self) -> Result<RawConn> {
        let addr = self.address();
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|elapsed| {
            let msg = format!(
                "connecting to {addr}: timed out; check that the server runs and is reachable"
            );
            Error::source_explained(msg, elapsed, true)
        })?
        .map_err(|e| {
            let msg =
                format!("connecting to {addr}: {e}; check that the server runs and is reachable");
            Error::source_explained(msg, e, true)
        })?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = if self.tls {
            let handshake = tokio::time::timeout(CONNECT_TIMEOUT, self.tls_connect(tcp));
            tokio::pin!(handshake);
            let tls = tokio::select! {
                r = &mut handshake => match r {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(_)) | Err(_) if self.answers_plain_text().await => {
                        return Err(self.plain_text_error("no TLS handshake"));
                    }
                    Ok(Err(e)) => return Err(e),
                    Err(elapsed) => {
                        let msg = format!(
                            "TLS handshake with {addr}: no answer within {} s; check that the port serves TLS (tls-port) and is reachable",
                            CONNECT_TIMEOUT.as_secs()
                        );
                        return Err(Error::source_explained(msg, elapsed, true));
                    }
                },
                () = self.plain_text_after(PROBE_AFTER) => {
                    return Err(self.plain_text_error("no TLS handshake"));
                }
            };
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        let mut conn = RawConn {
            io: BufReader::with_capacity(256 * 1024, stream),
            addr,
        };
        if let Some(p) = &self.password {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(u) = &self.username {
                args.push(u.as_bytes());
            }
            args.push(p.as_bytes());
            conn.send(&args).await?;
            let line = conn.line().await?;
            if line.starts_with('-') {
                return Err(self.auth_error(&line));
            }
        }
        Ok(conn)
    }

    async fn tls_connect(
        &self,
        tcp: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        if let Some(ca) = &self.tls_ca {
            use tokio_rustls::rustls::pki_types::pem::PemObject as _;
            use tokio_rustls::rustls::pki_types::CertificateDer;
            let pem = std::fs::read(ca)
                .map_err(|e| Error::io(format!("reading the TLS CA file {}", ca.display()), e))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| {
                    Error::Config(format!(
                        "{} is not a PEM certificate file: {e}",
                        ca.display()
                    ))
                })?;
                roots.add(cert).map_err(|e| {
                    Error::Config(format!("{}: unusable certificate: {e}", ca.display()))
                })?;
            }
        } else {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
        }
        let config =
            tokio_rustls::rustls::ClientConfig::builder_with_provider(crate::tls::provider()?)
                .with_safe_default_protocol_versions()
                .map_err(|e| Error::Config(format!("TLS setup failed: {e}")))?
                .with_root_certificates(roots)
                .with_no_client_auth();
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(self.host.clone())
            .map_err(|e| {
                Error::Config(format!(
                    "`{}` is not a valid TLS server name: {e}",
                    self.host
                ))
            })?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| Error::source_caused(format!("TLS handshake with {}", self.address()), e))
    }
}

/// A byte stream to the server.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// A raw connection speaking just enough RESP for the replication
/// handshake.
pub struct RawConn {
    /// The buffered stream.
    pub io: BufReader<Box<dyn Stream>>,
    /// `host:port`, for messages.
    pub addr: String,
}

impl RawConn {
    /// Sends a command.
    ///
    /// # Errors
    ///
    /// Write errors.
    pub async fn send(&mut self, args: &[&[u8]]) -> Result<()> {
        let mut buf = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            buf.extend_from_slice(a);
            buf.extend_from_slice(b"\r\n");
        }
        let addr = self.addr.clone();
        let fail = |e: std::io::Error| {
            Error::source_explained(format!("connection to {addr} failed: {e}"), e, true)
        };
        let w = self.io.get_mut();
        w.write_all(&buf).await.map_err(fail)?;
        w.flush().await.map_err(fail)
    }

    /// A broken replication connection: worth another try.
    fn io_error(&self, e: std::io::Error) -> Error {
        Error::source_explained(format!("connection to {} failed: {e}", self.addr), e, true)
    }

    /// Reads one line (without CR LF), skipping the bare newlines a
    /// master sends as keep-alives while it prepares an RDB.
    ///
    /// # Errors
    ///
    /// Read errors, or the connection closing.
    pub async fn line(&mut self) -> Result<String> {
        loop {
            let mut buf = Vec::new();
            let n = (&mut self.io)
                .take(64 * 1024)
                .read_until(b'\n', &mut buf)
                .await
                .map_err(|e| self.io_error(e))?;
            if n == 0 {
                return Err(Error::source_failed(format!(
                    "Redis at {} closed the connection",
                    self.addr
                )));
            }
            while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                buf.pop();
            }
            if buf.is_empty() {
                continue;
            }
            return Ok(String::from_utf8_lossy(&buf).into_owned());
        }
    }
}

/// `INFO server`.
pub(crate) async fn server_info(url: &RedisUrl, con: &mut MultiplexedConnection) -> Result<String> {
    redis::cmd("INFO")
        .arg("server")
        .query_async(con)
        .await
        .map_err(|e| url.error("reading INFO", e))
}

/// A `field:value` line of `INFO` output.
pub(crate) fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|r| r.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    })
}

/// Whether running the operation again may get past `e`: the connection
/// was refused, dropped or timed out, or the server asked to wait (loading
/// its data set, busy with a script, a master down: the driver's
/// "wait and retry").
pub(crate) fn retryable(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_timeout()
        || matches!(e.retry_method(), redis::RetryMethod::WaitAndRetry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn driver_errors_are_kept_and_say_whether_a_retry_can_help() {
        // Nothing listens: the connection is refused, which may pass.
        let port = backup_testkit::free_port();
        let url = RedisUrl::parse(&format!("redis://127.0.0.1:{port}")).unwrap();
        let e = url.connect().await.unwrap_err();
        assert!(e.is_retryable(), "{e}");
        let cause = std::error::Error::source(&e).expect("the driver error is kept");
        assert!(
            cause.downcast_ref::<redis::RedisError>().is_some(),
            "{cause:?}"
        );

        let server = backup_testkit::redis::RedisServer::builder()
            .password("pw")
            .config("user", "reader on >rpw ~* +@connection +ping -info")
            .start();
        let at = |auth: &str| {
            RedisUrl::parse(&format!("redis://{auth}@127.0.0.1:{}", server.port())).unwrap()
        };
        // A refused password will not pass.
        let e = at(":nope").connect().await.unwrap_err();
        assert!(matches!(e, Error::PermissionDenied(_)), "{e:?}");
        assert!(!e.is_retryable());
        // Nor a command the server's ACL denies; the driver's error is kept.
        let url = at("reader:rpw");
        let mut con = url.connect().await.unwrap();
        let e = server_info(&url, &mut con).await.unwrap_err();
        assert!(!e.is_retryable(), "{e}");
        assert!(e.to_string().contains("lacks a permission"), "{e}");
        assert!(std::error::Error::source(&e)
            .is_some_and(|c| c.downcast_ref::<redis::RedisError>().is_some()));
    }

    #[test]
    fn mode_from_options_and_url_agree() {
        let url = |s: &str| RedisUrl::parse(s).unwrap();
        let keys = url("redis://h:1/2").with_mode(Some(Mode::Keys)).unwrap();
        assert_eq!(keys.mode, Mode::Keys);
        assert_eq!(keys.redacted(), "redis://h:1/2?mode=keys");
        let tls = url("rediss://:pw@h:1?tls-ca=/ca.pem")
            .with_mode(Some(Mode::Keys))
            .unwrap();
        assert_eq!(tls.redacted(), "rediss://h:1?mode=keys&tls-ca=/ca.pem");
        assert_eq!(
            url("redis://h:1?mode=keys")
                .with_mode(Some(Mode::Keys))
                .unwrap()
                .mode,
            Mode::Keys
        );
        let e = url("redis://h:1?mode=rdb")
            .with_mode(Some(Mode::Keys))
            .unwrap_err()
            .to_string();
        assert!(e.contains("contradicts mode=rdb"), "{e}");
        assert_eq!(url("redis://h:1").with_mode(None).unwrap().mode, Mode::Rdb);
    }
}
