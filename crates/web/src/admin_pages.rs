//! Administrators' pages: users, OAuth apps, the outbox.
//!
//! Every page needs a session of an administrator (403 otherwise); every
//! form carries the session's CSRF token. The façade checks the role again
//! on each call (`require_admin`).

use app::{NewAccount, NewClient, Principal, SessionView};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use model::{ResourceId, Timestamp};
use store::{AccountId, Role};

use crate::WebState;
use crate::html::{self, csrf_field, esc};
use crate::pages::{self, Form};

pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/admin/users", get(users).post(add_user))
        .route("/admin/users/{id}/deactivate", post(deactivate))
        .route("/admin/users/{id}/reset-mfa", post(reset_mfa))
        .route("/admin/users/{id}/enrol", post(enrol))
        .route("/admin/outbox", get(outbox))
        .route("/admin/clients", get(clients).post(add_client))
        .route("/admin/clients/{id}/revoke", post(revoke_client))
}

/// An administrator's session, or the answer instead (sign-in redirect or 403).
async fn admin(state: &WebState, headers: &HeaderMap, path: &str) -> Result<SessionView, Response> {
    let view = pages::signed_in(state, headers, path).await?;
    if view.account.role != Role::Administrator {
        return Err(pages::forbidden_page(Some(&pages::nav(&view))));
    }
    Ok(view)
}

/// An administrator's form post: the session, the role and the CSRF token.
async fn admin_form(
    state: &WebState,
    headers: &HeaderMap,
    body: Body,
    back: &str,
) -> Result<(SessionView, Form), Response> {
    let view = admin(state, headers, back).await?;
    let form = pages::read_form(headers, body, pages::FORM_LIMIT)
        .await
        .map_err(|_| {
            pages::error_page(
                StatusCode::BAD_REQUEST,
                Some(&pages::nav(&view)),
                "Form not readable",
                "The form could not be read; reload the page and try again.",
            )
        })?;
    if !pages::csrf_ok(state, headers, &form) {
        return Err(pages::forbidden_page(Some(&pages::nav(&view))));
    }
    // Managing accounts and apps is sensitive: it needs a recent sign-in.
    if !state.vigil.recently_signed_in(&view) {
        return Err(crate::html::see_other(&format!(
            "/signin?reauth=1&next={}",
            pages::encode_component(back)
        )));
    }
    Ok((view, form))
}

fn principal(view: &SessionView) -> Principal {
    Principal::User(view.caller.clone())
}

/// The site's origin, for links in e-mails (`https://vigil.example`).
fn site(state: &WebState, headers: &HeaderMap) -> String {
    crate::oauth_routes::endpoints(state, headers).issuer
}

fn date(t: Timestamp) -> String {
    let s = t.to_fhir_instant();
    match (s.get(..10), s.get(11..16)) {
        (Some(d), Some(hm)) => format!("{d} {hm} UTC"),
        _ => s,
    }
}

fn flash(q: Option<&str>) -> String {
    let pairs = q.map(app::parse_query_string).unwrap_or_default();
    let msg = pairs
        .iter()
        .find_map(|(k, v)| match (k.as_str(), v.as_str()) {
            ("added", "1") => Some("The account was added and an enrolment link was sent."),
            ("done", "deactivated") => {
                Some("The account was deactivated; its sessions and tokens were revoked.")
            }
            ("done", "reset-mfa") => {
                Some("The second factors were removed; the user enrols again at the next sign-in.")
            }
            ("done", "enrol") => Some("A new enrolment link was sent."),
            ("done", "client-added") => Some("The app was registered."),
            ("done", "client-revoked") => Some("The app was revoked; its tokens stop working."),
            _ => None,
        });
    msg.map(|m| format!("<p id=\"flash\" class=\"flash\" role=\"status\">{m}</p>"))
        .unwrap_or_default()
}

fn page(view: &SessionView, title: &str, body: &str, status: StatusCode) -> Response {
    html::html(
        status,
        html::page(title, Some(&pages::nav(view)), None, &[], body),
    )
}

// ---- Users ----

async fn users(
    State(state): State<WebState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let view = match admin(&state, &headers, "/admin/users").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    users_page(&state, &view, &flash(q.as_deref()), None, StatusCode::OK).await
}

