//! IMAP response data without I/O: the values of a `FETCH` response (atoms,
//! quoted strings, literals, `NIL`, parenthesised lists), the `ENVELOPE`
//! structure (RFC 9051 §7.5.2) and what `SELECT`/`EXAMINE` tell about a
//! folder (`EXISTS`, `UIDVALIDITY`, `UIDNEXT`, CONDSTORE's `HIGHESTMODSEQ`).
//!
//! Owns: parsing bytes a driver has assembled — a response line with each
//! literal's `{N}` CRLF and its N bytes inline, exactly as on the wire — with
//! a nesting limit and no allocation beyond the input's size. Must not: read
//! from a connection (drivers bound how much they assemble) or trust a
//! server's text (names and subjects are decoded leniently and kept as text).

use serde::Serialize;

use crate::proto::{Failure, misbehaving};

/// Deepest list nesting accepted (an envelope is three deep; bodies a few more).
const MAX_DEPTH: usize = 16;

/// One IMAP data item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `NIL`.
    Nil,
    /// An atom or number, as written.
    Atom(String),
    /// A quoted string or literal, unescaped (bytes: any charset).
    Str(Vec<u8>),
    /// A parenthesised list.
    List(Vec<Value>),
}

impl Value {
    /// The text of a string or atom (invalid UTF-8 shown as U+FFFD); `None` for NIL.
    pub fn text(&self) -> Option<String> {
        match self {
            Value::Str(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Value::Atom(a) => Some(a.clone()),
            _ => None,
        }
    }

    /// The number an atom holds.
    pub fn number(&self) -> Option<u64> {
        match self {
            Value::Atom(a) => a.parse().ok(),
            _ => None,
        }
    }

    fn list(&self) -> &[Value] {
        match self {
            Value::List(v) => v,
            _ => &[],
        }
    }
}

/// The end of `line` is a literal's announcement (`{N}` or `{N+}`): its size.
pub fn literal_at_end(line: &[u8]) -> Option<u64> {
    let rest = line.strip_suffix(b"}")?;
    let open = rest.iter().rposition(|&b| b == b'{')?;
    let digits = &rest[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn bad(&self, what: &str) -> Failure {
        misbehaving(&format!("{what} at byte {} of a response", self.i))
    }

    fn skip_spaces(&mut self) {
        while self.b.get(self.i) == Some(&b' ') {
            self.i += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, Failure> {
        if depth > MAX_DEPTH {
            return Err(self.bad(&format!("lists nested deeper than {MAX_DEPTH}")));
        }
        self.skip_spaces();
        match self.b.get(self.i) {
            None => Err(self.bad("a value missing")),
            Some(b'(') => {
                self.i += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_spaces();
                    match self.b.get(self.i) {
                        Some(b')') => {
                            self.i += 1;
                            return Ok(Value::List(items));
                        }
                        None => return Err(self.bad("a list not closed")),
                        _ => items.push(self.value(depth + 1)?),
                    }
                }
            }
            Some(b'"') => {
                self.i += 1;
                let mut s = Vec::new();
                loop {
                    match self.b.get(self.i) {
                        None | Some(b'\r' | b'\n') => {
                            return Err(self.bad("a quoted string not closed"));
                        }
                        Some(b'"') => {
                            self.i += 1;
                            return Ok(Value::Str(s));
                        }
                        Some(b'\\') => {
                            let Some(&c) = self.b.get(self.i + 1) else {
                                return Err(self.bad("a quoted string not closed"));
                            };
                            s.push(c);
                            self.i += 2;
                        }
                        Some(&c) => {
                            s.push(c);
                            self.i += 1;
                        }
                    }
                }
            }
            Some(b'{') => {
                let close = self.b[self.i..]
                    .iter()
                    .position(|&c| c == b'}')
                    .ok_or_else(|| self.bad("a literal's size not closed"))?;
                let n = literal_at_end(&self.b[self.i..=self.i + close])
                    .ok_or_else(|| self.bad("a literal's size that is not a number"))?;
                let start = self.i + close + 1;
                let start = if self.b[start..].starts_with(b"\r\n") {
                    start + 2
                } else {
                    return Err(self.bad("a literal without its line end"));
                };
                let end = usize::try_from(n)
                    .ok()
                    .and_then(|n| start.checked_add(n))
                    .filter(|&e| e <= self.b.len())
                    .ok_or_else(|| self.bad("a literal longer than what was sent"))?;
                self.i = end;
                Ok(Value::Str(self.b[start..end].to_vec()))
            }
            Some(_) => {
                let start = self.i;
                // Atoms run to a space or a list's end; `BODY[HEADER]<0>` keeps
                // its brackets (they hold spaces only in section lists we never ask for).
                while let Some(&c) = self.b.get(self.i) {
                    if c == b' ' || c == b')' || c == b'(' && !self.b[start..self.i].contains(&b'[')
                    {
                        break;
                    }
                    if c < 0x20 || c == 0x7f {
                        return Err(self.bad("a control character in an atom"));
                    }
                    self.i += 1;
                }
                let atom = String::from_utf8_lossy(&self.b[start..self.i]).into_owned();
                Ok(if atom.eq_ignore_ascii_case("NIL") {
                    Value::Nil
                } else {
                    Value::Atom(atom)
                })
            }
        }
    }
}

/// A FETCH response's items as (name, value) pairs, names upper-cased.
pub type Items = Vec<(String, Value)>;

/// One `* N FETCH (…)` response, assembled with its literals: the message
/// number and its items; `None` for any other response.
pub fn fetch_response(raw: &[u8]) -> Result<Option<(u32, Items)>, Failure> {
    let Some(rest) = raw.strip_prefix(b"* ") else {
        return Ok(None);
    };
    let sp = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
    let Some(seq) = std::str::from_utf8(&rest[..sp])
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
    else {
        return Ok(None);
    };
    let after = &rest[sp..];
    let Some(items) = after
        .strip_prefix(b" ")
        .filter(|a| a.len() >= 6 && a[..6].eq_ignore_ascii_case(b"FETCH "))
    else {
        return Ok(None);
    };
    let mut p = Parser {
        b: &items[6..],
        i: 0,
    };
    let Value::List(list) = p.value(0)? else {
        return Err(misbehaving("a FETCH response without its item list"));
    };
    let mut pairs = Vec::with_capacity(list.len() / 2);
    let mut it = list.into_iter();
    while let Some(name) = it.next() {
        let (Value::Atom(name), Some(v)) = (name, it.next()) else {
            return Err(misbehaving(
                "a FETCH item list that is not name/value pairs",
            ));
        };
        pairs.push((name.to_ascii_uppercase(), v));
    }
    Ok(Some((seq, pairs)))
}

/// What a `STATUS` response (asked for, or sent by NOTIFY, RFC 5465) says
/// about a folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// `MESSAGES`.
    pub messages: Option<u32>,
    /// `UIDNEXT`.
    pub uidnext: Option<u32>,
    /// `UIDVALIDITY`.
    pub uidvalidity: Option<u32>,
}

/// One `* STATUS name (…)` response: the folder's name (as the server
/// wrote it, unquoted) and its attributes; `None` for any other response.
pub fn status_response(raw: &[u8]) -> Result<Option<(String, Status)>, Failure> {
    let Some(rest) = raw
        .strip_prefix(b"* ")
        .filter(|r| r.len() > 7 && r[..7].eq_ignore_ascii_case(b"STATUS "))
    else {
        return Ok(None);
    };
    let mut p = Parser {
        b: &rest[7..],
        i: 0,
    };
    let Some(name) = p.value(0)?.text() else {
        return Err(misbehaving("a STATUS response without a folder name"));
    };
    let Value::List(list) = p.value(0)? else {
        return Err(misbehaving("a STATUS response without its attribute list"));
    };
    let mut st = Status::default();
    let mut it = list.into_iter();
    while let (Some(Value::Atom(k)), Some(v)) = (it.next(), it.next()) {
        let n = v.number().and_then(|n| u32::try_from(n).ok());
        match k.to_ascii_uppercase().as_str() {
            "MESSAGES" => st.messages = n,
            "UIDNEXT" => st.uidnext = n,
            "UIDVALIDITY" => st.uidvalidity = n,
            _ => {}
        }
    }
    Ok(Some((name, st)))
}

/// A mail address from an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Address {
    /// The display name, decoded (RFC 2047 words included).
    pub name: Option<String>,
    /// `mailbox@host` (or just the mailbox part when the host is missing).
    pub email: String,
}

/// A message's envelope: who, to whom, what, when.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Envelope {
    /// The `Date` header as written.
    pub date: Option<String>,
    /// The subject, decoded.
    pub subject: Option<String>,
    /// `From`.
    pub from: Vec<Address>,
    /// `To`.
    pub to: Vec<Address>,
    /// `Cc`.
    pub cc: Vec<Address>,
    /// `Message-ID`, with its angle brackets.
    pub message_id: Option<String>,
}

