//! `mailoauth-serve`: the multi-user delegation service.
//!
//! Applications ask it for fresh tokens of the mailboxes people (or
//! administrators) connected; it keeps every token encrypted in its database
//! and refreshes each one once across all nodes. A thin shell over the core
//! library: providers, flows and the token broker are the core's; this crate
//! adds the database ports, the HTTP API and start-up.
//!
//! Module map:
//! - [`settings`] — the `[serve]` section; connectors as core accounts.
//! - [`seal`] — master key, data keys, sealing rows.
//! - [`keyops`] — a node's data keys; `rotate-key` and `reencrypt`.
//! - [`db`] — SQLite / PostgreSQL, migrations, every query.
//! - [`ports`] — the broker's store, lease and events over a mailbox row.
//! - [`tokens`] — memory of fresh tokens, coalescing, the broker on the blocking pool.
//! - [`cluster`] — the node among its peers: heartbeat, live-node count, key reloads.
//! - [`refresher`] — background refreshes: schedule, claims between nodes, pacing per provider.
//! - [`events`] — webhook events: which transitions make them, signed delivery from the outbox.
//! - [`render`] — the service's words for errors and their fixes.
//! - [`keys`] — API keys and scopes.
//! - [`connect`] — connect links, the consent page, the provider's callback.
//! - [`discovery`] — which connector serves an address (a link that names none).
//! - [`api`] — HTTP routes and errors.
//! - [`outbox`] — what a send request must be to be accepted: raw or JSON (built into MIME).
//! - [`mail_api`] — the mail routes: send a message, its state in the outbox, read one raw.
//! - [`sender`] — delivering the outbox: SMTP over reused logins, Graph fallback, retries, events.
//! - [`graph`] — Microsoft Graph `sendMail`.
//! - [`watcher`] — receiving mail: watchers by lease, IDLE per folder, `message.new` events.
//! - [`guard`] — clients with too many refused credentials are turned away (429).
//! - [`edge`] — accepting connections: TLS, limits, timeouts, the client address.
//! - [`import`] — mailboxes with tokens obtained elsewhere (JSON lines on stdin).
//! - [`metrics`] — `/metrics`: counters, latency histogram, mailboxes by state.
//! - [`openapi`] — `/v1/openapi.json`, generated from the handlers.
//! - [`admin`] — the admin page: sign-in by admin key, mailboxes, re-consent links, admin steps.
//! - [`app`] — start-up and shutdown.
//! - [`cli`] — the command line.
#![warn(missing_docs)]

pub mod admin;
pub mod api;
pub mod app;
pub mod cli;
pub mod cluster;
pub mod connect;
pub mod db;
pub mod discovery;
pub mod edge;
pub mod events;
pub mod graph;
pub mod guard;
pub mod import;
pub mod keyops;
pub mod keys;
pub mod mail_api;
pub mod metrics;
pub mod openapi;
pub mod outbox;
pub mod ports;
pub mod refresher;
pub mod render;
pub mod seal;
pub mod sender;
pub mod settings;
pub mod tokens;
pub mod watcher;