async fn users_page(
    state: &WebState,
    view: &SessionView,
    flash: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let accounts = match state.vigil.list_accounts(&principal(view)).await {
        Ok(a) => a,
        Err(e) => {
            return pages::app_error_page(view, "Users", &e);
        }
    };
    let csrf = csrf_field(&view.csrf);
    let rows: String = accounts
        .iter()
        .map(|a| {
            let id = esc(&a.id.to_string());
            let linked = match (&a.practitioner, &a.patient) {
                (Some(p), _) => format!("Practitioner/{}", esc(p.as_str())),
                (None, Some(p)) => format!("Patient/{}", esc(p.as_str())),
                (None, None) => String::new(),
            };
            let actions = if a.active {
                format!(
                    "<form method=\"post\" action=\"/admin/users/{id}/deactivate\" class=\"inline\">{csrf}<button type=\"submit\" class=\"deactivate secondary\">Deactivate</button></form> \
<form method=\"post\" action=\"/admin/users/{id}/reset-mfa\" class=\"inline\">{csrf}<button type=\"submit\" class=\"reset-mfa secondary\">Reset second factors</button></form> \
<form method=\"post\" action=\"/admin/users/{id}/enrol\" class=\"inline\">{csrf}<button type=\"submit\" class=\"send-enrolment secondary\">Send enrolment link</button></form>"
                )
            } else {
                String::new()
            };
            format!(
                "<tr data-id=\"{id}\"><td class=\"username\">{user}</td><td class=\"role\">{role}</td><td class=\"active\">{active}</td>\
<td class=\"mfa\">TOTP: {totp}; passkeys: {pk}; recovery codes: {rc}</td><td class=\"linked\">{linked}</td><td>{actions}</td></tr>\n",
                user = esc(&a.username),
                role = esc(a.role.as_str()),
                active = if a.active { "yes" } else { "no (deactivated)" },
                totp = if a.totp { "yes" } else { "no" },
                pk = a.passkeys,
                rc = a.recovery_codes,
            )
        })
        .collect();
    let roles: String = Role::ALL
        .iter()
        .map(|r| format!("<option value=\"{v}\">{v}</option>", v = esc(r.as_str())))
        .collect();
    let body = format!(
        "{flash}{error}<section class=\"card\">\n<h2>Users</h2>\n\
<table id=\"users\">\n<thead><tr><th>User name</th><th>Role</th><th>Active</th><th>Second factors</th><th>Linked record</th><th>Actions</th></tr></thead>\n\
<tbody>\n{rows}</tbody>\n</table>\n</section>\n\
<section class=\"card\">\n<h2>Add a user</h2>\n\
<p>The user gets an e-mail with a link to set a password and second factor (see the outbox).</p>\n\
<form id=\"user-add-form\" method=\"post\" action=\"/admin/users\">{csrf}\n\
<label for=\"new-username\">User name</label><input id=\"new-username\" name=\"username\" required autocomplete=\"off\">\n\
<label for=\"new-role\">Role</label><select id=\"new-role\" name=\"role\">{roles}</select>\n\
<label for=\"new-practitioner\">Practitioner id (staff)</label><input id=\"new-practitioner\" name=\"practitioner\" autocomplete=\"off\">\n\
<label for=\"new-patient\">Patient id (patients)</label><input id=\"new-patient\" name=\"patient\" autocomplete=\"off\">\n\
<label for=\"new-display-name\">Display name</label><input id=\"new-display-name\" name=\"display_name\" autocomplete=\"off\">\n\
<label for=\"new-email\">E-mail</label><input id=\"new-email\" name=\"email\" type=\"email\" required autocomplete=\"off\">\n\
<button type=\"submit\" id=\"user-add-submit\">Add user</button>\n</form>\n</section>",
        error = html::error(error),
    );
    page(view, "Users", &body, status)
}

fn resource_id(form: &Form, name: &str, what: &str) -> Result<Option<ResourceId>, String> {
    form.text(name)
        .map(|v| ResourceId::new(v).map_err(|_| format!("the {what} id is not a valid id")))
        .transpose()
}

async fn add_user(State(state): State<WebState>, headers: HeaderMap, body: Body) -> Response {
    let (view, form) = match admin_form(&state, &headers, body, "/admin/users").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let fail = |msg: String, status: StatusCode| {
        let state = state.clone();
        let view = view.clone();
        async move { users_page(&state, &view, "", Some(&msg), status).await }
    };
    let invalid = StatusCode::UNPROCESSABLE_ENTITY;
    let status_of = pages::status_of;
    let Some(role) = form.get("role").and_then(Role::parse) else {
        return fail("choose a role".into(), invalid).await;
    };
    let practitioner = match resource_id(&form, "practitioner", "Practitioner") {
        Ok(p) => p,
        Err(m) => return fail(m, invalid).await,
    };
    let patient = match resource_id(&form, "patient", "Patient") {
        Ok(p) => p,
        Err(m) => return fail(m, invalid).await,
    };
    let new = NewAccount {
        username: form.get("username").unwrap_or("").to_owned(),
        role,
        practitioner,
        patient,
        display_name: form.text("display_name"),
        email: form.text("email"),
    };
    let who = principal(&view);
    let id = match state.vigil.create_account(&who, new, None).await {
        Ok(id) => id,
        Err(e) => return fail(pages::app_error_text(&e), status_of(&e)).await,
    };
    if let Err(e) = state
        .vigil
        .send_enrolment(&who, &id, &site(&state, &headers))
        .await
    {
        return fail(
            format!(
                "the account was created, but no enrolment link was sent: {}",
                pages::app_error_text(&e)
            ),
            status_of(&e),
        )
        .await;
    }
    html::see_other("/admin/users?added=1")
}

