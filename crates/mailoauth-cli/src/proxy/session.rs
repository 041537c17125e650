//! One client session of the proxy, whatever the protocol: the client
//! connection with its line reader ([`Conn`]), the per-protocol login dialogue
//! behind the [`Dialect`] trait, and [`run`], which greets, lets the dialect
//! read until a login (upgrading to TLS on STARTTLS), checks the local
//! password, logs in upstream and hands both streams to the relay.
//!
//! Must not: relay a byte of the client's before the password was accepted and
//! the upstream login succeeded; trace a credential (see `trace`).

use std::io;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_rustls::TlsAcceptor;
use zeroize::Zeroizing;

use super::brake::{ATTEMPTS_PER_CONNECTION, Verdict};
use super::limits::Ticket;
use super::trace::{self, Dir};
use super::upstream::Upstream;
use super::{Context, LOGIN_TIMEOUT, SessionError, Stream};
use mailoauth::config::Service;

/// How long a client has for the TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// The client's connection before login.
pub(crate) struct Conn {
    io: BufReader<Box<dyn Stream>>,
    /// Is the connection TLS (implicit, or after STARTTLS)?
    pub secure: bool,
    /// Bytes the client may still send before login ([`Dialect::MAX_INPUT`]):
    /// whatever a dialect answers, a client cannot keep it reading forever.
    budget: usize,
}

/// A line longer than the reader's limit: the session ends.
fn too_long() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "line too long")
}

/// The client sent more before login than the dialect allows: the session ends.
pub(crate) fn too_much(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

impl Conn {
    /// Wrap a fresh connection (no input budget yet: [`run`] sets the dialect's).
    pub fn new(io: Box<dyn Stream>, secure: bool) -> Conn {
        Conn {
            io: BufReader::new(io),
            secure,
            budget: usize::MAX,
        }
    }

    /// Allow at most `bytes` more from the client before login.
    pub fn limit_input(&mut self, bytes: usize) {
        self.budget = bytes;
    }

    /// Take `n` bytes off the input budget, or fail when they exceed it.
    fn spend(&mut self, n: usize) -> io::Result<()> {
        match self.budget.checked_sub(n) {
            Some(left) => {
                self.budget = left;
                Ok(())
            }
            None => {
                self.budget = 0;
                Err(too_much("too much input before login"))
            }
        }
    }

    /// Write a reply (lines joined with CRLF; the final CRLF is added).
    pub async fn reply(&mut self, s: &str) -> io::Result<()> {
        for l in s.split("\r\n") {
            trace::line(Dir::ToClient, l, false);
        }
        let w = self.io.get_mut();
        w.write_all(format!("{s}\r\n").as_bytes()).await?;
        w.flush().await
    }

    /// Read one line of at most `limit` bytes, without its line ending; `None`
    /// at end of stream. A longer line, or one past the input budget, is an
    /// `InvalidData` error. Not traced: the dialect traces what it parsed (see
    /// [`trace::command`]), since only the parse knows what is a credential.
    pub async fn line(&mut self, limit: usize) -> io::Result<Option<Zeroizing<String>>> {
        if self.budget == 0 {
            return Err(too_much("too much input before login"));
        }
        // Read one byte past the budget at most, so that a line ending exactly at
        // the budget still counts as a line.
        let cap = limit.min(self.budget.saturating_add(1));
        let mut raw = Zeroizing::new(Vec::new());
        let n = (&mut self.io)
            .take(cap as u64)
            .read_until(b'\n', &mut raw)
            .await?;
        if n == 0 {
            return Ok(None);
        }
        self.spend(n)?;
        if raw.last() != Some(&b'\n') {
            return Err(if n == limit {
                too_long()
            } else {
                io::ErrorKind::UnexpectedEof.into()
            });
        }
        let s = String::from_utf8_lossy(&raw);
        Ok(Some(Zeroizing::new(
            s.trim_end_matches(['\r', '\n']).to_owned(),
        )))
    }

    /// Read one line that is all credential (a SASL answer): traced by its length only.
    pub async fn secret_line(&mut self, limit: usize) -> io::Result<Option<Zeroizing<String>>> {
        let l = self.line(limit).await?;
        if let Some(l) = &l {
            trace::line(Dir::FromClient, l, true);
        }
        Ok(l)
    }

    /// Has the client sent bytes not read yet (pipelined after a command)?
    pub(crate) fn buffered(&self) -> bool {
        !self.io.buffer().is_empty()
    }

    /// Read exactly `n` bytes (an IMAP literal); never traced.
    pub async fn literal(&mut self, n: usize) -> io::Result<Zeroizing<Vec<u8>>> {
        self.spend(n)?;
        let mut buf = Zeroizing::new(vec![0u8; n]);
        self.io.read_exact(&mut buf).await?;
        trace::line(Dir::FromClient, &format!("{{literal of {n} bytes}}"), false);
        Ok(buf)
    }

    /// Upgrade to TLS after a STARTTLS the dialect has already answered.
    /// Bytes pipelined after the command would be plaintext the client meant to
    /// protect (or an injection): refused.
    async fn start_tls(self, tls: &TlsAcceptor) -> io::Result<Conn> {
        if !self.io.buffer().is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "data after STARTTLS before the TLS handshake",
            ));
        }
        let budget = self.budget;
        let mut c = Conn::accept_tls(tls, self.io.into_inner()).await?;
        c.budget = budget;
        Ok(c)
    }

    /// The server side of a TLS handshake (implicit TLS, or after STARTTLS), within
    /// [`HANDSHAKE_TIMEOUT`].
    pub async fn accept_tls(tls: &TlsAcceptor, io: Box<dyn Stream>) -> io::Result<Conn> {
        let s = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(io))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        Ok(Conn::new(Box::new(s), true))
    }

    /// The stream and whatever the client already sent after its login.
    pub fn into_parts(self) -> (Box<dyn Stream>, Vec<u8>) {
        let pending = self.io.buffer().to_vec();
        (self.io.into_inner(), pending)
    }
}

