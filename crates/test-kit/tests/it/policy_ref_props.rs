//! Properties of the reference evaluator itself, over generated requests.
//!
//! These hold the reference to the doc's headline promises; the
//! differential test against the Cedar engine will reuse [`any_input`].

use model::{ResourceType, Timestamp};
use policy::{
    Action, Actor, AppointmentFact, CareTeamFact, Category, ConsentFact, ConsultationFact, Effect,
    EncounterFact, Facts, GrantFact, Label, Member, Period, Principal, Provision, Purpose,
    Relationship, Request, Resource, Role, Windows,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use test_kit::policy_corpus::NOW;
use test_kit::policy_ref::{decide, relationships};

/// One generated request, owned.
#[derive(Debug, Clone)]
pub struct Input {
    pub principal: Principal,
    pub action: Action,
    pub resource: Resource,
    pub purpose: Option<Purpose>,
    pub facts: Facts,
}

impl Input {
    pub fn request(&self) -> Request<'_> {
        Request {
            principal: &self.principal,
            action: self.action,
            resource: &self.resource,
            purpose: self.purpose,
            now: NOW,
            facts: &self.facts,
        }
    }
}

const DAY: i64 = 86_400;

/// An instant near now: edges of the default windows are likely.
fn instant() -> impl Strategy<Value = Timestamp> {
    let edges = select(vec![
        0,
        1,
        -1,
        3600,
        -3600,
        72 * 3600,
        -72 * 3600,
        -72 * 3600 - 1,
        -14 * DAY,
        -14 * DAY - 1,
        -30 * DAY,
        -30 * DAY - 1,
        30 * DAY,
        30 * DAY + 1,
        DAY,
        -DAY,
    ]);
    prop_oneof![edges, -60 * DAY..60 * DAY].prop_map(|s| Timestamp(NOW.0 + s * 1_000_000))
}

fn period() -> impl Strategy<Value = Period> {
    (option::of(instant()), option::of(instant())).prop_map(|(start, end)| Period { start, end })
}

fn who() -> impl Strategy<Value = String> {
    select(vec!["me", "dr-other"]).prop_map(str::to_owned)
}

fn status(choices: &'static [&'static str]) -> impl Strategy<Value = String> {
    select(choices).prop_map(str::to_owned)
}

fn care_team() -> impl Strategy<Value = CareTeamFact> {
    (
        status(&["active", "proposed", "inactive"]),
        period(),
        who(),
        period(),
    )
        .prop_map(|(status, period, practitioner, mp)| CareTeamFact {
            id: "ct".to_owned(),
            status,
            period,
            members: vec![Member {
                practitioner,
                period: mp,
            }],
        })
}

fn encounter() -> impl Strategy<Value = EncounterFact> {
    (
        status(&[
            "planned",
            "in-progress",
            "finished",
            "cancelled",
            "entered-in-error",
            "onleave",
        ]),
        period(),
        who(),
    )
        .prop_map(|(status, period, practitioner)| EncounterFact {
            id: "enc".to_owned(),
            status,
            period,
            participants: vec![Member {
                practitioner,
                period: Period::default(),
            }],
        })
}

fn appointment() -> impl Strategy<Value = AppointmentFact> {
    (
        status(&["booked", "fulfilled", "cancelled", "proposed", "noshow"]),
        option::of(instant()),
        option::of(instant()),
        who(),
    )
        .prop_map(|(status, start, end, p)| AppointmentFact {
            id: "appt".to_owned(),
            status,
            start,
            end,
            participants: vec![p],
        })
}

fn consultation() -> impl Strategy<Value = ConsultationFact> {
    (who(), period()).prop_map(|(practitioner, period)| ConsultationFact {
        id: "consult".to_owned(),
        practitioner,
        period,
    })
}

fn grant() -> impl Strategy<Value = GrantFact> {
    (
        instant(),
        instant(),
        any::<bool>(),
        select(vec!["me", "other"]),
    )
        .prop_map(|(start, expires, revoked, account)| GrantFact {
            id: "grant".to_owned(),
            account: account.to_owned(),
            patient: "p1".to_owned(),
            start,
            expires,
            revoked,
        })
}

fn effect() -> impl Strategy<Value = Effect> {
    select(vec![Effect::Permit, Effect::Deny])
}

