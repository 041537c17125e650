//! The command-line grammar: clap's definitions, and the cheap special case of
//! `token` inside the same grammar.
//!
//! Owns: every flag and its help text; [`fast_token`], which recognises the argv
//! mail clients run on every connection (`token NAME [--sasl M] [--resource R]`)
//! without building clap's command tree. Must not: do anything with what it
//! parses. The fast parser accepts a subset of what clap accepts and means the
//! same by it — a property test below holds it to that.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use mailoauth::sasl;

use super::add;

/// OAuth 2.0 for IMAP, POP and SMTP: sign in once, then hand fresh tokens to any mail client.
#[derive(Parser, Debug)]
#[command(name = "mailoauth", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Config file [default: $XDG_CONFIG_HOME/mailoauth/config.toml]
    #[arg(long, global = true, env = "MAILOAUTH_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Print one JSON document on stdout instead of text
    #[arg(long, global = true)]
    pub json: bool,
    /// More detail on stderr (repeat for even more)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create or update an account in the config (asks interactively when given no flags)
    Add(Box<add::AddArgs>),
    /// Check the whole chain (config, discovery, token, claims, each protocol, SMTP AUTH, app-only steps) with a fix per failure
    Doctor(DoctorArgs),
    /// Sign in with the account's flow and store the tokens
    Login(LoginArgs),
    /// Print a valid access token (refreshing it if needed) and nothing else on stdout
    Token(TokenArgs),
    /// Print the stored refresh token (for OfflineIMAP's oauth2_refresh_token_eval)
    RefreshToken(RefreshTokenArgs),
    /// Refresh the access token now, even if it is still valid
    Refresh(RefreshArgs),
    /// Show accounts, stores, token expiry, refresh-token age and last errors
    Status(StatusArgs),
    /// Decode the current access token's claims (audience, scopes, user, expiry) and check them
    Inspect(InspectArgs),
    /// Connect, authenticate with the token and run one harmless command per protocol; explain failures
    Check(CheckArgs),
    /// Send the RFC 5322 message on stdin over SMTP with XOAUTH2 (sendmail-compatible)
    Send(SendArgs),
    /// Download new messages of an IMAP folder into a Maildir, incrementally and resumably
    Fetch(FetchArgs),
    /// Print ready configuration for a mail client (mbsync, offlineimap, getmail, fetchmail, msmtp, neomutt, mutt, aerc, s-nail, git send-email, curl, python); without a client, list them
    Snippet(SnippetArgs),
    /// Delete the stored tokens (and revoke the refresh token where the provider supports it)
    Logout(LogoutArgs),
    /// Run in the foreground: refresh every account ahead of expiry, serve tokens on a unix socket, run the proxy listeners
    Daemon(DaemonArgs),
    /// Run the multi-user service: hands over to `mailoauth-serve` (installed separately) with the arguments that follow
    #[command(disable_help_flag = true)]
    Serve(ServeArgs),
    /// Print a shell completion script
    Completions(CompletionsArgs),
    /// Print the man page (roff)
    Man,
}

/// Arguments of `doctor`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct DoctorArgs {
    /// Account name
    pub name: String,
    /// Seconds to wait for each mail server
    #[arg(long, default_value_t = 15, value_name = "SECS")]
    pub timeout: u64,
}

/// Arguments of `login`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct LoginArgs {
    /// Account name
    pub name: String,
    /// Do not open a browser: print the URL, accept the redirect or a pasted URL
    #[arg(long)]
    pub no_browser: bool,
    /// Give up after this many seconds
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub timeout: u64,
    /// Listen for the redirect on this port (default: the redirect URI's, else any free port)
    #[arg(long)]
    pub port: Option<u16>,
}

/// Arguments of `token`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct TokenArgs {
    /// Account name
    pub name: String,
    /// Print the base64 SASL initial response instead of the bare token
    #[arg(long, value_enum)]
    pub sasl: Option<SaslMech>,
    /// Another resource of the same login (e.g. `graph`)
    #[arg(long)]
    pub resource: Option<String>,
}

/// Arguments of `refresh-token`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct RefreshTokenArgs {
    /// Account name
    pub name: String,
}

