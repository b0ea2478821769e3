//! Sign-in, second factors, enrolment, first-run set-up, the account page,
//! password change and reset.
//!
//! CSRF: forms of a signed-in user carry the session's token (`csrf`), and
//! the JSON calls send it in `X-CSRF-Token`. Forms before a session exists
//! (sign-in, factors, enrolment, set-up, reset) have no token to carry: they
//! refuse a foreign `Origin` and rely on our cookies being `SameSite=Strict`;
//! their JSON calls also need `Content-Type: application/json`, which a
//! cross-site form cannot send without a CORS preflight.

use std::collections::HashMap;

use app::{
    AccountView, NewAccount, NewSession, SessionProblem, SessionView, SignInError, SignInStep,
};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use store::Role;

use crate::WebState;
use crate::client_addr::ClientAddr;
use crate::html::{Nav, csrf_field, error, esc, html, local_path, page, see_other, with_cookie};
use crate::session::{
    PENDING_COOKIE, SESSION_COOKIE, clear_cookie, cookie, session_cookie, set_cookie,
};

/// Where to go after a sign-in that needed more than one step.
const NEXT_COOKIE: &str = "__Host-vigil_next";
/// Lifetimes of the pending cookie: second factor, enrolment.
const FACTOR_SECS: u64 = 300;
const ENROL_SECS: u64 = 900;
/// Largest body of the password check.
const CHECK_MAX: usize = 4096;

const EXPIRED_FORM: &str = "This form has expired; reload and try again.";
const ACCOUNT_JS: &str = "/static/account.js";
const PASSKEY_JS: &str = "/static/passkey.js";

pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/signin", get(signin_page).post(signin_post))
        .route("/signin/factor", get(factor_page))
        .route("/signin/totp", post(factor_totp))
        .route("/signin/recovery", post(factor_recovery))
        .route("/signin/passkey/start", post(passkey_signin_start))
        .route("/signin/passkey/finish", post(passkey_signin_finish))
        .route("/signin/enrol", get(enrol_factor_page))
        .route("/signin/enrol/totp", post(enrol_factor_totp))
        .route("/signin/enrol/passkey/start", post(enrol_passkey_start))
        .route("/signin/enrol/passkey/finish", post(enrol_passkey_finish))
        .route("/signin/enrol/done", post(enrol_done))
        .route("/setup", get(setup_page).post(setup_post))
        .route("/enrol/{token}", get(enrol_link_page).post(enrol_link_post))
        .route("/account", get(account_page))
        .route("/account/recovery-codes", post(account_recovery_codes))
        .route(
            "/account/totp",
            get(account_totp_page).post(account_totp_post),
        )
        .route("/account/passkeys", get(account_passkeys_page))
        .route("/account/passkeys/start", post(account_passkey_start))
        .route("/account/passkeys/finish", post(account_passkey_finish))
        .route(
            "/account/passkeys/{id}/delete",
            post(account_passkey_delete),
        )
        .route("/account/password", get(password_page).post(password_post))
        .route("/password/check", post(password_check))
        .route("/forgot", get(forgot_page).post(forgot_post))
        .route("/reset/{token}", get(reset_page).post(reset_post))
        .route("/signout", post(signout))
        .route("/deactivated", get(deactivated))
        .route("/static/account.js", get(account_js))
        .route("/static/passkey.js", get(passkey_js))
}

// ---------------------------------------------------------------------------
// Helpers

/// The page's origin (`http://localhost:8123`): the configured public base's
/// scheme and host, else the `Host` header.
pub(crate) fn origin(state: &WebState, headers: &HeaderMap) -> String {
    if let Some(b) = &state.public_base
        && let Some((scheme, rest)) = b.split_once("://")
    {
        let host = rest.split('/').next().unwrap_or(rest);
        return format!("{scheme}://{host}");
    }
    let base = crate::fhir_routes::base_url(state, headers);
    base.trim_end_matches("/fhir").to_owned()
}

