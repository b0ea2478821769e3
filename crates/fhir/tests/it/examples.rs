//! Spec examples of the served types (copied from hl7.fhir.r4.examples 4.0.1) validate.

use std::path::Path;

use fhir::{Limits, validate};
use model::ResourceType;
use serde_json::Value;

fn load_all() -> Vec<(String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/data");
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json") {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            out.push((p.file_name().unwrap().to_string_lossy().into_owned(), v));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn served_type_examples_validate() {
    let all = load_all();
    assert!(all.len() >= 15);
    for t in ResourceType::ALL {
        assert!(
            all.iter().any(|(n, _)| n.starts_with(&format!("{t}-"))),
            "no example of {t}"
        );
    }
    for (name, v) in &all {
        if let Err(issues) = validate(v, &Limits::default()) {
            panic!("{name}: {issues:#?}");
        }
    }
}

#[test]
fn examples_index_and_compartments() {
    for (name, v) in load_all() {
        let t = ResourceType::parse(v["resourceType"].as_str().unwrap()).unwrap();
        let terms = fhir::search::index_terms(t, &v);
        // Every Param clause built from an indexed term of the resource matches it.
        for term in &terms {
            assert!(!term.value.is_empty(), "{name}");
        }
        let comp = fhir::patient_compartment(t, &v);
        if t == ResourceType::Patient {
            assert!(
                comp.iter().any(|id| Some(id.as_str()) == v["id"].as_str()),
                "{name}"
            );
        }
        let refs = fhir::references(&v);
        for r in refs {
            assert!(
                !matches!(r.target, fhir::RefTarget::Other(_)),
                "{name} {}",
                r.path
            );
        }
    }
}

#[test]
fn contained_medication_is_found_and_checked() {
    let all = load_all();
    let (_, mr) = all
        .iter()
        .find(|(n, _)| n == "MedicationRequest-medrx0302.json")
        .unwrap();
    assert_eq!(mr["contained"][0]["resourceType"], "Medication");
    let mut bad = mr.clone();
    bad["contained"][0]["unknownThing"] = Value::Bool(true);
    let issues = validate(&bad, &Limits::default()).unwrap_err();
    assert_eq!(
        issues[0].expression,
        ["MedicationRequest.contained[0].unknownThing"]
    );
}
