//! The library's front door: a loaded config and the per-account operations the
//! CLI, the daemon's clients and Rust programs call.
//!
//! Owns: the one way a token is handed out — ask a running daemon that serves
//! this config first (it answers from memory), else the account's broker (store,
//! refresh when due). The CLI's `token` and [`Client::token`] both go through
//! [`token`], so a Rust program never silently takes another path. Must not:
//! decide anything about token lifetimes (the broker does) or print.

use std::path::Path;

use crate::broker::Broker;
use crate::config::Config;
use crate::error::Result;
use crate::ipc;
use crate::paths;
use crate::providers::{self, Account};
use crate::sasl::{self, Mechanism};

/// Entry point for programs: a loaded config and per-account operations.
pub struct Client {
    config: Config,
}

/// What to hand out: an account's token for a resource, bare or as SASL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenRequest<'a> {
    /// Another resource of the same login (`None` = mail).
    pub resource: Option<&'a str>,
    /// The base64 initial response of this mechanism instead of the bare token.
    pub sasl: Option<Mechanism>,
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

    /// The token lifecycle of account `name` (no daemon involved), with this
    /// machine's ports (see [`Broker::with_ports`] for others).
    pub fn broker(&self, name: &str) -> Result<Broker> {
        Broker::new(self.account(name)?)
    }

    /// A valid access token for the account's mail resource.
    pub fn token(&self, name: &str) -> Result<String> {
        self.hand_out(name, TokenRequest::default())
    }

    /// A valid access token for another resource of the same login (e.g. `graph`).
    pub fn token_for(&self, name: &str, resource: &str) -> Result<String> {
        self.hand_out(
            name,
            TokenRequest {
                resource: Some(resource),
                sasl: None,
            },
        )
    }

    /// A token (or SASL initial response) as `mailoauth token` hands it out:
    /// from the daemon when one serves this config, else from the broker.
    pub fn hand_out(&self, name: &str, req: TokenRequest<'_>) -> Result<String> {
        if !self.config.path.as_os_str().is_empty()
            && let Some(v) = ipc::daemon_token(&self.config.path, name, req.resource, req.sasl)
        {
            return Ok(v);
        }
        from_broker(&self.broker(name)?, req)
    }
}

/// [`Client::hand_out`] for the config at `config`, asking the daemon before the
/// config is even parsed: the path `mailoauth token` takes on every mail-client
/// connection, so a running daemon answers it without any file being read.
pub fn token(config: &Path, name: &str, req: TokenRequest<'_>) -> Result<String> {
    if let Some(v) = ipc::daemon_token(config, name, req.resource, req.sasl) {
        return Ok(v);
    }
    from_broker(&Client::with_config_file(config)?.broker(name)?, req)
}

fn from_broker(broker: &Broker, req: TokenRequest<'_>) -> Result<String> {
    let token = broker.token(req.resource)?;
    Ok(match req.sasl {
        None => token,
        Some(m) => sasl::initial_response(m, broker.account(), None, &token),
    })
}
