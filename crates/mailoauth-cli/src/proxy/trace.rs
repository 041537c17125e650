//! The proxy's `--debug` protocol trace: each line read or written during the
//! login dialogues (client ↔ proxy, proxy ↔ server) and one line per chunk
//! relayed afterwards, tagged with a session number.
//!
//! Owns: deciding what of a line may be shown. Must not: print a password,
//! token or SASL payload whatever the client or server sends: credential-bearing
//! commands keep only their command words, continuation answers are counted,
//! never shown. A client's commands before login are traced from what the
//! dialect parsed ([`command`]), never from the raw line: the parser decides
//! what is a LOGIN (leading or doubled spaces, literals), so the trace must too.

use std::sync::atomic::{AtomicBool, Ordering};

static ON: AtomicBool = AtomicBool::new(false);

tokio::task_local! {
    /// The session number of the connection this task serves.
    pub(crate) static SESSION: u64;
}

/// Turn the trace on (`mailoauth daemon --debug`); it goes to the log at debug level.
pub fn enable() {
    ON.store(true, Ordering::Relaxed);
}

/// Is the trace on?
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Which way a traced line went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Client to proxy.
    FromClient,
    /// Proxy to client.
    ToClient,
    /// Server to proxy.
    FromServer,
    /// Proxy to server.
    ToServer,
}

impl Dir {
    fn label(self) -> &'static str {
        match self {
            Dir::FromClient => "C>",
            Dir::ToClient => "<C",
            Dir::FromServer => "S>",
            Dir::ToServer => "<S",
        }
    }
}

/// The session number of the current task (0 outside a session).
pub(crate) fn session() -> u64 {
    SESSION.try_with(|s| *s).unwrap_or(0)
}

/// Trace one protocol line; `secret` lines (SASL continuation answers,
/// literals) show only their length.
pub(crate) fn line(dir: Dir, text: &str, secret: bool) {
    if !on() {
        return;
    }
    let shown = if secret {
        format!("[{} bytes redacted]", text.len())
    } else {
        redact(text)
    };
    log::debug!("proxy #{} {} {shown}", session(), dir.label());
}

/// Trace a client command before login as the dialect parsed it: `words` (tag,
/// command name, a SASL mechanism) are shown, the rest of the command (its
/// arguments, literals, continuation lines) only as `[redacted]` when `more`.
pub(crate) fn command(words: &[&str], more: bool) {
    if !on() {
        return;
    }
    let mut shown: Vec<String> = words
        .iter()
        .filter(|w| !w.is_empty())
        .map(|w| clean(w))
        .collect();
    if more {
        shown.push("[redacted]".into());
    }
    log::debug!(
        "proxy #{} {} {}",
        session(),
        Dir::FromClient.label(),
        shown.join(" ")
    );
}

/// `word` as a command name fit to show, when it is one of `known` (a word
/// that is not a command may be a password sent where a command belongs).
pub(crate) fn verb(word: &str, known: &[&'static str]) -> Option<&'static str> {
    known.iter().copied().find(|k| k.eq_ignore_ascii_case(word))
}

/// A SASL mechanism name fit to show, when `s` is one (any other word in its
/// place may be a credential sent in the wrong order).
pub(crate) fn mechanism(s: &str) -> Option<&'static str> {
    const KNOWN: [&str; 9] = [
        "PLAIN",
        "LOGIN",
        "XOAUTH2",
        "OAUTHBEARER",
        "CRAM-MD5",
        "SCRAM-SHA-1",
        "SCRAM-SHA-256",
        "EXTERNAL",
        "ANONYMOUS",
    ];
    KNOWN.into_iter().find(|m| m.eq_ignore_ascii_case(s))
}

/// Trace a relayed chunk: its size and, redacted, its first line.
pub(crate) fn chunk(dir: Dir, bytes: &[u8]) {
    if !on() {
        return;
    }
    let first = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let first = String::from_utf8_lossy(first);
    log::debug!(
        "proxy #{} {} {} bytes: {}",
        session(),
        dir.label(),
        bytes.len(),
        redact(first.trim_end_matches('\r'))
    );
}

/// A line fit to log: credential-bearing commands (`LOGIN`, `PASS`,
/// `AUTHENTICATE`/`AUTH` with its mechanism) keep their command words only;
/// control characters are shown as `.`; long lines are cut.
pub fn redact(line: &str) -> String {
    // Any run of blanks separates words, as servers parse them: `a  LOGIN`
    // and ` a LOGIN` are logins too.
    let words: Vec<&str> = line.split_ascii_whitespace().collect();
    // IMAP puts a tag before the command; POP3 and SMTP do not.
    for (i, w) in words.iter().take(2).enumerate() {
        let keep = match w.to_ascii_uppercase().as_str() {
            "LOGIN" | "PASS" => i + 1,
            "AUTHENTICATE" | "AUTH" => i + 2,
            _ => continue,
        };
        if words.len() > keep {
            return format!("{} [redacted]", clean(&words[..keep].join(" ")));
        }
        break;
    }
    clean(line)
}

fn clean(s: &str) -> String {
    const MAX: usize = 200;
    let mut out: String = s
        .chars()
        .take(MAX)
        .map(|c| if c.is_control() { '.' } else { c })
        .collect();
    if s.chars().nth(MAX).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn credentials_never_survive_redaction() {
        let cases = [
            ("a1 LOGIN alice \"s3cret\"", "a1 LOGIN [redacted]"),
            ("a1 login {5}", "a1 login [redacted]"),
            (
                "a2 AUTHENTICATE PLAIN AGFsaWNlAHMzY3JldA==",
                "a2 AUTHENTICATE PLAIN [redacted]",
            ),
            (
                "p2 AUTHENTICATE XOAUTH2 dXNlcj1h",
                "p2 AUTHENTICATE XOAUTH2 [redacted]",
            ),
            ("PASS s3cret", "PASS [redacted]"),
            ("AUTH PLAIN AGFsaWNlAHMzY3JldA==", "AUTH PLAIN [redacted]"),
            ("auth xoauth2 dXNlcj1h", "auth xoauth2 [redacted]"),
            ("AUTH LOGIN", "AUTH LOGIN"),
            ("a3 SELECT INBOX", "a3 SELECT INBOX"),
            ("USER alice", "USER alice"),
            ("x\u{1b}[2J", "x.[2J"),
            ("a1  LOGIN alice s3cret", "a1 LOGIN [redacted]"),
            (" a1 LOGIN alice s3cret", "a1 LOGIN [redacted]"),
            ("a1\tLOGIN alice s3cret", "a1 LOGIN [redacted]"),
        ];
        for (input, want) in cases {
            assert_eq!(redact(input), want, "{input}");
        }
        assert!(redact(&"x".repeat(500)).chars().count() <= 201);
    }
}