/// A login attempt: the tag to answer (IMAP), user, password.
pub(crate) struct Login {
    /// The IMAP tag, empty for POP3 and SMTP.
    pub tag: String,
    /// The user name the client sent.
    pub user: String,
    /// The password the client sent.
    pub pass: Zeroizing<String>,
}

/// What the client's dialogue came to.
pub(crate) enum Step {
    /// The client wants to log in.
    Login(Login),
    /// STARTTLS was accepted: upgrade, then go on.
    StartTls,
    /// The client left (QUIT, LOGOUT or end of stream).
    Closed,
}

/// One protocol's side of the dialogue before login.
pub(crate) trait Dialect: Default + Send {
    /// Which of the account's servers to log in to.
    const SERVICE: Service;
    /// Bytes a client may send before login, all commands together (STARTTLS
    /// does not reset it). Past it the client gets [`Dialect::bye`] and is closed.
    const MAX_INPUT: usize;
    /// The first thing the client sees; `need_tls` when STARTTLS must come first.
    fn greeting(&self, need_tls: bool) -> String;
    /// Answer commands until one of them is a login, STARTTLS or the end.
    async fn next(&mut self, c: &mut Conn, need_tls: bool) -> io::Result<Step>;
    /// The reply to a wrong user or password.
    fn refused(&self, l: &Login) -> String;
    /// The reply when the server cannot be logged in to (`why` says what to do).
    fn unavailable(&self, l: &Login, why: &str) -> String;
    /// The reply after a successful upstream login.
    fn welcome(&self, l: &Login, up: &Upstream) -> String;
    /// The last words before closing on a protocol error.
    fn bye(&self, why: &str) -> String;
}

