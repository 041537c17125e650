//! The wire catalog: replies of Exchange Online, Gmail and Dovecot to a login or
//! the command after it → cause and remedy.
//!
//! Owns: the entries (most specific first) and the lookup. Must not: word a fix
//! for one front end.

use super::{Diagnosis, Fix, Fix::*};
use crate::providers::Account;
use crate::service::Service;

/// A known server reply (Exchange Online, Gmail, Dovecot) and what it means.
struct WireEntry {
    /// `imap`, `pop`, `smtp`, or "" for any.
    protocol: &'static str,
    /// Text the reply (or the decoded challenge) contains.
    text: &'static str,
    cause: &'static str,
    /// `{account}`, `{user}`, `{client_id}` are filled in.
    fix: &'static [Fix],
}

const fn w(
    protocol: &'static str,
    text: &'static str,
    cause: &'static str,
    fix: &'static [Fix],
) -> WireEntry {
    WireEntry {
        protocol,
        text,
        cause,
        fix,
    }
}

/// Most specific first.
const WIRE: &[WireEntry] = &[
    w(
        "imap",
        "User is authenticated but not connected",
        "the token was accepted, but its user has no access to the mailbox {user} (no mailbox permission, IMAP disabled for the mailbox, or no licence)",
        &[Say(
            "Exchange Online PowerShell: `Set-CASMailbox -Identity {user} -ImapEnabled $true`; for app-only access `Add-MailboxPermission -Identity {user} -User <service principal id> -AccessRights FullAccess`",
        )],
    ),
    w(
        "imap",
        "AUTHENTICATE failed",
        "Exchange refused the token: usually a token for the wrong audience (a Graph scope instead of https://outlook.office.com/IMAP.AccessAsUser.All), or `user=` is not the token's user, or (app-only) the app has no service principal / mailbox permission in Exchange",
        &[Inspect],
    ),
    w(
        "imap",
        "LOGIN failed",
        "password LOGIN was refused: basic authentication is off for this mailbox",
        &[Say(
            "use XOAUTH2 with a token from mailoauth in the client, or the mailoauth proxy for clients that only know passwords",
        )],
    ),
    w(
        "imap",
        "Invalid SASL argument",
        "the server could not parse the XOAUTH2 string",
        &[ReportBug],
    ),
    w(
        "pop",
        "Authentication failure",
        "the POP3 server refused the token (wrong audience or scope, another user, or POP disabled for the mailbox)",
        &[
            Inspect,
            Say("Exchange: `Set-CASMailbox -Identity {user} -PopEnabled $true`"),
        ],
    ),
    w(
        "smtp",
        "5.7.139",
        "SMTP AUTH is disabled for the tenant or the mailbox (even with OAuth)",
        &[Say(
            "Exchange Online PowerShell: `Set-CASMailbox -Identity {user} -SmtpClientAuthenticationDisabled $false` (the mailbox setting wins), or tenant-wide `Set-TransportConfig -SmtpClientAuthenticationDisabled $false`",
        )],
    ),
    w(
        "smtp",
        "SendAsDenied",
        "the From address is not the authenticated mailbox {user}",
        &[Say(
            "send as {user}, or have an admin run `Add-RecipientPermission -Identity <From address> -Trustee {user} -AccessRights SendAs`",
        )],
    ),
    w(
        "smtp",
        "5.2.252",
        "the From address is not the authenticated mailbox {user}",
        &[Say(
            "send as {user}, or have an admin run `Add-RecipientPermission -Identity <From address> -Trustee {user} -AccessRights SendAs`",
        )],
    ),
    w(
        "smtp",
        "5.7.3",
        "Exchange rejected the token: commonly the signed-in user differs from {user}, or the token lacks SMTP.Send",
        &[Inspect, AddService(Service::Smtp)],
    ),
    w(
        "smtp",
        "5.7.57",
        "the server wants authentication before MAIL FROM",
        &[Say(
            "make sure the client authenticates (AUTH XOAUTH2) before sending",
        )],
    ),
    w(
        "smtp",
        "4.7.66",
        "the server refuses TLS 1.0/1.1",
        &[Say(
            "mailoauth uses TLS 1.2+; a proxy in the path may downgrade",
        )],
    ),
    w(
        "smtp",
        "5.7.8",
        "Gmail did not accept the token (expired, wrong scope, or another user)",
        &[Inspect, Say("Gmail needs scope https://mail.google.com/")],
    ),
    w(
        "smtp",
        "5.5.2",
        "the server rejected the command line as too long",
        &[
            Say("long AUTH lines should use the two-step form"),
            ReportBug,
        ],
    ),
    w(
        "",
        "\"status\":\"400\"",
        "the server says the token is invalid for this request (Gmail: wrong scope or user)",
        &[Inspect, Say("Gmail needs scope https://mail.google.com/")],
    ),
    w(
        "",
        "\"status\":\"401\"",
        "the server says the token is invalid or expired",
        &[Refresh, Inspect],
    ),
    w(
        "",
        "AUTHENTICATIONFAILED",
        "the server refused the token (expired, wrong audience or scope, or another user than {user})",
        &[Inspect],
    ),
];

/// Look up a server reply (`protocol` is `imap`, `pop` or `smtp`); `challenge` is
/// the decoded SASL error challenge when there was one.
pub fn wire_reply(
    account: &Account,
    protocol: &str,
    reply: &str,
    challenge: Option<&str>,
) -> Option<Diagnosis> {
    let hay = format!("{reply} {}", challenge.unwrap_or(""));
    let found = WIRE
        .iter()
        .find(|e| (e.protocol.is_empty() || e.protocol == protocol) && hay.contains(e.text))?;
    Some(Diagnosis {
        cause: super::fill(account, found.cause),
        remedy: super::remedy(account, found.fix),
        login_required: false,
    })
}

/// Every text of the catalog, for checks that hold across entries.
#[cfg(test)]
pub(super) fn texts() -> Vec<&'static str> {
    WIRE.iter()
        .flat_map(|e| {
            std::iter::once(e.cause).chain(e.fix.iter().filter_map(|f| match f {
                Say(s) => Some(*s),
                _ => None,
            }))
        })
        .collect()
}
