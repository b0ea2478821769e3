//! The identifier index: keyed hashes of every patient's identifiers, mapped
//! to the patients holding each value.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::normalize;
use super::{DlpError, IdentifierKind};

/// A truncated keyed hash: 128 bits keep accidental collisions out of reach
/// across millions of values while halving the index's memory.
pub(crate) type Digest = [u8; 16];

/// The 32-byte secret the index's hashes are keyed with.
///
/// Without it the index reveals nothing: the hashes of phone numbers or
/// birth dates cannot be recomputed by enumeration. The caller owns its
/// storage and rotation; rotating means rebuilding the index.
#[derive(Clone)]
pub struct IndexKey([u8; 32]);

impl IndexKey {
    /// Wraps 32 secret bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for IndexKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IndexKey(<redacted>)")
    }
}

/// HMAC-SHA-256 under the index key, with the key schedule computed once.
#[derive(Clone)]
pub(crate) struct Keyed(Hmac<Sha256>);

impl Keyed {
    pub(crate) fn new(key: &IndexKey) -> Self {
        // HMAC pads keys shorter than the hash's 64-byte block with zeros, so
        // keying with the zero-padded block is HMAC under the 32-byte key
        // itself, and needs no fallible length check.
        let mut block = [0u8; 64];
        for (dst, src) in block.iter_mut().zip(key.0.iter()) {
            *dst = *src;
        }
        Self(<Hmac<Sha256> as Mac>::new(&block.into()))
    }

    /// The digest of one normalised value; the kind is part of the message
    /// so equal strings of different kinds never collide.
    pub(crate) fn digest(&self, kind: IdentifierKind, normalised: &str) -> Digest {
        let mut mac = self.0.clone();
        mac.update(&[kind.tag(), 0x1f]);
        mac.update(normalised.as_bytes());
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; 16];
        for (dst, src) in out.iter_mut().zip(full.iter()) {
            *dst = *src;
        }
        out
    }
}

/// One patient's identifiers as the record holds them, before
/// normalisation. Values that do not normalise (an email without `@`, a
/// phone of five digits, a birth date that is not `YYYY-MM-DD`) are skipped
/// and counted in [`IdentifierIndex::skipped_values`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PatientIdentifiers {
    /// The patient's id in the record store.
    pub patient_id: String,
    /// Medical record numbers (any issuer).
    pub mrns: Vec<String>,
    /// Social Security numbers, with or without dashes.
    pub ssns: Vec<String>,
    /// Phone numbers in any common spelling.
    pub phones: Vec<String>,
    /// Email addresses.
    pub emails: Vec<String>,
    /// Names (current and former); indexed only together with the birth date.
    pub names: Vec<PersonName>,
    /// Birth date as `YYYY-MM-DD`.
    pub birth_date: Option<String>,
}

/// A person's name as FHIR `HumanName` splits it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PersonName {
    /// Family name, possibly several words (`Garcia Lopez`).
    pub family: String,
    /// Given names, first the one people are called by.
    pub given: Vec<String>,
}

/// A map value with this bit set indexes [`IdentifierIndex::shared`]; without
/// it, the value is the one patient slot holding the digest. Almost every
/// value has one holder, so the common case costs four bytes and no
/// allocation.
const SHARED: u32 = 1 << 31;

/// Digests are uniformly random already; hashing them again with SipHash
/// would only cost time, so the map uses their first eight bytes.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8).take(1) {
            let mut word = [0u8; 8];
            for (dst, src) in word.iter_mut().zip(chunk) {
                *dst = *src;
            }
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }

    fn write_usize(&mut self, _length_prefix: usize) {}
}

type DigestMap<V> = HashMap<Digest, V, BuildHasherDefault<DigestHasher>>;

struct PatientSlot {
    id: String,
    digests: Box<[Digest]>,
}

