//! Weighing the signals: one decision, with the reason for every value, the
//! conflicts, and what the person can pass to settle them.
//!
//! Owns: which signal wins (consumer domain; MX; an Entra tenant unless
//! autodiscover says Exchange Online does not host the mailbox; presets over
//! ISPDB hosts; metadata over autoconfig endpoints) and when nothing may be
//! decided (two providers claimed, or none). Must not: do I/O, or pick between
//! conflicting providers itself — a silently wrong account is worse than a
//! question.

use std::collections::BTreeMap;
use std::time::Duration;

use super::Options;
use super::signals::{AuthServer, Finding, Host, Signal, SignalKind};
use crate::config::{Cloud, ProviderKind, TlsMode};
use crate::service::Service;

/// Whether the decision can be written as an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Provider (and what it needs) decided.
    Decided,
    /// Signals name different providers: the person must say which.
    Conflict,
    /// Not enough found to write an account.
    Unknown,
}

impl Verdict {
    /// Lower-case name (JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Decided => "decided",
            Verdict::Conflict => "conflict",
            Verdict::Unknown => "unknown",
        }
    }
}

/// A decided mail server and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The service.
    pub service: Service,
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS mode.
    pub tls: TlsMode,
    /// The signal (or preset) it came from.
    pub source: String,
}

/// What discovery decided, and why.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The address.
    pub email: String,
    /// Its domain.
    pub domain: String,
    /// Decided, conflict or unknown.
    pub verdict: Verdict,
    /// The provider preset (decided, or the likeliest one when in conflict).
    pub provider: Option<ProviderKind>,
    /// Microsoft: the tenant (a GUID from Entra, `consumers`, or what was passed).
    pub tenant: Option<String>,
    /// Microsoft: the cloud.
    pub cloud: Option<Cloud>,
    /// Mail servers.
    pub servers: Vec<Found>,
    /// Custom providers: the authorization server.
    pub auth: Option<AuthServer>,
    /// Why each value is what it is, by config key (`provider`, `tenant`,
    /// `cloud`, `imap`, `token_url` …): the comments of the written account.
    pub sources: BTreeMap<&'static str, String>,
    /// Conflicts between signals, in plain words.
    pub conflicts: Vec<String>,
    /// What to pass (or do) to settle a conflict or fill a gap.
    pub fix: Vec<String>,
    /// Every signal, answered or not.
    pub signals: Vec<Signal>,
    /// Lookups that ran (in parallel).
    pub lookups: usize,
    /// Wall time of the discovery.
    pub elapsed: Duration,
}

fn find(signals: &[Signal], kind: SignalKind) -> Option<&Signal> {
    signals.iter().find(|s| s.kind == kind)
}

fn provider_of(s: Option<&Signal>) -> Option<(ProviderKind, Option<String>, Option<Cloud>)> {
    match &s?.finding {
        Finding::Provider {
            provider,
            tenant,
            cloud,
        } => Some((*provider, tenant.clone(), *cloud)),
        _ => None,
    }
}

/// Hosts a signal names that belong to a preset provider.
fn preset_of_host(h: &str) -> Option<ProviderKind> {
    if h.ends_with("gmail.com") || h.ends_with("googlemail.com") {
        Some(ProviderKind::Google)
    } else if h.ends_with("office365.com") || h.ends_with("outlook.com") {
        Some(ProviderKind::Microsoft)
    } else {
        None
    }
}

