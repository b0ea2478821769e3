//! Break-the-glass end to end at the app and API level, on a clock the test
//! moves: the denial offers it, the refusals (stale sign-in, short
//! justification, wrong reason, too long, non-clinicians, unknown patient),
//! the grant (what it opens and what it does not), its audit entries, the
//! privacy officer's review queue and review (once), expiry, ending early,
//! and the patient's access log.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use app::emergency::BreakGlassRequest;
use app::{AppError, Principal};
use axum::http::StatusCode;
use model::{Clock, Timestamp};
use serde_json::json;
use store::Role;

use crate::policy_leaks::{account, call_as, entries, get_as, put_ok, token};
use crate::{T, setup_clocked};

const FHIR: &str = "http://vigil.test/fhir";

/// A clock that stands still until the test moves it.
struct StepClock(AtomicI64);

impl StepClock {
    fn advance_micros(&self, us: i64) {
        self.0.fetch_add(us, Ordering::SeqCst);
    }
    fn advance_mins(&self, m: i64) {
        self.0.fetch_add(m * 60 * 1_000_000, Ordering::SeqCst);
    }
}

impl Clock for StepClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

async fn principal(t: &T, tok: &str) -> Principal {
    t.vigil.authenticate_bearer(tok, FHIR).await.unwrap()
}

fn req(patient: &str, justification: &str, minutes: Option<u32>) -> BreakGlassRequest {
    BreakGlassRequest {
        patient: model::ResourceId::new(patient).unwrap(),
        reason: "ETREAT".into(),
        justification: justification.into(),
        minutes,
    }
}

/// The audit entries written since `from`.
async fn entries_since(t: &T, from: u64) -> Vec<app::trail::Entry> {
    let size = store::AuditStore::audit_head(t.store.as_ref())
        .await
        .unwrap()
        .size;
    let n = usize::try_from(size - from).unwrap();
    t.vigil
        .audit_raw_entries(from, n)
        .await
        .unwrap()
        .iter()
        .map(|(_, b)| t.vigil.audit_open(b).unwrap())
        .collect()
}

async fn audit_size(t: &T) -> u64 {
    store::AuditStore::audit_head(t.store.as_ref())
        .await
        .unwrap()
        .size
}

struct W {
    t: T,
    clock: Arc<StepClock>,
}

async fn world() -> W {
    let clock = Arc::new(StepClock(AtomicI64::new(
        Timestamp::from_offset_datetime(time::OffsetDateTime::now_utc()).0,
    )));
    let t = setup_clocked(app::Config::default(), clock.clone()).await;
    put_ok(
        &t,
        &json!({"resourceType": "Practitioner", "id": "pr-em", "name": [{"family": "Emergency"}]}),
    )
    .await;
    for (id, family) in [("ph", "Glassbroken"), ("pk", "Otherkept")] {
        let mut p = crate::patient(family);
        p["id"] = json!(id);
        put_ok(&t, &p).await;
    }
    // H's record: a plain and a PSY-labelled Observation, and a consent that
    // denies everyone everything (break-the-glass is exempt from F1 and F3).
    put_ok(
        &t,
        &json!({"resourceType": "Observation", "id": "obs-h", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": "Patient/ph"},
            "effectiveDateTime": "2025-01-02T09:00:00Z"}),
    )
    .await;
    put_ok(
        &t,
        &json!({"resourceType": "Observation", "id": "obs-h-psy", "status": "final",
            "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}]},
            "code": {"coding": [{"system": "http://loinc.org", "code": "44249-1"}]},
            "subject": {"reference": "Patient/ph"},
            "effectiveDateTime": "2025-01-02T09:00:00Z"}),
    )
    .await;
    put_ok(
        &t,
        &json!({"resourceType": "Consent", "id": "cons-h", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": "Patient/ph"},
            "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
            "provision": {"type": "permit", "provision": [{"type": "deny"}]}}),
    )
    .await;
    account(&t, "dr.em", Role::Physician, Some("pr-em"), None).await;
    account(&t, "dr.nosy", Role::Physician, None, None).await;
    account(&t, "fd.desk", Role::FrontDesk, None, None).await;
    account(&t, "po.pia", Role::PrivacyOfficer, None, None).await;
    account(&t, "pat.h", Role::Patient, None, Some("ph")).await;
    W { t, clock }
}

fn forbidden(r: Result<app::emergency::GrantView, AppError>, what: &str) {
    match r {
        Err(AppError::Forbidden(_)) => {}
        other => panic!("{what}: expected Forbidden, got {other:?}"),
    }
}

