//! Each rule of the rule book: an allowed case and a neighbouring denied one.

use model::ResourceType as T;
use policy::{Action::*, Label, Lesson, Purpose, Relationship as R, Role};

use crate::fixtures::*;

#[test]
fn p1_directory_read() {
    Case::new(Role::Nurse, Read, T::Practitioner).check("allow P1");
    Case::new(Role::Patient, Search, T::Organization).check("allow P1");
    // Directory reads need neither MFA nor training (G1 and G2 do not apply).
    let mut c = Case::new(Role::Billing, Read, T::PractitionerRole);
    c.principal.mfa = false;
    c.principal.training_current = false;
    c.check("allow P1");
    Case::new(Role::Physician, Update, T::Practitioner).check("deny default-deny L-ROLE");
}

#[test]
fn p2_directory_upkeep() {
    Case::new(Role::Administrator, Create, T::Organization).check("allow P2");
    Case::new(Role::Administrator, Delete, T::Practitioner).check("allow P2");
    Case::new(Role::FrontDesk, Update, T::Organization).check("deny default-deny L-ROLE");
    Case::new(Role::Patient, Create, T::Practitioner).check("deny default-deny L-ROLE");
}

#[test]
fn p3_own_record() {
    let d = Case::new(Role::Patient, Read, T::Observation).check("allow P3");
    assert_eq!(d.purpose, Purpose::Patrqt);
    assert!(d.relationships.contains(&R::SelfAccess));
    Case::new(Role::Patient, Export, T::DocumentReference).check("allow P3");
    Case::new(Role::Patient, Search, T::Condition)
        .labels(&[Label::Psy, Label::Vip])
        .check("allow P3");
    let mut own_consent = Case::new(Role::Patient, Read, T::Observation);
    own_consent.facts.consents.push(consent_denying_all());
    own_consent.check("allow P3");
    Case::new(Role::Patient, Update, T::Observation).check("deny default-deny L-ROLE");
    Case::new(Role::Patient, Share, T::Observation).check("deny default-deny L-ROLE");
    Case::new(Role::Patient, Read, T::Observation)
        .purpose(Purpose::Treat)
        .check("deny default-deny L-PURPOSE");
}

#[test]
fn p4_care() {
    Case::new(Role::Physician, Read, T::Observation)
        .rels(&[R::CareTeam])
        .check("allow P4");
    Case::new(Role::Nurse, Create, T::Condition)
        .rels(&[R::Encounter])
        .check("allow P4");
    Case::new(Role::OtherClinical, Update, T::DocumentReference)
        .rels(&[R::Consultation])
        .check("allow P4");
    Case::new(Role::Nurse, Search, T::Consent)
        .rels(&[R::CareTeam])
        .check("allow P4");
    let d = Case::new(Role::Nurse, Read, T::Observation).check("deny default-deny L-RELATIONSHIP");
    assert!(d.break_glass_possible);
    assert_eq!(
        d.missing.as_deref(),
        Some("a care-team membership, an encounter or an active consultation with this patient")
    );
    assert!(
        d.way_forward
            .as_deref()
            .is_some_and(|w| w.contains("break the glass"))
    );
    // Direct relationships do not reach the directory's upkeep.
    Case::new(Role::Physician, Update, T::Practitioner)
        .rels(&[R::CareTeam])
        .check("deny default-deny L-ROLE");
}

#[test]
fn p5_delete() {
    Case::new(Role::Physician, Delete, T::Observation)
        .rels(&[R::CareTeam])
        .check("allow P5");
    let d = Case::new(Role::Nurse, Delete, T::Observation)
        .rels(&[R::CareTeam])
        .check("deny default-deny L-ROLE");
    assert!(!d.break_glass_possible);
    Case::new(Role::Physician, Delete, T::Observation)
        .rels(&[R::Appointment])
        .check("deny default-deny L-RELATIONSHIP");
}

#[test]
fn p6_export_and_share() {
    Case::new(Role::Nurse, Export, T::Observation)
        .rels(&[R::Encounter])
        .check("allow P6");
    Case::new(Role::Physician, Share, T::DocumentReference)
        .rels(&[R::Consultation])
        .check("allow P6");
    let d = Case::new(Role::Nurse, Share, T::Observation)
        .rels(&[R::Appointment])
        .check("deny default-deny L-RELATIONSHIP");
    assert!(!d.break_glass_possible, "P8 does not share");
}

