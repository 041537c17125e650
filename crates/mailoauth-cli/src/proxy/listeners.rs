//! The proxy's listeners: starting, restarting and draining them ([`Proxies`]),
//! the config they come from, and the accept loops, which admit a connection
//! into the caps ([`limits`]) or refuse it with the protocol's "try later".
//!
//! Must not: let the proxy spin or log on every refused accept, or hold a
//! connection it has no place for.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::limits::{self, AcceptBackoff, Every, Full, Load, Ticket};
use super::session::{self, Conn};
use super::{
    Context, IDLE_TIMEOUT, SessionError, TokenSource, brake, imap, local, pop, smtp, trace,
};
use mailoauth::config::{ProxyConfig, Service, TlsMode};
use mailoauth::providers::is_loopback_host;
use mailoauth::{Client, Error};

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
    /// What the open-file limit allows the whole process (all accounts).
    process: Arc<Load>,
    /// Each account's caps, kept across restarts so that sessions started
    /// before a SIGHUP still count (replaced when the account's limits change).
    accounts: Mutex<HashMap<String, Arc<Load>>>,
}

/// One listener to start: protocol, address, context, the caps it admits into.
struct Planned {
    service: Service,
    addr: SocketAddr,
    ctx: Arc<Context>,
    loads: Vec<Arc<Load>>,
}

/// An account's caps as configured: (sessions, unauthenticated).
fn caps(p: &ProxyConfig) -> (usize, usize) {
    let max = p.max_sessions.unwrap_or(limits::DEFAULT_MAX_SESSIONS);
    let unauth = p
        .max_unauthenticated
        .unwrap_or(limits::DEFAULT_MAX_UNAUTHENTICATED);
    (max, unauth.min(max))
}

/// File descriptors the configured proxies may need at their caps (the
/// daemon raises its open-file limit to this, as far as the hard limit goes).
pub fn fds_wanted(client: &Client) -> u64 {
    let sessions: u64 = client
        .config()
        .accounts
        .values()
        .filter_map(|a| a.proxy.as_ref())
        .filter(|p| !listens(p).is_empty())
        .map(|p| caps(p).0 as u64)
        .sum();
    if sessions == 0 {
        return 0;
    }
    sessions * limits::FDS_PER_SESSION + limits::FD_RESERVE
}

impl Proxies {
    /// Nothing listening yet; logins will take tokens from `tokens`. The
    /// process's cap is what the open-file limit allows now.
    pub fn new(tokens: TokenSource) -> Proxies {
        let fit = limits::sessions_for_fds(limits::nofile());
        Proxies {
            listeners: Vec::new(),
            sessions: Arc::default(),
            next_id: Arc::default(),
            tokens,
            // Unauthenticated ones get the same share of it as by default.
            process: Load::new(
                fit,
                fit * limits::DEFAULT_MAX_UNAUTHENTICATED / limits::DEFAULT_MAX_SESSIONS,
            ),
            accounts: Mutex::default(),
        }
    }

    /// The caps of account `name`, the same object while its limits stay.
    fn load(&self, name: &str, (max, unauth): (usize, usize)) -> Arc<Load> {
        let mut m = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = Load::new(max, unauth);
        let l = m.entry(name.to_owned()).or_insert_with(|| fresh.clone());
        if l.limits() != (max, unauth) {
            *l = fresh;
        }
        l.clone()
    }

