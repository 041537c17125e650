//! The wire catalog: replies of Exchange Online, Gmail and Dovecot to a login or
//! the command after it → cause and remedy.
//!
//! Owns: the entries (most specific first), which provider's servers each one
//! explains, and the lookup. Must not: word a fix for one front end, or give one
//! provider's advice to an account of another (an Exchange checklist does not
//! help a Dovecot behind some other authorization server).

use super::{Diagnosis, Family, Fix, Fix::*, family};
use crate::providers::Account;
use crate::service::Service;

/// A known server reply (Exchange Online, Gmail, Dovecot) and what it means.
struct WireEntry {
    /// `imap`, `pop`, `smtp`, or "" for any.
    protocol: &'static str,
    /// Whose servers answer this way.
    family: Family,
    /// Text the reply (or the decoded challenge) contains.
    text: &'static str,
    cause: &'static str,
    /// `{account}`, `{user}`, `{client_id}` are filled in.
    fix: &'static [Fix],
}

const fn w(
    protocol: &'static str,
    family: Family,
    text: &'static str,
    cause: &'static str,
    fix: &'static [Fix],
) -> WireEntry {
    WireEntry {
        protocol,
        family,
        text,
        cause,
        fix,
    }
}

use Family::{Any, Exchange, Gmail};

/// Most specific first.
const WIRE: &[WireEntry] = &[
    w(
        "imap",
        Exchange,
        "User is authenticated but not connected",
        "the token was accepted, but its user has no access to the mailbox {user} (no mailbox permission, IMAP disabled for the mailbox, or no licence)",
        &[Say(
            "Exchange Online PowerShell: `Set-CASMailbox -Identity {user} -ImapEnabled $true`; for app-only access `Add-MailboxPermission -Identity {user} -User <service principal id> -AccessRights FullAccess`",
        )],
    ),
    w(
        "imap",
        Exchange,
        "AUTHENTICATE failed",
        "Exchange refused the token: usually a token for the wrong audience (a Graph scope instead of https://outlook.office.com/IMAP.AccessAsUser.All), or `user=` is not the token's user, or (app-only) the app has no service principal / mailbox permission in Exchange",
        &[Inspect],
    ),
    w(
        "imap",
        Exchange,
        "LOGIN failed",
        "password LOGIN was refused: basic authentication is off for this mailbox",
        &[Say(
            "use XOAUTH2 with a token from mailoauth in the client, or the mailoauth proxy for clients that only know passwords",
        )],
    ),
    w(
        "imap",
        Gmail,
        "Invalid SASL argument",
        "the server could not parse the XOAUTH2 string",
        &[ReportBug],
    ),
    w(
        "pop",
        Exchange,
        "Authentication failure",
        "the POP3 server refused the token (wrong audience or scope, another user, or POP disabled for the mailbox)",
        &[
            Inspect,
            Say("Exchange: `Set-CASMailbox -Identity {user} -PopEnabled $true`"),
        ],
    ),
    w(
        "smtp",
        Exchange,
        "5.7.139",
        "SMTP AUTH is disabled for the tenant or the mailbox (even with OAuth)",
        &[Say(
            "Exchange Online PowerShell: `Set-CASMailbox -Identity {user} -SmtpClientAuthenticationDisabled $false` (the mailbox setting wins), or tenant-wide `Set-TransportConfig -SmtpClientAuthenticationDisabled $false`",
        )],
    ),
    w(
        "smtp",
        Exchange,
        "SendAsDenied",
        "the From address is not the authenticated mailbox {user}",
        &[Say(
            "send as {user}, or have an admin run `Add-RecipientPermission -Identity <From address> -Trustee {user} -AccessRights SendAs`",
        )],
    ),
    w(
        "smtp",
        Exchange,
        "5.2.252",
        "the From address is not the authenticated mailbox {user}",
        &[Say(
            "send as {user}, or have an admin run `Add-RecipientPermission -Identity <From address> -Trustee {user} -AccessRights SendAs`",
        )],
    ),
    w(
        "smtp",
        Exchange,
        "5.7.3",
        "Exchange rejected the token: commonly the signed-in user differs from {user}, or the token lacks SMTP.Send",
        &[Inspect, AddService(Service::Smtp)],
    ),
    w(
        "smtp",
        Any,
        "5.7.57",
        "the server wants authentication before MAIL FROM",
        &[Say(
            "make sure the client authenticates (AUTH XOAUTH2) before sending",
        )],
    ),
    w(
        "smtp",
        Gmail,
        "5.7.8",
        "Gmail did not accept the token (expired, wrong scope, or another user)",
        &[Inspect, Say("Gmail needs scope https://mail.google.com/")],
    ),
    w(
        "smtp",
        Any,
        "5.5.2",
        "the server rejected the command line as too long",
        &[
            Say("long AUTH lines should use the two-step form"),
            ReportBug,
        ],
    ),
    w(
        "",
        Gmail,
        "\"status\":\"400\"",
        "the server says the token is invalid for this request (Gmail: wrong scope or user)",
        &[Inspect, Say("Gmail needs scope https://mail.google.com/")],
    ),
    w(
        "",
        Any,
        "\"status\":\"401\"",
        "the server says the token is not valid for this login: expired, without the scope this protocol needs, or for another user than {user}",
        &[Inspect, Refresh],
    ),
    w(
        "",
        Any,
        "AUTHENTICATIONFAILED",
        "the server refused the token (expired, wrong audience or scope, or another user than {user})",
        &[Inspect],
    ),
    // What any other server says when it refuses (Dovecot: `-ERR [AUTH]`, `535 5.7.8`).
    w(
        "pop",
        Any,
        "-ERR",
        "the POP3 server refused the token (expired, wrong audience or scope, or another user than {user})",
        &[Inspect],
    ),
    w(
        "smtp",
        Any,
        "535",
        "the SMTP server refused the token (expired, wrong audience or scope, or another user than {user})",
        &[Inspect],
    ),
];

