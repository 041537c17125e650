//! Receiving mail: per mailbox, one watcher owned by one node through a lease,
//! one IMAP connection for all its folders where the server offers NOTIFY
//! (RFC 5465), else one per folder; `message.new` events through the webhook
//! outbox.
//!
//! Owns: taking watchers (free rows, or leases a dead node let run out),
//! renewing all of this node's leases with one statement per beat (a third of
//! `watch_lease`) and stopping the watchers whose lease it lost; each
//! connection on its own small thread, running the core's
//! [`mailoauth::mail::watch`] loops (IDLE, catch-up from the durable cursor);
//! the pace of (re)connections ([`Pace`]: at most `reconnect_rate` per
//! second, so a restarted server is not met by a burst) and jittered backoff
//! after failures; a `BYE … AccessTokenExpired` answered by logging in again
//! with a fresh token; a throttled session waiting what the server asked;
//! and the event of each new message, written with the cursor move in one
//! transaction, its id derived from (mailbox, folder, UIDVALIDITY, UID).
//! Must not: parse IMAP (the core's machines do) or sign and send webhooks
//! (the deliverer does).
//!
//! Further kinds: Graph change notifications and Gmail `watch` (Pub/Sub)
//! push to a public HTTPS endpoint instead of holding a connection. They
//! would be another body for [`folder_loop`]'s place — a subscription
//! renewed under the same lease, its notifications received by an API route
//! that looks up the lease holder's cursor (Graph's delta token, Gmail's
//! historyId, in `watch_cursors` in place of UIDVALIDITY/UID) and writes the
//! same `message.new` rows through [`Reporter`]'s event shape.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use mailoauth::config::Service;
use mailoauth::mail::conn::Stopper;
use mailoauth::mail::watch::{self, Cursor, Ended, NewMessage};
use mailoauth::mail::{self, Failure};
use mailoauth::proto::imap::idle::throttled;

use crate::api::App;
use crate::db::Mailbox;
use crate::metrics::{WATCH, Watched};

/// One IMAP command's timeout on a watcher's connection.
const TIMEOUT: Duration = Duration::from_secs(60);
/// A watcher thread's stack: it runs the blocking IMAP loop, nothing deep.
const STACK: usize = 256 * 1024;
/// Messages per event batch (one transaction each).
const BATCH: usize = 100;
/// Longest pause between two tries after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long a watcher waits before looking again for a folder the server
/// does not have (it may be created meanwhile).
const NO_FOLDER_WAIT: Duration = Duration::from_secs(300);
/// A session that lasted this long was healthy: its end starts the backoff afresh.
const HEALTHY: Duration = Duration::from_secs(60);

/// How a watcher is told to end: a flag, its connections shut down under
/// it, and its pauses cut short.
#[derive(Default)]
pub struct Stop {
    flag: AtomicBool,
    open: Mutex<Vec<Stopper>>,
    woken: Condvar,
}

impl Stop {
    /// End the watcher: now, whatever it is waiting for.
    pub fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            s.stop();
        }
        self.woken.notify_all();
    }

    /// Whether it was told to end.
    pub fn stopped(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Pause `d`, or less when told to end: true if told to end.
    fn pause(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut g = self.open.lock().unwrap();
        while !self.stopped() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            g = self.woken.wait_timeout(g, left).unwrap().0;
        }
        true
    }

    /// Keep `s` to shut down on stop (at once if already stopped).
    fn hold(&self, s: Stopper) {
        let mut g = self.open.lock().unwrap();
        if self.stopped() {
            s.stop();
        } else {
            g.push(s);
        }
    }

    fn forget(&self) {
        self.open.lock().unwrap().clear();
    }
}

/// The node's pace of watcher connections: each takes the next free slot,
/// `1 / rate` seconds after the one before.
pub struct Pace {
    next: Mutex<Instant>,
    gap: Duration,
}

impl Pace {
    /// At most `rate` connections per second.
    pub fn new(rate: f64) -> Pace {
        Pace {
            next: Mutex::new(Instant::now()),
            gap: Duration::from_secs_f64(1.0 / rate),
        }
    }

