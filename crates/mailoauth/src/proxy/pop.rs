//! The POP3 proxy's client side: `USER`/`PASS` and `AUTH PLAIN` (with or
//! without an initial response) checked against the local password, then an
//! XOAUTH2 login upstream and an untouched relay.
//!
//! Must not: answer anything but CAPA, USER, PASS, AUTH PLAIN, NOOP and QUIT
//! before login; echo credentials.

use std::sync::Arc;

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpStream;
use zeroize::Zeroizing;

use super::{Context, LOGIN_TIMEOUT, relay, reply};
use crate::config::Service;

type Client = BufReader<TcpStream>;

async fn read_line(c: &mut Client) -> std::io::Result<Option<Zeroizing<String>>> {
    let mut s = Zeroizing::new(String::new());
    // RFC 1939: 255 octets per command; leave room for a long AUTH PLAIN response.
    if (&mut *c).take(4096).read_line(&mut s).await? == 0 {
        return Ok(None);
    }
    let t = Zeroizing::new(s.trim_end_matches(['\r', '\n']).to_owned());
    Ok(Some(t))
}

/// (user, password) from a SASL PLAIN message.
fn plain(b64: &str) -> Option<(String, Zeroizing<String>)> {
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

async fn pre_auth(c: &mut Client) -> std::io::Result<Option<(String, Zeroizing<String>)>> {
    let mut user: Option<String> = None;
    loop {
        let Some(line) = read_line(c).await? else {
            return Ok(None);
        };
        let (cmd, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        match cmd.to_ascii_uppercase().as_str() {
            "CAPA" => reply(c, "+OK\r\nUSER\r\nSASL PLAIN\r\n.").await?,
            "NOOP" => reply(c, "+OK").await?,
            "QUIT" => {
                reply(c, "+OK bye").await?;
                return Ok(None);
            }
            "USER" if !arg.is_empty() => {
                user = Some(arg.to_owned());
                reply(c, "+OK").await?;
            }
            "PASS" => match user.take() {
                Some(u) => return Ok(Some((u, Zeroizing::new(arg.to_owned())))),
                None => reply(c, "-ERR USER first").await?,
            },
            "AUTH" => {
                let (mech, ir) = arg.split_once(' ').unwrap_or((arg, ""));
                if !mech.eq_ignore_ascii_case("PLAIN") {
                    reply(c, "-ERR only AUTH PLAIN here").await?;
                    continue;
                }
                let b64 = if ir.is_empty() {
                    reply(c, "+ ").await?;
                    read_line(c).await?.unwrap_or_default()
                } else {
                    Zeroizing::new(ir.to_owned())
                };
                match plain(&b64) {
                    Some(x) => return Ok(Some(x)),
                    None => reply(c, "-ERR invalid PLAIN message").await?,
                }
            }
            _ => reply(c, "-ERR log in first (USER/PASS or AUTH PLAIN)").await?,
        }
    }
}

/// Serve one POP3 client.
pub async fn serve(ctx: Arc<Context>, stream: TcpStream) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let mut c = BufReader::new(stream);
    let io = |e: std::io::Error| e.to_string();
    reply(&mut c, "+OK mailoauth proxy ready")
        .await
        .map_err(io)?;
    let Ok(Ok(Some((user, pass)))) = tokio::time::timeout(LOGIN_TIMEOUT, pre_auth(&mut c)).await
    else {
        return Ok(());
    };
    if !ctx.accepts(&user, &pass).await {
        reply(&mut c, "-ERR [AUTH] wrong user or proxy password")
            .await
            .map_err(io)?;
        return Ok(());
    }
    let up = ctx
        .upstream(&mut c, Service::Pop, |why| format!("-ERR [SYS/TEMP] {why}"))
        .await?;
    reply(&mut c, "+OK logged in").await.map_err(io)?;
    relay(c, up.io).await
}
