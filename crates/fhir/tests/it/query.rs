//! Query parsing table.

use fhir::IssueCode;
use fhir::search::{Clause, Modifier, Prefix, SearchValue, TotalMode, parse_query};
use model::ResourceType as T;

fn q(t: T, pairs: &[(&str, &str)]) -> Result<fhir::search::SearchRequest, Vec<fhir::Issue>> {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
    parse_query(t, &pairs)
}

fn refused(t: T, pairs: &[(&str, &str)], code: IssueCode, naming: &str) {
    let issues = q(t, pairs).expect_err(naming);
    assert!(
        issues
            .iter()
            .any(|i| i.code == code && i.diagnostics.contains(naming)),
        "{pairs:?}: {issues:#?}"
    );
}

#[test]
fn refuses_unknown_and_unsupported() {
    use IssueCode::*;
    refused(T::Patient, &[("foo", "1")], NotSupported, "'foo'");
    refused(
        T::Patient,
        &[("name:contains", "a")],
        NotSupported,
        "'name:contains'",
    );
    refused(
        T::Patient,
        &[("gender:not", "male")],
        NotSupported,
        "'gender:not'",
    );
    refused(
        T::Patient,
        &[("gender:text", "male")],
        NotSupported,
        "'gender:text'",
    );
    refused(
        T::Patient,
        &[("gender:missing", "true")],
        NotSupported,
        "'gender:missing'",
    );
    refused(
        T::Observation,
        &[("date", "xx2020")],
        NotSupported,
        "'date'",
    );
    refused(T::Observation, &[("date", "2020-13")], Invalid, "'date'");
    refused(
        T::Observation,
        &[("subject", "Practitioner/1")],
        Invalid,
        "'subject'",
    );
    refused(
        T::Observation,
        &[("_include", "*")],
        NotSupported,
        "'_include'",
    );
    refused(
        T::Observation,
        &[("_include", "Patient:organization")],
        NotSupported,
        "'_include'",
    );
    refused(
        T::Patient,
        &[("_summary", "true")],
        NotSupported,
        "'_summary'",
    );
    refused(T::Patient, &[("_format", "xml")], NotSupported, "'_format'");
    refused(T::Patient, &[("_sort", "name")], NotSupported, "'_sort'");
    refused(
        T::Practitioner,
        &[("_sort", "date")],
        NotSupported,
        "'_sort'",
    );
    refused(T::Patient, &[("_count", "-1")], Invalid, "'_count'");
    refused(
        T::Observation,
        &[("performer.name", "x")],
        NotSupported,
        "'performer.name'",
    );
    refused(
        T::Observation,
        &[("subject.organization.name", "x")],
        NotSupported,
        "subject.organization.name",
    );
    refused(
        T::Patient,
        &[("_has:Observation:performer:code", "x")],
        NotSupported,
        "_has",
    );
    // The value is never repeated.
    let issues = q(T::Patient, &[("birthdate", "SECRET")]).unwrap_err();
    assert!(!format!("{issues:?}").contains("SECRET"));
}

#[test]
fn parses_values_chains_has_and_controls() {
    let r = q(
        T::Observation,
        &[
            ("patient", "p1,Patient/p2"),
            ("date", "ge2020-01-01"),
            ("date", "lt2021"),
            ("code", "http://loinc.org|1-8,|x,y,http://s|"),
            ("_count", "10"),
            ("_offset", "20"),
            ("_total", "accurate"),
            ("_sort", "-date,_lastUpdated"),
            ("_include", "Observation:patient"),
            ("_include", "Observation:performer:Practitioner"),
            ("_format", "application/fhir+json"),
            ("subject:Patient.identifier", "http://x|123"),
            ("patient.name", "ng"),
        ],
    )
    .unwrap();
    assert_eq!(r.clauses.len(), 6);
    assert_eq!(
        (r.count, r.offset, r.total),
        (Some(10), 20, TotalMode::Accurate)
    );
    assert_eq!(r.sort.len(), 2);
    assert!(r.sort[0].descending);
    assert_eq!(r.include.len(), 2);
    let Clause::Param { values, .. } = &r.clauses[0] else {
        panic!()
    };
    assert!(
        matches!(&values[0], SearchValue::Reference { rtype: None, id } if id.as_str() == "p1")
    );
    assert!(matches!(
        &values[1],
        SearchValue::Reference {
            rtype: Some(T::Patient),
            ..
        }
    ));
    let Clause::Param { values, .. } = &r.clauses[1] else {
        panic!()
    };
    assert!(matches!(&values[0], SearchValue::Date(b) if b.prefix == Prefix::Ge));
    let Clause::Param { values, .. } = &r.clauses[3] else {
        panic!()
    };
    assert_eq!(
        values[1],
        SearchValue::Token {
            system: Some(String::new()),
            code: "x".into()
        }
    );
    assert_eq!(
        values[2],
        SearchValue::Token {
            system: None,
            code: "y".into()
        }
    );
    assert_eq!(
        values[3],
        SearchValue::Token {
            system: Some("http://s".into()),
            code: String::new()
        }
    );
    let Clause::Chain { def, target, inner } = &r.clauses[4] else {
        panic!()
    };
    assert_eq!((def.name, *target), ("subject", T::Patient));
    assert!(matches!(&**inner, Clause::Param { def, .. } if def.name == "identifier"));

    let r = q(
        T::Patient,
        &[
            ("_has:Observation:patient:code", "1-8"),
            ("_has:Encounter:subject:date", "2020"),
            ("name:exact", "Ng"),
            ("_id", "a,b"),
            ("_lastUpdated", "gt2020-01-01T00:00:00Z"),
            ("_revinclude", "Observation:subject"),
            ("_summary", "count"),
            ("_sort", "birthdate"),
            ("general-practitioner:Practitioner", "x"),
        ],
    )
    .unwrap();
    assert!(
        matches!(&r.clauses[0], Clause::Has { source: T::Observation, ref_param, .. } if ref_param.name == "patient")
    );
    assert!(matches!(
        &r.clauses[2],
        Clause::Param {
            modifier: Some(Modifier::Exact),
            ..
        }
    ));
    assert!(matches!(&r.clauses[3], Clause::Id(ids) if ids.len() == 2));
    assert!(matches!(
        &r.clauses[5],
        Clause::Param {
            modifier: Some(Modifier::Type(T::Practitioner)),
            ..
        }
    ));
    assert!(r.summary_count);
    assert_eq!(r.revinclude[0].source, T::Observation);
}
