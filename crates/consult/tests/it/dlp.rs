//! Consult-aware DLP: another patient's identifiers are blocked on the
//! clinician side; this patient's own pass; the patient side is never
//! blocked and learns nothing about other patients.

use consult::dlp::{
    self, DlpError, FindingKind, IdentifierIndex, IdentifierKind, IndexKey, PatientIdentifiers,
    PersonName, ScanConfig, Side, StructuralKind, Verdict,
};

const ALICE: &str = "pat-alice";

fn person(family: &str, given: &str) -> PersonName {
    PersonName {
        family: family.into(),
        given: vec![given.into()],
    }
}

fn patients() -> Vec<PatientIdentifiers> {
    vec![
        PatientIdentifiers {
            patient_id: ALICE.into(),
            mrns: vec!["MRN0012345".into()],
            phones: vec!["(415) 555-0101".into(), "617-555-0142".into()],
            emails: vec!["alice.j@example.com".into()],
            names: vec![person("Johnson", "Alice")],
            birth_date: Some("1982-07-15".into()),
            ..Default::default()
        },
        PatientIdentifiers {
            patient_id: "pat-bob".into(),
            mrns: vec!["AB778812".into(), "00918273".into()],
            ssns: vec!["078-05-1120".into()],
            phones: vec!["+1 212 555 0199".into()],
            emails: vec!["Bob.Miller@example.net".into()],
            names: vec![
                person("Miller", "Robert"),
                person("Garcia Lopez", "Roberto"),
            ],
            birth_date: Some("1970-03-04".into()),
        },
        // Alice's sister shares the family phone.
        PatientIdentifiers {
            patient_id: "pat-carol".into(),
            phones: vec!["+1 (617) 555-0142".into()],
            names: vec![person("Johnson", "Carol")],
            birth_date: Some("1985-01-30".into()),
            ..Default::default()
        },
    ]
}

fn key() -> IndexKey {
    IndexKey::new([0x42; 32])
}

fn index() -> IdentifierIndex {
    IdentifierIndex::build(&key(), patients()).unwrap()
}

fn clinician(index: &IdentifierIndex, text: &str) -> dlp::Scan {
    dlp::scan(index, text, Side::Clinician, ALICE).unwrap()
}

/// The kinds found, in order.
fn kinds(scan: &dlp::Scan) -> Vec<FindingKind> {
    scan.verdict().findings().iter().map(|f| f.kind).collect()
}

#[track_caller]
fn assert_blocked(index: &IdentifierIndex, text: &str, kind: IdentifierKind, shown: &str) {
    let scan = clinician(index, text);
    assert!(
        scan.verdict().is_block(),
        "{text:?} should be blocked: {scan:?}"
    );
    let findings = scan.verdict().findings();
    assert_eq!(
        kinds(&scan),
        vec![FindingKind::OtherPatient(kind)],
        "{text:?}"
    );
    let f = &findings[0];
    assert_eq!(&text[f.span.start..f.span.end], shown, "{text:?}");
    assert_eq!(f.lesson, dlp::LESSON_OTHER_PATIENT);
    assert!(!f.reason.is_empty());
    assert_eq!(scan.other_patients_for_audit(), ["pat-bob"]);
}

#[track_caller]
fn assert_passes(index: &IdentifierIndex, text: &str) {
    let scan = clinician(index, text);
    assert_eq!(
        scan.verdict(),
        &Verdict::Allow { notices: vec![] },
        "{text:?}"
    );
    assert!(scan.other_patients_for_audit().is_empty());
}

#[test]
fn another_patients_phone_is_blocked_in_every_spelling() {
    let index = index();
    for phone in [
        "(212) 555-0199",
        "212-555-0199",
        "212.555.0199",
        "212 555 0199",
        "+1 212 555 0199",
        "+1-212-555-0199",
        "1 (212) 555-0199",
        "2125550199",
        "+12125550199",
    ] {
        assert_blocked(
            &index,
            &format!("Please call {phone} about the results."),
            IdentifierKind::Phone,
            phone,
        );
    }
}

