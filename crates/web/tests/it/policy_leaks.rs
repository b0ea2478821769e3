//! Adversarial: a caller without access learns nothing of a hidden resource.
//!
//! Patient A (`pa`) is on the physician's care team; patient H (`hidxpat`)
//! has no relationship with them. Both have a record covering every served
//! type's search parameters, with values shared where possible, so a search
//! that derives its value from H's resource also matches A's. Every search
//! parameter of every served type is tried (data-driven over
//! `fhir::search::params_for`), with every total mode, `_summary=count`,
//! paging, every `_include`/`_revinclude` path, chains and `_has`; the
//! physician's answer must equal what an unrestricted backend service gets
//! with H's resources taken out (matches, includes, total, links).
//! Every H resource id starts with `hidx`, so an H entry is recognised by id.

use std::collections::BTreeSet;

use app::{NewAccount, Principal};
use axum::http::StatusCode;
use fhir::search::{ParamDef, ParamKind};
use model::ResourceType;
use serde_json::{Value, json};
use store::Role;

use crate::{Resp, T, setup};

/// The prefix of every id in H's compartment.
const H: &str = "hidx";
/// Strings only H's data holds (never in a query, never in A's data).
const H_MARKERS: [&str; 3] = ["Hidxgiven", "MRN-HIDX", "hidx-secret-note"];

// ---------------------------------------------------------------------
// Helpers shared by the policy_* adversarial suites.
// ---------------------------------------------------------------------

/// Creates an account (no password: it signs in with tokens only).
pub async fn account(
    t: &T,
    username: &str,
    role: Role,
    practitioner: Option<&str>,
    patient: Option<&str>,
) -> store::AccountId {
    t.vigil
        .create_account(
            &Principal::Operator,
            NewAccount {
                username: username.into(),
                role,
                practitioner: practitioner.map(|p| model::ResourceId::new(p).unwrap()),
                patient: patient.map(|p| model::ResourceId::new(p).unwrap()),
                display_name: Some(format!("{username} (test)")),
                email: None,
            },
            None,
        )
        .await
        .unwrap()
}

/// An operator-issued bearer token for a person (`user/*.cruds` for the
/// workforce, `patient/*.rs` for a patient account).
pub async fn token(t: &T, username: &str, patient: bool) -> String {
    let scopes = if patient {
        "patient/*.rs"
    } else {
        "user/*.cruds"
    };
    t.vigil
        .issue_operator_token(
            username,
            scopes,
            3600,
            "http://vigil.test",
            "http://vigil.test/fhir",
        )
        .await
        .unwrap()
}

/// A request as a person (bearer token), with extra headers.
pub async fn call_as(
    t: &T,
    method: &str,
    uri: &str,
    token: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Resp {
    let auth = format!("Bearer {token}");
    let mut h: Vec<(&str, &str)> = vec![("authorization", &auth)];
    h.extend_from_slice(headers);
    t.call(
        method,
        uri,
        body.map(|b| serde_json::to_vec(b).unwrap()),
        &h,
        false,
    )
    .await
}

pub async fn get_as(t: &T, uri: &str, token: &str) -> Resp {
    call_as(t, "GET", uri, token, None, &[]).await
}

/// PUTs a resource as the backend service (the clinic's own loading).
pub async fn put_ok(t: &T, r: &Value) {
    let uri = format!(
        "/fhir/{}/{}",
        r["resourceType"].as_str().unwrap(),
        r["id"].as_str().unwrap()
    );
    let resp = t.put(&uri, r).await;
    assert!(resp.status.is_success(), "PUT {uri}: {}", resp.body);
}

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    use std::fmt::Write as _;
    s.bytes().fold(String::new(), |mut out, b| {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
        out
    })
}

