//! `Patient/[id]/$everything` as the access policy's `export`: who may take
//! a patient's record away, and exactly what they get.
//!
//! Patient A (`pa`) has a care team with physicians D1 (`pr-d1`) and D2
//! (`pr-d2`), a PSY-labelled and a plain Observation, a Condition, a finished
//! Encounter, a visit booked for tomorrow (the front desk's relationship) and
//! an encounter that ended yesterday (billing's). Patient B (`pb`) has a
//! record of their own that no export of A may show. `dr.far` (`pr-far`)
//! cares for nobody.
//!
//! Every answer is compared as a set of references with what the rule book
//! says, and every resource with what a read of it returns.

use std::collections::BTreeSet;

use app::{NewAccount, Principal, SignInStep};
use axum::http::StatusCode;
use serde_json::{Value, json};
use store::Role;

use crate::policy_leaks::{call_as, get_as, put_ok};
use crate::{Resp, T};

const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
const ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
const PASSWORD: &str = "quiet lantern over harbour 48";
const SESSION: &str = "__Host-vigil_session";
const BASE: &str = "http://vigil.test/fhir";

/// A's whole compartment.
const ALL_A: [&str; 9] = [
    "Patient/pa",
    "CareTeam/ct-a",
    "Encounter/enc-a",
    "Encounter/enc-recent",
    "Appointment/appt-a",
    "Observation/obs-psy",
    "Observation/obs-plain",
    "Condition/cond-a",
    "Consent/cons-base",
];

/// Strings only B's record holds.
const B_MARKERS: [&str; 3] = ["Otherone", "obs-b", "MRN-Otherone"];

struct W {
    t: T,
    d1: String,
    d2: String,
    far: String,
    desk: String,
    bill: String,
    pat: String,
    pat_b: String,
}

fn narrative(s: &str) -> Value {
    json!({"status": "generated", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{s}</div>")})
}

fn instant(offset_secs: i64) -> String {
    let now = model::Timestamp::from_offset_datetime(time::OffsetDateTime::now_utc());
    model::Timestamp(now.0 + offset_secs * 1_000_000).to_fhir_instant()
}

/// An account that signs in with a password (for the pages) and takes
/// operator-issued tokens (for the API).
async fn account(t: &T, username: &str, role: Role, pr: Option<&str>, patient: Option<&str>) {
    t.vigil
        .create_account(
            &Principal::Operator,
            NewAccount {
                username: username.into(),
                role,
                practitioner: pr.map(|p| model::ResourceId::new(p).unwrap()),
                patient: patient.map(|p| model::ResourceId::new(p).unwrap()),
                display_name: Some(format!("{username} (test)")),
                email: None,
            },
            Some(PASSWORD),
        )
        .await
        .unwrap();
}

async fn token(t: &T, username: &str, scopes: &str) -> String {
    t.vigil
        .issue_operator_token(username, scopes, 3600, "http://vigil.test", BASE)
        .await
        .unwrap()
}

async fn world_with(config: app::Config) -> W {
    let t = crate::setup_full(
        config,
        std::sync::Arc::new(model::SystemClock),
        Some(app::IdentityConfig {
            workforce_mfa: false,
            ..app::IdentityConfig::default()
        }),
    )
    .await;
    for id in ["pr-d1", "pr-d2", "pr-far"] {
        put_ok(
            &t,
            &json!({"resourceType": "Practitioner", "id": id, "name": [{"family": id}]}),
        )
        .await;
    }
    for (id, family) in [("pa", "Exporting"), ("pb", "Otherone")] {
        let mut p = crate::patient(family);
        p["id"] = json!(id);
        p["text"] = narrative("A patient");
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
            "reasonCode": [{"text": "a reason the front desk must not see"}],
            "period": {"start": "2025-01-02T09:00:00Z", "end": "2025-01-02T10:00:00Z"}}),
    )
    .await;
    put_ok(
        &t,
        &json!({"resourceType": "Encounter", "id": "enc-recent", "status": "finished",
            "class": {"system": ACT_CODE, "code": "AMB"},
            "subject": {"reference": "Patient/pa"},
            "period": {"start": instant(-2 * 86_400), "end": instant(-86_400)}}),
    )
    .await;
    put_ok(
        &t,
        &json!({"resourceType": "Appointment", "id": "appt-a", "status": "booked",
            "start": instant(86_400), "end": instant(86_400 + 1800),
            "participant": [{"actor": {"reference": "Patient/pa"}, "status": "accepted"}]}),
    )
    .await;
    let obs = |id: &str, patient: &str, code: &str, psy: bool| {
        let mut o = json!({"resourceType": "Observation", "id": id, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": format!("Patient/{patient}")},
            "effectiveDateTime": "2025-01-02T09:00:00Z",
            "text": narrative("An observation")});
        if psy {
            o["meta"] = json!({"security": [{"system": ACT_CODE, "code": "PSY"}]});
        }
        o
    };
    put_ok(&t, &obs("obs-psy", "pa", "44249-1", true)).await;
    put_ok(&t, &obs("obs-plain", "pa", "8867-4", false)).await;
    put_ok(&t, &obs("obs-b", "pb", "8867-4", false)).await;
    put_ok(
        &t,
        &json!({"resourceType": "Condition", "id": "cond-a",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003"}]},
            "subject": {"reference": "Patient/pa"},
            "recordedDate": "2025-01-02"}),
    )
    .await;
    // A consent that permits everything (the base the tests change).
    set_consent(&t, json!([])).await;
    account(&t, "dr.one", Role::Physician, Some("pr-d1"), None).await;
    account(&t, "dr.two", Role::Physician, Some("pr-d2"), None).await;
    account(&t, "dr.far", Role::Physician, Some("pr-far"), None).await;
    account(&t, "fd.desk", Role::FrontDesk, None, None).await;
    account(&t, "bill.ing", Role::Billing, None, None).await;
    account(&t, "pat.a", Role::Patient, None, Some("pa")).await;
    account(&t, "pat.b", Role::Patient, None, Some("pb")).await;
    let workforce = "user/*.cruds";
    W {
        d1: token(&t, "dr.one", workforce).await,
        d2: token(&t, "dr.two", workforce).await,
        far: token(&t, "dr.far", workforce).await,
        desk: token(&t, "fd.desk", workforce).await,
        bill: token(&t, "bill.ing", workforce).await,
        pat: token(&t, "pat.a", "patient/*.rs").await,
        pat_b: token(&t, "pat.b", "patient/*.rs").await,
        t,
    }
}

