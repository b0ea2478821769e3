//! FHIR JSON shapes the server returns: searchset and history Bundles.

use model::ResourceType;
use serde_json::{Value, json};

use crate::{SearchPage, Versioned};

/// The URL of a search page: the base, the type and the query with paging set.
fn page_url(
    base: &str,
    rtype: ResourceType,
    params: &[(String, String)],
    offset: usize,
    count: usize,
) -> String {
    let mut q: Vec<String> = params
        .iter()
        .filter(|(k, _)| k != "_offset" && k != "_count")
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    q.push(format!("_count={count}"));
    q.push(format!("_offset={offset}"));
    format!("{base}/{rtype}?{}", q.join("&"))
}

/// Percent-encodes a query component (RFC 3986 unreserved characters kept).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':' | b'|' | b',')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn full_url(base: &str, v: &Versioned) -> String {
    format!("{base}/{}/{}", v.rtype, v.id)
}

/// A `searchset` Bundle for a page of results.
pub fn searchset(base: &str, page: &SearchPage, params: &[(String, String)], now: &str) -> Value {
    let mut entries = Vec::new();
    for v in &page.matches {
        if let Some(r) = &v.resource {
            entries.push(
                json!({"fullUrl": full_url(base, v), "resource": r, "search": {"mode": "match"}}),
            );
        }
    }
    for v in &page.included {
        if let Some(r) = &v.resource {
            entries.push(
                json!({"fullUrl": full_url(base, v), "resource": r, "search": {"mode": "include"}}),
            );
        }
    }
    let mut links = vec![
        json!({"relation": "self", "url": page_url(base, page.rtype, params, page.offset, page.count)}),
    ];
    if let Some(next) = page.next_offset {
        links.push(json!({"relation": "next", "url": page_url(base, page.rtype, params, next, page.count)}));
    }
    if page.offset > 0 {
        let prev = page.offset.saturating_sub(page.count);
        links.push(json!({"relation": "previous", "url": page_url(base, page.rtype, params, prev, page.count)}));
    }
    let mut b = json!({
        "resourceType": "Bundle",
        "id": crate::records::new_id().to_string(),
        "meta": {"lastUpdated": now},
        "type": "searchset",
        "link": links,
    });
    if let (Some(obj), Some(total)) = (b.as_object_mut(), page.total) {
        obj.insert("total".into(), json!(total));
    }
    if let (Some(obj), false) = (b.as_object_mut(), entries.is_empty()) {
        obj.insert("entry".into(), Value::Array(entries));
    }
    b
}

/// A `history` Bundle, newest first.
pub fn history(base: &str, versions: &[Versioned], now: &str) -> Value {
    let entries: Vec<Value> = versions
        .iter()
        .map(|v| {
            let url = format!("{}/{}/_history/{}", v.rtype, v.id, v.version);
            let mut e = json!({"fullUrl": full_url(base, v)});
            if let Some(obj) = e.as_object_mut() {
                match &v.resource {
                    Some(r) => {
                        obj.insert("resource".into(), r.clone());
                        let method = if v.version.0 == 1 { "POST" } else { "PUT" };
                        obj.insert("request".into(), json!({"method": method, "url": format!("{}/{}", v.rtype, v.id)}));
                        obj.insert("response".into(), json!({"status": if v.version.0 == 1 {"201"} else {"200"}, "etag": etag(v), "lastModified": v.last_updated.to_fhir_instant(), "location": url}));
                    }
                    None => {
                        obj.insert("request".into(), json!({"method": "DELETE", "url": format!("{}/{}", v.rtype, v.id)}));
                        obj.insert("response".into(), json!({"status": "204", "etag": etag(v), "lastModified": v.last_updated.to_fhir_instant()}));
                    }
                }
            }
            e
        })
        .collect();
    let mut b = json!({
        "resourceType": "Bundle",
        "id": crate::records::new_id().to_string(),
        "meta": {"lastUpdated": now},
        "type": "history",
        "total": versions.len(),
    });
    if let (Some(obj), false) = (b.as_object_mut(), entries.is_empty()) {
        obj.insert("entry".into(), Value::Array(entries));
    }
    b
}

/// The weak ETag of a version: `W/"3"`.
pub fn etag(v: &Versioned) -> String {
    format!("W/\"{}\"", v.version)
}