/// The account an action's path names.
fn account_id(id: &str) -> Option<AccountId> {
    AccountId::new(id.to_owned())
}

#[derive(Clone, Copy)]
enum UserAction {
    Deactivate,
    ResetMfa,
    Enrol,
}

async fn user_action(
    state: WebState,
    headers: HeaderMap,
    id: String,
    body: Body,
    action: UserAction,
) -> Response {
    let (view, _form) = match admin_form(&state, &headers, body, "/admin/users").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(id) = account_id(&id) else {
        return users_page(
            &state,
            &view,
            "",
            Some("no such account"),
            StatusCode::NOT_FOUND,
        )
        .await;
    };
    let who = principal(&view);
    let (result, done) = match action {
        UserAction::Deactivate => (
            state.vigil.deactivate_account(&who, &id).await,
            "deactivated",
        ),
        UserAction::ResetMfa => (
            state.vigil.reset_second_factors(&who, &id).await,
            "reset-mfa",
        ),
        UserAction::Enrol => (
            state
                .vigil
                .send_enrolment(&who, &id, &site(&state, &headers))
                .await,
            "enrol",
        ),
    };
    match result {
        Ok(()) => html::see_other(&format!("/admin/users?done={done}")),
        Err(e) => {
            let status = pages::status_of(&e);
            users_page(&state, &view, "", Some(&pages::app_error_text(&e)), status).await
        }
    }
}

async fn deactivate(
    State(state): State<WebState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    user_action(state, headers, id, body, UserAction::Deactivate).await
}

async fn reset_mfa(
    State(state): State<WebState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    user_action(state, headers, id, body, UserAction::ResetMfa).await
}

async fn enrol(
    State(state): State<WebState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    user_action(state, headers, id, body, UserAction::Enrol).await
}

// ---- Outbox ----

async fn outbox(State(state): State<WebState>, headers: HeaderMap) -> Response {
    let view = match admin(&state, &headers, "/admin/outbox").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let messages = match state.vigil.outbox(&principal(&view), 200).await {
        Ok(m) => m,
        Err(e) => {
            return pages::app_error_page(&view, "Outbox", &e);
        }
    };
    let list: String = if messages.is_empty() {
        "<p id=\"outbox-empty\">No messages.</p>".into()
    } else {
        messages
            .iter()
            .map(|m| {
                let status = match m.sent_at {
                    Some(t) => format!("sent {}", esc(&date(t))),
                    None => "not sent yet".into(),
                };
                let last_error = m
                    .last_error
                    .as_deref()
                    .map(|e| format!("; last error: {}", esc(e)))
                    .unwrap_or_default();
                format!(
                    "<article class=\"message card\" data-kind=\"{kind}\">\n\
<p>To <span class=\"to\">{to}</span>: <span class=\"subject\">{subject}</span></p>\n\
<p class=\"meta\"><time datetime=\"{iso}\">{created}</time> — <span class=\"sent\">{status}</span>, \
<span class=\"attempts\">{attempts} attempt(s)</span>{last_error}</p>\n\
<pre class=\"body\">{body}</pre>\n</article>\n",
                    kind = esc(&m.kind),
                    to = esc(&m.to),
                    subject = esc(&m.subject),
                    iso = esc(&m.created.to_fhir_instant()),
                    created = esc(&date(m.created)),
                    attempts = m.attempts,
                    body = esc(&m.body),
                )
            })
            .collect()
    };
    let body = format!(
        "<section class=\"card\">\n<h2>Outbox</h2>\n<p>Messages Vigil sends (enrolment and password-reset links), newest first. \
Links in them are secrets: do not forward them.</p>\n</section>\n<section id=\"outbox\">\n{list}</section>"
    );
    page(&view, "Outbox", &body, StatusCode::OK)
}

// ---- OAuth apps ----

async fn clients(
    State(state): State<WebState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let view = match admin(&state, &headers, "/admin/clients").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    clients_page(&state, &view, &flash(q.as_deref()), None, StatusCode::OK).await
}

