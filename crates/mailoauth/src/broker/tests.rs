//! The broker's decisions against the in-memory ports: no files, no network, no
//! real sleeping. Each test names the guarantee it checks.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use super::memory::{
    ManualClock, MemoryEvents, MemoryLeases, MemoryStore, Recorded, ScriptedTransport, oauth_error,
    token_json,
};
use super::ports::{Lease, Leases, Ports, Saved, TokenStore, Version};
use super::*;
use crate::config::Config;
use crate::store::TokenRecord;

const T0: i64 = 1_700_000_000;

fn account(flow: &str) -> Account {
    let c = Config::parse(
        &format!(
            "[accounts.a]\nprovider = \"custom\"\nuser = \"u@x\"\nclient_id = \"c\"\nscopes = [\"s\"]\n\
             authorize_url = \"https://x/a\"\ntoken_url = \"https://x/t\"\nflow = \"{flow}\"\nclient_secret = \"sec\"\n"
        ),
        std::path::Path::new("/c"),
    )
    .unwrap();
    crate::providers::resolve(&c, "a").unwrap()
}

/// A record with refresh token `rt` and a mail token `at` valid for `left` seconds.
fn record(rt: &str, at: &str, left: i64) -> TokenRecord {
    let mut r = new_record(None, T0 - 3000);
    r.refresh_token = Some(rt.into());
    r.access.insert(
        MAIL_RESOURCE.into(),
        AccessToken {
            token: at.into(),
            expires_at: T0 + left,
            obtained_at: T0 - 3000,
            scope: None,
        },
    );
    r
}

struct World {
    store: Arc<MemoryStore>,
    clock: Arc<ManualClock>,
    leases: Arc<MemoryLeases>,
    events: Arc<MemoryEvents>,
    transport: Arc<ScriptedTransport>,
}

impl World {
    fn new(rec: Option<TokenRecord>, transport: ScriptedTransport) -> World {
        let clock = Arc::new(ManualClock::at(T0));
        World {
            store: Arc::new(rec.map(MemoryStore::with).unwrap_or_default()),
            leases: Arc::new(MemoryLeases::new(clock.clone())),
            clock,
            events: Arc::new(MemoryEvents::new()),
            transport: Arc::new(transport),
        }
    }

    fn ports(&self, owner: &str) -> Ports {
        self.ports_with(owner, self.leases.clone())
    }

    fn ports_with(&self, owner: &str, leases: Arc<dyn Leases>) -> Ports {
        Ports {
            store: Box::new(self.store.clone()),
            leases,
            events: self.events.clone(),
            clock: self.clock.clone(),
            transport: self.transport.clone(),
            owner: owner.into(),
            lease_ttl: Duration::from_secs(60),
        }
    }

    fn broker(&self) -> Broker {
        Broker::with_ports(account("auth-code"), self.ports("me"))
    }
}

#[test]
fn fresh_token_is_served_without_lease_or_request() {
    let w = World::new(
        Some(record("rt1", "at1", 3000)),
        ScriptedTransport::replies(vec![]),
    );
    assert_eq!(w.broker().token(None).unwrap(), "at1");
    assert_eq!(w.transport.calls(), 0);
    assert!(w.leases.holder("a").is_none());
    assert!(w.events.events().is_empty());
}

/// Leases that let every caller reach `acquire` before any gets one, so all of
/// them saw the low token: the lease and the re-check must then collapse the
/// refreshes into one.
struct Gate {
    inner: Arc<MemoryLeases>,
    barrier: Barrier,
}

impl Leases for Gate {
    fn acquire(&self, account: &str, owner: &str, ttl: Duration) -> Result<Box<dyn Lease>> {
        self.barrier.wait();
        self.inner.acquire(account, owner, ttl)
    }
}

