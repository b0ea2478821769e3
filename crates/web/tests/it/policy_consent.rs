//! Adversarial: a patient's `deny` provision (by actor, purpose, label or
//! class) removes exactly those resources from reads, searches, totals,
//! revincludes and `_has` for the actors it names, and nothing else; the
//! patient still sees everything; an inactive consent or a provision whose
//! period is not now has no effect; changing or deleting the consent takes
//! effect at once (the facts cache is invalidated by the write).
//!
//! Physicians D1 (`pr-d1`) and D2 (`pr-d2`) are both on A's active care team.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use serde_json::{Value, json};
use store::Role;

use crate::policy_leaks::{account, call_as, entries, put_ok, token};
use crate::{T, setup};

const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
const ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
const PSY_CODE: &str = "hidden-psy-code";

/// The resources of A the scenarios look at.
const UNIVERSE: [&str; 5] = [
    "Patient/pa",
    "Encounter/enc-a",
    "Observation/obs-psy",
    "Observation/obs-plain",
    "Condition/cond-a",
];

struct W {
    t: T,
    d1: String,
    d2: String,
    pat: String,
}

async fn world() -> W {
    let t = setup().await;
    for id in ["pr-d1", "pr-d2"] {
        put_ok(
            &t,
            &json!({"resourceType": "Practitioner", "id": id, "name": [{"family": id}]}),
        )
        .await;
    }
    for (id, family) in [("pa", "Consenting"), ("ph", "Otherone")] {
        let mut p = crate::patient(family);
        p["id"] = json!(id);
        put_ok(&t, &p).await;
    }
    put_ok(
        &t,
        &json!({"resourceType": "CareTeam", "id": "ct-a", "status": "active",
        "subject": {"reference": "Patient/pa"},
        "participant": [
            {"member": {"reference": "Practitioner/pr-d1"}},
            {"member": {"reference": "Practitioner/pr-d2"}}
        ]}),
    )
    .await;
    put_ok(
        &t,
        &json!({"resourceType": "Encounter", "id": "enc-a", "status": "finished",
            "class": {"system": ACT_CODE, "code": "AMB"},
            "subject": {"reference": "Patient/pa"},
            "period": {"start": "2025-01-02T09:00:00Z", "end": "2025-01-02T10:00:00Z"}}),
    )
    .await;
    let obs = |id: &str, code: &str, psy: bool| {
        let mut o = json!({"resourceType": "Observation", "id": id, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": "Patient/pa"},
            "encounter": {"reference": "Encounter/enc-a"},
            "effectiveDateTime": "2025-01-02T09:00:00Z"});
        if psy {
            o["meta"] = json!({"security": [{"system": ACT_CODE, "code": "PSY"}]});
        }
        o
    };
    put_ok(&t, &obs("obs-psy", PSY_CODE, true)).await;
    put_ok(&t, &obs("obs-plain", "8867-4", false)).await;
    put_ok(
        &t,
        &json!({"resourceType": "Condition", "id": "cond-a",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003"}]},
            "subject": {"reference": "Patient/pa"},
            "encounter": {"reference": "Encounter/enc-a"},
            "recordedDate": "2025-01-02"}),
    )
    .await;
    account(&t, "dr.one", Role::Physician, Some("pr-d1"), None).await;
    account(&t, "dr.two", Role::Physician, Some("pr-d2"), None).await;
    account(&t, "pat.a", Role::Patient, None, Some("pa")).await;
    let d1 = token(&t, "dr.one", false).await;
    let d2 = token(&t, "dr.two", false).await;
    let pat = token(&t, "pat.a", true).await;
    W { t, d1, d2, pat }
}

/// A patient-privacy Consent (base permit) with nested provisions.
fn consent(id: &str, patient: &str, status: &str, provisions: Value) -> Value {
    json!({"resourceType": "Consent", "id": id, "status": status,
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": format!("Patient/{patient}")},
        "dateTime": "2025-01-01T00:00:00Z",
        "policyRule": {"coding": [{"system": ACT_CODE, "code": "OPTIN"}]},
        "provision": {"type": "permit", "provision": provisions}})
}

