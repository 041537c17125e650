//! `check` as a whole: the token pre-flight, one report per protocol, and what
//! they add up to.
//!
//! Owns: which outcome outranks which (a refusal says more than an unreachable
//! server) and when the app-only checklist applies. Must not: print (the front
//! ends render an [`Outcome`]).

use std::time::Duration;

use super::{Report, check as check_one};
use crate::error::{exit, mail_exit_code};
use crate::providers::Account;
use crate::remedy::{Diagnosis, Remedy};
use crate::service::Service;

/// Everything `check` found.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Warnings from the token's claims, before connecting.
    pub preflight: Vec<String>,
    /// One per protocol checked.
    pub reports: Vec<Report>,
    /// The app-only setup steps, when an app-only account failed.
    pub app_only: Option<Remedy>,
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
}

impl Report {
    /// The catalog's cause and fix when this protocol's server refused.
    pub fn diagnosis(&self, account: &Account) -> Option<Diagnosis> {
        super::diagnose(account, self.service, self.result.as_ref().err()?)
    }
}

/// Pre-flight `token` against the account, then log in to each of `services`.
pub fn run(account: &Account, services: &[Service], token: &str, timeout: Duration) -> Outcome {
    let preflight = crate::jwt::claims(token)
        .map(|c| crate::diagnose::preflight(account, None, &c))
        .unwrap_or_default();
    let reports: Vec<Report> = services
        .iter()
        .filter_map(|s| check_one(account, *s, token, timeout))
        .collect();
    let mut out = Outcome {
        preflight,
        reports,
        app_only: None,
    };
    if out.exit_code() != exit::OK && !account.has_refresh_tokens() {
        out.app_only = Some(crate::diagnose::app_only_checklist(account));
    }
    out
}
