//! Cookies of the first-party pages: the session cookie and the short-lived
//! cookie of a sign-in in progress.

use axum::http::HeaderMap;
use axum::http::header;

/// The session cookie (`__Host-` prefix: Secure, path `/`, no domain).
pub const SESSION_COOKIE: &str = auth::session::COOKIE_NAME;
/// A sign-in between its password and its second factor (or enrolment).
pub const PENDING_COOKIE: &str = "__Host-vigil_pending";

/// The value of cookie `name`, if the request carries exactly one.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut found = None;
    for h in headers.get_all(header::COOKIE) {
        let Ok(h) = h.to_str() else { continue };
        for pair in h.split(';') {
            let Some((k, v)) = pair.trim().split_once('=') else {
                continue;
            };
            if k == name {
                if found.is_some() {
                    // Two cookies of one name: someone planted one. Trust neither.
                    return None;
                }
                found = Some(v.to_owned());
            }
        }
    }
    found.filter(|v| !v.is_empty() && v.len() <= 200)
}

pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    cookie(headers, SESSION_COOKIE)
}

/// `Set-Cookie` for a cookie of ours with the given lifetime (`None`: the
/// browser session).
pub fn set_cookie(name: &str, value: &str, max_age: Option<u64>) -> String {
    let age = max_age
        .map(|s| format!("; Max-Age={s}"))
        .unwrap_or_default();
    format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Strict{age}")
}

pub fn clear_cookie(name: &str) -> String {
    format!("{name}=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Strict")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn cookies_are_read_once_and_duplicates_refused() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-vigil_session=abc; b=2"),
        );
        assert_eq!(session_cookie(&h).as_deref(), Some("abc"));
        h.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-vigil_session=evil"),
        );
        assert_eq!(session_cookie(&h), None);
        assert_eq!(cookie(&HeaderMap::new(), "x"), None);
    }
}
