//! The proxy: password-only mail clients reach OAuth-only servers.
//!
//! Owns: per-account local listeners hosted on the daemon's runtime
//! ([`Proxies`]: start, restart on SIGHUP, drain on shutdown), the local
//! password check (constant time; tokens are never keyed to it) and the relay.
//! The parts: `local` (sockets, local TLS), `session` (one client: login
//! dialogue, then relay), `imap`/`pop`/`smtp` (each protocol's dialogue),
//! `upstream` (TLS and the library's `proto` login towards the real server, the
//! same one `check` runs), `trace` (`--debug`).
//!
//! After login, [`relay`] moves bytes untouched with fixed buffers: a client
//! that stops reading stops the proxy reading from the server (backpressure),
//! so memory stays bounded whatever the mailbox size. A token that expires
//! mid-session is not ours to fix: the server ends the session and the client's
//! reconnect logs in with a fresh token.
//!
//! Must not: relay anything before the client has authenticated, or log a
//! password, token or SASL payload.

mod imap;
mod local;
mod pop;
mod session;
mod smtp;
pub mod trace;
pub mod upstream;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use zeroize::Zeroizing;

use mailoauth::config::{ProxyConfig, Service, TlsMode};
use mailoauth::providers::{Account, is_loopback_host};
use mailoauth::{Client, Error};
use session::Conn;
use upstream::UpstreamError;

/// A client must log in within this time.
pub(crate) const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Default idle limit of a relayed session: IMAP IDLE clients re-issue every 29 minutes.
const IDLE_TIMEOUT: Duration = Duration::from_secs(31 * 60);
/// How long the upstream connect and login may take.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the proxy gets an account's mail token (by account name): the daemon
/// passes its memory cache, [`broker_tokens`] asks the broker directly.
pub type TokenSource = Arc<
    dyn Fn(String) -> Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send>>
        + Send
        + Sync,
>;

/// A token source without a daemon: the broker of `client` (store, refresh when due).
pub fn broker_tokens(client: Arc<Client>) -> TokenSource {
    Arc::new(move |name: String| {
        let client = client.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || client.broker(&name)?.token(None))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())
        })
    })
}

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
}

impl Context {
    /// The client's credentials are the account's user and the local password
    /// (compared in constant time; a short delay on failure slows guessing).
    pub async fn accepts(&self, user: &str, pass: &str) -> bool {
        let ok = user.eq_ignore_ascii_case(&self.account.user)
            && same_secret(pass.as_bytes(), self.password.as_bytes());
        if !ok {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        ok
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

/// Sessions alive across all listeners (old ones included after a restart).
#[derive(Default)]
struct Sessions {
    count: AtomicUsize,
    ended: Notify,
}

/// Decrements the count when a session task ends, however it ends.
struct SessionGuard(Arc<Sessions>);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.ended.notify_waiters();
        }
    }
}

/// The proxy's listeners and the sessions they started.
pub struct Proxies {
    listeners: Vec<JoinHandle<()>>,
    sessions: Arc<Sessions>,
    next_id: Arc<AtomicU64>,
    tokens: TokenSource,
}

/// One listener to start: protocol, address, context.
struct Planned {
    service: Service,
    addr: SocketAddr,
    ctx: Arc<Context>,
}

impl Proxies {
    /// Nothing listening yet; logins will take tokens from `tokens`.
    pub fn new(tokens: TokenSource) -> Proxies {
        Proxies {
            listeners: Vec::new(),
            sessions: Arc::default(),
            next_id: Arc::default(),
            tokens,
        }
    }

    /// Bind every configured proxy listener and serve it on the current runtime.
    /// All or nothing: on an error (bad address, port in use, missing password,
    /// unusable certificate) nothing is listening and the error names the
    /// config line to fix.
    pub async fn start(&mut self, client: Arc<Client>) -> Result<(), Error> {
        let mut bound = Vec::new();
        for p in plan(&client, &self.tokens)? {
            let listener = local::listen(p.addr)?;
            log::warn!(
                "proxy: {} for `{}` on {}{}",
                p.service.name(),
                p.ctx.account.name,
                p.addr,
                match (&p.ctx.tls, p.ctx.implicit) {
                    (None, _) => "",
                    (Some(_), true) => " (TLS)",
                    (Some(_), false) => " (STARTTLS required)",
                }
            );
            bound.push((p, listener));
        }
        for (p, listener) in bound {
            let (sessions, next_id) = (self.sessions.clone(), self.next_id.clone());
            self.listeners
                .push(tokio::spawn(accept_loop(p, listener, sessions, next_id)));
        }
        Ok(())
    }

    /// Close the listening sockets; sessions already running go on.
    pub async fn stop_listening(&mut self) {
        for l in self.listeners.drain(..) {
            l.abort();
            let _ = l.await;
        }
    }

    /// Re-read the listeners from `client` (SIGHUP). If the new set cannot be
    /// started, the old one (`previous`) is started again and the error returned.
    pub async fn restart(
        &mut self,
        client: Arc<Client>,
        previous: Arc<Client>,
    ) -> Result<(), Error> {
        self.stop_listening().await;
        match self.start(client).await {
            Ok(()) => Ok(()),
            Err(e) => {
                if let Err(again) = self.start(previous).await {
                    log::error!("proxy: the previous listeners did not come back either: {again}");
                }
                Err(e)
            }
        }
    }

