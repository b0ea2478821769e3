//! `Patient/[id]/$everything`: the access policy's `export` of one
//! patient's record.
//!
//! The patient's compartment (everything sealed under their key) is read in
//! one query, and every resource in it is decided as an `export` by the same
//! engine as reads, with the same masks and consents. What the policy does
//! not allow is left out without a trace in the answer: no count, no
//! OperationOutcome naming it. If the caller may not export the Patient
//! resource itself, the whole request is refused, as a refused read is.
//!
//! Architecture Invariant: one request, one audit entry (subtype `export`,
//! action `E`), naming the patient and every reference returned, durable
//! before the Bundle is handed back.

use std::collections::BTreeSet;

use auth::scope::Interaction;
use fhir::IssueCode;
use model::{KeyOwner, PatientId, ResourceId, ResourceType, Timestamp};
use serde_json::{Value, json};

use crate::audited::{query_string, reference};
use crate::decide::Gate;
use crate::trail::{Action, Category, Event};
use crate::{AppError, Principal, Versioned, Vigil};

/// The parameters of `$everything` this server takes.
const PARAMS: &str = "_type and _since";

/// What `$everything` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRequest {
    /// The types asked for with `_type`, or `None` for every type.
    pub types: Option<BTreeSet<ResourceType>>,
    /// `_since`: only resources last updated at or after this instant.
    pub since: Option<Timestamp>,
}

impl ExportRequest {
    /// Parses the query parameters (without `_format` and `_pretty`, which
    /// the web layer handles). Anything unknown is refused.
    pub fn parse(pairs: &[(String, String)]) -> Result<ExportRequest, AppError> {
        let mut types: Option<BTreeSet<ResourceType>> = None;
        let mut since = None;
        for (k, v) in pairs {
            match k.as_str() {
                "_type" => {
                    let set = types.get_or_insert_with(BTreeSet::new);
                    for name in v.split(',').map(str::trim) {
                        let t = ResourceType::parse(name).ok_or_else(|| {
                            AppError::bad_request(
                                IssueCode::NotSupported,
                                "_type names a resource type this server does not serve; see /fhir/metadata",
                            )
                        })?;
                        set.insert(t);
                    }
                }
                "_since" => {
                    if since.is_some() {
                        return Err(AppError::bad_request(
                            IssueCode::Invalid,
                            "_since may be given once",
                        ));
                    }
                    since = Some(parse_instant(v)?);
                }
                _ => {
                    return Err(AppError::bad_request(
                        IssueCode::NotSupported,
                        format!(
                            "$everything takes only {PARAMS} (and _format); other parameters are refused"
                        ),
                    ));
                }
            }
        }
        Ok(ExportRequest { types, since })
    }

    fn wants(&self, t: ResourceType, last_updated: Timestamp) -> bool {
        self.types.as_ref().is_none_or(|s| s.contains(&t))
            && self.since.is_none_or(|s| last_updated >= s)
    }
}

/// A FHIR `instant` (`2025-01-02T09:00:00Z`). A `+` of the offset that
/// arrived unencoded in the query reads as a space: it is taken as `+`.
fn parse_instant(v: &str) -> Result<Timestamp, AppError> {
    let invalid = || {
        AppError::bad_request(
            IssueCode::Invalid,
            "_since must be a FHIR instant such as 2025-01-02T09:00:00Z",
        )
    };
    let d = fhir::parse_date(v, fhir::DateForm::Instant)
        .or_else(|| fhir::parse_date(&v.replace(' ', "+"), fhir::DateForm::Instant))
        .ok_or_else(invalid)?;
    Ok(Timestamp(d.range.start))
}

/// The result of an export: the patient and what the caller may take.
#[derive(Debug, Clone)]
pub struct Export {
    pub patient: ResourceId,
    /// The parameters as asked (for the Bundle's self link).
    pub query: Vec<(String, String)>,
    /// The Patient first (when its type was asked for), then by type and id.
    pub resources: Vec<Versioned>,
}

