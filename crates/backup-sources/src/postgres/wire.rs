//! A small blocking PostgreSQL client for the backup's `COPY` workers.
//!
//! The coordinator and the restore use `tokio-postgres`; a worker that only
//! streams `COPY ... TO STDOUT` rows does better without it. Its connection
//! task reads the socket 8 KiB at a time and hands every read to the
//! consumer through a channel (a thread wake-up each), and every row
//! becomes a parsed message. Here the thread that chunks and hashes the
//! rows reads the socket itself, 256 KiB at a time when the server is
//! ahead, and cuts the `CopyData` framing in place: the rows reach the
//! chunker with one copy out of the socket buffer.
//!
//! It speaks only what a worker needs: TLS negotiation (`sslmode` as the
//! coordinator's), cleartext, MD5 and SCRAM-SHA-256 authentication, simple
//! queries and `COPY TO STDOUT`.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::frontend;

use backup_core::{Error, Result};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl TlsMode {
    pub(crate) fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "disable" => TlsMode::Disable,
            "allow" => TlsMode::Allow,
            "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            other => {
                return Err(Error::Config(format!(
                    "sslmode `{other}` is not one of disable, allow, prefer, require, verify-ca, verify-full"
                )))
            }
        })
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Allow => "allow",
            TlsMode::Prefer => "prefer",
            TlsMode::Require => "require",
            TlsMode::VerifyCa => "verify-ca",
            TlsMode::VerifyFull => "verify-full",
        }
    }
}

/// Bytes read from the socket at most per read.
const READ_BUF: usize = 256 * 1024;

/// The longest message accepted from a server: PostgreSQL builds none
/// larger (`MaxAllocSize`, 1 GiB less one byte, bounds a row and a
/// `CopyData`), so a longer stated length is damage or not PostgreSQL.
const MAX_MESSAGE: usize = 1 << 30;

/// A read of less than this means the reader has caught up with the server.
const PACE_BYTES: usize = 64 * 1024;

/// How long a reader that caught up with the server lets rows pile up
/// before it reads again. The server flushes every 8 KiB; a reader that
/// waits on the socket is woken for each flush, which costs both sides a
/// context switch (as much CPU as the rows' hashing). Sleeping this long
/// instead lets tens of flushes collect in the socket buffer for one read.
const PACE: Duration = Duration::from_micros(300);

/// Pacing starts once a statement has sent this much: small tables are
/// read at once.
const PACE_AFTER: u64 = 1024 * 1024;

/// Called with the connection, the rows and the bytes once a COPY was read
/// to its end.
pub(crate) type CopyDone = Box<dyn FnOnce(WireConn, u64, u64) + Send>;

/// Where and how a worker connects: the coordinator's settings.
#[derive(Clone)]
pub(crate) struct WireConfig {
    /// Hosts in the order libpq tries them.
    pub(crate) hosts: Vec<(WireHost, u16)>,
    pub(crate) user: String,
    pub(crate) dbname: String,
    pub(crate) password: Option<Vec<u8>>,
    /// The `options` startup parameter.
    pub(crate) options: Option<String>,
    pub(crate) tls: TlsMode,
    /// The TLS client settings, unless `tls` is [`TlsMode::Disable`].
    pub(crate) tls_config: Option<Arc<rustls::ClientConfig>>,
    pub(crate) connect_timeout: Duration,
    /// Start a physical replication connection (`replication=true`): the
    /// walsender accepts replication commands (`IDENTIFY_SYSTEM`,
    /// `BASE_BACKUP`, ...) instead of SQL.
    pub(crate) replication: bool,
}

/// A host: a name or address, or the directory of a Unix socket.
#[derive(Clone, Debug)]
pub(crate) enum WireHost {
    /// A host name (TLS verifies it) and, with `hostaddr`, the address to
    /// connect to instead of resolving the name.
    Tcp {
        name: String,
        addr: Option<std::net::IpAddr>,
    },
    Unix(PathBuf),
}

