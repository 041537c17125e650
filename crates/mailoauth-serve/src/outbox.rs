//! Messages an application hands in for sending: what is accepted into the
//! outbox.
//!
//! Owns: reading a send request — a raw RFC 5322 message or JSON built into
//! MIME with mail-builder — and refusing, before anything is stored, what
//! would fail or do harm later: a message over the connector's
//! `max_message_size`, a header section that is not one, a recipient or
//! header with CR/LF (command or header injection), a From other than the
//! mailbox unless the connector allows send-as. Envelope, Bcc stripping,
//! CRLF and the send-as rule are the core's (`mail::send::prepare`, as
//! `mailoauth send` uses). Must not: touch the database or the network.

use std::collections::BTreeMap;

use base64::Engine;
use mail_builder::MessageBuilder;
use mail_builder::headers::raw::Raw;
use mail_builder::headers::text::Text;
use serde::Deserialize;

use mailoauth::mail::send::{self, Prepared};
use mailoauth::providers::Account;
use mailoauth::{Error, mail::wire};

use crate::settings::MailOptions;

/// Longest line RFC 5322 allows (without its CRLF).
const MAX_LINE: usize = 998;
/// Custom headers one JSON message may carry.
const MAX_HEADERS: usize = 50;

/// A message as JSON: from is the mailbox unless `from` names another address
/// the connector may send as.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonMessage {
    /// Another From address (needs `allow_send_as` on the connector).
    #[serde(default)]
    pub from: Option<String>,
    /// Recipients.
    #[serde(default)]
    pub to: Vec<String>,
    /// Copy recipients.
    #[serde(default)]
    pub cc: Vec<String>,
    /// Blind copies: envelope only, never in the message.
    #[serde(default)]
    pub bcc: Vec<String>,
    /// Reply-To addresses.
    #[serde(default)]
    pub reply_to: Vec<String>,
    /// Subject.
    #[serde(default)]
    pub subject: Option<String>,
    /// Plain text body.
    #[serde(default)]
    pub text: Option<String>,
    /// HTML body.
    #[serde(default)]
    pub html: Option<String>,
    /// Attachments.
    #[serde(default)]
    pub attachments: Vec<JsonAttachment>,
    /// More header fields (not the ones the builder writes: From, To, Cc,
    /// Bcc, Subject, Date, Message-ID, MIME-Version, Content-*, Sender).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// An attachment of a JSON message.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonAttachment {
    /// File name shown to the recipient.
    pub filename: String,
    /// MIME type (default `application/octet-stream`).
    #[serde(default)]
    pub content_type: Option<String>,
    /// The bytes, base64.
    pub content: String,
}

/// Why a message is not accepted.
#[derive(Debug)]
pub enum Refusal {
    /// Bad input: what is wrong and how to fix it (400).
    Bad(String),
    /// Over the connector's limit (413).
    TooLarge(String),
    /// A From the mailbox may not send as (403), with the fix.
    SendAs(String, String),
}

fn bad(s: impl Into<String>) -> Refusal {
    Refusal::Bad(s.into())
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Refusal {
        match &e {
            Error::SendAs { from, user, .. } => Refusal::SendAs(
                e.to_string(),
                format!(
                    "send as {user}; or, if {user} holds SendAs rights on {from} (Exchange: \
                     `Add-RecipientPermission -Identity {from} -Trustee {user} -AccessRights SendAs`), \
                     set `allow_send_as = true` on the connector; otherwise the server answers \
                     `554 5.2.252 SendAsDenied` after the upload"
                ),
            ),
            _ => Refusal::Bad(e.to_string()),
        }
    }
}

fn too_large(size: usize, opts: &MailOptions) -> Refusal {
    Refusal::TooLarge(format!(
        "the message is {size} bytes, over the connector's max_message_size of {} bytes \
         (Exchange Online's default send limit is 35 MB; raise `max_message_size` on the \
         connector only if the mailbox's own limit is higher)",
        opts.max_message_size
    ))
}