fn provision() -> impl Strategy<Value = Provision> {
    (
        effect(),
        subsequence(
            vec![
                Actor::Practitioner("me".to_owned()),
                Actor::Practitioner("dr-other".to_owned()),
                Actor::Organization("org-1".to_owned()),
            ],
            0..=2,
        ),
        subsequence(vec!["TREAT", "ETREAT", "HPAYMT", "HOPERAT"], 0..=2),
        subsequence(vec!["PSY", "HIV", "V", "VIP"], 0..=2),
        subsequence(vec!["Observation", "Patient", "DocumentReference"], 0..=2),
        option::of(period()),
        option::of(period()),
    )
        .prop_map(
            |(effect, actors, purposes, labels, classes, data_period, period)| Provision {
                effect,
                actors,
                purposes: purposes.into_iter().map(str::to_owned).collect(),
                labels: labels.into_iter().map(str::to_owned).collect(),
                classes: classes.into_iter().map(str::to_owned).collect(),
                data_period,
                period,
            },
        )
}

fn consent() -> impl Strategy<Value = ConsentFact> {
    (
        status(&["active", "inactive"]),
        option::of(period()),
        effect(),
        vec(provision(), 0..3),
    )
        .prop_map(|(status, period, base, provisions)| ConsentFact {
            id: "consent".to_owned(),
            status,
            period,
            base,
            provisions,
        })
}

fn facts() -> impl Strategy<Value = Facts> {
    (
        vec(care_team(), 0..2),
        vec(encounter(), 0..2),
        vec(appointment(), 0..2),
        vec(consultation(), 0..2),
        vec(grant(), 0..2),
        vec(consent(), 0..2),
    )
        .prop_map(
            |(care_teams, encounters, appointments, consultations, grants, consents)| Facts {
                care_teams,
                encounters,
                appointments,
                consultations,
                grants,
                consents,
            },
        )
}

fn principal() -> impl Strategy<Value = Principal> {
    (
        select(Role::ALL.to_vec()),
        any::<bool>(),
        any::<bool>(),
        select(vec!["p1", "p2"]),
    )
        .prop_map(|(role, mfa, training_current, own)| Principal {
            id: "me".to_owned(),
            role,
            practitioner: role.is_workforce().then(|| "me".to_owned()),
            patient: (role == Role::Patient).then(|| own.to_owned()),
            organization: role.is_workforce().then(|| "org-1".to_owned()),
            department: None,
            mfa,
            training_current,
        })
}

fn resource() -> impl Strategy<Value = Resource> {
    (
        select(ResourceType::ALL.to_vec()),
        subsequence(Label::ALL.to_vec(), 0..=2),
        option::of(instant()),
    )
        .prop_map(|(rtype, labels, date)| Resource {
            rtype,
            id: Some("r1".to_owned()),
            patient: (Category::of(rtype) != Category::Directory).then(|| "p1".to_owned()),
            labels: labels.into_iter().collect(),
            date,
        })
}

/// Any request over patient `p1` (or the directory).
pub fn any_input() -> impl Strategy<Value = Input> {
    (
        principal(),
        select(Action::ALL.to_vec()),
        resource(),
        option::of(select(Purpose::ALL.to_vec())),
        facts(),
    )
        .prop_map(|(principal, action, resource, purpose, facts)| Input {
            principal,
            action,
            resource,
            purpose,
            facts,
        })
}

fn rels(i: &Input) -> std::collections::BTreeSet<Relationship> {
    match &i.resource.patient {
        Some(p) => relationships(&i.principal, p, &i.facts, NOW, &Windows::default()),
        None => Default::default(),
    }
}

