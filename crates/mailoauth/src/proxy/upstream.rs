//! The proxy's side towards the real server: TCP, implicit TLS or STARTTLS
//! (certificate always verified), and the IMAP XOAUTH2/OAUTHBEARER login.
//!
//! Owns: producing an authenticated upstream stream. Must not: send anything the
//! client typed (the client's credentials never leave this machine).

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::config::TlsMode;
use crate::mail::{
    challenge_answer, choose, conn::tls_config, decode_challenge, imap::capabilities,
    initial_response,
};
use crate::providers::{Account, Server};

/// A byte stream, plain or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// An authenticated upstream IMAP connection.
pub struct Upstream {
    /// The stream (with any bytes already buffered).
    pub io: BufReader<Box<dyn Stream>>,
    /// Capabilities after login.
    pub caps: Vec<String>,
}

async fn line<R: AsyncBufReadExt + Unpin>(r: &mut R) -> Result<String, String> {
    let mut s = String::new();
    let n = (&mut *r)
        .take(64 * 1024)
        .read_line(&mut s)
        .await
        .map_err(|e| e.to_string())?;
    if n == 0 || !s.ends_with('\n') {
        return Err("the server closed the connection".into());
    }
    Ok(s.trim_end_matches(['\r', '\n']).to_owned())
}