    /// How long to wait for the next slot (which is then taken).
    pub fn slot(&self) -> Duration {
        let now = Instant::now();
        let mut next = self.next.lock().unwrap();
        let at = (*next).max(now);
        *next = at + self.gap;
        at - now
    }
}

/// The pause before the next try after `failures` failures in a row: 1 s
/// doubling to 5 minutes, each drawn from its upper half (so watchers that
/// failed together do not come back together).
pub fn backoff(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let top = Duration::from_secs(1u64 << (failures - 1).min(9)).min(MAX_BACKOFF);
    let mut b = [0u8; 2];
    mailoauth::random::fill(&mut b);
    let frac = 0.5 + f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX) / 2.0;
    top.mul_f64(frac)
}

/// A session's IDLE renewal interval: `renew` less up to a tenth, drawn per
/// session, so watchers that connected together (a node start, a server
/// restart) do not all renew in the same second every interval.
pub fn spread(renew: Duration) -> Duration {
    let mut b = [0u8; 2];
    mailoauth::random::fill(&mut b);
    renew.mul_f64(0.9 + f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX) / 10.0)
}

/// Watch the mailboxes of watching connectors until the process ends.
pub async fn run(app: Arc<App>) {
    let settings = app.tokens.settings();
    let connectors: Vec<String> = settings
        .connectors()
        .filter(|c| settings.watch(c).is_ok_and(|w| !w.folders.is_empty()))
        .map(str::to_owned)
        .collect();
    if connectors.is_empty() {
        return;
    }
    let lease = settings.watch_lease as i64;
    let beat = Duration::from_secs(settings.watch_lease) / 3;
    let pace = Arc::new(Pace::new(settings.reconnect_rate));
    let mut running: HashMap<String, Arc<Stop>> = HashMap::new();
    loop {
        beat_once(&app, &connectors, &pace, &mut running, lease).await;
        tokio::select! {
            _ = app.watch.notified() => {}
            _ = tokio::time::sleep(beat) => {}
        }
    }
}

/// One beat: renew, stop what was lost, take what is free.
async fn beat_once(
    app: &Arc<App>,
    connectors: &[String],
    pace: &Arc<Pace>,
    running: &mut HashMap<String, Arc<Stop>>,
    lease: i64,
) {
    let node = app.cluster.node.as_str();
    let now = mailoauth::clock::now();
    if let Err(e) = app.db.ensure_watchers(connectors).await {
        log::warn!("watchers: cannot list the mailboxes to watch: {e}");
    }
    let held: HashSet<String> = match app.db.renew_watchers(node, now + lease).await {
        Ok(h) => {
            WATCH.record(Watched::LeaseBeat);
            h.into_iter().collect()
        }
        Err(e) => {
            // Cut off from the database: the leases run out and others take
            // over; stop before they do, so no mailbox is watched twice for long.
            log::warn!("watchers: leases not renewed: {e}");
            return;
        }
    };
    running.retain(|id, stop| {
        let keep = held.contains(id) && !stop.stopped();
        if !keep {
            stop.stop();
        }
        keep
    });
    let claimed = match app.db.claim_watchers(node, now, now + lease, 100_000).await {
        Ok(c) => c,
        Err(e) => {
            log::warn!("watchers: cannot take free watchers: {e}");
            Vec::new()
        }
    };
    for id in claimed.into_iter().chain(held) {
        if running.contains_key(&id) {
            continue;
        }
        match start(app, &id, pace).await {
            Some(stop) => {
                running.insert(id, stop);
            }
            None => {
                let _ = app.db.release_watcher(&id, node).await;
            }
        }
    }
}

/// Start a mailbox's watcher thread; `None` if it is not to be watched.
async fn start(app: &Arc<App>, id: &str, pace: &Arc<Pace>) -> Option<Arc<Stop>> {
    let m = app.db.mailbox(id).await.ok().flatten()?;
    let opts = app.tokens.settings().watch(&m.connector).ok()?;
    if opts.folders.is_empty() {
        return None;
    }
    let stop = Arc::new(Stop::default());
    let w = FolderWatch {
        app: app.clone(),
        handle: tokio::runtime::Handle::current(),
        mailbox: id.to_owned(),
        folders: opts.folders,
        poll: opts.poll,
        stop: stop.clone(),
        pace: pace.clone(),
    };
    if let Err(e) = spawn(w) {
        log::warn!("watchers: no thread for mailbox {id}: {e}");
        stop.stop();
        return None;
    }
    Some(stop)
}

