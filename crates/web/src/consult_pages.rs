//! Telehealth consultations over HTTP: the clinician's consultation list
//! and room, the patient's join link (safe from link previews), identity
//! check and waiting room, the signaling WebSocket, the DLP lessons, and the
//! JSON API (`/api/consult/…`).
//!
//! A join link's GET never uses it up and shows nothing identifying (mail
//! scanners and chat apps open links before people do); the identity check
//! is a POST. The WebSocket checks its `Origin` before anything else, then
//! the participant's admission (the clinician's session, or the guest pass
//! cookie a passed identity check set).

use app::telehealth::{
    CheckResult, ConsultItem, FileOutcome, FileUpload, GuestPass, InviteRequest, Invitee,
    JoinState, Member, RoomView,
};
use app::{AppError, Principal, SessionView};
use axum::Router;
use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use consult::signal::{self, ServerMsg};
use model::{ResourceId, Timestamp};
use serde_json::{Value, json};
use store::Role;

use crate::WebState;
use crate::access_routes::{JsonError, caller, error, reply};
use crate::html::{self, csrf_field, esc};
use crate::pages::{self, Form};

/// The guest pass cookie (`__Host-`: Secure, path `/`, no domain).
pub const PASS_COOKIE: &str = "__Host-vigil_consult";
/// Seconds between keep-alive pings on a consultation WebSocket.
const PING_SECS: u64 = 20;

pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/consult", get(list_page))
        .route("/consult/open", post(open_post))
        .route("/consult/room/{id}", get(room_page))
        .route("/consult/room/{id}/invite", post(invite_post))
        .route("/consult/ws", get(ws))
        .route("/join/{token}", get(join_page).post(join_post))
        .route("/visit", get(visit_page))
        .route("/consult/room/{id}/files", post(clinician_upload))
        .route("/consult/room/{id}/files/{doc}", get(clinician_download))
        .route("/visit/files", post(guest_upload))
        .route("/visit/files/{doc}", get(guest_download))
        .route("/learn/{id}", get(lesson_page))
        .route("/static/consult.js", get(consult_js))
        .route("/api/consult/appointments", get(api_list))
        .route("/api/consult/rooms", post(api_open))
        .route("/api/consult/rooms/{id}", get(api_room))
        .route("/api/consult/rooms/{id}/invites", post(api_invite))
}

fn is_clinician(view: &SessionView) -> bool {
    matches!(
        view.account.role,
        Role::Physician | Role::Nurse | Role::OtherClinical
    )
}

fn principal(view: &SessionView) -> Principal {
    Principal::User(view.caller.clone())
}

fn page(view: &SessionView, title: &str, body: &str, scripts: &[&str]) -> Response {
    html::html(
        StatusCode::OK,
        html::page(
            title,
            Some(&pages::nav(view)),
            Some(&view.csrf),
            scripts,
            body,
        ),
    )
}

fn when(t: Option<Timestamp>) -> String {
    t.map(|t| {
        let s = t.to_fhir_instant();
        format!(
            "<time datetime=\"{}\">{} {} UTC</time>",
            esc(&s),
            esc(s.get(..10).unwrap_or("")),
            esc(s.get(11..16).unwrap_or(""))
        )
    })
    .unwrap_or_default()
}

async fn clinician_view(
    state: &WebState,
    headers: &HeaderMap,
    here: &str,
) -> Result<SessionView, Response> {
    let view = pages::signed_in(state, headers, here).await?;
    if !is_clinician(&view) {
        return Err(pages::forbidden_page(Some(&pages::nav(&view))));
    }
    Ok(view)
}

// ---- the clinician's pages ----

async fn list_page(State(state): State<WebState>, headers: HeaderMap) -> Response {
    let view = match clinician_view(&state, &headers, "/consult").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let items = match state.vigil.consult_list(&principal(&view)).await {
        Ok(i) => i,
        Err(e) => return pages::app_error_page(&view, "Consultations", &e),
    };
    page(&view, "Consultations", &list_html(&view, &items), &[])
}

fn list_html(view: &SessionView, items: &[ConsultItem]) -> String {
    let mut rows = String::new();
    for i in items {
        let action = match &i.room {
            Some(r) => format!(
                "<a class=\"room-link\" href=\"/consult/room/{}\">Go to the room</a>",
                esc(r)
            ),
            None => format!(
                "<form method=\"post\" action=\"/consult/open\" class=\"inline\">{}\
<input type=\"hidden\" name=\"appointment\" value=\"{}\">\
<button type=\"submit\" class=\"open-room\">Open room</button></form>",
                csrf_field(&view.csrf),
                esc(&i.appointment)
            ),
        };
        rows.push_str(&format!(
            "<tr data-appointment=\"{id}\"><td>{start}</td><td>{who}</td><td>{status}</td><td>{action}</td></tr>\n",
            id = esc(&i.appointment),
            start = when(i.start),
            who = esc(i
                .patient_name
                .as_deref()
                .or(i.patient.as_deref())
                .unwrap_or("—")),
            status = esc(&i.status),
        ));
    }
    if rows.is_empty() {
        rows = "<tr><td colspan=\"4\">No appointments from yesterday on.</td></tr>".into();
    }
    format!(
        "<section class=\"card\">\n<h2>Video consultations</h2>\n\
<p>A room opens for an appointment someone else scheduled (the front desk, the patient's own \
booking, a referral) or for a patient you already care for. Patients join from an invite link; \
nothing to install.</p>\n\
<table id=\"consult-list\"><thead><tr><th>When</th><th>Patient</th><th>Status</th><th></th></tr></thead>\n\
<tbody>{rows}</tbody></table>\n</section>"
    )
}

