//! The supported search parameters per served type (names and expressions from the
//! R4 SearchParameter resources).

use model::ResourceType;
use model::ResourceType as T;

use super::{ParamDef, ParamKind as K, Strategy as S};

const fn p(
    name: &'static str,
    kind: K,
    strategy: S,
    paths: &'static [&'static str],
    targets: &'static [ResourceType],
    doc: &'static str,
) -> ParamDef {
    ParamDef {
        name,
        kind,
        strategy,
        targets,
        doc,
        paths,
    }
}

const PERSON_TARGETS: &[ResourceType] = &[
    T::Practitioner,
    T::Organization,
    T::CareTeam,
    T::Patient,
    T::PractitionerRole,
    T::RelatedPerson,
];

macro_rules! tok {
    ($name:literal, $s:expr, $paths:expr, $doc:literal) => {
        p($name, K::Token, $s, $paths, &[], $doc)
    };
}
macro_rules! refp {
    ($name:literal, $paths:expr, $targets:expr, $doc:literal) => {
        p($name, K::Reference, S::Blind, $paths, $targets, $doc)
    };
}
macro_rules! date {
    ($name:literal, $paths:expr, $doc:literal) => {
        p($name, K::Date, S::DayBucket, $paths, &[], $doc)
    };
}
macro_rules! string {
    ($name:literal, $paths:expr, $doc:literal) => {
        p($name, K::String, S::Memory, $paths, &[], $doc)
    };
}

static PATIENT: &[ParamDef] = &[
    tok!(
        "identifier",
        S::Blind,
        &["identifier"],
        "A patient identifier"
    ),
    string!(
        "name",
        &["name"],
        "Any part of a name (family, given, prefix, suffix, text)"
    ),
    string!("family", &["name.family"], "A family name"),
    string!("given", &["name.given"], "A given name"),
    p(
        "birthdate",
        K::Date,
        S::Blind,
        &["birthDate"],
        &[],
        "The date of birth",
    ),
    tok!(
        "gender",
        S::FilterOnly,
        &["gender"],
        "Administrative gender"
    ),
    tok!("telecom", S::Blind, &["telecom"], "Any contact point value"),
    tok!(
        "phone",
        S::Blind,
        &["telecom(system=phone)"],
        "A phone number"
    ),
    tok!(
        "email",
        S::Blind,
        &["telecom(system=email)"],
        "An email address"
    ),
    refp!(
        "general-practitioner",
        &["generalPractitioner"],
        &[T::Practitioner, T::Organization, T::PractitionerRole],
        "The patient's nominated care provider"
    ),
    refp!(
        "organization",
        &["managingOrganization"],
        &[T::Organization],
        "The managing organization"
    ),
    tok!(
        "active",
        S::FilterOnly,
        &["active"],
        "Whether the record is active"
    ),
];

static PRACTITIONER: &[ParamDef] = &[
    tok!(
        "identifier",
        S::Blind,
        &["identifier"],
        "A practitioner identifier"
    ),
    string!("name", &["name"], "Any part of a name"),
    string!("family", &["name.family"], "A family name"),
    string!("given", &["name.given"], "A given name"),
    tok!("telecom", S::Blind, &["telecom"], "Any contact point value"),
    tok!(
        "phone",
        S::Blind,
        &["telecom(system=phone)"],
        "A phone number"
    ),
    tok!(
        "email",
        S::Blind,
        &["telecom(system=email)"],
        "An email address"
    ),
];

static RELATED_PERSON: &[ParamDef] = &[
    tok!("identifier", S::Blind, &["identifier"], "An identifier"),
    string!("name", &["name"], "Any part of a name"),
    tok!("telecom", S::Blind, &["telecom"], "Any contact point value"),
    tok!(
        "phone",
        S::Blind,
        &["telecom(system=phone)"],
        "A phone number"
    ),
    tok!(
        "email",
        S::Blind,
        &["telecom(system=email)"],
        "An email address"
    ),
    refp!(
        "patient",
        &["patient"],
        &[T::Patient],
        "The patient this person is related to"
    ),
];

static PRACTITIONER_ROLE: &[ParamDef] = &[
    refp!(
        "practitioner",
        &["practitioner"],
        &[T::Practitioner],
        "The practitioner"
    ),
    refp!(
        "organization",
        &["organization"],
        &[T::Organization],
        "The organization"
    ),
    tok!("role", S::FilterOnly, &["code"], "The role code"),
    tok!("specialty", S::FilterOnly, &["specialty"], "The specialty"),
];

static ORGANIZATION: &[ParamDef] = &[
    tok!(
        "identifier",
        S::Blind,
        &["identifier"],
        "An organization identifier"
    ),
    string!("name", &["name", "alias"], "The name or an alias"),
    tok!("type", S::FilterOnly, &["type"], "The kind of organization"),
];

