//! Each discovery signal: what its answer says, parsed without I/O.
//!
//! Owns: the consumer-domain list, MX host classification, and the parsers of
//! Entra OIDC metadata, Exchange Online autodiscover, Mozilla autoconfig XML
//! (and ISPDB, the same format; in [`super::autoconfig`]), RFC 6186 SRV and RFC 8414 metadata. Must not:
//! fetch anything (`run` does), or weigh one signal against another (`decide`
//! does). Peer text is cleaned ([`crate::text`]) before it is kept.

use crate::config::{Cloud, ProviderKind, TlsMode};
use crate::dns::{Mx, Srv};
use crate::http::Response;

/// Which lookup a signal came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SignalKind {
    /// The domain is a known consumer mail domain (no network).
    Consumer,
    /// The domain's MX records.
    Mx,
    /// Entra ID's OIDC metadata for the domain.
    Entra,
    /// Exchange Online autodiscover for the address.
    Autodiscover,
    /// The domain's own Mozilla autoconfig document.
    Autoconfig,
    /// Thunderbird's ISPDB.
    Ispdb,
    /// RFC 6186 SRV records.
    Srv,
    /// RFC 8414 (or OIDC) authorization server metadata.
    Metadata,
}

impl SignalKind {
    /// How the signal is named to people.
    pub fn label(self) -> &'static str {
        match self {
            SignalKind::Consumer => "consumer domain",
            SignalKind::Mx => "MX",
            SignalKind::Entra => "Entra OIDC metadata",
            SignalKind::Autodiscover => "Exchange Online autodiscover",
            SignalKind::Autoconfig => "Mozilla autoconfig",
            SignalKind::Ispdb => "Thunderbird ISPDB",
            SignalKind::Srv => "RFC 6186 SRV",
            SignalKind::Metadata => "RFC 8414 metadata",
        }
    }
}

/// An authorization server's endpoints, as metadata or autoconfig name them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthServer {
    /// Its issuer.
    pub issuer: Option<String>,
    /// Authorization endpoint.
    pub authorize_url: Option<String>,
    /// Token endpoint.
    pub token_url: Option<String>,
    /// Device authorization endpoint.
    pub device_url: Option<String>,
    /// Revocation endpoint.
    pub revoke_url: Option<String>,
    /// RFC 7591 dynamic client registration endpoint.
    pub registration_url: Option<String>,
    /// Scopes to ask for (autoconfig), or that it supports (metadata).
    pub scopes: Vec<String>,
}

/// A mail server a signal names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// `imap`, `pop` or `smtp`.
    pub service: crate::service::Service,
    /// Host name.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS mode.
    pub tls: TlsMode,
    /// Whether the signal says the server takes OAuth 2.0.
    pub oauth: bool,
}

/// What one lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// A provider preset applies (consumer domain, MX host, Entra tenant).
    Provider {
        /// The preset.
        provider: ProviderKind,
        /// Microsoft: the tenant (a GUID, or `consumers`).
        tenant: Option<String>,
        /// Microsoft: the national cloud.
        cloud: Option<Cloud>,
    },
    /// The MX is a filtering gateway: says nothing about the mailbox.
    Gateway(String),
    /// The MX is some other host.
    OtherMx(String),
    /// Entra says the domain is not one of its tenants (AADSTS90002).
    NotEntra,
    /// Exchange Online autodiscover: whether it knows this mailbox.
    ExchangeMailbox(bool),
    /// Mail servers (autoconfig, ISPDB, SRV), and an authorization server
    /// when the document names one.
    Servers {
        /// The servers.
        hosts: Vec<Host>,
        /// Autoconfig's `<oAuth2>` block.
        auth: Option<AuthServer>,
    },
    /// Authorization server metadata.
    AuthServer(AuthServer),
    /// Nothing there (no such name, 404, no records).
    Nothing,
    /// The lookup failed (timeout, 500, HTML where JSON was due …).
    Failed,
}

/// One signal: where it came from, what it found, and why that is the reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    /// The lookup.
    pub kind: SignalKind,
    /// The name or URL asked.
    pub asked: String,
    /// What it found.
    pub finding: Finding,
    /// Why, in plain words (shown to the person).
    pub why: String,
}

