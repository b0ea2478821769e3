//! The inputs and outputs of a decision. Plain data: the application loads
//! the facts from the records, the policy crate decides over them.
//!
//! The rules these types serve are written for the privacy officer in
//! `docs/access-policy.md`.

use std::collections::BTreeSet;

use model::{ResourceType, Timestamp};
use serde::{Deserialize, Serialize};

/// The role of an account (one per account).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Physician,
    Nurse,
    OtherClinical,
    FrontDesk,
    Billing,
    PrivacyOfficer,
    Administrator,
    Patient,
}

impl Role {
    pub const ALL: [Role; 8] = [
        Role::Physician,
        Role::Nurse,
        Role::OtherClinical,
        Role::FrontDesk,
        Role::Billing,
        Role::PrivacyOfficer,
        Role::Administrator,
        Role::Patient,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Physician => "physician",
            Role::Nurse => "nurse",
            Role::OtherClinical => "other_clinical",
            Role::FrontDesk => "front_desk",
            Role::Billing => "billing",
            Role::PrivacyOfficer => "privacy_officer",
            Role::Administrator => "administrator",
            Role::Patient => "patient",
        }
    }

    pub fn is_clinician(self) -> bool {
        matches!(self, Role::Physician | Role::Nurse | Role::OtherClinical)
    }

    pub fn is_workforce(self) -> bool {
        self != Role::Patient
    }

    /// The purpose a request of this role has when it declares none.
    pub fn default_purpose(self) -> Purpose {
        match self {
            Role::Physician | Role::Nurse | Role::OtherClinical => Purpose::Treat,
            Role::FrontDesk | Role::PrivacyOfficer | Role::Administrator => Purpose::Hoperat,
            Role::Billing => Purpose::Hpaymt,
            Role::Patient => Purpose::Patrqt,
        }
    }
}

/// What the caller wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Read,
    Search,
    Create,
    Update,
    Delete,
    Export,
    Share,
}

impl Action {
    pub const ALL: [Action; 7] = [
        Action::Read,
        Action::Search,
        Action::Create,
        Action::Update,
        Action::Delete,
        Action::Export,
        Action::Share,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Search => "search",
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Export => "export",
            Action::Share => "share",
        }
    }
}

/// HL7 v3 ActReason purposes of use that the rules name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Purpose {
    #[serde(rename = "TREAT")]
    Treat,
    #[serde(rename = "ETREAT")]
    Etreat,
    #[serde(rename = "HPAYMT")]
    Hpaymt,
    #[serde(rename = "HOPERAT")]
    Hoperat,
    #[serde(rename = "PATRQT")]
    Patrqt,
}

impl Purpose {
    pub const ALL: [Purpose; 5] = [
        Purpose::Treat,
        Purpose::Etreat,
        Purpose::Hpaymt,
        Purpose::Hoperat,
        Purpose::Patrqt,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Treat => "TREAT",
            Purpose::Etreat => "ETREAT",
            Purpose::Hpaymt => "HPAYMT",
            Purpose::Hoperat => "HOPERAT",
            Purpose::Patrqt => "PATRQT",
        }
    }

    /// Parses a code (exactly as written in v3 ActReason).
    pub fn parse(code: &str) -> Option<Purpose> {
        Purpose::ALL.into_iter().find(|p| p.as_str() == code)
    }
}

/// Sensitivity labels from `meta.security`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Label {
    #[serde(rename = "PSY")]
    Psy,
    #[serde(rename = "ETH")]
    Eth,
    #[serde(rename = "HIV")]
    Hiv,
    #[serde(rename = "SUD")]
    Sud,
    /// Restricted (`R`, and `V` very restricted, which is treated the same).
    #[serde(rename = "R")]
    Restricted,
    #[serde(rename = "VIP")]
    Vip,
}

impl Label {
    pub const ALL: [Label; 6] = [
        Label::Psy,
        Label::Eth,
        Label::Hiv,
        Label::Sud,
        Label::Restricted,
        Label::Vip,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Label::Psy => "PSY",
            Label::Eth => "ETH",
            Label::Hiv => "HIV",
            Label::Sud => "SUD",
            Label::Restricted => "R",
            Label::Vip => "VIP",
        }
    }

    /// Parses a `meta.security` code; `V` maps to [`Label::Restricted`].
    /// Unknown codes are not labels the rules know (they return `None`).
    pub fn parse(code: &str) -> Option<Label> {
        match code {
            "V" => Some(Label::Restricted),
            c => Label::ALL.into_iter().find(|l| l.as_str() == c),
        }
    }

    /// The labels F3 restricts (every label but VIP).
    pub fn is_restricted(self) -> bool {
        self != Label::Vip
    }
}

