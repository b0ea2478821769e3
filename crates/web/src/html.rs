//! Server-rendered pages: one layout, escaping, and the form helpers every
//! identity, admin and consent page shares.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Escapes text for HTML element content and double-quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page: `body` is already-escaped HTML. `csrf` (when signed in)
/// goes in a `<meta name="csrf-token">` for scripts; `scripts` are our
/// static files (`/static/…`), loaded deferred (no inline script: the
/// content security policy forbids it).
pub fn page(
    title: &str,
    nav: Option<&Nav>,
    csrf: Option<&str>,
    scripts: &[&str],
    body: &str,
) -> String {
    let meta = csrf
        .map(|t| format!("<meta name=\"csrf-token\" content=\"{}\">\n", esc(t)))
        .unwrap_or_default();
    let scripts: String = scripts
        .iter()
        .map(|s| format!("<script src=\"{}\" defer></script>\n", esc(s)))
        .collect();
    let nav = nav.map(Nav::render).unwrap_or_default();
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
<title>{title} — Vigil</title>\n<link rel=\"icon\" href=\"data:,\">\n\
<link rel=\"stylesheet\" href=\"/static/vigil.css\">\n{meta}{scripts}</head>\n<body>\n\
<header>\n  <h1><a href=\"/\">Vigil</a></h1>\n{nav}</header>\n<main>\n{body}\n</main>\n</body>\n</html>\n",
        title = esc(title),
    )
}

/// The signed-in user's navigation bar (with the sign-out form).
pub struct Nav {
    pub username: String,
    pub admin: bool,
    /// A privacy officer's session: the audit trail, break-the-glass
    /// reviews, access-policy and monitoring links.
    pub privacy_officer: bool,
    /// A clinician's session: the chart and emergency-access links.
    pub clinician: bool,
    pub csrf: String,
}

impl Nav {
    fn render(&self) -> String {
        let admin = if self.admin {
            "<a href=\"/admin/users\">Users</a> <a href=\"/admin/outbox\">Outbox</a> <a href=\"/admin/clients\">Apps</a> "
        } else {
            ""
        };
        let audit = if self.privacy_officer {
            "<a href=\"/admin/audit\" id=\"nav-audit\">Audit trail</a> \
<a href=\"/admin/break-glass\" id=\"nav-break-glass-reviews\">Break-glass reviews</a> \
<a href=\"/admin/policy\" id=\"nav-policy\">Access policy</a> \
<a href=\"/admin/monitor\" id=\"nav-monitor\">Monitoring</a> "
        } else {
            ""
        };
        let clinical = if self.clinician {
            "<a href=\"/chart\" id=\"nav-chart\">Charts</a> <a href=\"/consult\" id=\"nav-consult\">Consultations</a> <a href=\"/break-glass\" id=\"nav-break-glass\">Emergency access</a> "
        } else {
            ""
        };
        format!(
            "  <nav aria-label=\"Main\"><a href=\"/\">Records</a> <a href=\"/account\" id=\"nav-account\">{user}</a> {clinical}{admin}{audit}\
<form method=\"post\" action=\"/signout\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<button type=\"submit\" id=\"signout\" class=\"secondary\">Sign out</button></form></nav>\n",
            user = esc(&self.username),
            csrf = esc(&self.csrf),
        )
    }
}

/// A hidden CSRF field for a form.
pub fn csrf_field(token: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(token)
    )
}

/// An error paragraph (announced to screen readers), empty when `None`.
pub fn error(msg: Option<&str>) -> String {
    match msg {
        Some(m) => format!("<p class=\"error\" role=\"alert\">{}</p>", esc(m)),
        None => String::new(),
    }
}

pub fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

/// 303 See Other to a local path (never an absolute URL: no open redirects).
pub fn see_other(path: &str) -> Response {
    let path = if local_path(path) { path } else { "/" };
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(path) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// A same-site path: starts with one `/`, not `//` or `/\`.
pub fn local_path(p: &str) -> bool {
    p.starts_with('/')
        && !p.starts_with("//")
        && !p.starts_with("/\\")
        && p.len() <= 2000
        && !p.chars().any(|c| c.is_control())
}

/// Adds a `Set-Cookie` header.
pub fn with_cookie(mut r: Response, cookie: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_local_paths() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert!(local_path("/account"));
        assert!(!local_path("//evil.example"));
        assert!(!local_path("/\\evil.example"));
        assert!(!local_path("https://evil.example"));
        assert!(!local_path("/a\nb"));
    }
}
