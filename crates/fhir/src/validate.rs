//! Structural validation of R4 resources against the embedded schema.

use serde_json::{Map, Value};

use crate::issue::{Issue, IssueCode};
use crate::primitive::{self, Fault};
use crate::reference::{RefTarget, parse_reference};
use crate::schema::{ElemDef, Kind, SCHEMA, TypeDef};
use crate::walk::find_elem;

/// Bounds on the size and shape of accepted resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest string value, in bytes.
    pub max_string_len: usize,
    /// Deepest JSON object nesting.
    pub max_depth: usize,
    /// Longest array.
    pub max_array_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_string_len: 1_048_576,
            max_depth: 32,
            max_array_len: 10_000,
        }
    }
}

/// Stop collecting after this many issues: a hostile resource must not cost more.
const MAX_ISSUES: usize = 100;

/// Validates any R4 resource (every resource type in the schema) against the R4 base
/// definitions: known elements only, cardinalities, primitive forms, codes of required
/// bindings (where the value set is resolvable offline), reference syntax and target
/// types, contained-resource rules (dom-2, dom-3 for `#` references, dom-4) and extension
/// shape (ext-1).
pub fn validate(resource: &Value, limits: &Limits) -> Result<(), Vec<Issue>> {
    let mut v = Validator {
        limits,
        issues: Vec::new(),
        scope: Scope::default(),
    };
    let root = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .filter(|t| SCHEMA.is_resource(t) && *t != "DomainResource")
        .unwrap_or("Resource");
    v.resource(resource, root, 0, false);
    if v.issues.is_empty() {
        Ok(())
    } else {
        Err(v.issues)
    }
}

/// Contained ids and `#` references of one top-level (non-contained) resource.
#[derive(Default)]
struct Scope {
    contained_ids: Vec<String>,
    local_refs: Vec<(String, String)>,
}

struct Validator<'l> {
    limits: &'l Limits,
    issues: Vec<Issue>,
    scope: Scope,
}

/// A JSON key as it may appear in a path: element-like names only, never free text.
fn safe_key(key: &str) -> &str {
    let body = key.strip_prefix('_').unwrap_or(key);
    let ok = !body.is_empty()
        && body.len() <= 64
        && body.starts_with(|c: char| c.is_ascii_alphabetic())
        && body.bytes().all(|b| b.is_ascii_alphanumeric());
    if ok { key } else { "?" }
}