/// The category of a served type (the rules are written per category).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Directory,
    Demographics,
    Scheduling,
    Clinical,
    Notes,
    Consent,
}

impl Category {
    pub fn of(t: ResourceType) -> Category {
        match t {
            ResourceType::Practitioner
            | ResourceType::PractitionerRole
            | ResourceType::Organization => Category::Directory,
            ResourceType::Patient | ResourceType::RelatedPerson => Category::Demographics,
            ResourceType::Appointment | ResourceType::Encounter => Category::Scheduling,
            ResourceType::Observation
            | ResourceType::Condition
            | ResourceType::MedicationRequest
            | ResourceType::ServiceRequest
            | ResourceType::CareTeam => Category::Clinical,
            ResourceType::DocumentReference | ResourceType::Communication => Category::Notes,
            ResourceType::Consent => Category::Consent,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Directory => "directory",
            Category::Demographics => "demographics",
            Category::Scheduling => "scheduling",
            Category::Clinical => "clinical",
            Category::Notes => "notes",
            Category::Consent => "consent",
        }
    }
}

/// The person (or app acting for them) asking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// The account id.
    pub id: String,
    pub role: Role,
    /// The Practitioner resource id of a workforce account, if linked.
    pub practitioner: Option<String>,
    /// The Patient resource id of a patient account.
    pub patient: Option<String>,
    /// The Organization resource id the account works for, if known.
    pub organization: Option<String>,
    pub department: Option<String>,
    /// The session or token came from a sign-in with a second factor.
    pub mfa: bool,
    /// Privacy training is current (maintained by the training capability).
    pub training_current: bool,
}

/// The resource the action is on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    pub rtype: ResourceType,
    /// The resource id (`None` for a create before an id is assigned).
    pub id: Option<String>,
    /// The Patient id of its compartment; `None` for directory resources.
    pub patient: Option<String>,
    /// Its own labels plus the patient's `VIP` label, if the Patient has one.
    pub labels: BTreeSet<Label>,
    /// Its clinical date (for consent data periods), if it has one.
    pub date: Option<Timestamp>,
}

/// A half-open-free interval: both ends included; a missing end is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Period {
    pub start: Option<Timestamp>,
    pub end: Option<Timestamp>,
}

impl Period {
    pub fn contains(&self, t: Timestamp) -> bool {
        self.start.is_none_or(|s| s <= t) && self.end.is_none_or(|e| t <= e)
    }
}

/// A CareTeam of the patient, reduced to what the rules need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CareTeamFact {
    pub id: String,
    /// `CareTeam.status` as written (`active`, `proposed`, …).
    pub status: String,
    pub period: Period,
    pub members: Vec<Member>,
}

/// A participant of a CareTeam or an Encounter, or an Appointment's actor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The Practitioner id.
    pub practitioner: String,
    pub period: Period,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncounterFact {
    pub id: String,
    /// `Encounter.status` as written.
    pub status: String,
    pub period: Period,
    pub participants: Vec<Member>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppointmentFact {
    pub id: String,
    /// `Appointment.status` as written.
    pub status: String,
    pub start: Option<Timestamp>,
    pub end: Option<Timestamp>,
    /// Practitioner actors among the participants.
    pub participants: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsultationFact {
    pub id: String,
    pub practitioner: String,
    pub period: Period,
}

/// A break-the-glass grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantFact {
    pub id: String,
    /// The account the grant was given to.
    pub account: String,
    pub patient: String,
    pub start: Timestamp,
    pub expires: Timestamp,
    pub revoked: bool,
}

/// Provision type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Permit,
    Deny,
}

/// A Consent actor reference the rules can match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    Practitioner(String),
    Organization(String),
}

/// One nested provision (an exception to the base).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provision {
    pub effect: Effect,
    /// Empty: everyone other than the patient.
    pub actors: Vec<Actor>,
    /// Empty: any purpose. Codes the rules do not know never match a request.
    pub purposes: Vec<String>,
    /// Empty: any data. Codes as written (`V` matches `R` data, as labels do).
    pub labels: Vec<String>,
    /// Resource type names; empty: all types.
    pub classes: Vec<String>,
    pub data_period: Option<Period>,
    pub period: Option<Period>,
}

/// A patient-privacy Consent resource of the patient, reduced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentFact {
    pub id: String,
    /// `Consent.status` as written; only `active` is enforced.
    pub status: String,
    /// The base `provision.period`.
    pub period: Option<Period>,
    /// The base `provision.type` (`Permit` when absent).
    pub base: Effect,
    pub provisions: Vec<Provision>,
}

