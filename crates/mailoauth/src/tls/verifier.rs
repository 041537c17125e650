//! The server certificate check: a pin for certificates in `ca_file`, the
//! platform verifier for everything else, and a typed refusal either way.
//!
//! A pinned certificate is trusted by identity, the way curl, mbsync, msmtp and
//! Python treat a self-signed certificate in their CA file: byte for byte the
//! one the user put there, so its `CA:TRUE` or its issuer do not matter. Two
//! checks still apply to it, as curl applies them: the name we connected to must
//! be among its names (a pin for `mail.example.org` must not open `evil.test`),
//! and today must lie within its validity dates (an expired pin is a renewal the
//! user has not seen yet). The server must still prove it holds the key: the
//! handshake signature is verified with the provider's algorithms for every
//! certificate, pinned or not.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError};

use super::{CertFacts, CertProblem, CertRefusal};

/// Pins first, then the platform's full verification.
#[derive(Debug)]
pub(super) struct Verifier {
    /// The platform verifier, with the parsable certificates of `ca_file` as
    /// extra roots (a private CA's root works as it always did).
    inner: rustls_platform_verifier::Verifier,
    /// Every certificate of `ca_file`.
    pins: Vec<CertificateDer<'static>>,
}

impl Verifier {
    /// A verifier trusting the platform's roots and the certificates of `ca_file`.
    pub(super) fn new(
        ca_file: Vec<CertificateDer<'static>>,
        provider: Arc<CryptoProvider>,
    ) -> Result<Verifier, Error> {
        // A certificate webpki cannot take as a root (an old v1 leaf, say) can
        // still be pinned; only the roots have to parse as trust anchors.
        let roots: Vec<_> = ca_file
            .iter()
            .filter(|c| webpki::anchor_from_trusted_cert(c).is_ok())
            .cloned()
            .collect();
        Ok(Verifier {
            inner: rustls_platform_verifier::Verifier::new_with_extra_roots(roots, provider)?,
            pins: ca_file,
        })
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let pinned = self.pins.iter().any(|p| p.as_ref() == end_entity.as_ref());
        let outcome = if pinned {
            check_pinned(end_entity, server_name, now)
        } else {
            self.inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .map_err(|e| problem(&e, now))
        };
        outcome.map_err(|problem| {
            let refusal = CertRefusal {
                problem,
                asked: server_name.to_str().into_owned(),
                cert: CertFacts::parse(end_entity),
                pinned,
            };
            Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(refusal))))
        })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

/// A pinned certificate: well-formed, within its dates, for this name.
fn check_pinned(
    der: &CertificateDer<'_>,
    name: &ServerName<'_>,
    now: UnixTime,
) -> Result<ServerCertVerified, CertProblem> {
    let cert = webpki::EndEntityCert::try_from(der)
        .map_err(|e| CertProblem::Other(format!("the certificate cannot be parsed: {e}")))?;
    let facts = CertFacts::parse(der)
        .ok_or_else(|| CertProblem::Other("the certificate's dates cannot be read".into()))?;
    let t = now.as_secs() as i64;
    if t < facts.not_before {
        return Err(CertProblem::NotYetValid { now: t });
    }
    if t > facts.not_after {
        return Err(CertProblem::Expired { now: t });
    }
    cert.verify_is_valid_for_subject_name(name)
        .map_err(|_| CertProblem::NameMismatch)?;
    Ok(ServerCertVerified::assertion())
}

