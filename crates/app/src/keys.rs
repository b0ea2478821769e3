//! Data keys in use: unwrapping, creation, a bounded in-memory cache, key-file
//! reloads and KEK rotation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use crypto::{CryptoError, Dek, KeyFile, KeyFileSource, KeyRing};
use model::KeyOwner;
use store::{Store, WrappedKey};

use crate::AppError;

/// At most this many unwrapped data keys stay in memory.
const CACHE_LIMIT: usize = 200_000;

pub struct Keys {
    ring: RwLock<Arc<KeyRing>>,
    source: KeyFileSource,
    mtime: Mutex<Option<SystemTime>>,
    cache: Mutex<HashMap<KeyOwner, Dek>>,
    store: Arc<dyn Store>,
}

/// The outcome of a KEK rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotateReport {
    pub new_kek_id: String,
    pub rewrapped: u64,
    pub retired: usize,
}

fn key_err(e: impl std::fmt::Display) -> AppError {
    AppError::Keys(e.to_string())
}

fn file_mtime(source: &KeyFileSource) -> Option<SystemTime> {
    match source {
        KeyFileSource::Path(p) => std::fs::metadata(p).and_then(|m| m.modified()).ok(),
        KeyFileSource::Inline(_) => None,
    }
}

impl Keys {
    pub fn new(
        key_file: &KeyFile,
        source: KeyFileSource,
        store: Arc<dyn Store>,
    ) -> Result<Keys, AppError> {
        let ring = KeyRing::from_key_file(key_file).map_err(key_err)?;
        Ok(Keys {
            ring: RwLock::new(Arc::new(ring)),
            mtime: Mutex::new(file_mtime(&source)),
            source,
            cache: Mutex::new(HashMap::new()),
            store,
        })
    }

