//! Vigil's vocabulary: resource types, ids as newtypes, timestamps and the clock.
//!
//! This crate does no IO. Every other crate speaks in these types.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The FHIR R4 resource types this server stores and serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ResourceType {
    Patient,
    RelatedPerson,
    Practitioner,
    PractitionerRole,
    Organization,
    Encounter,
    Appointment,
    CareTeam,
    ServiceRequest,
    Observation,
    Condition,
    MedicationRequest,
    DocumentReference,
    Communication,
    Consent,
}

impl ResourceType {
    /// Every served type, in an order where a type only refers to types before it
    /// where that is possible (used to load data in dependency order).
    pub const ALL: [ResourceType; 15] = [
        ResourceType::Organization,
        ResourceType::Practitioner,
        ResourceType::PractitionerRole,
        ResourceType::Patient,
        ResourceType::RelatedPerson,
        ResourceType::CareTeam,
        ResourceType::Encounter,
        ResourceType::Appointment,
        ResourceType::ServiceRequest,
        ResourceType::Condition,
        ResourceType::Observation,
        ResourceType::MedicationRequest,
        ResourceType::DocumentReference,
        ResourceType::Communication,
        ResourceType::Consent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::Patient => "Patient",
            ResourceType::RelatedPerson => "RelatedPerson",
            ResourceType::Practitioner => "Practitioner",
            ResourceType::PractitionerRole => "PractitionerRole",
            ResourceType::Organization => "Organization",
            ResourceType::Encounter => "Encounter",
            ResourceType::Appointment => "Appointment",
            ResourceType::CareTeam => "CareTeam",
            ResourceType::ServiceRequest => "ServiceRequest",
            ResourceType::Observation => "Observation",
            ResourceType::Condition => "Condition",
            ResourceType::MedicationRequest => "MedicationRequest",
            ResourceType::DocumentReference => "DocumentReference",
            ResourceType::Communication => "Communication",
            ResourceType::Consent => "Consent",
        }
    }

    pub fn parse(s: &str) -> Option<ResourceType> {
        ResourceType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("id must be 1 to 64 characters of A-Z, a-z, 0-9, '-' and '.'")]
    Invalid,
}

/// A logical resource id: `[A-Za-z0-9.-]{1,64}` (FHIR R4 `id`).
///
/// Ids are not secret and must never carry PHI: they appear in URLs, logs and
/// in clear in the database.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ResourceId(String);

impl ResourceId {
    pub fn new(s: impl Into<String>) -> Result<ResourceId, IdError> {
        let s = s.into();
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if ok {
            Ok(ResourceId(s))
        } else {
            Err(IdError::Invalid)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ResourceId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        ResourceId::new(s)
    }
}

impl From<ResourceId> for String {
    fn from(id: ResourceId) -> String {
        id.0
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id of a Patient resource: the owner of a patient compartment and of a data key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PatientId(pub ResourceId);

impl PatientId {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for PatientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A version of a resource, counted from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VersionId(pub u64);

impl fmt::Display for VersionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Whose data key seals a resource.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyOwner {
    /// The organisation's data key: resources outside any single patient compartment.
    Organisation,
    /// One patient's own data key: everything in exactly that patient's compartment.
    Patient(PatientId),
}

impl KeyOwner {
    /// The stable text form used in storage: `org` or `patient/<id>`.
    pub fn storage_key(&self) -> String {
        match self {
            KeyOwner::Organisation => "org".to_owned(),
            KeyOwner::Patient(p) => format!("patient/{}", p.as_str()),
        }
    }

    pub fn from_storage_key(s: &str) -> Option<KeyOwner> {
        if s == "org" {
            return Some(KeyOwner::Organisation);
        }
        let id = s.strip_prefix("patient/")?;
        ResourceId::new(id)
            .ok()
            .map(|id| KeyOwner::Patient(PatientId(id)))
    }
}

/// A point in time, microseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn from_offset_datetime(t: time::OffsetDateTime) -> Timestamp {
        let micros = t.unix_timestamp_nanos() / 1_000;
        Timestamp(i64::try_from(micros).unwrap_or(i64::MAX))
    }

    pub fn to_offset_datetime(self) -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    }

    /// FHIR `instant` form, e.g. `2026-11-29T13:10:39.123456Z`.
    pub fn to_fhir_instant(self) -> String {
        let t = self.to_offset_datetime();
        let fmt = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
        );
        t.format(&fmt)
            .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
    }
}

/// Where time comes from. Production uses [`SystemClock`]; tests use a fixed or stepped clock.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_offset_datetime(time::OffsetDateTime::now_utc())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_fhir_id_rule() {
        assert!(ResourceId::new("a").is_ok());
        assert!(ResourceId::new("A-1.b").is_ok());
        assert!(ResourceId::new("x".repeat(64)).is_ok());
        assert_eq!(ResourceId::new("x".repeat(65)), Err(IdError::Invalid));
        assert_eq!(ResourceId::new(""), Err(IdError::Invalid));
        assert_eq!(ResourceId::new("a/b"), Err(IdError::Invalid));
        assert_eq!(ResourceId::new("a b"), Err(IdError::Invalid));
        assert_eq!(ResourceId::new("é"), Err(IdError::Invalid));
    }

    #[test]
    fn types_round_trip_through_text() {
        for t in ResourceType::ALL {
            assert_eq!(ResourceType::parse(t.as_str()), Some(t));
        }
        assert_eq!(ResourceType::parse("patient"), None);
        assert_eq!(ResourceType::parse("AuditEvent"), None);
    }

    #[test]
    fn key_owner_storage_form_round_trips() {
        let p = KeyOwner::Patient(PatientId(ResourceId::new("p1").unwrap()));
        assert_eq!(KeyOwner::from_storage_key(&p.storage_key()), Some(p));
        assert_eq!(
            KeyOwner::from_storage_key("org"),
            Some(KeyOwner::Organisation)
        );
        assert_eq!(KeyOwner::from_storage_key("patient/"), None);
        assert_eq!(KeyOwner::from_storage_key("other"), None);
    }

    #[test]
    fn instants_format_as_fhir() {
        assert_eq!(
            Timestamp(0).to_fhir_instant(),
            "1970-01-01T00:00:00.000000Z"
        );
        assert_eq!(
            Timestamp(1_500_000).to_fhir_instant(),
            "1970-01-01T00:00:01.500000Z"
        );
    }
}
