//! Token storage: what is stored ([`TokenRecord`]) and where ([`Store`]).
//!
//! Owns: the record format, the three back ends (0600 file, encrypted file, OS
//! keyring) and the `auto` choice between keyring and file. Must not: decide when
//! to refresh or talk to a provider (that is the broker). Every write of a record
//! is all-or-nothing: a crash leaves either the old or the new record, never a mix.

pub mod encrypted;
pub mod file;
pub mod keyring;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::StoreKind;
use crate::error::Result;
use crate::paths;
use crate::providers::Account;

/// Format version of [`TokenRecord`]; bump on incompatible change.
pub const RECORD_VERSION: u32 = 1;

/// One access token for one resource.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessToken {
    /// The bearer token.
    pub token: String,
    /// Unix time when it expires.
    pub expires_at: i64,
    /// Unix time when it was received (0 if unknown).
    #[serde(default)]
    pub obtained_at: i64,
    /// Scopes the server says it carries, when it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// Everything stored for one account.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenRecord {
    /// [`RECORD_VERSION`].
    pub version: u32,
    /// Refresh token (absent for client credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Unix time of the interactive login that started this chain of tokens.
    pub login_at: i64,
    /// Unix time the current refresh token was received.
    #[serde(default)]
    pub refresh_token_at: i64,
    /// The user the provider says signed in, when it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Access tokens by resource name (`mail`, `graph`, …).
    #[serde(default)]
    pub access: BTreeMap<String, AccessToken>,
}

impl fmt::Debug for TokenRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Tokens are secrets: Debug shows their shape only.
        f.debug_struct("TokenRecord")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[redacted]"),
            )
            .field("login_at", &self.login_at)
            .field("user", &self.user)
            .field(
                "access",
                &self
                    .access
                    .iter()
                    .map(|(k, v)| (k, v.expires_at))
                    .collect::<BTreeMap<_, _>>(),
            )
            .finish()
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl AccessToken {
    /// True if it may be handed out: at least `min_validity` seconds left, or — for
    /// servers issuing tokens shorter than that — at least half its lifetime left
    /// (else every call would refresh).
    /// Saturating: a record's times come from a file anyone with access may
    /// have edited, and a huge `min_validity` must not wrap to a negative one.
    pub fn is_fresh(&self, min_validity: u64, now: i64) -> bool {
        let lifetime = if self.obtained_at > 0 {
            self.expires_at.saturating_sub(self.obtained_at)
        } else {
            i64::MAX
        };
        let min = i64::try_from(min_validity).unwrap_or(i64::MAX);
        self.expires_at.saturating_sub(now) >= min.min(lifetime / 2)
    }
}

impl TokenRecord {
    /// Serialise for storage.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a TokenRecord always serialises")
    }

    /// Parse stored bytes; the error says what is wrong without echoing content.
    pub fn from_bytes(bytes: &[u8]) -> std::result::Result<Self, String> {
        let rec: TokenRecord = serde_json::from_slice(bytes).map_err(|e| {
            // serde_json's message can quote input (a token); keep only position and category.
            format!(
                "not a valid token record (JSON {:?} error at line {}, column {})",
                e.classify(),
                e.line(),
                e.column()
            )
        })?;
        if rec.version != RECORD_VERSION {
            return Err(format!(
                "record version {} is not supported (expected {RECORD_VERSION})",
                rec.version
            ));
        }
        Ok(rec)
    }
}

/// A place to keep token records.
pub trait Backend: Send + Sync {
    /// The record, or `None` if there is none.
    fn load(&self) -> Result<Option<TokenRecord>>;
    /// Replace the record durably (all-or-nothing).
    fn save(&self, rec: &TokenRecord) -> Result<()>;
    /// Remove the record; not an error if there is none.
    fn delete(&self) -> Result<()>;
    /// Move an unreadable record out of the way (kept, never deleted) so a new login
    /// can start afresh; returns where it went.
    fn set_aside(&self) -> Result<Option<String>>;
    /// Human description for `status` (e.g. a path, or "keyring (Secret Service)").
    fn describe(&self) -> String;
}

/// The store of one account, with the back end already chosen.
pub struct Store {
    /// What the config asked for.
    pub requested: StoreKind,
    /// What is actually used (`auto` resolved).
    pub used: StoreKind,
    backend: Box<dyn Backend>,
}

