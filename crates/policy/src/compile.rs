//! What Cedar is asked per action: the policies whose scope can match it,
//! rewritten into forms that mean exactly the same and evaluate faster.
//!
//! Cedar evaluates a policy's scope and every set literal afresh on each
//! request (building a set of values each time). For one action the policy
//! set is therefore compiled once:
//! - a policy whose action scope cannot match the action is left out;
//! - a policy whose action scope matches it gets the unconstrained scope
//!   `action` (for this action the constraint is true);
//! - `e.containsAny([a, b])` becomes `e.contains(a) || e.contains(b)`, and
//!   `[a, b].contains(e)` becomes `e == a || e == b` (`[]` gives `false`).
//!
//! Each rewrite keeps the value and the errors of the expression: Cedar has
//! no side effects, `==` never errors, and `contains` errors exactly where
//! `containsAny` does (its left side is not a set). The rewritten policies
//! keep their ids and annotations; the validated policy set stays the one
//! shown and edited.

use cedar_policy as cedar;
use serde_json::{Map, Value, json};

use crate::PolicyError;

/// Whether `p`'s action scope can match `action`, one of the schema's
/// `leaves` (actions that belong to no group). `action == X` matches only X;
/// `action in [..]` matches the actions listed and, should the list name
/// anything that is not one of the leaves (an action group), every action:
/// a policy is only left out when its scope provably cannot match.
pub(crate) fn scoped_to(
    p: &cedar::Policy,
    action: &cedar::EntityUid,
    leaves: &[&cedar::EntityUid],
) -> bool {
    match p.action_constraint() {
        cedar::ActionConstraint::Any => true,
        cedar::ActionConstraint::Eq(a) => &a == action,
        cedar::ActionConstraint::In(list) => {
            list.iter().any(|a| a == action || !leaves.contains(&a))
        }
    }
}

/// The policies of `set` Cedar is asked about for `action`, compiled.
pub(crate) fn for_action(
    set: &cedar::PolicySet,
    action: &cedar::EntityUid,
    leaves: &[&cedar::EntityUid],
) -> Result<cedar::PolicySet, PolicyError> {
    let mut part = cedar::PolicySet::new();
    for p in set.policies().filter(|p| scoped_to(p, action, leaves)) {
        let fail = |e: String| PolicyError::Parse(format!("{}: {e}", p.id()));
        let mut est = p.to_json().map_err(|e| fail(e.to_string()))?;
        if let Some(scope) = est.get_mut("action") {
            *scope = json!({ "op": "All" });
        }
        if let Some(conditions) = est.get_mut("conditions") {
            fold(conditions);
        }
        let compiled =
            cedar::Policy::from_json(Some(p.id().clone()), est).map_err(|e| fail(e.to_string()))?;
        part.add(compiled).map_err(|e| fail(e.to_string()))?;
    }
    Ok(part)
}

/// Rewrites set-literal tests in an EST expression tree, bottom up.
fn fold(v: &mut Value) {
    match v {
        Value::Array(items) => items.iter_mut().for_each(fold),
        // A literal (`{"Value": …}`) holds data, not expressions.
        Value::Object(m) if m.len() == 1 && m.contains_key("Value") => {}
        Value::Object(m) => {
            m.values_mut().for_each(fold);
            if let Some(new) = rewrite(m) {
                *v = new;
            }
        }
        _ => {}
    }
}

/// One node: `containsAny` with a literal set on the right, or `contains`
/// with a literal set on the left.
fn rewrite(node: &Map<String, Value>) -> Option<Value> {
    if node.len() != 1 {
        return None;
    }
    let (op, args) = node.iter().next()?;
    let left = args.get("left")?;
    let right = args.get("right")?;
    match op.as_str() {
        "containsAny" => {
            let items = literal_set(right)?;
            Some(any(items.iter().map(
                |item| json!({ "contains": { "left": left.clone(), "right": item.clone() } }),
            )))
        }
        "contains" => {
            let items = literal_set(left)?;
            Some(any(items.iter().map(
                |item| json!({ "==": { "left": right.clone(), "right": item.clone() } }),
            )))
        }
        _ => None,
    }
}

/// The elements of a set literal whose elements are all plain literals.
fn literal_set(v: &Value) -> Option<&Vec<Value>> {
    let items = v.get("Set")?.as_array()?;
    items
        .iter()
        .all(|item| {
            item.get("Value")
                .is_some_and(|x| x.is_string() || x.is_boolean() || x.is_i64())
        })
        .then_some(items)
}

/// `a || b || …`, or `false` for none.
fn any(mut terms: impl Iterator<Item = Value>) -> Value {
    let Some(first) = terms.next() else {
        return json!({ "Value": false });
    };
    terms.fold(first, |acc, t| json!({ "||": { "left": acc, "right": t } }))
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn compiled(text: &str, action: &str) -> String {
        let Ok(set) = cedar::PolicySet::from_str(text) else {
            unreachable!("the test policy parses");
        };
        let Ok(uid) = cedar::EntityUid::from_str(&format!("Vigil::Action::\"{action}\"")) else {
            unreachable!("the uid parses");
        };
        let Ok(part) = for_action(&set, &uid, &[&uid]) else {
            unreachable!("the policy compiles");
        };
        part.policies().map(|p| p.to_string()).collect()
    }

    #[test]
    fn set_literals_become_disjunctions() {
        let text = r#"@id("X") permit (principal, action in [Vigil::Action::"read"], resource)
            when { context.r.containsAny(["a", "b"]) && ["c", "d"].contains(resource.k) && [].contains(1) };"#;
        let out = compiled(text, "read");
        assert!(
            out.contains(
                r#"permit(principal, action, resource) when { (context.r.contains("a") || context.r.contains("b")) && ((resource.k == "c") || (resource.k == "d")) && false };"#
            ),
            "{out}"
        );
        assert!(out.contains(r#"@id("X")"#), "{out}");
    }

    #[test]
    fn literals_are_data_not_expressions() {
        let mut v =
            json!({"Value": {"containsAny": {"left": 1, "right": {"Set": [{"Value": "a"}]}}}});
        let before = v.clone();
        fold(&mut v);
        assert_eq!(v, before);
    }

    #[test]
    fn a_set_of_expressions_is_left_alone() {
        let text = r#"@id("Y") permit (principal, action, resource)
            when { [context.a, "b"].contains(resource.k) };"#;
        assert!(compiled(text, "read").contains('['));
    }
}