/// `Type/id` of a Bundle's entries with the given search mode.
pub fn entries(body: &Value, mode: &str) -> BTreeSet<String> {
    body["entry"]
        .as_array()
        .map(|es| {
            es.iter()
                .filter(|e| e["search"]["mode"] == mode)
                .map(|e| {
                    format!(
                        "{}/{}",
                        e["resource"]["resourceType"].as_str().unwrap_or("?"),
                        e["resource"]["id"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn link(body: &Value, relation: &str) -> Option<String> {
    body["link"].as_array().and_then(|ls| {
        ls.iter()
            .find(|l| l["relation"] == relation)
            .map(|l| l["url"].as_str().unwrap_or("").to_owned())
    })
}

fn is_h(entry: &str) -> bool {
    entry
        .split_once('/')
        .is_some_and(|(_, id)| id.starts_with(H))
}

// ---------------------------------------------------------------------
// The two records.
// ---------------------------------------------------------------------

/// The record of one patient (`p` the Patient id, `x` the id prefix).
/// Values are shared between A and H except where H's are unique markers.
fn record(p: &str, x: &str, hidden: bool) -> Vec<Value> {
    let pref = format!("Patient/{p}");
    let enc_ref = format!("Encounter/{x}-enc");
    let rp = format!("RelatedPerson/{x}-rp");
    let given: Vec<&str> = if hidden {
        vec!["Alex", "Hidxgiven"]
    } else {
        vec!["Alex"]
    };
    let mrn = if hidden { "MRN-HIDX" } else { "MRN-A" };
    let note = if hidden {
        "hidx-secret-note"
    } else {
        "a plain note"
    };
    let day = "2025-01-02";
    let at = "2025-01-02T09:00:00Z";
    let cc = |system: &str, code: &str| json!({"coding": [{"system": system, "code": code}]});
    let telecom = json!([
        {"system": "phone", "value": "555-0100"},
        {"system": "email", "value": "shared@example.org"}
    ]);
    vec![
        json!({"resourceType": "Patient", "id": p,
            "identifier": [{"system": "urn:mrn", "value": mrn}],
            "name": [{"family": "Sharedfam", "given": given}],
            "birthDate": "1980-05-17", "gender": "female", "active": true,
            "telecom": telecom,
            "generalPractitioner": [{"reference": "Practitioner/pr-other"}],
            "managingOrganization": {"reference": "Organization/org-1"}}),
        json!({"resourceType": "RelatedPerson", "id": format!("{x}-rp"),
            "patient": {"reference": pref},
            "identifier": [{"system": "urn:rp", "value": "RP-1"}],
            "name": [{"family": "Sharedfam", "given": ["Robin"]}],
            "telecom": telecom}),
        json!({"resourceType": "Encounter", "id": format!("{x}-enc"), "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": pref},
            "participant": [
                {"individual": {"reference": "Practitioner/pr-other"}},
                {"individual": {"reference": if hidden { rp.clone() } else { format!("RelatedPerson/{H}-rp") }}}
            ],
            "period": {"start": at, "end": "2025-01-02T10:00:00Z"},
            "reasonCode": [cc("http://snomed.info/sct", "29857009")]}),
        json!({"resourceType": "Appointment", "id": format!("{x}-appt"), "status": "booked",
        "start": at, "end": "2025-01-02T09:30:00Z",
        "participant": [
            {"actor": {"reference": pref}, "status": "accepted"},
            {"actor": {"reference": "Practitioner/pr-other"}, "status": "accepted"},
            {"actor": {"reference": if hidden { rp.clone() } else { format!("RelatedPerson/{H}-rp") }}, "status": "accepted"}
        ]}),
        json!({"resourceType": "CareTeam", "id": format!("{x}-ct"), "status": "active",
        "category": [cc("http://loinc.org", "LA27976-2")],
        "subject": {"reference": pref},
        "encounter": {"reference": if hidden { enc_ref.clone() } else { format!("Encounter/{H}-enc") }},
        "period": {"start": day},
        "participant": [
            {"member": {"reference": "Practitioner/pr-other"}},
            {"member": {"reference": if hidden { rp.clone() } else { format!("RelatedPerson/{H}-rp") }}}
        ]}),
        json!({"resourceType": "ServiceRequest", "id": format!("{x}-sr"), "status": "active",
            "intent": "order",
            "category": [cc("http://snomed.info/sct", "108252007")],
            "code": cc("http://loinc.org", "24356-8"),
            "subject": {"reference": pref},
            "encounter": {"reference": enc_ref},
            "performer": [
                {"reference": "Practitioner/pr-other"},
                {"reference": if hidden { rp.clone() } else { format!("RelatedPerson/{H}-rp") }}
            ],
            "authoredOn": at,
            "note": [{"text": note}]}),
        json!({"resourceType": "Observation", "id": format!("{x}-obs"), "status": "final",
            "category": [cc("http://terminology.hl7.org/CodeSystem/observation-category", "vital-signs")],
            "code": cc("http://loinc.org", "8867-4"),
            "subject": {"reference": pref},
            "encounter": {"reference": enc_ref},
            "performer": [{"reference": "Practitioner/pr-other"}],
            "effectiveDateTime": at,
            "valueQuantity": {"value": 72, "unit": "beats/minute"},
            "note": [{"text": note}]}),
        // Points at the other patient's data (A's at H's; H's at A's).
        json!({"resourceType": "Observation", "id": format!("{x}-obs-x"), "status": "final",
            "code": cc("http://loinc.org", "8867-4"),
            "subject": {"reference": pref},
            "encounter": {"reference": if hidden { "Encounter/a-enc".to_owned() } else { format!("Encounter/{H}-enc") }},
            "performer": [{"reference": if hidden { "RelatedPerson/a-rp".to_owned() } else { format!("RelatedPerson/{H}-rp") }}],
            "effectiveDateTime": at}),
        json!({"resourceType": "Condition", "id": format!("{x}-cond"),
            "clinicalStatus": cc("http://terminology.hl7.org/CodeSystem/condition-clinical", "active"),
            "category": [cc("http://terminology.hl7.org/CodeSystem/condition-category", "problem-list-item")],
            "code": cc("http://snomed.info/sct", "38341003"),
            "subject": {"reference": pref},
            "encounter": {"reference": if hidden { enc_ref.clone() } else { format!("Encounter/{H}-enc") }},
            "onsetDateTime": at, "recordedDate": at,
            "note": [{"text": note}]}),
        json!({"resourceType": "MedicationRequest", "id": format!("{x}-mr"), "status": "active",
            "intent": "order",
            "category": [cc("http://terminology.hl7.org/CodeSystem/medicationrequest-category", "outpatient")],
            "medicationCodeableConcept": cc("http://www.nlm.nih.gov/research/umls/rxnorm", "197361"),
            "subject": {"reference": pref},
            "encounter": {"reference": enc_ref},
            "authoredOn": at}),
        json!({"resourceType": "DocumentReference", "id": format!("{x}-doc"), "status": "current",
            "category": [cc("http://loinc.org", "11488-4")],
            "subject": {"reference": pref},
            "date": at,
            "context": {"encounter": [{"reference": enc_ref}]},
            "content": [{"attachment": {"contentType": "text/plain", "data": "aGVsbG8="}}]}),
        json!({"resourceType": "Communication", "id": format!("{x}-com"), "status": "completed",
            "category": [cc("http://terminology.hl7.org/CodeSystem/communication-category", "notification")],
            "subject": {"reference": pref},
            "encounter": {"reference": enc_ref},
            "sent": at,
            "payload": [{"contentString": note}]}),
        json!({"resourceType": "Consent", "id": format!("{x}-cons"), "status": "active",
            "scope": cc("http://terminology.hl7.org/CodeSystem/consentscope", "patient-privacy"),
            "category": [cc("http://loinc.org", "59284-0")],
            "patient": {"reference": pref},
            "dateTime": at,
            "policyRule": cc("http://terminology.hl7.org/CodeSystem/v3-ActCode", "OPTIN"),
            "provision": {"type": "permit"}}),
    ]
}

/// H's extra Observation with a code only H has (for `_has`).
fn h_only() -> Value {
    json!({"resourceType": "Observation", "id": "hidx-obs-only", "status": "final",
        "code": {"coding": [{"system": "urn:local", "code": "hidx-only-code"}]},
        "subject": {"reference": "Patient/hidxpat"},
        "effectiveDateTime": "2025-01-02T09:00:00Z"})
}

struct World {
    t: T,
    /// The physician on A's care team.
    dr: String,
    /// H's resources, as loaded.
    h: Vec<Value>,
}

async fn world() -> World {
    let t = setup().await;
    put_ok(
        &t,
        &json!({"resourceType": "Organization", "id": "org-1", "name": "Clinic"}),
    )
    .await;
    for (id, family) in [("pr-doc", "Doc"), ("pr-other", "Other")] {
        put_ok(
            &t,
            &json!({"resourceType": "Practitioner", "id": id, "name": [{"family": family}]}),
        )
        .await;
    }
    let mut h = record("hidxpat", H, true);
    let a = record("pa", "a", false);
    // H first (A refers to it), then A, then H's pointers at A.
    let h_x = h.remove(7);
    for r in h.iter().chain(a.iter()) {
        put_ok(&t, r).await;
    }
    put_ok(&t, &h_x).await;
    put_ok(&t, &h_only()).await;
    h.push(h_x);
    h.push(h_only());
    // The physician's relationship with A only.
    put_ok(
        &t,
        &json!({"resourceType": "CareTeam", "id": "a-ct-doc", "status": "active",
            "subject": {"reference": "Patient/pa"},
            "participant": [{"member": {"reference": "Practitioner/pr-doc"}}]}),
    )
    .await;
    account(&t, "dr.leak", Role::Physician, Some("pr-doc"), None).await;
    let dr = token(&t, "dr.leak", false).await;
    World { t, dr, h }
}

// ---------------------------------------------------------------------
// Deriving a query value from H's resource.
// ---------------------------------------------------------------------

/// The values at a search parameter path (`a.b`, `telecom(system=phone)`,
/// `effective[x]`), arrays flattened.
fn select(v: &Value, path: &str) -> Vec<Value> {
    let mut cur = vec![v.clone()];
    for seg in path.split('.') {
        let (name, filter) = match seg.split_once('(') {
            Some((n, f)) => {
                let f = f.trim_end_matches(')');
                (n, f.split_once('='))
            }
            None => (seg, None),
        };
        let mut next = Vec::new();
        for c in &cur {
            let Some(obj) = c.as_object() else { continue };
            let found: Vec<&Value> = match name.strip_suffix("[x]") {
                Some(prefix) => obj
                    .iter()
                    .filter(|(k, _)| k.starts_with(prefix))
                    .map(|(_, v)| v)
                    .collect(),
                None => obj.get(name).into_iter().collect(),
            };
            for f in found {
                match f {
                    Value::Array(a) => next.extend(a.iter().cloned()),
                    other => next.push(other.clone()),
                }
            }
        }
        if let Some((k, want)) = filter {
            next.retain(|n| n[k] == want);
        }
        cur = next;
    }
    cur
}

/// A query value for `def` that matches `r` (None: `r` has no value there).
fn value_for(def: &ParamDef, r: &Value) -> Option<String> {
    let vals: Vec<Value> = def.paths.iter().flat_map(|p| select(r, p)).collect();
    vals.iter().find_map(|v| match def.kind {
        ParamKind::Reference => {
            let s = v["reference"].as_str()?;
            let (ty, _) = s.split_once('/')?;
            def.targets
                .iter()
                .any(|t| t.as_str() == ty)
                .then(|| s.to_owned())
        }
        ParamKind::Token => match v {
            Value::String(s) => Some(s.clone()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Object(o) => {
                if let Some(c) = o.get("coding") {
                    c[0]["code"].as_str().map(str::to_owned)
                } else if let Some(c) = o.get("code") {
                    c.as_str().map(str::to_owned)
                } else {
                    o.get("value")?.as_str().map(str::to_owned)
                }
            }
            _ => None,
        },
        ParamKind::Date => match v {
            Value::String(s) => s.get(..10).map(str::to_owned),
            Value::Object(o) => o.get("start")?.as_str()?.get(..10).map(str::to_owned),
            _ => None,
        },
        ParamKind::String => match v {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o.get("family")?.as_str().map(str::to_owned),
            _ => None,
        },
        ParamKind::Number | ParamKind::Quantity | ParamKind::Uri => None,
    })
}

/// The types a search may cover (directory types are readable by all).
fn served_clinical() -> impl Iterator<Item = ResourceType> {
    ResourceType::ALL.into_iter().filter(|t| {
        !matches!(
            t,
            ResourceType::Practitioner
                | ResourceType::PractitionerRole
                | ResourceType::Organization
        )
    })
}

/// How to pick A's resources of a type (for includes).
fn a_selector(t: ResourceType) -> &'static str {
    if t == ResourceType::Patient {
        "_id=pa"
    } else {
        "patient=Patient/pa"
    }
}

// ---------------------------------------------------------------------
// The oracle: the physician sees what the service sees, minus H.
// ---------------------------------------------------------------------

struct Checker<'a> {
    w: &'a World,
    checks: usize,
    /// Queries whose unrestricted answer held H's data (the check bites).
    biting: usize,
    /// Queries whose answer for the physician is not empty (A's data shows).
    visible: usize,
    queries: usize,
}

impl Checker<'_> {
    fn ok(&mut self, cond: bool, what: impl FnOnce() -> String) {
        self.checks += 1;
        assert!(cond, "{}", what());
    }

    /// No H entry, no H marker anywhere but the echoed query in the links.
    fn no_h(&mut self, q: &str, body: &Value) {
        let ids: Vec<String> = ["match", "include", "outcome"]
            .iter()
            .flat_map(|m| entries(body, m))
            .collect();
        self.ok(!ids.iter().any(|e| is_h(e)), || {
            format!("LEAK {q}: an H entry in {ids:?}")
        });
        let mut b = body.clone();
        if let Some(o) = b.as_object_mut() {
            o.remove("link");
        }
        let s = b.to_string();
        for m in H_MARKERS {
            self.ok(!s.contains(m), || format!("LEAK {q}: {m} in {s}"));
        }
    }

    /// Runs `q` (`Type?params`) as the physician and as the service; the
    /// physician's matches, includes and total are the service's minus H.
    async fn run(&mut self, q: &str) {
        let t = &self.w.t;
        self.queries += 1;
        let full = format!("/fhir/{q}&_total=accurate&_count=200");
        let svc = t.get(&full).await;
        assert_eq!(svc.status, StatusCode::OK, "service {full}: {}", svc.body);
        let phys = get_as(t, &full, &self.w.dr).await;
        self.ok(phys.status == StatusCode::OK, || {
            format!("{full}: {} {}", phys.status, phys.body)
        });
        let svc_m = entries(&svc.body, "match");
        let svc_i = entries(&svc.body, "include");
        if svc_m.iter().chain(svc_i.iter()).any(|e| is_h(e)) {
            self.biting += 1;
        }
        let want_m: BTreeSet<String> = svc_m.iter().filter(|e| !is_h(e)).cloned().collect();
        let want_i: BTreeSet<String> = svc_i.iter().filter(|e| !is_h(e)).cloned().collect();
        if !want_m.is_empty() {
            self.visible += 1;
        }
        self.no_h(&full, &phys.body);
        let got_m = entries(&phys.body, "match");
        let got_i = entries(&phys.body, "include");
        self.ok(got_m == want_m, || {
            format!("{full}: matches {got_m:?}, expected {want_m:?}")
        });
        self.ok(got_i == want_i, || {
            format!("{full}: includes {got_i:?}, expected {want_i:?}")
        });
        self.ok(phys.body["total"] == want_m.len(), || {
            format!(
                "LEAK {full}: total {} but {} visible matches",
                phys.body["total"],
                want_m.len()
            )
        });
        for rel in ["next", "previous"] {
            self.ok(link(&phys.body, rel).is_none(), || {
                format!("LEAK {full}: a {rel} link: {}", phys.body)
            });
        }

        // The other total modes, counting and paging.
        let n = want_m.len();
        for extra in ["_total=none", "_total=estimate"] {
            let u = format!("/fhir/{q}&{extra}&_count=200");
            let r = get_as(t, &u, &self.w.dr).await;
            self.ok(r.status == StatusCode::OK, || format!("{u}: {}", r.body));
            self.no_h(&u, &r.body);
            self.ok(r.body["total"].is_null() || r.body["total"] == n, || {
                format!("LEAK {u}: total {} but {n} visible", r.body["total"])
            });
            self.ok(entries(&r.body, "match") == want_m, || {
                format!("{u}: {}", r.body)
            });
        }
        let u = format!("/fhir/{q}&_summary=count");
        let r = get_as(t, &u, &self.w.dr).await;
        self.ok(r.status == StatusCode::OK, || format!("{u}: {}", r.body));
        self.ok(r.body["total"] == n, || {
            format!("LEAK {u}: count {} but {n} visible", r.body["total"])
        });
        self.ok(r.body["entry"].as_array().is_none_or(Vec::is_empty), || {
            format!("{u}: entries in a count: {}", r.body)
        });
        let u = format!("/fhir/{q}&_count=1&_total=accurate");
        let r = get_as(t, &u, &self.w.dr).await;
        self.no_h(&u, &r.body);
        self.ok(r.body["total"] == n, || {
            format!("LEAK {u}: total {}", r.body["total"])
        });
        self.ok(link(&r.body, "next").is_some() == (n > 1), || {
            format!("LEAK {u}: next link with {n} visible: {}", r.body)
        });
        if let Some(next) = link(&r.body, "next") {
            // Walking the pages yields exactly A's matches.
            let mut seen: BTreeSet<String> = entries(&r.body, "match");
            let mut url = Some(next);
            let mut hops = 0;
            while let Some(u) = url {
                hops += 1;
                assert!(hops < 50, "{u}: endless paging");
                let path = u.trim_start_matches("http://vigil.test");
                let r = get_as(t, path, &self.w.dr).await;
                self.no_h(path, &r.body);
                seen.extend(entries(&r.body, "match"));
                url = link(&r.body, "next");
            }
            self.ok(seen == want_m, || {
                format!("LEAK {q}: pages gave {seen:?}, expected {want_m:?}")
            });
        }
    }
}

#[tokio::test]
async fn a_caller_without_access_learns_nothing_of_a_hidden_patient() {
    let w = world().await;
    let mut c = Checker {
        w: &w,
        checks: 0,
        biting: 0,
        visible: 0,
        queries: 0,
    };

    // Every parameter of every served type, with a value from H's resource.
    for t in served_clinical() {
        let h_res =
            w.h.iter()
                .find(|r| r["resourceType"] == t.as_str())
                .unwrap_or_else(|| panic!("H has no {t}"));
        for def in fhir::search::params_for(t) {
            let v = value_for(def, h_res)
                .unwrap_or_else(|| panic!("H's {t} has no value for {}", def.name));
            c.run(&format!("{t}?{}={}", def.name, enc(&v))).await;
        }
        // And by id, and H's compartment explicitly.
        let id = h_res["id"].as_str().unwrap();
        c.run(&format!("{t}?_id={id}")).await;
    }

    // Every _include path from A's resources (some point at H's).
    for t in served_clinical() {
        for def in fhir::search::params_for(t) {
            if def.kind != ParamKind::Reference {
                continue;
            }
            c.run(&format!("{t}?{}&_include={t}:{}", a_selector(t), def.name))
                .await;
            for target in def.targets {
                c.run(&format!(
                    "{t}?{}&_include={t}:{}:{target}",
                    a_selector(t),
                    def.name
                ))
                .await;
            }
        }
    }

    // Every _revinclude path into A's resources and into shared directory
    // resources (which H's resources refer to as well).
    for src in served_clinical() {
        for def in fhir::search::params_for(src) {
            if def.kind != ParamKind::Reference {
                continue;
            }
            for target in def.targets {
                let sel = match target {
                    ResourceType::Practitioner => "_id=pr-other".to_owned(),
                    ResourceType::Organization => "_id=org-1".to_owned(),
                    ResourceType::PractitionerRole => continue,
                    t => a_selector(*t).to_owned(),
                };
                c.run(&format!("{target}?{sel}&_revinclude={src}:{}", def.name))
                    .await;
            }
        }
    }

    // Chains through H's Patient (unique identifier, shared name).
    for t in served_clinical() {
        for def in fhir::search::params_for(t) {
            if !matches!(def.name, "patient" | "subject") {
                continue;
            }
            for q in [
                format!("{t}?{}:Patient.identifier=MRN-HIDX", def.name),
                format!("{t}?{}:Patient.given=Hidxgiven", def.name),
                format!("{t}?{}:Patient.family=Sharedfam", def.name),
                format!("{t}?{}:Patient._id=hidxpat", def.name),
            ] {
                c.run(&q).await;
            }
            if def.targets == [ResourceType::Patient] {
                c.run(&format!("{t}?{}.identifier=MRN-HIDX", def.name))
                    .await;
                c.run(&format!("{t}?{}.name=Sharedfam", def.name)).await;
            }
        }
    }

    // _has through every type that refers to a Patient by subject/patient,
    // on a value H has (shared) and one only H has.
    for src in served_clinical() {
        for def in fhir::search::params_for(src) {
            if !matches!(def.name, "patient" | "subject")
                || !def.targets.contains(&ResourceType::Patient)
            {
                continue;
            }
            let h_res = w.h.iter().find(|r| r["resourceType"] == src.as_str());
            if let Some(id) = h_res.and_then(|r| r["id"].as_str()) {
                c.run(&format!("Patient?_has:{src}:{}:_id={id}", def.name))
                    .await;
            }
            for inner in fhir::search::params_for(src) {
                if let Some(v) = h_res.and_then(|r| value_for(inner, r)) {
                    c.run(&format!(
                        "Patient?_has:{src}:{}:{}={}",
                        def.name,
                        inner.name,
                        enc(&v)
                    ))
                    .await;
                }
            }
        }
    }
    c.run("Patient?_has:Observation:patient:code=hidx-only-code")
        .await;
    c.run("Patient?_has:Observation:subject:code=urn:local%7Chidx-only-code")
        .await;

    // Direct reads, vreads and histories of every H resource: 403, no data.
    for r in &w.h {
        let ty = r["resourceType"].as_str().unwrap();
        let id = r["id"].as_str().unwrap();
        for uri in [
            format!("/fhir/{ty}/{id}"),
            format!("/fhir/{ty}/{id}/_history/1"),
            format!("/fhir/{ty}/{id}/_history"),
        ] {
            let resp = get_as(&w.t, &uri, &w.dr).await;
            c.ok(resp.status == StatusCode::FORBIDDEN, || {
                format!("LEAK {uri}: {} {}", resp.status, resp.body)
            });
            c.ok(resp.body["resourceType"] == "OperationOutcome", || {
                format!("{uri}: {}", resp.body)
            });
            let s = resp.body.to_string();
            for m in H_MARKERS
                .iter()
                .chain(["Sharedfam", "8867-4", "555-0100"].iter())
            {
                c.ok(!s.contains(m), || format!("LEAK {uri}: {m} in {s}"));
            }
        }
    }

    println!(
        "policy_leaks: {} queries ({} where the service saw H's data, {} where the physician saw A's), {} checks",
        c.queries, c.biting, c.visible, c.checks
    );
    assert!(
        c.visible >= 50,
        "A's data shows in too few queries ({})",
        c.visible
    );
    assert!(c.checks >= 100, "{} checks", c.checks);
    assert!(
        c.biting >= 50,
        "too few queries reached H's data ({}): the suite would not see a leak",
        c.biting
    );
}

/// Front desk with a scheduled visit: A's Encounters are masked, and the
/// masked elements and the clinical data behind them cannot be searched.
#[tokio::test]
async fn the_front_desk_cannot_see_or_search_what_is_masked_from_it() {
    let t = setup().await;
    let mut p = crate::patient("Deskcase");
    p["id"] = json!("pa");
    put_ok(&t, &p).await;
    let fmt = |ts: model::Timestamp| {
        ts.to_offset_datetime()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let now = model::Timestamp::from_offset_datetime(time::OffsetDateTime::now_utc());
    let day = 24 * 3600 * 1_000_000_i64;
    let start = fmt(model::Timestamp(now.0 + day));
    let end = fmt(model::Timestamp(now.0 + day + 30 * 60 * 1_000_000));
    put_ok(
        &t,
        &json!({"resourceType": "Appointment", "id": "a-appt", "status": "booked",
            "start": start, "end": end,
            "participant": [{"actor": {"reference": "Patient/pa"}, "status": "accepted"}]}),
    )
    .await;
    put_ok(
        &t,
        &json!({"resourceType": "Condition", "id": "a-cond",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "35489007"}]},
            "subject": {"reference": "Patient/pa"}}),
    )
    .await;
    put_ok(
        &t,
        &json!({"resourceType": "Encounter", "id": "a-enc", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": "Patient/pa"},
            "period": {"start": "2025-01-02T09:00:00Z", "end": "2025-01-02T10:00:00Z"},
            "reasonCode": [{"coding": [{"system": "http://snomed.info/sct", "code": "35489007"}], "text": "Depression"}],
            "diagnosis": [{"condition": {"reference": "Condition/a-cond"}}]}),
    )
    .await;
    put_ok(
        &t,
        &json!({"resourceType": "Observation", "id": "a-obs", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "44249-1"}]},
            "subject": {"reference": "Patient/pa"},
            "encounter": {"reference": "Encounter/a-enc"},
            "effectiveDateTime": "2025-01-02T09:00:00Z"}),
    )
    .await;
    account(&t, "fd.desk", Role::FrontDesk, None, None).await;
    let fd = token(&t, "fd.desk", false).await;
    let masked = |r: &Value| {
        let s = r.to_string();
        assert!(r.get("reasonCode").is_none(), "LEAK reasonCode: {s}");
        assert!(r.get("diagnosis").is_none(), "LEAK diagnosis: {s}");
        assert!(!s.contains("Depression") && !s.contains("35489007"), "{s}");
    };

    let r = get_as(&t, "/fhir/Encounter/a-enc", &fd).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    masked(&r.body);
    assert!(
        r.body["meta"]["security"]
            .as_array()
            .is_some_and(|s| s.iter().any(|c| c["code"] == "REDACTED")),
        "{}",
        r.body
    );
    let r = get_as(&t, "/fhir/Encounter?patient=Patient/pa", &fd).await;
    assert_eq!(entries(&r.body, "match").len(), 1, "{}", r.body);
    for e in r.body["entry"].as_array().unwrap() {
        masked(&e["resource"]);
    }
    // Encounter has no reason-code search parameter: refused, not ignored.
    assert!(fhir::search::param(ResourceType::Encounter, "reason-code").is_none());
    let r = get_as(&t, "/fhir/Encounter?reason-code=35489007", &fd).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    masked(&r.body);

    // The clinical data behind the masked fields is neither readable nor
    // searchable, nor usable to pick out A (a hit would say "A has it").
    for q in [
        "/fhir/Condition?patient=Patient/pa&_total=accurate",
        "/fhir/Condition?code=35489007&_total=accurate",
        "/fhir/Observation?encounter=Encounter/a-enc&_total=accurate",
        "/fhir/Patient?_has:Condition:patient:code=35489007&_total=accurate",
        "/fhir/Patient?_has:Observation:subject:code=44249-1&_total=accurate",
        "/fhir/Encounter?patient=Patient/pa&_revinclude=Observation:encounter&_total=accurate",
        "/fhir/Encounter?patient=Patient/pa&_revinclude=Condition:encounter&_total=accurate",
        "/fhir/Condition?patient.family=Deskcase&_total=accurate",
    ] {
        let r = get_as(&t, q, &fd).await;
        assert_eq!(r.status, StatusCode::OK, "{q}: {}", r.body);
        let visible: Vec<String> = entries(&r.body, "match")
            .into_iter()
            .chain(entries(&r.body, "include"))
            .filter(|e| !e.starts_with("Encounter/"))
            .collect();
        assert!(visible.is_empty(), "LEAK {q}: {visible:?}");
        if q.starts_with("/fhir/Encounter") {
            assert_eq!(r.body["total"], 1, "{q}: {}", r.body);
            for e in r.body["entry"].as_array().unwrap() {
                masked(&e["resource"]);
            }
        } else {
            assert_eq!(r.body["total"], 0, "LEAK {q}: {}", r.body);
        }
    }
    for uri in ["/fhir/Condition/a-cond", "/fhir/Observation/a-obs"] {
        let r = get_as(&t, uri, &fd).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "LEAK {uri}: {}", r.body);
        assert!(!r.body.to_string().contains("35489007"), "{}", r.body);
    }
}
