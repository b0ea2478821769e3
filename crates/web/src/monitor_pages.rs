//! Privacy monitoring for the privacy officer: the case queue
//! (`/admin/monitor`), a case's page with its alerts, the timeline of the
//! user's accesses with their explanations, the notes and the disposition
//! form (`/admin/monitor/{id}`), and the same as JSON for other tools
//! (`/api/monitor/cases…`).
//!
//! Every form carries the session's CSRF token; the JSON API takes a bearer
//! token or the session cookie with `X-CSRF-Token`, as the access policy's
//! API does. Reading the queue or a case and recording a decision are
//! audited by `app::monitoring`. A decision carries the case's `updated`
//! time as the officer saw it: when the case changed since (another officer,
//! or a new alert), the decision is refused with 409 and nothing changes.

use std::collections::HashMap;

use app::monitoring::{
    AlertView, CaseSummary, CaseView, Disposition, Explained, MAX_NOTE, STATUSES, TimelineItem,
};
use app::{AppError, Principal, SessionView};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use model::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};
use store::Role;

use crate::WebState;
use crate::access_routes::{JsonError, caller, error, reply};
use crate::html::{self, csrf_field, esc};
use crate::pages::{self, Form};

/// The largest disposition form or JSON body: a note of `MAX_NOTE`
/// characters, percent-encoded or JSON-escaped, fits.
const DECIDE_LIMIT: usize = 64 * 1024;
/// Most cases the queue shows.
const QUEUE_LIMIT: u32 = app::monitoring::MAX_CASES;

pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/admin/monitor", get(queue_page))
        .route("/admin/monitor/{id}", get(case_page).post(decide_page))
        .route("/api/monitor/cases", get(api_cases))
        .route("/api/monitor/cases/{id}", get(api_case).post(api_decide))
}

fn principal(view: &SessionView) -> Principal {
    Principal::User(view.caller.clone())
}

fn is_officer(view: &SessionView) -> bool {
    view.account.role == Role::PrivacyOfficer
}

fn page(view: &SessionView, title: &str, body: &str, status: StatusCode) -> Response {
    html::html(
        status,
        html::page(title, Some(&pages::nav(view)), None, &[], body),
    )
}

/// `YYYY-MM-DD HH:MM:SS UTC` in a `<time>` element.
fn time_tag(t: Timestamp) -> String {
    let s = t.to_fhir_instant();
    let shown = match (s.get(..10), s.get(11..19)) {
        (Some(d), Some(hms)) => format!("{d} {hms} UTC"),
        _ => s.clone(),
    };
    format!("<time datetime=\"{}\">{}</time>", esc(&s), esc(&shown))
}

/// A case status in words.
fn status_text(s: &str) -> &str {
    match s {
        "open" => "open",
        "follow_up" => "needs follow-up",
        "appropriate" => "appropriate",
        "inappropriate" => "inappropriate",
        other => other,
    }
}

/// An alert kind in words.
fn kind_text(k: &str) -> &str {
    match k {
        "self" => "self-access",
        "family" => "family",
        "coworker" => "co-worker",
        "neighbour" => "neighbour",
        "vip" => "VIP or restricted record",
        "deceased" => "deceased patient",
        "volume" => "unusual volume",
        "after_hours" => "out-of-pattern hours",
        "terminated" => "inactive account",
        "break_glass" => "break-the-glass without a clinical event",
        "outside_consult" => "outside a consultation window",
        "unexplained" => "unexplained",
        other => other,
    }
}

fn score_text(s: f64) -> String {
    format!("{s:.2}")
}

/// The queue's status filter: the statuses shown, and the select's value.
/// The default shows the cases still to work on (open, then follow-up).
fn queue_filter(q: Option<&str>) -> (Option<&'static str>, &'static str) {
    let pairs = q.map(app::parse_query_string).unwrap_or_default();
    let want = pairs
        .iter()
        .find(|(k, _)| k == "status")
        .map_or("", |(_, v)| v.as_str());
    match STATUSES.iter().find(|s| **s == want) {
        Some(s) => (Some(*s), *s),
        None if want == "all" => (None, "all"),
        None => (None, "active"),
    }
}

fn is_active(c: &CaseSummary) -> bool {
    matches!(c.status.as_str(), "open" | "follow_up")
}

