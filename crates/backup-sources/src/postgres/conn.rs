//! Connection settings: URL parsing with libpq-style options, passwords
//! from the URL, `PGPASSWORD` or `~/.pgpass`, TLS, connecting with clear
//! errors, and the environment handed to `pg_dump` and friends.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use backup_core::redact::redact_url;
use backup_core::{Error, Result};

use super::wire::{TlsMode, WireConfig, WireHost};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

/// Which side of the operation a connection serves; errors are reported as
/// [`Error::Source`] or [`Error::Target`] accordingly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Source,
    Target,
}

impl Side {
    pub(crate) fn err(self, msg: String) -> Error {
        match self {
            Side::Source => Error::source_failed(msg),
            Side::Target => Error::target_failed(msg),
        }
    }

    /// An error whose message explains the driver's error `e`, kept as its
    /// source with the verdict of [`retryable`].
    pub(crate) fn explained(self, msg: String, e: tokio_postgres::Error) -> Error {
        let again = retryable(&e);
        match self {
            Side::Source => Error::source_explained(msg, e, again),
            Side::Target => Error::target_explained(msg, e, again),
        }
    }
}

/// Whether running the operation again may get past `e`: the connection
/// broke or timed out, or the server answered with an error that passes
/// (connection exceptions, class 08; serialization failures and deadlocks,
/// 40001 and 40P01; insufficient resources, class 53, such as too many
/// connections; a server shutting down or starting, 57P01 to 57P03).
pub(crate) fn retryable(e: &tokio_postgres::Error) -> bool {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        return code.starts_with("08")
            || code.starts_with("53")
            || matches!(code, "40001" | "40P01" | "57P01" | "57P02" | "57P03");
    }
    e.is_closed() || backup_core::error::cause_is_transient(e)
}

/// A parsed, completed connection description.
#[derive(Clone)]
pub(crate) struct ConnInfo {
    config: Config,
    tls: TlsMode,
    root_cert: Option<PathBuf>,
    user: String,
    dbname: String,
    /// `host:port` for messages.
    location: String,
    /// Scheme as given (`postgres` or `postgresql`).
    scheme: String,
    /// `?mode=` of the URL (how to back the source up; not a libpq key).
    mode: Option<String>,
}

impl std::fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Query keys handled here rather than by `tokio-postgres`.
const TLS_KEYS: [&str; 2] = ["sslmode", "sslrootcert"];
/// libpq keys this implementation cannot honour; refused rather than
/// ignored.
const UNSUPPORTED_KEYS: [&str; 4] = ["sslcert", "sslkey", "sslpassword", "service"];

