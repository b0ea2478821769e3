//! The route registry drives the audit test: every route that touches
//! patient data leaves exactly one audit entry per request, allowed or
//! refused, and a request whose entry cannot be written fails with no data.

use serde_json::{Value, json};
use store::AuditStore;

use crate::{T, setup};

/// A request: URI, body, headers.
type Example = (String, Option<Vec<u8>>, Vec<(&'static str, &'static str)>);

/// The request the test makes for a registered method and path.
fn example(path: &str, method: &str, n: usize) -> Example {
    let patient =
        |id: &str| json!({"resourceType": "Patient", "id": id, "name": [{"family": "Registry"}]});
    let body = |v: Value| Some(serde_json::to_vec(&v).unwrap());
    match (path, method) {
        ("/fhir/metadata", "GET") => ("/fhir/metadata".into(), None, vec![]),
        ("/fhir" | "/fhir/", "POST") => (
            path.to_owned(),
            body(
                json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                {"fullUrl": "urn:uuid:6c8d1b0e-0000-4000-8000-000000000001",
                 "resource": {"resourceType": "Patient", "name": [{"family": "Tx"}]},
                 "request": {"method": "POST", "url": "Patient"}}]}),
            ),
            vec![],
        ),
        ("/fhir/{rtype}", "GET") => ("/fhir/Patient?_id=reg-1".into(), None, vec![]),
        ("/fhir/{rtype}", "POST") => (
            "/fhir/Patient".into(),
            body(json!({"resourceType": "Patient", "name": [{"family": "New"}]})),
            vec![],
        ),
        ("/fhir/{rtype}/_search", "POST") => (
            "/fhir/Patient/_search".into(),
            Some(b"_id=reg-1".to_vec()),
            vec![("content-type", "application/x-www-form-urlencoded")],
        ),
        ("/fhir/{rtype}/{id}", "GET") => ("/fhir/Patient/reg-1".into(), None, vec![]),
        ("/fhir/{rtype}/{id}", "PUT") => {
            ("/fhir/Patient/reg-1".into(), body(patient("reg-1")), vec![])
        }
        ("/fhir/{rtype}/{id}", "DELETE") => (format!("/fhir/Patient/reg-del-{n}"), None, vec![]),
        ("/fhir/Patient/{id}/$everything", "GET") => {
            ("/fhir/Patient/reg-1/$everything".into(), None, vec![])
        }
        ("/fhir/{rtype}/{id}/_history", "GET") => {
            ("/fhir/Patient/reg-1/_history".into(), None, vec![])
        }
        ("/fhir/{rtype}/{id}/_history/{vid}", "GET") => {
            ("/fhir/Patient/reg-1/_history/1".into(), None, vec![])
        }
        other => panic!("the registry has {other:?}: add its example here"),
    }
}

async fn size(t: &T) -> u64 {
    t.store.audit_head().await.unwrap().size
}

async fn seed(t: &T) {
    for id in ["reg-1", "reg-del-0", "reg-del-1", "reg-del-2"] {
        let r = t
            .put(
                &format!("/fhir/Patient/{id}"),
                &json!({"resourceType": "Patient", "id": id, "name": [{"family": "Registry"}]}),
            )
            .await;
        assert!(r.status.is_success(), "{}", r.body);
    }
}