/// Serve one client until it has logged in, then relay.
/// `ticket` is the session's place in the caps: it stops counting as
/// unauthenticated once the local password was accepted.
pub(crate) async fn run<D: Dialect>(
    ctx: Arc<Context>,
    mut c: Conn,
    mut ticket: Ticket,
) -> Result<(), SessionError> {
    let mut d = D::default();
    c.limit_input(D::MAX_INPUT);
    let need_tls = |c: &Conn| ctx.tls.is_some() && !c.secure;
    c.reply(&d.greeting(need_tls(&c))).await?;
    let deadline = tokio::time::Instant::now() + LOGIN_TIMEOUT;
    let mut failures = 0;
    let login = loop {
        let tls_first = need_tls(&c);
        let step = match tokio::time::timeout_at(deadline, d.next(&mut c, tls_first)).await {
            Err(_) => {
                let _ = c.reply(&d.bye("no login in time")).await;
                return Ok(());
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
                let _ = c.reply(&d.bye(&e.to_string())).await;
                return Err(SessionError::Client(e.to_string()));
            }
            Ok(r) => r?,
        };
        match step {
            Step::Closed => return Ok(()),
            Step::StartTls => {
                let Some(tls) = ctx.tls.as_ref() else {
                    return Err(SessionError::Client("STARTTLS without TLS".into()));
                };
                c = c.start_tls(tls).await?;
                // RFC 3207 and 2595: the session starts over after the handshake.
                d = D::default();
            }
            Step::Login(l) => {
                if ctx.accepts(&l.user, &l.pass) {
                    ticket.logged_in();
                    break l;
                }
                failures += 1;
                // The brake decides when "wrong" is said, across connections.
                match ctx.brake.failed(&l.user, failures, trace::session()) {
                    Verdict::AnswerAt(at) => tokio::time::sleep_until(at).await,
                    Verdict::Close => return Ok(()),
                }
                c.reply(&d.refused(&l)).await?;
                if failures == ATTEMPTS_PER_CONNECTION {
                    return Ok(());
                }
            }
        }
    };
    let up = match ctx.upstream(D::SERVICE).await {
        Ok(up) => up,
        Err(e) => {
            // One line, CR/LF removed: the cause and fix from the catalog reach the client.
            c.reply(&d.unavailable(&login, &e.to_string())).await?;
            return Err(SessionError::Upstream(e));
        }
    };
    c.reply(&d.welcome(&login, &up)).await?;
    super::relay(c, up.io, ctx.idle_timeout).await
}

/// (user, password) of a SASL PLAIN message (authorization identity ignored).
pub(crate) fn sasl_plain(b64: &str) -> Option<(String, Zeroizing<String>)> {
    use base64::Engine as _;
    let raw = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()?,
    );
    let parts: Vec<&[u8]> = raw.split(|&b| b == 0).collect();
    if parts.len() != 3 {
        return None;
    }
    Some((
        String::from_utf8_lossy(parts[1]).into_owned(),
        Zeroizing::new(String::from_utf8_lossy(parts[2]).into_owned()),
    ))
}

/// A base64 string decoded as text (SASL LOGIN's user and password).
pub(crate) fn base64_text(s: &str) -> Option<Zeroizing<String>> {
    use base64::Engine as _;
    let raw = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .ok()?,
    );
    Some(Zeroizing::new(String::from_utf8(raw.to_vec()).ok()?))
}

/// A connection whose client sent `input` and then waits (never closes), with
/// an input budget of `limit` bytes: the dialects' flood tests share it.
#[cfg(test)]
pub(crate) async fn flooded(input: Vec<u8>, limit: usize) -> Conn {
    use tokio::io::AsyncWriteExt as _;
    let (client, server) = tokio::io::duplex(1 << 20);
    tokio::spawn(async move {
        let (mut r, mut w) = tokio::io::split(client);
        let _ = w.write_all(&input).await;
        // Drain our replies so the server never blocks on them.
        let _ = tokio::io::copy(&mut r, &mut tokio::io::sink()).await;
    });
    let mut c = Conn::new(Box::new(server), false);
    c.limit_input(limit);
    c
}