async fn open_post(State(state): State<WebState>, headers: HeaderMap, body: Body) -> Response {
    let view = match clinician_view(&state, &headers, "/consult").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let form = match pages::read_form(&headers, body, pages::FORM_LIMIT).await {
        Ok(f) => f,
        Err(_) => return pages::forbidden_page(Some(&pages::nav(&view))),
    };
    if !pages::csrf_ok(&state, &headers, &form) {
        return pages::forbidden_page(Some(&pages::nav(&view)));
    }
    let Ok(appointment) = ResourceId::new(form.get("appointment").unwrap_or("")) else {
        return pages::error_page(
            StatusCode::BAD_REQUEST,
            Some(&pages::nav(&view)),
            "No such appointment",
            "The form named no appointment.",
        );
    };
    match state
        .vigil
        .consult_open(&principal(&view), &appointment)
        .await
    {
        Ok(room) => html::see_other(&format!("/consult/room/{}", room.id)),
        Err(e) => pages::app_error_page(&view, "The room could not be opened", &e),
    }
}

async fn room_page(
    State(state): State<WebState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let here = format!("/consult/room/{}", pages::encode_component(&id));
    let view = match clinician_view(&state, &headers, &here).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let room = match state.vigil.consult_room(&principal(&view), &id).await {
        Ok(r) => r,
        Err(e) => return pages::app_error_page(&view, "Consultation room", &e),
    };
    let pairs = q
        .as_deref()
        .map(app::parse_query_string)
        .unwrap_or_default();
    let flag = |k: &str| pairs.iter().any(|(a, b)| a == k && b == "1");
    let status = if flag("sent") {
        "<p id=\"invite-status\" class=\"flash\" role=\"status\">The invite was sent.</p>"
    } else {
        ""
    };
    page(
        &view,
        "Consultation room",
        &room_html(&view, &room, status, flag("relay"), None),
        &["/static/consult.js"],
    )
}

fn invites_html(room: &RoomView) -> String {
    if room.invites.is_empty() {
        return "<p>No invite yet.</p>".into();
    }
    let mut rows = String::new();
    for i in &room.invites {
        let state = if i.revoked {
            "revoked"
        } else if i.locked {
            "locked (5 wrong answers): send a new one"
        } else if i.verified {
            "checked in"
        } else {
            "sent"
        };
        let code = i
            .code
            .as_deref()
            .map(|c| format!("<code class=\"invite-code\">{}</code>", esc(c)))
            .unwrap_or_default();
        rows.push_str(&format!(
            "<tr data-invite=\"{id}\"><td>{who}</td><td>{method}</td><td class=\"invite-state\">{state}</td><td>{code}</td><td>{exp}</td></tr>\n",
            id = esc(&i.id),
            who = match i.invitee {
                Invitee::Patient => "patient",
                Invitee::Interpreter => "interpreter",
                Invitee::Family => "family member",
            },
            method = if i.method == "dob" { "date of birth" } else { "one-time code (read it out)" },
            exp = when(Some(i.expires)),
        ));
    }
    format!(
        "<table id=\"invites\"><thead><tr><th>For</th><th>Check</th><th>State</th><th>Code</th><th>Expires</th></tr></thead><tbody>{rows}</tbody></table>"
    )
}

