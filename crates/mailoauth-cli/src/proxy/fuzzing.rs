//! Entry points for the proxy's fuzz targets in `fuzz/` and for the stable
//! test that replays their corpus and crash inputs. Not an API.
//!
//! Owns: driving a dialect's pre-login reader ([`Dialect::next`] over a real
//! [`Conn`], literals and input budget included) the way the session does —
//! a wrong password is answered and the client may go on, STARTTLS starts the
//! dialogue over — with the `--debug` trace on, checking that no password the
//! reader hands over is traced. Must not: log in anywhere (every login is
//! refused) or do I/O beyond an in-memory stream.

use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::brake::ATTEMPTS_PER_CONNECTION;
use super::imap::Imap;
use super::pop::Pop;
use super::session::{Conn, Dialect, Step, base64_text, sasl_plain};
use super::smtp::Smtp;
use super::trace;

/// The IMAP client reader. Input: one byte of flags (bit 0: the listener
/// requires STARTTLS; bit 1: the client sends everything at once instead of
/// a line at a time, as a pipelining or flooding client does), then what the
/// client sends.
pub fn imap_client(data: &[u8]) {
    client::<Imap>(data);
}

/// The POP3 client reader (input as for [`imap_client`]).
pub fn pop_client(data: &[u8]) {
    client::<Pop>(data);
}

/// The SMTP client reader (input as for [`imap_client`]).
pub fn smtp_client(data: &[u8]) {
    client::<Smtp>(data);
}

/// The SASL decoders of the proxy: PLAIN and LOGIN's base64 text. What a
/// client encodes decodes back to the same user and password.
pub fn sasl(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = sasl_plain(&text);
    let _ = base64_text(&text);
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    assert_eq!(
        base64_text(&b64(text.as_bytes()))
            .as_deref()
            .map(String::as_str),
        Some(&*text)
    );
    let parts: Vec<&[u8]> = data.splitn(3, |&b| b == 0).collect();
    if let [authz, user, pass] = parts[..]
        && !pass.contains(&0)
        && let (Ok(user), Ok(pass)) = (std::str::from_utf8(user), std::str::from_utf8(pass))
    {
        let msg = [authz, b"\0", user.as_bytes(), b"\0", pass.as_bytes()].concat();
        let (u, p) = sasl_plain(&b64(&msg)).expect("a PLAIN message decodes");
        assert_eq!((u.as_str(), p.as_str()), (user, pass));
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a tokio runtime")
    })
}

/// Serialises runs: the trace capture is one per process.
static RUN: Mutex<()> = Mutex::new(());

fn client<D: Dialect>(data: &[u8]) {
    let Some((&flags, input)) = data.split_first() else {
        return;
    };
    let _one = RUN.lock().unwrap_or_else(|e| e.into_inner());
    capture_trace();
    TRACED.lock().unwrap_or_else(|e| e.into_inner()).clear();
    let mem = Mem {
        input: input.to_vec(),
        at: 0,
        by_line: flags & 2 == 0,
    };
    let passwords = runtime().block_on(dialogue::<D>(mem, flags & 1 == 1));
    let traced = std::mem::take(&mut *TRACED.lock().unwrap_or_else(|e| e.into_inner()));
    for p in passwords.iter().filter(|p| telling(p, input)) {
        for t in &traced {
            assert!(
                !client_words(t).contains(p.as_str()),
                "the trace shows the password {p:?} (fuzz data): {t:?}"
            );
        }
    }
}

/// Run the dialogue as the session does until the client leaves, breaks a
/// limit or used up its attempts; the passwords it sent.
async fn dialogue<D: Dialect>(input: Mem, mut need_tls: bool) -> Vec<String> {
    let mut c = Conn::new(Box::new(input), false);
    c.limit_input(D::MAX_INPUT);
    let mut d = D::default();
    let mut passwords = Vec::new();
    loop {
        match d.next(&mut c, need_tls).await {
            Err(e) => {
                if e.kind() == io::ErrorKind::InvalidData {
                    let _ = c.reply(&d.bye(&e.to_string())).await;
                }
                break;
            }
            Ok(Step::Closed) => break,
            Ok(Step::StartTls) => {
                assert!(need_tls, "STARTTLS accepted where it is not offered");
                // The session refuses bytes pipelined after STARTTLS; a
                // handshake would follow, and the dialogue starts over.
                if c.buffered() {
                    break;
                }
                need_tls = false;
                c.secure = true;
                d = D::default();
            }
            Ok(Step::Login(l)) => {
                assert!(!need_tls, "a login before STARTTLS");
                passwords.push(l.pass.to_string());
                if c.reply(&d.refused(&l)).await.is_err()
                    || passwords.len() == ATTEMPTS_PER_CONNECTION as usize
                {
                    break;
                }
            }
        }
    }
    passwords
}

/// A password worth looking for in the trace: long enough not to be one of
/// its words, not sent a second time where the trace may show it, and made
/// of what the client sent (not of U+FFFD standing in for bytes that were no
/// UTF-8, which any shown word may hold as well).
fn telling(p: &str, input: &[u8]) -> bool {
    let n = input
        .windows(p.len().max(1))
        .filter(|w| *w == p.as_bytes())
        .count();
    p.len() >= 8 && n <= 1 && !p.contains('\u{FFFD}')
}

/// What of a traced line came from the client's words: the lines the proxy
/// wrote (`<C`) and the trace's own markers left out, and what it shows by
/// design whatever the client puts there: the first word (an IMAP tag or a
/// command name) and the host name of EHLO/HELO.
fn client_words(line: &str) -> String {
    let Some((_, rest)) = line.split_once(" C> ") else {
        return String::new();
    };
    let mut out = rest.replace("[redacted]", " ");
    // `[N bytes redacted]` and `{literal of N bytes}`.
    for (open, close, word) in [('[', ']', " bytes redacted"), ('{', '}', " bytes")] {
        while let Some(i) = out.find(open) {
            let Some(j) = out[i..].find(close).map(|j| i + j) else {
                break;
            };
            if !out[i..j].ends_with(word) {
                break;
            }
            out.replace_range(i..=j, " ");
        }
    }
    let out = out.trim_start();
    match out.split_once(' ') {
        Some((first, _)) if ["EHLO", "HELO"].contains(&first) => String::new(),
        Some((_, words)) => words.to_owned(),
        None => String::new(),
    }
}

/// Lines the trace logged during the current run.
static TRACED: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        TRACED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(r.args().to_string());
    }
    fn flush(&self) {}
}

/// The trace on, into [`TRACED`] (once per process; a test binary with its
/// own logger keeps it and checks nothing).
fn capture_trace() {
    static CAPTURE: Capture = Capture;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if log::set_logger(&CAPTURE).is_ok() {
            log::set_max_level(log::LevelFilter::Debug);
        }
        trace::enable();
    });
}

/// A client connection that sends `input` then ends; what the proxy answers
/// is dropped (its lines are traced).
struct Mem {
    input: Vec<u8>,
    at: usize,
    /// Hand out one line per read, as a client waiting for each answer does.
    by_line: bool,
}

impl AsyncRead for Mem {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let at = self.at;
        let left = &self.input[at..];
        let line = match left.iter().position(|&b| b == b'\n') {
            Some(i) if self.by_line => i + 1,
            _ => left.len(),
        };
        let n = buf.remaining().min(line);
        buf.put_slice(&self.input[at..at + n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Mem {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
