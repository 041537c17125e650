//! The TOML configuration file: its schema, its loading, and its errors.
//!
//! Owns: parsing `config.toml` into [`Config`], secrets given as literal / `{ env }` /
//! `{ command }`, and errors that name file, line, key and the valid choices.
//! Must not: apply provider defaults (that is `providers`), or touch tokens.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

pub mod edit;

pub use crate::service::Service;

/// The whole config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Accounts by name.
    #[serde(default)]
    pub accounts: BTreeMap<String, AccountConfig>,
    /// The `[serve]` section of `mailoauth-serve`, kept unparsed: the CLI and the
    /// daemon do not read it, the service parses it with its own rules.
    #[serde(default)]
    pub serve: Option<toml::Table>,
    /// Where this config came from (not part of the file).
    #[serde(skip)]
    pub path: PathBuf,
    /// The file's text, kept to locate keys in later validation errors.
    #[serde(skip)]
    source: String,
}

/// Which provider preset an account starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Microsoft 365 / Outlook.com (Entra ID v2 endpoints).
    Microsoft,
    /// Gmail / Google Workspace.
    Google,
    /// Yahoo Mail.
    Yahoo,
    /// AOL Mail.
    Aol,
    /// Any OAuth 2.0 server; endpoints and scopes come from the config.
    Custom,
}

impl ProviderKind {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Microsoft => "microsoft",
            ProviderKind::Google => "google",
            ProviderKind::Yahoo => "yahoo",
            ProviderKind::Aol => "aol",
            ProviderKind::Custom => "custom",
        }
    }
}

/// Microsoft national clouds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cloud {
    /// Worldwide (login.microsoftonline.com).
    #[default]
    Global,
    /// US Government (GCC High).
    Usgov,
    /// China (21Vianet).
    China,
}

/// How tokens are acquired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlowKind {
    /// Authorization code with PKCE, through a browser.
    #[default]
    AuthCode,
    /// Device authorization grant (code typed on another device).
    Device,
    /// App-only client credentials (no user, no refresh token).
    ClientCredentials,
}

impl FlowKind {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FlowKind::AuthCode => "auth-code",
            FlowKind::Device => "device",
            FlowKind::ClientCredentials => "client-credentials",
        }
    }
}

/// Where tokens are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreKind {
    /// The keyring when reachable, else the 0600 file.
    #[default]
    Auto,
    /// The OS keyring (Secret Service, Keychain, Credential Manager).
    Keyring,
    /// A 0600 JSON file under the state directory.
    File,
    /// An XChaCha20-Poly1305 encrypted file under the state directory.
    EncryptedFile,
}

impl StoreKind {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Auto => "auto",
            StoreKind::Keyring => "keyring",
            StoreKind::File => "file",
            StoreKind::EncryptedFile => "encrypted-file",
        }
    }
}

/// Transport security of a mail server connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// TLS from the first byte (993, 995, 465).
    Implicit,
    /// Plain connection upgraded with STARTTLS / STLS.
    Starttls,
    /// No TLS: refused unless the host is loopback.
    None,
}

/// A mail server endpoint (`imap = { host = …, port = …, tls = … }`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Host name.
    pub host: String,
    /// Port; the protocol's default for the TLS mode when absent.
    pub port: Option<u16>,
    /// TLS mode; the provider's (or `implicit`) when absent.
    pub tls: Option<TlsMode>,
}

/// Local listeners of the proxy (used by the daemon).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// IMAP listen address.
    pub imap: Option<String>,
    /// POP3 listen address.
    pub pop: Option<String>,
    /// SMTP listen address.
    pub smtp: Option<String>,
    /// What local clients must send as password.
    pub password: Option<SecretSource>,
    /// Local TLS towards the clients: `none` (default), `starttls` (then required
    /// before login) or `implicit`.
    pub tls: Option<TlsMode>,
    /// PEM certificate chain for local TLS; a self-signed one is generated (and
    /// kept in the state directory) when absent.
    pub cert: Option<PathBuf>,
    /// PEM private key for `cert`.
    pub key: Option<PathBuf>,
    /// Seconds without traffic in either direction before a logged-in session is
    /// closed (default 1860: IMAP IDLE clients re-issue every 29 minutes).
    pub idle_timeout: Option<u64>,
    /// Most connections this account's listeners serve at once, logged in or
    /// not (default 2000; lowered to what the open-file limit allows). Past it a
    /// new connection gets the protocol's "try later" and is closed.
    pub max_sessions: Option<usize>,
    /// Most of those that have not logged in yet (default 500, at most
    /// `max_sessions`), so idle or guessing connections cannot take the places
    /// of logged-in sessions.
    pub max_unauthenticated: Option<usize>,
}