async fn clients_page(
    state: &WebState,
    view: &SessionView,
    flash: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let list = match state.vigil.list_clients(&principal(view)).await {
        Ok(c) => c,
        Err(e) => {
            return pages::app_error_page(view, "Apps", &e);
        }
    };
    let csrf = csrf_field(&view.csrf);
    let rows: String = list
        .iter()
        .map(|c| {
            let id = esc(&c.client_id);
            let uris: String = c
                .redirect_uris
                .iter()
                .map(|u| format!("<code>{}</code><br>", esc(u)))
                .collect();
            let action = if c.active {
                format!(
                    "<form method=\"post\" action=\"/admin/clients/{}/revoke\" class=\"inline\">{csrf}<button type=\"submit\" class=\"revoke secondary\">Revoke</button></form>",
                    pages::encode_component(&c.client_id)
                )
            } else {
                String::new()
            };
            format!(
                "<tr data-id=\"{id}\"><td class=\"client-id\"><code>{id}</code></td><td class=\"name\">{name}</td>\
<td class=\"confidential\">{conf}</td><td class=\"redirects\">{uris}</td><td class=\"scope\"><code>{scope}</code></td>\
<td class=\"active\">{active}</td><td>{action}</td></tr>\n",
                name = esc(&c.name),
                conf = if c.confidential { "yes (private_key_jwt)" } else { "no (public)" },
                scope = esc(&c.scope),
                active = if c.active { "yes" } else { "no (revoked)" },
            )
        })
        .collect();
    let body = format!(
        "{flash}{error}<section class=\"card\">\n<h2>Apps (OAuth clients)</h2>\n\
<table id=\"clients\">\n<thead><tr><th>Client id</th><th>Name</th><th>Confidential</th><th>Redirect URIs</th><th>Scope ceiling</th><th>Active</th><th>Actions</th></tr></thead>\n\
<tbody>\n{rows}</tbody>\n</table>\n</section>\n\
<section class=\"card\">\n<h2>Register an app</h2>\n\
<p>A JWK Set (public keys only) makes the app confidential: it authenticates with a signed assertion (RS384 or ES384). \
Backend services (<code>system/</code> scopes) need one.</p>\n\
<form id=\"client-add-form\" method=\"post\" action=\"/admin/clients\">{csrf}\n\
<label for=\"client-id\">Client id</label><input id=\"client-id\" name=\"client_id\" required autocomplete=\"off\">\n\
<label for=\"client-name\">Name</label><input id=\"client-name\" name=\"name\" required autocomplete=\"off\">\n\
<label for=\"client-redirects\">Redirect URIs (one per line)</label><textarea id=\"client-redirects\" name=\"redirect_uris\" rows=\"3\"></textarea>\n\
<label for=\"client-scope\">Scopes</label><input id=\"client-scope\" name=\"scope\" required autocomplete=\"off\" placeholder=\"launch/patient openid fhirUser patient/*.rs\">\n\
<label for=\"client-jwks\">JWK Set (JSON, optional)</label><textarea id=\"client-jwks\" name=\"jwks\" rows=\"4\"></textarea>\n\
<button type=\"submit\" id=\"client-add-submit\">Register</button>\n</form>\n</section>",
        error = html::error(error),
    );
    page(view, "Apps", &body, status)
}

async fn add_client(State(state): State<WebState>, headers: HeaderMap, body: Body) -> Response {
    let (view, form) = match admin_form(&state, &headers, body, "/admin/clients").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let jwks = match form.text("jwks") {
        None => None,
        Some(j) => match serde_json::from_str::<serde_json::Value>(&j) {
            Ok(v) => Some(v),
            Err(_) => {
                return clients_page(
                    &state,
                    &view,
                    "",
                    Some("the JWK Set is not valid JSON"),
                    StatusCode::UNPROCESSABLE_ENTITY,
                )
                .await;
            }
        },
    };
    let new = NewClient {
        client_id: form.get("client_id").unwrap_or("").trim().to_owned(),
        name: form.get("name").unwrap_or("").to_owned(),
        redirect_uris: form
            .get("redirect_uris")
            .unwrap_or("")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
        scope: form.get("scope").unwrap_or("").trim().to_owned(),
        jwks,
    };
    match state.vigil.add_client(&principal(&view), new).await {
        Ok(()) => html::see_other("/admin/clients?done=client-added"),
        Err(e) => {
            let status = pages::status_of(&e);
            clients_page(&state, &view, "", Some(&pages::app_error_text(&e)), status).await
        }
    }
}

async fn revoke_client(
    State(state): State<WebState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (view, _form) = match admin_form(&state, &headers, body, "/admin/clients").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    match state.vigil.revoke_client(&principal(&view), &id).await {
        Ok(()) => html::see_other("/admin/clients?done=client-revoked"),
        Err(e) => {
            let status = pages::status_of(&e);
            clients_page(&state, &view, "", Some(&pages::app_error_text(&e)), status).await
        }
    }
}
