//! The hosts file (`/etc/hosts`, hosts(5)).
//!
//! Owns: parsing it into name → addresses. Must not: read the file itself (the
//! resolver does, once), so tests can give their own text.

use std::collections::HashMap;
use std::net::IpAddr;

/// Names and their addresses, in file order.
#[derive(Debug, Clone, Default)]
pub struct Hosts {
    by_name: HashMap<String, Vec<IpAddr>>,
}

/// Lines longer than this are skipped (no real hosts line comes close).
const MAX_LINE: usize = 4096;

impl Hosts {
    /// Parse hosts(5) text: `ADDRESS NAME [ALIAS…]`, `#` comments; bad lines are skipped.
    pub fn parse(text: &str) -> Hosts {
        let mut by_name: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for line in text.lines().filter(|l| l.len() <= MAX_LINE) {
            let line = line.split('#').next().unwrap_or("");
            let mut words = line.split_whitespace();
            let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) else {
                continue;
            };
            for name in words {
                let v = by_name
                    .entry(name.trim_end_matches('.').to_ascii_lowercase())
                    .or_default();
                if !v.contains(&ip) {
                    v.push(ip);
                }
            }
        }
        Hosts { by_name }
    }

    /// The addresses listed for `name` (case-insensitive), IPv4 first.
    pub fn get(&self, name: &str) -> Vec<IpAddr> {
        let mut v = self
            .by_name
            .get(&name.trim_end_matches('.').to_ascii_lowercase())
            .cloned()
            .unwrap_or_default();
        v.sort_by_key(|ip| ip.is_ipv6());
        v
    }
}
