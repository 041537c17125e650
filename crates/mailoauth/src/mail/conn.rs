//! A line-oriented mail connection: TCP, implicit TLS or a STARTTLS upgrade.
//!
//! Owns: connecting with timeouts, the TLS handshake (whom to trust is
//! [`crate::tls`]'s), CRLF line I/O as bytes with a length cap, and copying
//! literals to a writer. Must not: know any protocol's commands, decode what it
//! reads (message bodies are bytes, not text), hold a literal in memory, or
//! upgrade to TLS with unread bytes buffered (a server — or a man in the middle
//! — could inject plaintext responses that would then be read as if protected:
//! the STARTTLS injection attack).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

use crate::config::TlsMode;
use crate::providers::Server;
use crate::tls::{self, TlsFailure};

/// Longest line we accept from a server (IMAP literals aside); the login
/// machines apply their own, smaller, limit on top.
const MAX_LINE: usize = crate::proto::MAX_REPLY_LINE;

/// Why a connection failed; `Unreachable` maps to exit 4.
#[derive(Debug)]
pub enum ConnError {
    /// TCP could not connect or timed out.
    Unreachable(String),
    /// TLS handshake or certificate problem.
    Tls(TlsFailure),
    /// The server said something that is not the protocol, or closed.
    Protocol(String),
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::Unreachable(s) => write!(f, "unreachable: {s}"),
            ConnError::Tls(s) => write!(f, "TLS: {s}"),
            ConnError::Protocol(s) => write!(f, "protocol: {s}"),
        }
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// An open connection to a mail server.
pub struct Conn {
    io: BufReader<Stream>,
    host: String,
    tls: Arc<rustls::ClientConfig>,
    /// True once the connection is encrypted.
    pub encrypted: bool,
}

impl Conn {
    /// Connect to `server`; implicit TLS starts encrypted, the others in plain text.
    pub fn connect(
        server: &Server,
        ca_file: Option<&Path>,
        timeout: Duration,
    ) -> Result<Conn, ConnError> {
        // Our resolver, not glibc's NSS (see `dns`).
        let addrs = crate::dns::Resolver::system()
            .socket_addrs(&server.host, server.port)
            .map_err(|e| ConnError::Unreachable(e.to_string()))?;
        let mut last = None;
        let mut tcp = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let tcp = tcp.ok_or_else(|| {
            ConnError::Unreachable(format!(
                "{}:{}: {}",
                server.host,
                server.port,
                last.map(|e| e.to_string())
                    .unwrap_or_else(|| "no address".into())
            ))
        })?;
        tcp.set_read_timeout(Some(timeout)).ok();
        tcp.set_write_timeout(Some(timeout)).ok();
        let _ = tcp.set_nodelay(true);
        let tls = tls::client_config(ca_file).map_err(ConnError::Tls)?;
        let mut conn = Conn {
            io: BufReader::new(Stream::Plain(tcp)),
            host: server.host.clone(),
            tls,
            encrypted: false,
        };
        if server.tls == TlsMode::Implicit {
            conn = conn.upgrade()?;
        }
        Ok(conn)
    }