impl Signal {
    /// A signal.
    pub fn new(kind: SignalKind, asked: &str, finding: Finding, why: impl Into<String>) -> Signal {
        Signal {
            kind,
            asked: asked.to_owned(),
            finding,
            why: why.into(),
        }
    }
}

/// The consumer domains known without the network (FACTS §7).
pub fn consumer(domain: &str) -> Option<Signal> {
    let labels: Vec<&str> = domain.split('.').collect();
    let first = labels.first().copied().unwrap_or("");
    // outlook.de, hotmail.co.uk, live.com.au: the brand, then a country suffix,
    // but not live.contoso.com.
    let country_suffix = match labels.len() {
        2 => true,
        3 => matches!(labels[1], "co" | "com"),
        _ => false,
    };
    let (provider, tenant, what) = match domain {
        "gmail.com" | "googlemail.com" => (ProviderKind::Google, None, "Gmail"),
        "msn.com" => (
            ProviderKind::Microsoft,
            Some("consumers"),
            "Outlook.com (Microsoft consumer)",
        ),
        "yahoo.com" | "ymail.com" | "rocketmail.com" => (ProviderKind::Yahoo, None, "Yahoo Mail"),
        "aol.com" | "aim.com" => (ProviderKind::Aol, None, "AOL Mail"),
        _ if country_suffix && matches!(first, "outlook" | "hotmail" | "live") => (
            ProviderKind::Microsoft,
            Some("consumers"),
            "Outlook.com (Microsoft consumer)",
        ),
        _ if country_suffix && first == "yahoo" => (ProviderKind::Yahoo, None, "Yahoo Mail"),
        _ => return None,
    };
    Some(Signal::new(
        SignalKind::Consumer,
        domain,
        Finding::Provider {
            provider,
            tenant: tenant.map(str::to_owned),
            cloud: (provider == ProviderKind::Microsoft).then_some(Cloud::Global),
        },
        format!("{domain} is {what}, known without asking the network"),
    ))
}

/// Filtering gateways seen as MX in front of Microsoft 365 and Google Workspace.
const GATEWAYS: [(&str, &str); 6] = [
    (".mimecast.com", "Mimecast"),
    (".mimecast.co.za", "Mimecast"),
    (".pphosted.com", "Proofpoint"),
    (".ppe-hosted.com", "Proofpoint Essentials"),
    (".barracudanetworks.com", "Barracuda"),
    (".iphmx.com", "Cisco Secure Email"),
];

/// What the most preferred MX host says.
pub fn classify_mx(domain: &str, mx: &[Mx]) -> Signal {
    let Some(best) = mx.first() else {
        return Signal::new(SignalKind::Mx, domain, Finding::Nothing, "no MX records");
    };
    let h = best.host.to_ascii_lowercase();
    let ms = |cloud, why: &str| {
        Signal::new(
            SignalKind::Mx,
            domain,
            Finding::Provider {
                provider: ProviderKind::Microsoft,
                tenant: None,
                cloud: Some(cloud),
            },
            format!("MX {h} {why}"),
        )
    };
    if h.ends_with(".mail.protection.outlook.com") || h.ends_with(".mx.microsoft") {
        return ms(
            Cloud::Global,
            "is Exchange Online Protection: Microsoft 365",
        );
    }
    // ⚠ GCC High / DoD tenants' MX hosts (not in FACTS; seen in Microsoft's
    // DNS records guidance for the US Government clouds).
    if h.ends_with(".mail.protection.office365.us") {
        return ms(
            Cloud::Usgov,
            "is Exchange Online Protection of the US Government cloud",
        );
    }
    if h == "aspmx.l.google.com"
        || (h.starts_with("alt") && h.ends_with(".aspmx.l.google.com"))
        || h == "smtp.google.com"
        || h.ends_with(".googlemail.com")
    {
        return Signal::new(
            SignalKind::Mx,
            domain,
            Finding::Provider {
                provider: ProviderKind::Google,
                tenant: None,
                cloud: None,
            },
            format!("MX {h} is Google's: Google Workspace"),
        );
    }
    if let Some((_, name)) = GATEWAYS.iter().find(|(s, _)| h.ends_with(s)) {
        return Signal::new(
            SignalKind::Mx,
            domain,
            Finding::Gateway(h.clone()),
            format!(
                "MX {h} is a filtering gateway ({name}): it says nothing about where the mailbox is"
            ),
        );
    }
    Signal::new(
        SignalKind::Mx,
        domain,
        Finding::OtherMx(h.clone()),
        format!("MX {h} is not a provider discovery knows"),
    )
}

