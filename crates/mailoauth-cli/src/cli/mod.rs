//! Command-line interface: clap definitions and dispatch.
//!
//! Owns: flags, human/JSON output, exit codes. Must not: contain token logic —
//! every command calls the library and prints what it returns.

mod add;
mod report;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use mailoauth::error::exit;
use mailoauth::{Client, Config, Error, LoginOptions, ipc, paths, sasl};

/// OAuth 2.0 for IMAP, POP and SMTP: sign in once, then hand fresh tokens to any mail client.
#[derive(Parser, Debug)]
#[command(name = "mailoauth", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Config file [default: $XDG_CONFIG_HOME/mailoauth/config.toml]
    #[arg(long, global = true, env = "MAILOAUTH_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    /// Print one JSON document on stdout instead of text
    #[arg(long, global = true)]
    json: bool,
    /// More detail on stderr (repeat for even more)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors on stderr
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create or update an account in the config (asks interactively when given no flags)
    Add(Box<add::AddArgs>),
    /// Sign in with the account's flow and store the tokens
    Login {
        /// Account name
        name: String,
        /// Do not open a browser: print the URL, accept the redirect or a pasted URL
        #[arg(long)]
        no_browser: bool,
        /// Give up after this many seconds
        #[arg(long, default_value_t = 300, value_name = "SECS")]
        timeout: u64,
        /// Listen for the redirect on this port (default: the redirect URI's, else any free port)
        #[arg(long)]
        port: Option<u16>,
    },
    /// Print a valid access token (refreshing it if needed) and nothing else on stdout
    Token {
        /// Account name
        name: String,
        /// Print the base64 SASL initial response instead of the bare token
        #[arg(long, value_enum)]
        sasl: Option<SaslMech>,
        /// Another resource of the same login (e.g. `graph`)
        #[arg(long)]
        resource: Option<String>,
    },
    /// Print the stored refresh token (for OfflineIMAP's oauth2_refresh_token_eval)
    RefreshToken {
        /// Account name
        name: String,
    },
    /// Refresh the access token now, even if it is still valid
    Refresh {
        /// Account name
        name: String,
        /// Another resource of the same login (e.g. `graph`)
        #[arg(long)]
        resource: Option<String>,
    },
    /// Show accounts, stores, token expiry, refresh-token age and last errors
    Status {
        /// Only this account
        name: Option<String>,
    },
    /// Decode the current access token's claims (audience, scopes, user, expiry) and check them
    Inspect {
        /// Account name
        name: String,
        /// Another resource of the same login (e.g. `graph`)
        #[arg(long)]
        resource: Option<String>,
    },
    /// Connect, authenticate with the token and run one harmless command per protocol; explain failures
    Check {
        /// Account name
        name: String,
        /// Check IMAP (default: every protocol the account has a server for)
        #[arg(long)]
        imap: bool,
        /// Check POP3
        #[arg(long)]
        pop: bool,
        /// Check SMTP submission
        #[arg(long)]
        smtp: bool,
        /// Seconds to wait for each server
        #[arg(long, default_value_t = 15, value_name = "SECS")]
        timeout: u64,
    },
    /// Send the RFC 5322 message on stdin over SMTP with XOAUTH2 (sendmail-compatible)
    Send {
        /// Account name
        name: String,
        /// Take recipients from To, Cc and Bcc (Bcc is removed from what is sent)
        #[arg(short = 't')]
        extract: bool,
        /// Envelope sender (must be the account's mailbox unless --allow-send-as)
        #[arg(short = 'f', value_name = "FROM")]
        from: Option<String>,
        /// Allow a From other than the account's mailbox (needs SendAs rights on the server)
        #[arg(long)]
        allow_send_as: bool,
        /// Accepted for sendmail compatibility (the message always ends at end of input)
        #[arg(short = 'i', hide = true)]
        ignore_dots: bool,
        /// Accepted for sendmail compatibility (`-oi`, `-oem` …) and ignored
        #[arg(short = 'o', hide = true, value_name = "OPTION")]
        options: Vec<String>,
        /// Seconds to wait for the server
        #[arg(long, default_value_t = 60, value_name = "SECS")]
        timeout: u64,
        /// Recipients
        recipients: Vec<String>,
    },
    /// Download new messages of an IMAP folder into a Maildir, incrementally and resumably
    Fetch {
        /// Account name
        name: String,
        /// IMAP folder
        #[arg(long, default_value = "INBOX")]
        folder: String,
        /// Maildir to fill [default: ~/Mail/NAME, plus /FOLDER for other folders]
        #[arg(long, value_name = "DIR")]
        to: Option<PathBuf>,
        /// Delete the fetched messages on the server
        #[arg(long, conflicts_with = "move_to")]
        delete: bool,
        /// Move the fetched messages to this server folder
        #[arg(long, value_name = "FOLDER")]
        move_to: Option<String>,
        /// Fetch over POP3 (the default for accounts with a POP3 server and no IMAP server)
        #[arg(long)]
        pop: bool,
        /// Seconds to wait for the server
        #[arg(long, default_value_t = 60, value_name = "SECS")]
        timeout: u64,
    },
    /// Print ready configuration for a mail client: mbsync, msmtp, offlineimap, neomutt, aerc, curl, python
    Snippet {
        /// Account name
        name: String,
        /// Client
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(mailoauth::snippet::CLIENTS))]
        client: String,
    },
    /// Delete the stored tokens (and revoke the refresh token where the provider supports it)
    Logout {
        /// Account name
        name: String,
    },
    /// Run in the foreground: refresh every account ahead of expiry, serve tokens on a unix socket, run the proxy listeners
    Daemon {
        /// Log a protocol trace of every proxy session (credentials and tokens redacted)
        #[arg(long)]
        debug: bool,
    },
    /// Print a shell completion script
    Completions {
        /// Shell
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff)
    Man,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum SaslMech {
    /// XOAUTH2 (Gmail, Microsoft, Dovecot)
    Xoauth2,
    /// OAUTHBEARER, RFC 7628
    Oauthbearer,
}

