//! The data keys of a running node, and the two key commands: `rotate-key`
//! (re-wrap the data keys under a new master key) and `reencrypt` (seal every
//! row under a new data key, then retire the old ones).
//!
//! Owns: loading the data keys under the master key (refusing a wrong one
//! before anything is written), following new data keys while running (a row
//! sealed under a key this node has not seen makes it look again; a write
//! seals under the newest active key), and the two commands' order of writes.
//! Retired data keys are kept and still open rows (a node that had not yet
//! noticed the new key may have sealed one meanwhile; `reencrypt` again moves
//! it). Must not: log or print a key, or change a row except by
//! compare-and-swap.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use mailoauth::Error;

use crate::db::Db;
use crate::seal::{self, Key};
use crate::settings::{MasterKeySource, Settings};

/// The associated data of a mailbox's sealed record: a record moved to
/// another row does not open.
pub fn record_aad(mailbox: &str) -> Vec<u8> {
    format!("mailoauth-serve mailbox {mailbox}").into_bytes()
}

/// The associated data of a pending sign-in.
pub fn sign_in_aad(state: &str) -> Vec<u8> {
    format!("mailoauth-serve sign-in {state}").into_bytes()
}

/// The node's data keys: the one new rows are sealed with, and all that open
/// stored rows (retired ones included).
pub struct DataKeys {
    db: Db,
    /// Kept to unwrap data keys made while the node runs (`reencrypt`).
    master: Key,
    ring: RwLock<Ring>,
}

struct Ring {
    current: Arc<Key>,
    all: HashMap<String, Arc<Key>>,
}

impl DataKeys {
    /// The key new rows are sealed with.
    pub fn current(&self) -> Arc<Key> {
        self.ring.read().unwrap().current.clone()
    }

    /// The data key `id`, if this node knows it (no I/O).
    pub fn get(&self, id: &str) -> Option<Arc<Key>> {
        self.ring.read().unwrap().all.get(id).cloned()
    }

    /// The data key `id`, looking in the database when this node does not
    /// know it yet (made by `reencrypt` after the node started).
    pub async fn find(&self, id: &str) -> Result<Option<Arc<Key>>, Error> {
        if let Some(k) = self.get(id) {
            return Ok(Some(k));
        }
        self.reload().await?;
        Ok(self.get(id))
    }

    /// Seal new rows under the newest active key: one small query, made before
    /// each record write (rare: a refresh). Never fails: on any trouble the
    /// node keeps its current key, which every node can still open.
    pub async fn catch_up(&self) {
        match self.db.current_data_key().await {
            Ok(Some(id)) if id != self.current().id() => {
                if let Err(e) = self.reload().await {
                    log::warn!(
                        "data key {id} is not usable here ({e}); sealing under the previous one"
                    );
                }
            }
            Ok(_) => {}
            Err(e) => log::debug!("data keys not checked: {e}"),
        }
    }

    /// Read the data keys again; keys this node knows are kept as they are.
    async fn reload(&self) -> Result<(), Error> {
        let rows = self.db.all_data_keys().await?;
        let mut newest = None;
        let mut fresh = Vec::new();
        for r in &rows {
            if r.active {
                newest = Some(r.id.clone());
            }
            if self.get(&r.id).is_none() {
                let key = (r.master_id == self.master.id())
                    .then(|| self.master.unwrap_key(&r.id, &r.wrapped))
                    .flatten()
                    .ok_or_else(|| {
                        Error::Usage(format!(
                            "data key {} is wrapped under master key {}, not this node's {}: restart the \
                             node with the current master key",
                            r.id,
                            r.master_id,
                            self.master.id()
                        ))
                    })?;
                fresh.push(Arc::new(key));
            }
        }
        let mut ring = self.ring.write().unwrap();
        for k in fresh {
            ring.all.insert(k.id().to_owned(), k);
        }
        if let Some(k) = newest.and_then(|id| ring.all.get(&id).cloned()) {
            ring.current = k;
        }
        Ok(())
    }
}