/// Keyed hashes of every patient's identifiers, each mapped to the patients
/// holding that value.
///
/// The index stores no identifier in the clear: a memory dump shows 16-byte
/// HMAC digests and patient ids. It is built once at start-up and kept
/// current with [`IdentifierIndex::add`] and [`IdentifierIndex::remove`] as
/// records change.
pub struct IdentifierIndex {
    keyed: Keyed,
    map: DigestMap<u32>,
    // INVARIANT: `map` holds patient `i` under digest `d` (directly, or in the
    // `shared` list it points to) exactly when `patients[i]` is `Some` and
    // lists `d`; a `shared` list in use has at least two holders.
    shared: Vec<Vec<u32>>,
    shared_free: Vec<u32>,
    patients: Vec<Option<PatientSlot>>,
    by_id: HashMap<String, u32>,
    free: Vec<u32>,
    skipped: usize,
}

impl fmt::Debug for IdentifierIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentifierIndex")
            .field("patients", &self.patient_count())
            .field("values", &self.map.len())
            .finish_non_exhaustive()
    }
}

impl IdentifierIndex {
    /// An empty index keyed with `key`.
    pub fn new(key: &IndexKey) -> Self {
        Self {
            keyed: Keyed::new(key),
            map: DigestMap::default(),
            shared: Vec::new(),
            shared_free: Vec::new(),
            patients: Vec::new(),
            by_id: HashMap::new(),
            free: Vec::new(),
            skipped: 0,
        }
    }

    /// Indexes every patient `patients` yields.
    pub fn build(
        key: &IndexKey,
        patients: impl IntoIterator<Item = PatientIdentifiers>,
    ) -> Result<Self, DlpError> {
        let mut index = Self::new(key);
        for patient in patients {
            index.add(&patient)?;
        }
        Ok(index)
    }

