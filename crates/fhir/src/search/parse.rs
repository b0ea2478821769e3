//! Parsing of search query parameters into a [`SearchRequest`].
//!
//! Unknown parameters, modifiers, prefixes and values are refused (never ignored).
//! Diagnostics name the parameter but never repeat a value.

use model::{ResourceId, ResourceType};

use super::params::{param, params_for, primary_date_param};
use super::{
    Clause, DateBound, Include, Modifier, ParamDef, ParamKind, Prefix, SearchRequest, SearchValue,
    SortKey, TotalMode,
};
use crate::datetime::{self, Form};
use crate::issue::{Issue, IssueCode};
use crate::reference::{RefTarget, parse_reference};

/// A parameter name as it may appear in a diagnostic: plain names only.
fn shown(name: &str) -> String {
    let ok = !name.is_empty()
        && name.len() <= 80
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':' | b'.'));
    if ok {
        format!("'{name}'")
    } else {
        "a parameter".to_owned()
    }
}

fn not_supported(what: &str, name: &str) -> Issue {
    Issue::request(IssueCode::NotSupported, format!("{what}: {}", shown(name)))
}

fn invalid(what: &str, name: &str) -> Issue {
    Issue::request(IssueCode::Invalid, format!("{what} in {}", shown(name)))
}

/// Splits on an unescaped separator and unescapes `\,`, `\|`, `\$` and `\\`.
fn split_escaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n) if n == sep => cur.push(n),
                Some(n) => {
                    cur.push('\\');
                    cur.push(n);
                }
                None => cur.push('\\'),
            }
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn parse_date_bound(raw: &str, name: &str) -> Result<DateBound, Issue> {
    let (prefix, rest) = match raw.get(..2) {
        Some(p) if p.bytes().all(|b| b.is_ascii_alphabetic()) => {
            let prefix = match p {
                "eq" => Prefix::Eq,
                "ne" => Prefix::Ne,
                "gt" => Prefix::Gt,
                "lt" => Prefix::Lt,
                "ge" => Prefix::Ge,
                "le" => Prefix::Le,
                "sa" => Prefix::Sa,
                "eb" => Prefix::Eb,
                "ap" => Prefix::Ap,
                _ => return Err(not_supported("unknown search prefix", name)),
            };
            (prefix, raw.get(2..).unwrap_or(""))
        }
        _ => (Prefix::Eq, raw),
    };
    let parsed =
        datetime::parse(rest, Form::Search).ok_or_else(|| invalid("invalid date", name))?;
    Ok(DateBound {
        prefix,
        range: parsed.range,
    })
}

fn parse_value(
    def: &'static ParamDef,
    modifier: Option<Modifier>,
    raw: &str,
    name: &str,
) -> Result<SearchValue, Issue> {
    match def.kind {
        ParamKind::Token => {
            let parts = split_escaped(raw, '|');
            match parts.as_slice() {
                [code] if !code.is_empty() => Ok(SearchValue::Token {
                    system: None,
                    code: unescape(code),
                }),
                [system, code] if !(system.is_empty() && code.is_empty()) => {
                    Ok(SearchValue::Token {
                        system: Some(unescape(system)),
                        code: unescape(code),
                    })
                }
                _ => Err(invalid("invalid token", name)),
            }
        }
        ParamKind::String => {
            let s = unescape(raw);
            if super::text::fold(&s).is_empty() {
                return Err(invalid("empty string value", name));
            }
            Ok(SearchValue::String(s))
        }
        ParamKind::Date => parse_date_bound(raw, name).map(SearchValue::Date),
        ParamKind::Reference => {
            if !raw.contains('/') {
                let id = ResourceId::new(raw).map_err(|_| invalid("invalid id", name))?;
                return Ok(SearchValue::Reference { rtype: None, id });
            }
            match parse_reference(raw) {
                RefTarget::Local { rtype, id, .. } => {
                    let rt = ResourceType::parse(&rtype)
                        .filter(|t| def.targets.contains(t))
                        .ok_or_else(|| invalid("reference type not allowed", name))?;
                    if let Some(Modifier::Type(m)) = modifier
                        && m != rt
                    {
                        return Err(invalid("reference type conflicts with the modifier", name));
                    }
                    let id = ResourceId::new(id).map_err(|_| invalid("invalid id", name))?;
                    Ok(SearchValue::Reference {
                        rtype: Some(rt),
                        id,
                    })
                }
                RefTarget::Absolute(u) => Ok(SearchValue::Url(u)),
                _ => Err(invalid("invalid reference", name)),
            }
        }
        ParamKind::Number | ParamKind::Quantity | ParamKind::Uri => {
            Err(not_supported("unsupported parameter type", name))
        }
    }
}