fn room_html(
    view: &SessionView,
    room: &RoomView,
    status: &str,
    relay: bool,
    error: Option<&str>,
) -> String {
    let ended = room.status == "ended";
    let invite_form = if ended {
        String::new()
    } else {
        format!(
            "<form id=\"invite\" method=\"post\" action=\"/consult/room/{id}/invite\">{csrf}\
<label>For <select name=\"invitee\"><option value=\"patient\">the patient</option>\
<option value=\"interpreter\">an interpreter</option><option value=\"family\">a family member</option></select></label> \
<label>Check <select name=\"method\"><option value=\"dob\">date of birth</option>\
<option value=\"code\">one-time code</option></select></label> \
<label>Send by <select name=\"channel\"><option value=\"email\">e-mail</option><option value=\"sms\">SMS</option></select></label> \
<label>To <input name=\"to\" required maxlength=\"254\" autocomplete=\"off\"></label> \
<button type=\"submit\" id=\"send-invite\">Send invite</button></form>",
            id = esc(&room.id),
            csrf = csrf_field(&view.csrf),
        )
    };
    format!(
        "<section class=\"card consult\" id=\"consult\" data-room=\"{id}\" data-side=\"clinician\" data-relay=\"{relay}\">\n\
<h2>Video consultation</h2>\n\
<p>Appointment <code>{appt}</code> · room <span id=\"room-status\">{rstatus}</span>{window}</p>\n\
{error}{status}\n\
<div class=\"call\">\n\
<video id=\"remote-video\" autoplay playsinline></video>\n\
<video id=\"local-video\" autoplay playsinline muted></video>\n\
</div>\n\
<p class=\"call-info\"><span id=\"call-path\" data-path=\"connecting\">connecting</span> · \
<span id=\"call-security\">Encrypted end to end between the browsers (DTLS-SRTP); no video passes through Vigil.</span></p>\n\
<h3>Waiting room</h3>\n<ul id=\"waiting\" aria-live=\"polite\"></ul>\n\
<h3>In the call</h3>\n<ul id=\"admitted\" aria-live=\"polite\"></ul>\n\
<p><button type=\"button\" id=\"lock\">Lock the room</button> \
<button type=\"button\" id=\"end\" class=\"danger\">End the consultation</button></p>\n\
{chat}\n\
<h3>Invites</h3>\n{invites}\n{invite_form}\n\
</section>",
        id = esc(&room.id),
        relay = if relay { "1" } else { "0" },
        appt = esc(&room.appointment),
        rstatus = esc(&room.status),
        window = match (room.consult_start, room.consult_end) {
            (Some(s), Some(e)) => format!(
                " · your access to this patient's record through this consultation: {} to {}",
                when(Some(s)),
                when(Some(e))
            ),
            _ => String::new(),
        },
        error = html::error(error),
        chat = chat_html(true),
        invites = invites_html(room),
    )
}

fn chat_html(clinician: bool) -> String {
    let override_form = if clinician {
        "<p><label>Send it anyway, because <input id=\"dlp-reason\" maxlength=\"500\"></label> \
<button type=\"button\" id=\"dlp-override\">Send anyway</button></p>"
    } else {
        ""
    };
    format!(
        "<h3>Chat</h3>\n<ol id=\"chat-log\" aria-live=\"polite\"></ol>\n\
<div id=\"dlp-block\" class=\"error\" role=\"alert\" hidden><p id=\"dlp-text\"></p>\
<p><a class=\"dlp-lesson\" href=\"/learn/dlp-other-patient\" target=\"_blank\">Why was this blocked?</a></p>{override_form}</div>\n\
<p><label for=\"chat-text\">Message</label><br><textarea id=\"chat-text\" rows=\"2\" maxlength=\"4000\"></textarea><br>\
<button type=\"button\" id=\"chat-send\">Send</button></p>\
<p><label for=\"file-input\">Share a file (PDF, PNG, JPEG or text, up to 10 MB)</label><br>\
<input type=\"file\" id=\"file-input\" accept=\"application/pdf,image/png,image/jpeg,text/plain\"> \
<button type=\"button\" id=\"file-send\">Share</button></p>"
    )
}

async fn invite_post(
    State(state): State<WebState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let here = format!("/consult/room/{}", pages::encode_component(&id));
    let view = match clinician_view(&state, &headers, &here).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let form: Form = match pages::read_form(&headers, body, pages::FORM_LIMIT).await {
        Ok(f) => f,
        Err(_) => return pages::forbidden_page(Some(&pages::nav(&view))),
    };
    if !pages::csrf_ok(&state, &headers, &form) {
        return pages::forbidden_page(Some(&pages::nav(&view)));
    }
    let req = InviteRequest {
        method: form.get("method").unwrap_or("dob").to_owned(),
        channel: form.get("channel").unwrap_or("email").to_owned(),
        to: form.get("to").unwrap_or("").to_owned(),
        invitee: Invitee::parse(form.get("invitee").unwrap_or("patient"))
            .unwrap_or(Invitee::Patient),
    };
    let base = crate::identity_pages::origin(&state, &headers);
    let who = principal(&view);
    match state.vigil.consult_invite(&who, &id, &req, &base).await {
        Ok(_) => html::see_other(&format!("{here}?sent=1")),
        Err(e) => match state.vigil.consult_room(&who, &id).await {
            Ok(room) => {
                let text = pages::app_error_text(&e);
                let mut r = page(
                    &view,
                    "Consultation room",
                    &room_html(&view, &room, "", false, Some(&text)),
                    &["/static/consult.js"],
                );
                *r.status_mut() = pages::status_of(&e);
                r
            }
            Err(e) => pages::app_error_page(&view, "Consultation room", &e),
        },
    }
}

// ---- the patient's pages ----

/// The pages a join link leads to: generic, never cached, never a referrer.
fn guest_page(status: StatusCode, title: &str, body: &str, scripts: &[&str]) -> Response {
    let mut r = html::html(status, html::page(title, None, None, scripts, body));
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "x-robots-tag",
        HeaderValue::from_static("noindex, nofollow"),
    );
    r
}