async fn world() -> W {
    world_with(app::Config::default()).await
}

/// A patient-privacy Consent of A (base permit) with nested provisions.
fn consent(id: &str, provisions: Value) -> Value {
    let provision = if provisions.as_array().is_some_and(Vec::is_empty) {
        json!({"type": "permit"})
    } else {
        json!({"type": "permit", "provision": provisions})
    };
    json!({"resourceType": "Consent", "id": id, "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "Patient/pa"},
        "dateTime": "2025-01-01T00:00:00Z",
        "policyRule": {"coding": [{"system": ACT_CODE, "code": "OPTIN"}]},
        "provision": provision})
}

/// Replaces A's consent (`cons-base`) with one of these provisions.
async fn set_consent(t: &T, provisions: Value) {
    put_ok(t, &consent("cons-base", provisions)).await;
}

/// A's consent denies PSY-labelled data to D1.
async fn deny_psy_to_d1(w: &W) {
    set_consent(
        &w.t,
        json!([{"type": "deny", "actor": actor("pr-d1"),
                "securityLabel": [{"system": ACT_CODE, "code": "PSY"}]}]),
    )
    .await;
}

fn actor(practitioner: &str) -> Value {
    json!([{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PRCP"}]},
        "reference": {"reference": format!("Practitioner/{practitioner}")}}])
}

fn set(xs: &[&str]) -> BTreeSet<String> {
    xs.iter().map(|s| (*s).to_owned()).collect()
}

fn all_but(hidden: &[&str]) -> BTreeSet<String> {
    ALL_A
        .iter()
        .filter(|r| !hidden.contains(r))
        .map(|r| (*r).to_owned())
        .collect()
}

