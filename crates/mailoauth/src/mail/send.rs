//! `send`: a sendmail-compatible submission of one RFC 5322 message.
//!
//! Owns: the envelope (recipients from arguments, or from To/Cc/Bcc with `-t`,
//! Bcc stripped from what is sent), the send-as guard (a From that is not the
//! account's mailbox is refused before connecting — Exchange would answer
//! `554 5.2.252 SendAsDenied` after the upload), CRLF and dot-stuffing, and
//! the SMTP transaction. Must not: rewrite anything else in the message.

use std::time::Duration;

use super::smtp::{self, reply};
use super::{Failure, Success};
use crate::error::Error;
use crate::providers::{Account, Server};
use crate::service::Service;

/// A message ready to submit.
#[derive(Debug)]
pub struct Prepared {
    /// Envelope sender (`MAIL FROM`).
    pub from: String,
    /// Envelope recipients (`RCPT TO`).
    pub recipients: Vec<String>,
    /// The message, CRLF line ends, without Bcc when `-t` took recipients from it.
    pub data: Vec<u8>,
}

fn addresses(a: Option<&mail_parser::Address>) -> Vec<String> {
    a.map(|a| {
        a.iter()
            .filter_map(|x| x.address().map(str::to_owned))
            .collect()
    })
    .unwrap_or_default()
}

/// Split a message into header lines (with their folded continuations) and body.
fn split(raw: &[u8]) -> (Vec<Vec<u8>>, &[u8]) {
    let mut headers: Vec<Vec<u8>> = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| i + 1)
            .unwrap_or(rest.len());
        let line = &rest[..end];
        if line == b"\n" || line == b"\r\n" {
            return (headers, &rest[end..]);
        }
        match (line.first(), headers.last_mut()) {
            (Some(b' ' | b'\t'), Some(h)) => h.extend_from_slice(line),
            _ => headers.push(line.to_vec()),
        }
        rest = &rest[end..];
    }
    (headers, rest)
}

fn is_header(h: &[u8], name: &str) -> bool {
    h.len() > name.len()
        && h[..name.len()].eq_ignore_ascii_case(name.as_bytes())
        && h[name.len()] == b':'
}

/// Build the envelope and the bytes to send. `extract` is sendmail's `-t`.
pub fn prepare(
    account: &Account,
    raw: &[u8],
    extract: bool,
    envelope_from: Option<&str>,
    args: &[String],
    allow_send_as: bool,
) -> Result<Prepared, Error> {
    let parsed = mail_parser::MessageParser::new()
        .parse_headers(raw)
        .ok_or_else(|| Error::Usage("the message on stdin has no RFC 5322 headers".into()))?;
    let header_from = addresses(parsed.from()).into_iter().next();
    let mut recipients: Vec<String> = args.to_vec();
    if extract {
        for a in [parsed.to(), parsed.cc(), parsed.bcc()] {
            recipients.extend(addresses(a));
        }
    }
    recipients.dedup();
    // Every address goes into a command line: refuse what would end it.
    for r in &recipients {
        super::wire::address("recipient", r)?;
    }
    if let Some(f) = envelope_from {
        super::wire::address("-f sender", f)?;
    }
    super::wire::address("the account's user", &account.user)?;
    if recipients.is_empty() {
        return Err(Error::Usage(
            "no recipients: name them as arguments, or use -t to read To/Cc/Bcc".into(),
        ));
    }
    let user = &account.user;
    for (what, addr) in [
        ("From header", header_from.as_deref()),
        ("-f sender", envelope_from),
    ] {
        if let Some(a) = addr
            && !a.eq_ignore_ascii_case(user)
            && !allow_send_as
        {
            return Err(Error::SendAs {
                what,
                from: a.to_owned(),
                user: user.clone(),
            });
        }
    }
    let (headers, body) = split(raw);
    let mut data = Vec::with_capacity(raw.len() + 64);
    if header_from.is_none() {
        data.extend_from_slice(format!("From: <{user}>\r\n").as_bytes());
    }
    for h in headers.iter().filter(|h| !(extract && is_header(h, "bcc"))) {
        push_crlf(&mut data, h);
    }
    data.extend_from_slice(b"\r\n");
    push_crlf(&mut data, body);
    Ok(Prepared {
        from: envelope_from.unwrap_or(user).to_owned(),
        recipients,
        data,
    })
}

