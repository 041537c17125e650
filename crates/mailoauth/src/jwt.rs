//! Reading JSON Web Tokens without verifying them, and their base64url encoding.
//!
//! Owns: splitting a compact JWT and decoding its claims, the claims that name a
//! user, and base64url without padding (JWTs, PKCE, client assertions). Must not:
//! make trust decisions — claims are read to explain and to pick a user, never to
//! authorise anything (the signature is not checked).

use base64::Engine as _;
use serde_json::{Map, Value};

/// The claims of a JWT, or `None` for an opaque token (e.g. Microsoft personal accounts).
/// The signature is not checked: this is for explanations only.
pub fn claims(token: &str) -> Option<Map<String, Value>> {
    let mut parts = token.split('.');
    let (_h, p, _s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(p.trim_end_matches('='))
        .ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// The user a token (access or id token) names, from the claims providers use.
pub fn user(claims: &Map<String, Value>) -> Option<String> {
    ["upn", "unique_name", "preferred_username", "email"]
        .iter()
        .find_map(|k| claims.get(*k).and_then(Value::as_str))
        .filter(|s| s.contains('@'))
        .map(str::to_owned)
}

/// base64url without padding (JWT, PKCE).
pub fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_claims_and_user() {
        let b = |s: &str| b64url(s.as_bytes());
        let t = format!(
            "{}.{}.sig",
            b("{\"alg\":\"RS256\"}"),
            b("{\"upn\":\"a@c.com\",\"aud\":\"x\"}")
        );
        let c = claims(&t).unwrap();
        assert_eq!(user(&c).as_deref(), Some("a@c.com"));
        assert!(claims("EwBAAl3B-opaque").is_none());
        assert!(claims("a.b.c.d").is_none());
    }
}
