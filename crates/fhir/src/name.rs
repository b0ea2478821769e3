//! A person's name as people read it.

use serde_json::Value;

/// The first `HumanName` of a Patient, Practitioner or RelatedPerson as
/// written: its `text`, else its given names and family; `None` when it has
/// none of them.
pub fn human_name(r: &Value) -> Option<String> {
    let n = r.get("name")?.as_array()?.first()?;
    if let Some(t) = n.get("text").and_then(Value::as_str) {
        return Some(t.to_owned()).filter(|t| !t.is_empty());
    }
    let mut parts: Vec<&str> = n
        .get("given")
        .and_then(Value::as_array)
        .map(|g| g.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(f) = n.get("family").and_then(Value::as_str) {
        parts.push(f);
    }
    let s = parts.join(" ");
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_first_then_given_and_family() {
        let p = json!({"name": [{"family": "Audit", "given": ["Pat", "Q"]}]});
        assert_eq!(human_name(&p).as_deref(), Some("Pat Q Audit"));
        let t = json!({"name": [{"text": "Dr Pat Audit", "family": "Audit"}]});
        assert_eq!(human_name(&t).as_deref(), Some("Dr Pat Audit"));
        assert_eq!(human_name(&json!({"name": []})), None);
        assert_eq!(human_name(&json!({})), None);
    }
}
