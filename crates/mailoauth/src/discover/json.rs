//! A decision as one JSON document: what `add --json` prints and the service
//! answers, with every signal and the reason for each value.
//!
//! Must not: leave out a signal or a reason (a person reading the JSON must
//! be able to see why, as in the text report).

use super::{Decision, Finding};

impl Decision {
    /// The decision as one JSON document (`--json`).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        json!({
            "email": self.email,
            "domain": self.domain,
            "verdict": self.verdict.as_str(),
            "provider": self.provider.map(|p| p.as_str()),
            "tenant": self.tenant,
            "cloud": self.cloud.map(|c| c.as_str()),
            "servers": self.servers.iter().map(|f| json!({
                "service": f.service.name(), "host": f.host, "port": f.port,
                "tls": super::tls_str(f.tls), "source": f.source,
            })).collect::<Vec<_>>(),
            "auth": self.auth.as_ref().map(|a| json!({
                "issuer": a.issuer, "authorize_url": a.authorize_url, "token_url": a.token_url,
                "device_url": a.device_url, "revoke_url": a.revoke_url,
                "registration_url": a.registration_url, "scopes": a.scopes,
            })),
            "sources": self.sources,
            "conflicts": self.conflicts,
            "fix": self.fix,
            "signals": self.signals.iter().map(|s| json!({
                "kind": s.kind.label(), "asked": s.asked,
                "finding": finding_name(&s.finding), "why": s.why,
            })).collect::<Vec<_>>(),
            "lookups": self.lookups,
            "elapsed_ms": self.elapsed.as_millis() as u64,
        })
    }
}

fn finding_name(f: &Finding) -> &'static str {
    match f {
        Finding::Provider { .. } => "provider",
        Finding::Gateway(_) => "gateway",
        Finding::OtherMx(_) => "other-mx",
        Finding::NotEntra => "not-entra",
        Finding::ExchangeMailbox(true) => "exchange-online-mailbox",
        Finding::ExchangeMailbox(false) => "no-exchange-online-mailbox",
        Finding::Servers { .. } => "servers",
        Finding::AuthServer(_) => "authorization-server",
        Finding::Nothing => "nothing",
        Finding::Failed => "failed",
    }
}
