//! `check` as a whole: the token pre-flight, one report per protocol, and what
//! they add up to.
//!
//! Owns: which outcome outranks which (a refusal says more than an unreachable
//! server), which explanation of a refusal wins (a scope the pre-flight found
//! missing over the catalog's guess), and when the app-only checklist applies.
//! Must not: print (the front ends render an [`Outcome`]).

use std::time::Duration;

use super::{Failure, Report, check as check_one};
use crate::diagnose::{MissingScope, Preflight};
use crate::error::{exit, mail_exit_code};
use crate::providers::Account;
use crate::remedy::{Diagnosis, Remedy};
use crate::service::Service;

/// The token `check` logs in with, and what the store knows about it. (No
/// `Debug`: it holds the token.)
#[derive(Clone, Copy)]
pub struct Token<'a> {
    /// The access token.
    pub value: &'a str,
    /// The scope the token endpoint reported for it, when it did (what an
    /// opaque token grants).
    pub scope: Option<&'a str>,
    /// Whether the login verified who signed in (id token, userinfo or the
    /// token's claims named the account's user).
    pub user_verified: bool,
}

/// Everything `check` found.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Warnings from the token's claims, before connecting.
    pub preflight: Vec<String>,
    /// One per protocol checked.
    pub reports: Vec<Report>,
    /// The app-only setup steps, when an app-only Exchange account was refused.
    pub app_only: Option<Remedy>,
    /// Protocols whose needed scope the token lacks (from the pre-flight).
    pub missing: Vec<MissingScope>,
    /// Nobody could say who signed in: "another user" is a likely cause of a refusal.
    pub user_unverified: bool,
}

impl Outcome {
    /// 0 when every protocol worked; else refused (5) over unreachable (4) over other (1).
    pub fn exit_code(&self) -> i32 {
        let codes = self
            .reports
            .iter()
            .filter_map(|r| r.result.as_ref().err().map(mail_exit_code));
        codes.fold(exit::OK, |acc, c| match (acc, c) {
            (exit::AUTH_REFUSED, _) | (_, exit::AUTH_REFUSED) => exit::AUTH_REFUSED,
            (exit::UNREACHABLE, _) | (_, exit::UNREACHABLE) => exit::UNREACHABLE,
            _ => exit::ERROR,
        })
    }

    /// The cause and fix of `report`'s failure: a refusal the pre-flight
    /// explains (a missing scope) by that, else the catalog's; for a sign-in
    /// nobody could verify, "another user" joins the likely causes.
    pub fn diagnosis(&self, account: &Account, report: &Report) -> Option<Diagnosis> {
        let f = report.result.as_ref().err()?;
        let refused = matches!(f, Failure::Refused { .. });
        if refused && let Some(m) = self.missing.iter().find(|m| m.service == report.service) {
            return Some(m.diagnosis(account));
        }
        let found = report.diagnosis(account);
        if !(refused && self.user_unverified) {
            return found;
        }
        let another = format!(
            "the sign-in may have been as another user than {}: the authorization server's \
             answer did not say who signed in, so it could not be checked at login",
            account.user
        );
        let login = Remedy::Steps(format!(
            "sign in again as {} (a private browser window keeps a remembered account out of the way)",
            account.user
        ))
        .then(Remedy::Login {
            account: account.name.clone(),
        });
        Some(match found {
            Some(d) => Diagnosis {
                cause: format!("{}; or {another}", d.cause),
                remedy: d.remedy.then(login),
                login_required: false,
            },
            None => Diagnosis {
                cause: format!("the server refused the token; likely {another}"),
                remedy: login,
                login_required: false,
            },
        })
    }
}

impl Report {
    /// The catalog's cause and fix when this protocol's server refused (or
    /// failed temporarily). [`Outcome::diagnosis`] knows more.
    pub fn diagnosis(&self, account: &Account) -> Option<Diagnosis> {
        super::diagnose(account, self.service, self.result.as_ref().err()?)
    }
}

/// Pre-flight `token` against the account and the protocols, then log in to
/// each of `services`.
pub fn run(
    account: &Account,
    services: &[Service],
    token: Token<'_>,
    timeout: Duration,
) -> Outcome {
    let Preflight { warnings, missing } =
        crate::diagnose::preflight_services(account, services, token.value, token.scope);
    let reports: Vec<Report> = services
        .iter()
        .filter_map(|s| check_one(account, *s, token.value, timeout))
        .collect();
    let mut out = Outcome {
        preflight: warnings,
        reports,
        app_only: None,
        missing,
        // A JWT that names its user was checked against the account just now.
        user_unverified: account.has_refresh_tokens()
            && !token.user_verified
            && crate::jwt::claims(token.value)
                .and_then(|c| crate::jwt::user(&c))
                .is_none(),
    };
    // The checklist is Entra's and Exchange's: for a refusal there, not for a
    // temporary failure or another provider's app-only client.
    if out.exit_code() == exit::AUTH_REFUSED
        && !account.has_refresh_tokens()
        && crate::diagnose::is_exchange(account)
    {
        out.app_only = Some(crate::diagnose::app_only_checklist(account));
    }
    out
}