/// An error of the server (SQLSTATE and text) or of the connection.
#[derive(Debug)]
pub(crate) enum WireError {
    Db {
        code: String,
        message: String,
        detail: Option<String>,
        /// The server's hint (`H` field).
        hint: Option<String>,
    },
    Io(String),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Db {
                message, detail, ..
            } => {
                f.write_str(message)?;
                if let Some(d) = detail {
                    write!(f, " ({d})")?;
                }
                Ok(())
            }
            WireError::Io(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for WireError {}

impl WireError {
    /// Whether the error may pass: a dropped connection, a server starting
    /// up, shutting down or out of connections.
    pub(crate) fn retryable(&self) -> bool {
        match self {
            WireError::Io(_) => true,
            WireError::Db { code, .. } => {
                code.starts_with("08")
                    || code.starts_with("53")
                    || matches!(code.as_str(), "57P01" | "57P02" | "57P03")
            }
        }
    }
}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> Self {
        WireError::Io(e.to_string())
    }
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Stream {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(t),
            Stream::Unix(s) => s.set_read_timeout(t),
            Stream::Tls(s) => s.sock.set_read_timeout(t),
        }
    }

    fn send_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.write_all(buf),
            Stream::Unix(s) => s.write_all(buf),
            Stream::Tls(s) => {
                s.write_all(buf)?;
                s.flush()
            }
        }
    }
}

/// One connection, idle between statements.
pub(crate) struct WireConn {
    stream: Stream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    out: BytesMut,
}

