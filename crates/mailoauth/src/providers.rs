//! Provider presets, as data, and the resolution of a config account into an
//! [`Account`] with every endpoint, scope and host decided.
//!
//! Owns: what Microsoft / Google / Yahoo / AOL look like (endpoints, scope
//! shorthands, mail hosts, quirks) and the validation of a resolved account
//! (loopback-only `http://`, flow requirements). Must not: do any I/O.
//! Every value here can be overridden per account, so the same code serves a
//! national cloud, a test server, or an unknown provider.
//!
//! Size: the presets are data, one block per provider, best read side by side,
//! and `resolve` checks every key of an account in one pass (each config error
//! names its key); splitting either would scatter what a provider is.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::config::{
    AccountConfig, Cloud, Config, FlowKind, ProviderKind, SecretSource, ServerConfig, Service,
    StoreKind, TlsMode,
};
use crate::error::Result;

/// Name of the mail resource in [`Account::resources`].
pub const MAIL_RESOURCE: &str = "mail";

/// A mail server, fully resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Host name.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS mode.
    pub tls: TlsMode,
}

/// An account with all provider defaults applied; what every other module uses.
#[derive(Debug, Clone)]
pub struct Account {
    /// The config name.
    pub name: String,
    /// Provider preset it came from.
    pub provider: ProviderKind,
    /// Mailbox address.
    pub user: String,
    /// Acquisition flow.
    pub flow: FlowKind,
    /// OAuth client id.
    pub client_id: String,
    /// Client secret source, for confidential clients.
    pub client_secret: Option<SecretSource>,
    /// Certificate credential: (certificate PEM, private key PEM).
    pub client_certificate: Option<(PathBuf, PathBuf)>,
    /// Authorization endpoint.
    pub authorize_url: String,
    /// Token endpoint.
    pub token_url: String,
    /// Device authorization endpoint, when the provider has one.
    pub device_url: Option<String>,
    /// Revocation endpoint, when the provider has one.
    pub revoke_url: Option<String>,
    /// Redirect URI (scheme, host, path; port 0 = any free port).
    pub redirect_uri: String,
    /// Extra authorization request parameters (e.g. Google's `access_type=offline`).
    pub authorize_params: BTreeMap<String, String>,
    /// Scopes per resource; [`MAIL_RESOURCE`] is the default one. Each entry is
    /// complete (identity and offline scopes included where the provider wants them).
    pub resources: BTreeMap<String, Vec<String>>,
    /// Token store.
    pub store: StoreKind,
    /// Passphrase source for the encrypted file store.
    pub passphrase: Option<SecretSource>,
    /// Seconds of validity a handed-out token must still have.
    pub min_validity: u64,
    /// Command to run when a new login is needed.
    pub notify_command: Option<String>,
    /// Mail servers.
    pub imap: Option<Server>,
    /// POP3 server.
    pub pop: Option<Server>,
    /// SMTP server.
    pub smtp: Option<Server>,
    /// Certificates trusted for the mail servers: CA roots, or server certificates pinned as themselves.
    pub ca_file: Option<PathBuf>,
    /// HTTP timeout towards the provider, seconds.
    pub http_timeout: u64,
    /// How long a `{ command = … }` secret may take.
    pub secret_timeout: std::time::Duration,
    /// Largest message `fetch` accepts, in bytes (`max_message_size`).
    pub max_message_size: u64,
    /// The services the account's config names (`services`; IMAP and SMTP when
    /// it names none).
    pub services: Vec<Service>,
    /// True when the config lists `scopes` itself: then `services` decides nothing.
    pub explicit_scopes: bool,
    /// What a token needs for each protocol, as the provider names it: a
    /// delegated scope, or for client credentials an app role (Microsoft's
    /// `roles` claim). Empty when the provider's rules are unknown (custom).
    pub needs: BTreeMap<Service, String>,
    /// OIDC issuer (custom accounts), for discovering the userinfo endpoint.
    pub issuer: Option<String>,
    /// Userinfo endpoint (custom accounts), asked at login who signed in.
    pub userinfo_url: Option<String>,
}

struct MicrosoftCloud {
    login_host: &'static str,
    /// Prefix of delegated mail scopes (the resource of IMAP/POP/SMTP).
    scope_prefix: &'static str,
    /// App-only mail scope.
    app_scope: &'static str,
    graph_scope: &'static str,
    imap_pop_host: &'static str,
    smtp_host: &'static str,
}