impl SaslMech {
    fn mechanism(self) -> sasl::Mechanism {
        match self {
            SaslMech::Xoauth2 => sasl::Mechanism::Xoauth2,
            SaslMech::Oauthbearer => sasl::Mechanism::Oauthbearer,
        }
    }
}

struct StderrLogger(log::LevelFilter);

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        // The max level may be raised later (`daemon --debug`).
        m.level() <= self.0.max(log::max_level()) && m.target().starts_with("mailoauth")
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            let _ = writeln!(
                std::io::stderr(),
                "mailoauth: {}: {}",
                r.level().as_str().to_lowercase(),
                r.args()
            );
        }
    }
    fn flush(&self) {}
}

fn install_panic_hook() {
    // A panic message could be built from anything; print only literal messages
    // (which we wrote) and the location, never formatted payloads that might hold a token.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&'static str>()
            .copied()
            .unwrap_or("(details withheld)");
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("mailoauth: internal error{at}: {msg}; please report it");
    }));
}

/// Entry point of the binary.
pub fn main() -> i32 {
    install_panic_hook();
    // Hot path: `mailoauth token NAME [--sasl M] [--resource R]` (what mail clients
    // run on every connection) skips building the clap command tree, which costs
    // more than the rest of the cached path; anything else goes to clap.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some((name, mech, resource)) = fast_token_args(&args) {
        let config = std::env::var_os("MAILOAUTH_CONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(paths::default_config_file);
        set_logger(log::LevelFilter::Warn);
        return finish(token(&config, &name, mech, resource.as_deref()));
    }
    let cli = Cli::parse();
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => log::LevelFilter::Error,
        (false, 0) => log::LevelFilter::Warn,
        (false, 1) => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    set_logger(level);
    finish(run(&cli))
}

