//! The node among its peers: a heartbeat in the database, the count of live
//! nodes, and what other nodes changed that this node must see.
//!
//! Owns: this node's id, the heartbeat ([`HEARTBEAT`]; a node is live while
//! it beat within [`LIVE`]), the live-node count that divides cluster-wide
//! limits (the provider refresh rate: each node takes `rate / nodes`),
//! reloading the API key table when the beat says it changed (so a key
//! revoked through any node or the command line stops working everywhere
//! within one heartbeat), rousing the sender, deliverer and refresher when
//! the beat says their work is due (they sleep otherwise: an idle node wakes
//! once per heartbeat, not once a second per worker), and the node's
//! housekeeping on the beat (memory checked against the mailboxes that still
//! exist, expired rows purged). Must not: do the work it rouses (its owners
//! claim it by compare-and-swap) or stop serving when the database is down
//! (the last known count stands).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::api::App;
use crate::db::Beat;

/// How often a node writes its heartbeat and reads what changed or fell due
/// (the only periodic wake-up of an idle node besides its watchers' lease beat).
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// A node that has not beaten for this long is not counted (it died, or lost
/// the database): its share of the limits goes to the others.
const LIVE: i64 = 10;

/// This node's view of the cluster.
pub struct Cluster {
    /// This node's id: host, process id and start time.
    pub node: String,
    nodes: AtomicI64,
}

impl Cluster {
    /// A node alone until its first heartbeat says otherwise.
    pub fn new(node: String) -> Cluster {
        Cluster {
            node,
            nodes: AtomicI64::new(1),
        }
    }

    /// Live nodes, this one included (at least 1).
    pub fn nodes(&self) -> i64 {
        self.nodes.load(Ordering::Relaxed).max(1)
    }

    /// This node's share of a cluster-wide per-second `rate`.
    pub fn share(&self, rate: f64) -> f64 {
        rate / self.nodes() as f64
    }

    /// One heartbeat: write ours, count the live ones; what it read, or
    /// `None` when the database did not answer.
    pub async fn beat(&self, app: &App) -> Option<Beat> {
        crate::metrics::ROUNDS.record(crate::metrics::Worker::Heartbeat);
        let now = mailoauth::clock::now();
        match app
            .db
            .heartbeat(&self.node, now, now - LIVE, crate::events::MAX_ATTEMPTS)
            .await
        {
            Ok(b) => {
                let n = b.nodes.max(1);
                let before = self.nodes.swap(n, Ordering::Relaxed);
                if before != n {
                    log::info!("cluster: {n} live node(s); shared limits are divided by {n}");
                }
                Some(b)
            }
            // The last count stands: a node cut off from the database cannot
            // refresh anyway, and its peers stop counting it after LIVE.
            Err(e) => {
                log::warn!("cluster: heartbeat not written: {e}");
                None
            }
        }
    }
}

/// Housekeeping every this many beats: memory against the mailboxes that
/// still exist (a mailbox deleted through another node leaves this node's
/// memory within 10 s).
const SWEEP_BEATS: u64 = 5;
/// Expired sign-ins and links deleted every this many beats (10 minutes).
const PURGE_BEATS: u64 = 300;
/// Nodes silent for an hour are history; looked for every this many beats.
const FORGET_BEATS: u64 = 30;

/// Beat every [`HEARTBEAT`] until the process ends: reload the keys when
/// they changed, rouse the workers whose work is due, keep house.
pub async fn run(app: Arc<App>) {
    let mut keys = None;
    for n in 1u64.. {
        tokio::time::sleep(HEARTBEAT).await;
        let now = mailoauth::clock::now();
        if let Some(b) = app.cluster.beat(&app).await {
            app.db.wakes().due(&b, now);
            if keys != Some(b.keys) {
                match app.keys.reload().await {
                    Ok(()) => keys = Some(b.keys),
                    Err(e) => log::warn!(
                        "cluster: API keys not reloaded (revocations wait for the database): {e}"
                    ),
                }
            }
        }
        if n % SWEEP_BEATS == 0 {
            match app.db.mailbox_ids().await {
                Ok(ids) => app.tokens.retain_only(&ids),
                Err(e) => log::warn!("cluster: cannot list mailboxes: {e}"),
            }
        }
        if n % PURGE_BEATS == 0
            && let Err(e) = app.db.purge_expired(now).await
        {
            log::warn!("cluster: expired links and sign-ins not purged: {e}");
        }
        if n % FORGET_BEATS == 0
            && let Err(e) = app.db.forget_nodes(now - 3600).await
        {
            log::warn!("cluster: old nodes not forgotten: {e}");
        }
    }
}