fn check_form(token: &str, method: &str, message: &str) -> String {
    let field = if method == "code" {
        "<label for=\"code\">The code your clinician gave you</label><br>\
<input id=\"code\" name=\"answer\" inputmode=\"numeric\" autocomplete=\"one-time-code\" required maxlength=\"32\">"
    } else {
        "<label for=\"dob\">Your date of birth (YYYY-MM-DD)</label><br>\
<input id=\"dob\" name=\"answer\" inputmode=\"numeric\" placeholder=\"YYYY-MM-DD\" autocomplete=\"bday\" required maxlength=\"32\">"
    };
    format!(
        "<section class=\"card\">\n<h2>Video visit</h2>\n\
<p>To join, confirm it is you. Nothing to install.</p>\n{message}\
<form id=\"check\" method=\"post\" action=\"/join/{token}\">\n<p>{field}</p>\n\
<p><button type=\"submit\" id=\"check-submit\">Continue</button></p>\n</form>\n</section>",
        token = esc(token),
    )
}

fn join_message(state: &JoinState) -> Option<(&'static str, &'static str)> {
    match state {
        JoinState::Ready { .. } => None,
        JoinState::Expired => Some((
            "join-expired",
            "This link has expired. Ask your clinic for a new one.",
        )),
        JoinState::Locked => Some((
            "check-locked",
            "This link is locked after too many wrong answers. Ask your clinic for a new one.",
        )),
        JoinState::Ended => Some(("join-ended", "This visit has ended.")),
        JoinState::Invalid => Some((
            "join-invalid",
            "This link is not valid. Check that you copied all of it.",
        )),
    }
}

fn stopped(id: &str, text: &str, status: StatusCode) -> Response {
    guest_page(
        status,
        "Video visit",
        &format!(
            "<section class=\"card\">\n<h2>Video visit</h2>\n<p id=\"{id}\" class=\"error\" role=\"alert\">{}</p>\n</section>",
            esc(text)
        ),
        &[],
    )
}

/// The link's GET: shows the check form, uses nothing up, names no one.
async fn join_page(State(state): State<WebState>, Path(token): Path<String>) -> Response {
    match state.vigil.consult_join_state(&token).await {
        Ok(JoinState::Ready { method }) => guest_page(
            StatusCode::OK,
            "Video visit",
            &check_form(&token, &method, ""),
            &[],
        ),
        Ok(s) => match join_message(&s) {
            Some((id, text)) => stopped(id, text, StatusCode::OK),
            None => stopped("join-invalid", "This link is not valid.", StatusCode::OK),
        },
        Err(e) => {
            tracing::error!(error = %e, "join page");
            stopped(
                "join-error",
                "Something went wrong. Try again in a moment.",
                StatusCode::INTERNAL_SERVER_ERROR,
            )
        }
    }
}

async fn join_post(
    State(state): State<WebState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !crate::identity_pages::same_origin(&state, &headers) {
        return stopped(
            "join-invalid",
            "This form must be sent from the visit page.",
            StatusCode::FORBIDDEN,
        );
    }
    let Ok(form) = pages::read_form(&headers, body, pages::FORM_LIMIT).await else {
        return stopped(
            "join-invalid",
            "The form could not be read.",
            StatusCode::BAD_REQUEST,
        );
    };
    let answer = form.get("answer").unwrap_or("").trim().to_owned();
    let method = match state.vigil.consult_join_state(&token).await {
        Ok(JoinState::Ready { method }) => method,
        Ok(s) => {
            return match join_message(&s) {
                Some((id, text)) => stopped(id, text, StatusCode::FORBIDDEN),
                None => stopped(
                    "join-invalid",
                    "This link is not valid.",
                    StatusCode::FORBIDDEN,
                ),
            };
        }
        Err(e) => {
            tracing::error!(error = %e, "join check");
            return stopped(
                "join-error",
                "Something went wrong.",
                StatusCode::INTERNAL_SERVER_ERROR,
            );
        }
    };
    match state.vigil.consult_check(&token, &answer).await {
        Ok(CheckResult::Passed(pass)) => match state.vigil.consult_pass_token(&pass) {
            Ok(v) => {
                let age =
                    u64::try_from(pass.expires - state.vigil.now().0 / 1_000_000).unwrap_or(0);
                html::with_cookie(
                    html::see_other("/visit"),
                    &crate::session::set_cookie(PASS_COOKIE, &v, Some(age)),
                )
            }
            Err(e) => {
                tracing::error!(error = %e, "guest pass");
                stopped(
                    "join-error",
                    "Something went wrong.",
                    StatusCode::INTERNAL_SERVER_ERROR,
                )
            }
        },
        Ok(CheckResult::Mismatch { attempts_left }) => {
            let msg = format!(
                "<p id=\"check-error\" class=\"error\" role=\"alert\">That did not match. {attempts_left} {} left.</p>\n",
                if attempts_left == 1 { "try" } else { "tries" }
            );
            guest_page(
                StatusCode::FORBIDDEN,
                "Video visit",
                &check_form(&token, &method, &msg),
                &[],
            )
        }
        Ok(CheckResult::Locked) => stopped(
            "check-locked",
            "This link is locked after too many wrong answers. Ask your clinic for a new one.",
            StatusCode::FORBIDDEN,
        ),
        Ok(CheckResult::Expired) => stopped(
            "join-expired",
            "This link has expired. Ask your clinic for a new one.",
            StatusCode::FORBIDDEN,
        ),
        Ok(CheckResult::Invalid) => stopped(
            "join-invalid",
            "This link is not valid.",
            StatusCode::FORBIDDEN,
        ),
        Err(e) => {
            tracing::error!(error = %e, "join check");
            stopped(
                "join-error",
                "Something went wrong.",
                StatusCode::INTERNAL_SERVER_ERROR,
            )
        }
    }
}