fn flash(q: Option<&str>) -> String {
    let pairs = q.map(app::parse_query_string).unwrap_or_default();
    let saved = pairs.iter().any(|(k, v)| k == "done" && v == "saved");
    if saved {
        "<p id=\"flash\" class=\"flash\" role=\"status\">The decision was recorded.</p>\n".into()
    } else {
        String::new()
    }
}

fn case_path(id: &str) -> String {
    format!("/admin/monitor/{}", pages::encode_component(id))
}

// ---- The queue ----

async fn queue_page(
    State(state): State<WebState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let here = match &q {
        Some(q) => format!("/admin/monitor?{q}"),
        None => "/admin/monitor".to_owned(),
    };
    let view = match pages::signed_in(&state, &headers, &here).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if !is_officer(&view) {
        return pages::forbidden_page(Some(&pages::nav(&view)));
    }
    let (status, selected) = queue_filter(q.as_deref());
    let who = principal(&view);
    // The default view asks for each status still to work on, so that closed
    // cases never crowd open ones out of a listing's limit.
    let asked: Vec<Option<&str>> = if selected == "active" {
        vec![Some("open"), Some("follow_up")]
    } else {
        vec![status]
    };
    let mut cases = Vec::new();
    for s in asked {
        match state.vigil.monitor_cases(&who, s, QUEUE_LIMIT).await {
            Ok(c) => cases.extend(c),
            Err(e) => return pages::app_error_page(&view, "Monitoring", &e),
        }
    }
    // Highest risk first, cases still to work on before closed ones.
    cases.sort_by(|a, b| b.score.total_cmp(&a.score));
    cases.sort_by_key(|c| !is_active(c));
    let officers: HashMap<String, String> = match state.vigil.monitor_officers(&who).await {
        Ok(o) => o.into_iter().collect(),
        Err(e) => return pages::app_error_page(&view, "Monitoring", &e),
    };
    let rows: String = cases
        .iter()
        .map(|c| {
            let assignee = c
                .assignee
                .as_ref()
                .map(|a| officers.get(a).unwrap_or(a))
                .map_or_else(|| "—".to_owned(), |a| esc(a));
            let kinds: Vec<&str> = c.kinds.iter().map(|k| kind_text(k)).collect();
            format!(
                "<tr data-case=\"{id}\" class=\"case {status}\"><td class=\"score\">{score}</td>\
<td class=\"user\">{name}{role}</td><td class=\"kinds\">{kinds}</td><td class=\"alerts\">{alerts}</td>\
<td class=\"patients\">{patients}</td><td class=\"status\">{status_text}</td><td class=\"opened\">{opened}</td>\
<td class=\"updated\">{updated}</td><td class=\"assignee\">{assignee}</td>\
<td><a class=\"open-case\" href=\"{href}\">Open case</a></td></tr>\n",
                id = esc(&c.id),
                status = esc(&c.status),
                status_text = esc(status_text(&c.status)),
                score = score_text(c.score),
                name = esc(&c.user_name),
                role = c
                    .user_role
                    .as_ref()
                    .map(|r| format!(" <span class=\"role\">({})</span>", esc(r)))
                    .unwrap_or_default(),
                kinds = esc(&kinds.join(", ")),
                alerts = c.alerts,
                patients = c.patients,
                opened = time_tag(c.opened),
                updated = time_tag(c.updated),
                href = esc(&case_path(&c.id)),
            )
        })
        .collect();
    let mut options = vec![("active", "open and follow-up".to_owned())];
    options.extend(STATUSES.iter().map(|s| (*s, status_text(s).to_owned())));
    options.push(("all", "all".to_owned()));
    let options: String = options
        .iter()
        .map(|(v, label)| {
            format!(
                "<option value=\"{v}\"{sel}>{label}</option>",
                v = esc(v),
                label = esc(label),
                sel = if *v == selected { " selected" } else { "" }
            )
        })
        .collect();
    let empty = if cases.is_empty() {
        "<p id=\"queue-empty\">No cases with this status.</p>\n"
    } else {
        ""
    };
    let body = format!(
        "<section class=\"card\">\n<h2 id=\"monitor-title\">Monitoring</h2>\n\
<p>Accesses to patient records that nothing explains, or that match a pattern of snooping, become alerts; \
each user's alerts form a case, highest risk first. Opening a case is recorded in the audit trail.</p>\n\
<form id=\"queue-filter\" method=\"get\" action=\"/admin/monitor\">\n\
<label for=\"queue-status\">Status</label><select id=\"queue-status\" name=\"status\">{options}</select>\n\
<button type=\"submit\" id=\"queue-submit\">Show</button>\n</form>\n</section>\n\
<section class=\"card\">\n{empty}<table id=\"case-queue\">\n<thead><tr><th>Risk</th><th>User</th><th>Alert kinds</th>\
<th>Alerts</th><th>Patients</th><th>Status</th><th>Opened</th><th>Updated</th><th>Assignee</th><th></th></tr></thead>\n\
<tbody>\n{rows}</tbody>\n</table>\n</section>"
    );
    page(&view, "Monitoring", &body, StatusCode::OK)
}

