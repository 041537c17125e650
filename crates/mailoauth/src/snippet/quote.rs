//! Quoting for each syntax a snippet writes in. Every function leaves a value
//! that needs no quoting as it is, so ordinary snippets stay readable.
//!
//! Must not: know any client; it knows syntaxes.

fn plain(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._@-/:+,=~%".contains(c))
}

/// POSIX shell (also s-nail's shell-style quoting): single quotes, `'\''` for a quote.
pub fn sh(s: &str) -> String {
    if plain(s) && !s.starts_with('~') {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// s-nail file names (`tls-ca-file`, a file `mta`): s-nail expands them as if in
/// double quotes (`$VAR`), so those metacharacters get a backslash, and the
/// result is quoted for its `set` command.
pub fn snail_file(s: &str) -> String {
    let mut e = String::new();
    for c in s.chars() {
        if "\\$`\"".contains(c) {
            e.push('\\');
        }
        e.push(c);
    }
    sh(&e)
}

/// A double-quoted string with `\` and `"` escaped: mbsync, msmtp, fetchmail, gitconfig.
pub fn dq(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', r"\\").replace('"', "\\\""))
}

/// msmtp: the value is the rest of the line, taken as it is (no escapes);
/// double quotes only keep blanks at its ends.
pub fn msmtp(s: &str) -> String {
    let blank_end = s.starts_with(char::is_whitespace) || s.ends_with(char::is_whitespace);
    let quoted = s.len() >= 2 && s.starts_with('"') && s.ends_with('"');
    if blank_end || quoted || s.is_empty() {
        format!("\"{s}\"")
    } else {
        s.to_owned()
    }
}

/// [`dq`] only where needed (mbsync takes bare words).
pub fn word(s: &str) -> String {
    if plain(s) { s.to_owned() } else { dq(s) }
}

/// muttrc: single quotes (no `$` or backtick expansion inside), `'\''` for a quote.
pub fn mutt(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A Python string literal.
pub fn py(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '"' => out.push_str("\\\""),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The user part of a URL (`alice%40example.com`).
pub fn url_user(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
