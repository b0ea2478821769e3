//! The FHIR R4 RESTful API under `/fhir`.

use app::{AppError, Principal, Versioned};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fhir::IssueCode;
use model::{ResourceId, ResourceType, VersionId};
use serde_json::Value;

use crate::WebState;

pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// One interaction of the FHIR API, as the route registry declares it.
#[derive(Debug, Clone, Copy)]
pub struct Interaction {
    pub method: &'static str,
    /// Whether it reads or writes patient data (and must leave exactly one
    /// audit entry per request).
    pub patient_data: bool,
}

/// A path of the FHIR API: its method router and its interactions. The
/// router is built from [`ROUTES`] and the audit test walks the same table,
/// so a route cannot be added without the test calling it.
pub struct PathRoutes {
    pub path: &'static str,
    pub make: fn() -> axum::routing::MethodRouter<WebState>,
    pub interactions: &'static [Interaction],
}

const fn i(method: &'static str, patient_data: bool) -> Interaction {
    Interaction {
        method,
        patient_data,
    }
}

/// The registry of the FHIR API.
pub const ROUTES: &[PathRoutes] = &[
    PathRoutes {
        path: "/fhir/metadata",
        make: || get(metadata),
        interactions: &[i("GET", false)],
    },
    PathRoutes {
        path: "/fhir",
        make: || axum::routing::post(bundle).fallback(unsupported_method),
        interactions: &[i("POST", true)],
    },
    PathRoutes {
        path: "/fhir/",
        make: || axum::routing::post(bundle),
        interactions: &[i("POST", true)],
    },
    PathRoutes {
        path: "/fhir/{rtype}",
        make: || get(search).post(create).fallback(unsupported_method),
        interactions: &[i("GET", true), i("POST", true)],
    },
    PathRoutes {
        path: "/fhir/{rtype}/_search",
        make: || axum::routing::post(search_post),
        interactions: &[i("POST", true)],
    },
    PathRoutes {
        path: "/fhir/{rtype}/{id}",
        make: || {
            get(read)
                .put(update)
                .delete(delete)
                .fallback(unsupported_method)
        },
        interactions: &[i("GET", true), i("PUT", true), i("DELETE", true)],
    },
    PathRoutes {
        // A static segment beside `{rtype}`: matchit prefers it and falls
        // back to `/fhir/{rtype}/{id}/…` for every other path.
        path: "/fhir/Patient/{id}/$everything",
        make: || get(everything).fallback(unsupported_method),
        interactions: &[i("GET", true)],
    },
    PathRoutes {
        path: "/fhir/{rtype}/{id}/_history",
        make: || get(history),
        interactions: &[i("GET", true)],
    },
    PathRoutes {
        path: "/fhir/{rtype}/{id}/_history/{vid}",
        make: || get(vread),
        interactions: &[i("GET", true)],
    },
];

pub fn routes() -> Router<WebState> {
    ROUTES
        .iter()
        .fold(Router::new(), |r, p| r.route(p.path, (p.make)()))
}

/// An error as an `OperationOutcome` response. 5xx details go to the log only.
pub struct ApiError(pub AppError);

impl From<AppError> for ApiError {
    fn from(e: AppError) -> ApiError {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(error = %self.0, detail = ?self.0, "request failed");
        }
        let mut resp = fhir_json(status, &fhir::operation_outcome(&self.0.issues()));
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"vigil\""),
            );
        }
        resp
    }
}

type ApiResult = Result<Response, ApiError>;

pub(crate) fn fhir_json(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = (status, bytes).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    resp
}

fn bad(code: IssueCode, msg: &str) -> ApiError {
    ApiError(AppError::bad_request(code, msg.to_owned()))
}

/// Who is calling: a bearer access token (apps, scripts), or the session
/// cookie of the first-party pages, which must then also send its CSRF token
/// in `X-CSRF-Token` (so another site can never drive the API through a
/// signed-in browser).
pub(crate) async fn principal(
    state: &WebState,
    headers: &HeaderMap,
) -> Result<Principal, ApiError> {
    match identify(state, headers).await {
        Ok(p) => Ok(p),
        // A refused request is recorded too (fail closed: if even that
        // cannot be written, the audit error is the answer).
        Err(e) => {
            state.vigil.audit_refused(&e.0).await?;
            Err(e)
        }
    }
}