impl WireConn {
    /// Connects to the first host that answers and authenticates.
    pub(crate) fn connect(cfg: &WireConfig) -> Result<WireConn, WireError> {
        let mut last = WireError::Io("no host to connect to".to_owned());
        for (host, port) in &cfg.hosts {
            match Self::connect_one(cfg, host, *port) {
                Ok(c) => return Ok(c),
                Err(e @ WireError::Db { .. }) => return Err(e),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn connect_one(cfg: &WireConfig, host: &WireHost, port: u16) -> Result<WireConn, WireError> {
        let stream =
            match host {
                WireHost::Unix(dir) => {
                    let path = dir.join(format!(".s.PGSQL.{port}"));
                    Stream::Unix(UnixStream::connect(&path).map_err(|e| {
                        WireError::Io(format!("connecting to {}: {e}", path.display()))
                    })?)
                }
                WireHost::Tcp { name, addr } => {
                    let tcp = tcp_connect(name, *addr, port, cfg.connect_timeout)?;
                    tcp.set_nodelay(true)?;
                    match (cfg.tls, &cfg.tls_config) {
                        (TlsMode::Disable, _) | (_, None) => Stream::Tcp(tcp),
                        (mode, Some(tls)) => negotiate_tls(tcp, name, mode, tls)?,
                    }
                }
            };
        let mut conn = WireConn {
            stream,
            buf: vec![0; READ_BUF],
            start: 0,
            end: 0,
            out: BytesMut::with_capacity(1024),
        };
        conn.startup(cfg)?;
        Ok(conn)
    }

    fn startup(&mut self, cfg: &WireConfig) -> Result<(), WireError> {
        let mut params: Vec<(&str, &str)> = vec![
            ("user", &cfg.user),
            ("database", &cfg.dbname),
            ("application_name", "backup"),
            ("client_encoding", "UTF8"),
        ];
        if let Some(o) = &cfg.options {
            params.push(("options", o));
        }
        if cfg.replication {
            params.push(("replication", "true"));
        }
        frontend::startup_message(params.iter().copied(), &mut self.out)?;
        self.send()?;
        let password = || {
            cfg.password.as_deref().ok_or_else(|| {
                WireError::Io("the server asks for a password and none was given".to_owned())
            })
        };
        loop {
            let (tag, body) = self.message()?;
            match tag {
                b'R' => {
                    let code = be_i32(&body, 0)?;
                    match code {
                        0 => {}
                        3 => {
                            frontend::password_message(password()?, &mut self.out)?;
                            self.send()?;
                        }
                        5 => {
                            let salt: [u8; 4] = body
                                .get(4..8)
                                .and_then(|s| s.try_into().ok())
                                .ok_or_else(|| bad("MD5 salt"))?;
                            let hash = md5_hash(cfg.user.as_bytes(), password()?, salt);
                            frontend::password_message(hash.as_bytes(), &mut self.out)?;
                            self.send()?;
                        }
                        10 => self.scram(&body[4..], password()?)?,
                        other => {
                            return Err(WireError::Io(format!(
                                "the server asks for an authentication method (code {other}) that backup's workers do not support"
                            )))
                        }
                    }
                }
                b'E' => return Err(db_error(&body)),
                b'Z' => return Ok(()),
                // Parameter status, backend key, notices.
                _ => {}
            }
        }
    }

    fn scram(&mut self, mechanisms: &[u8], password: &[u8]) -> Result<(), WireError> {
        if !mechanisms.split(|&b| b == 0).any(|m| m == b"SCRAM-SHA-256") {
            return Err(WireError::Io(
                "the server offers no SASL mechanism backup supports (SCRAM-SHA-256)".to_owned(),
            ));
        }
        let mut scram = sasl::ScramSha256::new(password, sasl::ChannelBinding::unsupported());
        frontend::sasl_initial_response("SCRAM-SHA-256", scram.message(), &mut self.out)?;
        self.send()?;
        loop {
            let (tag, body) = self.message()?;
            match (tag, be_i32(&body, 0)) {
                (b'R', Ok(11)) => {
                    scram.update(&body[4..])?;
                    frontend::sasl_response(scram.message(), &mut self.out)?;
                    self.send()?;
                }
                (b'R', Ok(12)) => {
                    scram.finish(&body[4..])?;
                    return Ok(());
                }
                (b'E', _) => return Err(db_error(&body)),
                _ => return Err(bad("SASL exchange")),
            }
        }
    }

    /// Runs statements (simple query protocol) and waits for the end.
    pub(crate) fn simple_query(&mut self, sql: &str) -> Result<(), WireError> {
        frontend::query(sql, &mut self.out)?;
        self.send()?;
        let mut failed = None;
        loop {
            let (tag, body) = self.message()?;
            match tag {
                b'E' => failed = Some(db_error(&body)),
                b'Z' => return failed.map_or(Ok(()), Err),
                b'G' | b'H' => return Err(bad("COPY in a plain statement")),
                _ => {}
            }
        }
    }

    /// Runs a statement (simple query protocol) and returns the rows of all
    /// its result sets, each column as text (`None` for NULL).
    pub(crate) fn query_rows(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, WireError> {
        frontend::query(sql, &mut self.out)?;
        self.send()?;
        let mut rows = Vec::new();
        let mut failed = None;
        loop {
            let (tag, body) = self.message()?;
            match tag {
                b'D' => rows.push(data_row(&body)?),
                b'E' => failed = Some(db_error(&body)),
                b'Z' => return failed.map_or(Ok(rows), Err),
                b'G' | b'H' | b'W' => return Err(bad("COPY in a plain statement")),
                _ => {}
            }
        }
    }

    /// Sends a statement (simple query protocol) without waiting for its
    /// results; read them with [`WireConn::next_message`].
    pub(crate) fn send_query(&mut self, sql: &str) -> Result<(), WireError> {
        frontend::query(sql, &mut self.out)?;
        self.send()?;
        Ok(())
    }

    /// The rows of a result, read up to `ReadyForQuery`: `Ok(Err(..))`
    /// with the server's message when it sent an error instead.
    ///
    /// # Errors
    ///
    /// The connection failing, or a row that cannot be read.
    pub(crate) fn rows(&mut self) -> io::Result<Result<Vec<Vec<Option<String>>>, String>> {
        let mut rows = Vec::new();
        loop {
            let r = self.next_message(|tag, body| match tag {
                b'D' => data_row(body).map(Some).map_err(|e| e.to_string()),
                b'E' => Err(db_error(body).to_string()),
                b'Z' => Ok(None),
                _ => Ok(Some(Vec::new())),
            })?;
            match r {
                Ok(Some(row)) if !row.is_empty() => rows.push(row),
                Ok(Some(_)) => {}
                Ok(None) => return Ok(Ok(rows)),
                Err(m) => return Ok(Err(m)),
            }
        }
    }

    /// The next message from the server: its tag and a borrowed body
    /// (valid until the next read), given to `f`.
    pub(crate) fn next_message<R>(&mut self, f: impl FnOnce(u8, &[u8]) -> R) -> io::Result<R> {
        self.want(5)?;
        let (tag, len) = self.header()?;
        self.want(5 + len)?;
        let r = f(tag, &self.buf[self.start + 5..self.start + 5 + len]);
        self.start += 5 + len;
        Ok(r)
    }

    /// Like [`WireConn::next_message`], but returns `Ok(None)` when no
    /// whole message arrives within `timeout` (what arrived is kept for
    /// the next call).
    pub(crate) fn poll_message<R>(
        &mut self,
        timeout: Duration,
        f: impl FnOnce(u8, &[u8]) -> R,
    ) -> io::Result<Option<R>> {
        let have = |c: &Self| -> Option<usize> {
            if c.end - c.start < 5 {
                return None;
            }
            let len = c.header().ok()?.1;
            (c.end - c.start >= 5 + len).then_some(len)
        };
        if have(self).is_none() {
            self.stream.set_read_timeout(Some(timeout))?;
            let r = self.fill_some();
            self.stream.set_read_timeout(None)?;
            match r {
                Ok(()) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(e),
            }
            if have(self).is_none() {
                // Part of a message: the rest follows at once.
                return self.next_message(f).map(Some);
            }
        }
        self.next_message(f).map(Some)
    }

    /// Reads once from the socket (making room first).
    fn fill_some(&mut self) -> io::Result<()> {
        if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        self.fill()
    }

    /// Sends a `CopyData` message (inside COPY BOTH: standby status
    /// updates).
    pub(crate) fn send_copy_data(&mut self, data: &[u8]) -> io::Result<()> {
        self.out.clear();
        self.out.extend_from_slice(b"d");
        self.out
            .extend_from_slice(&((data.len() + 4) as u32).to_be_bytes());
        self.out.extend_from_slice(data);
        self.send()
    }

    /// Sends `CopyDone`.
    pub(crate) fn send_copy_done(&mut self) -> io::Result<()> {
        self.out.clear();
        self.out.extend_from_slice(&[b'c', 0, 0, 0, 4]);
        self.send()
    }

    /// Starts `sql` (a `COPY ... TO STDOUT` in text format) and returns its
    /// rows as a reader. `done` receives the connection, ready for the next
    /// statement, with the rows and bytes read, once the reader reaches the
    /// end.
    pub(crate) fn copy_out(mut self, sql: &str, done: CopyDone) -> Result<CopyOut, WireError> {
        frontend::query(sql, &mut self.out)?;
        self.send()?;
        loop {
            let (tag, body) = self.message()?;
            match tag {
                b'H' => break,
                b'E' => {
                    let e = db_error(&body);
                    // Back to idle before the connection is dropped.
                    while self.message()?.0 != b'Z' {}
                    return Err(e);
                }
                b'Z' | b'C' | b'T' | b'D' | b'G' => {
                    return Err(bad("a statement that is not COPY TO STDOUT"))
                }
                _ => {}
            }
        }
        Ok(CopyOut {
            conn: Some(self),
            row_left: 0,
            rows: 0,
            bytes: 0,
            done: Some(done),
            caught_up: false,
        })
    }

    fn send(&mut self) -> io::Result<()> {
        self.stream.send_all(&self.out)?;
        self.out.clear();
        Ok(())
    }

    /// Reads more from the socket; an end of stream is an error.
    fn fill(&mut self) -> io::Result<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.end == self.buf.len() {
                let len = self.buf.len() * 2;
                self.buf.resize(len, 0);
            }
        }
        let n = loop {
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        self.end += n;
        Ok(())
    }

    /// Makes at least `n` bytes available after `start`.
    ///
    /// The buffer grows (doubling, in [`WireConn::fill`]) as bytes arrive,
    /// never to a length a message header states: a header claiming a
    /// gigabyte followed by nothing costs nothing.
    fn want(&mut self, n: usize) -> io::Result<()> {
        if self.buf.len() - self.start < n {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while self.end - self.start < n {
            self.fill()?;
        }
        Ok(())
    }

    /// The next whole message: its tag and body.
    fn message(&mut self) -> io::Result<(u8, Vec<u8>)> {
        self.want(5)?;
        let (tag, len) = self.header()?;
        self.want(5 + len)?;
        let body = self.buf[self.start + 5..self.start + 5 + len].to_vec();
        self.start += 5 + len;
        Ok((tag, body))
    }

    /// The tag and body length of the message at `start` (5 bytes there).
    fn header(&self) -> io::Result<(u8, usize)> {
        let h = &self.buf[self.start..self.start + 5];
        let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
        if len < 4 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "malformed message from the server",
            ));
        }
        if len > MAX_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a message of {len} bytes from the server (type `{}`), over the 1 GiB a PostgreSQL server can send",
                    char::from(h[0]).escape_default()
                ),
            ));
        }
        Ok((h[0], len - 4))
    }
}

