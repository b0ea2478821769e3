use serde_json::json;

use crate::{patient, setup, setup_with};

#[tokio::test]
async fn health_is_open_and_fhir_is_closed() {
    let t = setup().await;
    let r = t.call("GET", "/health", None, &[], false).await;
    assert_eq!(r.status, 200);
    let r = t.call("GET", "/fhir/Patient", None, &[], false).await;
    assert_eq!(r.status, 401);
    assert!(r.headers.contains_key("www-authenticate"));
    assert!(r.diagnostics().contains("bearer token"));
    let r = t
        .call(
            "GET",
            "/fhir/Patient",
            None,
            &[("authorization", "Bearer wrong-token-value")],
            false,
        )
        .await;
    assert_eq!(r.status, 401);
    let r = t
        .call(
            "GET",
            "/fhir/Patient/x",
            None,
            &[("authorization", "Basic abc")],
            false,
        )
        .await;
    assert_eq!(r.status, 401);
    let r = t.call("GET", "/fhir/metadata", None, &[], false).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["resourceType"], "CapabilityStatement");
    assert_eq!(r.body["fhirVersion"], "4.0.1");
}

#[tokio::test]
async fn security_headers_are_set() {
    let t = setup().await;
    let r = t.get("/fhir/metadata").await;
    assert_eq!(r.headers["x-content-type-options"], "nosniff");
    assert_eq!(r.headers["cache-control"], "no-store");
    assert!(
        r.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/fhir+json")
    );
}