fn bad_request(r: Result<app::emergency::GrantView, AppError>, what: &str) {
    match r {
        Err(AppError::BadRequest(_)) => {}
        other => panic!("{what}: expected BadRequest, got {other:?}"),
    }
}

#[tokio::test]
async fn break_the_glass_from_denial_to_review_with_a_moving_clock() {
    let w = world().await;
    let t = &w.t;
    let dr_tok = token(t, "dr.em", false).await;
    let dr = principal(t, &dr_tok).await;

    // Denied, with break-the-glass offered as the way forward.
    let r = get_as(t, "/fhir/Patient/ph", &dr_tok).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let d = r.diagnostics();
    assert!(d.contains("break the glass"), "{d}");
    assert!(!d.contains("Glassbroken"), "{d}");
    let r = get_as(
        t,
        "/fhir/Observation?patient=Patient/ph&_total=accurate",
        &dr_tok,
    )
    .await;
    assert_eq!(r.body["total"], 0, "{}", r.body);

    // Refusals, none of which opens anything.
    let good = "unconscious in the emergency room, no history";
    forbidden(
        t.vigil
            .break_glass(&dr, &req("ph", good, Some(60)), false)
            .await,
        "no fresh sign-in",
    );
    bad_request(
        t.vigil
            .break_glass(&dr, &req("ph", "   urgent  ", Some(60)), true)
            .await,
        "short justification",
    );
    let mut wrong_reason = req("ph", good, Some(60));
    wrong_reason.reason = "TREAT".into();
    bad_request(
        t.vigil.break_glass(&dr, &wrong_reason, true).await,
        "reason other than ETREAT",
    );
    bad_request(
        t.vigil
            .break_glass(&dr, &req("ph", good, Some(241)), true)
            .await,
        "over 240 minutes",
    );
    bad_request(
        t.vigil
            .break_glass(&dr, &req("ph", good, Some(0)), true)
            .await,
        "zero minutes",
    );
    match t
        .vigil
        .break_glass(&dr, &req("nobody-here", good, Some(60)), true)
        .await
    {
        Err(AppError::NotFound(_)) => {}
        other => panic!("unknown patient: {other:?}"),
    }
    for (user, patient) in [("fd.desk", false), ("po.pia", false), ("pat.h", true)] {
        let p = principal(t, &token(t, user, patient).await).await;
        forbidden(
            t.vigil
                .break_glass(&p, &req("ph", good, Some(60)), true)
                .await,
            user,
        );
    }
    forbidden(
        t.vigil
            .break_glass(&Principal::Operator, &req("ph", good, Some(60)), true)
            .await,
        "operator",
    );
    assert!(t.vigil.my_grants(&dr).await.unwrap().is_empty());
    let r = get_as(t, "/fhir/Patient/ph", &dr_tok).await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "refusals opened H: {}",
        r.body
    );

    // Accepted (30 minutes): its start is on record.
    let before = audit_size(t).await;
    let g = t
        .vigil
        .break_glass(&dr, &req("ph", good, Some(30)), true)
        .await
        .unwrap();
    assert!(g.live);
    assert_eq!(g.patient, "ph");
    assert_eq!(g.expires.0 - g.start.0, 30 * 60 * 1_000_000);
    let start = entries_since(t, before).await;
    let s = start
        .iter()
        .find(|e| e.subtype == "break-glass-start")
        .expect("a break-glass-start entry");
    assert_eq!(s.outcome, 0);
    assert_eq!(s.patients, vec!["ph".to_owned()]);
    let note = s.policy.as_ref().unwrap();
    assert_eq!(note.purpose.as_deref(), Some("ETREAT"));
    assert_eq!(note.grants, vec![g.id.clone()]);

    // The read works (despite the consent and the PSY label), under ETREAT
    // with the grant id on its audit entry.
    for uri in [
        "/fhir/Patient/ph",
        "/fhir/Observation/obs-h",
        "/fhir/Observation/obs-h-psy",
    ] {
        let before = audit_size(t).await;
        let r = get_as(t, uri, &dr_tok).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.body);
        let es = entries_since(t, before).await;
        let e = es
            .iter()
            .find(|e| e.subtype == "read")
            .unwrap_or_else(|| panic!("{uri}: no read entry in {es:?}"));
        assert_eq!(e.outcome, 0);
        assert_eq!(e.agent.purpose.as_deref(), Some("ETREAT"), "{e:?}");
        let note = e.policy.as_ref().unwrap();
        assert_eq!(note.purpose.as_deref(), Some("ETREAT"), "{e:?}");
        assert_eq!(note.grants, vec![g.id.clone()], "{e:?}");
        assert!(note.policies.iter().any(|p| p == "P8"), "{e:?}");
    }
    let r = get_as(
        t,
        "/fhir/Observation?patient=Patient/ph&_total=accurate",
        &dr_tok,
    )
    .await;
    assert_eq!(r.body["total"], 2, "{}", r.body);
    // What the grant does not open: deleting, another patient, another clinician.
    let r = call_as(t, "DELETE", "/fhir/Observation/obs-h", &dr_tok, None, &[]).await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "P8 does not delete: {}",
        r.body
    );
    let r = get_as(t, "/fhir/Patient/pk", &dr_tok).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let nosy = token(t, "dr.nosy", false).await;
    let r = get_as(t, "/fhir/Patient/ph", &nosy).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    forbidden(
        t.vigil
            .end_break_glass(&principal(t, &nosy).await, &g.id)
            .await
            .map(|()| g.clone()),
        "another clinician ends the grant",
    );

    // The review queue: the privacy officer sees it, the physician may not.
    let po = principal(t, &token(t, "po.pia", false).await).await;
    let queue = t.vigil.grants_to_review(&po).await.unwrap();
    let q = queue.iter().find(|q| q.id == g.id).expect("queued");
    assert_eq!(q.justification, good);
    assert_eq!(q.review_due.0 - q.start.0, 3 * 24 * 3600 * 1_000_000);
    assert!(matches!(
        t.vigil.grants_to_review(&dr).await,
        Err(AppError::Forbidden(_))
    ));

    // The patient's access log marks the emergency accesses.
    let pat = principal(t, &token(t, "pat.h", true).await).await;
    let log = t.vigil.my_access_log(&pat, None, 200).await.unwrap();
    let marked: Vec<_> = log.iter().filter(|l| l.break_glass).collect();
    assert!(marked.len() >= 3, "{log:?}");
    for l in &marked {
        assert_eq!(l.purpose.as_deref(), Some("ETREAT"), "{l:?}");
    }
    assert!(
        log.iter()
            .any(|l| !l.break_glass && l.who.contains("the app")),
        "the service's writes are not marked: {log:?}"
    );

    // Past the expiry: closed again (tokens last an hour; take a fresh one).
    w.clock.advance_mins(31);
    let dr_tok = token(t, "dr.em", false).await;
    let dr = principal(t, &dr_tok).await;
    for uri in ["/fhir/Patient/ph", "/fhir/Observation/obs-h-psy"] {
        let r = get_as(t, uri, &dr_tok).await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "LEAK after expiry {uri}: {}",
            r.body
        );
    }
    let r = get_as(
        t,
        "/fhir/Observation?patient=Patient/ph&_total=accurate",
        &dr_tok,
    )
    .await;
    assert_eq!(r.body["total"], 0, "LEAK after expiry: {}", r.body);
    assert!(entries(&r.body, "match").is_empty());
    assert!(!t.vigil.grant(&dr, &g.id).await.unwrap().live);

    // A second grant, ended early by its holder.
    let g2 = t
        .vigil
        .break_glass(&dr, &req("ph", good, None), true)
        .await
        .unwrap();
    assert_eq!(
        g2.expires.0 - g2.start.0,
        60 * 60 * 1_000_000,
        "default 60 minutes"
    );
    let r = get_as(t, "/fhir/Patient/ph", &dr_tok).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let before = audit_size(t).await;
    t.vigil.end_break_glass(&dr, &g2.id).await.unwrap();
    let es = entries_since(t, before).await;
    let end = es
        .iter()
        .find(|e| e.subtype == "break-glass-end")
        .expect("an end entry");
    assert_eq!(end.policy.as_ref().unwrap().grants, vec![g2.id.clone()]);
    assert!(!t.vigil.grant(&dr, &g2.id).await.unwrap().live);
    // A moment later (the instant of the end itself: see the report), and a
    // minute later, closed: the end is not undone by the facts cache.
    w.clock.advance_micros(1);
    let r = get_as(t, "/fhir/Patient/ph", &dr_tok).await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "LEAK after ending: {}",
        r.body
    );
    w.clock.advance_mins(1);
    let r = get_as(t, "/fhir/Patient/ph", &dr_tok).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = get_as(
        t,
        "/fhir/Observation?patient=Patient/ph&_total=accurate",
        &dr_tok,
    )
    .await;
    assert_eq!(r.body["total"], 0, "LEAK after ending: {}", r.body);

    // The review is recorded once; not by the physician; a known outcome only.
    assert!(matches!(
        t.vigil.review_grant(&dr, &g.id, "appropriate", "").await,
        Err(AppError::Forbidden(_))
    ));
    assert!(matches!(
        t.vigil.review_grant(&po, &g.id, "fine", "").await,
        Err(AppError::BadRequest(_))
    ));
    t.vigil
        .review_grant(&po, &g.id, "appropriate", "checked with the ER")
        .await
        .unwrap();
    assert!(matches!(
        t.vigil
            .review_grant(&po, &g.id, "inappropriate", "second thoughts")
            .await,
        Err(AppError::Conflict(_))
    ));
    let reviewed = t.vigil.grant(&po, &g.id).await.unwrap();
    let rv = reviewed.reviewed.expect("reviewed");
    assert_eq!(rv.outcome, "appropriate", "the first review stands");
    assert_eq!(rv.note, "checked with the ER");
    let queue = t.vigil.grants_to_review(&po).await.unwrap();
    assert!(
        !queue.iter().any(|q| q.id == g.id),
        "reviewed leaves the queue"
    );
    assert!(
        queue.iter().any(|q| q.id == g2.id),
        "the second still waits"
    );
    // Another clinician cannot even see the grant.
    assert!(matches!(
        t.vigil.grant(&principal(t, &nosy).await, &g.id).await,
        Err(AppError::NotFound(_))
    ));
}

