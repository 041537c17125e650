//! The SMTP proxy's client side: EHLO offering AUTH PLAIN and LOGIN, the local
//! password check, then an XOAUTH2 login upstream (two-step when long) and an
//! untouched relay of the mail transaction.
//!
//! Must not: accept MAIL, RCPT or DATA before authentication (530), or echo
//! credentials.

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
    if (&mut *c).take(4096).read_line(&mut s).await? == 0 {
        return Ok(None);
    }
    Ok(Some(Zeroizing::new(
        s.trim_end_matches(['\r', '\n']).to_owned(),
    )))
}

fn b64(s: &str) -> Option<Zeroizing<String>> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .ok()?;
    Some(Zeroizing::new(String::from_utf8_lossy(&raw).into_owned()))
}

async fn pre_auth(c: &mut Client) -> std::io::Result<Option<(String, Zeroizing<String>)>> {
    loop {
        let Some(line) = read_line(c).await? else {
            return Ok(None);
        };
        let (cmd, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        match cmd.to_ascii_uppercase().as_str() {
            "EHLO" => reply(c, "250-mailoauth proxy\r\n250-AUTH PLAIN LOGIN\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES").await?,
            "HELO" => reply(c, "250 mailoauth proxy").await?,
            "NOOP" | "RSET" => reply(c, "250 2.0.0 OK").await?,
            "QUIT" => {
                reply(c, "221 2.0.0 bye").await?;
                return Ok(None);
            }
            "AUTH" => {
                let (mech, ir) = arg.split_once(' ').unwrap_or((arg, ""));
                match mech.to_ascii_uppercase().as_str() {
                    "PLAIN" => {
                        let msg = if ir.is_empty() {
                            reply(c, "334 ").await?;
                            read_line(c).await?.unwrap_or_default()
                        } else {
                            Zeroizing::new(ir.to_owned())
                        };
                        let decoded = b64(&msg).unwrap_or_default();
                        let parts: Vec<&str> = decoded.split('\0').collect();
                        if parts.len() != 3 {
                            reply(c, "501 5.5.2 invalid PLAIN message").await?;
                            continue;
                        }
                        return Ok(Some((parts[1].to_owned(), Zeroizing::new(parts[2].to_owned()))));
                    }
                    "LOGIN" => {
                        // The user may come as an initial response (smtplib does that).
                        let user = if ir.is_empty() {
                            reply(c, "334 VXNlcm5hbWU6").await?;
                            read_line(c).await?.unwrap_or_default()
                        } else {
                            Zeroizing::new(ir.to_owned())
                        };
                        reply(c, "334 UGFzc3dvcmQ6").await?;
                        let pass = b64(&read_line(c).await?.unwrap_or_default()).unwrap_or_default();
                        return Ok(Some((b64(&user).unwrap_or_default().to_string(), pass)));
                    }
                    _ => reply(c, "504 5.5.4 only AUTH PLAIN or LOGIN here").await?,
                }
            }
            _ => reply(c, "530 5.7.0 Authentication required").await?,
        }
    }
}

/// Serve one SMTP client.
pub async fn serve(ctx: Arc<Context>, stream: TcpStream) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let mut c = BufReader::new(stream);
    let io = |e: std::io::Error| e.to_string();
    reply(&mut c, "220 mailoauth proxy ESMTP ready")
        .await
        .map_err(io)?;
    // Clients try mechanisms in turn (smtplib: PLAIN, then LOGIN): allow a few attempts.
    let mut attempts = 0;
    loop {
        let Ok(Ok(Some((user, pass)))) =
            tokio::time::timeout(LOGIN_TIMEOUT, pre_auth(&mut c)).await
        else {
            return Ok(());
        };
        if ctx.accepts(&user, &pass).await {
            break;
        }
        reply(&mut c, "535 5.7.8 wrong user or proxy password")
            .await
            .map_err(io)?;
        attempts += 1;
        if attempts == 3 {
            return Ok(());
        }
    }
    let up = ctx
        .upstream(&mut c, Service::Smtp, |why| format!("454 4.7.0 {why}"))
        .await?;
    reply(&mut c, "235 2.7.0 Authentication successful")
        .await
        .map_err(io)?;
    relay(c, up.io).await
}