#[test]
fn p7_visit_preparation() {
    for t in [T::Patient, T::Encounter, T::Observation, T::Consent] {
        Case::new(Role::Physician, Read, t)
            .rels(&[R::Appointment])
            .check("allow P7");
    }
    Case::new(Role::Physician, Read, T::DocumentReference)
        .rels(&[R::Appointment])
        .check("deny default-deny L-RELATIONSHIP");
    Case::new(Role::Nurse, Update, T::Observation)
        .rels(&[R::Appointment])
        .check("deny default-deny L-RELATIONSHIP");
    let d = Case::new(Role::Nurse, Read, T::Observation)
        .rels(&[R::Appointment])
        .labels(&[Label::Hiv])
        .check("deny F3 L-SENSITIVE");
    assert!(d.break_glass_possible);
}

#[test]
fn p8_break_the_glass() {
    let d = Case::new(Role::Nurse, Read, T::Observation)
        .rels(&[R::Emergency])
        .check("allow P8");
    assert_eq!(d.purpose, Purpose::Etreat);
    assert_eq!(d.grant.as_deref(), Some("g1"));
    Case::new(Role::Physician, Update, T::Condition)
        .rels(&[R::Emergency])
        .labels(&[Label::Psy, Label::Vip])
        .check("allow P8");
    Case::new(Role::Physician, Delete, T::Observation)
        .rels(&[R::Emergency])
        .check("deny default-deny L-RELATIONSHIP");
    Case::new(Role::Physician, Export, T::Observation)
        .rels(&[R::Emergency])
        .check("deny default-deny L-RELATIONSHIP");
    let d = Case::new(Role::Physician, Read, T::Observation)
        .rels(&[R::Emergency])
        .purpose(Purpose::Treat)
        .check("deny default-deny L-PURPOSE");
    assert_eq!(d.missing.as_deref(), Some("purpose ETREAT"));
    // With a direct relationship too, an undeclared purpose stays TREAT.
    let d = Case::new(Role::Physician, Read, T::Observation)
        .rels(&[R::CareTeam, R::Emergency])
        .check("allow P4");
    assert_eq!((d.purpose, d.grant), (Purpose::Treat, None));
    // Only clinicians break the glass.
    Case::new(Role::Billing, Read, T::Observation)
        .rels(&[R::Emergency])
        .check("deny default-deny L-ROLE");
}

#[test]
fn p9_front_desk() {
    let d = Case::new(Role::FrontDesk, Read, T::Patient)
        .rels(&[R::ScheduledVisit])
        .check("allow P9");
    assert_eq!(d.purpose, Purpose::Hoperat);
    Case::new(Role::FrontDesk, Search, T::Encounter)
        .rels(&[R::ScheduledVisit])
        .check("allow P9 [diagnosis,reasonCode,reasonReference]");
    Case::new(Role::FrontDesk, Update, T::Appointment)
        .rels(&[R::ScheduledVisit])
        .check("allow P9");
    Case::new(Role::FrontDesk, Update, T::Appointment).check("deny default-deny L-RELATIONSHIP");
    Case::new(Role::FrontDesk, Read, T::Patient)
        .rels(&[R::ScheduledVisit])
        .labels(&[Label::Vip])
        .check("allow P9");
    Case::new(Role::FrontDesk, Update, T::Encounter)
        .rels(&[R::ScheduledVisit])
        .check("deny default-deny L-ROLE");
    for t in [T::Observation, T::DocumentReference, T::Consent] {
        Case::new(Role::FrontDesk, Read, t)
            .rels(&[R::ScheduledVisit])
            .check("deny default-deny L-ROLE");
    }
    let d = Case::new(Role::FrontDesk, Read, T::Patient).check("deny default-deny L-RELATIONSHIP");
    assert_eq!(d.missing.as_deref(), Some("a scheduled visit"));
    assert!(!d.break_glass_possible);
    Case::new(Role::FrontDesk, Read, T::Patient)
        .rels(&[R::ScheduledVisit])
        .labels(&[Label::Restricted])
        .check("deny F3 L-SENSITIVE");
}

#[test]
fn p12_registration() {
    Case::new(Role::FrontDesk, Create, T::Patient).check("allow P12");
    Case::new(Role::FrontDesk, Create, T::Appointment).check("allow P12");
    Case::new(Role::FrontDesk, Create, T::Observation).check("deny default-deny L-ROLE");
    Case::new(Role::FrontDesk, Update, T::Patient).check("deny default-deny L-ROLE");
    Case::new(Role::Nurse, Create, T::Patient).check("deny default-deny L-RELATIONSHIP");
}

