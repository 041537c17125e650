//! The encrypted file store: the record sealed with XChaCha20-Poly1305.
//!
//! Owns: the file format and the key: derived with Argon2id from a passphrase
//! (`passphrase = { command = … }`), or a random key kept in the keyring when no
//! passphrase is configured. Must not: cache keys across processes (the daemon
//! may hold one in memory; files never do).
//!
//! Format: `MOE2` | kdf (0 = keyring key, 1 = Argon2id) | Argon2 m (KiB), t, p
//! (u32 big-endian each) | Argon2 version (0x10 or 0x13) | salt (16) | nonce (24)
//! | ciphertext+tag. The header is the AEAD's associated data, so it cannot be
//! swapped without detection. The parameters are recorded so that a change of
//! the argon2 crate's defaults (or of ours) never makes an existing file
//! unreadable. Files of the first format, `MOE1` | kdf | salt | nonce | sealed,
//! carry no parameters and are read with the ones used when they were written
//! ([`V1_PARAMS`]); the next save rewrites them as `MOE2`.

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

const MAGIC_V1: &[u8; 4] = b"MOE1";
const MAGIC: &[u8; 4] = b"MOE2";
const HEADER_V1: usize = 4 + 1 + 16 + 24;
const HEADER: usize = 4 + 1 + 13 + 16 + 24;
const KDF_KEYRING: u8 = 0;
const KDF_ARGON2ID: u8 = 1;

/// Argon2id cost parameters, as recorded in a file's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
    /// Algorithm version (0x10 or 0x13).
    pub version: u8,
}

/// What `MOE1` files were sealed with: argon2 0.6's defaults, written out here
/// because those files do not say, and the crate's defaults may change.
pub const V1_PARAMS: KdfParams = KdfParams {
    m: 19 * 1024,
    t: 2,
    p: 1,
    version: 0x13,
};

/// What new files are sealed with (OWASP's first Argon2id choice: 19 MiB, 2 passes).
pub const PARAMS: KdfParams = V1_PARAMS;

/// Most a file may ask for: the header is authenticated only after the key is
/// derived, so a tampered header must not be able to make us allocate gigabytes.
const MAX_M: u32 = 1024 * 1024;
const MAX_T: u32 = 64;
const MAX_P: u32 = 16;

impl KdfParams {
    fn to_bytes(self) -> [u8; 13] {
        let mut b = [0u8; 13];
        b[0..4].copy_from_slice(&self.m.to_be_bytes());
        b[4..8].copy_from_slice(&self.t.to_be_bytes());
        b[8..12].copy_from_slice(&self.p.to_be_bytes());
        b[12] = self.version;
        b
    }

    fn from_bytes(b: &[u8]) -> KdfParams {
        let u = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        KdfParams {
            m: u(0),
            t: u(4),
            p: u(8),
            version: b[12],
        }
    }

    fn argon2(self) -> std::result::Result<argon2::Argon2<'static>, String> {
        if self.m > MAX_M || self.t > MAX_T || self.p > MAX_P {
            return Err(format!(
                "the header asks for Argon2 m={} KiB, t={}, p={}, more than this program allows                  (m ≤ {MAX_M}, t ≤ {MAX_T}, p ≤ {MAX_P}): the file is damaged or not ours",
                self.m, self.t, self.p
            ));
        }
        let version = argon2::Version::try_from(u32::from(self.version)).map_err(|_| {
            format!(
                "unknown Argon2 version 0x{:02x} in the header",
                self.version
            )
        })?;
        let params = argon2::Params::new(self.m, self.t, self.p, Some(32))
            .map_err(|e| format!("Argon2 parameters in the header are invalid: {e}"))?;
        Ok(argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            version,
            params,
        ))
    }
}

/// A parsed header: where its parts are, and what it says.
struct Header<'a> {
    /// The whole header (the AEAD's associated data).
    bytes: &'a [u8],
    kdf: u8,
    params: KdfParams,
    salt: &'a [u8],
    nonce: &'a [u8],
}

impl<'a> Header<'a> {
    /// Split a file into header and sealed part; `None` if it is not ours.
    fn parse(file: &'a [u8]) -> Option<(Header<'a>, &'a [u8])> {
        let (len, params, rest) = match file.get(..4)? {
            m if m == MAGIC && file.len() >= HEADER + 16 => {
                (HEADER, KdfParams::from_bytes(&file[5..18]), 18)
            }
            m if m == MAGIC_V1 && file.len() >= HEADER_V1 + 16 => (HEADER_V1, V1_PARAMS, 5),
            _ => return None,
        };
        let (bytes, sealed) = file.split_at(len);
        Some((
            Header {
                bytes,
                kdf: bytes[4],
                params,
                salt: &bytes[rest..rest + 16],
                nonce: &bytes[rest + 16..rest + 40],
            },
            sealed,
        ))
    }
}

/// Tokens in `$XDG_STATE_HOME/mailoauth/tokens/<account>.enc`.
pub struct EncryptedStore {
    path: PathBuf,
    account: String,
    passphrase: Option<SecretSource>,
    secret_timeout: std::time::Duration,
    /// What new files are sealed with ([`PARAMS`]; tests choose cheaper ones).
    params: KdfParams,
}

impl EncryptedStore {
    /// The encrypted store of `account` at `path`.
    pub fn new(path: PathBuf, account: &Account) -> Self {
        EncryptedStore {
            path,
            account: account.name.clone(),
            passphrase: account.passphrase.clone(),
            secret_timeout: account.secret_timeout,
            params: PARAMS,
        }
    }