async fn identify(state: &WebState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    if let Some(token) = bearer {
        return Ok(state
            .vigil
            .authenticate_bearer(token, &base_url(state, headers))
            .await?);
    }
    if let Some(cookie) = crate::session::session_cookie(headers) {
        let csrf = headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !state.vigil.check_csrf(&cookie, csrf) {
            return Err(ApiError(AppError::Forbidden(
                "a session request needs its CSRF token in X-CSRF-Token".into(),
            )));
        }
        return match state.vigil.session(&cookie).await {
            Ok(v) => Ok(Principal::User(v.caller)),
            Err(app::SessionProblem::Failed(e)) => Err(ApiError(e)),
            Err(_) => Err(ApiError(AppError::Unauthenticated)),
        };
    }
    Err(ApiError(AppError::Unauthenticated))
}

fn rtype_of(s: &str) -> Result<ResourceType, ApiError> {
    ResourceType::parse(s).ok_or_else(|| {
        ApiError(AppError::NotFound(format!(
            "resource type {} is not served here; see /fhir/metadata",
            if s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric()) {
                s
            } else {
                "(invalid)"
            }
        )))
    })
}

fn id_of(s: &str) -> Result<ResourceId, ApiError> {
    ResourceId::new(s).map_err(|_| {
        bad(
            IssueCode::Invalid,
            "the id must be 1 to 64 characters of A-Z, a-z, 0-9, '-' and '.'",
        )
    })
}

/// The FHIR base URL for links and `Location` headers.
pub(crate) fn base_url(state: &WebState, headers: &HeaderMap) -> String {
    if let Some(b) = &state.public_base {
        return b.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or("localhost");
    format!("http://{host}/fhir")
}

/// Refuses formats other than JSON (`_format` or `Accept`).
fn check_format(headers: &HeaderMap, pairs: &[(String, String)]) -> Result<(), ApiError> {
    for (k, v) in pairs {
        if k == "_format"
            && !matches!(
                v.as_str(),
                "json" | "application/json" | "application/fhir+json"
            )
        {
            return Err(bad(
                IssueCode::NotSupported,
                "only JSON is supported (_format=json)",
            ));
        }
    }
    if let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) {
        let ok = accept.split(',').any(|a| {
            let m = a.split(';').next().unwrap_or("").trim();
            matches!(
                m,
                "" | "*/*"
                    | "application/*"
                    | "application/json"
                    | "application/fhir+json"
                    | "application/json+fhir"
            )
        });
        if !ok {
            return Err(ApiError(AppError::NotAcceptable));
        }
    }
    Ok(())
}

/// Reads a JSON body within the size limit.
async fn json_body(state: &WebState, headers: &HeaderMap, body: Body) -> Result<Value, ApiError> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ctype
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if !matches!(
        mime.as_str(),
        "application/fhir+json" | "application/json" | "application/json+fhir"
    ) {
        return Err(ApiError(AppError::UnsupportedMediaType));
    }
    parse_json(&limited_body(state, body).await?)
}

/// The whole body, refused with 413 beyond the configured limit.
async fn limited_body(state: &WebState, body: Body) -> Result<Bytes, ApiError> {
    let limit = state.vigil.config().limits.max_body_bytes;
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError(AppError::TooLarge(format!(
            "the body is larger than {limit} bytes"
        )))
    })
}

