//! The access policy's pages: a denial explains itself; clinicians search
//! and open charts (only what the policy allows, as the signed-in user) and
//! break the glass; the privacy officer reviews emergency grants, reads and
//! edits the policy, and asks "what if".
//!
//! Every form carries the session's CSRF token. Breaking the glass and
//! editing the policy need a recent sign-in, as managing users does: the
//! user is sent through `/signin?reauth=1` first.

use app::emergency::{BreakGlassRequest, GrantView, REVIEW_OUTCOMES};
use app::policy_admin::{PolicyView, WhatIf, WhatIfAnswer};
use app::{AppError, Principal, SessionView};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use model::{ResourceId, ResourceType, Timestamp};
use serde_json::Value;
use store::Role;

use crate::WebState;
use crate::html::{self, csrf_field, esc};
use crate::pages::{self, Form};

/// Grant lengths the form offers, in minutes (the default is 60).
const MINUTES: [u32; 5] = [15, 30, 60, 120, 240];
/// The chart's sections: heading, element id, type.
const SECTIONS: [(&str, &str, ResourceType); 5] = [
    ("Encounters", "encounters", ResourceType::Encounter),
    ("Problems", "problems", ResourceType::Condition),
    ("Observations", "observations", ResourceType::Observation),
    (
        "Medications",
        "medications",
        ResourceType::MedicationRequest,
    ),
    ("Notes", "notes", ResourceType::DocumentReference),
];
/// The largest policy form (the policy text is at most 256 KiB, encoded).
const POLICY_FORM_LIMIT: usize = 1024 * 1024;

pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/chart", get(chart_search))
        .route("/chart/{patient}", get(chart))
        .route("/chart/{patient}/export", get(chart_export))
        .route("/account/my-record", get(my_record))
        .route("/break-glass", get(my_grants))
        .route(
            "/break-glass/{patient}",
            get(break_glass_form).post(break_glass_post),
        )
        .route("/break-glass/grants/{id}/end", post(end_grant))
        .route("/admin/break-glass", get(review_queue))
        .route("/admin/break-glass/{id}/review", post(review))
        .route("/admin/policy", get(policy_page).post(policy_save))
        .route("/admin/policy/versions/{n}", get(policy_version))
        .route("/admin/policy/what-if", post(what_if))
}

fn principal(view: &SessionView) -> Principal {
    Principal::User(view.caller.clone())
}

fn is_clinician(view: &SessionView) -> bool {
    matches!(
        view.account.role,
        Role::Physician | Role::Nurse | Role::OtherClinical
    )
}

fn page(view: &SessionView, title: &str, body: &str, status: StatusCode) -> Response {
    html::html(
        status,
        html::page(title, Some(&pages::nav(view)), None, &[], body),
    )
}

/// `YYYY-MM-DD HH:MM UTC`.
fn when(t: Timestamp) -> String {
    let s = t.to_fhir_instant();
    match (s.get(..10), s.get(11..16)) {
        (Some(d), Some(hm)) => format!("{d} {hm} UTC"),
        _ => s,
    }
}

fn time_tag(t: Timestamp) -> String {
    format!(
        "<time datetime=\"{}\">{}</time>",
        esc(&t.to_fhir_instant()),
        esc(&when(t))
    )
}

fn flash(q: Option<&str>) -> String {
    let pairs = q.map(app::parse_query_string).unwrap_or_default();
    let msg = pairs
        .iter()
        .find_map(|(k, v)| match (k.as_str(), v.as_str()) {
            ("done", "ended") => Some("The emergency access was ended."),
            ("done", "reviewed") => Some("The review was recorded."),
            ("done", "saved") => Some("The new policy version is in force."),
            _ => None,
        });
    msg.map(|m| format!("<p id=\"flash\" class=\"flash\" role=\"status\">{m}</p>"))
        .unwrap_or_default()
}

/// The page that answers instead when the session is not one of `ok`.
fn refuse_unless(view: &SessionView, ok: fn(&SessionView) -> bool) -> Option<Response> {
    (!ok(view)).then(|| pages::forbidden_page(Some(&pages::nav(view))))
}

/// A page for the signed-in users `ok` admits: the session, or the sign-in
/// redirect (back to `here`) or the refusal page.
async fn signed_in_as(
    state: &WebState,
    headers: &HeaderMap,
    here: &str,
    ok: fn(&SessionView) -> bool,
) -> Result<SessionView, Response> {
    let view = pages::signed_in(state, headers, here).await?;
    match refuse_unless(&view, ok) {
        Some(r) => Err(r),
        None => Ok(view),
    }
}

fn is_officer(view: &SessionView) -> bool {
    view.account.role == Role::PrivacyOfficer
}

