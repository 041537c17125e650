//! `/metrics`: the node's counters in the Prometheus text format.
//!
//! Owns: the counters (tokens served by where they came from, refreshes and
//! webhook deliveries by outcome, background worker rounds), the token request latency histogram, the
//! gauges (mailboxes by state, pending webhook deliveries, live nodes) and
//! their exposition. Counters are plain atomics written on the hot
//! path with one relaxed add each (no lock, no allocation); the exposition is
//! hand-written (a dozen lines of format, not worth a dependency). The state
//! gauge is read from the database at scrape time, at most once per
//! [`STATE_CACHE`] whatever the scrape rate, so scrapers cannot hammer the
//! database.
//!
//! Who may read it: a request with an `admin` API key, or one without a key
//! from a loopback peer when the service is *not* behind a reverse proxy (a
//! proxy on the same host would make every outside request look local, so
//! with `behind_proxy` set a key is always needed). The numbers hold no secret,
//! but mailbox counts and refresh failures are an organisation's business.
//!
//! Refresh outcomes (of requests and of the background refresher alike) are
//! counted by the broker's event port ([`crate::ports::SqlEvents`]), which the
//! token service builds per mailbox without the [`App`]: they go to one
//! process-wide [`REFRESHES`]
//! instead of a field, which is the same thing for a process that serves one
//! `App`. Must not: label anything with a mailbox, a user or a key (unbounded
//! series, and personal data), or take a lock on the token path.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};

use mailoauth::broker::ports::Event;

use crate::api::App;

/// How long one reading of the mailbox states serves scrapes.
pub const STATE_CACHE: Duration = Duration::from_secs(5);

/// Upper bounds of the latency buckets, in seconds: a memory hit is well under
/// a millisecond, a refresh at a slow provider may take the full 60 s timeout.
pub const LATENCY_BUCKETS: [f64; 18] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// The states a mailbox row can be in, always exported (a series that
/// disappears at zero breaks alerts and rates).
const STATES: [&str; 4] = ["connecting", "ok", "degraded", "login_required"];

/// What a scrape reads from the database (at most once per [`STATE_CACHE`]).
#[derive(Clone, Default)]
pub struct Reading {
    /// Mailboxes per state.
    pub states: Vec<(String, i64)>,
    /// Webhook deliveries not yet made (and not given up).
    pub webhooks_pending: i64,
}

/// Webhook delivery outcomes, in the order of [`Deliveries`].
const DELIVERY_OUTCOMES: [&str; 3] = ["delivered", "retrying", "given_up"];

/// How a webhook delivery attempt ended.
#[derive(Debug, Clone, Copy)]
pub enum Delivery {
    /// The receiver answered 2xx.
    Delivered,
    /// It failed; another attempt follows.
    Retrying,
    /// It failed for the last time.
    GivenUp,
}

/// Webhook delivery attempts of this process by outcome (a static for the
/// reason [`REFRESHES`] is one: the deliverer runs without the [`App`]).
pub struct Deliveries([AtomicU64; 3]);

/// The process's webhook delivery counters.
pub static DELIVERIES: Deliveries = Deliveries([const { AtomicU64::new(0) }; 3]);

impl Deliveries {
    /// Count one attempt.
    pub fn record(&self, d: Delivery) {
        self.0[d as usize].fetch_add(1, Relaxed);
    }
}

/// Outbox send attempts of this process by outcome: [`Delivery::Delivered`]
/// is sent, [`Delivery::GivenUp`] failed (the same three ends as a webhook's).
pub static SENDS: Deliveries = Deliveries([const { AtomicU64::new(0) }; 3]);

/// Send outcomes, in the order of [`SENDS`].
const SEND_OUTCOMES: [&str; 3] = ["sent", "retrying", "failed"];

/// What the watchers did, in the order of [`Watched`].
const WATCH_KINDS: [&str; 8] = [
    "lease_beat",
    "message",
    "idle_renewal",
    "connect",
    "token_expired",
    "throttled",
    "failure",
    "no_folder",
];

/// One thing a watcher did.
#[derive(Debug, Clone, Copy)]
pub enum Watched {
    /// The node renewed its watcher leases (one statement per beat).
    LeaseBeat,
    /// A new message was reported.
    Message,
    /// An IDLE was re-issued (an idle watcher's only wake-up).
    IdleRenewal,
    /// A folder connection logged in.
    Connect,
    /// The server ended a session because the token ran out.
    TokenExpired,
    /// The server asked to be left alone.
    Throttled,
    /// A session failed (network, protocol, login).
    Failure,
    /// A watched folder is not on the server (the connector's `watch` to fix).
    NoFolder,
}

/// The watchers' counters (a static: they run on their own threads).
pub struct WatchCounts([AtomicU64; 8], std::sync::atomic::AtomicI64);

