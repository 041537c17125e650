//! The background refresher: every mailbox's tokens renewed ahead of expiry
//! and at least every `keep_alive_days` (refresh tokens die of disuse), so a
//! request finds a fresh token in memory and an idle mailbox stays connected.
//!
//! Owns: the schedule (`next_refresh` of each row: the earliest of "a token is
//! `refresh_ahead` from expiry" and "the keep-alive is due"; a backoff after
//! failures), sharing it between nodes (a node claims a due mailbox by
//! compare-and-swap on `next_refresh`; the claim runs out if the node dies,
//! so its share moves on), and pacing: one token bucket per provider (token
//! endpoint host) per node, so ten thousand mailboxes due at once reach the
//! provider at `refresh_rate` per second, never in a stampede. The refresh
//! itself is the core broker's, under the row's lease. Must not: refresh a
//! mailbox that waits for its owner (`login_required`), or hold a database
//! transaction across the provider's request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mailoauth::Error;
use mailoauth::providers::{Account, MAIL_RESOURCE};
use mailoauth::store::AccessToken;

use crate::api::App;
use crate::db::Mailbox;

/// How long a claimed mailbox is left to its node (longer than a refresh with
/// its retries and lease wait).
const CLAIM: i64 = 120;
/// Refreshes in flight at once per node (each holds a blocking thread while
/// the provider answers).
const PARALLEL: usize = 32;
/// Due mailboxes read per round.
const BATCH: i64 = 500;

/// A token bucket of capacity one: requests at most `rate` per second, evenly
/// spaced (a larger capacity would let a burst double the rate in a second).
struct Bucket {
    rate: f64,
    next: Instant,
}

impl Bucket {
    /// Wait for this bucket's next slot.
    async fn take(bucket: &Mutex<Bucket>) {
        let at = {
            let mut b = bucket.lock().unwrap();
            let now = Instant::now();
            let at = b.next.max(now);
            b.next = at + Duration::from_secs_f64(1.0 / b.rate);
            at
        };
        tokio::time::sleep_until(at.into()).await;
    }

    /// Give back a slot that was not used (the claim was lost).
    fn give_back(bucket: &Mutex<Bucket>) {
        let mut b = bucket.lock().unwrap();
        let step = Duration::from_secs_f64(1.0 / b.rate);
        b.next = b
            .next
            .checked_sub(step)
            .unwrap_or(b.next)
            .max(Instant::now());
    }
}

/// The pacing key of an account: its token endpoint's host.
fn provider_of(account: &Account) -> String {
    url::Url::parse(&account.token_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| account.token_url.clone())
}