impl Envelope {
    /// The envelope from its `ENVELOPE` value; `None` if it is not one.
    pub fn from_value(v: &Value) -> Option<Envelope> {
        let f = v.list();
        if f.len() < 10 {
            return None;
        }
        Some(Envelope {
            date: f[0].text(),
            subject: f[1].text().map(|s| decode_words(&s)),
            from: addresses(&f[2]),
            to: addresses(&f[5]),
            cc: addresses(&f[6]),
            message_id: f[9].text(),
        })
    }
}

fn addresses(v: &Value) -> Vec<Address> {
    v.list()
        .iter()
        .filter_map(|a| {
            let a = a.list();
            // RFC 9051 group syntax (a NIL host) marks group starts and ends: skipped.
            let (mailbox, host) = (a.get(2)?.text()?, a.get(3)?.text());
            let email = match host {
                Some(h) => format!("{mailbox}@{h}"),
                None => return None,
            };
            Some(Address {
                name: a[0].text().map(|n| decode_words(&n)),
                email,
            })
        })
        .collect()
}

/// Header text with RFC 2047 encoded words decoded (the parser does it; a
/// text it cannot read stays as written).
fn decode_words(s: &str) -> String {
    if !s.contains("=?") {
        return s.to_owned();
    }
    let raw = format!("Subject: {}\r\n\r\n", s.replace(['\r', '\n'], " "));
    mail_parser::MessageParser::new()
        .parse_headers(raw.as_bytes())
        .and_then(|m| m.subject().map(str::to_owned))
        .unwrap_or_else(|| s.to_owned())
}