/// The references of an export Bundle, after checking its shape: a
/// searchset whose total is its number of entries, every entry a match
/// with its full URL.
fn exported(r: &Resp) -> BTreeSet<String> {
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let ctype = r
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(ctype.starts_with("application/fhir+json"), "{ctype}");
    assert_eq!(r.body["resourceType"], "Bundle");
    assert_eq!(r.body["type"], "searchset");
    let entries = r.body["entry"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        r.body["total"],
        entries.len(),
        "total = entries: {}",
        r.body
    );
    let mut out = BTreeSet::new();
    for e in &entries {
        let reference = format!(
            "{}/{}",
            e["resource"]["resourceType"].as_str().unwrap(),
            e["resource"]["id"].as_str().unwrap()
        );
        assert_eq!(e["fullUrl"], format!("{BASE}/{reference}"), "{e}");
        assert_eq!(e["search"]["mode"], "match", "{e}");
        assert!(out.insert(reference.clone()), "{reference} twice");
    }
    // The Patient, when its type was asked for, comes first.
    if let Some(i) = entries
        .iter()
        .position(|e| e["resource"]["resourceType"] == "Patient")
    {
        assert_eq!(i, 0, "the Patient comes first: {}", r.body);
    }
    let text = r.body.to_string();
    for m in B_MARKERS {
        assert!(!text.contains(m), "LEAK of B's record ({m}): {text}");
    }
    out
}

async fn export(w: &W, tok: &str, query: &str) -> Resp {
    get_as(&w.t, &format!("/fhir/Patient/pa/$everything{query}"), tok).await
}

async fn audit_size(t: &T) -> u64 {
    store::AuditStore::audit_head(t.store.as_ref())
        .await
        .unwrap()
        .size
}

/// The one entry a request left (and that it left exactly one).
async fn only_entry(t: &T, before: u64) -> app::trail::Entry {
    assert_eq!(audit_size(t).await, before + 1, "exactly one audit entry");
    let raw = t.vigil.audit_raw_entries(before, 1).await.unwrap();
    t.vigil.audit_open(&raw[0].1).unwrap()
}

/// A refusal by the access policy: 403, the rule and reason, nothing of the record.
fn refused(r: &Resp, rule: &str, who: &str) {
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{who}: {}", r.body);
    let d = r.diagnostics();
    assert!(d.contains(&format!("denied by rule {rule}")), "{who}: {d}");
    let text = r.body.to_string();
    for leak in [
        "Exporting",
        "MRN-Exporting",
        "obs-psy",
        "obs-plain",
        "cond-a",
    ] {
        assert!(!text.contains(leak), "LEAK {who} ({leak}): {text}");
    }
}

#[tokio::test]
async fn a_clinician_on_the_care_team_exports_the_whole_compartment_as_reads_return_it() {
    let w = world().await;
    let t = &w.t;
    let before = audit_size(t).await;
    let r = export(&w, &w.d1, "").await;
    let got = exported(&r);
    assert_eq!(got, all_but(&[]));
    // One entry, naming the patient and every reference returned, with the
    // deciding rule and purpose; its receipt is on the answer.
    let e = only_entry(t, before).await;
    assert_eq!(
        (e.subtype.as_str(), e.action, e.outcome),
        ("export", app::trail::Action::E, 0)
    );
    assert_eq!(e.patients, vec!["pa".to_owned()]);
    assert_eq!(e.resources.iter().cloned().collect::<BTreeSet<_>>(), got);
    assert_eq!(e.resources.len(), got.len());
    let note = e.policy.expect("the policy note");
    assert_eq!(note.policies, vec!["P6".to_owned()]);
    assert_eq!(note.purpose.as_deref(), Some("TREAT"));
    assert!(note.grants.is_empty());
    let receipt = r
        .headers
        .get("vigil-audit-receipt")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        receipt.starts_with(&format!("index={before}; ")),
        "{receipt}"
    );
    // Every resource is what a read of it returns (no export rule masks).
    for entry in r.body["entry"].as_array().unwrap() {
        let res = &entry["resource"];
        let uri = format!(
            "/fhir/{}/{}",
            res["resourceType"].as_str().unwrap(),
            res["id"].as_str().unwrap()
        );
        let read = get_as(t, &uri, &w.d1).await;
        assert_eq!(read.status, StatusCode::OK, "{uri}");
        assert_eq!(&read.body, res, "{uri}: export and read differ");
    }
    // The unrestricted backend service gets the same set.
    assert_eq!(exported(&t.get("/fhir/Patient/pa/$everything").await), got);
    // The patient's access log says what happened.
    let pat = t.vigil.authenticate_bearer(&w.pat, BASE).await.unwrap();
    let log = t.vigil.my_access_log(&pat, None, 100).await.unwrap();
    assert!(
        log.iter()
            .any(|l| l.what.starts_with("exported") && l.succeeded),
        "{log:?}"
    );
}

