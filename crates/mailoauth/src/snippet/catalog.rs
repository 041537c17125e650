//! The clients there is a snippet for: their names, the spellings people
//! type, the reason to pick each, and the folders Exchange lists that hold no
//! mail (left out of sync snippets).
//!
//! Owns: the catalog as data. Must not: render anything but its own listing.

use std::fmt::Write as _;

/// One client we have a snippet for.
#[derive(Debug, Clone, Copy)]
pub struct ClientEntry {
    /// The name `snippet NAME CLIENT` prints it under.
    pub name: &'static str,
    /// Other spellings people type for it.
    pub aliases: &'static [&'static str],
    /// One line: why someone would pick it.
    pub why: &'static str,
}

/// Every client, in the order `snippet NAME` lists them.
pub const CATALOG: &[ClientEntry] = &[
    ClientEntry {
        name: "mbsync",
        aliases: &["isync"],
        why: "two-way IMAP ⇄ Maildir sync, fast; Exchange's non-mail folders left out",
    },
    ClientEntry {
        name: "offlineimap",
        aliases: &["offlineimap3"],
        why: "two-way IMAP ⇄ Maildir sync in Python; Exchange's non-mail folders left out",
    },
    ClientEntry {
        name: "getmail",
        aliases: &["getmail6"],
        why: "one-way download of new IMAPS mail into a Maildir (cron-friendly)",
    },
    ClientEntry {
        name: "fetchmail",
        aliases: &[],
        why: "classic POP3/IMAP downloader handing mail to a local MTA; through the proxy (no OAuth of its own)",
    },
    ClientEntry {
        name: "msmtp",
        aliases: &[],
        why: "sendmail-compatible SMTP client for scripts, cron and mail readers",
    },
    ClientEntry {
        name: "neomutt",
        aliases: &[],
        why: "terminal mail reader (IMAP and SMTP), the actively extended mutt",
    },
    ClientEntry {
        name: "mutt",
        aliases: &[],
        why: "terminal mail reader (IMAP and SMTP), OAUTHBEARER and XOAUTH2",
    },
    ClientEntry {
        name: "aerc",
        aliases: &[],
        why: "terminal mail reader with tabs and an embedded terminal",
    },
    ClientEntry {
        name: "s-nail",
        aliases: &["snail", "mailx", "s-nail-mailx"],
        why: "POSIX mailx: read IMAP and send from shell scripts",
    },
    ClientEntry {
        name: "git-send-email",
        aliases: &[
            "git",
            "git-email",
            "send-email",
            "sendemail",
            "git-sendemail",
        ],
        why: "send patches with `git send-email` through `mailoauth send`",
    },
    ClientEntry {
        name: "curl",
        aliases: &[],
        why: "one command to list an IMAP folder, e.g. in a health check",
    },
    ClientEntry {
        name: "python",
        aliases: &["python3", "imaplib"],
        why: "a Python imaplib script to start your own automation from",
    },
];

/// Names of the clients we have a snippet for (without aliases).
pub const CLIENTS: &[&str] = &[
    "mbsync",
    "offlineimap",
    "getmail",
    "fetchmail",
    "msmtp",
    "neomutt",
    "mutt",
    "aerc",
    "s-nail",
    "git-send-email",
    "curl",
    "python",
];

/// The catalog entry `client` names (its name or any alias, any case).
pub fn lookup(client: &str) -> Option<&'static ClientEntry> {
    let c = client.trim().to_ascii_lowercase();
    CATALOG
        .iter()
        .find(|e| e.name == c || e.aliases.contains(&c.as_str()))
}

/// The clients and the reason to pick each, one per line (for `snippet NAME`).
pub fn listing(account: &str) -> String {
    let mut out = format!("clients with a snippet (`mailoauth snippet {account} CLIENT`):\n");
    let width = CATALOG.iter().map(|e| e.name.len()).max().unwrap_or(0);
    for e in CATALOG {
        let _ = write!(out, "  {:width$}  {}", e.name, e.why);
        if !e.aliases.is_empty() {
            let _ = write!(out, " (also: {})", e.aliases.join(", "));
        }
        out.push('\n');
    }
    out
}

/// Folders Exchange Online lists over IMAP that hold no mail (calendar items,
/// contacts, tasks … as IMAP messages a mail client cannot use). Each is left out
/// with its subfolders for Microsoft accounts.
pub const EXCHANGE_NON_MAIL: &[&str] = &[
    "Calendar",
    "Contacts",
    "Tasks",
    "Journal",
    "Notes",
    "Sync Issues",
    "Conversation History",
    "Conversation Action Settings",
    "Quick Step Settings",
    "RSS Feeds",
    "RSS Subscriptions",
    "Social Activity Notifications",
    "Suggested Contacts",
    "Yammer Root",
    "Files",
    "ExternalContacts",
    "PersonMetadata",
    "Outbox",
];

/// True when `folder` (with `/` as separator) is one of [`EXCHANGE_NON_MAIL`] or inside one.
pub fn is_exchange_non_mail(folder: &str) -> bool {
    EXCHANGE_NON_MAIL.iter().any(|n| {
        folder == *n
            || folder
                .strip_prefix(n)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}
