//! The access policy over HTTP: denials explain themselves (API and pages)
//! and leak nothing; a clinician's chart shows what the policy allows; the
//! break-the-glass pages and API; the privacy officer's review queue, policy
//! page and what-if; the patient sees emergency access marked.

use app::{NewAccount, Principal, SignInStep};
use axum::http::StatusCode;
use serde_json::{Value, json};
use store::Role;

use crate::{Resp, T, patient};

const SESSION: &str = "__Host-vigil_session";
const PASSWORD: &str = "quiet lantern over harbour 48";

async fn setup() -> T {
    crate::setup_without_mfa().await
}

async fn account(
    t: &T,
    username: &str,
    role: Role,
    practitioner: Option<&str>,
    patient: Option<&str>,
    name: &str,
) {
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
        .unwrap();
}

/// Two patients (A on the physician's care team, B not), each with an
/// Observation; the physician `dr.cara`, the privacy officer `po.pia` and
/// patient B's account `pat.bea`.
async fn clinic(t: &T) {
    for (id, family) in [("pa", "Careteam"), ("pb", "Stranger")] {
        let mut p = patient(family);
        p["id"] = json!(id);
        let r = t.put(&format!("/fhir/Patient/{id}"), &p).await;
        assert!(r.status.is_success(), "{}", r.body);
        let obs = json!({"resourceType": "Observation", "id": format!("obs-{id}"), "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
            "subject": {"reference": format!("Patient/{id}")},
            "effectiveDateTime": "2025-01-02T09:00:00Z",
            "valueQuantity": {"value": 72, "unit": "beats/minute"}});
        let r = t.put(&format!("/fhir/Observation/obs-{id}"), &obs).await;
        assert!(r.status.is_success(), "{}", r.body);
    }
    let r = t
        .put(
            "/fhir/Practitioner/pr-cara",
            &json!({"resourceType": "Practitioner", "id": "pr-cara", "name": [{"family": "Cara"}]}),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.body);
    let team = json!({"resourceType": "CareTeam", "status": "active",
        "subject": {"reference": "Patient/pa"},
        "participant": [{"member": {"reference": "Practitioner/pr-cara"}}]});
    // The care team is written as the operator (the clinic's own set-up).
    t.vigil
        .create(&Principal::Operator, model::ResourceType::CareTeam, team)
        .await
        .unwrap();
    account(
        t,
        "dr.cara",
        Role::Physician,
        Some("pr-cara"),
        None,
        "Cara Physician",
    )
    .await;
    account(t, "po.pia", Role::PrivacyOfficer, None, None, "Pia Officer").await;
    account(
        t,
        "pat.bea",
        Role::Patient,
        None,
        Some("pb"),
        "Bea Stranger",
    )
    .await;
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

/// A session: its cookie header and CSRF token.
struct S {
    cookie: String,
    csrf: String,
}

async fn session(t: &T, username: &str) -> S {
    let SignInStep::Done(s) = t
        .vigil
        .sign_in_password(username, PASSWORD, "127.0.0.1")
        .await
        .unwrap()
    else {
        panic!("{username} signs in with a password alone");
    };
    S {
        cookie: format!("{SESSION}={}", s.cookie),
        csrf: s.csrf,
    }
}

impl S {
    async fn get(&self, t: &T, uri: &str) -> Resp {
        t.call(
            "GET",
            uri,
            None,
            &[("cookie", &self.cookie), ("x-csrf-token", &self.csrf)],
            false,
        )
        .await
    }

    /// Posts a form with the session's CSRF token.
    async fn form(&self, t: &T, uri: &str, fields: &[(&str, &str)]) -> Resp {
        let mut body = format!("csrf={}", enc(&self.csrf));
        for (k, v) in fields {
            body.push_str(&format!("&{k}={}", enc(v)));
        }
        t.call(
            "POST",
            uri,
            Some(body.into_bytes()),
            &[
                ("cookie", &self.cookie),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            false,
        )
        .await
    }

    async fn json(&self, t: &T, method: &str, uri: &str, body: &Value) -> Resp {
        t.call(
            method,
            uri,
            Some(serde_json::to_vec(body).unwrap()),
            &[
                ("cookie", &self.cookie),
                ("x-csrf-token", &self.csrf),
                ("content-type", "application/json"),
            ],
            false,
        )
        .await
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn text(r: &Resp) -> String {
    match &r.body {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

fn location(r: &Resp) -> String {
    r.headers
        .get("location")
        .and_then(|l| l.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn a_denial_names_its_rule_and_a_search_leaks_nothing() {
    let t = setup().await;
    clinic(&t).await;
    let dr = token(&t, "dr.cara").await;

    let r = get_as(&t, "/fhir/Patient/pb", &dr).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let d = r.diagnostics();
    assert!(d.contains("default-deny"), "{d}");
    assert!(d.contains("missing: "), "{d}");
    assert!(d.contains("way forward: "), "{d}");
    assert!(d.contains("lesson: L-RELATIONSHIP"), "{d}");
    assert!(!d.contains("Stranger"), "no data in a denial: {d}");

    let r = get_as(&t, "/fhir/Patient/pa", &dr).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["id"], "pa");

    // A search finds nothing of a patient without a relationship, not even a count.
    let r = get_as(&t, "/fhir/Patient?family=Stranger&_total=accurate", &dr).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["resourceType"], "Bundle");
    assert_eq!(r.body["total"], 0, "{}", r.body);
    assert!(
        r.body["entry"].as_array().is_none_or(Vec::is_empty),
        "{}",
        r.body
    );
    let r = get_as(&t, "/fhir/Observation?patient=pb&_total=accurate", &dr).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["total"], 0, "{}", r.body);
    let r = get_as(&t, "/fhir/Observation?patient=pa&_total=accurate", &dr).await;
    assert_eq!(r.body["total"], 1, "{}", r.body);
}

#[tokio::test]
async fn charts_denials_and_breaking_the_glass_through_the_pages() {
    let t = setup().await;
    clinic(&t).await;
    let dr = session(&t, "dr.cara").await;

    // The nav links the clinician's pages.
    let r = dr.get(&t, "/chart").await;
    assert_eq!(r.status, StatusCode::OK);
    let page = text(&r);
    assert!(page.contains("id=\"nav-chart\""), "{page}");
    assert!(page.contains("id=\"chart-search\""), "{page}");

    // The search lists only the patient the physician may see.
    let r = dr.get(&t, "/chart?birthdate=1980-05-17").await;
    let page = text(&r);
    assert!(page.contains("href=\"/chart/pa\""), "{page}");
    assert!(!page.contains("/chart/pb"), "{page}");
    assert!(!page.contains("Stranger"), "{page}");

    // A's chart: demographics and the Observation.
    let r = dr.get(&t, "/chart/pa").await;
    assert_eq!(r.status, StatusCode::OK);
    let page = text(&r);
    assert!(page.contains("id=\"chart-demographics\""), "{page}");
    assert!(page.contains("Careteam"), "{page}");
    assert!(page.contains("data-id=\"obs-pa\""), "{page}");
    assert!(page.contains("Heart rate: 72 beats/minute"), "{page}");

    // B's chart: the denial page, with the way to break the glass.
    let r = dr.get(&t, "/chart/pb").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let page = text(&r);
    for id in [
        "id=\"denial\"",
        "id=\"denial-rule\"",
        "id=\"denial-reason\"",
        "id=\"denial-missing\"",
        "id=\"denial-way-forward\"",
        "id=\"denial-lesson\"",
        "href=\"/learn/L-RELATIONSHIP\"",
        "id=\"break-glass-link\" class=\"button\" href=\"/break-glass/pb\"",
        "Access denied",
        "default-deny",
    ] {
        assert!(page.contains(id), "{id} missing: {page}");
    }
    assert!(!page.contains("Stranger"), "{page}");

    // The break-the-glass form; a short justification is refused.
    let r = dr.get(&t, "/break-glass/pb").await;
    assert_eq!(r.status, StatusCode::OK);
    let page = text(&r);
    assert!(page.contains("id=\"break-glass-form\""), "{page}");
    assert!(page.contains("Emergency treatment"), "{page}");
    assert!(page.contains("<option value=\"60\" selected>"), "{page}");
    let r = dr
        .form(
            &t,
            "/break-glass/pb",
            &[
                ("reason", "ETREAT"),
                ("justification", "x"),
                ("minutes", "60"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", text(&r));
    // Without the CSRF token: refused.
    let r = t
        .call(
            "POST",
            "/break-glass/pb",
            Some(b"reason=ETREAT&justification=unconscious+in+the+ER&minutes=60".to_vec()),
            &[
                ("cookie", &dr.cookie),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            false,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = dr
        .form(
            &t,
            "/break-glass/pb",
            &[
                ("reason", "ETREAT"),
                ("justification", "unconscious in the emergency room"),
                ("minutes", "30"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", text(&r));
    assert_eq!(location(&r), "/chart/pb");
    let r = dr.get(&t, "/chart/pb").await;
    assert_eq!(r.status, StatusCode::OK, "{}", text(&r));
    let page = text(&r);
    assert!(page.contains("id=\"emergency-banner\""), "{page}");
    assert!(page.contains("Emergency access until"), "{page}");
    assert!(page.contains("data-id=\"obs-pb\""), "{page}");

    // The API with the session sees B too, and lists the grant.
    let r = dr.get(&t, "/fhir/Patient/pb").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = dr.get(&t, "/api/break-glass").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let grants = r.body.as_array().unwrap();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0]["patient"], "pb");
    assert_eq!(grants[0]["live"], true);
    let grant = grants[0]["id"].as_str().unwrap().to_owned();
    let r = dr.get(&t, "/break-glass").await;
    let page = text(&r);
    assert!(page.contains(&format!("data-grant=\"{grant}\"")), "{page}");
    assert!(page.contains("End now"), "{page}");

    // The privacy officer reviews it.
    let po = session(&t, "po.pia").await;
    let r = po.get(&t, "/admin/break-glass").await;
    assert_eq!(r.status, StatusCode::OK);
    let page = text(&r);
    assert!(page.contains("id=\"nav-break-glass-reviews\""), "{page}");
    assert!(page.contains(&format!("data-grant=\"{grant}\"")), "{page}");
    assert!(page.contains("unconscious in the emergency room"), "{page}");
    assert_eq!(
        dr.get(&t, "/admin/break-glass").await.status,
        StatusCode::FORBIDDEN
    );
    let r = po
        .form(
            &t,
            &format!("/admin/break-glass/{grant}/review"),
            &[("outcome", "appropriate"), ("note", "checked with the ER")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", text(&r));
    let r = po.get(&t, "/api/break-glass/reviews").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.as_array().unwrap().is_empty(), "{}", r.body);

    // The patient sees the physician's accesses marked.
    let pat = session(&t, "pat.bea").await;
    let r = pat.get(&t, "/account/access-log").await;
    let page = text(&r);
    assert!(page.contains("class=\"break-glass\""), "{page}");
    assert!(page.contains("Emergency access"), "{page}");

    // Ending the grant closes B's chart again.
    let r = dr
        .form(&t, &format!("/break-glass/grants/{grant}/end"), &[])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", text(&r));
    assert_eq!(dr.get(&t, "/chart/pb").await.status, StatusCode::FORBIDDEN);
    let r = dr.get(&t, "/api/break-glass").await;
    assert_eq!(r.body[0]["live"], false, "{}", r.body);
}

#[tokio::test]
async fn the_privacy_officer_reads_tests_and_edits_the_policy() {
    let t = setup().await;
    clinic(&t).await;
    let po = session(&t, "po.pia").await;

    let r = po.get(&t, "/admin/policy").await;
    assert_eq!(r.status, StatusCode::OK);
    let page = text(&r);
    for id in [
        "id=\"nav-policy\"",
        "id=\"policy-version\">0<",
        "id=\"policy-rules\"",
        "id=\"policy-form\"",
        "id=\"what-if-form\"",
        "id=\"policy-versions\"",
    ] {
        assert!(page.contains(id), "{id} missing: {page}");
    }
    let dr = session(&t, "dr.cara").await;
    assert_eq!(
        dr.get(&t, "/admin/policy").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        dr.get(&t, "/api/policy").await.status,
        StatusCode::FORBIDDEN
    );

    // What if: the physician reads A (allowed) and B (denied, with why).
    let r = po
        .form(
            &t,
            "/admin/policy/what-if",
            &[
                ("username", "dr.cara"),
                ("action", "read"),
                ("resource", "Patient/pa"),
                ("purpose", "TREAT"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", text(&r));
    assert!(text(&r).contains("id=\"wi-decision\" class=\"allow\">Allow<"));
    let r = po
        .form(
            &t,
            "/admin/policy/what-if",
            &[
                ("username", "dr.cara"),
                ("action", "read"),
                ("resource", "Patient/pb"),
                ("purpose", "TREAT"),
            ],
        )
        .await;
    let page = text(&r);
    assert!(page.contains("class=\"deny\">Deny<"), "{page}");
    assert!(page.contains("id=\"wi-missing\""), "{page}");
    assert!(page.contains("id=\"wi-way-forward\""), "{page}");
    let r = po
        .json(
            &t,
            "POST",
            "/api/policy/what-if",
            &json!({"username": "dr.cara", "action": "read", "resource": "Patient/pb"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["decision"]["allow"], false);
    assert_eq!(r.body["decision"]["policies"][0], "default-deny");

    // An invalid text is refused and changes nothing.
    let r = po
        .form(
            &t,
            "/admin/policy",
            &[
                ("text", "permit (principal, action, resource"),
                ("comment", "broken"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", text(&r));
    assert!(text(&r).contains("class=\"error\""));
    let r = po
        .json(
            &t,
            "POST",
            "/api/policy/check",
            &json!({"text": "permit ("}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["valid"], false);
    let r = po.get(&t, "/api/policy").await;
    assert_eq!(r.body["version"], 0, "{}", r.body);

    // The current text saved again is version 1.
    let current = r.body["text"].as_str().unwrap().to_owned();
    let r = po
        .json(
            &t,
            "PUT",
            "/api/policy",
            &json!({"text": current, "comment": "the shipped rules, on record"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["version"], 1);
    let r = po.get(&t, "/api/policy/versions").await;
    assert_eq!(r.body.as_array().unwrap().len(), 1, "{}", r.body);
    let r = po.get(&t, "/admin/policy/versions/1").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(text(&r).contains("id=\"policy-version-text\""));

    // Bearer tokens cannot break the glass (no recent sign-in to show).
    let tok = token(&t, "dr.cara").await;
    let auth = format!("Bearer {tok}");
    let r = t
        .call(
            "POST",
            "/api/break-glass",
            Some(
                serde_json::to_vec(&json!({"patient": "pb", "reason": "ETREAT",
                    "justification": "unconscious in the ER", "minutes": 15}))
                .unwrap(),
            ),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            false,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(r.body["error"].as_str().unwrap().contains("sign in again"));
}

/// The benchmark's diagnostic read of a decision slice is an operator's
/// alone: a person (here a privacy officer) is refused.
#[tokio::test]
async fn decision_slices_are_for_operators_only() {
    let t = setup().await;
    let r = t.post("/fhir/Patient", &crate::patient("Slice")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let id = model::ResourceId::new(r.body["id"].as_str().unwrap()).unwrap();
    let slice = t
        .vigil
        .decision_slice(&Principal::Operator, model::ResourceType::Patient, &id)
        .await
        .unwrap();
    assert_eq!(slice.resource.patient.as_deref(), Some(id.as_str()));
    let person = Principal::User(app::Caller {
        account: Some(store::AccountId::from_bytes([7; 16])),
        role: Some(Role::PrivacyOfficer),
        username: None,
        client_id: None,
        scopes: Default::default(),
        patient: None,
        via: app::Via::Session,
        practitioner: None,
        own_patient: None,
        mfa: true,
    });
    let refused = t
        .vigil
        .decision_slice(&person, model::ResourceType::Patient, &id)
        .await;
    assert!(
        matches!(refused, Err(app::AppError::Forbidden(_))),
        "{refused:?}"
    );
}