impl ConnInfo {
    /// Parses `postgres://user:pass@host:port/db?options` and completes it
    /// from the environment like libpq (`PGHOST`, `PGPORT`, `PGUSER`,
    /// `PGDATABASE`, `PGPASSWORD`, `PGSSLMODE`, `~/.pgpass`).
    pub(crate) fn parse(url: &str) -> Result<Self> {
        let (scheme, _) = url.split_once("://").ok_or_else(|| {
            Error::Config(format!("`{}` is not a postgres:// URL", redact_url(url)))
        })?;
        let scheme = scheme.to_ascii_lowercase();
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, q),
            None => (url, ""),
        };
        let mut kept: Vec<(String, String)> = Vec::new();
        let mut tls = None;
        let mut root_cert = None;
        let mut mode = None;
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            if k == "mode" {
                mode = Some(v.into_owned());
                continue;
            }
            if UNSUPPORTED_KEYS.contains(&k.as_ref()) {
                return Err(Error::Config(format!(
                    "the connection option `{k}` is not supported by backup; remove it from the URL"
                )));
            }
            if TLS_KEYS.contains(&k.as_ref()) {
                if k == "sslmode" {
                    tls = Some(TlsMode::parse(&v)?);
                } else {
                    root_cert = Some(PathBuf::from(v.as_ref()));
                }
            } else {
                kept.push((k.into_owned(), v.into_owned()));
            }
        }
        let rebuilt = if kept.is_empty() {
            base.to_owned()
        } else {
            let q: String = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(kept.iter())
                .finish();
            format!("{base}?{q}")
        };
        let mut config = Config::from_str(&rebuilt).map_err(|e| {
            Error::Config(format!(
                "`{}` is not a valid PostgreSQL URL: {e}",
                redact_url(url)
            ))
        })?;
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if config.get_hosts().is_empty() {
            if let Some(h) = env("PGHOST") {
                for h in h.split(',') {
                    config.host(h);
                }
            } else {
                let sock = Path::new("/var/run/postgresql");
                if sock.is_dir() {
                    config.host_path(sock);
                } else {
                    config.host("localhost");
                }
            }
        }
        if config.get_ports().is_empty() {
            if let Some(p) = env("PGPORT") {
                let port = p
                    .parse()
                    .map_err(|_| Error::Config(format!("PGPORT `{p}` is not a port number")))?;
                config.port(port);
            }
        }
        let user = match config.get_user() {
            Some(u) => u.to_owned(),
            None => env("PGUSER").unwrap_or_else(backup_core::util::username),
        };
        config.user(&user);
        let dbname = match config.get_dbname() {
            Some(d) => d.to_owned(),
            None => env("PGDATABASE").unwrap_or_else(|| user.clone()),
        };
        config.dbname(&dbname);
        let tls = match tls {
            Some(t) => t,
            None => env("PGSSLMODE")
                .map(|s| TlsMode::parse(&s))
                .transpose()?
                .unwrap_or(TlsMode::Prefer),
        };
        if root_cert.is_none() {
            root_cert = env("PGSSLROOTCERT").map(PathBuf::from);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(30));
        }
        config.application_name("backup");
        let location = location_of(&config);
        let mut info = ConnInfo {
            config,
            tls,
            root_cert,
            user,
            dbname,
            location,
            scheme,
            mode,
        };
        if info.config.get_password().is_none() {
            if let Some(p) = env("PGPASSWORD") {
                info.config.password(p);
            } else if let Some(p) = info.pgpass_password() {
                info.config.password(p);
            }
        }
        Ok(info)
    }

    /// The same server and credentials, another database.
    pub(crate) fn with_dbname(&self, dbname: &str) -> Self {
        let mut c = self.clone();
        c.config.dbname(dbname);
        dbname.clone_into(&mut c.dbname);
        if self.config.get_password().is_none() {
            if let Some(p) = c.pgpass_password() {
                c.config.password(p);
            }
        }
        c
    }

    /// `?mode=` of the URL.
    pub(crate) fn url_mode(&self) -> Option<&str> {
        self.mode.as_deref()
    }

    pub(crate) fn dbname(&self) -> &str {
        &self.dbname
    }

    pub(crate) fn user(&self) -> &str {
        &self.user
    }

    /// The URL without the password (recorded in manifests, shown in
    /// messages).
    pub(crate) fn redacted(&self) -> String {
        format!(
            "{}://{}@{}/{}",
            self.scheme,
            pct(&self.user),
            self.location,
            pct(&self.dbname)
        )
    }

    /// The cluster's URL for physical snapshots: no database (a base
    /// backup holds them all), `?mode=physical` (so that physical and
    /// logical snapshots of one server are told apart, and each is the
    /// other's parent never).
    pub(crate) fn physical_redacted(&self) -> String {
        format!(
            "{}://{}@{}/?mode=physical",
            self.scheme,
            pct(&self.user),
            self.location
        )
    }

    /// `host:port` for messages.
    pub(crate) fn location(&self) -> &str {
        &self.location
    }

    /// Looks the password up in `PGPASSFILE` or `~/.pgpass`.
    fn pgpass_password(&self) -> Option<String> {
        let path = match std::env::var_os("PGPASSFILE") {
            Some(p) => PathBuf::from(p),
            None => PathBuf::from(std::env::var_os("HOME")?).join(".pgpass"),
        };
        let meta = std::fs::metadata(&path).ok()?;
        {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(file = %path.display(), "Password file has group or world access and is ignored (chmod 0600 it).");
                return None;
            }
        }
        let text = std::fs::read_to_string(&path).ok()?;
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            _ => "localhost".to_owned(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        pgpass_lookup(&text, &host, port, &self.dbname, &self.user)
    }

    /// Environment variables that make libpq tools (`pg_dump`, `psql`)
    /// connect where this connection does, password included (never on a
    /// command line).
    pub(crate) fn tool_env(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        let hosts: Vec<String> = self
            .config
            .get_hosts()
            .iter()
            .map(|h| match h {
                Host::Tcp(s) => s.clone(),
                Host::Unix(p) => p.display().to_string(),
            })
            .collect();
        env.push(("PGHOST".to_owned(), hosts.join(",")));
        if !self.config.get_ports().is_empty() {
            let ports: Vec<String> = self
                .config
                .get_ports()
                .iter()
                .map(ToString::to_string)
                .collect();
            env.push(("PGPORT".to_owned(), ports.join(",")));
        }
        env.push(("PGUSER".to_owned(), self.user.clone()));
        env.push(("PGDATABASE".to_owned(), self.dbname.clone()));
        if let Some(p) = self.config.get_password() {
            env.push((
                "PGPASSWORD".to_owned(),
                String::from_utf8_lossy(p).into_owned(),
            ));
        }
        env.push(("PGSSLMODE".to_owned(), self.tls.as_str().to_owned()));
        if let Some(r) = &self.root_cert {
            env.push(("PGSSLROOTCERT".to_owned(), r.display().to_string()));
        }
        if let Some(o) = self.config.get_options() {
            env.push(("PGOPTIONS".to_owned(), o.to_owned()));
        }
        if let Some(t) = self.config.get_connect_timeout() {
            env.push(("PGCONNECT_TIMEOUT".to_owned(), t.as_secs().to_string()));
        }
        env.push(("PGAPPNAME".to_owned(), "backup".to_owned()));
        env
    }

    /// Connects; the connection runs on a spawned task until the client is
    /// dropped.
    pub(crate) async fn connect(&self, side: Side) -> Result<Client> {
        let r = match self.tls {
            TlsMode::Disable => self.config.connect(NoTls).await.map(|(c, conn)| {
                spawn_connection(conn);
                c
            }),
            mode => {
                let mut config = self.config.clone();
                config.ssl_mode(match mode {
                    TlsMode::Allow | TlsMode::Prefer => SslMode::Prefer,
                    _ => SslMode::Require,
                });
                let tls = self.rustls(mode).map_err(|e| side.err(e))?;
                config.connect(tls).await.map(|(c, conn)| {
                    spawn_connection(conn);
                    c
                })
            }
        };
        r.map_err(|e| self.connect_error(e, side))
    }

    /// The settings of a blocking worker connection (see [`super::wire`]):
    /// the same hosts, credentials and TLS mode.
    pub(crate) fn wire(&self) -> std::result::Result<WireConfig, String> {
        let ports = self.config.get_ports();
        let addrs = self.config.get_hostaddrs();
        let hosts = self
            .config
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
                let host = match h {
                    Host::Tcp(name) => WireHost::Tcp {
                        name: name.clone(),
                        addr: addrs.get(i).copied(),
                    },
                    Host::Unix(dir) => WireHost::Unix(dir.clone()),
                };
                (host, port)
            })
            .collect();
        let tls_config = match self.tls {
            TlsMode::Disable => None,
            mode => Some(Arc::new(self.rustls_config(mode)?)),
        };
        Ok(WireConfig {
            hosts,
            user: self.user.clone(),
            dbname: self.dbname.clone(),
            password: self.config.get_password().map(<[u8]>::to_vec),
            options: self.config.get_options().map(str::to_owned),
            tls: self.tls,
            tls_config,
            connect_timeout: self
                .config
                .get_connect_timeout()
                .copied()
                .unwrap_or(Duration::from_secs(30)),
            replication: false,
        })
    }

    fn rustls(
        &self,
        mode: TlsMode,
    ) -> std::result::Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
        Ok(tokio_postgres_rustls::MakeRustlsConnect::new(
            self.rustls_config(mode)?,
        ))
    }

    fn rustls_config(&self, mode: TlsMode) -> std::result::Result<rustls::ClientConfig, String> {
        let provider = crate::tls::provider().map_err(|e| e.to_string())?;
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))?;
        let verify = match mode {
            TlsMode::VerifyCa | TlsMode::VerifyFull => true,
            // libpq: with a root certificate, `require` verifies like
            // `verify-ca`.
            TlsMode::Require => self.root_cert.is_some(),
            _ => false,
        };
        let config = if verify {
            let roots = self.roots()?;
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| format!("TLS setup failed: {e}"))?;
            if mode == TlsMode::VerifyFull {
                builder.with_webpki_verifier(webpki).with_no_client_auth()
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(tls::ChainOnly(webpki)))
                    .with_no_client_auth()
            }
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(tls::NoVerify(provider)))
                .with_no_client_auth()
        };
        Ok(config)
    }

    fn roots(&self) -> std::result::Result<rustls::RootCertStore, String> {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        let file = self.root_cert.clone().or_else(|| {
            let p = PathBuf::from(std::env::var_os("HOME")?).join(".postgresql/root.crt");
            p.exists().then_some(p)
        });
        match file {
            Some(p) if p.as_os_str() != "system" => {
                let certs = rustls_pki_types::CertificateDer::pem_file_iter(&p)
                    .map_err(|e| format!("cannot read root certificate {}: {e}", p.display()))?;
                for c in certs {
                    let c = c.map_err(|e| {
                        format!("cannot read root certificate {}: {e}", p.display())
                    })?;
                    roots
                        .add(c)
                        .map_err(|e| format!("bad root certificate in {}: {e}", p.display()))?;
                }
            }
            _ => {
                let found = rustls_native_certs::load_native_certs();
                for c in found.certs {
                    let _ = roots.add(c);
                }
                if roots.is_empty() {
                    return Err("sslmode verify-ca/verify-full needs root certificates: give sslrootcert=FILE or install the system CA bundle".to_owned());
                }
            }
        }
        Ok(roots)
    }

    /// Maps a connection error to a message that says what to do.
    fn connect_error(&self, e: tokio_postgres::Error, side: Side) -> Error {
        let at = format!("PostgreSQL at {} (user `{}`)", self.location, self.user);
        if let Some(db) = e.as_db_error() {
            let code = db.code();
            if *code == SqlState::INVALID_PASSWORD
                || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            {
                return Error::PermissionDenied(format!(
                    "authentication to {at} failed: {}; check the user and the password (in the URL, PGPASSWORD or ~/.pgpass)",
                    db.message()
                ));
            }
            if *code == SqlState::INVALID_CATALOG_NAME {
                return Error::not_found(format!(
                    "database `{}` on {} ({})",
                    self.dbname,
                    self.location,
                    db.message()
                ));
            }
            let msg = format!("connecting to {at}: {}", db.message());
            return side.explained(msg, e);
        }
        let text = e.to_string();
        let detail = std::error::Error::source(&e).map_or(text.clone(), |s| format!("{text}: {s}"));
        // tokio-postgres says "invalid configuration", with "password
        // missing" as its cause, when the server asks for a password.
        if detail.contains("password missing") {
            return Error::PermissionDenied(format!(
                "{at} asks for a password and none was given: put it in the URL, PGPASSWORD or ~/.pgpass"
            ));
        }
        side.explained(
            format!(
                "cannot connect to {at}: {detail}; check that the server is running and reachable at that address"
            ),
            e,
        )
    }
}

