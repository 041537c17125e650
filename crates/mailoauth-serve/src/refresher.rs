//! The background refresher: every mailbox's tokens renewed ahead of expiry
//! and at least every `keep_alive_days` (refresh tokens die of disuse), so a
//! request finds a fresh token in memory and an idle mailbox stays connected.
//!
//! Owns: the schedule (`next_refresh` of each row: the earliest of "a token is
//! `refresh_ahead` from expiry" and "the keep-alive is due"; a backoff after
//! failures), sharing it between nodes (a node claims a due mailbox by
//! compare-and-swap on `next_refresh`; the claim runs out if the node dies,
//! so its share moves on), and pacing: one token bucket per provider (token
//! endpoint host) per node at its share of `refresh_rate` (divided by the
//! live nodes, `cluster`), so ten thousand mailboxes due at once reach the
//! provider at `refresh_rate` per second across the cluster, never in a
//! stampede. The refresh
//! itself is the core broker's, under the row's lease. Must not: refresh a
//! mailbox that waits for its owner (`login_required`), or hold a database
//! transaction across the provider's request.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mailoauth::Error;
use mailoauth::providers::{Account, MAIL_RESOURCE};
use mailoauth::store::{AccessToken, TokenRecord};

use crate::api::App;
use crate::db::{Mailbox, Wakes};
use crate::settings::Settings;

/// How long a claimed mailbox is left to its node (longer than a refresh with
/// its retries and lease wait).
const CLAIM: i64 = 120;
/// Refreshes in flight at once per node (each holds a blocking thread while
/// the provider answers).
const PARALLEL: usize = 32;
/// Due mailboxes read per round.
const BATCH: i64 = 500;

/// Pacing of one provider: starts evenly spaced at `rate` per second, and
/// never more than `rate` starts within any [`WINDOW`] (a sliding window over
/// the actual start times, so a late wake-up cannot bunch two requests into
/// one second). The window is a little over a second so that the provider,
/// counting by its own clock with a few milliseconds of jitter, never sees
/// more than `rate` in a second either.
struct Bucket {
    rate: f64,
    next: Instant,
    recent: VecDeque<Instant>,
}

/// See [`Bucket`].
const WINDOW: Duration = Duration::from_millis(1025);

impl Bucket {
    fn new(rate: f64) -> Bucket {
        Bucket {
            rate,
            next: Instant::now(),
            recent: VecDeque::new(),
        }
    }