#[tokio::test]
async fn capability_statement_lists_every_served_type() {
    let t = setup().await;
    let r = t.get("/fhir/metadata").await;
    let types: Vec<&str> = r.body["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["type"].as_str().unwrap())
        .collect();
    for ty in model::ResourceType::ALL {
        assert!(types.contains(&ty.as_str()), "{ty} missing");
    }
    // The audit trail is read-only: read and search, nothing else.
    let audit = r.body["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["type"] == "AuditEvent")
        .expect("AuditEvent is listed");
    let mut codes: Vec<&str> = audit["interaction"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["code"].as_str().unwrap())
        .collect();
    codes.sort_unstable();
    assert_eq!(codes, ["read", "search-type"]);
}

#[tokio::test]
async fn create_read_update_delete_and_history() {
    let t = setup().await;
    let r = t.post("/fhir/Patient", &patient("Okonkwo")).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(r.headers["etag"], "W/\"1\"");
    assert_eq!(
        r.headers["location"].to_str().unwrap(),
        format!("http://vigil.test/fhir/Patient/{id}/_history/1")
    );
    assert_eq!(r.body["meta"]["versionId"], "1");

    let read = t.get(&format!("/fhir/Patient/{id}")).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.body, r.body);
    assert!(read.headers.contains_key("last-modified"));

    // Update with the right If-Match.
    let mut changed = read.body.clone();
    changed["gender"] = json!("male");
    let r2 = t
        .call(
            "PUT",
            &format!("/fhir/Patient/{id}"),
            Some(serde_json::to_vec(&changed).unwrap()),
            &[("if-match", "W/\"1\"")],
            true,
        )
        .await;
    assert_eq!(r2.status, 200, "{}", r2.body);
    assert_eq!(r2.body["meta"]["versionId"], "2");

    // A stale If-Match is refused and changes nothing.
    let before = t.snapshot().await;
    changed["gender"] = json!("other");
    let stale = t
        .call(
            "PUT",
            &format!("/fhir/Patient/{id}"),
            Some(serde_json::to_vec(&changed).unwrap()),
            &[("if-match", "W/\"1\"")],
            true,
        )
        .await;
    assert_eq!(stale.status, 412);
    assert_eq!(t.snapshot().await, before);

    let v1 = t.get(&format!("/fhir/Patient/{id}/_history/1")).await;
    assert_eq!(v1.status, 200);
    assert_eq!(v1.body["gender"], "female");
    let missing = t.get(&format!("/fhir/Patient/{id}/_history/9")).await;
    assert_eq!(missing.status, 404);

    let d = t.delete(&format!("/fhir/Patient/{id}")).await;
    assert_eq!(d.status, 204);
    let gone = t.get(&format!("/fhir/Patient/{id}")).await;
    assert_eq!(gone.status, 410);
    assert_eq!(gone.body["resourceType"], "OperationOutcome");

    let h = t.get(&format!("/fhir/Patient/{id}/_history")).await;
    assert_eq!(h.status, 200);
    assert_eq!(h.body["type"], "history");
    assert_eq!(h.body["total"], 3);
    assert_eq!(h.body["entry"][0]["request"]["method"], "DELETE");
    assert_eq!(h.body["entry"][2]["resource"]["gender"], "female");

    // The old versions stay readable after the delete.
    assert_eq!(
        t.get(&format!("/fhir/Patient/{id}/_history/2"))
            .await
            .status,
        200
    );
    // A deleted resource can be brought back with PUT; its history continues.
    let mut back = v1.body.clone();
    back.as_object_mut().unwrap().remove("meta");
    let r3 = t.put(&format!("/fhir/Patient/{id}"), &back).await;
    assert_eq!(r3.status, 201, "{}", r3.body);
    assert_eq!(r3.body["meta"]["versionId"], "4");
}

#[tokio::test]
async fn update_as_create_takes_valid_ids_only() {
    let t = setup().await;
    let mut p = patient("Nakamura");
    p["id"] = json!("mrn-42.a");
    let r = t.put("/fhir/Patient/mrn-42.a", &p).await;
    assert_eq!(r.status, 201);
    assert_eq!(t.get("/fhir/Patient/mrn-42.a").await.status, 200);
    for bad in [
        "a_b",
        "x%20y",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ] {
        let mut p = patient("Nakamura");
        p["id"] = json!(bad);
        let r = t.put(&format!("/fhir/Patient/{bad}"), &p).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert_eq!(r.body["resourceType"], "OperationOutcome");
    }
    // The body id must match the URL.
    let mut p = patient("Nakamura");
    p["id"] = json!("other");
    assert_eq!(t.put("/fhir/Patient/mrn-42.a", &p).await.status, 400);
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let t = setup_with(app::Config {
        limits: app::Limits {
            max_body_bytes: 20_000,
            ..app::Limits::default()
        },
        ..app::Config::default()
    })
    .await;
    let seed = t.post("/fhir/Patient", &patient("Stable")).await;
    assert_eq!(seed.status, 201);
    let before = t.snapshot().await;

    // Malformed JSON.
    let r = t
        .call(
            "POST",
            "/fhir/Patient",
            Some(b"{\"resourceType\": \"Patient\", ".to_vec()),
            &[],
            true,
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.diagnostics().contains("not valid JSON"));
    // Wrong resourceType for the URL.
    let r = t
        .post("/fhir/Patient", &json!({"resourceType": "Practitioner"}))
        .await;
    assert_eq!(r.status, 400);
    assert!(r.diagnostics().contains("resourceType"));
    // Not an object.
    assert_eq!(t.post("/fhir/Patient", &json!([1, 2])).await.status, 400);
    // Oversize body.
    let mut big = patient("Big");
    big["name"][0]["text"] = json!("x".repeat(30_000));
    let r = t.post("/fhir/Patient", &big).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.body["resourceType"], "OperationOutcome");
    // Unknown element.
    let mut unknown = patient("Unknown");
    unknown["favouriteColour"] = json!("blue");
    let r = t.post("/fhir/Patient", &unknown).await;
    assert_eq!(r.status, 400);
    assert!(
        !r.diagnostics().contains("blue"),
        "values must not be echoed"
    );
    // Bad date.
    let mut bad_date = patient("Date");
    bad_date["birthDate"] = json!("1980-13-45");
    assert_eq!(t.post("/fhir/Patient", &bad_date).await.status, 400);
    // Dangling reference.
    let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": "Patient/does-not-exist"}});
    let r = t.post("/fhir/Observation", &obs).await;
    assert_eq!(r.status, 422);
    assert!(r.diagnostics().contains("does not resolve"));
    // Wrong media type.
    let r = t
        .call(
            "POST",
            "/fhir/Patient",
            Some(b"<Patient/>".to_vec()),
            &[("content-type", "application/fhir+xml")],
            true,
        )
        .await;
    assert_eq!(r.status, 415);
    // Unknown type.
    let r = t
        .post("/fhir/Spaceship", &json!({"resourceType": "Spaceship"}))
        .await;
    assert_eq!(r.status, 404);
    // Unknown search parameter.
    let r = t.get("/fhir/Patient?shoe-size=42").await;
    assert_eq!(r.status, 400);
    assert!(r.diagnostics().contains("shoe-size"));
    // XML asked for.
    let r = t
        .call(
            "GET",
            "/fhir/metadata",
            None,
            &[("accept", "application/fhir+xml")],
            true,
        )
        .await;
    assert_eq!(r.status, 406);

    assert_eq!(
        t.snapshot().await,
        before,
        "a refused request changed stored data"
    );
}

