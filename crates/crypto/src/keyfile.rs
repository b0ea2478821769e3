//! The key file: one TOML file (mode 0600) holding the server's secrets, each with an id.
//!
//! ```toml
//! version = 1
//! [[kek]]
//! id = "kek-20261129T131500Z-1a2b3c"
//! created = "2026-11-29T13:15:00Z"
//! key = "<base64 of 32 bytes>"
//! [index]
//! id = "idx-…"
//! key = "<base64 of 32 bytes>"
//! [identity]
//! id = "idn-…"
//! created = "…"
//! pepper = "<base64 of 32 bytes>"   # Argon2id secret (the password pepper)
//! session = "<base64 of 32 bytes>"  # CSRF tokens
//! token = "<base64 of 32 bytes>"    # access-token signatures (HS256)
//! signing = "<base64 of 32 bytes>"  # seed of the id_token signing key (ES256)
//! [[audit]]
//! id = "aud-…"
//! created = "…"
//! key = "<base64 of 32 bytes>"      # seals audit entries (AES-256-GCM)
//! signing = "<base64 of 32 bytes>"  # Ed25519 seed that signs checkpoints
//! ```
//!
//! A key file written before the identity or audit capability lacks their
//! tables; loading it from a path adds them (atomically, keeping mode 0600).
//! The newest `[[audit]]` entry seals and signs; older ones stay to open old
//! entries and verify old checkpoints.
//!
//! The newest `[[kek]]` wraps new data keys; older ones stay to unwrap keys not yet re-wrapped.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::Secret32;

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("key file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file is not valid: {0}")]
    Invalid(String),
    #[error("key file {0} is readable by other users; run chmod 600 on it")]
    Permissions(PathBuf),
}

/// Where the key file comes from.
#[derive(Debug, Clone)]
pub enum KeyFileSource {
    /// A path; created on first start with mode 0600 if missing.
    Path(PathBuf),
    /// The whole TOML text, from an environment variable (`VIGIL_KEYS`); never written to disk.
    Inline(String),
}

#[derive(Clone)]
pub struct KeyEntry {
    pub id: String,
    pub created: String,
    pub key: Secret32,
}

impl std::fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyEntry")
            .field("id", &self.id)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// The identity capability's secrets. Every node must share them (sessions
/// and tokens issued by one node are checked by another), so they live in
/// the key file, never in the database.
#[derive(Clone)]
pub struct IdentityKeys {
    pub id: String,
    pub created: String,
    pub pepper: Secret32,
    pub session: Secret32,
    pub token: Secret32,
    pub signing: Secret32,
}

impl std::fmt::Debug for IdentityKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityKeys")
            .field("id", &self.id)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

impl IdentityKeys {
    fn generate() -> IdentityKeys {
        let e = new_entry("idn");
        IdentityKeys {
            id: e.id,
            created: e.created,
            pepper: Secret32::random(),
            session: Secret32::random(),
            token: Secret32::random(),
            signing: Secret32::random(),
        }
    }
}

/// The audit trail's keys: one to seal entries, one to sign checkpoints.
#[derive(Clone)]
pub struct AuditKeys {
    pub id: String,
    pub created: String,
    pub key: Secret32,
    pub signing: Secret32,
}

impl std::fmt::Debug for AuditKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditKeys")
            .field("id", &self.id)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

