//! Patient-privacy consents (the Consent section of
//! `docs/access-policy.md`).

use model::Timestamp;

use crate::{
    Actor, ConsentFact, Effect, Facts, Label, Principal, Provision, Purpose, Resource, Role,
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
