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

/// The patients holding one value: almost always one, so that case takes
/// no allocation.
#[derive(Clone, Debug)]
enum Holders {
    One(u32),
    Many(Box<[u32]>),
}

impl Holders {
    fn as_slice(&self) -> &[u32] {
        match self {
            Holders::One(p) => std::slice::from_ref(p),
            Holders::Many(ps) => ps,
        }
    }

    fn with(&self, patient: u32) -> Holders {
        let mut all = self.as_slice().to_vec();
        if !all.contains(&patient) {
            all.push(patient);
        }
        Holders::Many(all.into_boxed_slice())
    }

    /// The holders without `patient`, or `None` when nobody is left.
    fn without(&self, patient: u32) -> Option<Holders> {
        let rest: Vec<u32> = self
            .as_slice()
            .iter()
            .copied()
            .filter(|p| *p != patient)
            .collect();
        match rest.as_slice() {
            [] => None,
            [one] => Some(Holders::One(*one)),
            _ => Some(Holders::Many(rest.into_boxed_slice())),
        }
    }
}

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
    map: DigestMap<Holders>,
    // INVARIANT: `map` holds patient `i` under digest `d` exactly when
    // `patients[i]` is `Some` and lists `d`.
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
            None => u32::try_from(self.patients.len()).map_err(|_| DlpError::IndexFull)?,
        };
        for digest in &digests {
            let holders = match self.map.get(digest) {
                Some(existing) => existing.with(slot),
                None => Holders::One(slot),
            };
            self.map.insert(*digest, holders);
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
            let rest = self.map.get(digest).and_then(|h| h.without(slot));
            match rest {
                Some(rest) => {
                    self.map.insert(*digest, rest);
                }
                None => {
                    self.map.remove(digest);
                }
            }
        }
        self.free.push(slot);
        true
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
        let map = self.map.capacity() * (size_of::<(Digest, Holders)>() + 1)
            + self
                .map
                .values()
                .map(|h| match h {
                    Holders::One(_) => 0,
                    Holders::Many(ps) => ps.len() * size_of::<u32>(),
                })
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
        map + slots + by_id + self.free.capacity() * size_of::<u32>()
    }

    pub(crate) fn keyed(&self) -> &Keyed {
        &self.keyed
    }

    pub(crate) fn slot_of(&self, patient_id: &str) -> Option<u32> {
        self.by_id.get(patient_id).copied()
    }

    pub(crate) fn holders(&self, digest: &Digest) -> &[u32] {
        self.map.get(digest).map(Holders::as_slice).unwrap_or(&[])
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
