//! Properties over arbitrary requests and facts.

use model::{ResourceType, Timestamp};
use policy::{
    Action, Actor, AppointmentFact, CareTeamFact, Category, ConsentFact, ConsultationFact,
    Decision, Effect, EncounterFact, Engine, Facts, GrantFact, Label, Member, Period, Principal,
    Provision, Purpose, Relationship, Request, Resource, Role, Windows,
};
use proptest::collection::{btree_set, vec};
use proptest::option;
use proptest::prelude::*;

use crate::fixtures::{H, NOW, engine};

fn time() -> impl Strategy<Value = Timestamp> {
    (-40 * 24i64..40 * 24).prop_map(|h| Timestamp(NOW.0 + h * H))
}

fn period() -> impl Strategy<Value = Period> {
    (option::of(time()), option::of(time())).prop_map(|(start, end)| Period { start, end })
}

fn one_of(items: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(items).prop_map(str::to_owned)
}

fn practitioner() -> impl Strategy<Value = String> {
    one_of(&["pr-1", "pr-2"])
}

fn role() -> impl Strategy<Value = Role> {
    proptest::sample::select(Role::ALL.to_vec())
}

fn action() -> impl Strategy<Value = Action> {
    proptest::sample::select(Action::ALL.to_vec())
}

fn purpose() -> impl Strategy<Value = Purpose> {
    proptest::sample::select(Purpose::ALL.to_vec())
}

fn rtype() -> impl Strategy<Value = ResourceType> {
    proptest::sample::select(ResourceType::ALL.to_vec())
}

fn label() -> impl Strategy<Value = Label> {
    proptest::sample::select(Label::ALL.to_vec())
}

fn principal() -> impl Strategy<Value = Principal> {
    (
        role(),
        one_of(&["acct-1", "acct-2"]),
        option::of(practitioner()),
        option::of(one_of(&["pat-1", "pat-2"])),
        option::of(one_of(&["org-1", "org-2"])),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(role, id, practitioner, patient, organization, mfa, training_current)| Principal {
                id,
                role,
                practitioner,
                patient,
                organization,
                department: None,
                mfa,
                training_current,
            },
        )
}

fn resource() -> impl Strategy<Value = Resource> {
    (
        rtype(),
        option::of(one_of(&["pat-1", "pat-2"])),
        btree_set(label(), 0..3),
        option::of(time()),
    )
        .prop_map(|(rtype, patient, labels, date)| Resource {
            rtype,
            id: Some("r1".to_owned()),
            patient,
            labels,
            date,
        })
}

fn member() -> impl Strategy<Value = Member> {
    (practitioner(), period()).prop_map(|(practitioner, period)| Member {
        practitioner,
        period,
    })
}

fn provision() -> impl Strategy<Value = Provision> {
    (
        prop_oneof![Just(Effect::Permit), Just(Effect::Deny)],
        vec(
            prop_oneof![
                practitioner().prop_map(Actor::Practitioner),
                one_of(&["org-1", "org-2"]).prop_map(Actor::Organization),
            ],
            0..2,
        ),
        vec(
            one_of(&["TREAT", "ETREAT", "HPAYMT", "HOPERAT", "PATRQT", "XX"]),
            0..2,
        ),
        vec(one_of(&["PSY", "V", "R", "HIV", "VIP"]), 0..2),
        vec(one_of(&["Observation", "Patient", "Condition"]), 0..2),
        option::of(period()),
        option::of(period()),
    )
        .prop_map(
            |(effect, actors, purposes, labels, classes, data_period, period)| Provision {
                effect,
                actors,
                purposes,
                labels,
                classes,
                data_period,
                period,
            },
        )
}