/// One account as written in the file; `providers::Account` is the resolved form.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// Provider preset.
    pub provider: ProviderKind,
    /// The mailbox address (also sent as `login_hint`).
    pub user: String,
    /// Microsoft tenant (default `common`).
    pub tenant: Option<String>,
    /// Microsoft national cloud.
    pub cloud: Option<Cloud>,
    /// OAuth client id of the registered app.
    pub client_id: Option<String>,
    /// Client secret for confidential clients.
    pub client_secret: Option<SecretSource>,
    /// PEM certificate for a certificate credential (client credentials with a signed assertion).
    pub client_certificate: Option<PathBuf>,
    /// PEM private key (PKCS#8 or PKCS#1 RSA) matching `client_certificate`.
    pub client_key: Option<PathBuf>,
    /// Acquisition flow.
    pub flow: Option<FlowKind>,
    /// Service shorthands the provider turns into scopes.
    pub services: Option<Vec<Service>>,
    /// Explicit scopes (replace the provider's).
    pub scopes: Option<Vec<String>>,
    /// Other resources a token can be minted for from the same login (`token --resource NAME`).
    pub resources: Option<BTreeMap<String, Vec<String>>>,
    /// Token store.
    pub store: Option<StoreKind>,
    /// Passphrase for the encrypted file store; without it the key lives in the keyring.
    pub passphrase: Option<SecretSource>,
    /// Seconds of validity a handed-out access token must still have (default 300).
    pub min_validity: Option<u64>,
    /// Shell command run when the account needs a new login.
    pub notify_command: Option<String>,
    /// Microsoft: authority (host + tenant) override.
    pub authority: Option<String>,
    /// Authorization endpoint override.
    pub authorize_url: Option<String>,
    /// Token endpoint override.
    pub token_url: Option<String>,
    /// Device authorization endpoint override.
    pub device_url: Option<String>,
    /// Revocation endpoint override (RFC 7009).
    pub revoke_url: Option<String>,
    /// Custom: the server's OIDC issuer; its discovery document
    /// (`{issuer}/.well-known/openid-configuration`) names the userinfo endpoint
    /// that tells who signed in when the tokens do not.
    pub issuer: Option<String>,
    /// Custom: the userinfo endpoint (OIDC), asked at login who signed in.
    pub userinfo_url: Option<String>,
    /// Redirect URI registered for the app; a missing port means "any free port".
    pub redirect_uri: Option<String>,
    /// Extra query parameters for the authorization request.
    pub authorize_params: Option<BTreeMap<String, String>>,
    /// IMAP server.
    pub imap: Option<ServerConfig>,
    /// POP3 server.
    pub pop: Option<ServerConfig>,
    /// SMTP submission server.
    pub smtp: Option<ServerConfig>,
    /// Certificates (PEM) trusted for this account's mail servers and the proxy's
    /// upstream: a private CA's root, or a server's own certificate, trusted as
    /// itself when presented (the `tls` module). Token endpoints do not use it.
    pub ca_file: Option<PathBuf>,
    /// Seconds before an HTTP request to the provider is abandoned (default 30).
    pub http_timeout: Option<u64>,
    /// Seconds a `{ command = … }` secret may take (default 60: a pinentry prompt
    /// needs a person); then its whole process group is killed.
    pub secret_timeout: Option<u64>,
    /// Largest message `fetch` accepts, in bytes (default 1 GiB): a server
    /// announcing more is misbehaving, or the message is better read elsewhere.
    pub max_message_size: Option<u64>,
    /// Proxy listeners for password-only clients.
    pub proxy: Option<ProxyConfig>,
}