// ---- A case ----

fn explanation_html(e: Option<&Explained>) -> String {
    match e {
        Some(x) => format!(
            "<span class=\"explanation\" data-code=\"{code}\">{text}</span> \
<span class=\"strength strength-{strength}\">({strength})</span>",
            code = esc(&x.code),
            text = esc(&x.text),
            strength = esc(&x.strength),
        ),
        None => "<span class=\"explanation pending\">not yet explained</span>".into(),
    }
}

fn alert_row(a: &AlertView, names: &HashMap<&str, String>) -> String {
    let patients: Vec<String> = a
        .patients
        .iter()
        .map(|p| match names.get(p.as_str()) {
            Some(n) => format!("{} ({})", esc(n), esc(p)),
            None => esc(p),
        })
        .collect();
    let kinds: Vec<&str> = a.kinds.iter().map(|k| kind_text(k)).collect();
    format!(
        "<tr data-alert=\"{id}\"><td class=\"kind\">{kind}</td><td class=\"score\">{score}</td>\
<td class=\"reason\">{reason}</td><td class=\"also\">{kinds}</td><td class=\"patients\">{patients}</td>\
<td class=\"created\">{created}</td></tr>\n",
        id = esc(&a.id),
        kind = esc(kind_text(&a.kind)),
        score = score_text(a.score),
        reason = esc(&a.reason),
        kinds = esc(&kinds.join(", ")),
        patients = patients.join(", "),
        created = time_tag(a.created),
    )
}

fn timeline_row(t: &TimelineItem) -> String {
    let patient = match &t.patient_name {
        Some(n) => format!("{} <code>{}</code>", esc(n), esc(&t.patient)),
        None => format!("<code>{}</code>", esc(&t.patient)),
    };
    format!(
        "<tr data-index=\"{i}\"{class}><td class=\"when\">{when}</td><td class=\"patient\">{patient}</td>\
<td class=\"what\">{what}</td><td class=\"outcome\">{outcome}</td><td class=\"why\">{why}</td></tr>\n",
        i = t.index,
        class = if t.alerted { " class=\"alerted\"" } else { "" },
        when = time_tag(t.when),
        what = esc(&t.what),
        outcome = if t.succeeded {
            "success"
        } else {
            "refused or failed"
        },
        why = explanation_html(t.explanation.as_ref()),
    )
}

fn select(id: &str, name: &str, current: &str, options: &[(String, String)]) -> String {
    let opts: String = options
        .iter()
        .map(|(v, label)| {
            format!(
                "<option value=\"{v}\"{sel}>{label}</option>",
                v = esc(v),
                label = esc(label),
                sel = if v == current { " selected" } else { "" }
            )
        })
        .collect();
    format!("<select id=\"{id}\" name=\"{name}\">{opts}</select>")
}