#[test]
fn concurrent_callers_cause_one_refresh() {
    const N: usize = 8;
    let w = World::new(
        Some(record("rt1", "old", 10)),
        ScriptedTransport::from_fn(|n, _, _| Ok(token_json(&format!("new{n}"), 3600, Some("rt2")))),
    );
    let gate: Arc<dyn Leases> = Arc::new(Gate {
        inner: w.leases.clone(),
        barrier: Barrier::new(N),
    });
    let tokens: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..N)
            .map(|i| {
                let b = Broker::with_ports(
                    account("auth-code"),
                    w.ports_with(&format!("t{i}"), gate.clone()),
                );
                s.spawn(move || b.token(None).unwrap())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(w.transport.calls(), 1, "exactly one token request");
    assert!(tokens.iter().all(|t| t == "new0"), "{tokens:?}");
    assert_eq!(w.store.get().unwrap().refresh_token.as_deref(), Some("rt2"));
}

#[test]
fn lost_compare_and_swap_rereads_instead_of_refreshing_again() {
    // While our request is out, another node (our lease having expired) stores its
    // own renewal with a rotated refresh token.
    let store_for_script: Arc<std::sync::OnceLock<Arc<MemoryStore>>> = Arc::default();
    let s2 = store_for_script.clone();
    let w = World::new(
        Some(record("rt1", "old", 10)),
        ScriptedTransport::from_fn(move |_, _, _| {
            s2.get().unwrap().put(record("rt-other", "theirs", 3600));
            Ok(token_json("ours", 3600, Some("rt-ours")))
        }),
    );
    store_for_script.set(w.store.clone()).ok();
    assert_eq!(w.broker().token(None).unwrap(), "theirs");
    assert_eq!(w.transport.calls(), 1, "no second refresh");
    let stored = w.store.get().unwrap();
    assert_eq!(stored.refresh_token.as_deref(), Some("rt-other"));
}

#[test]
fn lost_compare_and_swap_on_the_same_chain_keeps_the_rotated_token() {
    // The other writer only touched another resource: same refresh-token chain, so
    // our rotated refresh token must still be stored (Invariant R).
    let cell: Arc<std::sync::OnceLock<Arc<MemoryStore>>> = Arc::default();
    let c2 = cell.clone();
    let w = World::new(
        Some(record("rt1", "old", 10)),
        ScriptedTransport::from_fn(move |n, _, _| {
            if n == 0 {
                let s = c2.get().unwrap();
                let mut r = s.get().unwrap();
                r.access.insert("graph".into(), r.access["mail"].clone());
                s.put(r);
            }
            Ok(token_json("ours", 3600, Some("rt2")))
        }),
    );
    cell.set(w.store.clone()).ok();
    assert_eq!(w.broker().token(None).unwrap(), "ours");
    assert_eq!(w.transport.calls(), 1);
    let stored = w.store.get().unwrap();
    assert_eq!(stored.refresh_token.as_deref(), Some("rt2"));
    assert!(stored.access.contains_key("graph"), "their write is kept");
}

#[test]
fn expired_lease_is_taken_over() {
    let w = World::new(
        Some(record("rt1", "old", 10)),
        ScriptedTransport::replies(vec![Ok(token_json("new", 3600, Some("rt2")))]),
    );
    // A holder that died without releasing (it never renews).
    let mut stale = w
        .leases
        .acquire("a", "dead", Duration::from_secs(30))
        .unwrap();
    assert_eq!(stale.expires_at(), Some(T0 + 30));
    w.clock.advance(Duration::from_secs(31));
    assert_eq!(w.broker().token(None).unwrap(), "new");
    assert!(
        stale.renew(Duration::from_secs(30)).is_err(),
        "the old holder lost it"
    );
    drop(stale);
    // Dropping the lost lease does not release the new owner's lease.
    let l = w
        .leases
        .acquire("a", "next", Duration::from_secs(30))
        .unwrap();
    assert_eq!(l.owner(), "next");
}

/// A store whose writes fail: nothing obtained may leave.
struct FailingStore(MemoryStore);

impl TokenStore for FailingStore {
    fn load(&self) -> Result<Option<(TokenRecord, Version)>> {
        self.0.load()
    }
    fn save_if(&self, _: Option<Version>, _: &TokenRecord) -> Result<Saved> {
        Err(Error::io("disk full", std::io::Error::other("ENOSPC")))
    }
    fn delete(&self) -> Result<()> {
        self.0.delete()
    }
    fn set_aside(&self) -> Result<Option<String>> {
        self.0.set_aside()
    }
    fn describe(&self) -> String {
        "failing".into()
    }
}

#[test]
fn rotated_refresh_token_is_stored_before_the_token_leaves() {
    let w = World::new(
        Some(record("rt1", "old", 10)),
        ScriptedTransport::replies(vec![
            Ok(token_json("new", 3600, Some("rt2"))),
            Ok(token_json("new2", 3600, Some("rt3"))),
        ]),
    );
    assert_eq!(w.broker().token(None).unwrap(), "new");
    let stored = w.store.get().unwrap();
    assert_eq!(stored.refresh_token.as_deref(), Some("rt2"));
    assert_eq!(stored.access["mail"].token, "new");

    let mut ports = w.ports("me");
    ports.store = Box::new(FailingStore(MemoryStore::with(record("rt2", "old", 10))));
    let b = Broker::with_ports(account("auth-code"), ports);
    let err = b.token(None).unwrap_err();
    assert!(!err.to_string().contains("new2"), "{err}");
}

#[test]
fn transient_failure_serves_still_valid_token() {
    let w = World::new(
        Some(record("rt1", "old", 100)),
        ScriptedTransport::replies(vec![Err(EndpointError::Transient {
            detail: "HTTP 503".into(),
            retry_after: None,
        })]),
    );
    assert_eq!(w.broker().token(None).unwrap(), "old");
    assert_eq!(
        w.transport.calls(),
        1,
        "no retries while a token can be served"
    );
    assert!(w.clock.sleeps().is_empty());
    assert_eq!(
        w.events.events(),
        vec![(
            "a".into(),
            Recorded::RefreshFailed {
                serving_until: T0 + 100
            }
        )]
    );
    assert!(
        w.events
            .status("a")
            .last_error
            .unwrap()
            .contains("HTTP 503")
    );
}

#[test]
fn invalid_grant_marks_login_required_once() {
    let w = World::new(
        Some(record("rt1", "old", 0)),
        ScriptedTransport::from_fn(|_, _, _| Err(oauth_error("invalid_grant"))),
    );
    let b = w.broker();
    for _ in 0..2 {
        assert!(matches!(b.token(None), Err(Error::LoginRequired { .. })));
    }
    let kinds: Vec<_> = w.events.events().into_iter().map(|(_, e)| e).collect();
    assert_eq!(kinds.len(), 2);
    assert!(
        kinds
            .iter()
            .all(|e| matches!(e, Recorded::LoginRequired(_)))
    );
    assert_eq!(
        w.events.notifications(),
        vec!["a".to_owned()],
        "notified once"
    );
    assert!(w.events.status("a").login_required.is_some());
    assert!(w.clock.sleeps().is_empty(), "an OAuth error is not retried");
}

#[test]
fn invalid_grant_after_another_writer_rotated_is_not_a_revocation() {
    // Our lease ran out during the request; another node rotated rt1 → rt2
    // and the server refuses rt1 (strict rotation). The broker re-reads, finds
    // rt2 and its token, and serves that: no login_required.
    let store_for_script: Arc<std::sync::OnceLock<Arc<MemoryStore>>> = Arc::default();
    let s2 = store_for_script.clone();
    let w = World::new(
        Some(record("rt1", "old", 0)),
        ScriptedTransport::from_fn(move |_, _, _| {
            s2.get().unwrap().put(record("rt2", "theirs", 3600));
            Err(oauth_error("invalid_grant"))
        }),
    );
    store_for_script.set(w.store.clone()).ok();
    assert_eq!(w.broker().token(None).unwrap(), "theirs");
    assert_eq!(w.transport.calls(), 1);
    assert!(w.events.status("a").login_required.is_none());
    assert_eq!(w.store.get().unwrap().refresh_token.as_deref(), Some("rt2"));
}

#[test]
fn empty_store_is_login_required_without_a_request() {
    let w = World::new(None, ScriptedTransport::replies(vec![]));
    let e = w.broker().token(None).unwrap_err();
    assert!(e.to_string().contains("no token is stored yet"), "{e}");
    assert_eq!(w.transport.calls(), 0);
    assert_eq!(w.events.notifications().len(), 1);
}

#[test]
fn retries_back_off_on_the_clock_without_sleeping() {
    let transient = |after: Option<u64>| {
        Err(EndpointError::Transient {
            detail: "HTTP 503".into(),
            retry_after: after.map(Duration::from_secs),
        })
    };
    let w = World::new(
        Some(record("rt1", "gone", -10)),
        ScriptedTransport::replies(vec![
            transient(None),
            transient(None),
            transient(Some(60)),
            Ok(token_json("new", 3600, None)),
        ]),
    );
    let started = std::time::Instant::now();
    assert_eq!(w.broker().token(None).unwrap(), "new");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "no real sleeping"
    );
    assert_eq!(
        w.clock.sleeps(),
        vec![
            Duration::from_millis(500),
            Duration::from_secs(1),
            MAX_WAIT // Retry-After: 60, capped
        ]
    );
    assert_eq!(w.transport.calls(), 4);
    // A response without a refresh token keeps the stored one.
    assert_eq!(w.store.get().unwrap().refresh_token.as_deref(), Some("rt1"));
    // Every retry happened under one lease, renewed as time passed.
    assert!(w.leases.holder("a").is_none(), "released at the end");
}