/// Parses `param[:modifier]=values` against one type (no chains).
fn parse_param(rtype: ResourceType, key: &str, raw: &str) -> Result<Clause, Issue> {
    let (pname, modifier) = match key.split_once(':') {
        Some((p, m)) => (p, Some(m)),
        None => (key, None),
    };
    if pname == "_id" || pname == "_lastUpdated" {
        if modifier.is_some() {
            return Err(not_supported("unsupported modifier", key));
        }
        let parts = split_escaped(raw, ',');
        if pname == "_id" {
            let ids = parts
                .iter()
                .map(|p| ResourceId::new(p.as_str()).map_err(|_| invalid("invalid id", key)))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Clause::Id(ids));
        }
        let bounds = parts
            .iter()
            .map(|p| parse_date_bound(p, key))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Clause::LastUpdated(bounds));
    }
    let def =
        param(rtype, pname).ok_or_else(|| not_supported("unknown search parameter", pname))?;
    let modifier = match modifier {
        None => None,
        Some("exact") if def.kind == ParamKind::String => Some(Modifier::Exact),
        Some(t) if def.kind == ParamKind::Reference => {
            let t = ResourceType::parse(t)
                .filter(|t| def.targets.contains(t))
                .ok_or_else(|| not_supported("unsupported modifier", key))?;
            Some(Modifier::Type(t))
        }
        Some(_) => return Err(not_supported("unsupported modifier", key)),
    };
    if raw.is_empty() {
        return Err(invalid("empty value", key));
    }
    let values = split_escaped(raw, ',')
        .iter()
        .map(|v| {
            if v.is_empty() {
                Err(invalid("empty value", key))
            } else {
                parse_value(def, modifier, v, key)
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Clause::Param {
        def,
        modifier,
        values,
    })
}

/// A chain `ref[:Type].param[:modifier]`, only on `subject` and `patient`.
fn parse_chain(rtype: ResourceType, key: &str, raw: &str) -> Result<Clause, Issue> {
    let Some((left, inner_key)) = key.split_once('.') else {
        return Err(not_supported("unknown search parameter", key));
    };
    if inner_key.contains('.') {
        return Err(not_supported(
            "chains of more than one step are not supported",
            key,
        ));
    }
    let (rname, rtype_mod) = match left.split_once(':') {
        Some((n, t)) => (n, Some(t)),
        None => (left, None),
    };
    let def = param(rtype, rname)
        .filter(|d| d.kind == ParamKind::Reference && matches!(d.name, "subject" | "patient"))
        .ok_or_else(|| {
            not_supported("chaining is only supported on 'subject' and 'patient'", key)
        })?;
    let target = match rtype_mod {
        Some(t) => ResourceType::parse(t)
            .filter(|t| def.targets.contains(t))
            .ok_or_else(|| not_supported("unsupported chain target type", key))?,
        None => match def.targets {
            [only] => *only,
            _ => return Err(not_supported("ambiguous chain: name the target type", key)),
        },
    };
    let inner = parse_param(target, inner_key, raw)?;
    Ok(Clause::Chain {
        def,
        target,
        inner: Box::new(inner),
    })
}

/// `_has:Source:ref_param:param[:modifier]`.
fn parse_has(rtype: ResourceType, key: &str, raw: &str) -> Result<Clause, Issue> {
    let rest = key.strip_prefix("_has:").unwrap_or("");
    let mut parts = rest.splitn(3, ':');
    let (Some(src), Some(rp), Some(inner_key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid("malformed _has", "_has"));
    };
    if inner_key.starts_with("_has") || inner_key.contains('.') {
        return Err(not_supported(
            "nested _has or chains in _has are not supported",
            "_has",
        ));
    }
    let source = ResourceType::parse(src)
        .ok_or_else(|| not_supported("unsupported _has source type", key))?;
    let ref_param = param(source, rp)
        .filter(|d| {
            d.kind == ParamKind::Reference
                && matches!(d.name, "subject" | "patient")
                && d.targets.contains(&rtype)
        })
        .ok_or_else(|| {
            not_supported(
                "_has is only supported through 'subject' and 'patient'",
                key,
            )
        })?;
    let inner = parse_param(source, inner_key, raw)?;
    Ok(Clause::Has {
        source,
        ref_param,
        inner: Box::new(inner),
    })
}

fn parse_include(rtype: ResourceType, key: &str, raw: &str, rev: bool) -> Result<Include, Issue> {
    if raw == "*" || raw.ends_with(":*") {
        return Err(not_supported("wildcard includes are not supported", key));
    }
    let parts: Vec<&str> = raw.split(':').collect();
    let (src, pname, target) = match parts.as_slice() {
        [s, p] => (*s, *p, None),
        [s, p, t] => (*s, *p, Some(*t)),
        _ => return Err(invalid("malformed include", key)),
    };
    let source = ResourceType::parse(src)
        .ok_or_else(|| not_supported("unsupported include source type", key))?;
    if !rev && source != rtype {
        return Err(not_supported(
            "_include source must be the searched type",
            key,
        ));
    }
    let def = param(source, pname)
        .filter(|d| d.kind == ParamKind::Reference)
        .ok_or_else(|| not_supported("unsupported include parameter", key))?;
    let target = target
        .map(|t| ResourceType::parse(t).filter(|t| def.targets.contains(t)))
        .map(|t| t.ok_or_else(|| not_supported("unsupported include target type", key)))
        .transpose()?;
    if rev && (!def.targets.contains(&rtype) || target.is_some_and(|t| t != rtype)) {
        return Err(not_supported(
            "_revinclude parameter does not point at the searched type",
            key,
        ));
    }
    Ok(Include {
        source,
        param: def,
        target,
    })
}

fn parse_usize(raw: &str, key: &str) -> Result<usize, Issue> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("expected a non-negative integer", key));
    }
    raw.parse().map_err(|_| invalid("number too large", key))
}