fn facts() -> impl Strategy<Value = Facts> {
    let status = || {
        one_of(&[
            "active",
            "proposed",
            "planned",
            "in-progress",
            "finished",
            "cancelled",
            "booked",
            "fulfilled",
            "entered-in-error",
        ])
    };
    (
        vec(
            (status(), period(), vec(member(), 0..2)).prop_map(|(status, period, members)| {
                CareTeamFact {
                    id: "ct".to_owned(),
                    status,
                    period,
                    members,
                }
            }),
            0..2,
        ),
        vec(
            (status(), period(), vec(member(), 0..2)).prop_map(|(status, period, participants)| {
                EncounterFact {
                    id: "e".to_owned(),
                    status,
                    period,
                    participants,
                }
            }),
            0..2,
        ),
        vec(
            (
                status(),
                option::of(time()),
                option::of(time()),
                vec(practitioner(), 0..2),
            )
                .prop_map(|(status, start, end, participants)| AppointmentFact {
                    id: "a".to_owned(),
                    status,
                    start,
                    end,
                    participants,
                }),
            0..2,
        ),
        vec(
            (practitioner(), period()).prop_map(|(practitioner, period)| ConsultationFact {
                id: "v".to_owned(),
                practitioner,
                period,
            }),
            0..2,
        ),
        vec(
            (
                one_of(&["acct-1", "acct-2"]),
                one_of(&["pat-1", "pat-2"]),
                time(),
                time(),
                any::<bool>(),
            )
                .prop_map(|(account, patient, start, expires, revoked)| GrantFact {
                    id: "g".to_owned(),
                    account,
                    patient,
                    start,
                    expires,
                    revoked,
                }),
            0..2,
        ),
        vec(
            (
                one_of(&["active", "draft", "inactive"]),
                option::of(period()),
                prop_oneof![Just(Effect::Permit), Just(Effect::Deny)],
                vec(provision(), 0..3),
            )
                .prop_map(|(status, period, base, provisions)| ConsentFact {
                    id: "c".to_owned(),
                    status,
                    period,
                    base,
                    provisions,
                }),
            0..2,
        ),
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

fn decide(p: &Principal, a: Action, r: &Resource, purpose: Option<Purpose>, f: &Facts) -> Decision {
    engine().decide(&Request {
        principal: p,
        action: a,
        resource: r,
        purpose,
        now: NOW,
        facts: f,
    })
}

fn rels(p: &Principal, r: &Resource, f: &Facts) -> std::collections::BTreeSet<Relationship> {
    r.patient
        .as_deref()
        .map(|patient| engine().relationships(p, patient, f, NOW).0)
        .unwrap_or_default()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// (a) Without any relationship, nothing but the directory is reached,
    /// except by the privacy officer under P11 (read, search, create and
    /// update Consent; read and search Patient) and the front desk's
    /// registration and booking under P12 (create only: it shows nothing).
    #[test]
    fn no_relationship_denies(p in principal(), a in action(), r in resource(), purpose in option::of(purpose()), f in facts()) {
        prop_assume!(Category::of(r.rtype) != Category::Directory);
        prop_assume!(rels(&p, &r, &f).is_empty());
        let d = decide(&p, a, &r, purpose, &f);
        let p11 = p.role == Role::PrivacyOfficer
            && ((r.rtype == ResourceType::Consent && matches!(a, Action::Read | Action::Search | Action::Create | Action::Update))
                || (r.rtype == ResourceType::Patient && matches!(a, Action::Read | Action::Search)));
        let p12 = p.role == Role::FrontDesk
            && a == Action::Create
            && matches!(r.rtype, ResourceType::Patient | ResourceType::RelatedPerson | ResourceType::Appointment);
        prop_assert!(!d.allow || (p11 && d.policies == ["P11"]) || (p12 && d.policies == ["P12"]), "{d:?}");
    }

    /// (b) A matching consent deny provision beats a care-team permit,
    /// unless the access is the patient's own or break-the-glass.
    #[test]
    fn consent_deny_beats_care_team(
        role in proptest::sample::select(vec![Role::Physician, Role::Nurse, Role::OtherClinical]),
        a in proptest::sample::select(vec![Action::Read, Action::Search, Action::Create, Action::Update]),
        rtype in rtype(),
        labels in btree_set(label(), 0..3),
        provision in provision(),
    ) {
        prop_assume!(Category::of(rtype) != Category::Directory);
        let p = crate::fixtures::principal(role);
        let mut r = crate::fixtures::resource(rtype, &[]);
        r.labels = labels;
        let mut f = crate::fixtures::facts(&[Relationship::CareTeam]);
        let deny = Provision { effect: Effect::Deny, ..provision };
        f.consents.push(ConsentFact {
            id: "c9".to_owned(),
            status: "active".to_owned(),
            period: None,
            base: Effect::Permit,
            provisions: vec![deny.clone()],
        });
        let matching = policy::consent_denies(&p, Purpose::Treat, &r, &f, NOW).is_some();
        let d = decide(&p, a, &r, None, &f);
        if matching {
            prop_assert!(!d.allow && d.policies.contains(&"F1".to_owned()), "{d:?}");
            prop_assert_eq!(d.consent.as_deref(), Some("c9"));
            // Break-the-glass lifts it.
            f.grants = crate::fixtures::facts(&[Relationship::Emergency]).grants;
            let d = decide(&p, a, &r, Some(Purpose::Etreat), &f);
            prop_assert!(d.allow, "{d:?}");
        } else {
            prop_assert!(d.allow, "{d:?}");
        }
    }

    /// (c) A restricted label on patient data without a direct relationship
    /// denies, unless under break-the-glass (directory labels are not used).
    #[test]
    fn restricted_label_needs_a_direct_relationship(p in principal(), a in action(), mut r in resource(), l in label(), purpose in option::of(purpose()), f in facts()) {
        prop_assume!(l.is_restricted());
        prop_assume!(policy::Category::of(r.rtype) != policy::Category::Directory);
        r.labels.insert(l);
        let held = rels(&p, &r, &f);
        prop_assume!(!held.iter().any(|x| x.is_direct()));
        let d = decide(&p, a, &r, purpose, &f);
        prop_assert!(!d.allow || (held.contains(&Relationship::Emergency) && d.purpose == Purpose::Etreat && d.policies == ["P8"]), "{d:?}");
    }

    /// (d) Deciding never panics, never fails to evaluate under the shipped
    /// policies, and every decision is explained.
    #[test]
    fn decisions_are_total_and_explained(p in principal(), a in action(), r in resource(), purpose in option::of(purpose()), f in facts()) {
        let d = decide(&p, a, &r, purpose, &f);
        prop_assert!(!d.policies.is_empty());
        prop_assert!(!d.policies.contains(&policy::EVALUATION_ERROR.to_owned()), "{d:?}");
        prop_assert!(!d.reason.is_empty());
        if d.allow {
            prop_assert!(d.policies.iter().all(|id| id.starts_with('P')));
            prop_assert!(d.lesson.is_none());
        } else {
            prop_assert!(d.lesson.is_some(), "{d:?}");
            prop_assert!(d.masks.is_empty());
            // Forbid wins: whenever a forbid applies, the decision is a denial naming it.
            prop_assert!(d.policies == [policy::DEFAULT_DENY] || d.policies.iter().all(|id| id.starts_with(['F', 'G'])), "{d:?}");
        }
        if d.grant.is_some() {
            prop_assert_eq!(d.purpose, Purpose::Etreat);
        }
        prop_assert_eq!(purpose.is_none_or(|x| x == d.purpose), true);
    }

    /// (d) A forbid that holds always wins: turning off MFA for a workforce
    /// account turns every non-directory allow into a G1 denial.
    #[test]
    fn forbid_wins(mut p in principal(), a in action(), r in resource(), purpose in option::of(purpose()), f in facts()) {
        prop_assume!(p.role.is_workforce() && Category::of(r.rtype) != Category::Directory);
        p.mfa = false;
        let d = decide(&p, a, &r, purpose, &f);
        prop_assert!(!d.allow && d.policies.contains(&"G1".to_owned()), "{d:?}");
    }

    /// (e) The shipped set validates under any windows.
    #[test]
    fn shipped_set_always_validates(w in (0i64..1_000_000, 0i64..1_000_000, 0i64..1_000_000, 0i64..10_000_000, 0i64..1_000_000, 0i64..10_000_000)) {
        let windows = Windows {
            encounter_after: w.0,
            appointment_before: w.1,
            appointment_after: w.2,
            scheduled_visit_before: w.3,
            scheduled_visit_after: w.4,
            recent_encounter: w.5,
        };
        let e = Engine::shipped(windows);
        prop_assert!(e.is_ok());
    }

    /// (f) The memo never changes an answer: the shared engine (its memo
    /// filled by every earlier case of every test) decides exactly as a
    /// fresh engine that has never answered anything.
    #[test]
    fn the_memo_answers_as_cedar_would(p in principal(), a in action(), r in resource(), purpose in option::of(purpose()), f in facts()) {
        let remembered = decide(&p, a, &r, purpose, &f);
        let again = decide(&p, a, &r, purpose, &f);
        let fresh = Engine::shipped(Windows::default()).unwrap().decide(&Request {
            principal: &p,
            action: a,
            resource: &r,
            purpose,
            now: NOW,
            facts: &f,
        });
        prop_assert_eq!(&remembered, &fresh);
        prop_assert_eq!(&again, &fresh);
    }
}