fn case_body(
    view: &SessionView,
    c: &CaseView,
    officers: &[(String, String)],
    flash: &str,
) -> String {
    let s = &c.summary;
    let officer_name: HashMap<&str, &str> = officers
        .iter()
        .map(|(id, n)| (id.as_str(), n.as_str()))
        .collect();
    let mut names: HashMap<&str, String> = HashMap::new();
    for t in &c.timeline {
        if let Some(n) = &t.patient_name {
            names.insert(t.patient.as_str(), n.clone());
        }
    }
    let alerts: String = c.alerts.iter().map(|a| alert_row(a, &names)).collect();
    let timeline: String = c.timeline.iter().map(timeline_row).collect();
    let notes: String = c
        .notes
        .iter()
        .map(|n| {
            format!(
                "<li data-note=\"{seq}\"><span class=\"author\">{author}</span>, {at}: <span class=\"note-text\">{text}</span></li>\n",
                seq = n.seq,
                author = esc(officer_name.get(n.author.as_str()).copied().unwrap_or(&n.author)),
                at = time_tag(n.at),
                text = esc(&n.text),
            )
        })
        .collect();
    let notes = if notes.is_empty() {
        "<p id=\"case-notes-empty\">No notes yet.</p>\n<ul id=\"case-notes\"></ul>".to_owned()
    } else {
        format!("<ul id=\"case-notes\">\n{notes}</ul>")
    };
    let statuses: Vec<(String, String)> = STATUSES
        .iter()
        .map(|s| ((*s).to_owned(), status_text(s).to_owned()))
        .collect();
    let mut assignees = vec![(String::new(), "— unassigned —".to_owned())];
    assignees.extend(officers.iter().cloned());
    let assignee = s.assignee.clone().unwrap_or_default();
    let assignee_name = s
        .assignee
        .as_deref()
        .map(|a| officer_name.get(a).copied().unwrap_or(a))
        .unwrap_or("nobody");
    let kinds: Vec<&str> = s.kinds.iter().map(|k| kind_text(k)).collect();
    format!(
        "{flash}<section class=\"card\">\n<h2 id=\"case-title\">Case: {name}</h2>\n\
<dl id=\"case-summary\" data-case=\"{id}\">\n\
<dt>User</dt><dd id=\"case-user\">{name}{role} <code>{user}</code></dd>\n\
<dt>Status</dt><dd id=\"case-status-now\" data-status=\"{status}\">{status_text}</dd>\n\
<dt>Risk</dt><dd id=\"case-score\">{score}</dd>\n\
<dt>Alerts</dt><dd id=\"case-alert-count\">{count} ({kinds})</dd>\n\
<dt>Patients</dt><dd id=\"case-patient-count\">{patients}</dd>\n\
<dt>Opened</dt><dd>{opened}</dd>\n<dt>Updated</dt><dd id=\"case-updated\">{updated}</dd>\n\
<dt>Assignee</dt><dd id=\"case-assignee-now\">{assignee_name}</dd>\n</dl>\n\
<p><a href=\"/admin/monitor\">Back to the queue</a></p>\n</section>\n\
<section class=\"card\">\n<h3>Alerts</h3>\n<table id=\"case-alerts\">\n<thead><tr><th>Kind</th><th>Score</th><th>Reason</th>\
<th>Also</th><th>Patients</th><th>Raised</th></tr></thead>\n<tbody>\n{alerts}</tbody>\n</table>\n</section>\n\
<section class=\"card\">\n<h3>Timeline</h3>\n<p>The user's accesses to the patients of this case, oldest first, \
with how monitoring explains each; accesses named by an alert are highlighted.</p>\n\
<table id=\"case-timeline\">\n<thead><tr><th>When</th><th>Patient</th><th>What</th><th>Outcome</th><th>Explanation</th></tr></thead>\n\
<tbody>\n{timeline}</tbody>\n</table>\n</section>\n\
<section class=\"card\">\n<h3>Notes</h3>\n{notes}\n</section>\n\
<section class=\"card\">\n<h3>Decision</h3>\n\
<form id=\"case-decide\" method=\"post\" action=\"{action}\">{csrf}\
<input type=\"hidden\" name=\"expected_updated\" value=\"{expected}\">\n\
<label for=\"case-status\">Status</label>{status_select}\n\
<label for=\"case-assignee\">Assignee</label>{assignee_select}\n\
<label for=\"case-note\">Note</label><textarea id=\"case-note\" name=\"note\" rows=\"4\" maxlength=\"{max}\"></textarea>\n\
<label class=\"check\"><input type=\"checkbox\" id=\"case-suppress\" name=\"suppress\" value=\"1\"> \
Confirm this pattern as legitimate (suppress future alerts of it); only with the status appropriate</label>\n\
<button type=\"submit\" id=\"case-submit\">Record decision</button>\n</form>\n</section>",
        id = esc(&s.id),
        name = esc(&s.user_name),
        role = s
            .user_role
            .as_ref()
            .map(|r| format!(" <span class=\"role\">({})</span>", esc(r)))
            .unwrap_or_default(),
        user = esc(&s.user),
        status = esc(&s.status),
        status_text = esc(status_text(&s.status)),
        score = score_text(s.score),
        count = s.alerts,
        kinds = esc(&kinds.join(", ")),
        patients = s.patients,
        opened = time_tag(s.opened),
        updated = time_tag(s.updated),
        assignee_name = esc(assignee_name),
        action = esc(&case_path(&s.id)),
        csrf = csrf_field(&view.csrf),
        expected = s.updated.0,
        status_select = select("case-status", "status", &s.status, &statuses),
        assignee_select = select("case-assignee", "assignee", &assignee, &assignees),
        max = MAX_NOTE,
    )
}

