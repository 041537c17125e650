//! API keys: 256-bit random secrets, kept as SHA-256 digests, checked from memory.
//!
//! Owns: the key format, the scopes, creating keys (the secret is returned once)
//! and answering "may this request do that?". A digest, not a password hash:
//! the secret has 256 bits of entropy, so a slow KDF would only slow every
//! request. The table is read again every heartbeat (`cluster`), so a
//! revocation reaches every node within seconds. Must not: store or log a secret.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mailoauth::Error;

use crate::db::{ApiKeyRow, Db};

/// What a key may do.
pub const SCOPES: &[&str] = &[
    "accounts:read",
    "accounts:write",
    "token:read",
    "mail:send",
    "mail:read",
    "admin",
];

/// The prefix of every secret, so a leaked one is recognisable (secret scanners).
const PREFIX: &str = "mos_";

/// How many unknown keys per second may be looked up in the database (a key
/// made by the command while the service runs works at once; a flood of bogus
/// keys costs at most this many indexed queries per second, then plain 401s).
const LOOKUPS_PER_SECOND: u32 = 50;

/// A checked key: who asked, and what it may touch.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key's public id (for the audit log).
    pub key_id: String,
    scopes: Vec<String>,
    mailboxes: Vec<String>,
}

impl Caller {
    /// Whether the key has `scope` (`admin` has all).
    pub fn has(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope || s == "admin")
    }

    /// Whether the key may touch mailbox `id`.
    pub fn may_use(&self, id: &str) -> bool {
        self.mailboxes.is_empty() || self.mailboxes.iter().any(|m| m == id)
    }
}

/// The hex SHA-256 of a secret.
pub fn digest(secret: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, secret.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Create a key; returns its id and the secret (shown once).
pub async fn create(
    db: &Db,
    name: &str,
    scopes: &[String],
    mailboxes: &[String],
) -> Result<(String, String), Error> {
    if let Some(bad) = scopes.iter().find(|s| !SCOPES.contains(&s.as_str())) {
        return Err(Error::Usage(format!(
            "unknown scope `{bad}`; the scopes are {}",
            SCOPES.join(", ")
        )));
    }
    if scopes.is_empty() {
        return Err(Error::Usage(format!(
            "give at least one --scope ({})",
            SCOPES.join(", ")
        )));
    }
    let secret = format!("{PREFIX}{}", mailoauth::random::token(32));
    let id = format!("key_{}", mailoauth::random::token(9));
    db.add_api_key(
        &ApiKeyRow {
            id: id.clone(),
            digest: digest(&secret),
            name: name.to_owned(),
            scopes: scopes.join(" "),
            mailboxes: mailboxes.join(" "),
            revoked_at: None,
        },
        mailoauth::clock::now(),
    )
    .await?;
    Ok((id, secret))
}

/// The node's copy of the key table, by digest.
pub struct KeyTable {
    db: Db,
    keys: Mutex<HashMap<String, ApiKeyRow>>,
    /// Database lookups of unknown keys in the current second.
    lookups: Mutex<(Instant, u32)>,
}

impl KeyTable {
    /// Load all keys of `db`.
    pub async fn load(db: Db) -> Result<KeyTable, Error> {
        let map = db
            .api_keys()
            .await?
            .into_iter()
            .map(|k| (k.digest.clone(), k))
            .collect();
        Ok(KeyTable {
            db,
            keys: Mutex::new(map),
            lookups: Mutex::new((Instant::now(), 0)),
        })
    }

    /// Read the table again: a key revoked (or made) through another node or
    /// the command line takes effect here.
    pub async fn reload(&self) -> Result<(), Error> {
        let map = self
            .db
            .api_keys()
            .await?
            .into_iter()
            .map(|k| (k.digest.clone(), k))
            .collect();
        *self.keys.lock().unwrap() = map;
        Ok(())
    }

    /// The caller presenting `secret`, or `None` for an unknown or revoked key.
    pub async fn check(&self, secret: &str) -> Option<Caller> {
        let d = digest(secret);
        if let Some(k) = self.keys.lock().unwrap().get(&d) {
            return caller(k);
        }
        if !self.may_look_up() {
            return None;
        }
        let row = self.db.api_key(&d).await.ok()??;
        let who = caller(&row);
        self.keys.lock().unwrap().insert(d, row);
        who
    }

    fn may_look_up(&self) -> bool {
        let mut l = self.lookups.lock().unwrap();
        if l.0.elapsed() >= Duration::from_secs(1) {
            *l = (Instant::now(), 0);
        }
        l.1 += 1;
        l.1 <= LOOKUPS_PER_SECOND
    }
}

fn caller(k: &ApiKeyRow) -> Option<Caller> {
    if k.revoked_at.is_some() {
        return None;
    }
    Some(Caller {
        key_id: k.id.clone(),
        scopes: k.scopes.split_whitespace().map(str::to_owned).collect(),
        mailboxes: k.mailboxes.split_whitespace().map(str::to_owned).collect(),
    })
}