#[test]
fn transient_failures_without_a_token_give_up_after_the_retries() {
    let w = World::new(
        Some(record("rt1", "gone", -10)),
        ScriptedTransport::from_fn(|_, _, _| {
            Err(EndpointError::Transient {
                detail: "timed out".into(),
                retry_after: None,
            })
        }),
    );
    let e = w.broker().token(None).unwrap_err();
    assert!(matches!(e, Error::Unreachable { .. }), "{e}");
    assert_eq!(w.transport.calls(), 1 + RETRIES as usize);
    assert!(matches!(&w.events.events()[0].1, Recorded::Failed(_)));
}

#[test]
fn client_credentials_need_no_refresh_token() {
    let w = World::new(
        None,
        ScriptedTransport::replies(vec![Ok(token_json("app", 3600, None))]),
    );
    let b = Broker::with_ports(account("client-credentials"), w.ports("me"));
    assert_eq!(b.token(None).unwrap(), "app");
    assert_eq!(
        w.transport.requests()[0].grant_type.as_deref(),
        Some("client_credentials")
    );
}

#[test]
fn login_replaces_the_record_and_clears_login_required() {
    let w = World::new(
        Some(record("rt1", "old", 0)),
        ScriptedTransport::from_fn(|_, _, _| Err(oauth_error("invalid_grant"))),
    );
    let b = w.broker();
    assert!(b.token(None).is_err());
    let resp = oauth::token_response(token_json("fresh", 3600, Some("rt9"))).unwrap();
    b.store_login(resp).unwrap();
    assert_eq!(w.store.get().unwrap().refresh_token.as_deref(), Some("rt9"));
    assert_eq!(w.events.status("a").login_required, None);
    assert_eq!(b.token(None).unwrap(), "fresh");
}

