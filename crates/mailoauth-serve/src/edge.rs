//! The network edge: accepting connections, TLS, limits, and who the client is.
//!
//! Owns: the accept loop (at most `max_connections` at once: a new connection
//! over it closes the longest-idle one — no request in progress, no byte of
//! one received — and when none is idle it waits in the kernel's accept queue
//! until one ends, so idle connections cannot lock real requests out and a
//! burst is slowed, not failed),
//! TLS with rustls when `tls_cert`/`tls_key` are set, the per-connection
//! deadlines (a request's headers within `header_read_timeout` from its first
//! byte, a handler within [`REQUEST_TIMEOUT`], nothing moving for
//! `idle_timeout` closes the connection; checked a few times per shortest
//! deadline, so they hold to within a tick), the header size limit, graceful
//! shutdown, and the client address: `X-Forwarded-*` count only when the TCP
//! peer is one of `behind_proxy`. Must not: route or handle requests (`api`),
//! or log a header value other than addresses.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

use mailoauth::Error;

use crate::settings::{Limits, Settings};

/// Most bytes of a request's start line and headers (431 over it). API keys,
/// cookies-free pages and proxies' forwarding headers fit many times over.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Most headers in one request.
pub const MAX_HEADERS: usize = 64;

/// A request's handler (body reading included) gets this long, then its
/// connection is closed; longer than the token route's own 60 s bound on the
/// provider, so it only cuts off bodies trickled in and handlers stuck on
/// something unbounded.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(75);

/// How long shutdown waits for requests in progress.
const DRAIN: Duration = Duration::from_secs(10);

/// Who sent a request, as far as can be trusted. Every request carries one in
/// its extensions (`Extension<Client>` in a handler).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// The client's address: the TCP peer, or what a trusted proxy says.
    pub addr: IpAddr,
    /// Whether the client spoke HTTPS (to us, or to the trusted proxy).
    pub https: bool,
    /// The host the client asked for, when a trusted proxy says so.
    pub forwarded_host: Option<String>,
}

/// The client of a request from TCP `peer` with `headers`. The forwarding
/// headers are believed only when `peer` is in `trusted`; the address is then
/// the right-most `X-Forwarded-For` entry that is not itself a trusted proxy
/// (entries to its left were written by the client and prove nothing).
pub fn client(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpAddr], tls: bool) -> Client {
    let peer_ip = canonical(peer.ip());
    let mut c = Client {
        addr: peer_ip,
        https: tls,
        forwarded_host: None,
    };
    if !trusted.iter().any(|t| canonical(*t) == peer_ip) {
        return c;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|h| h.trim().parse::<IpAddr>().ok().map(canonical))
        .collect();
    if let Some(ip) = hops
        .iter()
        .rev()
        .find(|ip| !trusted.iter().any(|t| canonical(*t) == **ip))
        .or(hops.first())
    {
        c.addr = *ip;
    }
    let one = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            // A chain of proxies appends: the last one is our proxy's own word.
            .and_then(|v| v.rsplit(',').next())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty() && v.len() <= 255)
    };
    if let Some(proto) = one("x-forwarded-proto") {
        c.https = proto.eq_ignore_ascii_case("https");
    }
    c.forwarded_host = one("x-forwarded-host");
    c
}

