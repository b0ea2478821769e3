//! Reference parsing, extraction and rewriting, and the patient compartment.

use model::{ResourceId, ResourceType};
use serde_json::Value;

use crate::path::select;
use crate::schema::SCHEMA;
use crate::walk::walk_resource;

/// What a `Reference.reference` points at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RefTarget {
    /// A relative reference `Type/id` or `Type/id/_history/version` to any R4 resource type.
    Local {
        rtype: String,
        id: String,
        version: Option<String>,
    },
    /// `#id`: a contained resource (`#` alone: the container itself).
    Contained(String),
    /// `urn:uuid:…` or `urn:oid:…` (Bundle-local identities).
    Urn(String),
    /// An absolute `http(s)://` URL.
    Absolute(String),
    /// Anything else: not a valid reference.
    Other(String),
}

impl RefTarget {
    /// The served type and id of a local reference.
    pub fn local(&self) -> Option<(ResourceType, ResourceId)> {
        match self {
            RefTarget::Local { rtype, id, .. } => Some((
                ResourceType::parse(rtype)?,
                ResourceId::new(id.as_str()).ok()?,
            )),
            _ => None,
        }
    }
}

/// One `Reference.reference` found in a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundReference {
    /// FHIRPath-like location of the Reference, e.g. `Observation.subject`.
    pub path: String,
    pub target: RefTarget,
}

pub(crate) fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Classifies a reference string.
pub fn parse_reference(s: &str) -> RefTarget {
    if let Some(id) = s.strip_prefix('#') {
        return if id.is_empty() || is_id(id) {
            RefTarget::Contained(id.to_owned())
        } else {
            RefTarget::Other(s.to_owned())
        };
    }
    let no_space = !s.is_empty() && !s.chars().any(char::is_whitespace);
    if let Some(u) = s.strip_prefix("urn:uuid:") {
        let ok = u.len() == 36
            && u.bytes().enumerate().all(|(i, b)| {
                if matches!(i, 8 | 13 | 18 | 23) {
                    b == b'-'
                } else {
                    b.is_ascii_hexdigit()
                }
            });
        return if ok {
            RefTarget::Urn(s.to_owned())
        } else {
            RefTarget::Other(s.to_owned())
        };
    }
    if s.starts_with("urn:oid:") {
        return if crate::primitive::is_oid(s) {
            RefTarget::Urn(s.to_owned())
        } else {
            RefTarget::Other(s.to_owned())
        };
    }
    if (s.starts_with("http://") || s.starts_with("https://")) && no_space && s.len() > 8 {
        return RefTarget::Absolute(s.to_owned());
    }
    let parts: Vec<&str> = s.split('/').collect();
    let local = match parts.as_slice() {
        [t, id] => Some((*t, *id, None)),
        [t, id, "_history", v] => Some((*t, *id, Some(*v))),
        _ => None,
    };
    if let Some((t, id, v)) = local
        && SCHEMA.is_resource(t)
        && is_id(id)
        && v.is_none_or(is_id)
    {
        return RefTarget::Local {
            rtype: t.to_owned(),
            id: id.to_owned(),
            version: v.map(str::to_owned),
        };
    }
    RefTarget::Other(s.to_owned())
}

/// Every `Reference.reference` in the resource, including those inside contained
/// resources (whose `#id` references point at their container's contained list).
pub fn references(resource: &Value) -> Vec<FoundReference> {
    let root = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("Resource");
    let mut out = Vec::new();
    walk_resource(resource, root, &mut |v| {
        if v.type_name == "Reference"
            && let Some(r) = v.value.get("reference").and_then(Value::as_str)
        {
            out.push(FoundReference {
                path: v.expr.to_owned(),
                target: parse_reference(r),
            });
        }
    });
    out
}

/// Replaces every `Reference.reference` for which `f` returns a new value.
pub fn rewrite_references(resource: &mut Value, f: &mut dyn FnMut(&str) -> Option<String>) {
    let mut pointers = Vec::new();
    walk_resource(resource, "", &mut |v| {
        if v.type_name == "Reference" && v.value.get("reference").is_some_and(Value::is_string) {
            pointers.push(v.pointer.to_owned());
        }
    });
    for p in pointers {
        let Some(slot) = resource
            .pointer_mut(&p)
            .and_then(|r| r.get_mut("reference"))
        else {
            continue;
        };
        let Some(old) = slot.as_str() else { continue };
        if let Some(new) = f(old) {
            *slot = Value::String(new);
        }
    }
}

