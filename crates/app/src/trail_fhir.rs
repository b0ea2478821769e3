//! Audit entries as FHIR R4 `AuditEvent` resources, in the shape of IHE
//! Basic Audit Log Patterns (BALP): the user and the app as agents, the
//! server as the source, patients and resources as entities.
//!
//! Architecture Invariant: the search query (which can hold names) appears
//! only when the caller asks for it (`show_query`, privacy officers).

use base64::Engine as _;
use model::Timestamp;
use serde_json::{Value, json};

use crate::trail::{Action, Category, Entry};

const AUDIT_EVENT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-event-type";
const DICOM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const RESTFUL_INTERACTION: &str = "http://hl7.org/fhir/restful-interaction";
/// Prefix of an access-policy rule id in `AuditEvent.agent.policy`.
pub const POLICY_URN: &str = "urn:vigil:policy:";
/// Prefix of a break-the-glass grant id in `AuditEvent.agent.policy`.
pub const GRANT_URN: &str = "urn:vigil:break-the-glass:";
const ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
const OBJECT_ROLE: &str = "http://terminology.hl7.org/CodeSystem/object-role";
const PARTICIPATION: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
const ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
const SOURCE_TYPE: &str = "http://terminology.hl7.org/CodeSystem/security-source-type";
/// Vigil's account ids, as identifiers of agents.
pub const ACCOUNT_SYSTEM: &str = "urn:vigil:account";
/// Vigil's OAuth client ids.
pub const CLIENT_SYSTEM: &str = "urn:vigil:client";
/// Vigil's workforce and patient roles.
pub const ROLE_SYSTEM: &str = "urn:vigil:role";

/// The codes of the FHIR `restful-interaction` code system.
const RESTFUL: &[&str] = &[
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history",
    "history-instance",
    "history-type",
    "history-system",
    "create",
    "search",
    "search-type",
    "search-system",
    "capabilities",
    "transaction",
    "batch",
    "operation",
];

/// The canonical URL of Vigil's own audit subtype codes under `fhir_base`.
pub fn subtype_system(fhir_base: &str) -> String {
    format!(
        "{}/CodeSystem/vigil-audit-subtype",
        fhir_base.trim_end_matches('/')
    )
}

/// The canonical URL of the request-id extension under `fhir_base`.
pub fn request_id_extension(fhir_base: &str) -> String {
    format!(
        "{}/StructureDefinition/vigil-request-id",
        fhir_base.trim_end_matches('/')
    )
}

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({"system": system, "code": code, "display": display})
}

fn event_type(c: Category) -> Value {
    match c {
        Category::Rest => coding(AUDIT_EVENT_TYPE, "rest", "RESTful Operation"),
        Category::Security => coding(DICOM, "110114", "User Authentication"),
        Category::Administration => coding(DICOM, "110100", "Application Activity"),
    }
}

fn subtype(e: &Entry, fhir_base: &str) -> Value {
    let s = e.subtype.as_str();
    match (e.category, s) {
        (Category::Rest, s) if RESTFUL.contains(&s) => {
            json!({"system": RESTFUL_INTERACTION, "code": s})
        }
        (Category::Security, "login") => coding(DICOM, "110122", "Login"),
        (Category::Security, "logout") => coding(DICOM, "110123", "Logout"),
        _ => json!({"system": subtype_system(fhir_base), "code": s}),
    }
}

fn outcome_code(o: u8) -> &'static str {
    match o {
        0 => "0",
        4 => "4",
        8 => "8",
        _ => "12",
    }
}

fn account_identifier(account: &str) -> Value {
    json!({"identifier": {"system": ACCOUNT_SYSTEM, "value": account}})
}

