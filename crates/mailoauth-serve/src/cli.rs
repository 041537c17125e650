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
    /// (and optional `obtained_at`, `reference`); without `access_token` and
    /// `expires_at` the refresh token is redeemed once at the provider (paced
    /// at `refresh_rate`). Prints `id<TAB>email` for each.
    Import,
    /// Re-wrap the data keys under a new master key (the rows are not touched);
    /// prints what to change in the config.
    #[command(group(clap::ArgGroup::new("new").required(true)))]
    RotateKey {
        /// The new master key is in this file (`keygen > FILE`).
        #[arg(long, group = "new", value_name = "PATH")]
        new_master_key_file: Option<PathBuf>,
        /// The new master key is in this environment variable.
        #[arg(long, group = "new", value_name = "VAR")]
        new_master_key_env: Option<String>,
        /// This command prints the new master key (e.g. `pass show serve-key`).
        #[arg(long, group = "new", value_name = "COMMAND")]
        new_master_key_command: Option<String>,
    },
    /// Seal every stored token under a new data key, then retire the old data keys.
    Reencrypt,
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
    /// Revoke a key: every node refuses it within seconds, and its admin page
    /// sessions end.
    Revoke {
        /// The key's id (`keys list`), e.g. `key_AbC123`.
        id: String,
    },
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
            Some(Command::RotateKey {
                new_master_key_file,
                new_master_key_env,
                new_master_key_command,
            }) => {
                use crate::keyops::NewMaster;
                let new = match (new_master_key_file, new_master_key_env, new_master_key_command) {
                    (Some(f), _, _) => NewMaster::File(f),
                    (_, Some(v), _) => NewMaster::Env(v),
                    (_, _, Some(c)) => NewMaster::Command(c),
                    _ => unreachable!("clap requires one"),
                };
                let text = crate::keyops::rotate(&settings, &new).await?;
                print!("{text}");
                Ok(())
            }
            Some(Command::Reencrypt) => {
                let (db, keys) = crate::app::open(&settings).await?;
                let r = crate::keyops::reencrypt(&db, &keys).await?;
                println!(
                    "re-sealed {} mailbox record(s) and {} pending sign-in(s) under the new data key {}; \
                     {} old data key(s) retired (kept to open anything a running node wrote meanwhile: \
                     run reencrypt again to move it)",
                    r.records, r.sign_ins, r.key_id, r.retired
                );
                Ok(())
            }
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
        KeysCommand::Revoke { id } => {
            if db.revoke_api_key(&id, mailoauth::clock::now()).await? {
                eprintln!(
                    "mailoauth-serve: revoked {id}; running nodes refuse it within {} s",
                    crate::cluster::HEARTBEAT.as_secs()
                );
            } else if db.api_keys().await?.iter().any(|k| k.id == id) {
                eprintln!("mailoauth-serve: {id} was already revoked");
            } else {
                return Err(Error::Usage(format!(
                    "no API key `{}`; `mailoauth-serve keys list` shows the ids",
                    mailoauth::text::printable(&id)
                )));
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