/// A raw RFC 5322 message, checked and prepared (recipients from To/Cc/Bcc,
/// Bcc removed).
pub fn raw(account: &Account, bytes: &[u8], opts: &MailOptions) -> Result<Prepared, Refusal> {
    if bytes.len() as u64 > opts.max_message_size {
        return Err(too_large(bytes.len(), opts));
    }
    check_raw(bytes)?;
    let p = send::prepare(account, bytes, true, None, &[], opts.allow_send_as)?;
    if p.data.len() as u64 > opts.max_message_size {
        return Err(too_large(p.data.len(), opts));
    }
    Ok(p)
}

/// The shape of a raw message: header fields, an empty line, a body; no NUL,
/// no line over 998 octets.
fn check_raw(bytes: &[u8]) -> Result<(), Refusal> {
    if bytes.is_empty() {
        return Err(bad(
            "the body is empty: send an RFC 5322 message (Content-Type: message/rfc822) or JSON",
        ));
    }
    if bytes.contains(&0) {
        return Err(bad(
            "the message contains a NUL byte: encode binary parts (base64) as MIME requires",
        ));
    }
    let mut in_headers = true;
    for (n, line) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > MAX_LINE {
            return Err(bad(format!(
                "line {} is {} octets, over RFC 5322's 998: fold long header fields and encode \
                 long body lines (quoted-printable or base64)",
                n + 1,
                line.len()
            )));
        }
        if !in_headers {
            continue;
        }
        if line.is_empty() {
            if n == 0 {
                return Err(bad(
                    "the message starts with an empty line: header fields come first",
                ));
            }
            in_headers = false;
        } else if matches!(line[0], b' ' | b'\t') {
            if n == 0 {
                return Err(bad("the message starts with a folded line"));
            }
        } else if !is_field(line) {
            return Err(bad(format!(
                "line {} of the header section is not a header field (`{}`): a raw message is \
                 `Name: value` lines, an empty line, then the body",
                n + 1,
                wire::shown(&String::from_utf8_lossy(&line[..line.len().min(60)]))
            )));
        }
    }
    if in_headers {
        return Err(bad(
            "no empty line ends the header section: put one between the header fields and the body",
        ));
    }
    Ok(())
}

fn is_field(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    colon > 0 && line[..colon].iter().all(|&b| (33..=126).contains(&b))
}

/// Header names the builder writes itself, or that would change who sent it.
const RESERVED: &[&str] = &[
    "from",
    "sender",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "mime-version",
];

/// A JSON message built into MIME and prepared. `message_id` becomes its
/// Message-ID (the outbox id, so a log line can be matched to the row).
pub fn json(
    account: &Account,
    m: &JsonMessage,
    message_id: &str,
    opts: &MailOptions,
) -> Result<Prepared, Refusal> {
    for (what, list) in [
        ("to", &m.to),
        ("cc", &m.cc),
        ("bcc", &m.bcc),
        ("reply_to", &m.reply_to),
    ] {
        for a in list {
            address(what, a)?;
        }
    }
    if m.to.is_empty() && m.cc.is_empty() && m.bcc.is_empty() {
        return Err(bad("no recipients: give `to`, `cc` or `bcc`"));
    }
    let from = m.from.as_deref().unwrap_or(&account.user);
    address("from", from)?;
    if let Some(s) = &m.subject
        && s.contains(['\r', '\n', '\0'])
    {
        return Err(bad(
            "`subject` contains a line break: a subject is one line",
        ));
    }
    if m.headers.len() > MAX_HEADERS {
        return Err(bad(format!(
            "{} headers: at most {MAX_HEADERS}",
            m.headers.len()
        )));
    }
    for (name, value) in &m.headers {
        header(name, value)?;
    }
    let mut b = MessageBuilder::new()
        .from(from)
        .message_id(message_id.to_owned());
    if !m.to.is_empty() {
        b = b.to(m.to.iter().map(String::as_str).collect::<Vec<_>>());
    }
    if !m.cc.is_empty() {
        b = b.cc(m.cc.iter().map(String::as_str).collect::<Vec<_>>());
    }
    if !m.reply_to.is_empty() {
        b = b.reply_to(m.reply_to.iter().map(String::as_str).collect::<Vec<_>>());
    }
    if let Some(s) = &m.subject {
        b = b.subject(Text::new(s.as_str()));
    }
    match (&m.text, &m.html) {
        (None, None) => b = b.text_body(""),
        (t, h) => {
            if let Some(t) = t {
                b = b.text_body(t.as_str());
            }
            if let Some(h) = h {
                b = b.html_body(h.as_str());
            }
        }
    }
    for (name, value) in &m.headers {
        b = b.header(name.as_str(), Raw::new(value.as_str()));
    }
    let mut total = 0usize;
    for (i, a) in m.attachments.iter().enumerate() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(a.content.trim())
            .map_err(|e| {
                bad(format!(
                    "attachments[{i}].content is not base64 ({e}): encode the file's bytes"
                ))
            })?;
        total += bytes.len();
        if total as u64 > opts.max_message_size {
            return Err(too_large(total, opts));
        }
        if a.filename.is_empty() || a.filename.contains(['\r', '\n', '\0', '/', '\\']) {
            return Err(bad(format!(
                "attachments[{i}].filename must be a plain file name (no path, no line break)"
            )));
        }
        let ct = a
            .content_type
            .as_deref()
            .unwrap_or("application/octet-stream");
        if !is_media_type(ct) {
            return Err(bad(format!(
                "attachments[{i}].content_type `{}` is not a MIME type like `application/pdf`",
                wire::shown(ct)
            )));
        }
        b = b.attachment(ct.to_owned(), a.filename.clone(), bytes);
    }
    let raw = b
        .write_to_vec()
        .map_err(|e| bad(format!("the message could not be built: {e}")))?;
    if raw.len() as u64 > opts.max_message_size {
        return Err(too_large(raw.len(), opts));
    }
    Ok(send::prepare(
        account,
        &raw,
        true,
        None,
        &m.bcc,
        opts.allow_send_as,
    )?)
}