    /// Wait for this bucket's next slot at `rate` per second (this node's
    /// share of the cluster's rate, which changes as nodes come and go).
    async fn take(bucket: &Mutex<Bucket>, rate: impl Fn() -> f64) {
        loop {
            let at = {
                let mut b = bucket.lock().unwrap();
                b.rate = rate();
                let now = Instant::now();
                while b
                    .recent
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= WINDOW)
                {
                    b.recent.pop_front();
                }
                let mut at = b.next.max(now);
                // Whole starts per window, rounded down: shares of 10/s over
                // three nodes (3.3 each) must not add up to 12.
                if b.recent.len() >= (b.rate.floor() as usize).max(1) {
                    at = at.max(b.recent[0] + WINDOW);
                }
                if at <= now {
                    b.recent.push_back(now);
                    b.next = now + Duration::from_secs_f64(1.0 / b.rate);
                    return;
                }
                at
            };
            tokio::time::sleep_until(at.into()).await;
        }
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
        crate::metrics::ROUNDS.record(crate::metrics::Worker::Refresher);
        let due = match app.db.due_mailboxes(mailoauth::clock::now(), BATCH).await {
            Ok(d) => d,
            Err(e) => {
                log::warn!("refresher: cannot read the schedule: {e}; retrying in 5 s");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        if due.is_empty() {
            // Until a write of this node or the heartbeat says a mailbox is
            // due.
            Wakes::sleep(&app.db.wakes().refresh).await;
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
                .or_insert_with(|| Arc::new(Mutex::new(Bucket::new(app.settings.refresh_rate))))
                .clone();
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let claim = mailoauth::clock::now() + CLAIM;
            match app.db.reschedule(&m.id, m.next_refresh, claim).await {
                Ok(true) => {}
                // Another node claimed it (or refreshed it) since we read it.
                _ => continue,
            }
            let app = app.clone();
            tokio::spawn(async move {
                let id = m.id.clone();
                let next = refresh(&app, m, account, &bucket).await;
                if let Err(e) = app.db.reschedule(&id, claim, next).await {
                    // The claim runs out and the mailbox is due again: nothing lost.
                    log::warn!("refresher: mailbox {id}: schedule not saved: {e}");
                }
                drop(permit);
            });
        }
    }
}

/// What of a record needs the provider now.
struct Plan {
    /// The keep-alive refresh is due (the refresh token wants exercise).
    keep_alive: bool,
    /// Resources whose tokens are within their refresh-ahead time.
    low: Vec<String>,
}

impl Plan {
    fn of(rec: &TokenRecord, settings: &Settings, last: i64, now: i64) -> Plan {
        let low = rec
            .access
            .iter()
            .filter(|(_, at)| {
                settings.keep_fresh && at.expires_at - now <= ahead_of(settings.refresh_ahead, at)
            })
            .map(|(k, _)| k.clone())
            .collect::<Vec<_>>();
        let low = if rec.access.is_empty() && settings.keep_fresh {
            vec![MAIL_RESOURCE.to_owned()]
        } else {
            low
        };
        Plan {
            keep_alive: now - last >= settings.keep_alive && rec.refresh_token.is_some(),
            low,
        }
    }
}

/// Look at `m` and refresh what is due — pacing on `bucket` only when the
/// provider will be asked; when to look at it next.
async fn refresh(app: &App, m: Mailbox, account: Account, bucket: &Mutex<Bucket>) -> i64 {
    let settings = app.tokens.settings();
    let (ahead, keep_alive) = (settings.refresh_ahead, settings.keep_alive);
    let account = Arc::new(account);
    let broker = app.tokens.broker(&m, (*account).clone());
    let last = m.refreshed_at.unwrap_or(m.created_at);
    let done = async {
        // Reading the record asks nobody: a mailbox with nothing due costs the
        // provider nothing and takes no slot of its bucket.
        let (broker, rec) = tokio::task::spawn_blocking(move || {
            let rec = broker.record();
            (broker, rec)
        })
        .await
        .map_err(|e| Error::Flow(format!("refresh task failed: {e}")))?;
        let Some(rec) = rec? else {
            return Ok(Vec::new());
        };
        let plan = Plan::of(&rec, settings, last, mailoauth::clock::now());
        if !plan.keep_alive && plan.low.is_empty() {
            return Ok(rec.access.into_iter().collect());
        }
        Bucket::take(bucket, || app.cluster.share(settings.refresh_rate)).await;
        tokio::task::spawn_blocking(move || -> Result<Vec<(String, AccessToken)>, Error> {
            let resource = |key: &str| (key != MAIL_RESOURCE).then_some(key.to_owned());
            if plan.keep_alive {
                // One refresh with the refresh token renews its life.
                let key = plan.low.first().map_or(MAIL_RESOURCE, String::as_str);
                broker.renew(resource(key).as_deref(), true)?;
            }
            for key in &plan.low {
                if let Some(at) = rec.access.get(key) {
                    broker.refresh_ahead(resource(key).as_deref(), ahead_of(ahead, at))?;
                } else {
                    broker.token(resource(key).as_deref())?;
                }
            }
            let rec = broker.record()?.unwrap_or(rec);
            Ok(rec.access.into_iter().collect())
        })
        .await
        .map_err(|e| Error::Flow(format!("refresh task failed: {e}")))?
    };
    let done: Result<Vec<(String, AccessToken)>, Error> = done.await;
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
    // Serve what it has from memory on this node.
    for (key, at) in &tokens {
        let resource = (key != MAIL_RESOURCE).then_some(key.as_str());
        if at.is_fresh(account.min_validity, now) {
            app.tokens
                .remember(&m.id, account.clone(), resource, at.clone(), 0);
        }
    }
    let row = app.db.mailbox(&m.id).await.ok().flatten();
    let last = row.as_ref().and_then(|r| r.refreshed_at).unwrap_or(now);
    let failures = row.map_or(0, |r| r.failures);
    let next = next_look(tokens.iter().map(|(_, at)| at), settings, last);
    if next <= now {
        // Still due: the provider failed and a still-valid token was kept.
        return now + retry_in(failures.max(1));
    }
    next
}

/// When to look at a mailbox next: its earliest token's refresh-ahead time
/// (with `keep_fresh`), and the keep-alive after its last refresh at `last`.
pub fn next_look<'a>(
    tokens: impl Iterator<Item = &'a AccessToken>,
    settings: &Settings,
    last: i64,
) -> i64 {
    let mut next = last + settings.keep_alive;
    if settings.keep_fresh {
        for at in tokens {
            next = next.min(at.expires_at - ahead_of(settings.refresh_ahead, at));
        }
    }
    next
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
            let b = Mutex::new(Bucket::new(50.0));
            let t = Instant::now();
            let mut starts = Vec::new();
            for _ in 0..120 {
                Bucket::take(&b, || 50.0).await;
                starts.push(t.elapsed());
            }
            // Never more than 50 starts within any second.
            for (i, s) in starts.iter().enumerate() {
                let within = starts[i..]
                    .iter()
                    .take_while(|x| **x - *s < Duration::from_secs(1))
                    .count();
                assert!(within <= 50, "{within} starts within a second from {s:?}");
            }
            let took = t.elapsed();
            assert!(took >= Duration::from_millis(2050), "{took:?}");
            assert!(took < Duration::from_millis(3500), "{took:?}");
        });
    }

    #[test]
    fn retries_back_off_within_the_refresh_window() {
        assert_eq!(retry_in(1), 30);
        assert_eq!(retry_in(2), 60);
        assert_eq!(retry_in(20), 900);
    }
}