/// A signed-in form post: the session, the CSRF token and the form.
async fn session_form(
    state: &WebState,
    headers: &HeaderMap,
    body: Body,
    back: &str,
    limit: usize,
) -> Result<(SessionView, Form), Response> {
    let view = pages::signed_in(state, headers, back).await?;
    let form = pages::read_form(headers, body, limit).await.map_err(|_| {
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
    Ok((view, form))
}

/// Sends the user to sign in again (then back to `back`).
fn reauth(back: &str) -> Response {
    html::see_other(&format!(
        "/signin?reauth=1&next={}",
        pages::encode_component(back)
    ))
}

fn not_found(view: &SessionView, what: &str) -> Response {
    pages::error_page(
        StatusCode::NOT_FOUND,
        Some(&pages::nav(view)),
        "Not found",
        &format!("There is no {what} here."),
    )
}

// ---- Denials ----

/// "Access denied": the rule, the reason, what is missing, the way forward,
/// the lesson, and (when the rules allow it) the way to break the glass for
/// `patient`.
pub(crate) fn denial_page(
    view: &SessionView,
    d: &policy::Decision,
    patient: Option<&str>,
) -> Response {
    let rules: String = d
        .policies
        .iter()
        .map(|p| format!("<code class=\"rule\">{}</code>", esc(p)))
        .collect::<Vec<_>>()
        .join(", ");
    let missing = d.missing.as_deref().map_or_else(String::new, |m| {
        format!(
            "<p>What is missing: <span id=\"denial-missing\">{}</span></p>\n",
            esc(m)
        )
    });
    let way = d.way_forward.as_deref().map_or_else(String::new, |w| {
        format!(
            "<p>The way forward: <span id=\"denial-way-forward\">{}</span></p>\n",
            esc(w)
        )
    });
    let lesson = d.lesson.map_or_else(String::new, |l| {
        format!(
            "<p>Learn why: <a id=\"denial-lesson\" href=\"/learn/{id}\">{id}</a></p>\n",
            id = esc(l.as_str())
        )
    });
    let glass = if d.break_glass_possible && is_clinician(view) {
        let href = match patient {
            Some(p) => format!("/break-glass/{}", pages::encode_component(p)),
            None => "/break-glass".to_owned(),
        };
        format!(
            "<p>In an emergency you may break the glass: access is granted for a limited time, \
recorded, reviewed by the privacy officer and shown to the patient.</p>\n\
<p><a id=\"break-glass-link\" class=\"button\" href=\"{}\">Break the glass</a></p>\n",
            esc(&href)
        )
    } else {
        String::new()
    };
    let body = format!(
        "<section class=\"card\" id=\"denial\">\n<h2 id=\"denial-title\">Access denied</h2>\n\
<p>Decided by rule <span id=\"denial-rule\">{rules}</span> of the access policy.</p>\n\
<p id=\"denial-reason\">{reason}</p>\n{missing}{way}{lesson}{glass}\
<p><a href=\"/\">Back to Vigil</a></p>\n</section>",
        reason = esc(&d.reason),
    );
    page(view, "Access denied", &body, StatusCode::FORBIDDEN)
}

// ---- Charts ----

/// The text of a CodeableConcept: its text, else its first coding's display or code.
fn concept(v: &Value) -> String {
    let v = match v {
        Value::Array(a) => a.first().unwrap_or(&Value::Null),
        v => v,
    };
    if let Some(t) = v.get("text").and_then(Value::as_str) {
        return t.to_owned();
    }
    let coding = v
        .get("coding")
        .and_then(Value::as_array)
        .and_then(|c| c.first());
    coding
        .and_then(|c| {
            c.get("display")
                .or_else(|| c.get("code"))
                .and_then(Value::as_str)
        })
        .unwrap_or("")
        .to_owned()
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

/// A person's name as written (empty when the record has none).
fn human_name(p: &Value) -> String {
    fhir::human_name(p).unwrap_or_default()
}

/// What a resource is, in one line: its code or type, and its value.
fn what_of(t: ResourceType, r: &Value) -> String {
    match t {
        ResourceType::Encounter => {
            let ty = r.get("type").map(concept).unwrap_or_default();
            let class = str_at(r, &["class", "display"])
                .or_else(|| str_at(r, &["class", "code"]))
                .unwrap_or("");
            [class, ty.as_str()]
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(" — ")
        }
        ResourceType::Observation => {
            let code = r.get("code").map(concept).unwrap_or_default();
            let value = if let Some(q) = r.get("valueQuantity") {
                let n = q.get("value").map(Value::to_string).unwrap_or_default();
                let unit = q
                    .get("unit")
                    .or_else(|| q.get("code"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                format!("{n} {unit}").trim().to_owned()
            } else if let Some(s) = r.get("valueString").and_then(Value::as_str) {
                s.to_owned()
            } else {
                r.get("valueCodeableConcept")
                    .map(concept)
                    .unwrap_or_default()
            };
            if value.is_empty() {
                code
            } else {
                format!("{code}: {value}")
            }
        }
        ResourceType::MedicationRequest => r
            .get("medicationCodeableConcept")
            .map(concept)
            .or_else(|| str_at(r, &["medicationReference", "display"]).map(str::to_owned))
            .unwrap_or_default(),
        ResourceType::DocumentReference => {
            let ty = r.get("type").map(concept).unwrap_or_default();
            let desc = r.get("description").and_then(Value::as_str).unwrap_or("");
            [ty.as_str(), desc]
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(" — ")
        }
        _ => r.get("code").map(concept).unwrap_or_default(),
    }
}

/// A resource's clinical date, as written.
fn date_of(r: &Value) -> String {
    for path in [
        &["effectiveDateTime"][..],
        &["effectivePeriod", "start"],
        &["onsetDateTime"],
        &["recordedDate"],
        &["authoredOn"],
        &["date"],
        &["period", "start"],
        &["issued"],
    ] {
        if let Some(s) = str_at(r, path) {
            return s.to_owned();
        }
    }
    String::new()
}

fn status_of(r: &Value) -> String {
    str_at(r, &["status"])
        .map(str::to_owned)
        .or_else(|| r.get("clinicalStatus").map(concept))
        .unwrap_or_default()
}

async fn chart_search(
    State(state): State<WebState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let path = match &q {
        Some(q) => format!("/chart?{q}"),
        None => "/chart".to_owned(),
    };
    let view = match pages::signed_in(&state, &headers, &path).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let form = Form(
        q.as_deref()
            .map(app::parse_query_string)
            .unwrap_or_default(),
    );
    let mut pairs: Vec<(String, String)> = Vec::new();
    for k in ["name", "identifier", "birthdate"] {
        if let Some(v) = form.text(k) {
            pairs.push((k.to_owned(), v));
        }
    }
    let results = if pairs.is_empty() {
        String::new()
    } else {
        pairs.push(("_count".into(), "50".into()));
        match state
            .vigil
            .search(&principal(&view), ResourceType::Patient, &pairs)
            .await
        {
            Ok(found) if found.matches.is_empty() => {
                "<p id=\"chart-none\">No patient you may see matches.</p>".to_owned()
            }
            Ok(found) => {
                let rows: String = found
                    .matches
                    .iter()
                    .filter_map(|v| v.resource.as_ref().map(|r| (v, r)))
                    .map(|(v, r)| {
                        let id = v.id.as_str();
                        format!(
                            "<tr data-id=\"{id}\"><td class=\"name\"><a href=\"/chart/{href}\">{name}</a></td>\
<td class=\"birthdate\">{born}</td><td class=\"gender\">{gender}</td><td class=\"id\"><code>{id}</code></td></tr>\n",
                            id = esc(id),
                            href = esc(&pages::encode_component(id)),
                            name = esc(&human_name(r)),
                            born = esc(str_at(r, &["birthDate"]).unwrap_or("")),
                            gender = esc(str_at(r, &["gender"]).unwrap_or("")),
                        )
                    })
                    .collect();
                format!(
                    "<table id=\"chart-results\">\n<thead><tr><th>Name</th><th>Born</th><th>Gender</th><th>Id</th></tr></thead>\n<tbody>\n{rows}</tbody>\n</table>"
                )
            }
            Err(e) => html::error(Some(&pages::app_error_text(&e))),
        }
    };
    let value = |n: &str| esc(&form.text(n).unwrap_or_default());
    let body = format!(
        "<section class=\"card\">\n<h2 id=\"chart-title\">Find a patient</h2>\n\
<p>You see the patients you have a reason to see: your care teams, encounters and consultations. \
Every search is recorded.</p>\n\
<form id=\"chart-search\" method=\"get\" action=\"/chart\">\n\
<label for=\"chart-name\">Name</label><input id=\"chart-name\" name=\"name\" value=\"{name}\" autocomplete=\"off\">\n\
<label for=\"chart-identifier\">Identifier</label><input id=\"chart-identifier\" name=\"identifier\" value=\"{identifier}\" autocomplete=\"off\">\n\
<label for=\"chart-birthdate\">Born</label><input id=\"chart-birthdate\" name=\"birthdate\" type=\"date\" value=\"{birthdate}\">\n\
<button type=\"submit\" id=\"chart-search-submit\">Search</button>\n</form>\n{results}\n</section>",
        name = value("name"),
        identifier = value("identifier"),
        birthdate = value("birthdate"),
    );
    page(&view, "Find a patient", &body, StatusCode::OK)
}

async fn chart(
    State(state): State<WebState>,
    Path(patient): Path<String>,
    headers: HeaderMap,
) -> Response {
    let here = format!("/chart/{}", pages::encode_component(&patient));
    let view = match pages::signed_in(&state, &headers, &here).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Ok(id) = ResourceId::new(&patient) else {
        return not_found(&view, "such patient");
    };
    let who = principal(&view);
    let p = match state.vigil.read(&who, ResourceType::Patient, &id).await {
        Ok(v) => v,
        Err(AppError::Denied(d)) => return denial_page(&view, &d, Some(id.as_str())),
        Err(e) => return pages::app_error_page(&view, "Chart", &e),
    };
    let Some(p) = p.resource else {
        return not_found(&view, "such patient");
    };
    // A live emergency grant of this clinician for this patient: the banner.
    let banner = if is_clinician(&view) {
        match state.vigil.my_grants(&who).await {
            Ok(grants) => grants
                .iter()
                .find(|g| g.live && g.patient == id.as_str())
                .map(|g| {
                    format!(
                        "<p id=\"emergency-banner\" class=\"flash emergency\" role=\"status\">Emergency access until \
{until} (grant <code>{gid}</code>). Every access is recorded and reviewed. \
<a href=\"/break-glass\">End it when you are done</a>.</p>\n",
                        until = esc(&hhmm(g.expires)),
                        gid = esc(&g.id),
                    )
                })
                .unwrap_or_default(),
            Err(e) => html::error(Some(&pages::app_error_text(&e))),
        }
    } else {
        String::new()
    };
    let ident: String = p
        .get("identifier")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|i| i.get("value").and_then(Value::as_str))
                .map(esc)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let mut sections = String::new();
    let subject = vec![("patient".to_owned(), format!("Patient/{}", id.as_str()))];
    for (title, sid, t) in SECTIONS {
        let mut pairs = subject.clone();
        pairs.push(("_count".into(), "100".into()));
        let content = match state.vigil.search(&who, t, &pairs).await {
            Ok(found) if found.matches.is_empty() => {
                "<p class=\"empty\">Nothing recorded that you may see.</p>".to_owned()
            }
            Ok(found) => {
                let rows: String = found
                    .matches
                    .iter()
                    .filter_map(|v| v.resource.as_ref().map(|r| (v, r)))
                    .map(|(v, r)| {
                        format!(
                            "<tr data-id=\"{id}\"><td class=\"date\">{date}</td><td class=\"what\">{what}</td>\
<td class=\"status\">{status}</td><td class=\"id\"><code>{id}</code></td></tr>\n",
                            id = esc(v.id.as_str()),
                            date = esc(&date_of(r)),
                            what = esc(&what_of(t, r)),
                            status = esc(&status_of(r)),
                        )
                    })
                    .collect();
                format!(
                    "<table>\n<thead><tr><th>Date</th><th>What</th><th>Status</th><th>Id</th></tr></thead>\n<tbody>\n{rows}</tbody>\n</table>"
                )
            }
            Err(e) => html::error(Some(&pages::app_error_text(&e))),
        };
        sections.push_str(&format!(
            "<section class=\"card chart-section\" id=\"chart-{sid}\">\n<h3>{title}</h3>\n{content}\n</section>\n"
        ));
    }
    let body = format!(
        "{banner}<section class=\"card\" id=\"chart-demographics\">\n<h2 id=\"chart-patient-name\">{name}</h2>\n\
<p>Patient <code id=\"chart-patient-id\">{pid}</code>; born <span id=\"chart-birthdate\">{born}</span>; \
gender <span id=\"chart-gender\">{gender}</span>{ident}</p>\n\
<p><a id=\"chart-export\" class=\"button secondary\" href=\"/chart/{href}/export\">Export record</a> \
(a FHIR Bundle of what you may export; the export is recorded)</p>\n</section>\n{sections}",
        name = esc(&human_name(&p)),
        pid = esc(id.as_str()),
        href = esc(&pages::encode_component(id.as_str())),
        born = esc(str_at(&p, &["birthDate"]).unwrap_or("unknown")),
        gender = esc(str_at(&p, &["gender"]).unwrap_or("unknown")),
        ident = if ident.is_empty() {
            String::new()
        } else {
            format!("; identifiers <span id=\"chart-identifiers\">{ident}</span>")
        },
    );
    page(&view, "Chart", &body, StatusCode::OK)
}

// ---- Export ----

/// `/chart/{patient}/export`: the patient's record as the signed-in user may
/// export it (the same operation as `Patient/[id]/$everything`), as a file.
/// A GET whose only effect is its audit entry, so it carries no CSRF token;
/// the session cookie is `SameSite=Strict`, so another site cannot send it.
async fn chart_export(
    State(state): State<WebState>,
    Path(patient): Path<String>,
    headers: HeaderMap,
) -> Response {
    let here = format!("/chart/{}/export", pages::encode_component(&patient));
    let view = match pages::signed_in(&state, &headers, &here).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Ok(id) = ResourceId::new(&patient) else {
        return not_found(&view, "such patient");
    };
    download(&state, &headers, &view, &id).await
}

/// `/account/my-record`: a patient downloads their own record (rule P3).
async fn my_record(State(state): State<WebState>, headers: HeaderMap) -> Response {
    let view = match pages::signed_in(&state, &headers, "/account/my-record").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if view.account.role != Role::Patient {
        return pages::forbidden_page(Some(&pages::nav(&view)));
    }
    let Some(id) = view.caller.own_patient.clone() else {
        return not_found(&view, "record linked to your account");
    };
    download(&state, &headers, &view, &id).await
}

/// The export as an attachment named `patient-<id>-export.json`, or the
/// page that explains why not.
async fn download(
    state: &WebState,
    headers: &HeaderMap,
    view: &SessionView,
    id: &ResourceId,
) -> Response {
    match state.vigil.export_patient(&principal(view), id, &[]).await {
        Ok(export) => {
            let base = crate::fhir_routes::base_url(state, headers);
            let bundle = export.bundle(&base, &state.vigil.now().to_fhir_instant());
            let mut resp = crate::fhir_routes::fhir_json(StatusCode::OK, &bundle);
            // The id is `[A-Za-z0-9.-]{1,64}`: nothing to quote or escape.
            if let Ok(v) = HeaderValue::from_str(&format!(
                "attachment; filename=\"patient-{}-export.json\"",
                id.as_str()
            )) {
                resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
            }
            resp
        }
        Err(AppError::Denied(d)) => denial_page(view, &d, Some(id.as_str())),
        Err(e) => pages::app_error_page(view, "Export", &e),
    }
}

/// `HH:MM UTC`.
fn hhmm(t: Timestamp) -> String {
    let s = t.to_fhir_instant();
    match s.get(11..16) {
        Some(hm) => format!("{hm} UTC"),
        None => s,
    }
}

// ---- Break the glass ----

fn break_glass_page(
    view: &SessionView,
    patient: &str,
    error: Option<&str>,
    justification: &str,
    minutes: u32,
    status: StatusCode,
) -> Response {
    let options: String = MINUTES
        .iter()
        .map(|m| {
            format!(
                "<option value=\"{m}\"{sel}>{label}</option>",
                sel = if *m == minutes { " selected" } else { "" },
                label = if *m < 60 {
                    format!("{m} minutes")
                } else if *m == 60 {
                    "1 hour".to_owned()
                } else {
                    format!("{} hours", m / 60)
                },
            )
        })
        .collect();
    let body = format!(
        "<section class=\"card\" id=\"break-glass\">\n<h2 id=\"break-glass-title\">Break the glass</h2>\n\
<p>You have no care relationship with patient <code id=\"break-glass-patient\">{pid}</code>. \
In an emergency you may take access to their record for a limited time.</p>\n\
<ul id=\"break-glass-accountability\">\n<li>Every access you make is recorded with this grant.</li>\n\
<li>The privacy officer reviews every emergency access and your justification.</li>\n\
<li>The patient sees your accesses marked as emergency access in \"who accessed my record\".</li>\n</ul>\n\
{error}<form id=\"break-glass-form\" method=\"post\" action=\"/break-glass/{href}\">{csrf}\n\
<input type=\"hidden\" name=\"reason\" value=\"ETREAT\">\n\
<p>Reason: <strong id=\"break-glass-reason\">Emergency treatment</strong> (ETREAT)</p>\n\
<label for=\"break-glass-justification\">Justification (what is the emergency?)</label>\n\
<textarea id=\"break-glass-justification\" name=\"justification\" rows=\"4\" required minlength=\"10\" maxlength=\"2000\">{just}</textarea>\n\
<label for=\"break-glass-minutes\">For how long</label><select id=\"break-glass-minutes\" name=\"minutes\">{options}</select>\n\
<button type=\"submit\" id=\"break-glass-submit\">Break the glass</button>\n</form>\n</section>",
        pid = esc(patient),
        href = esc(&pages::encode_component(patient)),
        csrf = csrf_field(&view.csrf),
        error = html::error(error),
        just = esc(justification),
    );
    page(view, "Break the glass", &body, status)
}

async fn break_glass_form(
    State(state): State<WebState>,
    Path(patient): Path<String>,
    headers: HeaderMap,
) -> Response {
    let here = format!("/break-glass/{}", pages::encode_component(&patient));
    let view = match signed_in_as(&state, &headers, &here, is_clinician).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if ResourceId::new(&patient).is_err() {
        return not_found(&view, "such patient");
    }
    // Break-the-glass needs a recent sign-in: ask for it before the form.
    if !state.vigil.recently_signed_in(&view) {
        return reauth(&here);
    }
    break_glass_page(&view, &patient, None, "", 60, StatusCode::OK)
}

async fn break_glass_post(
    State(state): State<WebState>,
    Path(patient): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let here = format!("/break-glass/{}", pages::encode_component(&patient));
    let (view, form) = match session_form(&state, &headers, body, &here, pages::FORM_LIMIT).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if let Some(r) = refuse_unless(&view, is_clinician) {
        return r;
    }
    let Ok(id) = ResourceId::new(&patient) else {
        return not_found(&view, "such patient");
    };
    let fresh = state.vigil.recently_signed_in(&view);
    if !fresh {
        return reauth(&here);
    }
    let justification = form.get("justification").unwrap_or("").to_owned();
    let minutes = form
        .get("minutes")
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(60);
    let req = BreakGlassRequest {
        patient: id.clone(),
        reason: form.get("reason").unwrap_or("ETREAT").to_owned(),
        justification: justification.clone(),
        minutes: Some(minutes),
    };
    match state
        .vigil
        .break_glass(&principal(&view), &req, fresh)
        .await
    {
        Ok(_) => html::see_other(&format!("/chart/{}", pages::encode_component(id.as_str()))),
        Err(e) => break_glass_page(
            &view,
            id.as_str(),
            Some(&pages::app_error_text(&e)),
            &justification,
            minutes,
            pages::status_of(&e),
        ),
    }
}

fn grant_state(g: &GrantView) -> &'static str {
    if g.live {
        "live"
    } else if g.revoked.is_some() {
        "ended"
    } else {
        "expired"
    }
}

fn review_text(g: &GrantView) -> String {
    match &g.reviewed {
        Some(r) => format!("{} ({})", r.outcome, when(r.at)),
        None => format!("due {}", when(g.review_due)),
    }
}

async fn my_grants(
    State(state): State<WebState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let view = match signed_in_as(&state, &headers, "/break-glass", is_clinician).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let grants = match state.vigil.my_grants(&principal(&view)).await {
        Ok(g) => g,
        Err(e) => return pages::app_error_page(&view, "Emergency access", &e),
    };
    let csrf = csrf_field(&view.csrf);
    let rows: String = grants
        .iter()
        .map(|g| {
            let end = if g.live {
                format!(
                    "<form method=\"post\" action=\"/break-glass/grants/{gid}/end\" class=\"inline\">{csrf}\
<button type=\"submit\" class=\"end-grant secondary\">End now</button></form>",
                    gid = esc(&pages::encode_component(&g.id)),
                )
            } else {
                String::new()
            };
            format!(
                "<tr data-grant=\"{gid}\" class=\"grant {state}\"><td class=\"patient\"><a href=\"/chart/{href}\">{pid}</a></td>\
<td class=\"start\">{start}</td><td class=\"expires\">{expires}</td><td class=\"state\">{state}</td>\
<td class=\"justification\">{just}</td><td class=\"review\">{review}</td><td>{end}</td></tr>\n",
                gid = esc(&g.id),
                href = esc(&pages::encode_component(&g.patient)),
                pid = esc(&g.patient),
                start = time_tag(g.start),
                expires = time_tag(g.revoked.unwrap_or(g.expires)),
                state = grant_state(g),
                just = esc(&g.justification),
                review = esc(&review_text(g)),
            )
        })
        .collect();
    let empty = if grants.is_empty() {
        "<p id=\"grants-empty\">You have not broken the glass.</p>\n"
    } else {
        ""
    };
    let body = format!(
        "{flash}<section class=\"card\">\n<h2 id=\"grants-title\">Emergency access</h2>\n\
<p>Your break-the-glass grants, newest first. End a grant as soon as the emergency is over.</p>\n{empty}\
<table id=\"grants\">\n<thead><tr><th>Patient</th><th>Start</th><th>Ends</th><th>State</th><th>Justification</th>\
<th>Review</th><th></th></tr></thead>\n<tbody>\n{rows}</tbody>\n</table>\n</section>",
        flash = flash(q.as_deref()),
    );
    page(&view, "Emergency access", &body, StatusCode::OK)
}

async fn end_grant(
    State(state): State<WebState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (view, _form) =
        match session_form(&state, &headers, body, "/break-glass", pages::FORM_LIMIT).await {
            Ok(v) => v,
            Err(r) => return r,
        };
    match state.vigil.end_break_glass(&principal(&view), &id).await {
        Ok(()) if is_officer(&view) => html::see_other("/admin/break-glass?done=ended"),
        Ok(()) => html::see_other("/break-glass?done=ended"),
        Err(e) => pages::app_error_page(&view, "Emergency access", &e),
    }
}

// ---- The privacy officer's review queue ----

async fn review_queue(
    State(state): State<WebState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let view = match signed_in_as(&state, &headers, "/admin/break-glass", is_officer).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let grants = match state.vigil.grants_to_review(&principal(&view)).await {
        Ok(g) => g,
        Err(e) => return pages::app_error_page(&view, "Break-glass reviews", &e),
    };
    let csrf = csrf_field(&view.csrf);
    let outcomes: String = REVIEW_OUTCOMES
        .iter()
        .map(|o| format!("<option value=\"{o}\">{o}</option>", o = esc(o)))
        .collect();
    let rows: String = grants
        .iter()
        .map(|g| {
            let gid = esc(&g.id);
            let path = esc(&pages::encode_component(&g.id));
            let end = if g.live {
                format!(
                    "<form method=\"post\" action=\"/break-glass/grants/{path}/end\" class=\"inline\">{csrf}\
<button type=\"submit\" class=\"end-grant secondary\">End now</button></form>"
                )
            } else {
                String::new()
            };
            format!(
                "<tr data-grant=\"{gid}\" class=\"grant {state}\"><td class=\"who\"><code>{who}</code></td>\
<td class=\"patient\">{pid}</td><td class=\"start\">{start}</td><td class=\"expires\">{expires}</td>\
<td class=\"state\">{state}</td><td class=\"justification\">{just}</td><td class=\"due\">{due}</td>\
<td><form method=\"post\" action=\"/admin/break-glass/{path}/review\" class=\"review-form\">{csrf}\
<label for=\"outcome-{gid}\">Outcome</label><select id=\"outcome-{gid}\" name=\"outcome\" class=\"review-outcome\">{outcomes}</select>\
<label for=\"note-{gid}\">Note</label><textarea id=\"note-{gid}\" name=\"note\" class=\"review-note\" rows=\"2\" maxlength=\"2000\"></textarea>\
<button type=\"submit\" class=\"review-submit\">Record review</button></form>{end}</td></tr>\n",
                who = esc(&g.account),
                pid = esc(&g.patient),
                start = time_tag(g.start),
                expires = time_tag(g.revoked.unwrap_or(g.expires)),
                state = grant_state(g),
                just = esc(&g.justification),
                due = time_tag(g.review_due),
            )
        })
        .collect();
    let empty = if grants.is_empty() {
        "<p id=\"reviews-empty\">No emergency access waits for review.</p>\n"
    } else {
        ""
    };
    let body = format!(
        "{flash}<section class=\"card\">\n<h2 id=\"reviews-title\">Break-glass reviews</h2>\n\
<p>Every emergency access is reviewed: was it appropriate? The holder's accesses under a grant are in the \
<a href=\"/admin/audit\">audit trail</a> with purpose ETREAT.</p>\n{empty}\
<table id=\"review-queue\">\n<thead><tr><th>Account</th><th>Patient</th><th>Start</th><th>Ends</th><th>State</th>\
<th>Justification</th><th>Review due</th><th>Review</th></tr></thead>\n<tbody>\n{rows}</tbody>\n</table>\n</section>",
        flash = flash(q.as_deref()),
    );
    page(&view, "Break-glass reviews", &body, StatusCode::OK)
}

async fn review(
    State(state): State<WebState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (view, form) = match session_form(
        &state,
        &headers,
        body,
        "/admin/break-glass",
        pages::FORM_LIMIT,
    )
    .await
    {
        Ok(v) => v,
        Err(r) => return r,
    };
    if let Some(r) = refuse_unless(&view, is_officer) {
        return r;
    }
    let outcome = form.get("outcome").unwrap_or("");
    let note = form.get("note").unwrap_or("");
    match state
        .vigil
        .review_grant(&principal(&view), &id, outcome, note)
        .await
    {
        Ok(()) => html::see_other("/admin/break-glass?done=reviewed"),
        Err(e) => pages::app_error_page(&view, "Break-glass reviews", &e),
    }
}

// ---- The access policy ----

/// What the what-if form asked, to show it again.
#[derive(Default)]
struct WhatIfForm {
    username: String,
    action: String,
    resource: String,
    purpose: String,
}

fn decision_html(a: &WhatIfAnswer) -> String {
    let d = &a.decision;
    let opt = |id: &str, label: &str, v: Option<&str>| {
        v.map_or_else(String::new, |v| {
            format!("<p>{label}: <span id=\"{id}\">{}</span></p>\n", esc(v))
        })
    };
    let rels: Vec<&str> = d.relationships.iter().map(|r| r.as_str()).collect();
    format!(
        "<section class=\"card\" id=\"what-if-result\">\n<h3>Answer</h3>\n\
<p>Decision: <strong id=\"wi-decision\" class=\"{class}\">{decision}</strong> (role {role}, purpose {purpose})</p>\n\
<p>Rules: <span id=\"wi-rules\">{rules}</span></p>\n<p id=\"wi-reason\">{reason}</p>\n{missing}{way}{lesson}\
<p>Relationships that hold: <span id=\"wi-relationships\">{rels}</span></p>\n\
<p>Masked elements: <span id=\"wi-masks\">{masks}</span></p>\n</section>",
        class = if d.allow { "allow" } else { "deny" },
        decision = if d.allow { "Allow" } else { "Deny" },
        role = esc(&a.principal_role),
        purpose = esc(d.purpose.as_str()),
        rules = esc(&d.policies.join(", ")),
        reason = esc(&d.reason),
        missing = opt("wi-missing", "What is missing", d.missing.as_deref()),
        way = opt(
            "wi-way-forward",
            "The way forward",
            d.way_forward.as_deref()
        ),
        lesson = opt("wi-lesson", "Lesson", d.lesson.map(|l| l.as_str())),
        rels = if rels.is_empty() {
            "none".to_owned()
        } else {
            esc(&rels.join(", "))
        },
        masks = if d.masks.is_empty() {
            "none".to_owned()
        } else {
            esc(&d.masks.join(", "))
        },
    )
}

#[derive(Default)]
struct PolicyPageParts<'a> {
    flash: String,
    error: Option<String>,
    /// Text to show in the editor instead of the current one (a refused edit).
    text: Option<&'a str>,
    comment: &'a str,
    what_if: WhatIfForm,
    what_if_error: Option<String>,
    answer: Option<WhatIfAnswer>,
}

fn select(id: &str, name: &str, current: &str, options: &[(&str, &str)]) -> String {
    let opts: String = options
        .iter()
        .map(|(v, label)| {
            format!(
                "<option value=\"{v}\"{sel}>{label}</option>",
                v = esc(v),
                label = esc(label),
                sel = if *v == current { " selected" } else { "" }
            )
        })
        .collect();
    format!("<select id=\"{id}\" name=\"{name}\">{opts}</select>")
}

async fn render_policy(
    state: &WebState,
    view: &SessionView,
    parts: PolicyPageParts<'_>,
    status: StatusCode,
) -> Response {
    let who = principal(view);
    let current: PolicyView = match state.vigil.policy_current(&who).await {
        Ok(p) => p,
        Err(e) => return pages::app_error_page(view, "Access policy", &e),
    };
    let versions = match state.vigil.policy_versions(&who).await {
        Ok(v) => v,
        Err(e) => return pages::app_error_page(view, "Access policy", &e),
    };
    let rules: String = current
        .rules
        .iter()
        .map(|r| {
            format!(
                "<tr data-rule=\"{id}\"><td class=\"id\"><code>{id}</code></td><td class=\"effect\">{effect}</td>\
<td class=\"reason\">{reason}</td><td class=\"lesson\">{lesson}</td><td class=\"masks\">{masks}</td></tr>\n",
                id = esc(&r.id),
                effect = esc(&r.effect),
                reason = esc(&r.reason),
                lesson = esc(r.lesson.as_deref().unwrap_or("")),
                masks = esc(&r.masks.join(", ")),
            )
        })
        .collect();
    let version_rows: String = versions
        .iter()
        .map(|v| {
            format!(
                "<tr data-version=\"{n}\"><td><a href=\"/admin/policy/versions/{n}\">{n}</a></td><td>{created}</td>\
<td><code>{author}</code></td><td>{comment}</td></tr>\n",
                n = v.version,
                created = time_tag(v.created),
                author = esc(v.author.as_deref().unwrap_or("operator")),
                comment = esc(&v.comment),
            )
        })
        .collect();
    let csrf = csrf_field(&view.csrf);
    let actions: Vec<(&str, &str)> = policy::Action::ALL
        .iter()
        .map(|a| (a.as_str(), a.as_str()))
        .collect();
    let mut purposes: Vec<(&str, &str)> = vec![("", "the role's usual purpose")];
    purposes.extend(
        policy::Purpose::ALL
            .iter()
            .map(|p| (p.as_str(), p.as_str())),
    );
    let wi = &parts.what_if;
    let answer = parts.answer.as_ref().map(decision_html).unwrap_or_default();
    let body = format!(
        "{flash}<section class=\"card\">\n<h2 id=\"policy-title\">Access policy</h2>\n\
<p>Version <strong id=\"policy-version\">{version}</strong>{shipped}. Nothing is allowed unless a permit rule allows it; \
any forbid rule that applies wins.</p>\n\
<table id=\"policy-rules\">\n<thead><tr><th>Rule</th><th>Effect</th><th>Reason</th><th>Lesson</th><th>Masks</th></tr></thead>\n\
<tbody>\n{rules}</tbody>\n</table>\n</section>\n\
<section class=\"card\" id=\"what-if\">\n<h2>What if</h2>\n\
<p>Would this user be allowed this action on this record, and why? Decided exactly as a request would be; recorded in the audit trail.</p>\n\
{wi_error}<form id=\"what-if-form\" method=\"post\" action=\"/admin/policy/what-if\">{csrf}\n\
<label for=\"wi-username\">User name</label><input id=\"wi-username\" name=\"username\" value=\"{wi_user}\" required autocomplete=\"off\">\n\
<label for=\"wi-action\">Action</label>{wi_action}\n\
<label for=\"wi-resource\">Resource (Type/id)</label><input id=\"wi-resource\" name=\"resource\" value=\"{wi_resource}\" required autocomplete=\"off\" placeholder=\"Patient/123\">\n\
<label for=\"wi-purpose\">Purpose</label>{wi_purpose}\n\
<button type=\"submit\" id=\"wi-submit\">Ask</button>\n</form>\n</section>\n{answer}\n\
<section class=\"card\">\n<h2>Edit the policy</h2>\n\
<p>The text is Cedar, checked against the schema in strict mode before it takes effect; an invalid text changes nothing. \
Saving needs a recent sign-in.</p>\n{error}\
<form id=\"policy-form\" method=\"post\" action=\"/admin/policy\">{csrf}\n\
<label for=\"policy-text\">Policy text</label><textarea id=\"policy-text\" name=\"text\" rows=\"24\" spellcheck=\"false\">{text}</textarea>\n\
<label for=\"policy-comment\">What the change is for</label><input id=\"policy-comment\" name=\"comment\" value=\"{comment}\" required maxlength=\"500\" autocomplete=\"off\">\n\
<button type=\"submit\" id=\"policy-save\">Save a new version</button>\n</form>\n</section>\n\
<section class=\"card\">\n<h2>Versions</h2>\n{no_versions}\
<table id=\"policy-versions\">\n<thead><tr><th>Version</th><th>Saved</th><th>By</th><th>Comment</th></tr></thead>\n<tbody>\n{version_rows}</tbody>\n</table>\n</section>",
        flash = parts.flash,
        version = current.version,
        shipped = if current.version == 0 {
            " (the shipped default)"
        } else {
            ""
        },
        wi_error = html::error(parts.what_if_error.as_deref()),
        wi_user = esc(&wi.username),
        wi_action = select(
            "wi-action",
            "action",
            if wi.action.is_empty() {
                "read"
            } else {
                &wi.action
            },
            &actions
        ),
        wi_resource = esc(&wi.resource),
        wi_purpose = select("wi-purpose", "purpose", &wi.purpose, &purposes),
        error = html::error(parts.error.as_deref()),
        text = esc(parts.text.unwrap_or(&current.text)),
        comment = esc(parts.comment),
        no_versions = if versions.is_empty() {
            "<p id=\"policy-versions-empty\">No edits yet: the shipped default is in force.</p>\n"
        } else {
            ""
        },
    );
    page(view, "Access policy", &body, status)
}

async fn policy_page(
    State(state): State<WebState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let view = match signed_in_as(&state, &headers, "/admin/policy", is_officer).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let parts = PolicyPageParts {
        flash: flash(q.as_deref()),
        ..PolicyPageParts::default()
    };
    render_policy(&state, &view, parts, StatusCode::OK).await
}

async fn policy_save(State(state): State<WebState>, headers: HeaderMap, body: Body) -> Response {
    let (view, form) =
        match session_form(&state, &headers, body, "/admin/policy", POLICY_FORM_LIMIT).await {
            Ok(v) => v,
            Err(r) => return r,
        };
    if let Some(r) = refuse_unless(&view, is_officer) {
        return r;
    }
    // Policy edits are sensitive: they need a recent sign-in.
    let fresh = state.vigil.recently_signed_in(&view);
    if !fresh {
        return reauth("/admin/policy");
    }
    let text = form.get("text").unwrap_or("").to_owned();
    let comment = form.get("comment").unwrap_or("").to_owned();
    match state
        .vigil
        .policy_update(&principal(&view), &text, &comment, fresh)
        .await
    {
        Ok(_) => html::see_other("/admin/policy?done=saved"),
        Err(e) => {
            let parts = PolicyPageParts {
                error: Some(pages::app_error_text(&e)),
                text: Some(&text),
                comment: &comment,
                ..PolicyPageParts::default()
            };
            render_policy(&state, &view, parts, pages::status_of(&e)).await
        }
    }
}

async fn policy_version(
    State(state): State<WebState>,
    Path(n): Path<String>,
    headers: HeaderMap,
) -> Response {
    let here = format!("/admin/policy/versions/{}", pages::encode_component(&n));
    let view = match signed_in_as(&state, &headers, &here, is_officer).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Ok(n) = n.parse::<u64>() else {
        return not_found(&view, "such policy version");
    };
    let text = match state.vigil.policy_version_text(&principal(&view), n).await {
        Ok(t) => t,
        Err(e) => return pages::app_error_page(&view, "Policy version", &e),
    };
    let body = format!(
        "<section class=\"card\">\n<h2 id=\"policy-version-title\">Policy version {n}</h2>\n\
<pre id=\"policy-version-text\">{}</pre>\n<p><a href=\"/admin/policy\">Back to the access policy</a></p>\n</section>",
        esc(&text)
    );
    page(&view, "Policy version", &body, StatusCode::OK)
}

/// Reads a what-if question (the page's form and the JSON API share it).
pub(crate) fn what_if_question(
    username: &str,
    action: &str,
    resource: &str,
    purpose: Option<&str>,
    draft: Option<String>,
) -> Result<WhatIf, String> {
    let username = username.trim();
    if username.is_empty() {
        return Err("name the user".into());
    }
    let action = policy::Action::ALL
        .into_iter()
        .find(|a| a.as_str() == action.trim())
        .ok_or("the action is one of read, search, create, update, delete, export, share")?;
    let (t, id) = resource
        .trim()
        .split_once('/')
        .ok_or("the resource is Type/id, e.g. Patient/123")?;
    let rtype = ResourceType::parse(t).ok_or("the resource type is not one Vigil serves")?;
    let id = ResourceId::new(id).map_err(|_| "the resource id is not a valid id")?;
    let purpose = match purpose.map(str::trim).filter(|p| !p.is_empty()) {
        None => None,
        Some(p) => Some(
            policy::Purpose::parse(p)
                .ok_or("the purpose is one of TREAT, ETREAT, HPAYMT, HOPERAT, PATRQT")?,
        ),
    };
    Ok(WhatIf {
        username: username.to_owned(),
        action,
        rtype,
        id,
        purpose,
        draft,
    })
}

async fn what_if(State(state): State<WebState>, headers: HeaderMap, body: Body) -> Response {
    let (view, form) =
        match session_form(&state, &headers, body, "/admin/policy", pages::FORM_LIMIT).await {
            Ok(v) => v,
            Err(r) => return r,
        };
    if let Some(r) = refuse_unless(&view, is_officer) {
        return r;
    }
    let shown = WhatIfForm {
        username: form.get("username").unwrap_or("").to_owned(),
        action: form.get("action").unwrap_or("").to_owned(),
        resource: form.get("resource").unwrap_or("").to_owned(),
        purpose: form.get("purpose").unwrap_or("").to_owned(),
    };
    let q = match what_if_question(
        &shown.username,
        &shown.action,
        &shown.resource,
        Some(&shown.purpose),
        None,
    ) {
        Ok(q) => q,
        Err(m) => {
            let parts = PolicyPageParts {
                what_if: shown,
                what_if_error: Some(m),
                ..PolicyPageParts::default()
            };
            return render_policy(&state, &view, parts, StatusCode::UNPROCESSABLE_ENTITY).await;
        }
    };
    let (answer, error, status) = match state.vigil.policy_what_if(&principal(&view), &q).await {
        Ok(a) => (Some(a), None, StatusCode::OK),
        Err(e) => (None, Some(pages::app_error_text(&e)), pages::status_of(&e)),
    };
    let parts = PolicyPageParts {
        what_if: shown,
        what_if_error: error,
        answer,
        ..PolicyPageParts::default()
    };
    render_policy(&state, &view, parts, status).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use serde_json::json;

    #[test]
    fn chart_lines_show_codes_dates_and_values() {
        let obs = json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"code": "8867-4", "display": "Heart rate"}]},
            "effectiveDateTime": "2025-01-02T09:00:00Z",
            "valueQuantity": {"value": 72, "unit": "beats/minute"}});
        assert_eq!(
            what_of(ResourceType::Observation, &obs),
            "Heart rate: 72 beats/minute"
        );
        assert_eq!(date_of(&obs), "2025-01-02T09:00:00Z");
        assert_eq!(status_of(&obs), "final");
        let cond = json!({"resourceType": "Condition", "code": {"text": "Asthma"},
            "clinicalStatus": {"coding": [{"code": "active"}]}, "onsetDateTime": "2020"});
        assert_eq!(what_of(ResourceType::Condition, &cond), "Asthma");
        assert_eq!(status_of(&cond), "active");
        let p = json!({"name": [{"family": "Audit", "given": ["Pat", "Q"]}]});
        assert_eq!(human_name(&p), "Pat Q Audit");
    }

    #[test]
    fn what_if_questions_are_read_or_refused() {
        let q = what_if_question("dr.a", "read", "Patient/p1", Some("TREAT"), None).unwrap();
        assert_eq!(q.rtype, ResourceType::Patient);
        assert_eq!(q.purpose, Some(policy::Purpose::Treat));
        assert!(
            what_if_question("dr.a", "read", "Patient/p1", Some(""), None)
                .unwrap()
                .purpose
                .is_none()
        );
        assert!(what_if_question("", "read", "Patient/p1", None, None).is_err());
        assert!(what_if_question("dr.a", "peek", "Patient/p1", None, None).is_err());
        assert!(what_if_question("dr.a", "read", "Patient", None, None).is_err());
        assert!(what_if_question("dr.a", "read", "Nope/p1", None, None).is_err());
        assert!(what_if_question("dr.a", "read", "Patient/p1", Some("X"), None).is_err());
    }
}