#[test]
fn another_patients_ssn_email_and_mrn_are_blocked() {
    let index = index();
    assert_blocked(
        &index,
        "SSN on file: 078-05-1120.",
        IdentifierKind::Ssn,
        "078-05-1120",
    );
    assert_blocked(&index, "ssn 078051120", IdentifierKind::Ssn, "078051120");
    assert_blocked(
        &index,
        "write to Bob.Miller@Example.NET today",
        IdentifierKind::Email,
        "Bob.Miller@Example.NET",
    );
    assert_blocked(
        &index,
        "<bob.miller@example.net>",
        IdentifierKind::Email,
        "bob.miller@example.net",
    );
    assert_blocked(
        &index,
        "chart ab778812 shows",
        IdentifierKind::Mrn,
        "ab778812",
    );
    assert_blocked(
        &index,
        "chart AB-778812 shows",
        IdentifierKind::Mrn,
        "AB-778812",
    );
    assert_blocked(&index, "MRN: 00918273", IdentifierKind::Mrn, "00918273");
}

#[test]
fn another_patients_name_with_birth_date_is_blocked_in_both_orders_and_many_date_formats() {
    let index = index();
    for (text, shown) in [
        (
            "Robert Miller 1970-03-04 is next",
            "Robert Miller 1970-03-04",
        ),
        (
            "Miller, Robert (DOB 03/04/1970)",
            "Miller, Robert (DOB 03/04/1970",
        ),
        (
            "Robert Miller, born March 4, 1970.",
            "Robert Miller, born March 4, 1970",
        ),
        (
            "dob 04.03.1970 for Robert Miller",
            "04.03.1970 for Robert Miller",
        ),
        ("MILLER ROBERT 4 March 1970", "MILLER ROBERT 4 March 1970"),
        (
            "Pt Robert James Miller, Mar 4th, 1970",
            "Robert James Miller, Mar 4th, 1970",
        ),
        (
            "Roberto Garcia Lopez 1970-03-04",
            "Roberto Garcia Lopez 1970-03-04",
        ),
        ("Roberto Garcia, 1970-03-04", "Roberto Garcia, 1970-03-04"),
    ] {
        assert_blocked(&index, text, IdentifierKind::NameBirthDate, shown);
    }
}

#[test]
fn near_misses_pass() {
    let index = index();
    assert_passes(&index, "Please call (212) 555-0198 about the results.");
    assert_passes(&index, "Please call +1 212 555 0189.");
    assert_passes(&index, "bob.miller@example.org");
    assert_passes(&index, "chart AB778813 shows");
    assert_passes(&index, "Robert Miller 1970-03-05");
    assert_passes(&index, "Robert Millar 1970-03-04");
    // One digit off another patient's SSN is no longer theirs; it is still
    // flagged as an SSN, but not blocked.
    let scan = clinician(&index, "SSN 078-05-1121");
    assert_eq!(
        kinds(&scan),
        vec![FindingKind::Structural(StructuralKind::Ssn)]
    );
    assert!(matches!(scan.verdict(), Verdict::Flag { .. }));
}

#[test]
fn this_patients_own_identifiers_pass() {
    let index = index();
    assert_passes(
        &index,
        "I will call you at (415) 555-0101 if we get cut off.",
    );
    assert_passes(&index, "Confirming Alice Johnson, DOB 07/15/1982.");
    assert_passes(
        &index,
        "Johnson, Alice 1982-07-15 MRN0012345 alice.j@example.com",
    );
}

#[test]
fn a_value_this_patient_shares_with_another_passes() {
    let index = index();
    assert_passes(&index, "The family line 617.555.0142 works best.");
    // In someone else's consultation the same number belongs to two other
    // patients: blocked, both recorded for the audit.
    let scan = dlp::scan(
        &index,
        "The family line 617.555.0142 works best.",
        Side::Clinician,
        "pat-bob",
    )
    .unwrap();
    assert!(scan.verdict().is_block());
    assert_eq!(scan.other_patients_for_audit(), ["pat-alice", "pat-carol"]);
}

