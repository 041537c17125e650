//! Encryption at rest: a master key wraps data keys, data keys seal rows.
//!
//! Owns: the key formats (32-byte keys, key ids), XChaCha20-Poly1305 sealing
//! with the row's identity as associated data (a sealed token moved to another
//! mailbox's row does not open), and reading the master key from its source.
//! Must not: touch the database (the store keeps the wrapped keys) or log a
//! key in any form.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use mailoauth::Error;

use crate::settings::MasterKeySource;

const NONCE: usize = 24;

/// A 256-bit key with its id (a digest of the key, so an id names exactly one
/// key and a wrong key is told apart from a corrupt row).
pub struct Key {
    id: String,
    bytes: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.id)
    }
}

impl Key {
    /// A new random key.
    pub fn generate() -> Key {
        let mut bytes = Zeroizing::new([0u8; 32]);
        SystemRandom::new()
            .fill(bytes.as_mut())
            .expect("the system's random source works");
        Key::from_bytes(bytes)
    }

    fn from_bytes(bytes: Zeroizing<[u8; 32]>) -> Key {
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            &[b"mailoauth-serve key id\0".as_slice(), bytes.as_slice()].concat(),
        );
        let id = digest.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Key { id, bytes }
    }

    /// Parse 64 hex digits or base64 of 32 bytes (what `keygen` prints).
    pub fn parse(text: &str) -> Option<Key> {
        let t = text.trim();
        let raw: Vec<u8> = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&t[2 * i..2 * i + 2], 16).unwrap())
                .collect()
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(t)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t))
                .ok()?
        };
        let raw = Zeroizing::new(raw);
        let bytes: [u8; 32] = raw.as_slice().try_into().ok()?;
        Some(Key::from_bytes(Zeroizing::new(bytes)))
    }

    /// The key as base64, for `keygen` and the generated key file.
    pub fn to_text(&self) -> Zeroizing<String> {
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(self.bytes.as_slice()))
    }

    /// The key's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seal `plaintext` bound to `aad` (nonce ‖ ciphertext ‖ tag).
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system's random source works");
        let cipher = XChaCha20Poly1305::new((&*self.bytes).into());
        let ct = cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("sealing in memory cannot fail");
        [nonce.as_slice(), &ct].concat()
    }

    /// Open what [`Key::seal`] made with the same `aad`; `None` when the key or
    /// the associated data differ or the bytes were changed.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        if sealed.len() < NONCE {
            return None;
        }
        let (nonce, ct) = sealed.split_at(NONCE);
        let cipher = XChaCha20Poly1305::new((&*self.bytes).into());
        cipher
            .decrypt(
                &XNonce::try_from(nonce).expect("24-byte nonce"),
                Payload { msg: ct, aad },
            )
            .ok()
            .map(Zeroizing::new)
    }

    /// Wrap `data` (a data key) under this (master) key.
    pub fn wrap(&self, data: &Key) -> Vec<u8> {
        self.seal(wrap_aad(&data.id).as_bytes(), data.bytes.as_slice())
    }

    /// Unwrap a data key with id `id`; `None` when this is not the master key
    /// that wrapped it.
    pub fn unwrap_key(&self, id: &str, wrapped: &[u8]) -> Option<Key> {
        let raw = self.open(wrap_aad(id).as_bytes(), wrapped)?;
        let bytes: [u8; 32] = raw.as_slice().try_into().ok()?;
        let key = Key::from_bytes(Zeroizing::new(bytes));
        (key.id == id).then_some(key)
    }
}

fn wrap_aad(id: &str) -> String {
    format!("mailoauth-serve data key {id}")
}

/// Read the master key. A configured source must yield a valid key; the default
/// key file is created only when `may_create` (the database holds no data key
/// yet), so a lost file is never silently replaced by a new key.
pub fn master_key(source: &MasterKeySource, may_create: bool) -> Result<Key, Error> {
    let bad = |what: String| {
        Error::Usage(format!(
            "{what}: the master key must be 32 bytes as base64 or 64 hex digits (make one with `mailoauth-serve keygen`)"
        ))
    };
    match source {
        MasterKeySource::Configured(s) => {
            let text = s.resolve("[serve] master_key")?;
            Key::parse(&text).ok_or_else(|| bad("[serve] master_key is not a key".into()))
        }
        MasterKeySource::File(path) => match std::fs::read_to_string(path) {
            Ok(text) => Key::parse(&text)
                .ok_or_else(|| bad(format!("{} does not hold a key", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && may_create => {
                create_key_file(path)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Usage(format!(
                "the master key file {} is missing, but the database holds tokens sealed under a master \
                 key: restore the file (or set `master_key` in [serve]); a new key would not open them, \
                 so none is made",
                path.display()
            ))),
            Err(e) => Err(Error::io(format!("cannot read {}", path.display()), e)),
        },
    }
}

fn create_key_file(path: &Path) -> Result<Key, Error> {
    if let Some(dir) = path.parent() {
        mailoauth::paths::ensure_private_dir(dir)?;
    }
    let key = Key::generate();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("cannot create {}", path.display()), e))?;
    f.write_all(format!("{}\n", key.to_text().as_str()).as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
    log::warn!(
        "made a new master key in {} (key id {}): back it up — without it the stored tokens cannot be read",
        path.display(),
        key.id()
    );
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_row_opens_only_with_its_key_and_its_own_identity() {
        let k = Key::generate();
        let sealed = k.seal(b"mailbox 1", b"refresh token");
        assert_eq!(
            k.open(b"mailbox 1", &sealed).unwrap().as_slice(),
            b"refresh token"
        );
        assert!(
            k.open(b"mailbox 2", &sealed).is_none(),
            "moved to another row"
        );
        assert!(
            Key::generate().open(b"mailbox 1", &sealed).is_none(),
            "another key"
        );
        let mut bent = sealed.clone();
        *bent.last_mut().unwrap() ^= 1;
        assert!(k.open(b"mailbox 1", &bent).is_none(), "changed bytes");
    }

    #[test]
    fn a_data_key_unwraps_only_under_the_master_key_that_wrapped_it() {
        let (master, data) = (Key::generate(), Key::generate());
        let wrapped = master.wrap(&data);
        assert_eq!(
            master.unwrap_key(data.id(), &wrapped).unwrap().id(),
            data.id()
        );
        assert!(Key::generate().unwrap_key(data.id(), &wrapped).is_none());
        assert!(master.unwrap_key("0000000000000000", &wrapped).is_none());
    }

    #[test]
    fn keys_parse_from_base64_and_hex_and_nothing_else() {
        let k = Key::generate();
        assert_eq!(Key::parse(&k.to_text()).unwrap().id(), k.id());
        let hex: String = k.bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(Key::parse(&hex).unwrap().id(), k.id());
        assert!(Key::parse("too short").is_none());
        assert!(Key::parse(&"ab".repeat(31)).is_none());
    }
}
