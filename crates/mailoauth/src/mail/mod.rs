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
pub mod plan;
pub mod pop;
pub mod send;
pub mod smtp;

use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::config::Service;
use crate::providers::{Account, Server};
use crate::sasl::{self, Mechanism};
use conn::ConnError;

/// How a check went wrong.
#[derive(Debug, Clone)]
pub enum Failure {
    /// No TCP connection (exit 4).
    Unreachable(String),
    /// TLS failed (certificate, version).
    Tls(String),
    /// The server does not speak what we expect (or offers no bearer-token SASL).
    Protocol(String),
    /// The server refused authentication (or the harmless command after it): exit 5.
    Refused {
        /// The server's reply line, verbatim.
        reply: String,
        /// The decoded SASL error challenge, if the server sent one (Gmail's JSON).
        challenge: Option<String>,
        /// What we were doing (`AUTHENTICATE`, `SELECT INBOX`, `MAIL FROM`…).
        step: &'static str,
    },
}

impl From<ConnError> for Failure {
    fn from(e: ConnError) -> Self {
        match e {
            ConnError::Unreachable(s) => Failure::Unreachable(s),
            ConnError::Tls(s) => Failure::Tls(s),
            ConnError::Protocol(s) => Failure::Protocol(s),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unreachable(s) => write!(f, "unreachable: {s}"),
            Failure::Tls(s) => write!(f, "TLS: {s}"),
            Failure::Protocol(s) => write!(f, "{s}"),
            Failure::Refused {
                reply,
                step,
                challenge,
            } => {
                write!(f, "{step} refused: {reply}")?;
                if let Some(c) = challenge {
                    write!(f, " (challenge {c})")?;
                }
                Ok(())
            }
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

/// Pick the mechanism: XOAUTH2 when offered (what Exchange and Gmail expect), else OAUTHBEARER.
pub fn choose(offered: &[String]) -> Result<Mechanism, Failure> {
    let has = |m: &str| offered.iter().any(|o| o.eq_ignore_ascii_case(m));
    if has("XOAUTH2") {
        Ok(Mechanism::Xoauth2)
    } else if has("OAUTHBEARER") {
        Ok(Mechanism::Oauthbearer)
    } else {
        Err(Failure::Protocol(format!(
            "the server offers no XOAUTH2 or OAUTHBEARER (it offers: {}); OAuth is not enabled for this protocol there",
            if offered.is_empty() {
                "nothing".to_owned()
            } else {
                offered.join(" ")
            }
        )))
    }
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

/// What a client sends after a SASL error challenge: XOAUTH2 an empty line,
/// OAUTHBEARER a single `\x01` (RFC 7628 §3.2.3).
pub fn challenge_answer(mech: Mechanism) -> &'static str {
    match mech {
        Mechanism::Xoauth2 => "",
        Mechanism::Oauthbearer => "AQ==",
    }
}

/// Decode a base64 challenge for display (it is JSON from the server, no secret).
pub fn decode_challenge(b64: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_else(|| b64.trim().to_owned())
}
