//! The wire protocol of authorization-server endpoints: token (RFC 6749), device
//! authorization (RFC 8628), revocation (RFC 7009), and client authentication
//! (secret, or a JWT assertion signed with a certificate's key, RFC 7523).
//!
//! Owns: building form requests and classifying every answer — success, OAuth
//! error (with Microsoft's `error_codes`), transient (5xx, 429, timeout), or not
//! the protocol at all (HTML, garbage). Must not: decide about retries or storage
//! (the broker does), or ever put a secret into an error text.

use std::fmt;
use std::time::Duration;

use serde_json::Value;
use zeroize::Zeroizing;

use crate::error::Error;
use crate::http::{Http, Response};
use crate::providers::Account;

/// A successful token response.
#[derive(Clone)]
pub struct TokenResponse {
    /// The access token.
    pub access_token: String,
    /// Lifetime in seconds, when given.
    pub expires_in: Option<i64>,
    /// A (new) refresh token, when given.
    pub refresh_token: Option<String>,
    /// Granted scopes, when given.
    pub scope: Option<String>,
    /// OIDC id token, when given.
    pub id_token: Option<String>,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("expires_in", &self.expires_in)
            .field("refresh_token", &self.refresh_token.is_some())
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// Why an endpoint request failed.
#[derive(Debug, Clone)]
pub enum EndpointError {
    /// The server answered with an OAuth error.
    OAuth {
        /// HTTP status.
        status: u16,
        /// `error`.
        error: String,
        /// `error_description`, secrets removed.
        description: String,
        /// Microsoft's `error_codes`.
        codes: Vec<u64>,
    },
    /// Worth retrying: no answer, 5xx, 429.
    Transient {
        /// What happened.
        detail: String,
        /// Server's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// The answer is not the protocol.
    Invalid {
        /// What was wrong, and the likely cause.
        detail: String,
    },
}

impl EndpointError {
    /// The OAuth `error` code, if this is one.
    pub fn oauth_code(&self) -> Option<&str> {
        match self {
            EndpointError::OAuth { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Form parameters, with values that may be secret (zeroed on drop).
pub type Form = Vec<(&'static str, Zeroizing<String>)>;

/// `client_id` plus the client's credential (secret, or signed assertion), if any.
pub fn client_auth(account: &Account, audience: &str) -> Result<Form, Error> {
    let mut form: Form = vec![("client_id", Zeroizing::new(account.client_id.clone()))];
    if let Some((cert, key)) = &account.client_certificate {
        form.push((
            "client_assertion_type",
            Zeroizing::new("urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into()),
        ));
        form.push((
            "client_assertion",
            crate::assertion::sign(&account.client_id, audience, cert, key)?,
        ));
    } else if let Some(src) = &account.client_secret {
        form.push((
            "client_secret",
            src.resolve_within("client_secret", account.secret_timeout)?,
        ));
    }
    Ok(form)
}

/// The token, device-authorization and revocation endpoints as the broker and the
/// flows see them: one form POST whose answer comes back already classified.
///
/// This machine's implementation is the blocking ureq [`Http`] client (below); the
/// tests use `broker::memory::ScriptedTransport`. The trait is blocking on purpose:
/// the multi-user service runs the broker on a blocking thread
/// (`tokio::task::spawn_blocking`) and implements `post` by driving its async HTTP
/// client with `Handle::block_on` there. Refreshes are rare (one per user per
/// token lifetime) and the decisions around them (lease, re-check, rotate, save)
/// stay in one synchronous place instead of being written twice; the service
/// serves fresh tokens without the broker at all (see `broker::State`).
pub trait Transport: Send + Sync {
    /// POST `form` to `url` and classify the answer: a JSON object on success,
    /// otherwise an [`EndpointError`]. Implementations must not log the form
    /// (it carries secrets) and must keep every form value out of error texts.
    fn post(&self, url: &str, form: &Form)
    -> Result<serde_json::Map<String, Value>, EndpointError>;

    /// GET `url` (OIDC discovery; with `bearer`, the userinfo endpoint) and
    /// classify the answer like [`Transport::post`]'s. The token must stay out
    /// of logs and error texts.
    fn get(
        &self,
        url: &str,
        bearer: Option<&str>,
    ) -> Result<serde_json::Map<String, Value>, EndpointError>;
}

impl Transport for Http {
    fn post(
        &self,
        url: &str,
        form: &Form,
    ) -> Result<serde_json::Map<String, Value>, EndpointError> {
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let resp = self
            .post_form(url, &pairs)
            .map_err(|t| EndpointError::Transient {
                detail: t.detail,
                retry_after: None,
            })?;
        classify(resp, form)
    }

    fn get(
        &self,
        url: &str,
        bearer: Option<&str>,
    ) -> Result<serde_json::Map<String, Value>, EndpointError> {
        let resp = match bearer {
            Some(t) => self.get_bearer(url, t),
            None => Http::get(self, url),
        }
        .map_err(|t| EndpointError::Transient {
            detail: t.detail,
            retry_after: None,
        })?;
        // The token is redacted from anything the server echoes, like a form value.
        let secret: Form = bearer.map(|t| ("access_token", v(t))).into_iter().collect();
        classify(resp, &secret)
    }
}

/// POST `form` to `url` through `transport` and classify the answer.
pub fn post(
    transport: &dyn Transport,
    url: &str,
    form: &Form,
) -> Result<serde_json::Map<String, Value>, EndpointError> {
    transport.post(url, form)
}

/// Form keys whose values are not secret (everything else we send is).
const PUBLIC_FORM_KEYS: &[&str] = &[
    "grant_type",
    "client_id",
    "scope",
    "redirect_uri",
    "client_assertion_type",
    "token_type_hint",
];

/// Classify an HTTP answer. Every secret form value is removed from any server
/// text we keep, in any encoding (see [`crate::text::redact`]), so an echoing
/// server cannot leak a secret into errors, status files or logs; control
/// characters go too, so it cannot drive the user's terminal either.
pub fn classify(
    resp: Response,
    form: &Form,
) -> Result<serde_json::Map<String, Value>, EndpointError> {
    // Every value we sent is a secret unless it is public by protocol: the
    // refresh token, client secret or assertion, the code and its verifier.
    let secrets: Vec<&str> = form
        .iter()
        .filter(|(k, _)| !PUBLIC_FORM_KEYS.contains(k))
        .map(|(_, v)| v.as_str())
        .collect();
    let clean = |s: &str| crate::text::printable(&crate::text::redact(s, &secrets)).into_owned();
    let looks_html = resp.content_type.contains("html") || resp.body.trim_start().starts_with('<');
    let json: Option<serde_json::Map<String, Value>> = if looks_html {
        None
    } else {
        serde_json::from_str(&resp.body).ok()
    };
    let status = resp.status;
    if status == 429 || status >= 500 {
        // An OAuth error body on a 5xx (temporarily_unavailable) is still transient.
        let what = json
            .as_ref()
            .and_then(|j| j.get("error").and_then(Value::as_str))
            .map(|e| format!(" ({})", clean(e)))
            .unwrap_or_default();
        return Err(EndpointError::Transient {
            detail: format!("HTTP {status}{what}"),
            retry_after: resp.retry_after.map(Duration::from_secs),
        });
    }
    let Some(json) = json else {
        let kind = if looks_html {
            "an HTML page"
        } else {
            "a body that is not JSON"
        };
        return Err(EndpointError::Invalid {
            detail: format!(
                "HTTP {status} with {kind} (content-type `{}`) instead of a JSON OAuth answer; \
                 the URL is probably wrong (a web page, a login portal or a proxy): check it in the config",
                crate::text::printable(&resp.content_type)
            ),
        });
    };
    if let Some(error) = json.get("error").and_then(Value::as_str) {
        let description = clean(
            json.get("error_description")
                .and_then(Value::as_str)
                .unwrap_or(""),
        );
        let codes = json
            .get("error_codes")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        return Err(EndpointError::OAuth {
            status,
            error: clean(error),
            description,
            codes,
        });
    }
    if !(200..300).contains(&status) {
        return Err(EndpointError::Invalid {
            detail: format!("HTTP {status} without an OAuth `error` field"),
        });
    }
    Ok(json)
}

/// Parse a token response body.
pub fn token_response(
    mut json: serde_json::Map<String, Value>,
) -> Result<TokenResponse, EndpointError> {
    let mut take = |k: &str| match json.remove(k) {
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    };
    let access_token = take("access_token").ok_or_else(|| EndpointError::Invalid {
        detail: "the answer has no `access_token`".into(),
    })?;
    let refresh_token = take("refresh_token");
    let scope = take("scope");
    let id_token = take("id_token");
    // Some servers send expires_in as a string.
    let expires_in = match json.get("expires_in") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    Ok(TokenResponse {
        access_token,
        expires_in,
        refresh_token,
        scope,
        id_token,
    })
}

/// Run the token endpoint with `grant` parameters plus client authentication.
pub fn token_request(
    transport: &dyn Transport,
    account: &Account,
    grant: Vec<(&'static str, Zeroizing<String>)>,
) -> Result<TokenResponse, EndpointError> {
    let mut form = grant;
    form.extend(
        client_auth(account, &account.token_url).map_err(|e| EndpointError::Invalid {
            detail: e.to_string(),
        })?,
    );
    token_response(transport.post(&account.token_url, &form)?)
}

/// Helper: a form value.
pub fn v(s: impl Into<String>) -> Zeroizing<String> {
    Zeroizing::new(s.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_endpoint_echoing_the_form_encoded_request_body_leaks_no_secret() {
        let rt = "1//0gRT+refresh/token==";
        let cs = "GOCSPX-secret~\"x\" y";
        let form: Form = vec![
            ("grant_type", v("refresh_token")),
            ("refresh_token", v(rt)),
            ("client_secret", v(cs)),
        ];
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let body = json!({
            "error": "invalid_request",
            "error_description": format!(
                "cannot parse grant_type=refresh_token&refresh_token={}&client_secret={} ({})",
                enc(rt),
                enc(cs),
                serde_json::to_string(cs).unwrap()
            ),
        });
        let resp = Response {
            status: 400,
            content_type: "application/json".into(),
            retry_after: None,
            body: body.to_string(),
        };
        let Err(EndpointError::OAuth { description, .. }) = classify(resp, &form) else {
            panic!("an OAuth error")
        };
        for s in [rt, cs] {
            let json = serde_json::to_string(s).unwrap();
            for shown in [s.to_owned(), enc(s), json[1..json.len() - 1].to_owned()] {
                assert!(!description.contains(&shown), "{description}");
            }
        }
    }

    #[test]
    fn a_server_error_whose_error_code_echoes_a_secret_leaks_nothing() {
        let form: Form = vec![("refresh_token", v("1//0gRT+refresh/token=="))];
        let resp = Response {
            status: 503,
            content_type: "application/json".into(),
            retry_after: None,
            body: json!({"error": "bad refresh_token=1//0gRT+refresh/token=="}).to_string(),
        };
        let Err(EndpointError::Transient { detail, .. }) = classify(resp, &form) else {
            panic!("transient")
        };
        assert!(!detail.contains("0gRT"), "{detail}");
    }

    #[test]
    fn token_response_accepts_string_expiry() {
        let j = json!({"access_token": "a", "expires_in": "3599", "refresh_token": "r"});
        let t = token_response(j.as_object().unwrap().clone()).unwrap();
        assert_eq!(t.expires_in, Some(3599));
        assert!(!format!("{t:?}").contains('r') || !format!("{t:?}").contains("\"r\""));
        assert!(
            token_response(json!({"token_type": "Bearer"}).as_object().unwrap().clone()).is_err()
        );
    }
}
