//! JWT client assertions (RFC 7523) signed with a certificate's private key — the
//! "certificate credential" of Entra app registrations.
//!
//! Owns: reading the PEM certificate and key, and producing the signed JWT
//! (PS256, header `x5t#S256` and legacy `x5t`, claims aud/iss/sub/jti/nbf/iat/exp).
//! Must not: log the key or the assertion.

use std::path::Path;

use ring::signature::{RSA_PSS_SHA256, RsaKeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::jwt::b64url;

/// Lifetime of an assertion; Entra accepts 5–10 minutes.
const LIFETIME: i64 = 300;

/// A signed assertion for `client_id`, addressed to the token endpoint `audience`.
pub fn sign(client_id: &str, audience: &str, cert: &Path, key: &Path) -> Result<Zeroizing<String>> {
    let bad = |what: &Path, why: String| {
        Error::Usage(format!(
            "{}: {why} (client_certificate / client_key must be PEM files)",
            what.display()
        ))
    };
    let cert_der = CertificateDer::from_pem_file(cert)
        .map_err(|e| bad(cert, format!("no certificate: {e}")))?;
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, format!("no private key: {e}")))?;
    let pair = match &key_der {
        PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
        _ => {
            return Err(bad(
                key,
                "only RSA keys (PKCS#8 or PKCS#1) can sign Entra client assertions".into(),
            ));
        }
    }
    .map_err(|e| bad(key, format!("not a usable RSA key: {e}")))?;

    let sha256 = ring::digest::digest(&ring::digest::SHA256, cert_der.as_ref());
    // Older Entra documentation (and some servers) look the key up by SHA-1 `x5t`.
    let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, cert_der.as_ref());
    let header = serde_json::json!({
        "alg": "PS256",
        "typ": "JWT",
        "x5t#S256": b64url(sha256.as_ref()),
        "x5t": b64url(sha1.as_ref()),
    });
    let now = crate::clock::now();
    let claims = serde_json::json!({
        "aud": audience,
        "iss": client_id,
        "sub": client_id,
        "jti": crate::random::token(16),
        "nbf": now,
        "iat": now,
        "exp": now + LIFETIME,
    });
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let mut sig = vec![0u8; pair.public().modulus_len()];
    pair.sign(
        &RSA_PSS_SHA256,
        &ring::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut sig,
    )
    .map_err(|_| bad(key, "signing failed".into()))?;
    Ok(Zeroizing::new(format!("{signing_input}.{}", b64url(&sig))))
}