pub(crate) fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        // Line and column only: serde's message may quote the input.
        bad(
            IssueCode::Structure,
            &format!(
                "the body is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })
}

fn pairs(q: Option<String>) -> Vec<(String, String)> {
    q.map(|q| app::parse_query_string(&q)).unwrap_or_default()
}

fn http_date(v: &Versioned) -> String {
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    v.last_updated
        .to_offset_datetime()
        .format(&fmt)
        .unwrap_or_default()
}

fn with_version_headers(mut resp: Response, v: &Versioned, base: Option<&str>) -> Response {
    let h = resp.headers_mut();
    if let Ok(e) = HeaderValue::from_str(&app::json::etag(v)) {
        h.insert(header::ETAG, e);
    }
    if let Ok(d) = HeaderValue::from_str(&http_date(v)) {
        h.insert(header::LAST_MODIFIED, d);
    }
    if let Some(base) = base
        && let Ok(l) = HeaderValue::from_str(&format!(
            "{base}/{}/{}/_history/{}",
            v.rtype, v.id, v.version
        ))
    {
        h.insert(header::LOCATION, l.clone());
        h.insert(HeaderName::from_static("content-location"), l);
    }
    resp
}

use axum::http::HeaderName;

fn if_match(headers: &HeaderMap) -> Result<Option<VersionId>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let s = v
        .to_str()
        .map_err(|_| {
            bad(
                IssueCode::Invalid,
                "If-Match must be an ETag such as W/\"3\"",
            )
        })?
        .trim();
    let s = s.strip_prefix("W/").unwrap_or(s).trim_matches('"');
    s.parse::<u64>().map(|n| Some(VersionId(n))).map_err(|_| {
        bad(
            IssueCode::Invalid,
            "If-Match must be an ETag such as W/\"3\"",
        )
    })
}

/// `Prefer: return=minimal` asks for no body.
fn wants_minimal(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|p| p.trim() == "return=minimal"))
}