/// A thread for `w`: all its folders on one connection where the server
/// offers NOTIFY; else it keeps the first and starts one for each other.
fn spawn(w: FolderWatch) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(format!("watch-{}", w.mailbox))
        .stack_size(STACK)
        .spawn(move || {
            let _restart = RestartOnPanic(w.stop.clone());
            folder_loop(w)
        })
        .map(drop)
}

/// A watcher thread that panicked stops its mailbox's watcher, so the next
/// beat starts it afresh instead of leaving the folder unwatched.
struct RestartOnPanic(Arc<Stop>);

impl Drop for RestartOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.stop();
        }
    }
}

/// The watch of a mailbox's folders (one, or several with NOTIFY) on one
/// connection, on its own thread.
#[derive(Clone)]
struct FolderWatch {
    app: Arc<App>,
    handle: tokio::runtime::Handle,
    mailbox: String,
    folders: Vec<String>,
    poll: Duration,
    stop: Arc<Stop>,
    pace: Arc<Pace>,
}

impl FolderWatch {
    /// Run `f` on the runtime and wait for it. The future lives on the
    /// runtime's heap, not on this thread's small stack: database and token
    /// futures are tens of KiB (more in debug builds), and stack a thread
    /// touched once stays resident — times a thousand watchers.
    fn on_runtime<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = Result<T, String>> + Send + 'static,
    ) -> Result<T, String> {
        self.handle
            .block_on(self.handle.spawn(f))
            .map_err(|e| format!("a watcher task failed: {e}"))?
    }

    /// The folders, for log lines.
    fn label(&self) -> String {
        self.folders.join(", ")
    }

    /// One folder per connection from now on: this one keeps the first,
    /// each other gets a thread of its own.
    fn keep_first(&mut self) {
        let rest: Vec<String> = self.folders.drain(1.min(self.folders.len())..).collect();
        for f in rest {
            self.split_off(&f);
        }
    }

    /// Watch `folder` on a connection of its own (its own thread) from now on.
    fn split_off(&mut self, folder: &str) {
        self.folders.retain(|f| f != folder);
        let mut one = self.clone();
        one.folders = vec![folder.to_owned()];
        if let Err(e) = spawn(one) {
            log::warn!("watcher {} {folder}: no thread: {e}", self.mailbox);
            self.stop.stop();
        }
    }
}

/// Connect, watch, and after each end come back (paced, with backoff) until
/// stopped or the mailbox is gone.
fn folder_loop(mut w: FolderWatch) {
    let mut failures = 0u32;
    loop {
        if w.stop.pause(backoff(failures)) || w.stop.pause(w.pace.slot()) {
            return;
        }
        let (app, id) = (w.app.clone(), w.mailbox.clone());
        let m = match w
            .on_runtime(async move { app.db.mailbox(&id).await.map_err(|e| e.to_string()) })
        {
            Ok(Some(m)) => m,
            Ok(None) => return w.stop.stop(),
            Err(e) => {
                log::warn!("watcher {}: {e}", w.mailbox);
                failures += 1;
                continue;
            }
        };
        let started = Instant::now();
        let ended = session(&mut w, &m);
        let healthy = started.elapsed() >= HEALTHY;
        match ended {
            Ok(Ended::Stopped) => return,
            Ok(Ended::Bye {
                token_expired: true,
                ..
            }) => {
                WATCH.record(Watched::TokenExpired);
                failures = 0;
            }
            Ok(Ended::Bye { line, .. }) => {
                log::info!(
                    "watcher {} {}: the server ended the session: {}",
                    w.mailbox,
                    w.label(),
                    mailoauth::text::printable(&line)
                );
                failures = if healthy { 1 } else { failures + 1 };
            }
            Ok(Ended::Throttled(d, _)) => {
                WATCH.record(Watched::Throttled);
                log::info!(
                    "watcher {} {}: throttled; waiting {} ms as the server asks",
                    w.mailbox,
                    w.label(),
                    d.as_millis()
                );
                if w.stop.pause(d) {
                    return;
                }
                failures = 0;
            }
            // The others go on together; the missing one waits on its own.
            Ok(Ended::NoFolder { folder, .. }) if w.folders.len() > 1 => {
                w.split_off(&folder);
                failures = 0;
            }
            Ok(Ended::NoNotify(reply)) => {
                log::info!(
                    "watcher {}: the server refused NOTIFY ({}): one connection per folder",
                    w.mailbox,
                    mailoauth::text::printable(&reply)
                );
                w.keep_first();
                failures = 0;
            }
            Ok(Ended::NoFolder { folder, reply }) => {
                WATCH.record(Watched::NoFolder);
                log::warn!(
                    "watcher {} {folder}: the server has no folder {folder:?} ({}): fix `watch` of \
                     connector {} (folder names as the server lists them, `/` or `.` \
                     between levels as it uses); looking again in {} minutes",
                    w.mailbox,
                    mailoauth::text::printable(&reply),
                    m.connector,
                    NO_FOLDER_WAIT.as_secs() / 60
                );
                if w.stop.pause(NO_FOLDER_WAIT) {
                    return;
                }
            }
            Err(why) => {
                if w.stop.stopped() {
                    return;
                }
                WATCH.record(Watched::Failure);
                log::warn!("watcher {} {}: {why}", w.mailbox, w.label());
                failures = if healthy { 1 } else { failures + 1 };
            }
        }
    }
}