/// Arguments of `refresh`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct RefreshArgs {
    /// Account name
    pub name: String,
    /// Another resource of the same login (e.g. `graph`)
    #[arg(long)]
    pub resource: Option<String>,
}

/// Arguments of `status`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct StatusArgs {
    /// Only this account
    pub name: Option<String>,
}

/// Arguments of `inspect`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct InspectArgs {
    /// Account name
    pub name: String,
    /// Another resource of the same login (e.g. `graph`)
    #[arg(long)]
    pub resource: Option<String>,
}

/// Arguments of `check`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct CheckArgs {
    /// Account name
    pub name: String,
    /// Check IMAP (default: every protocol the account has a server for)
    #[arg(long)]
    pub imap: bool,
    /// Check POP3
    #[arg(long)]
    pub pop: bool,
    /// Check SMTP submission
    #[arg(long)]
    pub smtp: bool,
    /// Seconds to wait for each server
    #[arg(long, default_value_t = 15, value_name = "SECS")]
    pub timeout: u64,
}

/// Arguments of `send`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct SendArgs {
    /// Account name
    pub name: String,
    /// Take recipients from To, Cc and Bcc (Bcc is removed from what is sent)
    #[arg(short = 't')]
    pub extract: bool,
    /// Envelope sender (must be the account's mailbox unless --allow-send-as)
    #[arg(short = 'f', value_name = "FROM")]
    pub from: Option<String>,
    /// Allow a From other than the account's mailbox (needs SendAs rights on the server)
    #[arg(long)]
    pub allow_send_as: bool,
    /// Accepted for sendmail compatibility (the message always ends at end of input)
    #[arg(short = 'i', hide = true)]
    pub ignore_dots: bool,
    /// Accepted for sendmail compatibility (`-oi`, `-oem` …) and ignored
    #[arg(short = 'o', hide = true, value_name = "OPTION")]
    pub options: Vec<String>,
    /// Seconds to wait for the server
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub timeout: u64,
    /// Recipients
    pub recipients: Vec<String>,
}

/// Arguments of `fetch`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct FetchArgs {
    /// Account name
    pub name: String,
    /// IMAP folder
    #[arg(long, default_value = "INBOX")]
    pub folder: String,
    /// Maildir to fill [default: ~/Mail/NAME, plus /FOLDER for other folders]
    #[arg(long, value_name = "DIR")]
    pub to: Option<PathBuf>,
    /// Delete the fetched messages on the server
    #[arg(long, conflicts_with = "move_to")]
    pub delete: bool,
    /// Move the fetched messages to this server folder
    #[arg(long, value_name = "FOLDER")]
    pub move_to: Option<String>,
    /// Fetch over POP3 (the default for accounts with a POP3 server and no IMAP server)
    #[arg(long)]
    pub pop: bool,
    /// Seconds to wait for the server
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub timeout: u64,
}

/// Arguments of `snippet`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct SnippetArgs {
    /// Account name
    pub name: String,
    /// Client (or a common spelling of it, e.g. getmail6, git); leave it out for the list of clients
    pub client: Option<String>,
}

/// Arguments of `logout`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct LogoutArgs {
    /// Account name
    pub name: String,
}

/// Arguments of `daemon`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct DaemonArgs {
    /// Log a protocol trace of every proxy session (credentials and tokens redacted)
    #[arg(long)]
    pub debug: bool,
}

/// Arguments of `serve`: everything after it goes to `mailoauth-serve` as it is.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct ServeArgs {
    /// Arguments for `mailoauth-serve` (`--help` shows its own)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0.., value_parser = clap::value_parser!(OsString))]
    pub args: Vec<OsString>,
}

/// Arguments of `completions`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct CompletionsArgs {
    /// Shell
    pub shell: clap_complete::Shell,
}

/// `--sasl`: which initial response to print.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaslMech {
    /// XOAUTH2 (Gmail, Microsoft, Dovecot)
    Xoauth2,
    /// OAUTHBEARER, RFC 7628
    Oauthbearer,
}

impl SaslMech {
    /// The library's mechanism.
    pub fn mechanism(self) -> sasl::Mechanism {
        match self {
            SaslMech::Xoauth2 => sasl::Mechanism::Xoauth2,
            SaslMech::Oauthbearer => sasl::Mechanism::Oauthbearer,
        }
    }
}

