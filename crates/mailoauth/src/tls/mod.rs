//! TLS towards mail servers: whom we trust, and why a handshake failed.
//!
//! Owns: the one rustls client configuration every mail connection uses (`check`,
//! `send`, `fetch` and the proxy's upstream): the platform's roots plus the
//! account's `ca_file`, where a certificate the server presents that is
//! byte-identical to one in `ca_file` is trusted as itself (a pin — how curl,
//! mbsync and msmtp treat a self-signed server certificate); and [`TlsFailure`],
//! a handshake failure typed with the certificate's facts so the catalog can
//! explain it. Must not: word fixes (the `diagnose` catalog does) or relax any
//! check for a certificate that is not pinned.

mod cert;
mod verifier;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

pub use cert::{CertFacts, date, fingerprint};

/// Why no TLS session came about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsFailure {
    /// `ca_file` cannot be read or holds no certificate.
    CaFile {
        /// The file as configured.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The system's trusted roots could not be loaded (and `ca_file` gave none).
    SystemRoots(String),
    /// The server's certificate was refused.
    Certificate(Box<CertRefusal>),
    /// The server answered with something that is not TLS: a plain-text port,
    /// or the wrong `tls` mode for it.
    NotTls(String),
    /// The server and we share no TLS version or cipher suite.
    NoCommonParameters(String),
    /// Anything else (the server's alert, a closed connection, a host name TLS
    /// cannot check), verbatim.
    Other(String),
}

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsFailure::CaFile { path, why } => {
                write!(f, "cannot use ca_file {}: {why}", path.display())
            }
            TlsFailure::SystemRoots(s) => write!(f, "cannot load the system's trusted roots: {s}"),
            TlsFailure::Certificate(c) => write!(f, "{c}"),
            TlsFailure::NotTls(s) => write!(f, "the server does not speak TLS here ({s})"),
            TlsFailure::NoCommonParameters(s) => {
                write!(f, "no TLS version or cipher suite in common ({s})")
            }
            TlsFailure::Other(s) => write!(f, "{s}"),
        }
    }
}

/// A refused server certificate: what was wrong, and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRefusal {
    /// What was wrong.
    pub problem: CertProblem,
    /// The name we connected to (a DNS name or an IP address).
    pub asked: String,
    /// The presented certificate, when it could be read.
    pub cert: Option<CertFacts>,
    /// It is byte-identical to a certificate in `ca_file`.
    pub pinned: bool,
}

/// What was wrong with a server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertProblem {
    /// No CA this machine trusts (system roots, `ca_file`) issued it, and it is
    /// not itself in `ca_file`.
    UntrustedIssuer,
    /// A CA certificate (`CA:TRUE`, as `openssl req -x509` makes them) used as
    /// the server's own, and not pinned in `ca_file`.
    CaUsedAsEndEntity,
    /// Not valid for the name we connected to.
    NameMismatch,
    /// Past its notAfter at `now` (Unix seconds).
    Expired {
        /// The time of the check.
        now: i64,
    },
    /// Before its notBefore at `now`.
    NotYetValid {
        /// The time of the check.
        now: i64,
    },
    /// Anything else webpki refused (bad signature, revoked, unsupported
    /// algorithm …), verbatim.
    Other(String),
}

impl std::fmt::Display for CertRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let self_signed = self.cert.as_ref().is_some_and(|c| c.self_signed);
        let what = match &self.problem {
            CertProblem::UntrustedIssuer | CertProblem::CaUsedAsEndEntity if self_signed => {
                "self-signed, not in ca_file".to_owned()
            }
            CertProblem::UntrustedIssuer => "issuer not trusted".to_owned(),
            CertProblem::CaUsedAsEndEntity => "a CA certificate as the server's own".to_owned(),
            CertProblem::NameMismatch => format!("not valid for {}", self.asked),
            CertProblem::Expired { .. } => "expired".to_owned(),
            CertProblem::NotYetValid { .. } => "not valid yet".to_owned(),
            CertProblem::Other(s) => s.clone(),
        };
        write!(f, "certificate refused: {what}")
    }
}

// The verifier hands the refusal through rustls as its error's source.
impl std::error::Error for CertRefusal {}