/// The user (or operator) who acted, then the app they acted through.
fn agents(e: &Entry) -> Vec<Value> {
    let a = &e.agent;
    let mut user = serde_json::Map::new();
    let (code, display) = match e.action {
        Action::R | Action::E => ("IRCP", "information recipient"),
        Action::C | Action::U | Action::D => ("AUT", "author (originator)"),
    };
    user.insert(
        "type".into(),
        json!({"coding": [coding(PARTICIPATION, code, display)]}),
    );
    if let Some(role) = &a.role {
        user.insert(
            "role".into(),
            json!([{"coding": [{"system": ROLE_SYSTEM, "code": role}], "text": role}]),
        );
    }
    let who = match (&a.account, &a.client) {
        (Some(acc), _) => account_identifier(acc),
        (None, Some(client)) => json!({"identifier": {"system": CLIENT_SYSTEM, "value": client}}),
        (None, None) if a.via == "operator" => json!({"display": "operator (command line)"}),
        (None, None) => json!({"display": "anonymous"}),
    };
    user.insert("who".into(), who);
    if let Some(acc) = &a.account {
        user.insert("altId".into(), Value::String(acc.clone()));
    }
    user.insert("requestor".into(), Value::Bool(true));
    if let Some(addr) = &a.address {
        user.insert("network".into(), json!({"address": addr, "type": "2"}));
    }
    if let Some(p) = &a.purpose {
        user.insert(
            "purposeOfUse".into(),
            json!([{"coding": [{"system": ACT_REASON, "code": p}]}]),
        );
    }
    // AuditEvent.agent.policy: the access-policy rules that decided, and
    // the break-the-glass grants the access was made under.
    if let Some(n) = &e.policy {
        let uris: Vec<Value> = n
            .policies
            .iter()
            .map(|p| Value::String(format!("{POLICY_URN}{p}")))
            .chain(
                n.grants
                    .iter()
                    .map(|g| Value::String(format!("{GRANT_URN}{g}"))),
            )
            .collect();
        if !uris.is_empty() {
            user.insert("policy".into(), Value::Array(uris));
        }
    }
    let mut out = vec![Value::Object(user)];
    if let (Some(client), Some(_)) = (&a.client, &a.account) {
        out.push(json!({
            "type": {"coding": [coding(DICOM, "110150", "Application")]},
            "who": {"identifier": {"system": CLIENT_SYSTEM, "value": client}},
            "requestor": false
        }));
    }
    out
}

fn entities(e: &Entry, show_query: bool) -> Vec<Value> {
    let mut out = Vec::new();
    for p in &e.patients {
        out.push(json!({
            "what": {"reference": format!("Patient/{p}")},
            "type": coding(ENTITY_TYPE, "1", "Person"),
            "role": coding(OBJECT_ROLE, "1", "Patient")
        }));
    }
    for r in &e.resources {
        // A patient already listed as the patient is not listed twice.
        if r.strip_prefix("Patient/")
            .is_some_and(|id| e.patients.iter().any(|p| p == id))
        {
            continue;
        }
        out.push(json!({
            "what": {"reference": r},
            "type": coding(ENTITY_TYPE, "2", "System Object"),
            "role": coding(OBJECT_ROLE, "4", "Domain Resource")
        }));
    }
    if let Some(acc) = &e.account {
        out.push(json!({
            "what": account_identifier(acc),
            "type": coding(ENTITY_TYPE, "1", "Person"),
            "role": coding(OBJECT_ROLE, "6", "User")
        }));
    }
    if show_query && let Some(q) = &e.query {
        out.push(json!({
            "type": coding(ENTITY_TYPE, "2", "System Object"),
            "role": coding(OBJECT_ROLE, "24", "Query"),
            "query": base64::engine::general_purpose::STANDARD.encode(q.as_bytes())
        }));
    }
    out
}