fn actor(practitioner: &str) -> Value {
    json!([{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PRCP"}]},
        "reference": {"reference": format!("Practitioner/{practitioner}")}}])
}

/// Who sees what: every read, search, total, revinclude and `_has` of A's
/// data agrees with `visible` (the rest is hidden; a hidden read names F1
/// and `consent` when given).
async fn expect(w: &W, who: &str, tok: &str, hidden: &[&str], consent: Option<&str>) {
    expect_with(w, who, tok, hidden, consent, &[]).await;
}

async fn expect_with(
    w: &W,
    who: &str,
    tok: &str,
    hidden: &[&str],
    consent: Option<&str>,
    headers: &[(&str, &str)],
) {
    let t = &w.t;
    let visible: BTreeSet<String> = UNIVERSE
        .iter()
        .filter(|r| !hidden.contains(r))
        .map(|r| (*r).to_owned())
        .collect();
    let get = |uri: String| async move { call_as(t, "GET", &uri, tok, None, headers).await };
    for r in UNIVERSE {
        let resp = get(format!("/fhir/{r}")).await;
        if visible.contains(r) {
            assert_eq!(
                resp.status,
                StatusCode::OK,
                "{who} reads {r}: {}",
                resp.body
            );
        } else {
            assert_eq!(
                resp.status,
                StatusCode::FORBIDDEN,
                "LEAK: {who} reads {r} despite the consent: {}",
                resp.body
            );
            let d = resp.diagnostics();
            if let Some(c) = consent {
                assert!(d.contains("F1"), "{who} {r}: {d}");
                assert!(d.contains(c), "{who} {r}: the consent is named: {d}");
                assert!(d.contains("L-CONSENT"), "{who} {r}: {d}");
            }
            assert!(!d.contains(PSY_CODE), "{d}");
        }
    }
    let of = |ty: &str| -> BTreeSet<String> {
        visible
            .iter()
            .filter(|r| r.starts_with(&format!("{ty}/")))
            .cloned()
            .collect()
    };
    // Searches and their totals.
    for (ty, q) in [
        ("Patient", "Patient?_id=pa"),
        ("Patient", "Patient?family=Consenting"),
        ("Encounter", "Encounter?patient=Patient/pa"),
        ("Observation", "Observation?patient=Patient/pa"),
        ("Observation", "Observation?encounter=Encounter/enc-a"),
        ("Observation", "Observation?date=2025-01-02"),
        ("Condition", "Condition?patient=Patient/pa"),
    ] {
        let resp = get(format!("/fhir/{q}&_total=accurate")).await;
        assert_eq!(resp.status, StatusCode::OK, "{who} {q}: {}", resp.body);
        let got = entries(&resp.body, "match");
        let want = of(ty);
        assert_eq!(got, want, "{who} {q}: {}", resp.body);
        assert_eq!(resp.body["total"], want.len(), "LEAK {who} {q}: total");
        let resp = get(format!("/fhir/{q}&_summary=count")).await;
        assert_eq!(resp.body["total"], want.len(), "LEAK {who} {q}: count");
    }
    // PSY code searched directly.
    let resp = get(format!("/fhir/Observation?code={PSY_CODE}&_total=accurate")).await;
    let psy_visible = visible.contains("Observation/obs-psy");
    assert_eq!(
        resp.body["total"],
        usize::from(psy_visible),
        "{who}: {}",
        resp.body
    );
    // Revincludes into visible resources only pull in visible ones.
    let inc_of = |tys: &[&str]| -> BTreeSet<String> { tys.iter().flat_map(|ty| of(ty)).collect() };
    for (q, base, incs) in [
        (
            "Encounter?_id=enc-a&_revinclude=Observation:encounter&_revinclude=Condition:encounter",
            "Encounter/enc-a",
            &["Observation", "Condition"][..],
        ),
        (
            "Patient?_id=pa&_revinclude=Observation:subject&_revinclude=Condition:patient&_revinclude=Encounter:patient",
            "Patient/pa",
            &["Observation", "Condition", "Encounter"][..],
        ),
        (
            "Observation?patient=Patient/pa&_include=Observation:encounter&_include=Observation:patient",
            "",
            &["Encounter", "Patient"][..],
        ),
    ] {
        let resp = get(format!("/fhir/{q}")).await;
        assert_eq!(resp.status, StatusCode::OK, "{who} {q}: {}", resp.body);
        let got = entries(&resp.body, "include");
        let want = if base.is_empty() {
            if of("Observation").is_empty() {
                BTreeSet::new()
            } else {
                inc_of(incs)
            }
        } else if visible.contains(base) {
            inc_of(incs)
        } else {
            BTreeSet::new()
        };
        assert_eq!(got, want, "LEAK {who} {q}: {}", resp.body);
    }
    // _has cannot tell whether the hidden resource exists.
    for code in [PSY_CODE, "8867-4"] {
        let resp = get(format!(
            "/fhir/Patient?_has:Observation:patient:code={code}&_total=accurate"
        ))
        .await;
        let obs = if code == PSY_CODE {
            "Observation/obs-psy"
        } else {
            "Observation/obs-plain"
        };
        let want = usize::from(visible.contains(obs) && visible.contains("Patient/pa"));
        assert_eq!(
            resp.body["total"], want,
            "LEAK {who} _has {code}: {}",
            resp.body
        );
    }
}