impl AuditKeys {
    fn generate() -> AuditKeys {
        let e = new_entry("aud");
        AuditKeys {
            id: e.id,
            created: e.created,
            key: Secret32::random(),
            signing: Secret32::random(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct KeyFile {
    keks: Vec<KeyEntry>,
    index: KeyEntry,
    identity: Option<IdentityKeys>,
    audit: Vec<AuditKeys>,
}

#[derive(Serialize, Deserialize)]
struct RawEntry {
    id: String,
    created: String,
    key: String,
}

#[derive(Serialize, Deserialize)]
struct RawIdentity {
    id: String,
    created: String,
    pepper: String,
    session: String,
    token: String,
    signing: String,
}

#[derive(Serialize, Deserialize)]
struct RawFile {
    version: u32,
    kek: Vec<RawEntry>,
    index: RawEntry,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    identity: Option<RawIdentity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    audit: Vec<RawAudit>,
}

#[derive(Serialize, Deserialize)]
struct RawAudit {
    id: String,
    created: String,
    key: String,
    signing: String,
}

fn decode_audit(raw: RawAudit) -> Result<AuditKeys, KeyFileError> {
    if raw.id.is_empty() || raw.id.len() > 100 {
        return Err(KeyFileError::Invalid(
            "audit key id must be 1 to 100 characters".to_owned(),
        ));
    }
    Ok(AuditKeys {
        key: decode_secret("audit key", &raw.key)?,
        signing: decode_secret("audit signing", &raw.signing)?,
        id: raw.id,
        created: raw.created,
    })
}

fn encode_audit(k: &AuditKeys) -> RawAudit {
    let b64 = |s: &Secret32| base64::engine::general_purpose::STANDARD.encode(s.expose());
    RawAudit {
        id: k.id.clone(),
        created: k.created.clone(),
        key: b64(&k.key),
        signing: b64(&k.signing),
    }
}

fn decode_secret(what: &str, text: &str) -> Result<Secret32, KeyFileError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| KeyFileError::Invalid(format!("identity {what} is not base64")))?;
    let arr: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| KeyFileError::Invalid(format!("identity {what} is not 32 bytes")))?;
    Ok(Secret32::from_bytes(arr))
}

fn decode_identity(raw: RawIdentity) -> Result<IdentityKeys, KeyFileError> {
    if raw.id.is_empty() || raw.id.len() > 100 {
        return Err(KeyFileError::Invalid(
            "identity id must be 1 to 100 characters".to_owned(),
        ));
    }
    Ok(IdentityKeys {
        pepper: decode_secret("pepper", &raw.pepper)?,
        session: decode_secret("session", &raw.session)?,
        token: decode_secret("token", &raw.token)?,
        signing: decode_secret("signing", &raw.signing)?,
        id: raw.id,
        created: raw.created,
    })
}

fn encode_identity(k: &IdentityKeys) -> RawIdentity {
    let b64 = |s: &Secret32| base64::engine::general_purpose::STANDARD.encode(s.expose());
    RawIdentity {
        id: k.id.clone(),
        created: k.created.clone(),
        pepper: b64(&k.pepper),
        session: b64(&k.session),
        token: b64(&k.token),
        signing: b64(&k.signing),
    }
}

fn now_compact() -> (String, String) {
    let now = time::OffsetDateTime::now_utc();
    let id_fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    (
        now.format(&id_fmt).unwrap_or_default(),
        now.format(&fmt).unwrap_or_default(),
    )
}

fn new_entry(prefix: &str) -> KeyEntry {
    let (compact, created) = now_compact();
    let suffix = hex_suffix();
    KeyEntry {
        id: format!("{prefix}-{compact}-{suffix}"),
        created,
        key: Secret32::random(),
    }
}

fn hex_suffix() -> String {
    use rand::RngCore;
    let mut b = [0u8; 3];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn decode_entry(raw: RawEntry) -> Result<KeyEntry, KeyFileError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw.key.trim())
        .map_err(|_| KeyFileError::Invalid(format!("key {} is not base64", raw.id)))?;
    let arr: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| KeyFileError::Invalid(format!("key {} is not 32 bytes", raw.id)))?;
    if raw.id.is_empty() || raw.id.len() > 100 {
        return Err(KeyFileError::Invalid(
            "key id must be 1 to 100 characters".to_owned(),
        ));
    }
    Ok(KeyEntry {
        id: raw.id,
        created: raw.created,
        key: Secret32::from_bytes(arr),
    })
}

fn encode_entry(e: &KeyEntry) -> RawEntry {
    RawEntry {
        id: e.id.clone(),
        created: e.created.clone(),
        key: base64::engine::general_purpose::STANDARD.encode(e.key.expose()),
    }
}

impl KeyFile {
    /// A new key file with fresh random keys.
    pub fn generate() -> KeyFile {
        KeyFile {
            keks: vec![new_entry("kek")],
            index: new_entry("idx"),
            identity: Some(IdentityKeys::generate()),
            audit: vec![AuditKeys::generate()],
        }
    }

    /// The audit keys, oldest first; the last one is current. Empty only for
    /// a key file from before the audit capability given inline.
    pub fn audit(&self) -> &[AuditKeys] {
        &self.audit
    }

    /// Adds new audit keys, which become current. Returns their id.
    pub fn rotate_audit(&mut self) -> String {
        let k = AuditKeys::generate();
        let id = k.id.clone();
        self.audit.push(k);
        id
    }

