//! Diagnoses: what a provider's error or a server's reply means and what to do
//! about it, and what an access token's claims say before connecting.
//!
//! Owns: the catalogs (data, not scattered `if`s) — `token` for token-endpoint
//! errors, `wire` for mail servers' replies, `tls` for TLS failures — with the account's own values
//! filled in; the app-only checklist; the token pre-flight. Must not: do I/O,
//! verify signatures (claims are read only to explain), or word a fix for one
//! front end: fixes are [`Remedy`] values.

mod scope;
mod tls;
mod token;
mod wire;

use serde_json::{Map, Value};

use crate::config::ProviderKind;
use crate::jwt;
use crate::providers::Account;
pub use crate::remedy::Diagnosis;
use crate::remedy::Remedy;
use crate::service::Service;
pub use scope::{MissingScope, Preflight, Why, granted, missing_scopes, preflight_services};
pub use tls::tls_failure;
pub use token::{endpoint_error, token_error};
pub use wire::{temporary, wire_reply};

/// One step of a catalog entry's fix; the account's values are filled in when
/// it becomes a [`Remedy`].
#[derive(Clone, Copy)]
enum Fix {
    /// Words (provider settings, admin commands); `{account}`, `{user}`,
    /// `{client_id}` and `{redirect_uri}` are filled in.
    Say(&'static str),
    /// Sign in again.
    Login,
    /// Inspect the token.
    Inspect,
    /// Refresh, then retry.
    Refresh,
    /// Add this service to the account, then sign in again.
    AddService(Service),
    /// A bug of ours.
    ReportBug,
    /// Nothing to fix: try again later.
    RetryLater,
}

/// Whose servers a catalog entry explains.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Family {
    /// Any server.
    Any,
    /// Exchange Online (Microsoft 365, Outlook.com).
    Exchange,
    /// Gmail.
    Gmail,
}

/// Whose servers `account` talks to for `service` (`None`: any of its servers):
/// its provider's, or for other providers the server's host name tells —
/// Exchange Online or Gmail reached through `provider = "custom"` get their advice too.
fn family(account: &Account, service: Option<Service>) -> Family {
    match account.provider {
        ProviderKind::Microsoft => return Family::Exchange,
        ProviderKind::Google => return Family::Gmail,
        _ => {}
    }
    let hosts = [
        (Service::Imap, &account.imap),
        (Service::Pop, &account.pop),
        (Service::Smtp, &account.smtp),
    ];
    let by_host = |h: &str| {
        let h = h.to_ascii_lowercase();
        let ends = |s: &[&str]| s.iter().any(|x| h == x[1..] || h.ends_with(x));
        if ends(&[
            ".office365.com",
            ".office365.us",
            ".outlook.com",
            ".outlook.cn",
        ]) {
            Family::Exchange
        } else if ends(&[".gmail.com", ".googlemail.com", ".google.com"]) {
            Family::Gmail
        } else {
            Family::Any
        }
    };
    hosts
        .iter()
        .filter(|(s, _)| service.is_none_or(|want| want == *s))
        .filter_map(|(_, srv)| srv.as_ref())
        .map(|srv| by_host(&srv.host))
        .find(|f| *f != Family::Any)
        .unwrap_or(Family::Any)
}

/// True when the account's servers are Exchange Online's: then Entra and
/// Exchange advice (the app-only checklist above all) applies.
pub fn is_exchange(account: &Account) -> bool {
    family(account, None) == Family::Exchange
}

fn fill(account: &Account, s: &str) -> String {
    s.replace("{account}", &account.name)
        .replace("{user}", &account.user)
        .replace("{client_id}", &account.client_id)
        .replace("{redirect_uri}", &account.redirect_uri)
}

/// A catalog fix as a remedy for `account`.
fn remedy(account: &Account, fix: &[Fix]) -> Remedy {
    let a = || account.name.clone();
    let mut steps: Vec<Remedy> = fix
        .iter()
        .map(|f| match f {
            Fix::Say(s) => Remedy::Steps(fill(account, s)),
            Fix::Login => Remedy::Login { account: a() },
            Fix::Inspect => Remedy::Inspect { account: a() },
            Fix::Refresh => Remedy::Refresh { account: a() },
            Fix::AddService(service) => Remedy::AddService {
                account: a(),
                service: *service,
            },
            Fix::ReportBug => Remedy::ReportBug { account: a() },
            Fix::RetryLater => Remedy::RetryLater,
        })
        .collect();
    if steps.len() == 1 {
        steps.pop().expect("one step")
    } else {
        Remedy::All(steps)
    }
}

