//! The mail protocols without I/O: IMAP, POP3 and SMTP logins with a bearer
//! token as state machines, shared by the blocking client (`mail`) and the
//! proxy's tokio driver, so both behave the same (PREAUTH, lower-case
//! capabilities, SASL error challenges, the 512-octet SMTP rule).
//!
//! A driver owns the socket and loops: [`Login::next`] says what to do
//! ([`Step`]): send a line, send a secret line (a SASL payload: traced redacted),
//! upgrade to TLS, or read a line and hand it to [`Login::feed_line`]; until
//! [`Step::Done`] or [`Step::Failed`]. The per-protocol modules also hold the
//! few post-login helpers the callers need (tagged IMAP responses, SMTP replies,
//! POP3 status and dot-unstuffed multi-line bodies).
//!
//! Owns: what the servers say and what to answer, the line limits (one named
//! constant per protocol), the mechanism choice and the [`Failure`] kept verbatim
//! for the `diagnose` catalog. Must not: do I/O, obtain tokens, explain failures,
//! or put a token or SASL payload in an error or `Debug` output.
//!
//! IDLE, ENVELOPE and CONDSTORE are further small machines in `imap` next to
//! [`imap::Response`] ([`imap::idle`], [`imap::data`]), fed lines the same way.

pub(crate) mod failure;
pub mod imap;
mod line;
pub mod pop;
pub mod smtp;

pub use line::{Lines, MAX_REPLY_BYTES, MAX_REPLY_LINE, MAX_REPLY_LINES, misbehaving};

use std::collections::VecDeque;

use base64::Engine as _;
use zeroize::Zeroizing;

use crate::config::Service;
use crate::providers::{Account, Server};
use crate::sasl::{self, Mechanism};

pub use failure::Failure;

/// A refusal of `step` with `service`'s `reply`, or a [`Failure::Temporary`]
/// when the reply says the server cannot answer now.
pub(crate) fn refused(
    service: Service,
    reply: String,
    challenge: Option<String>,
    step: &'static str,
) -> Failure {
    if is_temporary(service, &reply) {
        return Failure::Temporary { reply, step };
    }
    Failure::Refused {
        reply,
        challenge,
        step,
    }
}

/// Whether `reply` says "not now" rather than "no": the IMAP response code
/// `UNAVAILABLE` (RFC 5530) and Exchange's throttling reply, the POP3 code
/// `SYS/TEMP` (RFC 3206), any SMTP 4yz reply (RFC 5321 §4.2.1; 454 is RFC
/// 4954's "temporary authentication failure").
pub fn is_temporary(service: Service, reply: &str) -> bool {
    let upper = reply.to_ascii_uppercase();
    match service {
        Service::Imap => upper.contains("[UNAVAILABLE]") || upper.contains("REQUEST IS THROTTLED"),
        Service::Pop => upper.contains("[SYS/TEMP]"),
        Service::Smtp => reply.starts_with('4'),
    }
}

/// What a driver must do next.
pub enum Step {
    /// Write these bytes (a line with its CRLF).
    Send(Vec<u8>),
    /// Write these bytes, which carry a SASL payload: trace them redacted.
    SendSecret(Zeroizing<Vec<u8>>),
    /// Upgrade the connection to TLS now, refusing if bytes are already buffered
    /// (they would be plaintext read as if protected: STARTTLS injection).
    StartTls,
    /// Read one line and pass it to `feed_line`.
    NeedLine,
    /// Logged in.
    Done(Authenticated),
    /// The login failed.
    Failed(Failure),
}

/// Shows sent lines as text, and secret ones by their length only.
impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Send(b) => write!(f, "Send({:?})", String::from_utf8_lossy(b)),
            Step::SendSecret(b) => write!(f, "SendSecret([{} bytes redacted])", b.len()),
            Step::StartTls => f.write_str("StartTls"),
            Step::NeedLine => f.write_str("NeedLine"),
            Step::Done(a) => write!(f, "Done({a:?})"),
            Step::Failed(x) => write!(f, "Failed({x:?})"),
        }
    }
}

/// The outcome of a successful login.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The mechanism used; `None` when the server needed none (IMAP `PREAUTH`).
    pub mechanism: Option<Mechanism>,
    /// Capabilities after login (IMAP capabilities, POP3 CAPA lines, SMTP EHLO keywords).
    pub caps: Vec<String>,
}