/// Open the data keys of `db` under `master`; on an empty database make the
/// first one. Refuses, writing nothing, when `master` does not open them all.
pub async fn load(db: &Db, master: Key) -> Result<DataKeys, Error> {
    let rows = db.all_data_keys().await?;
    let mut all = HashMap::new();
    let mut current = None;
    for r in &rows {
        if r.master_id != master.id() {
            return Err(wrong_master(&r.master_id, master.id()));
        }
        let key = master
            .unwrap_key(&r.id, &r.wrapped)
            .ok_or_else(|| wrong_master(&r.master_id, master.id()))?;
        let key = Arc::new(key);
        if r.active {
            current = Some(key.clone());
        }
        all.insert(r.id.clone(), key);
    }
    let current = match current {
        Some(k) => k,
        None if !rows.is_empty() => {
            return Err(Error::Usage(
                "the database has data keys but none is active; restore the database".into(),
            ));
        }
        None => {
            let key = Key::generate();
            db.add_data_key(
                key.id(),
                &master.wrap(&key),
                master.id(),
                mailoauth::clock::now(),
            )
            .await?;
            let key = Arc::new(key);
            all.insert(key.id().to_owned(), key.clone());
            key
        }
    };
    Ok(DataKeys {
        db: db.clone(),
        master,
        ring: RwLock::new(Ring { current, all }),
    })
}

/// The refusal for a master key that is not the one the data keys are
/// wrapped with.
pub fn wrong_master(stored: &str, given: &str) -> Error {
    Error::Usage(format!(
        "the master key (id {given}) is not the one the database's data keys are wrapped with (id {stored}): \
         give the right `master_key` (or restore its key file); nothing was changed"
    ))
}

/// Where `rotate-key` reads the new master key from.
pub enum NewMaster {
    /// A file holding the key.
    File(std::path::PathBuf),
    /// An environment variable.
    Env(String),
    /// A command printing the key.
    Command(String),
}

impl NewMaster {
    fn read(&self) -> Result<Key, Error> {
        let bad = |what: String| {
            Error::Usage(format!(
                "{what} is not a master key: it must be 32 bytes as base64 or 64 hex digits \
                 (make one with `mailoauth-serve keygen`); nothing was changed"
            ))
        };
        let (text, what) = match self {
            NewMaster::File(p) => (
                zeroize::Zeroizing::new(
                    std::fs::read_to_string(p)
                        .map_err(|e| Error::io(format!("cannot read {}", p.display()), e))?,
                ),
                format!("{}", p.display()),
            ),
            NewMaster::Env(v) => (
                mailoauth::config::SecretSource::Env { env: v.clone() }
                    .resolve("--new-master-key-env")?,
                format!("${v}"),
            ),
            NewMaster::Command(c) => (
                mailoauth::config::SecretSource::Command { command: c.clone() }
                    .resolve("--new-master-key-command")?,
                format!("the output of `{c}`"),
            ),
        };
        Key::parse(&text).ok_or_else(|| bad(what))
    }

    /// The `[serve]` line that names this source.
    fn config_line(&self) -> String {
        let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
        match self {
            NewMaster::File(p) => format!("master_key_file = {}", q(&p.display().to_string())),
            NewMaster::Env(v) => format!("master_key = {{ env = {} }}", q(v)),
            NewMaster::Command(c) => format!("master_key = {{ command = {} }}", q(c)),
        }
    }
}

/// `rotate-key`: re-wrap every data key under the new master key, in one
/// transaction; the text telling what to change in the config. The rows
/// themselves are not touched (they are sealed by the data keys).
pub async fn rotate(settings: &Settings, new: &NewMaster) -> Result<String, Error> {
    let db = Db::open(&settings.database).await?;
    let rows = db.all_data_keys().await?;
    if rows.is_empty() {
        return Err(Error::Usage(
            "the database holds no data keys yet: there is nothing to re-wrap; set the new master key \
             in [serve] and start the service"
                .into(),
        ));
    }
    let old = seal::master_key(&settings.master_key, false)?;
    let new_key = new.read()?;
    if new_key.id() == old.id() {
        return Err(Error::Usage(format!(
            "the new master key is the current one (id {}): give another (`mailoauth-serve keygen`); \
             nothing was changed",
            old.id()
        )));
    }
    let mut rewrapped = Vec::new();
    for r in &rows {
        if r.master_id != old.id() {
            return Err(wrong_master(&r.master_id, old.id()));
        }
        let key = old
            .unwrap_key(&r.id, &r.wrapped)
            .ok_or_else(|| wrong_master(&r.master_id, old.id()))?;
        let wrapped = new_key.wrap(&key);
        debug_assert!(new_key.unwrap_key(&r.id, &wrapped).is_some());
        rewrapped.push((r.id.clone(), wrapped));
    }
    db.rewrap_data_keys(&rewrapped, old.id(), new_key.id())
        .await?;
    let mut text = format!(
        "re-wrapped {} data key(s) under the new master key (id {}); the old one (id {}) no longer opens \
         this database.\nNow change [serve] in {}:\n    {}\n",
        rows.len(),
        new_key.id(),
        old.id(),
        settings.path.display(),
        new.config_line(),
    );
    match &settings.master_key {
        MasterKeySource::Configured(_) => {
            text.push_str("  (in place of the `master_key` line there now)\n");
        }
        MasterKeySource::File(p) => text.push_str(&format!(
            "  (or put the new key into {} in place of the old one)\n",
            p.display()
        )),
    }
    text.push_str(
        "and restart every node. Nodes running now keep working until then (they hold the data keys in \
         memory); a node started with the old master key refuses to start.\n",
    );
    Ok(text)
}

