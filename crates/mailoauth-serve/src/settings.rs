//! The `[serve]` section of the config file, and connectors as core accounts.
//!
//! Owns: reading `[serve]` (listen address, public base URL, database URL,
//! master key source, connectors) with the defaults that let `mailoauth-serve`
//! start on a fresh machine, and turning a connector plus a mailbox address into
//! the core's [`Account`] — so provider data, scopes and config errors are the
//! core's. Must not: open the database or the network.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use mailoauth::config::{Config, SecretSource};
use mailoauth::providers::{self, Account};
use mailoauth::{Error, paths};

/// Where the service listens when the config does not say: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8470";

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServe {
    listen: Option<String>,
    base_url: Option<String>,
    database: Option<String>,
    master_key: Option<SecretSource>,
    master_key_file: Option<PathBuf>,
    /// Reverse proxies whose `X-Forwarded-*` headers count (needed for a
    /// non-loopback bind).
    #[serde(default)]
    behind_proxy: Vec<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    max_connections: Option<usize>,
    header_read_timeout: Option<u64>,
    idle_timeout: Option<u64>,
    #[serde(default)]
    connectors: BTreeMap<String, toml::Table>,
    #[serde(default)]
    webhooks: Vec<String>,
    webhook_secret: Option<SecretSource>,
    #[serde(default)]
    webhook_private_ranges: bool,
    refresh_rate: Option<f64>,
    refresh_ahead: Option<u64>,
    keep_alive_days: Option<u64>,
    keep_fresh: Option<bool>,
    lease_ttl: Option<u64>,
    watch_lease: Option<u64>,
    idle_renew: Option<u64>,
    reconnect_rate: Option<f64>,
}

/// Refreshes per second per provider (token endpoint host) and node, unless
/// the config says: far below what Microsoft and Google throttle at, and
/// 36,000 an hour is still ten thousand mailboxes' hourly tokens.
pub const DEFAULT_REFRESH_RATE: f64 = 10.0;
/// Seconds before expiry the background refresher renews a token: time
/// for a whole provider's mailboxes at the rate, well before `min_validity`.
pub const DEFAULT_REFRESH_AHEAD: u64 = 15 * 60;
/// Lease lifetime: longer than one token request with its retries, short
/// enough that a dead node's mailboxes move on within a minute.
pub const DEFAULT_LEASE_TTL: u64 = 60;
/// Refresh tokens die of disuse (Microsoft: 90 days, Google: 6 months unused);
/// renew each at least this often.
pub const DEFAULT_KEEP_ALIVE_DAYS: u64 = 7;

/// Connector keys the service reads and the core account does not know.
const SERVICE_KEYS: &[&str] = &[
    "send_via",
    "allow_send_as",
    "graph_url",
    "watch",
    "watch_poll",
    "watch_connections",
];

/// Seconds a node's lease on a mailbox's watcher lasts (renewed every third
/// of it): how long a dead node's mailboxes go unwatched.
pub const DEFAULT_WATCH_LEASE: u64 = 30;
/// IDLE is re-issued this often: under the 29 minutes after which servers
/// may end an idle IDLE (RFC 2177), with room for a slow round trip.
pub const DEFAULT_IDLE_RENEW: u64 = 25 * 60;
/// Watcher (re)connections per second per node: a restarted server or node
/// gets its watchers back spread out, not as one burst.
pub const DEFAULT_RECONNECT_RATE: f64 = 50.0;
/// Without IDLE, a folder is looked at this often unless `watch_poll` says.
pub const DEFAULT_WATCH_POLL: u64 = 60;
/// Connections one mailbox's watcher may hold (one per folder) unless
/// `watch_connections` says: below Gmail's 15 and Exchange Online's 20
/// simultaneous IMAP connections, leaving room for the user's own clients.
pub const DEFAULT_WATCH_CONNECTIONS: usize = 5;

/// What a connector's mailboxes watch.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The folders (one IMAP connection each); empty: not watched.
    pub folders: Vec<String>,
    /// How often a folder is looked at when the server has no IDLE.
    pub poll: Duration,
}

/// A connector's send limit unless it sets `max_message_size`: Exchange
/// Online's default send limit (its own `max_message_size` also bounds what
/// the service's fetches accept).
pub const DEFAULT_MAX_SEND_SIZE: u64 = 35 * 1024 * 1024;

/// How a connector's mailboxes send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendVia {
    /// SMTP submission with XOAUTH2; Graph when the provider says SMTP AUTH
    /// is disabled (`535 5.7.139`).
    Smtp,
    /// Microsoft Graph `sendMail` only.
    Graph,
}

