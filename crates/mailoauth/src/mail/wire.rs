//! What a user's argument may hold before it goes on the wire (or into a path).
//!
//! Owns: the checks on addresses (`send`'s recipients and sender) and folder
//! names (`fetch --folder`, `--move-to`), refused as usage errors before any
//! connection. A CR or LF in an argument would end our command line and start
//! one of the argument's choosing (`bob>\r\nRSET\r\nMAIL FROM:<boss>` sent as
//! three commands, past the send-as guard); `<` and `>` would end the address
//! early; `..` in a folder used as a Maildir path would leave `~/Mail`. Must
//! not: echo a refused argument raw (its control characters could rewrite the
//! terminal), or accept less than RFC 5321 allows for honest addresses.

use crate::error::Error;

/// `s` for an error message: control characters escaped, at most 80 characters.
pub fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(80).flat_map(char::escape_debug).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

/// An envelope address (`what` names it: "recipient", "-f sender"): no
/// control characters, spaces, `<` or `>`, not empty.
pub fn address(what: &str, s: &str) -> Result<(), Error> {
    let bad = s.is_empty()
        || s.chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '<' || c == '>');
    if bad {
        return Err(Error::Usage(format!(
            "{what} `{}` is not a mail address (no spaces, line breaks, control characters, `<` or `>`)",
            shown(s)
        )));
    }
    Ok(())
}

/// A server folder name (`what`: "--move-to"): not empty, no control
/// characters (IMAP cannot quote CR, LF or NUL).
pub fn server_folder(what: &str, s: &str) -> Result<(), Error> {
    if s.is_empty() || s.chars().any(char::is_control) {
        return Err(Error::Usage(format!(
            "{what} `{}` is not a usable folder name: it is empty or holds a line break or control character",
            shown(s)
        )));
    }
    Ok(())
}

/// A folder name that may also name a Maildir below `~/Mail` (`--folder`):
/// a [`server_folder`], and no leading `/` and no `.` or `..` segment.
pub fn folder(what: &str, s: &str) -> Result<(), Error> {
    let refuse = |why: &str| {
        Err(Error::Usage(format!(
            "{what} `{}` is not a usable folder name: {why}",
            shown(s)
        )))
    };
    if s.is_empty() {
        return refuse("it is empty");
    }
    if s.chars().any(char::is_control) {
        return refuse("it holds a line break or control character");
    }
    if s.starts_with('/') || s.split('/').any(|seg| seg == "." || seg == "..") {
        return refuse("a leading `/` or a `.`/`..` segment would leave the Maildir's place");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injections_are_refused_and_shown_escaped() {
        let e = address("recipient", "bob>\r\nRSET\r\nMAIL FROM:<boss@x.com").unwrap_err();
        let m = e.to_string();
        assert!(m.contains("recipient `bob>\\r\\nRSET"), "{m}");
        assert!(!m.contains('\r') && !m.contains('\n'), "{m:?}");
        for bad in ["", "a b@x", "a@x\0", "<a@x>", "a@x\t"] {
            assert!(address("recipient", bad).is_err(), "{bad:?}");
        }
        for good in ["a@x.com", "\"quoted\"@x", "a+b@x.com", "ü@x.de"] {
            address("recipient", good).unwrap();
        }
        for bad in ["", "A\r\nB", "../x", "a/../../b", "/etc", "a/./b", "x\0"] {
            assert!(folder("--folder", bad).is_err(), "{bad:?}");
        }
        for good in [
            "INBOX",
            "Lists/rust",
            "[Gmail]/All Mail",
            "a..b",
            "Entwürfe",
        ] {
            folder("--folder", good).unwrap();
        }
        assert_eq!(shown(&"x".repeat(100)).chars().count(), 81);
        server_folder("--move-to", "../Archive").unwrap();
        assert!(server_folder("--move-to", "A\r\nB").is_err());
    }
}
