//! The OAuth 2 / SMART App Launch endpoints and the consent screen.
//!
//! The token, introspection and revocation endpoints speak RFC 6749 JSON
//! (never `OperationOutcome`); the authorisation endpoint speaks HTML to the
//! signed-in user and redirects to the app only once the app's redirect URI
//! is known to be registered.

use app::{AuthorizeRequest, Endpoints, OAuthError, TokenRequest, Vigil};
use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::WebState;
use crate::html::{self, Nav, esc};
use crate::pages::{self, Form, FormError};

pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/.well-known/smart-configuration", get(smart_configuration))
        // SMART App Launch discovers at the FHIR base (`{fhir}/.well-known/…`).
        .route(
            "/fhir/.well-known/smart-configuration",
            get(smart_configuration),
        )
        .route("/.well-known/jwks.json", get(jwks))
        .route("/oauth/authorize", get(authorize_get).post(authorize_post))
        .route("/oauth/token", post(token))
        .route("/oauth/introspect", post(introspect))
        .route("/oauth/revoke", post(revoke))
}

/// Where this server lives, from the FHIR base URL (`…/fhir`).
pub(crate) fn endpoints_of(fhir_base: &str) -> Endpoints {
    let fhir_base = fhir_base.trim_end_matches('/');
    let issuer = fhir_base.strip_suffix("/fhir").unwrap_or(fhir_base);
    Endpoints {
        issuer: issuer.to_owned(),
        fhir_base: format!("{issuer}/fhir"),
        token_url: format!("{issuer}/oauth/token"),
    }
}

pub(crate) fn endpoints(state: &WebState, headers: &HeaderMap) -> Endpoints {
    endpoints_of(&crate::fhir_routes::base_url(state, headers))
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut r = (status, bytes).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    r
}

/// A token-endpoint answer: never cached (RFC 6749 §5.1).
fn no_store(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

fn oauth_error(e: &OAuthError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    no_store(json_response(status, &e.to_json()))
}

fn invalid_request(msg: &str) -> OAuthError {
    OAuthError {
        error: "invalid_request",
        description: msg.to_owned(),
        status: 400,
    }
}

async fn smart_configuration(State(state): State<WebState>, headers: HeaderMap) -> Response {
    let ep = endpoints(&state, &headers);
    let i = &ep.issuer;
    json_response(
        StatusCode::OK,
        &json!({
            "issuer": i,
            "jwks_uri": format!("{i}/.well-known/jwks.json"),
            "authorization_endpoint": format!("{i}/oauth/authorize"),
            "token_endpoint": ep.token_url,
            "introspection_endpoint": format!("{i}/oauth/introspect"),
            "revocation_endpoint": format!("{i}/oauth/revoke"),
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "token_endpoint_auth_methods_supported": ["none", "private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
            "scopes_supported": [
                "openid", "fhirUser", "launch/patient", "offline_access", "online_access",
                "patient/*.rs", "patient/*.cruds", "patient/Patient.rs", "patient/Observation.rs",
                "user/*.rs", "user/*.cruds", "user/Patient.rs",
                "system/*.rs", "system/*.cruds"
            ],
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "capabilities": [
                "launch-standalone", "client-public", "client-confidential-asymmetric",
                "context-standalone-patient", "permission-offline", "permission-online",
                "permission-patient", "permission-user", "permission-v1", "permission-v2",
                "sso-openid-connect"
            ]
        }),
    )
}

async fn jwks(State(state): State<WebState>) -> Response {
    match state.vigil.jwks() {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => {
            tracing::error!(error = %e, "jwks unavailable");
            json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"error": "server_error"}),
            )
        }
    }
}