/// The decision for `email` from `signals`, with the person's `--provider` /
/// `--tenant` from `o` settling what the signals cannot.
pub fn decide(email: &str, domain: &str, signals: Vec<Signal>, o: &Options) -> Decision {
    let mut d = Decision {
        email: email.to_owned(),
        domain: domain.to_owned(),
        verdict: Verdict::Unknown,
        provider: None,
        tenant: None,
        cloud: None,
        servers: vec![],
        auth: None,
        sources: BTreeMap::new(),
        conflicts: vec![],
        fix: vec![],
        signals: vec![],
        lookups: 0,
        elapsed: Duration::ZERO,
    };
    let consumer = provider_of(find(&signals, SignalKind::Consumer));
    let mx_sig = find(&signals, SignalKind::Mx);
    let mx = provider_of(mx_sig);
    let entra_sig = find(&signals, SignalKind::Entra);
    let entra = provider_of(entra_sig);
    let not_entra = entra_sig.is_some_and(|s| s.finding == Finding::NotEntra);
    let exo = find(&signals, SignalKind::Autodiscover).and_then(|s| match s.finding {
        Finding::ExchangeMailbox(b) => Some(b),
        _ => None,
    });
    // Autoconfig documents: the domain's own before the ISPDB's.
    let documents: Vec<(&Signal, &Vec<Host>, &Option<AuthServer>)> =
        [SignalKind::Autoconfig, SignalKind::Ispdb]
            .iter()
            .flat_map(|k| signals.iter().filter(move |s| s.kind == *k))
            .filter_map(|s| match &s.finding {
                Finding::Servers { hosts, auth } => Some((s, hosts, auth)),
                _ => None,
            })
            .collect();
    let srv_hosts: Vec<(&Signal, &Host)> = signals
        .iter()
        .filter(|s| s.kind == SignalKind::Srv)
        .filter_map(|s| match &s.finding {
            Finding::Servers { hosts, .. } => hosts.first().map(|h| (s, h)),
            _ => None,
        })
        .collect();
    let metadata: Vec<(&Signal, &AuthServer)> = signals
        .iter()
        .filter_map(|s| match &s.finding {
            Finding::AuthServer(a) => Some((s, a)),
            _ => None,
        })
        .collect();

    // Who claims the mailbox, and why.
    let mut claims: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    fn add(claims: &mut BTreeMap<&'static str, Vec<String>>, p: ProviderKind, why: String) {
        claims.entry(p.as_str()).or_default().push(why);
    }
    macro_rules! claim {
        ($p:expr, $why:expr $(,)?) => {
            add(&mut claims, $p, $why)
        };
    }
    if let (Some((p, _, _)), Some(s)) = (&consumer, find(&signals, SignalKind::Consumer)) {
        claim!(*p, s.why.clone());
    }
    if let (Some((p, _, _)), Some(s)) = (&mx, mx_sig) {
        claim!(*p, s.why.clone());
    }
    if let (Some(_), Some(s)) = (&entra, entra_sig) {
        match exo {
            // An Entra domain does not prove the mailbox is in Exchange Online
            // (FACTS §7); autodiscover saying "not here" settles it.
            Some(false) => {}
            Some(true) => claim!(
                ProviderKind::Microsoft,
                format!("{}; Exchange Online autodiscover knows the mailbox", s.why),
            ),
            None => claim!(ProviderKind::Microsoft, s.why.clone()),
        }
    }
    for (s, hosts, auth) in &documents {
        let issuer_preset = auth.as_ref().and_then(|a| {
            let i = a.issuer.as_deref().unwrap_or("");
            (i.contains("accounts.google.com") || i.contains("googleapis.com"))
                .then_some(ProviderKind::Google)
                .or(
                    (i.contains("microsoftonline") || i.contains("login.live.com"))
                        .then_some(ProviderKind::Microsoft),
                )
        });
        let host_preset = hosts.iter().find_map(|h| preset_of_host(&h.host));
        if let Some(p) = issuer_preset.or(host_preset) {
            claim!(
                p,
                format!("{} names {}'s servers", s.kind.label(), p.as_str())
            );
        }
    }
    let custom_auth = merge_auth(&documents, &metadata);
    let any_preset_claim = !claims.is_empty();
    if let Some((a, why)) = &custom_auth
        && !any_preset_claim
        && a.token_url.is_some()
    {
        claim!(ProviderKind::Custom, why.clone());
    }

    // The provider.
    let claimed: Vec<&'static str> = claims.keys().copied().collect();
    let provider = if let Some(p) = o.provider {
        d.sources
            .insert("provider", format!("--provider {}", p.as_str()));
        for other in claimed.iter().filter(|c| **c != p.as_str()) {
            d.conflicts.push(format!(
                "{other} was also indicated ({}); --provider {} settles it",
                claims[other].join("; "),
                p.as_str()
            ));
        }
        Some(p)
    } else if claimed.len() == 1 {
        let p = super::parse_provider(claimed[0]).unwrap_or(ProviderKind::Custom);
        d.sources.insert("provider", claims[claimed[0]].join("; "));
        Some(p)
    } else if claimed.len() > 1 {
        d.verdict = Verdict::Conflict;
        for c in &claimed {
            d.conflicts.push(format!("{c}: {}", claims[c].join("; ")));
        }
        for c in &claimed {
            let tenant = if *c == "microsoft" {
                entra
                    .as_ref()
                    .and_then(|e| e.1.as_deref())
                    .map(|t| format!(" --tenant {t}"))
                    .unwrap_or_default()
            } else {
                String::new()
            };
            d.fix.push(format!(
                "if the mailbox is with {c}: mailoauth add {email} --provider {c}{tenant}"
            ));
        }
        None
    } else {
        None
    };

    // Microsoft: tenant and cloud.
    if provider == Some(ProviderKind::Microsoft) {
        let (tenant, tsrc) = match (&o.tenant, &entra, &consumer) {
            (Some(t), _, _) => (Some(t.clone()), "--tenant".to_owned()),
            (None, Some((_, Some(t), _)), _) => (
                Some(t.clone()),
                format!("Entra OIDC metadata of {domain} (the tenant id in its issuer)"),
            ),
            (None, _, Some((_, Some(t), _))) => (Some(t.clone()), "consumer domain".to_owned()),
            _ => (None, String::new()),
        };
        match tenant {
            Some(t) => {
                d.tenant = Some(t);
                d.sources.insert("tenant", tsrc);
            }
            None if not_entra => {
                d.conflicts.push(format!(
                    "Microsoft was indicated, but Entra says {domain} is not a verified domain of any tenant (AADSTS90002)"
                ));
                d.fix.push(format!(
                    "pass the tenant: mailoauth add {email} --provider microsoft --tenant <tenant id or domain>"
                ));
            }
            None => {
                d.tenant = Some("organizations".into());
                d.sources.insert(
                    "tenant",
                    format!(
                        "Entra OIDC metadata gave no tenant id ({}); `organizations` signs in any work account until you pass --tenant",
                        entra_sig.map(|s| s.why.as_str()).unwrap_or("not asked")
                    ),
                );
            }
        }
        let (cloud, csrc) = match (&entra, &mx) {
            (Some((_, _, Some(c))), _) => (
                *c,
                "Entra OIDC metadata (cloud_instance_name, tenant_region_sub_scope)",
            ),
            (_, Some((ProviderKind::Microsoft, _, Some(c)))) => (*c, "MX host"),
            _ => (Cloud::Global, "default (no signal named a national cloud)"),
        };
        if let (Some((_, _, Some(ec))), Some((ProviderKind::Microsoft, _, Some(mc)))) =
            (&entra, &mx)
            && ec != mc
        {
            d.conflicts.push(format!(
                "the MX host points to cloud {} but Entra says {}; Entra's is used",
                mc.as_str(),
                ec.as_str()
            ));
        }
        d.cloud = Some(cloud);
        d.sources.insert("cloud", csrc.to_owned());
    }

    // Mail servers.
    match provider {
        Some(p) if p != ProviderKind::Custom => {
            let cloud = d.cloud.unwrap_or_default();
            let why = if p == ProviderKind::Microsoft {
                format!("the microsoft preset for cloud {}", cloud.as_str())
            } else {
                format!("the {} preset", p.as_str())
            };
            for (s, srv) in Service::ALL
                .iter()
                .zip(crate::providers::preset_servers(p, cloud))
            {
                if let Some(srv) = srv {
                    d.servers.push(Found {
                        service: *s,
                        host: srv.host,
                        port: srv.port,
                        tls: srv.tls,
                        source: why.clone(),
                    });
                }
            }
        }
        Some(_) => {
            for s in Service::ALL {
                let from_doc = documents.iter().find_map(|(sig, hosts, _)| {
                    hosts
                        .iter()
                        .find(|h| h.service == s)
                        .map(|h| (h, format!("{} {}", sig.kind.label(), sig.asked)))
                });
                let from_srv = srv_hosts
                    .iter()
                    .find(|(_, h)| h.service == s)
                    .map(|(sig, h)| (*h, format!("{} {}", sig.kind.label(), sig.asked)));
                if let Some((h, src)) = from_doc.or(from_srv) {
                    d.servers.push(Found {
                        service: s,
                        host: h.host.clone(),
                        port: h.port,
                        tls: h.tls,
                        source: src,
                    });
                }
            }
        }
        None => {}
    }
    for f in &d.servers {
        d.sources.insert(f.service.name(), f.source.clone());
    }

    // Custom: the authorization server.
    if provider == Some(ProviderKind::Custom) {
        match custom_auth {
            Some((a, _)) if a.token_url.is_some() => {
                if a.authorize_url.is_none() && a.device_url.is_none() {
                    d.conflicts.push(
                        "the authorization server names no authorization or device endpoint".into(),
                    );
                }
                d.auth = Some(a);
            }
            _ => {
                d.fix.push(format!(
                    "no OAuth 2.0 authorization server was found for {domain}: pass its endpoints, e.g. \
                     mailoauth add NAME --provider custom --user {email} --authorize-url URL --token-url URL --scopes S"
                ));
            }
        }
        if d.servers.is_empty() {
            d.fix.push(
                "no mail server was found: set imap/smtp in the account (e.g. imap = { host = \"…\", port = 993 })".into(),
            );
        }
        if let Some(a) = &d.auth {
            if a.scopes.is_empty() {
                d.fix
                    .push("no mail scopes were found: pass --scopes".into());
            }
            for (k, v) in [
                ("authorize_url", &a.authorize_url),
                ("token_url", &a.token_url),
                ("device_url", &a.device_url),
                ("revoke_url", &a.revoke_url),
            ] {
                if v.is_some() {
                    d.sources.insert(k, a_source(&metadata, &documents, k));
                }
            }
            if !a.scopes.is_empty() {
                d.sources
                    .insert("scopes", a_source(&metadata, &documents, "scopes"));
            }
        }
    }

    d.provider = provider;
    if d.verdict != Verdict::Conflict {
        let complete = match provider {
            None => false,
            Some(ProviderKind::Microsoft) => d.tenant.is_some(),
            Some(ProviderKind::Custom) => {
                d.auth.as_ref().is_some_and(|a| !a.scopes.is_empty()) && !d.servers.is_empty()
            }
            Some(_) => true,
        };
        d.verdict = if complete {
            Verdict::Decided
        } else {
            Verdict::Unknown
        };
    }
    if provider.is_none() && d.verdict == Verdict::Unknown {
        let entra_note = match (&entra, exo) {
            (Some((_, Some(t), _)), Some(false)) => format!(
                " Entra knows tenant {t} for {domain}, but Exchange Online does not host this mailbox."
            ),
            _ => String::new(),
        };
        d.fix.push(format!(
            "no provider could be decided for {domain}.{entra_note} Pass it: mailoauth add {email} --provider microsoft|google|yahoo|aol|custom (custom with --authorize-url, --token-url, --scopes)"
        ));
    }
    d.signals = signals;
    d
}

