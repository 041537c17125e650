//! Events to the application: `mailbox.connected`, `mailbox.login_required`,
//! `mailbox.recovered`, delivered to the config's webhook URLs.
//!
//! Owns: which state transitions make which events ([`kinds`]), their JSON
//! bodies and stable ids (the outbox rows are written by `db` in the same
//! transaction as the change), and delivery: HMAC-SHA256 signatures over
//! timestamp and body, retries with backoff, one node per delivery (a claim by
//! compare-and-swap), at least once (a receiver dedupes by the event id), in
//! order per mailbox and URL (the next waits until the one before was
//! delivered or given up).
//! Targets are HTTPS, or plain HTTP on loopback; redirects are not followed;
//! the resolved addresses are checked on every connection (so DNS cannot
//! rebind a public name to an internal address between check and connect):
//! private ranges only when `webhook_private_ranges` allows them, link-local
//! (cloud metadata) never. Must not: let the API choose a target (URLs come
//! from the config only), or put the signing secret in a log or an error.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ring::hmac;
use serde_json::json;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};
use zeroize::Zeroizing;

use crate::db::{Db, EventRow, Mailbox, OutboxEvent, Wakes};
use crate::metrics::{DELIVERIES, Delivery};

/// A delivery that failed this many times is given up (the backoff makes that
/// about a day and a half); its row stays, with the last error, for an admin.
pub const MAX_ATTEMPTS: i64 = 20;
/// One delivery's whole time: connect, TLS, request, answer.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a claimed delivery is left to its node before another may try.
const CLAIM: i64 = 60;
/// Deliveries in flight at once per node.
const PARALLEL: usize = 8;

/// The events a state change makes: `old` → `new`, `signed_in` when the change
/// came from a sign-in (a connect journey or an app-only mailbox's first grant).
pub fn kinds(old: &str, new: &str, signed_in: bool) -> Vec<&'static str> {
    let mut v = Vec::new();
    if signed_in {
        v.push("mailbox.connected");
    }
    if new == "ok" && matches!(old, "degraded" | "login_required") {
        v.push("mailbox.recovered");
    }
    if new == "login_required" && old != "login_required" {
        v.push("mailbox.login_required");
    }
    v
}

/// The outbox side: which URLs an event goes to.
#[derive(Debug, Default, Clone)]
pub struct Outbox {
    /// The configured webhook URLs.
    pub urls: Vec<String>,
}

impl Outbox {
    /// The rows for `kinds` about `m` (now in `state`), one per event and URL,
    /// the event id shared by its URLs.
    pub fn rows(
        &self,
        kinds: &[&str],
        m: &Mailbox,
        state: &str,
        error: Option<&str>,
        now: i64,
    ) -> Vec<OutboxEvent> {
        let mut out = Vec::new();
        for kind in kinds {
            let id = format!("evt_{}", mailoauth::random::token(12));
            let body = json!({
                "id": id,
                "type": kind,
                "created_at": now,
                "mailbox": mailbox_json(m, state),
                "error": error,
            });
            out.extend(self.to_each_url(&id, kind, m, body));
        }
        out
    }

    /// The rows of a mail event (`message.sent`, `message.failed`,
    /// `message.new`): its id is derived from `key` (the message's identity),
    /// so however often and on whichever node the event is made, it has one
    /// id and the outbox keeps one row per URL.
    pub fn mail_event(
        &self,
        kind: &str,
        key: &str,
        m: &Mailbox,
        fields: serde_json::Value,
        now: i64,
    ) -> Vec<OutboxEvent> {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(kind.as_bytes());
        ctx.update(b"\n");
        ctx.update(key.as_bytes());
        let hex: String = ctx.finish().as_ref()[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let id = format!("evt_{hex}");
        let mut body = json!({
            "id": id,
            "type": kind,
            "created_at": now,
            "mailbox": mailbox_json(m, &m.state),
        });
        if let (Some(b), serde_json::Value::Object(f)) = (body.as_object_mut(), fields) {
            b.extend(f);
        }
        self.to_each_url(&id, kind, m, body)
    }

    fn to_each_url(
        &self,
        id: &str,
        kind: &str,
        m: &Mailbox,
        body: serde_json::Value,
    ) -> Vec<OutboxEvent> {
        let body = body.to_string();
        self.urls
            .iter()
            .map(|url| OutboxEvent {
                id: id.to_owned(),
                url: url.clone(),
                kind: kind.to_owned(),
                mailbox: m.id.clone(),
                body: body.clone(),
            })
            .collect()
    }
}

fn mailbox_json(m: &Mailbox, state: &str) -> serde_json::Value {
    json!({
        "id": m.id,
        "email": m.email,
        "connector": m.connector,
        "kind": m.kind,
        "reference": m.reference,
        "state": state,
    })
}

/// Whether a webhook URL may be configured: HTTPS, or HTTP to a loopback host.
pub fn check_url(url: &str) -> Result<(), String> {
    let u = url::Url::parse(url).map_err(|e| format!("`{url}` is not a URL ({e})"))?;
    let loopback = match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Err(format!("`{url}` has no host")),
    };
    match u.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!(
            "`{url}`: webhooks go over HTTPS (plain HTTP only to a loopback address), \
             because they carry mailbox addresses and a signature"
        )),
    }
}