/// A connector's mail options.
#[derive(Debug, Clone)]
pub struct MailOptions {
    /// SMTP first, or Graph only.
    pub send_via: SendVia,
    /// Whether a From other than the mailbox is passed on (the mailbox holds
    /// SendAs rights); refused before connecting otherwise.
    pub allow_send_as: bool,
    /// Graph's base URL (default: the Microsoft cloud's).
    pub graph_url: Option<String>,
    /// The largest message accepted for sending, in bytes.
    pub max_message_size: u64,
}

/// Where the master key comes from.
#[derive(Debug)]
pub enum MasterKeySource {
    /// `master_key = …` in `[serve]` (env, command or literal, like `client_secret`).
    Configured(SecretSource),
    /// A key file: `master_key_file = "…"`, or when nothing is configured the
    /// one under the state dir, created on the first start of an empty database
    /// and required ever after.
    File(PathBuf),
}

/// The parsed `[serve]` section.
#[derive(Debug)]
pub struct Settings {
    /// The config file it came from (for errors).
    pub path: PathBuf,
    /// Listen address.
    pub listen: SocketAddr,
    /// Public base URL; the redirect URI is `{base_url}/oauth/callback`.
    pub base_url: String,
    /// `sqlite://…` or `postgres://…`.
    pub database: String,
    /// The master key's source.
    pub master_key: MasterKeySource,
    /// Trusted reverse proxies: only their `X-Forwarded-*` headers count.
    pub behind_proxy: Vec<IpAddr>,
    /// TLS certificate chain and private key (PEM files), when the service
    /// terminates TLS itself.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Connection limits and timeouts.
    pub limits: Limits,
    /// Connectors by name, as core account tables without `user`.
    connectors: BTreeMap<String, toml::Table>,
    /// Webhook URLs for events (HTTPS, or HTTP to loopback).
    pub webhooks: Vec<String>,
    /// The webhooks' signing secret (required with `webhooks`).
    pub webhook_secret: Option<SecretSource>,
    /// Whether webhook targets may resolve to private address ranges.
    pub webhook_private_ranges: bool,
    /// Background refreshes per second per provider, per node.
    pub refresh_rate: f64,
    /// Seconds before expiry the background refresher renews.
    pub refresh_ahead: i64,
    /// Longest time between two refreshes of a mailbox, in seconds.
    pub keep_alive: i64,
    /// Whether the background refresher renews tokens ahead of expiry (else
    /// only the keep-alive, and requests refresh what they need).
    pub keep_fresh: bool,
    /// Seconds a node's refresh lease on a mailbox lasts (renewed while its
    /// request runs): how long a dead node's refresh blocks the others.
    pub lease_ttl: u64,
    /// Seconds a node's watcher lease lasts (renewed every third of it).
    pub watch_lease: u64,
    /// How often an IDLE is ended and re-issued.
    pub idle_renew: Duration,
    /// Watcher (re)connections per second per node.
    pub reconnect_rate: f64,
}

/// How many connections, and how long each may take (see `edge`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// From a request's first byte to its last header byte (also the TLS
    /// handshake).
    pub header_read: Duration,
    /// Nothing moving (no byte either way, no request being handled): closed.
    /// This is the keep-alive idle time.
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 1024,
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(60),
        }
    }
}