#[tokio::test]
async fn the_longest_grant_holds_until_its_last_minute_and_not_after() {
    let w = world().await;
    let t = &w.t;
    let dr_tok = token(t, "dr.em", false).await;
    let dr = principal(t, &dr_tok).await;
    let g = t
        .vigil
        .break_glass(
            &dr,
            &req("ph", "cardiac arrest in the waiting room", Some(240)),
            true,
        )
        .await
        .unwrap();
    assert_eq!(g.expires.0 - g.start.0, 240 * 60 * 1_000_000);
    // 239 minutes on (tokens last an hour: a fresh one each time).
    for _ in 0..3 {
        w.clock.advance_mins(59);
    }
    w.clock.advance_mins(62);
    let tok = token(t, "dr.em", false).await;
    let r = get_as(t, "/fhir/Patient/ph", &tok).await;
    assert_eq!(r.status, StatusCode::OK, "within the grant: {}", r.body);
    w.clock.advance_mins(2);
    let tok = token(t, "dr.em", false).await;
    let r = get_as(t, "/fhir/Patient/ph", &tok).await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "LEAK past 240 minutes: {}",
        r.body
    );
    let r = get_as(
        t,
        "/fhir/Observation?patient=Patient/ph&_total=accurate",
        &tok,
    )
    .await;
    assert_eq!(r.body["total"], 0, "{}", r.body);
}

