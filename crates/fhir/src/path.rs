//! A tiny path selector for search and compartment extraction.
//!
//! Paths are dot-separated element names relative to a resource; arrays are flattened
//! at every step. A step `name[x]` selects every choice variant (`nameDateTime`,
//! `namePeriod`…) and a step `name(field=value)` keeps only objects whose `field`
//! equals `value`.

use serde_json::Value;

/// The values at `path` in `root`, flattened.
pub(crate) fn select<'a>(root: &'a Value, path: &str) -> Vec<&'a Value> {
    let mut current = vec![root];
    for step in path.split('.') {
        let (name, filter) = match step.split_once('(') {
            Some((n, f)) => (n, f.strip_suffix(')').and_then(|f| f.split_once('='))),
            None => (step, None),
        };
        let mut next = Vec::new();
        for v in current {
            let Some(obj) = v.as_object() else { continue };
            let mut push = |x: &'a Value| match x {
                Value::Array(items) => next.extend(items.iter()),
                other => next.push(other),
            };
            if let Some(prefix) = name.strip_suffix("[x]") {
                for (k, x) in obj {
                    let is_variant = k
                        .strip_prefix(prefix)
                        .and_then(|rest| rest.chars().next())
                        .is_some_and(|c| c.is_ascii_uppercase());
                    if is_variant {
                        push(x);
                    }
                }
            } else if let Some(x) = obj.get(name) {
                push(x);
            }
        }
        if let Some((field, want)) = filter {
            next.retain(|x| x.get(field).and_then(Value::as_str) == Some(want));
        }
        current = next;
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selects_flattened_and_filtered() {
        let v = json!({"telecom": [{"system": "phone", "value": "1"}, {"system": "email", "value": "a"}],
                       "name": [{"given": ["a", "b"]}, {"given": ["c"]}],
                       "effectivePeriod": {"start": "2020"}});
        assert_eq!(select(&v, "name.given").len(), 3);
        assert_eq!(select(&v, "telecom(system=email).value"), vec![&json!("a")]);
        assert_eq!(select(&v, "effective[x]").len(), 1);
    }
}