#[test]
fn patient_side_is_never_blocked_and_is_not_an_oracle() {
    let index = index();
    let pairs = [
        (
            "my husband's number is 212-555-0199",
            "my husband's number is 212-555-0198",
        ),
        ("is 078-05-1120 his SSN?", "is 078-05-1121 his SSN?"),
        ("Robert Miller 1970-03-04", "Robert Miller 1970-03-05"),
        ("bob.miller@example.net", "bob.mi11er@example.net"),
        ("MRN AB778812", "MRN AB778813"),
    ];
    for (someone_elses, nobodys) in pairs {
        let a = dlp::scan(&index, someone_elses, Side::Patient, ALICE).unwrap();
        let b = dlp::scan(&index, nobodys, Side::Patient, ALICE).unwrap();
        assert_eq!(a, b, "{someone_elses:?} vs {nobodys:?}");
        assert!(!a.verdict().is_block());
        assert!(a.other_patients_for_audit().is_empty());
    }
    // Structural findings reach the patient as notices, never as a block.
    let scan = dlp::scan(
        &index,
        "my card is 4111 1111 1111 1111",
        Side::Patient,
        ALICE,
    )
    .unwrap();
    match scan.verdict() {
        Verdict::Allow { notices } => {
            assert_eq!(notices.len(), 1);
            assert_eq!(
                notices[0].kind,
                FindingKind::Structural(StructuralKind::PaymentCard)
            );
            assert_eq!(notices[0].lesson, dlp::LESSON_STRUCTURAL);
        }
        other => panic!("patient side must allow: {other:?}"),
    }
}

#[test]
fn structural_patterns_are_flagged_on_the_clinician_side() {
    let index = index();
    for (text, kind) in [
        ("card 4111111111111111", StructuralKind::PaymentCard),
        ("card 4111-1111-1111-1111", StructuralKind::PaymentCard),
        ("amex 3782 822463 10005", StructuralKind::PaymentCard),
        ("NPI 1234567893", StructuralKind::Npi),
        ("DEA AB1234563", StructuralKind::Dea),
        ("DEA BJ6125341", StructuralKind::Dea),
        ("SSN 123-45-6789", StructuralKind::Ssn),
        ("social security no. 219099998", StructuralKind::Ssn),
    ] {
        let scan = clinician(&index, text);
        assert!(
            matches!(scan.verdict(), Verdict::Flag { .. }),
            "{text:?}: {scan:?}"
        );
        assert_eq!(
            kinds(&scan),
            vec![FindingKind::Structural(kind)],
            "{text:?}"
        );
    }
    for text in [
        "card 4111111111111112",
        "NPI 1234567890",
        "DEA AB1234567",
        "DEA BJ6125342",
        "SSN 000-12-3456",
        "SSN 666-12-3456",
        "SSN 912-12-3456",
        "SSN 123-00-4567",
        "SSN 123-45-0000",
        "order 219099998",
    ] {
        assert_passes(&index, text);
    }
}

#[test]
fn structural_validators_directly() {
    use consult::dlp::structural::*;
    assert!(is_valid_npi("1234567893"));
    assert!(!is_valid_npi("1234567890"));
    assert!(is_valid_card("4111111111111111"));
    assert!(!is_valid_card("4111111111111112"));
    assert!(is_valid_ssn("078-05-1120"));
    assert!(!is_valid_ssn("000-12-3456"));
    assert!(is_valid_dea("AB1234563"));
    assert!(!is_valid_dea("AB1234564"));
}

#[test]
fn a_block_also_lists_structural_findings_and_displays_no_value_or_id() {
    let index = index();
    let text = "Bob's card 4111 1111 1111 1111 and phone 212-555-0199";
    let scan = clinician(&index, text);
    assert!(scan.verdict().is_block());
    assert_eq!(
        kinds(&scan),
        vec![
            FindingKind::Structural(StructuralKind::PaymentCard),
            FindingKind::OtherPatient(IdentifierKind::Phone)
        ]
    );
    let shown = serde_json::to_string(scan.verdict()).unwrap();
    assert!(
        !shown.contains("pat-bob") && !shown.contains("0199") && !shown.contains("4111"),
        "{shown}"
    );
    assert!(shown.contains("\"verdict\":\"block\""), "{shown}");
    assert!(!format!("{scan:?}").contains("pat-bob"));
}

