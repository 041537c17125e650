//! The whole chain of one account checked in one go: config, discovery still
//! agrees, token present and fresh, claims, each protocol's login, SMTP AUTH,
//! and for app-only accounts the admin steps — a checklist with the fix for
//! each failed line.
//!
//! Owns: the order of the checks and carrying on past a failure where later
//! lines still say something. Must not: word a remedy (each front end renders
//! [`Fix::Remedy`]) or print; every fix comes from the library's own sources
//! (config errors, the diagnosis catalog, discovery, the app-only checklist).

use std::time::Duration;

use crate::config::{AccountConfig, Config, FlowKind, ProviderKind, Service};
use crate::discover::{self, Decision, Verdict};
use crate::providers::{Account, MAIL_RESOURCE};
use crate::remedy::Remedy;
use crate::store::TokenRecord;
use crate::{Broker, Error};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Works.
    Ok,
    /// Works, with something to look at.
    Warn,
    /// Broken: the fix says what to do.
    Fail,
    /// Could not be checked (and why is in the detail).
    Skip,
}

impl State {
    /// Its word in the checklist and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Warn => "warn",
            State::Fail => "FAIL",
            State::Skip => "skip",
        }
    }
}

/// One step of a fix.
#[derive(Debug, Clone)]
pub enum Fix {
    /// A typed remedy, worded by the front end.
    Remedy(Remedy),
    /// A line already in words (filled-in registration or admin steps).
    Say(String),
}

/// One line of the checklist.
#[derive(Debug, Clone)]
pub struct Check {
    /// Its outcome.
    pub state: State,
    /// What was checked (`config`, `discovery`, `token`, `imap login` …).
    pub what: String,
    /// What was found.
    pub detail: String,
    /// What to do when it failed.
    pub fix: Vec<Fix>,
}

fn check(state: State, what: &str, detail: impl Into<String>, fix: Vec<Fix>) -> Check {
    Check {
        state,
        what: what.into(),
        detail: detail.into(),
        fix,
    }
}

fn say(s: impl Into<String>) -> Vec<Fix> {
    vec![Fix::Say(s.into())]
}

fn error_fix(e: &Error) -> Vec<Fix> {
    e.remedy().map(Fix::Remedy).into_iter().collect()
}

/// Check account `name` of `config`: discovery with `options`, each mail
/// login bounded by `timeout`.
pub fn run(
    config: &Config,
    name: &str,
    options: &discover::Options,
    timeout: Duration,
) -> Result<Vec<Check>, Error> {
    let raw = config.account(name)?.clone();
    let mut checks = Vec::new();
    let account = match crate::providers::resolve(config, name) {
        Ok(a) => {
            let detail = format!(
                "{} ({} account, {} flow)",
                config.path.display(),
                a.provider.as_str(),
                a.flow.as_str()
            );
            checks.push(check(State::Ok, "config", detail, vec![]));
            Some(a)
        }
        Err(e) => {
            checks.push(check(State::Fail, "config", e.to_string(), error_fix(&e)));
            None
        }
    };
    let decision = discover::discover(&raw.user, options).ok();
    checks.push(discovery(&raw, decision.as_ref()));
    if raw.client_id.is_none()
        && let Some(d) = &decision
        && let Some(c) = checks.iter_mut().find(|c| c.what == "config")
    {
        let steps = discover::steps::registration_steps(raw.provider, d, name, None);
        c.fix.push(Fix::Say("get a client id:".into()));
        c.fix.extend(
            steps
                .lines()
                .filter(|s| !s.is_empty())
                .map(|s| Fix::Say(s.to_owned())),
        );
    }
    let Some(account) = account else {
        return Ok(checks);
    };
    let broker = Broker::new(account.clone())?;
    let Some((token, rec)) = token(&broker, name, &mut checks) else {
        return Ok(checks);
    };
    checks.push(claims(&account, name, &token));
    mail(&account, &token, rec.as_ref(), timeout, &mut checks);
    Ok(checks)
}

/// Whether discovery, run again, still agrees with the account.
fn discovery(raw: &AccountConfig, decision: Option<&Decision>) -> Check {
    let d = match decision {
        None => {
            return check(
                State::Skip,
                "discovery",
                "the user is not an email address",
                vec![],
            );
        }
        Some(d) if d.verdict != Verdict::Decided => {
            let detail = format!("undecided for {} ({})", d.email, d.verdict.as_str());
            let fix = d.fix.iter().cloned().map(Fix::Say).collect();
            return check(State::Warn, "discovery", detail, fix);
        }
        Some(d) => d,
    };
    let mut differs = Vec::new();
    if d.provider != Some(raw.provider) {
        differs.push(format!(
            "provider: the account says {}, discovery {}",
            raw.provider.as_str(),
            d.provider.map(|p| p.as_str()).unwrap_or("-")
        ));
    }
    if raw.provider == ProviderKind::Microsoft {
        let cloud = raw.cloud.unwrap_or_default();
        if let Some(c) = d.cloud.filter(|c| *c != cloud) {
            differs.push(format!(
                "cloud: the account says {}, discovery {}",
                cloud.as_str(),
                c.as_str()
            ));
        }
        // Only a GUID can be compared: a domain names the same tenant.
        if let (Some(t), Some(dt)) = (&raw.tenant, &d.tenant)
            && t.len() == 36
            && dt.len() == 36
            && !t.eq_ignore_ascii_case(dt)
        {
            differs.push(format!("tenant: the account says {t}, Entra {dt}"));
        }
    }
    if differs.is_empty() {
        let detail = format!(
            "agrees ({} lookups, {} ms)",
            d.lookups,
            d.elapsed.as_millis()
        );
        return check(State::Ok, "discovery", detail, vec![]);
    }
    check(
        State::Fail,
        "discovery",
        differs.join("; "),
        say(format!(
            "`mailoauth add {} --dry-run` shows each signal; correct the account (or pass --provider/--tenant to add)",
            d.email
        )),
    )
}

