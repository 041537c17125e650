//! Name resolution without the C library: `/etc/hosts`, then the name servers of
//! `/etc/resolv.conf`, spoken to directly over UDP (TCP when a reply is truncated).
//!
//! Why not `getaddrinfo`: the installed `mailoauth` is linked statically for its
//! start-up speed, and a static glibc loads the system's NSS modules at run time
//! for host names, which is unsupported across glibc versions and breaks with
//! `nss-resolve` or `mdns` in `nsswitch.conf`. Onboarding needs MX, SRV and TXT
//! records as well, which `getaddrinfo` cannot give. One resolver serves both.
//!
//! Owns: the lookup order (hosts file, `localhost`, then DNS with the search
//! list and `ndots`), timeouts and attempts per server, and the limits on what a
//! name server may send. Must not: cache across processes, or follow anything a
//! reply says beyond the records of the question asked (a hostile server's
//! extra records are ignored).
//!
//! `MAILOAUTH_DNS_SERVER=IP:PORT` replaces the configured name servers (tests
//! run their own DNS server on a loopback port).

mod hosts;
mod wire;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use hickory_proto::rr::RecordType;
pub use hosts::Hosts;

/// Why a lookup failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The name does not exist, or has no record of the asked type.
    #[error("{name}: no such host (no {rtype} record)")]
    NotFound {
        /// The name looked up.
        name: String,
        /// The record type asked for.
        rtype: String,
    },
    /// No name server answered within the timeout.
    #[error("{name}: no name server answered ({detail})")]
    Unreachable {
        /// The name looked up.
        name: String,
        /// What happened at the last server.
        detail: String,
    },
    /// A name server answered with an error or something that is not DNS.
    #[error("{name}: the name server failed: {detail}")]
    Failed {
        /// The name looked up.
        name: String,
        /// Its response code, or what was wrong with the reply.
        detail: String,
    },
    /// The name is not a valid domain name.
    #[error("`{0}` is not a valid host name")]
    BadName(String),
}

/// An MX record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mx {
    /// Lower is preferred.
    pub preference: u16,
    /// The mail exchanger, without the trailing dot.
    pub host: String,
}

/// An SRV record (RFC 2782; RFC 6186 for mail).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Srv {
    /// Lower is preferred.
    pub priority: u16,
    /// Share among equal priorities.
    pub weight: u16,
    /// Port.
    pub port: u16,
    /// Target host, without the trailing dot (`.` alone means "not offered").
    pub target: String,
}

/// A stub resolver: where to ask and how patiently.
#[derive(Debug, Clone)]
pub struct Resolver {
    servers: Vec<SocketAddr>,
    search: Vec<String>,
    ndots: usize,
    timeout: Duration,
    attempts: usize,
    hosts: Hosts,
}

/// resolv.conf's defaults (resolv.conf(5)).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_ATTEMPTS: usize = 2;
/// Most search domains tried for one name, whatever resolv.conf lists.
const MAX_SEARCH: usize = 6;