#[test]
fn hashing_is_keyed() {
    // The same identifiers indexed under another key: the index still finds
    // its own values, and its digests are unrelated to the first index's
    // (checked in the unit tests); here, an index under a different key
    // holding no patients with these values finds nothing.
    let other = IdentifierIndex::build(&IndexKey::new([0x43; 32]), patients()).unwrap();
    assert!(clinician(&other, "212-555-0199").verdict().is_block());
    let empty = IdentifierIndex::new(&key());
    assert_eq!(empty.patient_count(), 0);
    for text in [
        "212-555-0199",
        "Robert Miller 1970-03-04",
        "bob.miller@example.net",
    ] {
        assert!(!clinician(&empty, text).verdict().is_block());
    }
}

#[test]
fn add_remove_and_replace_keep_the_index_current() {
    let mut index = index();
    assert_eq!(index.patient_count(), 3);
    assert!(index.remove("pat-bob"));
    assert!(!index.remove("pat-bob"));
    assert_passes(&index, "call 212-555-0199");
    let mut bob = patients().remove(1);
    index.add(&bob).unwrap();
    assert!(clinician(&index, "call 212-555-0199").verdict().is_block());
    // Bob's phone changes: the old number is no longer his.
    bob.phones = vec!["212-555-0777".into()];
    index.add(&bob).unwrap();
    assert_eq!(index.patient_count(), 3);
    assert_passes(&index, "call 212-555-0199");
    assert!(clinician(&index, "call 212-555-0777").verdict().is_block());
    // Carol leaves; the family phone is Alice's alone, so Bob's clinician is
    // blocked only on Alice's account.
    index.remove("pat-carol");
    let scan = dlp::scan(&index, "617-555-0142", Side::Clinician, "pat-bob").unwrap();
    assert_eq!(scan.other_patients_for_audit(), ["pat-alice"]);
    assert!(index.memory_estimate_bytes() > 0);
}

#[test]
fn unnormalisable_values_are_skipped_and_counted() {
    let index = IdentifierIndex::build(
        &key(),
        [PatientIdentifiers {
            patient_id: "p".into(),
            phones: vec!["12345".into()],
            emails: vec!["not-an-email".into()],
            names: vec![person("Doe", "Jane")],
            birth_date: Some("03/04/1970".into()),
            ..Default::default()
        }],
    )
    .unwrap();
    assert_eq!(index.skipped_values(), 3);
    assert_eq!(index.value_count(), 0);
}

#[test]
fn oversized_texts_are_refused() {
    let index = index();
    let big = "a".repeat(dlp::MAX_TEXT_BYTES + 1);
    assert_eq!(
        dlp::scan(&index, &big, Side::Patient, ALICE).unwrap_err(),
        DlpError::TooLarge {
            len: dlp::MAX_TEXT_BYTES + 1,
            limit: dlp::MAX_TEXT_BYTES
        }
    );
    let small = ScanConfig {
        max_text_bytes: 10,
        ..ScanConfig::default()
    };
    assert!(dlp::scan_with(&index, "eleven byte", Side::Clinician, ALICE, &small).is_err());
    assert!(
        dlp::scan(
            &index,
            &"a".repeat(dlp::MAX_TEXT_BYTES),
            Side::Clinician,
            ALICE
        )
        .is_ok()
    );
}

#[test]
fn adversarial_texts_scan_in_linear_time() {
    let index = index();
    let budget = std::time::Duration::from_secs(10);
    for unit in [
        "1",
        "1-",
        "@",
        "a@b.",
        "March 3, 1970 ",
        "Ab Cd 1970-01-01 ",
        "9 ",
        "(+",
        "x1",
        "12345-",
        "(212) 555-0199 ",
        "Robert Miller 1970-03-04 ",
        "ab778812 ",
    ] {
        // A quarter of the limit keeps the debug-build test quick; the benchmark
        // measures full-size documents.
        let text = unit.repeat(dlp::MAX_TEXT_BYTES / 4 / unit.len());
        let started = std::time::Instant::now();
        let scan = dlp::scan(&index, &text, Side::Clinician, ALICE).unwrap();
        assert!(
            started.elapsed() < budget,
            "{unit:?} took {:?}",
            started.elapsed()
        );
        eprintln!(
            "{unit:?}: {:?}, {} findings",
            started.elapsed(),
            scan.verdict().findings().len()
        );
    }
}