/// The process's watcher counters and the gauge of open folder connections.
pub static WATCH: WatchCounts = WatchCounts(
    [const { AtomicU64::new(0) }; 8],
    std::sync::atomic::AtomicI64::new(0),
);

impl WatchCounts {
    /// Count one.
    pub fn record(&self, w: Watched) {
        self.0[w as usize].fetch_add(1, Relaxed);
    }

    /// A folder connection opened (`1`) or ended (`-1`).
    pub fn open(&self, delta: i64) {
        self.1.fetch_add(delta, Relaxed);
    }

    /// How many of `w` so far.
    pub fn count(&self, w: Watched) -> u64 {
        self.0[w as usize].load(Relaxed)
    }
}

/// The background workers, in the order of [`Worker`].
const WORKERS: [&str; 4] = ["heartbeat", "refresher", "sender", "deliverer"];

/// A background worker of the node.
#[derive(Debug, Clone, Copy)]
pub enum Worker {
    /// The cluster heartbeat (every 2 s, the one periodic wake-up).
    Heartbeat,
    /// The token refresher.
    Refresher,
    /// The outbox sender.
    Sender,
    /// The webhook deliverer.
    Deliverer,
}

/// How often each background worker woke and read the database for due
/// work: an idle node's workers sleep, so only the heartbeat's count grows.
pub struct Rounds([AtomicU64; 4]);

/// The process's worker round counters (a static: the deliverer runs
/// without the [`App`]).
pub static ROUNDS: Rounds = Rounds([const { AtomicU64::new(0) }; 4]);

impl Rounds {
    /// Count one round of `w`.
    pub fn record(&self, w: Worker) {
        self.0[w as usize].fetch_add(1, Relaxed);
    }
}

/// Refresh outcomes, in the order of [`Refreshes`].
const OUTCOMES: [&str; 4] = ["ok", "degraded", "login_required", "failed"];

/// Where a served token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// The node's memory: no I/O at all.
    Memory,
    /// Through the broker: the database, and the provider when it was low.
    Refresh,
}

/// Refresh outcomes of this process (see the module comment for why a static).
pub struct Refreshes([AtomicU64; 4]);

/// The process's refresh outcome counters.
pub static REFRESHES: Refreshes = Refreshes([const { AtomicU64::new(0) }; 4]);

impl Refreshes {
    /// Count one broker event that ends a refresh (a first login is not one).
    pub fn record(&self, event: &Event<'_>) {
        let i = match event {
            Event::LoggedIn => return,
            Event::Refreshed => 0,
            Event::RefreshFailed { .. } => 1,
            Event::LoginRequired { .. } => 2,
            Event::Failed { .. } => 3,
        };
        self.0[i].fetch_add(1, Relaxed);
    }
}

/// The node's counters, one per [`App`].
pub struct Metrics {
    from_memory: AtomicU64,
    from_refresh: AtomicU64,
    /// Per bucket (not cumulative; summed at exposition), then +Inf.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_micros: AtomicU64,
    /// The last reading of the states: when, and (state, count) pairs.
    states: tokio::sync::Mutex<Option<(Instant, Reading)>>,
    /// Whether a key-less loopback scrape is allowed (no reverse proxy).
    local_without_key: bool,
    /// Scrapes refused, so a misconfigured scraper is visible in the log once.
    refused_logged: Mutex<bool>,
}

impl Metrics {
    /// Counters at zero; `behind_proxy` says whether key-less loopback
    /// scrapes must be refused.
    pub fn new(behind_proxy: bool) -> Metrics {
        Metrics {
            from_memory: AtomicU64::new(0),
            from_refresh: AtomicU64::new(0),
            buckets: [const { AtomicU64::new(0) }; LATENCY_BUCKETS.len() + 1],
            latency_micros: AtomicU64::new(0),
            states: tokio::sync::Mutex::new(None),
            local_without_key: !behind_proxy,
            refused_logged: Mutex::new(false),
        }
    }

    /// One token handed out, from `from`, `took` after the request arrived.
    pub fn token_served(&self, from: TokenSource, took: Duration) {
        match from {
            TokenSource::Memory => &self.from_memory,
            TokenSource::Refresh => &self.from_refresh,
        }
        .fetch_add(1, Relaxed);
        let secs = took.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.latency_micros
            .fetch_add(took.as_micros().min(u64::MAX as u128) as u64, Relaxed);
    }

