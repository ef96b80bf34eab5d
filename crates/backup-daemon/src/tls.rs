//! HTTPS for the daemon's HTTP interface (`[daemon.tls]`): the rustls
//! server configuration, and a listener that completes each TLS
//! handshake before the connection reaches the routes, carrying the
//! subject of a verified client certificate with it ([`Peer`]).
//!
//! With `client_ca` the server asks every client for a certificate;
//! giving none is allowed (token users still connect), but a certificate
//! that does not chain to those CAs ends the handshake, so such a client
//! never reaches a route. Which user a verified certificate is, is
//! decided with the tokens, in `crate::http`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use backup_ops::access::CertSubject;
use backup_ops::config::TlsSettings;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// Who is at the other end of a connection: its address and, over TLS,
/// the subject of the client certificate the handshake verified.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// The verified client certificate's subject, when one was given.
    pub cert: Option<CertSubject>,
}

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        Peer {
            addr: *stream.remote_addr(),
            cert: None,
        }
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

fn certificates(path: &std::path::Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .with_context(|| format!("reading {what} {}", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{what} {} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

/// The rustls server configuration of `settings`: the server's chain and
/// key, HTTP/1.1 by ALPN, and with `client_ca` a verifier that asks for
/// client certificates (optional ones) chaining to those CAs.
///
/// # Errors
///
/// Unreadable or malformed PEM files, a key that does not fit the
/// certificate, CA certificates rustls refuses.
pub fn server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&settings.cert, "daemon.tls.cert")?;
    let key = PrivateKeyDer::from_pem_file(&settings.key)
        .with_context(|| format!("reading daemon.tls.key {}", settings.key.display()))?;
    let verifier = match &settings.client_ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for ca in certificates(path, "daemon.tls.client_ca")? {
                roots
                    .add(ca)
                    .with_context(|| format!("a CA certificate of {}", path.display()))?;
            }
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                .allow_unauthenticated()
                .build()
                .context("daemon.tls.client_ca")?
        }
        None => WebPkiClientVerifier::no_client_auth(),
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the TLS protocol versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .context("daemon.tls.cert and daemon.tls.key do not make a server identity")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The subject of a DER certificate; `None` when it does not parse
/// (rustls verified it, so it does).
pub fn subject_of(der: &[u8]) -> Option<CertSubject> {
    use x509_cert::der::Decode as _;
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let name = &cert.tbs_certificate.subject;
    Some(CertSubject {
        dn: name.to_string(),
        // RFC 4514 writes the most specific name first, the reverse of the
        // encoded order.
        rdns: name.0.iter().rev().map(ToString::to_string).collect(),
    })
}

/// A listener of TLS connections: a task accepts TCP connections and
/// completes their handshakes (each in its own task, within
/// ten seconds); those that succeed come out of
/// [`axum::serve::Listener::accept`].
#[derive(Debug)]
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp` with `config` until `stop`.
    ///
    /// # Errors
    ///
    /// The listener's address cannot be read.
    pub fn new(
        tcp: TcpListener,
        config: Arc<ServerConfig>,
        stop: CancellationToken,
    ) -> Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (stream, addr) = tokio::select! {
                    () = stop.cancelled() => break,
                    accepted = tcp.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::debug!(error = %e, "Accepting a connection failed.");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_LIMIT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let cert = tls
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .and_then(|c| subject_of(c));
                            let _ = tx.send((tls, Peer { addr, cert })).await;
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(client = %addr, error = %e, "Refused a TLS connection.");
                        }
                        Err(_) => {
                            tracing::warn!(client = %addr, "A TLS handshake took too long.");
                        }
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(next) => next,
            // The acceptor stopped: no connection comes any more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Peer {
            addr: self.local,
            cert: None,
        })
    }
}