    /// Bind every configured proxy listener and serve it on the current runtime.
    /// All or nothing: on an error (bad address, port in use, missing password,
    /// unusable certificate) nothing is listening and the error names the
    /// config line to fix.
    pub async fn start(&mut self, client: Arc<Client>) -> Result<(), Error> {
        let mut bound = Vec::new();
        let fit = limits::sessions_for_fds(limits::nofile());
        for mut p in plan(&client, &self.tokens)? {
            let (max, unauth) = p.caps;
            if max > fit {
                log::warn!(
                    "proxy: `{}` allows {max} sessions, the open-file limit only {fit} \
                     (raise `ulimit -n` or lower max_sessions)",
                    p.ctx.account.name
                );
            }
            p.loads = vec![
                self.process.clone(),
                self.load(&p.ctx.account.name, (max, unauth)),
            ];
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
            let planned = Planned {
                service: p.service,
                addr: p.addr,
                ctx: p.ctx,
                loads: p.loads,
            };
            self.listeners.push(tokio::spawn(accept_loop(
                planned, listener, sessions, next_id,
            )));
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
    let mut backoff = AcceptBackoff::new(format!("proxy {} on {}", p.service.name(), p.addr));
    let mut refusals = Every::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors or similar: every accept fails at once.
                tokio::time::sleep(backoff.failed(&e)).await;
                continue;
            }
        };
        backoff.succeeded();
        let ticket = match Ticket::admit(&p.loads) {
            Ok(t) => t,
            Err(full) => {
                refuse(&p, stream, full, &mut refusals);
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
            let r = serve(ctx, service, stream, ticket).await;
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

/// No place for a connection: the protocol's "try later" if the socket takes
/// it at once (never waiting), then closed; logged once per interval.
fn refuse(p: &Planned, stream: TcpStream, full: Full, log: &mut Every) {
    let why = match full {
        Full::Process => "the open-file limit",
        Full::Sessions => "max_sessions",
        Full::Unauthenticated => "max_unauthenticated",
    };
    if let Some(n) = log.due() {
        log::warn!(
            "proxy {} on {}: refusing connections, {why} reached{}",
            p.service.name(),
            p.addr,
            limits::more(n)
        );
    }
    // A TLS client would not understand plain text.
    if !p.ctx.implicit {
        let line: &[u8] = match p.service {
            Service::Imap => b"* BYE [UNAVAILABLE] too many connections, try again later\r\n",
            Service::Pop => b"-ERR [SYS/TEMP] too many connections, try again later\r\n",
            Service::Smtp => b"421 4.7.0 too many connections, try again later\r\n",
        };
        let _ = stream.try_write(line);
    }
}

/// One connection: TLS first when implicit, then the protocol's session.
async fn serve(
    ctx: Arc<Context>,
    service: Service,
    stream: TcpStream,
    ticket: Ticket,
) -> Result<(), SessionError> {
    let conn = match (&ctx.tls, ctx.implicit) {
        (Some(tls), true) => Conn::accept_tls(tls, Box::new(stream))
            .await
            .map_err(SessionError::Handshake)?,
        _ => Conn::new(Box::new(stream), false),
    };
    match service {
        Service::Imap => session::run::<imap::Imap>(ctx, conn, ticket).await,
        Service::Pop => session::run::<pop::Pop>(ctx, conn, ticket).await,
        Service::Smtp => session::run::<smtp::Smtp>(ctx, conn, ticket).await,
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

/// A listener as the config asks for it, before its caps are attached.
struct Wanted {
    service: Service,
    addr: SocketAddr,
    ctx: Arc<Context>,
    caps: (usize, usize),
    loads: Vec<Arc<Load>>,
}

/// Check the config and resolve every listener's context.
fn plan(client: &Arc<Client>, tokens: &TokenSource) -> Result<Vec<Wanted>, Error> {
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
        let account = client.account(name)?;
        let ctx = Arc::new(Context {
            brake: brake::Brake::new(&account.user),
            account,
            tokens: tokens.clone(),
            password,
            tls,
            implicit: tls_mode == TlsMode::Implicit,
            idle_timeout: p.idle_timeout.map_or(IDLE_TIMEOUT, Duration::from_secs),
        });
        if p.max_sessions == Some(0) {
            return Err(err(
                "proxy max_sessions = 0 would refuse every client".into()
            ));
        }
        for (service, addr) in addrs {
            out.push(Wanted {
                service,
                addr,
                ctx: ctx.clone(),
                caps: caps(p),
                loads: Vec::new(),
            });
        }
    }
    Ok(out)
}
