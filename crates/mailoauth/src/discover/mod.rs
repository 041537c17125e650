//! Onboarding from an email address: which provider, tenant, cloud, mail hosts,
//! ports and TLS modes an address needs, found from public, credential-free
//! signals (FACTS §7), each one kept with the reason it counts.
//!
//! Owns: the signals ([`signals`] parses each answer: consumer domains known
//! offline, MX, Entra OIDC metadata, Exchange Online autodiscover, Mozilla
//! autoconfig / ISPDB, RFC 6186 SRV, RFC 8414 metadata), running their lookups
//! in parallel on std threads under one deadline ([`run`]), and the decision
//! with its reasons, conflicts and what to pass to settle them ([`decide`]);
//! what a decision writes into an account ([`account`]) and how to get a
//! client id for it ([`steps`]).
//! Must not: write config or ask questions (the front ends do), send the
//! address anywhere but its own domain's servers and Microsoft's autodiscover
//! (asked only once Entra says the domain is a tenant), or start an async
//! runtime. Every base URL and the name server come from [`Options`], so tests
//! point discovery at local servers; nothing in [`Options`] ends up in an account.
//!
//! The front door is [`discover`]: an address and [`Options`] in, a
//! [`Decision`] out, with no side effect (the service's `/connect?email=` calls
//! it as the CLI's `add EMAIL` does).

pub mod account;
pub mod autoconfig;
pub mod decide;
pub mod json;
pub mod register;
pub mod run;
pub mod signals;
pub mod steps;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{Cloud, ProviderKind, TlsMode};
pub use decide::{Decision, Found, Verdict};
pub use signals::{AuthServer, Finding, Signal, SignalKind};

/// Where discovery looks and how long it may take. URL templates may contain
/// `{domain}` and `{email}` (the address, percent-encoded).
#[derive(Debug, Clone)]
pub struct Options {
    /// Entra OIDC metadata of a domain.
    pub entra_url: String,
    /// Exchange Online autodiscover of an address.
    pub autodiscover_url: String,
    /// The domain's own autoconfig documents, tried in order.
    pub autoconfig_urls: Vec<String>,
    /// Thunderbird's ISPDB.
    pub ispdb_url: String,
    /// RFC 8414 / OIDC metadata at the domain, tried in order.
    pub metadata_urls: Vec<String>,
    /// Name server (`IP:PORT`) instead of the system's.
    pub dns_server: Option<SocketAddr>,
    /// Trust only the CA certificates (PEM) in this file for discovery's HTTPS
    /// (tests' local servers); the system's roots otherwise.
    pub ca_file: Option<PathBuf>,
    /// The whole discovery ends within this time, answered or not.
    pub timeout: Duration,
    /// What the person said the provider is (`--provider`): settles conflicts.
    pub provider: Option<ProviderKind>,
    /// What the person said the tenant is (`--tenant`).
    pub tenant: Option<String>,
}

/// The whole-discovery bound the issue promises.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

impl Default for Options {
    fn default() -> Self {
        Options {
            entra_url: "https://login.microsoftonline.com/{domain}/v2.0/.well-known/openid-configuration".into(),
            autodiscover_url: "https://outlook.office365.com/autodiscover/autodiscover.json/v1.0/{email}?Protocol=AutodiscoverV1".into(),
            autoconfig_urls: vec![
                "https://autoconfig.{domain}/mail/config-v1.1.xml?emailaddress={email}".into(),
                "https://{domain}/.well-known/autoconfig/mail/config-v1.1.xml".into(),
            ],
            ispdb_url: "https://autoconfig.thunderbird.net/v1.1/{domain}".into(),
            metadata_urls: vec![
                "https://{domain}/.well-known/oauth-authorization-server".into(),
                "https://{domain}/.well-known/openid-configuration".into(),
            ],
            dns_server: None,
            ca_file: None,
            timeout: DEFAULT_TIMEOUT,
            provider: None,
            tenant: None,
        }
    }
}

/// Environment variables that move discovery (meant for tests; each replaces
/// one [`Options`] field; lists are separated by spaces).
pub const ENV_VARS: [&str; 7] = [
    "MAILOAUTH_DISCOVERY_ENTRA_URL",
    "MAILOAUTH_DISCOVERY_AUTODISCOVER_URL",
    "MAILOAUTH_DISCOVERY_AUTOCONFIG_URLS",
    "MAILOAUTH_DISCOVERY_ISPDB_URL",
    "MAILOAUTH_DISCOVERY_METADATA_URLS",
    "MAILOAUTH_DISCOVERY_CA_FILE",
    "MAILOAUTH_DISCOVERY_TIMEOUT_MS",
];

