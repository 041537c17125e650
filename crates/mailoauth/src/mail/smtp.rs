//! SMTP submission for `check` and `send`: the login is [`super::login`]
//! driving [`crate::proto::smtp`]; here is the reply reader on the logged-in
//! connection and the harmless `MAIL FROM:<user>` then `RSET`, which is where
//! Exchange reports `530 5.7.57` and friends.
//!
//! Must not: parse login replies (the `proto` machine does).

use std::time::Duration;

use super::conn::Conn;
use super::{Failure, Success};
use crate::config::Service;
use crate::proto::smtp::Reply;
use crate::providers::{Account, Server};
use crate::sasl::Mechanism;

/// Read a (possibly multi-line) reply: (code, lines).
pub fn reply(conn: &mut Conn) -> Result<(u16, Vec<String>), Failure> {
    let mut r = Reply::default();
    loop {
        if let Some(done) = r.feed(&conn.read_text()?)? {
            return Ok(done);
        }
    }
}

/// Connect, greet, STARTTLS when configured, EHLO and authenticate: ready for
/// a mail transaction. Returns the connection and the mechanism used.
pub fn login(
    account: &Account,
    server: &Server,
    token: &str,
    timeout: Duration,
) -> Result<(Conn, Option<Mechanism>), Failure> {
    let (conn, a) = super::login(Service::Smtp, account, server, token, timeout)?;
    Ok((conn, a.mechanism))
}

/// Connect, authenticate, `MAIL FROM`, `RSET`, `QUIT`.
pub fn check(
    account: &Account,
    server: &Server,
    token: &str,
    timeout: Duration,
) -> Result<Success, Failure> {
    let (mut conn, mech) = login(account, server, token, timeout)?;
    conn.write_line(&format!("MAIL FROM:<{}>", account.user))?;
    let (code, r) = reply(&mut conn)?;
    if code != 250 {
        return Err(crate::proto::refused(
            Service::Smtp,
            r.join(" / "),
            None,
            "MAIL FROM",
        ));
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