async fn set(w: &W, c: &Value) {
    put_ok(&w.t, c).await;
}

async fn remove(w: &W, id: &str) {
    let r = w.t.delete(&format!("/fhir/Consent/{id}")).await;
    assert!(r.status.is_success(), "{}", r.body);
}

const ALL_HIDDEN: [&str; 5] = UNIVERSE;

#[tokio::test]
async fn without_a_consent_both_physicians_and_the_patient_see_everything() {
    let w = world().await;
    expect(&w, "D1", &w.d1, &[], None).await;
    expect(&w, "D2", &w.d2, &[], None).await;
    expect(&w, "patient", &w.pat, &[], None).await;
}

#[tokio::test]
async fn a_label_denial_for_one_actor_hides_only_that_labelled_data_from_only_that_actor() {
    let w = world().await;
    set(
        &w,
        &consent(
            "cons-psy",
            "pa",
            "active",
            json!([{"type": "deny", "actor": actor("pr-d1"),
                "securityLabel": [{"system": ACT_CODE, "code": "PSY"}]}]),
        ),
    )
    .await;
    expect(&w, "D1", &w.d1, &["Observation/obs-psy"], Some("cons-psy")).await;
    // With the purpose declared, the same.
    expect_with(
        &w,
        "D1 (TREAT)",
        &w.d1,
        &["Observation/obs-psy"],
        Some("cons-psy"),
        &[("x-purpose-of-use", "TREAT")],
    )
    .await;
    expect(&w, "D2", &w.d2, &[], None).await;
    expect(&w, "patient", &w.pat, &[], None).await;

    // Deleting the consent restores D1's access at once.
    remove(&w, "cons-psy").await;
    expect(&w, "D1 after delete", &w.d1, &[], None).await;
}

#[tokio::test]
async fn a_purpose_denial_blocks_every_actor_for_that_purpose_but_not_the_patient() {
    let w = world().await;
    let c = consent(
        "cons-treat",
        "pa",
        "active",
        json!([{"type": "deny", "purpose": [{"system": ACT_REASON, "code": "TREAT"}]}]),
    );
    set(&w, &c).await;
    for (who, tok) in [("D1", &w.d1), ("D2", &w.d2)] {
        // Defaulted TREAT and declared TREAT alike.
        expect(&w, who, tok, &ALL_HIDDEN, Some("cons-treat")).await;
        expect_with(
            &w,
            who,
            tok,
            &ALL_HIDDEN,
            Some("cons-treat"),
            &[("x-purpose-of-use", "TREAT")],
        )
        .await;
    }
    expect(&w, "patient", &w.pat, &[], None).await;

    // Made inactive by an update: access is back at once.
    let mut inactive = c.clone();
    inactive["status"] = json!("inactive");
    set(&w, &inactive).await;
    expect(&w, "D1 after inactive", &w.d1, &[], None).await;
    expect(&w, "D2 after inactive", &w.d2, &[], None).await;
    // Active again, then deleted.
    set(&w, &c).await;
    expect(&w, "D2 reactivated", &w.d2, &ALL_HIDDEN, Some("cons-treat")).await;
    remove(&w, "cons-treat").await;
    expect(&w, "D2 after delete", &w.d2, &[], None).await;
}