/// A secret given literally, from an environment variable, or from a command's output.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(
    untagged,
    expecting = "a string, `{ env = \"VARIABLE\" }` or `{ command = \"shell command\" }`"
)]
pub enum SecretSource {
    /// Written in the file.
    Literal(String),
    /// `{ env = "NAME" }`.
    Env {
        /// Variable name.
        env: String,
    },
    /// `{ command = "pass show x" }`: first line of stdout.
    Command {
        /// Shell command, run with `sh -c`.
        command: String,
    },
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Literal(_) => f.write_str("Literal([redacted])"),
            SecretSource::Env { env } => write!(f, "Env({env})"),
            SecretSource::Command { command } => write!(f, "Command({command})"),
        }
    }
}

/// How long a secret command may take when the account does not say.
pub const DEFAULT_SECRET_TIMEOUT: Duration = Duration::from_secs(60);

/// Default `max_message_size`: 1 GiB, far above what providers deliver (Gmail
/// and Exchange Online cap messages at 25–150 MB) yet a bound on what a hostile
/// server can make `fetch` write.
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 1 << 30;

/// Most a secret command may print: a secret is a line, not a file.
const MAX_SECRET_OUTPUT: u64 = 64 * 1024;

impl SecretSource {
    /// Produce the secret within [`DEFAULT_SECRET_TIMEOUT`]. `what` names it in errors (never the value).
    pub fn resolve(&self, what: &str) -> Result<Zeroizing<String>> {
        self.resolve_within(what, DEFAULT_SECRET_TIMEOUT)
    }

    /// Produce the secret; a command gets `timeout` (`secret_timeout`), then it
    /// and everything it started are killed, so a pinentry waiting on nobody or a
    /// `pass` waiting on a locked agent cannot hang `token` or the daemon.
    pub fn resolve_within(&self, what: &str, timeout: Duration) -> Result<Zeroizing<String>> {
        match self {
            SecretSource::Literal(s) => Ok(Zeroizing::new(s.clone())),
            SecretSource::Env { env } => std::env::var(env).map(Zeroizing::new).map_err(|_| {
                Error::Usage(format!(
                    "{what}: environment variable `{env}` is not set (the config says {what} = {{ env = \"{env}\" }})"
                ))
            }),
            SecretSource::Command { command } => {
                if let Some(known) = remembered(command) {
                    return Ok(known);
                }
                let (status, stdout) = run_secret_command(what, command, timeout)?;
                if !status.success() {
                    return Err(Error::Usage(format!(
                        "{what}: command `{command}` failed ({status}); fix the command or the secret it reads"
                    )));
                }
                let stdout = Zeroizing::new(String::from_utf8_lossy(&stdout).into_owned());
                let first = stdout.lines().next().unwrap_or("").trim_end_matches('\r');
                if first.is_empty() {
                    return Err(Error::Usage(format!("{what}: command `{command}` printed nothing")));
                }
                remember(command, first);
                Ok(Zeroizing::new(first.to_owned()))
            }
        }
    }
}

/// Outputs of secret commands, by command, while a long-running process asked
/// for them to be kept ([`remember_secret_commands`]); `None` otherwise.
static REMEMBERED: std::sync::Mutex<Option<BTreeMap<String, Zeroizing<String>>>> =
    std::sync::Mutex::new(None);

/// Keep (`true`) or stop keeping and forget (`false`) what secret commands
/// print, in this process's memory only. The daemon keeps them: a command that
/// asks a pinentry or a `pass` agent must not run on every planning round or
/// refresh; a reload of the config forgets them. Failures are never kept, so a
/// command that failed or timed out is tried again (after the daemon's backoff).
pub fn remember_secret_commands(keep: bool) {
    let mut m = REMEMBERED.lock().unwrap_or_else(|p| p.into_inner());
    *m = keep.then(BTreeMap::new);
}

