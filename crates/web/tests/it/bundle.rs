use serde_json::json;

use crate::{patient, setup};

#[tokio::test]
async fn transaction_resolves_urn_references_atomically() {
    let t = setup().await;
    let bundle = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a", "resource": patient("Transact"),
             "request": {"method": "POST", "url": "Patient"}},
            {"fullUrl": "urn:uuid:88f151c0-a954-468a-88bd-5ae15c08e059",
             "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "pulse"},
                          "subject": {"reference": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"}},
             "request": {"method": "POST", "url": "Observation"}}
        ]
    });
    let r = t.post("/fhir", &bundle).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["type"], "transaction-response");
    let entries = r.body["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["response"]["status"], "201 Created");
    let pid = entries[0]["resource"]["id"].as_str().unwrap();
    let obs = &entries[1]["resource"];
    assert_eq!(obs["subject"]["reference"], format!("Patient/{pid}"));
    let read = t
        .get(&format!(
            "/fhir/{}",
            entries[1]["response"]["location"]
                .as_str()
                .unwrap()
                .split("/_history")
                .next()
                .unwrap()
        ))
        .await;
    assert_eq!(read.status, 200);
}

#[tokio::test]
async fn a_transaction_failing_at_its_last_entry_writes_nothing() {
    let t = setup().await;
    let seeded = t.post("/fhir/Patient", &patient("Before")).await;
    assert_eq!(seeded.status, 201);
    let before = t.snapshot().await;
    let bundle = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"resource": patient("One"), "request": {"method": "POST", "url": "Patient"}},
            {"resource": patient("Two"), "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                          "subject": {"reference": "Patient/nowhere"}},
             "request": {"method": "POST", "url": "Observation"}}
        ]
    });
    let r = t.post("/fhir", &bundle).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body["issue"][0]["expression"][0]
            .as_str()
            .unwrap()
            .starts_with("Bundle.entry[2]"),
        "{}",
        r.body
    );
    assert_eq!(t.snapshot().await, before);

    // An invalid last entry (schema) is a 400 and also writes nothing.
    let bundle = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"resource": patient("One"), "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Patient", "birthDate": "not-a-date"}, "request": {"method": "POST", "url": "Patient"}}
        ]
    });
    assert_eq!(t.post("/fhir", &bundle).await.status, 400);
    // A stale If-Match at the end: 412, nothing written.
    let id = seeded.body["id"].as_str().unwrap();
    let mut upd = seeded.body.clone();
    upd["gender"] = json!("male");
    let bundle = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"resource": patient("Three"), "request": {"method": "POST", "url": "Patient"}},
            {"resource": upd, "request": {"method": "PUT", "url": format!("Patient/{id}"), "ifMatch": "W/\"7\""}}
        ]
    });
    assert_eq!(t.post("/fhir", &bundle).await.status, 412);
    assert_eq!(t.snapshot().await, before);
}

#[tokio::test]
async fn batch_entries_succeed_or_fail_on_their_own() {
    let t = setup().await;
    let bundle = json!({
        "resourceType": "Bundle", "type": "batch",
        "entry": [
            {"resource": patient("Good"), "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Patient", "birthDate": "sometime"}, "request": {"method": "POST", "url": "Patient"}},
            {"request": {"method": "GET", "url": "Patient/missing"}}
        ]
    });
    let r = t.post("/fhir", &bundle).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let e = r.body["entry"].as_array().unwrap();
    assert_eq!(e[0]["response"]["status"], "201 Created");
    assert_eq!(e[1]["response"]["status"], "400");
    assert_eq!(
        e[1]["response"]["outcome"]["resourceType"],
        "OperationOutcome"
    );
    assert_eq!(e[2]["response"]["status"], "404");
}

#[tokio::test]
async fn bundles_over_the_entry_limit_are_refused() {
    let t = crate::setup_with(app::Config {
        limits: app::Limits {
            max_bundle_entries: 2,
            ..app::Limits::default()
        },
        ..app::Config::default()
    })
    .await;
    let e = json!({"resource": patient("X"), "request": {"method": "POST", "url": "Patient"}});
    let r = t
        .post(
            "/fhir",
            &json!({"resourceType": "Bundle", "type": "transaction", "entry": [e, e, e]}),
        )
        .await;
    assert_eq!(r.status, 413);
    let r = t
        .post(
            "/fhir",
            &json!({"resourceType": "Bundle", "type": "collection"}),
        )
        .await;
    assert_eq!(r.status, 400);
}