fn spawn_connection<S, T>(conn: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended with an error.");
        }
    });
}

fn location_of(c: &Config) -> String {
    let host = match c.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn pct(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Finds the password for a connection in `.pgpass` text (libpq rules:
/// first matching line wins, `*` matches anything, `\:` and `\\` escape).
pub(crate) fn pgpass_lookup(
    text: &str,
    host: &str,
    port: u16,
    db: &str,
    user: &str,
) -> Option<String> {
    let port = port.to_string();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = Vec::with_capacity(5);
        let mut cur = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                }
                ':' if fields.len() < 4 => fields.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        fields.push(cur);
        if fields.len() != 5 {
            continue;
        }
        let ok = |f: &str, v: &str| f == "*" || f == v;
        if ok(&fields[0], host)
            && ok(&fields[1], &port)
            && ok(&fields[2], db)
            && ok(&fields[3], user)
        {
            return Some(fields.swap_remove(4));
        }
    }
    None
}

/// Maps an error of a statement to a message naming what was being done.
pub(crate) fn query_error(side: Side, what: &str, e: tokio_postgres::Error) -> Error {
    if let Some(db) = e.as_db_error() {
        let mut msg = format!("{what}: {}", db.message());
        if let Some(d) = db.detail() {
            msg = format!("{msg} ({d})");
        }
        if *db.code() == SqlState::INSUFFICIENT_PRIVILEGE {
            return Error::PermissionDenied(format!(
                "{msg}: grant the privilege to the connecting role or use a role that has it"
            ));
        }
        return side.explained(msg, e);
    }
    let detail =
        std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| format!("{e}: {s}"));
    side.explained(format!("{what}: {detail}"), e)
}

