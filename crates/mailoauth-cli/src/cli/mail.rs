//! The mail commands: `check`, `send`, `fetch`, `snippet`.
//!
//! Owns: reading each command's input (stdin for `send`), the progress line of
//! `fetch`, and handing failures to the report. Must not: choose protocols,
//! servers or Maildirs (the library's [`mailoauth::mail::plan`] does) or speak a
//! protocol.

use std::io::{IsTerminal as _, Read as _};
use std::time::Duration;

use mailoauth::config::Service;
use mailoauth::mail::{self, plan};
use mailoauth::{Account, Error};

use super::args::{CheckArgs, FetchArgs, SendArgs, SnippetArgs};
use super::{Cli, client, print_stdout, report};

/// `check`: the pre-flight, then one login and harmless command per protocol;
/// the exit code of what it found.
pub fn check(cli: &Cli, a: &CheckArgs) -> Result<i32, Error> {
    let broker = client(cli)?.broker(&a.name)?;
    let account = broker.account();
    let asked: Vec<Service> = [
        (Service::Imap, a.imap),
        (Service::Pop, a.pop),
        (Service::Smtp, a.smtp),
    ]
    .into_iter()
    .filter_map(|(s, on)| on.then_some(s))
    .collect();
    let services = plan::check_services(account, &asked)?;
    let token = broker.token(None)?;
    // What the store knows about this token: its reported scope (for the
    // pre-flight of opaque tokens) and whether the sign-in named its user.
    let rec = broker.record()?;
    let stored = rec
        .as_ref()
        .and_then(|r| r.access.get(mailoauth::providers::MAIL_RESOURCE))
        .filter(|at| at.token == token);
    let facts = mail::check::Token {
        value: &token,
        scope: stored.and_then(|at| at.scope.as_deref()),
        user_verified: rec.as_ref().is_some_and(|r| r.user.is_some()),
    };
    let outcome = mail::check::run(account, &services, facts, Duration::from_secs(a.timeout));
    report::check(cli.json, account, &outcome)?;
    Ok(outcome.exit_code())
}

/// `send`: the message on stdin, refused locally where it can be, then submitted.
pub fn send(cli: &Cli, a: &SendArgs) -> Result<(), Error> {
    let broker = client(cli)?.broker(&a.name)?;
    let account = broker.account();
    let server = plan::server(account, Service::Smtp)?;
    let mut raw = Vec::new();
    std::io::stdin()
        .read_to_end(&mut raw)
        .map_err(|e| Error::io("stdin", e))?;
    // Everything that can be refused locally is, before any network.
    let msg = mail::send::prepare(
        account,
        &raw,
        a.extract,
        a.from.as_deref(),
        &a.recipients,
        a.allow_send_as,
    )?;
    let token = broker.token(None)?;
    let timeout = Duration::from_secs(a.timeout);
    match mail::send::submit(account, server, &token, &msg, timeout) {
        Ok(s) => {
            log::info!("sent: {}", s.detail);
            Ok(())
        }
        Err(f) => Err(failure(account, Service::Smtp, "sending", f)),
    }
}

/// `fetch`: new messages into a Maildir, with a progress line on a terminal.
pub fn fetch(cli: &Cli, a: &FetchArgs) -> Result<(), Error> {
    let broker = client(cli)?.broker(&a.name)?;
    let account = broker.account();
    let plan = plan::fetch_plan(
        account,
        &plan::FetchOptions {
            folder: a.folder.clone(),
            to: a.to.clone(),
            delete: a.delete,
            move_to: a.move_to.clone(),
            pop: a.pop,
            timeout: Duration::from_secs(a.timeout),
        },
    )?;
    let token = broker.token(None)?;
    let tty = std::io::stderr().is_terminal() && !cli.quiet;
    let folder = &plan.request.folder;
    let mut progress = |done: usize, total: usize, bytes: u64| {
        if tty {
            let mib = bytes as f64 / 1048576.0;
            eprint!("\r{folder}: {done}/{total} messages, {mib:.1} MiB ");
        }
    };
    let result = plan::run_fetch(account, &plan, &token, &mut progress);
    if tty {
        eprintln!();
    }
    let f = result.map_err(|f| failure(account, plan.service, "fetch", f))?;
    let dir = &plan.request.dir;
    if cli.json {
        let doc = serde_json::json!({"delivered": f.delivered, "skipped": f.skipped, "bytes": f.bytes, "maildir": dir});
        return print_stdout(&doc.to_string());
    }
    if !cli.quiet {
        eprintln!(
            "mailoauth: {} new message(s) in {} ({} already there)",
            f.delivered,
            dir.display(),
            f.skipped
        );
    }
    Ok(())
}

/// `snippet`: a client's configuration, naming this very binary (so it works
/// without PATH tweaks).
pub fn snippet(cli: &Cli, a: &SnippetArgs) -> Result<(), Error> {
    let c = client(cli)?;
    let account = c.account(&a.name)?;
    let Some(which) = &a.client else {
        return print_stdout(mailoauth::snippet::listing(&a.name).trim_end());
    };
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.to_str().map(str::to_owned))
        .unwrap_or_else(|| "mailoauth".into());
    let proxy = c.config().account(&a.name)?.proxy.as_ref();
    let text = mailoauth::snippet::render(&account, proxy, which, &exe).map_err(Error::Usage)?;
    print_stdout(text.trim_end())
}

/// A failed mail operation as the library's error, with the catalog's diagnosis.
fn failure(account: &Account, service: Service, what: &'static str, f: mail::Failure) -> Error {
    Error::Mail(Box::new(mailoauth::error::MailError {
        what,
        service,
        diagnosis: mail::diagnose(account, service, &f),
        failure: f,
    }))
}
