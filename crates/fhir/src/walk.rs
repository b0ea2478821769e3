//! A schema-driven walk over the typed elements of a resource.

use serde_json::Value;

use crate::schema::{ElemDef, Kind, SCHEMA, TypeDef};

/// Deepest nesting the walk follows; deeper content is skipped (validation refuses it).
const MAX_DEPTH: usize = 64;

/// One typed element value met by [`walk_resource`].
pub(crate) struct Visit<'a> {
    /// The element's type code (`Reference`, `string`, `Patient` for a resource…).
    pub type_name: &'a str,
    pub value: &'a Value,
    /// FHIRPath-like location, e.g. `Patient.contact[0].name`.
    pub expr: &'a str,
    /// JSON pointer to the value.
    pub pointer: &'a str,
}

/// Finds the element definition and concrete type selected by a JSON key.
pub(crate) fn find_elem<'s>(children: &'s [ElemDef], key: &str) -> Option<(&'s ElemDef, &'s str)> {
    children.iter().find_map(|e| match e.match_key(key) {
        Some(Some(t)) => Some((e, t)),
        Some(None) => e.content_ref.as_ref().map(|_| (e, "")),
        None => None,
    })
}

/// Calls `visit` for every typed element in the resource (including contained resources).
pub(crate) fn walk_resource(resource: &Value, expr: &str, visit: &mut dyn FnMut(&Visit<'_>)) {
    walk_res(resource, expr, "", 0, visit);
}

fn walk_res(
    resource: &Value,
    expr: &str,
    ptr: &str,
    depth: usize,
    visit: &mut dyn FnMut(&Visit<'_>),
) {
    let Some(obj) = resource.as_object() else {
        return;
    };
    let Some(td) = obj
        .get("resourceType")
        .and_then(Value::as_str)
        .and_then(|t| SCHEMA.get(t))
    else {
        return;
    };
    if td.kind != Kind::Resource {
        return;
    }
    walk_node(td, "", resource, expr, ptr, depth, visit);
}

fn walk_node(
    td: &TypeDef,
    node: &str,
    value: &Value,
    expr: &str,
    ptr: &str,
    depth: usize,
    visit: &mut dyn FnMut(&Visit<'_>),
) {
    if depth > MAX_DEPTH {
        return;
    }
    let (Some(obj), Some(children)) = (value.as_object(), td.nodes.get(node)) else {
        return;
    };
    for (key, val) in obj {
        if key.starts_with('_') || key == "resourceType" {
            continue;
        }
        let Some((elem, ty)) = find_elem(children, key) else {
            continue;
        };
        let key_ptr = format!("{ptr}/{}", key.replace('~', "~0").replace('/', "~1"));
        match val {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let e = format!("{expr}.{key}[{i}]");
                    let p = format!("{key_ptr}/{i}");
                    walk_item(td, elem, ty, item, &e, &p, depth + 1, visit);
                }
            }
            item => {
                let e = format!("{expr}.{key}");
                walk_item(td, elem, ty, item, &e, &key_ptr, depth + 1, visit);
            }
        }
    }
}

#[expect(clippy::too_many_arguments, reason = "a private recursive helper")]
fn walk_item(
    td: &TypeDef,
    elem: &ElemDef,
    ty: &str,
    item: &Value,
    expr: &str,
    ptr: &str,
    depth: usize,
    visit: &mut dyn FnMut(&Visit<'_>),
) {
    if let Some(cr) = &elem.content_ref {
        walk_node(td, cr, item, expr, ptr, depth, visit);
        return;
    }
    visit(&Visit {
        type_name: ty,
        value: item,
        expr,
        pointer: ptr,
    });
    match ty {
        "Resource" => walk_res(item, expr, ptr, depth, visit),
        "BackboneElement" | "Element" => walk_node(td, &elem.path, item, expr, ptr, depth, visit),
        _ => {
            if let Some(sub) = SCHEMA.get(ty)
                && sub.kind == Kind::Complex
            {
                walk_node(sub, "", item, expr, ptr, depth, visit);
            }
        }
    }
}