/// The paths of references that put a resource in a patient's compartment
/// (R4 CompartmentDefinition-patient, restricted to the served types).
fn compartment_paths(rtype: ResourceType) -> &'static [&'static str] {
    match rtype {
        ResourceType::Patient => &["link.other"],
        ResourceType::RelatedPerson => &["patient"],
        ResourceType::Practitioner
        | ResourceType::PractitionerRole
        | ResourceType::Organization => &[],
        ResourceType::Encounter => &["subject"],
        ResourceType::Appointment => &["participant.actor"],
        ResourceType::CareTeam => &["subject", "participant.member"],
        ResourceType::ServiceRequest => &["subject", "performer"],
        ResourceType::Observation => &["subject", "performer"],
        ResourceType::Condition => &["subject", "asserter"],
        ResourceType::MedicationRequest => &["subject"],
        ResourceType::DocumentReference => &["subject", "author"],
        ResourceType::Communication => &["subject", "sender", "recipient"],
        ResourceType::Consent => &["patient"],
    }
}

/// The Patient ids whose compartment includes this resource (for a Patient: itself too),
/// from local `Patient/<id>` references; sorted and deduplicated.
pub fn patient_compartment(rtype: ResourceType, resource: &Value) -> Vec<ResourceId> {
    let mut out = Vec::new();
    if rtype == ResourceType::Patient
        && let Some(id) = resource
            .get("id")
            .and_then(Value::as_str)
            .and_then(|s| ResourceId::new(s).ok())
    {
        out.push(id);
    }
    for path in compartment_paths(rtype) {
        for r in select(resource, path) {
            let Some(s) = r.get("reference").and_then(Value::as_str) else {
                continue;
            };
            if let Some((ResourceType::Patient, id)) = parse_reference(s).local() {
                out.push(id);
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn classifies_references() {
        assert_eq!(
            parse_reference("Patient/a1/_history/2"),
            RefTarget::Local {
                rtype: "Patient".into(),
                id: "a1".into(),
                version: Some("2".into())
            }
        );
        assert_eq!(parse_reference("#med"), RefTarget::Contained("med".into()));
        assert!(matches!(
            parse_reference("urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"),
            RefTarget::Urn(_)
        ));
        assert!(matches!(
            parse_reference("https://x.org/fhir/Patient/1"),
            RefTarget::Absolute(_)
        ));
        for bad in [
            "Patient",
            "Foo/1",
            "Patient/a b",
            "Patient/",
            "urn:uuid:zz",
            "http://a b",
            "",
        ] {
            assert!(matches!(parse_reference(bad), RefTarget::Other(_)), "{bad}");
        }
    }

    #[test]
    fn finds_and_rewrites_references_by_type() {
        let mut v = json!({
            "resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "subject": {"reference": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"},
            "performer": [{"reference": "Practitioner/p"}, {"display": "no ref"}],
            "contained": [{"resourceType": "Patient", "id": "c", "generalPractitioner": [{"reference": "#"}]}]
        });
        let refs = references(&v);
        let paths: Vec<&str> = refs.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "Observation.subject",
                "Observation.performer[0]",
                "Observation.contained[0].generalPractitioner[0]"
            ]
        );
        rewrite_references(&mut v, &mut |s| {
            s.starts_with("urn:").then(|| "Patient/p1".to_owned())
        });
        assert_eq!(v["subject"]["reference"], "Patient/p1");
        assert_eq!(v["performer"][0]["reference"], "Practitioner/p");
        assert_eq!(
            patient_compartment(ResourceType::Observation, &v),
            vec![ResourceId::new("p1").unwrap()]
        );
    }

    #[test]
    fn uri_elements_named_reference_are_not_references() {
        let v =
            json!({"resourceType": "DetectedIssue", "status": "final", "reference": "Patient/x"});
        assert!(references(&v).is_empty());
    }
}