#[tokio::test]
async fn masks_of_an_export_rule_apply_to_every_exported_resource_and_not_to_reads() {
    let w = world().await;
    let t = &w.t;
    let text = t
        .vigil
        .policy_current(&Principal::Operator)
        .await
        .unwrap()
        .text;
    let p6 = "@reason(\"a clinician caring for the patient may export and share their record\")";
    assert!(
        text.contains(p6),
        "the shipped P6 changed: update this test"
    );
    let masked = text.replace(p6, &format!("{p6}\n@mask(\"text,identifier\")"));
    t.vigil
        .policy_update(
            &Principal::Operator,
            &masked,
            "mask narratives on export",
            true,
        )
        .await
        .unwrap();
    let r = export(&w, &w.d1, "").await;
    assert_eq!(exported(&r), all_but(&[]));
    for entry in r.body["entry"].as_array().unwrap() {
        let res = &entry["resource"];
        let uri = format!(
            "/fhir/{}/{}",
            res["resourceType"].as_str().unwrap(),
            res["id"].as_str().unwrap()
        );
        let mut read = get_as(t, &uri, &w.d1).await.body;
        // The export is the read with exactly the masked elements removed,
        // marked REDACTED as a masked read is.
        let obj = read.as_object_mut().unwrap();
        let removed = obj.remove("text").is_some() | obj.remove("identifier").is_some();
        let mut got = res.clone();
        if removed {
            let security = got["meta"]["security"].as_array_mut().unwrap();
            let mark = security.pop().unwrap();
            assert_eq!(mark["code"], "REDACTED", "{uri}: {res}");
            if security.is_empty() {
                got["meta"].as_object_mut().unwrap().remove("security");
            }
        }
        assert_eq!(read, got, "{uri}");
    }
    let patient = &r.body["entry"][0]["resource"];
    assert!(patient.get("identifier").is_none() && patient.get("text").is_none());
    // Reads (P4) are not masked.
    let read = get_as(t, "/fhir/Patient/pa", &w.d1).await;
    assert_eq!(read.body["identifier"][0]["value"], "MRN-Exporting");
    // The patient's own export (P3) is not masked either.
    let mine = export(&w, &w.pat, "").await;
    assert_eq!(
        mine.body["entry"][0]["resource"]["identifier"][0]["value"],
        "MRN-Exporting"
    );
}

#[tokio::test]
async fn a_label_denial_removes_exactly_that_data_for_exactly_that_actor() {
    let w = world().await;
    deny_psy_to_d1(&w).await;
    assert_eq!(
        exported(&export(&w, &w.d1, "").await),
        all_but(&["Observation/obs-psy"])
    );
    // The read agrees: it names the consent.
    let r = get_as(&w.t, "/fhir/Observation/obs-psy", &w.d1).await;
    refused(&r, "F1", "D1 reads obs-psy");
    // D2, not named by the provision, and the patient: everything.
    assert_eq!(exported(&export(&w, &w.d2, "").await), all_but(&[]));
    assert_eq!(exported(&export(&w, &w.pat, "").await), all_but(&[]));
    // Nothing of the hidden resource shows in D1's Bundle, and its audit
    // entry does not name it.
    let before = audit_size(&w.t).await;
    let r = export(&w, &w.d1, "").await;
    assert!(!r.body.to_string().contains("obs-psy"), "{}", r.body);
    assert!(!r.body.to_string().contains("44249-1"), "{}", r.body);
    let e = only_entry(&w.t, before).await;
    assert!(!e.resources.contains(&"Observation/obs-psy".to_owned()));
    // Removing the provision gives it back at once.
    set_consent(&w.t, json!([])).await;
    assert_eq!(exported(&export(&w, &w.d1, "").await), all_but(&[]));
}