impl Resolver {
    /// This machine's resolver: `/etc/hosts`, `/etc/resolv.conf` (or
    /// `MAILOAUTH_DNS_SERVER`), read once per process.
    pub fn system() -> &'static Resolver {
        static SYSTEM: OnceLock<Resolver> = OnceLock::new();
        SYSTEM.get_or_init(|| {
            let conf = std::fs::read("/etc/resolv.conf").unwrap_or_default();
            let hosts = Hosts::parse(&std::fs::read_to_string("/etc/hosts").unwrap_or_default());
            let mut r = Resolver::from_resolv_conf(&conf, hosts);
            if let Some(s) = std::env::var("MAILOAUTH_DNS_SERVER")
                .ok()
                .and_then(|s| s.parse().ok())
            {
                r.servers = vec![s];
            }
            r
        })
    }

    /// A resolver from resolv.conf text (unknown lines ignored, as the C library does).
    pub fn from_resolv_conf(conf: &[u8], hosts: Hosts) -> Resolver {
        let (c, _errors) = resolv_conf::Config::parse_with_errors(conf);
        let mut servers: Vec<SocketAddr> = c
            .nameservers
            .iter()
            .map(|ip| SocketAddr::new(IpAddr::from(ip.clone()), 53))
            .collect();
        if servers.is_empty() {
            // What the C library does without a nameserver line.
            servers.push(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53));
        }
        let search = c
            .get_last_search_or_domain()
            .take(MAX_SEARCH)
            .map(|d| d.trim_end_matches('.').to_owned())
            .filter(|d| !d.is_empty())
            .collect();
        Resolver {
            servers,
            search,
            ndots: (c.ndots as usize).min(15),
            timeout: Duration::from_secs(u64::from(c.timeout.clamp(1, 30))),
            attempts: (c.attempts as usize).clamp(1, 5),
            hosts,
        }
    }

    /// A resolver asking `servers` only, with no search list.
    pub fn with_servers(servers: Vec<SocketAddr>, hosts: Hosts) -> Resolver {
        Resolver {
            servers,
            search: Vec::new(),
            ndots: 1,
            timeout: DEFAULT_TIMEOUT,
            attempts: DEFAULT_ATTEMPTS,
            hosts,
        }
    }

    /// Set the time to wait for one server's answer.
    pub fn timeout(mut self, t: Duration) -> Resolver {
        self.timeout = t;
        self
    }

    /// Set how many times each server is asked before giving up.
    pub fn attempts(mut self, n: usize) -> Resolver {
        self.attempts = n.clamp(1, 5);
        self
    }

    /// Addresses of `host`: an IP literal as it is, then the hosts file and
    /// `localhost`, then DNS (A and AAAA, IPv4 first).
    pub fn lookup_ip(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let from_hosts = self.hosts.get(host);
        if !from_hosts.is_empty() {
            return Ok(from_hosts);
        }
        // RFC 6761: localhost names never leave the machine.
        let lower = host.trim_end_matches('.').to_ascii_lowercase();
        if lower == "localhost" || lower.ends_with(".localhost") {
            return Ok(vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ]);
        }
        let mut last = None;
        for name in self.candidates(host)? {
            let mut ips = Vec::new();
            for rtype in [RecordType::A, RecordType::AAAA] {
                match self.records(&name, rtype) {
                    Ok(recs) => ips.extend(recs.into_iter().filter_map(|r| r.ip())),
                    // NXDOMAIN: the name has no records of any type.
                    Err(e @ DnsError::NotFound { .. }) => {
                        last = Some(e);
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            if !ips.is_empty() {
                return Ok(ips);
            }
        }
        Err(last.unwrap_or_else(|| not_found(host, RecordType::A)))
    }

    /// Socket addresses of `host:port`, as `ToSocketAddrs` would give them.
    pub fn socket_addrs(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, DnsError> {
        Ok(self
            .lookup_ip(host)?
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }

    /// MX records of `domain`, most preferred first.
    pub fn lookup_mx(&self, domain: &str) -> Result<Vec<Mx>, DnsError> {
        let mut mx: Vec<Mx> = self
            .records(&absolute(domain)?, RecordType::MX)?
            .into_iter()
            .filter_map(|r| r.mx())
            .collect();
        mx.sort();
        some(mx, domain, RecordType::MX)
    }

    /// SRV records of `name` (e.g. `_submission._tcp.example.com`), by priority.
    pub fn lookup_srv(&self, name: &str) -> Result<Vec<Srv>, DnsError> {
        let mut srv: Vec<Srv> = self
            .records(&absolute(name)?, RecordType::SRV)?
            .into_iter()
            .filter_map(|r| r.srv())
            .collect();
        srv.sort();
        some(srv, name, RecordType::SRV)
    }

    /// TXT records of `name`, each one's strings joined.
    pub fn lookup_txt(&self, name: &str) -> Result<Vec<String>, DnsError> {
        let txt = self
            .records(&absolute(name)?, RecordType::TXT)?
            .into_iter()
            .filter_map(|r| r.txt())
            .collect();
        some(txt, name, RecordType::TXT)
    }

    /// The absolute names to try for `host`, in resolv.conf's order.
    fn candidates(&self, host: &str) -> Result<Vec<String>, DnsError> {
        if host.ends_with('.') {
            return Ok(vec![absolute(host)?]);
        }
        let as_is = absolute(host)?;
        let searched = self.search.iter().map(|d| format!("{as_is}{d}."));
        let dots = host.matches('.').count();
        Ok(if dots >= self.ndots {
            std::iter::once(as_is.clone()).chain(searched).collect()
        } else {
            searched.chain(std::iter::once(as_is.clone())).collect()
        })
    }

    /// The records of type `rtype` at the absolute `name` (none: the name exists
    /// without such records; NXDOMAIN is [`DnsError::NotFound`]): every server,
    /// each up to `attempts` times, until one answers.
    fn records(&self, name: &str, rtype: RecordType) -> Result<Vec<wire::Answer>, DnsError> {
        let mut last = String::from("no name server configured");
        for _ in 0..self.attempts {
            for server in &self.servers {
                match wire::exchange(*server, name, rtype, self.timeout) {
                    Ok(wire::Reply::Records(r)) if r.is_empty() => {
                        return Err(not_found(name, rtype));
                    }
                    Ok(wire::Reply::Records(r)) => return Ok(r),
                    Ok(wire::Reply::NoSuchName) => return Err(not_found(name, rtype)),
                    Ok(wire::Reply::Refused(code)) => {
                        last = format!("{server} answered {code}");
                    }
                    Err(e) => last = format!("{server}: {e}"),
                }
            }
        }
        if last.contains("answered") {
            return Err(DnsError::Failed {
                name: display(name),
                detail: last,
            });
        }
        Err(DnsError::Unreachable {
            name: display(name),
            detail: last,
        })
    }
}

/// [`Resolver::system`]'s socket addresses of `host:port`, as an I/O error the
/// connecting code can report like any other.
pub fn resolve(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    Resolver::system()
        .socket_addrs(host, port)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string()))
}

fn absolute(name: &str) -> Result<String, DnsError> {
    let trimmed = name.trim_end_matches('.');
    let ok = !trimmed.is_empty()
        && trimmed.len() <= 253
        && trimmed.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(format!("{trimmed}."))
    } else {
        Err(DnsError::BadName(name.escape_debug().to_string()))
    }
}

fn display(name: &str) -> String {
    name.trim_end_matches('.').to_owned()
}

/// No records of the asked type is "not found" to a caller.
fn some<T>(v: Vec<T>, name: &str, rtype: RecordType) -> Result<Vec<T>, DnsError> {
    if v.is_empty() {
        Err(not_found(name, rtype))
    } else {
        Ok(v)
    }
}

fn not_found(name: &str, rtype: RecordType) -> DnsError {
    DnsError::NotFound {
        name: display(name),
        rtype: rtype.to_string(),
    }
}

#[cfg(test)]
mod tests;