#[test]
fn an_adopted_refresh_token_is_redeemed_once_and_its_rotation_kept() {
    let w = World::new(
        None,
        ScriptedTransport::from_fn(|_, _, form| {
            let rt = form.iter().find(|(k, _)| *k == "refresh_token").unwrap();
            assert_eq!(rt.1.as_str(), "imported");
            Ok(token_json("at1", 3600, Some("rotated")))
        }),
    );
    let b = w.broker();
    b.adopt_refresh_token("imported").unwrap();
    let rec = w.store.get().expect("stored");
    assert_eq!(rec.refresh_token.as_deref(), Some("rotated"));
    assert_eq!(rec.access[MAIL_RESOURCE].token, "at1");
    assert_eq!(
        b.token(None).unwrap(),
        "at1",
        "served without a second request"
    );
    assert_eq!(w.transport.calls(), 1);
}

#[test]
fn a_refused_adopted_refresh_token_stores_nothing() {
    let w = World::new(
        None,
        ScriptedTransport::from_fn(|_, _, _| Err(oauth_error("invalid_grant"))),
    );
    let e = w.broker().adopt_refresh_token("dead").unwrap_err();
    assert!(matches!(e, Error::LoginRequired { .. }), "{e:?}");
    assert!(w.store.get().is_none());
}