fn is_directory(i: &Input) -> bool {
    Category::of(i.resource.rtype) == Category::Directory
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Default deny: without a relationship nothing outside the directory is
    /// allowed, but for the privacy officer's P11 on Consent and Patient.
    #[test]
    fn no_relationship_denies(i in any_input()) {
        let d = decide(&i.request(), &Windows::default());
        let p11 = i.principal.role == Role::PrivacyOfficer
            && matches!(i.resource.rtype, ResourceType::Consent | ResourceType::Patient);
        // P12: registration and booking create, and show nothing.
        let p12 = i.principal.role == Role::FrontDesk
            && i.action == Action::Create
            && matches!(i.resource.rtype, ResourceType::Patient | ResourceType::RelatedPerson | ResourceType::Appointment);
        if !is_directory(&i) && rels(&i).is_empty() && !p11 && !p12 {
            prop_assert!(!d.allow, "allowed by {} without a relationship", d.rule);
        }
    }

    /// A consent denial wins over a care-team permit.
    #[test]
    fn consent_deny_beats_care_team(
        mut i in any_input(),
        clinician in select(vec![Role::Physician, Role::Nurse, Role::OtherClinical]),
        action in select(vec![Action::Read, Action::Search, Action::Create, Action::Update]),
        base_deny in any::<bool>(),
    ) {
        i.principal.role = clinician;
        i.principal.practitioner = Some("me".to_owned());
        i.principal.patient = None;
        i.principal.mfa = true;
        i.principal.training_current = true;
        i.action = action;
        i.purpose = None;
        i.facts.grants.clear();
        i.facts.care_teams.push(CareTeamFact {
            id: "ct-me".to_owned(),
            status: "active".to_owned(),
            period: Period::default(),
            members: vec![Member { practitioner: "me".to_owned(), period: Period::default() }],
        });
        let deny_me = Provision {
            effect: Effect::Deny,
            actors: vec![Actor::Practitioner("me".to_owned())],
            purposes: vec![],
            labels: vec![],
            classes: vec![],
            data_period: None,
            period: None,
        };
        i.facts.consents.push(ConsentFact {
            id: "consent-deny".to_owned(),
            status: "active".to_owned(),
            period: None,
            base: if base_deny { Effect::Deny } else { Effect::Permit },
            provisions: if base_deny { vec![] } else { vec![deny_me] },
        });
        let d = decide(&i.request(), &Windows::default());
        if !is_directory(&i) {
            prop_assert!(!d.allow);
            prop_assert_eq!(d.rule, "F1");
        }
    }

    /// Data with a restricted label is only reached through a direct
    /// relationship, or under break-the-glass.
    #[test]
    fn restricted_label_needs_direct_relationship(i in any_input()) {
        let d = decide(&i.request(), &Windows::default());
        let restricted = i.resource.labels.iter().any(|l| l.is_restricted());
        if d.allow && restricted && !is_directory(&i) {
            let r = rels(&i);
            let direct = r.iter().any(|x| x.is_direct());
            let glass = r.contains(&Relationship::Emergency) && d.purpose == Purpose::Etreat;
            prop_assert!(direct || glass, "{} allowed labelled data via {:?}", d.rule, r);
        }
    }

    /// G1 and G2: a workforce account without MFA or current training
    /// reaches no patient data, whatever the facts.
    #[test]
    fn workforce_needs_mfa_and_training(i in any_input()) {
        let d = decide(&i.request(), &Windows::default());
        let p = &i.principal;
        if p.role.is_workforce() && !is_directory(&i) && (!p.mfa || !p.training_current) {
            prop_assert!(!d.allow);
            prop_assert_eq!(d.rule, if p.mfa { "G2" } else { "G1" });
        }
    }

    /// A patient account reaches only its own compartment.
    #[test]
    fn patients_reach_only_their_own(i in any_input()) {
        let d = decide(&i.request(), &Windows::default());
        if d.allow && i.principal.role == Role::Patient && !is_directory(&i) {
            prop_assert_eq!(&i.principal.patient, &i.resource.patient);
            prop_assert!(matches!(i.action, Action::Read | Action::Search | Action::Export));
        }
    }

    /// Masks only on allows, and only for front desk and billing.
    #[test]
    fn masks_only_for_front_desk_and_billing(i in any_input()) {
        let d = decide(&i.request(), &Windows::default());
        if !d.masks.is_empty() {
            prop_assert!(d.allow);
            prop_assert!(matches!(i.principal.role, Role::FrontDesk | Role::Billing));
        }
        if d.allow && d.rule == "P10" {
            prop_assert!(d.masks.contains("text"));
        }
    }

    /// Everyone reads the directory; only administrators change it.
    #[test]
    fn directory(i in any_input()) {
        let d = decide(&i.request(), &Windows::default());
        if is_directory(&i) {
            let expect = match i.action {
                Action::Read | Action::Search => true,
                Action::Create | Action::Update | Action::Delete => {
                    i.principal.role == Role::Administrator
                }
                Action::Export | Action::Share => false,
            };
            prop_assert_eq!(d.allow, expect);
        }
    }

    /// An allow never comes with a purpose the allowing rule does not name.
    #[test]
    fn allowed_purpose_is_the_rules(i in any_input()) {
        let d = decide(&i.request(), &Windows::default());
        if d.allow {
            let expected = match d.rule.as_str() {
                "P1" | "P2" => None,
                "P3" => Some(Purpose::Patrqt),
                "P4" | "P5" | "P6" | "P7" => Some(Purpose::Treat),
                "P8" => Some(Purpose::Etreat),
                "P9" | "P11" | "P12" => Some(Purpose::Hoperat),
                "P10" => Some(Purpose::Hpaymt),
                other => panic!("allowed by {other}"),
            };
            if let Some(p) = expected {
                prop_assert_eq!(d.purpose, p);
            }
            if let Some(declared) = i.purpose {
                prop_assert_eq!(d.purpose, declared);
            }
        }
    }
}