fn microsoft_cloud(c: Cloud) -> MicrosoftCloud {
    match c {
        Cloud::Global => MicrosoftCloud {
            login_host: "https://login.microsoftonline.com",
            scope_prefix: "https://outlook.office.com/",
            app_scope: "https://outlook.office365.com/.default",
            graph_scope: "https://graph.microsoft.com/.default",
            imap_pop_host: "outlook.office365.com",
            smtp_host: "smtp.office365.com",
        },
        Cloud::Usgov => MicrosoftCloud {
            login_host: "https://login.microsoftonline.us",
            scope_prefix: "https://outlook.office365.us/",
            app_scope: "https://outlook.office365.us/.default",
            graph_scope: "https://graph.microsoft.us/.default",
            imap_pop_host: "outlook.office365.us",
            smtp_host: "smtp.office365.us",
        },
        // FACTS §1: DoD shares GCC High's sign-in host and has its own mail
        // host for IMAP, POP and SMTP. Its scope prefix is unverified (⚠): the
        // mail host is the resource, as in the other clouds; `scopes` overrides it.
        Cloud::UsgovDod => MicrosoftCloud {
            login_host: "https://login.microsoftonline.us",
            scope_prefix: "https://outlook-dod.office365.us/",
            app_scope: "https://outlook-dod.office365.us/.default",
            graph_scope: "https://dod-graph.microsoft.us/.default",
            imap_pop_host: "outlook-dod.office365.us",
            smtp_host: "outlook-dod.office365.us",
        },
        Cloud::China => MicrosoftCloud {
            login_host: "https://login.partner.microsoftonline.cn",
            scope_prefix: "https://partner.outlook.cn/",
            app_scope: "https://partner.outlook.cn/.default",
            graph_scope: "https://microsoftgraph.chinacloudapi.cn/.default",
            imap_pop_host: "partner.outlook.cn",
            smtp_host: "partner.outlook.cn",
        },
    }
}

/// The cloud's sign-in host, unless `MAILOAUTH_MICROSOFT_LOGIN_HOST` names
/// another (tests point it at a local authorization server that answers
/// Microsoft's path shapes). Read where the preset resolves, so it is never
/// written into an account; an account's own `authority` still wins.
fn login_host(cloud: &MicrosoftCloud) -> String {
    std::env::var("MAILOAUTH_MICROSOFT_LOGIN_HOST")
        .ok()
        .filter(|h| check_url(h).is_ok())
        .map(|h| h.trim_end_matches('/').to_owned())
        .unwrap_or_else(|| cloud.login_host.to_owned())
}

