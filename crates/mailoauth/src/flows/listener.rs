//! The loopback redirect listener of the authorization-code flow.
//!
//! Owns: binding loopback only (IPv4, plus IPv6 `::1` on the same port for
//! `localhost`), HTTP or HTTPS (self-signed certificate made on the spot),
//! answering each request with a small page, and delivering exactly one valid
//! callback (right path, right `state`). Connections are served side by side
//! (a thread each, [`MAX_CONNECTIONS`] at once), each with [`DEADLINE`] for the
//! whole exchange, so a client that trickles bytes cannot hold the browser's
//! callback back. Must not: accept anything else as a result — wrong path, wrong
//! state, garbage — or keep listening after a result.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// What arrived at the redirect URI (or was pasted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Callback {
    /// The authorization code.
    Code(String),
    /// The server's `error` (+ description): the user declined, or a misconfiguration.
    Denied(String),
}

/// Bound sockets, ready to serve.
pub struct Listener {
    sockets: Vec<TcpListener>,
    /// The port all sockets share.
    pub port: u16,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Listener {
    /// Bind `host` (a loopback name or address) on `port` (0 = any free port).
    pub fn bind(host: &str, port: u16, https: bool) -> Result<Listener> {
        let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let v6 = |p| SocketAddr::from((Ipv6Addr::LOCALHOST, p));
        let bind_err =
            |a: SocketAddr, e| Error::io(format!("cannot listen on {a} for the redirect"), e);
        let mut sockets = Vec::new();
        let port = match host.trim_matches(['[', ']']) {
            "::1" => {
                sockets.push(TcpListener::bind(v6(port)).map_err(|e| bind_err(v6(port), e))?);
                sockets[0]
                    .local_addr()
                    .map_err(|e| bind_err(v6(port), e))?
                    .port()
            }
            h => {
                sockets.push(TcpListener::bind(v4).map_err(|e| bind_err(v4, e))?);
                let p = sockets[0].local_addr().map_err(|e| bind_err(v4, e))?.port();
                if h.eq_ignore_ascii_case("localhost") {
                    // Browsers may resolve localhost to ::1 first; best effort.
                    if let Ok(s) = TcpListener::bind(v6(p)) {
                        sockets.push(s);
                    }
                }
                p
            }
        };
        for s in &sockets {
            s.set_nonblocking(true)
                .map_err(|e| Error::io("cannot configure the redirect listener", e))?;
        }
        let tls = if https {
            Some(self_signed_config()?)
        } else {
            None
        };
        Ok(Listener { sockets, port, tls })
    }

    /// Serve until one valid callback for `path` + `state` arrives (sent on `tx`) or
    /// `done` is set. Runs on its own thread; returns when finished, closing the sockets.
    pub fn serve(self, path: String, state: String, tx: Sender<Callback>, done: Arc<AtomicBool>) {
        let expected = Arc::new((path, state));
        let (results, arrived) = mpsc::channel();
        let busy = Arc::new(AtomicUsize::new(0));
        while !done.load(Ordering::SeqCst) {
            if let Ok(cb) = arrived.try_recv() {
                done.store(true, Ordering::SeqCst);
                let _ = tx.send(cb);
                return;
            }
            let mut idle = true;
            for s in &self.sockets {
                // At the cap, new connections wait in the kernel's queue until a
                // slot frees (within DEADLINE), rather than being turned away.
                if busy.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                    break;
                }
                match s.accept() {
                    Ok((stream, _)) => {
                        idle = false;
                        busy.fetch_add(1, Ordering::SeqCst);
                        let (tls, expected, results, slot) = (
                            self.tls.clone(),
                            expected.clone(),
                            results.clone(),
                            busy.clone(),
                        );
                        let spawned =
                            std::thread::Builder::new()
                                .name("redirect".into())
                                .spawn(move || {
                                    if let Some(cb) = handle(stream, tls, &expected.0, &expected.1)
                                    {
                                        let _ = results.send(cb);
                                    }
                                    slot.fetch_sub(1, Ordering::SeqCst);
                                });
                        if let Err(e) = spawned {
                            busy.fetch_sub(1, Ordering::SeqCst);
                            log::warn!("redirect listener: cannot start a thread: {e}");
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => log::warn!("redirect listener: {e}"),
                }
            }
            if idle {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Connections served at once. A browser opens a few (the callback, a
/// favicon, a speculative one); more than this is a scanner or an attack.
pub const MAX_CONNECTIONS: usize = 16;

/// How long one connection may take from accept to the end of our answer,
/// however it spreads its bytes: a local browser needs milliseconds.
pub const DEADLINE: Duration = Duration::from_secs(10);

fn handle(
    stream: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    path: &str,
    state: &str,
) -> Option<Callback> {
    let _ = stream.set_nonblocking(false);
    let stream = Deadline {
        stream,
        until: Instant::now() + DEADLINE,
    };
    match tls {
        None => serve_one(stream, path, state),
        Some(cfg) => {
            let conn = rustls::ServerConnection::new(cfg).ok()?;
            serve_one(rustls::StreamOwned::new(conn, stream), path, state)
        }
    }
}

/// A socket whose every read and write fails once `until` has passed: the
/// per-read timeouts are set to what is left, so trickling a byte at a time
/// does not extend it.
struct Deadline {
    stream: TcpStream,
    until: Instant,
}

impl Deadline {
    fn left(&self) -> std::io::Result<Duration> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the redirect connection took too long",
            ));
        }
        Ok(left)
    }
}

impl Read for Deadline {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.left()?;
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

impl Write for Deadline {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let left = self.left()?;
        self.stream.set_write_timeout(Some(left))?;
        self.stream.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.stream.flush()
    }
}

/// Read one request, answer it, and return the callback it carries if it is valid.
pub(crate) fn serve_one<S: Read + Write>(stream: S, path: &str, state: &str) -> Option<Callback> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    // Cap the request line: a callback URL is a few KiB at most.
    if (&mut reader).take(16 * 1024).read_line(&mut line).ok()? == 0 {
        return None;
    }
    // Drain headers (bounded) so the browser sees a clean response.
    let mut header = String::new();
    for _ in 0..100 {
        header.clear();
        match (&mut reader).take(16 * 1024).read_line(&mut header) {
            Ok(0) | Err(_) => break,
            Ok(_) if header.trim().is_empty() => break,
            Ok(_) => {}
        }
    }
    let mut stream = reader.into_inner();
    let target = line.split_whitespace().nth(1).unwrap_or("");
    let (result, status, page) = match parse_callback(target, path, state) {
        Ok(cb @ Callback::Code(_)) => (
            Some(cb),
            "200 OK",
            page(
                "Signed in",
                "mailoauth received the authorization. You can close this window.",
            ),
        ),
        Ok(cb @ Callback::Denied(_)) => {
            let Callback::Denied(why) = &cb else {
                unreachable!()
            };
            let text = format!(
                "The sign-in was not completed: {}. Return to the terminal.",
                html_escape(why)
            );
            (Some(cb), "200 OK", page("Sign-in failed", &text))
        }
        Err(why) => (
            None,
            why.status(),
            page("Not the expected redirect", why.text()),
        ),
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n{page}",
        page.len()
    );
    let _ = stream.flush();
    result
}

/// Why a request was not the callback.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejected {
    /// Another path (favicon, a scanner …).
    WrongPath,
    /// `state` missing or different: possibly forged, never accepted.
    WrongState,
    /// Neither `code` nor `error`.
    NoCode,
}

impl Rejected {
    fn status(&self) -> &'static str {
        match self {
            Rejected::WrongPath => "404 Not Found",
            _ => "400 Bad Request",
        }
    }

