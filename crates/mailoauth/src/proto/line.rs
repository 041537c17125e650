//! Lines as the protocol machines see them: length-checked, CRLF stripped,
//! decoded leniently (servers' texts are shown, never trusted as UTF-8).
//!
//! Owns: the line limit check, CRLF framing, and the limits on what one reply
//! may make us hold (lines, collected lines, collected bytes): a server that
//! never stops talking gets a diagnosed error, not our memory. Must not: know
//! any command.

use std::borrow::Cow;

use super::Failure;

/// Longest line accepted after login (the login machines keep their 64 KiB):
/// a `SEARCH` of a large folder is one long line, so be generous, but bounded.
pub const MAX_REPLY_LINE: usize = 1 << 20;
/// Most lines one reply may make us collect (IMAP untagged lines, SMTP
/// multi-line replies, POP3 lists): an `EXPUNGE` of a huge folder is one line
/// per message, so this is far above any honest reply.
pub const MAX_REPLY_LINES: usize = 1_000_000;
/// Most bytes one reply may make us collect.
pub const MAX_REPLY_BYTES: usize = 64 << 20;

/// The lines of one reply, refused past [`MAX_REPLY_LINES`] or
/// [`MAX_REPLY_BYTES`].
#[derive(Debug, Default)]
pub struct Lines {
    lines: Vec<String>,
    bytes: usize,
}

impl Lines {
    /// Keep `line`, or say which limit the server broke.
    pub fn push(&mut self, line: &str) -> Result<(), Failure> {
        if self.lines.len() >= MAX_REPLY_LINES {
            return Err(misbehaving(&format!(
                "more than {MAX_REPLY_LINES} lines in one reply"
            )));
        }
        if self.bytes + line.len() > MAX_REPLY_BYTES {
            return Err(misbehaving(&format!(
                "more than {} MiB in one reply",
                MAX_REPLY_BYTES >> 20
            )));
        }
        self.bytes += line.len();
        self.lines.push(line.to_owned());
        Ok(())
    }

    /// The lines collected so far.
    pub fn as_slice(&self) -> &[String] {
        &self.lines
    }

    /// The lines, leaving this empty for the next reply.
    pub fn take(&mut self) -> Vec<String> {
        self.bytes = 0;
        std::mem::take(&mut self.lines)
    }
}

/// The [`Failure`] for a server that broke one of our limits: says which, and
/// that it is the server's doing (so nobody goes looking for a token problem).
pub fn misbehaving(what: &str) -> Failure {
    Failure::Protocol(format!(
        "the server is misbehaving: {what}; refusing to go on"
    ))
}

/// The line without its CRLF, refused when longer than `max` bytes: a server
/// that never ends a line must not make us buffer without bound.
pub(crate) fn text(raw: &[u8], max: usize) -> Result<Cow<'_, str>, Failure> {
    let body = raw
        .strip_suffix(b"\n")
        .map(|b| b.strip_suffix(b"\r").unwrap_or(b))
        .unwrap_or(raw);
    if body.len() > max {
        return Err(misbehaving(&format!(
            "an overlong line of {} bytes (at most {max})",
            body.len()
        )));
    }
    Ok(String::from_utf8_lossy(body))
}

/// `line` with CRLF appended.
pub(crate) fn crlf(line: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(line.len() + 2);
    v.extend_from_slice(line);
    v.extend_from_slice(b"\r\n");
    v
}

/// Case-insensitive prefix strip (`auth=xoauth2`, `ok`).
pub(crate) fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_is_stripped_and_overlong_lines_refused() {
        assert_eq!(text(b"* OK hi\r\n", 10).unwrap(), "* OK hi");
        assert_eq!(text(b"* OK hi", 10).unwrap(), "* OK hi");
        assert!(text(&[b'x'; 11], 10).is_err());
        assert_eq!(strip_prefix_ci("auth=XOAUTH2", "AUTH="), Some("XOAUTH2"));
        assert_eq!(strip_prefix_ci("AU", "AUTH="), None);
    }

    #[test]
    fn a_reply_that_never_ends_is_refused_by_count_and_by_bytes() {
        let mut l = Lines::default();
        for _ in 0..MAX_REPLY_LINES {
            l.push("").unwrap();
        }
        let e = l.push("").unwrap_err().to_string();
        assert!(e.contains("misbehaving") && e.contains("lines"), "{e}");
        let mut l = Lines::default();
        let big = "x".repeat(MAX_REPLY_LINE);
        for _ in 0..MAX_REPLY_BYTES / MAX_REPLY_LINE {
            l.push(&big).unwrap();
        }
        let e = l.push("x").unwrap_err().to_string();
        assert!(e.contains("MiB in one reply"), "{e}");
        assert_eq!(l.take().len(), 64);
        assert!(l.as_slice().is_empty());
    }
}