    /// Switch to TLS after the server agreed to STARTTLS/STLS.
    pub fn upgrade(self) -> Result<Conn, ConnError> {
        if !self.io.buffer().is_empty() {
            return Err(ConnError::Protocol(
                "the server sent data before the TLS handshake (possible STARTTLS injection); refusing".into(),
            ));
        }
        let Conn { io, host, tls, .. } = self;
        let Stream::Plain(tcp) = io.into_inner() else {
            return Err(ConnError::Protocol("already encrypted".into()));
        };
        let name = ServerName::try_from(host.clone()).map_err(|e| {
            ConnError::Tls(TlsFailure::Other(format!(
                "{host} is not a name TLS can check: {e}"
            )))
        })?;
        let conn = rustls::ClientConnection::new(tls.clone(), name)
            .map_err(|e| ConnError::Tls(TlsFailure::Other(e.to_string())))?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        // Handshake now, so certificate problems are reported as such.
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .map_err(|e| ConnError::Tls(tls::handshake_failure(&e)))?;
        }
        Ok(Conn {
            io: BufReader::new(Stream::Tls(Box::new(stream))),
            host,
            tls,
            encrypted: true,
        })
    }

    fn read_error(&self, e: std::io::Error) -> ConnError {
        match e.kind() {
            // A read timeout surfaces as EAGAIN on sockets with SO_RCVTIMEO.
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                ConnError::Protocol(format!("{} did not answer within the timeout", self.host))
            }
            _ => ConnError::Protocol(format!("reading from {}: {e}", self.host)),
        }
    }

    /// Read one line as bytes, without its CRLF: never decoded, since a message
    /// line may be in any charset (or none).
    pub fn read_line(&mut self) -> Result<Vec<u8>, ConnError> {
        let mut line = Vec::new();
        // One byte over the limit tells an overlong line from one that fits.
        let n = (&mut self.io)
            .take(MAX_LINE as u64 + 3)
            .read_until(b'\n', &mut line)
            .map_err(|e| self.read_error(e))?;
        if n == 0 {
            return Err(ConnError::Protocol(format!(
                "{} closed the connection",
                self.host
            )));
        }
        if !line.ends_with(b"\n") {
            if line.len() > MAX_LINE {
                return Err(ConnError::Protocol(format!(
                    "the server is misbehaving: {} sent a line over {} MiB; refusing to go on",
                    self.host,
                    MAX_LINE >> 20
                )));
            }
            return Err(ConnError::Protocol(format!(
                "{} closed the connection inside a line",
                self.host
            )));
        }
        line.pop();
        if line.ends_with(b"\r") {
            line.pop();
        }
        if line.len() > MAX_LINE {
            return Err(ConnError::Protocol(format!(
                "the server is misbehaving: {} sent a line over {} MiB; refusing to go on",
                self.host,
                MAX_LINE >> 20
            )));
        }
        Ok(line)
    }

    /// Read one protocol line as text (invalid UTF-8 shown as U+FFFD: status
    /// texts are shown, never trusted).
    pub fn read_text(&mut self) -> Result<String, ConnError> {
        let line = self.read_line()?;
        Ok(String::from_utf8(line)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }

    /// Copy exactly `n` bytes (an IMAP literal) to `out` through a fixed-size
    /// buffer, so a literal of any size costs no more memory than a small one.
    pub fn copy_exact(&mut self, mut n: u64, out: &mut dyn Write) -> Result<(), CopyError> {
        let mut buf = vec![0u8; 64 * 1024];
        while n > 0 {
            let want = n.min(buf.len() as u64) as usize;
            let got = match self.io.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(CopyError::Read(ConnError::Protocol(format!(
                        "{} closed the connection inside a literal",
                        self.host
                    ))));
                }
                Ok(got) => got,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(CopyError::Read(self.read_error(e))),
            };
            out.write_all(&buf[..got]).map_err(CopyError::Write)?;
            n -= got as u64;
        }
        Ok(())
    }

    /// Wait up to `timeout` for the server to say something, without
    /// consuming it: `Ok(false)` when it stayed silent. The connection's own
    /// timeout applies again afterwards. (A watcher waits this way through an
    /// IDLE: a timeout inside `read_line` could drop half a line.)
    pub fn wait(&mut self, timeout: Duration, then: Duration) -> Result<bool, ConnError> {
        if !self.io.buffer().is_empty() {
            return Ok(true);
        }
        self.set_read_timeout(timeout.max(Duration::from_millis(1)));
        let r = self.io.fill_buf().map(|b| b.len());
        self.set_read_timeout(then);
        match r {
            Ok(0) => Err(ConnError::Protocol(format!(
                "{} closed the connection",
                self.host
            ))),
            Ok(_) => Ok(true),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.read_error(e)),
        }
    }

    fn tcp(&self) -> &TcpStream {
        match self.io.get_ref() {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }

    fn set_read_timeout(&self, t: Duration) {
        self.tcp().set_read_timeout(Some(t)).ok();
    }

    /// A handle another thread can end this connection with (a watcher told
    /// to stop is usually blocked in [`Conn::wait`]).
    pub fn stopper(&self) -> Option<Stopper> {
        self.tcp().try_clone().ok().map(Stopper)
    }

    /// Send one line (CRLF is added).
    pub fn write_line(&mut self, line: &str) -> Result<(), ConnError> {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.write_all(&bytes)
    }

    /// Send raw bytes (a message body: 8-bit content goes through untouched).
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<(), ConnError> {
        let s = self.io.get_mut();
        s.write_all(bytes)
            .and_then(|()| s.flush())
            .map_err(|e| ConnError::Protocol(format!("writing to {}: {e}", self.host)))
    }
}

/// Ends a connection from another thread: its reads and writes fail at once.
#[derive(Debug)]
pub struct Stopper(TcpStream);

impl Stopper {
    /// Shut the socket down both ways.
    pub fn stop(&self) {
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
}

/// Why copying a literal failed: reading from the server, or writing it out.
#[derive(Debug)]
pub enum CopyError {
    /// The server closed, timed out or failed.
    Read(ConnError),
    /// The writer (a Maildir file) failed.
    Write(std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn implicit_tls_to_a_plain_text_port_is_named_as_such() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let peer = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            // A plain IMAP server greets first, whatever the client sends.
            s.write_all(b"* OK IMAP4rev1 ready\r\n").unwrap();
            let _ = s.read(&mut [0u8; 512]);
        });
        let server = Server {
            host: "127.0.0.1".into(),
            port,
            tls: TlsMode::Implicit,
        };
        let Err(e) = Conn::connect(&server, None, Duration::from_secs(5)) else {
            panic!("a plain-text greeting is no TLS handshake");
        };
        assert!(matches!(e, ConnError::Tls(TlsFailure::NotTls(_))), "{e:?}");
        peer.join().unwrap();
    }
}
