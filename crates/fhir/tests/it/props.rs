//! Property tests: date parse/format round trips, and the search invariant
//! `matches ⇒ index_terms ∩ lookup ≠ ∅`.

use fhir::search::{self, Clause, Lookup, SearchValue};
use fhir::{DateForm, format_instant, parse_date};
use model::ResourceType as T;
use proptest::prelude::*;
use serde_json::{Value, json};

/// Year 1 to year 9999, in microseconds.
const MIN_MICROS: i64 = -62_135_596_800_000_000;
const MAX_MICROS: i64 = 253_402_300_799_999_999;

proptest! {
    #[test]
    fn instants_round_trip(m in MIN_MICROS..MAX_MICROS) {
        let s = format_instant(m).unwrap();
        let d = parse_date(&s, DateForm::Instant).unwrap();
        prop_assert_eq!(d.range.start, m);
        prop_assert_eq!(d.range.end, m + 1);
        prop_assert_eq!(format_instant(d.range.start).unwrap(), s);
    }

    #[test]
    fn dates_round_trip(y in 1i32..=9999, mo in 1u8..=12, d in 1u8..=28) {
        for s in [format!("{y:04}"), format!("{y:04}-{mo:02}"), format!("{y:04}-{mo:02}-{d:02}")] {
            let p = parse_date(&s, DateForm::Date).unwrap();
            let start = format_instant(p.range.start).unwrap();
            prop_assert!(start.starts_with(&s), "{} {}", s, start);
            prop_assert!(p.range.end > p.range.start);
        }
    }

    #[test]
    fn parse_never_panics(s in "\\PC{0,40}") {
        let _ = parse_date(&s, DateForm::Search);
    }
}

fn date_text() -> impl Strategy<Value = String> {
    (
        2019i32..=2022,
        1u8..=12,
        1u8..=28,
        0u8..24,
        0u8..60,
        0u8..5,
        prop_oneof![Just("Z"), Just("+05:00"), Just("-11:30")],
    )
        .prop_map(|(y, mo, d, h, mi, kind, tz)| match kind {
            0 => format!("{y}"),
            1 => format!("{y}-{mo:02}"),
            2 => format!("{y}-{mo:02}-{d:02}"),
            3 => format!("{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:07{tz}"),
            _ => format!("{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:07.25{tz}"),
        })
}

fn query_date() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            Just("eq"),
            Just("ap"),
            Just("ne"),
            Just("gt"),
            Just("lt"),
            Just("ge"),
            Just("le"),
            Just("sa"),
            Just("eb"),
            Just("")
        ],
        date_text(),
    )
        .prop_map(|(p, d)| format!("{p}{d}"))
}

