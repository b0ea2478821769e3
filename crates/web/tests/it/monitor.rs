//! Privacy monitoring over HTTP: a physician's refused read of a VIP
//! patient's record (nothing explains it) becomes a case once a monitoring
//! pass runs; the privacy officer's queue and case pages show it with the
//! alert's reason and the timeline's explanations; dispositions with notes,
//! their CSRF and optimistic-concurrency checks; the JSON API; refusals for
//! other roles; the audit entry of a case view; and the patient's access
//! log with the explanation of each access.

use app::trail_views::AuditFilter;
use app::{NewAccount, Principal, SignInStep};
use axum::http::StatusCode;
use serde_json::{Value, json};
use store::Role;

use crate::{Resp, T, patient};

const SESSION: &str = "__Host-vigil_session";
const PASSWORD: &str = "quiet lantern over harbour 48";
const VIP_REASON: &str = "opened a VIP or restricted record";
const UNEXPLAINED: &str = "nothing in the records explains this access";

async fn account(
    t: &T,
    username: &str,
    role: Role,
    practitioner: Option<&str>,
    patient: Option<&str>,
    name: &str,
) -> String {
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
        .as_str()
        .to_owned()
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

impl S {
    async fn get(&self, t: &T, uri: &str) -> Resp {
        t.call("GET", uri, None, &[("cookie", &self.cookie)], false)
            .await
    }

    async fn api(&self, t: &T, method: &str, uri: &str, body: Option<&Value>) -> Resp {
        let mut h = vec![
            ("cookie", self.cookie.as_str()),
            ("x-csrf-token", &self.csrf),
        ];
        if body.is_some() {
            h.push(("content-type", "application/json"));
        }
        t.call(
            method,
            uri,
            body.map(|b| serde_json::to_vec(b).unwrap()),
            &h,
            false,
        )
        .await
    }

    /// Posts a form; with `csrf` false, without the CSRF field.
    async fn form(&self, t: &T, uri: &str, fields: &[(&str, &str)], csrf: bool) -> Resp {
        let mut parts: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{k}={}", enc(v)))
            .collect();
        if csrf {
            parts.push(format!("csrf={}", enc(&self.csrf)));
        }
        t.call(
            "POST",
            uri,
            Some(parts.join("&").into_bytes()),
            &[
                ("cookie", &self.cookie),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            false,
        )
        .await
    }
}

fn text(r: &Resp) -> String {
    match &r.body {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

async fn get_bearer(t: &T, uri: &str, username: &str) -> Resp {
    let token = t
        .vigil
        .issue_operator_token(
            username,
            "user/*.rs",
            3600,
            "http://vigil.test",
            "http://vigil.test/fhir",
        )
        .await
        .unwrap();
    let auth = format!("Bearer {token}");
    t.call("GET", uri, None, &[("authorization", &auth)], false)
        .await
}

struct World {
    t: T,
    dr: String,
    officer: String,
}

/// Patient `pv` (VIP, with the account `pat.vic`) and `pc` (on the
/// physician's care team); the physician `dr.dan` reads `pc` (explained by
/// the care team) and is refused `pv` (nothing explains it: a VIP alert);
/// two privacy officers and a nurse. One monitoring pass has run.
async fn world() -> World {
    let t = crate::setup_without_mfa().await;
    let mut vip = patient("Vipperson");
    vip["id"] = json!("pv");
    vip["meta"] = json!({"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VIP"}]});
    let r = t.put("/fhir/Patient/pv", &vip).await;
    assert!(r.status.is_success(), "{}", r.body);
    let mut cared = patient("Caredfor");
    cared["id"] = json!("pc");
    let r = t.put("/fhir/Patient/pc", &cared).await;
    assert!(r.status.is_success(), "{}", r.body);
    let r = t
        .put(
            "/fhir/Practitioner/pr-dan",
            &json!({"resourceType": "Practitioner", "id": "pr-dan", "name": [{"family": "Dan"}]}),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.body);
    let team = json!({"resourceType": "CareTeam", "status": "active",
        "subject": {"reference": "Patient/pc"},
        "participant": [{"member": {"reference": "Practitioner/pr-dan"}}]});
    let r = t.post("/fhir/CareTeam", &team).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let dr = account(
        &t,
        "dr.dan",
        Role::Physician,
        Some("pr-dan"),
        None,
        "Dan Physician",
    )
    .await;
    let officer = account(
        &t,
        "po.olga",
        Role::PrivacyOfficer,
        None,
        None,
        "Olga Officer",
    )
    .await;
    account(
        &t,
        "po.otto",
        Role::PrivacyOfficer,
        None,
        None,
        "Otto Officer",
    )
    .await;
    account(&t, "nu.nina", Role::Nurse, None, None, "Nina Nurse").await;
    account(
        &t,
        "pat.vic",
        Role::Patient,
        None,
        Some("pv"),
        "Vic Vipperson",
    )
    .await;

    let r = get_bearer(&t, "/fhir/Patient/pc", "dr.dan").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = get_bearer(&t, "/fhir/Patient/pv", "dr.dan").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let report = t.vigil.monitor_step().await.unwrap();
    assert!(report.alerts >= 1, "{report:?}");
    World { t, dr, officer }
}

/// The id of the one case in the officer's API listing.
async fn only_case(t: &T, po: &S) -> Value {
    let r = po.api(t, "GET", "/api/monitor/cases", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let cases = r.body["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 1, "{}", r.body);
    cases[0].clone()
}

#[tokio::test]
async fn the_queue_and_the_case_page_show_the_alert_and_the_explanations() {
    let w = world().await;
    let t = &w.t;
    let po = session(t, "po.olga").await;

    let r = po.get(t, "/admin/monitor").await;
    assert_eq!(r.status, StatusCode::OK, "{}", text(&r));
    let page = text(&r);
    assert!(page.contains("id=\"nav-monitor\""), "{page}");
    assert!(page.contains("id=\"case-queue\""), "{page}");
    let case = only_case(t, &po).await;
    let id = case["id"].as_str().unwrap().to_owned();
    assert_eq!(case["user"], w.dr);
    assert_eq!(case["status"], "open");
    assert!(
        case["kinds"].as_array().unwrap().iter().any(|k| k == "vip"),
        "{case}"
    );
    assert!(page.contains(&format!("data-case=\"{id}\"")), "{page}");
    assert!(page.contains("Dan Physician"), "{page}");
    assert!(page.contains("(physician)"), "{page}");
    assert!(page.contains("VIP or restricted record"), "{page}");
    assert!(
        page.contains(&format!("href=\"/admin/monitor/{id}\"")),
        "{page}"
    );
    // Closed statuses are not in the default view; "all" and "open" list it.
    let r = po.get(t, "/admin/monitor?status=appropriate").await;
    assert!(!text(&r).contains(&format!("data-case=\"{id}\"")));
    assert!(text(&r).contains("id=\"queue-empty\""));
    let r = po.get(t, "/admin/monitor?status=all").await;
    assert!(text(&r).contains(&format!("data-case=\"{id}\"")));

    let r = po.get(t, &format!("/admin/monitor/{id}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", text(&r));
    let page = text(&r);
    assert!(page.contains("id=\"case-alerts\""), "{page}");
    assert!(page.contains(VIP_REASON), "{page}");
    assert!(page.contains("id=\"case-timeline\""), "{page}");
    // The refused read of the VIP record, highlighted, with its explanation.
    assert!(page.contains("class=\"alerted\""), "{page}");
    assert!(page.contains(UNEXPLAINED), "{page}");
    assert!(page.contains("(none)"), "{page}");
    assert!(page.contains("Vipperson"), "{page}");
    assert!(page.contains("refused or failed"), "{page}");
    // The disposition form: CSRF, the case's version, both officers.
    assert!(page.contains("id=\"case-decide\""), "{page}");
    assert!(page.contains("name=\"csrf\""), "{page}");
    assert!(
        page.contains(&format!(
            "name=\"expected_updated\" value=\"{}\"",
            case["updated_micros"]
        )),
        "{page}"
    );
    assert!(page.contains("Olga Officer") && page.contains("Otto Officer"));
    assert!(page.contains(&format!("maxlength=\"{}\"", app::monitoring::MAX_NOTE)));

    // The JSON view has the same explanations.
    let r = po
        .api(t, "GET", &format!("/api/monitor/cases/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let reason = r.body["alerts"][0]["reason"].as_str().unwrap();
    assert!(reason.starts_with(VIP_REASON), "{}", r.body);
    let tl = r.body["timeline"].as_array().unwrap();
    assert!(
        tl.iter()
            .any(|i| i["alerted"] == true && i["explanation"]["text"] == UNEXPLAINED),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn viewing_a_case_is_audited() {
    let w = world().await;
    let t = &w.t;
    let po = session(t, "po.olga").await;
    let id = only_case(t, &po).await["id"].as_str().unwrap().to_owned();
    let r = po.get(t, &format!("/admin/monitor/{id}")).await;
    assert_eq!(r.status, StatusCode::OK);
    let view = t
        .vigil
        .session(po.cookie.strip_prefix(&format!("{SESSION}=")).unwrap())
        .await
        .unwrap();
    let found = t
        .vigil
        .audit_search(
            &Principal::User(view.caller),
            &AuditFilter {
                subtype: Some("monitor-case".into()),
                limit: 10,
                ..AuditFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "one view, one entry");
    let (_, e) = &found[0];
    assert_eq!(e.agent.account.as_deref(), Some(w.officer.as_str()));
    assert!(e.patients.iter().any(|p| p == "pv"), "{:?}", e.patients);
}

#[tokio::test]
async fn other_roles_are_refused_and_strangers_sent_to_sign_in() {
    let w = world().await;
    let t = &w.t;
    let po = session(t, "po.olga").await;
    let id = only_case(t, &po).await["id"].as_str().unwrap().to_owned();
    for who in ["nu.nina", "dr.dan"] {
        let s = session(t, who).await;
        for uri in ["/admin/monitor".to_owned(), format!("/admin/monitor/{id}")] {
            let r = s.get(t, &uri).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{who} {uri}");
            assert!(!text(&r).contains(VIP_REASON));
        }
        let r = s.api(t, "GET", "/api/monitor/cases", None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{who}: {}", r.body);
        assert!(
            r.body["error"]
                .as_str()
                .unwrap()
                .contains("privacy officer")
        );
        let r = s
            .api(t, "GET", &format!("/api/monitor/cases/{id}"), None)
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{who}: {}", r.body);
        let nav = text(&s.get(t, "/account").await);
        assert!(!nav.contains("nav-monitor"), "{who} has no monitoring link");
    }
    let r = get_bearer(t, "/api/monitor/cases", "dr.dan").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    // An officer's bearer token works as on the other JSON APIs.
    let r = get_bearer(t, "/api/monitor/cases?status=open", "po.otto").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["cases"].as_array().unwrap().len(), 1);
    let r = get_bearer(t, "/api/monitor/cases?status=closed", "po.otto").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);

    // No session: the page sends to sign-in, the API answers 401.
    let r = t.call("GET", "/admin/monitor", None, &[], false).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let loc = r.headers["location"].to_str().unwrap();
    assert!(loc.starts_with("/signin?next=%2Fadmin%2Fmonitor"), "{loc}");
    let r = t.call("GET", "/api/monitor/cases", None, &[], false).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // A session without its CSRF header is refused by the API.
    let r = t
        .call(
            "GET",
            "/api/monitor/cases",
            None,
            &[("cookie", &po.cookie)],
            false,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_disposition_with_a_note_is_recorded_once_and_checked() {
    let w = world().await;
    let t = &w.t;
    let po = session(t, "po.olga").await;
    let case = only_case(t, &po).await;
    let id = case["id"].as_str().unwrap().to_owned();
    let version = case["updated_micros"].as_i64().unwrap().to_string();
    let uri = format!("/admin/monitor/{id}");
    let note = "Asked Dr Dan: <no> reason given";

    // Without the CSRF field: refused, nothing changed.
    let before = t.snapshot().await;
    let fields = [
        ("expected_updated", version.as_str()),
        ("status", "follow_up"),
        ("assignee", w.officer.as_str()),
        ("note", note),
    ];
    let r = po.form(t, &uri, &fields, false).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Confirming a pattern needs the status appropriate.
    let mut suppress = fields.to_vec();
    suppress.push(("suppress", "1"));
    let r = po.form(t, &uri, &suppress, true).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", text(&r));
    assert!(
        text(&r).contains("only an appropriate case"),
        "{}",
        text(&r)
    );
    // An unknown status.
    let mut bad = fields.to_vec();
    bad[1] = ("status", "closed");
    let r = po.form(t, &uri, &bad, true).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(t.snapshot().await, before, "refusals change nothing");

    // The decision: back to the case with a notice; status, assignee, note.
    let r = po.form(t, &uri, &fields, true).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", text(&r));
    let loc = r.headers["location"].to_str().unwrap().to_owned();
    assert_eq!(loc, format!("{uri}?done=saved"));
    let page = text(&po.get(t, &loc).await);
    assert!(page.contains("id=\"flash\""), "{page}");
    assert!(page.contains("data-status=\"follow_up\""), "{page}");
    assert!(
        page.contains("Asked Dr Dan: &lt;no&gt; reason given"),
        "{page}"
    );
    assert!(!page.contains("<no>"), "the note is escaped");
    assert!(
        page.contains("<span class=\"author\">Olga Officer</span>"),
        "{page}"
    );
    assert!(
        page.contains("id=\"case-assignee-now\">Olga Officer<"),
        "{page}"
    );

    // The same (now stale) form again: 409 with a reload link, nothing changed.
    let before = t.snapshot().await;
    let r = po.form(t, &uri, &fields, true).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", text(&r));
    assert!(text(&r).contains("id=\"case-reload\""), "{}", text(&r));
    assert!(text(&r).contains("changed since you opened it"));
    assert_eq!(
        t.snapshot().await,
        before,
        "a stale decision changes nothing"
    );

    // The JSON API: a stale version is 409 as JSON; a current one records.
    let body = json!({"expected_updated": case["updated_micros"], "status": "appropriate"});
    let r = po
        .api(
            t,
            "POST",
            &uri.replace("/admin/monitor", "/api/monitor/cases"),
            Some(&body),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(
        r.body["error"].as_str().unwrap().contains("reload"),
        "{}",
        r.body
    );
    let now = only_case(t, &po).await;
    assert_eq!(now["status"], "follow_up");
    let api = format!("/api/monitor/cases/{id}");
    let r = po
        .api(
            t,
            "POST",
            &api,
            Some(&json!({"expected_updated": now["updated_micros"], "status": "bogus"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let r = po
        .api(
            t,
            "POST",
            &api,
            Some(&json!({"expected_updated": now["updated_micros"], "status": "appropriate", "unknown": 1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let r = po
        .api(
            t,
            "POST",
            &api,
            Some(&json!({
                "expected_updated": now["updated_micros"], "status": "appropriate",
                "note": "covering colleague", "suppress": true
            })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["case"]["status"], "appropriate");
    // Leaving the assignee out leaves the assignment as it was.
    assert_eq!(r.body["case"]["assignee"], now["assignee"]);
    assert_ne!(now["assignee"], Value::Null);
    let notes: Vec<&str> = r.body["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["text"].as_str().unwrap())
        .collect();
    assert_eq!(notes, vec![note, "covering colleague"]);
    // Closed cases leave the default queue.
    let page = text(&po.get(t, "/admin/monitor").await);
    assert!(!page.contains(&format!("data-case=\"{id}\"")), "{page}");
}

#[tokio::test]
async fn the_patients_access_log_shows_the_explanations() {
    let w = world().await;
    let t = &w.t;
    let pat = session(t, "pat.vic").await;
    let r = pat.get(t, "/account/access-log").await;
    assert_eq!(r.status, StatusCode::OK, "{}", text(&r));
    let page = text(&r);
    assert!(page.contains("Dan Physician"), "{page}");
    assert!(
        page.contains(&format!(
            "<span class=\"explanation\" data-strength=\"none\">Why: {UNEXPLAINED}</span>"
        )),
        "{page}"
    );
}

/// A clinician joins a patient's care team and opens the chart at once: the
/// next pass, whose context was read before the care team existed, reads
/// the context again rather than store the access as unexplained (or raise
/// an alert on it).
#[tokio::test]
async fn a_relationship_recorded_just_before_the_access_explains_it() {
    let w = world().await;
    let t = &w.t;
    let team = json!({"resourceType": "CareTeam", "status": "active",
        "subject": {"reference": "Patient/pv"},
        "participant": [{"member": {"reference": "Practitioner/pr-dan"}}]});
    let r = t.post("/fhir/CareTeam", &team).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = get_bearer(t, "/fhir/Patient/pv", "dr.dan").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let report = t.vigil.monitor_step().await.unwrap();
    assert!(report.accesses >= 1, "{report:?}");
    assert_eq!(report.alerts, 0, "{report:?}");
    let vic = session(t, "pat.vic").await;
    let page = vic.get(t, "/account/access-log").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        text(&page).contains("on the patient&#39;s care team")
            || text(&page).contains("on the patient's care team"),
        "{}",
        text(&page)
    );
}