impl Drop for WireConn {
    fn drop(&mut self) {
        // Say goodbye; the server would otherwise log an unexpected EOF.
        self.out.clear();
        frontend::terminate(&mut self.out);
        let _ = self.stream.send_all(&self.out);
    }
}

/// The rows of one `COPY ... TO STDOUT`, as they came (text format).
pub(crate) struct CopyOut {
    conn: Option<WireConn>,
    /// Bytes of the current row not yet returned.
    row_left: usize,
    rows: u64,
    bytes: u64,
    done: Option<CopyDone>,
    /// The last read found less than [`PACE_BYTES`]: the server is the
    /// slower side.
    caught_up: bool,
}

impl CopyOut {
    /// After `CopyDone`: reads to the end of the statement and hands the
    /// connection back.
    fn finish(&mut self) -> io::Result<()> {
        let Some(mut conn) = self.conn.take() else {
            return Ok(());
        };
        let mut failed = None;
        loop {
            let (tag, body) = conn.message()?;
            match tag {
                b'E' => failed = Some(db_error(&body)),
                b'Z' => break,
                _ => {}
            }
        }
        if let Some(e) = failed {
            return Err(io::Error::other(e.to_string()));
        }
        if let Some(done) = self.done.take() {
            done(conn, self.rows, self.bytes);
        }
        Ok(())
    }
}