/// `token NAME [--sasl xoauth2|oauthbearer] [--resource R]` as clap would read
/// it, or `None` to let clap parse (anything else, including every error: clap
/// words those). Start-up is the hot path: clap's command tree costs more than
/// the rest of the cached `token` path.
pub fn fast_token(args: &[OsString]) -> Option<TokenArgs> {
    let mut it = args.iter().skip(1).map(|a| a.to_str());
    if it.next()?? != "token" {
        return None;
    }
    let (mut name, mut sasl, mut resource) = (None, None, None);
    while let Some(arg) = it.next() {
        match arg? {
            "--sasl" if sasl.is_none() => {
                sasl = Some(match sasl::Mechanism::from_name(flag_value(it.next())?)? {
                    sasl::Mechanism::Xoauth2 => SaslMech::Xoauth2,
                    sasl::Mechanism::Oauthbearer => SaslMech::Oauthbearer,
                })
            }
            "--resource" if resource.is_none() => {
                resource = Some(flag_value(it.next())?.to_owned())
            }
            a if a.starts_with('-') || name.is_some() => return None,
            a => name = Some(a.to_owned()),
        }
    }
    Some(TokenArgs {
        name: name?,
        sasl,
        resource,
    })
}

/// The value after a flag; one that looks like a flag is a flag to clap (and a
/// repeated flag is clap's error), so those go to clap.
fn flag_value(v: Option<Option<&str>>) -> Option<&str> {
    v.flatten().filter(|v| !v.starts_with('-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn argv(words: &[&str]) -> Vec<OsString> {
        std::iter::once("mailoauth")
            .chain(words.iter().copied())
            .map(OsString::from)
            .collect()
    }

    /// What clap makes of `words` when it is a plain `token` command.
    fn clap_token(words: &[&str]) -> Option<TokenArgs> {
        let cli = Cli::try_parse_from(argv(words)).ok()?;
        match cli.command {
            Command::Token(t) if !cli.json && cli.verbose == 0 && !cli.quiet => Some(t),
            _ => None,
        }
    }

    #[test]
    fn fast_token_reads_what_mail_clients_run() {
        let t = fast_token(&argv(&["token", "work", "--sasl", "xoauth2"])).unwrap();
        assert_eq!(t.name, "work");
        assert_eq!(t.sasl, Some(SaslMech::Xoauth2));
        let t = fast_token(&argv(&["token", "--resource", "graph", "work"])).unwrap();
        assert_eq!(t.resource.as_deref(), Some("graph"));
        for other in [
            &["token"][..],
            &["token", "work", "--json"],
            &["token", "work", "--sasl", "plain"],
            &["token", "work", "--resource", "--sasl"],
            &["token", "a", "b"],
            &["status", "work"],
        ] {
            assert_eq!(fast_token(&argv(other)), None, "{other:?}");
        }
    }

    /// Words that make up argvs: names, values and flags, so that pieces like
    /// `--resource --sasl` or a repeated `--sasl` come up often.
    fn word() -> impl Strategy<Value = &'static str> {
        proptest::sample::select(vec![
            "work",
            "graph",
            "xoauth2",
            "oauthbearer",
            "plain",
            "--sasl",
            "--resource",
            "-v",
            "--json",
            "-q",
            "--",
            "--sasl=xoauth2",
            "--config",
            "-",
            "",
        ])
    }

    /// A piece of a `token` argv: a word, or a flag with a value.
    fn piece() -> impl Strategy<Value = Vec<&'static str>> {
        prop_oneof![
            word().prop_map(|w| vec![w]),
            word().prop_map(|v| vec!["--sasl", v]),
            word().prop_map(|v| vec!["--resource", v]),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        /// Every argv the fast parser accepts, clap accepts with the same meaning.
        #[test]
        fn fast_token_means_what_clap_means(
            first in proptest::sample::select(vec!["token", "status", "tok"]),
            pieces in proptest::collection::vec(piece(), 0..4),
        ) {
            let words: Vec<&str> = std::iter::once(first).chain(pieces.into_iter().flatten()).collect();
            if let Some(fast) = fast_token(&argv(&words)) {
                prop_assert_eq!(Some(fast), clap_token(&words), "argv {:?}", words);
            }
        }
    }
}