/// A request before sign-in: a browser's `Origin`, when sent, must be ours.
pub(crate) fn same_origin(state: &WebState, headers: &HeaderMap) -> bool {
    // Browsers say where a request comes from in `Sec-Fetch-Site`; a form
    // posted from another site (even a sibling subdomain) is refused.
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if matches!(site, Some("cross-site" | "same-site")) {
        return false;
    }
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => true,
        // A browser sends `Origin: null` when the referrer policy hides the
        // origin; its own `Sec-Fetch-Site` then vouches for the request.
        Some("null") => site == Some("same-origin"),
        Some(o) => o == origin(state, headers),
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// An `application/x-www-form-urlencoded` body.
struct Form(HashMap<String, String>);

impl Form {
    fn parse(body: &[u8]) -> Form {
        let mut m = HashMap::new();
        for pair in body.split(|b| *b == b'&') {
            if pair.is_empty() {
                continue;
            }
            let mut it = pair.splitn(2, |b| *b == b'=');
            let k = decode(it.next().unwrap_or_default());
            let v = decode(it.next().unwrap_or_default());
            m.entry(k).or_insert(v);
        }
        Form(m)
    }

    fn get(&self, k: &str) -> &str {
        self.0.get(k).map_or("", String::as_str)
    }
}

fn decode(s: &[u8]) -> String {
    let hexval = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let h = s.get(i + 1).copied().and_then(hexval);
                let l = s.get(i + 2).copied().and_then(hexval);
                if let (Some(h), Some(l)) = (h, l) {
                    out.push(h * 16 + l);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn next_or_account(next: Option<&str>) -> String {
    next.filter(|n| local_path(n) && !n.starts_with("/signin"))
        .unwrap_or("/account")
        .to_owned()
}

fn json_reply(status: StatusCode, v: &Value) -> Response {
    let mut r = (status, v.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn json_error(status: StatusCode, msg: &str) -> Response {
    json_reply(status, &json!({ "error": msg }))
}

/// The message and status a page shows for an application error. Internal
/// failures are logged and answered generically.
fn app_message(e: &app::AppError) -> (StatusCode, String) {
    use app::AppError as E;
    let status = crate::pages::status_of(e);
    match e {
        E::BadRequest(issues) | E::Unprocessable(issues) => (
            status,
            issues
                .iter()
                .map(|i| i.diagnostics.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ),
        E::Forbidden(m) | E::NotFound(m) | E::Conflict(m) | E::Gone(m) => (status, m.clone()),
        E::Unauthenticated => (status, "authentication required".into()),
        other => {
            tracing::error!(error = %other, "identity page failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "something went wrong; try again later".into(),
            )
        }
    }
}

/// Status and message of a failed sign-in step.
fn signin_message(e: &SignInError) -> (StatusCode, String) {
    let status = match e {
        SignInError::Refused | SignInError::WrongCode | SignInError::CodeReplayed => {
            StatusCode::UNAUTHORIZED
        }
        SignInError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
        SignInError::FactorDisabled
        | SignInError::Deactivated
        | SignInError::UsePasskey
        | SignInError::PasskeyRefused => StatusCode::FORBIDDEN,
        SignInError::Expired => StatusCode::GONE,
        SignInError::Password(_) => StatusCode::UNPROCESSABLE_ENTITY,
        SignInError::App(a) => return app_message(a),
    };
    (status, capitalise(&e.to_string()))
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn error_page(status: StatusCode, title: &str, msg: &str) -> Response {
    html(
        status,
        page(
            title,
            None,
            None,
            &[],
            &format!(
                "<section class=\"card\"><h2>{}</h2>{}<p><a href=\"/signin\">Sign in</a></p></section>",
                esc(title),
                error(Some(msg))
            ),
        ),
    )
}

fn expired_form() -> Response {
    error_page(StatusCode::FORBIDDEN, "Form expired", EXPIRED_FORM)
}

fn not_found() -> Response {
    error_page(StatusCode::NOT_FOUND, "Not found", "There is nothing here.")
}

/// Signs the browser in: a fresh session cookie (never one it brought) and
/// the pending and next cookies cleared.
fn signed_in(s: &NewSession, to: &str) -> Response {
    let r = see_other(to);
    let r = with_cookie(r, &set_cookie(SESSION_COOKIE, &s.cookie, None));
    let r = with_cookie(r, &clear_cookie(PENDING_COOKIE));
    with_cookie(r, &clear_cookie(NEXT_COOKIE))
}

/// What follows a correct password (sign-in, set-up, enrolment link).
fn after_step(step: &SignInStep, next: Option<&str>) -> Response {
    let next = next_or_account(next);
    let (pending, to, secs) = match step {
        SignInStep::Done(s) => return signed_in(s, &next),
        SignInStep::SecondFactor { pending, .. } => (pending, "/signin/factor", FACTOR_SECS),
        SignInStep::Enrol { pending, .. } => (pending, "/signin/enrol", ENROL_SECS),
    };
    let r = with_cookie(
        see_other(to),
        &set_cookie(PENDING_COOKIE, pending, Some(secs)),
    );
    let r = with_cookie(
        r,
        &set_cookie(
            NEXT_COOKIE,
            &crate::pages::encode_component(&next),
            Some(secs),
        ),
    );
    // A session the browser had before is not carried into this sign-in.
    with_cookie(r, &clear_cookie(SESSION_COOKIE))
}

/// The `next` kept across the factor steps.
fn next_cookie(headers: &HeaderMap) -> Option<String> {
    cookie(headers, NEXT_COOKIE).map(|v| decode(v.as_bytes()))
}

/// The signed-in user, or the response that sends them to sign in.
async fn require_session(
    state: &WebState,
    headers: &HeaderMap,
    here: &str,
) -> Result<(SessionView, String), Response> {
    let Some(c) = session_cookie(headers) else {
        return Err(see_other(&format!(
            "/signin?next={}",
            crate::pages::encode_component(here)
        )));
    };
    match state.vigil.session(&c).await {
        Ok(v) => Ok((v, c)),
        Err(SessionProblem::Missing) => Err(with_cookie(
            see_other(&format!(
                "/signin?next={}",
                crate::pages::encode_component(here)
            )),
            &clear_cookie(SESSION_COOKIE),
        )),
        Err(SessionProblem::Expired) => Err(with_cookie(
            see_other(&format!(
                "/signin?expired=1&next={}",
                crate::pages::encode_component(here)
            )),
            &clear_cookie(SESSION_COOKIE),
        )),
        Err(SessionProblem::Deactivated) => Err(with_cookie(
            see_other("/deactivated"),
            &clear_cookie(SESSION_COOKIE),
        )),
        Err(SessionProblem::Failed(e)) => {
            let (s, m) = app_message(&e);
            Err(error_page(s, "Error", &m))
        }
    }
}

/// A signed-in form: the session, and its CSRF token in the `csrf` field.
async fn session_form(
    state: &WebState,
    headers: &HeaderMap,
    here: &str,
    form: &Form,
) -> Result<(SessionView, String), Response> {
    let (v, c) = require_session(state, headers, here).await?;
    if !state.vigil.check_csrf(&c, form.get("csrf")) {
        return Err(expired_form());
    }
    Ok((v, c))
}

/// A signed-in JSON call: the session, and its CSRF token in `X-CSRF-Token`.
async fn session_json(
    state: &WebState,
    headers: &HeaderMap,
) -> Result<(SessionView, String), Response> {
    if !is_json(headers) {
        return Err(json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send application/json",
        ));
    }
    let Some(c) = session_cookie(headers) else {
        return Err(json_error(StatusCode::UNAUTHORIZED, "sign in first"));
    };
    let token = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !state.vigil.check_csrf(&c, token) {
        return Err(json_error(StatusCode::FORBIDDEN, EXPIRED_FORM));
    }
    match state.vigil.session(&c).await {
        Ok(v) => Ok((v, c)),
        Err(SessionProblem::Failed(e)) => {
            let (s, m) = app_message(&e);
            Err(json_error(s, &m))
        }
        Err(_) => Err(json_error(StatusCode::UNAUTHORIZED, "sign in again")),
    }
}

/// A JSON call before sign-in: JSON content type and our origin.
#[expect(
    clippy::result_large_err,
    reason = "the error is the response itself, returned at once by every caller"
)]
fn pre_session_json(state: &WebState, headers: &HeaderMap, body: &[u8]) -> Result<Value, Response> {
    if !is_json(headers) {
        return Err(json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send application/json",
        ));
    }
    if !same_origin(state, headers) {
        return Err(json_error(
            StatusCode::FORBIDDEN,
            "cross-site request refused",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|_| json_error(StatusCode::BAD_REQUEST, "the body is not JSON"))
}

fn nav(v: &SessionView) -> Nav {
    crate::pages::nav(v)
}

fn fmt_time(t: model::Timestamp) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::from_unix_timestamp(t.0 / 1_000_000)
        .ok()
        .and_then(|d| d.format(fmt).ok())
        .unwrap_or_default()
}

/// The new-password field with its show button and strength meter.
fn new_password_field(state: &WebState, role: Role) -> String {
    format!(
        "<label for=\"new-password\">New password (at least {min} characters)</label>\n\
<div class=\"password-row\"><input id=\"new-password\" name=\"new_password\" type=\"password\" autocomplete=\"new-password\" required minlength=\"{min}\" maxlength=\"{max}\" aria-describedby=\"password-feedback\">\
<button type=\"button\" class=\"secondary\" data-show-for=\"new-password\" aria-pressed=\"false\" aria-label=\"Show password\">Show</button></div>\n\
<meter id=\"strength\" min=\"0\" max=\"4\" value=\"0\" aria-label=\"Password strength\"></meter>\n\
<p id=\"password-feedback\" aria-live=\"polite\"></p>",
        min = state.vigil.password_min_length(role),
        max = state.vigil.password_max_length(),
    )
}

fn recovery_list(codes: &[String]) -> String {
    let items: String = codes
        .iter()
        .map(|c| format!("<li><code>{}</code></li>", esc(c)))
        .collect();
    format!(
        "<p>Keep these recovery codes somewhere safe; each works once. They are shown only now.</p>\n<ul id=\"recovery-codes\">{items}</ul>"
    )
}

/// `ABCD EFGH …` for typing by hand.
fn grouped(secret: &str) -> String {
    secret
        .as_bytes()
        .chunks(4)
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The otpauth URI as a QR code: an SVG in a data URL (the content security
/// policy allows `data:` images and nothing inline that runs).
fn qr_image(uri: &str) -> String {
    use base64::Engine as _;
    let Ok(code) = qrcode::QrCode::with_error_correction_level(uri, qrcode::EcLevel::M) else {
        return String::new();
    };
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build();
    format!(
        "<p><img id=\"totp-qr\" class=\"qr\" width=\"200\" height=\"200\" alt=\"QR code of the authenticator key\" src=\"data:image/svg+xml;base64,{}\"></p>\n",
        base64::engine::general_purpose::STANDARD.encode(svg)
    )
}

/// The TOTP enrolment widgets (shared by enrolment and the account page).
fn totp_widgets(
    action: &str,
    secret: &str,
    uri: &str,
    ceremony: &str,
    csrf: Option<&str>,
) -> String {
    format!(
        "<section id=\"totp-enrol\" class=\"card\"><h2>Authenticator app</h2>\n\
<p>Scan this code with your authenticator app, or type in the key below (or open the link on this device):</p>\n\
{qr}\
<p id=\"totp-secret\" class=\"secret\">{secret}</p>\n\
<p><a href=\"{uri}\"><code id=\"totp-uri\">{uri}</code></a></p>\n\
<form id=\"totp-enrol-form\" method=\"post\" action=\"{action}\" class=\"stack\">{csrf}\
<input type=\"hidden\" name=\"ceremony\" value=\"{ceremony}\">\n\
<label for=\"enrol-code\">The 6-digit code the app shows</label>\n\
<input id=\"enrol-code\" name=\"code\" inputmode=\"numeric\" autocomplete=\"one-time-code\" pattern=\"[0-9 ]*\" maxlength=\"8\" required>\n\
<button type=\"submit\" id=\"enrol-totp-submit\">Confirm</button></form></section>",
        secret = esc(&grouped(secret)),
        qr = qr_image(uri),
        uri = esc(uri),
        action = esc(action),
        ceremony = esc(ceremony),
        csrf = csrf.map(csrf_field).unwrap_or_default(),
    )
}

// ---------------------------------------------------------------------------
// Sign-in

fn signin_form(
    q_next: &str,
    username: &str,
    msg: Option<&str>,
    notice: Option<&str>,
    setup: bool,
) -> String {
    let notice = notice.map(|n| n.to_owned()).unwrap_or_default();
    let setup = if setup {
        "<p>No administrator exists yet: <a href=\"/setup\" id=\"setup-link\">set up Vigil</a>.</p>"
    } else {
        ""
    };
    format!(
        "<section class=\"card narrow\"><h2>Sign in</h2>{notice}{err}\n\
<form id=\"signin-form\" method=\"post\" action=\"/signin\" class=\"stack\">\n\
<input type=\"hidden\" name=\"next\" value=\"{next}\">\n\
<label for=\"username\">User name</label>\n\
<input id=\"username\" name=\"username\" autocomplete=\"username\" autocapitalize=\"none\" spellcheck=\"false\" required value=\"{user}\">\n\
<label for=\"password\">Password</label>\n\
<div class=\"password-row\"><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
<button type=\"button\" id=\"show-password\" class=\"secondary\" data-show-for=\"password\" aria-pressed=\"false\" aria-label=\"Show password\">Show</button></div>\n\
<button type=\"submit\" id=\"signin-submit\">Sign in</button>\n\
</form>\n\
<p><button type=\"button\" id=\"passkey-signin\" class=\"secondary\">Sign in with a passkey</button></p>\n\
<p id=\"passkey-status\" role=\"status\"></p>\n\
<p><a href=\"/forgot\" id=\"forgot-link\">Forgot your password?</a></p>{setup}</section>",
        err = error(msg),
        next = esc(q_next),
        user = esc(username),
    )
}

async fn signin_page(
    State(state): State<WebState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let reauth = q.get("reauth").is_some_and(|v| v == "1");
    if !reauth
        && let Some(c) = session_cookie(&headers)
        && state.vigil.session(&c).await.is_ok()
    {
        return see_other("/account");
    }
    let setup = !state.vigil.has_administrator().await.unwrap_or(true);
    let next = q
        .get("next")
        .map(String::as_str)
        .filter(|n| local_path(n))
        .unwrap_or("");
    let notice = if q.get("expired").is_some_and(|v| v == "1") {
        Some(
            "<p id=\"expired\" role=\"status\">You were signed out after a period of inactivity.</p>",
        )
    } else if reauth {
        Some(
            "<p id=\"reauth\" role=\"status\">This action needs a recent sign-in: sign in again to continue.</p>",
        )
    } else if q.get("changed").is_some_and(|v| v == "1") {
        Some("<p id=\"notice\" role=\"status\">Password changed; sign in again.</p>")
    } else {
        None
    };
    html(
        StatusCode::OK,
        page(
            "Sign in",
            None,
            None,
            &[PASSKEY_JS, ACCOUNT_JS],
            &signin_form(next, "", None, notice, setup),
        ),
    )
}

async fn signin_post(
    State(state): State<WebState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !same_origin(&state, &headers) {
        return expired_form();
    }
    let f = Form::parse(&body);
    let next = f.get("next");
    match state
        .vigil
        .sign_in_password(f.get("username"), f.get("password"), &addr.to_string())
        .await
    {
        Ok(step) => after_step(&step, Some(next)),
        Err(SignInError::Deactivated) => see_other("/deactivated"),
        Err(e) => {
            let (status, msg) = signin_message(&e);
            let next = if local_path(next) { next } else { "" };
            html(
                status,
                page(
                    "Sign in",
                    None,
                    None,
                    &[PASSKEY_JS, ACCOUNT_JS],
                    &signin_form(next, f.get("username"), Some(&msg), None, false),
                ),
            )
        }
    }
}

/// The pending account of the second-factor step.
async fn pending_factor(
    state: &WebState,
    headers: &HeaderMap,
) -> Result<(String, store::Account), Response> {
    let Some(p) = cookie(headers, PENDING_COOKIE) else {
        return Err(see_other("/signin"));
    };
    match state.vigil.second_factor_account(&p).await {
        Ok(a) => Ok((p, a)),
        Err(SignInError::Deactivated) => Err(see_other("/deactivated")),
        Err(SignInError::App(e)) => {
            let (s, m) = app_message(&e);
            Err(error_page(s, "Error", &m))
        }
        Err(_) => Err(with_cookie(
            see_other("/signin"),
            &clear_cookie(PENDING_COOKIE),
        )),
    }
}

async fn factor_html(
    state: &WebState,
    account: &store::Account,
    msg: Option<&str>,
) -> Result<String, Response> {
    let view = state.vigil.account_view(&account.id).await.map_err(|e| {
        let (s, m) = app_message(&e);
        error_page(s, "Error", &m)
    })?;
    let s = &view.summary;
    let passkey_only = view.passkey_required && s.passkeys > 0;
    let mut body = format!(
        "<section class=\"card narrow\"><h2>Second factor</h2>{}<p>Signing in as <strong id=\"factor-username\">{}</strong>.</p>",
        error(msg),
        esc(&s.username)
    );
    if s.passkeys > 0 {
        body.push_str(&format!(
            "<p><button type=\"button\" id=\"passkey-factor\" data-username=\"{}\">Use your passkey</button></p><p id=\"passkey-status\" role=\"status\"></p>",
            esc(&s.username)
        ));
    }
    if s.totp && !passkey_only {
        body.push_str(
            "<form id=\"totp-form\" method=\"post\" action=\"/signin/totp\" class=\"stack\">\n\
<label for=\"code\">Code from your authenticator app</label>\n\
<input id=\"code\" name=\"code\" inputmode=\"numeric\" autocomplete=\"one-time-code\" pattern=\"[0-9 ]*\" maxlength=\"8\" required autofocus>\n\
<button type=\"submit\" id=\"totp-submit\">Continue</button></form>",
        );
    }
    if !passkey_only {
        body.push_str(
            "<details><summary>Use a recovery code</summary>\n\
<form id=\"recovery-form\" method=\"post\" action=\"/signin/recovery\" class=\"stack\">\n\
<label for=\"recovery-code\">Recovery code</label>\n\
<input id=\"recovery-code\" name=\"code\" autocomplete=\"off\" autocapitalize=\"none\" spellcheck=\"false\" required>\n\
<button type=\"submit\" id=\"recovery-submit\">Continue</button></form></details>",
        );
    }
    body.push_str("<p><a href=\"/signin\">Start again</a></p></section>");
    Ok(page(
        "Second factor",
        None,
        None,
        &[PASSKEY_JS, ACCOUNT_JS],
        &body,
    ))
}

async fn factor_page(State(state): State<WebState>, headers: HeaderMap) -> Response {
    let (_, account) = match pending_factor(&state, &headers).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    match factor_html(&state, &account, None).await {
        Ok(b) => html(StatusCode::OK, b),
        Err(r) => r,
    }
}

async fn factor_result(
    state: &WebState,
    headers: &HeaderMap,
    account: &store::Account,
    r: Result<NewSession, SignInError>,
) -> Response {
    match r {
        Ok(s) => signed_in(&s, &next_or_account(next_cookie(headers).as_deref())),
        Err(SignInError::Deactivated) => see_other("/deactivated"),
        Err(SignInError::Expired) => {
            with_cookie(see_other("/signin"), &clear_cookie(PENDING_COOKIE))
        }
        Err(e) => {
            let (status, msg) = signin_message(&e);
            match factor_html(state, account, Some(&msg)).await {
                Ok(b) => html(status, b),
                Err(r) => r,
            }
        }
    }
}

async fn factor_totp(
    State(state): State<WebState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    factor_code(&state, &addr.to_string(), &headers, &body, false).await
}

async fn factor_recovery(
    State(state): State<WebState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    factor_code(&state, &addr.to_string(), &headers, &body, true).await
}

/// The second step with a code: TOTP or, with `recovery`, a recovery code.
async fn factor_code(
    state: &WebState,
    addr: &str,
    headers: &HeaderMap,
    body: &[u8],
    recovery: bool,
) -> Response {
    if !same_origin(state, headers) {
        return expired_form();
    }
    let (pending, account) = match pending_factor(state, headers).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let f = Form::parse(body);
    let r = if recovery {
        state
            .vigil
            .sign_in_recovery(&pending, f.get("code"), addr)
            .await
    } else {
        state
            .vigil
            .sign_in_totp(&pending, f.get("code"), addr)
            .await
    };
    factor_result(state, headers, &account, r).await
}

fn signin_json_error(e: &SignInError) -> Response {
    let (s, m) = signin_message(e);
    json_error(s, &m)
}

async fn passkey_signin_start(
    State(state): State<WebState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let v = match pre_session_json(&state, &headers, &body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let username = v.get("username").and_then(Value::as_str).unwrap_or("");
    match state
        .vigil
        .passkey_sign_in_start(&origin(&state, &headers), username, &addr.to_string())
        .await
    {
        Ok((options, id)) => json_reply(
            StatusCode::OK,
            &json!({ "challenge_id": id, "options": options }),
        ),
        Err(e) => signin_json_error(&e),
    }
}

async fn passkey_signin_finish(
    State(state): State<WebState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let v = match pre_session_json(&state, &headers, &body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let id = v.get("challenge_id").and_then(Value::as_str).unwrap_or("");
    let cred = v.get("credential").cloned().unwrap_or(Value::Null);
    match state
        .vigil
        .passkey_sign_in_finish(&origin(&state, &headers), id, &cred, &addr.to_string())
        .await
    {
        Ok(s) => {
            let to = next_or_account(next_cookie(&headers).as_deref());
            let r = json_reply(StatusCode::OK, &json!({ "redirect": to }));
            let r = with_cookie(r, &set_cookie(SESSION_COOKIE, &s.cookie, None));
            let r = with_cookie(r, &clear_cookie(PENDING_COOKIE));
            with_cookie(r, &clear_cookie(NEXT_COOKIE))
        }
        Err(e) => signin_json_error(&e),
    }
}

// ---------------------------------------------------------------------------
// Enrolling a second factor during sign-in

async fn pending_enrol(
    state: &WebState,
    headers: &HeaderMap,
) -> Result<(String, store::Account), Response> {
    let Some(p) = cookie(headers, PENDING_COOKIE) else {
        return Err(see_other("/signin"));
    };
    match state.vigil.enrolling_account(&p).await {
        Ok(a) => Ok((p, a)),
        Err(SignInError::Deactivated) => Err(see_other("/deactivated")),
        Err(SignInError::App(e)) => {
            let (s, m) = app_message(&e);
            Err(error_page(s, "Error", &m))
        }
        Err(_) => Err(with_cookie(
            see_other("/signin"),
            &clear_cookie(PENDING_COOKIE),
        )),
    }
}

async fn view_of(state: &WebState, a: &store::Account) -> Result<AccountView, Response> {
    state.vigil.account_view(&a.id).await.map_err(|e| {
        let (s, m) = app_message(&e);
        error_page(s, "Error", &m)
    })
}

fn passkey_enrol_section(button_id: &str, label: &str) -> String {
    format!(
        "<section id=\"passkey-enrol\" class=\"card\"><h2>Passkey</h2>\n\
<p>A passkey lives on this device or a security key and cannot be phished.</p>\n\
<div class=\"stack\"><label for=\"passkey-name\">Name for this passkey</label>\n\
<input id=\"passkey-name\" maxlength=\"64\" placeholder=\"e.g. Work laptop\">\n\
<button type=\"button\" id=\"{button_id}\">{label}</button></div>\n\
<p id=\"passkey-status\" role=\"status\"></p></section>"
    )
}

async fn enrol_factor_page(State(state): State<WebState>, headers: HeaderMap) -> Response {
    let (_, account) = match pending_enrol(&state, &headers).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let view = match view_of(&state, &account).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    enrol_factor_html(&state, &account, &view, None, StatusCode::OK).await
}

async fn enrol_factor_html(
    state: &WebState,
    account: &store::Account,
    view: &AccountView,
    msg: Option<&str>,
    status: StatusCode,
) -> Response {
    let mut body = format!(
        "<section class=\"card\"><h2>Set up a second factor</h2>{}<p>Your account (<strong>{}</strong>) needs a second factor before you can continue. {}</p></section>",
        error(msg),
        esc(&account.username),
        if view.passkey_required {
            "Your role must use a passkey."
        } else {
            "Choose an authenticator app or a passkey."
        }
    );
    if !view.passkey_required {
        match state.vigil.totp_enrol_start(account).await {
            Ok((secret, uri, ceremony)) => {
                body.push_str(&totp_widgets(
                    "/signin/enrol/totp",
                    &secret,
                    &uri,
                    &ceremony,
                    None,
                ));
            }
            Err(e) => {
                let (s, m) = app_message(&e);
                return error_page(s, "Error", &m);
            }
        }
    }
    body.push_str(&passkey_enrol_section(
        "passkey-register",
        "Register a passkey",
    ));
    body.push_str(
        "<section id=\"enrol-finish\" class=\"card\" hidden><h2>Done</h2><ul id=\"recovery-codes\"></ul>\
<form method=\"post\" action=\"/signin/enrol/done\"><button type=\"submit\" id=\"enrol-continue\">Continue</button></form></section>",
    );
    html(
        status,
        page(
            "Second factor",
            None,
            None,
            &[PASSKEY_JS, ACCOUNT_JS],
            &body,
        ),
    )
}

fn enrolled_page(codes: &[String], action: &str, csrf: Option<&str>, next_label: &str) -> String {
    let codes_html = if codes.is_empty() {
        "<p>Your existing recovery codes still work.</p>".to_owned()
    } else {
        recovery_list(codes)
    };
    let form = format!(
        "<form method=\"post\" action=\"{action}\">{csrf}<button type=\"submit\" id=\"enrol-continue\">{next_label}</button></form>",
        csrf = csrf.map(csrf_field).unwrap_or_default(),
    );
    format!(
        "<section class=\"card\"><h2 id=\"enrolled\">Second factor added</h2>{codes_html}{form}</section>"
    )
}

async fn enrol_factor_totp(
    State(state): State<WebState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !same_origin(&state, &headers) {
        return expired_form();
    }
    let (_, account) = match pending_enrol(&state, &headers).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let f = Form::parse(&body);
    match state
        .vigil
        .totp_enrol_finish(&account, f.get("ceremony"), f.get("code"))
        .await
    {
        Ok(codes) => html(
            StatusCode::OK,
            page(
                "Second factor",
                None,
                None,
                &[],
                &enrolled_page(&codes, "/signin/enrol/done", None, "Continue"),
            ),
        ),
        Err(e) => {
            let (status, msg) = signin_message(&e);
            match view_of(&state, &account).await {
                Ok(v) => enrol_factor_html(&state, &account, &v, Some(&msg), status).await,
                Err(r) => r,
            }
        }
    }
}

async fn enrol_passkey_start(
    State(state): State<WebState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = pre_session_json(&state, &headers, &body) {
        return r;
    }
    let (_, account) = match pending_enrol(&state, &headers).await {
        Ok(p) => p,
        Err(_) => {
            return json_error(
                StatusCode::UNAUTHORIZED,
                "this sign-in has expired; start again",
            );
        }
    };
    passkey_start_reply(&state, &headers, &account).await
}

async fn passkey_start_reply(
    state: &WebState,
    headers: &HeaderMap,
    account: &store::Account,
) -> Response {
    match state
        .vigil
        .passkey_register_start(&origin(state, headers), account)
        .await
    {
        Ok((options, id)) => json_reply(
            StatusCode::OK,
            &json!({ "challenge_id": id, "options": options }),
        ),
        Err(e) => {
            let (s, m) = app_message(&e);
            json_error(s, &m)
        }
    }
}

async fn passkey_finish_reply(
    state: &WebState,
    headers: &HeaderMap,
    account: &store::Account,
    v: &Value,
) -> Response {
    let id = v.get("challenge_id").and_then(Value::as_str).unwrap_or("");
    let name = v.get("name").and_then(Value::as_str).unwrap_or("");
    let cred = v.get("credential").cloned().unwrap_or(Value::Null);
    match state
        .vigil
        .passkey_register_finish(&origin(state, headers), account, id, name, &cred)
        .await
    {
        Ok(codes) => json_reply(StatusCode::OK, &json!({ "recovery_codes": codes })),
        Err(e) => signin_json_error(&e),
    }
}

async fn enrol_passkey_finish(
    State(state): State<WebState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let v = match pre_session_json(&state, &headers, &body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (_, account) = match pending_enrol(&state, &headers).await {
        Ok(p) => p,
        Err(_) => {
            return json_error(
                StatusCode::UNAUTHORIZED,
                "this sign-in has expired; start again",
            );
        }
    };
    passkey_finish_reply(&state, &headers, &account, &v).await
}

async fn enrol_done(State(state): State<WebState>, headers: HeaderMap) -> Response {
    if !same_origin(&state, &headers) {
        return expired_form();
    }
    let (pending, account) = match pending_enrol(&state, &headers).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    match state.vigil.finish_enrolment_sign_in(&pending).await {
        Ok(s) => signed_in(&s, &next_or_account(next_cookie(&headers).as_deref())),
        Err(SignInError::Deactivated) => see_other("/deactivated"),
        Err(e) => {
            let (status, msg) = signin_message(&e);
            match view_of(&state, &account).await {
                Ok(v) => enrol_factor_html(&state, &account, &v, Some(&msg), status).await,
                Err(r) => r,
            }
        }
    }
}

// ---------------------------------------------------------------------------
// First-run set-up and enrolment links

fn setup_html(state: &WebState, f: Option<&Form>, msg: Option<&str>) -> String {
    let val = |k: &str| esc(f.map_or("", |f| f.get(k)));
    format!(
        "<section class=\"card narrow\"><h2>Set up Vigil</h2>{err}\n\
<p>Create the first administrator with the set-up token printed when the server first started.</p>\n\
<form id=\"setup-form\" method=\"post\" action=\"/setup\" class=\"stack\" data-role=\"administrator\">\n\
<label for=\"bootstrap-token\">Set-up token</label>\n\
<input id=\"bootstrap-token\" name=\"bootstrap_token\" type=\"password\" autocomplete=\"off\" required>\n\
<label for=\"username\">User name</label>\n\
<input id=\"username\" name=\"username\" autocomplete=\"username\" autocapitalize=\"none\" spellcheck=\"false\" required value=\"{u}\">\n\
<label for=\"display-name\">Full name</label>\n\
<input id=\"display-name\" name=\"display_name\" autocomplete=\"name\" value=\"{d}\">\n\
<label for=\"email\">E-mail</label>\n\
<input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"email\" value=\"{e}\">\n\
{pw}\n<button type=\"submit\" id=\"setup-submit\">Create administrator</button></form></section>",
        err = error(msg),
        u = val("username"),
        d = val("display_name"),
        e = val("email"),
        pw = new_password_field(state, Role::Administrator),
    )
}

async fn setup_page(State(state): State<WebState>) -> Response {
    match state.vigil.has_administrator().await {
        Ok(false) => html(
            StatusCode::OK,
            page(
                "Set up",
                None,
                None,
                &[ACCOUNT_JS],
                &setup_html(&state, None, None),
            ),
        ),
        Ok(true) => not_found(),
        Err(e) => {
            let (s, m) = app_message(&e);
            error_page(s, "Error", &m)
        }
    }
}

fn opt(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

async fn setup_post(State(state): State<WebState>, headers: HeaderMap, body: Bytes) -> Response {
    if !same_origin(&state, &headers) {
        return expired_form();
    }
    if !matches!(state.vigil.has_administrator().await, Ok(false)) {
        return not_found();
    }
    let f = Form::parse(&body);
    let new = NewAccount {
        username: f.get("username").to_owned(),
        role: Role::Administrator,
        practitioner: None,
        patient: None,
        display_name: opt(f.get("display_name")),
        email: opt(f.get("email")),
    };
    match state
        .vigil
        .set_up_first_administrator(f.get("bootstrap_token"), new, f.get("new_password"))
        .await
    {
        Ok(step) => after_step(&step, None),
        Err(SignInError::App(app::AppError::Forbidden(_))) => not_found(),
        Err(e) => {
            let (status, msg) = match e {
                SignInError::Refused => (
                    StatusCode::UNAUTHORIZED,
                    "The set-up token is not right.".to_owned(),
                ),
                e => signin_message(&e),
            };
            html(
                status,
                page(
                    "Set up",
                    None,
                    None,
                    &[ACCOUNT_JS],
                    &setup_html(&state, Some(&f), Some(&msg)),
                ),
            )
        }
    }
}

fn link_gone() -> Response {
    error_page(
        StatusCode::GONE,
        "Link expired",
        "This link has expired or was already used.",
    )
}

fn enrol_link_html(state: &WebState, token: &str, a: &store::Account, msg: Option<&str>) -> String {
    format!(
        "<section class=\"card narrow\"><h2>Welcome to Vigil</h2>{err}\n\
<p>Your user name is <strong id=\"enrol-username\">{u}</strong>. Choose a password.</p>\n\
<form id=\"enrol-form\" method=\"post\" action=\"/enrol/{t}\" class=\"stack\" data-username=\"{u}\" data-role=\"{r}\">\n\
<input type=\"text\" name=\"username\" value=\"{u}\" autocomplete=\"username\" hidden>\n\
{pw}\n<button type=\"submit\" id=\"enrol-submit\">Set password</button></form></section>",
        err = error(msg),
        u = esc(&a.username),
        t = esc(&crate::pages::encode_component(token)),
        r = a.role.as_str(),
        pw = new_password_field(state, a.role),
    )
}

async fn enrol_link_page(State(state): State<WebState>, Path(token): Path<String>) -> Response {
    match state.vigil.enrolment_account(&token).await {
        Ok(a) => html(
            StatusCode::OK,
            page(
                "Welcome",
                None,
                None,
                &[ACCOUNT_JS],
                &enrol_link_html(&state, &token, &a, None),
            ),
        ),
        Err(SignInError::App(e)) => {
            let (s, m) = app_message(&e);
            error_page(s, "Error", &m)
        }
        Err(_) => link_gone(),
    }
}

async fn enrol_link_post(
    State(state): State<WebState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !same_origin(&state, &headers) {
        return expired_form();
    }
    let f = Form::parse(&body);
    match state
        .vigil
        .complete_enrolment(&token, f.get("new_password"))
        .await
    {
        Ok(step) => after_step(&step, None),
        Err(SignInError::Password(r)) => match state.vigil.enrolment_account(&token).await {
            Ok(a) => html(
                StatusCode::UNPROCESSABLE_ENTITY,
                page(
                    "Welcome",
                    None,
                    None,
                    &[ACCOUNT_JS],
                    &enrol_link_html(
                        &state,
                        &token,
                        &a,
                        Some(&capitalise(&format!("password refused: {r}"))),
                    ),
                ),
            ),
            Err(_) => link_gone(),
        },
        Err(SignInError::App(e)) => {
            let (s, m) = app_message(&e);
            error_page(s, "Error", &m)
        }
        Err(_) => link_gone(),
    }
}

// ---------------------------------------------------------------------------
// The account pages

async fn account_html(state: &WebState, v: &SessionView, codes: Option<&[String]>) -> Response {
    let view = match state.vigil.account_view(&v.account.id).await {
        Ok(x) => x,
        Err(e) => {
            let (s, m) = app_message(&e);
            return error_page(s, "Error", &m);
        }
    };
    let s = &view.summary;
    let fresh = codes.map(recovery_list).unwrap_or_default();
    let body = format!(
        "<section class=\"card\"><h2>Your account</h2>\n\
<dl class=\"facts\"><dt>User name</dt><dd id=\"account-username\">{u}</dd>\
<dt>Name</dt><dd>{d}</dd><dt>Role</dt><dd id=\"account-role\">{r}</dd>\
<dt>Authenticator app</dt><dd id=\"account-totp\">{t}</dd>\
<dt>Passkeys</dt><dd id=\"account-passkeys\">{p}</dd>\
<dt>Recovery codes left</dt><dd id=\"account-recovery\">{c}</dd></dl>\n\
<ul class=\"links\"><li><a href=\"/account/totp\" id=\"totp-link\">Authenticator app</a></li>\
<li><a href=\"/account/passkeys\" id=\"passkeys-link\">Passkeys</a></li>\
<li><a href=\"/account/password\" id=\"password-link\">Change password</a></li>{access}</ul></section>\n\
<section class=\"card\"><h2>Recovery codes</h2>{fresh}\
<form method=\"post\" action=\"/account/recovery-codes\">{csrf}\
<button type=\"submit\" id=\"recovery-regenerate\" class=\"secondary\">Make new recovery codes</button></form>\
<p>Making new codes makes the old ones stop working.</p></section>",
        u = esc(&s.username),
        d = esc(view.display_name.as_deref().unwrap_or("—")),
        r = esc(s.role.as_str()),
        t = if s.totp { "Set up" } else { "Not set up" },
        p = s.passkeys,
        c = s.recovery_codes,
        csrf = csrf_field(&v.csrf),
        access = if s.role == Role::Patient {
            "<li><a href=\"/account/access-log\" id=\"access-log-link\">Who accessed my record</a></li>\
<li><a href=\"/account/my-record\" id=\"my-record-link\">Download my record</a></li>"
        } else {
            ""
        },
    );
    html(
        StatusCode::OK,
        page("Account", Some(&nav(v)), Some(&v.csrf), &[], &body),
    )
}

async fn account_page(State(state): State<WebState>, headers: HeaderMap) -> Response {
    match require_session(&state, &headers, "/account").await {
        Ok((v, _)) => account_html(&state, &v, None).await,
        Err(r) => r,
    }
}

async fn account_recovery_codes(
    State(state): State<WebState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f = Form::parse(&body);
    let (v, _) = match session_form(&state, &headers, "/account", &f).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    match state.vigil.regenerate_recovery_codes(&v.account).await {
        Ok(codes) => account_html(&state, &v, Some(&codes)).await,
        Err(e) => {
            let (s, m) = app_message(&e);
            error_page(s, "Error", &m)
        }
    }
}

async fn account_totp_html(
    state: &WebState,
    v: &SessionView,
    msg: Option<&str>,
    status: StatusCode,
) -> Response {
    let (secret, uri, ceremony) = match state.vigil.totp_enrol_start(&v.account).await {
        Ok(x) => x,
        Err(e) => {
            let (s, m) = app_message(&e);
            return error_page(s, "Error", &m);
        }
    };
    let body = format!(
        "{}{}",
        error(msg),
        totp_widgets("/account/totp", &secret, &uri, &ceremony, Some(&v.csrf))
    );
    html(
        status,
        page(
            "Authenticator app",
            Some(&nav(v)),
            Some(&v.csrf),
            &[],
            &body,
        ),
    )
}

async fn account_totp_page(State(state): State<WebState>, headers: HeaderMap) -> Response {
    match require_session(&state, &headers, "/account/totp").await {
        Ok((v, _)) => account_totp_html(&state, &v, None, StatusCode::OK).await,
        Err(r) => r,
    }
}

async fn account_totp_post(
    State(state): State<WebState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f = Form::parse(&body);
    let (v, _) = match session_form(&state, &headers, "/account/totp", &f).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    match state
        .vigil
        .totp_enrol_finish(&v.account, f.get("ceremony"), f.get("code"))
        .await
    {
        Ok(codes) => {
            let codes_html = if codes.is_empty() {
                String::new()
            } else {
                recovery_list(&codes)
            };
            html(
                StatusCode::OK,
                page(
                    "Authenticator app",
                    Some(&nav(&v)),
                    Some(&v.csrf),
                    &[],
                    &format!(
                        "<section class=\"card\"><h2 id=\"enrolled\">Authenticator app set up</h2>{codes_html}<p><a href=\"/account\">Back to your account</a></p></section>"
                    ),
                ),
            )
        }
        Err(e) => {
            let (status, msg) = signin_message(&e);
            account_totp_html(&state, &v, Some(&msg), status).await
        }
    }
}

async fn account_passkeys_page(State(state): State<WebState>, headers: HeaderMap) -> Response {
    let (v, _) = match require_session(&state, &headers, "/account/passkeys").await {
        Ok(x) => x,
        Err(r) => return r,
    };
    passkeys_html(&state, &v, None, StatusCode::OK).await
}

async fn passkeys_html(
    state: &WebState,
    v: &SessionView,
    msg: Option<&str>,
    status: StatusCode,
) -> Response {
    let view = match view_of(state, &v.account).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let rows: String = view
        .passkeys
        .iter()
        .map(|p| {
            format!(
                "<tr><td>{name}</td><td>{created}</td><td>{used}</td><td>\
<form method=\"post\" action=\"/account/passkeys/{id}/delete\">{csrf}\
<button type=\"submit\" class=\"passkey-delete secondary\" aria-label=\"Remove passkey {name}\">Remove</button></form></td></tr>",
                name = esc(&p.name),
                created = fmt_time(p.created),
                used = p.last_used.map_or_else(|| "never".to_owned(), fmt_time),
                id = esc(&crate::pages::encode_component(&p.id)),
                csrf = csrf_field(&v.csrf),
            )
        })
        .collect();
    let body = format!(
        "<section class=\"card\"><h2>Passkeys</h2>{err}\n\
<table id=\"passkeys\"><thead><tr><th scope=\"col\">Name</th><th scope=\"col\">Added</th><th scope=\"col\">Last used</th><th scope=\"col\"><span class=\"visually-hidden\">Actions</span></th></tr></thead>\
<tbody>{rows}</tbody></table></section>\n\
<section class=\"card\"><h2>Add a passkey</h2><div class=\"stack\"><label for=\"passkey-name\">Name for this passkey</label>\n\
<input id=\"passkey-name\" maxlength=\"64\" placeholder=\"e.g. Work laptop\">\n\
<button type=\"button\" id=\"passkey-add\">Add a passkey</button></div><p id=\"passkey-status\" role=\"status\"></p></section>",
        err = error(msg),
    );
    html(
        status,
        page(
            "Passkeys",
            Some(&nav(v)),
            Some(&v.csrf),
            &[PASSKEY_JS, ACCOUNT_JS],
            &body,
        ),
    )
}

async fn account_passkey_start(State(state): State<WebState>, headers: HeaderMap) -> Response {
    match session_json(&state, &headers).await {
        Ok((v, _)) => passkey_start_reply(&state, &headers, &v.account).await,
        Err(r) => r,
    }
}

async fn account_passkey_finish(
    State(state): State<WebState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (v, _) = match session_json(&state, &headers).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Ok(json) = serde_json::from_slice::<Value>(&body) else {
        return json_error(StatusCode::BAD_REQUEST, "the body is not JSON");
    };
    passkey_finish_reply(&state, &headers, &v.account, &json).await
}

async fn account_passkey_delete(
    State(state): State<WebState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f = Form::parse(&body);
    let (v, _) = match session_form(&state, &headers, "/account/passkeys", &f).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    match state.vigil.passkey_delete(&v.account, &id).await {
        Ok(()) => see_other("/account/passkeys"),
        Err(e) => {
            let (s, m) = app_message(&e);
            passkeys_html(&state, &v, Some(&m), s).await
        }
    }
}

fn password_html(state: &WebState, v: &SessionView, msg: Option<&str>) -> String {
    format!(
        "<section class=\"card narrow\"><h2>Change password</h2>{err}\n\
<form id=\"password-form\" method=\"post\" action=\"/account/password\" class=\"stack\" data-username=\"{u}\" data-role=\"{r}\">{csrf}\n\
<input type=\"text\" name=\"username\" value=\"{u}\" autocomplete=\"username\" hidden>\n\
<label for=\"current-password\">Current password</label>\n\
<input id=\"current-password\" name=\"current_password\" type=\"password\" autocomplete=\"current-password\" required>\n\
{pw}\n<button type=\"submit\" id=\"password-submit\">Change password</button></form>\n\
<p>Changing your password signs you out everywhere.</p></section>",
        err = error(msg),
        u = esc(&v.account.username),
        r = v.account.role.as_str(),
        csrf = csrf_field(&v.csrf),
        pw = new_password_field(state, v.account.role),
    )
}

async fn password_page(State(state): State<WebState>, headers: HeaderMap) -> Response {
    match require_session(&state, &headers, "/account/password").await {
        Ok((v, _)) => html(
            StatusCode::OK,
            page(
                "Change password",
                Some(&nav(&v)),
                Some(&v.csrf),
                &[ACCOUNT_JS],
                &password_html(&state, &v, None),
            ),
        ),
        Err(r) => r,
    }
}

async fn password_post(State(state): State<WebState>, headers: HeaderMap, body: Bytes) -> Response {
    let f = Form::parse(&body);
    let (v, c) = match session_form(&state, &headers, "/account/password", &f).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    match state
        .vigil
        .change_password(
            &v.account,
            f.get("current_password"),
            f.get("new_password"),
            &c,
        )
        .await
    {
        // Every session of the account was revoked: sign in again.
        Ok(()) => with_cookie(
            see_other("/signin?changed=1"),
            &clear_cookie(SESSION_COOKIE),
        ),
        Err(e) => {
            let (status, msg) = match e {
                SignInError::Refused => (
                    StatusCode::UNAUTHORIZED,
                    "The current password is not right.".to_owned(),
                ),
                e => signin_message(&e),
            };
            html(
                status,
                page(
                    "Change password",
                    Some(&nav(&v)),
                    Some(&v.csrf),
                    &[ACCOUNT_JS],
                    &password_html(&state, &v, Some(&msg)),
                ),
            )
        }
    }
}

/// Says whether a password would be accepted, and why not. The password
/// is never logged.
async fn password_check(
    State(state): State<WebState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if body.len() > CHECK_MAX {
        return json_error(StatusCode::PAYLOAD_TOO_LARGE, "the body is too large");
    }
    if !is_json(&headers) {
        return json_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send application/json");
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return json_error(StatusCode::BAD_REQUEST, "the body is not JSON");
    };
    let Some(password) = v.get("password").and_then(Value::as_str) else {
        return json_error(StatusCode::BAD_REQUEST, "password is required");
    };
    let username = v.get("username").and_then(Value::as_str).unwrap_or("");
    let role = match v.get("role").and_then(Value::as_str) {
        None | Some("") => Role::Physician,
        Some(r) => match Role::parse(r) {
            Some(r) => r,
            None => return json_error(StatusCode::BAD_REQUEST, "unknown role"),
        },
    };
    let reason = state
        .vigil
        .check_password(username, None, role, password)
        .err()
        .map(|r| capitalise(&r.to_string()));
    json_reply(
        StatusCode::OK,
        &json!({
            "ok": reason.is_none(),
            "reason": reason,
            "min": state.vigil.password_min_length(role),
            "max": state.vigil.password_max_length(),
            "length": password.chars().count(),
        }),
    )
}

// ---------------------------------------------------------------------------
// Forgotten passwords

async fn forgot_page() -> Response {
    let body = "<section class=\"card narrow\"><h2>Forgot your password?</h2>\n\
<p>Enter your user name. If your account has an e-mail address, we send a link to reset your password; you will also need your second factor.</p>\n\
<form id=\"forgot-form\" method=\"post\" action=\"/forgot\" class=\"stack\">\n\
<label for=\"username\">User name</label>\n\
<input id=\"username\" name=\"username\" autocomplete=\"username\" autocapitalize=\"none\" spellcheck=\"false\" required>\n\
<button type=\"submit\" id=\"forgot-submit\">Send reset link</button></form>\n\
<p><a href=\"/signin\">Back to sign in</a></p></section>";
    html(
        StatusCode::OK,
        page("Forgot password", None, None, &[], body),
    )
}

async fn forgot_post(State(state): State<WebState>, headers: HeaderMap, body: Bytes) -> Response {
    if !same_origin(&state, &headers) {
        return expired_form();
    }
    let f = Form::parse(&body);
    // The answer is the same whatever happened: it must not reveal accounts.
    if let Err(e) = state
        .vigil
        .request_password_reset(f.get("username"), &origin(&state, &headers))
        .await
    {
        tracing::error!(error = %e, "password reset request failed");
    }
    html(
        StatusCode::OK,
        page(
            "Forgot password",
            None,
            None,
            &[],
            "<section class=\"card narrow\"><h2>Check your e-mail</h2>\
<p id=\"forgot-sent\" role=\"status\">If that account exists and has an e-mail address, we sent a reset link.</p>\
<p><a href=\"/signin\">Back to sign in</a></p></section>",
        ),
    )
}

fn reset_html(
    state: &WebState,
    token: &str,
    a: &store::Account,
    totp: bool,
    recovery: bool,
    msg: Option<&str>,
) -> String {
    let mut factors = String::new();
    if totp {
        factors.push_str(
            "<label for=\"code\">Code from your authenticator app</label>\n\
<input id=\"code\" name=\"code\" inputmode=\"numeric\" autocomplete=\"one-time-code\" pattern=\"[0-9 ]*\" maxlength=\"8\">\n",
        );
    }
    if recovery {
        factors.push_str(&format!(
            "<label for=\"recovery-code\">{}</label>\n\
<input id=\"recovery-code\" name=\"recovery_code\" autocomplete=\"off\" autocapitalize=\"none\" spellcheck=\"false\">\n",
            if totp { "Or a recovery code" } else { "A recovery code" }
        ));
    }
    format!(
        "<section class=\"card narrow\"><h2>Reset your password</h2>{err}\n\
<p>Resetting the password of <strong>{u}</strong>.</p>\n\
<form id=\"reset-form\" method=\"post\" action=\"/reset/{t}\" class=\"stack\" data-username=\"{u}\" data-role=\"{r}\">\n\
<input type=\"text\" name=\"username\" value=\"{u}\" autocomplete=\"username\" hidden>\n\
{factors}{pw}\n<button type=\"submit\" id=\"reset-submit\">Reset password</button></form></section>",
        err = error(msg),
        u = esc(&a.username),
        t = esc(&crate::pages::encode_component(token)),
        r = a.role.as_str(),
        pw = new_password_field(state, a.role),
    )
}

async fn reset_page(State(state): State<WebState>, Path(token): Path<String>) -> Response {
    match state.vigil.reset_account(&token).await {
        Ok((a, totp, recovery)) => html(
            StatusCode::OK,
            page(
                "Reset password",
                None,
                None,
                &[ACCOUNT_JS],
                &reset_html(&state, &token, &a, totp, recovery, None),
            ),
        ),
        Err(SignInError::App(e)) => {
            let (s, m) = app_message(&e);
            error_page(s, "Error", &m)
        }
        Err(_) => link_gone(),
    }
}

async fn reset_post(
    State(state): State<WebState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !same_origin(&state, &headers) {
        return expired_form();
    }
    let f = Form::parse(&body);
    let some = |k: &str| Some(f.get(k)).filter(|s| !s.trim().is_empty());
    match state
        .vigil
        .complete_password_reset(
            &token,
            some("code"),
            some("recovery_code"),
            f.get("new_password"),
        )
        .await
    {
        Ok(()) => html(
            StatusCode::OK,
            page(
                "Password reset",
                None,
                None,
                &[],
                "<section class=\"card narrow\"><h2>Password reset</h2>\
<p id=\"reset-done\" role=\"status\">Your password was changed and every session was signed out.</p>\
<p><a href=\"/signin\">Sign in</a></p></section>",
            ),
        ),
        Err(SignInError::UsePasskey) => html(
            StatusCode::FORBIDDEN,
            page(
                "Reset password",
                None,
                None,
                &[],
                "<section class=\"card narrow\"><h2>Use your passkey</h2>\
<p id=\"reset-passkey\">Your account signs in with a passkey. <a href=\"/signin\">Sign in with your passkey</a>, then change your password from your account page.</p></section>",
            ),
        ),
        Err(SignInError::Expired) => link_gone(),
        Err(SignInError::Deactivated) => see_other("/deactivated"),
        Err(e) => {
            let (status, msg) = signin_message(&e);
            match state.vigil.reset_account(&token).await {
                Ok((a, totp, recovery)) => html(
                    status,
                    page(
                        "Reset password",
                        None,
                        None,
                        &[ACCOUNT_JS],
                        &reset_html(&state, &token, &a, totp, recovery, Some(&msg)),
                    ),
                ),
                Err(_) => link_gone(),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Signing out

async fn signout(State(state): State<WebState>, headers: HeaderMap, body: Bytes) -> Response {
    let f = Form::parse(&body);
    let Some(c) = session_cookie(&headers) else {
        return see_other("/signin");
    };
    if !state.vigil.check_csrf(&c, f.get("csrf")) {
        return expired_form();
    }
    if let Err(e) = state.vigil.sign_out(&c).await {
        let (s, m) = app_message(&e);
        return error_page(s, "Error", &m);
    }
    with_cookie(see_other("/signin"), &clear_cookie(SESSION_COOKIE))
}

async fn deactivated() -> Response {
    html(
        StatusCode::FORBIDDEN,
        page(
            "Account deactivated",
            None,
            None,
            &[],
            "<section class=\"card narrow\"><h2 id=\"deactivated\">Your account has been deactivated. Contact your administrator.</h2></section>",
        ),
    )
}

fn asset(body: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    r
}

async fn account_js() -> Response {
    asset(include_str!("../assets/account.js"))
}

async fn passkey_js() -> Response {
    asset(include_str!("../assets/passkey.js"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_and_paths_encode() {
        let f = Form::parse(b"a=1+2&b=%2Fx%3F&c&a=dup&d=%zz");
        assert_eq!(f.get("a"), "1 2");
        assert_eq!(f.get("b"), "/x?");
        assert_eq!(f.get("c"), "");
        assert_eq!(f.get("d"), "%zz");
        assert_eq!(
            crate::pages::encode_component("/a b?c=d"),
            "%2Fa%20b%3Fc%3Dd"
        );
        assert_eq!(
            decode(crate::pages::encode_component("/x?y=é").as_bytes()),
            "/x?y=é"
        );
        assert_eq!(grouped("ABCDEFGHIJ"), "ABCD EFGH IJ");
        assert_eq!(next_or_account(Some("//evil")), "/account");
        assert_eq!(next_or_account(Some("/Patient")), "/Patient");
    }
}
