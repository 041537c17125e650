//! The proxy: password-only mail clients reach OAuth-only servers.
//!
//! Owns: per-account local listeners hosted on the daemon's runtime
//! ([`Proxies`]: start, restart on SIGHUP, drain on shutdown), the local
//! password check (constant time; tokens are never keyed to it) and the relay.
//! The parts: `local` (sockets, local TLS), `session` (one client: login
//! dialogue, then relay), `imap`/`pop`/`smtp` (each protocol's dialogue),
//! `upstream` (TLS and the library's `proto` login towards the real server, the
//! same one `check` runs), `trace` (`--debug`), `listeners` (accept loops and
//! the config they come from), `limits` (session caps, accept backoff) and
//! `brake` (slowing password guessing).
//!
//! After login, [`relay`] moves bytes untouched with fixed buffers: a client
//! that stops reading stops the proxy reading from the server (backpressure),
//! so memory stays bounded whatever the mailbox size. A token that expires
//! mid-session is not ours to fix: the server ends the session and the client's
//! reconnect logs in with a fresh token.
//!
//! Must not: relay anything before the client has authenticated, or log a
//! password, token or SASL payload.

mod brake;
#[doc(hidden)]
pub mod fuzzing;
mod imap;
pub mod limits;
mod listeners;
mod local;
mod pop;
mod session;
mod smtp;
pub mod trace;
pub mod upstream;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio_rustls::TlsAcceptor;
use zeroize::Zeroizing;

pub use listeners::{Proxies, fds_wanted};
use mailoauth::config::Service;
use mailoauth::providers::Account;
use session::Conn;
use upstream::UpstreamError;

/// A client must log in within this time.
pub(crate) const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Default idle limit of a relayed session: IMAP IDLE clients re-issue every 29 minutes.
const IDLE_TIMEOUT: Duration = Duration::from_secs(31 * 60);
/// How long the upstream connect and login may take.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the proxy gets an account's mail token (by account name): the daemon
/// passes its memory cache.
pub type TokenSource = Arc<
    dyn Fn(String) -> Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send>>
        + Send
        + Sync,
>;

/// A byte stream, plain or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Constant-time equality (for equal lengths; the length itself is not secret).
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a proxy session ended early; logged as one line.
#[derive(Debug)]
pub enum SessionError {
    /// Reading from or writing to the client or the server failed.
    Io(std::io::Error),
    /// The client's TLS handshake failed.
    Handshake(std::io::Error),
    /// The client broke the protocol (overlong line, oversized literal, bytes
    /// after STARTTLS); it was told so.
    Client(String),
    /// The upstream login failed; the client was told why.
    Upstream(UpstreamError),
    /// Nothing moved either way for this long.
    Idle(Duration),
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionError::Io(e) => write!(f, "{e}"),
            SessionError::Handshake(e) => write!(f, "TLS handshake: {e}"),
            SessionError::Client(s) => write!(f, "{s}"),
            SessionError::Upstream(e) => write!(f, "{e}"),
            SessionError::Idle(d) => write!(f, "idle for {} s; closed", d.as_secs()),
        }
    }
}

impl From<std::io::Error> for SessionError {
    fn from(e: std::io::Error) -> Self {
        SessionError::Io(e)
    }
}

/// What one listener needs.
pub struct Context {
    /// The account.
    pub account: Account,
    /// Where tokens come from.
    tokens: TokenSource,
    /// The local password clients must present.
    pub password: Zeroizing<String>,
    /// Local TLS: `Some` for STARTTLS or implicit TLS listeners.
    tls: Option<TlsAcceptor>,
    /// TLS from the first byte?
    implicit: bool,
    /// Idle limit of a relayed session.
    idle_timeout: Duration,
    /// Failed logins of this account's listeners, by claimed user.
    brake: brake::Brake,
}

impl Context {
    /// The client's credentials are the account's user and the local password
    /// (compared in constant time). Answered at once either way: failures are
    /// slowed by the session, through [`brake::Brake`].
    pub fn accepts(&self, user: &str, pass: &str) -> bool {
        user.eq_ignore_ascii_case(&self.account.user)
            && same_secret(pass.as_bytes(), self.password.as_bytes())
    }

    /// The account's mail token, from the token source.
    pub async fn token(&self) -> Result<Zeroizing<String>, String> {
        (self.tokens)(self.account.name.clone())
            .await
            .map(Zeroizing::new)
    }

    /// The client has authenticated locally: fetch the token and log in upstream.
    /// The error says what the user should do.
    async fn upstream(&self, service: Service) -> Result<upstream::Upstream, UpstreamError> {
        match self.token().await {
            Ok(token) => upstream::login(service, &self.account, &token, UPSTREAM_TIMEOUT).await,
            Err(why) => Err(UpstreamError::NoToken {
                account: self.account.name.clone(),
                why,
            }),
        }
    }
}

/// Milliseconds since the relay started at the last byte read either way.
struct Activity {
    start: tokio::time::Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }
}

/// A stream that notes each read in `Activity` (and traces it with `--debug`).
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
    dir: trace::Dir,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
            trace::chunk(self.dir, &buf.filled()[before..]);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Client → server buffer: commands are small.
const UP_BUFFER: usize = 16 * 1024;
/// Server → client buffer: message bodies; large enough for wire speed, small
/// enough that thousands of sessions stay cheap.
const DOWN_BUFFER: usize = 64 * 1024;

/// After login: bytes both ways, untouched, until either side closes or
/// nothing moves for `idle`; anything already buffered goes first.
async fn relay(
    client: Conn,
    upstream: BufReader<Box<dyn Stream>>,
    idle: Duration,
) -> Result<(), SessionError> {
    let pending_up = upstream.buffer().to_vec();
    let (mut c, pending_client) = client.into_parts();
    let mut u = upstream.into_inner();
    c.write_all(&pending_up).await?;
    u.write_all(&pending_client).await?;
    let activity = Arc::new(Activity {
        start: tokio::time::Instant::now(),
        last_ms: AtomicU64::new(0),
    });
    let watch = |inner, dir| Watched {
        inner,
        activity: activity.clone(),
        dir,
    };
    let (mut c, mut u) = (
        watch(c, trace::Dir::FromClient),
        watch(u, trace::Dir::FromServer),
    );
    let idle_watch = async {
        loop {
            let last = Duration::from_millis(activity.last_ms.load(Ordering::Relaxed));
            let due = activity.start + last + idle;
            if tokio::time::Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due).await;
        }
    };
    tokio::select! {
        r = tokio::io::copy_bidirectional_with_sizes(&mut c, &mut u, UP_BUFFER, DOWN_BUFFER) => {
            let (up, down) = r?;
            log::debug!("proxy session ended: {up} bytes up, {down} bytes down");
            Ok(())
        }
        _ = idle_watch => Err(SessionError::Idle(idle)),
    }
}