    /// The identity secrets; `None` only for a key file from before the
    /// identity capability given inline (a path is upgraded on load).
    pub fn identity(&self) -> Option<&IdentityKeys> {
        self.identity.as_ref()
    }

    pub fn keks(&self) -> &[KeyEntry] {
        &self.keks
    }

    pub fn index_key(&self) -> &Secret32 {
        &self.index.key
    }

    /// Adds a new KEK, which becomes current. Returns its id.
    pub fn rotate_kek(&mut self) -> String {
        let e = new_entry("kek");
        let id = e.id.clone();
        self.keks.push(e);
        id
    }

    /// Removes KEKs other than the current one (after every DEK was re-wrapped).
    pub fn retire_old_keks(&mut self) -> usize {
        let n = self.keks.len().saturating_sub(1);
        if n > 0 {
            self.keks.drain(..n);
        }
        n
    }

    pub fn parse(text: &str) -> Result<KeyFile, KeyFileError> {
        let raw: RawFile =
            toml::from_str(text).map_err(|e| KeyFileError::Invalid(e.message().to_owned()))?;
        if raw.version != 1 {
            return Err(KeyFileError::Invalid(format!(
                "unsupported version {}",
                raw.version
            )));
        }
        let keks = raw
            .kek
            .into_iter()
            .map(decode_entry)
            .collect::<Result<Vec<_>, _>>()?;
        if keks.is_empty() {
            return Err(KeyFileError::Invalid("no [[kek]] entry".to_owned()));
        }
        Ok(KeyFile {
            keks,
            index: decode_entry(raw.index)?,
            identity: raw.identity.map(decode_identity).transpose()?,
            audit: raw
                .audit
                .into_iter()
                .map(decode_audit)
                .collect::<Result<Vec<_>, _>>()?,
        })
    }

    pub fn to_toml(&self) -> Result<String, KeyFileError> {
        let raw = RawFile {
            version: 1,
            kek: self.keks.iter().map(encode_entry).collect(),
            index: encode_entry(&self.index),
            identity: self.identity.as_ref().map(encode_identity),
            audit: self.audit.iter().map(encode_audit).collect(),
        };
        let body = toml::to_string(&raw).map_err(|e| KeyFileError::Invalid(e.to_string()))?;
        Ok(format!(
            "# Vigil key file. Secret: keep it apart from backups (without it they are unreadable).\n\
             # The newest [[kek]] wraps data keys; rotate with `vigil keys rotate`.\n{body}"
        ))
    }

    /// Loads the key file, creating it (mode 0600) if `create` and it is missing.
    /// Returns the file and whether it was created.
    pub fn load(source: &KeyFileSource, create: bool) -> Result<(KeyFile, bool), KeyFileError> {
        match source {
            KeyFileSource::Inline(text) => Ok((KeyFile::parse(text)?, false)),
            KeyFileSource::Path(path) => match std::fs::read_to_string(path) {
                Ok(text) => {
                    check_permissions(path)?;
                    let mut kf = KeyFile::parse(&text)?;
                    if kf.identity.is_none() || kf.audit.is_empty() {
                        // Written before the identity or audit capability:
                        // add their secrets once, atomically. Two processes
                        // racing here would each write their own, so the
                        // loser re-reads what won.
                        if kf.identity.is_none() {
                            kf.identity = Some(IdentityKeys::generate());
                        }
                        if kf.audit.is_empty() {
                            kf.audit.push(AuditKeys::generate());
                        }
                        kf.save(path)?;
                        let text = std::fs::read_to_string(path).map_err(|e| KeyFileError::Io {
                            path: path.clone(),
                            source: e,
                        })?;
                        kf = KeyFile::parse(&text)?;
                    }
                    Ok((kf, false))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                    let kf = KeyFile::generate();
                    kf.save_new(path)?;
                    Ok((kf, true))
                }
                Err(e) => Err(KeyFileError::Io {
                    path: path.clone(),
                    source: e,
                }),
            },
        }
    }

