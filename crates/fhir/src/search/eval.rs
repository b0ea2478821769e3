//! Extraction of search values from resources, index terms, lookups and matching.

use std::collections::BTreeSet;

use model::{ResourceId, ResourceType};
use serde_json::Value;

use super::params::{param, params_for, primary_date_param};
use super::text::{fold, normalize_telecom};
use super::{
    Clause, DateBound, Lookup, Modifier, ParamDef, ParamKind, Prefix, SearchValue, Strategy, Term,
};
use crate::datetime::{self, DAY_MICROS, DateRange, Form, Precision, day_key, day_numbers};
use crate::path::select;
use crate::reference::{RefTarget, parse_reference};

/// A resource date range above this many days is indexed as the single term `wide`.
const WIDE_DAYS: i64 = 400;
/// A query date range above this many days is not looked up by terms.
const MAX_LOOKUP_DAYS: i64 = 1100;
/// The DayBucket term of resources with wide or open date ranges.
pub const WIDE: &str = "wide";

fn values<'a>(def: &ParamDef, resource: &'a Value) -> Vec<&'a Value> {
    def.paths.iter().flat_map(|p| select(resource, p)).collect()
}

fn is_telecom(def: &ParamDef) -> bool {
    def.paths.iter().any(|p| p.starts_with("telecom"))
}

// ---- tokens ----

/// A token atom in a resource: (system, code); codes of telecom params are normalised.
fn token_atoms(def: &ParamDef, resource: &Value) -> Vec<(Option<String>, String)> {
    let telecom = is_telecom(def);
    let mut out = Vec::new();
    let coding = |v: &Value, code_key: &str, out: &mut Vec<(Option<String>, String)>| {
        if let Some(code) = v.get(code_key).and_then(Value::as_str) {
            let system = v.get("system").and_then(Value::as_str).map(str::to_owned);
            let code = if telecom {
                normalize_telecom(code)
            } else {
                code.to_owned()
            };
            out.push((system, code));
        }
    };
    for v in values(def, resource) {
        match v {
            Value::String(s) => out.push((None, s.clone())),
            Value::Bool(b) => out.push((None, b.to_string())),
            Value::Object(o) => {
                if let Some(codings) = o.get("coding").and_then(Value::as_array) {
                    for c in codings {
                        coding(c, "code", &mut out);
                    }
                } else if o.contains_key("code") {
                    coding(v, "code", &mut out);
                } else {
                    // Identifier and ContactPoint: system + value.
                    coding(v, "value", &mut out);
                }
            }
            _ => {}
        }
    }
    out
}

fn token_terms(atom: &(Option<String>, String)) -> [String; 2] {
    match &atom.0 {
        Some(s) => [format!("{s}|{}", atom.1), atom.1.clone()],
        None => [atom.1.clone(), format!("|{}", atom.1)],
    }
}

fn token_matches(atom: &(Option<String>, String), system: Option<&str>, code: &str) -> bool {
    match system {
        None => atom.1 == code,
        Some("") => atom.0.is_none() && atom.1 == code,
        Some(s) => atom.0.as_deref() == Some(s) && (code.is_empty() || atom.1 == code),
    }
}

// ---- strings ----

