//! Envelope encryption, the key file, keyed blind indexes and secret tokens.
//!
//! * Each patient (and the organisation) has a data key (DEK), AES-256-GCM.
//! * DEKs are stored wrapped by a key-encryption key (KEK) from the key file.
//! * Search tokens are HMAC-SHA-256 under a separate index key.
//!
//! Architecture Invariant: this crate knows nothing about storage or HTTP, and no
//! secret ever appears in a `Debug` or `Display` output.

mod keyfile;

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use model::{KeyOwner, ResourceId, ResourceType, VersionId};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

pub use keyfile::{AuditKeys, IdentityKeys, KeyFile, KeyFileError, KeyFileSource};

/// Sealed blobs start with this format byte, so a future format can coexist.
const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// Authentication failed: the ciphertext, its associated data or the key is wrong.
    #[error("integrity check failed: stored ciphertext was modified or does not belong here")]
    Integrity,
    #[error("unknown sealed-data format")]
    Format,
    #[error("key-encryption key {0} is not in the key file")]
    UnknownKek(String),
}

/// 32 secret bytes, wiped on drop, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Secret32([u8; 32]);

impl Secret32 {
    pub fn random() -> Secret32 {
        let mut b = [0u8; 32];
        OsRng.fill_bytes(&mut b);
        Secret32(b)
    }

    pub fn from_bytes(b: [u8; 32]) -> Secret32 {
        Secret32(b)
    }

    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for Secret32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret32(<redacted>)")
    }
}

/// A data-encryption key in clear, held only in memory. Cheap to clone (shared).
#[derive(Clone)]
pub struct Dek {
    cipher: std::sync::Arc<Aes256Gcm>,
}

impl std::fmt::Debug for Dek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dek(<redacted>)")
    }
}

impl Dek {
    /// A data key from secret bytes (keys kept in the key file, such as the
    /// audit key, rather than wrapped in the database).
    pub fn from_secret(s: &Secret32) -> Dek {
        Dek {
            cipher: std::sync::Arc::new(Aes256Gcm::new(s.expose().into())),
        }
    }

    /// Encrypts `plaintext`, binding `aad` (which is not stored: the caller must
    /// present the same value to open).
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        seal_with(&self.cipher, aad, plaintext)
    }

    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        open_with(&self.cipher, aad, sealed)
    }
}

