//! Entry points for the fuzz targets in `fuzz/` and for the stable test that
//! replays their corpus and every crash input (`tests/fuzz_regressions.rs`).
//! Not an API: hidden from the docs, and free to change with the targets.
//!
//! Owns: feeding arbitrary bytes to each parser that reads a peer's or a user's
//! bytes, the way the real caller does, and the invariants worth checking on
//! the way — a panic here is a finding: a token or secret in an error text or a
//! sent line, a round trip that does not hold, a reply split wrongly. Must not:
//! change what a parser does (the wrappers only drive them), or reach the
//! network beyond a loopback peer of its own.

mod inputs;
mod proto;
mod session;

pub use inputs::{config, ipc, redirect_request, sasl, token_endpoint, token_record};
pub use proto::{imap_login, pop_login, smtp_login};
pub use session::{imap_session, pop_session, smtp_session};

use crate::config::Config;
use crate::providers::Account;

/// The access token every target logs in with: a value no parser makes up, so
/// finding it in an error or a plain line is a leak.
pub const TOKEN: &str = "fuzz-TOKEN.eyJzZWNyZXQiOnRydWV9.Zz9-leak-me-not";

/// A custom account whose servers are plain-text on 127.0.0.1:`port` (all
/// three protocols), with a small `max_message_size` so the limit is reached.
pub fn account(port: u16) -> Account {
    let text = format!(
        "[accounts.fuzz]\n\
         provider = \"custom\"\n\
         user = \"alice@example.com\"\n\
         client_id = \"fuzz-client\"\n\
         authorize_url = \"https://idp.example.com/authorize\"\n\
         token_url = \"https://idp.example.com/token\"\n\
         scopes = [\"mail\"]\n\
         max_message_size = {MAX_MESSAGE}\n\
         imap = {{ host = \"127.0.0.1\", port = {port}, tls = \"none\" }}\n\
         pop = {{ host = \"127.0.0.1\", port = {port}, tls = \"none\" }}\n\
         smtp = {{ host = \"127.0.0.1\", port = {port}, tls = \"none\" }}\n"
    );
    let c = Config::parse(&text, std::path::Path::new("/fuzz/config.toml"))
        .expect("the fuzz account parses");
    crate::providers::resolve(&c, "fuzz").expect("the fuzz account resolves")
}

/// `max_message_size` of [`account`]: small, so oversized messages are common.
pub const MAX_MESSAGE: u64 = 4096;

/// The secrets of a login to `service` (the token and both SASL initial
/// responses) that `input` does not hold: a server that says the token itself
/// may see it repeated in our error, which is no leak of ours.
fn secrets(account: &Account, service: crate::config::Service, input: &[u8]) -> Vec<String> {
    let server = crate::mail::server_for(account, service);
    let ir = |m| crate::sasl::initial_response(m, account, server, TOKEN);
    let all = [
        TOKEN.to_owned(),
        ir(crate::sasl::Mechanism::Xoauth2),
        ir(crate::sasl::Mechanism::Oauthbearer),
    ];
    all.into_iter()
        .filter(|s| !input.windows(s.len()).any(|w| w == s.as_bytes()))
        .collect()
}

/// Panics when `text` (an error, a sent line, a diagnosis) holds one of `secrets`.
fn assert_no_secret(what: &str, text: &str, secrets: &[String]) {
    for s in secrets {
        assert!(
            !text.contains(s),
            "{what} leaks a secret ({} bytes): {text:?}",
            s.len()
        );
    }
}

/// `data` as lines, each with the `\n` that ended it (the last may lack one).
fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split_inclusive(|&b| b == b'\n')
}