fn json(r: &Response) -> Option<serde_json::Value> {
    serde_json::from_str(&r.body)
        .ok()
        .filter(|v: &serde_json::Value| v.is_object())
}

fn looks_html(r: &Response) -> bool {
    r.content_type.contains("html") || r.body.trim_start().starts_with('<')
}

/// Why an answer that should be a JSON document is unusable.
fn unusable(r: &Response) -> String {
    if looks_html(r) {
        format!("answered HTTP {} with an HTML page, not JSON", r.status)
    } else {
        format!("answered HTTP {} without the expected JSON", r.status)
    }
}

fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Entra's OIDC metadata for a domain: its tenant GUID and cloud, or "not an
/// Entra domain" (400 with AADSTS90002).
pub fn parse_entra(url: &str, r: &Response) -> Signal {
    let sig = |f, why: String| Signal::new(SignalKind::Entra, url, f, why);
    let Some(v) = json(r) else {
        return sig(Finding::Failed, unusable(r));
    };
    if r.status != 200 {
        let codes = v["error_codes"].as_array().cloned().unwrap_or_default();
        let desc = v["error_description"].as_str().unwrap_or("");
        if codes.iter().any(|c| c.as_u64() == Some(90002)) || desc.starts_with("AADSTS90002") {
            return sig(
                Finding::NotEntra,
                "AADSTS90002: the domain is not a verified domain of any Entra tenant".into(),
            );
        }
        return sig(
            Finding::Failed,
            format!(
                "answered HTTP {} ({})",
                r.status,
                clean(v["error"].as_str().unwrap_or("no error code"), 80)
            ),
        );
    }
    let issuer = v["issuer"].as_str().unwrap_or("");
    // `https://login.microsoftonline.com/{tenant-guid}/v2.0`
    let tenant = url::Url::parse(issuer)
        .ok()
        .and_then(|u| u.path_segments()?.next().map(str::to_owned))
        .filter(|t| is_guid(t));
    let Some(tenant) = tenant else {
        return sig(
            Finding::Failed,
            "answered 200 but its issuer names no tenant id".into(),
        );
    };
    let instance = v["cloud_instance_name"].as_str().unwrap_or("");
    let sub = v["tenant_region_sub_scope"].as_str().unwrap_or("");
    let cloud = match (instance, sub) {
        ("microsoftonline.us", "DOD") => Some(Cloud::UsgovDod),
        ("microsoftonline.us", _) => Some(Cloud::Usgov),
        ("partner.microsoftonline.cn", _) => Some(Cloud::China),
        // GCC (moderate) lives in the commercial cloud.
        ("microsoftonline.com", _) => Some(Cloud::Global),
        _ => None,
    };
    let Some(cloud) = cloud else {
        return sig(
            Finding::Failed,
            format!(
                "tenant {tenant} is in an unknown cloud (`cloud_instance_name` = `{}`)",
                clean(instance, 60)
            ),
        );
    };
    let sub_note = if sub.is_empty() {
        String::new()
    } else {
        format!(", tenant_region_sub_scope {}", clean(sub, 20))
    };
    sig(
        Finding::Provider {
            provider: ProviderKind::Microsoft,
            tenant: Some(tenant.clone()),
            cloud: Some(cloud),
        },
        format!(
            "the domain is a verified domain of Entra tenant {tenant} (cloud_instance_name {}{sub_note}: cloud {})",
            clean(instance, 60),
            cloud.as_str()
        ),
    )
}

