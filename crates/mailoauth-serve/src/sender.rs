//! Delivering the outbox: whichever node claims a queued message sends it.
//!
//! Owns: claiming due messages between nodes (compare-and-swap, a claim that
//! runs out if its node dies), at most [`PER_MAILBOX`] connections per mailbox
//! (Exchange Online's concurrent-connection limit) each carrying a batch of
//! messages over one SMTP login, the Graph `sendMail` fallback when the
//! provider says SMTP AUTH is disabled (`535 5.7.139`) or the connector sends
//! through Graph, retries with backoff on what is transient, and the end of a
//! message — `sent`, or `failed` with the core catalog's cause and fix — with
//! its `message.sent` / `message.failed` event in the same transaction. Must
//! not: accept messages (`outbox` and the API do) or decide what a server's
//! reply means (the core's `diagnose` does).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::Semaphore;

use mailoauth::Error;
use mailoauth::config::Service;
use mailoauth::mail::send::{Prepared, Submission};
use mailoauth::mail::{self, Failure};
use mailoauth::providers::Account;

use crate::api::App;
use crate::db::{Attempt, DueMessage, Mailbox, Outgoing, Wakes};
use crate::graph::{self, GraphFailure};
use crate::settings::SendVia;

/// SMTP connections at once per mailbox (Exchange Online allows 3).
pub const PER_MAILBOX: usize = 3;
/// Connections at once per node, over all mailboxes.
const PARALLEL: usize = 48;
/// Messages one connection carries before it lets others have the slot.
const BATCH: usize = 50;
/// How long a claimed message is left to its node before another may send it.
const CLAIM: i64 = 300;
/// Attempts before a message that keeps failing transiently is given up
/// (the backoff makes that about half an hour).
pub const MAX_ATTEMPTS: i64 = 8;
/// One SMTP exchange step's timeout.
const SMTP_TIMEOUT: Duration = Duration::from_secs(60);

/// Seconds before the next try after `attempts` failures: 5 s doubling, at
/// most 10 minutes.
pub fn backoff(attempts: i64) -> i64 {
    (5i64 << attempts.clamp(0, 10)).min(600)
}

/// Send the outbox until the process ends.
pub async fn run(app: Arc<App>) {
    let busy: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let slots = Arc::new(Semaphore::new(PARALLEL));
    loop {
        let now = mailoauth::clock::now();
        crate::metrics::ROUNDS.record(crate::metrics::Worker::Sender);
        match app.db.due_messages(now, 2000).await {
            Ok(due) => start_turns(&app, &busy, &slots, due).await,
            Err(e) => log::warn!("outbox: cannot read it: {e}"),
        }
        // Until a message is accepted here, a turn ends, or the heartbeat
        // says one fell due (a retry's time, a peer's claim that ran out).
        Wakes::sleep(&app.db.wakes().messages).await;
    }
}

/// Group due messages by mailbox and start a turn for each free connection slot.
async fn start_turns(
    app: &Arc<App>,
    busy: &Arc<Mutex<HashMap<String, usize>>>,
    slots: &Arc<Semaphore>,
    due: Vec<DueMessage>,
) {
    let mut by_mailbox: Vec<(String, Vec<DueMessage>)> = Vec::new();
    for d in due {
        match by_mailbox.iter_mut().find(|(m, _)| *m == d.mailbox) {
            Some((_, v)) => v.push(d),
            None => by_mailbox.push((d.mailbox.clone(), vec![d])),
        }
    }
    for (mailbox, msgs) in by_mailbox {
        let free = PER_MAILBOX.saturating_sub(*busy.lock().unwrap().get(&mailbox).unwrap_or(&0));
        if free == 0 {
            continue;
        }
        let per = msgs.len().div_ceil(free).clamp(1, BATCH);
        for chunk in msgs.chunks(per).take(free) {
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                return;
            };
            let mut batch = Vec::new();
            for d in chunk {
                match app
                    .db
                    .claim_message(d, mailoauth::clock::now() + CLAIM)
                    .await
                {
                    Ok(Some(o)) => batch.push(o),
                    Ok(None) => {}
                    Err(e) => log::warn!("outbox: claim of {} failed: {e}", d.id),
                }
            }
            if batch.is_empty() {
                continue;
            }
            *busy.lock().unwrap().entry(mailbox.clone()).or_default() += 1;
            let (app, busy, mailbox) = (app.clone(), busy.clone(), mailbox.clone());
            tokio::spawn(async move {
                turn(&app, &mailbox, batch).await;
                let mut b = busy.lock().unwrap();
                if let Some(n) = b.get_mut(&mailbox) {
                    *n -= 1;
                    if *n == 0 {
                        b.remove(&mailbox);
                    }
                }
                drop(permit);
                app.db.wakes().messages.notify_one();
            });
        }
    }
}