impl Read for CopyOut {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < out.len() {
            let Some(conn) = self.conn.as_mut() else {
                break;
            };
            if conn.start == conn.end {
                // Return what is here before waiting for the server.
                if n > 0 {
                    break;
                }
                if self.caught_up && self.bytes >= PACE_AFTER {
                    std::thread::sleep(PACE);
                }
                let before = conn.end - conn.start;
                conn.fill()?;
                self.caught_up = conn.end - conn.start - before < PACE_BYTES;
            }
            if self.row_left > 0 {
                let take = self.row_left.min(conn.end - conn.start).min(out.len() - n);
                out[n..n + take].copy_from_slice(&conn.buf[conn.start..conn.start + take]);
                conn.start += take;
                self.row_left -= take;
                n += take;
                continue;
            }
            if conn.end - conn.start < 5 {
                if n > 0 {
                    break;
                }
                conn.want(5)?;
            }
            let (tag, len) = conn.header()?;
            match tag {
                b'd' => {
                    // The row's bytes follow, possibly over several reads.
                    conn.start += 5;
                    self.row_left = len;
                    self.rows += 1;
                    self.bytes += len as u64;
                }
                b'c' => {
                    conn.message()?;
                    self.finish()?;
                }
                b'E' => {
                    let (_, body) = conn.message()?;
                    self.conn = None;
                    return Err(io::Error::other(db_error(&body).to_string()));
                }
                // Notices and parameter changes may come at any time.
                _ => {
                    conn.message()?;
                }
            }
        }
        Ok(n)
    }
}