fn address(what: &str, a: &str) -> Result<(), Refusal> {
    wire::address(what, a)?;
    let ok = a.len() <= 254
        && a.split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.contains('@'))
        && !a.contains([' ', '<', '>', ',', ';', '"']);
    if !ok {
        return Err(bad(format!(
            "{what} `{}` is not an email address: give the bare address, e.g. \"bob@example.com\"",
            wire::shown(a)
        )));
    }
    Ok(())
}

fn header(name: &str, value: &str) -> Result<(), Refusal> {
    let lower = name.to_ascii_lowercase();
    if name.is_empty()
        || name.len() > 76
        || !name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
    {
        return Err(bad(format!(
            "header name `{}` is not a field name (printable ASCII, no colon or space)",
            wire::shown(name)
        )));
    }
    if RESERVED.contains(&lower.as_str()) || lower.starts_with("content-") {
        return Err(bad(format!(
            "header `{name}` is written from the message's own fields: use them instead of `headers`"
        )));
    }
    if value.contains(['\r', '\n', '\0']) || value.len() > MAX_LINE - name.len() - 2 {
        return Err(bad(format!(
            "header `{name}`: its value must be one line of at most {} characters",
            MAX_LINE - name.len() - 2
        )));
    }
    Ok(())
}

fn is_media_type(ct: &str) -> bool {
    let ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    ct.split_once('/').is_some_and(|(t, s)| ok(t) && ok(s))
}