/// How one message's attempt ended.
enum Outcome {
    Sent {
        via: &'static str,
        reply: String,
    },
    Failed {
        error: String,
        fix: Option<String>,
    },
    Retry {
        error: String,
        after: Option<i64>,
    },
    /// Not attempted (the connection ended before its turn): due again now.
    Untried,
}

/// One connection's turn: the batch of one mailbox.
async fn turn(app: &Arc<App>, mailbox: &str, batch: Vec<Outgoing>) {
    let m = match app.db.mailbox(mailbox).await {
        Ok(Some(m)) => m,
        Ok(None) => {
            let o = || Outcome::Failed {
                error: "the mailbox was removed before the message was sent".into(),
                fix: Some("connect the mailbox again and resend".into()),
            };
            let outcomes = batch.iter().map(|_| o()).collect();
            return record_all(app, None, &batch, outcomes).await;
        }
        Err(e) => {
            log::warn!("outbox: mailbox {mailbox}: {e}");
            let outcomes = batch.iter().map(|_| Outcome::Untried).collect();
            return record_all(app, None, &batch, outcomes).await;
        }
    };
    if let Some((batch, outcomes)) = deliver(app, &m, batch).await {
        record_all(app, Some(&m), &batch, outcomes).await;
    }
}

/// Send the batch: SMTP unless the connector says Graph; Graph when SMTP
/// AUTH is disabled. `None`: the SMTP session recorded every outcome itself.
async fn deliver(
    app: &Arc<App>,
    m: &Mailbox,
    batch: Vec<Outgoing>,
) -> Option<(Vec<Outgoing>, Vec<Outcome>)> {
    let all = |f: &dyn Fn() -> Outcome| batch.iter().map(|_| f()).collect::<Vec<_>>();
    let (account, opts) = match (
        app.tokens.account(m),
        app.tokens.settings().mail(&m.connector),
    ) {
        (Ok(a), Ok(o)) => (a, o),
        (Err(e), _) | (_, Err(e)) => {
            let outcomes = all(&|| permanent(&e));
            return Some((batch, outcomes));
        }
    };
    if opts.send_via == SendVia::Graph {
        let outcomes = by_graph(app, m, &account, opts.graph_url.as_deref(), &batch).await;
        return Some((batch, outcomes));
    }
    let token = match app.tokens.token(m, None).await {
        Ok(s) => s.token.token,
        Err(e) => {
            let outcomes = all(&|| token_failure(&e));
            return Some((batch, outcomes));
        }
    };
    let account = Arc::new(account);
    let (a, app2, m2) = (account.clone(), app.clone(), m.clone());
    let handle = tokio::runtime::Handle::current();
    let session = tokio::task::spawn_blocking(move || {
        let s = Session {
            app: &app2,
            handle: &handle,
            m: &m2,
            account: &a,
        };
        s.run(&token, batch)
    })
    .await;
    match session {
        Ok(Ok(())) => None,
        Ok(Err((f, batch))) if smtp_auth_disabled(&f) => {
            log::info!(
                "mailbox {}: SMTP AUTH is disabled ({f}); sending through Graph",
                m.id
            );
            let outcomes = by_graph(app, m, &account, opts.graph_url.as_deref(), &batch).await;
            Some((batch, outcomes))
        }
        Ok(Err((f, batch))) => {
            let outcomes = batch.iter().map(|_| smtp_failure(&account, &f)).collect();
            Some((batch, outcomes))
        }
        // The task panicked: its claims run out and the messages are tried again.
        Err(e) => {
            log::warn!("outbox: mailbox {}: send task failed: {e}", m.id);
            None
        }
    }
}

/// `535 5.7.139`: Exchange has SMTP AUTH off for the mailbox or the tenant.
fn smtp_auth_disabled(f: &Failure) -> bool {
    matches!(f, Failure::Refused { reply, .. } if reply.contains("5.7.139"))
}

/// Messages one SMTP connection carries before it logs in afresh.
const PER_CONNECTION: usize = 1000;
/// How long a connection waits for more of its mailbox's messages before it
/// ends (in steps of [`LINGER_STEP`]): a burst arriving over time rides on
/// one login instead of one login per poll.
const LINGER_STEPS: usize = 10;
const LINGER_STEP: Duration = Duration::from_millis(100);

/// One logged-in SMTP connection of a mailbox, on a blocking thread: it
/// sends its batch, records each outcome, then claims the mailbox's next due
/// messages and goes on, until none come within the linger time.
struct Session<'a> {
    app: &'a Arc<App>,
    handle: &'a tokio::runtime::Handle,
    m: &'a Mailbox,
    account: &'a Account,
}

