//! `mailoauth doctor NAME`: the whole chain checked in one go, printed as a
//! checklist with the fix for each failed line.
//!
//! Owns: the order of the checks (config, discovery still agrees, token
//! present and fresh, claims, each protocol's login, SMTP AUTH, app-only admin
//! steps) and carrying on past a failure where later lines still say
//! something. Must not: decide a fix itself — each comes from the library
//! (config errors, the diagnosis catalog, discovery, the app-only checklist).

use std::path::Path;
use std::time::Duration;

use mailoauth::config::{FlowKind, ProviderKind, Service};
use mailoauth::discover::{self, Verdict};
use mailoauth::{Broker, Error};

use super::render;

/// One line of the checklist.
struct Line {
    state: State,
    what: String,
    detail: String,
    fix: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Ok,
    Warn,
    Fail,
    Skip,
}

impl State {
    fn mark(self) -> &'static str {
        match self {
            State::Ok => "ok  ",
            State::Warn => "warn",
            State::Fail => "FAIL",
            State::Skip => "skip",
        }
    }
}

fn line(state: State, what: &str, detail: impl Into<String>, fix: Vec<String>) -> Line {
    Line {
        state,
        what: what.into(),
        detail: detail.into(),
        fix,
    }
}

fn error_fix(e: &Error) -> Vec<String> {
    e.remedy().map(|r| render::lines(&r)).unwrap_or_default()
}

