//! Ready-to-paste configuration for mail clients, filled in from an account.
//!
//! Owns: one template per client, each making the client ask `mailoauth token`
//! for a fresh access token on every connection (never the refresh token: a
//! client that stores rotated refresh tokens itself — or, like offlineimap3,
//! fails to — would fight the store), or, for a client without OAuth, pointing it
//! at the account's proxy; the catalog of clients with their common spellings and
//! the reason to pick each; quoting every value for the shell and for the client's
//! own file syntax. Must not: print secrets, or put a token on a command line
//! (where `ps` shows it).

use std::fmt::Write as _;

use crate::config::{ProviderKind, ProxyConfig, TlsMode};
use crate::providers::{Account, Server};

mod catalog;
mod quote;

pub use catalog::*;

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

/// The snippet for `client` (a name or alias from [`CATALOG`]), or why there is
/// none. `proxy` is the account's proxy table, for clients that go through it;
/// `exe` the path of the `mailoauth` binary the snippet runs.
pub fn render(
    account: &Account,
    proxy: Option<&ProxyConfig>,
    client: &str,
    exe: &str,
) -> Result<String, String> {
    let entry = lookup(client).ok_or_else(|| {
        format!(
            "no snippet for `{client}`; known: {} (run `mailoauth snippet {}` for what each is for)",
            CLIENTS.join(", "),
            account.name
        )
    })?;
    let a = account;
    // The command every client runs: quoted for the shell that runs it.
    let cmd = format!("{} token {}", quote::sh(exe), quote::sh(&a.name));
    let ca = a.ca_file.as_ref().map(|p| p.display().to_string());
    let microsoft = a.provider == ProviderKind::Microsoft;
    let mut out = String::new();
    match entry.name {
        "mbsync" => {
            let i = need(a.imap.as_ref(), "imap", a)?;
            let q = quote::word;
            let _ = writeln!(
                out,
                "# ~/.mbsyncrc — needs a Cyrus SASL XOAUTH2 plugin (Debian: libsasl2-modules-kdexoauth2);\n\
                 # create the Maildir first: mkdir -p ~/Mail/{}",
                a.name
            );
            let _ = writeln!(
                out,
                "IMAPAccount {}\nHost {}\nPort {}\nUser {}",
                q(&a.name),
                q(&i.host),
                i.port,
                q(&a.user)
            );
            let _ = writeln!(out, "PassCmd {}\nAuthMechs XOAUTH2", quote::dq(&cmd));
            let _ = writeln!(out, "# isync 1.4 spells it SSLType, 1.5 TLSType");
            let _ = writeln!(
                out,
                "SSLType {}",
                if implicit(i) { "IMAPS" } else { "STARTTLS" }
            );
            if let Some(ca) = &ca {
                let _ = writeln!(out, "CertificateFile {}", q(ca));
            }
            let n = &a.name;
            let _ = writeln!(
                out,
                "\nIMAPStore {r}\nAccount {acct}\n\nMaildirStore {l}\nPath {path}\nInbox {inbox}\n\
                 # Verbatim: server folder a/b is the directory a/b and a.b stays a.b, so names\n\
                 # with / and . keep their hierarchy and cannot collide.\nSubFolders Verbatim\n\n\
                 Channel {c}\nFar :{r}:\nNear :{l}:",
                r = q(&format!("{n}-remote")),
                l = q(&format!("{n}-local")),
                acct = q(n),
                c = q(n),
                path = q(&format!("~/Mail/{n}/")),
                inbox = q(&format!("~/Mail/{n}/INBOX")),
            );
            if microsoft {
                let _ = writeln!(
                    out,
                    "# Exchange lists calendars, contacts, tasks … as IMAP folders: leave them out."
                );
                let mut p = String::from("Patterns *");
                for f in EXCHANGE_NON_MAIL {
                    let _ = write!(p, " !{} !{}", q(f), q(&format!("{f}/*")));
                }
                let _ = writeln!(out, "{p}");
            } else {
                let _ = writeln!(out, "Patterns *");
            }
            let _ = writeln!(out, "Create Near\nSyncState *");
        }
        "msmtp" => {
            let s = need(a.smtp.as_ref(), "smtp", a)?;
            let q = quote::msmtp;
            let _ = writeln!(
                out,
                "# ~/.config/msmtp/config\naccount {}\nhost {}\nport {}",
                q(&a.name),
                q(&s.host),
                s.port
            );
            let _ = writeln!(
                out,
                "tls on\ntls_starttls {}",
                if implicit(s) { "off" } else { "on" }
            );
            if let Some(ca) = &ca {
                let _ = writeln!(out, "tls_trust_file {}", q(ca));
            }
            let _ = writeln!(
                out,
                "auth xoauth2\nuser {u}\nfrom {u}\npasswordeval {}",
                q(&cmd),
                u = q(&a.user),
            );
        }
        "offlineimap" => {
            let i = need(a.imap.as_ref(), "imap", a)?;
            let n = &a.name;
            let _ = writeln!(
                out,
                "# ~/.offlineimaprc — offlineimap3 asks mailoauth for an access token on every connection;\n\
                 # it never sees the refresh token, so provider-side rotation cannot break it.\n\
                 [general]\naccounts = {n}\n\n[Account {n}]\nlocalrepository = {n}-local\nremoterepository = {n}-remote\n\n\
                 [Repository {n}-local]\ntype = Maildir\nlocalfolders = ~/Mail/{n}\n\
                 # / keeps server folder a/b as the directory a/b (a.b stays a.b); offlineimap still names its\n\
                 # own state files with . for /, so folders a/b and a.b side by side are beyond it\nsep = /\n\n\
                 [Repository {n}-remote]\ntype = IMAP\nremotehost = {h}\nremoteport = {p}\nremoteuser = {u}\n\
                 ssl = {ssl}\nstarttls = {st}\nsslcacertfile = {ca}\nauth_mechanisms = XOAUTH2\n\
                 oauth2_access_token_eval = __import__(\"subprocess\").check_output([{exe}, \"token\", {name}]).decode().strip()",
                h = i.host,
                p = i.port,
                u = a.user,
                ssl = if implicit(i) { "yes" } else { "no" },
                st = if implicit(i) { "no" } else { "yes" },
                ca = ca
                    .as_deref()
                    .unwrap_or("/etc/ssl/certs/ca-certificates.crt"),
                exe = quote::py(exe),
                name = quote::py(n),
            );
            if microsoft {
                let list: Vec<String> = EXCHANGE_NON_MAIL.iter().map(|f| quote::py(f)).collect();
                let _ = writeln!(
                    out,
                    "# Exchange lists calendars, contacts, tasks … as IMAP folders: leave them out.\n\
                     folderfilter = lambda f, skip=[{l}]: not any(f == s or f.startswith(s + \"/\") for s in skip)",
                    l = list.join(", ")
                );
            }
        }
        "neomutt" | "mutt" => {
            let i = need(a.imap.as_ref(), "imap", a)?;
            let q = quote::mutt;
            let mutt = entry.name == "mutt";
            let _ = writeln!(
                out,
                "# {} — {} runs mailoauth for a fresh token at every login\nset imap_user = {}",
                if mutt {
                    "~/.muttrc (mutt 2.2)"
                } else {
                    "neomuttrc"
                },
                entry.name,
                q(&a.user)
            );
            let _ = writeln!(
                out,
                "set folder = {}",
                q(&format!(
                    "{}://{}:{}/",
                    if implicit(i) { "imaps" } else { "imap" },
                    i.host,
                    i.port
                ))
            );
            let _ = writeln!(out, "set spoolfile = '+INBOX'");
            if mutt {
                let _ = writeln!(
                    out,
                    "# mutt uses the first of these the server offers (Exchange Online offers only XOAUTH2)\n\
                     set imap_authenticators = 'oauthbearer:xoauth2'"
                );
            } else {
                let _ = writeln!(out, "set imap_authenticators = 'xoauth2'");
            }
            let _ = writeln!(out, "set imap_oauth_refresh_command = {}", q(&cmd));
            if let Some(s) = &a.smtp {
                let _ = writeln!(
                    out,
                    "set smtp_url = {}",
                    q(&format!(
                        "{}://{}@{}:{}/",
                        if implicit(s) { "smtps" } else { "smtp" },
                        quote::url_user(&a.user),
                        s.host,
                        s.port
                    ))
                );
                if mutt {
                    let _ = writeln!(
                        out,
                        "# xoauth2 first: mutt puts OAUTHBEARER's long initial response on the AUTH line\n\
                         # itself, which servers with a line limit (Dovecot, Gmail) refuse\n\
                         set smtp_authenticators = 'xoauth2:oauthbearer'"
                    );
                } else {
                    let _ = writeln!(out, "set smtp_authenticators = 'xoauth2'");
                }
                let _ = writeln!(out, "set smtp_oauth_refresh_command = {}", q(&cmd));
                let _ = writeln!(out, "set from = {}", q(&a.user));
            }
            let _ = writeln!(out, "set ssl_starttls = yes\nset ssl_force_tls = yes");
            if let Some(ca) = &ca {
                if mutt {
                    let _ = writeln!(out, "set ssl_ca_certificates_file = {}", q(ca));
                } else {
                    // GnuTLS builds (Debian's) read trusted CAs from the first, OpenSSL builds from the second.
                    let _ = writeln!(
                        out,
                        "set ssl_ca_certificates_file = {c}\nset certificate_file = {c}",
                        c = q(ca)
                    );
                }
            }
        }
        "aerc" => {
            let i = need(a.imap.as_ref(), "imap", a)?;
            let _ = writeln!(out, "# ~/.config/aerc/accounts.conf\n[{}]", a.name);
            let scheme = if implicit(i) { "imaps" } else { "imap" };
            let _ = writeln!(
                out,
                "source = {scheme}+xoauth2://{}@{}:{}",
                quote::url_user(&a.user),
                i.host,
                i.port
            );
            let _ = writeln!(out, "source-cred-cmd = {cmd}");
            if let Some(s) = &a.smtp {
                let scheme = if implicit(s) { "smtps" } else { "smtp" };
                let _ = writeln!(
                    out,
                    "outgoing = {scheme}+xoauth2://{}@{}:{}",
                    quote::url_user(&a.user),
                    s.host,
                    s.port
                );
                let _ = writeln!(out, "outgoing-cred-cmd = {cmd}");
            }
            let _ = writeln!(out, "from = {}", a.user);
        }
        "getmail" => {
            let i = need(a.imap.as_ref(), "imap", a)?;
            if !implicit(i) {
                return Err(format!(
                    "getmail6 speaks IMAP over TLS from the first byte only (no STARTTLS), and account `{}`'s \
                     IMAP server uses STARTTLS; set `imap = {{ host = \"{}\", port = 993, tls = \"implicit\" }}` \
                     if the server offers it, or use the `fetchmail` snippet, which goes through the proxy",
                    a.name, i.host
                ));
            }
            let n = &a.name;
            let dir = format!("~/Mail/{n}/");
            let _ = writeln!(
                out,
                "# ~/.config/getmail/getmailrc (getmail6): new IMAPS mail into a Maildir; getmail runs\n\
                 # mailoauth for a fresh access token each time. Create the Maildir first:\n\
                 #   mkdir -p {d}cur {d}new {d}tmp\n\
                 # then run: getmail --rcfile getmailrc\n\
                 # POP3: getmail's OAuth (use_xoauth2) works with IMAP retrievers only. To fetch over POP3,\n\
                 # use SimplePOP3Retriever against mailoauth's proxy (`pop = \"127.0.0.1:1110\"` in\n\
                 # [accounts.{n}.proxy], `mailoauth daemon` running) with the proxy's password.",
                d = dir,
            );
            let _ = writeln!(
                out,
                "[retriever]\ntype = SimpleIMAPSSLRetriever\nserver = {}\nport = {}\nusername = {}\n\
                 use_xoauth2 = True\npassword_command = ({}, \"token\", {})",
                i.host,
                i.port,
                a.user,
                quote::py(exe),
                quote::py(n)
            );
            if let Some(ca) = &ca {
                let _ = writeln!(out, "ca_certs = {ca}");
            }
            let _ = writeln!(
                out,
                "mailboxes = (\"INBOX\",)\n\n[destination]\ntype = Maildir\npath = {dir}\n\n\
                 [options]\n# only messages not fetched before; leave them on the server\nread_all = false\ndelete = false"
            );
        }
        "fetchmail" => {
            let listener = proxy.and_then(|p| {
                p.imap
                    .as_deref()
                    .map(|l| ("IMAP", l))
                    .or(p.pop.as_deref().map(|l| ("POP3", l)))
            });
            let _ = writeln!(
                out,
                "# ~/.fetchmailrc (chmod 600) — fetchmail 6.4 has no OAuth of its own, so it logs in to\n\
                 # mailoauth's proxy (`mailoauth daemon` must run) with the proxy's local password, and the\n\
                 # proxy logs in to the real server with XOAUTH2. fetchmail never sees a token."
            );
            let (proto, addr) = match listener {
                Some(l) => l,
                None => {
                    let _ = writeln!(
                        out,
                        "# Account `{n}` has no proxy yet: add this to config.toml, then (re)start `mailoauth daemon`:\n\
                         #   [accounts.{n}.proxy]\n\
                         #   imap = \"127.0.0.1:1143\"\n\
                         #   pop = \"127.0.0.1:1110\"\n\
                         #   password = {{ env = \"MAILOAUTH_PROXY_PASSWORD\" }}",
                        n = a.name
                    );
                    ("IMAP", "127.0.0.1:1143")
                }
            };
            let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "143"));
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let tls = proxy.and_then(|p| p.tls).unwrap_or(TlsMode::None);
            let _ = writeln!(
                out,
                "poll {} service {port} protocol {proto}\n  user {} password \"PROXY-PASSWORD\"  # the proxy's `password`, not a token",
                quote::dq(host),
                quote::dq(&a.user)
            );
            match tls {
                TlsMode::Implicit => {
                    let _ = writeln!(
                        out,
                        "  ssl sslcertck sslcertfile \"THE-PROXY-CERTIFICATE.pem\""
                    );
                }
                TlsMode::Starttls => {
                    let _ = writeln!(
                        out,
                        "  sslproto tls1.2+ sslcertck sslcertfile \"THE-PROXY-CERTIFICATE.pem\""
                    );
                }
                TlsMode::None => {
                    let _ = writeln!(
                        out,
                        "  # loopback, no TLS to the proxy (the proxy uses TLS upstream)\n  sslproto ''"
                    );
                }
            }
            let _ = writeln!(
                out,
                "  keep\n  # delivers to the local MTA on port 25; without one, add e.g.\n  # mda \"/usr/bin/procmail -d %T\""
            );
        }
        "s-nail" => {
            let i = need(a.imap.as_ref(), "imap", a)?;
            let n = &a.name;
            let sh = quote::sh;
            let hook = format!("mailoauth-token-{n}");
            let _ = writeln!(
                out,
                "# ~/.mailrc (s-nail 14.9): reads IMAP with s-nail's OAuth login, the token fresh from\n\
                 # mailoauth on start and before each command; sends through `mailoauth send`, because\n\
                 # s-nail puts the token on the SMTP AUTH line itself, which Dovecot and Gmail refuse as\n\
                 # too long. Use: s-nail -A {n}\n\
                 set v15-compat\n\
                 define {h} {{\n  vput ! password {cmd}\n  vput csop password trim \"$password\"\n}}\n\
                 account {an} {{",
                h = sh(&hook),
                an = sh(n),
                cmd = cmd,
            );
            let _ = writeln!(
                out,
                "  set folder={} inbox=+INBOX",
                sh(&format!(
                    "{}://{}@{}:{}/",
                    if implicit(i) { "imaps" } else { "imap" },
                    quote::url_user(&a.user),
                    i.host,
                    i.port
                ))
            );
            let _ = writeln!(
                out,
                "  # s-nail's `oauthbearer` for IMAP is the XOAUTH2 exchange\n  set imap-auth=oauthbearer{}",
                if implicit(i) {
                    ""
                } else {
                    " imap-use-starttls"
                }
            );
            if let Some(ca) = &ca {
                let _ = writeln!(out, "  set tls-ca-file={}", quote::snail_file(ca));
            }
            let _ = writeln!(
                out,
                "  set mta={} mta-arguments={} mta-no-default-arguments",
                quote::snail_file(exe),
                sh(&format!("send {}", sh(n)))
            );
            let _ = writeln!(
                out,
                "  set from={}\n  set on-main-loop-tick={h} on-compose-enter={h}\n  call {h}\n}}",
                sh(&a.user),
                h = sh(&hook)
            );
        }
        "git-send-email" => {
            let send = format!("{} send {}", quote::sh(exe), quote::sh(&a.name));
            let _ = writeln!(
                out,
                "# ~/.gitconfig — git send-email hands each message to `mailoauth send`, which is\n\
                 # sendmail-compatible and logs in with a fresh token. (git's own --smtp-auth=XOAUTH2\n\
                 # needs the Perl module Authen::SASL::XOAUTH2, which Debian does not ship.)\n\
                 # The same from a shell: git config --global sendemail.sendmailcmd {}\n\
                 [sendemail]\n\tsendmailcmd = {}\n\tfrom = {}",
                quote::sh(&send),
                quote::dq(&send),
                quote::dq(&a.user)
            );
        }
        "curl" => {
            let i = need(a.imap.as_ref(), "imap", a)?;
            let cacert = ca
                .as_ref()
                .map(|c| format!(" --cacert {}", quote::sh(c)))
                .unwrap_or_default();
            let (scheme, tls) = if implicit(i) {
                ("imaps", "")
            } else {
                ("imap", " --ssl-reqd")
            };
            let _ = writeln!(
                out,
                "# list INBOX with curl (it picks XOAUTH2 or OAUTHBEARER itself); the token goes to curl's\n\
                 # stdin as a config line (-K -), never onto a command line where ps would show it"
            );
            let _ = writeln!(
                out,
                "{{ printf 'oauth2-bearer = '; {cmd}; }} | curl -K -{tls}{cacert} --user {} {}",
                quote::sh(&a.user),
                quote::sh(&format!("{scheme}://{}:{}/INBOX", i.host, i.port))
            );
        }
        "python" => {
            let i = need(a.imap.as_ref(), "imap", a)?;
            let ctx = match &ca {
                Some(c) => format!("ssl.create_default_context(cafile={})", quote::py(c)),
                None => "ssl.create_default_context()".to_owned(),
            };
            let connect = if implicit(i) {
                format!(
                    "imap = imaplib.IMAP4_SSL({}, {}, ssl_context=ctx)",
                    quote::py(&i.host),
                    i.port
                )
            } else {
                format!(
                    "imap = imaplib.IMAP4({}, {})\nimap.starttls(ssl_context=ctx)",
                    quote::py(&i.host),
                    i.port
                )
            };
            let _ = writeln!(
                out,
                "# Python imaplib with XOAUTH2; the token comes fresh from mailoauth on every run.\n\
                 import imaplib, ssl, subprocess\n\n\
                 token = subprocess.check_output([{exe}, \"token\", {n}], text=True).strip()\n\
                 user = {u}\n\
                 ctx = {ctx}\n{connect}\n\
                 imap.authenticate(\"XOAUTH2\", lambda _: f\"user={{user}}\\x01auth=Bearer {{token}}\\x01\\x01\".encode())\n\
                 status, data = imap.select(\"INBOX\")\nprint(status, data[0].decode(), \"messages in INBOX\")\nimap.logout()",
                exe = quote::py(exe),
                n = quote::py(&a.name),
                u = quote::py(&a.user),
            );
        }
        other => unreachable!("catalog entry {other} without a template"),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalog_entry_is_a_client_and_aliases_are_unique() {
        assert_eq!(
            CATALOG.iter().map(|e| e.name).collect::<Vec<_>>(),
            CLIENTS.to_vec()
        );
        let mut all: Vec<&str> = CATALOG
            .iter()
            .flat_map(|e| std::iter::once(e.name).chain(e.aliases.iter().copied()))
            .collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "a spelling names two clients");
        for (spelling, name) in [
            ("getmail6", "getmail"),
            ("GIT", "git-send-email"),
            ("git-email", "git-send-email"),
            ("isync", "mbsync"),
        ] {
            assert_eq!(lookup(spelling).unwrap().name, name);
        }
    }

    #[test]
    fn shell_quoting_survives_quotes_and_dollars() {
        assert_eq!(quote::sh("/usr/bin/mailoauth"), "/usr/bin/mailoauth");
        assert_eq!(quote::sh("/o'k $x"), r"'/o'\''k $x'");
        assert_eq!(quote::dq(r#"a "b" \c"#), r#""a \"b\" \\c""#);
        assert_eq!(quote::py("a\"b\\"), r#""a\"b\\""#);
        assert_eq!(quote::url_user("a@b c"), "a%40b%20c");
    }

    #[test]
    fn exchange_non_mail_folders_and_their_children_are_recognised() {
        assert!(is_exchange_non_mail("Calendar"));
        assert!(is_exchange_non_mail("Calendar/Birthdays"));
        assert!(is_exchange_non_mail("Sync Issues/Conflicts"));
        assert!(!is_exchange_non_mail("Calendars of events"));
        assert!(!is_exchange_non_mail("INBOX"));
    }
}