/// The setup an app-only (client credentials) account needs in Entra and Exchange
/// Online, filled in with this account's app id and mailbox: the source of most
/// "NO AUTHENTICATE failed" support threads.
pub fn app_only_checklist(account: &Account) -> Remedy {
    // The tenant's admin consent page: the token endpoint's authority with
    // `/adminconsent` (a Global or Privileged Role Administrator opens it once).
    let consent = account
        .token_url
        .strip_suffix("/oauth2/v2.0/token")
        .map(|authority| {
            format!(
                " (or, as an administrator, open {authority}/adminconsent?client_id={})",
                account.client_id
            )
        })
        .unwrap_or_default();
    let steps = format!(
        "App-only access (client credentials) needs all of these:\n\
         1. Entra app {id}: API permissions → APIs my organization uses → Office 365 Exchange Online → \
         Application permissions → IMAP.AccessAsApp / POP.AccessAsApp / SMTP.SendAsApp, then \
         'Grant admin consent'{consent}.\n\
         2. Exchange Online PowerShell (Connect-ExchangeOnline), with the Object ID of the *Enterprise \
         application* (not of the App registration — that one silently fails):\n\
         \x20  New-ServicePrincipal -AppId {id} -ObjectId <enterprise application object id>\n\
         \x20  Add-MailboxPermission -Identity {user} -User <enterprise application object id> -AccessRights FullAccess\n\
         \x20  Add-RecipientPermission -Identity {user} -Trustee <enterprise application object id> -AccessRights SendAs   # for SMTP\n\
         3. The token is requested for scope https://outlook.office365.com/.default and the XOAUTH2 `user=` \
         is the mailbox ({user}); the token's roles must include IMAP.AccessAsApp etc.",
        id = account.client_id,
        user = account.user,
    );
    Remedy::Steps(steps).then(Remedy::Inspect {
        account: account.name.clone(),
    })
}

/// Best-effort checks of a token's claims against the account, before connecting:
/// audience, missing scopes (named), another user, expiry. Empty for opaque tokens.
pub fn preflight(account: &Account, resource: Option<&str>, c: &Map<String, Value>) -> Vec<String> {
    claim_warnings(account, resource, c, &[])
}