/// What the platform verifier's refusal means.
fn problem(e: &Error, now: UnixTime) -> CertProblem {
    let now = now.as_secs() as i64;
    let Error::InvalidCertificate(c) = e else {
        return CertProblem::Other(e.to_string());
    };
    match c {
        // A bad signature on the end-entity certificate means the CA of that
        // name (a replaced private CA, say) is not the one that issued it.
        CertificateError::UnknownIssuer | CertificateError::BadSignature => {
            CertProblem::UntrustedIssuer
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            CertProblem::Expired { now }
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            CertProblem::NotYetValid { now }
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            CertProblem::NameMismatch
        }
        CertificateError::Other(OtherError(o))
            if matches!(
                o.downcast_ref::<webpki::Error>(),
                Some(webpki::Error::CaUsedAsEndEntity)
            ) =>
        {
            CertProblem::CaUsedAsEndEntity
        }
        _ => CertProblem::Other(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    use rustls::pki_types::PrivateKeyDer;
    use rustls::server::{ClientHello, ResolvesServerCert};
    use rustls::sign::CertifiedKey;

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// Parameters for a certificate named `cn` with these SANs, made like
    /// `openssl req -x509` when `ca` (CA:TRUE).
    fn params(cn: &str, names: &[&str], ca: bool) -> CertificateParams {
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        if ca {
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        p
    }

    /// A server certificate (with its key) signing itself.
    fn self_signed(p: &CertificateParams) -> (CertificateDer<'static>, KeyPair) {
        let key = KeyPair::generate().unwrap();
        (p.self_signed(&key).unwrap().der().clone(), key)
    }

    fn verifier(ca_file: &[&CertificateDer<'static>]) -> Arc<rustls::ClientConfig> {
        let v = Verifier::new(ca_file.iter().map(|c| (*c).clone()).collect(), provider()).unwrap();
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(v))
                .with_no_client_auth(),
        )
    }

    /// Serves `chain` and signs with `key` (which need not be the chain's).
    #[derive(Debug)]
    struct Serve(Arc<CertifiedKey>);

    impl ResolvesServerCert for Serve {
        fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            Some(self.0.clone())
        }
    }

    fn server(chain: Vec<CertificateDer<'static>>, key: &KeyPair) -> Arc<rustls::ServerConfig> {
        let key = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let signer = provider().key_provider.load_private_key(key).unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Serve(Arc::new(CertifiedKey::new(chain, signer)))));
        Arc::new(cfg)
    }

    /// A whole handshake in memory, as the client sees it.
    fn handshake(
        client: Arc<rustls::ClientConfig>,
        server: Arc<rustls::ServerConfig>,
        name: &str,
    ) -> Result<(), super::super::TlsFailure> {
        let mut c =
            rustls::ClientConnection::new(client, ServerName::try_from(name.to_owned()).unwrap())
                .unwrap();
        let mut s = rustls::ServerConnection::new(server).unwrap();
        let as_io = |e: Error| {
            super::super::handshake_failure(&std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                e,
            ))
        };
        for _ in 0..20 {
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                s.read_tls(&mut rd).unwrap();
                if s.process_new_packets().is_err() {
                    // The client's verdict is what we test; the server only
                    // saw the alert that followed it.
                    return Err(c.process_new_packets().err().map(as_io).unwrap());
                }
            }
            buf.clear();
            while s.wants_write() {
                s.write_tls(&mut buf).unwrap();
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                c.read_tls(&mut rd).unwrap();
                c.process_new_packets().map_err(as_io)?;
            }
            if !c.is_handshaking() && !s.is_handshaking() {
                return Ok(());
            }
        }
        panic!("the handshake did not finish");
    }

    fn refusal(r: Result<(), super::super::TlsFailure>) -> CertRefusal {
        match r {
            Err(super::super::TlsFailure::Certificate(c)) => *c,
            other => panic!("expected a certificate refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_self_signed_ca_certificate_in_ca_file_is_accepted_as_a_pin() {
        let (cert, key) = self_signed(&params("localhost", &["localhost"], true));
        // Without the pin, webpki refuses it for its CA:TRUE (before looking
        // for an issuer).
        let r = refusal(handshake(
            verifier(&[]),
            server(vec![cert.clone()], &key),
            "localhost",
        ));
        assert_eq!(r.problem, CertProblem::CaUsedAsEndEntity);
        handshake(
            verifier(&[&cert]),
            server(vec![cert.clone()], &key),
            "localhost",
        )
        .expect("a pinned certificate is trusted");
    }

    #[test]
    fn a_different_certificate_with_the_same_subject_is_not_the_pin() {
        let p = params("localhost", &["localhost"], true);
        let (pinned, _) = self_signed(&p);
        let (other, other_key) = self_signed(&p);
        let r = refusal(handshake(
            verifier(&[&pinned]),
            server(vec![other], &other_key),
            "localhost",
        ));
        assert!(!r.pinned, "{r:?}");
        assert_eq!(r.problem, CertProblem::CaUsedAsEndEntity);
        assert!(r.cert.unwrap().self_signed);
    }

    #[test]
    fn a_pinned_certificate_presented_without_its_key_is_refused() {
        let (cert, _) = self_signed(&params("localhost", &["localhost"], true));
        let thief = KeyPair::generate().unwrap();
        let r = handshake(
            verifier(&[&cert]),
            server(vec![cert.clone()], &thief),
            "localhost",
        );
        assert!(
            r.is_err(),
            "the handshake signature must be checked for a pin"
        );
    }

    #[test]
    fn a_pinned_certificate_still_has_to_name_the_host_and_be_in_date() {
        let (cert, key) = self_signed(&params("localhost", &["localhost", "mail.test"], true));
        let r = refusal(handshake(
            verifier(&[&cert]),
            server(vec![cert.clone()], &key),
            "127.0.0.1",
        ));
        assert_eq!(r.problem, CertProblem::NameMismatch);
        assert!(r.pinned);
        assert_eq!(r.cert.unwrap().names, ["localhost", "mail.test"]);

        let mut old = params("localhost", &["localhost"], true);
        old.not_before = rcgen::date_time_ymd(2020, 1, 1);
        old.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let (cert, key) = self_signed(&old);
        let r = refusal(handshake(
            verifier(&[&cert]),
            server(vec![cert.clone()], &key),
            "localhost",
        ));
        assert!(matches!(r.problem, CertProblem::Expired { .. }), "{r:?}");
        assert_eq!(r.cert.unwrap().not_after, 1_609_459_200);
    }

    #[test]
    fn a_chain_to_a_ca_in_ca_file_is_verified_in_full() {
        let ca_key = KeyPair::generate().unwrap();
        let ca_params = params("Test CA", &[], true);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap().der().clone();
        let ca = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = params("localhost", &["localhost"], false)
            .signed_by(&leaf_key, &ca)
            .unwrap()
            .der()
            .clone();
        handshake(
            verifier(&[&ca_cert]),
            server(vec![leaf.clone(), ca_cert.clone()], &leaf_key),
            "localhost",
        )
        .expect("a leaf of a CA in ca_file");
        // The same chain, for another name: the CA path checks names too.
        let r = refusal(handshake(
            verifier(&[&ca_cert]),
            server(vec![leaf.clone()], &leaf_key),
            "other.test",
        ));
        assert_eq!(r.problem, CertProblem::NameMismatch);
        // A CA of the same name but another key vouches for nothing.
        let (impostor_ca, _) = self_signed(&params("Test CA", &[], true));
        let r = refusal(handshake(
            verifier(&[&impostor_ca]),
            server(vec![leaf], &leaf_key),
            "localhost",
        ));
        assert_eq!(r.problem, CertProblem::UntrustedIssuer);
        assert!(!r.cert.unwrap().self_signed);
    }
}
