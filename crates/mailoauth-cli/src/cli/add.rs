//! `mailoauth add`: create or update an account in the config file, keeping the
//! rest of the file (comments, order) as the user wrote it.
//!
//! Secrets are never taken as flag values (they would show in `ps` and shell
//! history): `--client-secret-env`, `--client-secret-command`, or
//! `--client-secret-stdin`.

use std::io::{BufRead, Write};
use std::path::Path;

use clap::Args;
use mailoauth::Error;
use mailoauth::config::edit::{self, Value};
use mailoauth::store::file::write_atomic;

#[derive(Args, Debug, Default)]
pub struct AddArgs {
    /// Account name; or an email address alone, to discover the provider, tenant, cloud and
    /// servers from it (MX, Entra, autodiscover, autoconfig, SRV, RFC 8414) and write the account
    pub(crate) name: String,
    /// With an address: the account's name (default: derived from the address, e.g. alice-contoso)
    #[arg(long = "name", value_name = "NAME")]
    pub(crate) account: Option<String>,
    /// With an address: show what discovery decides, write nothing
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// microsoft | google | yahoo | aol | custom
    #[arg(long)]
    pub(crate) provider: Option<String>,
    /// Mailbox address
    #[arg(long)]
    pub(crate) user: Option<String>,
    /// Microsoft tenant (domain or id; default common)
    #[arg(long)]
    pub(crate) tenant: Option<String>,
    /// Microsoft cloud: global | usgov | china
    #[arg(long)]
    pub(crate) cloud: Option<String>,
    /// OAuth client id of your app registration
    #[arg(long)]
    pub(crate) client_id: Option<String>,
    /// Read the client secret from this environment variable at run time
    #[arg(long, value_name = "VAR", conflicts_with_all = ["client_secret_command", "client_secret_stdin"])]
    pub(crate) client_secret_env: Option<String>,
    /// Run this shell command to get the client secret at run time
    #[arg(long, value_name = "CMD", conflicts_with = "client_secret_stdin")]
    pub(crate) client_secret_command: Option<String>,
    /// Read the client secret from stdin now and store it in the config (0600)
    #[arg(long)]
    pub(crate) client_secret_stdin: bool,
    /// auth-code | device | client-credentials
    #[arg(long)]
    pub(crate) flow: Option<String>,
    /// Services, comma-separated: imap,pop,smtp
    #[arg(long, value_delimiter = ',')]
    pub(crate) services: Vec<String>,
    /// Explicit scopes, comma-separated (replace the provider's)
    #[arg(long, value_delimiter = ',')]
    pub(crate) scopes: Vec<String>,
    /// auto | keyring | file | encrypted-file
    #[arg(long)]
    pub(crate) store: Option<String>,
    /// Authorization endpoint
    #[arg(long)]
    pub(crate) authorize_url: Option<String>,
    /// Token endpoint
    #[arg(long)]
    pub(crate) token_url: Option<String>,
    /// Device authorization endpoint
    #[arg(long)]
    pub(crate) device_url: Option<String>,
    /// Revocation endpoint
    #[arg(long)]
    pub(crate) revoke_url: Option<String>,
    /// Redirect URI registered for the app (loopback)
    #[arg(long)]
    pub(crate) redirect_uri: Option<String>,
    /// Seconds of validity a handed-out token must still have
    #[arg(long)]
    pub(crate) min_validity: Option<u64>,
    /// Command to run when the account needs a new login
    #[arg(long)]
    pub(crate) notify_command: Option<String>,
}

impl AddArgs {
    /// An address and no `--user`: the account is discovered (`onboard`).
    pub fn is_address(&self) -> bool {
        self.name.contains('@') && self.user.is_none()
    }

    fn is_empty(&self) -> bool {
        let AddArgs {
            name: _,
            account: _,
            dry_run: _,
            services,
            scopes,
            client_secret_stdin,
            min_validity,
            ..
        } = self;
        let strings = [
            &self.provider,
            &self.user,
            &self.tenant,
            &self.cloud,
            &self.client_id,
            &self.client_secret_env,
            &self.client_secret_command,
            &self.flow,
            &self.store,
            &self.authorize_url,
            &self.token_url,
            &self.device_url,
            &self.revoke_url,
            &self.redirect_uri,
            &self.notify_command,
        ];
        strings.iter().all(|s| s.is_none())
            && services.is_empty()
            && scopes.is_empty()
            && !client_secret_stdin
            && min_validity.is_none()
    }
}

