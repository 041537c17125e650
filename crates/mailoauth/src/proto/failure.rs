//! How talking to a mail server went wrong, kept verbatim for the catalog.
//!
//! Owns: the [`Failure`] value every protocol machine and driver returns. Must
//! not: depend on anything else in the crate but the TLS failure type and the
//! leaf `text` (errors,
//! reports and the catalog all hold one, so it sits below them).

/// How a login or command went wrong.
#[derive(Debug, Clone)]
pub enum Failure {
    /// No TCP connection (exit 4).
    Unreachable(String),
    /// TLS failed (certificate, version, not TLS at all), typed for the catalog.
    Tls(crate::tls::TlsFailure),
    /// The server does not speak what we expect (or offers no bearer-token SASL).
    Protocol(String),
    /// The server refused authentication (or the harmless command after it): exit 5.
    Refused {
        /// The server's reply line, verbatim.
        reply: String,
        /// The decoded SASL error challenge, if the server sent one (Gmail's JSON).
        challenge: Option<String>,
        /// What we were doing (`AUTHENTICATE`, `SELECT INBOX`, `MAIL FROM`…).
        step: &'static str,
    },
    /// The server says the failure is temporary (IMAP `[UNAVAILABLE]`, POP3
    /// `[SYS/TEMP]`, an SMTP 4yz reply): nothing to fix here, retry later (exit 4).
    Temporary {
        /// The server's reply line, verbatim.
        reply: String,
        /// What we were doing.
        step: &'static str,
    },
}

/// Server text is kept verbatim (the catalog matches on it) but shown without
/// control characters: a reply must not drive the user's terminal.
impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |s: &str| crate::text::printable(s).into_owned();
        match self {
            Failure::Unreachable(s) => write!(f, "unreachable: {}", shown(s)),
            Failure::Tls(t) => write!(f, "TLS: {}", shown(&t.to_string())),
            Failure::Protocol(s) => write!(f, "{}", shown(s)),
            Failure::Refused {
                reply,
                step,
                challenge,
            } => {
                write!(f, "{step} refused: {}", shown(reply))?;
                if let Some(c) = challenge {
                    write!(f, " (challenge {})", shown(c))?;
                }
                Ok(())
            }
            Failure::Temporary { reply, step } => {
                write!(f, "{step} failed temporarily: {}", shown(reply))
            }
        }
    }
}