async fn guest_pass(state: &WebState, headers: &HeaderMap) -> Option<GuestPass> {
    let cookie = crate::session::cookie(headers, PASS_COOKIE)?;
    match state.vigil.consult_pass(&cookie).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "guest pass lookup");
            None
        }
    }
}

/// The patient's waiting room and call.
async fn visit_page(
    State(state): State<WebState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let Some(pass) = guest_pass(&state, &headers).await else {
        return stopped(
            "join-invalid",
            "Open the link from your invitation to join your visit.",
            StatusCode::FORBIDDEN,
        );
    };
    let relay = q
        .as_deref()
        .map(app::parse_query_string)
        .unwrap_or_default()
        .iter()
        .any(|(k, v)| k == "relay" && v == "1");
    let body = format!(
        "<section class=\"card consult\" id=\"consult\" data-room=\"{room}\" data-side=\"patient\" data-relay=\"{relay}\">\n\
<h2>Video visit</h2>\n\
<p id=\"visit-status\" data-state=\"connecting\" role=\"status\">Connecting…</p>\n\
<div class=\"call\">\n<video id=\"remote-video\" autoplay playsinline></video>\n\
<video id=\"local-video\" autoplay playsinline muted></video>\n</div>\n\
<p class=\"call-info\"><span id=\"call-path\" data-path=\"connecting\">connecting</span> · \
<span id=\"call-security\">Encrypted end to end between the browsers (DTLS-SRTP); no video passes through Vigil.</span></p>\n\
<p><button type=\"button\" id=\"leave\">Leave the visit</button></p>\n\
{chat}\n</section>",
        room = esc(&pass.room),
        relay = if relay { "1" } else { "0" },
        chat = chat_html(false),
    );
    guest_page(
        StatusCode::OK,
        "Video visit",
        &body,
        &["/static/consult.js"],
    )
}

async fn consult_js() -> Response {
    let mut r = (StatusCode::OK, include_str!("../assets/consult.js")).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    r
}

// ---- the signaling WebSocket ----

fn allowed_origins(state: &WebState, headers: &HeaderMap) -> Vec<String> {
    let configured = state.vigil.consult_allowed_origins();
    if configured.is_empty() {
        vec![crate::identity_pages::origin(state, headers)]
    } else {
        configured
    }
}

fn refuse(status: StatusCode, msg: &str) -> Response {
    (status, msg.to_owned()).into_response()
}

async fn ws(
    State(state): State<WebState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    upgrade: WebSocketUpgrade,
) -> Response {
    // The Origin first: a page on another site must not ride the cookies.
    let origins = allowed_origins(&state, &headers);
    let allowed: Vec<&str> = origins.iter().map(String::as_str).collect();
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if !signal::origin_allowed(origin, &allowed) {
        return refuse(StatusCode::FORBIDDEN, "origin not allowed");
    }
    let pairs = q
        .as_deref()
        .map(app::parse_query_string)
        .unwrap_or_default();
    let Some(room) = pairs
        .iter()
        .find(|(k, _)| k == "room")
        .map(|(_, v)| v.clone())
        .filter(|r| !r.is_empty() && r.len() <= 64)
    else {
        return refuse(StatusCode::BAD_REQUEST, "room missing");
    };
    // A guest pass for this room, else the clinician's session.
    let (member, who) = match guest_pass(&state, &headers).await {
        Some(pass) if pass.room == room => {
            let m = Member::Guest(pass);
            let who = state.vigil.consult_principal(&m, &room).await;
            (m, who)
        }
        _ => {
            let Some(cookie) = crate::session::session_cookie(&headers) else {
                return refuse(StatusCode::UNAUTHORIZED, "not admitted");
            };
            match state.vigil.session(&cookie).await {
                Ok(view) if is_clinician(&view) => (
                    Member::Clinician {
                        account: view.account.id.clone(),
                    },
                    principal(&view),
                ),
                _ => return refuse(StatusCode::FORBIDDEN, "not admitted"),
            }
        }
    };
    let conn = match state.vigil.consult_connect(&member, &room).await {
        Ok(c) => c,
        Err(e) => {
            return refuse(pages::status_of(&e), &pages::app_error_text(&e));
        }
    };
    let vigil = state.vigil.clone();
    let vigil_failed = state.vigil.clone();
    let (member_failed, room_failed, participant_failed, conn_no) = (
        member.clone(),
        conn.room.clone(),
        conn.participant.clone(),
        conn.conn,
    );
    let ctx = app::trail::detached_context();
    upgrade
        .max_message_size(signal::DEFAULT_MAX_FRAME_LEN)
        .on_failed_upgrade(move |_| {
            tokio::spawn(async move {
                let c =
                    app::telehealth::Connection::closed(room_failed, participant_failed, conn_no);
                vigil_failed.consult_disconnected(&c, &member_failed).await;
            });
        })
        .on_upgrade(move |socket| async move {
            app::trail::with_request(ctx, session(vigil, member, who, conn, socket)).await;
        })
}