mod tls {
    //! Certificate verifiers for libpq's weaker TLS modes.

    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::client::WebPkiServerVerifier;
    use rustls::crypto::CryptoProvider;
    use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

    /// `sslmode=prefer`/`require`: encrypted, certificate not checked (as
    /// libpq does without a root certificate). Handshake signatures are
    /// still verified.
    #[derive(Debug)]
    pub(super) struct NoVerify(pub(super) Arc<CryptoProvider>);

    impl ServerCertVerifier for NoVerify {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    /// `sslmode=verify-ca`: the chain must lead to a trusted root; the host
    /// name is not checked.
    #[derive(Debug)]
    pub(super) struct ChainOnly(pub(super) Arc<WebPkiServerVerifier>);

    impl ServerCertVerifier for ChainOnly {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp_response: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            match self.0.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ) {
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                r => r,
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that answers the first startup message with a FATAL
    /// `ErrorResponse` of `code`, as PostgreSQL does when it refuses a
    /// connection (refused SSL first, when asked).
    fn refusing_server(code: &'static str) -> u16 {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let Ok((mut s, _)) = l.accept() else { return };
            loop {
                let mut len = [0u8; 4];
                if s.read_exact(&mut len).is_err() {
                    return;
                }
                let mut body = vec![0u8; u32::from_be_bytes(len) as usize - 4];
                if s.read_exact(&mut body).is_err() {
                    return;
                }
                // SSLRequest / GSSENCRequest: not supported here.
                if body.len() == 4 && body[..2] == [0x04, 0xd2] {
                    let _ = s.write_all(b"N");
                    continue;
                }
                let mut fields = Vec::new();
                for (t, v) in [
                    (b'S', "FATAL"),
                    (b'V', "FATAL"),
                    (b'C', code),
                    (b'M', "refused by the test"),
                ] {
                    fields.push(t);
                    fields.extend_from_slice(v.as_bytes());
                    fields.push(0);
                }
                fields.push(0);
                let mut msg = vec![b'E'];
                msg.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
                msg.extend_from_slice(&fields);
                let _ = s.write_all(&msg);
                return;
            }
        });
        port
    }