/// Temporary failures a provider explains itself; any other gets [`temporary`]'s
/// generic answer.
const TEMPORARY: &[WireEntry] = &[
    w(
        "imap",
        Exchange,
        "Request is throttled",
        "Exchange Online is throttling this mailbox (too many connections or commands at once; it allows about 20 IMAP connections per mailbox)",
        &[
            Say(
                "wait the backoff time the reply suggests, and close other clients' idle connections to {user}",
            ),
            RetryLater,
        ],
    ),
    w(
        "smtp",
        Exchange,
        "4.7.66",
        "the server refuses TLS 1.0/1.1",
        &[Say(
            "mailoauth uses TLS 1.2+; a proxy in the path may downgrade",
        )],
    ),
];

/// Look up a server reply (`protocol` is `imap`, `pop` or `smtp`); `challenge` is
/// the decoded SASL error challenge when there was one. Only entries for the
/// account's provider (or any server) apply.
pub fn wire_reply(
    account: &Account,
    protocol: &str,
    reply: &str,
    challenge: Option<&str>,
) -> Option<Diagnosis> {
    let hay = format!("{reply} {}", challenge.unwrap_or(""));
    find(WIRE, account, protocol, &hay).map(|e| diagnosis(account, e))
}

/// A temporary failure of `step`: the provider's explanation when the catalog
/// has one, else "retry later" — never a refusal's advice, since nothing about
/// the token or the account is wrong.
pub fn temporary(account: &Account, protocol: &str, reply: &str, step: &str) -> Diagnosis {
    if let Some(e) = find(TEMPORARY, account, protocol, reply) {
        return diagnosis(account, e);
    }
    let login = matches!(step, "AUTH" | "AUTHENTICATE");
    Diagnosis {
        cause: if login {
            "the server's authentication backend is unavailable: a temporary failure at the server, \
             not a problem with the token or the account"
                .into()
        } else {
            format!(
                "the server reports a temporary failure at {step}, not a problem with the token"
            )
        },
        remedy: super::remedy(account, &[RetryLater]),
        login_required: false,
    }
}

fn find<'a>(
    entries: &'a [WireEntry],
    account: &Account,
    protocol: &str,
    hay: &str,
) -> Option<&'a WireEntry> {
    let service = match protocol {
        "imap" => Some(Service::Imap),
        "pop" => Some(Service::Pop),
        "smtp" => Some(Service::Smtp),
        _ => None,
    };
    let theirs = family(account, service);
    entries.iter().find(|e| {
        (e.protocol.is_empty() || e.protocol == protocol)
            && (e.family == Any || e.family == theirs)
            && hay.contains(e.text)
    })
}

fn diagnosis(account: &Account, e: &WireEntry) -> Diagnosis {
    Diagnosis {
        cause: super::fill(account, e.cause),
        remedy: super::remedy(account, e.fix),
        login_required: false,
    }
}

/// Every text of the catalog, for checks that hold across entries.
#[cfg(test)]
pub(super) fn texts() -> Vec<&'static str> {
    WIRE.iter()
        .chain(TEMPORARY)
        .flat_map(|e| {
            std::iter::once(e.cause).chain(e.fix.iter().filter_map(|f| match f {
                Say(s) => Some(*s),
                _ => None,
            }))
        })
        .collect()
}