fn read_stdin_line() -> Result<String, Error> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Error::Io {
            context: "stdin".into(),
            source: e,
        })?;
    Ok(line)
}

fn ask(prompt: &str, default: Option<&str>) -> Result<Option<String>, Error> {
    let d = default.map(|d| format!(" [{d}]")).unwrap_or_default();
    eprint!("{prompt}{d}: ");
    let _ = std::io::stderr().flush();
    let line = read_stdin_line()?;
    let t = line.trim();
    Ok(if t.is_empty() {
        default.map(str::to_owned)
    } else {
        Some(t.to_owned())
    })
}

fn interactive(args: &mut AddArgs) -> Result<(), Error> {
    eprintln!(
        "New account `{}` (Enter keeps the default in brackets).",
        args.name
    );
    args.provider = ask(
        "provider (microsoft, google, yahoo, aol, custom)",
        Some("microsoft"),
    )?;
    args.user = ask("mailbox address", None)?;
    args.client_id = ask("client id of your app registration", None)?;
    if args.provider.as_deref() == Some("microsoft") {
        args.tenant = ask("tenant (domain or id)", Some("common"))?;
    }
    if args.provider.as_deref() == Some("custom") {
        args.authorize_url = ask("authorization endpoint URL", None)?;
        args.token_url = ask("token endpoint URL", None)?;
        args.scopes = ask("scopes (comma-separated)", None)?
            .map(|s| s.split(',').map(|x| x.trim().to_owned()).collect())
            .unwrap_or_default();
    }
    args.flow = ask(
        "flow (auth-code, device, client-credentials)",
        Some("auth-code"),
    )?;
    Ok(())
}

/// Run `add`: the flags (or the answers) become keys of the account (an
/// address alone goes to `onboard` instead; see [`AddArgs::is_address`]).
pub fn run(path: &Path, args: &AddArgs) -> Result<(), Error> {
    if args.dry_run || args.account.is_some() {
        return Err(Error::Usage(
            "--dry-run and --name go with an address: mailoauth add alice@contoso.com --dry-run"
                .into(),
        ));
    }
    let mut asked;
    let args = if args.is_empty() {
        asked = AddArgs {
            name: args.name.clone(),
            ..AddArgs::default()
        };
        interactive(&mut asked)?;
        &asked
    } else {
        args
    };
    // A symlinked config (dotfiles) is edited where it lives; the link stays.
    let target = mailoauth::paths::through_symlinks(path);
    let text = match std::fs::read_to_string(&target) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io(format!("cannot read {}", target.display()), e)),
    };
    let new_text = edit::set_account_keys(&text, path, &args.name, &values(args)?)?;
    write_atomic(&target, new_text.as_bytes())?;
    eprintln!(
        "mailoauth: account `{}` saved in {}; next: mailoauth login {}",
        args.name,
        path.display(),
        args.name
    );
    Ok(())
}

/// The config keys the arguments set.
fn values(args: &AddArgs) -> Result<Vec<(&'static str, Value)>, Error> {
    let strings = [
        ("provider", &args.provider),
        ("user", &args.user),
        ("tenant", &args.tenant),
        ("cloud", &args.cloud),
        ("client_id", &args.client_id),
        ("flow", &args.flow),
        ("store", &args.store),
        ("authorize_url", &args.authorize_url),
        ("token_url", &args.token_url),
        ("device_url", &args.device_url),
        ("revoke_url", &args.revoke_url),
        ("redirect_uri", &args.redirect_uri),
        ("notify_command", &args.notify_command),
    ];
    let mut out: Vec<(&'static str, Value)> = strings
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, Value::Str(v))))
        .collect();
    for (k, l) in [("services", &args.services), ("scopes", &args.scopes)] {
        if !l.is_empty() {
            out.push((k, Value::List(l.clone())));
        }
    }
    if let Some(m) = args.min_validity {
        out.push(("min_validity", Value::Int(m as i64)));
    }
    let source = |kind, v: &String| Value::Source {
        kind,
        value: v.clone(),
    };
    if let Some(v) = &args.client_secret_env {
        out.push(("client_secret", source("env", v)));
    }
    if let Some(v) = &args.client_secret_command {
        out.push(("client_secret", source("command", v)));
    }
    if args.client_secret_stdin {
        let line = read_stdin_line()?;
        let secret = line.trim_end_matches(['\r', '\n']).to_owned();
        out.push(("client_secret", Value::Str(secret)));
    }
    Ok(out)
}