/// What `SELECT`/`EXAMINE` said about the folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selected {
    /// Messages in the folder.
    pub exists: Option<u32>,
    /// The folder's UIDVALIDITY: UIDs mean the same only while it stays.
    pub uidvalidity: Option<u32>,
    /// The UID the next message will get (at least).
    pub uidnext: Option<u32>,
    /// CONDSTORE's highest mod-sequence (`None`: not offered, or `NOMODSEQ`).
    pub highestmodseq: Option<u64>,
}

impl Selected {
    /// Read the untagged lines of a `SELECT`/`EXAMINE` reply.
    pub fn from_lines(lines: &[String]) -> Selected {
        let mut s = Selected::default();
        for l in lines {
            let Some(r) = l.strip_prefix("* ") else {
                continue;
            };
            if let Some(n) = r.strip_suffix(" EXISTS").and_then(|n| n.parse().ok()) {
                s.exists = Some(n);
            }
            let code = |name: &str| {
                let up = r.to_ascii_uppercase();
                let i = up.find(&format!("[{name} "))? + name.len() + 2;
                r[i..].split(']').next()?.trim().parse::<u64>().ok()
            };
            if let Some(v) = code("UIDVALIDITY") {
                s.uidvalidity = u32::try_from(v).ok();
            }
            if let Some(v) = code("UIDNEXT") {
                s.uidnext = u32::try_from(v).ok();
            }
            if let Some(v) = code("HIGHESTMODSEQ") {
                s.highestmodseq = Some(v);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_responses_name_their_folder_and_counts() {
        let (name, st) =
            status_response(b"* STATUS \"Projects/Q4 plan\" (MESSAGES 3 UIDNEXT 9 UIDVALIDITY 77)")
                .unwrap()
                .unwrap();
        assert_eq!(name, "Projects/Q4 plan");
        assert_eq!(
            st,
            Status {
                messages: Some(3),
                uidnext: Some(9),
                uidvalidity: Some(77)
            }
        );
        let (name, st) = status_response(b"* status INBOX (UIDNEXT 4)")
            .unwrap()
            .unwrap();
        assert_eq!(
            (name.as_str(), st.uidnext, st.messages),
            ("INBOX", Some(4), None)
        );
        assert!(status_response(b"* 3 EXISTS").unwrap().is_none());
        assert!(status_response(b"* STATUS \"open").is_err());
        assert!(status_response(b"* STATUS INBOX MESSAGES").is_err());
    }

    #[test]
    fn a_fetch_with_an_envelope_and_a_literal_subject_parses() {
        let subject = "Grüße \"quoted\" (and parens)";
        let raw = format!(
            "* 3 FETCH (UID 42 RFC822.SIZE 1234 MODSEQ (77) ENVELOPE (\"Thu, 3 Dec 2026 10:00:00 +0000\" {{{}}}\r\n{} \
             ((\"Alice =?UTF-8?Q?B=C3=B6b?=\" NIL \"alice\" \"example.test\")) NIL NIL \
             ((NIL NIL \"bob\" \"example.test\")(NIL NIL \"undisclosed\" NIL)(NIL NIL NIL NIL)) NIL NIL NIL \"<m1@example.test>\"))",
            subject.len(),
            subject
        );
        let (seq, items) = fetch_response(raw.as_bytes()).unwrap().unwrap();
        assert_eq!(seq, 3);
        let get = |k: &str| items.iter().find(|(n, _)| n == k).map(|(_, v)| v).unwrap();
        assert_eq!(get("UID").number(), Some(42));
        assert_eq!(get("RFC822.SIZE").number(), Some(1234));
        assert_eq!(get("MODSEQ"), &Value::List(vec![Value::Atom("77".into())]));
        let e = Envelope::from_value(get("ENVELOPE")).unwrap();
        assert_eq!(e.subject.as_deref(), Some(subject));
        assert_eq!(e.from[0].email, "alice@example.test");
        assert_eq!(e.from[0].name.as_deref(), Some("Alice Böb"));
        assert_eq!(e.to.len(), 1, "group markers are not addresses: {:?}", e.to);
        assert_eq!(e.message_id.as_deref(), Some("<m1@example.test>"));
    }

    #[test]
    fn hostile_responses_are_refused_not_trusted() {
        for raw in [
            &b"* 1 FETCH (UID 1 ENVELOPE ({99}\r\nshort))"[..],
            b"* 1 FETCH (UID 1 ENVELOPE (\"open",
            b"* 1 FETCH (UID 1 ENVELOPE ((((((((((((((((((((NIL))))))))))))))))))))",
            b"* 1 FETCH (UID)",
            b"* 1 FETCH (UID 1 X {18446744073709551615}\r\n)",
        ] {
            assert!(
                fetch_response(raw).is_err(),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        assert_eq!(fetch_response(b"* 4 EXISTS").unwrap(), None);
        assert_eq!(literal_at_end(b"* 1 FETCH (BODY[] {120}"), Some(120));
        assert_eq!(literal_at_end(b"a {12+}"), Some(12));
        assert_eq!(literal_at_end(b"a {x}"), None);
    }

    #[test]
    fn examine_tells_validity_next_uid_and_modseq() {
        let lines: Vec<String> = [
            "* FLAGS (\\Seen)",
            "* 7 EXISTS",
            "* OK [UIDVALIDITY 1733300000] UIDs valid",
            "* OK [UIDNEXT 12] Predicted next UID",
            "* OK [HIGHESTMODSEQ 99] Highest",
        ]
        .map(str::to_owned)
        .into();
        let s = Selected::from_lines(&lines);
        assert_eq!(
            s,
            Selected {
                exists: Some(7),
                uidvalidity: Some(1_733_300_000),
                uidnext: Some(12),
                highestmodseq: Some(99)
            }
        );
    }
}
