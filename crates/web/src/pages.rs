//! Health, the record browser, and what every signed-in page shares: the
//! session check, form bodies and error pages.

use app::{SessionProblem, SessionView};
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use store::Role;

use crate::WebState;
use crate::html::{self, Nav, esc};

/// The largest form body a page accepts.
pub(crate) const FORM_LIMIT: usize = 16 * 1024;

pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/health", get(health))
        .route("/", get(index))
        .route("/static/records.js", get(records_js))
        .route("/static/vigil.css", get(css))
}

async fn health() -> Response {
    let mut r = (StatusCode::OK, "{\"status\":\"ok\"}").into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn asset(body: &'static str, ctype: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

/// The record browser: the page itself holds no data; `records.js` reads
/// the API with the session cookie and the CSRF token from the page's meta.
async fn index(State(state): State<WebState>, headers: HeaderMap) -> Response {
    let view = match signed_in(&state, &headers, "/").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let who = format!(
        "Signed in as {} ({})",
        esc(&view.account.username),
        esc(view.account.role.as_str())
    );
    let body = include_str!("../assets/index.html").replace("{{who}}", &who);
    html::html(
        StatusCode::OK,
        html::page(
            "Records",
            Some(&nav(&view)),
            Some(&view.csrf),
            &["/static/records.js"],
            &body,
        ),
    )
}

async fn records_js() -> Response {
    asset(
        include_str!("../assets/records.js"),
        "text/javascript; charset=utf-8",
    )
}

async fn css() -> Response {
    asset(
        include_str!("../assets/vigil.css"),
        "text/css; charset=utf-8",
    )
}

/// The navigation bar of a signed-in page.
pub(crate) fn nav(view: &SessionView) -> Nav {
    Nav {
        username: view.account.username.clone(),
        admin: view.account.role == Role::Administrator,
        privacy_officer: view.account.role == Role::PrivacyOfficer,
        clinician: matches!(
            view.account.role,
            Role::Physician | Role::Nurse | Role::OtherClinical
        ),
        csrf: view.csrf.clone(),
    }
}

/// The live session of a page request, or the redirect (or error page) that
/// answers instead. `path` (local, with its query) is where sign-in returns.
pub(crate) async fn signed_in(
    state: &WebState,
    headers: &HeaderMap,
    path: &str,
) -> Result<SessionView, Response> {
    let next = encode_component(path);
    let Some(cookie) = crate::session::session_cookie(headers) else {
        return Err(html::see_other(&format!("/signin?next={next}")));
    };
    match state.vigil.session(&cookie).await {
        Ok(v) => Ok(v),
        Err(SessionProblem::Missing) => Err(html::see_other(&format!("/signin?next={next}"))),
        Err(SessionProblem::Expired) => {
            Err(html::see_other(&format!("/signin?expired=1&next={next}")))
        }
        Err(SessionProblem::Deactivated) => Err(html::see_other("/deactivated")),
        Err(SessionProblem::Failed(e)) => {
            tracing::error!(error = %e, "session lookup failed");
            Err(error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                "Something went wrong",
                "The server could not complete the request. Try again in a moment.",
            ))
        }
    }
}

/// Whether a posted form carries the session's CSRF token.
pub(crate) fn csrf_ok(state: &WebState, headers: &HeaderMap, form: &Form) -> bool {
    let Some(cookie) = crate::session::session_cookie(headers) else {
        return false;
    };
    state
        .vigil
        .check_csrf(&cookie, form.get("csrf").unwrap_or(""))
}

/// A page that says what went wrong (and nothing more).
pub(crate) fn error_page(
    status: StatusCode,
    nav: Option<&Nav>,
    title: &str,
    msg: &str,
) -> Response {
    let body = format!(
        "<section class=\"card\">\n<h2 id=\"error-title\">{}</h2>\n{}\n<p><a href=\"/\">Back to Vigil</a></p>\n</section>",
        esc(title),
        html::error(Some(msg)),
    );
    html::html(status, html::page(title, nav, None, &[], &body))
}

pub(crate) fn forbidden_page(nav: Option<&Nav>) -> Response {
    error_page(
        StatusCode::FORBIDDEN,
        nav,
        "Not allowed",
        "This page or action is not available to you, or the form expired; reload the page and try again.",
    )
}

/// What a user may read of an error: our own messages for 4xx, nothing of a 5xx.
/// The HTTP status of an application error.
pub(crate) fn status_of(e: &app::AppError) -> StatusCode {
    StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A signed-in user's error page for an application error.
/// A denial by the access policy explains itself (`access_pages::denial_page`).
pub(crate) fn app_error_page(view: &SessionView, title: &str, e: &app::AppError) -> Response {
    if let app::AppError::Denied(d) = e {
        return crate::access_pages::denial_page(view, d, None);
    }
    error_page(status_of(e), Some(&nav(view)), title, &app_error_text(e))
}

pub(crate) fn app_error_text(e: &app::AppError) -> String {
    if e.status() >= 500 {
        tracing::error!(error = %e, detail = ?e, "page action failed");
        return "the server could not complete the request".into();
    }
    let msgs: Vec<String> = e.issues().into_iter().map(|i| i.diagnostics).collect();
    if msgs.is_empty() {
        e.to_string()
    } else {
        msgs.join("; ")
    }
}

/// A decoded `application/x-www-form-urlencoded` body.
#[derive(Debug, Default)]
pub(crate) struct Form(pub Vec<(String, String)>);

impl Form {
    /// The value of a field that occurs once (`None` if absent or repeated).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        let mut found = None;
        for (k, v) in &self.0 {
            if k == name {
                if found.is_some() {
                    return None;
                }
                found = Some(v.as_str());
            }
        }
        found
    }

    /// Every value of a repeated field.
    pub(crate) fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A trimmed, non-empty single value.
    pub(crate) fn text(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    }

    /// Whether any field name occurs more than once.
    pub(crate) fn has_duplicates(&self) -> bool {
        self.0
            .iter()
            .enumerate()
            .any(|(i, (k, _))| self.0.iter().skip(i + 1).any(|(k2, _)| k2 == k))
    }
}

/// Why a form body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FormError {
    WrongType,
    TooLarge,
}

/// Reads a form body of at most `limit` bytes.
pub(crate) async fn read_form(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Form, FormError> {
    let mime = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if mime != "application/x-www-form-urlencoded" {
        return Err(FormError::WrongType);
    }
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| FormError::TooLarge)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| FormError::WrongType)?;
    Ok(Form(app::parse_query_string(text)))
}

/// Percent-encodes a query parameter's value.
pub(crate) fn encode_component(s: &str) -> String {
    auth::percent_encode(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_encoded_and_forms_read() {
        assert_eq!(
            encode_component("/oauth/authorize?a=b c&d=é"),
            "%2Foauth%2Fauthorize%3Fa%3Db%20c%26d%3D%C3%A9"
        );
        let f = Form(app::parse_query_string("a=1&b=2&b=3&c=+x+"));
        assert_eq!(f.get("a"), Some("1"));
        assert_eq!(f.get("b"), None);
        assert_eq!(f.all("b"), vec!["2", "3"]);
        assert_eq!(f.text("c").as_deref(), Some("x"));
        assert!(f.has_duplicates());
        assert!(!Form(app::parse_query_string("a=1&b=2")).has_duplicates());
    }
}