#[tokio::test]
async fn referential_integrity_can_be_switched_off() {
    let t = setup_with(app::Config {
        referential_integrity: false,
        ..app::Config::default()
    })
    .await;
    let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": "Patient/elsewhere"}});
    assert_eq!(t.post("/fhir/Observation", &obs).await.status, 201);
}

#[tokio::test]
async fn references_to_types_not_served_are_kept_as_given() {
    let t = setup().await;
    let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "device": {"reference": "Device/abc"}});
    let r = t.post("/fhir/Observation", &obs).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["device"]["reference"], "Device/abc");
}

#[tokio::test]
async fn a_flipped_byte_is_an_integrity_error_not_garbage() {
    let t = setup().await;
    let r = t.post("/fhir/Patient", &patient("Tamper")).await;
    let id = r.body["id"].as_str().unwrap().to_owned();
    // Flip one byte of the stored ciphertext, as an attacker with the file could.
    use sqlx::Connection;
    let mut c =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}", t.dir.join("vigil.db").display()))
            .await
            .unwrap();
    let flipped: (Vec<u8>,) =
        sqlx::query_as("SELECT ciphertext FROM resource_versions WHERE id = ?1")
            .bind(&id)
            .fetch_one(&mut c)
            .await
            .unwrap();
    let mut ct = flipped.0;
    ct[20] ^= 0x01;
    sqlx::query("UPDATE resource_versions SET ciphertext = ?1 WHERE id = ?2")
        .bind(&ct)
        .bind(&id)
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    let r = t.get(&format!("/fhir/Patient/{id}")).await;
    assert_eq!(r.status, 500);
    assert!(r.diagnostics().contains("integrity"), "{}", r.body);
    assert!(!r.body.to_string().contains("Tamper"));
}

#[tokio::test]
async fn decimals_keep_their_precision() {
    let t = setup().await;
    let body = br#"{"resourceType":"Observation","status":"final","code":{"text":"weight"},"valueQuantity":{"value":72.50,"unit":"kg"},"referenceRange":[{"low":{"value":0.010},"high":{"value":1e2}}]}"#;
    let r = t
        .call("POST", "/fhir/Observation", Some(body.to_vec()), &[], true)
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    // Read the raw bytes: 72.50 must not become 72.5, nor 0.010 become 0.01.
    let req = axum::http::Request::get(format!("/fhir/Observation/{id}"))
        .header("authorization", format!("Bearer {}", t.token))
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = tower::ServiceExt::oneshot(t.router.clone(), req)
        .await
        .unwrap();
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(text.contains("\"value\":72.50"), "{text}");
    assert!(text.contains("\"value\":0.010"), "{text}");
}
