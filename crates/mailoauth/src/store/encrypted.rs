//! The encrypted file store: the record sealed with XChaCha20-Poly1305.
//!
//! Owns: the file format and the key: derived with Argon2id from a passphrase
//! (`passphrase = { command = … }`), or a random key kept in the keyring when no
//! passphrase is configured. Must not: cache keys across processes (the daemon
//! may hold one in memory; files never do).
//!
//! Format: `MOE1` | kdf (0 = keyring key, 1 = Argon2id) | salt (16) | nonce (24) |
//! ciphertext+tag. The header is the AEAD's associated data, so it cannot be
//! swapped without detection.

use std::path::PathBuf;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use super::file::{corrupt, read_optional, remove_optional, set_aside, write_atomic};
use super::{Backend, TokenRecord};
use crate::config::SecretSource;
use crate::error::{Error, Result};
use crate::providers::Account;
use crate::random;

const MAGIC: &[u8; 4] = b"MOE1";
const HEADER: usize = 4 + 1 + 16 + 24;
const KDF_KEYRING: u8 = 0;
const KDF_ARGON2ID: u8 = 1;

/// Tokens in `$XDG_STATE_HOME/mailoauth/tokens/<account>.enc`.
pub struct EncryptedStore {
    path: PathBuf,
    account: String,
    passphrase: Option<SecretSource>,
    secret_timeout: std::time::Duration,
}

impl EncryptedStore {
    /// The encrypted store of `account` at `path`.
    pub fn new(path: PathBuf, account: &Account) -> Self {
        EncryptedStore {
            path,
            account: account.name.clone(),
            passphrase: account.passphrase.clone(),
            secret_timeout: account.secret_timeout,
        }
    }

    fn key(&self, kdf: u8, salt: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        match (kdf, &self.passphrase) {
            (KDF_ARGON2ID, Some(src)) => {
                let pass = src.resolve_within("passphrase", self.secret_timeout)?;
                let mut key = Zeroizing::new([0u8; 32]);
                argon2::Argon2::default()
                    .hash_password_into(pass.as_bytes(), salt, &mut key[..])
                    .map_err(|e| self.err(format!("key derivation failed: {e}")))?;
                Ok(key)
            }
            (KDF_KEYRING, _) => super::keyring::file_key(&self.account),
            (KDF_ARGON2ID, None) => Err(self.err(
                "the file is sealed with a passphrase but the account has no `passphrase` setting"
                    .into(),
            )),
            (k, _) => Err(corrupt(
                &self.path,
                format!("unknown key-derivation id {k}"),
            )),
        }
    }

    fn err(&self, detail: String) -> Error {
        Error::Store {
            store: self.path.display().to_string(),
            detail,
            remedy: None,
        }
    }
}

impl Backend for EncryptedStore {
    fn load(&self) -> Result<Option<TokenRecord>> {
        let Some(bytes) = read_optional(&self.path)? else {
            return Ok(None);
        };
        if bytes.len() < HEADER + 16 || &bytes[..4] != MAGIC {
            return Err(corrupt(
                &self.path,
                "not a mailoauth encrypted token file (bad header or truncated)".into(),
            ));
        }
        let (header, sealed) = bytes.split_at(HEADER);
        let key = self.key(header[4], &header[5..21])?;
        let cipher = XChaCha20Poly1305::new((&*key).into());
        let plain = Zeroizing::new(
            cipher
                .decrypt(
                    &XNonce::try_from(&header[21..45]).expect("24-byte nonce"),
                    Payload {
                        msg: sealed,
                        aad: header,
                    },
                )
                .map_err(|_| {
                    corrupt(
                        &self.path,
                        "cannot decrypt: wrong passphrase/key, or the file was modified".into(),
                    )
                })?,
        );
        TokenRecord::from_bytes(&plain)
            .map(Some)
            .map_err(|d| corrupt(&self.path, d))
    }

    fn save(&self, rec: &TokenRecord) -> Result<()> {
        let kdf = if self.passphrase.is_some() {
            KDF_ARGON2ID
        } else {
            KDF_KEYRING
        };
        let mut header = Vec::with_capacity(HEADER);
        header.extend_from_slice(MAGIC);
        header.push(kdf);
        let mut salt_nonce = [0u8; 40];
        random::fill(&mut salt_nonce);
        header.extend_from_slice(&salt_nonce);
        let key = self.key(kdf, &header[5..21])?;
        let cipher = XChaCha20Poly1305::new((&*key).into());
        let plain = Zeroizing::new(rec.to_bytes());
        let sealed = cipher
            .encrypt(
                &XNonce::try_from(&header[21..45]).expect("24-byte nonce"),
                Payload {
                    msg: &plain,
                    aad: &header,
                },
            )
            .map_err(|_| self.err("encryption failed".into()))?;
        header.extend_from_slice(&sealed);
        write_atomic(&self.path, &header)
    }

    fn delete(&self) -> Result<()> {
        remove_optional(&self.path)
    }

    fn set_aside(&self) -> Result<Option<String>> {
        Ok(set_aside(&self.path)?.map(|p| p.display().to_string()))
    }

    fn describe(&self) -> String {
        let key = if self.passphrase.is_some() {
            "passphrase"
        } else {
            "key in keyring"
        };
        format!("encrypted file {} ({key})", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn store(dir: &std::path::Path, pass: &str) -> EncryptedStore {
        EncryptedStore {
            path: dir.join("a.enc"),
            account: "a".into(),
            passphrase: Some(SecretSource::Literal(pass.into())),
            secret_timeout: crate::config::DEFAULT_SECRET_TIMEOUT,
        }
    }

    #[test]
    fn seal_open_and_wrong_passphrase() {
        let d = tempfile::tempdir().unwrap();
        let rec = TokenRecord {
            version: 1,
            refresh_token: Some("RT-very-secret".into()),
            login_at: 1,
            refresh_token_at: 1,
            user: None,
            access: BTreeMap::new(),
        };
        store(d.path(), "pw").save(&rec).unwrap();
        let raw = std::fs::read(d.path().join("a.enc")).unwrap();
        assert!(!raw.windows(14).any(|w| w == b"RT-very-secret"));
        assert_eq!(store(d.path(), "pw").load().unwrap().unwrap(), rec);
        let e = store(d.path(), "other").load().unwrap_err();
        assert!(e.to_string().contains("wrong passphrase"), "{e}");
        // Tampering is detected, truncation is reported, nothing is overwritten.
        let mut bad = raw.clone();
        let n = bad.len() - 1;
        bad[n] ^= 1;
        std::fs::write(d.path().join("a.enc"), &bad).unwrap();
        assert!(store(d.path(), "pw").load().is_err());
        std::fs::write(d.path().join("a.enc"), &raw[..20]).unwrap();
        assert!(
            store(d.path(), "pw")
                .load()
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );
        assert_eq!(std::fs::read(d.path().join("a.enc")).unwrap(), &raw[..20]);
    }
}