/// Run until the process ends.
pub async fn run(app: Arc<App>) {
    let mut buckets: HashMap<String, Arc<Mutex<Bucket>>> = HashMap::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
    loop {
        let due = match app.db.due_mailboxes(mailoauth::clock::now(), BATCH).await {
            Ok(d) => d,
            Err(e) => {
                log::warn!("refresher: cannot read the schedule: {e}; retrying in 5 s");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        if due.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        for m in due {
            let account = match app.tokens.account(&m) {
                Ok(a) => a,
                Err(e) => {
                    // Its connector left the config: look again in an hour.
                    log::warn!("refresher: mailbox {}: {e}", m.id);
                    let later = mailoauth::clock::now() + 3600;
                    let _ = app.db.reschedule(&m.id, m.next_refresh, later).await;
                    continue;
                }
            };
            let bucket = buckets
                .entry(provider_of(&account))
                .or_insert_with(|| {
                    Arc::new(Mutex::new(Bucket {
                        rate: app.settings.refresh_rate,
                        next: Instant::now(),
                    }))
                })
                .clone();
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            Bucket::take(&bucket).await;
            let claim = mailoauth::clock::now() + CLAIM;
            match app.db.reschedule(&m.id, m.next_refresh, claim).await {
                Ok(true) => {}
                // Another node claimed it (or refreshed it) since we read it.
                _ => {
                    Bucket::give_back(&bucket);
                    continue;
                }
            }
            let app = app.clone();
            tokio::spawn(async move {
                let id = m.id.clone();
                let next = refresh(&app, m, account).await;
                if let Err(e) = app.db.reschedule(&id, claim, next).await {
                    // The claim runs out and the mailbox is due again: nothing lost.
                    log::warn!("refresher: mailbox {id}: schedule not saved: {e}");
                }
                drop(permit);
            });
        }
    }
}

/// Refresh what is due of `m`; when to look at it next.
async fn refresh(app: &App, m: Mailbox, account: Account) -> i64 {
    let settings = app.tokens.settings();
    let (ahead, keep_alive, keep_fresh) = (
        settings.refresh_ahead,
        settings.keep_alive,
        settings.keep_fresh,
    );
    let account = Arc::new(account);
    let broker = app.tokens.broker(&m, (*account).clone());
    let last = m.refreshed_at.unwrap_or(m.created_at);
    let done = tokio::task::spawn_blocking(move || -> Result<Vec<(String, AccessToken)>, Error> {
        let Some(rec) = broker.record()? else {
            return Ok(Vec::new());
        };
        let now = mailoauth::clock::now();
        let mut keys: Vec<String> = rec.access.keys().cloned().collect();
        if keys.is_empty() {
            keys.push(MAIL_RESOURCE.to_owned());
        }
        // The keep-alive: one refresh with the refresh token renews its life.
        let keep_alive_due = now - last >= keep_alive && rec.refresh_token.is_some();
        for (i, key) in keys.iter().enumerate() {
            let resource = (key != MAIL_RESOURCE).then_some(key.as_str());
            if i == 0 && keep_alive_due {
                broker.renew(resource, true)?;
            } else if keep_fresh && let Some(at) = rec.access.get(key) {
                broker.refresh_ahead(resource, ahead_of(ahead, at))?;
            }
        }
        let rec = broker.record()?.unwrap_or(rec);
        Ok(rec.access.into_iter().collect())
    })
    .await
    .unwrap_or_else(|e| Err(Error::Flow(format!("refresh task failed: {e}"))));
    let now = mailoauth::clock::now();
    let tokens = match done {
        Ok(t) => t,
        Err(Error::LoginRequired { .. }) => return now + keep_alive,
        Err(e) => {
            let failures = app
                .db
                .mailbox(&m.id)
                .await
                .ok()
                .flatten()
                .map_or(1, |r| r.failures.max(1));
            log::warn!("refresher: mailbox {}: {e}", m.id);
            return now + retry_in(failures);
        }
    };
    // Serve what it got from memory on this node.
    let mut next = i64::MAX;
    for (key, at) in tokens {
        if keep_fresh {
            next = next.min(at.expires_at - ahead_of(ahead, &at));
        }
        let resource = (key != MAIL_RESOURCE).then_some(key.as_str());
        if at.is_fresh(account.min_validity, now) {
            app.tokens.remember(&m.id, account.clone(), resource, at, 0);
        }
    }
    let row = app.db.mailbox(&m.id).await.ok().flatten();
    let last = row.as_ref().and_then(|r| r.refreshed_at).unwrap_or(now);
    let failures = row.map_or(0, |r| r.failures);
    if next <= now {
        // Still due: the provider failed and a still-valid token was kept.
        return now + retry_in(failures.max(1));
    }
    next.min(last + keep_alive)
}

/// Seconds before `at` expires that it is renewed: `refresh_ahead`, or half
/// its lifetime for a server issuing tokens shorter than twice that (else
/// every token would be due the moment it arrives).
fn ahead_of(ahead: i64, at: &AccessToken) -> i64 {
    if at.obtained_at > 0 {
        ahead.min((at.expires_at - at.obtained_at) / 2)
    } else {
        ahead
    }
}

/// Seconds until the next attempt after `failures` transient failures in a
/// row: 30 s doubling, at most 15 minutes (within `refresh_ahead`, so a token
/// still gets several chances before it falls under `min_validity`).
fn retry_in(failures: i64) -> i64 {
    (30i64 << (failures - 1).clamp(0, 10)).min(900)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_spaces_requests_at_its_rate() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let b = Mutex::new(Bucket {
                rate: 50.0,
                next: Instant::now(),
            });
            let t = Instant::now();
            for _ in 0..26 {
                Bucket::take(&b).await;
            }
            let took = t.elapsed();
            // 25 gaps of 20 ms.
            assert!(took >= Duration::from_millis(500), "{took:?}");
            assert!(took < Duration::from_millis(900), "{took:?}");
        });
    }

    #[test]
    fn retries_back_off_within_the_refresh_window() {
        assert_eq!(retry_in(1), 30);
        assert_eq!(retry_in(2), 60);
        assert_eq!(retry_in(20), 900);
    }
}
