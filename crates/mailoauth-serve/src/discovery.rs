//! Which connector serves an address: the core's discovery (the same as
//! `mailoauth add EMAIL`) run for a connect link that names no connector.
//!
//! Owns: running discovery off the async threads, at most [`AT_ONCE`] at a
//! time, and matching its decision to the configured auth-code connectors
//! (provider; for Microsoft the cloud and tenant, the most specific winning;
//! for a custom provider the token endpoint). Must not: guess — an undecided
//! address, no matching connector or two equally good ones are an error that
//! names what was found and says to pass `connector`.

use std::time::Duration;

use mailoauth::Error;
use mailoauth::config::{FlowKind, ProviderKind};
use mailoauth::discover::{self, Decision};

use crate::settings::Settings;

/// Discoveries running at once on a node (each runs its lookups on a dozen
/// short threads for at most 5 s).
pub const AT_ONCE: usize = 8;

static RUNNING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(AT_ONCE);

/// The connector for `email`, and the decision that chose it.
pub async fn connector_for(settings: &Settings, email: &str) -> Result<(String, Decision), Error> {
    let busy = || Error::Unreachable {
        what: "discovery".into(),
        detail: format!(
            "{AT_ONCE} discoveries are running on this node; retry, or pass `connector`"
        ),
    };
    let _permit = tokio::time::timeout(Duration::from_secs(10), RUNNING.acquire())
        .await
        .map_err(|_| busy())?
        .map_err(|_| busy())?;
    let options = discover::Options::from_env().map_err(|e| Error::Usage(e.to_string()))?;
    let address = email.to_owned();
    let d = tokio::task::spawn_blocking(move || discover::discover(&address, &options))
        .await
        .map_err(|e| Error::Flow(format!("discovery task failed: {e}")))?
        .map_err(|e| Error::Usage(format!("`email`: {e}")))?;
    let name = pick(settings, &d)?;
    Ok((name, d))
}

/// The auth-code connector that fits decision `d` best.
pub fn pick(settings: &Settings, d: &Decision) -> Result<String, Error> {
    if let Some(why) = discover::account::undecided(d) {
        return Err(Error::Usage(format!(
            "{why}\n  or pass `connector` with the link"
        )));
    }
    let mut fits: Vec<(u8, &str)> = settings
        .connectors()
        .filter_map(|name| fit(settings, name, d).map(|score| (score, name)))
        .collect();
    fits.sort_by_key(|f| std::cmp::Reverse(f.0));
    match fits.as_slice() {
        [] => Err(Error::Usage(format!(
            "no connector fits {}: discovery decided {}; the connectors are {}. Add a \
             [serve.connectors.NAME] for it, or pass `connector` with the link",
            d.email,
            decided(d),
            settings
                .connectors()
                .map(|c| format!("`{c}` ({})", described(settings, c)))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        [(a, x), (b, y), ..] if a == b => Err(Error::Usage(format!(
            "connectors `{x}` and `{y}` both fit {} ({}); pass `connector` with the link, or give \
             one a `tenant`",
            d.email,
            decided(d)
        ))),
        [(_, best), ..] => Ok((*best).to_owned()),
    }
}

/// How well connector `name` fits `d`: `None` when it cannot serve it; for
/// Microsoft 2 for the tenant itself, 1 for `organizations`/`consumers`, 0
/// for `common`.
fn fit(settings: &Settings, name: &str, d: &Decision) -> Option<u8> {
    let account = settings.account(name, &d.email).ok()?;
    if account.flow != FlowKind::AuthCode || Some(account.provider) != d.provider {
        return None;
    }
    let table = settings.connector_table(name)?;
    let text = |k: &str| table.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    match account.provider {
        ProviderKind::Microsoft => {
            let cloud = text("cloud").and_then(|c| discover::parse_cloud(&c));
            if cloud.unwrap_or_default() != d.cloud.unwrap_or_default() {
                return None;
            }
            let theirs = d.tenant.as_deref().unwrap_or("organizations");
            let consumer = theirs.eq_ignore_ascii_case("consumers");
            match text("tenant").as_deref().unwrap_or("common") {
                "common" => Some(0),
                "organizations" => (!consumer).then_some(1),
                "consumers" => consumer.then_some(1),
                // A GUID, or the domain that names the tenant.
                t => (t.eq_ignore_ascii_case(theirs) || t.eq_ignore_ascii_case(&d.domain))
                    .then_some(2),
            }
        }
        ProviderKind::Custom => {
            let token_url = d.auth.as_ref()?.token_url.as_deref()?;
            (account.token_url == token_url).then_some(0)
        }
        _ => Some(0),
    }
}

/// The decision in a few words.
fn decided(d: &Decision) -> String {
    let mut s = d.provider.map(|p| p.as_str()).unwrap_or("-").to_owned();
    if let Some(t) = &d.tenant {
        s.push_str(&format!(", tenant {t}"));
    }
    if let Some(c) = d.cloud {
        s.push_str(&format!(", cloud {}", c.as_str()));
    }
    if let Some(u) = d.auth.as_ref().and_then(|a| a.token_url.as_deref()) {
        s.push_str(&format!(", token endpoint {u}"));
    }
    s
}

/// A connector in a few words.
fn described(settings: &Settings, name: &str) -> String {
    let Some(t) = settings.connector_table(name) else {
        return String::new();
    };
    ["provider", "tenant", "cloud", "token_url"]
        .iter()
        .filter_map(|k| {
            t.get(*k)
                .and_then(|v| v.as_str())
                .map(|v| format!("{k} {v}"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}