/// One logged-in session of the folders: token, login, watch.
fn session(w: &mut FolderWatch, m: &Mailbox) -> Result<Ended, String> {
    let app = w.app.clone();
    let app = &app;
    let account = app
        .tokens
        .account(m)
        .map_err(|e| crate::render::diagnosis(&e))?;
    let server = mail::server_for(&account, Service::Imap)
        .ok_or("the connector names no IMAP server to watch")?
        .clone();
    let (app2, m2) = (app.clone(), m.clone());
    let token = w
        .on_runtime(async move {
            app2.tokens
                .token(&m2, None)
                .await
                .map_err(|e| format!("no token: {}", crate::render::diagnosis(&e)))
        })?
        .token
        .token;
    // Log in on the runtime's blocking pool: the TLS handshake and
    // certificate checks are the deepest stack a watcher would ever touch,
    // and touched stack stays resident — on a few pool threads, not on each
    // of a thousand watcher threads.
    let acc = account.clone();
    let login = w
        .handle
        .block_on(
            w.handle
                .spawn_blocking(move || mail::imap::login(&acc, &server, &token, TIMEOUT)),
        )
        .map_err(|e| format!("the login task failed: {e}"))?;
    let mut s = match login {
        Ok(s) => s,
        // Exchange throttles logins too: wait what it asks, not our backoff.
        Err(Failure::Temporary { reply, .. }) if throttled(&reply).is_some() => {
            let d = throttled(&reply).unwrap_or_default();
            return Ok(Ended::Throttled(d, reply));
        }
        Err(f) => {
            return Err(match mail::diagnose(&account, Service::Imap, &f) {
                Some(d) => format!("{f}; cause: {}", d.cause),
                None => f.to_string(),
            });
        }
    };
    WATCH.record(Watched::Connect);
    WATCH.open(1);
    if let Some(st) = s.conn.stopper() {
        w.stop.hold(st);
    }
    if !s.has("NOTIFY") {
        w.keep_first();
    }
    let (app2, id, folders) = (app.clone(), m.id.clone(), w.folders.clone());
    let cursors = w.on_runtime(async move {
        let mut v = Vec::new();
        for f in folders {
            let c = app2.db.cursor(&id, &f).await.map_err(|e| e.to_string())?;
            v.push((f, c));
        }
        Ok(v)
    });
    let w = &*w;
    let r = cursors.and_then(|cursors| {
        let opts = watch::Options {
            renew: spread(app.tokens.settings().idle_renew),
            poll: w.poll,
            timeout: TIMEOUT,
            batch: BATCH,
        };
        let mut sink = Reporter { w, m };
        let ended = if let [(folder, cursor)] = cursors.as_slice() {
            watch::watch(&mut s, folder, *cursor, &opts, &mut sink)
        } else {
            watch::watch_folders(&mut s, &cursors, &opts, &mut sink)
        };
        ended.map_err(|f| f.to_string())
    });
    WATCH.open(-1);
    w.stop.forget();
    r
}