impl Validator<'_> {
    fn push(&mut self, code: IssueCode, diagnostics: impl Into<String>, expr: &str) {
        if self.issues.len() < MAX_ISSUES {
            self.issues.push(Issue::error(code, diagnostics, expr));
        }
    }

    fn full(&self) -> bool {
        self.issues.len() >= MAX_ISSUES
    }

    fn resource(&mut self, v: &Value, expr: &str, depth: usize, contained: bool) {
        let Some(obj) = v.as_object() else {
            self.push(
                IssueCode::Structure,
                "expected a resource (JSON object)",
                expr,
            );
            return;
        };
        let td = match obj.get("resourceType") {
            None => {
                self.push(IssueCode::Required, "missing resourceType", expr);
                return;
            }
            Some(Value::String(t)) if t != "DomainResource" => match SCHEMA.get(t) {
                Some(td) if td.kind == Kind::Resource => td,
                _ => {
                    self.push(IssueCode::NotSupported, "unknown resourceType", expr);
                    return;
                }
            },
            Some(_) => {
                self.push(IssueCode::NotSupported, "unknown resourceType", expr);
                return;
            }
        };
        let outer = if contained {
            None
        } else {
            Some(std::mem::take(&mut self.scope))
        };
        if contained {
            match obj.get("id").and_then(Value::as_str) {
                Some(id) => self.scope.contained_ids.push(id.to_owned()),
                None => self.push(
                    IssueCode::Required,
                    "contained resource needs an id",
                    &format!("{expr}.id"),
                ),
            }
            if obj.contains_key("contained") {
                self.push(
                    IssueCode::Invariant,
                    "dom-2: a contained resource must not contain resources",
                    &format!("{expr}.contained"),
                );
            }
            if let Some(meta) = obj.get("meta").and_then(Value::as_object)
                && (meta.contains_key("versionId") || meta.contains_key("lastUpdated"))
            {
                self.push(
                    IssueCode::Invariant,
                    "dom-4: a contained resource must not have meta.versionId or meta.lastUpdated",
                    &format!("{expr}.meta"),
                );
            }
        }
        self.object(td, "", v, expr, depth);
        if let Some(outer) = outer {
            let scope = std::mem::replace(&mut self.scope, outer);
            for (id, path) in scope.local_refs {
                if !scope.contained_ids.contains(&id) {
                    self.push(
                        IssueCode::Invalid,
                        "dom-3: '#' reference to a contained resource that does not exist",
                        &path,
                    );
                }
            }
        }
    }

    fn object(&mut self, td: &TypeDef, node: &str, v: &Value, expr: &str, depth: usize) {
        if self.full() {
            return;
        }
        if depth >= self.limits.max_depth {
            self.push(
                IssueCode::TooCostly,
                format!("nesting deeper than {}", self.limits.max_depth),
                expr,
            );
            return;
        }
        let obj = match v {
            Value::Object(o) => o,
            Value::Null => {
                self.push(IssueCode::Structure, "null is not allowed", expr);
                return;
            }
            _ => {
                self.push(IssueCode::Structure, "expected a JSON object", expr);
                return;
            }
        };
        if obj.is_empty() {
            self.push(IssueCode::Structure, "ele-1: empty object", expr);
            return;
        }
        let Some(children) = td.nodes.get(node) else {
            self.push(IssueCode::Processing, "no definition for element", expr);
            return;
        };
        let is_resource_root = td.kind == Kind::Resource && node.is_empty();
        for (key, val) in obj {
            if key == "resourceType" && is_resource_root {
                continue;
            }
            let (ext, name) = match key.strip_prefix('_') {
                Some(n) => (true, n),
                None => (false, key.as_str()),
            };
            let path = format!("{expr}.{}", safe_key(key));
            let Some((elem, ty)) = find_elem(children, name) else {
                self.push(IssueCode::Structure, "unknown element", &path);
                continue;
            };
            if ext {
                if elem.content_ref.is_some() || !SCHEMA.is_primitive(ty) {
                    self.push(IssueCode::Structure, "unknown element", &path);
                } else {
                    self.primitive_ext(elem, val, obj.get(name), &path, depth);
                }
            } else {
                self.element(td, elem, ty, val, obj.get(&format!("_{key}")), &path, depth);
            }
        }
        for c in children {
            let present: Vec<&String> = obj
                .keys()
                .filter(|k| c.match_key(k.strip_prefix('_').unwrap_or(k)).is_some())
                .collect();
            if c.choice {
                let mut variants: Vec<&str> =
                    present.iter().map(|k| k.trim_start_matches('_')).collect();
                variants.dedup();
                if variants.len() > 1 {
                    self.push(
                        IssueCode::Structure,
                        "more than one type given for a choice element",
                        &format!("{expr}.{}[x]", c.name),
                    );
                }
            }
            if c.min > 0 && present.is_empty() {
                let suffix = if c.choice { "[x]" } else { "" };
                self.push(
                    IssueCode::Required,
                    "missing required element",
                    &format!("{expr}.{}{suffix}", c.name),
                );
            }
        }
        if td.kind == Kind::Complex && node.is_empty() {
            self.type_rules(td, obj, expr);
        }
    }

    /// Invariants of a few datatypes that matter for safety.
    fn type_rules(&mut self, td: &TypeDef, obj: &Map<String, Value>, expr: &str) {
        let is = |name: &str| SCHEMA.get(name).is_some_and(|t| std::ptr::eq(t, td));
        if is("Extension") {
            let has_value = obj.keys().any(|k| {
                let k = k.strip_prefix('_').unwrap_or(k);
                k.strip_prefix("value")
                    .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_uppercase()))
            });
            if has_value == obj.contains_key("extension") {
                self.push(
                    IssueCode::Invariant,
                    "ext-1: an extension needs either a value or extensions, not both",
                    expr,
                );
            }
        }
    }

    #[expect(clippy::too_many_arguments, reason = "a private recursive helper")]
    fn element(
        &mut self,
        td: &TypeDef,
        elem: &ElemDef,
        ty: &str,
        val: &Value,
        sibling_ext: Option<&Value>,
        path: &str,
        depth: usize,
    ) {
        if !elem.is_many() {
            if val.is_array() {
                self.push(
                    IssueCode::Structure,
                    "array given for an element that allows at most one value",
                    path,
                );
            } else {
                self.item(td, elem, ty, val, path, depth);
            }
            return;
        }
        let Some(items) = val.as_array() else {
            self.push(
                IssueCode::Structure,
                "expected an array for a repeating element",
                path,
            );
            return;
        };
        if items.is_empty() {
            self.push(IssueCode::Structure, "empty array", path);
            return;
        }
        if items.len() > self.limits.max_array_len {
            self.push(
                IssueCode::TooCostly,
                format!("more than {} items", self.limits.max_array_len),
                path,
            );
            return;
        }
        if let Some(max) = elem.max
            && items.len() > max as usize
        {
            self.push(IssueCode::Structure, format!("more than {max} items"), path);
        }
        let exts = sibling_ext.and_then(Value::as_array);
        for (i, item) in items.iter().enumerate() {
            let ip = format!("{path}[{i}]");
            let has_ext = exts.and_then(|e| e.get(i)).is_some_and(|e| !e.is_null());
            if item.is_null() && has_ext && SCHEMA.is_primitive(ty) {
                continue;
            }
            self.item(td, elem, ty, item, &ip, depth);
            if self.full() {
                return;
            }
        }
    }

    fn item(
        &mut self,
        td: &TypeDef,
        elem: &ElemDef,
        ty: &str,
        v: &Value,
        path: &str,
        depth: usize,
    ) {
        if v.is_null() {
            self.push(IssueCode::Structure, "null is not allowed", path);
            return;
        }
        if let Some(cr) = &elem.content_ref {
            self.object(td, cr, v, path, depth + 1);
            return;
        }
        match ty {
            "Resource" => {
                let contained = td.kind == Kind::Resource && elem.path == "contained";
                self.resource(v, path, depth + 1, contained);
            }
            "BackboneElement" | "Element" => self.object(td, &elem.path, v, path, depth + 1),
            _ => match SCHEMA.get(ty) {
                Some(sub) if sub.kind == Kind::Primitive => {
                    if let Err((fault, msg)) = primitive::check(ty, v, self.limits.max_string_len) {
                        let code = match fault {
                            Fault::JsonType => IssueCode::Structure,
                            Fault::Format => IssueCode::Value,
                            Fault::TooLong => IssueCode::TooLong,
                        };
                        self.push(code, msg, path);
                    } else {
                        self.binding(elem, v, path);
                    }
                }
                Some(sub) => {
                    self.object(sub, "", v, path, depth + 1);
                    if ty == "Reference" {
                        self.reference(elem, v, path);
                    }
                }
                None => self.push(
                    IssueCode::Processing,
                    "element of an unsupported type",
                    path,
                ),
            },
        }
    }

    /// A `code` value against the value set of its required binding. The diagnostics name
    /// the path and the value set, never the value (it may be PHI).
    fn binding(&mut self, elem: &ElemDef, v: &Value, path: &str) {
        let (Some(vs), Some(code)) = (SCHEMA.value_set(elem), v.as_str()) else {
            return;
        };
        if !vs.allows(code) {
            self.push(
                IssueCode::CodeInvalid,
                format!("{path}: code not in the required value set {}", vs.url),
                path,
            );
        }
    }

    fn reference(&mut self, elem: &ElemDef, v: &Value, path: &str) {
        let Some(r) = v.get("reference").and_then(Value::as_str) else {
            return;
        };
        let rpath = format!("{path}.reference");
        match parse_reference(r) {
            RefTarget::Other(_) => self.push(IssueCode::Value, "invalid reference", &rpath),
            RefTarget::Local { rtype, .. }
                if !elem.targets.is_empty() && !elem.targets.contains(&rtype) =>
            {
                self.push(
                    IssueCode::Invalid,
                    "reference to a resource type this element does not allow",
                    &rpath,
                );
            }
            RefTarget::Contained(id) if !id.is_empty() => self.scope.local_refs.push((id, rpath)),
            _ => {}
        }
    }

    /// A primitive's `_name` companion: `{id?, extension?}` or an array of those (or null).
    fn primitive_ext(
        &mut self,
        elem: &ElemDef,
        val: &Value,
        base: Option<&Value>,
        path: &str,
        depth: usize,
    ) {
        if elem.is_many() {
            let Some(items) = val.as_array() else {
                self.push(
                    IssueCode::Structure,
                    "expected an array for a repeating element",
                    path,
                );
                return;
            };
            if let Some(b) = base.and_then(Value::as_array)
                && b.len() != items.len()
            {
                self.push(
                    IssueCode::Structure,
                    "primitive value and extension arrays differ in length",
                    path,
                );
                return;
            }
            if items.len() > self.limits.max_array_len {
                self.push(
                    IssueCode::TooCostly,
                    format!("more than {} items", self.limits.max_array_len),
                    path,
                );
                return;
            }
            let bases = base.and_then(Value::as_array);
            for (i, item) in items.iter().enumerate() {
                let ip = format!("{path}[{i}]");
                if item.is_null() {
                    if bases.and_then(|b| b.get(i)).is_none_or(Value::is_null) {
                        self.push(IssueCode::Structure, "null is not allowed", &ip);
                    }
                    continue;
                }
                self.ext_object(item, &ip, depth);
            }
        } else {
            self.ext_object(val, path, depth);
        }
    }

    fn ext_object(&mut self, v: &Value, path: &str, depth: usize) {
        let Some(element) = SCHEMA.get("Element") else {
            // Element is not a specialization in the package; check its two members here.
            self.primitive_element(v, path, depth);
            return;
        };
        self.object(element, "", v, path, depth + 1);
    }

    fn primitive_element(&mut self, v: &Value, path: &str, depth: usize) {
        let Some(obj) = v.as_object() else {
            self.push(IssueCode::Structure, "expected a JSON object", path);
            return;
        };
        if obj.is_empty() {
            self.push(IssueCode::Structure, "ele-1: empty object", path);
        }
        let Some(ext_td) = SCHEMA.get("Extension") else {
            return;
        };
        for (k, x) in obj {
            let p = format!("{path}.{}", safe_key(k));
            match k.as_str() {
                "id" => {
                    if let Err((_, msg)) = primitive::check("string", x, self.limits.max_string_len)
                    {
                        self.push(IssueCode::Value, msg, &p);
                    }
                }
                "extension" => match x.as_array() {
                    Some(items)
                        if !items.is_empty() && items.len() <= self.limits.max_array_len =>
                    {
                        for (i, e) in items.iter().enumerate() {
                            self.object(ext_td, "", e, &format!("{p}[{i}]"), depth + 1);
                        }
                    }
                    _ => self.push(IssueCode::Structure, "expected a non-empty array", &p),
                },
                _ => self.push(IssueCode::Structure, "unknown element", &p),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn issues(v: Value) -> Vec<(IssueCode, String)> {
        match validate(&v, &Limits::default()) {
            Ok(()) => Vec::new(),
            Err(i) => i
                .into_iter()
                .map(|i| (i.code, i.expression.join(",")))
                .collect(),
        }
    }

    #[test]
    fn accepts_a_small_patient() {
        let p = json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "Ng", "given": ["A", null], "_given": [null, {"extension": [{"url": "http://x", "valueString": "y"}]}]}],
                       "birthDate": "1970-01", "deceasedBoolean": false, "_gender": {"id": "g"}, "gender": "male"});
        assert_eq!(issues(p), vec![]);
    }

    #[test]
    fn reports_paths_not_values() {
        let p = json!({"resourceType": "Patient", "birthDate": "secret-value", "name": [{"given": [1]}]});
        let err = validate(&p, &Limits::default()).unwrap_err();
        let text = format!("{err:?}");
        assert!(!text.contains("secret-value"));
        let g = json!({"resourceType": "Patient", "gender": "secret-gender"});
        let text = format!("{:?}", validate(&g, &Limits::default()).unwrap_err());
        assert!(!text.contains("secret-gender"));
        assert!(text.contains("administrative-gender"));
        assert_eq!(
            issues(p),
            vec![
                (IssueCode::Value, "Patient.birthDate".into()),
                (IssueCode::Structure, "Patient.name[0].given[0]".into()),
            ]
        );
    }
}
