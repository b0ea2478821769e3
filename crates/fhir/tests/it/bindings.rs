//! Codes of elements with a required binding are checked against the bound value set.

use fhir::{Issue, IssueCode, Limits, validate};
use serde_json::{Value, json};

fn issues(v: &Value) -> Vec<Issue> {
    validate(v, &Limits::default()).err().unwrap_or_default()
}

/// `v` is refused with exactly one `code-invalid` issue, at `path`, naming `value_set`
/// and never the offending `value`.
fn check_refused(v: Value, path: &str, value_set: &str, value: &str) {
    let found = issues(&v);
    assert_eq!(found.len(), 1, "{found:#?}");
    let issue = &found[0];
    assert_eq!(issue.code, IssueCode::CodeInvalid);
    assert_eq!(issue.code.as_str(), "code-invalid");
    assert_eq!(issue.expression, [path]);
    assert!(issue.diagnostics.contains(path), "{}", issue.diagnostics);
    assert!(
        issue
            .diagnostics
            .contains(&format!("http://hl7.org/fhir/ValueSet/{value_set}")),
        "{}",
        issue.diagnostics
    );
    let oo = fhir::operation_outcome(&found);
    assert!(!oo.to_string().contains(value), "{oo}");
    assert!(validate(&oo, &Limits::default()).is_ok(), "{oo}");
}

fn check_accepted(v: Value) {
    let found = issues(&v);
    assert!(found.is_empty(), "{v}: {found:#?}");
}

fn obs(status: &str) -> Value {
    json!({"resourceType": "Observation", "status": status, "code": {"text": "t"}})
}

#[test]
fn bad_gender_is_refused() {
    check_refused(
        json!({"resourceType": "Patient", "gender": "sometimes"}),
        "Patient.gender",
        "administrative-gender",
        "sometimes",
    );
    // Codes are case-sensitive.
    check_refused(
        json!({"resourceType": "Patient", "gender": "Male"}),
        "Patient.gender",
        "administrative-gender",
        "Male",
    );
    check_refused(
        json!({"resourceType": "Patient", "contact": [{"gender": "xyzzy"}]}),
        "Patient.contact[0].gender",
        "administrative-gender",
        "xyzzy",
    );
}

#[test]
fn bad_observation_status_is_refused() {
    check_refused(
        obs("done-ish"),
        "Observation.status",
        "observation-status",
        "done-ish",
    );
    // A value that is valid in another status value set is still refused here.
    check_refused(
        obs("active"),
        "Observation.status",
        "observation-status",
        "active",
    );
}

#[test]
fn valid_codes_are_accepted() {
    for g in ["male", "female", "other", "unknown"] {
        check_accepted(json!({"resourceType": "Patient", "gender": g}));
    }
    for s in [
        "registered",
        "preliminary",
        "final",
        "amended",
        "entered-in-error",
    ] {
        check_accepted(obs(s));
    }
    check_accepted(json!({
        "resourceType": "Patient",
        "telecom": [{"system": "phone", "use": "home"}, {"system": "email"}],
        "name": [{"use": "official", "family": "Ng"}],
        "identifier": [{"use": "usual", "value": "1"}],
        "address": [{"use": "home", "type": "both"}],
        "link": [{"other": {"reference": "Patient/p2"}, "type": "seealso"}]
    }));
    // Codes of datatypes nested in a choice element (Quantity.comparator).
    let mut o = obs("final");
    o["valueQuantity"] = json!({"value": 1, "comparator": "<="});
    check_accepted(o.clone());
    o["valueQuantity"]["comparator"] = json!("about");
    check_refused(
        o,
        "Observation.valueQuantity.comparator",
        "quantity-comparator",
        "about",
    );
}

#[test]
fn codes_inside_arrays_are_checked() {
    check_refused(
        json!({"resourceType": "Patient", "telecom": [{"system": "pigeon", "value": "x"}]}),
        "Patient.telecom[0].system",
        "contact-point-system",
        "pigeon",
    );
    check_refused(
        json!({"resourceType": "Patient", "telecom": [{"system": "phone"}, {"system": "carrier-pigeon"}]}),
        "Patient.telecom[1].system",
        "contact-point-system",
        "carrier-pigeon",
    );
    // A repeating code element: Timing.repeat.dayOfWeek is code[0..*].
    let sr = |days: Value| {
        json!({"resourceType": "ServiceRequest", "status": "active", "intent": "order",
               "subject": {"reference": "Patient/p1"},
               "occurrenceTiming": {"repeat": {"dayOfWeek": days, "periodUnit": "wk"}}})
    };
    check_accepted(sr(json!(["mon", "fri"])));
    check_refused(
        sr(json!(["mon", "funday"])),
        "ServiceRequest.occurrenceTiming.repeat.dayOfWeek[1]",
        "days-of-week",
        "funday",
    );
}

#[test]
fn primitive_extension_without_value_is_accepted() {
    let absent = json!([{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "asked-declined"}]);
    check_accepted(json!({"resourceType": "Patient", "_gender": {"extension": absent}}));
    check_accepted(
        json!({"resourceType": "Patient", "gender": "other", "_gender": {"extension": absent}}),
    );
    // In an array of codes: a null value with its extension, next to a valid code.
    check_accepted(json!({
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "occurrenceTiming": {"repeat": {"dayOfWeek": [null, "tue"], "_dayOfWeek": [{"extension": absent}, null]}}
    }));
    // The extension does not excuse a bad value beside it.
    check_refused(
        json!({"resourceType": "Patient", "gender": "sometimes", "_gender": {"extension": absent}}),
        "Patient.gender",
        "administrative-gender",
        "sometimes",
    );
}

#[test]
fn unresolvable_value_sets_are_not_checked() {
    // Attachment.contentType is bound to mime types (urn:ietf:bcp:13), which the package
    // cannot enumerate: any well-formed code passes.
    check_accepted(json!({
        "resourceType": "Patient",
        "photo": [{"contentType": "application/x-vigil-made-up", "data": "AAAA"}]
    }));
}