fn seal_with(cipher: &Aes256Gcm, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    // Encryption with a valid key and in-memory buffers cannot fail; an empty
    // output would fail `open` with an integrity error rather than leak anything.
    let ct = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .unwrap_or_default();
    let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

fn open_with(cipher: &Aes256Gcm, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let (&format, rest) = sealed.split_first().ok_or(CryptoError::Format)?;
    if format != FORMAT_V1 {
        return Err(CryptoError::Format);
    }
    if rest.len() < NONCE_LEN + TAG_LEN {
        return Err(CryptoError::Integrity);
    }
    let (nonce, ct) = rest.split_at(NONCE_LEN);
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .map_err(|_| CryptoError::Integrity)
}

/// The associated data that binds a sealed resource to its type, id and version,
/// so a ciphertext moved to another row fails to open.
pub fn resource_aad(rtype: ResourceType, id: &ResourceId, version: VersionId) -> Vec<u8> {
    format!(
        "vigil/resource/v1|{}|{}|{}",
        rtype.as_str(),
        id.as_str(),
        version.0
    )
    .into_bytes()
}

fn dek_aad(owner: &KeyOwner) -> Vec<u8> {
    format!("vigil/dek/v1|{}", owner.storage_key()).into_bytes()
}

/// The keys a running node holds in memory, loaded from the key file.
pub struct KeyRing {
    /// (id, key), oldest first. The current KEK is the newest one.
    keks: Vec<(String, Aes256Gcm)>,
    index: Hmac<Sha256>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field(
                "kek_ids",
                &self.keks.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// A freshly created data key and its wrapped form for storage.
pub struct NewDek {
    pub dek: Dek,
    pub kek_id: String,
    pub wrapped: Vec<u8>,
}

impl KeyRing {
    pub fn from_key_file(kf: &KeyFile) -> Result<KeyRing, KeyFileError> {
        let keks = kf
            .keks()
            .iter()
            .map(|k| (k.id.clone(), Aes256Gcm::new(k.key.expose().into())))
            .collect::<Vec<_>>();
        if keks.is_empty() {
            return Err(KeyFileError::Invalid("no key-encryption key".to_owned()));
        }
        let index = <Hmac<Sha256> as Mac>::new_from_slice(kf.index_key().expose())
            .map_err(|_| KeyFileError::Invalid("index key".to_owned()))?;
        Ok(KeyRing { keks, index })
    }

    /// The id of the KEK that wraps new and re-wrapped keys.
    pub fn current_kek_id(&self) -> &str {
        self.keks.last().map(|(id, _)| id.as_str()).unwrap_or("")
    }

    pub fn has_kek(&self, id: &str) -> bool {
        self.keks.iter().any(|(k, _)| k == id)
    }

    fn kek(&self, id: &str) -> Result<&Aes256Gcm, CryptoError> {
        self.keks
            .iter()
            .find(|(k, _)| k == id)
            .map(|(_, c)| c)
            .ok_or_else(|| CryptoError::UnknownKek(id.to_owned()))
    }

    fn current(&self) -> Result<(&str, &Aes256Gcm), CryptoError> {
        self.keks
            .last()
            .map(|(id, c)| (id.as_str(), c))
            .ok_or_else(|| CryptoError::UnknownKek(String::new()))
    }

    /// Creates a random DEK for `owner`, wrapped under the current KEK.
    pub fn new_dek(&self, owner: &KeyOwner) -> Result<NewDek, CryptoError> {
        let secret = Secret32::random();
        let (kek_id, kek) = self.current()?;
        let wrapped = seal_with(kek, &dek_aad(owner), secret.expose());
        Ok(NewDek {
            dek: Dek::from_secret(&secret),
            kek_id: kek_id.to_owned(),
            wrapped,
        })
    }

    pub fn unwrap_dek(
        &self,
        owner: &KeyOwner,
        kek_id: &str,
        wrapped: &[u8],
    ) -> Result<Dek, CryptoError> {
        let secret = self.unwrap_secret(owner, kek_id, wrapped)?;
        Ok(Dek::from_secret(&secret))
    }

    fn unwrap_secret(
        &self,
        owner: &KeyOwner,
        kek_id: &str,
        wrapped: &[u8],
    ) -> Result<Secret32, CryptoError> {
        let mut bytes = open_with(self.kek(kek_id)?, &dek_aad(owner), wrapped)?;
        let arr: Result<[u8; 32], _> = bytes.as_slice().try_into();
        bytes.zeroize();
        arr.map(Secret32::from_bytes)
            .map_err(|_| CryptoError::Integrity)
    }

    /// Re-wraps a DEK under the current KEK. Returns (new kek id, new wrapped bytes).
    pub fn rewrap(
        &self,
        owner: &KeyOwner,
        kek_id: &str,
        wrapped: &[u8],
    ) -> Result<(String, Vec<u8>), CryptoError> {
        let secret = self.unwrap_secret(owner, kek_id, wrapped)?;
        let (id, kek) = self.current()?;
        Ok((
            id.to_owned(),
            seal_with(kek, &dek_aad(owner), secret.expose()),
        ))
    }

    /// A keyed blind-index token: equal inputs give equal tokens; nothing else is
    /// learnt without the index key. Separate per resource type and parameter so
    /// tokens cannot be joined across tables or parameters.
    pub fn blind_token(&self, rtype: ResourceType, param: &str, value: &str) -> Vec<u8> {
        let mut mac = self.index.clone();
        mac.update(rtype.as_str().as_bytes());
        mac.update(&[0]);
        mac.update(param.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        let out = mac.finalize().into_bytes();
        // 128 bits keeps collisions negligible at any realistic size and halves the index.
        out.get(..16).map(<[u8]>::to_vec).unwrap_or_default()
    }
}

impl KeyRing {
    /// A keyed token for a search term outside the record indexes (the
    /// audit log's patient, agent, action …), separated by `domain`.
    pub fn keyed_term(&self, domain: &str, value: &str) -> Vec<u8> {
        let mut mac = self.index.clone();
        mac.update(b"term\0");
        mac.update(domain.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        let out = mac.finalize().into_bytes();
        out.get(..16).map(<[u8]>::to_vec).unwrap_or_default()
    }
}

/// A random bearer token (256 bits, URL-safe base64 without padding).
pub fn random_token() -> String {
    use base64::Engine;
    let mut b = [0u8; 32];
    OsRng.fill_bytes(&mut b);
    let s = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    b.zeroize();
    s
}

/// SHA-256 of a high-entropy token, for storage. (Tokens are random, so a fast
/// hash is enough; passwords use Argon2id in the identity capability.)
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Constant-time check of a presented token against a stored hash.
pub fn token_matches(presented: &str, stored_hash: &[u8]) -> bool {
    let h = token_hash(presented);
    stored_hash.len() == h.len() && bool::from(h.ct_eq(stored_hash))
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::PatientId;
    use proptest::prelude::*;

    fn ring() -> KeyRing {
        KeyRing::from_key_file(&KeyFile::generate()).unwrap()
    }

    fn patient(id: &str) -> KeyOwner {
        KeyOwner::Patient(PatientId(ResourceId::new(id).unwrap()))
    }

    #[test]
    fn wrapped_dek_is_bound_to_its_owner() {
        let r = ring();
        let n = r.new_dek(&patient("a")).unwrap();
        assert!(r.unwrap_dek(&patient("a"), &n.kek_id, &n.wrapped).is_ok());
        assert_eq!(
            r.unwrap_dek(&patient("b"), &n.kek_id, &n.wrapped)
                .unwrap_err(),
            CryptoError::Integrity
        );
        assert_eq!(
            r.unwrap_dek(&patient("a"), "nope", &n.wrapped).unwrap_err(),
            CryptoError::UnknownKek("nope".into())
        );
    }

    #[test]
    fn another_key_file_cannot_unwrap() {
        let a = ring();
        let b = ring();
        let n = a.new_dek(&KeyOwner::Organisation).unwrap();
        // Same id is impossible across generated files, so force the lookup through b's own id.
        let err = b
            .unwrap_dek(&KeyOwner::Organisation, b.current_kek_id(), &n.wrapped)
            .unwrap_err();
        assert_eq!(err, CryptoError::Integrity);
    }

    #[test]
    fn rotation_rewraps_under_the_new_kek() {
        let mut kf = KeyFile::generate();
        let r1 = KeyRing::from_key_file(&kf).unwrap();
        let owner = patient("p");
        let n = r1.new_dek(&owner).unwrap();
        let sealed = n.dek.seal(b"aad", b"hello");
        let new_id = kf.rotate_kek();
        let r2 = KeyRing::from_key_file(&kf).unwrap();
        assert_eq!(r2.current_kek_id(), new_id);
        let (id, wrapped) = r2.rewrap(&owner, &n.kek_id, &n.wrapped).unwrap();
        assert_eq!(id, new_id);
        let dek = r2.unwrap_dek(&owner, &id, &wrapped).unwrap();
        assert_eq!(dek.open(b"aad", &sealed).unwrap(), b"hello");
    }

    #[test]
    fn every_flipped_bit_is_an_integrity_error() {
        let r = ring();
        let dek = r.new_dek(&KeyOwner::Organisation).unwrap().dek;
        let sealed = dek.seal(b"x", b"some patient data");
        for i in 1..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert_eq!(
                dek.open(b"x", &bad).unwrap_err(),
                CryptoError::Integrity,
                "byte {i}"
            );
        }
        let mut bad = sealed.clone();
        bad[0] = 9;
        assert_eq!(dek.open(b"x", &bad).unwrap_err(), CryptoError::Format);
        assert_eq!(dek.open(b"x", &[]).unwrap_err(), CryptoError::Format);
        assert_eq!(
            dek.open(b"x", &[1, 2, 3]).unwrap_err(),
            CryptoError::Integrity
        );
        assert_eq!(dek.open(b"y", &sealed).unwrap_err(), CryptoError::Integrity);
    }

    #[test]
    fn blind_tokens_are_separated_by_type_and_param() {
        let r = ring();
        let a = r.blind_token(ResourceType::Patient, "identifier", "123");
        assert_eq!(a, r.blind_token(ResourceType::Patient, "identifier", "123"));
        assert_ne!(a, r.blind_token(ResourceType::Patient, "telecom", "123"));
        assert_ne!(
            a,
            r.blind_token(ResourceType::Practitioner, "identifier", "123")
        );
        assert_ne!(
            a,
            ring().blind_token(ResourceType::Patient, "identifier", "123")
        );
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn tokens_compare_in_constant_time_and_correctly() {
        let t = random_token();
        let h = token_hash(&t);
        assert!(token_matches(&t, &h));
        assert!(!token_matches("other", &h));
        assert!(!token_matches(&t, &h[..31]));
        assert_ne!(random_token(), t);
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret32::random();
        assert_eq!(format!("{s:?}"), "Secret32(<redacted>)");
        let kf = KeyFile::generate();
        let dbg = format!("{kf:?}");
        let text = kf.to_toml().unwrap();
        let key_line = text.lines().find(|l| l.starts_with("key")).unwrap();
        let b64 = key_line.split('"').nth(1).unwrap();
        assert!(!dbg.contains(b64));
    }

    proptest! {
        #[test]
        fn seal_open_round_trips(pt in proptest::collection::vec(any::<u8>(), 0..2048), aad in proptest::collection::vec(any::<u8>(), 0..64)) {
            let r = ring();
            let dek = r.new_dek(&KeyOwner::Organisation).unwrap().dek;
            let sealed = dek.seal(&aad, &pt);
            prop_assert_eq!(dek.open(&aad, &sealed).unwrap(), pt);
        }
    }
}
