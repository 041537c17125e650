//! Making text from a peer safe to show and to keep.
//!
//! Owns: [`printable`] (no terminal escapes, no invisible reordering) and
//! [`redact`] (no secret, in any encoding a server may echo it back in). Every
//! provider or mail-server text that reaches an error, a status file, a log or a
//! notification passes through these. Must not: know where the text came from —
//! callers decide which values are secret.

use std::borrow::Cow;

/// What a removed secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Shorter values are left alone: replacing a 3-byte "foo" everywhere would
/// shred the text while a secret that short protects nothing anyway.
const MIN_SECRET: usize = 6;

/// True for characters that must never reach a terminal from a peer: C0 and C1
/// controls (ESC starts colour, cursor and title sequences; U+009B is a one-byte
/// CSI), DEL, and the bidirectional overrides and isolates that make a line
/// read differently from what it says.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every control, bidi override or isolate replaced by U+FFFD (a tab
/// by a space), so a hostile server cannot colour, retitle or rewrite the
/// user's terminal, or hide part of a message. Borrowed when nothing changes.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| match c {
                '\t' => ' ',
                c if unsafe_char(c) => '\u{FFFD}',
                c => c,
            })
            .collect(),
    )
}

/// `text` with every occurrence of each of `secrets` replaced by [`REDACTED`],
/// in whatever form it appears: raw, form- or percent-encoded (`+` or `%20` for
/// a space, upper- or lower-case hex, any subset of characters escaped), or
/// JSON-escaped (`\/`, `\"`, `\\`, `\uXXXX`) — an endpoint that echoes our
/// request body hands it back in one of these.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_owned();
    for secret in secrets {
        let secret = secret.as_bytes();
        if secret.len() < MIN_SECRET {
            continue;
        }
        out = redact_one(&out, secret);
    }
    out
}

fn redact_one(text: &str, secret: &[u8]) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match encoded_match(&bytes[i..], secret) {
            Some(n) => {
                out.extend_from_slice(REDACTED.as_bytes());
                i += n;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    // Only whole encoded sequences are replaced (a `%XX` or `\uXXXX` is ASCII),
    // and any split multi-byte character is one the secret itself holds: lossy
    // conversion cannot bring a secret byte back.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The length of `text`'s prefix that spells `secret` in some encoding.
fn encoded_match(text: &[u8], secret: &[u8]) -> Option<usize> {
    let mut j = 0;
    for &want in secret {
        j += one_byte(&text[j..], want)?;
    }
    Some(j)
}

/// How many bytes of `text` spell the single byte `want`.
fn one_byte(text: &[u8], want: u8) -> Option<usize> {
    let hex = |s: &[u8]| -> Option<u32> {
        std::str::from_utf8(s)
            .ok()
            .and_then(|h| u32::from_str_radix(h, 16).ok())
    };
    match text {
        [c, ..] if *c == want => Some(1),
        [b'+', ..] if want == b' ' => Some(1),
        [b'%', h1, h2, ..] if hex(&[*h1, *h2]) == Some(want as u32) => Some(3),
        [b'\\', b'u', rest @ ..] if rest.len() >= 4 && hex(&rest[..4]) == Some(want as u32) => {
            Some(6)
        }
        [b'\\', c, ..] if *c == want && matches!(want, b'/' | b'"' | b'\\') => Some(2),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_overrides_are_replaced() {
        assert_eq!(printable("plain text"), Cow::Borrowed("plain text"));
        let hostile = "bad\x1b[31mred\x07 \u{9b}2J \u{202e}txt.exe\u{2066} tab\there\r\n";
        let shown = printable(hostile);
        assert!(!shown.chars().any(unsafe_char), "{shown:?}");
        assert!(
            shown.contains("red") && shown.contains("tab here"),
            "{shown}"
        );
    }

    #[test]
    fn a_secret_is_removed_in_every_encoding() {
        let secret = "1//0gA-b_c.d~e/f+g=h i*j";
        let forms = [
            secret.to_owned(),
            url::form_urlencoded::byte_serialize(secret.as_bytes()).collect::<String>(),
            url::form_urlencoded::byte_serialize(secret.as_bytes())
                .collect::<String>()
                .replace('+', "%20"),
            url::form_urlencoded::byte_serialize(secret.as_bytes())
                .collect::<String>()
                .replace("%2F", "%2f")
                .replace("%7E", "%7e"),
            serde_json::to_string(secret)
                .unwrap()
                .trim_matches('"')
                .to_owned(),
            secret.replace('/', "\\/"),
            "1\\u002f\\u002F0gA-b_c.d~e/f+g=h i*j".to_owned(),
            // Every character escaped, as some encoders do.
            secret.bytes().map(|b| format!("%{b:02X}")).collect(),
        ];
        for f in forms {
            let text = format!("body: refresh_token={f}&x=1");
            let out = redact(&text, &["unrelated", secret]);
            assert!(out.contains("refresh_token=[redacted]&x=1"), "{f} → {out}");
        }
        // Short values are left alone: they would shred the text.
        assert_eq!(redact("scope=abc", &["abc"]), "scope=abc");
    }
}