impl Options {
    /// The defaults with the `MAILOAUTH_DISCOVERY_*` variables and
    /// `MAILOAUTH_DNS_SERVER` applied; an unusable value is an error naming it.
    pub fn from_env() -> Result<Options, DiscoverError> {
        Self::from_vars(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// [`Options::from_env`] over any variable source.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Options, DiscoverError> {
        let mut o = Options::default();
        let bad = |k: &str, why: String| DiscoverError::BadOption(format!("{k}: {why}"));
        let list = |v: String| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        if let Some(v) = get("MAILOAUTH_DISCOVERY_ENTRA_URL") {
            o.entra_url = v;
        }
        if let Some(v) = get("MAILOAUTH_DISCOVERY_AUTODISCOVER_URL") {
            o.autodiscover_url = v;
        }
        if let Some(v) = get("MAILOAUTH_DISCOVERY_AUTOCONFIG_URLS") {
            o.autoconfig_urls = list(v);
        }
        if let Some(v) = get("MAILOAUTH_DISCOVERY_ISPDB_URL") {
            o.ispdb_url = v;
        }
        if let Some(v) = get("MAILOAUTH_DISCOVERY_METADATA_URLS") {
            o.metadata_urls = list(v);
        }
        if let Some(v) = get("MAILOAUTH_DISCOVERY_CA_FILE") {
            o.ca_file = Some(v.into());
        }
        if let Some(v) = get("MAILOAUTH_DISCOVERY_TIMEOUT_MS") {
            let ms: u64 = v
                .parse()
                .map_err(|_| bad("MAILOAUTH_DISCOVERY_TIMEOUT_MS", "not a number".into()))?;
            o.timeout = Duration::from_millis(ms.clamp(100, 60_000));
        }
        if let Some(v) = get("MAILOAUTH_DNS_SERVER") {
            o.dns_server = Some(v.parse().map_err(|_| {
                bad(
                    "MAILOAUTH_DNS_SERVER",
                    format!("`{}` is not IP:PORT", v.escape_debug()),
                )
            })?);
        }
        for u in o.autoconfig_urls.iter().chain(&o.metadata_urls).chain([
            &o.entra_url,
            &o.autodiscover_url,
            &o.ispdb_url,
        ]) {
            let probe = u.replace("{domain}", "example.com").replace("{email}", "a");
            crate::providers::check_url(&probe).map_err(|e| bad("discovery URL", e))?;
        }
        Ok(o)
    }
}

/// Why discovery could not even start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoverError {
    /// The input is not an email address.
    #[error(
        "`{0}` is not an email address: give the whole address, e.g. `mailoauth add alice@contoso.com`"
    )]
    NotAnAddress(String),
    /// An option (environment variable) is unusable.
    #[error("discovery option {0}")]
    BadOption(String),
}

/// The address split and checked: (address as given, domain lower-cased).
pub fn split_address(email: &str) -> Result<(String, String), DiscoverError> {
    let e = email.trim();
    let bad = || DiscoverError::NotAnAddress(e.escape_debug().to_string());
    let (local, domain) = e.rsplit_once('@').ok_or_else(bad)?;
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let domain_ok = domain.contains('.')
        && domain.len() <= 253
        && domain.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .chars()
            .all(|c| !c.is_control() && !c.is_whitespace() && c != '@');
    if !(domain_ok && local_ok) {
        return Err(bad());
    }
    Ok((format!("{local}@{domain}"), domain))
}

/// Discover everything an account for `email` needs. Never fails because a
/// lookup did: what answered, what did not and what conflicts are in the
/// [`Decision`]; only an unusable address or option is an error.
pub fn discover(email: &str, options: &Options) -> Result<Decision, DiscoverError> {
    let (email, domain) = split_address(email)?;
    let started = std::time::Instant::now();
    let (signals, lookups) = match signals::consumer(&domain) {
        // Consumer domains are known without the network.
        Some(s) => (vec![s], 0),
        None => run::lookups(&email, &domain, options)?,
    };
    let mut d = decide::decide(&email, &domain, signals, options);
    d.lookups = lookups;
    d.elapsed = started.elapsed();
    Ok(d)
}

/// The account name derived from an address, within the config's safe
/// alphabet: `alice@contoso.com` → `alice-contoso`.
pub fn account_name(email: &str) -> String {
    let (local, domain) = email.rsplit_once('@').unwrap_or((email, ""));
    let org = domain.split('.').next().unwrap_or("");
    let raw = if org.is_empty() {
        local.to_owned()
    } else {
        format!("{local}-{org}")
    };
    crate::config::suggest_name(&raw.to_ascii_lowercase())
}

/// A mail server's TLS mode in the config's spelling.
pub fn tls_str(t: TlsMode) -> &'static str {
    match t {
        TlsMode::Implicit => "implicit",
        TlsMode::Starttls => "starttls",
        TlsMode::None => "none",
    }
}

/// Parse a `--provider` value.
pub fn parse_provider(s: &str) -> Option<ProviderKind> {
    Some(match s.to_ascii_lowercase().as_str() {
        "microsoft" => ProviderKind::Microsoft,
        "google" => ProviderKind::Google,
        "yahoo" => ProviderKind::Yahoo,
        "aol" => ProviderKind::Aol,
        "custom" => ProviderKind::Custom,
        _ => return None,
    })
}

/// Parse a cloud name in the config's spelling.
pub fn parse_cloud(s: &str) -> Option<Cloud> {
    [Cloud::Global, Cloud::Usgov, Cloud::UsgovDod, Cloud::China]
        .into_iter()
        .find(|c| c.as_str() == s)
}