/// Whether a resolved webhook address may be connected to.
pub fn allowed(ip: IpAddr, private_ranges: bool) -> Result<(), String> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    if ip.is_loopback() {
        return Ok(());
    }
    let (link_local, private, special) = match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            (
                a.is_link_local(),
                a.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64),
                a.is_unspecified() || a.is_multicast() || a.is_broadcast() || o[0] == 0,
            )
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            (
                (s[0] & 0xffc0) == 0xfe80,
                (s[0] & 0xfe00) == 0xfc00,
                a.is_unspecified() || a.is_multicast(),
            )
        }
    };
    if link_local || special {
        return Err(format!(
            "{ip} is a link-local or special address (cloud metadata lives there): never a webhook target"
        ));
    }
    if private && !private_ranges {
        return Err(format!(
            "{ip} is in a private address range: set `webhook_private_ranges = true` in [serve] \
             if the receiver is on your internal network"
        ));
    }
    Ok(())
}

/// The resolver for webhook requests: the system's, then [`allowed`] on every
/// address, at connect time.
#[derive(Debug)]
struct Guarded {
    inner: DefaultResolver,
    private_ranges: bool,
}

impl Resolver for Guarded {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let addrs = self.inner.resolve(uri, config, timeout)?;
        for a in addrs.iter() {
            allowed(a.ip(), self.private_ranges).map_err(|why| {
                ureq::Error::Io(io::Error::new(io::ErrorKind::PermissionDenied, why))
            })?;
        }
        Ok(addrs)
    }
}

/// The `Mailoauth-Signature` value: `v1=` and the hex HMAC-SHA256 of
/// `"{timestamp}.{body}"` under the webhook secret.
pub fn signature(secret: &[u8], timestamp: i64, body: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body.as_bytes());
    let tag = ctx.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("v1={hex}")
}

/// Seconds before retry `attempts` (the number of failed attempts so far):
/// 10 s doubling, at most an hour.
pub fn backoff(attempts: i64) -> i64 {
    (10i64 << attempts.clamp(0, 20)).min(3600)
}

/// Delivers the outbox until the process ends.
pub struct Deliverer {
    /// The database.
    pub db: Db,
    /// The configured URLs (rows for URLs removed since are given up).
    pub urls: Vec<String>,
    /// The signing secret.
    pub secret: Arc<Zeroizing<String>>,
    /// Whether private address ranges may be targets.
    pub private_ranges: bool,
}

impl Deliverer {
    /// Send each due delivery it claims; sleep until roused (`db::Wakes`).
    pub async fn run(self) {
        let agent = ureq::Agent::with_parts(
            ureq::Agent::config_builder()
                .timeout_global(Some(TIMEOUT))
                .max_redirects(0)
                .http_status_as_error(false)
                .user_agent(concat!("mailoauth-serve/", env!("CARGO_PKG_VERSION")))
                .build(),
            DefaultConnector::new(),
            Guarded {
                inner: DefaultResolver::default(),
                private_ranges: self.private_ranges,
            },
        );
        let this = Arc::new(self);
        let slots = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
        loop {
            let now = mailoauth::clock::now();
            crate::metrics::ROUNDS.record(crate::metrics::Worker::Deliverer);
            match this.db.due_events(now, MAX_ATTEMPTS, 50).await {
                Ok(due) => {
                    for e in due {
                        let Ok(permit) = slots.clone().acquire_owned().await else {
                            return;
                        };
                        match this.db.claim_event(&e, now + CLAIM).await {
                            Ok(true) => {}
                            _ => continue,
                        }
                        let (this, agent) = (this.clone(), agent.clone());
                        tokio::spawn(async move {
                            this.attempt(agent, e).await;
                            drop(permit);
                            // The mailbox's next event was waiting for this one.
                            this.db.wakes().events.notify_one();
                        });
                    }
                }
                Err(e) => log::warn!("webhooks: cannot read the outbox: {e}"),
            }
            // Until events are written here, a delivery ends, or the
            // heartbeat says one fell due (a retry, a peer's event).
            Wakes::sleep(&this.db.wakes().events).await;
        }
    }