/// `token NAME [--sasl xoauth2|oauthbearer] [--resource R]`, or `None` for clap.
fn fast_token_args(
    args: &[std::ffi::OsString],
) -> Option<(String, Option<SaslMech>, Option<String>)> {
    let mut it = args.iter().skip(1).map(|a| a.to_str());
    if it.next()?? != "token" {
        return None;
    }
    let (mut name, mut mech, mut resource) = (None, None, None);
    while let Some(arg) = it.next() {
        match arg? {
            "--sasl" => {
                mech = Some(match sasl::Mechanism::from_name(it.next()??)? {
                    sasl::Mechanism::Xoauth2 => SaslMech::Xoauth2,
                    sasl::Mechanism::Oauthbearer => SaslMech::Oauthbearer,
                })
            }
            "--resource" => resource = Some(it.next()??.to_owned()),
            a if a.starts_with('-') || name.is_some() => return None,
            a => name = Some(a.to_owned()),
        }
    }
    Some((name?, mech, resource))
}

fn set_logger(level: log::LevelFilter) {
    let logger: &'static StderrLogger = Box::leak(Box::new(StderrLogger(level)));
    let _ = log::set_logger(logger).map(|()| log::set_max_level(level));
}

fn finish(result: Result<(), Error>) -> i32 {
    match result {
        Ok(()) => exit::OK,
        Err(Error::Exit(code)) => code,
        Err(e) => {
            eprintln!("mailoauth: error: {e}");
            if let Some(h) = e.hint() {
                for (i, line) in h.lines().enumerate() {
                    eprintln!("{} {line}", if i == 0 { "  fix:" } else { "      " });
                }
            }
            e.exit_code()
        }
    }
}

fn config_path(cli: &Cli) -> PathBuf {
    cli.config
        .clone()
        .unwrap_or_else(paths::default_config_file)
}

fn client(cli: &Cli) -> Result<Client, Error> {
    Client::with_config_file(&config_path(cli))
}