    /// The exposition, with the mailbox states from `read` (called at most once
    /// per [`STATE_CACHE`]; on failure the last reading is shown again, and none
    /// at all before the first success).
    async fn render<F, Fut>(&self, nodes: i64, read: F) -> String
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Reading, mailoauth::Error>>,
    {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP mailoauth_tokens_served_total Access tokens handed out, by where they came from \
             (memory: no I/O; refresh: through the broker, the database and the provider when low).\n\
             # TYPE mailoauth_tokens_served_total counter\n\
             mailoauth_tokens_served_total{{from=\"memory\"}} {}\n\
             mailoauth_tokens_served_total{{from=\"refresh\"}} {}",
            self.from_memory.load(Relaxed),
            self.from_refresh.load(Relaxed)
        );
        by_outcome(
            &mut out,
            "mailoauth_refreshes_total",
            "Token refreshes by outcome (degraded: transient failure, a still-valid token served).",
            &OUTCOMES,
            &REFRESHES.0,
        );
        let _ = writeln!(
            out,
            "# HELP mailoauth_token_request_duration_seconds Time from a token request's arrival to its \
             token, for requests that got one.\n# TYPE mailoauth_token_request_duration_seconds histogram"
        );
        let mut cumulative = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            cumulative += n.load(Relaxed);
            let le = LATENCY_BUCKETS
                .get(i)
                .map_or("+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(
                out,
                "mailoauth_token_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "mailoauth_token_request_duration_seconds_sum {}\n\
             mailoauth_token_request_duration_seconds_count {cumulative}",
            self.latency_micros.load(Relaxed) as f64 / 1e6
        );
        by_outcome(
            &mut out,
            "mailoauth_webhook_deliveries_total",
            "Webhook delivery attempts of this node by outcome.",
            &DELIVERY_OUTCOMES,
            &DELIVERIES.0,
        );
        by_outcome(
            &mut out,
            "mailoauth_send_attempts_total",
            "Outbox send attempts of this node by outcome.",
            &SEND_OUTCOMES,
            &SENDS.0,
        );
        by_outcome(
            &mut out,
            "mailoauth_watch_events_total",
            "What this node's watchers did: messages reported, IDLE renewals, logins, ends.",
            &WATCH_KINDS,
            &WATCH.0,
        );
        let name = "mailoauth_background_rounds_total";
        let _ = writeln!(
            out,
            "# HELP {name} Times each background worker woke to read the database for due work \
             (an idle node: the heartbeat alone).\n# TYPE {name} counter"
        );
        for (worker, n) in WORKERS.iter().zip(&ROUNDS.0) {
            let _ = writeln!(out, "{name}{{worker=\"{worker}\"}} {}", n.load(Relaxed));
        }
        let _ = writeln!(
            out,
            "# HELP mailoauth_watch_connections Folder connections this node's watchers hold open.\n\
             # TYPE mailoauth_watch_connections gauge\nmailoauth_watch_connections {}",
            WATCH.1.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP mailoauth_cluster_nodes Live nodes as this node counts them (shared limits are divided by it).\n\
             # TYPE mailoauth_cluster_nodes gauge\nmailoauth_cluster_nodes {nodes}"
        );
        let reading = {
            // One reader at a time: concurrent scrapes wait for its answer.
            let mut cached = self.states.lock().await;
            let stale = cached
                .as_ref()
                .is_none_or(|(at, _)| at.elapsed() >= STATE_CACHE);
            if stale {
                match read().await {
                    Ok(v) => *cached = Some((Instant::now(), v)),
                    Err(e) => {
                        log::warn!("metrics: mailbox states not read: {e}");
                        // Try again at the next scrape after the cache time, not at once.
                        if let Some((at, _)) = cached.as_mut() {
                            *at = Instant::now();
                        }
                    }
                }
            }
            cached.as_ref().map(|(_, v)| v.clone())
        };
        if let Some(Reading {
            states,
            webhooks_pending,
        }) = reading
        {
            let _ = writeln!(
                out,
                "# HELP mailoauth_webhooks_pending Webhook deliveries not yet made (all nodes; read at \
                 most every {} s).\n# TYPE mailoauth_webhooks_pending gauge\nmailoauth_webhooks_pending {webhooks_pending}",
                STATE_CACHE.as_secs()
            );
            let _ = writeln!(
                out,
                "# HELP mailoauth_mailboxes Mailboxes by state (all nodes; read at most every {} s).\n\
                 # TYPE mailoauth_mailboxes gauge",
                STATE_CACHE.as_secs()
            );
            let mut all: Vec<(String, i64)> = STATES.iter().map(|s| ((*s).to_owned(), 0)).collect();
            for (state, n) in states {
                match all.iter_mut().find(|(s, _)| *s == state) {
                    Some(slot) => slot.1 = n,
                    None => all.push((state, n)),
                }
            }
            for (state, n) in all {
                let _ = writeln!(
                    out,
                    "mailoauth_mailboxes{{state=\"{}\"}} {n}",
                    label(&state)
                );
            }
        }
        out
    }
}

/// A label value as the text format wants it.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `GET /metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    security(("api_key" = ["admin"]), ()),
    description = "Prometheus text format. Needs an `admin` key, except from a loopback peer of a \
        service that is not behind a reverse proxy.",
    responses(
        (status = 200, description = "The counters", body = String, content_type = "text/plain; version=0.0.4"),
        (status = 401, description = "No key from a non-local peer, or an unknown key", body = String, content_type = "text/plain"),
        (status = 403, description = "The key lacks the `admin` scope", body = String, content_type = "text/plain"),
    )
)]
pub async fn metrics(State(app): State<Arc<App>>, parts: Parts) -> Response {
    if let Err(refused) = may_read(&app, &parts).await {
        return refused;
    }
    let db = app.db.clone();
    let text = app
        .metrics
        .render(app.cluster.nodes(), || async move {
            Ok(Reading {
                states: db.mailbox_states().await?,
                webhooks_pending: db.pending_events(crate::events::MAX_ATTEMPTS).await?,
            })
        })
        .await;
    let mut r = text.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn may_read(app: &App, parts: &Parts) -> Result<(), Response> {
    let refuse = |status: StatusCode, why: &str| {
        let mut r = (status, format!("{why}\n")).into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    };
    let bearer = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.len() <= 256);
    match bearer {
        Some(secret) => match app.keys.check(secret).await {
            Some(who) if who.has("admin") => Ok(()),
            Some(_) => Err(refuse(
                StatusCode::FORBIDDEN,
                "this API key lacks the `admin` scope that /metrics needs",
            )),
            None => Err(refuse(
                StatusCode::UNAUTHORIZED,
                "unknown or revoked API key",
            )),
        },
        None => {
            let local = parts
                .extensions
                .get::<crate::edge::Client>()
                .is_some_and(|c| c.addr.is_loopback());
            if local && app.metrics.local_without_key {
                return Ok(());
            }
            let mut logged = app.metrics.refused_logged.lock().unwrap();
            if !*logged {
                *logged = true;
                log::info!(
                    "metrics: a scrape without an API key was refused (only loopback peers of a service \
                     not behind a proxy may scrape without one)"
                );
            }
            Err(refuse(
                StatusCode::UNAUTHORIZED,
                "/metrics needs `Authorization: Bearer <key>` with the `admin` scope \
                 (loopback scrapes need none unless the service is behind a proxy)",
            ))
        }
    }
}

