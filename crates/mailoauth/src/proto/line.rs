//! Lines as the protocol machines see them: length-checked, CRLF stripped,
//! decoded leniently (servers' texts are shown, never trusted as UTF-8).
//!
//! Owns: the line limit check and CRLF framing. Must not: know any command.

use std::borrow::Cow;

use super::Failure;

/// The line without its CRLF, refused when longer than `max` bytes: a server
/// that never ends a line must not make us buffer without bound.
pub(crate) fn text(raw: &[u8], max: usize) -> Result<Cow<'_, str>, Failure> {
    let body = raw
        .strip_suffix(b"\n")
        .map(|b| b.strip_suffix(b"\r").unwrap_or(b))
        .unwrap_or(raw);
    if body.len() > max {
        return Err(Failure::Protocol(format!(
            "the server sent an overlong line ({} bytes, at most {max})",
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
}
