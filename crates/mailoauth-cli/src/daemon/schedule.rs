//! When the daemon should next renew an account — pure functions, no I/O.
//!
//! Owns: the schedule policy. Refresh ahead of expiry, early enough that a
//! caller never sees a token under `min_validity` (or, for servers issuing short
//! tokens, with half its lifetime left); refresh at least weekly so refresh
//! tokens do not die of inactivity (Microsoft: 90 days, Google: 6 months);
//! back off after failures; leave "login required" accounts alone.

use mailoauth::providers::{Account, MAIL_RESOURCE};
use mailoauth::store::TokenRecord;

/// Refresh tokens are exercised at least this often.
pub const KEEP_ALIVE: i64 = 7 * 24 * 3600;
/// Extra margin before the point where `token` itself would refresh.
pub const MARGIN: i64 = 60;
/// Longest wait between retries of a failing refresh.
pub const MAX_BACKOFF: i64 = 1800;

/// What is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// The access token runs low (or there is none for an app-only account).
    Refresh,
    /// Nothing runs low, but the refresh token wants exercise.
    KeepAlive,
}

/// Seconds before expiry at which the daemon refreshes a token.
pub fn ahead(account: &Account, lifetime: i64) -> i64 {
    (account.min_validity as i64 + MARGIN).min(lifetime / 2)
}

/// The next deadline (unix time) of an account, or `None` to wait for a login.
pub fn next(
    account: &Account,
    rec: Option<&TokenRecord>,
    login_required: bool,
    failures: u32,
    last_failure: i64,
    now: i64,
) -> Option<(i64, Due)> {
    if login_required {
        return None;
    }
    let due = match rec {
        None if account.has_refresh_tokens() => return None,
        None => (now, Due::Refresh),
        Some(rec) => {
            let refresh = match rec.access.get(MAIL_RESOURCE) {
                Some(at) => {
                    let lifetime = if at.obtained_at > 0 {
                        at.expires_at - at.obtained_at
                    } else {
                        3600
                    };
                    at.expires_at - ahead(account, lifetime)
                }
                None => now,
            };
            match rec.refresh_token {
                Some(_) if rec.refresh_token_at + KEEP_ALIVE < refresh => {
                    (rec.refresh_token_at + KEEP_ALIVE, Due::KeepAlive)
                }
                Some(_) => (refresh, Due::Refresh),
                None if account.has_refresh_tokens() => return None,
                None => (refresh, Due::Refresh),
            }
        }
    };
    let (mut at, kind) = due;
    if failures > 0 {
        at = at.max(last_failure + backoff(failures));
    }
    Some((at, kind))
}

/// Seconds to wait after `failures` failures in a row: 60 s, doubling, at most
/// [`MAX_BACKOFF`].
pub fn backoff(failures: u32) -> i64 {
    (60i64 << failures.saturating_sub(1).min(10)).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailoauth::config::Config;
    use mailoauth::store::AccessToken;

    fn account(flow: &str) -> Account {
        let c = Config::parse(
            &format!("[accounts.a]\nprovider = \"custom\"\nuser = \"u@x\"\nclient_id = \"c\"\nscopes = [\"s\"]\nauthorize_url = \"https://x/a\"\ntoken_url = \"https://x/t\"\nflow = \"{flow}\"\nclient_secret = \"s\"\n"),
            std::path::Path::new("/c"),
        )
        .unwrap();
        mailoauth::providers::resolve(&c, "a").unwrap()
    }

    fn rec(obtained: i64, expires: i64, rt_at: Option<i64>) -> TokenRecord {
        let mut r = TokenRecord {
            version: 1,
            refresh_token: rt_at.map(|_| "rt".into()),
            login_at: 0,
            refresh_token_at: rt_at.unwrap_or(0),
            user: None,
            access: Default::default(),
        };
        r.access.insert(
            MAIL_RESOURCE.into(),
            AccessToken {
                token: "t".into(),
                expires_at: expires,
                obtained_at: obtained,
                scope: None,
            },
        );
        r
    }

    #[test]
    fn refreshes_ahead_of_min_validity() {
        let a = account("auth-code");
        let r = rec(1000, 4600, Some(1000));
        assert_eq!(
            next(&a, Some(&r), false, 0, 0, 1000),
            Some((4600 - 360, Due::Refresh))
        );
    }

    #[test]
    fn short_tokens_refresh_at_half_life() {
        let a = account("auth-code");
        let r = rec(1000, 1060, Some(1000));
        assert_eq!(
            next(&a, Some(&r), false, 0, 0, 1000),
            Some((1030, Due::Refresh))
        );
    }

    #[test]
    fn weekly_keep_alive_and_login_required() {
        let a = account("auth-code");
        // A long-lived access token: the keep-alive comes first.
        let r = rec(0, 30 * 24 * 3600, Some(0));
        assert_eq!(
            next(&a, Some(&r), false, 0, 0, 10),
            Some((KEEP_ALIVE, Due::KeepAlive))
        );
        assert_eq!(next(&a, Some(&r), true, 0, 0, 10), None);
        assert_eq!(next(&a, None, false, 0, 0, 10), None);
    }

    #[test]
    fn app_only_accounts_get_a_token_without_login_and_back_off() {
        let a = account("client-credentials");
        assert_eq!(next(&a, None, false, 0, 0, 50), Some((50, Due::Refresh)));
        assert_eq!(
            next(&a, None, false, 3, 100, 100),
            Some((340, Due::Refresh))
        );
        assert_eq!(
            next(&a, None, false, 30, 100, 100),
            Some((100 + MAX_BACKOFF, Due::Refresh))
        );
    }
}