static ENCOUNTER: &[ParamDef] = &[
    refp!(
        "patient",
        &["subject"],
        &[T::Patient],
        "The patient present"
    ),
    refp!(
        "subject",
        &["subject"],
        &[T::Patient],
        "The patient present"
    ),
    refp!(
        "participant",
        &["participant.individual"],
        &[T::Practitioner, T::PractitionerRole, T::RelatedPerson],
        "A participant"
    ),
    refp!(
        "practitioner",
        &["participant.individual"],
        &[T::Practitioner],
        "A practitioner participant"
    ),
    date!("date", &["period"], "When the encounter took place"),
    tok!("status", S::FilterOnly, &["status"], "The encounter status"),
];

static APPOINTMENT: &[ParamDef] = &[
    refp!(
        "patient",
        &["participant.actor"],
        &[T::Patient],
        "A patient participant"
    ),
    refp!(
        "actor",
        &["participant.actor"],
        &[
            T::Practitioner,
            T::Patient,
            T::PractitionerRole,
            T::RelatedPerson
        ],
        "Any participant"
    ),
    refp!(
        "practitioner",
        &["participant.actor"],
        &[T::Practitioner],
        "A practitioner participant"
    ),
    date!("date", &["start"], "The appointment start"),
    tok!(
        "status",
        S::FilterOnly,
        &["status"],
        "The appointment status"
    ),
];

static CARE_TEAM: &[ParamDef] = &[
    refp!(
        "patient",
        &["subject"],
        &[T::Patient],
        "The patient the team cares for"
    ),
    refp!(
        "subject",
        &["subject"],
        &[T::Patient],
        "The patient the team cares for"
    ),
    refp!(
        "participant",
        &["participant.member"],
        PERSON_TARGETS,
        "A team member"
    ),
    refp!(
        "encounter",
        &["encounter"],
        &[T::Encounter],
        "The encounter"
    ),
    date!("date", &["period"], "When the team is active"),
    tok!("status", S::FilterOnly, &["status"], "The team status"),
    tok!("category", S::FilterOnly, &["category"], "The kind of team"),
];

static SERVICE_REQUEST: &[ParamDef] = &[
    refp!("patient", &["subject"], &[T::Patient], "The patient"),
    refp!("subject", &["subject"], &[T::Patient], "The patient"),
    refp!(
        "encounter",
        &["encounter"],
        &[T::Encounter],
        "The encounter"
    ),
    refp!(
        "performer",
        &["performer"],
        PERSON_TARGETS,
        "The requested performer"
    ),
    date!("authored", &["authoredOn"], "When the request was signed"),
    tok!("code", S::Blind, &["code"], "What is requested"),
    tok!("status", S::FilterOnly, &["status"], "The request status"),
    tok!(
        "category",
        S::FilterOnly,
        &["category"],
        "The request category"
    ),
];

static OBSERVATION: &[ParamDef] = &[
    refp!("patient", &["subject"], &[T::Patient], "The patient"),
    refp!("subject", &["subject"], &[T::Patient], "The patient"),
    refp!(
        "encounter",
        &["encounter"],
        &[T::Encounter],
        "The encounter"
    ),
    refp!(
        "performer",
        &["performer"],
        PERSON_TARGETS,
        "Who performed the observation"
    ),
    date!(
        "date",
        &["effective[x]"],
        "The clinically relevant time (effective[x])"
    ),
    tok!("code", S::Blind, &["code"], "The observation code"),
    tok!(
        "status",
        S::FilterOnly,
        &["status"],
        "The observation status"
    ),
    tok!(
        "category",
        S::FilterOnly,
        &["category"],
        "The observation category"
    ),
];

static CONDITION: &[ParamDef] = &[
    refp!("patient", &["subject"], &[T::Patient], "The patient"),
    refp!("subject", &["subject"], &[T::Patient], "The patient"),
    refp!(
        "encounter",
        &["encounter"],
        &[T::Encounter],
        "The encounter"
    ),
    date!(
        "onset-date",
        &["onsetDateTime", "onsetPeriod"],
        "The onset (dateTime or Period)"
    ),
    date!(
        "recorded-date",
        &["recordedDate"],
        "When the condition was recorded"
    ),
    tok!("code", S::Blind, &["code"], "The condition code"),
    tok!(
        "category",
        S::FilterOnly,
        &["category"],
        "The condition category"
    ),
    tok!(
        "clinical-status",
        S::FilterOnly,
        &["clinicalStatus"],
        "The clinical status"
    ),
];

