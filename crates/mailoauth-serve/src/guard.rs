//! Clients that keep presenting wrong credentials are turned away for a while.
//!
//! Owns: counting refused credentials (`401` answers: an unknown or revoked
//! API key, a wrong admin sign-in) per client address as [`crate::edge`]
//! establishes it (the forwarded address behind a trusted proxy; an IPv6
//! client by its /64, which one host usually holds whole), and answering
//! `429` with `Retry-After` to a client past [`STRIKES`] within [`WINDOW`],
//! before its key is even looked at. Keys have 256 bits, so this is not what
//! keeps them secret: it keeps a guessing client from filling the log and the
//! key table's lookup budget that honest new keys need. Must not: slow the
//! hot path (a request from a client with no strikes costs one relaxed load
//! when nobody is blocked), or grow without bound.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::App;
use crate::edge::Client;

/// Refused credentials a client may present within [`WINDOW`].
pub const STRIKES: u32 = 60;
/// The counting window, and how long a client past [`STRIKES`] waits.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Clients tracked at most (an attacker with many addresses empties the
/// table rather than growing it).
const MAX_CLIENTS: usize = 10_000;

/// Strikes per client.
#[derive(Default)]
pub struct Guard {
    strikes: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    blocked: Mutex<HashMap<IpAddr, Instant>>,
    /// Entries of `blocked`, read without the lock.
    blocked_count: AtomicUsize,
}

/// The address strikes are counted under.
fn who(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => {
            let mut s = v6.segments();
            s[4..].fill(0);
            IpAddr::V6(s.into())
        }
    }
}

impl Guard {
    /// Seconds `addr` must still wait, if it is blocked.
    pub fn blocked(&self, addr: IpAddr) -> Option<u64> {
        if self.blocked_count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut b = self.blocked.lock().unwrap();
        let now = Instant::now();
        let until = *b.get(&who(addr))?;
        if until <= now {
            b.remove(&who(addr));
            self.blocked_count.store(b.len(), Ordering::Relaxed);
            return None;
        }
        Some((until - now).as_secs().max(1))
    }

    /// Count a refused credential from `addr`; whether it is now blocked.
    pub fn strike(&self, addr: IpAddr) -> bool {
        let key = who(addr);
        let now = Instant::now();
        let n = {
            let mut s = self.strikes.lock().unwrap();
            if s.len() >= MAX_CLIENTS && !s.contains_key(&key) {
                s.retain(|_, (since, _)| now.duration_since(*since) < WINDOW);
                if s.len() >= MAX_CLIENTS {
                    s.clear();
                }
            }
            let e = s.entry(key).or_insert((now, 0));
            if now.duration_since(e.0) >= WINDOW {
                *e = (now, 0);
            }
            e.1 += 1;
            e.1
        };
        if n < STRIKES {
            return false;
        }
        let mut b = self.blocked.lock().unwrap();
        if b.len() >= MAX_CLIENTS {
            b.retain(|_, until| *until > now);
            if b.len() >= MAX_CLIENTS {
                b.clear();
            }
        }
        b.insert(key, now + WINDOW);
        self.blocked_count.store(b.len(), Ordering::Relaxed);
        self.strikes.lock().unwrap().remove(&key);
        true
    }
}

/// The middleware: turn away blocked clients, count the `401`s of the others.
pub async fn layer(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let addr = req.extensions().get::<Client>().map(|c| c.addr);
    let Some(addr) = addr else {
        return next.run(req).await;
    };
    if let Some(wait) = app.guard.blocked(addr) {
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(serde_json::json!({
                "error": "too_many_requests",
                "message": format!(
                    "over {STRIKES} refused credentials from your address within {} s",
                    WINDOW.as_secs()
                ),
                "fix": "check the API key your application sends (`mailoauth-serve keys list`), then try again after Retry-After",
            })),
        )
            .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        return r;
    }
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let r = next.run(req).await;
    if r.status() == StatusCode::UNAUTHORIZED && app.guard.strike(addr) {
        log::warn!(
            "client {addr}: {STRIKES} refused credentials within {} s (last: {method} {}); \
             refused for {} s",
            WINDOW.as_secs(),
            mailoauth::text::printable(&path.chars().take(100).collect::<String>()),
            WINDOW.as_secs()
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_past_its_strikes_is_blocked_and_others_are_not() {
        let g = Guard::default();
        let bad: IpAddr = "192.0.2.7".parse().unwrap();
        let good: IpAddr = "192.0.2.8".parse().unwrap();
        for _ in 1..STRIKES {
            assert!(!g.strike(bad));
        }
        assert_eq!(g.blocked(bad), None);
        assert!(g.strike(bad));
        assert!(g.blocked(bad).is_some_and(|s| s <= WINDOW.as_secs()));
        assert_eq!(g.blocked(good), None);
    }

    #[test]
    fn ipv6_clients_count_by_their_64() {
        let g = Guard::default();
        for i in 0..STRIKES {
            g.strike(format!("2001:db8:1:2::{i:x}").parse().unwrap());
        }
        assert!(g.blocked("2001:db8:1:2:ffff::1".parse().unwrap()).is_some());
        assert!(g.blocked("2001:db8:1:3::1".parse().unwrap()).is_none());
    }
}