async fn send<W: AsyncWriteExt + Unpin>(w: &mut W, s: &str) -> Result<(), String> {
    w.write_all(format!("{s}\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    w.flush().await.map_err(|e| e.to_string())
}

async fn tagged<R: AsyncBufReadExt + AsyncWriteExt + Unpin>(
    r: &mut R,
    tag: &str,
) -> Result<(Vec<String>, String), String> {
    let mut untagged = Vec::new();
    loop {
        let l = line(r).await?;
        if let Some(rest) = l.strip_prefix(tag).and_then(|x| x.strip_prefix(' ')) {
            return Ok((untagged, rest.to_owned()));
        }
        untagged.push(l);
    }
}

fn ok(status: &str) -> bool {
    status
        .get(..2)
        .is_some_and(|s| s.eq_ignore_ascii_case("OK"))
}

async fn tls(tcp: TcpStream, account: &Account, host: &str) -> Result<Box<dyn Stream>, String> {
    let cfg = tls_config(account.ca_file.as_deref()).map_err(|e| e.to_string())?;
    let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
    let s = tokio_rustls::TlsConnector::from(Arc::clone(&cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    Ok(Box::new(s))
}

/// Which protocol's greeting and STARTTLS command to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// IMAP: `* OK`, `STARTTLS`.
    Imap,
    /// POP3: `+OK`, `STLS`.
    Pop,
}

/// Connect, read the greeting, and upgrade with STARTTLS/STLS when configured.
async fn open(
    account: &Account,
    server: &Server,
    proto: Proto,
) -> Result<BufReader<Box<dyn Stream>>, String> {
    let tcp = TcpStream::connect((server.host.as_str(), server.port))
        .await
        .map_err(|e| format!("{}:{}: {e}", server.host, server.port))?;
    let _ = tcp.set_nodelay(true);
    let greeted = |g: &str| match proto {
        Proto::Imap => g.starts_with("* OK"),
        Proto::Pop => g.starts_with("+OK"),
    };
    let mut plain = match server.tls {
        TlsMode::Implicit => {
            let mut io = BufReader::new(tls(tcp, account, &server.host).await?);
            let g = line(&mut io).await?;
            return if greeted(&g) {
                Ok(io)
            } else {
                Err(format!("unexpected greeting: {g}"))
            };
        }
        _ => BufReader::new(tcp),
    };
    let g = line(&mut plain).await?;
    if !greeted(&g) {
        return Err(format!("unexpected greeting: {g}"));
    }
    if server.tls == TlsMode::None {
        return Ok(BufReader::new(Box::new(plain.into_inner())));
    }
    let agreed = match proto {
        Proto::Imap => {
            send(&mut plain, "p0 STARTTLS").await?;
            let (_, st) = tagged(&mut plain, "p0").await?;
            ok(&st)
        }
        Proto::Pop => {
            send(&mut plain, "STLS").await?;
            line(&mut plain).await?.starts_with("+OK")
        }
    };
    if !agreed {
        return Err("the server refused STARTTLS".into());
    }
    if !plain.buffer().is_empty() {
        return Err("data before the TLS handshake (STARTTLS injection?); refusing".into());
    }
    Ok(BufReader::new(
        tls(plain.into_inner(), account, &server.host).await?,
    ))
}

/// Connect to the account's IMAP server and log in with `token`.
pub async fn imap_login(
    account: &Account,
    server: &Server,
    token: &str,
    timeout: Duration,
) -> Result<Upstream, String> {
    let work = async {
        let io = open(account, server, Proto::Imap).await?;
        imap_auth(io, account, server, token).await
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("{}:{} did not answer in time", server.host, server.port))?
}

/// Connect to the account's POP3 server and log in with `token` (AUTH with continuation).
pub async fn pop_login(
    account: &Account,
    server: &Server,
    token: &str,
    timeout: Duration,
) -> Result<Upstream, String> {
    let work = async {
        let mut io = open(account, server, Proto::Pop).await?;
        send(&mut io, "CAPA").await?;
        let mut offered = Vec::new();
        if line(&mut io).await?.starts_with("+OK") {
            loop {
                let l = line(&mut io).await?;
                if l == "." {
                    break;
                }
                if let Some(m) = l.strip_prefix("SASL ") {
                    offered.extend(m.split_whitespace().map(str::to_owned));
                }
            }
        }
        let mech = choose(&offered).map_err(|e| e.to_string())?;
        send(&mut io, &format!("AUTH {}", mech.name().to_uppercase())).await?;
        let cont = line(&mut io).await?;
        if !cont.starts_with('+') || cont.starts_with("+OK") {
            return Err(format!("AUTH refused: {cont}"));
        }
        send(&mut io, &initial_response(mech, account, server, token)).await?;
        loop {
            let l = line(&mut io).await?;
            if l.starts_with("+OK") {
                return Ok(Upstream { io, caps: vec![] });
            }
            if l.starts_with("-ERR") {
                return Err(format!("upstream refused the token: {l}"));
            }
            if let Some(c) = l.strip_prefix('+') {
                log::info!("upstream error challenge: {}", decode_challenge(c));
                send(&mut io, challenge_answer(mech)).await?;
            }
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("{}:{} did not answer in time", server.host, server.port))?
}

async fn imap_auth(
    mut io: BufReader<Box<dyn Stream>>,
    account: &Account,
    server: &Server,
    token: &str,
) -> Result<Upstream, String> {
    send(&mut io, "p1 CAPABILITY").await?;
    let (lines, st) = tagged(&mut io, "p1").await?;
    let caps = capabilities(&lines, &st);
    let offered: Vec<String> = caps
        .iter()
        .filter_map(|c| c.strip_prefix("AUTH="))
        .map(str::to_owned)
        .collect();
    let mech = choose(&offered).map_err(|e| e.to_string())?;
    let ir = initial_response(mech, account, server, token);
    let name = mech.name().to_uppercase();
    if caps.iter().any(|c| c.eq_ignore_ascii_case("SASL-IR")) {
        send(&mut io, &format!("p2 AUTHENTICATE {name} {ir}")).await?;
    } else {
        send(&mut io, &format!("p2 AUTHENTICATE {name}")).await?;
        let cont = line(&mut io).await?;
        if !cont.starts_with('+') {
            return Err(format!("AUTHENTICATE refused: {cont}"));
        }
        send(&mut io, &ir).await?;
    }
    let mut untagged = Vec::new();
    let status = loop {
        let l = line(&mut io).await?;
        if let Some(c) = l.strip_prefix('+') {
            log::info!("upstream error challenge: {}", decode_challenge(c));
            send(&mut io, challenge_answer(mech)).await?;
            continue;
        }
        if let Some(rest) = l.strip_prefix("p2 ") {
            break rest.to_owned();
        }
        untagged.push(l);
    };
    if !ok(&status) {
        return Err(format!("upstream refused the token: {status}"));
    }
    let after = capabilities(&untagged, &status);
    Ok(Upstream {
        io,
        caps: if after.is_empty() { caps } else { after },
    })
}
