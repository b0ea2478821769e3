//! The audit trail over HTTP: AuditEvent search for privacy officers only,
//! a patient's access log, and the public log (checkpoint, keys, tiles,
//! entry bundles, proofs) checked with the `audit` crate.

use app::audit;
use app::{NewAccount, Principal, SignInStep};
use axum::http::StatusCode;
use base64::Engine as _;
use serde_json::Value;
use store::Role;

use crate::{Resp, T, patient, setup, setup_without_mfa};

const SESSION: &str = "__Host-vigil_session";
const PASSWORD: &str = "quiet lantern over harbour 48";

async fn account(
    t: &T,
    username: &str,
    role: Role,
    patient: Option<&str>,
    name: &str,
) -> store::AccountId {
    account_with(t, username, role, patient, None, name).await
}

/// A physician with a Practitioner who is on the care team of `patients`.
async fn clinician(t: &T, username: &str, name: &str, patients: &[&str]) -> store::AccountId {
    let pr = format!("pr-{}", username.replace('.', "-"));
    let r = t
        .call(
            "PUT",
            &format!("/fhir/Practitioner/{pr}"),
            Some(
                serde_json::to_vec(&serde_json::json!({
                    "resourceType": "Practitioner", "id": pr, "name": [{"family": name}]
                }))
                .unwrap(),
            ),
            &[],
            true,
        )
        .await;
    assert!(r.status.is_success(), "{}", r.body);
    for p in patients {
        let team = serde_json::json!({
            "resourceType": "CareTeam", "status": "active",
            "subject": {"reference": format!("Patient/{p}")},
            "participant": [{"member": {"reference": format!("Practitioner/{pr}")}}]
        });
        let r = t.post("/fhir/CareTeam", &team).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    account_with(t, username, Role::Physician, None, Some(&pr), name).await
}

async fn account_with(
    t: &T,
    username: &str,
    role: Role,
    patient: Option<&str>,
    practitioner: Option<&str>,
    name: &str,
) -> store::AccountId {
    t.vigil
        .create_account(
            &Principal::Operator,
            NewAccount {
                username: username.into(),
                role,
                practitioner: practitioner.map(|p| model::ResourceId::new(p).unwrap()),
                patient: patient.map(|p| model::ResourceId::new(p).unwrap()),
                display_name: Some(name.into()),
                email: None,
            },
            Some(PASSWORD),
        )
        .await
        .unwrap()
}

async fn token(t: &T, username: &str) -> String {
    t.vigil
        .issue_operator_token(
            username,
            "user/*.rs",
            3600,
            "http://vigil.test",
            "http://vigil.test/fhir",
        )
        .await
        .unwrap()
}

async fn get_as(t: &T, uri: &str, token: &str) -> Resp {
    let auth = format!("Bearer {token}");
    t.call("GET", uri, None, &[("authorization", &auth)], false)
        .await
}

async fn create_patient(t: &T, family: &str) -> String {
    let r = t.post("/fhir/Patient", &patient(family)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

/// The entry indexes in a response's audit receipt.
fn receipt_indexes(r: &Resp) -> Vec<u64> {
    let h = r
        .headers
        .get("vigil-audit-receipt")
        .expect("an audit receipt")
        .to_str()
        .unwrap();
    let idx = h
        .split(';')
        .find_map(|p| p.trim().strip_prefix("index="))
        .unwrap();
    idx.split(',').map(|i| i.parse().unwrap()).collect()
}

fn page_text(r: &Resp) -> String {
    match &r.body {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// A session cookie header and its CSRF token, signing in with a password.
async fn session(t: &T, username: &str) -> (String, String) {
    let SignInStep::Done(s) = t
        .vigil
        .sign_in_password(username, PASSWORD, "127.0.0.1")
        .await
        .unwrap()
    else {
        panic!("{username} signs in with a password alone");
    };
    (format!("{SESSION}={}", s.cookie), s.csrf)
}

async fn get_with_session(t: &T, uri: &str, s: &(String, String)) -> Resp {
    t.call(
        "GET",
        uri,
        None,
        &[("cookie", &s.0), ("x-csrf-token", &s.1)],
        false,
    )
    .await
}

#[tokio::test]
async fn audit_events_are_for_privacy_officers() {
    let t = setup_without_mfa().await;
    let p1 = create_patient(&t, "Audited").await;
    let doc = clinician(&t, "dr.dana", "Dana Physician", &[&p1]).await;
    account(&t, "po.pat", Role::PrivacyOfficer, None, "Pat Officer").await;
    let doc_token = token(&t, "dr.dana").await;
    let po = session(&t, "po.pat").await;
    let read = get_as(&t, &format!("/fhir/Patient/{p1}"), &doc_token).await;
    assert_eq!(read.status, StatusCode::OK);
    let read_index = receipt_indexes(&read)[0];

    // A physician may not search the trail.
    let r = get_as(&t, &format!("/fhir/AuditEvent?patient={p1}"), &doc_token).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(r.body["resourceType"], "OperationOutcome");

    // The privacy officer finds the physician's read.
    let r = get_with_session(
        &t,
        &format!("/fhir/AuditEvent?patient=Patient/{p1}&agent={doc}&action=R&date=ge2000-01-01"),
        &po,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["resourceType"], "Bundle");
    assert_eq!(r.body["type"], "searchset");
    let entries = r.body["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{}", r.body);
    let ev = &entries[0]["resource"];
    assert_eq!(ev["resourceType"], "AuditEvent");
    assert_eq!(ev["id"], read_index.to_string());
    assert_eq!(ev["subtype"][0]["code"], "read");
    assert_eq!(
        ev["agent"][0]["who"]["identifier"]["value"],
        doc.to_string()
    );
    assert!(
        ev["entity"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["what"]["reference"] == format!("Patient/{p1}"))
    );
    fhir::validate(ev, &fhir::Limits::default()).unwrap();

    // Read by index; a date window before the read finds nothing.
    let one = get_with_session(&t, &format!("/fhir/AuditEvent/{read_index}"), &po).await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.body);
    assert_eq!(one.body["id"], read_index.to_string());
    let none = get_with_session(
        &t,
        &format!("/fhir/AuditEvent?patient={p1}&date=lt2000-01-01"),
        &po,
    )
    .await;
    assert_eq!(none.status, StatusCode::OK);
    assert!(none.body["entry"].as_array().unwrap().is_empty());

    // Paging: _count=1 gives a next link with before=<index>.
    let paged = get_with_session(&t, "/fhir/AuditEvent?_count=1", &po).await;
    assert_eq!(paged.status, StatusCode::OK);
    let next = paged.body["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .expect("a next link");
    assert!(next["url"].as_str().unwrap().contains("before="));

    // Unsupported parameters are refused.
    let r = get_with_session(&t, "/fhir/AuditEvent?name=Smith", &po).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(r.diagnostics().contains("not supported"));

    // The CapabilityStatement lists it.
    let cap = t.get("/fhir/metadata").await;
    let ae = cap.body["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "AuditEvent")
        .expect("AuditEvent in the CapabilityStatement")
        .clone();
    let params: Vec<&str> = ae["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for p in ["patient", "agent", "action", "outcome", "subtype", "date"] {
        assert!(params.contains(&p), "{p} missing from {params:?}");
    }

    // The audit page: the privacy officer's filter finds the read; a
    // physician is refused.
    let r = get_with_session(&t, &format!("/admin/audit?patient={p1}&action=R"), &po).await;
    assert_eq!(r.status, StatusCode::OK);
    let page = page_text(&r);
    assert!(page.contains("<table id=\"audit-entries\">"), "{page}");
    assert!(
        page.contains(&format!("<tr data-index=\"{read_index}\">")),
        "{page}"
    );
    assert!(
        page.contains("href=\"/admin/audit\""),
        "the nav links to it"
    );
    let doc_session = session(&t, "dr.dana").await;
    let r = get_with_session(&t, "/admin/audit", &doc_session).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn patients_see_who_read_their_record_and_nothing_of_others() {
    let t = setup().await;
    let mine = create_patient(&t, "Mine").await;
    let other = create_patient(&t, "Other").await;
    clinician(&t, "dr.dana", "Dana Physician", &[&mine]).await;
    account(&t, "pat.one", Role::Patient, Some(&mine), "Pat One").await;
    let doc_token = token(&t, "dr.dana").await;
    let r = get_as(&t, &format!("/fhir/Patient/{mine}"), &doc_token).await;
    assert_eq!(r.status, StatusCode::OK);
    let my_read = receipt_indexes(&r)[0];
    // No relationship with the other patient: refused, and still recorded.
    let r = get_as(&t, &format!("/fhir/Patient/{other}"), &doc_token).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let other_read = receipt_indexes(&r)[0];

    let SignInStep::Done(session) = t
        .vigil
        .sign_in_password("pat.one", PASSWORD, "127.0.0.1")
        .await
        .unwrap()
    else {
        panic!("a patient signs in with a password alone");
    };
    let cookie = format!("{SESSION}={}", session.cookie);
    let r = t
        .call(
            "GET",
            "/account/access-log",
            None,
            &[("cookie", &cookie)],
            false,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let page = page_text(&r);
    assert!(page.contains("id=\"access-log-title\""), "{page}");
    assert!(page.contains("<table id=\"access-log\">"));
    assert!(
        page.contains(&format!("data-index=\"{my_read}\"")),
        "the physician's read is listed: {page}"
    );
    assert!(page.contains("Dana Physician"));
    assert!(page.contains("(physician)"));
    assert!(
        !page.contains(&format!("data-index=\"{other_read}\"")),
        "another patient's access is not listed"
    );
    assert!(!page.contains("Other"), "no other patient's data: {page}");

    // The account page links to it; a physician may not open it.
    let acc = t
        .call("GET", "/account", None, &[("cookie", &cookie)], false)
        .await;
    assert!(page_text(&acc).contains("href=\"/account/access-log\""));
    let r = t.call("GET", "/account/access-log", None, &[], false).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
}

async fn raw(t: &T, uri: &str) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let req = axum::http::Request::builder()
        .uri(uri)
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = t.router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, bytes.to_vec())
}

fn unb64(s: &Value) -> audit::Hash {
    base64::engine::general_purpose::STANDARD
        .decode(s.as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

#[tokio::test]
async fn the_public_log_serves_verifiable_tiles_and_proofs() {
    let t = setup().await;
    let p = create_patient(&t, "Public").await;
    // Enough entries for one full tile.
    for _ in 0..260 {
        assert_eq!(
            t.get(&format!("/fhir/Patient/{p}")).await.status,
            StatusCode::OK
        );
    }

    let (status, headers, keys) = raw(&t, "/audit/keys").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    let verifiers: Vec<audit::VerifierKey> = String::from_utf8(keys)
        .unwrap()
        .lines()
        .map(|l| audit::VerifierKey::parse(l).unwrap())
        .collect();
    let (status, headers, note) = raw(&t, "/audit/checkpoint").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    let note = String::from_utf8(note).unwrap();
    let cp = audit::open_checkpoint(&note, &verifiers).unwrap();
    assert!(cp.size >= 261, "{}", cp.size);

    // The first full tile and its entry bundle: immutable, and the bundle's
    // entries hash to the tile's leaves.
    let (status, headers, tile) = raw(&t, "/audit/tile/0/000").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/octet-stream");
    assert_eq!(
        headers["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(tile.len(), 256 * 32);
    let (status, _, bundle) = raw(&t, "/audit/tile/entries/000").await;
    assert_eq!(status, StatusCode::OK);
    let entries = audit::tiles::parse_entry_bundle(&bundle).unwrap();
    assert_eq!(entries.len(), 256);
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(&tile[i * 32..(i + 1) * 32], &audit::leaf_hash(e)[..]);
    }
    // A partial tile of the current size, and paths that are no tiles.
    let w = cp.size - 256;
    let partial = audit::TileId {
        level: 0,
        index: 1,
        width: u16::try_from(w.min(255)).unwrap(),
    };
    let (status, headers, bytes) = raw(&t, &format!("/audit/{}", partial.path())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bytes.len(), usize::from(partial.width) * 32);
    assert_ne!(
        headers["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(raw(&t, "/audit/tile/0/00").await.0, StatusCode::NOT_FOUND);
    assert_eq!(raw(&t, "/audit/tile/0/999").await.0, StatusCode::NOT_FOUND);

    // An inclusion proof from the endpoint verifies against the checkpoint.
    let (status, _, body) = raw(
        &t,
        &format!("/audit/proof/inclusion?index=5&size={}", cp.size),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["checkpoint"], note);
    let leaf = unb64(&v["leaf_hash"]);
    assert_eq!(&leaf[..], &tile[5 * 32..6 * 32]);
    let proof: Vec<audit::Hash> = v["proof"].as_array().unwrap().iter().map(unb64).collect();
    audit::verify_inclusion(&leaf, 5, cp.size, &proof, &cp.root).unwrap();

    // A consistency proof from size 100 to the checkpoint.
    let (status, _, body) = raw(
        &t,
        &format!("/audit/proof/consistency?old=100&new={}", cp.size),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_slice(&body).unwrap();
    let proof: Vec<audit::Hash> = v["proof"].as_array().unwrap().iter().map(unb64).collect();
    let leaves: Vec<audit::Hash> = (0..100)
        .map(|i| tile[i * 32..(i + 1) * 32].try_into().unwrap())
        .collect();
    let old_root = audit::root(&leaves);
    audit::verify_consistency(100, cp.size, &old_root, &cp.root, &proof).unwrap();

    // Out of range.
    let (status, _, _) = raw(
        &t,
        &format!("/audit/proof/inclusion?index={}&size={}", cp.size, cp.size),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