/// [`preflight`], leaving out the scopes in `named` (already reported).
fn claim_warnings(
    account: &Account,
    resource: Option<&str>,
    c: &Map<String, Value>,
    named: &[&str],
) -> Vec<String> {
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
            ) || named.iter().any(|n| n.eq_ignore_ascii_case(name))
            {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// The steps' words, and the actions by name, for assertions.
    fn words(r: &Remedy) -> String {
        r.clone()
            .into_list()
            .iter()
            .map(|r| match r {
                Remedy::Steps(s) => s.clone(),
                other => format!("{other:?}"),
            })
            .collect::<Vec<_>>()
            .join(" | ")
    }

    fn account() -> Account {
        named("provider = \"microsoft\"\nuser = \"a@c.com\"\nclient_id = \"cid-1\"\n")
    }

    fn named(body: &str) -> Account {
        let c = Config::parse(
            &format!("[accounts.work]\n{body}"),
            std::path::Path::new("/c"),
        )
        .unwrap();
        crate::providers::resolve(&c, "work").unwrap()
    }

    #[test]
    fn one_providers_advice_is_not_given_to_another_providers_account() {
        let custom = named(
            "provider = \"custom\"\nuser = \"a@c.com\"\nclient_id = \"c\"\ntoken_url = \"https://idp/t\"\n\
             authorize_url = \"https://idp/a\"\nscopes = [\"mail\"]\n\
             imap = { host = \"mail.c.com\" }\nsmtp = { host = \"mail.c.com\" }\npop = { host = \"mail.c.com\" }\n",
        );
        // Dovecot's refusals: no Gmail or Exchange words for a server that is neither.
        for (p, reply) in [
            ("smtp", "535 5.7.8 Authentication failed."),
            ("pop", "-ERR [AUTH] Authentication failed."),
            (
                "imap",
                "a1 NO [AUTHENTICATIONFAILED] Authentication failed.",
            ),
        ] {
            let d = wire_reply(&custom, p, reply, None).unwrap();
            let all = format!("{} {}", d.cause, words(&d.remedy));
            assert!(
                !all.contains("Gmail") && !all.contains("Exchange"),
                "{p}: {all}"
            );
        }
        assert!(wire_reply(&custom, "imap", "a1 NO AUTHENTICATE failed.", None).is_none());
        assert!(!is_exchange(&custom));
        // The same provider reached as `custom` by its host name keeps its advice.
        let exo = named(
            "provider = \"custom\"\nuser = \"a@c.com\"\nclient_id = \"c\"\ntoken_url = \"https://idp/t\"\n\
             authorize_url = \"https://idp/a\"\nscopes = [\"mail\"]\nimap = { host = \"outlook.office365.com\" }\n",
        );
        assert!(is_exchange(&exo));
        assert!(wire_reply(&exo, "imap", "a1 NO AUTHENTICATE failed.", None).is_some());
    }

    #[test]
    fn temporary_failures_say_retry_and_keep_only_their_providers_advice() {
        let custom = named(
            "provider = \"custom\"\nuser = \"a@c.com\"\nclient_id = \"c\"\ntoken_url = \"https://idp/t\"\n\
             authorize_url = \"https://idp/a\"\nscopes = [\"mail\"]\n",
        );
        let d = temporary(
            &custom,
            "imap",
            "a1 NO [UNAVAILABLE] Temporary authentication failure.",
            "AUTHENTICATE",
        );
        assert!(
            d.cause.contains("authentication backend is unavailable"),
            "{d:?}"
        );
        assert_eq!(d.remedy, Remedy::RetryLater);
        let throttled = "a1 BAD Request is throttled. Suggested Backoff Time: 3000 milliseconds";
        assert!(
            temporary(&account(), "imap", throttled, "AUTHENTICATE")
                .cause
                .contains("Exchange Online is throttling")
        );
        assert!(
            !temporary(&custom, "imap", throttled, "AUTHENTICATE")
                .cause
                .contains("Exchange")
        );
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
        assert!(words(&d.remedy).contains("code=700016"));
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
    fn no_catalog_text_speaks_cli() {
        // Front ends word commands; the catalog's words must fit a web page too.
        let all = [token::texts(), wire::texts()].concat();
        for t in all {
            assert!(
                !t.contains("mailoauth login")
                    && !t.contains("mailoauth inspect")
                    && !t.contains("mailoauth refresh"),
                "{t}"
            );
        }
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
            words(&d.remedy).contains(
                "Set-CASMailbox -Identity a@c.com -SmtpClientAuthenticationDisabled $false"
            ),
            "{d:?}"
        );
        let d = wire_reply(&a, "imap", "a1 NO AUTHENTICATE failed.", None).unwrap();
        assert!(d.cause.contains("Graph"));
        assert_eq!(
            d.remedy,
            Remedy::Inspect {
                account: "work".into()
            }
        );
        let gmail = named("provider = \"google\"\nuser = \"a@gmail.com\"\nclient_id = \"g\"\n");
        let d = wire_reply(&gmail, "imap", "a1 NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)", Some("{\"status\":\"400\",\"schemes\":\"Bearer\",\"scope\":\"https://mail.google.com/\"}")).unwrap();
        assert!(words(&d.remedy).contains("https://mail.google.com/"));
        let d = wire_reply(&a, "smtp", "535 5.7.3 Authentication unsuccessful", None).unwrap();
        assert!(d.remedy.clone().into_list().contains(&Remedy::AddService {
            account: "work".into(),
            service: Service::Smtp
        }));
        assert!(
            wire_reply(&a, "pop", "535 5.7.139", None).is_none(),
            "protocol-specific entries stay in their protocol"
        );
        assert!(words(&app_only_checklist(&a)).contains("New-ServicePrincipal -AppId cid-1"));
        let steps = words(&app_only_checklist(&a));
        assert!(
            steps.contains("https://login.microsoftonline.com/")
                && steps.contains("/adminconsent?client_id=cid-1"),
            "{steps}"
        );
    }
}
