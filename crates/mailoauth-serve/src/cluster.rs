//! The node among its peers: a heartbeat in the database, the count of live
//! nodes, and what other nodes changed that this node must see (API keys).
//!
//! Owns: this node's id, the heartbeat ([`HEARTBEAT`]; a node is live while
//! it beat within [`LIVE`]), the live-node count that divides cluster-wide
//! limits (the provider refresh rate: each node takes `rate / nodes`), and
//! reloading the API key table so a key revoked through any node or the
//! command line stops working everywhere within one heartbeat. Must not: own
//! work of its own (the refresher and deliverer claim theirs by
//! compare-and-swap) or stop serving when the database is down (the last
//! known count stands).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::api::App;

/// How often a node writes its heartbeat and reloads the key table.
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

    /// One heartbeat: write ours, count the live ones.
    pub async fn beat(&self, app: &App) {
        let now = mailoauth::clock::now();
        match app.db.heartbeat(&self.node, now, now - LIVE).await {
            Ok(n) => {
                let before = self.nodes.swap(n.max(1), Ordering::Relaxed);
                if before != n {
                    log::info!("cluster: {n} live node(s); shared limits are divided by {n}");
                }
            }
            // The last count stands: a node cut off from the database cannot
            // refresh anyway, and its peers stop counting it after LIVE.
            Err(e) => log::warn!("cluster: heartbeat not written: {e}"),
        }
    }
}

/// Beat and reload keys every [`HEARTBEAT`] until the process ends.
pub async fn run(app: Arc<App>) {
    loop {
        app.cluster.beat(&app).await;
        if let Err(e) = app.keys.reload().await {
            log::warn!("cluster: API keys not reloaded (revocations wait for the database): {e}");
        }
        tokio::time::sleep(HEARTBEAT).await;
    }
}