#[test]
fn p10_billing() {
    let d = Case::new(Role::Billing, Read, T::Condition)
        .rels(&[R::RecentEncounter])
        .check("allow P10 [note,text]");
    assert_eq!(d.purpose, Purpose::Hpaymt);
    Case::new(Role::Billing, Search, T::Patient)
        .rels(&[R::RecentEncounter])
        .check("allow P10 [text]");
    Case::new(Role::Billing, Read, T::Encounter)
        .rels(&[R::RecentEncounter])
        .labels(&[Label::Vip])
        .check("allow P10 [text]");
    for t in [T::Observation, T::DocumentReference, T::Consent] {
        Case::new(Role::Billing, Read, t)
            .rels(&[R::RecentEncounter])
            .check("deny default-deny L-ROLE");
    }
    Case::new(Role::Billing, Update, T::Condition)
        .rels(&[R::RecentEncounter])
        .check("deny default-deny L-ROLE");
    let mut stale = Case::new(Role::Billing, Read, T::Condition).rels(&[R::RecentEncounter]);
    if let Some(e) = stale.facts.encounters.first_mut() {
        e.period.end = Some(at(-30 * D - S));
    }
    let d = stale.check("deny default-deny L-RELATIONSHIP");
    assert_eq!(
        d.missing.as_deref(),
        Some("an encounter that ended in the last 30 days")
    );
}

#[test]
fn p11_consents() {
    Case::new(Role::PrivacyOfficer, Read, T::Consent).check("allow P11");
    Case::new(Role::PrivacyOfficer, Create, T::Consent).check("allow P11");
    Case::new(Role::PrivacyOfficer, Search, T::Patient)
        .labels(&[Label::Vip])
        .check("allow P11");
    Case::new(Role::PrivacyOfficer, Delete, T::Consent).check("deny default-deny L-ROLE");
    Case::new(Role::PrivacyOfficer, Update, T::Patient).check("deny default-deny L-ROLE");
    Case::new(Role::PrivacyOfficer, Read, T::Observation).check("deny default-deny L-ROLE");
    Case::new(Role::PrivacyOfficer, Read, T::Consent)
        .labels(&[Label::Sud])
        .check("deny F3 L-SENSITIVE");
    Case::new(Role::Administrator, Read, T::Patient).check("deny default-deny L-ROLE");
}

#[test]
fn f1_consent() {
    let mut c = Case::new(Role::Physician, Read, T::Observation).rels(&[R::CareTeam]);
    c.facts.consents.push(consent_denying_all());
    let d = c.check("deny F1 L-CONSENT");
    assert_eq!(d.consent.as_deref(), Some("cons-1"));
    assert_eq!(
        d.reason,
        "the patient's consent Consent/cons-1 does not allow this"
    );
    assert!(d.break_glass_possible);
    let mut glass = Case::new(Role::Physician, Read, T::Observation).rels(&[R::Emergency]);
    glass.facts.consents.push(consent_denying_all());
    let d = glass.check("allow P8");
    assert_eq!(d.consent, None);
    // A consent "permit" never grants by itself.
    let mut permit = Case::new(Role::Physician, Read, T::Observation);
    permit.facts.consents.push(policy::ConsentFact {
        base: policy::Effect::Permit,
        ..consent_denying_all()
    });
    permit.check("deny default-deny L-RELATIONSHIP");
}

#[test]
fn f2_vip() {
    Case::new(Role::Physician, Read, T::Observation)
        .rels(&[R::Appointment])
        .labels(&[Label::Vip])
        .check("deny F2 L-VIP");
    Case::new(Role::Physician, Read, T::Observation)
        .rels(&[R::CareTeam])
        .labels(&[Label::Vip])
        .check("allow P4");
    Case::new(Role::Nurse, Read, T::Patient)
        .labels(&[Label::Vip])
        .check("deny F2 L-VIP");
}

#[test]
fn f3_restricted_labels() {
    for l in [
        Label::Psy,
        Label::Eth,
        Label::Hiv,
        Label::Sud,
        Label::Restricted,
    ] {
        Case::new(Role::Physician, Read, T::Condition)
            .rels(&[R::Appointment])
            .labels(&[l])
            .check("deny F3 L-SENSITIVE");
        Case::new(Role::Physician, Read, T::Condition)
            .rels(&[R::Encounter])
            .labels(&[l])
            .check("allow P4");
    }
    Case::new(Role::Billing, Read, T::Condition)
        .rels(&[R::RecentEncounter])
        .labels(&[Label::Eth])
        .check("deny F3 L-SENSITIVE");
    // Break-the-glass under another declared purpose is not excepted.
    Case::new(Role::Physician, Read, T::Condition)
        .rels(&[R::Emergency])
        .labels(&[Label::Hiv])
        .purpose(Purpose::Treat)
        .check("deny F3 L-SENSITIVE");
}

