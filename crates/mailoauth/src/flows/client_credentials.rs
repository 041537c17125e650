//! Client credentials: app-only tokens, with a secret or a certificate assertion.
//!
//! Owns: the one token request of this grant. Must not: expect a refresh token
//! (there is none; the broker asks again when the token runs low).

use crate::oauth::Transport;
use crate::oauth::{self, EndpointError, TokenResponse, v};
use crate::providers::Account;

/// Request an app-only token for `resource` (default: the mail resource).
pub fn request(
    account: &Account,
    http: &dyn Transport,
    resource: Option<&str>,
) -> Result<TokenResponse, EndpointError> {
    let scopes = account
        .scopes(resource)
        .map_err(|e| EndpointError::Invalid {
            detail: e.to_string(),
        })?;
    let grant = vec![
        ("grant_type", v("client_credentials")),
        ("scope", v(scopes.join(" "))),
    ];
    oauth::token_request(http, account, grant)
}
