//! Running discovery's lookups: all at once on std threads, under one deadline.
//!
//! Owns: which lookups run (and which wait for another's answer: autodiscover
//! only once Entra says the domain is a tenant, so the address goes to
//! Microsoft only then; an autoconfig issuer's metadata once autoconfig names
//! it), the per-lookup timeouts, and reporting a lookup that did not answer
//! by the deadline as a signal of its own. Must not: block past the deadline
//! (threads still running then are left to end on their own timeouts; their
//! answers are dropped), or interpret answers (`signals`).

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::signals::{self, Finding, Signal, SignalKind};
use super::{DiscoverError, Options};
use crate::dns::{DnsError, Resolver};
use crate::http::Http;

/// One lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Job {
    Mx,
    Srv(usize),
    Entra,
    Autodiscover,
    Autoconfig(SignalKind, String),
    Metadata(String),
}

struct Ctx {
    resolver: Resolver,
    http: Http,
    email: String,
    domain: String,
    entra_url: String,
    autodiscover_url: String,
}

fn fill(template: &str, email: &str, domain: &str) -> String {
    let enc: String = url::form_urlencoded::byte_serialize(email.as_bytes()).collect();
    template
        .replace("{domain}", domain)
        .replace("{email}", &enc.replace("%40", "@"))
}

/// The metadata documents of an issuer (RFC 8414 §3 puts the well-known part
/// before the issuer's path; OIDC discovery appends it).
fn issuer_metadata_urls(issuer: &str) -> Vec<String> {
    let base = if issuer.contains("://") {
        issuer.trim_end_matches('/').to_owned()
    } else {
        format!("https://{}", issuer.trim_end_matches('/'))
    };
    let Ok(u) = url::Url::parse(&base) else {
        return vec![];
    };
    let path = u.path().trim_end_matches('/');
    let origin = u.origin().ascii_serialization();
    vec![
        format!("{origin}/.well-known/oauth-authorization-server{path}"),
        format!("{base}/.well-known/openid-configuration"),
    ]
}

fn read_roots(path: &std::path::Path) -> Result<Vec<Vec<u8>>, DiscoverError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let bad = |e: String| DiscoverError::BadOption(format!("ca_file {}: {e}", path.display()));
    let certs: Vec<Vec<u8>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .map(|c| c.map(|c| c.to_vec()).map_err(|e| bad(e.to_string())))
        .collect::<Result<_, _>>()?;
    if certs.is_empty() {
        return Err(bad("no certificate in it".into()));
    }
    Ok(certs)
}

/// Run every lookup for `email` in parallel; the signals (one per lookup,
/// answered or not) and how many lookups ran.
pub fn lookups(
    email: &str,
    domain: &str,
    o: &Options,
) -> Result<(Vec<Signal>, usize), DiscoverError> {
    let started = Instant::now();
    let deadline = started + o.timeout;
    // A name server gets two tries, each a third of the budget at most, so a
    // silent one is given up on with time left for the HTTP lookups.
    let per_try = (o.timeout / 3).min(Duration::from_secs(2));
    let resolver = match o.dns_server {
        Some(s) => Resolver::with_servers(vec![s], Default::default()),
        None => Resolver::system().clone(),
    }
    .timeout(per_try)
    .attempts(2);
    let roots = o.ca_file.as_deref().map(read_roots).transpose()?;
    let http = Http::with_resolver(
        o.timeout.saturating_sub(Duration::from_millis(200)),
        Some(resolver.clone()),
        roots,
    );
    let ctx = Arc::new(Ctx {
        resolver,
        http,
        email: email.to_owned(),
        domain: domain.to_owned(),
        entra_url: fill(&o.entra_url, email, domain),
        autodiscover_url: fill(&o.autodiscover_url, email, domain),
    });

    let mut first = vec![Job::Mx, Job::Entra];
    first.extend((0..signals::SRV_NAMES.len()).map(Job::Srv));
    first.extend(
        o.autoconfig_urls
            .iter()
            .map(|u| Job::Autoconfig(SignalKind::Autoconfig, fill(u, email, domain))),
    );
    first.push(Job::Autoconfig(
        SignalKind::Ispdb,
        fill(&o.ispdb_url, email, domain),
    ));
    first.extend(
        o.metadata_urls
            .iter()
            .map(|u| Job::Metadata(fill(u, email, domain))),
    );

    let (tx, rx) = mpsc::channel::<(usize, Signal)>();
    let mut jobs: Vec<Job> = Vec::new();
    let mut answered: Vec<bool> = Vec::new();
    let spawn = |job: Job, jobs: &mut Vec<Job>, answered: &mut Vec<bool>| {
        if jobs.contains(&job) {
            return;
        }
        let id = jobs.len();
        jobs.push(job.clone());
        answered.push(false);
        let tx = tx.clone();
        let ctx = ctx.clone();
        let spawned = std::thread::Builder::new()
            .name("mailoauth-discover".into())
            .spawn(move || {
                let _ = tx.send((id, run_job(&job, &ctx)));
            });
        if spawned.is_err() {
            // No thread: its signal is the "did not answer" one below.
            log::debug!("discovery: cannot start a lookup thread");
        }
    };
    for j in first {
        spawn(j, &mut jobs, &mut answered);
    }
    let mut out = Vec::new();
    while answered.iter().any(|a| !a) {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        let Ok((id, sig)) = rx.recv_timeout(left) else {
            break;
        };
        answered[id] = true;
        // Follow-ups: what one answer makes worth asking.
        match &sig.finding {
            Finding::Provider {
                tenant: Some(_),
                cloud: Some(crate::config::Cloud::Global),
                ..
            } if sig.kind == SignalKind::Entra => {
                spawn(Job::Autodiscover, &mut jobs, &mut answered);
            }
            Finding::Servers { auth: Some(a), .. }
                if a.token_url.is_none() || a.authorize_url.is_none() =>
            {
                if let Some(i) = &a.issuer {
                    for u in issuer_metadata_urls(i) {
                        spawn(Job::Metadata(u), &mut jobs, &mut answered);
                    }
                }
            }
            Finding::Servers { auth: Some(a), .. } => {
                // Endpoints given: the issuer's metadata may still offer registration.
                if let Some(i) = a.issuer.as_deref().filter(|i| !known_issuer(i)) {
                    for u in issuer_metadata_urls(i) {
                        spawn(Job::Metadata(u), &mut jobs, &mut answered);
                    }
                }
            }
            _ => {}
        }
        out.push(sig);
    }
    let waited = started.elapsed();
    for (job, done) in jobs.iter().zip(&answered) {
        if !done {
            let (kind, asked) = describe(job, &ctx);
            out.push(Signal::new(
                kind,
                &asked,
                Finding::Failed,
                format!(
                    "no answer within {:.1} s (discovery's whole budget)",
                    waited.as_secs_f64()
                ),
            ));
        }
    }
    out.sort_by(|a, b| (a.kind, &a.asked).cmp(&(b.kind, &b.asked)));
    Ok((out, jobs.len()))
}

