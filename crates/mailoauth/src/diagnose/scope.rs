//! The scope pre-flight: does the token carry what each protocol needs?
//!
//! Owns: reading what a token grants (its claims, or for an opaque token the
//! scope the token endpoint reported), comparing it with what the provider says
//! each protocol needs ([`Account::needs`]), and the diagnosis of a missing one —
//! which scope, why the account lacks it, the exact fix. Must not: do I/O, or
//! use the claims for anything but explanations (the server decides).

use serde_json::{Map, Value};

use super::{Diagnosis, Family, family};
use crate::jwt;
use crate::providers::Account;
use crate::remedy::Remedy;
use crate::service::Service;

/// A protocol whose scope (or, app-only, role) the token lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingScope {
    /// The protocol.
    pub service: Service,
    /// What it needs, as the provider names it.
    pub need: String,
    /// Why the account did not get it.
    pub why: Why,
}

/// Why a token lacks a protocol's scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The account's `services` lacks the protocol (its scopes come from them).
    NotInServices,
    /// The account's own `scopes` do not ask for it.
    NotInScopes,
    /// Asked for, but not granted: no consent yet, or only an admin may consent.
    NotGranted,
    /// App-only: the app has no such application permission.
    NoAppRole,
}

/// What `check` learns before connecting.
#[derive(Debug, Clone, Default)]
pub struct Preflight {
    /// Warnings to show, the protocols' missing scopes first.
    pub warnings: Vec<String>,
    /// The protocols whose needed scope the token lacks.
    pub missing: Vec<MissingScope>,
}

/// The pre-flight for logging in to `services` with `token`; `recorded` is the
/// scope the token endpoint reported for it. Opaque tokens from servers that
/// report no scope cannot be checked: then only the claims' other checks run
/// (and for them, nothing).
pub fn preflight_services(
    account: &Account,
    services: &[Service],
    token: &str,
    recorded: Option<&str>,
) -> Preflight {
    let claims = jwt::claims(token);
    let missing = match granted(account, claims.as_ref(), recorded) {
        Some(g) => missing_scopes(account, services, &g),
        None => {
            log::debug!(
                "scope pre-flight skipped: the token is opaque and the token endpoint reported no scope"
            );
            vec![]
        }
    };
    let mut warnings: Vec<String> = missing.iter().map(|m| m.warning(account)).collect();
    if let Some(c) = &claims {
        let named: Vec<&str> = missing.iter().map(|m| short(&m.need)).collect();
        warnings.extend(super::claim_warnings(account, None, c, &named));
    }
    Preflight { warnings, missing }
}

/// What a token grants, as far as can be told: a delegated token's `scp` /
/// `scope` claims, an app-only token's `roles`; else the scope the token
/// endpoint reported (`recorded`). `None` when nothing says.
pub fn granted(
    account: &Account,
    claims: Option<&Map<String, Value>>,
    recorded: Option<&str>,
) -> Option<Vec<String>> {
    let delegated = account.has_refresh_tokens();
    let keys: &[&str] = if delegated {
        &["scp", "scope"]
    } else {
        &["roles"]
    };
    if let Some(c) = claims
        && keys.iter().any(|k| c.contains_key(*k))
    {
        return Some(
            keys.iter()
                .filter_map(|k| c.get(*k))
                .flat_map(words)
                .collect(),
        );
    }
    // An app-only token's reported scope is `.default`, which names no role.
    if !delegated {
        return None;
    }
    recorded.map(|s| s.split_whitespace().map(str::to_owned).collect())
}

fn words(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => vec![],
    }
}

/// The last path segment (`IMAP.AccessAsUser.All`), or "" for a scope that ends
/// in `/` (Google's `https://mail.google.com/`).
fn short(scope: &str) -> &str {
    scope.rsplit('/').next().unwrap_or(scope)
}

/// Whether a granted scope is the needed one. Microsoft's `scp` names scopes
/// without their resource, and the resource has two spellings
/// (outlook.office.com, outlook.office365.com), so the short names decide.
fn covers(granted: &str, need: &str) -> bool {
    granted.eq_ignore_ascii_case(need)
        || (!short(need).is_empty() && short(granted).eq_ignore_ascii_case(short(need)))
}