/// Where a folder's watch reports: event rows and the cursor, together.
struct Reporter<'a> {
    w: &'a FolderWatch,
    m: &'a Mailbox,
}

impl Reporter<'_> {
    fn write(&self, folder: &str, c: Cursor, batch: &[NewMessage]) -> Result<(), String> {
        let now = mailoauth::clock::now();
        let outbox = self.w.app.tokens.outbox();
        let mut events = Vec::new();
        for msg in batch {
            let key = format!("{}\n{folder}\n{}\n{}", self.m.id, c.uidvalidity, msg.uid);
            let path = format!(
                "/v1/mailboxes/{}/folders/{}/messages/{}",
                self.m.id,
                url::form_urlencoded::byte_serialize(folder.as_bytes())
                    .collect::<String>()
                    .replace('+', "%20"),
                msg.uid
            );
            events.extend(outbox.mail_event(
                "message.new",
                &key,
                self.m,
                json!({"message": {
                    "folder": folder,
                    "uid": msg.uid,
                    "uidvalidity": c.uidvalidity,
                    "size": msg.size,
                    "envelope": msg.envelope,
                    "path": path,
                }}),
                now,
            ));
        }
        let (app, id, folder) = (self.w.app.clone(), self.m.id.clone(), folder.to_owned());
        // The commit rouses the deliverer (`db::Wakes`).
        self.w.on_runtime(async move {
            app.db
                .advance_cursor(&id, &folder, c, &events, now)
                .await
                .map_err(|e| format!("events not written: {e}"))
        })
    }
}

impl watch::Sink for Reporter<'_> {
    fn seen(&mut self, folder: &str, c: Cursor, batch: Vec<NewMessage>) -> Result<(), String> {
        self.write(folder, c, &batch)?;
        for _ in &batch {
            WATCH.record(Watched::Message);
        }
        Ok(())
    }

    fn moved(&mut self, folder: &str, c: Cursor) -> Result<(), String> {
        self.write(folder, c, &[])
    }

    fn renewed(&mut self) {
        WATCH.record(Watched::IdleRenewal);
    }

    fn stopping(&self) -> bool {
        self.w.stop.stopped()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewals_are_spread_over_the_last_tenth_of_the_interval() {
        let renew = Duration::from_secs(1500);
        let got: Vec<Duration> = (0..200).map(|_| spread(renew)).collect();
        assert!(got.iter().all(|d| *d <= renew && *d >= renew.mul_f64(0.9)));
        let (lo, hi) = (got.iter().min().unwrap(), got.iter().max().unwrap());
        assert!(*hi - *lo > Duration::from_secs(60), "{lo:?}..{hi:?}");
    }

    #[test]
    fn backoff_doubles_within_its_upper_half_up_to_five_minutes() {
        assert_eq!(backoff(0), Duration::ZERO);
        for (n, top) in [(1, 1), (2, 2), (4, 8), (9, 256), (10, 300), (30, 300)] {
            for _ in 0..50 {
                let b = backoff(n);
                let top = Duration::from_secs(top);
                assert!(b <= top && b >= top / 2, "{n}: {b:?}");
            }
        }
    }

    #[test]
    fn the_pace_spreads_connections_at_the_rate() {
        let p = Pace::new(50.0);
        let waits: Vec<Duration> = (0..100).map(|_| p.slot()).collect();
        // The hundredth connection waits about two seconds; none jumps the queue.
        assert!(waits[99] >= Duration::from_millis(1900), "{:?}", waits[99]);
        assert!(waits.windows(2).all(|w| w[1] >= w[0]));
    }

    #[test]
    fn a_stopped_pause_ends_at_once() {
        let s = Arc::new(Stop::default());
        let s2 = s.clone();
        let t = std::thread::spawn(move || s2.pause(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(50));
        let at = Instant::now();
        s.stop();
        assert!(t.join().unwrap());
        assert!(at.elapsed() < Duration::from_secs(2));
    }
}
