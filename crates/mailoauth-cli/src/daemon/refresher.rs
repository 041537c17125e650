//! The daemon's refresher: one task per account, each sleeping until its own
//! next deadline and renewing through the broker.
//!
//! Owns: planning and refreshing each account on its own, so that an account
//! whose store or secret command hangs (a pinentry nobody answers, a locked
//! `pass` agent) delays nobody else; backoff after failures, planning failures
//! included; restarting the tasks when a reload changes the accounts. Must not:
//! decide the schedule (that is [`super::schedule`]) or refresh by itself (the
//! broker does, under the account's lock).

use std::sync::Arc;

use tokio::sync::watch;

use mailoauth::clock::now;
use mailoauth::error::Result;
use mailoauth::providers::MAIL_RESOURCE;
use mailoauth::store::AccessToken;
use mailoauth::{Client, status};

use super::{Shared, schedule, timer};

/// Run one refresher per configured account; start them afresh after each reload.
pub(super) async fn supervise(shared: Arc<Shared>) {
    loop {
        // Registered before the tasks start, so a reload meanwhile is not missed.
        let reloaded = shared.reloaded.notified();
        let client = shared.client.lock().unwrap().clone();
        let tasks: Vec<_> = client
            .config()
            .accounts
            .keys()
            .map(|name| tokio::spawn(account(shared.clone(), name.clone())))
            .collect();
        reloaded.await;
        // A refresh already running on the blocking pool finishes under its
        // lock; only the waiting is abandoned.
        for t in tasks {
            t.abort();
        }
    }
}

/// What one planning round found for an account.
enum Plan {
    /// Renew now (or at this unix time).
    At(i64, schedule::Due),
    /// Nothing to do until something changes (login required, no token yet).
    Wait,
}

/// Plan, sleep, refresh, repeat — for `name` alone.
async fn account(shared: Arc<Shared>, name: String) {
    let timer = match timer::WallTimer::new() {
        Ok(t) => t,
        Err(e) => {
            log::error!("`{name}`: cannot create a refresh timer ({e}); not refreshing it");
            return;
        }
    };
    let mut wake = shared.reschedule.subscribe();
    loop {
        wake.borrow_and_update();
        let client = shared.client.lock().unwrap().clone();
        let failures = shared.failures.lock().unwrap().get(&name).copied();
        let n = name.clone();
        // Reading a store may block (keyring over D-Bus, a passphrase command).
        let planned = tokio::task::spawn_blocking(move || plan(&client, &n, failures)).await;
        let at = match planned {
            Ok(Ok(Plan::At(at, due))) if at <= now() => {
                refresh(&shared, &name, due).await;
                continue;
            }
            Ok(Ok(Plan::At(at, _))) => Some(at),
            Ok(Ok(Plan::Wait)) => None,
            Ok(Err(e)) => {
                // Unreadable store, failed passphrase command: try again after
                // the backoff, not at once (that would spin on a broken account).
                log::warn!("`{name}`: {e}");
                let (count, _) = failed(&shared, &name);
                Some(now() + schedule::backoff(count))
            }
            Err(e) => {
                log::error!("`{name}`: planning task failed: {e}");
                return;
            }
        };
        sleep(&timer, &mut wake, &name, at).await;
    }
}

/// Sleep until `at` (or until woken; `None`: only until woken).
async fn sleep(
    timer: &timer::WallTimer,
    wake: &mut watch::Receiver<u64>,
    name: &str,
    at: Option<i64>,
) {
    match at {
        Some(at) => {
            log::info!("`{name}`: next refresh in {} s", at - now());
            tokio::select! {
                w = timer.sleep_until(at) => if let Ok(timer::Wake::ClockChanged) = w {
                    log::info!("wall clock changed (resume or clock set): rechecking `{name}`");
                },
                _ = wake.changed() => {}
            }
        }
        None => {
            let _ = wake.changed().await;
        }
    }
}

/// Count a failure of `name` now; returns its (count, time).
fn failed(shared: &Shared, name: &str) -> (u32, i64) {
    let mut f = shared.failures.lock().unwrap();
    let entry = f.entry(name.to_owned()).or_insert((0, 0));
    *entry = (entry.0 + 1, now());
    *entry
}

/// Renew `name`'s mail token as `due` says, and record how it went.
async fn refresh(shared: &Arc<Shared>, name: &str, due: schedule::Due) {
    let client = shared.client.lock().unwrap().clone();
    let n = name.to_owned();
    let result = tokio::task::spawn_blocking(move || renew(&client, &n, due)).await;
    match result {
        Ok(Ok((_, true))) => {
            log::warn!("`{name}`: the new token is due for refresh at once; backing off");
            failed(shared, name);
        }
        Ok(Ok((at, false))) => {
            shared.failures.lock().unwrap().remove(name);
            if let Some(at) = at {
                shared
                    .cache
                    .lock()
                    .unwrap()
                    .insert((name.to_owned(), MAIL_RESOURCE.to_owned()), at);
            }
            log::info!("refreshed `{name}`");
        }
        Ok(Err(e)) => {
            // The broker recorded it (and ran notify_command once if a login is needed).
            log::warn!("refresh of `{name}` failed: {e}");
            failed(shared, name);
        }
        Err(e) => log::error!("refresh task failed: {e}"),
    }
}

/// The blocking part of a refresh: the new mail token, and whether the server's
/// fresh token is already due again (which would make us spin).
fn renew(client: &Client, name: &str, due: schedule::Due) -> Result<(Option<AccessToken>, bool)> {
    let b = client.broker(name)?;
    let current = b
        .record()?
        .and_then(|r| r.access.get(MAIL_RESOURCE).cloned());
    match due {
        schedule::Due::KeepAlive => b.renew(None, true)?,
        schedule::Due::Refresh => {
            let ahead = current
                .as_ref()
                .map(|a| schedule::ahead(b.account(), a.expires_at - a.obtained_at.max(1)))
                .unwrap_or(0);
            b.refresh_ahead(None, ahead)?
        }
    };
    let rec = b.record()?;
    let spin = schedule::next(b.account(), rec.as_ref(), false, 0, 0, now())
        .is_some_and(|(at, _)| at <= now());
    Ok((rec.and_then(|r| r.access.get(MAIL_RESOURCE).cloned()), spin))
}

/// `name`'s next deadline, given its failures so far.
fn plan(client: &Client, name: &str, failures: Option<(u32, i64)>) -> Result<Plan> {
    let b = client.broker(name)?;
    let rec = b.record()?;
    let login_required = status::load(b.account()).login_required.is_some();
    let (n, last) = failures.unwrap_or((0, 0));
    Ok(
        match schedule::next(b.account(), rec.as_ref(), login_required, n, last, now()) {
            Some((at, due)) => Plan::At(at, due),
            None => Plan::Wait,
        },
    )
}