/// The protocols among `services` whose need the `granted` scopes lack.
pub fn missing_scopes(
    account: &Account,
    services: &[Service],
    granted: &[String],
) -> Vec<MissingScope> {
    services
        .iter()
        .filter_map(|s| {
            let need = account.needs.get(s)?;
            if granted.iter().any(|g| covers(g, need)) {
                return None;
            }
            let asked = account
                .scopes(None)
                .is_ok_and(|sc| sc.iter().any(|x| covers(x, need)));
            let why = match (account.has_refresh_tokens(), account.explicit_scopes, asked) {
                (false, _, _) => Why::NoAppRole,
                (true, _, true) => Why::NotGranted,
                (true, true, false) => Why::NotInScopes,
                (true, false, false) => Why::NotInServices,
            };
            Some(MissingScope {
                service: *s,
                need: need.clone(),
                why,
            })
        })
        .collect()
}

fn protocol(s: Service) -> &'static str {
    match s {
        Service::Imap => "IMAP",
        Service::Pop => "POP3",
        Service::Smtp => "SMTP",
    }
}

impl MissingScope {
    /// The scope's name as users see it in consent screens and portals.
    fn name(&self) -> &str {
        match short(&self.need) {
            "" => &self.need,
            s => s,
        }
    }

    fn reason(&self, account: &Account) -> String {
        match self.why {
            Why::NotInServices => format!(
                "the account's `services` ({}) does not include `{}`",
                account
                    .services
                    .iter()
                    .map(|s| s.name())
                    .collect::<Vec<_>>()
                    .join(", "),
                self.service.name()
            ),
            Why::NotInScopes => "the account's `scopes` do not ask for it".into(),
            Why::NotGranted => {
                "the account asks for it, but it was not granted (no consent to it yet, \
                 or only an administrator may consent)"
                    .into()
            }
            Why::NoAppRole => {
                "the app has no such application permission, or no admin consent for it".into()
            }
        }
    }

    /// The pre-flight warning.
    pub fn warning(&self, account: &Account) -> String {
        format!(
            "the token lacks `{}`, which {} needs: {}",
            self.name(),
            protocol(self.service),
            self.reason(account)
        )
    }

    /// Cause and fix of the server's refusal that this explains.
    pub fn diagnosis(&self, account: &Account) -> Diagnosis {
        let a = || account.name.clone();
        let exchange = family(account, Some(self.service)) == Family::Exchange;
        let admin = exchange.then(|| {
            Remedy::Steps(format!(
                "if the tenant requires admin consent, an administrator grants {} to app {} \
                 (Entra admin center → Enterprise applications → the app → Permissions → Grant admin consent)",
                self.name(),
                account.client_id
            ))
        });
        let mut steps = match self.why {
            Why::NotInServices => vec![Remedy::AddService {
                account: a(),
                service: self.service,
            }],
            Why::NotInScopes => vec![Remedy::AddScope {
                account: a(),
                scope: spelled_like_account(account, &self.need),
            }],
            Why::NotGranted => vec![
                Remedy::Steps(format!(
                    "sign in again and accept the permission `{}` on the consent page",
                    self.need
                )),
                Remedy::Login { account: a() },
            ],
            Why::NoAppRole if exchange => vec![Remedy::Steps(format!(
                "give app {} the application permission {} (API permissions → APIs my organization uses → \
                 Office 365 Exchange Online → Application permissions), then 'Grant admin consent'",
                account.client_id,
                self.name()
            ))],
            Why::NoAppRole => vec![Remedy::Steps(format!(
                "have the authorization server grant app {} the permission `{}`",
                account.client_id,
                self.name()
            ))],
        };
        if self.why == Why::NoAppRole {
            steps.push(Remedy::Refresh { account: a() });
        } else {
            steps.extend(admin);
        }
        Diagnosis {
            cause: format!("{}; the server refuses such a token", self.warning(account)),
            remedy: Remedy::All(steps),
            login_required: false,
        }
    }
}

