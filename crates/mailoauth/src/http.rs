//! The HTTP client for authorization servers.
//!
//! Owns: one blocking ureq agent (rustls + ring, the platform's roots, proxies
//! from HTTPS_PROXY/NO_PROXY — never for loopback), timeouts, and turning
//! transport failures into plain words. Must not: be built on the cached-token path (TLS setup costs
//! ~25 ms), or log request bodies (they carry secrets).

use std::time::Duration;

/// A response, read whole (bodies are capped at 1 MiB: token answers are small).
#[derive(Debug)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type` (lower-cased), empty if absent.
    pub content_type: String,
    /// `Retry-After` in seconds, when given as a number.
    pub retry_after: Option<u64>,
    /// The body.
    pub body: String,
}

/// Why a request got no HTTP response at all.
#[derive(Debug)]
pub struct TransportError {
    /// Plain-words description (timeout, refused, DNS, TLS …).
    pub detail: String,
}

/// ureq's resolver port, answered by [`crate::dns`]. (`ureq::unversioned` may
/// change in a minor release; Cargo.lock pins the version we build with.)
#[derive(Debug)]
struct DnsResolver(Option<crate::dns::Resolver>);

impl ureq::unversioned::resolver::Resolver for DnsResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        _config: &ureq::config::Config,
        _timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let host = uri.host().ok_or(ureq::Error::HostNotFound)?;
        let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
            Some("http") => 80,
            _ => 443,
        });
        let addrs = self
            .0
            .as_ref()
            .unwrap_or_else(|| crate::dns::Resolver::system())
            .socket_addrs(host, port)
            .map_err(|e| {
                log::debug!("{e}");
                ureq::Error::HostNotFound
            })?;
        let mut out = self.empty();
        // ureq keeps at most 16 addresses.
        for a in addrs.into_iter().take(16) {
            out.push(a);
        }
        Ok(out)
    }
}

/// Blocking HTTP client.
pub struct Http {
    agent: ureq::Agent,
}

impl Http {
    /// A client whose every request gives up after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self::with_parts(timeout, None, ureq::tls::RootCerts::PlatformVerifier)
    }

    /// A client resolving names with `resolver` (else the system's) and
    /// trusting only `roots` when given (onboarding's tests point discovery at
    /// local servers signed by a test CA).
    pub fn with_resolver(
        timeout: Duration,
        resolver: Option<crate::dns::Resolver>,
        roots: Option<Vec<Vec<u8>>>,
    ) -> Self {
        let roots = match roots {
            Some(ders) => ureq::tls::RootCerts::new_with_certs(
                &ders
                    .iter()
                    .map(|d| ureq::tls::Certificate::from_der(d).to_owned())
                    .collect::<Vec<_>>(),
            ),
            None => ureq::tls::RootCerts::PlatformVerifier,
        };
        Self::with_parts(timeout, resolver, roots)
    }

    fn with_parts(
        timeout: Duration,
        resolver: Option<crate::dns::Resolver>,
        roots: ureq::tls::RootCerts,
    ) -> Self {
        let config = ureq::Agent::config_builder()
            // OAuth errors come as 400/401 with a JSON body we must read.
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .timeout_connect(Some(timeout.min(Duration::from_secs(10))))
            .max_redirects(0)
            .user_agent(concat!("mailoauth/", env!("CARGO_PKG_VERSION")))
            .tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build())
            .build();
        Http {
            // Names are resolved by our own resolver, never glibc's NSS (see `dns`).
            agent: ureq::Agent::with_parts(
                config,
                ureq::unversioned::transport::DefaultConnector::new(),
                DnsResolver(resolver),
            ),
        }
    }

    /// POST an `application/x-www-form-urlencoded` body.
    pub fn post_form(&self, url: &str, form: &[(&str, &str)]) -> Result<Response, TransportError> {
        let req = self.agent.post(url).header("Accept", "application/json");
        let r = if is_loopback(url) {
            req.config()
                .proxy(None)
                .build()
                .send_form(form.iter().copied())
        } else {
            req.send_form(form.iter().copied())
        };
        Self::finish(r)
    }

    /// GET a URL.
    pub fn get(&self, url: &str) -> Result<Response, TransportError> {
        let req = self.agent.get(url).header("Accept", "application/json");
        Self::finish(if is_loopback(url) {
            req.config().proxy(None).build().call()
        } else {
            req.call()
        })
    }

    /// GET a URL asking for `accept` (autoconfig serves XML).
    pub fn get_accept(&self, url: &str, accept: &str) -> Result<Response, TransportError> {
        let req = self.agent.get(url).header("Accept", accept);
        Self::finish(if is_loopback(url) {
            req.config().proxy(None).build().call()
        } else {
            req.call()
        })
    }

    /// POST a JSON body (RFC 7591 dynamic client registration).
    pub fn post_json(
        &self,
        url: &str,
        body: &serde_json::Value,
    ) -> Result<Response, TransportError> {
        let req = self.agent.post(url).header("Accept", "application/json");
        Self::finish(if is_loopback(url) {
            req.config().proxy(None).build().send_json(body)
        } else {
            req.send_json(body)
        })
    }

    /// GET a URL with `Authorization: Bearer <token>` (the userinfo endpoint).
    pub fn get_bearer(&self, url: &str, token: &str) -> Result<Response, TransportError> {
        Self::finish(
            self.agent
                .get(url)
                .header("Accept", "application/json")
                .header("Authorization", &format!("Bearer {token}"))
                .call(),
        )
    }

    fn finish(
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Response, TransportError> {
        let mut resp = r.map_err(describe)?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.trim().to_ascii_lowercase())
        };
        let content_type = header("content-type").unwrap_or_default();
        let retry_after = header("retry-after").and_then(|s| s.parse().ok());
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_string()
            .map_err(describe)?;
        Ok(Response {
            status,
            content_type,
            retry_after,
            body,
        })
    }
}

/// Whether `url` names this machine (127.0.0.0/8, ::1, localhost). Such a
/// request never goes through `HTTP_PROXY`/`ALL_PROXY`: a proxy elsewhere cannot
/// reach our loopback (a local test or SSH-forwarded endpoint), and a local
/// one has no business seeing the secrets in the body.
fn is_loopback(url: &str) -> bool {
    let Ok(u) = url::Url::parse(url) else {
        return false;
    };
    match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        None => false,
    }
}

fn describe(e: ureq::Error) -> TransportError {
    let detail = match &e {
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        ureq::Error::HostNotFound => "host not found (DNS)".into(),
        ureq::Error::ConnectionFailed => "connection failed".into(),
        ureq::Error::Io(io) => format!("I/O error: {io}"),
        ureq::Error::Tls(t) => format!("TLS error: {t}"),
        ureq::Error::Rustls(t) => format!("TLS error: {t}"),
        other => other.to_string(),
    };
    TransportError { detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_are_recognised() {
        for u in [
            "http://127.0.0.1:8080/token",
            "http://127.3.4.5/t",
            "http://[::1]:9/t",
            "http://localhost/t",
            "https://LOCALHOST.:4/t",
        ] {
            assert!(is_loopback(u), "{u}");
        }
        for u in [
            "https://login.microsoftonline.com/t",
            "http://128.0.0.1/t",
            "http://localhost.example.com/t",
            "not a url",
        ] {
            assert!(!is_loopback(u), "{u}");
        }
    }
}