async fn case_page(
    State(state): State<WebState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let view = match pages::signed_in(&state, &headers, &case_path(&id)).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if !is_officer(&view) {
        return pages::forbidden_page(Some(&pages::nav(&view)));
    }
    let who = principal(&view);
    let case = match state.vigil.monitor_case(&who, &id).await {
        Ok(c) => c,
        Err(e) => return pages::app_error_page(&view, "Monitoring case", &e),
    };
    let officers = match state.vigil.monitor_officers(&who).await {
        Ok(o) => o,
        Err(e) => return pages::app_error_page(&view, "Monitoring case", &e),
    };
    let body = case_body(&view, &case, &officers, &flash(q.as_deref()));
    page(&view, "Monitoring case", &body, StatusCode::OK)
}

/// A disposition from the form's fields, or what is wrong with them.
fn disposition_of(form: &Form) -> Result<Disposition, &'static str> {
    let expected = form
        .get("expected_updated")
        .and_then(|v| v.trim().parse::<i64>().ok())
        .ok_or("the form is missing the case's version; reload the case")?;
    Ok(Disposition {
        expected_updated: Timestamp(expected),
        status: form.get("status").unwrap_or("").to_owned(),
        assignee: form.text("assignee"),
        note: form.text("note"),
        suppress: form.get("suppress").is_some_and(|v| !v.is_empty()),
    })
}

async fn decide_page(
    State(state): State<WebState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let back = case_path(&id);
    let view = match pages::signed_in(&state, &headers, &back).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let nav = pages::nav(&view);
    let form = match pages::read_form(&headers, body, DECIDE_LIMIT).await {
        Ok(f) => f,
        Err(_) => {
            return pages::error_page(
                StatusCode::BAD_REQUEST,
                Some(&nav),
                "Form not readable",
                "The form could not be read; reload the page and try again.",
            );
        }
    };
    if !pages::csrf_ok(&state, &headers, &form) || !is_officer(&view) {
        return pages::forbidden_page(Some(&nav));
    }
    let d = match disposition_of(&form) {
        Ok(d) => d,
        Err(msg) => {
            return pages::error_page(StatusCode::BAD_REQUEST, Some(&nav), "Monitoring case", msg);
        }
    };
    match state.vigil.monitor_decide(&principal(&view), &id, &d).await {
        Ok(()) => html::see_other(&format!("{back}?done=saved")),
        Err(AppError::Conflict(_)) => {
            let body = format!(
                "<section class=\"card\">\n<h2 id=\"error-title\">The case changed</h2>\n\
<p class=\"error\" role=\"alert\" id=\"case-conflict\">The case changed since you opened it (a new alert, or another officer's decision): \
nothing was recorded. Reload the case, check what changed, and decide again.</p>\n\
<p><a id=\"case-reload\" class=\"button\" href=\"{href}\">Reload the case</a></p>\n</section>",
                href = esc(&back),
            );
            page(&view, "The case changed", &body, StatusCode::CONFLICT)
        }
        Err(e) => pages::app_error_page(&view, "Monitoring case", &e),
    }
}

// ---- JSON ----

fn summary_json(c: &CaseSummary) -> Value {
    json!({
        "id": c.id,
        "status": c.status,
        "score": c.score,
        "assignee": c.assignee,
        "opened": c.opened.to_fhir_instant(),
        "updated": c.updated.to_fhir_instant(),
        // What a decision sends back as `expected_updated`.
        "updated_micros": c.updated.0,
        "alerts": c.alerts,
        "user": c.user,
        "user_name": c.user_name,
        "user_role": c.user_role,
        "kinds": c.kinds,
        "patients": c.patients,
    })
}

fn explained_json(e: &Explained) -> Value {
    json!({"code": e.code, "strength": e.strength, "text": e.text})
}