impl Session<'_> {
    /// `Err`: the login failed; nothing was tried, the batch comes back.
    fn run(&self, token: &str, batch: Vec<Outgoing>) -> Result<(), (Failure, Vec<Outgoing>)> {
        let Some(server) = mail::server_for(self.account, Service::Smtp) else {
            let f = Failure::Protocol("the connector names no SMTP server".into());
            return Err((f, batch));
        };
        let mut conn = match Submission::open(self.account, server, token, SMTP_TIMEOUT) {
            Ok(c) => c,
            Err(f) => return Err((f, batch)),
        };
        let (mut current, mut carried) = (batch, 0usize);
        loop {
            let mut outcomes = Vec::with_capacity(current.len());
            let mut broken = false;
            for o in &current {
                if broken {
                    outcomes.push(Outcome::Untried);
                    continue;
                }
                let p = Prepared {
                    from: o.from.clone(),
                    recipients: o.recipients.clone(),
                    data: o.data.clone(),
                };
                outcomes.push(match conn.send(&p) {
                    Ok(reply) => Outcome::Sent { via: "smtp", reply },
                    Err(f) => {
                        // A refusal was reset; anything else ended the connection.
                        broken = !matches!(f, Failure::Refused { .. } | Failure::Temporary { .. });
                        smtp_failure(self.account, &f)
                    }
                });
            }
            carried += current.len();
            self.handle
                .block_on(record_all(self.app, Some(self.m), &current, outcomes));
            if broken {
                return Ok(());
            }
            current = if carried < PER_CONNECTION {
                self.more()
            } else {
                Vec::new()
            };
            if current.is_empty() {
                conn.close();
                return Ok(());
            }
        }
    }

    /// The mailbox's next due messages, claimed; waits the linger time.
    fn more(&self) -> Vec<Outgoing> {
        for _ in 0..LINGER_STEPS {
            let got = self.handle.block_on(claim_due(self.app, &self.m.id));
            if !got.is_empty() {
                return got;
            }
            std::thread::sleep(LINGER_STEP);
        }
        Vec::new()
    }
}