/// Issuers whose metadata we never need: the presets know them.
fn known_issuer(i: &str) -> bool {
    [
        "accounts.google.com",
        "login.microsoftonline.com",
        "login.live.com",
    ]
    .iter()
    .any(|k| i.contains(k))
}

fn describe(job: &Job, ctx: &Ctx) -> (SignalKind, String) {
    match job {
        Job::Mx => (SignalKind::Mx, ctx.domain.clone()),
        Job::Srv(i) => (
            SignalKind::Srv,
            format!("{}.{}", signals::SRV_NAMES[*i].0, ctx.domain),
        ),
        Job::Entra => (SignalKind::Entra, ctx.entra_url.clone()),
        Job::Autodiscover => (SignalKind::Autodiscover, ctx.autodiscover_url.clone()),
        Job::Autoconfig(k, u) => (*k, u.clone()),
        Job::Metadata(u) => (SignalKind::Metadata, u.clone()),
    }
}

fn dns_signal(kind: SignalKind, asked: &str, e: &DnsError) -> Signal {
    match e {
        DnsError::NotFound { .. } => Signal::new(kind, asked, Finding::Nothing, e.to_string()),
        _ => Signal::new(kind, asked, Finding::Failed, e.to_string()),
    }
}

fn run_job(job: &Job, ctx: &Ctx) -> Signal {
    match job {
        Job::Mx => match ctx.resolver.lookup_mx(&ctx.domain) {
            Ok(mx) => signals::classify_mx(&ctx.domain, &mx),
            Err(e) => dns_signal(SignalKind::Mx, &ctx.domain, &e),
        },
        Job::Srv(i) => {
            let (prefix, service, tls) = signals::SRV_NAMES[*i];
            let name = format!("{prefix}.{}", ctx.domain);
            match ctx.resolver.lookup_srv(&name) {
                Ok(srv) => signals::parse_srv(&name, service, tls, &srv),
                Err(e) => dns_signal(SignalKind::Srv, &name, &e),
            }
        }
        Job::Entra => http(
            SignalKind::Entra,
            &ctx.entra_url,
            ctx,
            "application/json",
            signals::parse_entra,
        ),
        Job::Autodiscover => http(
            SignalKind::Autodiscover,
            &ctx.autodiscover_url,
            ctx,
            "application/json",
            signals::parse_autodiscover,
        ),
        Job::Autoconfig(kind, url) => {
            let email = ctx.email.clone();
            http(*kind, url, ctx, "application/xml, text/xml", |u, r| {
                super::autoconfig::parse_autoconfig(*kind, u, &email, r)
            })
        }
        Job::Metadata(url) => http(
            SignalKind::Metadata,
            url,
            ctx,
            "application/json",
            signals::parse_metadata,
        ),
    }
}

fn http(
    kind: SignalKind,
    url: &str,
    ctx: &Ctx,
    accept: &str,
    parse: impl Fn(&str, &crate::http::Response) -> Signal,
) -> Signal {
    if let Err(e) = crate::providers::check_url(url) {
        return Signal::new(kind, url, Finding::Failed, e);
    }
    match ctx.http.get_accept(url, accept) {
        Ok(r) => parse(url, &r),
        Err(e) if e.detail.contains("host not found") => {
            Signal::new(kind, url, Finding::Nothing, "no such host")
        }
        Err(e) => Signal::new(kind, url, Finding::Failed, e.detail),
    }
}