    /// Stop listening and give running sessions up to `grace` to end.
    pub async fn shutdown(mut self, grace: Duration) {
        self.stop_listening().await;
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let ended = self.sessions.ended.notified();
            let n = self.sessions.count.load(Ordering::Acquire);
            if n == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                log::warn!("proxy: closing {n} session(s) still open");
                return;
            }
        }
    }
}

async fn accept_loop(
    p: Planned,
    listener: TcpListener,
    sessions: Arc<Sessions>,
    next_id: Arc<AtomicU64>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors or similar: do not spin.
                log::warn!("proxy accept on {}: {e}", p.addr);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        sessions.count.fetch_add(1, Ordering::AcqRel);
        let guard = SessionGuard(sessions.clone());
        let id = next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (ctx, service) = (p.ctx.clone(), p.service);
        let proto = service.name();
        tokio::spawn(trace::SESSION.scope(id, async move {
            let _guard = guard;
            log::debug!("proxy #{id} {proto}: connection from {peer}");
            let r = serve(ctx, service, stream).await;
            match r {
                Ok(()) => log::debug!("proxy #{id} {proto}: closed"),
                // The user must act on a failed upstream login (its cause and
                // fix are in the message): seen at the default level.
                Err(e @ SessionError::Upstream(_)) => {
                    log::warn!("proxy #{id} {proto} {peer}: {e}")
                }
                Err(e) => log::info!("proxy #{id} {proto} {peer}: {e}"),
            }
        }));
    }
}

/// One connection: TLS first when implicit, then the protocol's session.
async fn serve(
    ctx: Arc<Context>,
    service: Service,
    stream: tokio::net::TcpStream,
) -> Result<(), SessionError> {
    let conn = match (&ctx.tls, ctx.implicit) {
        (Some(tls), true) => Conn::accept_tls(tls, Box::new(stream))
            .await
            .map_err(SessionError::Handshake)?,
        _ => Conn::new(Box::new(stream), false),
    };
    match service {
        Service::Imap => session::run::<imap::Imap>(ctx, conn).await,
        Service::Pop => session::run::<pop::Pop>(ctx, conn).await,
        Service::Smtp => session::run::<smtp::Smtp>(ctx, conn).await,
    }
}

/// The proxy listeners an account asks for: (protocol, address).
fn listens(p: &ProxyConfig) -> Vec<(Service, &str)> {
    [
        (Service::Imap, p.imap.as_deref()),
        (Service::Pop, p.pop.as_deref()),
        (Service::Smtp, p.smtp.as_deref()),
    ]
    .into_iter()
    .filter_map(|(k, a)| a.map(|a| (k, a)))
    .collect()
}

/// Check the config and resolve every listener's context.
fn plan(client: &Arc<Client>, tokens: &TokenSource) -> Result<Vec<Planned>, Error> {
    let mut out = Vec::new();
    for (name, cfg) in &client.config().accounts {
        let Some(p) = &cfg.proxy else { continue };
        let err = |m: String| client.config().error_at(name, Some("proxy"), m);
        let tls_mode = p.tls.unwrap_or(TlsMode::None);
        let mut addrs = Vec::new();
        for (service, addr) in listens(p) {
            let proto = service.name();
            let sa: SocketAddr = addr.parse().map_err(|_| {
                err(format!(
                    "proxy {proto} = \"{addr}\" is not IP:PORT (e.g. \"127.0.0.1:1143\")"
                ))
            })?;
            if !is_loopback_host(&sa.ip().to_string()) && tls_mode == TlsMode::None {
                return Err(err(format!(
                    "proxy {proto} = \"{addr}\" is not a loopback address: other machines may only \
                     connect with TLS (set tls = \"starttls\" or \"implicit\" in the proxy table)"
                )));
            }
            addrs.push((service, sa));
        }
        if addrs.is_empty() {
            continue;
        }
        let password = p
            .password
            .as_ref()
            .ok_or_else(|| {
                err("the proxy needs `password = …` (what local clients must send)".into())
            })?
            .resolve("proxy password")?;
        let names: Vec<String> = addrs
            .iter()
            .filter(|(_, a)| !a.ip().is_unspecified())
            .map(|(_, a)| a.ip().to_string())
            .collect();
        let tls = match tls_mode {
            TlsMode::None => None,
            _ => Some(local::acceptor(p, &names).map_err(|e| err(format!("proxy TLS: {e}")))?),
        };
        let ctx = Arc::new(Context {
            account: client.account(name)?,
            tokens: tokens.clone(),
            password,
            tls,
            implicit: tls_mode == TlsMode::Implicit,
            idle_timeout: p.idle_timeout.map_or(IDLE_TIMEOUT, Duration::from_secs),
        });
        for (service, addr) in addrs {
            out.push(Planned {
                service,
                addr,
                ctx: ctx.clone(),
            });
        }
    }
    Ok(out)
}