/// Claim up to [`BATCH`] of `mailbox`'s due messages.
async fn claim_due(app: &Arc<App>, mailbox: &str) -> Vec<Outgoing> {
    let now = mailoauth::clock::now();
    let due = match app.db.due_messages_of(mailbox, now, BATCH as i64).await {
        Ok(d) => d,
        Err(e) => {
            log::warn!("outbox: cannot read mailbox {mailbox}'s messages: {e}");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for d in due {
        if let Ok(Some(o)) = app.db.claim_message(&d, now + CLAIM).await {
            out.push(o);
        }
    }
    out
}

/// A failed SMTP step: temporary or unreachable is retried; a refusal ends the
/// message with the catalog's cause and fix.
fn smtp_failure(account: &Account, f: &Failure) -> Outcome {
    match f {
        Failure::Unreachable(_) | Failure::Temporary { .. } | Failure::Protocol(_) => {
            Outcome::Retry {
                error: f.to_string(),
                after: None,
            }
        }
        Failure::Refused { .. } | Failure::Tls(_) => {
            let d = mail::diagnose(account, Service::Smtp, f);
            Outcome::Failed {
                error: match &d {
                    Some(d) => format!("{f}; cause: {}", d.cause),
                    None => f.to_string(),
                },
                fix: d.map(|d| crate::render::fix_of(&d.remedy)),
            }
        }
    }
}

/// No token: the provider is away (retry) or the mailbox needs its owner.
fn token_failure(e: &Error) -> Outcome {
    match e {
        Error::Unreachable { .. } => Outcome::Retry {
            error: e.to_string(),
            after: None,
        },
        _ => permanent(e),
    }
}

fn permanent(e: &Error) -> Outcome {
    Outcome::Failed {
        error: crate::render::diagnosis(e),
        fix: crate::render::fix(e),
    }
}

/// Graph's base URL: the connector's `graph_url`, else the origin of its
/// `graph` resource's scope (the Microsoft cloud's Graph host).
fn graph_base(account: &Account, configured: Option<&str>) -> Option<String> {
    if let Some(u) = configured {
        return Some(u.to_owned());
    }
    let scope = account.resources.get("graph")?.first()?;
    let u = url::Url::parse(scope).ok()?;
    Some(u.origin().ascii_serialization())
}

async fn by_graph(
    app: &Arc<App>,
    m: &Mailbox,
    account: &Account,
    configured: Option<&str>,
    batch: &[Outgoing],
) -> Vec<Outcome> {
    let all = |f: &dyn Fn() -> Outcome| batch.iter().map(|_| f()).collect::<Vec<_>>();
    let Some(base) = graph_base(account, configured) else {
        return all(&|| {
            Outcome::Failed {
            error: "the message needs Microsoft Graph (SMTP AUTH is disabled, or the connector \
                    says send_via = \"graph\"), but the connector has no Graph resource"
                .into(),
            fix: Some(
                "give the connector `resources = { graph = [\"https://graph.microsoft.com/.default\"] }` \
                 (and `graph_url` if Graph is elsewhere), or have SMTP AUTH enabled for the mailbox \
                 (`Set-CASMailbox -Identity MAILBOX -SmtpClientAuthenticationDisabled $false`)"
                    .into(),
            ),
        }
        });
    };
    let token = match app.tokens.token(m, Some("graph")).await {
        Ok(s) => s.token.token,
        Err(e) => return all(&|| token_failure(&e)),
    };
    let url = graph::send_url(&base, m.kind == "app", &m.email);
    let data: Vec<Vec<u8>> = batch.iter().map(|o| o.data.clone()).collect();
    tokio::task::spawn_blocking(move || {
        let agent = graph::agent();
        data.iter()
            .map(|d| match graph::send(&agent, &url, &token, d) {
                Ok(()) => Outcome::Sent {
                    via: "graph",
                    reply: "202 Accepted".into(),
                },
                Err(GraphFailure::Transient { error, retry_after }) => Outcome::Retry {
                    error,
                    after: retry_after,
                },
                Err(GraphFailure::Permanent { error, fix }) => Outcome::Failed {
                    error,
                    fix: Some(fix),
                },
            })
            .collect()
    })
    .await
    .unwrap_or_else(|e| {
        batch
            .iter()
            .map(|_| Outcome::Retry {
                error: format!("send task failed: {e}"),
                after: None,
            })
            .collect()
    })
}

/// Record each outcome with its event.
async fn record_all(
    app: &Arc<App>,
    m: Option<&Mailbox>,
    batch: &[Outgoing],
    outcomes: Vec<Outcome>,
) {
    for (o, outcome) in batch.iter().zip(outcomes) {
        if let Err(e) = record(app, m, o, outcome).await {
            // The claim runs out and the message is tried again: at least once.
            log::warn!("outbox: the outcome of {} was not recorded: {e}", o.id);
        }
    }
}

async fn record(
    app: &Arc<App>,
    m: Option<&Mailbox>,
    o: &Outgoing,
    outcome: Outcome,
) -> Result<(), Error> {
    let now = mailoauth::clock::now();
    let outcome = match outcome {
        Outcome::Retry { error, .. } if o.attempts + 1 >= MAX_ATTEMPTS => Outcome::Failed {
            error: format!("{error} (gave up after {MAX_ATTEMPTS} attempts)"),
            fix: Some("the server kept failing transiently: resend later".into()),
        },
        other => other,
    };
    let event = |kind: &str, fields: serde_json::Value| match m {
        Some(m) => app.tokens.outbox().mail_event(kind, &o.id, m, fields, now),
        None => Vec::new(),
    };
    let message = |via: Option<&str>| json!({"id": o.id, "recipients": o.recipients.len(), "size": o.data.len(), "via": via});
    let (attempt, events) = match &outcome {
        Outcome::Sent { via, reply } => (
            Attempt::Sent { via, reply },
            event("message.sent", json!({"message": message(Some(via))})),
        ),
        Outcome::Failed { error, fix } => (
            Attempt::Failed {
                error,
                fix: fix.as_deref(),
            },
            event(
                "message.failed",
                json!({"message": message(None), "error": error, "fix": fix}),
            ),
        ),
        Outcome::Retry { error, after } => {
            let wait = after.unwrap_or_else(|| backoff(o.attempts)).clamp(1, 3600);
            (
                Attempt::Retry {
                    error,
                    at: now + wait,
                },
                Vec::new(),
            )
        }
        Outcome::Untried => (Attempt::Release, Vec::new()),
    };
    use crate::metrics::{Delivery, SENDS};
    match &outcome {
        Outcome::Sent { .. } => SENDS.record(Delivery::Delivered),
        Outcome::Failed { .. } => SENDS.record(Delivery::GivenUp),
        Outcome::Retry { .. } => SENDS.record(Delivery::Retrying),
        Outcome::Untried => {}
    }
    app.db.message_attempted(&o.id, attempt, &events, now).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_ten_minutes() {
        assert_eq!(backoff(0), 5);
        assert_eq!(backoff(1), 10);
        assert_eq!(backoff(20), 600);
    }

    #[test]
    fn only_5_7_139_switches_to_graph() {
        let r = |reply: &str| Failure::Refused {
            reply: reply.into(),
            challenge: None,
            step: "AUTHENTICATE",
        };
        assert!(smtp_auth_disabled(&r(
            "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant."
        )));
        assert!(!smtp_auth_disabled(&r(
            "535 5.7.3 Authentication unsuccessful"
        )));
    }
}