/// The fields of an authorisation request (each at most once).
fn authorize_request(form: &Form) -> Result<AuthorizeRequest, String> {
    const FIELDS: [&str; 10] = [
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "aud",
        "code_challenge",
        "code_challenge_method",
        "nonce",
        "launch",
    ];
    for f in FIELDS {
        if form.all(f).len() > 1 {
            return Err(format!("the parameter {f} is repeated"));
        }
    }
    let v = |k: &str| form.get(k).map(str::to_owned);
    Ok(AuthorizeRequest {
        response_type: v("response_type"),
        client_id: v("client_id"),
        redirect_uri: v("redirect_uri"),
        scope: v("scope"),
        state: v("state"),
        aud: v("aud"),
        code_challenge: v("code_challenge"),
        code_challenge_method: v("code_challenge_method"),
        nonce: v("nonce"),
        launch: v("launch"),
    })
}

/// The request's fields as hidden inputs, for the consent form to re-post.
fn hidden_fields(req: &AuthorizeRequest) -> String {
    let fields = [
        ("response_type", &req.response_type),
        ("client_id", &req.client_id),
        ("redirect_uri", &req.redirect_uri),
        ("oauth_scope", &req.scope),
        ("state", &req.state),
        ("aud", &req.aud),
        ("code_challenge", &req.code_challenge),
        ("code_challenge_method", &req.code_challenge_method),
        ("nonce", &req.nonce),
        ("launch", &req.launch),
    ];
    fields
        .iter()
        .filter_map(|(k, v)| {
            v.as_ref().map(|v| {
                format!(
                    "<input type=\"hidden\" name=\"{k}\" value=\"{}\">\n",
                    esc(v)
                )
            })
        })
        .collect()
}

/// An authorisation error shown to the user, not sent to the app.
fn authorize_error_page(nav: Option<&Nav>, e: &OAuthError) -> Response {
    pages::error_page(
        StatusCode::BAD_REQUEST,
        nav,
        "This app cannot be authorised",
        &format!(
            "{} ({}). Nothing was shared with the app.",
            e.description, e.error
        ),
    )
}

/// 303 to a registered redirect URI (absolute: it was checked against the
/// client's registration, so this is no open redirect).
fn redirect_to_app(url: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    match HeaderValue::from_str(url) {
        Ok(v) => {
            r.headers_mut().insert(header::LOCATION, v);
            r
        }
        Err(_) => pages::error_page(
            StatusCode::BAD_REQUEST,
            None,
            "This app cannot be authorised",
            "The app's redirect address is not usable.",
        ),
    }
}

fn back_to_app(
    nav: Option<&Nav>,
    e: (OAuthError, Option<String>),
    state: Option<&str>,
) -> Response {
    match e {
        (e, Some(redirect)) => {
            redirect_to_app(&Vigil::authorize_error_redirect(&redirect, &e, state))
        }
        (e, None) => authorize_error_page(nav, &e),
    }
}

/// The origin (`scheme://host[:port]`) of an absolute URL.
fn origin_of(url: &str) -> Option<&str> {
    let scheme_end = url.find("://")? + 3;
    let rest = url.get(scheme_end..)?;
    let end = rest
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| scheme_end + i);
    url.get(..end)
}

