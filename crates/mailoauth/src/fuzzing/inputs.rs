//! Parsers of one whole input: the config file, a token-endpoint answer, a
//! stored token record, a request at the redirect listener (or a pasted
//! redirect URL), a SASL challenge, a daemon-protocol line.

use std::io::{Cursor, Read, Write};
use std::path::Path;

use base64::Engine as _;
use zeroize::Zeroizing;

use super::{account, assert_no_secret};
use crate::config::Config;
use crate::flows::listener::{self, Callback};
use crate::http::Response;
use crate::ipc;
use crate::oauth;
use crate::store::TokenRecord;

/// The config file: parse, then resolve every account. No error may show a
/// literal secret (`client_secret`, `passphrase`, `password`) from the text.
pub fn config(data: &[u8]) {
    // `Config::load` reads the file as UTF-8; anything else is an I/O error there.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let errors = config_errors(text);
    for secret in literal_secrets(text) {
        let leaked: Vec<&String> = errors.iter().filter(|e| e.contains(secret)).collect();
        if leaked.is_empty() {
            continue;
        }
        // The same file with another value of that length: if the text is still
        // there, it is the message's own words, not the value.
        let other: String = secret
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { 'q' } else { c })
            .collect();
        if other == secret {
            continue;
        }
        let again = config_errors(&text.replacen(secret, &other, 1));
        for e in leaked {
            assert!(
                again.iter().any(|a| a.contains(secret)),
                "a config error shows a secret value: {e:?}"
            );
        }
    }
}

fn config_errors(text: &str) -> Vec<String> {
    match Config::parse(text, Path::new("/fuzz/config.toml")) {
        Err(e) => vec![e.to_string()],
        Ok(c) => c
            .accounts
            .keys()
            .filter_map(|n| crate::providers::resolve(&c, n).err())
            .map(|e| e.to_string())
            .collect(),
    }
}

/// Values written literally for the secret keys, when long enough (and said
/// once only) to be told apart from a message's words.
fn literal_secrets(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for line in text.lines() {
        let l = line.trim_start();
        let Some(rest) = ["client_secret", "passphrase", "password"]
            .iter()
            .find_map(|k| l.strip_prefix(k))
        else {
            continue;
        };
        let Some(v) = rest.trim_start().strip_prefix('=') else {
            continue;
        };
        let v = v.trim_start();
        let Some(q) = v.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            continue;
        };
        let inner = &v[1..];
        let value = &inner[..inner.find(q).unwrap_or(inner.len())];
        if value.chars().count() >= 8 && text.matches(value).count() == 1 {
            out.push(value);
        }
    }
    out
}

/// A refresh token and a client secret with characters that form and JSON
/// encoding change, as the token endpoint's form carries them.
const REFRESH_TOKEN: &str = "1//0fuzz-RT+refresh/token==";
const CLIENT_SECRET: &str = "GOCSPX-fuzz_secret~\"x\"";

/// A token-endpoint answer: two bytes of status, one choosing the content
/// type, then the body. Classified and parsed as a refresh's answer; the
/// error the user sees must not hold the request's secrets in any encoding.
pub fn token_endpoint(data: &[u8]) {
    let [hi, lo, ct, body @ ..] = data else {
        return;
    };
    const TYPES: [&str; 5] = [
        "application/json",
        "application/json; charset=utf-8",
        "text/html; charset=utf-8",
        "text/plain",
        "",
    ];
    let resp = Response {
        status: 100 + u16::from_be_bytes([*hi, *lo]) % 500,
        content_type: TYPES[usize::from(*ct) % TYPES.len()].to_owned(),
        retry_after: (ct & 0x80 != 0).then_some(u64::from(*lo)),
        body: String::from_utf8_lossy(body).into_owned(),
    };
    let v = |s: &str| Zeroizing::new(s.to_owned());
    let form: oauth::Form = vec![
        ("grant_type", v("refresh_token")),
        ("refresh_token", v(REFRESH_TOKEN)),
        ("client_id", v("fuzz-client")),
        ("client_secret", v(CLIENT_SECRET)),
        ("scope", v("mail offline_access")),
    ];
    let err = match oauth::classify(resp, &form).and_then(oauth::token_response) {
        Ok(t) => {
            assert!(!t.access_token.is_empty());
            return;
        }
        Err(e) => e,
    };
    let a = account(1);
    let shown = crate::diagnose::endpoint_error(err, &a, "token endpoint", &a.token_url);
    let shown = format!("{shown} {shown:?}");
    for s in [REFRESH_TOKEN, CLIENT_SECRET] {
        let forms = [
            s.to_owned(),
            url::form_urlencoded::byte_serialize(s.as_bytes()).collect(),
            json_escaped(s),
        ];
        assert_no_secret("a token-endpoint error", &shown, &forms);
    }
}