    pub fn ring(&self) -> Arc<KeyRing> {
        match self.ring.read() {
            Ok(r) => Arc::clone(&r),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Re-reads the key file if it changed on disk (after `vigil keys rotate`).
    fn reload_if_changed(&self) -> Result<bool, AppError> {
        let now = file_mtime(&self.source);
        {
            let mut seen = self
                .mtime
                .lock()
                .map_err(|_| key_err("key lock poisoned"))?;
            if now.is_none() || *seen == now {
                return Ok(false);
            }
            *seen = now;
        }
        let (kf, _) = KeyFile::load(&self.source, false).map_err(key_err)?;
        let ring = KeyRing::from_key_file(&kf).map_err(key_err)?;
        let mut w = self
            .ring
            .write()
            .map_err(|_| key_err("key lock poisoned"))?;
        *w = Arc::new(ring);
        tracing::info!(kek = %w.current_kek_id(), "key file reloaded");
        Ok(true)
    }

    fn cached(&self, owner: &KeyOwner) -> Option<Dek> {
        self.cache.lock().ok().and_then(|c| c.get(owner).cloned())
    }

    fn remember(&self, owner: &KeyOwner, dek: &Dek) {
        if let Ok(mut c) = self.cache.lock() {
            if c.len() >= CACHE_LIMIT {
                c.clear();
            }
            c.insert(owner.clone(), dek.clone());
        }
    }

    /// Forgets every cached key (after an erase by another process).
    pub fn forget_all(&self) {
        if let Ok(mut c) = self.cache.lock() {
            c.clear();
        }
    }

    /// Forgets a cached key (after an erase).
    pub fn forget(&self, owner: &KeyOwner) {
        if let Ok(mut c) = self.cache.lock() {
            c.remove(owner);
        }
    }

    fn unwrap(&self, key: &WrappedKey) -> Result<Dek, AppError> {
        match self
            .ring()
            .unwrap_dek(&key.owner, &key.kek_id, &key.wrapped)
        {
            Ok(d) => Ok(d),
            Err(CryptoError::UnknownKek(_)) => {
                // A rotation may have happened since we loaded the key file.
                self.reload_if_changed()?;
                self.ring()
                    .unwrap_dek(&key.owner, &key.kek_id, &key.wrapped)
                    .map_err(|e| AppError::Keys(e.to_string()))
            }
            Err(CryptoError::Integrity | CryptoError::Format) => Err(AppError::Integrity(format!(
                "wrapped data key of {}",
                owner_kind(&key.owner)
            ))),
        }
    }

    /// The data key for reading `owner`'s data. `Ok(None)` means the key does
    /// not exist: the patient was erased (or never had data).
    pub async fn for_read(&self, owner: &KeyOwner) -> Result<Option<Dek>, AppError> {
        if let Some(d) = self.cached(owner) {
            return Ok(Some(d));
        }
        let Some(key) = self.store.get_key(owner).await? else {
            return Ok(None);
        };
        let dek = self.unwrap(&key)?;
        self.remember(owner, &dek);
        Ok(Some(dek))
    }

    /// The data key for writing `owner`'s data. A missing key is created in
    /// `unit` only: it is stored by the same commit as the data it seals, so a
    /// failed write leaves no key behind and no data is sealed under a key
    /// that is not stored.
    pub async fn for_write(&self, owner: &KeyOwner, unit: &mut NewKeys) -> Result<Dek, AppError> {
        if let Some((dek, _)) = unit.keys.get(owner) {
            return Ok(dek.clone());
        }
        if let Some(d) = self.for_read(owner).await? {
            return Ok(d);
        }
        // New keys are wrapped by the newest KEK: pick up a rotation first.
        self.reload_if_changed()?;
        let fresh = self.ring().new_dek(owner).map_err(key_err)?;
        let wrapped = WrappedKey {
            owner: owner.clone(),
            kek_id: fresh.kek_id,
            wrapped: fresh.wrapped,
        };
        unit.keys
            .insert(owner.clone(), (fresh.dek.clone(), wrapped));
        Ok(fresh.dek)
    }

    /// The data key of `owner`, created and stored at once if missing. For
    /// data outside the record commit path (identity secrets, the outbox):
    /// racing creators agree on the one key the store kept.
    pub async fn ensure(&self, owner: &KeyOwner) -> Result<Dek, AppError> {
        if let Some(d) = self.for_read(owner).await? {
            return Ok(d);
        }
        self.reload_if_changed()?;
        let fresh = self.ring().new_dek(owner).map_err(key_err)?;
        let stored = self
            .store
            .put_key_if_absent(&WrappedKey {
                owner: owner.clone(),
                kek_id: fresh.kek_id,
                wrapped: fresh.wrapped,
            })
            .await?;
        let dek = self.unwrap(&stored)?;
        self.remember(owner, &dek);
        Ok(dek)
    }

    /// After a successful commit: the unit's keys are stored, cache them.
    pub fn committed(&self, unit: NewKeys) {
        for (owner, (dek, _)) in unit.keys {
            self.remember(&owner, &dek);
        }
    }
}

/// Data keys created by one unit of work and not yet stored.
#[derive(Default)]
pub struct NewKeys {
    keys: std::collections::BTreeMap<KeyOwner, (Dek, WrappedKey)>,
}

impl NewKeys {
    pub fn wrapped(&self) -> Vec<WrappedKey> {
        self.keys.values().map(|(_, w)| w.clone()).collect()
    }
}

fn owner_kind(owner: &KeyOwner) -> &'static str {
    match owner {
        KeyOwner::Organisation => "the organisation",
        KeyOwner::Patient(_) => "a patient",
    }
}

/// Rotates the KEK: writes a new KEK into the key file (it becomes current),
/// then re-wraps every data key under it. Safe while a server runs: servers
/// reload the key file when they meet a key id they do not know, and before
/// creating a new data key. With `retire_old`, older KEKs are removed from the
/// file once no data key uses them.
pub async fn rotate(
    store: &dyn Store,
    path: &std::path::Path,
    retire_old: bool,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<RotateReport, AppError> {
    let source = KeyFileSource::Path(path.to_path_buf());
    let (mut kf, _) = KeyFile::load(&source, false).map_err(key_err)?;
    let new_id = kf.rotate_kek();
    kf.save(path).map_err(key_err)?;
    let ring = KeyRing::from_key_file(&kf).map_err(key_err)?;
    let total = store.stats().await?.keys;
    let mut done = 0u64;
    // Loop until no key is left under an older KEK; a running server may add
    // keys under the old KEK until it notices the new file.
    let mut stalled = 0;
    loop {
        let batch = store.keys_not_wrapped_by(&new_id, 500).await?;
        if batch.is_empty() {
            break;
        }
        let before = done;
        for old in batch {
            let (kek_id, wrapped) =
                ring.rewrap(&old.owner, &old.kek_id, &old.wrapped)
                    .map_err(|e| match e {
                        CryptoError::Integrity | CryptoError::Format => {
                            AppError::Integrity("wrapped data key".into())
                        }
                        other => key_err(other),
                    })?;
            let new = WrappedKey {
                owner: old.owner.clone(),
                kek_id,
                wrapped,
            };
            if store.replace_key(&old, &new).await? {
                done += 1;
                progress(done, total);
            }
        }
        if done == before {
            stalled += 1;
            if stalled > 10 {
                return Err(AppError::Keys(
                    "rotation makes no progress: keys keep changing".into(),
                ));
            }
        }
    }
    let mut retired = 0;
    if retire_old {
        if store.keys_not_wrapped_by(&new_id, 1).await?.is_empty() {
            retired = kf.retire_old_keks();
            kf.save(path).map_err(key_err)?;
        } else {
            return Err(AppError::Keys(
                "some data keys are still wrapped by an older key; run again".into(),
            ));
        }
    }
    Ok(RotateReport {
        new_kek_id: new_id,
        rewrapped: done,
        retired,
    })
}