/// Entry `index` as a FHIR R4 `AuditEvent`. The search query goes in only
/// with `show_query` (it can hold names); `fhir_base` names Vigil's own code
/// system and extension.
pub fn audit_event(index: u64, e: &Entry, show_query: bool, fhir_base: &str) -> Value {
    let mut v = json!({
        "resourceType": "AuditEvent",
        "id": index.to_string(),
        "type": event_type(e.category),
        "subtype": [subtype(e, fhir_base)],
        "action": e.action.as_str(),
        "recorded": Timestamp(e.recorded).to_fhir_instant(),
        "outcome": outcome_code(e.outcome),
        "agent": agents(e),
        "source": {
            "observer": {"display": e.source},
            "type": [coding(SOURCE_TYPE, "4", "Application Server")]
        }
    });
    if let Some(obj) = v.as_object_mut() {
        if let Some(d) = &e.outcome_desc {
            obj.insert("outcomeDesc".into(), Value::String(d.clone()));
        }
        let ents = entities(e, show_query);
        if !ents.is_empty() {
            obj.insert("entity".into(), Value::Array(ents));
        }
        if let Some(r) = &e.request {
            obj.insert(
                "extension".into(),
                json!([{"url": request_id_extension(fhir_base), "valueString": r}]),
            );
        }
    }
    v
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

    use super::*;
    use crate::trail::Agent;

    fn entry(category: Category, subtype: &str, action: Action) -> Entry {
        Entry {
            v: 1,
            recorded: 1_764_000_000_123_456,
            category,
            subtype: subtype.into(),
            action,
            outcome: 0,
            outcome_desc: None,
            agent: Agent {
                account: Some("acc-1".into()),
                role: Some("physician".into()),
                client: Some("app-1".into()),
                via: "token".into(),
                address: Some("192.0.2.7".into()),
                purpose: Some("TREAT".into()),
            },
            source: "vigil.local/audit/abc".into(),
            patients: vec!["p1".into()],
            resources: vec!["Patient/p1".into(), "Observation/o1".into()],
            query: Some("name=Smith".into()),
            account: None,
            request: Some("req-1".into()),
            policy: None,
        }
    }

    fn valid(v: &Value) {
        if let Err(issues) = fhir::validate(v, &fhir::Limits::default()) {
            panic!("invalid AuditEvent {v}: {issues:?}");
        }
    }

    #[test]
    fn rest_read_is_a_valid_balp_audit_event() {
        let e = entry(Category::Rest, "search-type", Action::E);
        let v = audit_event(42, &e, true, "http://vigil.test/fhir");
        valid(&v);
        assert_eq!(v["id"], "42");
        assert_eq!(v["type"]["code"], "rest");
        assert_eq!(v["subtype"][0]["system"], RESTFUL_INTERACTION);
        assert_eq!(v["subtype"][0]["code"], "search-type");
        assert_eq!(v["outcome"], "0");
        assert_eq!(v["recorded"], "2025-11-24T16:00:00.123456Z");
        assert_eq!(v["agent"][0]["who"]["identifier"]["value"], "acc-1");
        assert_eq!(v["agent"][0]["network"]["type"], "2");
        assert_eq!(
            v["agent"][0]["purposeOfUse"][0]["coding"][0]["code"],
            "TREAT"
        );
        assert_eq!(v["agent"][1]["type"]["coding"][0]["code"], "110150");
        assert_eq!(v["entity"][0]["what"]["reference"], "Patient/p1");
        assert_eq!(v["entity"][1]["what"]["reference"], "Observation/o1");
        assert_eq!(v["entity"][2]["query"], "bmFtZT1TbWl0aA==");
        assert_eq!(v["extension"][0]["valueString"], "req-1");
        let hidden = audit_event(42, &e, false, "http://vigil.test/fhir");
        valid(&hidden);
        assert!(!hidden.to_string().contains("bmFtZT1TbWl0aA"));
    }

    #[test]
    fn security_and_administration_events_are_valid() {
        let mut e = entry(Category::Security, "login", Action::E);
        e.outcome = 4;
        e.outcome_desc = Some("401 wrong password".into());
        e.patients.clear();
        e.resources.clear();
        e.query = None;
        e.agent.client = None;
        e.account = Some("acc-2".into());
        let v = audit_event(1, &e, true, "http://vigil.test/fhir");
        valid(&v);
        assert_eq!(v["type"]["code"], "110114");
        assert_eq!(v["subtype"][0]["code"], "110122");
        assert_eq!(v["outcome"], "4");
        let mut a = entry(Category::Administration, "patient-erase", Action::D);
        a.agent = Agent {
            via: "operator".into(),
            ..Agent::default()
        };
        a.request = None;
        let v = audit_event(2, &a, false, "http://vigil.test/fhir");
        valid(&v);
        assert_eq!(v["type"]["code"], "110100");
        assert_eq!(
            v["subtype"][0]["system"],
            "http://vigil.test/fhir/CodeSystem/vigil-audit-subtype"
        );
    }
}