fn a_source(
    metadata: &[(&Signal, &AuthServer)],
    documents: &[(&Signal, &Vec<Host>, &Option<AuthServer>)],
    key: &str,
) -> String {
    let has = |a: &AuthServer| match key {
        "authorize_url" => a.authorize_url.is_some(),
        "token_url" => a.token_url.is_some(),
        "device_url" => a.device_url.is_some(),
        "revoke_url" => a.revoke_url.is_some(),
        _ => !a.scopes.is_empty(),
    };
    if key == "scopes" {
        if let Some((s, _, _)) = documents
            .iter()
            .find(|(_, _, a)| a.as_ref().is_some_and(|a| !a.scopes.is_empty()))
        {
            return format!("{} {} (<oAuth2><scope>)", s.kind.label(), s.asked);
        }
        if let Some((s, _)) = metadata.iter().find(|(_, a)| has(a)) {
            return format!(
                "{} {} (scopes_supported naming mail)",
                s.kind.label(),
                s.asked
            );
        }
    }
    if let Some((s, _)) = metadata.iter().find(|(_, a)| has(a)) {
        return format!("{} {}", s.kind.label(), s.asked);
    }
    documents
        .iter()
        .find(|(_, _, a)| a.as_ref().is_some_and(has))
        .map(|(s, _, _)| format!("{} {} (<oAuth2>)", s.kind.label(), s.asked))
        .unwrap_or_default()
}