/// Everything a preset decides; `custom` leaves it all empty.
#[derive(Default)]
struct Preset {
    authorize_url: Option<String>,
    token_url: Option<String>,
    device_url: Option<String>,
    revoke_url: Option<String>,
    /// Scopes of the mail resource for the given services.
    mail_scopes: Vec<String>,
    /// App-only scope for client credentials.
    app_scopes: Vec<String>,
    /// What a delegated token needs per protocol (a scope).
    needs: Vec<(Service, String)>,
    /// What an app-only token needs per protocol (a role).
    app_needs: Vec<(Service, String)>,
    /// Scopes that name the signed-in user (id_token), added for delegated flows.
    identity_scopes: Vec<&'static str>,
    /// Scope that asks for a refresh token (Microsoft); Google uses a parameter instead.
    offline_scope: Option<&'static str>,
    authorize_params: Vec<(&'static str, &'static str)>,
    other_resources: Vec<(&'static str, Vec<String>)>,
    redirect_uri: &'static str,
    imap: Option<(String, u16, TlsMode)>,
    pop: Option<(String, u16, TlsMode)>,
    smtp: Option<(String, u16, TlsMode)>,
}

fn preset(a: &AccountConfig, services: &[Service]) -> Preset {
    match a.provider {
        ProviderKind::Microsoft => {
            let cloud = microsoft_cloud(a.cloud.unwrap_or_default());
            let tenant = a.tenant.as_deref().unwrap_or("common");
            let authority = a
                .authority
                .clone()
                .unwrap_or_else(|| format!("{}/{tenant}", login_host(&cloud)))
                .trim_end_matches('/')
                .to_owned();
            let delegated = |s: &Service| {
                let name = match s {
                    Service::Imap => "IMAP.AccessAsUser.All",
                    Service::Pop => "POP.AccessAsUser.All",
                    Service::Smtp => "SMTP.Send",
                };
                format!("{}{name}", cloud.scope_prefix)
            };
            let mail_scopes = services.iter().map(delegated).collect();
            // Exchange Online checks one permission per protocol: a token for
            // IMAP and SMTP does not open POP3 (FACTS §1, scopes and roles).
            let needs = Service::ALL.iter().map(|s| (*s, delegated(s))).collect();
            let app_needs = [
                (Service::Imap, "IMAP.AccessAsApp"),
                (Service::Pop, "POP.AccessAsApp"),
                (Service::Smtp, "SMTP.SendAsApp"),
            ]
            .into_iter()
            .map(|(s, r)| (s, r.to_owned()))
            .collect();
            Preset {
                authorize_url: Some(format!("{authority}/oauth2/v2.0/authorize")),
                token_url: Some(format!("{authority}/oauth2/v2.0/token")),
                device_url: Some(format!("{authority}/oauth2/v2.0/devicecode")),
                // Microsoft has no RFC 7009 endpoint for refresh tokens.
                revoke_url: None,
                mail_scopes,
                app_scopes: vec![cloud.app_scope.into()],
                needs,
                app_needs,
                identity_scopes: vec!["openid", "profile"],
                offline_scope: Some("offline_access"),
                authorize_params: vec![],
                other_resources: vec![("graph", vec![cloud.graph_scope.into()])],
                // Microsoft ignores the port of a localhost redirect URI, so the
                // registration `http://localhost` serves any free port.
                redirect_uri: "http://localhost/",
                imap: Some((cloud.imap_pop_host.into(), 993, TlsMode::Implicit)),
                pop: Some((cloud.imap_pop_host.into(), 995, TlsMode::Implicit)),
                smtp: Some((cloud.smtp_host.into(), 587, TlsMode::Starttls)),
            }
        }
        ProviderKind::Google => Preset {
            authorize_url: Some("https://accounts.google.com/o/oauth2/v2/auth".into()),
            token_url: Some("https://oauth2.googleapis.com/token".into()),
            device_url: Some("https://oauth2.googleapis.com/device/code".into()),
            revoke_url: Some("https://oauth2.googleapis.com/revoke".into()),
            mail_scopes: vec!["https://mail.google.com/".into()],
            app_scopes: vec![],
            // One scope covers IMAP, POP3 and SMTP.
            needs: Service::ALL
                .iter()
                .map(|s| (*s, "https://mail.google.com/".to_owned()))
                .collect(),
            app_needs: vec![],
            identity_scopes: vec!["openid", "email"],
            offline_scope: None,
            // Without access_type=offline Google returns no refresh token; without
            // prompt=consent it returns none on a second login of the same app.
            authorize_params: vec![("access_type", "offline"), ("prompt", "consent")],
            other_resources: vec![],
            redirect_uri: "http://127.0.0.1/",
            imap: Some(("imap.gmail.com".into(), 993, TlsMode::Implicit)),
            pop: Some(("pop.gmail.com".into(), 995, TlsMode::Implicit)),
            smtp: Some(("smtp.gmail.com".into(), 587, TlsMode::Starttls)),
        },
        ProviderKind::Yahoo | ProviderKind::Aol => {
            let (login, mail) = if a.provider == ProviderKind::Yahoo {
                ("yahoo", "mail.yahoo")
            } else {
                ("aol", "aol")
            };
            Preset {
                authorize_url: Some(format!("https://api.login.{login}.com/oauth2/request_auth")),
                token_url: Some(format!("https://api.login.{login}.com/oauth2/get_token")),
                mail_scopes: vec!["mail-w".into()],
                // No `needs`: their tokens are opaque and how their token answers
                // spell the granted scope is unverified, so a check would guess.
                redirect_uri: "http://localhost/",
                imap: Some((format!("imap.{mail}.com"), 993, TlsMode::Implicit)),
                pop: Some((format!("pop.{mail}.com"), 995, TlsMode::Implicit)),
                smtp: Some((format!("smtp.{mail}.com"), 465, TlsMode::Implicit)),
                ..Preset::default()
            }
        }
        ProviderKind::Custom => Preset {
            redirect_uri: "http://127.0.0.1/",
            ..Preset::default()
        },
    }
}

/// The mail servers a preset names (IMAP, POP3, SMTP), for `cloud` when the
/// provider is Microsoft; none for `custom`. Onboarding shows them before an
/// account exists.
pub fn preset_servers(provider: ProviderKind, cloud: Cloud) -> [Option<Server>; 3] {
    let mut a = AccountConfig::bare(provider);
    a.cloud = Some(cloud);
    let p = preset(&a, &[]);
    [p.imap, p.pop, p.smtp].map(|s| s.map(|(host, port, tls)| Server { host, port, tls }))
}

fn default_port(kind: Service, tls: TlsMode) -> u16 {
    match (kind, tls) {
        (Service::Imap, TlsMode::Implicit) => 993,
        (Service::Imap, _) => 143,
        (Service::Pop, TlsMode::Implicit) => 995,
        (Service::Pop, _) => 110,
        (Service::Smtp, TlsMode::Implicit) => 465,
        (Service::Smtp, _) => 587,
    }
}

/// True for `localhost`, `127.0.0.0/8` and `::1`.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if h.eq_ignore_ascii_case("localhost") {
        return true;
    }
    h.parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