    /// Explanation for the page and the terminal.
    pub fn text(&self) -> &'static str {
        match self {
            Rejected::WrongPath => "This is not the redirect path mailoauth waits on.",
            Rejected::WrongState => "The state parameter does not match this sign-in; ignored.",
            Rejected::NoCode => "The redirect carries neither a code nor an error.",
        }
    }
}

/// Check a request target (`/path?query`) or a full pasted URL against the expected
/// path and state.
pub fn parse_callback(
    target: &str,
    path: &str,
    state: &str,
) -> std::result::Result<Callback, Rejected> {
    let url = if target.contains("://") {
        url::Url::parse(target)
    } else {
        url::Url::parse("http://localhost/").and_then(|b| b.join(target))
    }
    .map_err(|_| Rejected::NoCode)?;
    if url.path() != path {
        return Err(Rejected::WrongPath);
    }
    let q = |k: &str| {
        url.query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.into_owned())
    };
    if q("state").as_deref() != Some(state) {
        return Err(Rejected::WrongState);
    }
    if let Some(code) = q("code").filter(|c| !c.is_empty()) {
        return Ok(Callback::Code(code));
    }
    match q("error") {
        Some(e) => {
            let d = q("error_description")
                .map(|d| format!(": {d}"))
                .unwrap_or_default();
            // The browser relays the server's words; they end up on the terminal.
            Ok(Callback::Denied(
                crate::text::printable(&format!("{e}{d}")).into_owned(),
            ))
        }
        None => Err(Rejected::NoCode),
    }
}

