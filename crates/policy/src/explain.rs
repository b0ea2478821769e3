//! What a default denial says (the section "What a denial says" of
//! `docs/access-policy.md`): what the caller's role needs for this action
//! on this kind of resource, or that the role may never do it.

use model::ResourceType;

use crate::{Action, Category, Resource, Role, Windows};

/// What a role needs before a permit rule can allow an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Need {
    /// A relationship with the patient, in plain words.
    Relationship(String),
    /// No rule ever allows this role to do this.
    Never(String),
}

/// The types P10 lets billing see.
const BILLING_TYPES: [ResourceType; 5] = [
    ResourceType::Patient,
    ResourceType::Encounter,
    ResourceType::Condition,
    ResourceType::ServiceRequest,
    ResourceType::MedicationRequest,
];

const CLINICIAN_NEEDS: &str =
    "a care-team membership, an encounter or an active consultation with this patient";

/// What `role` needs to do `action` on `resource` (the role's rule, read
/// as data). Called only for a default denial, after a change of purpose
/// was found not to help.
pub(crate) fn need(role: Role, action: Action, resource: &Resource, windows: &Windows) -> Need {
    let category = Category::of(resource.rtype);
    let rtype = resource.rtype;
    let looking = matches!(action, Action::Read | Action::Search);
    let writing = matches!(action, Action::Create | Action::Update);
    let possible = match role {
        _ if category == Category::Directory => None,
        Role::Physician => Some(CLINICIAN_NEEDS.to_owned()),
        Role::Nurse | Role::OtherClinical if action != Action::Delete => {
            Some(CLINICIAN_NEEDS.to_owned())
        }
        Role::FrontDesk
            if (looking && matches!(category, Category::Demographics | Category::Scheduling))
                || (writing && rtype == ResourceType::Appointment) =>
        {
            Some("a scheduled visit".to_owned())
        }
        Role::Billing if looking && BILLING_TYPES.contains(&rtype) => Some(format!(
            "an encounter that ended in the last {} days",
            windows.recent_encounter / 86_400
        )),
        _ => None,
    };
    match possible {
        Some(missing) => Need::Relationship(missing),
        None => Need::Never(format!(
            "{} may never {} {} resources",
            who(role),
            action.as_str(),
            rtype.as_str()
        )),
    }
}

/// A role in plain words, plural.
fn who(role: Role) -> &'static str {
    match role {
        Role::Physician => "physicians",
        Role::Nurse => "nurses",
        Role::OtherClinical => "other clinical staff",
        Role::FrontDesk => "front desk staff",
        Role::Billing => "billing staff",
        Role::PrivacyOfficer => "privacy officers",
        Role::Administrator => "administrators",
        Role::Patient => "patients",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn resource(rtype: ResourceType) -> Resource {
        Resource {
            rtype,
            id: Some("r1".to_owned()),
            patient: Some("p1".to_owned()),
            labels: BTreeSet::new(),
            date: None,
        }
    }

    fn check(role: Role, action: Action, rtype: ResourceType, expect: &str) {
        let got = match need(role, action, &resource(rtype), &Windows::default()) {
            Need::Relationship(s) => format!("relationship: {s}"),
            Need::Never(s) => format!("never: {s}"),
        };
        assert_eq!(got, expect, "{role:?} {action:?} {rtype:?}");
    }

    #[test]
    fn needs_per_role() {
        use Action::*;
        use ResourceType as T;
        let clin = "relationship: a care-team membership, an encounter or an active consultation with this patient";
        check(Role::Physician, Delete, T::Observation, clin);
        check(Role::Nurse, Read, T::DocumentReference, clin);
        check(
            Role::Nurse,
            Delete,
            T::Observation,
            "never: nurses may never delete Observation resources",
        );
        check(
            Role::Physician,
            Update,
            T::Practitioner,
            "never: physicians may never update Practitioner resources",
        );
        check(
            Role::FrontDesk,
            Read,
            T::Encounter,
            "relationship: a scheduled visit",
        );
        check(
            Role::FrontDesk,
            Create,
            T::Appointment,
            "relationship: a scheduled visit",
        );
        check(
            Role::FrontDesk,
            Create,
            T::Encounter,
            "never: front desk staff may never create Encounter resources",
        );
        check(
            Role::FrontDesk,
            Read,
            T::Observation,
            "never: front desk staff may never read Observation resources",
        );
        check(
            Role::Billing,
            Search,
            T::Condition,
            "relationship: an encounter that ended in the last 30 days",
        );
        check(
            Role::Billing,
            Read,
            T::Observation,
            "never: billing staff may never read Observation resources",
        );
        check(
            Role::Administrator,
            Read,
            T::Patient,
            "never: administrators may never read Patient resources",
        );
        check(
            Role::Patient,
            Update,
            T::Observation,
            "never: patients may never update Observation resources",
        );
    }
}