fn string_values(def: &ParamDef, resource: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for v in values(def, resource) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Object(o) => {
                for key in ["family", "given", "prefix", "suffix", "text"] {
                    match o.get(key) {
                        Some(Value::String(s)) => out.push(s.clone()),
                        Some(Value::Array(a)) => {
                            out.extend(a.iter().filter_map(Value::as_str).map(str::to_owned))
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    out
}

// ---- dates ----

fn parse_range(s: &str) -> Option<(DateRange, Precision)> {
    datetime::parse(s, Form::DateTime).map(|d| (d.range, d.precision))
}

/// Date ranges of a value: a date/dateTime/instant string, a Period or a Timing's events.
fn date_ranges(def: &ParamDef, resource: &Value) -> Vec<(DateRange, Precision)> {
    let mut out = Vec::new();
    for v in values(def, resource) {
        match v {
            Value::String(s) => out.extend(parse_range(s)),
            Value::Object(o) => {
                if let Some(events) = o.get("event").and_then(Value::as_array) {
                    out.extend(
                        events
                            .iter()
                            .filter_map(Value::as_str)
                            .filter_map(parse_range),
                    );
                } else if o.contains_key("start") || o.contains_key("end") {
                    let start = o.get("start").and_then(Value::as_str).and_then(parse_range);
                    let end = o.get("end").and_then(Value::as_str).and_then(parse_range);
                    let range = DateRange {
                        start: start.map_or(i64::MIN, |s| s.0.start),
                        end: end.map_or(i64::MAX, |e| e.0.end),
                    };
                    out.push((range, Precision::Second));
                }
            }
            _ => {}
        }
    }
    out
}

fn days_of(r: &DateRange) -> Vec<String> {
    let Some((first, last)) = day_numbers(r) else {
        return Vec::new();
    };
    (first..=last)
        .filter_map(|d| d.checked_mul(DAY_MICROS).and_then(day_key))
        .collect()
}

fn bucket_terms(r: &DateRange) -> Vec<String> {
    match r.day_span() {
        Some(n) if n <= WIDE_DAYS => days_of(r),
        _ => vec![WIDE.to_owned()],
    }
}

/// Blind date terms (birth dates): the date at its written precision (`YYYY`,
/// `YYYY-MM`, `YYYY-MM-DD`); finer values are indexed by their UTC day.
fn blind_date_terms(r: &DateRange, precision: Precision) -> Vec<String> {
    let Some(day) = day_key(r.start) else {
        return bucket_terms(r);
    };
    match precision {
        Precision::Year => vec![day.chars().take(4).collect()],
        Precision::Month => vec![day.chars().take(7).collect()],
        Precision::Day => vec![day],
        _ if r.day_span() == Some(1) => vec![day],
        _ => bucket_terms(r),
    }
}

/// ap: the query range widened by 10% of its length, at least one day each side.
/// (The spec suggests 10% of the distance from now; this crate has no clock.)
fn approx(r: &DateRange) -> DateRange {
    let pad = (r.end.saturating_sub(r.start) / 10).max(DAY_MICROS);
    DateRange {
        start: r.start.saturating_sub(pad),
        end: r.end.saturating_add(pad),
    }
}

/// R4 date prefix semantics on ranges: `q` is the search value, `t` the target.
pub(crate) fn date_matches(b: &DateBound, t: &DateRange) -> bool {
    let q = &b.range;
    let within = t.start >= q.start && t.end <= q.end;
    match b.prefix {
        Prefix::Eq => within,
        Prefix::Ne => !within,
        Prefix::Gt => t.end > q.end,
        Prefix::Lt => t.start < q.start,
        Prefix::Ge => t.end > q.end || within,
        Prefix::Le => t.start < q.start || within,
        Prefix::Sa => t.start >= q.end,
        Prefix::Eb => t.end <= q.start,
        Prefix::Ap => approx(q).overlaps(t),
    }
}

// ---- references ----

fn ref_targets(def: &ParamDef, resource: &Value) -> Vec<RefTarget> {
    values(def, resource)
        .into_iter()
        .filter_map(|v| v.get("reference").and_then(Value::as_str))
        .map(parse_reference)
        .filter(|t| match t {
            RefTarget::Local { rtype, .. } => {
                ResourceType::parse(rtype).is_some_and(|rt| def.targets.contains(&rt))
            }
            RefTarget::Absolute(_) => true,
            _ => false,
        })
        .collect()
}

fn ref_term(t: &RefTarget) -> Option<String> {
    match t {
        RefTarget::Local { rtype, id, .. } => Some(format!("{rtype}/{id}")),
        RefTarget::Absolute(u) => Some(u.clone()),
        _ => None,
    }
}

// ---- public API ----

fn terms_of(def: &'static ParamDef, resource: &Value) -> Vec<String> {
    match def.kind {
        ParamKind::Token => token_atoms(def, resource)
            .iter()
            .flat_map(token_terms)
            .collect(),
        ParamKind::String => string_values(def, resource)
            .iter()
            .map(|s| fold(s))
            .filter(|s| !s.is_empty())
            .collect(),
        ParamKind::Date => date_ranges(def, resource)
            .iter()
            .flat_map(|(r, p)| {
                if def.strategy == Strategy::Blind {
                    blind_date_terms(r, *p)
                } else {
                    bucket_terms(r)
                }
            })
            .collect(),
        ParamKind::Reference => ref_targets(def, resource)
            .iter()
            .filter_map(ref_term)
            .collect(),
        ParamKind::Number | ParamKind::Quantity | ParamKind::Uri => Vec::new(),
    }
}

/// The normalised terms of every indexed (Blind, DayBucket, Memory) parameter, deduplicated.
pub fn index_terms(rtype: ResourceType, resource: &Value) -> Vec<Term> {
    let mut set = BTreeSet::new();
    for def in params_for(rtype) {
        if def.strategy == Strategy::FilterOnly {
            continue;
        }
        for value in terms_of(def, resource) {
            set.insert(Term {
                param: def.name,
                strategy: def.strategy,
                value,
            });
        }
    }
    set.into_iter().collect()
}

/// The terms to fetch candidates for a clause with (see the module invariant).
pub fn lookup(_rtype: ResourceType, clause: &Clause) -> Lookup {
    let Clause::Param {
        def,
        modifier,
        values,
    } = clause
    else {
        return Lookup::Unindexed;
    };
    if def.strategy == Strategy::FilterOnly || values.is_empty() {
        return Lookup::Unindexed;
    }
    let mut out = BTreeSet::new();
    let mut prefix = false;
    for v in values {
        match (def.kind, v) {
            (ParamKind::Token, SearchValue::Token { system, code }) => {
                let code = if is_telecom(def) {
                    normalize_telecom(code)
                } else {
                    code.clone()
                };
                match system.as_deref() {
                    None => out.insert(code),
                    Some(s) if code.is_empty() => {
                        prefix = true;
                        out.insert(format!("{s}|"))
                    }
                    Some(s) => out.insert(format!("{s}|{code}")),
                };
            }
            (ParamKind::String, SearchValue::String(s)) => {
                if *modifier != Some(Modifier::Exact) {
                    prefix = true;
                }
                out.insert(fold(s));
            }
            (ParamKind::Date, SearchValue::Date(b)) => {
                let range = match b.prefix {
                    Prefix::Eq => b.range,
                    Prefix::Ap => approx(&b.range),
                    _ => return Lookup::Unindexed,
                };
                match day_numbers(&range) {
                    Some((first, last)) if last - first < MAX_LOOKUP_DAYS => {}
                    _ => return Lookup::Unindexed,
                }
                for d in days_of(&range) {
                    if def.strategy == Strategy::Blind {
                        out.insert(d.chars().take(4).collect());
                        out.insert(d.chars().take(7).collect());
                    }
                    out.insert(d);
                }
                if def.strategy != Strategy::Blind {
                    out.insert(WIDE.to_owned());
                }
            }
            (ParamKind::Reference, SearchValue::Reference { rtype, id }) => {
                let types: Vec<ResourceType> = match (rtype, modifier) {
                    (Some(t), _) | (None, Some(Modifier::Type(t))) => vec![*t],
                    (None, _) => def.targets.to_vec(),
                };
                for t in types {
                    out.insert(format!("{t}/{id}"));
                }
            }
            (ParamKind::Reference, SearchValue::Url(u)) => {
                out.insert(u.clone());
            }
            _ => return Lookup::Unindexed,
        }
    }
    Lookup::Terms {
        param: def.name,
        strategy: def.strategy,
        values: out.into_iter().collect(),
        prefix,
    }
}

/// Whether the resource matches the clause, per the R4 search rules.
///
/// `Id` checks `id`; `LastUpdated` checks `meta.lastUpdated`; `Chain` and `Has`
/// return `true`: the caller resolves them (they need other resources).
pub fn matches(_rtype: ResourceType, clause: &Clause, resource: &Value) -> bool {
    match clause {
        Clause::Id(ids) => {
            let id = resource.get("id").and_then(Value::as_str);
            ids.iter().any(|i| Some(i.as_str()) == id)
        }
        Clause::LastUpdated(bounds) => {
            let lu = resource
                .pointer("/meta/lastUpdated")
                .and_then(Value::as_str)
                .and_then(parse_range);
            lu.is_some_and(|(r, _)| bounds.iter().any(|b| date_matches(b, &r)))
        }
        Clause::Chain { .. } | Clause::Has { .. } => true,
        Clause::Param {
            def,
            modifier,
            values,
        } => param_matches(def, *modifier, values, resource),
    }
}

fn param_matches(
    def: &ParamDef,
    modifier: Option<Modifier>,
    values: &[SearchValue],
    resource: &Value,
) -> bool {
    match def.kind {
        ParamKind::Token => {
            let atoms = token_atoms(def, resource);
            values.iter().any(|v| match v {
                SearchValue::Token { system, code } => {
                    let code = if is_telecom(def) {
                        normalize_telecom(code)
                    } else {
                        code.clone()
                    };
                    atoms
                        .iter()
                        .any(|a| token_matches(a, system.as_deref(), &code))
                }
                _ => false,
            })
        }
        ParamKind::String => {
            let strings = string_values(def, resource);
            values.iter().any(|v| match v {
                SearchValue::String(q) if modifier == Some(Modifier::Exact) => {
                    strings.iter().any(|s| s == q)
                }
                SearchValue::String(q) => {
                    let q = fold(q);
                    strings.iter().any(|s| fold(s).starts_with(&q))
                }
                _ => false,
            })
        }
        ParamKind::Date => {
            let ranges = date_ranges(def, resource);
            values.iter().any(|v| match v {
                SearchValue::Date(b) => ranges.iter().any(|(r, _)| date_matches(b, r)),
                _ => false,
            })
        }
        ParamKind::Reference => {
            let refs = ref_targets(def, resource);
            values.iter().any(|v| {
                refs.iter().any(|r| match (v, r) {
                    (
                        SearchValue::Reference { rtype: qt, id: qid },
                        RefTarget::Local { rtype, id, .. },
                    ) => {
                        let want = qt.or(match modifier {
                            Some(Modifier::Type(t)) => Some(t),
                            _ => None,
                        });
                        qid.as_str() == id && want.is_none_or(|t| t.as_str() == rtype)
                    }
                    (SearchValue::Url(u), RefTarget::Absolute(a)) => u == a,
                    _ => false,
                })
            })
        }
        ParamKind::Number | ParamKind::Quantity | ParamKind::Uri => false,
    }
}

/// The local references of a reference parameter (for `_include`), within its targets.
pub fn reference_values(
    rtype: ResourceType,
    param_name: &str,
    resource: &Value,
) -> Vec<(ResourceType, ResourceId)> {
    let Some(def) = param(rtype, param_name).filter(|d| d.kind == ParamKind::Reference) else {
        return Vec::new();
    };
    let mut out: Vec<(ResourceType, ResourceId)> = ref_targets(def, resource)
        .iter()
        .filter_map(RefTarget::local)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The sort value (start instant, microseconds) of `date` (the type's primary date),
/// any date parameter by name, or `_lastUpdated`.
pub fn sort_value(rtype: ResourceType, param_name: &str, resource: &Value) -> Option<i64> {
    if param_name == "_lastUpdated" {
        let s = resource
            .pointer("/meta/lastUpdated")
            .and_then(Value::as_str)?;
        return parse_range(s).map(|(r, _)| r.start);
    }
    let def = param(rtype, param_name)
        .filter(|d| d.kind == ParamKind::Date)
        .or_else(|| {
            if param_name == "date" {
                primary_date_param(rtype)
            } else {
                None
            }
        })?;
    date_ranges(def, resource)
        .iter()
        .map(|(r, _)| r.start)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn terms(t: ResourceType, v: &Value, p: &str) -> Vec<String> {
        index_terms(t, v)
            .into_iter()
            .filter(|x| x.param == p)
            .map(|x| x.value)
            .collect()
    }

    #[test]
    fn token_and_reference_terms() {
        let o = json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "1-8"}, {"code": "x"}]},
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2020-03-04T10:00:00Z"});
        assert_eq!(
            terms(ResourceType::Observation, &o, "code"),
            ["1-8", "http://loinc.org|1-8", "x", "|x"]
        );
        assert_eq!(
            terms(ResourceType::Observation, &o, "patient"),
            ["Patient/p1"]
        );
        assert_eq!(terms(ResourceType::Observation, &o, "date"), ["2020-03-04"]);
        assert!(terms(ResourceType::Observation, &o, "status").is_empty());
    }

    #[test]
    fn wide_and_blind_dates() {
        let e = json!({"resourceType": "Encounter", "period": {"start": "2020-01-01"}});
        assert_eq!(terms(ResourceType::Encounter, &e, "date"), ["wide"]);
        let e = json!({"resourceType": "Encounter", "period": {"start": "2020-01-01", "end": "2020-01-02"}});
        assert_eq!(
            terms(ResourceType::Encounter, &e, "date"),
            ["2020-01-01", "2020-01-02"]
        );
        let p = json!({"resourceType": "Patient", "birthDate": "1974-12"});
        assert_eq!(terms(ResourceType::Patient, &p, "birthdate"), ["1974-12"]);
    }

    #[test]
    fn names_fold() {
        let p = json!({"resourceType": "Patient", "name": [{"family": "Álvarez", "given": ["José"]}],
                       "telecom": [{"system": "phone", "value": "(03) 555"}]});
        assert_eq!(
            terms(ResourceType::Patient, &p, "name"),
            ["alvarez", "jose"]
        );
        assert_eq!(
            terms(ResourceType::Patient, &p, "phone"),
            ["03555", "phone|03555"]
        );
        assert!(terms(ResourceType::Patient, &p, "email").is_empty());
    }
}