/// Parses URL query pairs (already percent-decoded) for a search on `rtype`.
///
/// Repeated parameters are AND-ed; comma-separated values are OR-ed.
/// All problems are reported together.
pub fn parse_query(
    rtype: ResourceType,
    pairs: &[(String, String)],
) -> Result<SearchRequest, Vec<Issue>> {
    let mut req = SearchRequest::default();
    let mut issues = Vec::new();
    let mut seen_control: Vec<&str> = Vec::new();
    for (key, raw) in pairs {
        let key = key.as_str();
        let control = matches!(
            key,
            "_count" | "_offset" | "_total" | "_sort" | "_summary" | "_format"
        );
        if control {
            if seen_control.contains(&key) {
                issues.push(invalid("repeated control parameter", key));
                continue;
            }
            seen_control.push(key);
        }
        let result: Result<(), Issue> = (|| {
            match key {
                "_count" => req.count = Some(parse_usize(raw, key)?),
                "_offset" => req.offset = parse_usize(raw, key)?,
                "_total" => {
                    req.total = match raw.as_str() {
                        "none" => TotalMode::None,
                        "accurate" | "estimate" => TotalMode::Accurate,
                        _ => return Err(not_supported("unsupported value", key)),
                    }
                }
                "_summary" => {
                    if raw != "count" {
                        return Err(not_supported("only _summary=count is supported", key));
                    }
                    req.summary_count = true;
                }
                "_format" => {
                    if !matches!(raw.as_str(), "json" | "application/fhir+json") {
                        return Err(not_supported("only JSON is supported", key));
                    }
                }
                "_sort" => {
                    for item in raw.split(',') {
                        let (descending, name) = match item.strip_prefix('-') {
                            Some(n) => (true, n),
                            None => (false, item),
                        };
                        let param = match name {
                            "_lastUpdated" => "_lastUpdated",
                            "date" if primary_date_param(rtype).is_some() => "date",
                            "birthdate" if rtype == ResourceType::Patient => "birthdate",
                            _ => return Err(not_supported("unsupported sort key", key)),
                        };
                        req.sort.push(SortKey { param, descending });
                    }
                }
                "_include" => req.include.push(parse_include(rtype, key, raw, false)?),
                "_revinclude" => req.revinclude.push(parse_include(rtype, key, raw, true)?),
                k if k.starts_with("_has:") => req.clauses.push(parse_has(rtype, k, raw)?),
                k if k.contains('.') => req.clauses.push(parse_chain(rtype, k, raw)?),
                k => req.clauses.push(parse_param(rtype, k, raw)?),
            }
            Ok(())
        })();
        if let Err(i) = result {
            issues.push(i);
        }
    }
    if issues.is_empty() {
        Ok(req)
    } else {
        Err(issues)
    }
}

/// All parameter names accepted for a type (for CapabilityStatement), excluding controls.
pub fn param_names(rtype: ResourceType) -> Vec<&'static str> {
    let mut v = vec!["_id", "_lastUpdated"];
    v.extend(params_for(rtype).iter().map(|d| d.name));
    v
}
