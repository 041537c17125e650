//! Ready-to-paste configuration for mail clients, filled in from an account.
//!
//! Owns: one template per client, each making the client ask `mailoauth token`
//! for a fresh access token on every connection (never the refresh token: a
//! client that stores rotated refresh tokens itself — or, like offlineimap3,
//! fails to — would fight the store). Must not: print secrets.

use std::fmt::Write as _;

use crate::config::TlsMode;
use crate::providers::{Account, Server};

/// Clients we have a snippet for.
pub const CLIENTS: &[&str] = &[
    "mbsync",
    "msmtp",
    "offlineimap",
    "neomutt",
    "aerc",
    "curl",
    "python",
];

fn need<'a>(s: Option<&'a Server>, what: &str, account: &Account) -> Result<&'a Server, String> {
    s.ok_or_else(|| {
        format!(
            "account `{}` has no {what} server; set `{what} = {{ host = … }}`",
            account.name
        )
    })
}

fn implicit(s: &Server) -> bool {
    s.tls == TlsMode::Implicit
}

/// The snippet for `client`, or why there is none.
pub fn render(account: &Account, client: &str, exe: &str) -> Result<String, String> {
    let a = account;
    let cmd = format!("{exe} token {}", a.name);
    let ca = a.ca_file.as_ref().map(|p| p.display().to_string());
    let mut out = String::new();
    match client {
        "mbsync" => {
            let i = need(a.imap.as_ref(), "imap", a)?;
            let _ = writeln!(
                out,
                "# ~/.mbsyncrc — needs a Cyrus SASL XOAUTH2 plugin (Debian: libsasl2-modules-kdexoauth2)"
            );
            let _ = writeln!(
                out,
                "IMAPAccount {}\nHost {}\nPort {}\nUser {}",
                a.name, i.host, i.port, a.user
            );
            let _ = writeln!(out, "PassCmd \"{cmd}\"\nAuthMechs XOAUTH2");
            let _ = writeln!(out, "# isync 1.4 spells it SSLType, 1.5 TLSType");
            let _ = writeln!(
                out,
                "SSLType {}",
                if implicit(i) { "IMAPS" } else { "STARTTLS" }
            );
            if let Some(ca) = &ca {
                let _ = writeln!(out, "CertificateFile {ca}");
            }
            let _ = writeln!(
                out,
                "\nIMAPStore {n}-remote\nAccount {n}\n\nMaildirStore {n}-local\nPath ~/Mail/{n}/\nInbox ~/Mail/{n}/INBOX\nSubFolders Verbatim\n\n\
                 Channel {n}\nFar :{n}-remote:\nNear :{n}-local:\nPatterns *\nCreate Near\nSyncState *",
                n = a.name
            );
        }
        "msmtp" => {
            let s = need(a.smtp.as_ref(), "smtp", a)?;
            let _ = writeln!(
                out,
                "# ~/.config/msmtp/config\naccount {}\nhost {}\nport {}",
                a.name, s.host, s.port
            );
            let _ = writeln!(
                out,
                "tls on\ntls_starttls {}",
                if implicit(s) { "off" } else { "on" }
            );
            if let Some(ca) = &ca {
                let _ = writeln!(out, "tls_trust_file {ca}");
            }
            let _ = writeln!(
                out,
                "auth xoauth2\nuser {}\nfrom {}\npasswordeval \"{cmd}\"",
                a.user, a.user
            );
        }
        "offlineimap" => {
            let i = need(a.imap.as_ref(), "imap", a)?;
            let _ = writeln!(
                out,
                "# ~/.offlineimaprc — offlineimap3 asks mailoauth for an access token on every connection;\n\
                 # it never sees the refresh token, so provider-side rotation cannot break it.\n\
                 [general]\naccounts = {n}\n\n[Account {n}]\nlocalrepository = {n}-local\nremoterepository = {n}-remote\n\n\
                 [Repository {n}-local]\ntype = Maildir\nlocalfolders = ~/Mail/{n}\n\n\
                 [Repository {n}-remote]\ntype = IMAP\nremotehost = {h}\nremoteport = {p}\nremoteuser = {u}\n\
                 ssl = {ssl}\nstarttls = {st}\nsslcacertfile = {ca}\nauth_mechanisms = XOAUTH2\n\
                 oauth2_access_token_eval = __import__(\"subprocess\").check_output([\"{exe}\", \"token\", \"{n}\"]).decode().strip()",
                n = a.name,
                h = i.host,
                p = i.port,
                u = a.user,
                ssl = if implicit(i) { "yes" } else { "no" },
                st = if implicit(i) { "no" } else { "yes" },
                ca = ca
                    .as_deref()
                    .unwrap_or("/etc/ssl/certs/ca-certificates.crt"),
            );
        }
        "neomutt" => {
            let i = need(a.imap.as_ref(), "imap", a)?;
            let _ = writeln!(out, "# neomuttrc\nset imap_user = \"{}\"", a.user);
            let _ = writeln!(
                out,
                "set folder = \"{}://{}:{}/\"",
                if implicit(i) { "imaps" } else { "imap" },
                i.host,
                i.port
            );
            let _ = writeln!(
                out,
                "set spoolfile = \"+INBOX\"\nset imap_authenticators = \"xoauth2\""
            );
            let _ = writeln!(out, "set imap_oauth_refresh_command = \"{cmd}\"");
            if let Some(s) = &a.smtp {
                let _ = writeln!(
                    out,
                    "set smtp_url = \"{}://{}@{}:{}/\"",
                    if implicit(s) { "smtps" } else { "smtp" },
                    a.user,
                    s.host,
                    s.port
                );
                let _ = writeln!(
                    out,
                    "set smtp_authenticators = \"xoauth2\"\nset smtp_oauth_refresh_command = \"{cmd}\""
                );
                let _ = writeln!(out, "set from = \"{}\"", a.user);
            }
            let _ = writeln!(out, "set ssl_starttls = yes\nset ssl_force_tls = yes");
            if let Some(ca) = &ca {
                // GnuTLS builds (Debian's) read trusted CAs from the first, OpenSSL builds from the second.
                let _ = writeln!(
                    out,
                    "set ssl_ca_certificates_file = \"{ca}\"\nset certificate_file = \"{ca}\""
                );
            }
        }
        "aerc" => {
            let i = need(a.imap.as_ref(), "imap", a)?;
            let _ = writeln!(out, "# ~/.config/aerc/accounts.conf\n[{}]", a.name);
            let scheme = if implicit(i) { "imaps" } else { "imap" };
            let _ = writeln!(
                out,
                "source = {scheme}+xoauth2://{}@{}:{}",
                a.user.replace('@', "%40"),
                i.host,
                i.port
            );
            let _ = writeln!(out, "source-cred-cmd = {cmd}");
            if let Some(s) = &a.smtp {
                let scheme = if implicit(s) { "smtps" } else { "smtp" };
                let _ = writeln!(
                    out,
                    "outgoing = {scheme}+xoauth2://{}@{}:{}",
                    a.user.replace('@', "%40"),
                    s.host,
                    s.port
                );
                let _ = writeln!(out, "outgoing-cred-cmd = {cmd}");
            }
            let _ = writeln!(out, "from = {}", a.user);
        }
        "curl" => {
            let i = need(a.imap.as_ref(), "imap", a)?;
            let cacert = ca
                .as_ref()
                .map(|c| format!(" --cacert {c}"))
                .unwrap_or_default();
            let (scheme, tls) = if implicit(i) {
                ("imaps", "")
            } else {
                ("imap", " --ssl-reqd")
            };
            let _ = writeln!(
                out,
                "# list INBOX with curl (it picks XOAUTH2 or OAUTHBEARER itself)"
            );
            let _ = writeln!(
                out,
                "curl{tls}{cacert} --user '{}' --oauth2-bearer \"$({cmd})\" '{scheme}://{}:{}/INBOX'",
                a.user, i.host, i.port
            );
        }
        "python" => {
            let i = need(a.imap.as_ref(), "imap", a)?;
            let ctx = match &ca {
                Some(c) => format!("ssl.create_default_context(cafile={c:?})"),
                None => "ssl.create_default_context()".to_owned(),
            };
            let connect = if implicit(i) {
                format!(
                    "imap = imaplib.IMAP4_SSL({:?}, {}, ssl_context=ctx)",
                    i.host, i.port
                )
            } else {
                format!(
                    "imap = imaplib.IMAP4({:?}, {})\nimap.starttls(ssl_context=ctx)",
                    i.host, i.port
                )
            };
            let _ = writeln!(
                out,
                "# Python imaplib with XOAUTH2; the token comes fresh from mailoauth on every run.\n\
                 import imaplib, ssl, subprocess\n\n\
                 token = subprocess.check_output([{exe:?}, \"token\", {n:?}], text=True).strip()\n\
                 ctx = {ctx}\n{connect}\n\
                 imap.authenticate(\"XOAUTH2\", lambda _: f\"user={u}\\x01auth=Bearer {{token}}\\x01\\x01\".encode())\n\
                 status, data = imap.select(\"INBOX\")\nprint(status, data[0].decode(), \"messages in INBOX\")\nimap.logout()",
                n = a.name,
                u = a.user,
            );
        }
        other => {
            return Err(format!(
                "no snippet for `{other}`; known: {}",
                CLIENTS.join(", ")
            ));
        }
    }
    Ok(out)
}