/// Exchange Online autodiscover: 200 with `{Protocol, Url}` for a mailbox it
/// hosts, a redirect otherwise.
pub fn parse_autodiscover(url: &str, r: &Response) -> Signal {
    let sig = |f, why: &str| Signal::new(SignalKind::Autodiscover, url, f, why);
    match r.status {
        200 => match json(r) {
            Some(v) if v["Url"].is_string() => sig(
                Finding::ExchangeMailbox(true),
                "Exchange Online hosts this mailbox",
            ),
            _ => sig(Finding::Failed, &unusable(r)),
        },
        301 | 302 | 307 | 308 | 404 => sig(
            Finding::ExchangeMailbox(false),
            "Exchange Online does not know this mailbox (it redirects elsewhere)",
        ),
        _ => sig(Finding::Failed, &format!("answered HTTP {}", r.status)),
    }
}

/// Authorization server metadata (RFC 8414, or OIDC discovery).
pub fn parse_metadata(url: &str, r: &Response) -> Signal {
    let sig = |f, why: String| Signal::new(SignalKind::Metadata, url, f, why);
    if r.status == 404 {
        return sig(Finding::Nothing, "no metadata there (HTTP 404)".into());
    }
    let Some(v) = json(r).filter(|_| r.status == 200) else {
        return sig(Finding::Failed, unusable(r));
    };
    let s = |k: &str| {
        v[k].as_str()
            .filter(|u| crate::providers::check_url(u).is_ok())
            .map(str::to_owned)
    };
    let auth = AuthServer {
        issuer: v["issuer"].as_str().map(|i| clean(i, 300)),
        authorize_url: s("authorization_endpoint"),
        token_url: s("token_endpoint"),
        device_url: s("device_authorization_endpoint"),
        revoke_url: s("revocation_endpoint"),
        registration_url: s("registration_endpoint"),
        scopes: v["scopes_supported"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str())
                    .take(100)
                    .map(|s| clean(s, 200))
                    .collect()
            })
            .unwrap_or_default(),
    };
    if auth.token_url.is_none() {
        return sig(
            Finding::Failed,
            "metadata without a usable token_endpoint (https://, or http:// on loopback)".into(),
        );
    }
    let reg = if auth.registration_url.is_some() {
        " and a registration endpoint (RFC 7591: no client id needed)"
    } else {
        ""
    };
    sig(
        Finding::AuthServer(auth.clone()),
        format!(
            "an authorization server{} with a token endpoint{reg}",
            auth.issuer
                .as_deref()
                .map(|i| format!(" (issuer {i})"))
                .unwrap_or_default()
        ),
    )
}

/// The RFC 6186 SRV names and what each offers.
pub const SRV_NAMES: [(&str, crate::service::Service, TlsMode); 5] = [
    (
        "_imaps._tcp",
        crate::service::Service::Imap,
        TlsMode::Implicit,
    ),
    (
        "_imap._tcp",
        crate::service::Service::Imap,
        TlsMode::Starttls,
    ),
    (
        "_submissions._tcp",
        crate::service::Service::Smtp,
        TlsMode::Implicit,
    ),
    (
        "_submission._tcp",
        crate::service::Service::Smtp,
        TlsMode::Starttls,
    ),
    (
        "_pop3s._tcp",
        crate::service::Service::Pop,
        TlsMode::Implicit,
    ),
];

/// One SRV answer as a signal (target `.` = "not offered", RFC 2782).
pub fn parse_srv(
    name: &str,
    service: crate::service::Service,
    tls: TlsMode,
    srv: &[Srv],
) -> Signal {
    let offered: Vec<&Srv> = srv
        .iter()
        .filter(|s| !s.target.is_empty() && s.target != "." && s.port != 0)
        .collect();
    let Some(best) = offered.first() else {
        return Signal::new(SignalKind::Srv, name, Finding::Nothing, "not offered");
    };
    let host = Host {
        service,
        host: best.target.to_ascii_lowercase(),
        port: best.port,
        tls,
        oauth: false,
    };
    Signal::new(
        SignalKind::Srv,
        name,
        Finding::Servers {
            hosts: vec![host.clone()],
            auth: None,
        },
        format!(
            "{} at {}:{} ({})",
            service.name(),
            host.host,
            host.port,
            super::tls_str(tls)
        ),
    )
}

/// A DNS host name (letters, digits, `-`, dots), as a mail server's must be.
pub fn is_host_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Peer text made safe to show, and bounded.
pub(crate) fn clean(s: &str, max: usize) -> String {
    crate::text::printable(s).chars().take(max).collect()
}