/// What `reencrypt` did.
#[derive(Debug)]
pub struct Reencrypted {
    /// The new data key's id.
    pub key_id: String,
    /// Mailbox records re-sealed.
    pub records: usize,
    /// Pending sign-ins re-sealed.
    pub sign_ins: usize,
    /// Data keys retired.
    pub retired: u64,
}

/// How often one row is read again when a node keeps changing it meanwhile.
const ATTEMPTS: usize = 50;

/// `reencrypt`: a new data key; every mailbox record and pending sign-in
/// re-sealed under it by compare-and-swap (a row changed meanwhile is read
/// again, never overwritten); then the old data keys retired.
pub async fn reencrypt(db: &Db, keys: &DataKeys) -> Result<Reencrypted, Error> {
    let rows = db.all_data_keys().await?;
    // Newest by `created_at`: strictly after every existing key, even within
    // the same second.
    let created = rows
        .iter()
        .map(|r| r.created_at + 1)
        .max()
        .unwrap_or(0)
        .max(mailoauth::clock::now());
    let new = Key::generate();
    db.add_data_key(new.id(), &keys.master.wrap(&new), keys.master.id(), created)
        .await?;
    keys.reload().await?;
    let new = keys.get(new.id()).expect("the key just stored is loaded");
    let mut records = 0;
    for id in db.records_not_under(new.id()).await? {
        let aad = record_aad(&id);
        let mut done = false;
        for _ in 0..ATTEMPTS {
            let (sealed, _) = db.record(&id).await?;
            let Some(sealed) = sealed else {
                done = true; // cleared meanwhile
                break;
            };
            if sealed.key_id == new.id() {
                done = true; // a node sealed it under the new key meanwhile
                break;
            }
            let plain = open(keys, &sealed.key_id, &aad, &sealed.bytes, &id).await?;
            let again = new.seal(&aad, &plain);
            let now = mailoauth::clock::now();
            if db
                .save_record_if(&id, sealed.version, new.id(), &again, now)
                .await?
                .is_some()
            {
                records += 1;
                done = true;
                break;
            }
        }
        if !done {
            return Err(Error::Flow(format!(
                "mailbox {id} changed {ATTEMPTS} times while being re-sealed; run `reencrypt` again \
                 (nothing was lost; the old data keys stay active)"
            )));
        }
    }
    let mut sign_ins = 0;
    for (state, key_id, pending) in db.sign_ins_not_under(new.id()).await? {
        let aad = sign_in_aad(&state);
        let plain = open(keys, &key_id, &aad, &pending, "a pending sign-in").await?;
        // Sign-ins are only ever inserted and deleted: the old key id is the
        // compare-and-swap; a sign-in finished meanwhile is simply gone.
        if db
            .reseal_sign_in(&state, &key_id, new.id(), &new.seal(&aad, &plain))
            .await?
        {
            sign_ins += 1;
        }
    }
    let retired = db.retire_data_keys(new.id()).await?;
    Ok(Reencrypted {
        key_id: new.id().to_owned(),
        records,
        sign_ins,
        retired,
    })
}

async fn open(
    keys: &DataKeys,
    key_id: &str,
    aad: &[u8],
    bytes: &[u8],
    what: &str,
) -> Result<zeroize::Zeroizing<Vec<u8>>, Error> {
    let key = keys.find(key_id).await?.ok_or_else(|| Error::Store {
        store: "the service database".into(),
        detail: format!(
            "{what} is sealed under data key {key_id}, which the database does not hold"
        ),
        remedy: None,
    })?;
    key.open(aad, bytes).ok_or_else(|| Error::Store {
        store: "the service database".into(),
        detail: format!(
            "{what} does not open under its data key {key_id} (changed in the database?); nothing was \
             changed for it, and the old data keys stay active"
        ),
        remedy: None,
    })
}