/// Resolve config account `name` into an [`Account`], validating it.
pub fn resolve(config: &Config, name: &str) -> Result<Account> {
    let a = config.account(name)?;
    let err = |key: &str, msg: String| config.error_at(name, Some(key), msg);
    let flow = a.flow.unwrap_or_default();
    let services = a
        .services
        .clone()
        .unwrap_or_else(|| vec![Service::Imap, Service::Smtp]);
    let p = preset(a, &services);

    if a.provider != ProviderKind::Microsoft {
        for (key, set) in [
            ("tenant", a.tenant.is_some()),
            ("cloud", a.cloud.is_some()),
            ("authority", a.authority.is_some()),
        ] {
            if set {
                return Err(err(
                    key,
                    format!("`{key}` only applies to provider = \"microsoft\"; remove it"),
                ));
            }
        }
    }
    if a.provider != ProviderKind::Custom {
        for (key, set) in [
            ("issuer", a.issuer.is_some()),
            ("userinfo_url", a.userinfo_url.is_some()),
        ] {
            if set {
                return Err(err(
                    key,
                    format!(
                        "`{key}` only applies to provider = \"custom\" ({} names the signed-in user \
                         in its id token); remove it",
                        a.provider.as_str()
                    ),
                ));
            }
        }
    }
    if a.user.trim().is_empty() {
        return Err(err(
            "user",
            "`user` is empty; set it to the mailbox address".into(),
        ));
    }

    let client_id = match &a.client_id {
        Some(c) if !c.trim().is_empty() => c.clone(),
        _ => {
            return Err(err(
                "client_id",
                format!(
                    "`client_id` is missing: register an app with {} and put its client id here",
                    a.provider.as_str()
                ),
            ));
        }
    };

    let pick =
        |key: &str, over: &Option<String>, preset: Option<String>| -> Result<Option<String>> {
            let v = over.clone().or(preset);
            if let Some(u) = &v {
                check_url(u).map_err(|m| err(key, m))?;
            }
            Ok(v)
        };
    let authorize_url = pick("authorize_url", &a.authorize_url, p.authorize_url)?;
    let token_url = pick("token_url", &a.token_url, p.token_url)?.ok_or_else(|| {
        err(
            "token_url",
            "`token_url` is required for provider = \"custom\" (the token endpoint URL)".into(),
        )
    })?;
    let device_url = pick("device_url", &a.device_url, p.device_url)?;
    let revoke_url = pick("revoke_url", &a.revoke_url, p.revoke_url)?;
    let userinfo_url = pick("userinfo_url", &a.userinfo_url, None)?;
    let issuer = pick("issuer", &a.issuer, None)?.map(|i| i.trim_end_matches('/').to_owned());
    let redirect_uri = a
        .redirect_uri
        .clone()
        .unwrap_or_else(|| p.redirect_uri.to_owned());
    check_redirect_uri(&redirect_uri).map_err(|m| err("redirect_uri", m))?;

    // Mail scopes: explicit `scopes` win; otherwise the provider's service shorthands.
    let client_credentials = flow == FlowKind::ClientCredentials;
    let base: Vec<String> = match (&a.scopes, client_credentials) {
        (Some(s), _) => s.clone(),
        (None, true) => p.app_scopes.clone(),
        (None, false) => p.mail_scopes.clone(),
    };
    if base.is_empty() {
        return Err(err(
            "scopes",
            format!(
                "no scopes: provider \"{}\" has no {} preset; set `scopes = [\"…\"]`",
                a.provider.as_str(),
                if client_credentials {
                    "client-credentials"
                } else {
                    "service"
                }
            ),
        ));
    }
    // Userinfo answers only tokens granted `openid` (OIDC Core §5.3).
    let wants_userinfo = userinfo_url.is_some() || issuer.is_some();
    let complete = |mut scopes: Vec<String>| {
        if !client_credentials {
            if a.scopes.is_none() {
                scopes.extend(p.identity_scopes.iter().map(|s| s.to_string()));
            }
            if wants_userinfo && !scopes.iter().any(|s| s == "openid") {
                scopes.push("openid".to_owned());
            }
            if let Some(off) = p.offline_scope {
                // Microsoft issues no refresh token without it; easy to forget in `scopes`.
                if !scopes.iter().any(|s| s == off) {
                    scopes.push(off.to_owned());
                }
            }
        }
        scopes
    };
    let mut resources = BTreeMap::new();
    resources.insert(MAIL_RESOURCE.to_owned(), complete(base));
    for (n, s) in p.other_resources {
        resources.insert(n.to_owned(), complete(s));
    }
    for (n, s) in a.resources.iter().flatten() {
        resources.insert(n.clone(), complete(s.clone()));
    }

    match flow {
        FlowKind::AuthCode if authorize_url.is_none() => {
            return Err(err(
                "authorize_url",
                "flow \"auth-code\" needs `authorize_url` (the authorization endpoint)".into(),
            ));
        }
        FlowKind::Device if a.provider == ProviderKind::Google => {
            return Err(err(
                "flow",
                "Google's device flow refuses the Gmail scope (invalid_scope); use flow = \"auth-code\" \
                 (with --no-browser on a headless machine)"
                    .into(),
            ));
        }
        FlowKind::Device if device_url.is_none() => {
            return Err(err(
                "device_url",
                "flow \"device\" needs `device_url` (the device authorization endpoint)".into(),
            ));
        }
        FlowKind::ClientCredentials => {
            if a.client_secret.is_none() && a.client_certificate.is_none() {
                return Err(err(
                    "client_secret",
                    "flow \"client-credentials\" needs `client_secret`, or `client_certificate` + `client_key`".into(),
                ));
            }
            if a.provider == ProviderKind::Microsoft
                && a.authority.is_none()
                && matches!(
                    a.tenant.as_deref(),
                    None | Some("common" | "organizations" | "consumers")
                )
            {
                return Err(err(
                    "tenant",
                    "client credentials need a real tenant (its domain or id), not common/organizations/consumers"
                        .into(),
                ));
            }
        }
        _ => {}
    }
    let client_certificate = match (&a.client_certificate, &a.client_key) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone())),
        (None, None) => None,
        (Some(_), None) => {
            return Err(err(
                "client_certificate",
                "`client_certificate` needs `client_key` too".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(err(
                "client_key",
                "`client_key` needs `client_certificate` too".into(),
            ));
        }
    };

    let server = |key: &str,
                  kind: Service,
                  over: &Option<ServerConfig>,
                  preset: Option<(String, u16, TlsMode)>| {
        let s = match (over, preset) {
            (Some(o), p) => {
                let tls = o
                    .tls
                    .or(p.as_ref().map(|p| p.2))
                    .unwrap_or(TlsMode::Implicit);
                Server {
                    host: o.host.clone(),
                    port: o.port.unwrap_or(default_port(kind, tls)),
                    tls,
                }
            }
            (None, Some((host, port, tls))) => Server { host, port, tls },
            (None, None) => return Ok(None),
        };
        if s.tls == TlsMode::None && !is_loopback_host(&s.host) {
            return Err(err(
                key,
                format!(
                    "tls = \"none\" is refused for non-loopback host `{}`: use implicit or starttls",
                    s.host
                ),
            ));
        }
        Ok(Some(s))
    };

    Ok(Account {
        name: name.to_owned(),
        provider: a.provider,
        user: a.user.trim().to_owned(),
        flow,
        client_id,
        client_secret: a.client_secret.clone(),
        client_certificate,
        authorize_url: authorize_url.unwrap_or_default(),
        token_url,
        device_url,
        revoke_url,
        redirect_uri,
        authorize_params: p
            .authorize_params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain(a.authorize_params.clone().unwrap_or_default())
            .collect(),
        resources,
        store: a.store.unwrap_or_default(),
        passphrase: a.passphrase.clone(),
        min_validity: a.min_validity.unwrap_or(300),
        notify_command: a.notify_command.clone(),
        imap: server("imap", Service::Imap, &a.imap, p.imap)?,
        pop: server("pop", Service::Pop, &a.pop, p.pop)?,
        smtp: server("smtp", Service::Smtp, &a.smtp, p.smtp)?,
        ca_file: a.ca_file.clone(),
        http_timeout: a.http_timeout.unwrap_or(30),
        secret_timeout: a
            .secret_timeout
            .map(std::time::Duration::from_secs)
            .unwrap_or(crate::config::DEFAULT_SECRET_TIMEOUT),
        max_message_size: a
            .max_message_size
            .unwrap_or(crate::config::DEFAULT_MAX_MESSAGE_SIZE),
        needs: if client_credentials {
            p.app_needs
        } else {
            p.needs
        }
        .into_iter()
        .collect(),
        services,
        explicit_scopes: a.scopes.is_some(),
        issuer,
        userinfo_url,
    })
}