/// A token present and fresh (refreshed now if due): it and its record.
fn token(
    broker: &Broker,
    name: &str,
    checks: &mut Vec<Check>,
) -> Option<(String, Option<TokenRecord>)> {
    let failed = |e: &Error| check(State::Fail, "token", e.to_string(), error_fix(e));
    match broker.record() {
        Ok(None) => {
            let fix = vec![Fix::Remedy(Remedy::Login {
                account: name.to_owned(),
            })];
            checks.push(check(State::Fail, "token", "no token stored", fix));
            None
        }
        Err(e) => {
            checks.push(failed(&e));
            None
        }
        Ok(Some(_)) => match broker.token(None) {
            Ok(t) => {
                let rec = broker.record().ok().flatten();
                let left = rec
                    .as_ref()
                    .and_then(|r| r.access.get(MAIL_RESOURCE))
                    .map(|a| a.expires_at - crate::clock::now())
                    .unwrap_or(0);
                let detail = format!("present and fresh (valid for {} more minutes)", left / 60);
                checks.push(check(State::Ok, "token", detail, vec![]));
                Some((t, rec))
            }
            Err(e) => {
                checks.push(failed(&e));
                None
            }
        },
    }
}

/// The token's audience, scopes and user against the account.
fn claims(account: &Account, name: &str, token: &str) -> Check {
    let Some(c) = crate::jwt::claims(token) else {
        return check(
            State::Skip,
            "claims",
            "opaque token: its audience, scopes and user cannot be read here",
            vec![],
        );
    };
    let warnings = crate::diagnose::preflight(account, None, &c);
    if warnings.is_empty() {
        return check(
            State::Ok,
            "claims",
            "audience, scopes and user match the account",
            vec![],
        );
    }
    let fix = vec![
        Fix::Remedy(Remedy::Inspect {
            account: name.to_owned(),
        }),
        Fix::Remedy(Remedy::Login {
            account: name.to_owned(),
        }),
    ];
    check(State::Fail, "claims", warnings.join("; "), fix)
}

/// Each protocol's login, SMTP AUTH, and for app-only Exchange accounts the
/// admin steps.
fn mail(
    account: &Account,
    token: &str,
    rec: Option<&TokenRecord>,
    timeout: Duration,
    checks: &mut Vec<Check>,
) {
    let services: Vec<Service> = Service::ALL
        .into_iter()
        .filter(|s| crate::mail::server_for(account, *s).is_some())
        .collect();
    let stored = rec
        .and_then(|r| r.access.get(MAIL_RESOURCE))
        .filter(|at| at.token == token);
    let facts = crate::mail::check::Token {
        value: token,
        scope: stored.and_then(|at| at.scope.as_deref()),
        user_verified: rec.is_some_and(|r| r.user.is_some()),
    };
    let outcome = crate::mail::check::run(account, &services, facts, timeout);
    for r in &outcome.reports {
        let what = format!("{} login", r.service.name());
        checks.push(match &r.result {
            Ok(_) => check(State::Ok, &what, r.server.clone(), vec![]),
            Err(f) => {
                let d = outcome.diagnosis(account, r);
                let fix = d.as_ref().map(|d| vec![Fix::Remedy(d.remedy.clone())]);
                let cause = d.map(|d| d.cause).unwrap_or_else(|| f.to_string());
                let detail = format!("{}: {cause}", r.server);
                check(State::Fail, &what, detail, fix.unwrap_or_default())
            }
        });
    }
    let exchange = crate::diagnose::is_exchange(account);
    if let Some(r) = outcome.reports.iter().find(|r| r.service == Service::Smtp) {
        match &r.result {
            Ok(_) => checks.push(check(
                State::Ok,
                "SMTP AUTH",
                "the server accepts SMTP AUTH with this token",
                vec![],
            )),
            Err(_) if exchange => checks.push(check(
                State::Fail,
                "SMTP AUTH",
                "SMTP AUTH may be disabled for the mailbox or the organisation (Exchange Online's default)",
                say(format!(
                    "an Exchange administrator runs `Set-CASMailbox -Identity {} -SmtpClientAuthenticationDisabled $false`",
                    account.user
                )),
            )),
            Err(_) => {}
        }
    }
    if account.flow == FlowKind::ClientCredentials && exchange {
        let ok = outcome.exit_code() == 0;
        checks.push(if ok {
            check(
                State::Ok,
                "app-only",
                "service principal and mailbox permission work",
                vec![],
            )
        } else {
            let steps = crate::diagnose::app_only_checklist(account);
            check(
                State::Fail,
                "app-only",
                "the admin steps below are needed",
                vec![Fix::Remedy(steps)],
            )
        });
    }
}