/// The TLS client configuration for a mail server of an account with
/// `ca_file`: one per `ca_file` (and its modification time) per process. Each
/// configuration's verifier loads the system roots on first use and holds
/// them; a connection keeps its configuration alive, so a service with a
/// thousand watchers would otherwise hold a thousand copies of the roots.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsFailure> {
    type Cache = std::collections::HashMap<
        Option<PathBuf>,
        (Option<std::time::SystemTime>, Arc<rustls::ClientConfig>),
    >;
    static CACHE: std::sync::Mutex<Option<Cache>> = std::sync::Mutex::new(None);
    let key = ca_file.map(Path::to_path_buf);
    let mtime = ca_file.and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    if let Some((at, cfg)) = CACHE.lock().unwrap().as_ref().and_then(|c| c.get(&key))
        && (ca_file.is_none() || (mtime.is_some() && *at == mtime))
    {
        return Ok(cfg.clone());
    }
    let cfg = build_client_config(ca_file)?;
    CACHE
        .lock()
        .unwrap()
        .get_or_insert_with(Default::default)
        .insert(key, (mtime, cfg.clone()));
    Ok(cfg)
}

fn build_client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsFailure> {
    let extra = match ca_file {
        Some(p) => read_ca_file(p)?,
        None => vec![],
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = verifier::Verifier::new(extra, provider.clone())
        .map_err(|e| TlsFailure::SystemRoots(e.to_string()))?;
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsFailure::Other(e.to_string()))?
        // Not dangerous: chains and names are verified, and a pin is an exact match.
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// The certificates of a PEM file; none at all is an error (a key file or a
/// DER file named by mistake would otherwise trust nothing, silently).
fn read_ca_file(p: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFailure> {
    let bad = |why: String| TlsFailure::CaFile {
        path: p.to_owned(),
        why,
    };
    let certs = CertificateDer::pem_file_iter(p)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| match e {
            rustls::pki_types::pem::Error::Io(io) => bad(io.to_string()),
            other => bad(format!("not a PEM file: {other}")),
        })?;
    if certs.is_empty() {
        return Err(bad(
            "it holds no PEM certificate (a `-----BEGIN CERTIFICATE-----` block)".into(),
        ));
    }
    Ok(certs)
}

/// What a failed handshake (`e`, from rustls' I/O) means.
pub fn handshake_failure(e: &std::io::Error) -> TlsFailure {
    use rustls::{AlertDescription as A, CertificateError, Error as R, OtherError};
    let Some(r) = e.get_ref().and_then(|i| i.downcast_ref::<R>()) else {
        return TlsFailure::Other(match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                "the server did not finish the TLS handshake within the timeout".into()
            }
            std::io::ErrorKind::UnexpectedEof => {
                "the server closed the connection during the TLS handshake".into()
            }
            _ => format!("during the TLS handshake: {e}"),
        });
    };
    match r {
        R::InvalidCertificate(CertificateError::Other(OtherError(o))) => {
            match o.downcast_ref::<CertRefusal>() {
                Some(c) => TlsFailure::Certificate(Box::new(c.clone())),
                None => TlsFailure::Other(r.to_string()),
            }
        }
        R::InvalidMessage(_) => TlsFailure::NotTls(r.to_string()),
        R::PeerIncompatible(_)
        | R::AlertReceived(A::ProtocolVersion | A::HandshakeFailure | A::InsufficientSecurity) => {
            TlsFailure::NoCommonParameters(r.to_string())
        }
        other => TlsFailure::Other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_certificates_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("key.pem");
        std::fs::write(
            &empty,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let Err(TlsFailure::CaFile { why, .. }) = client_config(Some(&empty)) else {
            panic!("a file of keys only is no ca_file");
        };
        assert!(why.contains("holds no PEM certificate"), "{why}");
        let Err(TlsFailure::CaFile { why, .. }) = client_config(Some(&dir.path().join("nope")))
        else {
            panic!("a missing ca_file is an error");
        };
        assert!(why.contains("os error 2"), "{why}");
    }

    #[test]
    fn plain_text_where_tls_was_expected_is_named() {
        let e = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
        );
        assert!(matches!(handshake_failure(&e), TlsFailure::NotTls(_)));
    }
}
