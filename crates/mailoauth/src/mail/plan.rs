//! What a mail command means for an account, decided once for every front end.
//!
//! Owns: the rules that turn a user's request into protocol, server, folder and
//! Maildir — which protocols `check` covers, that `fetch` uses POP3 for POP-only
//! accounts, where a Maildir goes by default, that POP3 has no folders. The CLI
//! and the service both call these, so they cannot disagree. Must not: connect
//! to anything or print.

use std::path::PathBuf;
use std::time::Duration;

use super::fetch::{self, After, Fetched};
use super::{Failure, server_for};
use crate::config::Service;
use crate::error::{Error, Result};
use crate::providers::{Account, Server};

/// The protocols `check` covers: those asked for (each must have a server), or
/// every protocol the account has a server for when none is asked.
pub fn check_services(account: &Account, asked: &[Service]) -> Result<Vec<Service>> {
    if asked.is_empty() {
        return Ok(Service::ALL
            .into_iter()
            .filter(|s| server_for(account, *s).is_some())
            .collect());
    }
    for s in asked {
        server(account, *s)?;
    }
    Ok(asked.to_vec())
}

/// The account's server for `service`, or a usage error naming the config key.
pub fn server(account: &Account, service: Service) -> Result<&Server> {
    server_for(account, service).ok_or_else(|| {
        let key = service.name();
        Error::Usage(format!(
            "account `{}` has no {key} server; set `{key} = {{ host = … }}` in the config",
            account.name
        ))
    })
}

/// What the user asked `fetch` for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOptions {
    /// IMAP folder.
    pub folder: String,
    /// Maildir; `None` = `~/Mail/NAME` (plus `/FOLDER` for other folders than INBOX).
    pub to: Option<PathBuf>,
    /// Delete fetched messages on the server.
    pub delete: bool,
    /// Move fetched messages to this server folder.
    pub move_to: Option<String>,
    /// Use POP3 even though the account has an IMAP server.
    pub pop: bool,
    /// Network timeout.
    pub timeout: Duration,
}

/// A fetch, resolved: protocol, server and request.
#[derive(Debug, Clone)]
pub struct FetchPlan {
    /// IMAP or POP3.
    pub service: Service,
    /// Where from.
    pub server: Server,
    /// Folder, Maildir, what to do afterwards.
    pub request: fetch::Request,
}

/// Resolve `opts` for `account`: POP3 when asked or for POP-only accounts.
pub fn fetch_plan(account: &Account, opts: &FetchOptions) -> Result<FetchPlan> {
    super::wire::folder("--folder", &opts.folder)?;
    if let Some(t) = &opts.move_to {
        super::wire::server_folder("--move-to", t)?;
    }
    let pop = opts.pop || (account.imap.is_none() && account.pop.is_some());
    let service = if pop { Service::Pop } else { Service::Imap };
    let server = server(account, service)?.clone();
    if pop && (opts.folder != "INBOX" || opts.move_to.is_some()) {
        return Err(Error::Usage(
            "POP3 has one maildrop: no --folder, no --move-to".into(),
        ));
    }
    let dir = opts
        .to
        .clone()
        .unwrap_or_else(|| default_maildir(&account.name, &opts.folder));
    let after = match (opts.delete, &opts.move_to) {
        (true, _) => After::Delete,
        (false, Some(f)) => After::MoveTo(f.clone()),
        (false, None) => After::Keep,
    };
    Ok(FetchPlan {
        service,
        server,
        request: fetch::Request {
            folder: opts.folder.clone(),
            dir,
            after,
            timeout: opts.timeout,
        },
    })
}

/// `~/Mail/NAME`, plus `/FOLDER` for folders other than INBOX.
pub fn default_maildir(account: &str, folder: &str) -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let base = home.join("Mail").join(account);
    if folder == "INBOX" {
        base
    } else {
        base.join(folder)
    }
}

/// Run a planned fetch with `token`; `progress` gets (done, total, bytes).
pub fn run_fetch(
    account: &Account,
    plan: &FetchPlan,
    token: &str,
    progress: &mut dyn FnMut(usize, usize, u64),
) -> std::result::Result<Fetched, Failure> {
    match plan.service {
        Service::Pop => fetch::fetch_pop(account, &plan.server, token, &plan.request, progress),
        _ => fetch::fetch(account, &plan.server, token, &plan.request, progress),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn account(extra: &str) -> Account {
        let text = format!(
            "[accounts.m]\nprovider = \"custom\"\nuser = \"u@example.com\"\nclient_id = \"c\"\n\
             authorize_url = \"https://idp.example.com/a\"\ntoken_url = \"https://idp.example.com/t\"\nscopes = [\"mail\"]\n{extra}"
        );
        let c = Config::parse(&text, std::path::Path::new("c.toml")).unwrap();
        crate::providers::resolve(&c, "m").unwrap()
    }

    fn opts() -> FetchOptions {
        FetchOptions {
            folder: "INBOX".into(),
            to: None,
            delete: false,
            move_to: None,
            pop: false,
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn pop_only_accounts_fetch_over_pop_and_have_no_folders() {
        let a = account("pop = { host = \"pop.example.com\", port = 995, tls = \"implicit\" }\n");
        let p = fetch_plan(&a, &opts()).unwrap();
        assert_eq!(p.service, Service::Pop);
        let e = fetch_plan(
            &a,
            &FetchOptions {
                folder: "Sent".into(),
                ..opts()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("no --folder"), "{e}");
    }

    #[test]
    fn missing_server_names_the_config_key() {
        let a = account("imap = { host = \"imap.example.com\", port = 993, tls = \"implicit\" }\n");
        assert_eq!(fetch_plan(&a, &opts()).unwrap().service, Service::Imap);
        let e = fetch_plan(
            &a,
            &FetchOptions {
                pop: true,
                ..opts()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("set `pop = { host = … }`"), "{e}");
        assert_eq!(check_services(&a, &[]).unwrap(), vec![Service::Imap]);
        assert!(check_services(&a, &[Service::Smtp]).is_err());
    }

    #[test]
    fn folders_with_line_breaks_or_dot_dot_are_refused_before_connecting() {
        let a = account("imap = { host = \"imap.example.com\", port = 993, tls = \"implicit\" }\n");
        for (folder, move_to) in [
            ("INBOX\r\nA1 DELETE INBOX", None),
            ("../../.ssh", None),
            ("INBOX", Some("X\ny")),
        ] {
            let e = fetch_plan(
                &a,
                &FetchOptions {
                    folder: folder.into(),
                    move_to: move_to.map(str::to_owned),
                    ..opts()
                },
            )
            .unwrap_err();
            assert!(matches!(e, Error::Usage(_)), "{e}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
    }

    #[test]
    fn default_maildir_adds_the_folder_except_for_inbox() {
        let d = default_maildir("work", "INBOX");
        assert!(d.ends_with("Mail/work"), "{}", d.display());
        assert!(default_maildir("work", "Sent").ends_with("Mail/work/Sent"));
    }
}