/// The authorization server of a custom provider: metadata's endpoints (the
/// server's own word) over autoconfig's, autoconfig's scopes (what to ask for)
/// over metadata's (what it supports, of which only those naming mail).
fn merge_auth(
    documents: &[(&Signal, &Vec<Host>, &Option<AuthServer>)],
    metadata: &[(&Signal, &AuthServer)],
) -> Option<(AuthServer, String)> {
    let doc = documents
        .iter()
        .find_map(|(s, _, a)| a.as_ref().map(|a| (*s, a)));
    let meta = metadata
        .iter()
        .find(|(_, a)| a.registration_url.is_some())
        .or(metadata.first());
    let mut why = Vec::new();
    let mut out = AuthServer::default();
    if let Some((s, a)) = meta {
        out = (*a).clone();
        out.scopes.clear();
        why.push(s.why.clone());
    }
    if let Some((s, a)) = doc {
        out.issuer = out.issuer.or(a.issuer.clone());
        out.authorize_url = out.authorize_url.or(a.authorize_url.clone());
        out.token_url = out.token_url.or(a.token_url.clone());
        out.scopes = a.scopes.clone();
        why.push(format!("{} names an OAuth2 server", s.kind.label()));
    }
    if out.scopes.is_empty()
        && let Some((_, a)) = meta
    {
        out.scopes = a
            .scopes
            .iter()
            .filter(|s| {
                // Scopes naming a mail protocol; not OIDC's own (`email` is the address claim).
                let l = s.to_ascii_lowercase();
                let oidc = [
                    "openid",
                    "email",
                    "profile",
                    "address",
                    "phone",
                    "offline_access",
                ];
                !oidc.contains(&l.as_str())
                    && ["imap", "pop", "smtp", "mail"]
                        .iter()
                        .any(|m| l.contains(m))
            })
            .cloned()
            .collect();
        if !out.scopes.is_empty() {
            for extra in ["openid", "offline_access"] {
                if a.scopes.iter().any(|s| s == extra) {
                    out.scopes.push(extra.into());
                }
            }
        }
    }
    (meta.is_some() || doc.is_some()).then(|| (out, why.join("; ")))
}

impl Decision {
    /// The server decided for `service`.
    pub fn server(&self, service: Service) -> Option<&Found> {
        self.servers.iter().find(|f| f.service == service)
    }
}
