//! The access policy's JSON API: break-the-glass grants (start, end, own
//! list, the privacy officer's review queue and reviews) and the policy
//! (current, versions, edit, check, what-if).
//!
//! Callers are a bearer token or the session cookie with its CSRF token in
//! `X-CSRF-Token`, as on the FHIR API. Starting a grant and editing the
//! policy need a recent sign-in, which only a session can show: a bearer
//! token is refused for them. Errors are `{"error": "…"}`; a denial by the
//! policy also carries the decision (`"decision"`).

use app::emergency::BreakGlassRequest;
use app::{AppError, Principal};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use model::ResourceId;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use store::Role;

use crate::WebState;

/// The largest body of a grant or review call.
const SMALL_LIMIT: usize = 16 * 1024;
/// The largest body of a policy call (the text is at most 256 KiB, escaped).
const POLICY_LIMIT: usize = 1024 * 1024;

pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/api/break-glass", get(my_grants).post(start))
        .route("/api/break-glass/reviews", get(reviews))
        .route("/api/break-glass/{id}/end", post(end))
        .route("/api/break-glass/{id}/review", post(review))
        .route("/api/policy", get(current).put(update))
        .route("/api/policy/versions", get(versions))
        .route("/api/policy/versions/{n}", get(version))
        .route("/api/policy/check", post(check))
        .route("/api/policy/what-if", post(what_if))
}

/// An error answer: `{"error": msg}`, and the decision of a denial.
pub(crate) struct JsonError(Box<Response>);

impl IntoResponse for JsonError {
    fn into_response(self) -> Response {
        *self.0
    }
}

pub(crate) fn reply(status: StatusCode, v: &Value) -> Response {
    let mut r = (status, serde_json::to_vec(v).unwrap_or_default()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

pub(crate) fn error(status: StatusCode, msg: &str) -> JsonError {
    JsonError(Box::new(reply(status, &json!({ "error": msg }))))
}

impl From<AppError> for JsonError {
    fn from(e: AppError) -> JsonError {
        let status = crate::pages::status_of(&e);
        let msg = crate::pages::app_error_text(&e);
        match &e {
            AppError::Denied(d) => JsonError(Box::new(reply(
                status,
                &json!({ "error": msg, "decision": d.as_ref() }),
            ))),
            _ => error(status, &msg),
        }
    }
}

type JsonResult = Result<Response, JsonError>;

fn ok<T: serde::Serialize>(v: &T) -> JsonResult {
    Ok(reply(
        StatusCode::OK,
        &serde_json::to_value(v).unwrap_or(Value::Null),
    ))
}

/// The caller, and whether they signed in recently (sessions only).
pub(crate) async fn caller(
    state: &WebState,
    headers: &HeaderMap,
) -> Result<(Principal, bool), JsonError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    if let Some(token) = bearer {
        let base = crate::fhir_routes::base_url(state, headers);
        let who = state.vigil.authenticate_bearer(token, &base).await?;
        return Ok((who, false));
    }
    let Some(cookie) = crate::session::session_cookie(headers) else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "sign in or send a bearer token",
        ));
    };
    let csrf = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !state.vigil.check_csrf(&cookie, csrf) {
        return Err(error(
            StatusCode::FORBIDDEN,
            "a session request needs its CSRF token in X-CSRF-Token",
        ));
    }
    match state.vigil.session(&cookie).await {
        Ok(v) => {
            let fresh = state.vigil.recently_signed_in(&v);
            Ok((Principal::User(v.caller), fresh))
        }
        Err(app::SessionProblem::Failed(e)) => Err(e.into()),
        Err(_) => Err(error(StatusCode::UNAUTHORIZED, "sign in again")),
    }
}

/// A JSON body of at most `limit` bytes, read into `T`.
pub(crate) async fn body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<T, JsonError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send application/json",
        ));
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the body is larger than {limit} bytes"),
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        // Line and column only: serde's message may quote the input.
        error(
            StatusCode::BAD_REQUEST,
            &format!(
                "the body is not the expected JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })
}

fn officer(who: &Principal) -> Result<(), JsonError> {
    match who {
        Principal::User(c) if c.role == Some(Role::PrivacyOfficer) => Ok(()),
        _ => Err(error(
            StatusCode::FORBIDDEN,
            "the access policy is managed by the privacy officer",
        )),
    }
}

// ---- Break the glass ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    patient: String,
    reason: String,
    justification: String,
    minutes: Option<u32>,
}