#[tokio::test]
async fn a_purpose_denial_removes_exactly_that_data_for_that_purpose() {
    let w = world().await;
    // D1 may not have A's Observations for treatment.
    set_consent(&w.t, json!([{"type": "deny", "actor": actor("pr-d1"),
                "purpose": [{"system": ACT_REASON, "code": "TREAT"}],
                "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "Observation"}]}])).await;
    let hidden = ["Observation/obs-psy", "Observation/obs-plain"];
    assert_eq!(exported(&export(&w, &w.d1, "").await), all_but(&hidden));
    // Declared, the same.
    let r = call_as(
        &w.t,
        "GET",
        "/fhir/Patient/pa/$everything",
        &w.d1,
        None,
        &[("x-purpose-of-use", "TREAT")],
    )
    .await;
    assert_eq!(exported(&r), all_but(&hidden));
    assert_eq!(exported(&export(&w, &w.d2, "").await), all_but(&[]));
    assert_eq!(exported(&export(&w, &w.pat, "").await), all_but(&[]));

    // A denial for another purpose changes nothing.
    set_consent(
        &w.t,
        json!([{"type": "deny", "actor": actor("pr-d1"),
                "purpose": [{"system": ACT_REASON, "code": "HPAYMT"}]}]),
    )
    .await;
    assert_eq!(exported(&export(&w, &w.d1, "").await), all_but(&[]));

    // A purpose denial of everything takes the Patient too: the whole
    // export is refused, naming the consent, for D1 only.
    set_consent(
        &w.t,
        json!([{"type": "deny", "actor": actor("pr-d1"),
                "purpose": [{"system": ACT_REASON, "code": "TREAT"}]}]),
    )
    .await;
    let before = audit_size(&w.t).await;
    let r = export(&w, &w.d1, "").await;
    refused(&r, "F1", "D1 under a consent denying treatment");
    assert!(r.diagnostics().contains("Consent/cons-base"), "{}", r.body);
    let e = only_entry(&w.t, before).await;
    assert_eq!((e.outcome, e.subtype.as_str()), (4, "export"));
    assert_eq!(e.patients, vec!["pa".to_owned()]);
    assert_eq!(e.policy.unwrap().policies, vec!["F1".to_owned()]);
    assert_eq!(exported(&export(&w, &w.d2, "").await), all_but(&[]));
}

#[tokio::test]
async fn without_a_relationship_the_export_is_refused_and_audited() {
    let w = world().await;
    let t = &w.t;
    let before = audit_size(t).await;
    let r = export(&w, &w.far, "").await;
    refused(&r, "default-deny", "dr.far");
    let d = r.diagnostics();
    assert!(d.contains("missing: "), "{d}");
    assert!(d.contains("lesson: L-RELATIONSHIP"), "{d}");
    let e = only_entry(t, before).await;
    assert_eq!((e.outcome, e.subtype.as_str()), (4, "export"));
    assert_eq!(e.patients, vec!["pa".to_owned()]);
    assert_eq!(e.resources, vec!["Patient/pa".to_owned()]);
    assert!(e.agent.account.is_some());
    assert_eq!(e.policy.unwrap().policies, vec!["default-deny".to_owned()]);
    // Narrowing or filtering does not help, and a bad parameter is still a 400.
    for q in [
        "?_type=Observation",
        "?_since=2000-01-01T00:00:00Z",
        "?_type=Patient",
    ] {
        refused(&export(&w, &w.far, q).await, "default-deny", q);
    }
    assert_eq!(export(&w, &w.far, "?_type=Nope").await.status, 400);
    // An unknown patient is a 404, as for a read.
    let r = get_as(t, "/fhir/Patient/nobody/$everything", &w.d1).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    assert_eq!(
        get_as(t, "/fhir/Patient/nobody", &w.d1).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn break_the_glass_opens_reads_but_never_an_export() {
    let w = world().await;
    let t = &w.t;
    let far = t.vigil.authenticate_bearer(&w.far, BASE).await.unwrap();
    let g = t
        .vigil
        .break_glass(
            &far,
            &app::emergency::BreakGlassRequest {
                patient: model::ResourceId::new("pa").unwrap(),
                reason: "ETREAT".into(),
                justification: "unconscious in the emergency room, no history".into(),
                minutes: Some(60),
            },
            true,
        )
        .await
        .unwrap();
    // P8: the read is allowed under the grant...
    let r = get_as(t, "/fhir/Observation/obs-psy", &w.far).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // ... the export is not, with or without ETREAT declared.
    let before = audit_size(t).await;
    let r = export(&w, &w.far, "").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(!r.body.to_string().contains("Exporting"), "{}", r.body);
    let e = only_entry(t, before).await;
    assert_eq!(e.outcome, 4);
    let r = call_as(
        t,
        "GET",
        "/fhir/Patient/pa/$everything",
        &w.far,
        None,
        &[("x-purpose-of-use", "ETREAT")],
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(!r.body.to_string().contains("Exporting"), "{}", r.body);
    assert!(!g.id.is_empty());
}

#[tokio::test]
async fn the_front_desk_and_billing_read_what_their_rules_allow_but_export_nothing() {
    let w = world().await;
    let t = &w.t;
    for (who, tok) in [("front desk", &w.desk), ("billing", &w.bill)] {
        // Their relationship holds: they read the Patient...
        let r = get_as(t, "/fhir/Patient/pa", tok).await;
        assert_eq!(r.status, StatusCode::OK, "{who}: {}", r.body);
        // ... but no rule lets them export.
        let r = export(&w, tok, "").await;
        refused(&r, "default-deny", who);
        let r = export(&w, tok, "?_type=Appointment,Encounter").await;
        refused(&r, "default-deny", who);
    }
}

#[tokio::test]
async fn a_patient_exports_all_of_their_own_record_and_nothing_of_another() {
    let w = world().await;
    let t = &w.t;
    // Even with a consent that denies everyone everything (P3, F1 exempt).
    set_consent(t, json!([{"type": "deny"}])).await;
    let before = audit_size(t).await;
    assert_eq!(exported(&export(&w, &w.pat, "").await), all_but(&[]));
    let e = only_entry(t, before).await;
    let note = e.policy.unwrap();
    assert_eq!(note.policies, vec!["P3".to_owned()]);
    assert_eq!(note.purpose.as_deref(), Some("PATRQT"));
    // B's own export is B's record only.
    let r = get_as(t, "/fhir/Patient/pb/$everything", &w.pat_b).await;
    assert_eq!(r.status, StatusCode::OK);
    let refs: BTreeSet<String> = r.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}/{}",
                e["resource"]["resourceType"].as_str().unwrap(),
                e["resource"]["id"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(refs, set(&["Patient/pb", "Observation/obs-b"]));
    // B cannot export A's record, and the refusal is recorded.
    let before = audit_size(t).await;
    let r = get_as(t, "/fhir/Patient/pa/$everything", &w.pat_b).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(!r.body.to_string().contains("Exporting"), "{}", r.body);
    let e = only_entry(t, before).await;
    assert_eq!((e.outcome, e.subtype.as_str()), (4, "export"));
    // Nor can a patient-scoped app (a patient's own session scopes) reach
    // another patient's compartment with `_type`.
    let r = get_as(
        t,
        "/fhir/Patient/pa/$everything?_type=Observation",
        &w.pat_b,
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
}

#[tokio::test]
async fn type_and_since_filter_and_anything_else_is_refused() {
    let w = world().await;
    let t = &w.t;
    assert_eq!(
        exported(&export(&w, &w.d1, "?_type=Observation").await),
        set(&["Observation/obs-psy", "Observation/obs-plain"])
    );
    assert_eq!(
        exported(&export(&w, &w.d1, "?_type=Observation,Condition&_type=Patient").await),
        set(&[
            "Patient/pa",
            "Observation/obs-psy",
            "Observation/obs-plain",
            "Condition/cond-a"
        ])
    );
    // A type A has nothing of: an empty searchset (the Patient still decides).
    let r = export(&w, &w.d1, "?_type=MedicationRequest").await;
    assert!(exported(&r).is_empty());
    assert_eq!(r.body["total"], 0);
    // _since: only what changed at or after it.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let mut cond = t.get("/fhir/Condition/cond-a").await.body;
    cond["recordedDate"] = json!("2025-01-03");
    put_ok(t, &cond).await;
    let changed = t.get("/fhir/Condition/cond-a").await.body["meta"]["lastUpdated"]
        .as_str()
        .unwrap()
        .to_owned();
    let since = format!("?_since={}", crate::policy_leaks::enc(&changed));
    assert_eq!(
        exported(&export(&w, &w.d1, &since).await),
        set(&["Condition/cond-a"])
    );
    // The same instant written with an offset (encoded, and with an
    // unencoded `+` that arrives as a space).
    let ts = time::OffsetDateTime::parse(&changed, &time::format_description::well_known::Rfc3339)
        .unwrap()
        .to_offset(time::UtcOffset::from_hms(2, 0, 0).unwrap());
    let with_offset = ts
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    assert!(with_offset.contains("+02:00"), "{with_offset}");
    for q in [
        format!("?_since={}", crate::policy_leaks::enc(&with_offset)),
        format!("?_since={with_offset}"),
    ] {
        assert_eq!(
            exported(&export(&w, &w.d1, &q).await),
            set(&["Condition/cond-a"]),
            "{q}"
        );
    }
    assert!(exported(&export(&w, &w.d1, "?_since=2999-01-01T00:00:00Z").await).is_empty());
    assert_eq!(
        exported(&export(&w, &w.d1, "?_since=2000-01-01T00:00:00Z").await),
        all_but(&[])
    );
    // _format is the API's, not the export's.
    assert_eq!(
        exported(&export(&w, &w.d1, "?_format=json&_type=Condition").await),
        set(&["Condition/cond-a"])
    );
    // Everything else: 400, recorded.
    for q in [
        "?_type=Nonsense",
        "?_type=",
        "?_type=Observation,",
        "?_since=2025-01-02",
        "?_since=soon",
        "?_since=2025-01-02T09:00:00Z&_since=2025-01-03T09:00:00Z",
        "?_count=10",
        "?start=2025-01-01",
        "?_elements=id",
        "?_format=xml",
    ] {
        let before = audit_size(t).await;
        let r = export(&w, &w.d1, q).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}: {}", r.body);
        assert_eq!(r.body["resourceType"], "OperationOutcome", "{q}");
        assert!(!r.body.to_string().contains("Exporting"), "{q}");
        if q != "?_format=xml" {
            let e = only_entry(t, before).await;
            assert_eq!((e.outcome, e.subtype.as_str()), (4, "export"), "{q}");
        }
    }
}

#[tokio::test]
async fn the_limit_refuses_instead_of_truncating_and_never_counts_hidden_data() {
    let mut config = app::Config::default();
    // D1 will see all of A but the PSY Observation.
    config.limits.max_export = ALL_A.len() - 1;
    let w = world_with(config).await;
    deny_psy_to_d1(&w).await;
    // D1's export fits: the hidden resource is not counted.
    assert_eq!(
        exported(&export(&w, &w.d1, "").await),
        all_but(&["Observation/obs-psy"])
    );
    // D2's would be one too many: refused, with the way to narrow it.
    let before = audit_size(&w.t).await;
    let r = export(&w, &w.d2, "").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let d = r.diagnostics();
    assert!(d.contains("_type") && d.contains("_since"), "{d}");
    assert_eq!(r.body["issue"][0]["code"], "too-costly");
    assert!(r.body.get("entry").is_none());
    assert_eq!(only_entry(&w.t, before).await.outcome, 4);
    assert_eq!(
        exported(&export(&w, &w.d2, "?_type=Patient,Observation").await),
        set(&["Patient/pa", "Observation/obs-psy", "Observation/obs-plain"])
    );
}

#[tokio::test]
async fn a_backend_service_exports_only_the_types_its_scopes_cover() {
    let w = world().await;
    let t = &w.t;
    let svc = |scopes: &'static str| async move {
        t.vigil
            .issue_service_token(scopes, 600, "http://vigil.test", BASE)
            .await
            .unwrap()
    };
    let narrow = svc("system/Patient.rs system/Observation.rs").await;
    assert_eq!(
        exported(&get_as(t, "/fhir/Patient/pa/$everything", &narrow).await),
        set(&["Patient/pa", "Observation/obs-psy", "Observation/obs-plain"])
    );
    // A type named but not covered: refused.
    let r = get_as(t, "/fhir/Patient/pa/$everything?_type=Condition", &narrow).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    // Without the Patient: nothing.
    let no_patient = svc("system/Observation.rs").await;
    let r = get_as(t, "/fhir/Patient/pa/$everything", &no_patient).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(!r.body.to_string().contains("obs-p"), "{}", r.body);
}

#[tokio::test]
async fn the_capability_statement_lists_everything_and_other_routes_still_match() {
    let w = world().await;
    let t = &w.t;
    let cap = t.get("/fhir/metadata").await.body;
    let patient = cap["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Patient")
        .unwrap()
        .clone();
    assert_eq!(patient["operation"][0]["name"], "everything");
    assert_eq!(
        patient["operation"][0]["definition"],
        "http://hl7.org/fhir/OperationDefinition/Patient-everything"
    );
    // The static `Patient` segment does not shadow the generic routes.
    assert_eq!(t.get("/fhir/Patient/pa").await.status, StatusCode::OK);
    assert_eq!(
        t.get("/fhir/Patient/pa/_history").await.status,
        StatusCode::OK
    );
    assert_eq!(
        t.get("/fhir/Patient/pa/_history/1").await.status,
        StatusCode::OK
    );
    assert_eq!(
        t.get("/fhir/Observation/obs-plain/_history").await.status,
        StatusCode::OK
    );
    assert_eq!(t.get("/fhir/Patient?_id=pa").await.status, StatusCode::OK);
    // Other operations, and $everything on other types, are not served.
    for uri in [
        "/fhir/Observation/obs-plain/$everything",
        "/fhir/Patient/pa/$export",
        "/fhir/Patient/pa/$everything/x",
    ] {
        let r = t.get(uri).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{uri}: {}", r.body);
    }
    for m in ["POST", "PUT", "DELETE"] {
        let r = t
            .call(m, "/fhir/Patient/pa/$everything", None, &[], true)
            .await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{m}");
    }
}

/// A session's cookie header.
async fn cookie(t: &T, username: &str) -> String {
    let SignInStep::Done(s) = t
        .vigil
        .sign_in_password(username, PASSWORD, "127.0.0.1")
        .await
        .unwrap()
    else {
        panic!("{username} signs in with a password alone");
    };
    format!("{SESSION}={}", s.cookie)
}

async fn page(t: &T, uri: &str, cookie: Option<&str>) -> Resp {
    let headers: Vec<(&str, &str)> = cookie.map(|c| vec![("cookie", c)]).unwrap_or_default();
    t.call("GET", uri, None, &headers, false).await
}

fn disposition(r: &Resp) -> &str {
    r.headers
        .get("content-disposition")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn html_text(r: &Resp) -> String {
    match &r.body {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

#[tokio::test]
async fn the_chart_and_the_patient_pages_download_the_export() {
    let w = world().await;
    let t = &w.t;
    let dr = cookie(t, "dr.one").await;
    // The chart links the export.
    let r = page(t, "/chart/pa", Some(&dr)).await;
    assert_eq!(r.status, StatusCode::OK);
    let chart = html_text(&r);
    assert!(
        chart.contains("id=\"chart-export\" class=\"button secondary\" href=\"/chart/pa/export\""),
        "{chart}"
    );
    // The download: the Bundle as an attachment, one audit entry.
    let before = audit_size(t).await;
    let r = page(t, "/chart/pa/export", Some(&dr)).await;
    assert_eq!(
        disposition(&r),
        "attachment; filename=\"patient-pa-export.json\""
    );
    assert_eq!(exported(&r), all_but(&[]));
    let e = only_entry(t, before).await;
    assert_eq!((e.subtype.as_str(), e.outcome), ("export", 0));
    // Signed out: to the sign-in page, back here afterwards; no entry, no data.
    let before = audit_size(t).await;
    let r = page(t, "/chart/pa/export", None).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let loc = r.headers.get("location").unwrap().to_str().unwrap();
    assert_eq!(loc, "/signin?next=%2Fchart%2Fpa%2Fexport");
    assert!(disposition(&r).is_empty());
    assert_eq!(audit_size(t).await, before);
    // A clinician without a relationship: the denial page, no file.
    let far = cookie(t, "dr.far").await;
    let before = audit_size(t).await;
    let r = page(t, "/chart/pa/export", Some(&far)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(disposition(&r).is_empty());
    let denial = html_text(&r);
    assert!(denial.contains("id=\"denial-rule\""), "{denial}");
    assert!(denial.contains("default-deny"), "{denial}");
    assert!(!denial.contains("Exporting"), "{denial}");
    assert_eq!(only_entry(t, before).await.outcome, 4);
    // A malformed id is a page 404.
    let r = page(t, "/chart/no%20such/export", Some(&dr)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // The patient: the link on the access log and the account page, and
    // the download of their own record.
    let pat = cookie(t, "pat.a").await;
    for uri in ["/account/access-log", "/account"] {
        let r = page(t, uri, Some(&pat)).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}");
        assert!(
            html_text(&r).contains("href=\"/account/my-record\""),
            "{uri}: {}",
            html_text(&r)
        );
    }
    let r = page(t, "/account/my-record", Some(&pat)).await;
    assert_eq!(
        disposition(&r),
        "attachment; filename=\"patient-pa-export.json\""
    );
    assert_eq!(exported(&r), all_but(&[]));
    // The download shows in the patient's own access log.
    let r = page(t, "/account/access-log", Some(&pat)).await;
    assert!(html_text(&r).contains("exported"), "{}", html_text(&r));
    // Not a patient: no "my record" to download.
    let r = page(t, "/account/my-record", Some(&dr)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(disposition(&r).is_empty());
    let r = page(t, "/account/my-record", None).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
}
