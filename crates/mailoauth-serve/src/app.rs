//! Start-up: settings → database → keys → the HTTP server (`edge`), until SIGTERM.
//!
//! Owns: the order of start-up and its refusals (a wrong or missing master key
//! stops the start before anything is written), and graceful shutdown. Must
//! not: contain request handling (`api`) or token logic (`tokens`).

use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};

use mailoauth::Error;

use crate::api::{self, App};
use crate::db::Db;
use crate::edge;
use crate::keyops::{self, DataKeys};
use crate::keys::KeyTable;
use crate::seal;
use crate::settings::Settings;
use crate::tokens::Tokens;

/// Open the database and the data keys under the master key. Refuses, without
/// writing, when the master key does not open the stored data keys.
pub async fn open(settings: &Settings) -> Result<(Db, DataKeys), Error> {
    let db = Db::open(&settings.database).await?;
    let count = db.data_key_count().await?;
    let master = seal::master_key(&settings.master_key, count == 0)?;
    let keys = keyops::load(&db, master).await?;
    Ok((db, keys))
}

/// Serve until SIGTERM or SIGINT.
pub async fn run(settings: Settings) -> Result<(), Error> {
    let settings = Arc::new(settings);
    // Resolved before anything starts: a missing secret is a start-up error.
    let webhook_secret = match &settings.webhook_secret {
        Some(s) => Some(Arc::new(s.resolve("[serve] webhook_secret")?)),
        None => None,
    };
    let (db, keys) = open(&settings).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(100_000);
    let writer = tokio::spawn(api::audit_writer(db.clone(), rx));
    let tokens = Tokens::new(db.clone(), Arc::new(keys), settings.clone());
    let app = Arc::new(App {
        settings: settings.clone(),
        cluster: crate::cluster::Cluster::new(tokens.node().to_owned()),
        tokens,
        keys: KeyTable::load(db.clone()).await?,
        db: db.clone(),
        audit: tx,
        metrics: crate::metrics::Metrics::new(!settings.behind_proxy.is_empty()),
        reconnects: Default::default(),
        guard: Default::default(),
        watch: Default::default(),
    });
    // Background work; each task ends with the runtime. The first heartbeat
    // comes before the refresher starts, so it begins with its right share.
    let _ = app.cluster.beat(&app).await;
    tokio::spawn(crate::cluster::run(app.clone()));
    let refresher = tokio::spawn(crate::refresher::run(app.clone()));
    let sender = tokio::spawn(crate::sender::run(app.clone()));
    tokio::spawn(crate::watcher::run(app.clone()));
    if let Some(secret) = webhook_secret {
        tokio::spawn(
            crate::events::Deliverer {
                db,
                urls: settings.webhooks.clone(),
                secret,
                private_ranges: settings.webhook_private_ranges,
            }
            .run(),
        );
    }
    // TLS files are read before binding: a bad one stops the start at once.
    let tls = edge::tls_acceptor(&settings)?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| Error::io(format!("cannot listen on {}", settings.listen), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("cannot read the listen address", e))?;
    // The one line a wrapper waits for (tests, systemd notify scripts).
    eprintln!(
        "mailoauth-serve: listening on {}://{local} (base URL {})",
        if tls.is_some() { "https" } else { "http" },
        settings.base_url
    );
    let sig = |k| signal(k).map_err(|e| Error::io("cannot install signal handlers", e));
    let (mut term, mut int) = (sig(SignalKind::terminate())?, sig(SignalKind::interrupt())?);
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    edge::serve(listener, api::router(app.clone()), &settings, tls, stop).await?;
    // Flush the audit queue: close it (the refresher holds the app too), let
    // the writer finish its last batch.
    refresher.abort();
    sender.abort();
    let _ = refresher.await;
    let _ = sender.await;
    drop(app);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), writer).await;
    Ok(())
}
