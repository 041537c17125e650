//! Diagnoses: what a provider's error means and what to do about it, and what an
//! access token's claims say.
//!
//! Owns: the catalog (data, not scattered `if`s) mapping token-endpoint errors —
//! Microsoft `AADSTS` codes, OAuth error codes, Google's texts — to cause and fix,
//! with the account's own values filled in; and a best-effort JWT claim reader.
//! Must not: do I/O, or verify signatures (claims are read only to explain).

use serde_json::{Map, Value};

use crate::error::Error;
use crate::jwt;
use crate::oauth::EndpointError;
use crate::providers::Account;

/// Cause and fix of a failure, ready to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    /// What it means.
    pub cause: String,
    /// What to do, concretely.
    pub fix: String,
    /// True when only a new interactive login helps.
    pub login_required: bool,
}

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
    fix: &'static str,
}

const fn e(m: Match, login_required: bool, cause: &'static str, fix: &'static str) -> Entry {
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
        "sign in interactively: `mailoauth login {account}`",
    ),
    e(
        Match::Aad(50079),
        true,
        "the user must register for multi-factor authentication",
        "sign in interactively and complete MFA registration: `mailoauth login {account}`",
    ),
    e(
        Match::Aad(50126),
        false,
        "wrong user name or password",
        "sign in again with the right password",
    ),
    e(
        Match::Aad(65001),
        true,
        "the app has not been consented for these permissions",
        "sign in interactively to consent, or have an admin grant consent in Entra (Enterprise applications → Permissions → Grant admin consent)",
    ),
    e(
        Match::Aad(90094),
        true,
        "admin consent is required for these permissions",
        "ask a tenant admin to grant consent for app {client_id} in Entra (Enterprise applications → Permissions)",
    ),
    e(
        Match::Aad(700016),
        false,
        "the app (client id {client_id}) is not found in this tenant",
        "check `client_id` and `tenant` of account {account}; a single-tenant app needs its own tenant, not `common`",
    ),
    e(
        Match::Aad(7000218),
        false,
        "the app is confidential: the request needs a client secret or assertion",
        "enable 'Allow public client flows' in the app registration (Authentication), or set `client_secret` for account {account}",
    ),
    e(
        Match::Aad(700025),
        false,
        "a public client must not send a client secret",
        "remove `client_secret` from account {account}",
    ),
    e(
        Match::Aad(70000),
        true,
        "the refresh token is not valid any more",
        "sign in again",
    ),
    e(
        Match::Aad(70008),
        true,
        "the refresh token expired (unused for too long)",
        "sign in again; keep `mailoauth daemon` running so tokens are refreshed regularly",
    ),
    e(
        Match::Aad(700082),
        true,
        "the refresh token expired (unused for too long)",
        "sign in again; keep `mailoauth daemon` running so tokens are refreshed regularly",
    ),
    e(
        Match::Aad(700084),
        true,
        "the refresh token of a single-page app is older than 24 h",
        "register the redirect URI under 'Mobile and desktop applications', not 'Single-page application', then sign in again",
    ),
    e(
        Match::Aad(50173),
        true,
        "the grant was revoked (password changed or sessions revoked)",
        "sign in again",
    ),
    e(
        Match::Aad(70043),
        true,
        "a sign-in frequency policy (Conditional Access) expired the session",
        "sign in again",
    ),
    e(
        Match::Aad(53003),
        false,
        "blocked by a Conditional Access policy",
        "ask the tenant admin which policy blocks app {client_id} (Entra sign-in logs show it)",
    ),
    e(
        Match::Aad(530035),
        false,
        "blocked by security defaults",
        "ask the tenant admin (Entra sign-in logs show the reason)",
    ),
    e(
        Match::Aad(530033),
        false,
        "Conditional Access blocks this flow (device code flow is often blocked)",
        "use flow = \"auth-code\" (with --no-browser over SSH), or ask the admin",
    ),
    e(
        Match::Aad(50011),
        false,
        "the redirect URI is not registered for the app",
        "register exactly {redirect_uri} (port-less http://localhost serves any port) under 'Mobile and desktop applications'",
    ),
    e(
        Match::Aad(90002),
        false,
        "the tenant does not exist",
        "check `tenant` (a domain like contoso.onmicrosoft.com or the tenant id)",
    ),
    e(
        Match::Aad(90038),
        false,
        "the tenant is in another national cloud",
        "set `cloud` (global | usgov | china) for account {account}",
    ),
    e(
        Match::Aad(50020),
        false,
        "the user is not in this tenant",
        "use the user's own tenant, or invite them as a guest",
    ),
    e(
        Match::Aad(50034),
        false,
        "the user does not exist in this directory",
        "check `user` of account {account}",
    ),
    e(
        Match::Aad(700022),
        false,
        "the scopes name more than one resource",
        "request one resource per token: mail scopes (IMAP/POP/SMTP on outlook) apart from Graph; use `token --resource`",
    ),
    e(
        Match::Aad(28000),
        false,
        "the scopes name more than one resource",
        "request one resource per token: mail scopes apart from Graph",
    ),
    e(
        Match::Aad(70011),
        false,
        "a requested scope is invalid",
        "check `scopes` of account {account} (e.g. https://outlook.office.com/IMAP.AccessAsUser.All)",
    ),
    e(
        Match::Aad(9001023),
        false,
        "this grant type is not allowed on /common or /consumers",
        "set `tenant` to your tenant's domain or id",
    ),
    e(
        Match::Aad(50194),
        false,
        "a single-tenant app cannot use /common",
        "set `tenant` to your tenant's domain or id",
    ),
    e(
        Match::Text("has been expired or revoked"),
        true,
        "Google says the token expired or was revoked (apps in 'Testing' mode get 7-day refresh tokens)",
        "sign in again; publish the OAuth consent screen (In production) to get long-lived tokens",
    ),
    e(
        Match::Error("redirect_uri_mismatch"),
        false,
        "the redirect URI is not registered for the app",
        "register {redirect_uri} for client {client_id}",
    ),
    e(
        Match::Error("invalid_grant"),
        true,
        "the provider no longer accepts the refresh token (expired, revoked, or rotated away)",
        "sign in again",
    ),
    e(
        Match::Error("interaction_required"),
        true,
        "the provider requires an interactive sign-in",
        "sign in again",
    ),
    e(
        Match::Error("login_required"),
        true,
        "the provider requires an interactive sign-in",
        "sign in again",
    ),
    e(
        Match::Error("consent_required"),
        true,
        "the provider requires consent",
        "sign in interactively to consent",
    ),
    e(
        Match::Error("invalid_client"),
        false,
        "the client id or client credential was rejected",
        "check `client_id` and `client_secret` / `client_certificate` of account {account}",
    ),
    e(
        Match::Error("unauthorized_client"),
        false,
        "the app may not use this grant type",
        "enable the flow in the app registration (e.g. 'Allow public client flows' for device code)",
    ),
    e(
        Match::Error("invalid_scope"),
        false,
        "a requested scope is not valid for this app",
        "check `scopes`/`services` of account {account}",
    ),
    e(
        Match::Error("access_denied"),
        false,
        "the user or an admin declined the request",
        "sign in again and accept",
    ),
    e(
        Match::Error("expired_token"),
        false,
        "the device code expired before the sign-in was completed",
        "run `mailoauth login {account}` again and finish within the time shown",
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
    let fill = |s: &str| {
        s.replace("{account}", &account.name)
            .replace("{user}", &account.user)
            .replace("{client_id}", &account.client_id)
            .replace("{redirect_uri}", &account.redirect_uri)
    };
    let mut fix = fill(found.fix);
    if let Some(c) = all.first() {
        fix.push_str(&format!(
            " (details: https://login.microsoftonline.com/error?code={c})"
        ));
    }
    Some(Diagnosis {
        cause: fill(found.cause),
        fix,
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

/// A known server reply (Exchange Online, Gmail, Dovecot) and what it means.
struct WireEntry {
    /// `imap`, `pop`, `smtp`, or "" for any.
    protocol: &'static str,
    /// Text the reply (or the decoded challenge) contains.
    text: &'static str,
    cause: &'static str,
    /// `{account}`, `{user}`, `{client_id}` are filled in.
    fix: &'static str,
}

const fn w(
    protocol: &'static str,
    text: &'static str,
    cause: &'static str,
    fix: &'static str,
) -> WireEntry {
    WireEntry {
        protocol,
        text,
        cause,
        fix,
    }
}

/// Most specific first.
const WIRE: &[WireEntry] = &[
    w(
        "imap",
        "User is authenticated but not connected",
        "the token was accepted, but its user has no access to the mailbox {user} (no mailbox permission, IMAP disabled for the mailbox, or no licence)",
        "Exchange Online PowerShell: `Set-CASMailbox -Identity {user} -ImapEnabled $true`; for app-only access `Add-MailboxPermission -Identity {user} -User <service principal id> -AccessRights FullAccess`",
    ),
    w(
        "imap",
        "AUTHENTICATE failed",
        "Exchange refused the token: usually a token for the wrong audience (a Graph scope instead of https://outlook.office.com/IMAP.AccessAsUser.All), or `user=` is not the token's user, or (app-only) the app has no service principal / mailbox permission in Exchange",
        "run `mailoauth inspect {account}` to see the token's audience, scopes and user",
    ),
    w(
        "imap",
        "LOGIN failed",
        "password LOGIN was refused: basic authentication is off for this mailbox",
        "use XOAUTH2 (mailoauth token {account} as the OAuth token in your client, or the mailoauth proxy)",
    ),
    w(
        "imap",
        "Invalid SASL argument",
        "the server could not parse the XOAUTH2 string",
        "report this as a mailoauth bug with `mailoauth -v check {account}`",
    ),
    w(
        "pop",
        "Authentication failure",
        "the POP3 server refused the token (wrong audience or scope, another user, or POP disabled for the mailbox)",
        "run `mailoauth inspect {account}`; Exchange: `Set-CASMailbox -Identity {user} -PopEnabled $true`",
    ),
    w(
        "smtp",
        "5.7.139",
        "SMTP AUTH is disabled for the tenant or the mailbox (even with OAuth)",
        "Exchange Online PowerShell: `Set-CASMailbox -Identity {user} -SmtpClientAuthenticationDisabled $false` (the mailbox setting wins), or tenant-wide `Set-TransportConfig -SmtpClientAuthenticationDisabled $false`",
    ),
    w(
        "smtp",
        "SendAsDenied",
        "the From address is not the authenticated mailbox {user}",
        "send as {user}, or have an admin run `Add-RecipientPermission -Identity <From address> -Trustee {user} -AccessRights SendAs`",
    ),
    w(
        "smtp",
        "5.2.252",
        "the From address is not the authenticated mailbox {user}",
        "send as {user}, or have an admin run `Add-RecipientPermission -Identity <From address> -Trustee {user} -AccessRights SendAs`",
    ),
    w(
        "smtp",
        "5.7.3",
        "Exchange rejected the token: commonly the signed-in user differs from {user}, or the token lacks SMTP.Send",
        "run `mailoauth inspect {account}`; add `smtp` to `services` and run `mailoauth login {account}`",
    ),
    w(
        "smtp",
        "5.7.57",
        "the server wants authentication before MAIL FROM",
        "make sure the client authenticates (AUTH XOAUTH2) before sending",
    ),
    w(
        "smtp",
        "4.7.66",
        "the server refuses TLS 1.0/1.1",
        "mailoauth uses TLS 1.2+; a proxy in the path may downgrade",
    ),
    w(
        "smtp",
        "5.7.8",
        "Gmail did not accept the token (expired, wrong scope, or another user)",
        "run `mailoauth inspect {account}`; Gmail needs scope https://mail.google.com/",
    ),
    w(
        "smtp",
        "5.5.2",
        "the server rejected the command line as too long",
        "report this as a mailoauth bug: long AUTH lines should use the two-step form",
    ),
    w(
        "",
        "\"status\":\"400\"",
        "the server says the token is invalid for this request (Gmail: wrong scope or user)",
        "run `mailoauth inspect {account}`; Gmail needs scope https://mail.google.com/",
    ),
    w(
        "",
        "\"status\":\"401\"",
        "the server says the token is invalid or expired",
        "run `mailoauth refresh {account}` and retry; then `mailoauth inspect {account}`",
    ),
    w(
        "",
        "AUTHENTICATIONFAILED",
        "the server refused the token (expired, wrong audience or scope, or another user than {user})",
        "run `mailoauth inspect {account}` to see audience, scopes and user",
    ),
];

/// Look up a server reply (`protocol` is `imap`, `pop` or `smtp`); `challenge` is
/// the decoded SASL error challenge when there was one.
pub fn wire_reply(
    account: &Account,
    protocol: &str,
    reply: &str,
    challenge: Option<&str>,
) -> Option<Diagnosis> {
    let hay = format!("{reply} {}", challenge.unwrap_or(""));
    let found = WIRE
        .iter()
        .find(|e| (e.protocol.is_empty() || e.protocol == protocol) && hay.contains(e.text))?;
    let fill = |s: &str| {
        s.replace("{account}", &account.name)
            .replace("{user}", &account.user)
            .replace("{client_id}", &account.client_id)
    };
    Some(Diagnosis {
        cause: fill(found.cause),
        fix: fill(found.fix),
        login_required: false,
    })
}

/// The setup an app-only (client credentials) account needs in Entra and Exchange
/// Online, filled in with this account's app id and mailbox: the source of most
/// "NO AUTHENTICATE failed" support threads.
pub fn app_only_checklist(account: &Account) -> String {
    format!(
        "App-only access (client credentials) needs all of these:\n\
         1. Entra app {id}: API permissions → APIs my organization uses → Office 365 Exchange Online → \
         Application permissions → IMAP.AccessAsApp / POP.AccessAsApp / SMTP.SendAsApp, then \
         'Grant admin consent'.\n\
         2. Exchange Online PowerShell (Connect-ExchangeOnline), with the Object ID of the *Enterprise \
         application* (not of the App registration — that one silently fails):\n\
         \x20  New-ServicePrincipal -AppId {id} -ObjectId <enterprise application object id>\n\
         \x20  Add-MailboxPermission -Identity {user} -User <enterprise application object id> -AccessRights FullAccess\n\
         \x20  Add-RecipientPermission -Identity {user} -Trustee <enterprise application object id> -AccessRights SendAs   # for SMTP\n\
         3. The token is requested for scope https://outlook.office365.com/.default and the XOAUTH2 `user=` \
         is the mailbox ({user}); `mailoauth inspect {name}` must show roles IMAP.AccessAsApp etc.",
        id = account.client_id,
        user = account.user,
        name = account.name
    )
}

/// Best-effort checks of a token's claims against the account, before connecting:
/// audience, missing scopes (named), another user, expiry. Empty for opaque tokens.
pub fn preflight(account: &Account, resource: Option<&str>, c: &Map<String, Value>) -> Vec<String> {
    let mut warnings = Vec::new();
    let scopes = account
        .scopes(resource)
        .map(|s| s.to_vec())
        .unwrap_or_default();
    // The resource is the scheme+host of the first URL-shaped scope.
    let expected_aud = scopes.iter().find_map(|s| {
        url::Url::parse(s)
            .ok()
            .map(|u| u.origin().ascii_serialization())
    });
    let aud: Vec<String> = match c.get("aud") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(v)) => v
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        _ => vec![],
    };
    if let Some(exp_aud) = &expected_aud {
        // Exchange Online also appears under its well-known application id, and
        // outlook.office.com / outlook.office365.com are the same resource.
        let exchange = "00000002-0000-0ff1-ce00-000000000000";
        let same = |x: &String| {
            x.trim_end_matches('/').eq_ignore_ascii_case(exp_aud)
                || (exp_aud.contains("outlook") && (x == exchange || x.contains("outlook")))
        };
        if !aud.is_empty() && !aud.iter().any(same) {
            warnings.push(format!(
                "audience is {} but the account's scopes are for {exp_aud}: the server will refuse this token \
                 (a Graph token at IMAP gives `NO AUTHENTICATE failed`)",
                aud.join(", ")
            ));
        }
    }
    let granted: Vec<&str> = ["scp", "scope", "roles"]
        .iter()
        .filter_map(|k| c.get(*k))
        .flat_map(|v| match v {
            Value::String(s) => s.split_whitespace().collect::<Vec<_>>(),
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        })
        .collect();
    if !granted.is_empty() {
        for s in &scopes {
            let name = s.rsplit('/').next().unwrap_or(s);
            if matches!(
                name,
                "openid" | "profile" | "email" | "offline_access" | ".default" | ""
            ) {
                continue;
            }
            if !granted.iter().any(|g| g.rsplit('/').next() == Some(name)) {
                warnings.push(format!("the token lacks scope `{name}`: consent to it (or grant it as admin) and log in again"));
            }
        }
    }
    if account.has_refresh_tokens()
        && let Some(u) = jwt::user(c)
        && !u.eq_ignore_ascii_case(&account.user)
    {
        warnings.push(format!(
            "the token is for {u}, but the account's user is {}",
            account.user
        ));
    }
    if let Some(exp) = c.get("exp").and_then(Value::as_i64)
        && exp <= crate::clock::now()
    {
        warnings.push(format!(
            "the token expired {} s ago",
            crate::clock::now() - exp
        ));
    }
    warnings
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
                    fix: Some(d.fix),
                },
                Some(d) => Error::OAuth {
                    endpoint,
                    summary,
                    fix: Some(format!("{}: {}", d.cause, d.fix)),
                },
                None => Error::OAuth {
                    endpoint,
                    summary,
                    fix: None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn account() -> Account {
        let c = Config::parse(
            "[accounts.work]\nprovider = \"microsoft\"\nuser = \"a@c.com\"\nclient_id = \"cid-1\"\n",
            std::path::Path::new("/c"),
        )
        .unwrap();
        crate::providers::resolve(&c, "work").unwrap()
    }

    #[test]
    fn aadsts_code_in_description_is_found_and_filled() {
        let d = token_error(
            &account(),
            "invalid_grant",
            "AADSTS700016: Application with identifier 'x' was not found",
            &[],
        )
        .unwrap();
        assert!(d.cause.contains("cid-1"), "{d:?}");
        assert!(!d.login_required);
        assert!(d.fix.contains("code=700016"));
    }

    #[test]
    fn refresh_expiry_is_login_required() {
        let d = token_error(
            &account(),
            "invalid_grant",
            "AADSTS70008: The refresh token has expired",
            &[70008],
        )
        .unwrap();
        assert!(d.login_required && d.cause.contains("expired"));
        let g = token_error(
            &account(),
            "invalid_grant",
            "Token has been expired or revoked.",
            &[],
        )
        .unwrap();
        assert!(g.login_required && g.cause.contains("Testing"));
    }

    #[test]
    fn unknown_errors_have_no_diagnosis() {
        assert!(token_error(&account(), "weird", "", &[]).is_none());
    }

    #[test]
    fn wire_catalog_maps_exchange_and_gmail_replies() {
        let a = account();
        let d = wire_reply(&a, "smtp", "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.", None).unwrap();
        assert!(
            d.fix.contains(
                "Set-CASMailbox -Identity a@c.com -SmtpClientAuthenticationDisabled $false"
            ),
            "{d:?}"
        );
        let d = wire_reply(&a, "imap", "a1 NO AUTHENTICATE failed.", None).unwrap();
        assert!(d.cause.contains("Graph") && d.fix.contains("mailoauth inspect work"));
        let d = wire_reply(&a, "imap", "a1 NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)", Some("{\"status\":\"400\",\"schemes\":\"Bearer\",\"scope\":\"https://mail.google.com/\"}")).unwrap();
        assert!(d.fix.contains("https://mail.google.com/"));
        assert!(
            wire_reply(&a, "pop", "535 5.7.139", None).is_none(),
            "protocol-specific entries stay in their protocol"
        );
        assert!(app_only_checklist(&a).contains("New-ServicePrincipal -AppId cid-1"));
    }
}