static MEDICATION_REQUEST: &[ParamDef] = &[
    refp!("patient", &["subject"], &[T::Patient], "The patient"),
    refp!("subject", &["subject"], &[T::Patient], "The patient"),
    refp!(
        "encounter",
        &["encounter"],
        &[T::Encounter],
        "The encounter"
    ),
    date!(
        "authoredon",
        &["authoredOn"],
        "When the prescription was written"
    ),
    tok!(
        "code",
        S::Blind,
        &["medicationCodeableConcept"],
        "The medication code"
    ),
    tok!(
        "status",
        S::FilterOnly,
        &["status"],
        "The prescription status"
    ),
    tok!(
        "category",
        S::FilterOnly,
        &["category"],
        "The prescription category"
    ),
];

static DOCUMENT_REFERENCE: &[ParamDef] = &[
    refp!("patient", &["subject"], &[T::Patient], "The patient"),
    refp!(
        "subject",
        &["subject"],
        &[T::Practitioner, T::Patient],
        "Who the document is about"
    ),
    refp!(
        "encounter",
        &["context.encounter"],
        &[T::Encounter],
        "The encounter"
    ),
    date!("date", &["date"], "When the reference was created"),
    tok!("status", S::FilterOnly, &["status"], "The reference status"),
    tok!(
        "category",
        S::FilterOnly,
        &["category"],
        "The document category"
    ),
];

static COMMUNICATION: &[ParamDef] = &[
    refp!("patient", &["subject"], &[T::Patient], "The patient"),
    refp!("subject", &["subject"], &[T::Patient], "The patient"),
    refp!(
        "encounter",
        &["encounter"],
        &[T::Encounter],
        "The encounter"
    ),
    date!("sent", &["sent"], "When the communication was sent"),
    tok!(
        "status",
        S::FilterOnly,
        &["status"],
        "The communication status"
    ),
    tok!(
        "category",
        S::FilterOnly,
        &["category"],
        "The message category"
    ),
];

static CONSENT: &[ParamDef] = &[
    refp!("patient", &["patient"], &[T::Patient], "The patient"),
    date!("date", &["dateTime"], "When the consent was agreed"),
    tok!("status", S::FilterOnly, &["status"], "The consent status"),
    tok!(
        "category",
        S::FilterOnly,
        &["category"],
        "The consent category"
    ),
];

/// The supported search parameters of a type (`_id` and `_lastUpdated` are handled
/// by [`super::parse_query`] as [`super::Clause::Id`] and [`super::Clause::LastUpdated`]).
pub fn params_for(rtype: ResourceType) -> &'static [ParamDef] {
    match rtype {
        T::Patient => PATIENT,
        T::RelatedPerson => RELATED_PERSON,
        T::Practitioner => PRACTITIONER,
        T::PractitionerRole => PRACTITIONER_ROLE,
        T::Organization => ORGANIZATION,
        T::Encounter => ENCOUNTER,
        T::Appointment => APPOINTMENT,
        T::CareTeam => CARE_TEAM,
        T::ServiceRequest => SERVICE_REQUEST,
        T::Observation => OBSERVATION,
        T::Condition => CONDITION,
        T::MedicationRequest => MEDICATION_REQUEST,
        T::DocumentReference => DOCUMENT_REFERENCE,
        T::Communication => COMMUNICATION,
        T::Consent => CONSENT,
    }
}

/// One parameter of a type by name.
pub fn param(rtype: ResourceType, name: &str) -> Option<&'static ParamDef> {
    params_for(rtype).iter().find(|d| d.name == name)
}

/// The date parameter `_sort=date` sorts by, if the type has one.
pub fn primary_date_param(rtype: ResourceType) -> Option<&'static ParamDef> {
    let name = match rtype {
        T::Encounter
        | T::Appointment
        | T::CareTeam
        | T::Observation
        | T::DocumentReference
        | T::Consent => "date",
        T::ServiceRequest => "authored",
        T::Condition => "recorded-date",
        T::MedicationRequest => "authoredon",
        T::Communication => "sent",
        T::Patient | T::RelatedPerson | T::Practitioner | T::PractitionerRole | T::Organization => {
            return None;
        }
    };
    param(rtype, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_has_params_with_unique_names_and_paths_in_the_schema() {
        for t in ResourceType::ALL {
            let ps = params_for(t);
            for (i, d) in ps.iter().enumerate() {
                assert!(
                    ps.iter().skip(i + 1).all(|o| o.name != d.name),
                    "{t} {}",
                    d.name
                );
                assert!(!d.paths.is_empty());
                assert_eq!(
                    d.kind == K::Reference,
                    !d.targets.is_empty(),
                    "{t} {}",
                    d.name
                );
            }
            if t != T::Practitioner
                && t != T::PractitionerRole
                && t != T::Organization
                && t != T::Patient
            {
                assert!(ps.iter().any(|d| d.name == "patient"), "{t}");
            }
        }
    }
}
