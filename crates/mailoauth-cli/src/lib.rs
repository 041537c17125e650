//! The `mailoauth` executable's code: the command line, the daemon and the proxy,
//! shells over the [`mailoauth`] library.
//!
//! - [`cli`]: clap grammar, one typed request per command, rendering and exit codes.
//! - [`daemon`]: background refresher and token server on a unix socket (tokio).
//! - [`proxy`]: local IMAP, POP3 and SMTP listeners for password-only clients,
//!   hosted by the daemon.
//!
//! Must not: hold token or protocol logic of its own — that lives in the library,
//! so Rust programs and the service get the same behaviour.

pub mod cli;
pub mod daemon;
pub mod proxy;
