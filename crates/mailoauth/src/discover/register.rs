//! RFC 7591 dynamic client registration: a client id without a person
//! registering an app, where the authorization server offers it.
//!
//! Owns: the registration request (a native, public client with PKCE and a
//! loopback redirect, so no secret is needed) and reading the answer. Must
//! not: keep or log a client secret the server hands back anyway — the caller
//! stores it where secrets go, never in the config in plain text.

use zeroize::Zeroizing;

use crate::http::Http;

/// What the server registered.
pub struct Registered {
    /// The new client id.
    pub client_id: String,
    /// A secret, when the server issued one although none was asked for.
    pub client_secret: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registered")
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

/// Register mailoauth at `endpoint` for `redirect_uri`. No `scope` is sent
/// (it is optional): servers refuse resource scopes missing from their
/// `scopes_supported`, yet grant them at the authorization request.
pub fn register(http: &Http, endpoint: &str, redirect_uri: &str) -> Result<Registered, String> {
    crate::providers::check_url(endpoint)?;
    let body = serde_json::json!({
        "client_name": "mailoauth",
        "application_type": "native",
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        // A public client: PKCE protects the code, nothing to keep secret.
        "token_endpoint_auth_method": "none",
    });
    let r = http
        .post_json(endpoint, &body)
        .map_err(|e| format!("registration at {endpoint} failed: {}", e.detail))?;
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
    if !(200..300).contains(&r.status) {
        let err = v["error_description"]
            .as_str()
            .or(v["error"].as_str())
            .unwrap_or("no error given");
        return Err(format!(
            "registration at {endpoint} was refused (HTTP {}): {}",
            r.status,
            super::signals::clean(err, 200)
        ));
    }
    let client_id = v["client_id"]
        .as_str()
        .filter(|c| !c.is_empty() && c.len() <= 512)
        .ok_or_else(|| format!("registration at {endpoint} answered without a client_id"))?;
    Ok(Registered {
        client_id: super::signals::clean(client_id, 512),
        client_secret: v["client_secret"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(|s| Zeroizing::new(s.to_owned())),
    })
}
