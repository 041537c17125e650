//! The library's error type.
//!
//! Owns: the classification of every failure into the exit codes of the spec and
//! the fix as data ([`Error::remedy`], a [`Remedy`] each front end words in its
//! own terms). Must not: print anything, word a fix for one front end, or carry a
//! secret in any field (errors end up in terminals, logs and bug reports).

use std::path::PathBuf;

use crate::proto::failure::Failure;
use crate::remedy::{Diagnosis, Remedy};
use crate::service::Service;

/// What went wrong, typed so the CLI can pick the exit code and show the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file is unreadable, malformed, or names an invalid value.
    #[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Config {
        /// The config file.
        path: PathBuf,
        /// 1-based line of the offending key, when known.
        line: Option<usize>,
        /// What is wrong and what would be valid.
        message: String,
    },

    /// There is no config file (yet).
    #[error("config file {} not found", path.display())]
    NoConfig {
        /// Where it was looked for.
        path: PathBuf,
    },

    /// No account of that name in the config.
    #[error("no account named `{name}` in {}", path.display())]
    UnknownAccount {
        /// The requested name.
        name: String,
        /// The config file searched.
        path: PathBuf,
        /// Accounts that do exist.
        known: Vec<String>,
    },

    /// Usage error that clap could not catch (e.g. a flag that makes no sense for this account).
    #[error("{0}")]
    Usage(String),

    /// The account has no usable token: a (new) interactive login is needed.
    #[error("account `{account}` needs a new login: {reason}")]
    LoginRequired {
        /// Account name.
        account: String,
        /// Why (e.g. the provider's explanation of `invalid_grant`).
        reason: String,
        /// What to do before signing in again, when the provider's error code says.
        remedy: Option<Remedy>,
    },

    /// The authorization server refused a request for a reason a new login will not fix
    /// (bad client id, scope, secret …).
    #[error("{endpoint} refused the request: {summary}")]
    OAuth {
        /// Which endpoint (e.g. "token endpoint").
        endpoint: &'static str,
        /// The OAuth error code and description, secrets removed.
        summary: String,
        /// The catalog's diagnosis, when it knows the error (boxed: it is large
        /// and every `Result` of the library carries this enum).
        diagnosis: Option<Box<Diagnosis>>,
    },

    /// The provider or server could not be reached, or kept failing transiently.
    #[error("{what} unreachable: {detail}")]
    Unreachable {
        /// What we tried to reach.
        what: String,
        /// The last error seen.
        detail: String,
    },

    /// The server answered something that is not the protocol (HTML instead of JSON …).
    #[error("{what} sent an invalid response: {detail}")]
    BadResponse {
        /// Who answered.
        what: String,
        /// What was wrong with it, and the likely cause.
        detail: String,
    },

    /// The signed-in user is not the account's user.
    #[error(
        "signed in as `{got}`, but account `{account}` is for `{expected}`; tokens were not stored"
    )]
    UserMismatch {
        /// Account name.
        account: String,
        /// The account's configured user.
        expected: String,
        /// The user the token belongs to.
        got: String,
    },

    /// A token store could not be read or written.
    #[error("token store {store}: {detail}")]
    Store {
        /// Which store (e.g. a file path, or "keyring").
        store: String,
        /// What failed.
        detail: String,
        /// How to recover without losing anything.
        remedy: Option<Remedy>,
    },

    /// The interactive flow failed (listener, timeout, user declined …).
    #[error("login failed: {0}")]
    Flow(String),

    /// The sign-in did not complete in time (timeout, expired code or pending login).
    #[error("login failed: {reason}")]
    SignInTimedOut {
        /// Account name.
        account: String,
        /// What expired.
        reason: String,
        /// Whether a browser was to be opened on this machine (then the fix
        /// suggests signing in elsewhere).
        browser: bool,
    },

    /// A message would be sent as someone else than the account's mailbox.
    #[error("the {what} is {from}, but account mailbox is {user}; not sent")]
    SendAs {
        /// Which address (From header or -f).
        what: &'static str,
        /// The address.
        from: String,
        /// The account's mailbox.
        user: String,
    },

    /// Talking to a mail server failed (connect, TLS, login, or a command after it).
    #[error("{} failed: {}", .0.what, .0.failure)]
    Mail(Box<MailError>),

    /// Any other I/O failure.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// A failed exchange with a mail server, as [`Error::Mail`] carries it.