/// Everything about the patient (and the principal's grants and
/// consultations for them) that relationships and consent come from.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Facts {
    pub care_teams: Vec<CareTeamFact>,
    pub encounters: Vec<EncounterFact>,
    pub appointments: Vec<AppointmentFact>,
    pub consultations: Vec<ConsultationFact>,
    pub grants: Vec<GrantFact>,
    pub consents: Vec<ConsentFact>,
}

/// A relationship between the principal and the patient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Relationship {
    CareTeam,
    Encounter,
    Consultation,
    Appointment,
    SelfAccess,
    ScheduledVisit,
    RecentEncounter,
    Emergency,
}

impl Relationship {
    pub fn as_str(self) -> &'static str {
        match self {
            Relationship::CareTeam => "care_team",
            Relationship::Encounter => "encounter",
            Relationship::Consultation => "consultation",
            Relationship::Appointment => "appointment",
            Relationship::SelfAccess => "self",
            Relationship::ScheduledVisit => "scheduled_visit",
            Relationship::RecentEncounter => "recent_encounter",
            Relationship::Emergency => "emergency",
        }
    }

    /// Direct relationships (rule P4 and F2/F3).
    pub fn is_direct(self) -> bool {
        matches!(
            self,
            Relationship::CareTeam
                | Relationship::Encounter
                | Relationship::Consultation
                | Relationship::SelfAccess
        )
    }
}

/// The relationship windows (defaults as in `docs/access-policy.md`),
/// in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Windows {
    pub encounter_after: i64,
    pub appointment_before: i64,
    pub appointment_after: i64,
    pub scheduled_visit_before: i64,
    pub scheduled_visit_after: i64,
    pub recent_encounter: i64,
}

impl Default for Windows {
    fn default() -> Windows {
        const HOUR: i64 = 3600;
        const DAY: i64 = 24 * HOUR;
        Windows {
            encounter_after: 14 * DAY,
            appointment_before: 72 * HOUR,
            appointment_after: 24 * HOUR,
            scheduled_visit_before: 30 * DAY,
            scheduled_visit_after: DAY,
            recent_encounter: 30 * DAY,
        }
    }
}

/// One question to the decision point.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub principal: &'a Principal,
    pub action: Action,
    pub resource: &'a Resource,
    /// The declared purpose; `None` takes the role's default (or ETREAT
    /// under a break-the-glass grant).
    pub purpose: Option<Purpose>,
    pub now: Timestamp,
    /// Facts about `resource.patient` (empty for directory resources).
    pub facts: &'a Facts,
}

/// Lesson ids (the training capability provides their content).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Lesson {
    #[serde(rename = "L-RELATIONSHIP")]
    Relationship,
    #[serde(rename = "L-CONSENT")]
    Consent,
    #[serde(rename = "L-VIP")]
    Vip,
    #[serde(rename = "L-SENSITIVE")]
    Sensitive,
    #[serde(rename = "L-ROLE")]
    Role,
    #[serde(rename = "L-PURPOSE")]
    Purpose,
    #[serde(rename = "L-TRAINING")]
    Training,
    #[serde(rename = "L-MFA")]
    Mfa,
}

impl Lesson {
    pub fn as_str(self) -> &'static str {
        match self {
            Lesson::Relationship => "L-RELATIONSHIP",
            Lesson::Consent => "L-CONSENT",
            Lesson::Vip => "L-VIP",
            Lesson::Sensitive => "L-SENSITIVE",
            Lesson::Role => "L-ROLE",
            Lesson::Purpose => "L-PURPOSE",
            Lesson::Training => "L-TRAINING",
            Lesson::Mfa => "L-MFA",
        }
    }
}

/// What the decision point answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub allow: bool,
    /// The ids of the deciding policies: the permits that allowed, or the
    /// forbids that denied, or `["default-deny"]`.
    pub policies: Vec<String>,
    /// Plain-words reason (for a denial: why; for an allow: which rule).
    pub reason: String,
    /// For a default denial: what is missing (a relationship, or that the
    /// role may never do this).
    pub missing: Option<String>,
    /// The legitimate way forward, if there is one.
    pub way_forward: Option<String>,
    pub lesson: Option<Lesson>,
    /// Whether break-the-glass is a way forward for this request.
    pub break_glass_possible: bool,
    /// The purpose the request was decided under.
    pub purpose: Purpose,
    /// The relationships that held.
    pub relationships: BTreeSet<Relationship>,
    /// The break-the-glass grant the access is under, if any.
    pub grant: Option<String>,
    /// The consent that denied (F1), if any.
    pub consent: Option<String>,
    /// Element names to remove from the resource before it is returned.
    pub masks: Vec<String>,
}