#[tokio::test]
async fn a_denial_for_another_purpose_or_actor_changes_nothing() {
    let w = world().await;
    // D2 is denied for payment only: D2's care (TREAT) is unaffected, and so is D1.
    set(
        &w,
        &consent(
            "cons-pay",
            "pa",
            "active",
            json!([{"type": "deny", "actor": actor("pr-d2"),
                "purpose": [{"system": ACT_REASON, "code": "HPAYMT"}]}]),
        ),
    )
    .await;
    expect(&w, "D2", &w.d2, &[], None).await;
    expect(&w, "D1", &w.d1, &[], None).await;
    // Another patient's consent that denies everything does not touch A.
    set(
        &w,
        &consent("cons-other", "ph", "active", json!([{"type": "deny"}])),
    )
    .await;
    expect(&w, "D1", &w.d1, &[], None).await;
    expect(&w, "D2", &w.d2, &[], None).await;
}

#[tokio::test]
async fn a_class_denial_hides_only_that_type() {
    let w = world().await;
    set(
        &w,
        &consent(
            "cons-cond",
            "pa",
            "active",
            json!([{"type": "deny",
                "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "Condition"}]}]),
        ),
    )
    .await;
    for (who, tok) in [("D1", &w.d1), ("D2", &w.d2)] {
        expect(&w, who, tok, &["Condition/cond-a"], Some("cons-cond")).await;
    }
    expect(&w, "patient", &w.pat, &[], None).await;
}

#[tokio::test]
async fn an_inactive_consent_or_a_provision_outside_its_period_has_no_effect() {
    let w = world().await;
    let deny_d1 = |period: Option<Value>| {
        let mut p = json!({"type": "deny", "actor": actor("pr-d1")});
        if let Some(per) = period {
            p["period"] = per;
        }
        json!([p])
    };
    // Inactive from the start.
    set(&w, &consent("cons-x", "pa", "inactive", deny_d1(None))).await;
    expect(&w, "D1 (inactive)", &w.d1, &[], None).await;
    // Active, but its provision held in 2020 only.
    set(
        &w,
        &consent(
            "cons-x",
            "pa",
            "active",
            deny_d1(Some(json!({"start": "2020-01-01", "end": "2020-12-31"}))),
        ),
    )
    .await;
    expect(&w, "D1 (past provision)", &w.d1, &[], None).await;
    // Active, its provision starting in the far future.
    set(
        &w,
        &consent(
            "cons-x",
            "pa",
            "active",
            deny_d1(Some(json!({"start": "2999-01-01"}))),
        ),
    )
    .await;
    expect(&w, "D1 (future provision)", &w.d1, &[], None).await;
    // The same provision now in force: everything of A hidden from D1 only.
    set(
        &w,
        &consent(
            "cons-x",
            "pa",
            "active",
            deny_d1(Some(json!({"start": "2020-01-01"}))),
        ),
    )
    .await;
    expect(&w, "D1 (in force)", &w.d1, &ALL_HIDDEN, Some("cons-x")).await;
    expect(&w, "D2", &w.d2, &[], None).await;
    expect(&w, "patient", &w.pat, &[], None).await;
    // A draft or rejected consent: no effect either.
    for status in ["draft", "rejected", "entered-in-error"] {
        set(&w, &consent("cons-x", "pa", status, deny_d1(None))).await;
        expect(&w, status, &w.d1, &[], None).await;
    }
}