fn case_json(c: &CaseView) -> Value {
    let alerts: Vec<Value> = c
        .alerts
        .iter()
        .map(|a| {
            json!({
                "id": a.id, "kind": a.kind, "kinds": a.kinds, "score": a.score,
                "created": a.created.to_fhir_instant(), "reason": a.reason,
                "patients": a.patients, "events": a.events,
            })
        })
        .collect();
    let timeline: Vec<Value> = c
        .timeline
        .iter()
        .map(|t| {
            json!({
                "index": t.index, "when": t.when.to_fhir_instant(), "patient": t.patient,
                "patient_name": t.patient_name, "what": t.what, "succeeded": t.succeeded,
                "explanation": t.explanation.as_ref().map(explained_json), "alerted": t.alerted,
            })
        })
        .collect();
    let notes: Vec<Value> = c
        .notes
        .iter()
        .map(|n| json!({"seq": n.seq, "author": n.author, "at": n.at.to_fhir_instant(), "text": n.text}))
        .collect();
    json!({
        "case": summary_json(&c.summary),
        "alerts": alerts,
        "timeline": timeline,
        "notes": notes,
    })
}

type JsonResult = Result<Response, JsonError>;

async fn api_cases(
    State(state): State<WebState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> JsonResult {
    let (who, _) = caller(&state, &headers).await?;
    let pairs = q
        .as_deref()
        .map(app::parse_query_string)
        .unwrap_or_default();
    let status = match pairs
        .iter()
        .find(|(k, _)| k == "status")
        .map(|(_, v)| v.as_str())
    {
        None | Some("" | "all") => None,
        Some(s) => Some(STATUSES.iter().copied().find(|x| *x == s).ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                &format!("status must be all or one of {}", STATUSES.join(", ")),
            )
        })?),
    };
    let cases = state.vigil.monitor_cases(&who, status, QUEUE_LIMIT).await?;
    let list: Vec<Value> = cases.iter().map(summary_json).collect();
    Ok(reply(StatusCode::OK, &json!({ "cases": list })))
}

async fn api_case(
    State(state): State<WebState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> JsonResult {
    let (who, _) = caller(&state, &headers).await?;
    let c = state.vigil.monitor_case(&who, &id).await?;
    Ok(reply(StatusCode::OK, &case_json(&c)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecideBody {
    /// The case's `updated_micros` as last read.
    expected_updated: i64,
    status: String,
    assignee: Option<String>,
    note: Option<String>,
    #[serde(default)]
    suppress: bool,
}

async fn api_decide(
    State(state): State<WebState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    b: Body,
) -> JsonResult {
    let (who, _) = caller(&state, &headers).await?;
    let d: DecideBody = crate::access_routes::body(&headers, b, DECIDE_LIMIT).await?;
    let note = d.note.filter(|n| !n.trim().is_empty());
    state
        .vigil
        .monitor_decide(
            &who,
            &id,
            &Disposition {
                expected_updated: Timestamp(d.expected_updated),
                status: d.status,
                assignee: d.assignee.filter(|a| !a.is_empty()),
                note,
                suppress: d.suppress,
            },
        )
        .await?;
    let c = state.vigil.monitor_case(&who, &id).await?;
    Ok(reply(StatusCode::OK, &case_json(&c)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic, reason = "tests")]

    use super::*;

    #[test]
    fn the_queue_filter_defaults_to_cases_to_work_on() {
        assert_eq!(queue_filter(None), (None, "active"));
        assert_eq!(queue_filter(Some("status=all")), (None, "all"));
        assert_eq!(
            queue_filter(Some("status=follow_up")),
            (Some("follow_up"), "follow_up")
        );
        assert_eq!(queue_filter(Some("status=%3Cx%3E")), (None, "active"));
    }

    #[test]
    fn a_disposition_form_needs_the_case_version() {
        let f = Form(app::parse_query_string(
            "expected_updated=17&status=appropriate&assignee=&note=+ok+&suppress=1",
        ));
        let d = disposition_of(&f).unwrap_or_else(|m| panic!("{m}"));
        assert_eq!(d.expected_updated, Timestamp(17));
        assert_eq!(d.assignee, None);
        assert_eq!(d.note.as_deref(), Some("ok"));
        assert!(d.suppress);
        assert!(disposition_of(&Form(app::parse_query_string("status=open"))).is_err());
    }
}
