//! Mozilla autoconfig XML (and the ISPDB, the same format): the mail servers
//! and OAuth2 endpoints a domain's document names.
//!
//! Owns: reading the few elements the format has, without an XML library
//! (the documents are small and flat; anything else is ignored). Must not:
//! fetch the document (`run` does) or trust its text unchecked: host names are
//! checked and peer text is cleaned before it is kept.

use crate::config::TlsMode;
use crate::http::Response;

use super::signals::*;

/// A Mozilla autoconfig (or ISPDB) document.
pub fn parse_autoconfig(kind: SignalKind, url: &str, email: &str, r: &Response) -> Signal {
    let sig = |f, why: String| Signal::new(kind, url, f, why);
    if r.status == 404 {
        return sig(Finding::Nothing, "no document (HTTP 404)".into());
    }
    if r.status != 200 || !r.body.contains("<clientConfig") {
        return sig(
            Finding::Failed,
            format!("answered HTTP {} without a clientConfig document", r.status),
        );
    }
    let domain = email.rsplit('@').next().unwrap_or("");
    let mut hosts = Vec::new();
    for (tag, attrs, inner) in elements(&r.body, &["incomingServer", "outgoingServer"]) {
        let service = match (tag, attr(attrs, "type").as_deref()) {
            ("incomingServer", Some("imap")) => crate::service::Service::Imap,
            ("incomingServer", Some("pop3")) => crate::service::Service::Pop,
            ("outgoingServer", Some("smtp")) => crate::service::Service::Smtp,
            _ => continue,
        };
        let Some(host) = child(inner, "hostname") else {
            continue;
        };
        let host = host.replace("%EMAILDOMAIN%", domain).to_ascii_lowercase();
        if !is_host_name(&host) {
            continue;
        }
        let tls = match child(inner, "socketType").as_deref() {
            Some("SSL") => TlsMode::Implicit,
            Some("STARTTLS") => TlsMode::Starttls,
            // Plain text: not for a mailbox with OAuth tokens.
            _ => continue,
        };
        let port =
            child(inner, "port")
                .and_then(|p| p.parse().ok())
                .unwrap_or(match (service, tls) {
                    (crate::service::Service::Imap, TlsMode::Implicit) => 993,
                    (crate::service::Service::Imap, _) => 143,
                    (crate::service::Service::Pop, _) => 995,
                    (crate::service::Service::Smtp, TlsMode::Implicit) => 465,
                    (crate::service::Service::Smtp, _) => 587,
                });
        let oauth = children(inner, "authentication")
            .iter()
            .any(|a| a.eq_ignore_ascii_case("OAuth2"));
        if !hosts.iter().any(|h: &Host| h.service == service) {
            hosts.push(Host {
                service,
                host: clean(&host, 253),
                port,
                tls,
                oauth,
            });
        }
    }
    let auth = elements(&r.body, &["oAuth2"]).first().map(|(_, _, inner)| {
        let url = |k| child(inner, k).filter(|u| crate::providers::check_url(u).is_ok());
        AuthServer {
            issuer: child(inner, "issuer").map(|i| clean(&i, 300)),
            authorize_url: url("authURL"),
            token_url: url("tokenURL"),
            scopes: child(inner, "scope")
                .map(|s| s.split_whitespace().take(50).map(str::to_owned).collect())
                .unwrap_or_default(),
            ..AuthServer::default()
        }
    });
    if hosts.is_empty() {
        return sig(
            Finding::Failed,
            "a document without a usable IMAP, POP3 or SMTP server".into(),
        );
    }
    let list = hosts
        .iter()
        .map(|h| {
            format!(
                "{} {}:{} {}{}",
                h.service.name(),
                h.host,
                h.port,
                super::tls_str(h.tls),
                if h.oauth { " OAuth2" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let oauth = match &auth {
        Some(a) => format!(
            "; OAuth2 issuer {}",
            a.issuer.as_deref().unwrap_or("(unnamed)")
        ),
        None => String::new(),
    };
    sig(Finding::Servers { hosts, auth }, format!("{list}{oauth}"))
}

/// Elements named one of `tags` (not nested in themselves): (tag, attributes, inner text).
fn elements<'a>(xml: &'a str, tags: &[&'static str]) -> Vec<(&'static str, &'a str, &'a str)> {
    let mut out = Vec::new();
    let mut rest = xml;
    // Bounded by the body's size (1 MiB) and by this many elements.
    while out.len() < 64 {
        let Some((at, tag)) = tags
            .iter()
            .filter_map(|t| find_open(rest, t).map(|i| (i, *t)))
            .min_by_key(|(i, _)| *i)
        else {
            break;
        };
        let after = &rest[at + 1 + tag.len()..];
        let Some(gt) = after.find('>') else { break };
        let attrs = &after[..gt];
        let body = &after[gt + 1..];
        let close = format!("</{tag}>");
        let Some(end) = body.find(&close) else { break };
        out.push((tag, attrs, &body[..end]));
        rest = &body[end + close.len()..];
    }
    out
}

/// Where `<tag` opens an element (followed by `>`, `/` or white space).
fn find_open(s: &str, tag: &str) -> Option<usize> {
    let needle = format!("<{tag}");
    let mut from = 0;
    while let Some(i) = s[from..].find(&needle) {
        let at = from + i;
        match s[at + needle.len()..].chars().next() {
            Some('>' | ' ' | '\t' | '\n' | '\r') => return Some(at),
            _ => from = at + needle.len(),
        }
    }
    None
}

fn children(inner: &str, tag: &'static str) -> Vec<String> {
    elements(inner, &[tag])
        .into_iter()
        .map(|(_, _, t)| unescape(t.trim()))
        .collect()
}

fn child(inner: &str, tag: &'static str) -> Option<String> {
    children(inner, tag)
        .into_iter()
        .next()
        .filter(|s| !s.is_empty())
}

fn attr(attrs: &str, name: &str) -> Option<String> {
    let i = attrs.find(&format!("{name}="))?;
    let rest = &attrs[i + name.len() + 1..];
    let q = rest.chars().next()?;
    if q != '"' && q != '\'' {
        return None;
    }
    let v = &rest[1..];
    Some(unescape(&v[..v.find(q)?]))
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}
