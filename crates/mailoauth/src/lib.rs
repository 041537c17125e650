//! mailoauth: OAuth 2.0 for IMAP, POP and SMTP — acquire, keep and use tokens.
//!
//! The `mailoauth` binary is a thin shell over this library; a Rust program can
//! do everything the CLI does:
//!
//! ```no_run
//! let client = mailoauth::Client::new()?;          // $XDG_CONFIG_HOME/mailoauth/config.toml
//! let token = client.token("work")?;               // cached, refreshed when low
//! let sasl = mailoauth::sasl::xoauth2(&client.account("work")?.user, &token);
//! # Ok::<(), mailoauth::Error>(())
//! ```
//!
//! Module map (the library has no async runtime and no CLI parser; the
//! `mailoauth` executable, with its daemon and proxy, is the `mailoauth-cli` crate):
//! - [`config`]: the TOML file, its schema and its errors (file, line, key).
//! - [`providers`]: provider presets as data; resolves a config entry into an [`Account`].
//! - [`flows`]: acquiring tokens — authorization code + PKCE, device grant, client credentials.
//! - [`oauth`]: the token/device/revocation endpoint wire protocol and client authentication
//!   ([`assertion`] signs certificate credentials).
//! - [`store`]: where tokens live — keyring, 0600 file, encrypted file.
//! - [`broker`]: the token lifecycle — serve cached, refresh under a lease, rotate durably;
//!   it reaches store, lease, events, clock and token endpoint only through
//!   [`broker::ports`] (this machine's in [`broker::local`], test doubles in [`broker::memory`]).
//! - [`status`]: non-secret per-account status ("login required", last error) and notifications.
//! - [`diagnose`]: provider error codes and wire replies → cause and fix; token pre-flight.
//! - [`jwt`]: reading a token's claims (unverified) and base64url; [`clock`]: unix time.
//! - [`sasl`]: XOAUTH2 and OAUTHBEARER initial responses.
//! - [`mail`]: IMAP, POP3 and SMTP clients that authenticate with a token (`check`, `send`, `fetch`).
//! - [`snippet`]: ready configuration for mbsync, msmtp, offlineimap, neomutt, aerc, curl, python.
//! - [`ipc`]: the daemon's socket protocol and its blocking client.
//! - [`http`], [`random`], [`paths`]: plumbing.

pub mod assertion;
pub mod broker;
pub mod clock;
pub mod config;
pub mod diagnose;
pub mod error;
pub mod flows;
pub mod http;
pub mod ipc;
pub mod jwt;
pub mod mail;
pub mod oauth;
pub mod paths;
pub mod providers;
pub mod random;
pub mod sasl;
pub mod snippet;
pub mod status;
pub mod store;

use std::path::Path;

pub use broker::Broker;
pub use config::Config;
pub use error::{Error, Result};
pub use flows::LoginOptions;
pub use providers::Account;

/// Entry point for programs: a loaded config and per-account operations.
pub struct Client {
    config: Config,
}

impl Client {
    /// Load the default config (`MAILOAUTH_CONFIG`, else `$XDG_CONFIG_HOME/mailoauth/config.toml`).
    pub fn new() -> Result<Client> {
        Self::with_config_file(&paths::default_config_file())
    }

    /// Load a specific config file.
    pub fn with_config_file(path: &Path) -> Result<Client> {
        Ok(Client {
            config: Config::load(path)?,
        })
    }

    /// Use an already parsed config.
    pub fn with_config(config: Config) -> Client {
        Client { config }
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The resolved account `name`.
    pub fn account(&self, name: &str) -> Result<Account> {
        providers::resolve(&self.config, name)
    }

    /// The token lifecycle of account `name`, with this machine's ports (see
    /// [`Broker::with_ports`] for others).
    pub fn broker(&self, name: &str) -> Result<Broker> {
        Broker::new(self.account(name)?)
    }

    /// A valid access token for the account's mail resource.
    pub fn token(&self, name: &str) -> Result<String> {
        self.broker(name)?.token(None)
    }

    /// A valid access token for another resource of the same login (e.g. `graph`).
    pub fn token_for(&self, name: &str, resource: &str) -> Result<String> {
        self.broker(name)?.token(Some(resource))
    }
}
