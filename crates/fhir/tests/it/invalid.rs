//! A table of invalid resources, each refused with the expected code and path.

use fhir::{IssueCode, Limits, validate};
use serde_json::{Value, json};

fn obs(extra: Value) -> Value {
    let mut base = json!({"resourceType": "Observation", "status": "final", "code": {"text": "t"}});
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

fn check(v: Value, code: IssueCode, path: &str) {
    check_with(v, &Limits::default(), code, path);
}

fn check_with(v: Value, limits: &Limits, code: IssueCode, path: &str) {
    let issues = validate(&v, limits).expect_err(path);
    assert!(
        issues
            .iter()
            .any(|i| i.code == code && i.expression.iter().any(|e| e == path)),
        "expected {code:?} at {path}, got {issues:#?}"
    );
    let oo = fhir::operation_outcome(&issues);
    assert_eq!(oo["resourceType"], "OperationOutcome");
    assert!(validate(&oo, &Limits::default()).is_ok(), "{oo}");
}

#[test]
fn invalid_resources_are_refused_with_code_and_path() {
    use IssueCode::*;
    check(obs(json!({"foo": 1})), Structure, "Observation.foo");
    check(
        json!({"resourceType": "Patient", "active": "yes"}),
        Structure,
        "Patient.active",
    );
    check(
        json!({"resourceType": "Patient", "birthDate": "1970-02-30"}),
        Value,
        "Patient.birthDate",
    );
    check(
        json!({"resourceType": "Patient", "gender": ["male"]}),
        Structure,
        "Patient.gender",
    );
    check(
        json!({"resourceType": "Observation", "code": {"text": "t"}}),
        Required,
        "Observation.status",
    );
    check(
        json!({"resourceType": "Observation", "status": "final"}),
        Required,
        "Observation.code",
    );
    check(
        obs(json!({"subject": {"reference": "Patient/a b"}})),
        Value,
        "Observation.subject.reference",
    );
    check(
        obs(json!({"subject": {"reference": "Practitioner/x"}})),
        Invalid,
        "Observation.subject.reference",
    );
    check(
        obs(json!({"subject": {"reference": "#nope"}})),
        Invalid,
        "Observation.subject.reference",
    );
    check(
        json!({"resourceType": "Patient", "name": null}),
        Structure,
        "Patient.name",
    );
    check(
        json!({"resourceType": "Patient", "name": [null]}),
        Structure,
        "Patient.name[0]",
    );
    check(
        json!({"resourceType": "Patient", "name": []}),
        Structure,
        "Patient.name",
    );
    check(
        json!({"resourceType": "Patient", "name": [{}]}),
        Structure,
        "Patient.name[0]",
    );
    check(
        json!({"resourceType": "Patient", "name": {"family": "x"}}),
        Structure,
        "Patient.name",
    );
    check(
        json!({"resourceType": "Patient", "id": "a/b"}),
        Value,
        "Patient.id",
    );
    check(
        json!({"resourceType": "Patient", "deceasedBoolean": true, "deceasedDateTime": "2020"}),
        Structure,
        "Patient.deceased[x]",
    );
    check(
        json!({"resourceType": "Patient", "deceasedString": "x"}),
        Structure,
        "Patient.deceasedString",
    );
    check(
        json!({"resourceType": "Patient", "_active": {"id": "x"}, "name": [{"_family": []}]}),
        Structure,
        "Patient.name[0]._family",
    );
    check(
        json!({"resourceType": "Patient", "extension": [{"url": "http://x"}]}),
        Invariant,
        "Patient.extension[0]",
    );
    check(
        json!({"resourceType": "Patient", "extension": [{"valueString": "x"}]}),
        Required,
        "Patient.extension[0].url",
    );
    check(json!({"resourceType": "Nope"}), NotSupported, "Resource");
    check(json!({"id": "x"}), Required, "Resource");
    check(json!([1]), Structure, "Resource");
    check(
        json!({"resourceType": "Patient", "multipleBirthInteger": 1.5}),
        Structure,
        "Patient.multipleBirthInteger",
    );
    check(
        obs(json!({"effectiveDateTime": "2020-01-01T10:00:00"})),
        Value,
        "Observation.effectiveDateTime",
    );
    check(
        obs(json!({"issued": "2020-01-01"})),
        Value,
        "Observation.issued",
    );
    // Contained resources are validated and follow dom-2/dom-4.
    let contained =
        |c: serde_json::Value| obs(json!({"contained": [c], "subject": {"reference": "#p"}}));
    check(
        contained(json!({"resourceType": "Patient", "id": "p", "gender": 1})),
        Structure,
        "Observation.contained[0].gender",
    );
    check(
        contained(json!({"resourceType": "Patient", "id": "p", "meta": {"versionId": "1"}})),
        Invariant,
        "Observation.contained[0].meta",
    );
    check(
        contained(
            json!({"resourceType": "Patient", "id": "p", "contained": [{"resourceType": "Patient", "id": "q"}]}),
        ),
        Invariant,
        "Observation.contained[0].contained",
    );
    check(
        contained(json!({"resourceType": "Patient"})),
        Required,
        "Observation.contained[0].id",
    );
    // Limits.
    let small = Limits {
        max_string_len: 10,
        max_depth: 4,
        max_array_len: 2,
    };
    check_with(
        json!({"resourceType": "Patient", "name": [{"text": "x".repeat(11)}]}),
        &small,
        TooLong,
        "Patient.name[0].text",
    );
    check_with(
        json!({"resourceType": "Patient", "name": [{"text": "a"}, {"text": "b"}, {"text": "c"}]}),
        &small,
        TooCostly,
        "Patient.name",
    );
    check_with(
        json!({"resourceType": "Patient", "contact": [{"name": {"period": {"extension": [{"url": "http://x", "valueString": "a"}]}}}]}),
        &small,
        TooCostly,
        "Patient.contact[0].name.period.extension[0]",
    );
}

#[test]
fn diagnostics_never_echo_values() {
    let secret = "SECRET-Jane-Doe-1970";
    let cases = [
        json!({"resourceType": "Patient", "birthDate": secret}),
        json!({"resourceType": "Patient", "id": format!("{secret} x")}),
        json!({"resourceType": "Patient", "gender": format!(" {secret}")}),
        json!({"resourceType": "Patient", secret: 1}),
        json!({"resourceType": "Patient", "managingOrganization": {"reference": secret}}),
        json!({"resourceType": secret}),
    ];
    for c in cases {
        let issues = validate(&c, &Limits::default()).unwrap_err();
        let text = format!("{issues:?}");
        assert!(!text.contains("SECRET"), "{text}");
    }
}
