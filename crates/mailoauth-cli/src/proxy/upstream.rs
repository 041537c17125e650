//! The proxy's side towards the real server: TCP, implicit TLS or STARTTLS
//! (certificate always verified), and the IMAP XOAUTH2/OAUTHBEARER login.
//!
//! Owns: producing an authenticated upstream stream. Must not: send anything the
//! client typed (the client's credentials never leave this machine).

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::Stream;
use super::trace::{self, Dir};
use mailoauth::config::{Service, TlsMode};
use mailoauth::mail::{
    challenge_answer, choose, conn::tls_config, decode_challenge, imap::capabilities,
    initial_response,
};
use mailoauth::providers::{Account, Server};

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
    let s = s.trim_end_matches(['\r', '\n']).to_owned();
    trace::line(Dir::FromServer, &s, false);
    Ok(s)
}

async fn send<W: AsyncWriteExt + Unpin>(w: &mut W, s: &str) -> Result<(), String> {
    trace::line(Dir::ToServer, s, false);
    write_line(w, s).await
}

/// Send a SASL response on its own line: traced by length only.
async fn send_secret<W: AsyncWriteExt + Unpin>(w: &mut W, s: &str) -> Result<(), String> {
    trace::line(Dir::ToServer, s, true);
    write_line(w, s).await
}

async fn write_line<W: AsyncWriteExt + Unpin>(w: &mut W, s: &str) -> Result<(), String> {
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

/// Connect to the account's server for `service` and log in with `token`, all
/// within `timeout`.
pub async fn login(
    service: Service,
    account: &Account,
    token: &str,
    timeout: Duration,
) -> Result<Upstream, String> {
    let server = mailoauth::mail::server_for(account, service)
        .ok_or_else(|| format!("account `{}` has no {service:?} server", account.name))?;
    let work = async {
        match service {
            Service::Imap => imap(account, server, token).await,
            Service::Pop => pop(account, server, token).await,
            Service::Smtp => smtp(account, server, token).await,
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("{}:{} did not answer in time", server.host, server.port))?
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
async fn imap(account: &Account, server: &Server, token: &str) -> Result<Upstream, String> {
    let io = open(account, server, Proto::Imap).await?;
    imap_auth(io, account, server, token).await
}

/// Connect to the account's POP3 server and log in with `token` (AUTH with continuation).
async fn pop(account: &Account, server: &Server, token: &str) -> Result<Upstream, String> {
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
    send_secret(&mut io, &initial_response(mech, account, server, token)).await?;
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
        send_secret(&mut io, &ir).await?;
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

/// Read an SMTP reply: (code, lines).
async fn smtp_reply<R: AsyncBufReadExt + Unpin>(io: &mut R) -> Result<(u16, Vec<String>), String> {
    let mut lines = Vec::new();
    loop {
        let l = line(io).await?;
        let code = l
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| format!("not an SMTP reply: {l}"))?;
        let more = l.as_bytes().get(3) == Some(&b'-');
        lines.push(l);
        if !more {
            return Ok((code, lines));
        }
    }
}

/// Connect to the account's SMTP submission server, EHLO, STARTTLS when
/// configured, and authenticate with `token` (two-step AUTH when the line would
/// pass 512 octets).
async fn smtp(account: &Account, server: &Server, token: &str) -> Result<Upstream, String> {
    let tcp = TcpStream::connect((server.host.as_str(), server.port))
        .await
        .map_err(|e| format!("{}:{}: {e}", server.host, server.port))?;
    let _ = tcp.set_nodelay(true);
    // Greeting and EHLO, on whatever stream: returns EHLO's reply.
    async fn hello<R: AsyncBufReadExt + AsyncWriteExt + Unpin>(
        io: &mut R,
        greet: bool,
    ) -> Result<(u16, Vec<String>), String> {
        if greet {
            let (code, _) = smtp_reply(io).await?;
            if code != 220 {
                return Err(format!("unexpected SMTP greeting {code}"));
            }
        }
        send(io, "EHLO mailoauth.localhost").await?;
        smtp_reply(io).await
    }
    let (mut io, (code, ehlo)): (BufReader<Box<dyn Stream>>, _) = match server.tls {
        TlsMode::Implicit => {
            let mut io = BufReader::new(tls(tcp, account, &server.host).await?);
            let r = hello(&mut io, true).await?;
            (io, r)
        }
        TlsMode::None => {
            let mut io = BufReader::new(Box::new(tcp) as Box<dyn Stream>);
            let r = hello(&mut io, true).await?;
            (io, r)
        }
        TlsMode::Starttls => {
            let mut plain = BufReader::new(tcp);
            hello(&mut plain, true).await?;
            send(&mut plain, "STARTTLS").await?;
            let (c, _) = smtp_reply(&mut plain).await?;
            if c != 220 || !plain.buffer().is_empty() {
                return Err("STARTTLS refused (or data before the handshake)".into());
            }
            let mut io = BufReader::new(tls(plain.into_inner(), account, &server.host).await?);
            let r = hello(&mut io, false).await?;
            (io, r)
        }
    };
    if code != 250 {
        return Err(format!("EHLO refused: {}", ehlo.join(" / ")));
    }
    let offered: Vec<String> = ehlo
        .iter()
        .filter_map(|l| l.get(4..))
        .filter_map(|l| l.strip_prefix("AUTH ").or_else(|| l.strip_prefix("AUTH=")))
        .flat_map(|m| m.split_whitespace().map(str::to_owned))
        .collect();
    let mech = choose(&offered).map_err(|e| e.to_string())?;
    let name = mech.name().to_uppercase();
    let ir = initial_response(mech, account, server, token);
    let one = format!("AUTH {name} {ir}");
    let (mut code, mut r) = if one.len() + 2 <= 512 {
        send(&mut io, &one).await?;
        smtp_reply(&mut io).await?
    } else {
        send(&mut io, &format!("AUTH {name}")).await?;
        let (c, r) = smtp_reply(&mut io).await?;
        if c != 334 {
            return Err(format!("AUTH refused: {}", r.join(" / ")));
        }
        send_secret(&mut io, &ir).await?;
        smtp_reply(&mut io).await?
    };
    if code == 334 {
        log::info!(
            "upstream error challenge: {}",
            decode_challenge(r[0].get(4..).unwrap_or(""))
        );
        send(&mut io, challenge_answer(mech)).await?;
        (code, r) = smtp_reply(&mut io).await?;
    }
    if code != 235 {
        return Err(format!("upstream refused the token: {}", r.join(" / ")));
    }
    Ok(Upstream { io, caps: ehlo })
}
