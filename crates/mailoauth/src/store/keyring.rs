//! The OS keyring store (Secret Service on Linux) through keyring-core.
//!
//! Owns: talking to the keyring with a timeout. Must not: block a caller for long —
//! a locked Secret Service collection can hang a D-Bus call forever, so every call
//! runs on a helper thread and is abandoned after [`KEYRING_TIMEOUT`].

use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

use super::{Backend, TokenRecord};
use crate::error::{Error, Result};
use crate::remedy::Remedy;

/// Longest we wait for the keyring. Measured here: no D-Bus fails in <1 ms, no
/// Secret Service in ~22 ms; anything past 2 s is a prompt or a locked collection.
pub const KEYRING_TIMEOUT: Duration = Duration::from_secs(2);

const SERVICE: &str = "mailoauth";

/// One account's record as a keyring item (service `mailoauth`, user = account name).
pub struct KeyringStore {
    account: String,
}

fn init_default_store() -> std::result::Result<(), String> {
    static INIT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| {
        #[cfg(target_os = "linux")]
        {
            let store = zbus_secret_service_keyring_store::Store::new().map_err(describe)?;
            keyring_core::set_default_store(store);
            Ok(())
        }
        #[cfg(not(target_os = "linux"))]
        {
            Err("no keyring back end is built for this platform yet".to_owned())
        }
    })
    .clone()
}

/// keyring-core errors can carry the secret's bytes (`BadEncoding`); never Debug-print them.
fn describe(e: keyring_core::Error) -> String {
    use keyring_core::Error as K;
    match e {
        K::BadEncoding(_) | K::BadDataFormat(..) => "the keyring item is not valid text".into(),
        K::NoStorageAccess(p) => format!("keyring locked or not accessible: {p}"),
        K::PlatformFailure(p) => format!("keyring failure: {p}"),
        K::NoEntry => "no such item".into(),
        K::TooLong(what, max) => format!("{what} is longer than the keyring allows ({max})"),
        other => other.to_string(),
    }
}

/// Run `f` against the keyring on a thread, giving up after the timeout.
fn with_timeout<T: Send + 'static>(
    f: impl FnOnce() -> std::result::Result<T, keyring_core::Error> + Send + 'static,
) -> std::result::Result<std::result::Result<T, keyring_core::Error>, String> {
    init_default_store()?;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("keyring".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| e.to_string())?;
    rx.recv_timeout(KEYRING_TIMEOUT).map_err(|_| {
        format!(
            "the keyring did not answer within {} s (a locked collection waiting for a prompt?)",
            KEYRING_TIMEOUT.as_secs()
        )
    })
}

impl KeyringStore {
    /// The store of `account` (nothing is contacted yet).
    pub fn new(account: &str) -> Self {
        KeyringStore {
            account: account.to_owned(),
        }
    }

    /// Check that the keyring answers (for `auto`); an absent item is fine.
    pub fn probe(account: &str) -> std::result::Result<Self, String> {
        let name = account.to_owned();
        match with_timeout(move || keyring_core::Entry::new(SERVICE, &name)?.get_password())? {
            Ok(_) | Err(keyring_core::Error::NoEntry) => Ok(Self::new(account)),
            Err(e) => Err(describe(e)),
        }
    }

    fn err(&self, detail: String) -> Error {
        Error::Store {
            store: "keyring".into(),
            detail,
            remedy: Some(Remedy::Steps(
                "unlock the keyring (or start gnome-keyring / KeePassXC's Secret Service), \
                 or set `store = \"file\"` or `\"encrypted-file\"` for this account"
                    .into(),
            )),
        }
    }

    fn read_raw(&self) -> Result<Option<String>> {
        let name = self.account.clone();
        match with_timeout(move || keyring_core::Entry::new(SERVICE, &name)?.get_password())
            .map_err(|e| self.err(e))?
        {
            Ok(s) => Ok(Some(s)),
            Err(keyring_core::Error::NoEntry) => Ok(None),
            Err(e) => Err(self.err(describe(e))),
        }
    }

    fn write_raw(&self, item: &str, value: String) -> Result<()> {
        let item = item.to_owned();
        with_timeout(move || keyring_core::Entry::new(SERVICE, &item)?.set_password(&value))
            .map_err(|e| self.err(e))?
            .map_err(|e| self.err(describe(e)))
    }
}

impl Backend for KeyringStore {
    fn load(&self) -> Result<Option<TokenRecord>> {
        let Some(s) = self.read_raw()? else {
            return Ok(None);
        };
        TokenRecord::from_bytes(s.as_bytes()).map(Some).map_err(|detail| Error::Store {
            store: format!("keyring item {SERVICE}/{}", self.account),
            detail,
            remedy: Some(Remedy::Steps(
                "signing in again keeps a copy of the bad item under `<account>.corrupt-<time>` and starts afresh".into(),
            )),
        })
    }

    fn save(&self, rec: &TokenRecord) -> Result<()> {
        // A Secret Service item is replaced in one D-Bus call: all-or-nothing.
        self.write_raw(
            &self.account,
            String::from_utf8(rec.to_bytes()).expect("JSON is UTF-8"),
        )
    }

    fn delete(&self) -> Result<()> {
        let name = self.account.clone();
        match with_timeout(move || keyring_core::Entry::new(SERVICE, &name)?.delete_credential())
            .map_err(|e| self.err(e))?
        {
            Ok(()) | Err(keyring_core::Error::NoEntry) => Ok(()),
            Err(e) => Err(self.err(describe(e))),
        }
    }

    fn set_aside(&self) -> Result<Option<String>> {
        let Some(raw) = self.read_raw()? else {
            return Ok(None);
        };
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let item = format!("{}.corrupt-{stamp}", self.account);
        self.write_raw(&item, raw)?;
        self.delete()?;
        Ok(Some(format!("keyring item {SERVICE}/{item}")))
    }

    fn describe(&self) -> String {
        format!("keyring (Secret Service item {SERVICE}/{})", self.account)
    }
}

/// The 32-byte key of an account's encrypted file store, kept in the keyring as
/// item `<account>.key`; created on first use.
pub(crate) fn file_key(account: &str) -> Result<zeroize::Zeroizing<[u8; 32]>> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let store = KeyringStore::new(&format!("{account}.key"));
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    if let Some(s) = store.read_raw()? {
        let raw = zeroize::Zeroizing::new(b64.decode(s.trim()).unwrap_or_default());
        if raw.len() != 32 {
            return Err(store.err(format!(
                "keyring item {SERVICE}/{account}.key is not a 32-byte base64 key"
            )));
        }
        key.copy_from_slice(&raw);
        return Ok(key);
    }
    crate::random::fill(&mut key[..]);
    store.write_raw(&store.account, b64.encode(&key[..]))?;
    Ok(key)
}