/// A counter family labelled by `outcome`, in the text exposition format.
fn by_outcome(out: &mut String, name: &str, help: &str, outcomes: &[&str], counts: &[AtomicU64]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (outcome, n) in outcomes.iter().zip(counts) {
        let _ = writeln!(out, "{name}{{outcome=\"{outcome}\"}} {}", n.load(Relaxed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_exposition_counts_and_caches_the_state_reading() {
        let m = Metrics::new(false);
        m.token_served(TokenSource::Memory, Duration::from_micros(50));
        m.token_served(TokenSource::Refresh, Duration::from_millis(700));
        let reads = std::sync::atomic::AtomicU32::new(0);
        let read = || async {
            reads.fetch_add(1, Relaxed);
            Ok(Reading {
                states: vec![("ok".to_owned(), 3), ("odd\"state".to_owned(), 1)],
                webhooks_pending: 7,
            })
        };
        DELIVERIES.record(Delivery::GivenUp);
        let text = m.render(2, read).await;
        assert!(text.contains("mailoauth_webhooks_pending 7"));
        assert!(text.contains("mailoauth_cluster_nodes 2"));
        assert!(!text.contains("mailoauth_webhook_deliveries_total{outcome=\"given_up\"} 0"));
        assert!(text.contains("mailoauth_tokens_served_total{from=\"memory\"} 1"));
        assert!(text.contains("mailoauth_tokens_served_total{from=\"refresh\"} 1"));
        assert!(text.contains("mailoauth_token_request_duration_seconds_bucket{le=\"0.0001\"} 1"));
        assert!(text.contains("mailoauth_token_request_duration_seconds_bucket{le=\"0.5\"} 1"));
        assert!(text.contains("mailoauth_token_request_duration_seconds_bucket{le=\"1\"} 2"));
        assert!(text.contains("mailoauth_token_request_duration_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(text.contains("mailoauth_token_request_duration_seconds_count 2"));
        assert!(text.contains("mailoauth_mailboxes{state=\"ok\"} 3"));
        assert!(text.contains("mailoauth_mailboxes{state=\"degraded\"} 0"));
        assert!(text.contains("mailoauth_mailboxes{state=\"odd\\\"state\"} 1"));
        m.render(2, read).await;
        assert_eq!(
            reads.load(Relaxed),
            1,
            "the second scrape is served from the cache"
        );
    }
}