fn remembered(command: &str) -> Option<Zeroizing<String>> {
    let m = REMEMBERED.lock().unwrap_or_else(|p| p.into_inner());
    m.as_ref()?.get(command).cloned()
}

fn remember(command: &str, value: &str) {
    let mut m = REMEMBERED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(m) = m.as_mut() {
        m.insert(command.to_owned(), Zeroizing::new(value.to_owned()));
    }
}

/// Run `sh -c command` in a process group of its own; its exit status and
/// stdout, or an error once `timeout` has passed (the group is killed then).
fn run_secret_command(
    what: &str,
    command: &str,
    timeout: Duration,
) -> Result<(std::process::ExitStatus, Zeroizing<Vec<u8>>)> {
    use std::io::Read as _;
    use std::os::unix::process::CommandExt as _;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .map_err(|e| Error::io(format!("{what}: cannot run `{command}`"), e))?;
    let deadline = Instant::now() + timeout;
    let pid = child.id() as i32;
    let mut out = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    // The reader and the waiter run on threads so the deadline holds even if the
    // command never closes its stdout or never exits.
    let reader = std::thread::spawn(move || {
        let mut buf = Zeroizing::new(Vec::new());
        let _ = (&mut out).take(MAX_SECRET_OUTPUT).read_to_end(&mut buf);
        buf
    });
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return Err(Error::io(format!("{what}: waiting for `{command}`"), e)),
        Err(_) => {
            // SAFETY: kill(2) on our own child's process group; no memory is involved.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            return Err(Error::Usage(format!(
                "{what}: command `{command}` did not finish within {} s and was stopped; \
                 unlock what it waits for (a pinentry, a gpg or pass agent), or raise `secret_timeout`",
                timeout.as_secs_f32()
            )));
        }
    };
    // The command exited; what it left running keeps the pipe open at most
    // until the deadline.
    let (btx, brx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = btx.send(reader.join());
    });
    match brx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(Ok(stdout)) => Ok((status, stdout)),
        _ => {
            // SAFETY: as above.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            Err(Error::Usage(format!(
                "{what}: command `{command}` left a process holding its output open; \
                 make it print the secret and exit"
            )))
        }
    }
}

impl Config {
    /// Read and parse a config file.
    pub fn load(path: &Path) -> Result<Config> {
        let source = match std::fs::read_to_string(path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NoConfig {
                    path: path.to_owned(),
                });
            }
            Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
        };
        Self::parse(&source, path)
    }

    /// Parse config text; `path` is used in errors only.
    pub fn parse(source: &str, path: &Path) -> Result<Config> {
        let mut config: Config = toml::from_str(source).map_err(|e| {
            let line = e.span().map(|s| line_of(source, s.start));
            // Name the key, never its value: the line may hold a secret, and the
            // message goes to terminals, logs and bug reports.
            let key = line
                .and_then(|l| source.lines().nth(l - 1))
                .and_then(key_of_line)
                .map(|k| format!("`{k}`: "))
                .unwrap_or_default();
            Error::Config {
                path: path.to_owned(),
                line,
                message: format!("{key}{}", without_values(e.message().trim_end())),
            }
        })?;
        config.path = path.to_owned();
        config.source = source.to_owned();
        if let Some(bad) = config.accounts.keys().find(|n| !is_safe_name(n)) {
            return Err(config.error_at(
                bad,
                None,
                format!(
                    "account name `{}` has characters outside A-Z a-z 0-9 . _ @ - (or starts with \
                     one of . _ @ -); rename the account, e.g. `[accounts.{}]`",
                    bad.escape_debug(),
                    suggest_name(bad)
                ),
            ));
        }
        Ok(config)
    }

    /// The named account, or an error listing the known ones.
    pub fn account(&self, name: &str) -> Result<&AccountConfig> {
        self.accounts
            .get(name)
            .ok_or_else(|| Error::UnknownAccount {
                name: name.to_owned(),
                path: self.path.clone(),
                known: self.accounts.keys().cloned().collect(),
            })
    }

    /// A config error about `accounts.<account>.<key>`, pointing at its line.
    pub fn error_at(&self, account: &str, key: Option<&str>, message: impl Into<String>) -> Error {
        Error::Config {
            path: self.path.clone(),
            line: self.locate(account, key),
            message: message.into(),
        }
    }

    /// Line of `accounts.<account>.<key>` (or of the account's table), if the file says it.
    fn locate(&self, account: &str, key: Option<&str>) -> Option<usize> {
        let doc = toml_edit::Document::parse(self.source.as_str()).ok()?;
        let acct = doc
            .as_table()
            .get("accounts")?
            .as_table_like()?
            .get(account)?;
        let span = match key {
            Some(k) => acct
                .as_table_like()?
                .get(k)
                .and_then(|i| i.span())
                .or_else(|| acct.span())?,
            None => acct.span()?,
        };
        Some(line_of(&self.source, span.start))
    }
}

