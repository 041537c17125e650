//! The TOML configuration file: its schema, its loading, and its errors.
//!
//! Owns: parsing `config.toml` into [`Config`] (secrets given as literal / `{ env }` /
//! `{ command }` are in `secret`), and errors that name file, line, key and the valid choices.
//! Must not: apply provider defaults (that is `providers`), or touch tokens.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

pub mod edit;
mod secret;

pub use secret::{DEFAULT_SECRET_TIMEOUT, SecretSource, remember_secret_commands};

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
    /// US Government DoD (same sign-in host as GCC High, its own mail hosts).
    #[serde(rename = "usgov-dod")]
    UsgovDod,
    /// China (21Vianet).
    China,
}

impl Cloud {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Cloud::Global => "global",
            Cloud::Usgov => "usgov",
            Cloud::UsgovDod => "usgov-dod",
            Cloud::China => "china",
        }
    }
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

impl AccountConfig {
    /// An account of `provider` with nothing else set (an empty `user`): the
    /// starting point for code that builds accounts, e.g. onboarding.
    pub fn bare(provider: ProviderKind) -> AccountConfig {
        AccountConfig {
            provider,
            user: String::new(),
            tenant: None,
            cloud: None,
            client_id: None,
            client_secret: None,
            client_certificate: None,
            client_key: None,
            flow: None,
            services: None,
            scopes: None,
            resources: None,
            store: None,
            passphrase: None,
            min_validity: None,
            notify_command: None,
            authority: None,
            authorize_url: None,
            token_url: None,
            device_url: None,
            revoke_url: None,
            issuer: None,
            userinfo_url: None,
            redirect_uri: None,
            authorize_params: None,
            imap: None,
            pop: None,
            smtp: None,
            ca_file: None,
            http_timeout: None,
            secret_timeout: None,
            max_message_size: None,
            proxy: None,
        }
    }
}

/// Default `max_message_size`: 1 GiB, far above what providers deliver (Gmail
/// and Exchange Online cap messages at 25–150 MB) yet a bound on what a hostile
/// server can make `fetch` write.
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 1 << 30;

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