/// LEAK (reported, not yet fixed): a grant ended early still opens the
/// record for a request decided in the same instant as the end, because
/// `grants_for_patient` (crates/app/src/decide.rs) turns `revoked` into
/// `expires = revoked, revoked: false` and the policy's window is inclusive
/// (`now <= g.expires`), while `GrantView.live` already says false.
#[tokio::test]
async fn an_ended_grant_opens_nothing_even_in_the_instant_it_ends() {
    let w = world().await;
    let t = &w.t;
    let dr_tok = token(t, "dr.em", false).await;
    let dr = principal(t, &dr_tok).await;
    let g = t
        .vigil
        .break_glass(
            &dr,
            &req("ph", "unconscious in the emergency room", None),
            true,
        )
        .await
        .unwrap();
    let r = get_as(t, "/fhir/Patient/ph", &dr_tok).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    t.vigil.end_break_glass(&dr, &g.id).await.unwrap();
    assert!(!t.vigil.grant(&dr, &g.id).await.unwrap().live);
    // The clock has not moved: the grant is over all the same.
    let r = get_as(t, "/fhir/Patient/ph", &dr_tok).await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "LEAK at the instant of ending: {}",
        r.body
    );
    let r = get_as(t, "/fhir/Observation/obs-h-psy", &dr_tok).await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "LEAK at the instant of ending: {}",
        r.body
    );
}