/// `https://` anywhere, `http://` only to a loopback host.
pub fn check_url(u: &str) -> std::result::Result<(), String> {
    let parsed = url::Url::parse(u).map_err(|e| format!("`{u}` is not a URL ({e})"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if parsed.host_str().is_some_and(is_loopback_host) => Ok(()),
        "http" => Err(format!(
            "`{u}`: http:// is refused except for loopback hosts; use https://"
        )),
        s => Err(format!("`{u}`: scheme `{s}` is not http(s)")),
    }
}

fn check_redirect_uri(u: &str) -> std::result::Result<(), String> {
    let parsed = url::Url::parse(u).map_err(|e| format!("`{u}` is not a URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https")
        || !parsed.host_str().is_some_and(is_loopback_host)
    {
        return Err(format!(
            "`{u}`: the redirect URI must be http(s) on a loopback host (localhost, 127.0.0.1), \
             because mailoauth receives the redirect itself"
        ));
    }
    Ok(())
}

impl Account {
    /// Scopes of a resource (`None` = the mail resource).
    pub fn scopes(&self, resource: Option<&str>) -> Result<&[String]> {
        let r = resource.unwrap_or(MAIL_RESOURCE);
        self.resources.get(r).map(|v| v.as_slice()).ok_or_else(|| {
            crate::error::Error::Usage(format!(
                "account `{}` has no resource `{r}`; known: {} (add more under [accounts.{}.resources])",
                self.name,
                self.resources.keys().cloned().collect::<Vec<_>>().join(", "),
                self.name
            ))
        })
    }

    /// True if the flow yields refresh tokens (delegated flows).
    pub fn has_refresh_tokens(&self) -> bool {
        self.flow != FlowKind::ClientCredentials
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn account(body: &str) -> Result<Account> {
        let c = Config::parse(&format!("[accounts.a]\n{body}"), Path::new("/c.toml")).unwrap();
        resolve(&c, "a")
    }

    #[test]
    fn microsoft_defaults() {
        let a = account("provider = \"microsoft\"\nuser = \"u@c.com\"\nclient_id = \"id\"\nservices = [\"imap\", \"smtp\"]")
            .unwrap();
        assert_eq!(
            a.token_url,
            "https://login.microsoftonline.com/common/oauth2/v2.0/token"
        );
        assert_eq!(
            a.resources[MAIL_RESOURCE],
            [
                "https://outlook.office.com/IMAP.AccessAsUser.All",
                "https://outlook.office.com/SMTP.Send",
                "openid",
                "profile",
                "offline_access"
            ]
        );
        assert_eq!(a.imap.as_ref().unwrap().host, "outlook.office365.com");
        assert!(a.resources["graph"].contains(&"https://graph.microsoft.com/.default".to_string()));
    }

    #[test]
    fn microsoft_tenant_cloud_and_authority() {
        let a = account(
            "provider = \"microsoft\"\nuser = \"u@c.us\"\nclient_id = \"id\"\ncloud = \"usgov\"\ntenant = \"contoso.us\"",
        )
        .unwrap();
        assert_eq!(
            a.authorize_url,
            "https://login.microsoftonline.us/contoso.us/oauth2/v2.0/authorize"
        );
        assert!(a.resources[MAIL_RESOURCE][0].starts_with("https://outlook.office365.us/"));
        let a = account(
            "provider = \"microsoft\"\nuser = \"u@c\"\nclient_id = \"id\"\nauthority = \"https://login.partner.microsoftonline.cn/x/\"",
        )
        .unwrap();
        assert_eq!(
            a.device_url.unwrap(),
            "https://login.partner.microsoftonline.cn/x/oauth2/v2.0/devicecode"
        );
    }

    #[test]
    fn microsoft_client_credentials_scope_and_tenant() {
        let e = account("provider = \"microsoft\"\nuser = \"u@c\"\nclient_id = \"id\"\nflow = \"client-credentials\"\nclient_secret = \"s\"")
            .unwrap_err();
        assert!(e.to_string().contains("real tenant"), "{e}");
        let a = account("provider = \"microsoft\"\nuser = \"u@c\"\nclient_id = \"id\"\nflow = \"client-credentials\"\nclient_secret = \"s\"\ntenant = \"c.com\"")
            .unwrap();
        assert_eq!(
            a.resources[MAIL_RESOURCE],
            ["https://outlook.office365.com/.default"]
        );
    }

    #[test]
    fn google_offline_params() {
        let a =
            account("provider = \"google\"\nuser = \"u@gmail.com\"\nclient_id = \"id\"").unwrap();
        assert_eq!(a.authorize_params["access_type"], "offline");
        assert_eq!(a.resources[MAIL_RESOURCE][0], "https://mail.google.com/");
        let e = account(
            "provider = \"google\"\nuser = \"u@gmail.com\"\nclient_id = \"id\"\nflow = \"device\"",
        )
        .unwrap_err();
        assert!(e.to_string().contains("auth-code"));
    }

    #[test]
    fn http_only_on_loopback() {
        let ok = "provider = \"custom\"\nuser = \"u\"\nclient_id = \"c\"\nscopes = [\"s\"]\nauthorize_url = \"http://127.0.0.1:9/a\"\n";
        assert!(account(&format!("{ok}token_url = \"http://localhost:9/t\"")).is_ok());
        let e = account(&format!("{ok}token_url = \"http://idp.example.com/t\"")).unwrap_err();
        assert!(
            e.to_string().contains(":7:") && e.to_string().contains("loopback"),
            "{e}"
        );
    }

    #[test]
    fn tls_none_only_on_loopback() {
        let base = "provider = \"yahoo\"\nuser = \"u\"\nclient_id = \"c\"\n";
        assert!(
            account(&format!(
                "{base}imap = {{ host = \"127.0.0.1\", port = 1143, tls = \"none\" }}"
            ))
            .is_ok()
        );
        assert!(
            account(&format!(
                "{base}imap = {{ host = \"imap.x.com\", tls = \"none\" }}"
            ))
            .is_err()
        );
    }

    #[test]
    fn userinfo_keys_are_for_custom_accounts_and_ask_for_openid() {
        let e = account("provider = \"microsoft\"\nuser = \"u@c\"\nclient_id = \"id\"\nissuer = \"https://login/x\"")
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("`issuer` only applies to provider = \"custom\""),
            "{e}"
        );
        let base = "provider = \"custom\"\nuser = \"u@c\"\nclient_id = \"c\"\nauthorize_url = \"https://idp/a\"\n\
                    token_url = \"https://idp/t\"\nscopes = [\"mail\"]\n";
        let a = account(&format!("{base}userinfo_url = \"https://idp/me\"")).unwrap();
        assert_eq!(a.resources[MAIL_RESOURCE], ["mail", "openid"]);
        let e = account(&format!("{base}issuer = \"http://idp.example.com\"")).unwrap_err();
        assert!(e.to_string().contains("loopback"), "{e}");
        assert!(
            account(base).unwrap().needs.is_empty(),
            "custom servers' rules are unknown"
        );
    }

    #[test]
    fn custom_needs_token_url_and_scopes() {
        let e = account("provider = \"custom\"\nuser = \"u\"\nclient_id = \"c\"\nscopes=[\"x\"]\nauthorize_url = \"https://a/b\"")
            .unwrap_err();
        assert!(e.to_string().contains("token_url"), "{e}");
        let e = account("provider = \"custom\"\nuser = \"u\"\nclient_id = \"c\"\nauthorize_url = \"https://a/b\"\ntoken_url = \"https://a/t\"")
            .unwrap_err();
        assert!(e.to_string().contains("scopes"), "{e}");
    }
}
