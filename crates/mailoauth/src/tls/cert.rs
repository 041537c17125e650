//! What a server's certificate says about itself, read for explanations.
//!
//! Owns: turning a certificate's DER into the few facts a person needs to fix a
//! refused connection — its names, validity dates, issuer, whether it signed
//! itself, and its fingerprint. Must not: decide trust (the verifier does, with
//! webpki): a certificate that cannot be parsed here is still verified there.

use std::net::IpAddr;

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer as _;
use x509_parser::time::ASN1Time;

/// The facts of one certificate, for a diagnosis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// Subject distinguished name, as `CN=localhost, O=…`.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// The names TLS clients check: subjectAltName DNS names and IP addresses,
    /// in the certificate's order.
    pub names: Vec<String>,
    /// The subject's common name: shown when there are no `names`, since
    /// clients have not matched host names against it for years.
    pub common_name: Option<String>,
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// Issuer equals subject: nobody but its owner vouches for it.
    pub self_signed: bool,
    /// basicConstraints CA:TRUE (what `openssl req -x509` sets).
    pub is_ca: bool,
    /// SHA-256 of the DER, as `AB:CD:…` (the form `openssl x509 -fingerprint
    /// -sha256` prints), so a pin can be compared with the server's.
    pub sha256: String,
}

impl CertFacts {
    /// The facts of `der`, or `None` when it is not a certificate we can read.
    pub fn parse(der: &[u8]) -> Option<CertFacts> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    GeneralName::DNSName(d) => names.push((*d).to_owned()),
                    GeneralName::IPAddress(b) => names.extend(ip(b)),
                    _ => {}
                }
            }
        }
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        Some(CertFacts {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            names,
            common_name,
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            self_signed: cert.subject().as_raw() == cert.issuer().as_raw(),
            is_ca: cert.is_ca(),
            sha256: fingerprint(der),
        })
    }
}

fn ip(b: &[u8]) -> Option<String> {
    let addr: IpAddr = match b.len() {
        4 => <[u8; 4]>::try_from(b).ok()?.into(),
        16 => <[u8; 16]>::try_from(b).ok()?.into(),
        _ => return None,
    };
    Some(addr.to_string())
}

/// SHA-256 of `der` in openssl's notation.
pub fn fingerprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    d.as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A Unix time as openssl shows certificate dates (`Jan  1 00:00:00 2030
/// +00:00`), so what we say matches `openssl x509 -noout -dates`.
pub fn date(unix: i64) -> String {
    ASN1Time::from_timestamp(unix)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| format!("{unix} (Unix time)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_of_a_self_signed_ca_certificate_with_dns_and_ip_names() {
        let mut p =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        p.not_before = rcgen::date_time_ymd(2020, 1, 2);
        p.not_after = rcgen::date_time_ymd(2021, 1, 2);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        let f = CertFacts::parse(cert.der()).unwrap();
        assert_eq!(f.names, ["localhost", "127.0.0.1"]);
        assert_eq!(f.common_name.as_deref(), Some("localhost"));
        assert!(f.self_signed && f.is_ca, "{f:?}");
        assert_eq!(date(f.not_before), "Jan  2 00:00:00 2020 +00:00");
        assert_eq!(f.sha256.len(), 32 * 3 - 1);
        assert!(CertFacts::parse(b"not a certificate").is_none());
    }
}