    #[tokio::test]
    async fn driver_errors_are_kept_and_say_whether_a_retry_can_help() {
        let connect = |port: u16| async move {
            ConnInfo::parse(&format!(
                "postgres://u:pw@127.0.0.1:{port}/db?sslmode=disable"
            ))
            .unwrap()
            .connect(Side::Source)
            .await
            .unwrap_err()
        };
        // Nothing listens: the connection is refused, which may pass.
        let e = connect(backup_testkit::free_port()).await;
        assert!(e.is_retryable(), "{e}");
        let cause = std::error::Error::source(&e).expect("the driver error is kept");
        assert!(
            cause.downcast_ref::<tokio_postgres::Error>().is_some(),
            "{cause:?}"
        );
        // The server is starting up (57P03) or has too many clients (53300):
        // worth another try, with the driver's error kept.
        for code in ["57P03", "53300"] {
            let e = connect(refusing_server(code)).await;
            assert!(e.is_retryable(), "{code}: {e}");
            assert!(matches!(e, Error::Source { .. }), "{code}: {e:?}");
            assert!(e.to_string().contains("refused by the test"), "{e}");
            assert_eq!(backup_core::error::report(&e), e.to_string());
        }
        // A refused login or a missing database will not pass.
        let e = connect(refusing_server("28P01")).await;
        assert!(matches!(e, Error::PermissionDenied(_)), "{e:?}");
        assert!(!e.is_retryable());
        let e = connect(refusing_server("3D000")).await;
        assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
        assert!(!e.is_retryable());
        let e = connect(refusing_server("0A000")).await;
        assert!(!e.is_retryable(), "{e}");
    }

    #[test]
    fn pgpass_rules() {
        let text =
            "# comment\nother:5432:*:u:nope\nlocalhost:5432:db\\:x:u:pa\\:ss\n*:*:*:u:fallback\n";
        assert_eq!(
            pgpass_lookup(text, "localhost", 5432, "db:x", "u").as_deref(),
            Some("pa:ss")
        );
        assert_eq!(
            pgpass_lookup(text, "h", 1, "d", "u").as_deref(),
            Some("fallback")
        );
        assert_eq!(pgpass_lookup(text, "h", 1, "d", "v"), None);
    }

    #[test]
    fn redaction() {
        let info = ConnInfo::parse("postgres://me:pw@127.0.0.1:6543/app?sslmode=disable").unwrap();
        assert_eq!(info.redacted(), "postgres://me@127.0.0.1:6543/app");
        assert!(!format!("{info:?}").contains("pw"));
        let env = info.tool_env();
        assert!(env.contains(&("PGPASSWORD".to_owned(), "pw".to_owned())));
        assert!(env.contains(&("PGSSLMODE".to_owned(), "disable".to_owned())));
    }

    #[test]
    fn bad_options_are_refused() {
        assert!(ConnInfo::parse("postgres://h/db?sslmode=sometimes").is_err());
        assert!(ConnInfo::parse("postgres://h/db?sslcert=/x").is_err());
        assert!(ConnInfo::parse("postgres://h/db?nonsense=1").is_err());
    }
}
