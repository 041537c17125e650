//! The token-endpoint catalog: Microsoft `AADSTS` codes, OAuth error codes and
//! Google's texts → cause and remedy.
//!
//! Owns: the entries (most specific first) and the lookup, and turning an
//! endpoint failure into the library's error. Must not: word a fix for one front
//! end (the CLI's `mailoauth login` is [`Fix::Login`] here).

use super::{Diagnosis, Fix, Fix::*};
use crate::error::Error;
use crate::oauth::EndpointError;
use crate::providers::Account;
use crate::remedy::Remedy;

enum Match {
    /// Microsoft `AADSTS` code (in `error_codes` or the description).
    Aad(u64),
    /// OAuth `error` value.
    Error(&'static str),
    /// Text in `error_description` (Google gives no codes).
    Text(&'static str),
}

struct Entry {
    m: Match,
    login_required: bool,
    cause: &'static str,
    /// `{account}`, `{user}`, `{client_id}`, `{redirect_uri}` are filled in.
    fix: &'static [Fix],
}

const fn e(m: Match, login_required: bool, cause: &'static str, fix: &'static [Fix]) -> Entry {
    Entry {
        m,
        login_required,
        cause,
        fix,
    }
}

/// Most specific first: codes, then texts, then generic OAuth error values.
const CATALOG: &[Entry] = &[
    e(
        Match::Aad(50076),
        true,
        "multi-factor authentication is required",
        &[Say("sign in interactively (multi-factor authentication)")],
    ),
    e(
        Match::Aad(50079),
        true,
        "the user must register for multi-factor authentication",
        &[Say(
            "sign in interactively and complete the MFA registration",
        )],
    ),
    e(
        Match::Aad(50126),
        false,
        "wrong user name or password",
        &[Say("sign in again with the right password")],
    ),
    e(
        Match::Aad(65001),
        true,
        "the app has not been consented for these permissions",
        &[Say(
            "sign in interactively to consent, or have an admin grant consent in Entra (Enterprise applications → Permissions → Grant admin consent)",
        )],
    ),
    e(
        Match::Aad(90094),
        true,
        "admin consent is required for these permissions",
        &[Say(
            "ask a tenant admin to grant consent for app {client_id} in Entra (Enterprise applications → Permissions)",
        )],
    ),
    e(
        Match::Aad(700016),
        false,
        "the app (client id {client_id}) is not found in this tenant",
        &[Say(
            "check `client_id` and `tenant` of account {account}; a single-tenant app needs its own tenant, not `common`",
        )],
    ),
    e(
        Match::Aad(7000218),
        false,
        "the app is confidential: the request needs a client secret or assertion",
        &[Say(
            "enable 'Allow public client flows' in the app registration (Authentication), or set `client_secret` for account {account}",
        )],
    ),
    e(
        Match::Aad(700025),
        false,
        "a public client must not send a client secret",
        &[Say("remove `client_secret` from account {account}")],
    ),
    e(
        Match::Aad(70000),
        true,
        "the refresh token is not valid any more",
        &[Say("sign in again")],
    ),
    e(
        Match::Aad(70008),
        true,
        "the refresh token expired (unused for too long)",
        &[Say(
            "sign in again; keep `mailoauth daemon` running so tokens are refreshed regularly",
        )],
    ),
    e(
        Match::Aad(700082),
        true,
        "the refresh token expired (unused for too long)",
        &[Say(
            "sign in again; keep `mailoauth daemon` running so tokens are refreshed regularly",
        )],
    ),
    e(
        Match::Aad(700084),
        true,
        "the refresh token of a single-page app is older than 24 h",
        &[Say(
            "register the redirect URI under 'Mobile and desktop applications', not 'Single-page application', then sign in again",
        )],
    ),
    e(
        Match::Aad(50173),
        true,
        "the grant was revoked (password changed or sessions revoked)",
        &[Say("sign in again")],
    ),
    e(
        Match::Aad(70043),
        true,
        "a sign-in frequency policy (Conditional Access) expired the session",
        &[Say("sign in again")],
    ),
    e(
        Match::Aad(53003),
        false,
        "blocked by a Conditional Access policy",
        &[Say(
            "ask the tenant admin which policy blocks app {client_id} (Entra sign-in logs show it)",
        )],
    ),
    e(
        Match::Aad(530035),
        false,
        "blocked by security defaults",
        &[Say(
            "ask the tenant admin (Entra sign-in logs show the reason)",
        )],
    ),
    e(
        Match::Aad(530033),
        false,
        "Conditional Access blocks this flow (device code flow is often blocked)",
        &[Say(
            "use flow = \"auth-code\" (with --no-browser over SSH), or ask the admin",
        )],
    ),
    e(
        Match::Aad(50011),
        false,
        "the redirect URI is not registered for the app",
        &[Say(
            "register exactly {redirect_uri} (port-less http://localhost serves any port) under 'Mobile and desktop applications'",
        )],
    ),
    e(
        Match::Aad(90002),
        false,
        "the tenant does not exist",
        &[Say(
            "check `tenant` (a domain like contoso.onmicrosoft.com or the tenant id)",
        )],
    ),
    e(
        Match::Aad(90038),
        false,
        "the tenant is in another national cloud",
        &[Say(
            "set `cloud` (global | usgov | china) for account {account}",
        )],
    ),
    e(
        Match::Aad(50020),
        false,
        "the user is not in this tenant",
        &[Say("use the user's own tenant, or invite them as a guest")],
    ),
    e(
        Match::Aad(50034),
        false,
        "the user does not exist in this directory",
        &[Say("check `user` of account {account}")],
    ),
    e(
        Match::Aad(700022),
        false,
        "the scopes name more than one resource",
        &[Say(
            "request one resource per token: mail scopes (IMAP/POP/SMTP on outlook) apart from Graph, which is a second resource of the same login",
        )],
    ),
    e(
        Match::Aad(28000),
        false,
        "the scopes name more than one resource",
        &[Say(
            "request one resource per token: mail scopes apart from Graph",
        )],
    ),
    e(
        Match::Aad(70011),
        false,
        "a requested scope is invalid",
        &[Say(
            "check `scopes` of account {account} (e.g. https://outlook.office.com/IMAP.AccessAsUser.All)",
        )],
    ),
    e(
        Match::Aad(9001023),
        false,
        "this grant type is not allowed on /common or /consumers",
        &[Say("set `tenant` to your tenant's domain or id")],
    ),
    e(
        Match::Aad(50194),
        false,
        "a single-tenant app cannot use /common",
        &[Say("set `tenant` to your tenant's domain or id")],
    ),
    e(
        Match::Text("has been expired or revoked"),
        true,
        "Google says the token expired or was revoked (apps in 'Testing' mode get 7-day refresh tokens)",
        &[Say(
            "sign in again; publish the OAuth consent screen (In production) to get long-lived tokens",
        )],
    ),
    e(
        Match::Error("redirect_uri_mismatch"),
        false,
        "the redirect URI is not registered for the app",
        &[Say("register {redirect_uri} for client {client_id}")],
    ),
    e(
        Match::Error("invalid_grant"),
        true,
        "the provider no longer accepts the refresh token (expired, revoked, or rotated away)",
        &[Say("sign in again")],
    ),
    e(
        Match::Error("interaction_required"),
        true,
        "the provider requires an interactive sign-in",
        &[Say("sign in again")],
    ),
    e(
        Match::Error("login_required"),
        true,
        "the provider requires an interactive sign-in",
        &[Say("sign in again")],
    ),
    e(
        Match::Error("consent_required"),
        true,
        "the provider requires consent",
        &[Say("sign in interactively to consent")],
    ),
    e(
        Match::Error("invalid_client"),
        false,
        "the client id or client credential was rejected",
        &[Say(
            "check `client_id` and `client_secret` / `client_certificate` of account {account}",
        )],
    ),
    e(
        Match::Error("unauthorized_client"),
        false,
        "the app may not use this grant type",
        &[Say(
            "enable the flow in the app registration (e.g. 'Allow public client flows' for device code)",
        )],
    ),
    e(
        Match::Error("invalid_scope"),
        false,
        "a requested scope is not valid for this app",
        &[Say("check `scopes`/`services` of account {account}")],
    ),
    e(
        Match::Error("access_denied"),
        false,
        "the user or an admin declined the request",
        &[Say("sign in again and accept")],
    ),
    e(
        Match::Error("expired_token"),
        false,
        "the device code expired before the sign-in was completed",
        &[Say("sign in again and finish within the time shown"), Login],
    ),
];

/// Look up a token-endpoint error. `codes` are Microsoft's `error_codes`; codes in
/// the description (`AADSTS70008: …`) are found too.
pub fn token_error(
    account: &Account,
    error: &str,
    description: &str,
    codes: &[u64],
) -> Option<Diagnosis> {
    let mut all: Vec<u64> = codes.to_vec();
    all.extend(aadsts_codes(description));
    let found = CATALOG.iter().find(|en| match en.m {
        Match::Aad(c) => all.contains(&c),
        Match::Text(t) => description.contains(t),
        Match::Error(er) => er == error,
    })?;
    let mut remedy = super::remedy(account, found.fix);
    if let Some(c) = all.first() {
        let details = format!("details: https://login.microsoftonline.com/error?code={c}");
        remedy = remedy.then(Remedy::Steps(details));
    }
    Some(Diagnosis {
        cause: super::fill(account, found.cause),
        remedy,
        login_required: found.login_required,
    })
}

fn aadsts_codes(text: &str) -> Vec<u64> {
    text.match_indices("AADSTS")
        .filter_map(|(i, _)| {
            let digits: String = text[i + 6..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            digits.parse().ok()
        })
        .collect()
}

/// An endpoint failure as the library error, with the catalog's diagnosis.
pub fn endpoint_error(
    e: EndpointError,
    account: &Account,
    endpoint: &'static str,
    url: &str,
) -> Error {
    match e {
        EndpointError::OAuth {
            error,
            description,
            codes,
            ..
        } => {
            let d = token_error(account, &error, &description, &codes);
            let summary = if description.is_empty() {
                error.clone()
            } else {
                format!("{error}: {description}")
            };
            match d {
                Some(d) if d.login_required => Error::LoginRequired {
                    account: account.name.clone(),
                    reason: format!("{} ({summary})", d.cause),
                    remedy: Some(d.remedy),
                },
                diagnosis => Error::OAuth {
                    endpoint,
                    summary,
                    diagnosis: diagnosis.map(Box::new),
                },
            }
        }
        EndpointError::Transient { detail, .. } => Error::Unreachable {
            what: format!("{endpoint} {url}"),
            detail,
        },
        EndpointError::Invalid { detail } => Error::BadResponse {
            what: format!("{endpoint} {url}"),
            detail,
        },
    }
}

/// Every text of the catalog, for checks that hold across entries.
#[cfg(test)]
pub(super) fn texts() -> Vec<&'static str> {
    CATALOG
        .iter()
        .flat_map(|e| {
            std::iter::once(e.cause).chain(e.fix.iter().filter_map(|f| match f {
                Say(s) => Some(*s),
                _ => None,
            }))
        })
        .collect()
}
