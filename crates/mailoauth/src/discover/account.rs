//! What a decision writes into an account: each key with the reason it has
//! its value (the comments of the written account), and the words for a
//! decision that cannot be written.
//!
//! Owns: which keys a decided preset or custom provider needs (preset hosts
//! are named in a comment, not written, so the preset keeps them current).
//! Must not: touch the config file (the front end writes what this returns)
//! or add anything a discovery override pointed at (tests' local servers):
//! only what the signals said.

use crate::config::edit::{Noted, Value};
use crate::config::{Cloud, ProviderKind};

use super::{Decision, Finding, SignalKind, Verdict, tls_str};

/// The keys of the account and the source of each.
pub fn values(d: &Decision) -> Vec<Noted> {
    let src = |k: &str| d.sources.get(k).cloned().unwrap_or_default();
    let provider = d.provider.unwrap_or(ProviderKind::Custom);
    let mut v = vec![
        Noted {
            key: "provider",
            value: Value::Str(provider.as_str().into()),
            note: src("provider"),
        },
        Noted {
            key: "user",
            value: Value::Str(d.email.clone()),
            note: "the address given to `mailoauth add`".into(),
        },
    ];
    if provider == ProviderKind::Microsoft {
        if let Some(t) = &d.tenant {
            v.push(Noted {
                key: "tenant",
                value: Value::Str(t.clone()),
                note: src("tenant"),
            });
        }
        let cloud = d.cloud.unwrap_or_default();
        if cloud != Cloud::Global {
            v.push(Noted {
                key: "cloud",
                value: Value::Str(cloud.as_str().into()),
                note: src("cloud"),
            });
        }
    }
    if provider == ProviderKind::Custom {
        if let Some(a) = &d.auth {
            for (k, u) in [
                ("authorize_url", &a.authorize_url),
                ("token_url", &a.token_url),
                ("device_url", &a.device_url),
                ("revoke_url", &a.revoke_url),
            ] {
                if let Some(u) = u {
                    v.push(Noted {
                        key: k,
                        value: Value::Str(u.clone()),
                        note: src(k),
                    });
                }
            }
            if a.authorize_url.is_none() && a.device_url.is_some() {
                v.push(Noted {
                    key: "flow",
                    value: Value::Str("device".into()),
                    note: "the server names a device endpoint but no authorization endpoint".into(),
                });
            }
            v.push(Noted {
                key: "scopes",
                value: Value::List(a.scopes.clone()),
                note: src("scopes"),
            });
        }
        for f in &d.servers {
            v.push(Noted {
                key: f.service.name(),
                value: Value::Table(vec![
                    ("host", Value::Str(f.host.clone())),
                    ("port", Value::Int(i64::from(f.port))),
                    ("tls", Value::Str(tls_str(f.tls).into())),
                ]),
                note: f.source.clone(),
            });
        }
    } else if let Some(first) = v.first_mut() {
        // Preset hosts are not written (the preset keeps them current); say them.
        let hosts = d
            .servers
            .iter()
            .map(|f| {
                format!(
                    "{} {}:{} {}",
                    f.service.name(),
                    f.host,
                    f.port,
                    tls_str(f.tls)
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        if !hosts.is_empty() {
            first.note = format!("{}; its mail servers: {hosts}", first.note);
        }
    }
    v
}

/// Why `d` cannot be written as an account: what was found, what conflicts,
/// and what to pass; `None` when it is decided.
pub fn undecided(d: &Decision) -> Option<String> {
    let mut msg = match d.verdict {
        Verdict::Decided => return None,
        Verdict::Conflict => format!("the signals for {} conflict", d.email),
        Verdict::Unknown => format!("not enough was found to write an account for {}", d.email),
    };
    // The error alone (e.g. with --json) still says what was found.
    for sig in d.signals.iter().filter(|s| {
        s.kind == SignalKind::Mx || !matches!(s.finding, Finding::Nothing | Finding::Failed)
    }) {
        msg.push_str(&format!("\n  found: {}: {}", sig.kind.label(), sig.why));
    }
    for c in &d.conflicts {
        msg.push_str(&format!("\n  conflict: {c}"));
    }
    for f in &d.fix {
        msg.push_str(&format!("\n  {f}"));
    }
    Some(msg)
}
