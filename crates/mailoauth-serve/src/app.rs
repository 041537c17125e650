//! Start-up: settings → database → keys → the HTTP server, until SIGTERM.
//!
//! Owns: the order of start-up and its refusals (a wrong or missing master key
//! stops the start before anything is written), and graceful shutdown. Must
//! not: contain request handling (`api`) or token logic (`tokens`).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};

use mailoauth::Error;

use crate::api::{self, App};
use crate::db::Db;
use crate::keys::KeyTable;
use crate::ports::DataKeys;
use crate::seal::{self, Key};
use crate::settings::Settings;
use crate::tokens::Tokens;

/// Open the database and the data keys under the master key. Refuses, without
/// writing, when the master key does not open the stored data keys.
pub async fn open(settings: &Settings) -> Result<(Db, DataKeys), Error> {
    let db = Db::open(&settings.database).await?;
    let count = db.data_key_count().await?;
    let master = seal::master_key(&settings.master_key, count == 0)?;
    let rows = db.data_keys().await?;
    let mut all = HashMap::new();
    for (id, wrapped, master_id) in &rows {
        if *master_id != master.id() {
            return Err(wrong_master(master_id, master.id()));
        }
        let key = master
            .unwrap_key(id, wrapped)
            .ok_or_else(|| wrong_master(master_id, master.id()))?;
        all.insert(id.clone(), key);
    }
    let current = match rows.last() {
        Some((id, _, _)) => all.remove(id).expect("just inserted"),
        None if count > 0 => {
            return Err(Error::Usage(
                "the database has data keys but none is active; restore the database".into(),
            ));
        }
        None => {
            let key = Key::generate();
            db.add_data_key(
                key.id(),
                &master.wrap(&key),
                master.id(),
                mailoauth::clock::now(),
            )
            .await?;
            key
        }
    };
    let current_id = current.id().to_owned();
    let mut keys = DataKeys {
        current,
        all: HashMap::new(),
    };
    for (id, k) in all {
        keys.all.insert(id, k);
    }
    // The current key opens rows too: keep one copy by id.
    let again = Key::parse(&keys.current.to_text()).expect("own key parses");
    keys.all.insert(current_id, again);
    Ok((db, keys))
}

fn wrong_master(stored: &str, given: &str) -> Error {
    Error::Usage(format!(
        "the master key (id {given}) is not the one the database's data keys are wrapped with (id {stored}): \
         give the right `master_key` (or restore its key file); nothing was changed"
    ))
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
    let app = Arc::new(App {
        settings: settings.clone(),
        tokens: Tokens::new(db.clone(), Arc::new(keys), settings.clone()),
        keys: KeyTable::load(db.clone()).await?,
        db: db.clone(),
        audit: tx,
        metrics: crate::metrics::Metrics::new(!settings.behind_proxy.is_empty()),
        admin: Default::default(),
        reconnects: Default::default(),
    });
    // Background work; each task ends with the runtime.
    tokio::spawn(crate::refresher::run(app.clone()));
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
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| Error::io(format!("cannot listen on {}", settings.listen), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("cannot read the listen address", e))?;
    // The one line a wrapper waits for (tests, systemd notify scripts).
    eprintln!(
        "mailoauth-serve: listening on http://{local} (base URL {})",
        settings.base_url
    );
    let sig = |k| signal(k).map_err(|e| Error::io("cannot install signal handlers", e));
    let (mut term, mut int) = (sig(SignalKind::terminate())?, sig(SignalKind::interrupt())?);
    // The peer address: /metrics answers loopback peers without a key.
    let service =
        api::router(app.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
        .await
        .map_err(|e| Error::io("the HTTP server stopped", e))?;
    // Flush the audit queue: close it, let the writer finish its last batch.
    drop(app);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), writer).await;
    Ok(())
}