impl Store {
    /// Open the store of `account`. For `auto`, an existing token file wins (so the
    /// cached path never probes the keyring); otherwise the keyring is probed with a
    /// timeout and the file is the fallback.
    pub fn open(account: &Account) -> Result<Store> {
        let requested = account.store;
        let path = token_file(account, "json");
        // Reads too: a token from a directory others can write may be theirs.
        paths::check_state_dir(path.parent().expect("tokens/ is the parent"))?;
        let file = file::FileStore::new(path);
        let (used, backend): (StoreKind, Box<dyn Backend>) = match requested {
            StoreKind::File => (StoreKind::File, Box::new(file)),
            StoreKind::Keyring => (
                StoreKind::Keyring,
                Box::new(keyring::KeyringStore::new(&account.name)),
            ),
            StoreKind::EncryptedFile => (
                StoreKind::EncryptedFile,
                Box::new(encrypted::EncryptedStore::new(
                    token_file(account, "enc"),
                    account,
                )),
            ),
            StoreKind::Auto => {
                if file.exists() {
                    (StoreKind::File, Box::new(file))
                } else {
                    match keyring::KeyringStore::probe(&account.name) {
                        Ok(k) => (StoreKind::Keyring, Box::new(k)),
                        Err(why) => {
                            log::info!("keyring not usable ({why}); using the 0600 file store");
                            (StoreKind::File, Box::new(file))
                        }
                    }
                }
            }
        };
        Ok(Store {
            requested,
            used,
            backend,
        })
    }

    /// Load the record.
    pub fn load(&self) -> Result<Option<TokenRecord>> {
        self.backend.load()
    }

    /// Save the record durably.
    pub fn save(&self, rec: &TokenRecord) -> Result<()> {
        self.backend.save(rec)
    }

    /// Delete the record.
    pub fn delete(&self) -> Result<()> {
        self.backend.delete()
    }

    /// Move an unreadable record aside (see [`Backend::set_aside`]).
    pub fn set_aside(&self) -> Result<Option<String>> {
        self.backend.set_aside()
    }

    /// `auto → keyring (…)` style description.
    pub fn describe(&self) -> String {
        if self.requested == StoreKind::Auto {
            format!("auto → {}", self.backend.describe())
        } else {
            self.backend.describe()
        }
    }
}

/// `$XDG_STATE_HOME/mailoauth/tokens/<account>.<ext>`.
pub fn token_file(account: &Account, ext: &str) -> PathBuf {
    paths::state_dir()
        .join("tokens")
        .join(format!("{}.{ext}", paths::file_stem(&account.name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip_and_debug_redacts() {
        let mut r = TokenRecord {
            version: RECORD_VERSION,
            refresh_token: Some("RT-secret".into()),
            login_at: 1,
            refresh_token_at: 2,
            user: Some("a@b".into()),
            access: BTreeMap::new(),
        };
        r.access.insert(
            "mail".into(),
            AccessToken {
                token: "AT-secret".into(),
                expires_at: 5,
                obtained_at: 1,
                scope: None,
            },
        );
        let back = TokenRecord::from_bytes(&r.to_bytes()).unwrap();
        assert_eq!(back, r);
        let dbg = format!("{r:?}");
        assert!(!dbg.contains("secret"), "{dbg}");
    }

    #[test]
    fn freshness_respects_min_validity_and_short_lifetimes() {
        let at = |obtained_at, expires_at| AccessToken {
            token: String::new(),
            expires_at,
            obtained_at,
            scope: None,
        };
        assert!(at(0, 1000).is_fresh(300, 600));
        assert!(!at(0, 1000).is_fresh(300, 800));
        // A 60 s token is fresh for its first half even with min_validity = 300.
        assert!(at(1000, 1060).is_fresh(300, 1020));
        assert!(!at(1000, 1060).is_fresh(300, 1040));
    }

    #[test]
    fn freshness_of_a_record_with_extreme_times_or_min_validity_does_not_overflow() {
        let at = |obtained_at, expires_at| AccessToken {
            token: String::new(),
            expires_at,
            obtained_at,
            scope: None,
        };
        assert!(!at(1, i64::MIN).is_fresh(300, 1_750_000_000));
        assert!(at(1, i64::MAX).is_fresh(300, i64::MIN));
        assert!(!at(0, i64::MIN).is_fresh(0, i64::MAX));
        // u64::MAX seconds is "always refresh", not -1 ("even a little expired").
        assert!(!at(0, 1000).is_fresh(u64::MAX, 1000));
    }

    #[test]
    fn corrupt_record_error_does_not_echo_content() {
        let e = TokenRecord::from_bytes(
            b"{\"version\":1,\"refresh_token\":\"RT-secret\",\"login_at\":",
        )
        .unwrap_err();
        assert!(!e.contains("RT-secret"), "{e}");
        let e = TokenRecord::from_bytes(br#"{"version":9,"login_at":1}"#).unwrap_err();
        assert!(e.contains("version 9"));
    }
}