/// `need` with the prefix the account's own scopes use for the provider's
/// other scopes (a national cloud's resource, a test server's): a scope the
/// account can add next to them.
fn spelled_like_account(account: &Account, need: &str) -> String {
    let name = short(need);
    let scopes = account.scopes(None).unwrap_or_default();
    for other in account.needs.values().map(|s| short(s)) {
        if other.is_empty() || name.is_empty() {
            continue;
        }
        if let Some((prefix, _)) = scopes
            .iter()
            .find(|s| short(s).eq_ignore_ascii_case(other))
            .and_then(|s| s.rsplit_once('/'))
        {
            return format!("{prefix}/{name}");
        }
    }
    need.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn account(body: &str) -> Account {
        let c = Config::parse(
            &format!("[accounts.w]\nuser = \"a@c.com\"\nclient_id = \"cid\"\n{body}"),
            std::path::Path::new("/c"),
        )
        .unwrap();
        crate::providers::resolve(&c, "w").unwrap()
    }

    fn scopes(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn each_protocol_needs_its_own_microsoft_scope() {
        let a = account("provider = \"microsoft\"\nservices = [\"imap\", \"smtp\"]\n");
        let g = scopes("IMAP.AccessAsUser.All SMTP.Send");
        assert!(missing_scopes(&a, &[Service::Imap, Service::Smtp], &g).is_empty());
        let m = missing_scopes(&a, &[Service::Pop], &g);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].why, Why::NotInServices);
        let w = m[0].warning(&a);
        assert!(
            w.contains("`POP.AccessAsUser.All`") && w.contains("does not include `pop`"),
            "{w}"
        );
        let d = m[0].diagnosis(&a);
        let list = d.remedy.into_list();
        assert!(list.contains(&Remedy::AddService {
            account: "w".into(),
            service: Service::Pop
        }));
        assert!(
            matches!(&list[1], Remedy::Steps(s) if s.contains("admin consent") && s.contains("cid")),
            "{list:?}"
        );
    }

    #[test]
    fn explicit_scopes_get_the_scope_spelled_like_their_own() {
        let a = account(
            "provider = \"microsoft\"\nscopes = [\"https://outlook.test/IMAP.AccessAsUser.All\", \"offline_access\"]\n",
        );
        let m = missing_scopes(&a, &[Service::Pop], &scopes("IMAP.AccessAsUser.All"));
        assert_eq!(m[0].why, Why::NotInScopes);
        assert!(
            m[0].diagnosis(&a)
                .remedy
                .into_list()
                .contains(&Remedy::AddScope {
                    account: "w".into(),
                    scope: "https://outlook.test/POP.AccessAsUser.All".into()
                })
        );
    }

    #[test]
    fn app_only_tokens_are_checked_by_role_and_google_by_its_one_scope() {
        let a = account(
            "provider = \"microsoft\"\nflow = \"client-credentials\"\nclient_secret = \"s\"\ntenant = \"c.com\"\n",
        );
        let claims = serde_json::json!({"roles": ["IMAP.AccessAsApp"]});
        let g = granted(&a, claims.as_object(), None).unwrap();
        let m = missing_scopes(&a, &[Service::Imap, Service::Smtp], &g);
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].service, m[0].why), (Service::Smtp, Why::NoAppRole));
        assert!(granted(&a, None, Some("https://outlook.office365.com/.default")).is_none());

        let g = account("provider = \"google\"\n");
        assert!(
            missing_scopes(
                &g,
                &Service::ALL,
                &scopes("https://mail.google.com/ openid")
            )
            .is_empty()
        );
        let m = missing_scopes(&g, &[Service::Imap], &scopes("openid email"));
        assert_eq!(m[0].why, Why::NotGranted);
    }

    #[test]
    fn custom_accounts_and_opaque_tokens_without_a_reported_scope_are_not_guessed_at() {
        let c = account(
            "provider = \"custom\"\ntoken_url = \"https://idp/t\"\nauthorize_url = \"https://idp/a\"\nscopes = [\"mail\"]\n",
        );
        assert!(missing_scopes(&c, &Service::ALL, &[]).is_empty());
        let a = account("provider = \"microsoft\"\n");
        assert!(granted(&a, None, None).is_none());
        let p = preflight_services(
            &a,
            &[Service::Pop],
            "opaque",
            Some("https://outlook.office.com/IMAP.AccessAsUser.All"),
        );
        assert_eq!(
            p.missing.len(),
            1,
            "the reported scope is checked for opaque tokens"
        );
    }
}