/// Run the checklist; the exit code (0 when nothing failed, 1 otherwise).
pub fn run(path: &Path, name: &str, timeout: u64, json: bool) -> Result<i32, Error> {
    let mut lines = Vec::new();
    let config = mailoauth::Config::load(path)?;
    let raw = config.account(name)?.clone();

    // 1. Config.
    let account = match mailoauth::providers::resolve(&config, name) {
        Ok(a) => {
            lines.push(line(
                State::Ok,
                "config",
                format!(
                    "{} ({} account, {} flow)",
                    path.display(),
                    a.provider.as_str(),
                    a.flow.as_str()
                ),
                vec![],
            ));
            Some(a)
        }
        Err(e) => {
            let mut fix = error_fix(&e);
            if raw.client_id.is_none() {
                fix.push("get a client id:".into());
            }
            lines.push(line(State::Fail, "config", e.to_string(), fix));
            None
        }
    };

    // 2. Discovery still agrees with the account.
    let options = discover::Options::from_env().map_err(|e| Error::Usage(e.to_string()))?;
    let decision = discover::discover(&raw.user, &options).ok();
    match &decision {
        None => lines.push(line(
            State::Skip,
            "discovery",
            "the user is not an email address",
            vec![],
        )),
        Some(d) if d.verdict != Verdict::Decided => lines.push(line(
            State::Warn,
            "discovery",
            format!("undecided for {} ({})", d.email, d.verdict.as_str()),
            d.fix.clone(),
        )),
        Some(d) => {
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
                if d.cloud.is_some_and(|c| c != cloud) {
                    differs.push(format!(
                        "cloud: the account says {}, discovery {}",
                        cloud.as_str(),
                        d.cloud.map(|c| c.as_str()).unwrap_or("-")
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
                lines.push(line(
                    State::Ok,
                    "discovery",
                    format!(
                        "agrees ({} lookups, {} ms)",
                        d.lookups,
                        d.elapsed.as_millis()
                    ),
                    vec![],
                ));
            } else {
                lines.push(line(
                    State::Fail,
                    "discovery",
                    differs.join("; "),
                    vec![format!(
                        "`mailoauth add {} --dry-run` shows each signal; correct the account (or pass --provider/--tenant to add)",
                        d.email
                    )],
                ));
            }
        }
    }
    if raw.client_id.is_none()
        && let Some(d) = &decision
    {
        let steps = super::onboard::registration_steps(raw.provider, d, name, None);
        if let Some(l) = lines.iter_mut().find(|l| l.what == "config") {
            l.fix
                .extend(steps.lines().filter(|s| !s.is_empty()).map(str::to_owned));
        }
    }

    let Some(account) = account else {
        return finish(json, name, lines);
    };
    let broker = Broker::new(account.clone())?;

    // 3. Token present and fresh.
    let token = match broker.record() {
        Ok(None) => {
            lines.push(line(
                State::Fail,
                "token",
                "no token stored",
                vec![format!("run `mailoauth login {name}`")],
            ));
            None
        }
        Err(e) => {
            lines.push(line(State::Fail, "token", e.to_string(), error_fix(&e)));
            None
        }
        Ok(Some(_)) => match broker.token(None) {
            Ok(t) => {
                let rec = broker.record().ok().flatten();
                let left = rec
                    .as_ref()
                    .and_then(|r| r.access.get(mailoauth::providers::MAIL_RESOURCE))
                    .map(|a| a.expires_at - mailoauth::clock::now())
                    .unwrap_or(0);
                lines.push(line(
                    State::Ok,
                    "token",
                    format!("present and fresh (valid for {} more minutes)", left / 60),
                    vec![],
                ));
                Some((t, rec))
            }
            Err(e) => {
                lines.push(line(State::Fail, "token", e.to_string(), error_fix(&e)));
                None
            }
        },
    };
    let Some((token, rec)) = token else {
        return finish(json, name, lines);
    };

    // 4. Claims.
    match mailoauth::jwt::claims(&token) {
        None => lines.push(line(
            State::Skip,
            "claims",
            "opaque token: its audience, scopes and user cannot be read here",
            vec![],
        )),
        Some(c) => {
            let warnings = mailoauth::diagnose::preflight(&account, None, &c);
            if warnings.is_empty() {
                lines.push(line(
                    State::Ok,
                    "claims",
                    "audience, scopes and user match the account",
                    vec![],
                ));
            } else {
                lines.push(line(
                    State::Fail,
                    "claims",
                    warnings.join("; "),
                    vec![format!("run `mailoauth inspect {name}`, fix the account, then `mailoauth login {name}`")],
                ));
            }
        }
    }

    // 5. Each protocol's login, and SMTP AUTH.
    let services: Vec<Service> = Service::ALL
        .into_iter()
        .filter(|s| mailoauth::mail::server_for(&account, *s).is_some())
        .collect();
    let stored = rec
        .as_ref()
        .and_then(|r| r.access.get(mailoauth::providers::MAIL_RESOURCE))
        .filter(|at| at.token == token);
    let facts = mailoauth::mail::check::Token {
        value: &token,
        scope: stored.and_then(|at| at.scope.as_deref()),
        user_verified: rec.as_ref().is_some_and(|r| r.user.is_some()),
    };
    let outcome =
        mailoauth::mail::check::run(&account, &services, facts, Duration::from_secs(timeout));
    for r in &outcome.reports {
        let what = format!("{} login", r.service.name());
        match &r.result {
            Ok(_) => lines.push(line(State::Ok, &what, r.server.clone(), vec![])),
            Err(f) => {
                let d = outcome.diagnosis(&account, r);
                let fix = d
                    .as_ref()
                    .map(|d| render::lines(&d.remedy))
                    .unwrap_or_default();
                let cause = d.map(|d| d.cause).unwrap_or_else(|| f.to_string());
                lines.push(line(
                    State::Fail,
                    &what,
                    format!("{}: {cause}", r.server),
                    fix,
                ));
            }
        }
    }
    if let Some(r) = outcome.reports.iter().find(|r| r.service == Service::Smtp) {
        let exchange = mailoauth::diagnose::is_exchange(&account);
        match &r.result {
            Ok(_) => lines.push(line(State::Ok, "SMTP AUTH", "the server accepts SMTP AUTH with this token", vec![])),
            Err(_) if exchange => lines.push(line(
                State::Fail,
                "SMTP AUTH",
                "SMTP AUTH may be disabled for the mailbox or the organisation (Exchange Online's default)",
                vec![format!(
                    "an Exchange administrator runs `Set-CASMailbox -Identity {} -SmtpClientAuthenticationDisabled $false`",
                    account.user
                )],
            )),
            Err(_) => {}
        }
    }

    // 6. App-only admin steps.
    if account.flow == FlowKind::ClientCredentials && mailoauth::diagnose::is_exchange(&account) {
        let steps = render::lines(&mailoauth::diagnose::app_only_checklist(&account));
        let ok = outcome.exit_code() == 0;
        lines.push(line(
            if ok { State::Ok } else { State::Fail },
            "app-only",
            if ok {
                "service principal and mailbox permission work"
            } else {
                "the admin steps below are needed"
            },
            if ok { vec![] } else { steps },
        ));
    }
    finish(json, name, lines)
}

fn finish(json: bool, name: &str, lines: Vec<Line>) -> Result<i32, Error> {
    let failed = lines.iter().any(|l| l.state == State::Fail);
    if json {
        let v = serde_json::json!({
            "account": name,
            "ok": !failed,
            "checks": lines.iter().map(|l| serde_json::json!({
                "check": l.what, "state": l.state.mark().trim(), "detail": l.detail, "fix": l.fix,
            })).collect::<Vec<_>>(),
        });
        println!("{v}");
    } else {
        let mut out = format!("mailoauth doctor {name}\n");
        for l in &lines {
            out.push_str(&format!(
                "  [{}] {:<11} {}\n",
                l.state.mark(),
                l.what,
                l.detail
            ));
            for f in &l.fix {
                out.push_str(&format!("         fix: {f}\n"));
            }
        }
        print!("{out}");
    }
    Ok(if failed { 1 } else { 0 })
}