impl Settings {
    /// Read `[serve]` from the config at `path` (a missing file is an empty
    /// config: the defaults serve on loopback with an embedded database);
    /// `database` and `listen` override the configured ones (`--database`,
    /// `--listen`; the base URL still follows the configured listen address).
    pub fn load(
        path: &Path,
        database: Option<&str>,
        listen: Option<&str>,
    ) -> Result<Settings, Error> {
        let config = match Config::load(path) {
            Ok(c) => c,
            Err(Error::NoConfig { .. }) => Config::parse("", path)?,
            Err(e) => return Err(e),
        };
        let raw: RawServe = match config.serve.clone() {
            None => RawServe::default(),
            Some(t) => t.try_into().map_err(|e: toml::de::Error| Error::Config {
                path: path.to_owned(),
                line: None,
                message: format!("[serve]: {}", e.message().trim_end()),
            })?,
        };
        let err = |message: String| Error::Config {
            path: path.to_owned(),
            line: None,
            message,
        };
        let configured: SocketAddr = raw
            .listen
            .as_deref()
            .unwrap_or(DEFAULT_LISTEN)
            .parse()
            .map_err(|_| {
                err(
                    "[serve] `listen` must be an address with a port, e.g. \"127.0.0.1:8470\""
                        .into(),
                )
            })?;
        let listen: SocketAddr = match listen {
            Some(l) => l.parse().map_err(|_| {
                err(format!(
                    "--listen {l}: give an address with a port, e.g. 127.0.0.1:8470"
                ))
            })?,
            None => configured,
        };
        let mut behind_proxy = Vec::new();
        for a in &raw.behind_proxy {
            behind_proxy.push(a.trim().parse::<IpAddr>().map_err(|_| {
                err(format!(
                    "[serve] `behind_proxy`: {a:?} is not an IP address; list the reverse proxies' \
                     addresses, e.g. behind_proxy = [\"10.0.0.5\"]"
                ))
            })?);
        }
        let tls = match (raw.tls_cert, raw.tls_key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(err(
                    "[serve] `tls_cert` is set but `tls_key` is not: give both (PEM files)".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(err(
                    "[serve] `tls_key` is set but `tls_cert` is not: give both (PEM files)".into(),
                ));
            }
        };
        if !listen.ip().is_loopback() && behind_proxy.is_empty() && tls.is_none() {
            return Err(err(format!(
                "[serve] `listen` = {listen} is not a loopback address: plain HTTP there would send \
                 API keys and tokens in clear. Either serve TLS yourself with `tls_cert = \"cert.pem\"` \
                 and `tls_key = \"key.pem\"`, or put the service behind a TLS reverse proxy and name it \
                 with `behind_proxy = [\"ADDRESS\"]`; or listen on 127.0.0.1"
            )));
        }
        let mut limits = Limits::default();
        if let Some(n) = raw.max_connections {
            if n == 0 {
                return Err(err(
                    "[serve] `max_connections` must be at least 1 (default 1024)".into(),
                ));
            }
            limits.max_connections = n;
        }
        for (key, value, slot) in [
            (
                "header_read_timeout",
                raw.header_read_timeout,
                &mut limits.header_read,
            ),
            ("idle_timeout", raw.idle_timeout, &mut limits.idle),
        ] {
            match value {
                Some(0) => {
                    return Err(err(format!(
                        "[serve] `{key}` must be a number of seconds of at least 1"
                    )));
                }
                Some(s) => *slot = Duration::from_secs(s),
                None => {}
            }
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base_url = raw
            .base_url
            .unwrap_or_else(|| format!("{scheme}://{configured}"))
            .trim_end_matches('/')
            .to_owned();
        providers::check_url(&base_url).map_err(|why| err(format!("[serve] `base_url`: {why}")))?;
        let database = match database.map(str::to_owned).or(raw.database) {
            Some(d) => d,
            None => format!("sqlite://{}", paths::state_dir().join("serve.db").display()),
        };
        if !(database.starts_with("sqlite:")
            || database.starts_with("postgres://")
            || database.starts_with("postgresql://"))
        {
            return Err(err(
                "[serve] `database` must be `sqlite:///path/to/file.db` or `postgres://user@host/db`".into(),
            ));
        }
        let master_key = match (raw.master_key, raw.master_key_file) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "[serve] set `master_key` or `master_key_file`, not both".into(),
                ));
            }
            (Some(s), None) => MasterKeySource::Configured(s),
            (None, Some(f)) => MasterKeySource::File(f),
            (None, None) => MasterKeySource::File(paths::state_dir().join("serve.key")),
        };
        let settings = Settings {
            path: path.to_owned(),
            listen,
            base_url,
            database,
            master_key,
            behind_proxy,
            tls,
            limits,
            connectors: raw.connectors,
            webhooks: raw.webhooks,
            webhook_secret: raw.webhook_secret,
            webhook_private_ranges: raw.webhook_private_ranges,
            refresh_rate: raw.refresh_rate.unwrap_or(DEFAULT_REFRESH_RATE),
            refresh_ahead: raw.refresh_ahead.unwrap_or(DEFAULT_REFRESH_AHEAD) as i64,
            keep_alive: raw.keep_alive_days.unwrap_or(DEFAULT_KEEP_ALIVE_DAYS) as i64 * 86_400,
            keep_fresh: raw.keep_fresh.unwrap_or(true),
            lease_ttl: raw.lease_ttl.unwrap_or(DEFAULT_LEASE_TTL),
            watch_lease: raw.watch_lease.unwrap_or(DEFAULT_WATCH_LEASE),
            idle_renew: Duration::from_secs(raw.idle_renew.unwrap_or(DEFAULT_IDLE_RENEW)),
            reconnect_rate: raw.reconnect_rate.unwrap_or(DEFAULT_RECONNECT_RATE),
        };
        if !(3..=600).contains(&settings.watch_lease) {
            return Err(err("[serve] `watch_lease` must be 3 to 600 seconds".into()));
        }
        if !(1..=DEFAULT_IDLE_RENEW).contains(&settings.idle_renew.as_secs()) {
            return Err(err(format!(
                "[serve] `idle_renew` must be 1 to {DEFAULT_IDLE_RENEW} seconds (servers may end an IDLE after 29 minutes)"
            )));
        }
        if !(settings.reconnect_rate >= 0.1 && settings.reconnect_rate <= 10_000.0) {
            return Err(err(
                "[serve] `reconnect_rate` must be 0.1 to 10000 connections per second".into(),
            ));
        }
        for c in settings.connectors.keys() {
            settings.watch(c)?;
        }
        if !(2..=600).contains(&settings.lease_ttl) {
            return Err(err("[serve] `lease_ttl` must be 2 to 600 seconds".into()));
        }
        for url in &settings.webhooks {
            crate::events::check_url(url)
                .map_err(|why| err(format!("[serve] `webhooks`: {why}")))?;
        }
        if !settings.webhooks.is_empty() && settings.webhook_secret.is_none() {
            return Err(err(
                "[serve] `webhooks` needs `webhook_secret` (like `client_secret`: a literal, \
                 { env = \"NAME\" } or { command = [...] }): receivers check each event's signature with it"
                    .into(),
            ));
        }
        if !(settings.refresh_rate > 0.0 && settings.refresh_rate <= 10_000.0) {
            return Err(err(
                "[serve] `refresh_rate` is refreshes per second per provider: give a number above 0 and at most 10000".into(),
            ));
        }
        if !(1..=365).contains(&(settings.keep_alive / 86_400)) {
            return Err(err("[serve] `keep_alive_days` must be 1 to 365".into()));
        }
        // A connector that cannot make an account is a config error now, not at
        // the first request.
        for name in settings.connectors.keys() {
            settings.mail(name)?;
            let a = settings.account(name, "check@example.invalid")?;
            if settings.refresh_ahead <= a.min_validity as i64 {
                return Err(err(format!(
                    "[serve] `refresh_ahead` ({} s) must be more than connector `{name}`'s `min_validity` \
                     ({} s): the refresher renews tokens before requests would have to",
                    settings.refresh_ahead, a.min_validity
                )));
            }
        }
        Ok(settings)
    }

    /// The connectors' names.
    pub fn connectors(&self) -> impl Iterator<Item = &str> {
        self.connectors.keys().map(String::as_str)
    }

    /// A connector's table as written (what discovery compares: `tenant`, `cloud`).
    pub fn connector_table(&self, connector: &str) -> Option<&toml::Table> {
        self.connectors.get(connector)
    }

    /// The core account for `user`'s mailbox through `connector`.
    pub fn account(&self, connector: &str, user: &str) -> Result<Account, Error> {
        let Some(table) = self.connectors.get(connector) else {
            return Err(Error::Usage(format!(
                "no connector `{connector}` in [serve.connectors] of {} (known: {})",
                self.path.display(),
                self.connectors
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        if table.contains_key("user") {
            return Err(Error::Config {
                path: self.path.clone(),
                line: None,
                message: format!(
                    "[serve.connectors.{connector}] must not set `user`: each mailbox brings its own"
                ),
            });
        }
        let mut account = table.clone();
        for k in SERVICE_KEYS {
            account.remove(*k);
        }
        account.insert("user".into(), toml::Value::String(user.to_owned()));
        let mut accounts = toml::Table::new();
        accounts.insert(connector.to_owned(), toml::Value::Table(account));
        let mut doc = toml::Table::new();
        doc.insert("accounts".into(), toml::Value::Table(accounts));
        let source = toml::to_string(&doc).map_err(|e| Error::Usage(e.to_string()))?;
        let config =
            Config::parse(&source, &self.path).map_err(|e| self.about_connector(connector, e))?;
        providers::resolve(&config, connector).map_err(|e| self.about_connector(connector, e))
    }

    /// The connector's mail options (the keys only the service reads).
    pub fn mail(&self, connector: &str) -> Result<MailOptions, Error> {
        let table = self.connectors.get(connector);
        let get = |k: &str| table.and_then(|t| t.get(k));
        let err = |message: String| Error::Config {
            path: self.path.clone(),
            line: None,
            message: format!("[serve.connectors.{connector}] {message}"),
        };
        let send_via = match get("send_via").map(|v| v.as_str()) {
            None | Some(Some("smtp")) => SendVia::Smtp,
            Some(Some("graph")) => SendVia::Graph,
            _ => return Err(err("`send_via` must be \"smtp\" or \"graph\"".into())),
        };
        let allow_send_as = match get("allow_send_as") {
            None => false,
            Some(toml::Value::Boolean(b)) => *b,
            Some(_) => return Err(err("`allow_send_as` must be true or false".into())),
        };
        let graph_url = match get("graph_url") {
            None => None,
            Some(toml::Value::String(u)) => {
                crate::events::check_url(u).map_err(|why| err(format!("`graph_url`: {why}")))?;
                Some(u.trim_end_matches('/').to_owned())
            }
            Some(_) => return Err(err("`graph_url` must be a URL".into())),
        };
        let max_message_size = match get("max_message_size") {
            None => DEFAULT_MAX_SEND_SIZE,
            Some(toml::Value::Integer(n)) if *n >= 1024 => *n as u64,
            Some(_) => {
                return Err(err(
                    "`max_message_size` must be a number of bytes of at least 1024".into(),
                ));
            }
        };
        Ok(MailOptions {
            send_via,
            allow_send_as,
            graph_url,
            max_message_size,
        })
    }

    /// What the connector's mailboxes watch (`watch = ["INBOX", …]`).
    pub fn watch(&self, connector: &str) -> Result<WatchOptions, Error> {
        let table = self.connectors.get(connector);
        let get = |k: &str| table.and_then(|t| t.get(k));
        let err = |message: String| Error::Config {
            path: self.path.clone(),
            line: None,
            message: format!("[serve.connectors.{connector}] {message}"),
        };
        let mut folders = Vec::new();
        match get("watch") {
            None => {}
            Some(toml::Value::Array(a)) => {
                for f in a {
                    match f.as_str() {
                        Some(f) if !f.is_empty() && !f.chars().any(char::is_control) => {
                            if !folders.iter().any(|x| x == f) {
                                folders.push(f.to_owned());
                            }
                        }
                        _ => {
                            return Err(err(
                                "`watch` must list folder names without control characters, e.g. watch = [\"INBOX\"]"
                                    .into(),
                            ));
                        }
                    }
                }
            }
            Some(_) => {
                return Err(err(
                    "`watch` must be a list of folders, e.g. [\"INBOX\"]".into()
                ));
            }
        }
        let most = match get("watch_connections") {
            None => DEFAULT_WATCH_CONNECTIONS,
            Some(toml::Value::Integer(n)) if (1..=50).contains(n) => *n as usize,
            Some(_) => return Err(err("`watch_connections` must be 1 to 50".into())),
        };
        if folders.len() > most {
            return Err(err(format!(
                "`watch` names {} folders but a mailbox may hold {most} connections (one per folder): \
                 watch fewer, or raise `watch_connections` within the provider's limit \
                 (Gmail 15, Exchange Online 20 per mailbox)",
                folders.len()
            )));
        }
        let poll = match get("watch_poll") {
            None => DEFAULT_WATCH_POLL,
            Some(toml::Value::Integer(n)) if (1..=3600).contains(n) => *n as u64,
            Some(_) => return Err(err("`watch_poll` must be 1 to 3600 seconds".into())),
        };
        Ok(WatchOptions {
            folders,
            poll: Duration::from_secs(poll),
        })
    }

    /// The largest body any connector's send route must read: its message
    /// limit in base64 (a JSON attachment) plus room for the rest.
    pub fn largest_send_body(&self) -> usize {
        let most = self
            .connectors
            .keys()
            .filter_map(|c| self.mail(c).ok())
            .map(|m| m.max_message_size)
            .max()
            .unwrap_or(DEFAULT_MAX_SEND_SIZE);
        (most as usize / 3 + 1) * 4 + 1024 * 1024
    }

    /// Errors from the synthetic account name the connector's section instead of
    /// a line of a document nobody wrote.
    fn about_connector(&self, connector: &str, e: Error) -> Error {
        match e {
            Error::Config { message, .. } => Error::Config {
                path: self.path.clone(),
                line: None,
                message: format!(
                    "[serve.connectors.{connector}]: {}",
                    message.replace(&format!("accounts.{connector}."), "")
                ),
            },
            other => other,
        }
    }
}
