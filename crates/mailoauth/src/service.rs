//! The mail services an account can use: IMAP, POP3 and SMTP submission.
//!
//! Owns: the [`Service`] value and its spelling in the config. Must not: depend
//! on anything else in the crate (config, errors, remedies and the protocol
//! machines all name services).

use serde::{Deserialize, Serialize};

/// Mail services an account uses; the provider expands them into scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    /// IMAP.
    Imap,
    /// POP3.
    Pop,
    /// SMTP submission.
    Smtp,
}

impl Service {
    /// Every service, in the order reports list them.
    pub const ALL: [Service; 3] = [Service::Imap, Service::Pop, Service::Smtp];

    /// The config's spelling (`imap`, `pop`, `smtp`): also the key of its server.
    pub fn name(self) -> &'static str {
        match self {
            Service::Imap => "imap",
            Service::Pop => "pop",
            Service::Smtp => "smtp",
        }
    }
}