fn page(title: &str, text: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>mailoauth: {title}</title></head>\
         <body style=\"font-family:sans-serif;margin:3em\"><h1>{title}</h1><p>{text}</p></body></html>"
    )
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A rustls server config with a fresh self-signed certificate for localhost,
/// for apps registered with `https://localhost:PORT` redirect URIs.
fn self_signed_config() -> Result<Arc<rustls::ServerConfig>> {
    let err = |e: String| Error::Flow(format!("cannot set up the HTTPS redirect listener: {e}"));
    let ck = rcgen::generate_simple_self_signed(vec![
        "localhost".into(),
        "127.0.0.1".into(),
        "::1".into(),
    ])
    .map_err(|e| err(e.to_string()))?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .map_err(|e| err(e.to_string()))?;
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trickling_connection_is_closed_at_the_deadline() {
        let l = Listener::bind("127.0.0.1", 0, false).unwrap();
        let port = l.port;
        let (tx, _rx) = mpsc::channel();
        let done = Arc::new(AtomicBool::new(false));
        let d2 = done.clone();
        let server = std::thread::spawn(move || l.serve("/cb".into(), "s".into(), tx, d2));
        let mut loris = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let start = Instant::now();
        // A byte a second never trips a per-read timeout; only a deadline ends it.
        let mut closed = None;
        for b in b"GET /cb?state=s&code=slow HTTP/1.1\r\nHost: x\r\n".iter() {
            if loris.write_all(&[*b]).is_err() {
                closed = Some(start.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
            loris.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 512];
            match loris.read(&mut buf) {
                Ok(_) => {
                    closed = Some(start.elapsed());
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    closed = Some(start.elapsed());
                    break;
                }
            }
            loris.set_nonblocking(false).unwrap();
        }
        done.store(true, Ordering::SeqCst);
        server.join().unwrap();
        let closed = closed.expect("the slow connection was never closed");
        assert!(
            closed >= DEADLINE - Duration::from_secs(1)
                && closed <= DEADLINE + Duration::from_secs(3),
            "closed after {closed:?}"
        );
    }

    #[test]
    fn callback_validation() {
        assert_eq!(
            parse_callback("/cb?code=abc&state=s1", "/cb", "s1"),
            Ok(Callback::Code("abc".into()))
        );
        assert_eq!(
            parse_callback("/cb?code=abc&state=s2", "/cb", "s1"),
            Err(Rejected::WrongState)
        );
        assert_eq!(
            parse_callback("/cb?code=abc", "/cb", "s1"),
            Err(Rejected::WrongState)
        );
        assert_eq!(
            parse_callback("/favicon.ico", "/cb", "s1"),
            Err(Rejected::WrongPath)
        );
        assert_eq!(
            parse_callback("/cb?state=s1", "/cb", "s1"),
            Err(Rejected::NoCode)
        );
        assert_eq!(
            parse_callback(
                "http://127.0.0.1:5/cb?error=access_denied&state=s1",
                "/cb",
                "s1"
            ),
            Ok(Callback::Denied("access_denied".into()))
        );
        assert_eq!(
            parse_callback("http://localhost:9/cb?state=s1&code=x%2By", "/cb", "s1"),
            Ok(Callback::Code("x+y".into()))
        );
    }
}