/// An IPv4 peer on an IPv6 socket (`::ffff:10.0.0.5`) is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The TLS acceptor of `tls_cert`/`tls_key`, when set. Errors name the key and
/// the file.
pub fn tls_acceptor(settings: &Settings) -> Result<Option<TlsAcceptor>, Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let Some((cert, key)) = &settings.tls else {
        return Ok(None);
    };
    let err = |message: String| Error::Config {
        path: settings.path.clone(),
        line: None,
        message,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| {
            err(format!(
                "[serve] `tls_cert` = {}: cannot read a PEM certificate chain ({e})",
                cert.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(err(format!(
            "[serve] `tls_cert` = {}: no `BEGIN CERTIFICATE` block in it",
            cert.display()
        )));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        err(format!(
            "[serve] `tls_key` = {}: cannot read a PEM private key ({e})",
            key.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(format!("[serve] TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map_err(|e| {
            err(format!(
                "[serve] `tls_cert` and `tls_key` do not make a usable pair: {e}"
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

/// What every connection shares.
struct Shared {
    router: Router,
    trusted: Vec<IpAddr>,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    /// The open connections, to find the idlest when the slots are full.
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    next: AtomicU64,
    /// The time base of `Conn::idle_since`.
    base: Instant,
}

/// One connection's state, written by its stream and its requests with
/// single atomic operations (the hot path takes no lock and reads no clock),
/// and read by its watchdog once a tick.
#[derive(Default)]
struct Conn {
    /// Bumped whenever bytes move either way.
    moved: AtomicU64,
    /// Requests handed to the router so far.
    requests: AtomicU64,
    /// Requests in a handler now.
    busy: AtomicU64,
    /// Bytes arrived while no request was in a handler: one is being read.
    head: AtomicBool,
    /// Milliseconds after `Shared::base` since which nothing moved (ticks).
    idle_since: AtomicU64,
    /// Asked to close to make room.
    evicted: AtomicBool,
    /// Told to close (it was the idlest when a new connection needed a slot).
    evict: Notify,
}

impl Shared {
    fn ms(&self, t: Instant) -> u64 {
        t.duration_since(self.base).as_millis() as u64
    }

    /// Ask the longest-idle connection (no request in a handler, none being
    /// read) to close; false when none is idle.
    fn evict_idlest(&self) -> bool {
        let open = self.open.lock().unwrap();
        let idlest = open
            .values()
            .filter(|c| {
                c.busy.load(Ordering::Relaxed) == 0
                    && !c.head.load(Ordering::Relaxed)
                    && !c.evicted.load(Ordering::Relaxed)
            })
            .min_by_key(|c| c.idle_since.load(Ordering::Relaxed));
        match idlest {
            Some(c) => {
                c.evicted.store(true, Ordering::Relaxed);
                c.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Serve `router` on `listener` until `shutdown` resolves; then stop
/// accepting, let requests in progress finish (at most [`DRAIN`]) and return.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: &Settings,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let limits = settings.limits;
    let shared = Arc::new(Shared {
        router,
        trusted: settings.behind_proxy.clone(),
        limits,
        tls,
        open: Mutex::new(HashMap::new()),
        next: AtomicU64::new(0),
        base: Instant::now(),
    });
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    'accept: loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors and the like: say so, back off, go on.
                    log::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Over the limit: the idlest connection makes room; with none idle,
        // wait (holding this one connection; the rest queue in the kernel,
        // bounded by its backlog), looking again as handlers finish.
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let mut asked = shared.evict_idlest();
                loop {
                    tokio::select! {
                        p = slots.clone().acquire_owned() => {
                            break p.expect("the semaphore is never closed");
                        }
                        () = tokio::time::sleep(Duration::from_millis(100)), if !asked => {
                            asked = shared.evict_idlest();
                        }
                        () = &mut shutdown => break 'accept,
                    }
                }
            }
        };
        let (shared, stop) = (shared.clone(), stop_rx.clone());
        tokio::spawn(async move {
            connection(stream, peer, shared, stop).await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every slot back means every connection ended.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(DRAIN, slots.acquire_many(all)).await;
    Ok(())
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let conn = Arc::new(Conn::default());
    conn.idle_since
        .store(shared.ms(Instant::now()), Ordering::Relaxed);
    let id = shared.next.fetch_add(1, Ordering::Relaxed);
    shared.open.lock().unwrap().insert(id, conn.clone());
    // Out of the table however the connection ends (a handler's panic too).
    struct Listed<'a>(&'a Shared, u64);
    impl Drop for Listed<'_> {
        fn drop(&mut self) {
            self.0.open.lock().unwrap().remove(&self.1);
        }
    }
    let _listed = Listed(&shared, id);
    let io = Watched {
        inner: stream,
        conn: conn.clone(),
    };
    match shared.tls.clone() {
        None => http(io, peer, false, shared.clone(), conn, stop).await,
        Some(acceptor) => {
            // The handshake is bounded like a request's headers.
            let handshake = tokio::time::timeout(shared.limits.header_read, acceptor.accept(io));
            let r = tokio::select! {
                r = handshake => r,
                () = conn.evict.notified() => Ok(Err(io::Error::other("closed to make room"))),
            };
            match r {
                Ok(Ok(tls)) => http(tls, peer, true, shared.clone(), conn, stop).await,
                Ok(Err(e)) => log::debug!("TLS handshake with {peer} failed: {e}"),
                Err(_) => log::debug!("TLS handshake with {peer} timed out"),
            }
        }
    }
}

async fn http<I>(
    io: I,
    peer: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    state: Arc<Conn>,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = shared.limits;
    let (c, sh) = (state.clone(), shared.clone());
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let who = client(peer, req.headers(), &sh.trusted, tls);
        req.extensions_mut().insert(who);
        let mut router = sh.router.clone();
        let state = c.clone();
        state.requests.fetch_add(1, Ordering::Relaxed);
        state.busy.fetch_add(1, Ordering::Relaxed);
        state.head.store(false, Ordering::Relaxed);
        async move {
            // Counted out even when the connection is dropped mid-handler.
            struct Done(Arc<Conn>);
            impl Drop for Done {
                fn drop(&mut self) {
                    self.0.busy.fetch_sub(1, Ordering::Relaxed);
                    self.0.moved.fetch_add(1, Ordering::Relaxed);
                }
            }
            let _done = Done(state);
            router.call(req.map(Body::new)).await
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        // Our own deadlines (the watchdog below) tell the wait for a request
        // apart from reading one; hyper's would close keep-alive connections
        // at the header deadline.
        .header_read_timeout(None)
        .max_buf_size(MAX_HEADER_BYTES.max(8192) * 2)
        .max_header_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut dog = Watchdog::new(&limits, &state);
    let mut tick = tokio::time::interval(dog.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    log::debug!("connection from {peer}: {e}");
                }
                return;
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            () = state.evict.notified() => {
                log::debug!("connection from {peer} closed to make room for a new one");
                return;
            }
            now = tick.tick() => {
                if let Some(why) = dog.check(&shared, &state, now.into_std()) {
                    log::debug!("connection from {peer} closed: {why}");
                    return;
                }
            }
        }
    }
}

/// A connection's deadlines, checked once a tick (a few per shortest
/// deadline, at most one a second): no clock read or timer per request.
struct Watchdog {
    tick: Duration,
    limits: Limits,
    moved: u64,
    moved_at: Instant,
    /// The request being read (by its number) and since when.
    head: Option<(u64, Instant)>,
    /// The request in a handler (by its number) and since when.
    handler: Option<(u64, Instant)>,
}

impl Watchdog {
    fn new(limits: &Limits, c: &Conn) -> Watchdog {
        let tick = (limits.header_read.min(limits.idle) / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(1));
        Watchdog {
            tick,
            limits: *limits,
            moved: c.moved.load(Ordering::Relaxed),
            moved_at: Instant::now(),
            head: None,
            handler: None,
        }
    }

    /// Why the connection must close now, if it must.
    fn check(&mut self, shared: &Shared, c: &Conn, now: Instant) -> Option<&'static str> {
        let moved = c.moved.load(Ordering::Relaxed);
        if moved != self.moved {
            self.moved = moved;
            self.moved_at = now;
            c.idle_since.store(shared.ms(now), Ordering::Relaxed);
        }
        let number = c.requests.load(Ordering::Relaxed);
        if c.busy.load(Ordering::Relaxed) > 0 {
            self.head = None;
            let (n, since) = *self.handler.get_or_insert((number, now));
            if n != number {
                self.handler = Some((number, now));
            } else if now.duration_since(since) >= REQUEST_TIMEOUT {
                return Some("a handler took too long");
            }
            return None;
        }
        self.handler = None;
        if c.head.load(Ordering::Relaxed) {
            let (n, since) = *self.head.get_or_insert((number, now));
            if n != number {
                // A request finished and the next one started between ticks.
                self.head = Some((number, now));
            } else if now.duration_since(since) >= self.limits.header_read {
                return Some("its request's headers came too slowly");
            }
        } else {
            self.head = None;
        }
        (now.duration_since(self.moved_at) >= self.limits.idle).then_some("idle")
    }
}

/// A stream that notes when bytes move.
struct Watched<S> {
    inner: S,
    conn: Arc<Conn>,
}

impl<S> Watched<S> {
    fn moved(&self) {
        self.conn.moved.fetch_add(1, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r
            && buf.filled().len() > before
        {
            self.moved();
            if self.conn.busy.load(Ordering::Relaxed) == 0 {
                self.conn.head.store(true, Ordering::Relaxed);
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r
            && n > 0
        {
            self.moved();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r
            && n > 0
        {
            self.moved();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    const PROXY: &str = "10.0.0.5:40000";

    #[test]
    fn forwarded_headers_count_only_from_a_listed_proxy() {
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "mail.example.com"),
        ]);
        let trusted = ["10.0.0.5".parse().unwrap()];
        let c = client(PROXY.parse().unwrap(), &h, &trusted, false);
        assert_eq!(c.addr, "203.0.113.7".parse::<IpAddr>().unwrap());
        assert!(c.https);
        assert_eq!(c.forwarded_host.as_deref(), Some("mail.example.com"));
        // The same headers from anyone else are the client's own claims.
        let c = client("198.51.100.9:5000".parse().unwrap(), &h, &trusted, false);
        assert_eq!(c.addr, "198.51.100.9".parse::<IpAddr>().unwrap());
        assert!(!c.https);
        assert_eq!(c.forwarded_host, None);
        // And with no proxy configured, nobody is believed.
        let c = client(PROXY.parse().unwrap(), &h, &[], false);
        assert_eq!(c.addr, "10.0.0.5".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn a_spoofed_forwarded_for_entry_left_of_the_proxy_is_ignored() {
        // The client wrote "1.2.3.4"; our proxy appended the real peer.
        let h = headers(&[("x-forwarded-for", "1.2.3.4, 203.0.113.7")]);
        let trusted = ["10.0.0.5".parse().unwrap(), "10.0.0.6".parse().unwrap()];
        let c = client(PROXY.parse().unwrap(), &h, &trusted, false);
        assert_eq!(c.addr, "203.0.113.7".parse::<IpAddr>().unwrap());
        // Two trusted proxies in a row: skip the inner one.
        let h = headers(&[("x-forwarded-for", "1.2.3.4, 203.0.113.7, 10.0.0.6")]);
        let c = client(PROXY.parse().unwrap(), &h, &trusted, false);
        assert_eq!(c.addr, "203.0.113.7".parse::<IpAddr>().unwrap());
        // Garbage is not an address.
        let h = headers(&[("x-forwarded-for", "not-an-ip")]);
        let c = client(PROXY.parse().unwrap(), &h, &trusted, false);
        assert_eq!(c.addr, "10.0.0.5".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn an_ipv4_proxy_on_an_ipv6_socket_is_recognised() {
        let h = headers(&[("x-forwarded-for", "203.0.113.7")]);
        let trusted = ["10.0.0.5".parse().unwrap()];
        let c = client(
            "[::ffff:10.0.0.5]:4000".parse().unwrap(),
            &h,
            &trusted,
            true,
        );
        assert_eq!(c.addr, "203.0.113.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn deadlines_tell_a_slow_request_from_an_idle_connection_and_a_busy_one() {
        let l = Limits {
            max_connections: 1,
            header_read: Duration::from_secs(2),
            idle: Duration::from_secs(60),
        };
        let shared = Shared {
            router: Router::new(),
            trusted: vec![],
            limits: l,
            tls: None,
            open: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            base: Instant::now(),
        };
        let c = Conn::default();
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut dog = Watchdog::new(&l, &c);
        assert_eq!(dog.check(&shared, &c, s(30)), None, "quiet, not idle yet");
        // A request starts arriving and never finishes.
        c.moved.fetch_add(1, Ordering::Relaxed);
        c.head.store(true, Ordering::Relaxed);
        assert_eq!(dog.check(&shared, &c, s(31)), None);
        assert!(dog.check(&shared, &c, s(33)).is_some(), "headers too slow");
        // Requests that keep coming, each quick, are never "too slow".
        let mut dog = Watchdog::new(&l, &c);
        for i in 0..10 {
            c.requests.fetch_add(1, Ordering::Relaxed);
            c.moved.fetch_add(1, Ordering::Relaxed);
            assert_eq!(dog.check(&shared, &c, s(40 + i)), None, "{i}");
        }
        // A handler has its own, longer deadline.
        c.head.store(false, Ordering::Relaxed);
        c.busy.store(1, Ordering::Relaxed);
        assert_eq!(dog.check(&shared, &c, s(100)), None);
        assert_eq!(dog.check(&shared, &c, s(170)), None);
        assert!(dog.check(&shared, &c, s(180)).is_some(), "stuck handler");
        c.busy.store(0, Ordering::Relaxed);
        let mut dog = Watchdog::new(&l, &c);
        assert!(dog.check(&shared, &c, s(200)).is_some(), "idle");
    }
}