    async fn attempt(&self, agent: ureq::Agent, e: EventRow) {
        let result = if self.urls.contains(&e.url) {
            let (e2, secret) = (e.clone(), self.secret.clone());
            tokio::task::spawn_blocking(move || send(&agent, &e2, secret.as_bytes()))
                .await
                .unwrap_or_else(|e| Err(format!("delivery task failed: {e}")))
        } else {
            Err("the URL is no longer in [serve] webhooks".into())
        };
        let now = mailoauth::clock::now();
        let outcome = match &result {
            Ok(()) => {
                DELIVERIES.record(Delivery::Delivered);
                Ok(())
            }
            Err(why) => {
                let last = e.attempts + 1 >= MAX_ATTEMPTS;
                DELIVERIES.record(if last {
                    Delivery::GivenUp
                } else {
                    Delivery::Retrying
                });
                log::warn!(
                    "webhook {} of event {} ({}) to {}: {why}{}",
                    e.attempts + 1,
                    e.id,
                    e.kind,
                    e.url,
                    if last { "; giving up" } else { "; will retry" }
                );
                Err((why.as_str(), now + backoff(e.attempts)))
            }
        };
        if let Err(err) = self.db.event_attempted(&e, now, outcome).await {
            // The claim runs out and another attempt follows: at least once.
            log::warn!("webhooks: attempt on {} not recorded: {err}", e.id);
        }
    }
}

/// One POST; `Ok` on a 2xx answer.
fn send(agent: &ureq::Agent, e: &EventRow, secret: &[u8]) -> Result<(), String> {
    let ts = mailoauth::clock::now();
    let resp = agent
        .post(&e.url)
        .header("Content-Type", "application/json")
        .header("Mailoauth-Event", &e.kind)
        .header("Mailoauth-Event-Id", &e.id)
        .header("Mailoauth-Timestamp", ts.to_string())
        .header("Mailoauth-Signature", signature(secret, ts, &e.body))
        .send(&e.body)
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else if status.is_redirection() {
        Err(format!("answered {status} (redirects are not followed)"))
    } else {
        Err(format!("answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_make_the_documented_events() {
        assert_eq!(kinds("connecting", "ok", true), ["mailbox.connected"]);
        assert_eq!(
            kinds("login_required", "ok", true),
            ["mailbox.connected", "mailbox.recovered"]
        );
        assert_eq!(kinds("degraded", "ok", false), ["mailbox.recovered"]);
        assert_eq!(
            kinds("ok", "login_required", false),
            ["mailbox.login_required"]
        );
        assert!(kinds("login_required", "login_required", false).is_empty());
        assert!(kinds("ok", "degraded", false).is_empty());
        assert!(kinds("ok", "ok", false).is_empty());
    }

    #[test]
    fn webhook_targets_are_https_or_loopback_and_never_metadata() {
        assert!(check_url("https://hooks.example.com/x").is_ok());
        assert!(check_url("http://127.0.0.1:9000/x").is_ok());
        assert!(check_url("http://localhost/x").is_ok());
        assert!(check_url("http://hooks.example.com/x").is_err());
        assert!(check_url("ftp://hooks.example.com/x").is_err());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(allowed(ip("127.0.0.1"), false).is_ok());
        assert!(allowed(ip("93.184.216.34"), false).is_ok());
        for private in [
            "10.1.2.3",
            "192.168.1.1",
            "172.20.0.1",
            "100.64.0.1",
            "fd00::1",
        ] {
            assert!(allowed(ip(private), false).is_err(), "{private}");
            assert!(allowed(ip(private), true).is_ok(), "{private}");
        }
        for never in [
            "169.254.169.254",
            "fe80::1",
            "0.0.0.0",
            "224.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(allowed(ip(never), true).is_err(), "{never}");
        }
        assert!(allowed(ip("::ffff:10.0.0.1"), false).is_err());
    }

    #[test]
    fn signatures_cover_timestamp_and_body() {
        let s = signature(b"secret", 1700000000, "{}");
        assert!(s.starts_with("v1=") && s.len() == 3 + 64, "{s}");
        assert_ne!(s, signature(b"secret", 1700000001, "{}"));
        assert_ne!(s, signature(b"secret", 1700000000, "{ }"));
        assert_ne!(s, signature(b"other", 1700000000, "{}"));
    }

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        assert_eq!(backoff(0), 10);
        assert_eq!(backoff(1), 20);
        assert_eq!(backoff(3), 80);
        assert_eq!(backoff(30), 3600);
    }
}