fn print_stdout(s: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    // A closed pipe (e.g. `| head -c0`) is the reader's choice, not our error.
    match writeln!(out, "{s}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::Io {
            context: "stdout".into(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// `token`: config → store → print. No HTTP client or TLS unless a refresh is due.
fn token(
    config: &std::path::Path,
    name: &str,
    mech: Option<SaslMech>,
    resource: Option<&str>,
) -> Result<(), Error> {
    // A running daemon answers from memory; without one (or on any daemon error)
    // we do the work ourselves — same store, same lock.
    let req = ipc::Request {
        resource: resource.map(str::to_owned),
        sasl: mech.map(|m| m.mechanism().name().to_owned()),
        ..ipc::Request::new("token", config, Some(name))
    };
    if let Some(ipc::Response {
        ok: true,
        value: Some(v),
        ..
    }) = ipc::call(&req)
    {
        return print_stdout(&v);
    }
    let broker = Client::with_config_file(config)?.broker(name)?;
    let token = broker.token(resource)?;
    let out = match mech {
        None => token,
        Some(m) => sasl::initial_response(m.mechanism(), broker.account(), None, &token),
    };
    print_stdout(&out)
}

fn run(cli: &Cli) -> Result<(), Error> {
    match &cli.command {
        Command::Token {
            name,
            sasl,
            resource,
        } => token(&config_path(cli), name, *sasl, resource.as_deref()),
        Command::Login {
            name,
            no_browser,
            timeout,
            port,
        } => {
            let client = client(cli)?;
            let broker = client.broker(name)?;
            let opts = LoginOptions {
                open_browser: !no_browser && !mailoauth::flows::over_ssh(),
                paste: true,
                timeout: Duration::from_secs(*timeout),
                port: *port,
            };
            let out = broker.login(&opts)?;
            tell_daemon_forget(cli, name);
            if let Some(p) = &out.set_aside {
                eprintln!("mailoauth: the unreadable old token record was kept as {p}");
            }
            report::login(cli.json, name, &out)
        }
        Command::RefreshToken { name } => {
            print_stdout(&client(cli)?.broker(name)?.refresh_token()?)
        }
        Command::Refresh { name, resource } => {
            let broker = client(cli)?.broker(name)?;
            broker.renew(resource.as_deref(), true)?;
            tell_daemon_forget(cli, name);
            report::status(cli.json, &[report::account_status(&broker)?])
        }
        Command::Status { name } => {
            let client = client(cli)?;
            let names: Vec<String> = match name {
                Some(n) => vec![n.clone()],
                None => client.config().accounts.keys().cloned().collect(),
            };
            let mut rows = Vec::new();
            for n in &names {
                rows.push(report::account_status(&client.broker(n)?)?);
            }
            report::status(cli.json, &rows)
        }
        Command::Inspect { name, resource } => {
            let broker = client(cli)?.broker(name)?;
            report::inspect(cli.json, &broker, resource.as_deref())
        }
        Command::Logout { name } => {
            let out = client(cli)?.broker(name)?.logout()?;
            tell_daemon_forget(cli, name);
            report::logout(cli.json, name, &out)
        }
        Command::Check {
            name,
            imap,
            pop,
            smtp,
            timeout,
        } => {
            use mailoauth::config::Service;
            let broker = client(cli)?.broker(name)?;
            let token = broker.token(None)?;
            let preflight = mailoauth::jwt::claims(&token)
                .map(|c| mailoauth::diagnose::preflight(broker.account(), None, &c))
                .unwrap_or_default();
            let asked: Vec<Service> = [
                (Service::Imap, *imap),
                (Service::Pop, *pop),
                (Service::Smtp, *smtp),
            ]
            .into_iter()
            .filter(|(_, on)| *on)
            .map(|(s, _)| s)
            .collect();
            let services = if asked.is_empty() {
                vec![Service::Imap, Service::Pop, Service::Smtp]
            } else {
                asked.clone()
            };
            let mut reports = Vec::new();
            for s in services {
                match mailoauth::mail::check(
                    broker.account(),
                    s,
                    &token,
                    Duration::from_secs(*timeout),
                ) {
                    Some(r) => reports.push(r),
                    None if asked.contains(&s) => {
                        return Err(Error::Usage(format!(
                            "account `{name}` has no {s:?} server; set it in the config"
                        )));
                    }
                    None => {}
                }
            }
            let code = report::check(cli.json, &broker, &preflight, &reports)?;
            if code != 0 {
                return Err(Error::Exit(code));
            }
            Ok(())
        }
        Command::Send {
            name,
            extract,
            from,
            allow_send_as,
            timeout,
            recipients,
            ..
        } => {
            use std::io::Read as _;
            let broker = client(cli)?.broker(name)?;
            let account = broker.account();
            let server = account.smtp.as_ref().ok_or_else(|| {
                Error::Usage(format!(
                    "account `{name}` has no smtp server; set `smtp = {{ host = … }}`"
                ))
            })?;
            let mut raw = Vec::new();
            std::io::stdin()
                .read_to_end(&mut raw)
                .map_err(|e| Error::Io {
                    context: "stdin".into(),
                    source: e,
                })?;
            // Everything that can be refused locally is, before any network.
            let msg = mailoauth::mail::send::prepare(
                account,
                &raw,
                *extract,
                from.as_deref(),
                recipients,
                *allow_send_as,
            )?;
            let token = broker.token(None)?;
            match mailoauth::mail::send::submit(
                account,
                server,
                &token,
                &msg,
                Duration::from_secs(*timeout),
            ) {
                Ok(s) => {
                    log::info!("sent: {}", s.detail);
                    Ok(())
                }
                Err(f) => Err(mail_failure(account, "smtp", "sending", &f)),
            }
        }
        Command::Fetch {
            name,
            folder,
            to,
            delete,
            move_to,
            pop,
            timeout,
        } => {
            use mailoauth::mail::fetch::{After, fetch, fetch_pop};
            use std::io::IsTerminal as _;
            let broker = client(cli)?.broker(name)?;
            let account = broker.account();
            // POP3 when asked, or for POP-only accounts.
            let use_pop = *pop || (account.imap.is_none() && account.pop.is_some());
            let (server, protocol) = if use_pop {
                (account.pop.as_ref(), "pop")
            } else {
                (account.imap.as_ref(), "imap")
            };
            let server = server.ok_or_else(|| {
                Error::Usage(format!(
                    "account `{name}` has no {protocol} server; set `{protocol} = {{ host = … }}`"
                ))
            })?;
            if use_pop && (folder != "INBOX" || move_to.is_some()) {
                return Err(Error::Usage(
                    "POP3 has one maildrop: no --folder, no --move-to".into(),
                ));
            }
            let dir = to.clone().unwrap_or_else(|| {
                let home = std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .unwrap_or_default();
                let base = home.join("Mail").join(name);
                if folder == "INBOX" {
                    base
                } else {
                    base.join(folder)
                }
            });
            let after = match (delete, move_to) {
                (true, _) => After::Delete,
                (false, Some(f)) => After::MoveTo(f.clone()),
                (false, None) => After::Keep,
            };
            let token = broker.token(None)?;
            let tty = std::io::stderr().is_terminal() && !cli.quiet;
            let mut progress = |done: usize, total: usize, bytes: u64| {
                if tty {
                    eprint!(
                        "\r{folder}: {done}/{total} messages, {:.1} MiB ",
                        bytes as f64 / 1048576.0
                    );
                }
            };
            let req = mailoauth::mail::fetch::Request {
                folder: folder.clone(),
                dir: dir.clone(),
                after,
                timeout: Duration::from_secs(*timeout),
            };
            let result = if use_pop {
                fetch_pop(account, server, &token, &req, &mut progress)
            } else {
                fetch(account, server, &token, &req, &mut progress)
            };
            if tty {
                eprintln!();
            }
            match result {
                Ok(f) => {
                    if cli.json {
                        print_stdout(&serde_json::json!({"delivered": f.delivered, "skipped": f.skipped, "bytes": f.bytes, "maildir": dir}).to_string())
                    } else if !cli.quiet {
                        eprintln!(
                            "mailoauth: {} new message(s) in {} ({} already there)",
                            f.delivered,
                            dir.display(),
                            f.skipped
                        );
                        Ok(())
                    } else {
                        Ok(())
                    }
                }
                Err(f) => Err(mail_failure(account, protocol, "fetch", &f)),
            }
        }
        Command::Snippet { name, client } => {
            let account = self::client(cli)?.account(name)?;
            // The snippet names this very binary, so it works without PATH tweaks.
            let exe = std::env::current_exe()
                .ok()
                .and_then(|p| p.to_str().map(str::to_owned))
                .unwrap_or_else(|| "mailoauth".into());
            let text = mailoauth::snippet::render(&account, client, &exe).map_err(Error::Usage)?;
            print_stdout(text.trim_end())
        }
        Command::Add(args) => add::run(&config_path(cli), args),
        Command::Daemon { debug } => {
            if *debug {
                crate::proxy::trace::enable();
                log::set_max_level(log::LevelFilter::Debug);
            }
            crate::daemon::run(&config_path(cli))
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "mailoauth",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Man => clap_mangen::Man::new(Cli::command())
            .render(&mut std::io::stdout())
            .map_err(|e| Error::Io {
                context: "man page".into(),
                source: e,
            }),
    }
}

/// Report a failed mail operation (with the catalog's diagnosis) and give its exit code.
fn mail_failure(
    account: &mailoauth::Account,
    protocol: &str,
    what: &str,
    f: &mailoauth::mail::Failure,
) -> Error {
    use mailoauth::error::exit;
    use mailoauth::mail::Failure;
    eprintln!("mailoauth: error: {what} failed: {f}");
    let code = match f {
        Failure::Refused {
            reply, challenge, ..
        } => {
            if let Some(d) =
                mailoauth::diagnose::wire_reply(account, protocol, reply, challenge.as_deref())
            {
                eprintln!("  cause: {}\n  fix:   {}", d.cause, d.fix);
            }
            exit::AUTH_REFUSED
        }
        Failure::Unreachable(_) => exit::UNREACHABLE,
        _ => exit::ERROR,
    };
    Error::Exit(code)
}

/// Tokens changed behind a running daemon's back: make it drop what it holds.
fn tell_daemon_forget(cli: &Cli, name: &str) {
    let req = ipc::Request::new("forget", &config_path(cli), Some(name));
    let _ = ipc::call(&req);
}

/// Parse-check a config without running anything (used by `add`).
pub(crate) fn validate(text: &str, path: &std::path::Path, name: &str) -> Result<(), Error> {
    let c = Config::parse(text, path)?;
    mailoauth::providers::resolve(&c, name).map(|_| ())
}