async fn authorize_get(
    State(state): State<WebState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let q = q.unwrap_or_default();
    let here = if q.is_empty() {
        "/oauth/authorize".to_owned()
    } else {
        format!("/oauth/authorize?{q}")
    };
    let view = match pages::signed_in(&state, &headers, &here).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let nav = pages::nav(&view);
    let form = Form(app::parse_query_string(&q));
    let req = match authorize_request(&form) {
        Ok(r) => r,
        Err(m) => return authorize_error_page(Some(&nav), &invalid_request(&m)),
    };
    let fhir_base = endpoints(&state, &headers).fhir_base;
    let consent = match state
        .vigil
        .authorize_check(&req, &view.account, &fhir_base)
        .await
    {
        Ok(c) => c,
        Err(e) => return back_to_app(Some(&nav), e, req.state.as_deref()),
    };
    let scopes: String = consent
        .scopes
        .iter()
        .enumerate()
        .map(|(i, (s, d))| {
            format!(
                "<li><input type=\"checkbox\" id=\"scope-{i}\" name=\"scope\" value=\"{s}\" checked> \
<label for=\"scope-{i}\">{d} <code>{s}</code></label></li>\n",
                s = esc(s),
                d = esc(d),
            )
        })
        .collect();
    let patient = if consent.choose_patient {
        "<p><label for=\"patient\">Patient id (the record the app will open)</label>\n\
<input id=\"patient\" name=\"patient\" required autocomplete=\"off\"></p>\n"
    } else {
        ""
    };
    let body = format!(
        "<section class=\"card\">\n<h2 id=\"consent-title\">Allow {name} to use your Vigil records?</h2>\n\
<p>The app <strong>{name}</strong> (<code>{id}</code>) asks for the permissions below. \
Untick any you do not want to give. You can sign out at any time; the app keeps access only as shown.</p>\n\
<form id=\"consent-form\" method=\"post\" action=\"/oauth/authorize\" class=\"stacked\">\n{hidden}{csrf}\n\
<fieldset><legend>Permissions</legend><ul class=\"scopes\">\n{scopes}</ul></fieldset>\n{patient}\
<p><button type=\"submit\" id=\"approve\" name=\"decision\" value=\"approve\">Allow</button> \
<button type=\"submit\" id=\"deny\" name=\"decision\" value=\"deny\" class=\"secondary\">Deny</button></p>\n\
</form>\n</section>",
        name = esc(&consent.client_name),
        id = esc(&consent.client_id),
        hidden = hidden_fields(&req),
        csrf = html::csrf_field(&view.csrf),
    );
    let mut r = html::html(
        StatusCode::OK,
        html::page("Allow an app", Some(&nav), None, &[], &body),
    );
    // The form posts here and is then redirected to the app: browsers apply
    // `form-action` to that redirect too, so the app's origin is allowed.
    let app_origin = req
        .redirect_uri
        .as_deref()
        .and_then(origin_of)
        .filter(|o| {
            o.bytes()
                .all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
        })
        .unwrap_or("'self'");
    if let Ok(v) = HeaderValue::from_str(&format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self' {app_origin}"
    )) {
        r.headers_mut()
            .insert(HeaderName::from_static("content-security-policy"), v);
    }
    r
}

async fn authorize_post(State(state): State<WebState>, headers: HeaderMap, body: Body) -> Response {
    let view = match pages::signed_in(&state, &headers, "/").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let nav = pages::nav(&view);
    let form = match pages::read_form(&headers, body, pages::FORM_LIMIT).await {
        Ok(f) => f,
        Err(_) => {
            return authorize_error_page(Some(&nav), &invalid_request("the form was not readable"));
        }
    };
    if !pages::csrf_ok(&state, &headers, &form) {
        return pages::forbidden_page(Some(&nav));
    }
    // The consent form posts the request's own `scope` as `oauth_scope`
    // (`scope` is the ticked boxes).
    let mut fields: Vec<(String, String)> = form
        .0
        .iter()
        .filter(|(k, _)| k != "scope")
        .cloned()
        .collect();
    for (k, _) in &mut fields {
        if k == "oauth_scope" {
            "scope".clone_into(k);
        }
    }
    let req = match authorize_request(&Form(fields)) {
        Ok(r) => r,
        Err(m) => return authorize_error_page(Some(&nav), &invalid_request(&m)),
    };
    let fhir_base = endpoints(&state, &headers).fhir_base;
    match form.get("decision") {
        Some("approve") => {
            let approved = form.all("scope");
            let patient = form.text("patient");
            match state
                .vigil
                .authorize_approve(
                    &req,
                    &view.account,
                    &fhir_base,
                    &approved,
                    patient.as_deref(),
                )
                .await
            {
                Ok(url) => redirect_to_app(&url),
                Err(e) => back_to_app(Some(&nav), e, req.state.as_deref()),
            }
        }
        Some("deny") => {
            // Only a checked client and redirect URI may be sent the refusal.
            match state
                .vigil
                .authorize_check(&req, &view.account, &fhir_base)
                .await
            {
                Ok(_) => {
                    let denied = OAuthError {
                        error: "access_denied",
                        description: "the user denied the request".into(),
                        status: 400,
                    };
                    let redirect = req.redirect_uri.clone().unwrap_or_default();
                    back_to_app(Some(&nav), (denied, Some(redirect)), req.state.as_deref())
                }
                Err(e) => back_to_app(Some(&nav), e, req.state.as_deref()),
            }
        }
        _ => authorize_error_page(Some(&nav), &invalid_request("choose Allow or Deny")),
    }
}

