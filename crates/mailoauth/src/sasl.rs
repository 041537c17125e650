//! SASL initial responses for bearer tokens: XOAUTH2 and OAUTHBEARER (RFC 7628).
//!
//! Owns: the exact byte layout of both mechanisms. Must not: talk to a server.

use base64::Engine as _;

use crate::providers::{Account, Server};

/// A bearer-token SASL mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// XOAUTH2 (Gmail, Microsoft, Dovecot).
    Xoauth2,
    /// OAUTHBEARER (RFC 7628).
    Oauthbearer,
}

impl Mechanism {
    /// Parse the lower-case name used on the command line and in the daemon protocol.
    pub fn from_name(name: &str) -> Option<Mechanism> {
        match name {
            "xoauth2" => Some(Mechanism::Xoauth2),
            "oauthbearer" => Some(Mechanism::Oauthbearer),
            _ => None,
        }
    }

    /// The lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Xoauth2 => "xoauth2",
            Mechanism::Oauthbearer => "oauthbearer",
        }
    }
}

/// The base64 initial response of `mech` for `account`; OAUTHBEARER names
/// `server` (the account's IMAP server when `None` is given and it has one).
pub fn initial_response(
    mech: Mechanism,
    account: &Account,
    server: Option<&Server>,
    token: &str,
) -> String {
    match mech {
        Mechanism::Xoauth2 => xoauth2(&account.user, token),
        Mechanism::Oauthbearer => {
            let s = server.or(account.imap.as_ref());
            oauthbearer(
                &account.user,
                s.map(|s| s.host.as_str()),
                s.map(|s| s.port),
                token,
            )
        }
    }
}

/// XOAUTH2: `user=U^Aauth=Bearer T^A^A`, base64.
pub fn xoauth2(user: &str, token: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(format!("user={user}\x01auth=Bearer {token}\x01\x01"))
}

/// OAUTHBEARER (RFC 7628): `n,a=U,^Ahost=H^Aport=P^Aauth=Bearer T^A^A`, base64.
/// `host`/`port` are optional in the RFC; servers such as Gmail accept them absent.
pub fn oauthbearer(user: &str, host: Option<&str>, port: Option<u16>, token: &str) -> String {
    // RFC 5801 gs2 saslname: ',' and '=' in the authzid must be escaped.
    let authzid = user.replace('=', "=3D").replace(',', "=2C");
    let mut s = format!("n,a={authzid},\x01");
    if let Some(h) = host {
        s.push_str(&format!("host={h}\x01"));
    }
    if let Some(p) = port {
        s.push_str(&format!("port={p}\x01"));
    }
    s.push_str(&format!("auth=Bearer {token}\x01\x01"));
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(s: &str) -> String {
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(s).unwrap()).unwrap()
    }

    #[test]
    fn xoauth2_layout() {
        assert_eq!(
            decode(&xoauth2("a@b.c", "T0K")),
            "user=a@b.c\x01auth=Bearer T0K\x01\x01"
        );
    }

    #[test]
    fn oauthbearer_layout() {
        assert_eq!(
            decode(&oauthbearer("a@b.c", Some("imap.x"), Some(993), "T")),
            "n,a=a@b.c,\x01host=imap.x\x01port=993\x01auth=Bearer T\x01\x01"
        );
        assert_eq!(
            decode(&oauthbearer("a,=b", None, None, "T")),
            "n,a=a=2C=3Db,\x01auth=Bearer T\x01\x01"
        );
    }
}