/// SHA-256 of the request (content type and body), hex: the same
/// idempotency key with another request is a conflict, not a retry.
pub fn digest(content_type: &str, body: &[u8]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(content_type.as_bytes());
    ctx.update(b"\n");
    ctx.update(body);
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> Account {
        let c = mailoauth::config::Config::parse(
            "[accounts.a]\nprovider = \"google\"\nuser = \"me@x.com\"\nclient_id = \"c\"\n",
            std::path::Path::new("/c"),
        )
        .unwrap();
        mailoauth::providers::resolve(&c, "a").unwrap()
    }

    fn opts() -> MailOptions {
        MailOptions {
            send_via: crate::settings::SendVia::Smtp,
            allow_send_as: false,
            graph_url: None,
            max_message_size: 4096,
        }
    }

    fn msg(v: serde_json::Value) -> JsonMessage {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn json_messages_are_built_with_bcc_in_the_envelope_only() {
        let m = msg(serde_json::json!({
            "to": ["bob@y.com"], "bcc": ["hidden@z.com"], "subject": "Grüße",
            "text": "hi\n.\nthere", "headers": {"X-Ticket": "42"},
            "attachments": [{"filename": "a.txt", "content": "aGVsbG8="}]
        }));
        let p = json(&account(), &m, "msg_1@mailoauth", &opts()).unwrap();
        assert_eq!(p.recipients, ["hidden@z.com", "bob@y.com"]);
        assert_eq!(p.from, "me@x.com");
        let text = String::from_utf8(p.data).unwrap();
        assert!(!text.contains("hidden"), "{text}");
        assert!(text.contains("Message-ID: <msg_1@mailoauth>"), "{text}");
        assert!(text.contains("X-Ticket: 42\r\n"), "{text}");
        assert!(text.contains("filename=\"a.txt\""), "{text}");
        assert!(text.contains("From: <me@x.com>") || text.contains("From: me@x.com"));
    }

    #[test]
    fn injection_and_bad_shapes_are_refused_with_the_reason() {
        let o = opts();
        let e = |v: serde_json::Value| match json(&account(), &msg(v), "m@x", &o) {
            Err(Refusal::Bad(s)) => s,
            other => panic!("{other:?}"),
        };
        assert!(
            e(serde_json::json!({"to": ["bob@y.com\r\nRCPT TO:<x@y>"]}))
                .contains("to `bob@y.com\\r\\n")
        );
        assert!(e(serde_json::json!({"to": ["Bob <bob@y.com>"]})).contains("to `Bob <bob@y.com>`"));
        assert!(e(serde_json::json!({"to": []})).contains("no recipients"));
        assert!(
            e(serde_json::json!({"to": ["b@y.com"], "subject": "a\r\nBcc: x@y"}))
                .contains("line break")
        );
        assert!(
            e(serde_json::json!({"to": ["b@y.com"], "headers": {"X-A": "1\r\nBcc: x@y"}}))
                .contains("one line")
        );
        assert!(
            e(serde_json::json!({"to": ["b@y.com"], "headers": {"From": "boss@x.com"}}))
                .contains("written from")
        );
        assert!(e(serde_json::json!({"to": ["b@y.com"], "attachments": [{"filename": "../x", "content": ""}]})).contains("plain file name"));
        assert!(matches!(
            json(&account(), &msg(serde_json::json!({"to": ["b@y.com"], "from": "boss@x.com"})), "m@x", &o),
            Err(Refusal::SendAs(_, fix)) if fix.contains("allow_send_as")
        ));
        let big = base64::engine::general_purpose::STANDARD.encode(vec![b'a'; 5000]);
        assert!(matches!(
            json(&account(), &msg(serde_json::json!({"to": ["b@y.com"], "attachments": [{"filename": "a", "content": big}]})), "m@x", &o),
            Err(Refusal::TooLarge(s)) if s.contains("max_message_size of 4096")
        ));
    }

    #[test]
    fn raw_messages_must_have_a_header_section() {
        let o = opts();
        let a = account();
        let e = |raw: &[u8]| match super::raw(&a, raw, &o) {
            Err(Refusal::Bad(s)) => s,
            other => panic!("{other:?}"),
        };
        assert!(e(b"").contains("empty"));
        assert!(e(b"hello world\r\n\r\nbody").contains("not a header field"));
        assert!(e(b"To: b@y.com\r\nSubject: x\r\n").contains("no empty line"));
        assert!(e(b"\r\nbody").contains("starts with an empty line"));
        assert!(e(b"To: b@y.com\r\n\r\na\0b").contains("NUL"));
        let long = format!("To: b@y.com\r\n\r\n{}\r\n", "a".repeat(1000));
        assert!(e(long.as_bytes()).contains("over RFC 5322's 998"));
        let p = super::raw(&a, b"To: b@y.com\nBcc: c@z.com\nSubject: x\n\nhi\n", &o).unwrap();
        assert_eq!(p.recipients, ["b@y.com", "c@z.com"]);
        assert!(!String::from_utf8(p.data).unwrap().contains("c@z.com"));
        assert!(matches!(
            super::raw(&a, &vec![b'a'; 5000], &o),
            Err(Refusal::TooLarge(_))
        ));
    }
}
