//! Talking to mail servers with a token: IMAP, POP3 and SMTP submission clients
//! that authenticate with XOAUTH2 or OAUTHBEARER, for `check` (and later `send`
//! and `fetch`).
//!
//! Owns: the blocking driver of the [`crate::proto`] login machines ([`login`])
//! over the [`conn`] transport, and one harmless command per protocol. The
//! protocol itself (greeting, STARTTLS, capabilities, the SASL exchange and its
//! error challenges) lives in `proto`, shared with the proxy. Must not: obtain
//! tokens (the broker does), explain failures (the `diagnose` catalog does, from
//! the [`Failure`] kept verbatim), or parse server replies itself.

pub mod check;
pub mod conn;
pub mod fetch;
pub mod imap;
mod maildir;
pub mod plan;
pub mod pop;
pub mod read;
pub mod send;
pub mod smtp;
pub mod watch;
pub mod wire;

use std::time::{Duration, Instant};

use crate::config::{Service, TlsMode};
use crate::diagnose::{self, Diagnosis};
use crate::proto::{self, Authenticated, Credentials, Step};
use crate::providers::{Account, Server};
use crate::sasl::Mechanism;
use conn::{Conn, ConnError};

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
    /// SASL mechanism used (`None`: the IMAP server greeted with PREAUTH).
    pub mechanism: Option<Mechanism>,
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

/// Connect to `server` and log in to `service` with `token`: the blocking driver
/// of the [`proto::Login`] machine. The TLS upgrade refuses buffered bytes
/// (see [`Conn::upgrade`]).
pub fn login(
    service: Service,
    account: &Account,
    server: &Server,
    token: &str,
    timeout: Duration,
) -> Result<(Conn, Authenticated), Failure> {
    let mut conn = Conn::connect(server, account.ca_file.as_deref(), timeout)?;
    let creds = Credentials::new(account, server, token);
    let mut m = proto::Login::new(service, server.tls == TlsMode::Starttls, creds);
    loop {
        match m.next() {
            Step::Send(b) => conn.write_all(&b)?,
            Step::SendSecret(b) => conn.write_all(&b)?,
            Step::StartTls => conn = conn.upgrade()?,
            Step::NeedLine => m.feed_line(&conn.read_line()?),
            Step::Done(a) => return Ok((conn, a)),
            Step::Failed(f) => return Err(f),
        }
    }
}

/// The catalog's cause and fix for a refusal, a temporary failure or a TLS
/// failure at `service`'s server (`None` for other failures, or replies the
/// catalog does not know).
pub fn diagnose(account: &Account, service: Service, f: &Failure) -> Option<Diagnosis> {
    match f {
        Failure::Refused {
            reply, challenge, ..
        } => diagnose::wire_reply(account, service.name(), reply, challenge.as_deref()),
        Failure::Tls(t) => Some(diagnose::tls_failure(
            account,
            service,
            server_for(account, service)?,
            t,
        )),
        Failure::Temporary { reply, step } => {
            Some(diagnose::temporary(account, service.name(), reply, step))
        }
        _ => None,
    }
}