async fn metadata(
    State(state): State<WebState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult {
    check_format(&headers, &pairs(q))?;
    let base = base_url(&state, &headers);
    Ok(fhir_json(
        StatusCode::OK,
        &crate::capability::statement(&state, &base),
    ))
}

/// Anything no route matched: a FHIR-style 404 (after authentication under `/fhir`).
pub async fn not_found(
    State(state): State<WebState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> ApiResult {
    if uri.path().starts_with("/fhir") {
        principal(&state, &headers).await?;
    }
    Err(ApiError(AppError::NotFound(
        "no such endpoint on this server".into(),
    )))
}

async fn unsupported_method() -> ApiResult {
    Err(ApiError(AppError::MethodNotAllowed))
}

async fn bundle(State(state): State<WebState>, headers: HeaderMap, body: Body) -> ApiResult {
    let who = principal(&state, &headers).await?;
    let value = json_body(&state, &headers, body).await?;
    let base = base_url(&state, &headers);
    let out = state.vigil.bundle(&who, value, &base).await?;
    Ok(fhir_json(StatusCode::OK, &out))
}

async fn search(
    State(state): State<WebState>,
    Path(rtype): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let who = principal(&state, &headers).await?;
    let rtype = rtype_of(&rtype)?;
    let pairs = pairs(q);
    check_format(&headers, &pairs)?;
    run_search(&state, &who, rtype, &headers, pairs).await
}

async fn search_post(
    State(state): State<WebState>,
    Path(rtype): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Body,
) -> ApiResult {
    let who = principal(&state, &headers).await?;
    let rtype = rtype_of(&rtype)?;
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ctype.starts_with("application/x-www-form-urlencoded") {
        return Err(ApiError(AppError::UnsupportedMediaType));
    }
    let bytes = limited_body(&state, body).await?;
    let mut all = pairs(q);
    all.extend(app::parse_query_string(&String::from_utf8_lossy(&bytes)));
    check_format(&headers, &all)?;
    run_search(&state, &who, rtype, &headers, all).await
}

async fn run_search(
    state: &WebState,
    who: &Principal,
    rtype: ResourceType,
    headers: &HeaderMap,
    pairs: Vec<(String, String)>,
) -> ApiResult {
    let pairs: Vec<(String, String)> = pairs
        .into_iter()
        .filter(|(k, _)| k != "_format" && k != "_pretty")
        .collect();
    let page = state.vigil.search(who, rtype, &pairs).await?;
    let base = base_url(state, headers);
    let bundle = app::json::searchset(&base, &page, &pairs, &state.vigil.now().to_fhir_instant());
    Ok(fhir_json(StatusCode::OK, &bundle))
}

async fn create(
    State(state): State<WebState>,
    Path(rtype): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let who = principal(&state, &headers).await?;
    let rtype = rtype_of(&rtype)?;
    if headers.contains_key("if-none-exist") {
        return Err(bad(
            IssueCode::NotSupported,
            "conditional create (If-None-Exist) is not supported",
        ));
    }
    let value = json_body(&state, &headers, body).await?;
    let w = state.vigil.create(&who, rtype, value).await?;
    let base = base_url(&state, &headers);
    let body = if wants_minimal(&headers) {
        Value::Null
    } else {
        w.current.resource.clone().unwrap_or(Value::Null)
    };
    let resp = if body.is_null() {
        StatusCode::CREATED.into_response()
    } else {
        fhir_json(StatusCode::CREATED, &body)
    };
    Ok(with_version_headers(resp, &w.current, Some(&base)))
}

async fn read(
    State(state): State<WebState>,
    Path((rtype, id)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let who = principal(&state, &headers).await?;
    let rtype = rtype_of(&rtype)?;
    let id = id_of(&id)?;
    check_format(&headers, &pairs(q))?;
    let (v, bytes) = state.vigil.read_raw(&who, rtype, &id).await?;
    if let Some(inm) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|h| h.to_str().ok())
        && inm.trim() == app::json::etag(&v)
    {
        return Ok(with_version_headers(
            StatusCode::NOT_MODIFIED.into_response(),
            &v,
            None,
        ));
    }
    let mut resp = (StatusCode::OK, bytes).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    Ok(with_version_headers(resp, &v, None))
}

async fn vread(
    State(state): State<WebState>,
    Path((rtype, id, vid)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    let who = principal(&state, &headers).await?;
    let rtype = rtype_of(&rtype)?;
    let id = id_of(&id)?;
    let vid = vid
        .parse::<u64>()
        .map_err(|_| bad(IssueCode::Invalid, "the version must be a positive integer"))?;
    let v = state.vigil.vread(&who, rtype, &id, VersionId(vid)).await?;
    let resp = fhir_json(StatusCode::OK, v.resource.as_ref().unwrap_or(&Value::Null));
    Ok(with_version_headers(resp, &v, None))
}

async fn update(
    State(state): State<WebState>,
    Path((rtype, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let who = principal(&state, &headers).await?;
    let rtype = rtype_of(&rtype)?;
    let id = id_of(&id)?;
    let if_match = if_match(&headers)?;
    let value = json_body(&state, &headers, body).await?;
    let w = state
        .vigil
        .update(&who, rtype, &id, value, if_match)
        .await?;
    let status = if w.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let base = base_url(&state, &headers);
    let resp = if wants_minimal(&headers) {
        status.into_response()
    } else {
        fhir_json(status, w.current.resource.as_ref().unwrap_or(&Value::Null))
    };
    Ok(with_version_headers(resp, &w.current, Some(&base)))
}

async fn delete(
    State(state): State<WebState>,
    Path((rtype, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    let who = principal(&state, &headers).await?;
    let rtype = rtype_of(&rtype)?;
    let id = id_of(&id)?;
    let version = state.vigil.delete(&who, rtype, &id).await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if let Some(v) = version
        && let Ok(e) = HeaderValue::from_str(&format!("W/\"{v}\""))
    {
        resp.headers_mut().insert(header::ETAG, e);
    }
    Ok(resp)
}

async fn history(
    State(state): State<WebState>,
    Path((rtype, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    let who = principal(&state, &headers).await?;
    let rtype = rtype_of(&rtype)?;
    let id = id_of(&id)?;
    let versions = state.vigil.history(&who, rtype, &id).await?;
    let base = base_url(&state, &headers);
    Ok(fhir_json(
        StatusCode::OK,
        &app::json::history(&base, &versions, &state.vigil.now().to_fhir_instant()),
    ))
}

/// `GET /Patient/[id]/$everything`: the patient's record as far as the
/// access policy lets the caller export it (`app::export`).
async fn everything(
    State(state): State<WebState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let who = principal(&state, &headers).await?;
    let id = id_of(&id)?;
    let pairs = pairs(q);
    check_format(&headers, &pairs)?;
    let pairs: Vec<(String, String)> = pairs
        .into_iter()
        .filter(|(k, _)| k != "_format" && k != "_pretty")
        .collect();
    let export = state.vigil.export_patient(&who, &id, &pairs).await?;
    let base = base_url(&state, &headers);
    Ok(fhir_json(
        StatusCode::OK,
        &export.bundle(&base, &state.vigil.now().to_fhir_instant()),
    ))
}