/// The initial responses of both mechanisms, computed before the server says
/// which it offers. `Debug` never shows them.
pub struct Credentials {
    xoauth2: Zeroizing<String>,
    oauthbearer: Zeroizing<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials([redacted])")
    }
}

impl Credentials {
    /// For `account` logging in to `server` (OAUTHBEARER names it) with `token`.
    pub fn new(account: &Account, server: &Server, token: &str) -> Credentials {
        let ir = |m| Zeroizing::new(sasl::initial_response(m, account, Some(server), token));
        Credentials {
            xoauth2: ir(Mechanism::Xoauth2),
            oauthbearer: ir(Mechanism::Oauthbearer),
        }
    }

    /// The base64 initial response of `mech`.
    fn initial_response(&self, mech: Mechanism) -> &str {
        match mech {
            Mechanism::Xoauth2 => &self.xoauth2,
            Mechanism::Oauthbearer => &self.oauthbearer,
        }
    }
}

/// A login to any of the three protocols.
#[derive(Debug)]
pub enum Login {
    /// IMAP.
    Imap(imap::Login),
    /// POP3.
    Pop(pop::Login),
    /// SMTP submission.
    Smtp(smtp::Login),
}

impl Login {
    /// A login for `service`; `starttls` when the connection starts in plain
    /// text and must be upgraded (implicit TLS is the driver's business).
    pub fn new(service: Service, starttls: bool, creds: Credentials) -> Login {
        match service {
            Service::Imap => Login::Imap(imap::Login::new(starttls, creds)),
            Service::Pop => Login::Pop(pop::Login::new(starttls, creds)),
            Service::Smtp => Login::Smtp(smtp::Login::new(starttls, creds)),
        }
    }

    /// The longest line the driver should read for this protocol (CRLF excluded).
    pub fn max_line(&self) -> usize {
        match self {
            Login::Imap(_) => imap::MAX_LINE,
            Login::Pop(_) => pop::MAX_LINE,
            Login::Smtp(_) => smtp::MAX_LINE,
        }
    }

    /// Hand over one line the server sent (with or without its CRLF).
    pub fn feed_line(&mut self, line: &[u8]) {
        match self {
            Login::Imap(m) => m.core.feed(line, imap::MAX_LINE, |c, l| m.state.on(c, l)),
            Login::Pop(m) => m.core.feed(line, pop::MAX_LINE, |c, l| m.state.on(c, l)),
            Login::Smtp(m) => m.core.feed(line, smtp::MAX_LINE, |c, l| m.state.on(c, l)),
        }
    }

    /// What to do next.
    #[allow(clippy::should_implement_trait)] // not an iterator: it never ends by itself
    pub fn next(&mut self) -> Step {
        match self {
            Login::Imap(m) => m.core.next(),
            Login::Pop(m) => m.core.next(),
            Login::Smtp(m) => m.core.next(),
        }
    }
}

/// What every machine shares: queued steps, the final outcome, the credentials.
#[derive(Debug)]
pub(crate) struct Core {
    out: VecDeque<Step>,
    end: Option<Result<Authenticated, Failure>>,
    creds: Credentials,
    /// The mechanism, once chosen.
    mech: Option<Mechanism>,
    /// The decoded error challenge, once the server sent one.
    challenge: Option<String>,
    /// Whose replies these are (a temporary failure looks different in each).
    service: Service,
}

impl Core {
    fn new(service: Service, creds: Credentials) -> Core {
        Core {
            out: VecDeque::new(),
            end: None,
            creds,
            mech: None,
            challenge: None,
            service,
        }
    }

    fn next(&mut self) -> Step {
        if let Some(s) = self.out.pop_front() {
            return s;
        }
        match self.end.take() {
            Some(Ok(a)) => Step::Done(a),
            Some(Err(f)) => Step::Failed(f),
            None => Step::NeedLine,
        }
    }

    /// Check the line's length and text, then let the state handle it.
    fn feed(&mut self, raw: &[u8], max: usize, on: impl FnOnce(&mut Core, &str)) {
        if self.end.is_some() {
            return;
        }
        match line::text(raw, max) {
            Ok(l) => on(self, &l),
            Err(f) => self.fail(f),
        }
    }

