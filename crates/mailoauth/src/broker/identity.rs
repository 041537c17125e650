//! Who signed in: what a login's answer says about its user, or for servers
//! whose answer says nothing (opaque access token, no id token), what their
//! userinfo endpoint says.
//!
//! Owns: the order of the sources (id token, then the access token's claims,
//! then userinfo — found directly or through OIDC discovery) and the reason
//! when none can tell. Must not: decide what a mismatch means (the broker
//! refuses to store), or put the token in any error or log text.

use serde_json::Value;

use super::signed_in_user;
use crate::config::ProviderKind;
use crate::jwt;
use crate::oauth::{EndpointError, TokenResponse, Transport};
use crate::providers::Account;

/// What a login tells about its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedIn {
    /// The user the provider named.
    User(String),
    /// Nobody could tell; why, in words.
    Unknown(String),
}

/// Who signed in with `resp`, asking `account`'s userinfo endpoint when the
/// answer itself names nobody.
pub fn signed_in(account: &Account, transport: &dyn Transport, resp: &TokenResponse) -> SignedIn {
    if let Some(u) = signed_in_user(resp) {
        return SignedIn::User(u);
    }
    let url = match userinfo_endpoint(account, transport) {
        Ok(Some(url)) => url,
        Ok(None) if account.provider == ProviderKind::Custom => {
            return SignedIn::Unknown(
                "the server's answer names nobody (no id token, an opaque access token) and the account \
                 has no `userinfo_url` or `issuer` to ask"
                    .into(),
            );
        }
        Ok(None) => {
            return SignedIn::Unknown(
                "the provider's answer names nobody (no id token: `openid` in `scopes` asks for one)"
                    .into(),
            );
        }
        Err(why) => return SignedIn::Unknown(why),
    };
    match transport.get(&url, Some(&resp.access_token)) {
        Ok(claims) => match jwt::user(&claims) {
            Some(u) => SignedIn::User(u),
            None => SignedIn::Unknown(format!(
                "the userinfo endpoint {url} names no mail address (claims: {})",
                claims.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
        },
        Err(e) => SignedIn::Unknown(format!("the userinfo endpoint {url} failed: {}", said(&e))),
    }
}

/// `userinfo_url`, else the `userinfo_endpoint` of the issuer's discovery
/// document; `None` when the account has neither.
fn userinfo_endpoint(
    account: &Account,
    transport: &dyn Transport,
) -> Result<Option<String>, String> {
    if let Some(u) = &account.userinfo_url {
        return Ok(Some(u.clone()));
    }
    let Some(issuer) = &account.issuer else {
        return Ok(None);
    };
    let url = format!("{issuer}/.well-known/openid-configuration");
    let doc = transport
        .get(&url, None)
        .map_err(|e| format!("OIDC discovery at {url} failed: {}", said(&e)))?;
    let found = doc
        .get("userinfo_endpoint")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("the discovery document {url} names no userinfo_endpoint"))?;
    // The same rule as for configured endpoints: https, or http to loopback only.
    crate::providers::check_url(found).map_err(|m| format!("the discovery document {url}: {m}"))?;
    Ok(Some(found.to_owned()))
}

/// An endpoint failure in a few words (its texts are already free of secrets).
fn said(e: &EndpointError) -> String {
    match e {
        EndpointError::OAuth {
            status,
            error,
            description,
            ..
        } => format!("HTTP {status}, {error} {description}")
            .trim_end()
            .to_owned(),
        EndpointError::Transient { detail, .. } | EndpointError::Invalid { detail } => {
            detail.clone()
        }
    }
}
