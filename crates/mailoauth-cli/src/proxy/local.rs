//! The proxy's side towards local clients: listening sockets (large backlog, so
//! a burst of connects is queued rather than refused) and local TLS, from a
//! configured certificate or one generated once and kept in the state directory.
//!
//! Must not: write a private key anywhere but a 0600 file in a 0700 directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpSocket};
use tokio_rustls::TlsAcceptor;

use mailoauth::config::ProxyConfig;
use mailoauth::error::{Error, Result};
use mailoauth::paths;

/// Connections the kernel queues while the proxy is busy (capped by somaxconn).
const BACKLOG: u32 = 4096;

/// Listen on `addr` with a large backlog.
pub fn listen(addr: SocketAddr) -> Result<TcpListener> {
    let err = |e| Error::io(format!("proxy: cannot listen on {addr}"), e);
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(err)?;
    // A restarted daemon must get its ports back while old connections linger in TIME_WAIT.
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    socket.listen(BACKLOG).map_err(err)
}

/// Where a generated certificate and key are kept.
fn generated_cert_paths() -> (PathBuf, PathBuf) {
    let dir = paths::state_dir().join("proxy");
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// The TLS acceptor for an account's listeners: its `cert`/`key`, else the
/// generated certificate (created on first use for localhost, 127.0.0.1, ::1
/// and `extra_names`).
/// Errors are config messages (the caller adds file and line).
pub fn acceptor(
    cfg: &ProxyConfig,
    extra_names: &[String],
) -> std::result::Result<TlsAcceptor, String> {
    let (cert, key) = match (&cfg.cert, &cfg.key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        (None, None) => {
            let (c, k) = generated_cert_paths();
            if !c.exists() || !k.exists() {
                generate(&c, &k, extra_names)?;
            }
            (c, k)
        }
        _ => {
            return Err(
                "give both `cert` and `key` (PEM files), or neither for a generated certificate"
                    .into(),
            );
        }
    };
    let bad = |p: &Path, what: &str, e: String| {
        format!(
            "cannot use {} as the {what}: {e} (expected a PEM file)",
            p.display()
        )
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .and_then(|it| it.collect::<std::result::Result<_, _>>())
        .map_err(|e| bad(&cert, "certificate", e.to_string()))?;
    if chain.is_empty() {
        return Err(bad(&cert, "certificate", "no CERTIFICATE block".into()));
    }
    let key_der =
        PrivateKeyDer::from_pem_file(&key).map_err(|e| bad(&key, "private key", e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key_der))
        .map_err(|e| {
            format!(
                "{} and {} do not make a usable TLS identity: {e}",
                cert.display(),
                key.display()
            )
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Create a self-signed certificate and its key (0600) for the proxy.
fn generate(cert: &Path, key: &Path, extra_names: &[String]) -> std::result::Result<(), String> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".into(), "::1".into()];
    for n in extra_names {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    let ck = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("cannot generate a certificate: {e}"))?;
    let dir = cert.parent().expect("state path has a parent");
    let write = |p: &Path, text: String| {
        mailoauth::store::file::write_atomic(p, text.as_bytes()).map_err(|e| e.to_string())
    };
    paths::ensure_private_dir(dir).map_err(|e| e.to_string())?;
    write(key, ck.signing_key.serialize_pem())?;
    write(cert, ck.cert.pem())?;
    log::warn!(
        "proxy: generated a self-signed certificate {} (clients must trust it)",
        cert.display()
    );
    Ok(())
}
