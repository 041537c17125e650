//! SMTP submission (RFC 6409) with AUTH (RFC 4954): STARTTLS on 587 or implicit
//! TLS on 465; `AUTH <mech> <ir>` only when the line fits in 512 octets, else the
//! two-step form (`AUTH <mech>`, `334`, the base64 alone) — Office 365 tokens
//! never fit, Gmail rejects long lines, Dovecot's submission caps at ~1 KB. The
//! harmless command is `MAIL FROM:<user>` then `RSET`, which is where Exchange
//! reports `530 5.7.57` and friends.

use std::time::Duration;

use super::conn::Conn;
use super::{Failure, Success, challenge_answer, choose, decode_challenge, initial_response};
use crate::config::TlsMode;
use crate::providers::{Account, Server};

/// RFC 5321 command line limit, CRLF included.
const MAX_COMMAND: usize = 512;

/// Read a (possibly multi-line) reply: (code, lines).
pub fn reply(conn: &mut Conn) -> Result<(u16, Vec<String>), Failure> {
    let mut lines = Vec::new();
    loop {
        let l = conn.read_line()?;
        let code = l.get(..3).and_then(|c| c.parse::<u16>().ok());
        let Some(code) = code else {
            return Err(Failure::Protocol(format!("not an SMTP reply: {l}")));
        };
        let more = l.as_bytes().get(3) == Some(&b'-');
        lines.push(l);
        if !more {
            return Ok((code, lines));
        }
    }
}

fn ehlo(conn: &mut Conn) -> Result<Vec<String>, Failure> {
    conn.write_line("EHLO mailoauth.localhost")?;
    let (code, lines) = reply(conn)?;
    if code != 250 {
        return Err(Failure::Protocol(format!(
            "EHLO refused: {}",
            lines.join(" / ")
        )));
    }
    Ok(lines)
}

/// Authenticate on an open, greeted, EHLO'd connection; returns the mechanism.
pub fn authenticate(
    conn: &mut Conn,
    ehlo_lines: &[String],
    account: &Account,
    server: &Server,
    token: &str,
) -> Result<crate::sasl::Mechanism, Failure> {
    let offered: Vec<String> = ehlo_lines
        .iter()
        .filter_map(|l| l.get(4..))
        .filter_map(|l| l.strip_prefix("AUTH ").or_else(|| l.strip_prefix("AUTH=")))
        .flat_map(|m| m.split_whitespace().map(str::to_owned))
        .collect();
    let mech = choose(&offered)?;
    let name = mech.name().to_uppercase();
    let ir = initial_response(mech, account, server, token);
    let one_line = format!("AUTH {name} {ir}");
    let (mut code, mut lines) = if one_line.len() + 2 <= MAX_COMMAND {
        conn.write_line(&one_line)?;
        reply(conn)?
    } else {
        conn.write_line(&format!("AUTH {name}"))?;
        let (c, l) = reply(conn)?;
        if c != 334 {
            return Err(Failure::Refused {
                reply: l.join(" / "),
                challenge: None,
                step: "AUTH",
            });
        }
        conn.write_line(&ir)?;
        reply(conn)?
    };
    let mut challenge = None;
    if code == 334 {
        challenge = Some(decode_challenge(lines[0].get(4..).unwrap_or("")));
        conn.write_line(challenge_answer(mech))?;
        (code, lines) = reply(conn)?;
    }
    if code != 235 {
        return Err(Failure::Refused {
            reply: lines.join(" / "),
            challenge,
            step: "AUTH",
        });
    }
    Ok(mech)
}

/// Connect and greet, STARTTLS when configured, EHLO: ready to authenticate.
pub fn open(
    account: &Account,
    server: &Server,
    timeout: Duration,
) -> Result<(Conn, Vec<String>), Failure> {
    let mut conn = Conn::connect(server, account.ca_file.as_deref(), timeout)?;
    let (code, greeting) = reply(&mut conn)?;
    if code != 220 {
        return Err(Failure::Protocol(format!(
            "not an SMTP greeting: {}",
            greeting.join(" / ")
        )));
    }
    let mut lines = ehlo(&mut conn)?;
    if server.tls == TlsMode::Starttls {
        conn.write_line("STARTTLS")?;
        let (code, r) = reply(&mut conn)?;
        if code != 220 {
            return Err(Failure::Protocol(format!(
                "STARTTLS refused: {}",
                r.join(" / ")
            )));
        }
        conn = conn.upgrade()?;
        lines = ehlo(&mut conn)?;
    }
    Ok((conn, lines))
}

/// Connect, authenticate, `MAIL FROM`, `RSET`, `QUIT`.
pub fn check(
    account: &Account,
    server: &Server,
    token: &str,
    timeout: Duration,
) -> Result<Success, Failure> {
    let (mut conn, lines) = open(account, server, timeout)?;
    let mech = authenticate(&mut conn, &lines, account, server, token)?;
    conn.write_line(&format!("MAIL FROM:<{}>", account.user))?;
    let (code, r) = reply(&mut conn)?;
    if code != 250 {
        return Err(Failure::Refused {
            reply: r.join(" / "),
            challenge: None,
            step: "MAIL FROM",
        });
    }
    conn.write_line("RSET")?;
    let _ = reply(&mut conn);
    conn.write_line("QUIT")?;
    let _ = reply(&mut conn);
    Ok(Success {
        mechanism: mech,
        detail: format!("MAIL FROM:<{}> accepted", account.user),
    })
}