    fn send(&mut self, line: &str) {
        self.out.push_back(Step::Send(line::crlf(line.as_bytes())));
    }

    fn send_secret(&mut self, line: &str) {
        self.out
            .push_back(Step::SendSecret(Zeroizing::new(line::crlf(
                line.as_bytes(),
            ))));
    }

    fn fail(&mut self, f: Failure) {
        self.out.clear();
        self.end = Some(Err(f));
    }

    fn done(&mut self, caps: Vec<String>) {
        let mechanism = self.mech;
        self.end = Some(Ok(Authenticated { mechanism, caps }));
    }

    /// Choose the mechanism from what the server offers; fails the login if none fits.
    fn choose(&mut self, offered: &[String]) -> Option<Mechanism> {
        match choose(offered) {
            Ok(m) => {
                self.mech = Some(m);
                Some(m)
            }
            Err(f) => {
                self.fail(f);
                None
            }
        }
    }

    fn ir(&self) -> &str {
        self.creds
            .initial_response(self.mech.expect("mechanism chosen"))
    }

    /// Keep the decoded error challenge and answer it so the server sends its
    /// final reply.
    fn on_challenge(&mut self, b64: &str) {
        self.challenge = Some(decode_challenge(b64));
        let mech = self.mech.expect("mechanism chosen");
        self.send(challenge_answer(mech));
    }

    fn refuse(&mut self, reply: String, step: &'static str) {
        let c = self.challenge.take();
        self.fail(refused(self.service, reply, c, step));
    }
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

/// What a client sends after a SASL error challenge: XOAUTH2 an empty line,
/// OAUTHBEARER a single `\x01` (RFC 7628 §3.2.3).
pub fn challenge_answer(mech: Mechanism) -> &'static str {
    match mech {
        Mechanism::Xoauth2 => "",
        Mechanism::Oauthbearer => "AQ==",
    }
}

/// Decode a base64 challenge for display (it is JSON from the server, no
/// secret), without the control characters a hostile server could put in it.
pub fn decode_challenge(b64: &str) -> String {
    let text = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_else(|| b64.trim().to_owned());
    crate::text::printable(&text).into_owned()
}

#[cfg(test)]
pub(crate) mod script {
    //! Test helper: run a login against a scripted server.

    use super::*;

    /// An account for the tests (Microsoft, alice@contoso.com).
    pub fn creds(token: &str) -> Credentials {
        let c = crate::config::Config::parse(
            "[accounts.a]\nprovider = \"microsoft\"\nuser = \"alice@contoso.com\"\nclient_id = \"c\"\n",
            std::path::Path::new("/c"),
        )
        .unwrap();
        let a = crate::providers::resolve(&c, "a").unwrap();
        let s = a.imap.clone().unwrap();
        Credentials::new(&a, &s, token)
    }

    /// What the client did, as text: `C: line`, `C: [secret N bytes]`, `TLS`.
    pub struct Run {
        pub said: Vec<String>,
        pub secrets: Vec<String>,
        pub end: Result<Authenticated, Failure>,
    }

    /// Feed `replies` one by one whenever the machine asks for a line.
    pub fn run(mut m: Login, replies: &[&str]) -> Run {
        let mut said = Vec::new();
        let mut secrets = Vec::new();
        let mut replies = replies.iter();
        loop {
            match m.next() {
                Step::Send(b) => said.push(String::from_utf8(b).unwrap().trim_end().to_owned()),
                Step::SendSecret(b) => {
                    let s = String::from_utf8(b.to_vec()).unwrap();
                    said.push(format!("[secret {} bytes]", s.len()));
                    secrets.push(s.trim_end().to_owned());
                }
                Step::StartTls => said.push("TLS".into()),
                Step::NeedLine => match replies.next() {
                    Some(r) => m.feed_line(format!("{r}\r\n").as_bytes()),
                    None => panic!("the machine wants more lines; it said {said:?}"),
                },
                Step::Done(a) => {
                    return Run {
                        said,
                        secrets,
                        end: Ok(a),
                    };
                }
                Step::Failed(f) => {
                    return Run {
                        said,
                        secrets,
                        end: Err(f),
                    };
                }
            }
        }
    }
}