/// The form of a token, introspection or revocation request.
async fn token_request(headers: &HeaderMap, body: Body) -> Result<TokenRequest, OAuthError> {
    let form = pages::read_form(headers, body, pages::FORM_LIMIT)
        .await
        .map_err(|e| match e {
            FormError::WrongType => {
                invalid_request("the body must be application/x-www-form-urlencoded")
            }
            FormError::TooLarge => invalid_request("the body is too large"),
        })?;
    if form.has_duplicates() {
        return Err(invalid_request("a parameter is repeated"));
    }
    let v = |k: &str| form.get(k).map(str::to_owned);
    Ok(TokenRequest {
        grant_type: v("grant_type"),
        code: v("code"),
        redirect_uri: v("redirect_uri"),
        code_verifier: v("code_verifier"),
        client_id: v("client_id"),
        refresh_token: v("refresh_token"),
        scope: v("scope"),
        client_assertion_type: v("client_assertion_type"),
        client_assertion: v("client_assertion"),
        token: v("token"),
        token_type_hint: v("token_type_hint"),
    })
}

async fn token(State(state): State<WebState>, headers: HeaderMap, body: Body) -> Response {
    let ep = endpoints(&state, &headers);
    let answer = match token_request(&headers, body).await {
        Ok(req) => state.vigil.token(&req, &ep).await,
        Err(e) => Err(e),
    };
    match answer {
        Ok(v) => no_store(json_response(StatusCode::OK, &v)),
        Err(e) => oauth_error(&e),
    }
}

async fn introspect(State(state): State<WebState>, headers: HeaderMap, body: Body) -> Response {
    let ep = endpoints(&state, &headers);
    let answer = match token_request(&headers, body).await {
        Ok(req) => state.vigil.introspect(&req, &ep).await,
        Err(e) => Err(e),
    };
    match answer {
        Ok(v) => no_store(json_response(StatusCode::OK, &v)),
        Err(e) => oauth_error(&e),
    }
}

async fn revoke(State(state): State<WebState>, headers: HeaderMap, body: Body) -> Response {
    let ep = endpoints(&state, &headers);
    let answer = match token_request(&headers, body).await {
        Ok(req) => state.vigil.revoke_token(&req, &ep).await,
        Err(e) => Err(e),
    };
    match answer {
        Ok(()) => {
            let mut r = StatusCode::OK.into_response();
            r.headers_mut().insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
            no_store(r)
        }
        Err(e) => oauth_error(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_origins() {
        let ep = endpoints_of("https://vigil.example/fhir");
        assert_eq!(ep.issuer, "https://vigil.example");
        assert_eq!(ep.fhir_base, "https://vigil.example/fhir");
        assert_eq!(ep.token_url, "https://vigil.example/oauth/token");
        assert_eq!(
            origin_of("https://app.example:8443/cb?x=1"),
            Some("https://app.example:8443")
        );
        assert_eq!(origin_of("http://localhost"), Some("http://localhost"));
        assert_eq!(origin_of("nonsense"), None);
    }
}