    fn save_new(&self, path: &Path) -> Result<(), KeyFileError> {
        let io = |e| KeyFileError::Io {
            path: path.to_path_buf(),
            source: e,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut f = open_private(path, true).map_err(io)?;
        f.write_all(self.to_toml()?.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)
    }

    /// Atomically replaces the key file at `path` (write to a 0600 temp file, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<(), KeyFileError> {
        let io = |e| KeyFileError::Io {
            path: path.to_path_buf(),
            source: e,
        };
        let tmp = path.with_extension(format!("tmp-{}", hex_suffix()));
        {
            let mut f = open_private(&tmp, true).map_err(io)?;
            f.write_all(self.to_toml()?.as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)?;
        if let Some(Ok(d)) = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map(std::fs::File::open)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(unix)]
fn open_private(path: &Path, create_new: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(create_new)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn open_private(path: &Path, create_new: bool) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(create_new)
        .open(path)
}

#[cfg(unix)]
fn check_permissions(path: &Path) -> Result<(), KeyFileError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| KeyFileError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(KeyFileError::Permissions(path.to_path_buf()));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_permissions(_path: &Path) -> Result<(), KeyFileError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_with_mode_0600_and_reloads_equal() {
        let dir = std::env::temp_dir().join(format!("vigil-kf-{}", hex_suffix()));
        let path = dir.join("keys.toml");
        let src = KeyFileSource::Path(path.clone());
        let (a, created) = KeyFile::load(&src, true).unwrap();
        assert!(created);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let (b, created) = KeyFile::load(&src, true).unwrap();
        assert!(!created);
        assert_eq!(a.to_toml().unwrap(), b.to_toml().unwrap());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_file_is_an_error_when_not_creating() {
        let src = KeyFileSource::Path(std::env::temp_dir().join("vigil-no-such-key-file.toml"));
        assert!(matches!(
            KeyFile::load(&src, false),
            Err(KeyFileError::Io { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn world_readable_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("vigil-kf-{}", hex_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys.toml");
        std::fs::write(&path, KeyFile::generate().to_toml().unwrap()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            KeyFile::load(&KeyFileSource::Path(path), false),
            Err(KeyFileError::Permissions(_))
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn malformed_files_are_refused_clearly() {
        for bad in [
            "",
            "version = 2\nkek=[]",
            "version = 1\nkek = []\n[index]\nid='i'\ncreated=''\nkey='AAAA'",
        ] {
            assert!(
                matches!(KeyFile::parse(bad), Err(KeyFileError::Invalid(_))),
                "{bad}"
            );
        }
        let good = KeyFile::generate().to_toml().unwrap();
        let short = good.replacen("key = \"", "key = \"AAAA", 1);
        assert!(KeyFile::parse(&short).is_err());
    }

    #[test]
    fn identity_keys_round_trip_and_old_files_gain_them() {
        let kf = KeyFile::generate();
        let again = KeyFile::parse(&kf.to_toml().unwrap()).unwrap();
        let (a, b) = (kf.identity().unwrap(), again.identity().unwrap());
        assert_eq!(a.pepper.expose(), b.pepper.expose());
        assert_eq!(a.signing.expose(), b.signing.expose());
        assert_ne!(a.pepper.expose(), a.token.expose());

        let mut old = kf.clone();
        old.identity = None;
        old.audit.clear();
        let text = old.to_toml().unwrap();
        assert!(!text.contains("[identity]"));
        assert!(KeyFile::parse(&text).unwrap().identity().is_none());
        let dir = std::env::temp_dir().join(format!("vigil-kf-{}", hex_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys.toml");
        old.save(&path).unwrap();
        let src = KeyFileSource::Path(path.clone());
        let (up, _) = KeyFile::load(&src, false).unwrap();
        let (again, _) = KeyFile::load(&src, false).unwrap();
        assert_eq!(
            up.identity().unwrap().pepper.expose(),
            again.identity().unwrap().pepper.expose()
        );
        assert_eq!(up.index_key().expose(), kf.index_key().expose());
        assert_eq!(up.audit().len(), 1, "audit keys are added too");
        assert_eq!(
            up.audit()[0].signing.expose(),
            again.audit()[0].signing.expose()
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn rotation_keeps_old_keks_until_retired() {
        let mut kf = KeyFile::generate();
        let first = kf.keks()[0].id.clone();
        let second = kf.rotate_kek();
        assert_eq!(kf.keks().len(), 2);
        let kf2 = KeyFile::parse(&kf.to_toml().unwrap()).unwrap();
        assert_eq!(kf2.keks()[0].id, first);
        assert_eq!(kf2.keks()[1].id, second);
        assert_eq!(kf.retire_old_keks(), 1);
        assert_eq!(kf.keks()[0].id, second);
    }
}