    /// Indexes one patient, replacing what the index held for the same
    /// patient id.
    pub fn add(&mut self, patient: &PatientIdentifiers) -> Result<(), DlpError> {
        self.remove(&patient.patient_id);
        let (mut digests, skipped) = self.digests_of(patient);
        self.skipped += skipped;
        digests.sort_unstable();
        digests.dedup();
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => u32::try_from(self.patients.len())
                .ok()
                .filter(|slot| *slot < SHARED)
                .ok_or(DlpError::IndexFull)?,
        };
        for digest in &digests {
            self.hold(*digest, slot)?;
        }
        let entry = PatientSlot {
            id: patient.patient_id.clone(),
            digests: digests.into_boxed_slice(),
        };
        match self.patients.get_mut(slot as usize) {
            Some(existing) => *existing = Some(entry),
            None => self.patients.push(Some(entry)),
        }
        self.by_id.insert(patient.patient_id.clone(), slot);
        Ok(())
    }

    /// Forgets one patient; true if the index held them.
    pub fn remove(&mut self, patient_id: &str) -> bool {
        let Some(slot) = self.by_id.remove(patient_id) else {
            return false;
        };
        let Some(entry) = self.patients.get_mut(slot as usize).and_then(Option::take) else {
            return false;
        };
        for digest in entry.digests.iter() {
            self.release(digest, slot);
        }
        self.free.push(slot);
        true
    }

    fn hold(&mut self, digest: Digest, slot: u32) -> Result<(), DlpError> {
        let Some(value) = self.map.get_mut(&digest) else {
            self.map.insert(digest, slot);
            return Ok(());
        };
        if *value & SHARED == 0 {
            if *value != slot {
                let list = vec![*value, slot];
                let at = match self.shared_free.pop() {
                    Some(at) => {
                        if let Some(free) = self.shared.get_mut(at as usize) {
                            *free = list;
                        }
                        at
                    }
                    None => {
                        let at = u32::try_from(self.shared.len())
                            .ok()
                            .filter(|at| *at < SHARED)
                            .ok_or(DlpError::IndexFull)?;
                        self.shared.push(list);
                        at
                    }
                };
                *value = SHARED | at;
            }
        } else if let Some(list) = self.shared.get_mut((*value & !SHARED) as usize)
            && !list.contains(&slot)
        {
            list.push(slot);
        }
        Ok(())
    }

    fn release(&mut self, digest: &Digest, slot: u32) {
        let Some(value) = self.map.get_mut(digest) else {
            return;
        };
        if *value & SHARED == 0 {
            if *value == slot {
                self.map.remove(digest);
            }
            return;
        }
        let at = *value & !SHARED;
        let Some(list) = self.shared.get_mut(at as usize) else {
            return;
        };
        list.retain(|p| *p != slot);
        if let [last] = list.as_slice() {
            *value = *last;
            *list = Vec::new();
            self.shared_free.push(at);
        }
    }

    /// How many patients the index holds.
    pub fn patient_count(&self) -> usize {
        self.by_id.len()
    }

    /// How many distinct values the index holds.
    pub fn value_count(&self) -> usize {
        self.map.len()
    }

    /// How many values were skipped because they did not normalise.
    pub fn skipped_values(&self) -> usize {
        self.skipped
    }

    /// An estimate of the heap the index occupies, in bytes.
    pub fn memory_estimate_bytes(&self) -> usize {
        use std::mem::size_of;
        // hashbrown keeps one control byte per bucket beside each entry.
        let map = self.map.capacity() * (size_of::<(Digest, u32)>() + 1)
            + self.shared.capacity() * size_of::<Vec<u32>>()
            + self
                .shared
                .iter()
                .map(|l| l.capacity() * size_of::<u32>())
                .sum::<usize>();
        let slots = self.patients.capacity() * size_of::<Option<PatientSlot>>()
            + self
                .patients
                .iter()
                .flatten()
                .map(|s| s.id.capacity() + s.digests.len() * size_of::<Digest>())
                .sum::<usize>();
        let by_id = self.by_id.capacity() * (size_of::<(String, u32)>() + 1)
            + self.by_id.keys().map(String::capacity).sum::<usize>();
        map + slots
            + by_id
            + (self.free.capacity() + self.shared_free.capacity()) * size_of::<u32>()
    }

    pub(crate) fn keyed(&self) -> &Keyed {
        &self.keyed
    }

    pub(crate) fn slot_of(&self, patient_id: &str) -> Option<u32> {
        self.by_id.get(patient_id).copied()
    }

    pub(crate) fn holders(&self, digest: &Digest) -> &[u32] {
        match self.map.get(digest) {
            None => &[],
            Some(value) if *value & SHARED == 0 => std::slice::from_ref(value),
            Some(value) => self
                .shared
                .get((*value & !SHARED) as usize)
                .map_or(&[], Vec::as_slice),
        }
    }

    pub(crate) fn patient_id(&self, slot: u32) -> Option<&str> {
        self.patients
            .get(slot as usize)
            .and_then(Option::as_ref)
            .map(|s| s.id.as_str())
    }

    /// Every digest one patient's identifiers hash to, and how many values
    /// were skipped.
    fn digests_of(&self, patient: &PatientIdentifiers) -> (Vec<Digest>, usize) {
        let mut out = Vec::new();
        let mut skipped = 0;
        let mut push = |kind: IdentifierKind, value: Option<String>| match value {
            Some(v) => out.push(self.keyed.digest(kind, &v)),
            None => skipped += 1,
        };
        for mrn in &patient.mrns {
            push(IdentifierKind::Mrn, normalize::mrn(mrn));
        }
        for ssn in &patient.ssns {
            push(IdentifierKind::Ssn, normalize::ssn(ssn));
        }
        for phone in &patient.phones {
            push(IdentifierKind::Phone, normalize::phone(phone));
        }
        for email in &patient.emails {
            push(IdentifierKind::Email, normalize::email(email));
        }
        if !patient.names.is_empty() {
            match patient.birth_date.as_deref().and_then(normalize::iso_date) {
                Some(date) => {
                    for name in &patient.names {
                        let keys = normalize::name_keys(name, &date);
                        if keys.is_empty() {
                            push(IdentifierKind::NameBirthDate, None);
                        }
                        for key in keys {
                            push(IdentifierKind::NameBirthDate, Some(key));
                        }
                    }
                }
                None => push(IdentifierKind::NameBirthDate, None),
            }
        }
        (out, skipped)
    }
}