/// Append `text` with every line end as CRLF.
fn push_crlf(out: &mut Vec<u8>, text: &[u8]) {
    for line in text.split_inclusive(|&b| b == b'\n') {
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        out.extend_from_slice(content);
        if line.ends_with(b"\n") {
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Submit: authenticate, MAIL FROM, RCPT TO each, DATA (dot-stuffed), QUIT.
pub fn submit(
    account: &Account,
    server: &Server,
    token: &str,
    msg: &Prepared,
    timeout: Duration,
) -> Result<Success, Failure> {
    let mut s = Submission::open(account, server, token, timeout)?;
    let detail = s.send(msg)?;
    let mechanism = s.mechanism;
    s.close();
    Ok(Success { mechanism, detail })
}

/// A logged-in submission connection that carries one message after another
/// (the service's outbox reuses it: a new login per message would cost a
/// round trip and the provider's connection budget).
pub struct Submission {
    conn: super::conn::Conn,
    /// The SASL mechanism the login used.
    pub mechanism: Option<crate::sasl::Mechanism>,
}

impl Submission {
    /// Connect, greet, STARTTLS when configured, EHLO and authenticate.
    pub fn open(
        account: &Account,
        server: &Server,
        token: &str,
        timeout: Duration,
    ) -> Result<Submission, Failure> {
        let (conn, mechanism) = smtp::login(account, server, token, timeout)?;
        Ok(Submission { conn, mechanism })
    }

    /// One mail transaction. On a refusal the transaction is reset, so the
    /// connection can carry the next message; any other failure leaves it
    /// unusable (drop it). `Ok`: the server's final reply, for the record.
    pub fn send(&mut self, msg: &Prepared) -> Result<String, Failure> {
        // `prepare` refused these already; a caller that built `Prepared`
        // itself must not be able to inject commands either.
        for a in std::iter::once(&msg.from).chain(&msg.recipients) {
            if a.contains(['\r', '\n', '\0', '<', '>']) {
                return Err(Failure::Protocol(format!(
                    "refusing the address `{}`: it would break the SMTP command",
                    super::wire::shown(a)
                )));
            }
        }
        let r = self.transaction(msg);
        if let Err(Failure::Refused { .. } | Failure::Temporary { .. }) = &r {
            let _ = self.conn.write_line("RSET");
            let _ = reply(&mut self.conn);
        }
        r.map(|r| format!("{} recipient(s): {}", msg.recipients.len(), r))
    }

    fn step(&mut self, cmd: &str, want: u16, name: &'static str) -> Result<String, Failure> {
        self.conn.write_line(cmd)?;
        let (code, r) = reply(&mut self.conn)?;
        if code != want {
            return Err(crate::proto::refused(
                Service::Smtp,
                r.join(" / "),
                None,
                name,
            ));
        }
        Ok(r.join(" / "))
    }

    fn transaction(&mut self, msg: &Prepared) -> Result<String, Failure> {
        self.step(&format!("MAIL FROM:<{}>", msg.from), 250, "MAIL FROM")?;
        for r in &msg.recipients {
            self.step(&format!("RCPT TO:<{r}>"), 250, "RCPT TO")?;
        }
        self.step("DATA", 354, "DATA")?;
        let mut body = Vec::with_capacity(msg.data.len() + 16);
        for line in msg.data.split_inclusive(|&b| b == b'\n') {
            if line.first() == Some(&b'.') {
                body.push(b'.');
            }
            body.extend_from_slice(line);
        }
        if !body.ends_with(b"\r\n") {
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b".\r\n");
        self.conn.write_all(&body)?;
        let (code, r) = reply(&mut self.conn)?;
        if code != 250 {
            return Err(crate::proto::refused(
                Service::Smtp,
                r.join(" / "),
                None,
                "DATA",
            ));
        }
        Ok(r.join(" / "))
    }

    /// Say QUIT and end the connection (its answer does not matter).
    pub fn close(mut self) {
        let _ = self.conn.write_line("QUIT");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> Account {
        let c = crate::config::Config::parse(
            "[accounts.a]\nprovider = \"google\"\nuser = \"me@x.com\"\nclient_id = \"c\"\n",
            std::path::Path::new("/c"),
        )
        .unwrap();
        crate::providers::resolve(&c, "a").unwrap()
    }

    #[test]
    fn extract_recipients_and_strip_bcc() {
        let raw = b"From: Me <me@x.com>\nTo: \"Doe, J\" <j@y.com>, k@y.com\nBcc: hidden@z.com,\n  also@z.com\nSubject: hi\n\n.dot line\nbody\n";
        let p = prepare(&account(), raw, true, None, &[], false).unwrap();
        assert_eq!(
            p.recipients,
            ["j@y.com", "k@y.com", "hidden@z.com", "also@z.com"]
        );
        let text = String::from_utf8(p.data).unwrap();
        assert!(
            !text.contains("hidden") && !text.contains("also@z.com"),
            "{text}"
        );
        assert!(
            text.contains("Subject: hi\r\n\r\n.dot line\r\nbody\r\n"),
            "{text:?}"
        );
        assert_eq!(p.from, "me@x.com");
    }

    #[test]
    fn send_as_is_refused_unless_allowed() {
        let raw = b"From: boss@x.com\nTo: a@b.c\n\nhi\n";
        let e = prepare(&account(), raw, true, None, &[], false).unwrap_err();
        assert!(
            e.to_string().contains("boss@x.com") && format!("{:?}", e.remedy()).contains("SendAs"),
            "{e}"
        );
        assert!(prepare(&account(), raw, true, None, &[], true).is_ok());
        let e = prepare(&account(), b"To: a@b.c\n\nhi\n", false, None, &[], false).unwrap_err();
        assert!(e.to_string().contains("no recipients"));
    }

    #[test]
    fn recipients_and_senders_that_would_inject_commands_are_usage_errors() {
        let raw = b"From: me@x.com\nTo: a@b.c\n\nhi\n";
        let evil = "bob@y.com>\r\nRSET\r\nMAIL FROM:<boss@x.com".to_owned();
        let e = prepare(&account(), raw, false, None, &[evil], false).unwrap_err();
        assert!(matches!(e, Error::Usage(_)), "{e}");
        assert!(
            e.to_string().contains("recipient `bob@y.com>\\r\\nRSET"),
            "{e}"
        );
        let e = prepare(
            &account(),
            raw,
            false,
            Some("me@x.com\r\nX"),
            &["a@b.c".into()],
            true,
        )
        .unwrap_err();
        assert!(matches!(e, Error::Usage(_)), "{e}");
    }
}