#[derive(Debug)]
pub struct MailError {
    /// What we were doing (`sending`, `fetch` …).
    pub what: &'static str,
    /// Which protocol.
    pub service: Service,
    /// What the server did, verbatim.
    pub failure: Failure,
    /// The catalog's cause and fix for the server's reply, when it knows it.
    pub diagnosis: Option<Diagnosis>,
}

/// Exit codes of the spec's command contract.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// Any other error.
    pub const ERROR: i32 = 1;
    /// Usage or config error.
    pub const USAGE: i32 = 2;
    /// Login required (no token, refresh token expired or revoked).
    pub const LOGIN_REQUIRED: i32 = 3;
    /// Provider or server unreachable.
    pub const UNREACHABLE: i32 = 4;
    /// Server refused authentication (`check`, `send`, `fetch`).
    pub const AUTH_REFUSED: i32 = 5;
}

impl Error {
    /// The process exit code this error maps to.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config { .. }
            | Error::NoConfig { .. }
            | Error::UnknownAccount { .. }
            | Error::Usage(_) => exit::USAGE,
            Error::LoginRequired { .. } => exit::LOGIN_REQUIRED,
            Error::Unreachable { .. } => exit::UNREACHABLE,
            Error::Mail(m) => mail_exit_code(&m.failure),
            _ => exit::ERROR,
        }
    }

    /// What the user can do about it, when we know.
    pub fn remedy(&self) -> Option<Remedy> {
        match self {
            Error::NoConfig { .. } => Some(Remedy::AddAccount),
            Error::UnknownAccount { known, .. } if known.is_empty() => Some(Remedy::AddAccount),
            Error::UnknownAccount { known, .. } => Some(Remedy::ChooseAccount {
                known: known.clone(),
            }),
            Error::LoginRequired {
                account, remedy, ..
            } => {
                let login = Remedy::Login {
                    account: account.clone(),
                };
                Some(match remedy {
                    Some(r) => r.clone().then(login),
                    None => login,
                })
            }
            Error::OAuth { diagnosis, .. } => diagnosis.as_ref().map(|d| d.remedy.clone()),
            Error::Mail(m) => m.diagnosis.as_ref().map(|d| d.remedy.clone()),
            Error::Store { remedy, .. } => remedy.clone(),
            Error::Unreachable { .. } => Some(Remedy::CheckNetwork),
            Error::SignInTimedOut {
                account, browser, ..
            } => Some(match browser {
                true => Remedy::LoginWithoutBrowser {
                    account: account.clone(),
                },
                false => Remedy::Login {
                    account: account.clone(),
                },
            }),
            Error::SendAs { user, from, .. } => Some(Remedy::Steps(format!(
                "send as {user}, or, if {user} has SendAs rights on {from} (Exchange: \
                 `Add-RecipientPermission -Identity {from} -Trustee {user} -AccessRights SendAs`), \
                 pass --allow-send-as; otherwise the server answers `554 5.2.252 SendAsDenied`"
            ))),
            Error::UserMismatch {
                account, expected, ..
            } => Some(Remedy::Steps(format!(
                "sign in as {expected} (use a private browser window if the browser picks another account), \
                 or change `user` of account `{account}`; a token for another user makes servers answer \
                 `535 5.7.3` / `NO AUTHENTICATE failed` / `SendAsDenied`"
            ))),
            _ => None,
        }
    }

    /// The cause behind the error, from the catalog, when it says more than the message.
    pub fn cause(&self) -> Option<&str> {
        match self {
            Error::OAuth {
                diagnosis: Some(d), ..
            } => Some(&d.cause),
            Error::Mail(m) => m.diagnosis.as_ref().map(|d| d.cause.as_str()),
            _ => None,
        }
    }

    /// An I/O failure while doing `context`.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// The exit code of a failed mail exchange: refused 5, unreachable or
/// temporarily failing 4 (both say "try again later"), else 1.
pub fn mail_exit_code(f: &Failure) -> i32 {
    match f {
        Failure::Refused { .. } => exit::AUTH_REFUSED,
        Failure::Unreachable(_) | Failure::Temporary { .. } => exit::UNREACHABLE,
        _ => exit::ERROR,
    }
}

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