async fn session(
    vigil: std::sync::Arc<app::Vigil>,
    member: Member,
    who: Principal,
    mut conn: app::telehealth::Connection,
    mut socket: WebSocket,
) {
    let mut ping = tokio::time::interval(std::time::Duration::from_secs(PING_SECS));
    ping.tick().await;
    let mut left = false;
    let mut chat = ChatBudget::new(std::time::Instant::now());
    loop {
        tokio::select! {
            out = conn.rx.recv() => {
                let Some(msg) = out else { break };
                let ended = matches!(msg, ServerMsg::Ended | ServerMsg::Denied);
                let Ok(text) = serde_json::to_string(&msg) else { continue };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
                if ended {
                    left = true;
                }
            }
            incoming = socket.recv() => {
                let Some(Ok(frame)) = incoming else { break };
                let bytes: Vec<u8> = match frame {
                    Message::Text(t) => t.as_str().as_bytes().to_vec(),
                    Message::Binary(_) => {
                        let _ = socket.send(error_frame("binary-not-accepted")).await;
                        continue;
                    }
                    Message::Close(_) => break,
                    Message::Ping(_) | Message::Pong(_) => continue,
                };
                match signal::parse_client(&bytes, signal::DEFAULT_MAX_FRAME_LEN) {
                    Ok(msg) => {
                        // Each chat message is a stored record and an audit
                        // entry: a participant may not flood them.
                        if matches!(msg, consult::signal::ClientMsg::Chat { .. })
                            && !chat.take(std::time::Instant::now())
                        {
                            let _ = socket.send(error_frame("rate-limited")).await;
                            continue;
                        }
                        let leave = matches!(msg, consult::signal::ClientMsg::Leave);
                        if let Err(e) = vigil.consult_message(&who, &conn, msg).await {
                            let code = match e {
                                AppError::Forbidden(_) => "forbidden",
                                AppError::NotFound(_) => "not-found",
                                AppError::Conflict(_) => "conflict",
                                _ => "error",
                            };
                            let _ = socket.send(error_frame(code)).await;
                        }
                        if leave {
                            left = true;
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = socket.send(error_frame(&format!("bad-message: {e}"))).await;
                    }
                }
            }
            _ = ping.tick() => {
                if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            }
        }
    }
    if !left {
        vigil.consult_disconnected(&conn, &member).await;
    } else {
        vigil.consult_closed(&conn);
    }
}

/// Chat messages a connection may send: a burst of [`ChatBudget::BURST`],
/// then [`ChatBudget::PER_SEC`] a second (a token bucket).
struct ChatBudget {
    tokens: f64,
    at: std::time::Instant,
}

impl ChatBudget {
    const BURST: f64 = 20.0;
    const PER_SEC: f64 = 2.0;

    fn new(now: std::time::Instant) -> ChatBudget {
        ChatBudget {
            tokens: Self::BURST,
            at: now,
        }
    }

    fn take(&mut self, now: std::time::Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * Self::PER_SEC).min(Self::BURST);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn error_frame(code: &str) -> Message {
    let text = serde_json::to_string(&ServerMsg::Error {
        code: code.to_owned(),
    })
    .unwrap_or_default();
    Message::Text(text.into())
}

// ---- lessons ----

async fn lesson_page(Path(id): Path<String>) -> Response {
    let (title, text) = match id.as_str() {
        "dlp-other-patient" => (
            "Another patient's identifier in a consultation",
            "<p>Vigil blocked your message because it holds an identifier — a phone number, e-mail \
address, medical record number, Social Security number, or a name with a birth date — that belongs \
to a <strong>different patient</strong> than the one in this consultation.</p>\
<p>Sharing one patient's details in another patient's visit is one of the most common ways patient \
data leaks during remote care: the wrong chart is open, a number is pasted from the last call, or a \
family member is mixed up.</p>\
<ul><li>Check that you have the right patient's chart open.</li>\
<li>If the detail really belongs in this visit (for example, the patient's family member is also a \
patient and the patient asked you to share it), send it anyway and say why: the reason goes to the \
audit trail for the privacy officer.</li>\
<li>The patient is never told whose identifier it was; neither is anyone else.</li></ul>",
        ),
        "dlp-structural" => (
            "Sensitive numbers in chat",
            "<p>The message holds something that looks like a Social Security number, a provider's NPI or \
DEA number, or a payment card number. These are flagged so you can think twice: chat is stored in the \
patient's record. Share such numbers only when the care needs them, and never card numbers.</p>",
        ),
        _ => {
            return pages::error_page(
                StatusCode::NOT_FOUND,
                None,
                "No such lesson",
                "There is no lesson here.",
            );
        }
    };
    html::html(
        StatusCode::OK,
        html::page(
            title,
            None,
            None,
            &[],
            &format!(
                "<section class=\"card\" id=\"lesson\">\n<h2>{}</h2>\n{text}\n</section>",
                esc(title)
            ),
        ),
    )
}

// ---- JSON API ----

type JsonResult = Result<Response, JsonError>;

fn room_json(r: &RoomView) -> Value {
    json!({
        "id": r.id,
        "appointment": r.appointment,
        "patient": r.patient,
        "status": r.status,
        "created": r.created.to_fhir_instant(),
        "consultStart": r.consult_start.map(Timestamp::to_fhir_instant),
        "consultEnd": r.consult_end.map(Timestamp::to_fhir_instant),
        "invites": r.invites.iter().map(|i| json!({
            "id": i.id,
            "method": i.method,
            "expires": i.expires.to_fhir_instant(),
            "failures": i.failures,
            "locked": i.locked,
            "verified": i.verified,
            "revoked": i.revoked,
        })).collect::<Vec<_>>(),
    })
}

async fn api_list(State(state): State<WebState>, headers: HeaderMap) -> JsonResult {
    let (who, _) = caller(&state, &headers).await?;
    let items = state.vigil.consult_list(&who).await?;
    let list: Vec<Value> = items
        .iter()
        .map(|i| {
            json!({
                "appointment": i.appointment,
                "patient": i.patient,
                "start": i.start.map(Timestamp::to_fhir_instant),
                "end": i.end.map(Timestamp::to_fhir_instant),
                "status": i.status,
                "room": i.room,
            })
        })
        .collect();
    Ok(reply(StatusCode::OK, &json!({ "appointments": list })))
}

async fn api_open(State(state): State<WebState>, headers: HeaderMap, body: Body) -> JsonResult {
    let (who, _) = caller(&state, &headers).await?;
    let v = crate::access_routes::body::<Value>(&headers, body, pages::FORM_LIMIT).await?;
    let appointment = v
        .get("appointment")
        .and_then(Value::as_str)
        .and_then(|a| ResourceId::new(a).ok())
        .ok_or_else(|| error(StatusCode::BAD_REQUEST, "appointment (an id) is required"))?;
    let room = state.vigil.consult_open(&who, &appointment).await?;
    Ok(reply(StatusCode::CREATED, &room_json(&room)))
}

async fn api_room(
    State(state): State<WebState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> JsonResult {
    let (who, _) = caller(&state, &headers).await?;
    let room = state.vigil.consult_room(&who, &id).await?;
    Ok(reply(StatusCode::OK, &room_json(&room)))
}

async fn api_invite(
    State(state): State<WebState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> JsonResult {
    let (who, _) = caller(&state, &headers).await?;
    let v = crate::access_routes::body::<Value>(&headers, body, pages::FORM_LIMIT).await?;
    let s = |k: &str, d: &str| v.get(k).and_then(Value::as_str).unwrap_or(d).to_owned();
    let invitee = Invitee::parse(&s("invitee", "patient")).ok_or_else(|| {
        error(
            StatusCode::BAD_REQUEST,
            "invitee is patient, interpreter or family",
        )
    })?;
    let req = InviteRequest {
        method: s("method", "dob"),
        channel: s("channel", "email"),
        to: s("to", ""),
        invitee,
    };
    let base = crate::identity_pages::origin(&state, &headers);
    let inv = state.vigil.consult_invite(&who, &id, &req, &base).await?;
    Ok(reply(
        StatusCode::CREATED,
        &json!({
            "id": inv.id,
            "method": inv.method,
            "expires": inv.expires.to_fhir_instant(),
            "code": inv.code,
        }),
    ))
}

// ---- files ----

/// What an upload sends: the body, its declared type and the `name` (and,
/// for a clinician overriding a block, the `reason`) from the query.
async fn upload_parts(
    headers: &HeaderMap,
    q: Option<&str>,
    body: Body,
    max: usize,
) -> Result<(String, String, Option<String>, Vec<u8>), JsonError> {
    let pairs = q.map(app::parse_query_string).unwrap_or_default();
    let get = |k: &str| pairs.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
    let name = get("name").unwrap_or_default();
    let reason = get("reason").filter(|r| !r.trim().is_empty());
    let mime = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let bytes = axum::body::to_bytes(body, max.saturating_add(1))
        .await
        .map_err(|_| {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("files are at most {max} bytes"),
            )
        })?;
    Ok((name, mime, reason, bytes.to_vec()))
}

async fn upload(
    state: &WebState,
    who: &Principal,
    member: &Member,
    room: &str,
    headers: &HeaderMap,
    q: Option<&str>,
    body: Body,
) -> JsonResult {
    let max = state.vigil.consult_config().max_file_bytes;
    let (name, mime, reason, bytes) = upload_parts(headers, q, body, max).await?;
    let outcome = state
        .vigil
        .consult_file(
            who,
            member,
            room,
            FileUpload {
                name: &name,
                mime: &mime,
                bytes: &bytes,
                override_reason: reason.as_deref(),
            },
        )
        .await?;
    Ok(match outcome {
        FileOutcome::Shared { id, flagged } => reply(
            StatusCode::CREATED,
            &json!({ "id": id, "flagged": flagged }),
        ),
        FileOutcome::Blocked { kinds } => reply(
            StatusCode::FORBIDDEN,
            &json!({
                "blocked": kinds,
                "lesson": "/learn/dlp-other-patient",
                "error": "the file holds another patient's identifier",
            }),
        ),
    })
}

fn download_response(name: &str, mime: &str, bytes: Vec<u8>) -> Response {
    let mut r = (StatusCode::OK, bytes).into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(mime) {
        h.insert(header::CONTENT_TYPE, v);
    }
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_ ".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{safe}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

/// The clinician's session with its CSRF header, for the room's API calls.
async fn clinician_api(
    state: &WebState,
    headers: &HeaderMap,
    csrf: bool,
) -> Result<SessionView, JsonError> {
    let cookie = crate::session::session_cookie(headers)
        .ok_or_else(|| error(StatusCode::UNAUTHORIZED, "sign in first"))?;
    let view = state
        .vigil
        .session(&cookie)
        .await
        .map_err(|_| error(StatusCode::UNAUTHORIZED, "sign in first"))?;
    if !is_clinician(&view) {
        return Err(error(StatusCode::FORBIDDEN, "clinicians only"));
    }
    if csrf {
        let token = headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !state.vigil.check_csrf(&cookie, token) {
            return Err(error(
                StatusCode::FORBIDDEN,
                "the CSRF token is missing or wrong",
            ));
        }
    }
    Ok(view)
}

async fn clinician_upload(
    State(state): State<WebState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Body,
) -> JsonResult {
    let view = clinician_api(&state, &headers, true).await?;
    let member = Member::Clinician {
        account: view.account.id.clone(),
    };
    upload(
        &state,
        &principal(&view),
        &member,
        &id,
        &headers,
        q.as_deref(),
        body,
    )
    .await
}

async fn clinician_download(
    State(state): State<WebState>,
    Path((id, doc)): Path<(String, String)>,
    headers: HeaderMap,
) -> JsonResult {
    let view = clinician_api(&state, &headers, false).await?;
    let member = Member::Clinician {
        account: view.account.id.clone(),
    };
    let (name, mime, bytes) = state
        .vigil
        .consult_file_read(&principal(&view), &member, &id, &doc)
        .await?;
    Ok(download_response(&name, &mime, bytes))
}

async fn guest_member(
    state: &WebState,
    headers: &HeaderMap,
) -> Result<(Member, Principal, String), JsonError> {
    let pass = guest_pass(state, headers).await.ok_or_else(|| {
        error(
            StatusCode::FORBIDDEN,
            "open the link from your invitation first",
        )
    })?;
    let room = pass.room.clone();
    let member = Member::Guest(pass);
    let who = state.vigil.consult_principal(&member, &room).await;
    Ok((member, who, room))
}

async fn guest_upload(
    State(state): State<WebState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Body,
) -> JsonResult {
    // The pass cookie is SameSite=Strict; a browser's Origin must be ours too.
    if !crate::identity_pages::same_origin(&state, &headers) {
        return Err(error(
            StatusCode::FORBIDDEN,
            "send files from the visit page",
        ));
    }
    let (member, who, room) = guest_member(&state, &headers).await?;
    upload(&state, &who, &member, &room, &headers, q.as_deref(), body).await
}

async fn guest_download(
    State(state): State<WebState>,
    Path(doc): Path<String>,
    headers: HeaderMap,
) -> JsonResult {
    let (member, who, room) = guest_member(&state, &headers).await?;
    let (name, mime, bytes) = state
        .vigil
        .consult_file_read(&who, &member, &room, &doc)
        .await?;
    Ok(download_response(&name, &mime, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_is_limited_to_a_burst_then_a_steady_rate() {
        let t0 = std::time::Instant::now();
        let mut b = ChatBudget::new(t0);
        for i in 0..20 {
            assert!(b.take(t0), "message {i} of the burst");
        }
        assert!(!b.take(t0), "the 21st at once is refused");
        let later = t0 + std::time::Duration::from_millis(500);
        assert!(b.take(later), "one more after half a second");
        assert!(!b.take(later));
        let much_later = t0 + std::time::Duration::from_secs(3600);
        for _ in 0..20 {
            assert!(b.take(much_later));
        }
        assert!(!b.take(much_later), "the burst never grows beyond 20");
    }
}
