//! Patient-privacy consents (the Consent section of
//! `docs/access-policy.md`).

use model::Timestamp;

use crate::{
    Actor, Category, ConsentFact, Effect, Facts, Label, Principal, Provision, Purpose, Resource,
    Role,
};

/// The id of the first active consent of the patient that denies this
/// access, or `None` when no consent denies it.
///
/// A consent applies while its base period (if any) contains `now`. Its
/// nested provisions are exceptions to the base type: a matching `deny`
/// wins over a matching `permit`, and with no matching provision the base
/// type decides. Any consent that denies wins over the others. A consent
/// never applies to the patient's own access, nor to a resource outside a
/// patient compartment.
pub fn consent_denies(
    principal: &Principal,
    purpose: Purpose,
    resource: &Resource,
    facts: &Facts,
    now: Timestamp,
) -> Option<String> {
    if Category::of(resource.rtype) == Category::Directory {
        return None;
    }
    let patient = resource.patient.as_deref()?;
    if principal.role == Role::Patient && principal.patient.as_deref() == Some(patient) {
        return None;
    }
    facts
        .consents
        .iter()
        .find(|c| denies(c, principal, purpose, resource, now))
        .map(|c| c.id.clone())
}

fn denies(
    consent: &ConsentFact,
    principal: &Principal,
    purpose: Purpose,
    resource: &Resource,
    now: Timestamp,
) -> bool {
    if consent.status != "active" || !consent.period.is_none_or(|p| p.contains(now)) {
        return false;
    }
    let (mut deny, mut permit) = (false, false);
    for p in consent
        .provisions
        .iter()
        .filter(|p| matches(p, principal, purpose, resource, now))
    {
        match p.effect {
            Effect::Deny => deny = true,
            Effect::Permit => permit = true,
        }
    }
    let effect = if deny {
        Effect::Deny
    } else if permit {
        Effect::Permit
    } else {
        consent.base
    };
    effect == Effect::Deny
}

