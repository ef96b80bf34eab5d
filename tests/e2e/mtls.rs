//! mTLS identities of the daemon (issue 30): `backupd` serving HTTPS with
//! `[daemon.tls]`, client certificates from a test CA made by `rcgen`.
//! A verified certificate is the user whose `cert_subject` it carries,
//! with that user's role; a certificate of another CA ends the handshake;
//! a client without a certificate still proves itself with a token.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;

use crate::daemon::{config, files_job, Daemon};
use crate::roles::hash;
use crate::util::{write, Scratch};

const TOM: &str = "tok-tom-operator-7777";

/// A certificate authority: its parameters and key sign leaves.
struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let pem = params.self_signed(&key).unwrap().pem();
    Ca { params, key, pem }
}

/// A certificate signed by `ca` for `subject` (its names in encoded
/// order: the most specific, the common name, last): a server's for 127.0.0.1, or a client's. PEM of the chain and
/// of the key.
fn leaf(ca: &Ca, subject: &[(DnType, &str)], server: bool) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let names = if server {
        vec!["127.0.0.1".to_owned()]
    } else {
        Vec::new()
    };
    let mut params = CertificateParams::new(names).unwrap();
    params.distinguished_name = DistinguishedName::new();
    for (kind, value) in subject {
        params.distinguished_name.push(kind.clone(), *value);
    }
    params.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    let issuer = Issuer::from_params(&ca.params, &ca.key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A TLS client trusting `server_ca`, presenting `cert` (chain and key
/// PEM) when given.
fn client(server_ca: &str, cert: Option<&(String, String)>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(server_ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    Arc::new(match cert {
        Some((chain, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(chain.as_bytes())
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    })
}

/// One HTTPS request: the status and the body, or why the connection
/// failed (a refused handshake).
fn https(
    port: u16,
    tls: &Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String), String> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(Arc::clone(tls), name).map_err(|e| e.to_string())?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            // A response ended without close_notify is still a response.
            Err(_) if !got.is_empty() => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no HTTP response: {text}"))?;
    let body = text.split_once("\r\n\r\n").map_or("", |x| x.1).to_owned();
    Ok((code, body))
}

fn save(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn r30_mtls_identities_with_a_test_ca() {
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    write(&src.join("a.txt"), b"mtls");
    let port = backup_testkit::free_port();
    let log = s.path("audit.jsonl");

    let test_ca = ca("backup test CA");
    let other_ca = ca("some other CA");
    let (server_chain, server_key) = leaf(&test_ca, &[(DnType::CommonName, "backupd")], true);
    let ann = leaf(&test_ca, &[(DnType::CommonName, "ann")], false);
    let vic = leaf(
        &test_ca,
        &[
            (DnType::OrganizationName, "Backup Test"),
            (DnType::CommonName, "vic"),
        ],
        false,
    );
    let nobody = leaf(&test_ca, &[(DnType::CommonName, "nobody")], false);
    // The right name from the wrong CA.
    let forged = leaf(&other_ca, &[(DnType::CommonName, "ann")], false);

    let dir = s.dir.path();
    let extra = format!(
        "[audit]\nlocal_log = \"{log}\"\n\n[daemon.tls]\ncert = \"{cert}\"\nkey = \"{key}\"\nclient_ca = \"{ca}\"\n\n\
         [[daemon.users]]\nname = \"ann\"\nrole = \"admin\"\ncert_subject = \"CN=ann\"\n\n\
         [[daemon.users]]\nname = \"vic\"\nrole = \"viewer\"\ncert_subject = \"CN=vic,O=Backup Test\"\n\n\
         [[daemon.users]]\nname = \"tom\"\nrole = \"operator\"\ntoken_hash = \"{tom}\"\n",
        log = log.display(),
        cert = save(dir, "server.pem", &server_chain),
        key = save(dir, "server.key", &server_key),
        ca = save(dir, "clients-ca.pem", &test_ca.pem),
        tom = hash(TOM),
    );
    let cfg = config(
        &s,
        "mtls.toml",
        port,
        &files_job(&src, "0 0 3 * * *"),
        &extra,
    );
    let anonymous = client(&test_ca.pem, None);
    let d = Daemon::start_until(&s, &cfg, port, "mtls.log", || {
        https(port, &anonymous, "GET", "/healthz", None).is_ok_and(|(code, _)| code == 200)
    });
    let as_ann = client(&test_ca.pem, Some(&ann));
    let as_vic = client(&test_ca.pem, Some(&vic));
    let json = |body: &str| -> Value { serde_json::from_str(body).unwrap() };

    // ann's certificate is ann, an admin: she reads the audit trail,
    // approving is hers (no such request: 404, not 403), and the run she
    // asks for is hers.
    let (code, body) = https(port, &as_ann, "GET", "/api/audit", None).unwrap();
    assert_eq!(code, 200, "{body}");
    let (code, body) = https(port, &as_ann, "POST", "/api/restores/r-none/approve", None).unwrap();
    assert_eq!(code, 404, "{body}");
    let (code, body) = https(port, &as_ann, "POST", "/api/jobs/files/run", None).unwrap();
    assert_eq!(code, 202, "{body}");
    assert_eq!(json(&body)["by"], "ann", "{body}");

    // vic's certificate (matched by its whole subject) is a viewer.
    let (code, body) = https(port, &as_vic, "GET", "/api/jobs", None).unwrap();
    assert_eq!(code, 200, "{body}");
    let (code, body) = https(port, &as_vic, "GET", "/api/audit", None).unwrap();
    assert_eq!(code, 403, "{body}");
    let v = json(&body);
    assert_eq!(
        (&v["identity"], &v["needed"]),
        (&"vic".into(), &"auditor".into())
    );

    // No certificate: the token decides, as over plain HTTP.
    let (code, body) = https(port, &anonymous, "GET", "/api/restores", Some(TOM)).unwrap();
    assert_eq!(code, 200, "{body}");
    let (code, body) = https(
        port,
        &anonymous,
        "POST",
        "/api/restores/r-none/approve",
        Some(TOM),
    )
    .unwrap();
    assert_eq!(code, 403, "{body}");
    assert_eq!(json(&body)["identity"], "tom");
    assert_eq!(
        https(port, &anonymous, "GET", "/api/jobs", None).unwrap().0,
        401
    );

    // A certificate of the CA that names nobody, and a certificate and a
    // token of two different users: 401.
    let as_nobody = client(&test_ca.pem, Some(&nobody));
    assert_eq!(
        https(port, &as_nobody, "GET", "/api/jobs", None).unwrap().0,
        401
    );
    assert_eq!(
        https(port, &as_ann, "GET", "/api/jobs", Some(TOM))
            .unwrap()
            .0,
        401
    );

    // A certificate of another CA never gets a response.
    let as_forged = client(&test_ca.pem, Some(&forged));
    let refused = https(port, &as_forged, "GET", "/api/jobs", None);
    assert!(refused.is_err(), "{refused:?}");
    d.wait_for(
        "the refused handshake in the log",
        Duration::from_secs(10),
        || d.log().contains("Refused a TLS connection"),
    );
    // Plain HTTP gets no answer from an HTTPS daemon.
    assert!(crate::daemon::http(port, "GET", "/healthz", None).is_none());

    // The run ann asked for is recorded as hers; the refusals with the
    // certificate that was shown.
    d.wait_for("ann's backup", Duration::from_secs(60), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("\"operation\":\"create\""))
    });
    let records: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let create = records.iter().find(|r| r["operation"] == "create").unwrap();
    assert_eq!(create["user"], "ann", "{create}");
    assert!(
        records.iter().any(|r| r["operation"] == "api-refused"
            && r["details"]["reason"] == "unknown certificate subject"
            && r["details"]["certificate"] == "CN=nobody"),
        "{records:?}"
    );
    assert!(
        records.iter().any(|r| r["operation"] == "api-refused"
            && r["details"]["identity"] == "vic"
            && r["details"]["needed"] == "auditor"),
        "{records:?}"
    );
    drop(d);
}

#[test]
fn r30_cert_subject_needs_client_certificates() {
    let s = Scratch::new();
    let port = backup_testkit::free_port();
    let src = s.path("src");
    let cfg = config(
        &s,
        "no-tls.toml",
        port,
        &files_job(&src, "0 0 3 * * *"),
        "[[daemon.users]]\nname = \"ann\"\nrole = \"admin\"\ncert_subject = \"CN=ann\"\n",
    );
    let out = std::process::Command::new(crate::daemon::backupd_bin())
        .arg("--config")
        .arg(&cfg)
        .arg("--check-config")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("daemon.users[0].cert_subject") && err.contains("client_ca"),
        "{err}"
    );
}
