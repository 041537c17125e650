//! The `mailoauth-serve` command line: parse, call the library, render errors.
//!
//! Must not: hold service logic (start-up is `app`, keys are `keys`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use mailoauth::Error;

use crate::settings::Settings;

/// The multi-user delegation service: people connect mailboxes, applications
/// get fresh tokens over HTTP.
#[derive(Parser)]
#[command(name = "mailoauth-serve", version)]
pub struct Cli {
    /// Config file (its `[serve]` section).
    #[arg(long, env = "MAILOAUTH_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Database URL (`sqlite:///path` or `postgres://…`); overrides `[serve] database`.
    #[arg(long, global = true)]
    database: Option<String>,
    /// Listen address; overrides `[serve] listen` (the base URL keeps following the config).
    #[arg(long, global = true)]
    listen: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default).
    Run,
    /// API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Print a new random master key (for `[serve] master_key`).
    Keygen,
    /// Import mailboxes with tokens obtained elsewhere: JSON lines on stdin,
    /// `{"connector","email","refresh_token","access_token","expires_at"}`
    /// (and an optional `reference`); prints `id<TAB>email` for each.
    Import,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key; its secret is printed once, on stdout.
    Create {
        /// A label for people.
        #[arg(long, default_value = "key")]
        name: String,
        /// A scope (repeat): accounts:read, accounts:write, token:read, mail:send, mail:read, admin.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Limit the key to this mailbox id (repeat).
        #[arg(long = "mailbox")]
        mailboxes: Vec<String>,
    },
    /// List keys (never their secrets).
    List,
}

/// Run the command line; the exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let level = std::env::var("MAILOAUTH_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(log::LevelFilter::Info);
    let _ = log::set_logger(&Stderr).map(|()| log::set_max_level(level));
    match run(cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("mailoauth-serve: {e}");
            e.exit_code()
        }
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    if let Some(Command::Keygen) = cli.command {
        println!("{}", crate::seal::Key::generate().to_text().as_str());
        return Ok(());
    }
    let path = cli
        .config
        .clone()
        .unwrap_or_else(mailoauth::paths::default_config_file);
    let settings = Settings::load(&path, cli.database.as_deref(), cli.listen.as_deref())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("cannot start the runtime", e))?;
    rt.block_on(async move {
        match cli.command {
            None | Some(Command::Run) => crate::app::run(settings).await,
            Some(Command::Keys(k)) => keys(&settings, k).await,
            Some(Command::Import) => {
                let (db, keys) = crate::app::open(&settings).await?;
                let n = crate::import::run(
                    std::sync::Arc::new(settings),
                    db,
                    keys,
                    std::io::stdin().lock(),
                )
                .await?;
                eprintln!("mailoauth-serve: imported {n} mailbox(es)");
                Ok(())
            }
            Some(Command::Keygen) => unreachable!("handled above"),
        }
    })
}

async fn keys(settings: &Settings, k: KeysCommand) -> Result<(), Error> {
    let (db, _) = crate::app::open(settings).await?;
    match k {
        KeysCommand::Create {
            name,
            scopes,
            mailboxes,
        } => {
            let (id, secret) = crate::keys::create(&db, &name, &scopes, &mailboxes).await?;
            eprintln!("mailoauth-serve: created {id}; the secret below is shown this once");
            println!("{secret}");
        }
        KeysCommand::List => {
            for k in db.api_keys().await? {
                let state = if k.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                let limit = if k.mailboxes.is_empty() {
                    "all mailboxes".to_owned()
                } else {
                    k.mailboxes
                };
                println!("{}\t{}\t{}\t{}\t{}", k.id, k.name, k.scopes, limit, state);
            }
        }
    }
    Ok(())
}

struct Stderr;

impl log::Log for Stderr {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        // Only our own crates: sqlx logs every statement at info.
        if r.target().starts_with("mailoauth") {
            eprintln!(
                "mailoauth-serve: {}: {}",
                r.level().as_str().to_lowercase(),
                r.args()
            );
        }
    }
    fn flush(&self) {}
}