    fn key(&self, kdf: u8, params: KdfParams, salt: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        match (kdf, &self.passphrase) {
            (KDF_ARGON2ID, Some(src)) => {
                let argon2 = params.argon2().map_err(|d| corrupt(&self.path, d))?;
                let pass = src.resolve_within("passphrase", self.secret_timeout)?;
                let mut key = Zeroizing::new([0u8; 32]);
                argon2
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

    /// Seal `rec` with `params` (recorded in the header) and replace the file.
    fn save_with(&self, rec: &TokenRecord, params: KdfParams) -> Result<()> {
        let kdf = if self.passphrase.is_some() {
            KDF_ARGON2ID
        } else {
            KDF_KEYRING
        };
        let mut header = Vec::with_capacity(HEADER);
        header.extend_from_slice(MAGIC);
        header.push(kdf);
        header.extend_from_slice(&params.to_bytes());
        let mut salt_nonce = [0u8; 40];
        random::fill(&mut salt_nonce);
        header.extend_from_slice(&salt_nonce);
        let key = self.key(kdf, params, &header[18..34])?;
        let cipher = XChaCha20Poly1305::new((&*key).into());
        let plain = Zeroizing::new(rec.to_bytes());
        let sealed = cipher
            .encrypt(
                &XNonce::try_from(&header[34..58]).expect("24-byte nonce"),
                Payload {
                    msg: &plain,
                    aad: &header,
                },
            )
            .map_err(|_| self.err("encryption failed".into()))?;
        header.extend_from_slice(&sealed);
        write_atomic(&self.path, &header)
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
        let Some((header, sealed)) = Header::parse(&bytes) else {
            return Err(corrupt(
                &self.path,
                "not a mailoauth encrypted token file (bad header or truncated)".into(),
            ));
        };
        let key = self.key(header.kdf, header.params, header.salt)?;
        let cipher = XChaCha20Poly1305::new((&*key).into());
        let plain = Zeroizing::new(
            cipher
                .decrypt(
                    &XNonce::try_from(header.nonce).expect("24-byte nonce"),
                    Payload {
                        msg: sealed,
                        aad: header.bytes,
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
        self.save_with(rec, self.params)
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
            params: PARAMS,
        }
    }

    fn record() -> TokenRecord {
        TokenRecord {
            version: 1,
            refresh_token: Some("RT-very-secret".into()),
            login_at: 1,
            refresh_token_at: 1,
            user: None,
            access: BTreeMap::new(),
        }
    }

    #[test]
    fn the_argon2_parameters_are_recorded_in_the_header_and_honoured_on_read() {
        let d = tempfile::tempdir().unwrap();
        let cheap = KdfParams {
            m: 64,
            t: 1,
            p: 2,
            version: 0x10,
        };
        let s = EncryptedStore {
            params: cheap,
            ..store(d.path(), "pw")
        };
        s.save(&record()).unwrap();
        let raw = std::fs::read(d.path().join("a.enc")).unwrap();
        assert_eq!(&raw[..4], b"MOE2");
        assert_eq!(KdfParams::from_bytes(&raw[5..18]), cheap);
        // A reader whose own choice differs still opens it: the file says how.
        assert_eq!(store(d.path(), "pw").load().unwrap().unwrap(), record());
        // The parameters are authenticated: changing them is detected.
        let mut bad = raw.clone();
        bad[8] ^= 1; // m: 64 → 65 KiB
        std::fs::write(d.path().join("a.enc"), &bad).unwrap();
        let e = store(d.path(), "pw").load().unwrap_err();
        assert!(e.to_string().contains("cannot decrypt"), "{e}");
        // A header asking for absurd memory is refused before deriving anything.
        bad[5] = 0xff;
        std::fs::write(d.path().join("a.enc"), &bad).unwrap();
        let e = store(d.path(), "pw").load().unwrap_err();
        assert!(
            e.to_string().contains("more than this program allows"),
            "{e}"
        );
    }

    #[test]
    fn a_file_of_the_first_format_without_parameters_still_opens() {
        // Sealed exactly as the first format did: MOE1 | kdf | salt | nonce,
        // Argon2id with argon2 0.6's defaults.
        let d = tempfile::tempdir().unwrap();
        let mut header = b"MOE1".to_vec();
        header.push(KDF_ARGON2ID);
        header.extend_from_slice(&[7u8; 16]);
        header.extend_from_slice(&[9u8; 24]);
        let mut key = [0u8; 32];
        argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(19 * 1024, 2, 1, Some(32)).unwrap(),
        )
        .hash_password_into(b"pw", &header[5..21], &mut key)
        .unwrap();
        let sealed = XChaCha20Poly1305::new((&key).into())
            .encrypt(
                &XNonce::try_from(&header[21..45]).unwrap(),
                Payload {
                    msg: &record().to_bytes(),
                    aad: &header,
                },
            )
            .unwrap();
        header.extend_from_slice(&sealed);
        std::fs::write(d.path().join("a.enc"), &header).unwrap();
        let s = store(d.path(), "pw");
        assert_eq!(s.load().unwrap().unwrap(), record());
        // Saving again writes the current format.
        s.save(&record()).unwrap();
        assert_eq!(
            &std::fs::read(d.path().join("a.enc")).unwrap()[..4],
            b"MOE2"
        );
        assert_eq!(s.load().unwrap().unwrap(), record());
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