impl Export {
    /// The `searchset` Bundle FHIR specifies for `$everything`: every entry
    /// a `match`, `total` the number of entries.
    pub fn bundle(&self, base: &str, now: &str) -> Value {
        let entries: Vec<Value> = self
            .resources
            .iter()
            .filter_map(|v| {
                let r = v.resource.as_ref()?;
                Some(json!({
                    "fullUrl": format!("{base}/{}/{}", v.rtype, v.id),
                    "resource": r,
                    "search": {"mode": "match"}
                }))
            })
            .collect();
        let mut url = format!("{base}/Patient/{}/$everything", self.patient);
        if !self.query.is_empty() {
            url.push('?');
            url.push_str(
                &self
                    .query
                    .iter()
                    .map(|(k, v)| format!("{}={}", crate::json::encode(k), crate::json::encode(v)))
                    .collect::<Vec<_>>()
                    .join("&"),
            );
        }
        let mut b = json!({
            "resourceType": "Bundle",
            "id": crate::records::new_id().to_string(),
            "meta": {"lastUpdated": now},
            "type": "searchset",
            "total": entries.len(),
            "link": [{"relation": "self", "url": url}],
        });
        if let (Some(obj), false) = (b.as_object_mut(), entries.is_empty()) {
            obj.insert("entry".into(), Value::Array(entries));
        }
        b
    }
}

impl Vigil {
    /// `GET /Patient/[id]/$everything`: exactly one audit entry, whatever
    /// the outcome; a refusal is recorded like a refused read.
    pub async fn export_patient(
        &self,
        who: &Principal,
        id: &ResourceId,
        pairs: &[(String, String)],
    ) -> Result<Export, AppError> {
        let mut ev = Event::new(Category::Rest, "export", Action::E);
        ev.resources = vec![reference(ResourceType::Patient, id)];
        if !pairs.is_empty() {
            ev.query = Some(query_string(pairs));
        }
        let mut gate = match self.policy_gate(who) {
            Ok(g) => g,
            Err(e) => return self.audit_failure(who, ev, e).await,
        };
        match self.export_unaudited(who, &mut gate, id, pairs).await {
            Ok(x) => {
                ev.patients = vec![id.to_string()];
                ev.resources = x
                    .resources
                    .iter()
                    .map(|v| reference(v.rtype, &v.id))
                    .collect();
                if ev.resources.is_empty() {
                    ev.resources = vec![reference(ResourceType::Patient, id)];
                }
                ev.policy = gate.policy_note();
                self.audit(who, ev).await?;
                Ok(x)
            }
            Err(e) => self.audit_refusal(who, ev, &gate, e).await,
        }
    }