fn check_invariant(t: T, param: &str, raw: &str, resource: &Value) -> Result<(), TestCaseError> {
    let req = search::parse_query(t, &[(param.to_owned(), raw.to_owned())])
        .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
    let clause = &req.clauses[0];
    if !search::matches(t, clause, resource) {
        return Ok(());
    }
    match search::lookup(t, clause) {
        Lookup::Unindexed => Ok(()),
        Lookup::Terms {
            param: p,
            values,
            prefix,
            ..
        } => {
            let terms = search::index_terms(t, resource);
            let hit = terms.iter().filter(|x| x.param == p).any(|x| {
                values.iter().any(|v| {
                    if prefix {
                        x.value.starts_with(v.as_str())
                    } else {
                        &x.value == v
                    }
                })
            });
            prop_assert!(
                hit,
                "{} {} matched {} but lookup {:?} misses terms {:?}",
                param,
                raw,
                resource,
                values,
                terms
            );
            Ok(())
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn date_matches_imply_lookup_hits(
        start in proptest::option::of(date_text()),
        end in proptest::option::of(date_text()),
        single in date_text(),
        birth in date_text(),
        q in query_date(),
    ) {
        let mut period = serde_json::Map::new();
        if let Some(s) = start { period.insert("start".into(), json!(s)); }
        if let Some(e) = end { period.insert("end".into(), json!(e)); }
        let enc = json!({"resourceType": "Encounter", "period": period});
        check_invariant(T::Encounter, "date", &q, &enc)?;
        let obs = json!({"resourceType": "Observation", "effectiveDateTime": single});
        check_invariant(T::Observation, "date", &q, &obs)?;
        let birth_date: String = birth.chars().take(10).collect();
        let pat = json!({"resourceType": "Patient", "birthDate": birth_date});
        check_invariant(T::Patient, "birthdate", &q, &pat)?;
    }

    #[test]
    fn token_matches_imply_lookup_hits(
        codings in proptest::collection::vec((proptest::option::of(prop_oneof![Just("s1"), Just("s2")]), prop_oneof![Just("a"), Just("b"), Just("c|d")]), 1..4),
        qsys in proptest::option::of(prop_oneof![Just(""), Just("s1"), Just("s2")]),
        qcode in prop_oneof![Just("a"), Just("b"), Just(""), Just("c\\|d")],
        phone in prop_oneof![Just("(03) 555-1234"), Just("03 5551234"), Just("A@B.org")],
        qphone in prop_oneof![Just("0355-51234"), Just("a@b.org"), Just("phone|035551234")],
    ) {
        let coding: Vec<Value> = codings.iter().map(|(s, c)| match s {
            Some(s) => json!({"system": s, "code": c}),
            None => json!({"code": c}),
        }).collect();
        let raw = match qsys { Some(s) => format!("{s}|{qcode}"), None => qcode.to_owned() };
        let obs = json!({"resourceType": "Observation", "code": {"coding": coding}});
        if let Ok(req) = search::parse_query(T::Observation, &[("code".to_owned(), raw.clone())]) {
            let is_token = matches!(&req.clauses[0], Clause::Param { values, .. } if matches!(values[0], SearchValue::Token { .. }));
            prop_assert!(is_token, "token clause expected");
            check_invariant(T::Observation, "code", &raw, &obs)?;
        }
        let ids: Vec<Value> = codings.iter().map(|(s, c)| match s {
            Some(s) => json!({"system": s, "value": c}),
            None => json!({"value": c}),
        }).collect();
        let pat = json!({"resourceType": "Patient", "identifier": ids, "telecom": [{"system": "phone", "value": phone}]});
        if search::parse_query(T::Patient, &[("identifier".to_owned(), raw.clone())]).is_ok() {
            check_invariant(T::Patient, "identifier", &raw, &pat)?;
        }
        check_invariant(T::Patient, "telecom", qphone, &pat)?;
        check_invariant(T::Patient, "phone", qphone, &pat)?;
    }

    #[test]
    fn string_and_reference_matches_imply_lookup_hits(
        family in prop_oneof![Just("Álvarez"), Just("alvarez"), Just("Al Varez"), Just("Ng")],
        q in prop_oneof![Just("alv"), Just("ALVAREZ"), Just("Álvarez"), Just("n")],
        exact in any::<bool>(),
        subject in prop_oneof![Just("Patient/p1"), Just("Patient/p2"), Just("Group/g")],
        qref in prop_oneof![Just("p1"), Just("Patient/p1"), Just("p2")],
    ) {
        let pat = json!({"resourceType": "Patient", "name": [{"family": family}]});
        let key = if exact { "family:exact" } else { "family" };
        check_invariant(T::Patient, key, q, &pat)?;
        check_invariant(T::Patient, "name", q, &pat)?;
        let obs = json!({"resourceType": "Observation", "subject": {"reference": subject}});
        check_invariant(T::Observation, "subject", qref, &obs)?;
        check_invariant(T::Observation, "patient", qref, &obs)?;
    }
}

#[test]
fn date_prefix_semantics() {
    let enc =
        |s: &str, e: &str| json!({"resourceType": "Encounter", "period": {"start": s, "end": e}});
    let m = |q: &str, r: &Value| {
        let req = search::parse_query(T::Encounter, &[("date".to_owned(), q.to_owned())]).unwrap();
        search::matches(T::Encounter, &req.clauses[0], r)
    };
    let jan = enc("2020-01-05", "2020-01-10");
    assert!(m("2020-01", &jan));
    assert!(m("eq2020", &jan));
    assert!(!m("eq2020-01-05", &jan));
    assert!(m("ne2020-01-05", &jan));
    assert!(m("gt2020-01-07", &jan));
    assert!(!m("gt2020-01-10", &jan));
    assert!(m("lt2020-01-06", &jan));
    assert!(m("ge2020-01", &jan));
    assert!(m("le2020-01", &jan));
    assert!(m("sa2020-01-04", &jan));
    assert!(!m("sa2020-01-05", &jan));
    assert!(m("eb2020-01-11", &jan));
    assert!(!m("eb2020-01-10", &jan));
    assert!(m("ap2020-01-11", &jan));
    assert!(!m("ap2020-03-01", &jan));
}

#[test]
fn sort_and_include_values() {
    let obs = json!({"resourceType": "Observation", "effectivePeriod": {"start": "2020-01-01T00:00:00Z"},
                     "subject": {"reference": "Patient/p1"}, "performer": [{"reference": "Practitioner/d1"}, {"reference": "Patient/p1"}],
                     "meta": {"lastUpdated": "2021-01-01T00:00:00Z"}});
    assert_eq!(
        search::sort_value(T::Observation, "date", &obs),
        Some(1_577_836_800_000_000)
    );
    assert_eq!(
        search::sort_value(T::Observation, "_lastUpdated", &obs),
        Some(1_609_459_200_000_000)
    );
    let perf = search::reference_values(T::Observation, "performer", &obs);
    assert_eq!(perf.len(), 2);
    assert_eq!(
        search::reference_values(T::Observation, "subject", &obs)[0].0,
        T::Patient
    );
}