/// A nested provision matches when every element it names matches.
fn matches(
    p: &Provision,
    principal: &Principal,
    purpose: Purpose,
    resource: &Resource,
    now: Timestamp,
) -> bool {
    let actor = p.actors.is_empty()
        || p.actors.iter().any(|a| match a {
            Actor::Practitioner(id) => principal.practitioner.as_ref() == Some(id),
            Actor::Organization(id) => principal.organization.as_ref() == Some(id),
        });
    let purposes = p.purposes.is_empty() || p.purposes.iter().any(|c| c == purpose.as_str());
    let labels = p.labels.is_empty()
        || p.labels
            .iter()
            .filter_map(|c| Label::parse(c))
            .any(|l| resource.labels.contains(&l));
    let classes = p.classes.is_empty() || p.classes.iter().any(|c| c == resource.rtype.as_str());
    let data = p
        .data_period
        .is_none_or(|dp| resource.date.is_some_and(|d| dp.contains(d)));
    let when = p.period.is_none_or(|pp| pp.contains(now));
    actor && purposes && labels && classes && data && when
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use model::ResourceType;

    use super::*;
    use crate::Period;

    const NOW: Timestamp = Timestamp(1_700_000_000_000_000);

    fn physician(practitioner: &str, org: &str) -> Principal {
        Principal {
            id: "acct-1".to_owned(),
            role: Role::Physician,
            practitioner: Some(practitioner.to_owned()),
            patient: None,
            organization: Some(org.to_owned()),
            department: None,
            mfa: true,
            training_current: true,
        }
    }

    fn resource(rtype: ResourceType, labels: &[Label], date: Option<i64>) -> Resource {
        Resource {
            rtype,
            id: Some("r1".to_owned()),
            patient: Some("pat-1".to_owned()),
            labels: labels.iter().copied().collect::<BTreeSet<_>>(),
            date: date.map(|d| Timestamp(NOW.0 + d)),
        }
    }

    fn provision(effect: Effect) -> Provision {
        Provision {
            effect,
            actors: vec![],
            purposes: vec![],
            labels: vec![],
            classes: vec![],
            data_period: None,
            period: None,
        }
    }

    fn consent(id: &str, base: Effect, provisions: Vec<Provision>) -> ConsentFact {
        ConsentFact {
            id: id.to_owned(),
            status: "active".to_owned(),
            period: None,
            base,
            provisions,
        }
    }

    fn denies_for(
        consents: Vec<ConsentFact>,
        who: &Principal,
        purpose: Purpose,
        r: &Resource,
    ) -> Option<String> {
        let facts = Facts {
            consents,
            ..Facts::default()
        };
        consent_denies(who, purpose, r, &facts, NOW)
    }

    fn obs() -> Resource {
        resource(ResourceType::Observation, &[], None)
    }

    #[test]
    fn base_type_decides_without_a_matching_provision() {
        let doc = physician("pr-1", "org-1");
        let t = Purpose::Treat;
        assert_eq!(
            denies_for(vec![consent("c1", Effect::Deny, vec![])], &doc, t, &obs()).as_deref(),
            Some("c1")
        );
        assert_eq!(
            denies_for(vec![consent("c1", Effect::Permit, vec![])], &doc, t, &obs()),
            None
        );
        let mut draft = consent("c1", Effect::Deny, vec![]);
        draft.status = "draft".to_owned();
        assert_eq!(denies_for(vec![draft], &doc, t, &obs()), None);
        let mut past = consent("c1", Effect::Deny, vec![]);
        past.period = Some(Period {
            start: None,
            end: Some(Timestamp(NOW.0 - 1)),
        });
        assert_eq!(denies_for(vec![past.clone()], &doc, t, &obs()), None);
        past.period = Some(Period {
            start: None,
            end: Some(NOW),
        });
        assert_eq!(
            denies_for(vec![past], &doc, t, &obs()).as_deref(),
            Some("c1")
        );
    }

    #[test]
    fn actors_match_practitioner_or_organization() {
        let mut p = provision(Effect::Deny);
        p.actors = vec![
            Actor::Practitioner("pr-1".to_owned()),
            Actor::Organization("org-9".to_owned()),
        ];
        let c = vec![consent("c1", Effect::Permit, vec![p])];
        let t = Purpose::Treat;
        assert!(denies_for(c.clone(), &physician("pr-1", "org-1"), t, &obs()).is_some());
        assert!(denies_for(c.clone(), &physician("pr-2", "org-9"), t, &obs()).is_some());
        assert!(denies_for(c, &physician("pr-2", "org-1"), t, &obs()).is_none());
    }

    #[test]
    fn purposes_labels_classes_and_periods() {
        let doc = physician("pr-1", "org-1");
        let mut p = provision(Effect::Deny);
        p.purposes = vec!["HPAYMT".to_owned(), "UNKNOWN".to_owned()];
        let c = vec![consent("c1", Effect::Permit, vec![p])];
        assert!(denies_for(c.clone(), &doc, Purpose::Hpaymt, &obs()).is_some());
        assert!(denies_for(c, &doc, Purpose::Treat, &obs()).is_none());

        let mut p = provision(Effect::Deny);
        p.labels = vec!["V".to_owned()];
        let c = vec![consent("c1", Effect::Permit, vec![p])];
        let r_data = resource(ResourceType::Observation, &[Label::Restricted], None);
        let psy_data = resource(ResourceType::Observation, &[Label::Psy], None);
        assert!(denies_for(c.clone(), &doc, Purpose::Treat, &r_data).is_some());
        assert!(denies_for(c.clone(), &doc, Purpose::Treat, &psy_data).is_none());
        assert!(denies_for(c, &doc, Purpose::Treat, &obs()).is_none());

        let mut p = provision(Effect::Deny);
        p.classes = vec!["Condition".to_owned()];
        let c = vec![consent("c1", Effect::Permit, vec![p])];
        assert!(
            denies_for(
                c.clone(),
                &doc,
                Purpose::Treat,
                &resource(ResourceType::Condition, &[], None)
            )
            .is_some()
        );
        assert!(denies_for(c, &doc, Purpose::Treat, &obs()).is_none());

        let mut p = provision(Effect::Deny);
        p.data_period = Some(Period {
            start: Some(Timestamp(NOW.0 - 10)),
            end: Some(NOW),
        });
        let c = vec![consent("c1", Effect::Permit, vec![p])];
        let at = |d| resource(ResourceType::Observation, &[], Some(d));
        assert!(denies_for(c.clone(), &doc, Purpose::Treat, &at(-10)).is_some());
        assert!(denies_for(c.clone(), &doc, Purpose::Treat, &at(0)).is_some());
        assert!(denies_for(c.clone(), &doc, Purpose::Treat, &at(1)).is_none());
        assert!(
            denies_for(c, &doc, Purpose::Treat, &obs()).is_none(),
            "no date: no match"
        );

        let mut p = provision(Effect::Deny);
        p.period = Some(Period {
            start: Some(Timestamp(NOW.0 + 1)),
            end: None,
        });
        let c = vec![consent("c1", Effect::Permit, vec![p])];
        assert!(denies_for(c, &doc, Purpose::Treat, &obs()).is_none());
    }

    #[test]
    fn deny_beats_permit_and_any_consent_denying_wins() {
        let doc = physician("pr-1", "org-1");
        let mut allow_me = provision(Effect::Permit);
        allow_me.actors = vec![Actor::Practitioner("pr-1".to_owned())];
        let mut deny_psy = provision(Effect::Deny);
        deny_psy.labels = vec!["PSY".to_owned()];
        let c = vec![consent("c1", Effect::Deny, vec![allow_me, deny_psy])];
        let psy = resource(ResourceType::Observation, &[Label::Psy], None);
        assert!(
            denies_for(c.clone(), &doc, Purpose::Treat, &obs()).is_none(),
            "permit lifts the base deny"
        );
        assert!(
            denies_for(c.clone(), &doc, Purpose::Treat, &psy).is_some(),
            "deny wins over permit"
        );
        assert!(denies_for(c, &physician("pr-2", "org-1"), Purpose::Treat, &obs()).is_some());

        let both = vec![
            consent("c1", Effect::Permit, vec![]),
            consent("c2", Effect::Deny, vec![]),
        ];
        assert_eq!(
            denies_for(both, &doc, Purpose::Treat, &obs()).as_deref(),
            Some("c2")
        );
    }

    #[test]
    fn never_for_the_patient_themselves_nor_outside_a_compartment() {
        let patient = Principal {
            id: "acct-p".to_owned(),
            role: Role::Patient,
            practitioner: None,
            patient: Some("pat-1".to_owned()),
            organization: None,
            department: None,
            mfa: false,
            training_current: false,
        };
        let c = vec![consent("c1", Effect::Deny, vec![])];
        assert!(denies_for(c.clone(), &patient, Purpose::Patrqt, &obs()).is_none());
        let mut dir = obs();
        dir.patient = None;
        assert!(denies_for(c, &physician("pr-1", "org-1"), Purpose::Treat, &dir).is_none());
    }
}