    async fn export_unaudited(
        &self,
        who: &Principal,
        gate: &mut Gate,
        id: &ResourceId,
        pairs: &[(String, String)],
    ) -> Result<Export, AppError> {
        let req = ExportRequest::parse(pairs)?;
        let owner = KeyOwner::Patient(PatientId(id.clone()));
        // The scope ceiling, as for a search of each type: the Patient
        // always (it anchors the export), each type asked for by name, and
        // without `_type` the types the scopes cover.
        self.permit(who, ResourceType::Patient, Interaction::Search)?
            .allows(&owner)?;
        let mut types = vec![ResourceType::Patient];
        let candidates: Vec<ResourceType> = match &req.types {
            Some(s) => s.iter().copied().collect(),
            None => ResourceType::ALL.to_vec(),
        };
        for t in candidates {
            if t == ResourceType::Patient {
                continue;
            }
            match self.permit(who, t, Interaction::Search) {
                Ok(access) => {
                    access.allows(&owner)?;
                    types.push(t);
                }
                Err(e) if req.types.is_some() => return Err(e),
                Err(_) => {}
            }
        }
        let mut stored = self.store.current_of_owner(&owner, &types).await?;
        stored.sort_by(|a, b| {
            let first = |t: ResourceType| t != ResourceType::Patient;
            (first(a.rtype), a.rtype.as_str(), &a.id).cmp(&(
                first(b.rtype),
                b.rtype.as_str(),
                &b.id,
            ))
        });
        // The Patient resource decides whether there is an export at all.
        let sv = stored
            .iter()
            .find(|s| s.rtype == ResourceType::Patient && s.id == *id)
            .ok_or_else(|| crate::records::not_found(ResourceType::Patient, id))?;
        let mut patient = self.open_version(sv).await?;
        let masks = self
            .decide_version(gate, policy::Action::Export, &patient)
            .await?;
        if let Some(r) = patient.resource.as_mut() {
            crate::facts::mask(r, &masks);
        }
        let max = self.config.limits.max_export;
        let mut out = Vec::new();
        if req.wants(patient.rtype, patient.last_updated) {
            out.push(patient);
            if out.len() > max {
                return Err(too_many(max));
            }
        }
        for sv in &stored {
            if (sv.rtype == ResourceType::Patient && sv.id == *id)
                || !req.wants(sv.rtype, sv.last_updated)
            {
                continue;
            }
            // INVARIANT: only the patient's own key seals what is read here.
            if sv.key_owner != owner {
                return Err(AppError::Integrity(format!("{}/{}", sv.rtype, sv.id)));
            }
            let mut v = self.open_version(sv).await?;
            if v.resource.is_none() {
                continue;
            }
            if !self.allowed(gate, policy::Action::Export, &mut v).await? {
                continue;
            }
            out.push(v);
            if out.len() > max {
                return Err(too_many(max));
            }
        }
        let query = pairs.to_vec();
        Ok(Export {
            patient: id.clone(),
            query,
            resources: out,
        })
    }
}

/// Refused, never truncated: a partial record would mislead.
fn too_many(max: usize) -> AppError {
    AppError::bad_request(
        IssueCode::TooCostly,
        format!(
            "this export would return more than {max} resources; narrow it with _type or _since and export in parts"
        ),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn p(q: &str) -> Vec<(String, String)> {
        crate::parse_query_string(q)
    }

    #[test]
    fn parameters_are_parsed_or_refused() {
        let r = ExportRequest::parse(&p("_type=Observation,Condition&_type=Patient")).unwrap();
        assert_eq!(
            r.types,
            Some(BTreeSet::from([
                ResourceType::Observation,
                ResourceType::Condition,
                ResourceType::Patient
            ]))
        );
        assert_eq!(r.since, None);
        let r = ExportRequest::parse(&p("_since=2025-01-02T09:00:00Z")).unwrap();
        assert_eq!(
            r.since.map(|t| t.to_fhir_instant()).as_deref(),
            Some("2025-01-02T09:00:00.000000Z")
        );
        // An unencoded `+` arrives as a space.
        let r = ExportRequest::parse(&p("_since=2025-01-02T10:00:00+01:00")).unwrap();
        assert_eq!(
            r.since.map(|t| t.to_fhir_instant()).as_deref(),
            Some("2025-01-02T09:00:00.000000Z")
        );
        assert_eq!(ExportRequest::parse(&[]).unwrap().types, None);
        for bad in [
            "_type=Nonsense",
            "_type=",
            "_type=Observation,,Condition",
            "_since=2025-01-02",
            "_since=yesterday",
            "_since=2025-01-02T09:00:00Z&_since=2025-01-03T09:00:00Z",
            "_count=10",
            "start=2025-01-01",
            "_elements=id",
        ] {
            let e = ExportRequest::parse(&p(bad)).unwrap_err();
            assert_eq!(e.status(), 400, "{bad}");
        }
    }

    #[test]
    fn since_and_type_select() {
        let r = ExportRequest::parse(&p("_type=Observation&_since=2025-01-02T09:00:00Z")).unwrap();
        let at = r.since.unwrap();
        assert!(r.wants(ResourceType::Observation, at));
        assert!(!r.wants(ResourceType::Observation, Timestamp(at.0 - 1)));
        assert!(!r.wants(ResourceType::Condition, at));
    }
}