/// Account names become file names (tokens, locks, status) and appear in
/// snippets and shell commands, so they keep to an alphabet where the mapping to
/// a file is the identity: two accounts can never share a token file.
pub fn is_safe_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c))
        && name.len() <= 64
}

/// A safe name close to `name`: other characters become `-`.
pub fn suggest_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_start_matches(['.', '_', '@', '-']);
    let s: String = s.chars().take(64).collect();
    if s.is_empty() { "mail".to_owned() } else { s }
}

/// The key a `key = value` line sets, when the line is one.
fn key_of_line(line: &str) -> Option<&str> {
    let (k, _) = line.split_once('=')?;
    let k = k.trim();
    let bare = |c: char| c.is_ascii_alphanumeric() || "_-.\"' ".contains(c);
    (!k.is_empty() && !k.starts_with('[') && k.chars().all(bare)).then_some(k)
}

/// A deserialiser message with the input's values taken out: serde quotes the
/// offending value (`invalid type: string "GOCSPX-…"`) before "expected …", and
/// only what follows "expected" (the valid choices) is ours to show.
fn without_values(message: &str) -> String {
    let (head, tail) = match message.find("expected") {
        Some(i) => message.split_at(i),
        None => (message, ""),
    };
    let mut out = String::new();
    let mut quote = None;
    for c in head.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '`' || c == '"' || c == '\'' => quote = Some(c),
            None => out.push(c),
        }
    }
    // "invalid type: string , expected" → "invalid type: string, expected"
    let out = out
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace(" ,", ",");
    if tail.is_empty() {
        out
    } else {
        format!("{} {tail}", out.trim_end())
    }
}