fn tcp_connect(
    name: &str,
    addr: Option<std::net::IpAddr>,
    port: u16,
    timeout: Duration,
) -> Result<TcpStream, WireError> {
    let addrs: Vec<std::net::SocketAddr> = match addr {
        Some(ip) => vec![(ip, port).into()],
        None => (name, port)
            .to_socket_addrs()
            .map_err(|e| WireError::Io(format!("resolving {name}: {e}")))?
            .collect(),
    };
    let mut last = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(WireError::Io(match last {
        Some(e) => format!("connecting to {name}:{port}: {e}"),
        None => format!("{name} has no address"),
    }))
}

fn negotiate_tls(
    mut tcp: TcpStream,
    name: &str,
    mode: TlsMode,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<Stream, WireError> {
    let mut req = BytesMut::new();
    frontend::ssl_request(&mut req);
    tcp.write_all(&req)?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer)?;
    match answer[0] {
        b'S' => {
            let server = rustls_pki_types::ServerName::try_from(name.to_owned())
                .map_err(|e| WireError::Io(format!("TLS server name {name}: {e}")))?;
            let conn = rustls::ClientConnection::new(tls.clone(), server)
                .map_err(|e| WireError::Io(format!("TLS setup failed: {e}")))?;
            let mut s = rustls::StreamOwned::new(conn, tcp);
            // Complete the handshake now, so that its errors are reported
            // as such.
            while s.conn.is_handshaking() {
                s.conn
                    .complete_io(&mut s.sock)
                    .map_err(|e| WireError::Io(format!("TLS handshake failed: {e}")))?;
            }
            Ok(Stream::Tls(Box::new(s)))
        }
        b'N' if matches!(mode, TlsMode::Allow | TlsMode::Prefer) => Ok(Stream::Tcp(tcp)),
        b'N' => Err(WireError::Io(
            "the server does not accept TLS connections".to_owned(),
        )),
        _ => Err(bad("TLS negotiation")),
    }
}

fn be_i32(body: &[u8], at: usize) -> Result<i32, WireError> {
    body.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(i32::from_be_bytes)
        .ok_or_else(|| bad("authentication request"))
}

/// The columns of a `DataRow` body as text (`None` for NULL).
pub(crate) fn data_row(body: &[u8]) -> Result<Vec<Option<String>>, WireError> {
    let count = body
        .get(0..2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or_else(|| bad("a data row"))?;
    let mut at = 2;
    let mut out = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let len = be_i32(body, at).map_err(|_| bad("a data row"))?;
        at += 4;
        if len < 0 {
            out.push(None);
            continue;
        }
        let len = len as usize;
        let v = body.get(at..at + len).ok_or_else(|| bad("a data row"))?;
        out.push(Some(String::from_utf8_lossy(v).into_owned()));
        at += len;
    }
    Ok(out)
}

fn bad(what: &str) -> WireError {
    WireError::Io(format!("unexpected message from the server during {what}"))
}

/// The fields of an `ErrorResponse` body.
pub(crate) fn db_error(body: &[u8]) -> WireError {
    let mut code = String::new();
    let mut message = String::new();
    let mut detail = None;
    let mut hint = None;
    for field in body.split(|&b| b == 0) {
        let Some((&kind, text)) = field.split_first() else {
            continue;
        };
        let text = String::from_utf8_lossy(text).into_owned();
        match kind {
            b'C' => code = text,
            b'M' => message = text,
            b'D' => detail = Some(text),
            b'H' => hint = Some(text),
            _ => {}
        }
    }
    WireError::Db {
        code,
        message,
        detail,
        hint,
    }
}

#[cfg(test)]
mod tests;