async fn start(State(state): State<WebState>, headers: HeaderMap, b: Body) -> JsonResult {
    let (who, fresh) = caller(&state, &headers).await?;
    let req: StartBody = body(&headers, b, SMALL_LIMIT).await?;
    let patient = req.patient.strip_prefix("Patient/").unwrap_or(&req.patient);
    let patient = ResourceId::new(patient)
        .map_err(|_| error(StatusCode::BAD_REQUEST, "patient is not a valid Patient id"))?;
    let g = state
        .vigil
        .break_glass(
            &who,
            &BreakGlassRequest {
                patient,
                reason: req.reason,
                justification: req.justification,
                minutes: req.minutes,
            },
            fresh,
        )
        .await?;
    Ok(reply(
        StatusCode::CREATED,
        &serde_json::to_value(&g).unwrap_or(Value::Null),
    ))
}

async fn end(
    State(state): State<WebState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> JsonResult {
    let (who, _) = caller(&state, &headers).await?;
    state.vigil.end_break_glass(&who, &id).await?;
    ok(&state.vigil.grant(&who, &id).await?)
}

async fn my_grants(State(state): State<WebState>, headers: HeaderMap) -> JsonResult {
    let (who, _) = caller(&state, &headers).await?;
    ok(&state.vigil.my_grants(&who).await?)
}

async fn reviews(State(state): State<WebState>, headers: HeaderMap) -> JsonResult {
    let (who, _) = caller(&state, &headers).await?;
    ok(&state.vigil.grants_to_review(&who).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewBody {
    outcome: String,
    #[serde(default)]
    note: String,
}

async fn review(
    State(state): State<WebState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    b: Body,
) -> JsonResult {
    let (who, _) = caller(&state, &headers).await?;
    let r: ReviewBody = body(&headers, b, SMALL_LIMIT).await?;
    state
        .vigil
        .review_grant(&who, &id, &r.outcome, &r.note)
        .await?;
    ok(&state.vigil.grant(&who, &id).await?)
}

// ---- The policy ----

async fn current(State(state): State<WebState>, headers: HeaderMap) -> JsonResult {
    let (who, _) = caller(&state, &headers).await?;
    ok(&state.vigil.policy_current(&who).await?)
}

async fn versions(State(state): State<WebState>, headers: HeaderMap) -> JsonResult {
    let (who, _) = caller(&state, &headers).await?;
    ok(&state.vigil.policy_versions(&who).await?)
}

async fn version(
    State(state): State<WebState>,
    Path(n): Path<String>,
    headers: HeaderMap,
) -> JsonResult {
    let (who, _) = caller(&state, &headers).await?;
    let n: u64 = n
        .parse()
        .map_err(|_| error(StatusCode::NOT_FOUND, "no such policy version"))?;
    let text = state.vigil.policy_version_text(&who, n).await?;
    ok(&json!({ "version": n, "text": text }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    text: String,
    comment: String,
}

async fn update(State(state): State<WebState>, headers: HeaderMap, b: Body) -> JsonResult {
    let (who, fresh) = caller(&state, &headers).await?;
    let u: UpdateBody = body(&headers, b, POLICY_LIMIT).await?;
    let version = state
        .vigil
        .policy_update(&who, &u.text, &u.comment, fresh)
        .await?;
    ok(&json!({ "version": version }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckBody {
    text: String,
}

async fn check(State(state): State<WebState>, headers: HeaderMap, b: Body) -> JsonResult {
    let (who, _) = caller(&state, &headers).await?;
    officer(&who)?;
    let c: CheckBody = body(&headers, b, POLICY_LIMIT).await?;
    match state.vigil.policy_check(&c.text) {
        Ok(()) => ok(&json!({ "valid": true })),
        Err(e @ AppError::BadRequest(_)) => ok(&json!({
            "valid": false,
            "errors": e.issues().into_iter().map(|i| i.diagnostics).collect::<Vec<_>>()
        })),
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WhatIfBody {
    username: String,
    action: String,
    resource: String,
    purpose: Option<String>,
    draft: Option<String>,
}

async fn what_if(State(state): State<WebState>, headers: HeaderMap, b: Body) -> JsonResult {
    let (who, _) = caller(&state, &headers).await?;
    let w: WhatIfBody = body(&headers, b, POLICY_LIMIT).await?;
    let q = crate::access_pages::what_if_question(
        &w.username,
        &w.action,
        &w.resource,
        w.purpose.as_deref(),
        w.draft,
    )
    .map_err(|m| error(StatusCode::BAD_REQUEST, &m))?;
    ok(&state.vigil.policy_what_if(&who, &q).await?)
}