fn line_of(source: &str, offset: usize) -> usize {
    source[..offset.min(source.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config> {
        Config::parse(s, Path::new("/cfg.toml"))
    }

    #[test]
    fn spec_example_parses() {
        let c = parse(
            r#"
[accounts.work]
provider = "microsoft"
user = "alice@contoso.com"
tenant = "contoso.onmicrosoft.com"
cloud = "global"
client_id = "00000000-0000-0000-0000-000000000000"
client_secret = { command = "echo s3cret" }
flow = "auth-code"
services = ["imap", "smtp"]
store = "auto"
min_validity = 300
notify_command = "notify-send mailoauth"

[accounts.other]
provider = "custom"
user = "bob@example.com"
authorize_url = "https://idp.example.com/oauth2/authorize"
token_url = "https://idp.example.com/oauth2/token"
imap = { host = "imap.example.com", port = 993, tls = "implicit" }
smtp = { host = "smtp.example.com", port = 587, tls = "starttls" }
"#,
        )
        .unwrap();
        assert_eq!(c.accounts.len(), 2);
        let w = &c.accounts["work"];
        assert_eq!(
            w.services.as_deref(),
            Some(&[Service::Imap, Service::Smtp][..])
        );
        assert_eq!(
            w.client_secret
                .as_ref()
                .unwrap()
                .resolve("client_secret")
                .unwrap()
                .as_str(),
            "s3cret"
        );
    }

    #[test]
    fn bad_enum_names_line_key_and_choices() {
        let e = parse("[accounts.a]\nprovider = \"microsfot\"\nuser = \"a@b\"\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("/cfg.toml:2:"), "{msg}");
        assert!(msg.contains("provider"), "{msg}");
        assert!(msg.contains("microsoft") && msg.contains("custom"), "{msg}");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse("[accounts.a]\nprovider = \"google\"\nuser = \"a@b\"\nclientid = \"x\"\n")
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(":4:") && msg.contains("clientid"), "{msg}");
    }

    #[test]
    fn garbage_is_a_config_error_not_a_panic() {
        let e = parse("[accounts.a\nprovider = ").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains(":1:"), "{e}");
    }

    #[test]
    fn secret_debug_never_shows_literal() {
        let s = SecretSource::Literal("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn error_at_finds_the_key_line() {
        let c = parse(
            "[accounts.a]\nprovider = \"custom\"\nuser = \"a@b\"\ntoken_url = \"http://x\"\n",
        )
        .unwrap();
        match c.error_at("a", Some("token_url"), "nope") {
            Error::Config { line, .. } => assert_eq!(line, Some(4)),
            e => panic!("{e}"),
        }
    }

    #[test]
    fn a_hanging_secret_command_is_stopped_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let src = SecretSource::Command {
            command: format!("sleep 30 & echo $! > {}; wait", pidfile.display()),
        };
        let started = Instant::now();
        let e = src
            .resolve_within("client_secret", Duration::from_millis(500))
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(e.to_string().contains("secret_timeout"), "{e}");
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        // The grandchild went with the group (gone, or a zombie awaiting its reaper).
        std::thread::sleep(Duration::from_millis(200));
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z "),
            "still running: {stat}"
        );
    }

    #[test]
    fn a_secret_command_gives_its_first_line() {
        let src = SecretSource::Command {
            command: "printf 's3cret\\nsecond\\n'".into(),
        };
        assert_eq!(src.resolve("x").unwrap().as_str(), "s3cret");
        let failing = SecretSource::Command {
            command: "exit 3".into(),
        };
        assert!(
            failing
                .resolve("x")
                .unwrap_err()
                .to_string()
                .contains("failed")
        );
    }

    #[test]
    fn config_errors_name_the_key_but_never_echo_its_value() {
        for text in [
            "[accounts.a]\nprovider = \"google\"\nuser = \"a@b\"\nclient_secret = 12345678\n",
            "[accounts.a]\nprovider = \"google\"\nuser = \"a@b\"\nclient_secret = { cmd = \"GOCSPX-secret\" }\n",
            "[accounts.a]\nprovider = \"GOCSPX-secret\"\nuser = \"a@b\"\n",
            "[accounts.a]\nprovider = \"google\"\nuser = \"a@b\"\nmin_validity = \"GOCSPX-secret\"\n",
            "[accounts.a]\nprovider = \"google\"\nuser = \"a@b\"\nclient_secret = \"GOCSPX-secret\n",
        ] {
            let msg = parse(text).unwrap_err().to_string();
            assert!(
                !msg.contains("GOCSPX") && !msg.contains("12345678"),
                "{msg}"
            );
            assert!(msg.contains(":4:") || msg.contains(":2:"), "{msg}");
        }
        let msg = parse(
            "[accounts.a]\nprovider = \"google\"\nuser = \"a@b\"\nclient_secret = 12345678\n",
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains("`client_secret`"), "{msg}");
    }

    #[test]
    fn account_names_that_would_collide_on_disk_are_refused() {
        let acct = |n: &str| format!("[accounts.{n}]\nprovider = \"google\"\nuser = \"a@b\"\n");
        let text = format!("{}{}", acct("\"a b\""), acct("a_b"));
        let e = parse(&text).unwrap_err().to_string();
        assert!(
            e.contains("`a b`") && e.contains("[accounts.a-b]") && e.contains(":1:"),
            "{e}"
        );
        for bad in ["\"../x\"", "\".hidden\"", "\"\"", "\"é\""] {
            assert!(parse(&acct(bad)).is_err(), "{bad}");
        }
        for good in ["work", "alice-contoso", "\"a.b_c@d\"", "W0rk"] {
            assert!(parse(&acct(good)).is_ok(), "{good}");
        }
    }
}