/// `s` as the inside of a JSON string.
fn json_escaped(s: &str) -> String {
    let j = serde_json::to_string(s).expect("a string serialises");
    j[1..j.len() - 1].to_owned()
}

/// A stored token record: parse; a record read back from its own bytes is the
/// same record; freshness is decided for any stored times without overflow;
/// the error names no content.
pub fn token_record(data: &[u8]) {
    let rec = match TokenRecord::from_bytes(data) {
        Ok(r) => r,
        Err(e) => {
            assert!(
                e.starts_with("not a valid token record (JSON ")
                    || e.starts_with("record version "),
                "an unexpected record error: {e:?}"
            );
            return;
        }
    };
    assert_eq!(TokenRecord::from_bytes(&rec.to_bytes()).as_ref(), Ok(&rec));
    for t in rec.access.values() {
        for now in [0, 1_750_000_000, i64::MAX, i64::MIN] {
            for min in [0, 300, u64::MAX] {
                let _ = t.is_fresh(min, now);
            }
        }
    }
}

/// The redirect path and state the listener waits for.
const PATH: &str = "/callback";
const STATE: &str = "Fz9stateQ7";

/// A request at the redirect listener (the bytes a browser, or anything on
/// the machine, sends), and the same bytes as a pasted redirect URL. The
/// answer is well-formed HTTP whose page holds no markup from the request.
pub fn redirect_request(data: &[u8]) {
    let mut io = Mem {
        input: Cursor::new(data),
        out: Vec::new(),
    };
    let cb = listener::serve_one(&mut io, PATH, STATE);
    let out = String::from_utf8(io.out).expect("the answer is UTF-8");
    if !out.is_empty() {
        let (head, page) = out.split_once("\r\n\r\n").expect("a header block");
        assert!(head.starts_with("HTTP/1.1 "), "{head:?}");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .expect("a Content-Length")
            .parse()
            .expect("a number");
        assert_eq!(len, page.len(), "Content-Length vs. the page");
        assert_eq!(
            page.matches('<').count(),
            page_tags(),
            "markup from the request: {page:?}"
        );
    }
    if let Some(Callback::Code(c)) = &cb {
        assert!(!c.is_empty());
    }
    let _ = listener::parse_callback(&String::from_utf8_lossy(data), PATH, STATE);
}

/// Tags in the listener's page (any page: only the texts differ).
fn page_tags() -> usize {
    static TAGS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *TAGS.get_or_init(|| {
        let mut io = Mem {
            input: Cursor::new(b"GET /favicon.ico HTTP/1.1\r\n\r\n"),
            out: Vec::new(),
        };
        listener::serve_one(&mut io, PATH, STATE);
        String::from_utf8(io.out).unwrap().matches('<').count()
    })
}

/// A connection that reads `input` and keeps what is written.
struct Mem<'a> {
    input: Cursor<&'a [u8]>,
    out: Vec<u8>,
}

impl Read for Mem<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Mem<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A server's SASL challenge as shown (decoded when it is base64 of text,
/// control characters made harmless), and the OAUTHBEARER authorization identity read back as the user.
pub fn sasl(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::proto::decode_challenge(&text);
    let b64 = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
    let shown = crate::proto::decode_challenge(&b64);
    assert_eq!(shown, crate::text::printable(&text));
    assert_eq!(
        crate::text::printable(&shown),
        shown,
        "what is shown is printable"
    );
    let user = text.split('\x01').next().unwrap_or_default();
    let ir = crate::sasl::oauthbearer(user, Some("imap.example.com"), Some(993), "T");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(ir)
        .expect("our own base64");
    let raw = String::from_utf8(raw).expect("our own UTF-8");
    let authzid = raw
        .strip_prefix("n,a=")
        .and_then(|r| r.split_once(",\x01"))
        .map(|(a, _)| a)
        .expect("a gs2 header");
    assert!(
        !authzid.contains(','),
        "an unescaped comma ends the gs2 header early"
    );
    assert_eq!(authzid.replace("=2C", ",").replace("=3D", "="), user);
}

/// A line of the daemon's socket protocol, as request and as reply: what
/// parses writes back to the same value.
pub fn ipc(data: &[u8]) {
    let line = String::from_utf8_lossy(data);
    if let Ok(r) = ipc::Request::from_line(&line) {
        let back = String::from_utf8(r.to_line()).expect("JSON is UTF-8");
        assert_eq!(ipc::Request::from_line(&back), Ok(r));
    }
    if let Some(r) = ipc::Reply::from_line(&line) {
        let back = String::from_utf8(r.to_line()).expect("JSON is UTF-8");
        assert_eq!(ipc::Reply::from_line(&back), Some(r));
    }
}
