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
//! - [`client`]: the front door ([`Client`]) and the one token hand-out path (a running
//!   daemon first, else the broker) that the CLI and Rust programs share.
//! - [`config`]: the TOML file, its schema and its errors (file, line, key); [`config::edit`]
//!   changes an account without losing the user's comments.
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
//! - [`remedy`]: what a user can do about a failure, as data each front end words itself.
//! - [`service`]: IMAP, POP3, SMTP as a type.
//! - [`sasl`]: XOAUTH2 and OAUTHBEARER initial responses.
//! - [`proto`]: IMAP, POP3 and SMTP logins as sans-I/O state machines (the client and the proxy drive them).
//! - [`tls`]: whom mail connections trust (system roots, `ca_file`, a pinned self-signed
//!   certificate) and why a handshake failed, typed for the diagnosis.
//! - [`mail`]: IMAP, POP3 and SMTP clients that authenticate with a token (`check`, `send`, `fetch`);
//!   [`mail::plan`] decides protocol, server and Maildir for every front end.
//! - [`snippet`]: ready configuration for the mail clients people run (mbsync, offlineimap, getmail, fetchmail, msmtp, neomutt, mutt, aerc, s-nail, git send-email, curl, python), quoted for shell and client.
//! - [`ipc`]: the daemon's socket protocol and its blocking client.
//! - [`discover`]: onboarding from an email address — provider, tenant, cloud and hosts
//!   from public signals, each with its reason.
//! - [`doctor`]: one account's whole chain checked as a checklist with a fix per failed line.
//! - [`dns`]: name resolution from /etc/hosts and resolv.conf's servers, without the C library;
//!   MX/SRV/TXT for onboarding.
//! - [`text`]: peer text made safe to show and keep (no control characters, no secrets).
//! - [`http`], [`random`], [`paths`]: plumbing.

#![warn(missing_docs)]

pub mod assertion;
pub mod broker;
pub mod client;
pub mod clock;
pub mod config;
pub mod diagnose;
pub mod discover;
pub mod dns;
pub mod doctor;
pub mod error;
pub mod flows;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod ipc;
pub mod jwt;
pub mod mail;
pub mod oauth;
pub mod paths;
pub mod proto;
pub mod providers;
pub mod random;
pub mod remedy;
pub mod sasl;
pub mod service;
pub mod snippet;
pub mod status;
pub mod store;
pub mod text;
pub mod tls;

pub use broker::Broker;
pub use client::{Client, TokenRequest};
pub use config::Config;
pub use error::{Error, Result};
pub use flows::LoginOptions;
pub use providers::Account;
