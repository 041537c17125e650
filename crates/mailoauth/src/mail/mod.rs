//! Talking to mail servers with a token: IMAP, POP3 and SMTP submission clients
//! that authenticate with XOAUTH2 or OAUTHBEARER, for `check` (and later `send`
//! and `fetch`).
//!
//! Owns: each protocol's greeting, STARTTLS, capability discovery, the SASL
//! exchange including the servers' error challenges (Gmail's base64 JSON, the
//! OAUTHBEARER `\x01` answer), and one harmless command per protocol. Must not:
//! obtain tokens (the broker does) or explain failures (the `diagnose` catalog
//! does, from the [`Failure`] kept here verbatim).

pub mod conn;
pub mod fetch;
pub mod imap;
pub mod pop;
pub mod send;
pub mod smtp;

use std::time::{Duration, Instant};

use crate::config::Service;
use crate::providers::{Account, Server};
use crate::sasl::{self, Mechanism};
use conn::ConnError;

pub use crate::proto::{Failure, challenge_answer, choose, decode_challenge};

impl From<ConnError> for Failure {
    fn from(e: ConnError) -> Self {
        match e {
            ConnError::Unreachable(s) => Failure::Unreachable(s),
            ConnError::Tls(s) => Failure::Tls(s),
            ConnError::Protocol(s) => Failure::Protocol(s),
        }
    }
}

/// A successful check.
#[derive(Debug, Clone)]
pub struct Success {
    /// SASL mechanism used.
    pub mechanism: Mechanism,
    /// What the harmless command said (e.g. "INBOX: 3 messages").
    pub detail: String,
}

/// Result of checking one protocol.
#[derive(Debug, Clone)]
pub struct Report {
    /// Which protocol.
    pub service: Service,
    /// `host:port (tls mode)`.
    pub server: String,
    /// Outcome.
    pub result: Result<Success, Failure>,
    /// Wall time.
    pub elapsed: Duration,
}

/// The server the account uses for `service`.
pub fn server_for(account: &Account, service: Service) -> Option<&Server> {
    match service {
        Service::Imap => account.imap.as_ref(),
        Service::Pop => account.pop.as_ref(),
        Service::Smtp => account.smtp.as_ref(),
    }
}

/// Connect, authenticate with `token`, run one harmless command.
pub fn check(
    account: &Account,
    service: Service,
    token: &str,
    timeout: Duration,
) -> Option<Report> {
    let server = server_for(account, service)?;
    let started = Instant::now();
    let result = match service {
        Service::Imap => imap::check(account, server, token, timeout),
        Service::Pop => pop::check(account, server, token, timeout),
        Service::Smtp => smtp::check(account, server, token, timeout),
    };
    Some(Report {
        service,
        server: format!("{}:{} ({:?})", server.host, server.port, server.tls).to_lowercase(),
        result,
        elapsed: started.elapsed(),
    })
}

/// The initial response for `mech`, naming `server` in OAUTHBEARER.
pub fn initial_response(
    mech: Mechanism,
    account: &Account,
    server: &Server,
    token: &str,
) -> String {
    sasl::initial_response(mech, account, Some(server), token)
}
