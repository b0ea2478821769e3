//! Validators for the R4 primitive types, written from the rules in the R4 specification
//! (datatypes.html). Each returns a diagnostic (free of the value) when invalid.

use serde_json::Value;

use crate::datetime::{self, Form};

fn is_code(s: &str) -> bool {
    // [^\s]+(\s[^\s]+)*
    !s.is_empty()
        && !s.starts_with(char::is_whitespace)
        && !s.ends_with(char::is_whitespace)
        && !s.contains("  ")
        && s.chars().all(|c| c == ' ' || !c.is_whitespace())
}

pub(crate) fn is_oid(s: &str) -> bool {
    // urn:oid:[0-2](\.(0|[1-9][0-9]*))+
    let Some(rest) = s.strip_prefix("urn:oid:") else {
        return false;
    };
    let mut parts = rest.split('.');
    let first_ok = parts.next().is_some_and(|p| matches!(p, "0" | "1" | "2"));
    let mut n = 0;
    let rest_ok = parts.all(|p| {
        n += 1;
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && (p == "0" || !p.starts_with('0'))
    });
    first_ok && rest_ok && n > 0
}

fn is_uuid(s: &str) -> bool {
    let Some(u) = s.strip_prefix("urn:uuid:") else {
        return false;
    };
    u.len() == 36
        && u.bytes().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                b == b'-'
            } else {
                b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
            }
        })
}

fn is_base64(s: &str) -> bool {
    let compact: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !compact.len().is_multiple_of(4) {
        return false;
    }
    let pad = compact.iter().rev().take_while(|b| **b == b'=').count();
    pad <= 2
        && compact
            .iter()
            .take(compact.len() - pad)
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

/// Why a primitive value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The JSON type is wrong (a string where a boolean belongs…).
    JsonType,
    /// The lexical form or range is wrong.
    Format,
    TooLong,
}

/// Checks a JSON value against an R4 primitive type. `max_len` bounds strings (bytes).
pub(crate) fn check(ty: &str, v: &Value, max_len: usize) -> Result<(), (Fault, String)> {
    check_inner(ty, v, max_len).map_err(|msg| {
        let fault = if msg.starts_with("expected") {
            Fault::JsonType
        } else if msg.contains("longer than") {
            Fault::TooLong
        } else {
            Fault::Format
        };
        (fault, msg)
    })
}

fn check_inner(ty: &str, v: &Value, max_len: usize) -> Result<(), String> {
    match ty {
        "boolean" => {
            return if v.is_boolean() {
                Ok(())
            } else {
                Err(format!("expected a JSON boolean for {ty}"))
            };
        }
        "integer" | "positiveInt" | "unsignedInt" => {
            let Some(n) = v.as_i64() else {
                return Err(format!("expected a JSON integer for {ty}"));
            };
            let ok = match ty {
                "integer" => i32::try_from(n).is_ok(),
                "positiveInt" => (1..=i64::from(i32::MAX)).contains(&n),
                _ => (0..=i64::from(i32::MAX)).contains(&n),
            };
            return if ok {
                Ok(())
            } else {
                Err(format!("{ty} out of range"))
            };
        }
        "decimal" => {
            return if v.is_number() {
                Ok(())
            } else {
                Err("expected a JSON number for decimal".into())
            };
        }
        _ => {}
    }
    let Some(s) = v.as_str() else {
        return Err(format!("expected a JSON string for {ty}"));
    };
    if s.is_empty() {
        return Err(format!("empty {ty}"));
    }
    if s.len() > max_len {
        return Err(format!("{ty} longer than {max_len} bytes"));
    }
    let ok = match ty {
        "string" | "markdown" | "xhtml" => true,
        "code" => is_code(s),
        "id" => crate::reference::is_id(s),
        "uri" | "url" | "canonical" => !s.chars().any(char::is_whitespace),
        "oid" => is_oid(s),
        "uuid" => is_uuid(s),
        "base64Binary" => is_base64(s),
        "date" => datetime::parse(s, Form::Date).is_some(),
        "dateTime" => datetime::parse(s, Form::DateTime).is_some(),
        "instant" => datetime::parse(s, Form::Instant).is_some(),
        "time" => datetime::is_valid_time(s),
        _ => return Err(format!("unknown primitive type {ty}")),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("invalid {ty}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn primitives() {
        let ok = |t: &str, v: Value| check(t, &v, 100).is_ok();
        assert!(ok("boolean", json!(true)));
        assert!(!ok("boolean", json!("true")));
        assert!(ok("integer", json!(-3)));
        assert!(!ok("integer", json!(1.5)));
        assert!(!ok("integer", json!(3_000_000_000i64)));
        assert!(!ok("positiveInt", json!(0)));
        assert!(ok("unsignedInt", json!(0)));
        assert!(ok("decimal", json!(1.5)));
        assert!(!ok("decimal", json!("1.5")));
        assert!(ok("code", json!("a b")));
        assert!(!ok("code", json!(" a")));
        assert!(!ok("code", json!("a  b")));
        assert!(!ok("string", json!("")));
        assert!(!ok("string", json!("x".repeat(101))));
        assert!(ok("id", json!("a-1.B")));
        assert!(!ok("id", json!("a_1")));
        assert!(!ok("uri", json!("a b")));
        assert!(ok("oid", json!("urn:oid:1.2.3")));
        assert!(!ok("oid", json!("urn:oid:1.02")));
        assert!(ok(
            "uuid",
            json!("urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a")
        ));
        assert!(ok("base64Binary", json!("aGVsbG8=")));
        assert!(!ok("base64Binary", json!("aGVsbG8")));
        assert!(ok("date", json!("2020-02")));
        assert!(!ok("date", json!("2020-02-01T00:00:00Z")));
        assert!(ok("instant", json!("2020-02-01T00:00:00.123Z")));
        assert!(ok("time", json!("10:00:00")));
    }
}