/// A physician with no relationship to anyone: every patient-data request
/// is refused by the access policy (or, for searches, finds nothing).
async fn stranger_token(t: &T) -> String {
    t.vigil
        .create_account(
            &app::Principal::Operator,
            app::NewAccount {
                username: "dr.stranger".into(),
                role: store::Role::Physician,
                practitioner: None,
                patient: None,
                display_name: None,
                email: None,
            },
            None,
        )
        .await
        .unwrap();
    t.vigil
        .issue_operator_token(
            "dr.stranger",
            "user/*.cruds",
            3600,
            "http://vigil.test",
            "http://vigil.test/fhir",
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn every_patient_data_route_leaves_exactly_one_audit_entry() {
    let t = setup().await;
    seed(&t).await;
    let stranger = format!("Bearer {}", stranger_token(&t).await);
    let mut checked = 0;
    for p in web::ROUTES {
        for it in p.interactions {
            // 0: the service, 1: nobody, 2: a person the policy refuses.
            for (n, authenticated) in [(0, true), (1, false), (2, false)] {
                let (uri, body, mut headers) = example(p.path, it.method, n);
                if n == 2 {
                    headers.push(("authorization", stranger.as_str()));
                }
                let before = size(&t).await;
                let r = t.call(it.method, &uri, body, &headers, authenticated).await;
                let after = size(&t).await;
                let expected = u64::from(it.patient_data);
                assert_eq!(
                    after - before,
                    expected,
                    "{} {uri} (authenticated: {authenticated}) answered {} and left {} entries",
                    it.method,
                    r.status,
                    after - before
                );
                if it.patient_data {
                    // The answer carries the receipt of its entry.
                    let receipt = r
                        .headers
                        .get("vigil-audit-receipt")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    assert!(
                        receipt.starts_with(&format!("index={before}; size=")),
                        "{} {uri}: receipt {receipt:?}",
                        it.method
                    );
                    let entry = t.vigil.audit_raw_entries(before, 1).await.unwrap();
                    let e = t.vigil.audit_open(&entry[0].1).unwrap();
                    if authenticated {
                        assert!(r.status.is_success(), "{} {uri}: {}", it.method, r.body);
                        assert_eq!(e.outcome, 0, "{} {uri}", it.method);
                        assert!(e.agent.client.is_some(), "the service is named");
                    } else if n == 2 {
                        assert!(e.agent.account.is_some(), "the person is named");
                        if r.status == 403 {
                            assert_eq!(e.outcome, 4, "{} {uri}: a refusal", it.method);
                            let note = e.policy.as_ref().expect("the deciding rule");
                            assert!(
                                note.policies.iter().any(|p| p == "default-deny"),
                                "{} {uri}: {note:?}",
                                it.method
                            );
                            assert_eq!(r.body["resourceType"], "OperationOutcome");
                        } else {
                            // A search finds nothing it may not see.
                            assert_eq!(r.status, 200, "{} {uri}: {}", it.method, r.body);
                            assert_eq!(
                                r.body["entry"].as_array().map_or(0, Vec::len),
                                0,
                                "{} {uri}: {}",
                                it.method,
                                r.body
                            );
                        }
                    } else {
                        assert_eq!(r.status, 401);
                        assert_eq!(e.outcome, 4, "refusals are recorded as failures");
                        assert_eq!(e.subtype, "authenticate");
                    }
                    checked += 1;
                } else {
                    assert!(r.status.is_success(), "{} {uri}: {}", it.method, r.status);
                }
            }
        }
    }
    assert!(
        checked >= 18,
        "every patient-data interaction was called ({checked})"
    );
}

#[tokio::test]
async fn a_scope_refusal_is_recorded_with_its_outcome() {
    let t = setup().await;
    seed(&t).await;
    let token = t
        .vigil
        .issue_operator_token(
            "it-admin",
            "user/Observation.rs",
            600,
            "http://vigil.test",
            "http://vigil.test/fhir",
        )
        .await
        .unwrap();
    let before = size(&t).await;
    let auth = format!("Bearer {token}");
    let r = t
        .call(
            "GET",
            "/fhir/Patient/reg-1",
            None,
            &[("authorization", auth.as_str())],
            false,
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(size(&t).await, before + 1);
    let entry = t.vigil.audit_raw_entries(before, 1).await.unwrap();
    let e = t.vigil.audit_open(&entry[0].1).unwrap();
    assert_eq!((e.outcome, e.subtype.as_str()), (4, "read"));
    assert_eq!(e.resources, vec!["Patient/reg-1".to_owned()]);
}

#[tokio::test]
async fn when_the_audit_entry_cannot_be_written_nothing_is_returned_or_changed() {
    let t = setup().await;
    seed(&t).await;
    // Inject a storage failure: the audit table refuses inserts.
    let url = format!("sqlite://{}", t.dir.join("vigil.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query(
        "CREATE TRIGGER audit_down BEFORE INSERT ON audit_entries BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
    )
    .execute(&pool)
    .await
    .unwrap();
    let r = t.get("/fhir/Patient/reg-1").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        !r.body.to_string().contains("Registry"),
        "no data left: {}",
        r.body
    );
    let r = t.get("/fhir/Patient?_id=reg-1").await;
    assert_eq!(r.status, 503);
    assert!(!r.body.to_string().contains("Registry"));
    let r = t
        .put(
            "/fhir/Patient/reg-1",
            &json!({"resourceType": "Patient", "id": "reg-1", "name": [{"family": "Changed"}]}),
        )
        .await;
    assert_eq!(r.status, 503, "{}", r.body);
    sqlx::query("DROP TRIGGER audit_down")
        .execute(&pool)
        .await
        .unwrap();
    let r = t.get("/fhir/Patient/reg-1").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body["name"][0]["family"], "Registry",
        "the write left nothing behind"
    );
    assert_eq!(r.body["meta"]["versionId"], "1");
}

#[tokio::test]
async fn a_privacy_officer_token_searches_the_trail_and_a_physician_token_does_not() {
    let t = setup().await;
    seed(&t).await;
    for (username, role) in [
        ("po.token", store::Role::PrivacyOfficer),
        ("dr.token", store::Role::Physician),
    ] {
        t.vigil
            .create_account(
                &app::Principal::Operator,
                app::NewAccount {
                    username: username.into(),
                    role,
                    practitioner: None,
                    patient: None,
                    display_name: None,
                    email: None,
                },
                None,
            )
            .await
            .unwrap();
    }
    let t = &t;
    let search = |token: String| async move {
        let auth = format!("Bearer {token}");
        t.call(
            "GET",
            "/fhir/AuditEvent?patient=reg-1",
            None,
            &[("authorization", auth.as_str())],
            false,
        )
        .await
    };
    let issue = |u: &'static str| {
        t.vigil.issue_operator_token(
            u,
            "user/*.rs",
            600,
            "http://vigil.test",
            "http://vigil.test/fhir",
        )
    };
    let r = search(issue("po.token").await.unwrap()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body["total"]
            .as_u64()
            .unwrap_or(r.body["entry"].as_array().map_or(0, |e| e.len() as u64))
            >= 1,
        "{}",
        r.body
    );
    let r = search(issue("dr.token").await.unwrap()).await;
    assert_eq!(r.status, 403, "{}", r.body);
}