#[test]
fn f4_no_patient_in_anothers_record() {
    let mut other = Case::new(Role::Patient, Read, T::Patient);
    other.principal.patient = Some("pat-2".to_owned());
    other.check("deny F4 L-ROLE");
    let mut orphan = Case::new(Role::Patient, Read, T::Observation);
    orphan.resource.patient = None;
    orphan.check("deny F4 L-ROLE");
}

#[test]
fn g1_mfa() {
    let mut c = Case::new(Role::Physician, Read, T::Observation).rels(&[R::CareTeam]);
    c.principal.mfa = false;
    let d = c.check("deny G1 L-MFA");
    assert_eq!(d.reason, "sign in with your second factor");
    assert!(!d.break_glass_possible);
    // Patients need no second factor for these rules.
    let mut p = Case::new(Role::Patient, Read, T::Observation);
    p.principal.mfa = false;
    p.check("allow P3");
}

#[test]
fn g2_training() {
    let mut c = Case::new(Role::FrontDesk, Read, T::Patient).rels(&[R::ScheduledVisit]);
    c.principal.training_current = false;
    c.check("deny G2 L-TRAINING");
    c.principal.mfa = false;
    let d = c.check("deny G1,G2 L-MFA");
    assert_eq!(d.lesson, Some(Lesson::Mfa));
}

#[test]
fn g3_purpose() {
    let d = Case::new(Role::FrontDesk, Read, T::Patient)
        .rels(&[R::ScheduledVisit])
        .purpose(Purpose::Treat)
        .check("deny default-deny L-PURPOSE");
    assert_eq!(d.missing.as_deref(), Some("purpose HOPERAT"));
    assert_eq!(d.purpose, Purpose::Treat);
    Case::new(Role::FrontDesk, Read, T::Patient)
        .rels(&[R::ScheduledVisit])
        .purpose(Purpose::Hoperat)
        .check("allow P9");
    Case::new(Role::Physician, Read, T::Observation)
        .rels(&[R::CareTeam])
        .purpose(Purpose::Hpaymt)
        .check("deny default-deny L-PURPOSE");
    // No purpose helps without a relationship.
    Case::new(Role::Physician, Read, T::Observation)
        .purpose(Purpose::Hpaymt)
        .check("deny default-deny L-RELATIONSHIP");
}

#[test]
fn decisions_carry_relationships() {
    let d = Case::new(Role::Physician, Read, T::Observation)
        .rels(&[R::CareTeam, R::Appointment])
        .check("allow P4,P7");
    assert_eq!(
        d.relationships,
        [R::CareTeam, R::Appointment].into_iter().collect()
    );
    assert!(d.reason.contains("caring for the patient"));
}

#[test]
fn engine_is_shareable() {
    fn send_sync<E: Send + Sync>() {}
    send_sync::<policy::Engine>();
}

/// `cargo test --release -p policy --test it latency -- --ignored --nocapture`
#[test]
#[ignore = "a measurement, run in release"]
fn latency() {
    let cases = [
        Case::new(Role::Physician, Read, T::Observation).rels(&[R::CareTeam]),
        Case::new(Role::Nurse, Read, T::Observation),
        Case::new(Role::FrontDesk, Read, T::Encounter).rels(&[R::ScheduledVisit]),
    ];
    for (c, fresh) in cases.iter().flat_map(|c| [(c, true), (c, false)]) {
        let mut times: Vec<std::time::Duration> = (0..20_000)
            .map(|_| {
                let t = std::time::Instant::now();
                std::hint::black_box(if fresh { c.decide_fresh() } else { c.decide() });
                t.elapsed()
            })
            .collect();
        times.sort();
        let p = |q: usize| {
            times
                .get(times.len() * q / 100)
                .copied()
                .unwrap_or_default()
        };
        let how = if fresh { "afresh" } else { "memo" };
        println!(
            "{} ({how}): p50 {:?} p99 {:?}",
            summary(&c.decide()),
            p(50),
            p(99)
        );
    }
}
