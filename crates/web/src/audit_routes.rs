//! The audit trail over HTTP: `AuditEvent` search and read for privacy
//! officers, the public read-only log (C2SP tlog-tiles: checkpoint, keys,
//! tiles, entry bundles, proofs), the privacy officer's audit page and a
//! patient's "who accessed my record" page.
//!
//! The public endpoints show only what anyone may verify: sealed entry
//! bytes, hashes, signed checkpoints and public keys.

use app::audit::tiles::{TilePath, parse_tile_path};
use app::trail_views::{AccessLine, AuditFilter, MAX_AUDIT_PAGE};
use app::{AppError, Principal, SessionView};
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use fhir::IssueCode;
use model::Timestamp;
use serde_json::{Value, json};
use store::Role;

use crate::WebState;
use crate::fhir_routes::{ApiError, base_url, fhir_json, principal};
use crate::html::{self, esc};
use crate::pages;

/// Default page size of an `AuditEvent` search.
const DEFAULT_COUNT: usize = 50;
/// The search parameters `GET /fhir/AuditEvent` understands.
pub(crate) const SEARCH_PARAMS: &[(&str, &str, &str)] = &[
    (
        "patient",
        "reference",
        "Entries that touched this patient (Patient/id or id).",
    ),
    (
        "agent",
        "token",
        "Entries by this Vigil account id (optionally urn:vigil:account|id).",
    ),
    ("action", "token", "C, R, U, D or E."),
    ("outcome", "token", "0, 4, 8 or 12."),
    (
        "subtype",
        "token",
        "The interaction or event, e.g. read, search-type, login.",
    ),
    (
        "date",
        "date",
        "Day precision with ge, gt, le or lt (e.g. date=ge2025-01-01&date=lt2025-02-01).",
    ),
    (
        "before",
        "number",
        "Paging: entries with a smaller index (next links).",
    ),
];

pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/fhir/AuditEvent", get(search))
        .route("/fhir/AuditEvent/{index}", get(read))
        .route("/audit/checkpoint", get(checkpoint))
        .route("/audit/keys", get(keys))
        .route("/audit/tile/{*path}", get(tile))
        .route("/audit/proof/inclusion", get(inclusion))
        .route("/audit/proof/consistency", get(consistency))
        .route("/admin/audit", get(audit_page))
        .route("/account/access-log", get(access_log_page))
}

fn bad(code: IssueCode, msg: &str) -> ApiError {
    ApiError(AppError::bad_request(code, msg.to_owned()))
}

fn pairs(q: Option<&str>) -> Vec<(String, String)> {
    q.map(app::parse_query_string).unwrap_or_default()
}

/// Midnight UTC of a `YYYY-MM-DD` day.
fn day(s: &str) -> Option<Timestamp> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    let d = time::Date::parse(s, &fmt).ok()?;
    Some(Timestamp::from_offset_datetime(d.midnight().assume_utc()))
}

const DAY_MICROS: i64 = 86_400_000_000;

/// Narrows `f` by one `date` value (`geYYYY-MM-DD` …).
fn date_bound(f: &mut AuditFilter, v: &str) -> Result<(), String> {
    let (prefix, rest) = v.split_at_checked(2).unwrap_or(("", v));
    let (prefix, d) = match prefix {
        "ge" | "gt" | "le" | "lt" | "eq" => (prefix, rest),
        _ => ("eq", v),
    };
    let t = day(d).ok_or("date must be a day (YYYY-MM-DD) with ge, gt, le, lt or eq")?;
    let next = Timestamp(t.0.saturating_add(DAY_MICROS));
    let later = |a: Option<Timestamp>, b: Timestamp| Some(a.map_or(b, |a| a.max(b)));
    let earlier = |a: Option<Timestamp>, b: Timestamp| Some(a.map_or(b, |a| a.min(b)));
    match prefix {
        "ge" => f.from = later(f.from, t),
        "gt" => f.from = later(f.from, next),
        "lt" => f.to = earlier(f.to, t),
        "le" => f.to = earlier(f.to, next),
        _ => {
            f.from = later(f.from, t);
            f.to = earlier(f.to, next);
        }
    }
    Ok(())
}

/// The filter of an `AuditEvent` search; unsupported parameters are refused.
fn filter_of(pairs: &[(String, String)]) -> Result<AuditFilter, ApiError> {
    let mut f = AuditFilter {
        limit: DEFAULT_COUNT,
        ..AuditFilter::default()
    };
    let mut seen: Vec<&str> = Vec::new();
    for (k, v) in pairs {
        let once = !matches!(k.as_str(), "date");
        if once && seen.contains(&k.as_str()) {
            return Err(bad(
                IssueCode::NotSupported,
                &format!("the parameter {k} may occur once"),
            ));
        }
        seen.push(k);
        let v = v.trim();
        match k.as_str() {
            "patient" => {
                f.patient = Some(v.strip_prefix("Patient/").unwrap_or(v).to_owned());
            }
            "agent" => {
                let id = v
                    .strip_prefix(app::trail_fhir::ACCOUNT_SYSTEM)
                    .and_then(|r| r.strip_prefix('|'))
                    .unwrap_or(v);
                f.agent = Some(id.to_owned());
            }
            "action" => {
                if !matches!(v, "C" | "R" | "U" | "D" | "E") {
                    return Err(bad(IssueCode::Invalid, "action must be C, R, U, D or E"));
                }
                f.action = Some(v.to_owned());
            }
            "outcome" => {
                if !matches!(v, "0" | "4" | "8" | "12") {
                    return Err(bad(IssueCode::Invalid, "outcome must be 0, 4, 8 or 12"));
                }
                f.outcome = Some(v.to_owned());
            }
            "subtype" => {
                let code = v.rsplit('|').next().unwrap_or(v);
                f.subtype = Some(code.to_owned());
            }
            "date" => date_bound(&mut f, v).map_err(|m| bad(IssueCode::Invalid, &m))?,
            "_count" => {
                f.limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_AUDIT_PAGE).contains(n))
                    .ok_or_else(|| {
                        bad(
                            IssueCode::Invalid,
                            &format!("_count must be between 1 and {MAX_AUDIT_PAGE}"),
                        )
                    })?;
            }
            "before" => {
                f.before = Some(
                    v.parse::<u64>()
                        .map_err(|_| bad(IssueCode::Invalid, "before must be an entry index"))?,
                );
            }
            "_format" if matches!(v, "json" | "application/json" | "application/fhir+json") => {}
            _ => {
                return Err(bad(
                    IssueCode::NotSupported,
                    &format!(
                        "the AuditEvent search parameter {} is not supported; see /fhir/metadata",
                        if k.len() <= 40
                            && k.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"_-:.".contains(&b))
                        {
                            k.as_str()
                        } else {
                            "(invalid)"
                        }
                    ),
                ));
            }
        }
    }
    Ok(f)
}

fn query_string(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                pages::encode_component(k),
                pages::encode_component(v)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

async fn search(
    State(state): State<WebState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let who = principal(&state, &headers).await?;
    let pairs = pairs(q.as_deref());
    let f = filter_of(&pairs)?;
    let found = state.vigil.audit_search(&who, &f).await?;
    let base = base_url(&state, &headers);
    let entries: Vec<Value> = found
        .iter()
        .map(|(i, e)| {
            json!({
                "fullUrl": format!("{base}/AuditEvent/{i}"),
                "resource": app::trail_fhir::audit_event(*i, e, true, &base),
                "search": {"mode": "match"}
            })
        })
        .collect();
    let kept: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| k != "before" && k != "_format")
        .cloned()
        .collect();
    let mut links = vec![
        json!({"relation": "self", "url": format!("{base}/AuditEvent?{}", query_string(&pairs))}),
    ];
    if found.len() >= f.limit
        && let Some(min) = found.iter().map(|(i, _)| *i).min()
        && min > 0
    {
        let mut next = kept.clone();
        next.push(("before".into(), min.to_string()));
        links.push(json!({"relation": "next", "url": format!("{base}/AuditEvent?{}", query_string(&next))}));
    }
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "timestamp": state.vigil.now().to_fhir_instant(),
        "link": links,
        "entry": entries
    });
    Ok(fhir_json(StatusCode::OK, &bundle))
}

async fn read(
    State(state): State<WebState>,
    Path(index): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let who = principal(&state, &headers).await?;
    let not_found = || ApiError(AppError::NotFound("no such AuditEvent".into()));
    let index: u64 = index.parse().map_err(|_| not_found())?;
    let f = AuditFilter {
        before: Some(index.checked_add(1).ok_or_else(not_found)?),
        limit: 1,
        ..AuditFilter::default()
    };
    let found = state.vigil.audit_search(&who, &f).await?;
    let (i, e) = found
        .into_iter()
        .find(|(i, _)| *i == index)
        .ok_or_else(not_found)?;
    let base = base_url(&state, &headers);
    Ok(fhir_json(
        StatusCode::OK,
        &app::trail_fhir::audit_event(i, &e, true, &base),
    ))
}

// ---- The public log ----

fn with_type(mut r: Response, ctype: &'static str) -> Response {
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

fn text(body: String) -> Response {
    with_type(
        (StatusCode::OK, body).into_response(),
        "text/plain; charset=utf-8",
    )
}

fn plain_error(status: StatusCode, msg: &'static str) -> Response {
    with_type((status, msg).into_response(), "text/plain; charset=utf-8")
}

fn server_error(e: &AppError) -> Response {
    if e.status() >= 500 {
        tracing::error!(error = %e, detail = ?e, "audit log request failed");
        return plain_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the server could not answer\n",
        );
    }
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    with_type(
        (status, format!("{}\n", pages::app_error_text(e))).into_response(),
        "text/plain; charset=utf-8",
    )
}

async fn checkpoint(State(state): State<WebState>) -> Response {
    match state.vigil.audit_checkpoint().await {
        Ok(Some(c)) => text(c),
        Ok(None) => plain_error(StatusCode::NOT_FOUND, "the log is empty\n"),
        Err(e) => server_error(&e),
    }
}

async fn keys(State(state): State<WebState>) -> Response {
    let mut out = String::new();
    for k in state.vigil.audit_verifier_keys() {
        out.push_str(&k);
        out.push('\n');
    }
    text(out)
}

fn octets(bytes: Vec<u8>, immutable: bool) -> Response {
    let mut r = with_type(
        (StatusCode::OK, bytes).into_response(),
        "application/octet-stream",
    );
    if immutable {
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=31536000, immutable"),
        );
    }
    r
}

async fn tile(State(state): State<WebState>, Path(path): Path<String>) -> Response {
    let not_found = || plain_error(StatusCode::NOT_FOUND, "no such tile\n");
    match parse_tile_path(&format!("tile/{path}")) {
        Ok(TilePath::Hashes(id)) => {
            match state.vigil.audit_tile(id.level, id.index, id.width).await {
                Ok(Some(bytes)) => octets(bytes, id.is_full()),
                Ok(None) => not_found(),
                Err(e) => server_error(&e),
            }
        }
        Ok(TilePath::Entries(id)) => {
            let Some(from) = id.index.checked_mul(256) else {
                return not_found();
            };
            let width = usize::from(id.width);
            let rows = match state.vigil.audit_raw_entries(from, width).await {
                Ok(r) => r,
                Err(e) => return server_error(&e),
            };
            let complete =
                rows.len() == width && rows.iter().zip(from..).all(|((idx, _), want)| *idx == want);
            if !complete {
                return not_found();
            }
            match app::audit::tiles::entry_bundle(rows.iter().map(|(_, b)| b.as_slice())) {
                Ok(b) => octets(b, id.is_full()),
                Err(e) => {
                    tracing::error!(error = %e, "audit entry bundle");
                    plain_error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the server could not answer\n",
                    )
                }
            }
        }
        Err(_) => not_found(),
    }
}

fn b64(h: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(h)
}

fn number(pairs: &[(String, String)], name: &str) -> Result<Option<u64>, ApiError> {
    match pairs.iter().find(|(k, _)| k == name) {
        None => Ok(None),
        Some((_, v)) => v
            .parse()
            .map(Some)
            .map_err(|_| bad(IssueCode::Invalid, &format!("{name} must be a number"))),
    }
}

/// The latest checkpoint, opened (its size and the signed note).
async fn latest(state: &WebState) -> Result<(u64, String), ApiError> {
    let note = state
        .vigil
        .audit_checkpoint()
        .await?
        .ok_or_else(|| ApiError(AppError::NotFound("the log is empty".into())))?;
    let c = app::audit::open_checkpoint(&note, state.vigil.audit_core().verifiers())
        .map_err(|e| ApiError(AppError::Integrity(format!("latest checkpoint: {e}"))))?;
    Ok((c.size, note))
}

/// The signed checkpoint of `size`: the latest, or one kept in the history.
async fn checkpoint_of(
    state: &WebState,
    size: u64,
    latest: (u64, String),
) -> Result<Value, ApiError> {
    if size == latest.0 {
        return Ok(Value::String(latest.1));
    }
    let kept = state.vigil.audit_checkpoints(size, 1).await?;
    Ok(kept
        .into_iter()
        .find(|(s, _)| *s == size)
        .map_or(Value::Null, |(_, n)| Value::String(n)))
}

fn json_response(v: &Value) -> Response {
    with_type(
        (StatusCode::OK, serde_json::to_vec(v).unwrap_or_default()).into_response(),
        "application/json",
    )
}

async fn inclusion(
    State(state): State<WebState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let pairs = pairs(q.as_deref());
    let index =
        number(&pairs, "index")?.ok_or_else(|| bad(IssueCode::Required, "index is required"))?;
    let head = latest(&state).await?;
    let size = number(&pairs, "size")?.unwrap_or(head.0);
    if index >= size {
        return Err(bad(IssueCode::Invalid, "index must be smaller than size"));
    }
    let proof = state.vigil.audit_inclusion_proof(index, size).await?;
    let entry = state.vigil.audit_raw_entries(index, 1).await?;
    let leaf = entry
        .first()
        .filter(|(i, _)| *i == index)
        .map(|(_, b)| app::audit::leaf_hash(b))
        .ok_or_else(|| {
            ApiError(AppError::Integrity(format!(
                "audit entry {index} is missing"
            )))
        })?;
    let checkpoint = checkpoint_of(&state, size, head).await?;
    Ok(json_response(&json!({
        "index": index,
        "size": size,
        "leaf_hash": b64(&leaf),
        "proof": proof.iter().map(|h| b64(h)).collect::<Vec<_>>(),
        "checkpoint": checkpoint
    })))
}

async fn consistency(
    State(state): State<WebState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let pairs = pairs(q.as_deref());
    let old = number(&pairs, "old")?.ok_or_else(|| bad(IssueCode::Required, "old is required"))?;
    let head = latest(&state).await?;
    let new = number(&pairs, "new")?.unwrap_or(head.0);
    if old == 0 || old > new {
        return Err(bad(IssueCode::Invalid, "old must be between 1 and new"));
    }
    let proof = state.vigil.audit_consistency_proof(old, new).await?;
    let checkpoint = checkpoint_of(&state, new, head).await?;
    Ok(json_response(&json!({
        "old": old,
        "new": new,
        "proof": proof.iter().map(|h| b64(h)).collect::<Vec<_>>(),
        "checkpoint": checkpoint
    })))
}

// ---- Pages ----

fn when(t: Timestamp) -> String {
    let s = t.to_fhir_instant();
    match (s.get(..10), s.get(11..19)) {
        (Some(d), Some(hms)) => format!("{d} {hms} UTC"),
        _ => s,
    }
}

fn page(view: &SessionView, title: &str, body: &str) -> Response {
    html::html(
        StatusCode::OK,
        html::page(title, Some(&pages::nav(view)), None, &[], body),
    )
}

fn outcome_text(o: u8) -> &'static str {
    match o {
        0 => "success",
        4 => "minor failure",
        8 => "serious failure",
        _ => "major failure",
    }
}

fn select(name: &str, current: Option<&str>, options: &[(&str, &str)]) -> String {
    let opts: String = options
        .iter()
        .map(|(v, label)| {
            format!(
                "<option value=\"{v}\"{sel}>{label}</option>",
                v = esc(v),
                label = esc(label),
                sel = if current == Some(*v) { " selected" } else { "" }
            )
        })
        .collect();
    format!("<select id=\"audit-{name}\" name=\"{name}\">{opts}</select>")
}

async fn audit_page(
    State(state): State<WebState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let path = match &q {
        Some(q) => format!("/admin/audit?{q}"),
        None => "/admin/audit".to_owned(),
    };
    let view = match pages::signed_in(&state, &headers, &path).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if view.account.role != Role::PrivacyOfficer {
        return pages::forbidden_page(Some(&pages::nav(&view)));
    }
    let form = pages::Form(pairs(q.as_deref()));
    let field = |n: &str| form.text(n);
    let mut f = AuditFilter {
        patient: field("patient").map(|p| p.strip_prefix("Patient/").unwrap_or(&p).to_owned()),
        agent: field("agent"),
        action: field("action"),
        outcome: field("outcome"),
        limit: 100,
        ..AuditFilter::default()
    };
    let mut problem = None;
    if let Some(d) = field("from") {
        match day(&d) {
            Some(t) => f.from = Some(t),
            None => problem = Some("the from date must be a day (YYYY-MM-DD)"),
        }
    }
    if let Some(d) = field("to") {
        // Inclusive: entries up to the end of that day.
        match day(&d) {
            Some(t) => f.to = Some(Timestamp(t.0.saturating_add(DAY_MICROS))),
            None => problem = Some("the to date must be a day (YYYY-MM-DD)"),
        }
    }
    if let Some(b) = field("before") {
        f.before = b.parse().ok();
    }
    let found = if problem.is_some() {
        Vec::new()
    } else {
        match state
            .vigil
            .audit_search(&Principal::User(view.caller.clone()), &f)
            .await
        {
            Ok(x) => x,
            Err(e) => return pages::app_error_page(&view, "Audit trail", &e),
        }
    };
    let rows: String = found
        .iter()
        .map(|(i, e)| {
            let agent = match (&e.agent.account, &e.agent.client) {
                (Some(a), Some(c)) => format!("{} (via app {})", esc(a), esc(c)),
                (Some(a), None) => esc(a),
                (None, Some(c)) => format!("app {}", esc(c)),
                (None, None) => esc(&e.agent.via),
            };
            format!(
                "<tr data-index=\"{i}\"><td class=\"index\">{i}</td><td class=\"time\"><time datetime=\"{iso}\">{t}</time></td>\
<td class=\"agent\">{agent}</td><td class=\"role\">{role}</td><td class=\"action\">{action}</td><td class=\"subtype\">{sub}</td>\
<td class=\"outcome\">{out}</td><td class=\"patients\">{pats}</td><td class=\"query\">{query}</td></tr>\n",
                iso = esc(&Timestamp(e.recorded).to_fhir_instant()),
                t = esc(&when(Timestamp(e.recorded))),
                role = esc(e.agent.role.as_deref().unwrap_or("")),
                action = esc(e.action.as_str()),
                sub = esc(&e.subtype),
                out = match &e.outcome_desc {
                    Some(d) => format!("{} ({})", outcome_text(e.outcome), esc(d)),
                    None => outcome_text(e.outcome).to_owned(),
                },
                pats = esc(&e.patients.join(", ")),
                query = e.query.as_deref().map(|q| format!("<code>{}</code>", esc(q))).unwrap_or_default(),
            )
        })
        .collect();
    let older = match found.iter().map(|(i, _)| *i).min() {
        Some(min) if found.len() >= f.limit && min > 0 => {
            let mut kept: Vec<(String, String)> = form
                .0
                .iter()
                .filter(|(k, _)| k != "before")
                .cloned()
                .collect();
            kept.push(("before".into(), min.to_string()));
            format!(
                "<p><a id=\"audit-older\" href=\"/admin/audit?{}\">Older entries</a></p>",
                esc(&query_string(&kept))
            )
        }
        _ => String::new(),
    };
    let value = |n: &str| esc(&field(n).unwrap_or_default());
    let body = format!(
        "<section class=\"card\">\n<h2 id=\"audit-title\">Audit trail</h2>\n\
<p>Every access to patient data and every security event, newest first. Your searches are recorded too.</p>\n\
{error}<form id=\"audit-filter\" method=\"get\" action=\"/admin/audit\">\n\
<label for=\"audit-patient\">Patient id</label><input id=\"audit-patient\" name=\"patient\" value=\"{patient}\" autocomplete=\"off\">\n\
<label for=\"audit-agent\">Agent account id</label><input id=\"audit-agent\" name=\"agent\" value=\"{agent}\" autocomplete=\"off\">\n\
<label for=\"audit-action\">Action</label>{action}\n\
<label for=\"audit-outcome\">Outcome</label>{outcome}\n\
<label for=\"audit-from\">From</label><input id=\"audit-from\" name=\"from\" type=\"date\" value=\"{from}\">\n\
<label for=\"audit-to\">To</label><input id=\"audit-to\" name=\"to\" type=\"date\" value=\"{to}\">\n\
<button type=\"submit\" id=\"audit-submit\">Search</button>\n</form>\n</section>\n\
<section class=\"card\">\n<table id=\"audit-entries\">\n<thead><tr><th>Index</th><th>Time</th><th>Agent</th><th>Role</th><th>Action</th>\
<th>Subtype</th><th>Outcome</th><th>Patients</th><th>Query</th></tr></thead>\n<tbody>\n{rows}</tbody>\n</table>\n{older}</section>",
        error = html::error(problem),
        patient = value("patient"),
        agent = value("agent"),
        from = value("from"),
        to = value("to"),
        action = select(
            "action",
            field("action").as_deref(),
            &[
                ("", "any"),
                ("C", "create"),
                ("R", "read"),
                ("U", "update"),
                ("D", "delete"),
                ("E", "execute (search, sign-in…)")
            ]
        ),
        outcome = select(
            "outcome",
            field("outcome").as_deref(),
            &[
                ("", "any"),
                ("0", "success"),
                ("4", "minor failure"),
                ("8", "serious failure"),
                ("12", "major failure")
            ]
        ),
    );
    page(&view, "Audit trail", &body)
}

fn access_row(l: &AccessLine) -> String {
    let who = match &l.role {
        Some(r) => format!("{} <span class=\"role\">({})</span>", esc(&l.who), esc(r)),
        None => esc(&l.who),
    };
    // Emergency access is an access made under a break-the-glass grant; a
    // refused attempt is listed as refused, not as emergency access.
    let (class, label) = if l.break_glass && l.succeeded {
        (
            " class=\"break-glass\"",
            " <strong class=\"break-glass-label\">Emergency access</strong>",
        )
    } else {
        ("", "")
    };
    let what = if l.succeeded {
        esc(&l.what)
    } else {
        format!("{} (refused or failed)", esc(&l.what))
    };
    // How privacy monitoring explains the access (nothing until a pass has
    // seen it, and nothing for entries that are not accesses to the record).
    let explained = l
        .explanation
        .as_ref()
        .map(|e| {
            format!(
                "<br><span class=\"explanation\" data-strength=\"{}\">Why: {}</span>",
                esc(&e.strength),
                esc(&e.text)
            )
        })
        .unwrap_or_default();
    format!(
        "<tr{class} data-index=\"{i}\"><td class=\"when\"><time datetime=\"{iso}\">{t}</time></td><td class=\"who\">{who}</td>\
<td class=\"what\">{what}{label}{explained}</td><td class=\"why\">{why}</td></tr>\n",
        i = l.index,
        iso = esc(&l.when.to_fhir_instant()),
        t = esc(&when(l.when)),
        why = esc(&purpose_text(l.purpose.as_deref())),
    )
}

/// An HL7 purpose of use, in words.
fn purpose_text(p: Option<&str>) -> String {
    match p {
        None => "not stated".into(),
        Some("TREAT") => "treatment".into(),
        Some("ETREAT") => "emergency treatment".into(),
        Some("HPAYMT") => "payment".into(),
        Some("HOPERAT") => "healthcare operations".into(),
        Some("PATRQT") => "your request".into(),
        Some("HRESCH") => "research".into(),
        Some("PUBHLTH") => "public health".into(),
        Some(other) => other.to_owned(),
    }
}

async fn access_log_page(
    State(state): State<WebState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let view = match pages::signed_in(&state, &headers, "/account/access-log").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if view.account.role != Role::Patient {
        return pages::forbidden_page(Some(&pages::nav(&view)));
    }
    let before = pairs(q.as_deref())
        .iter()
        .find(|(k, _)| k == "before")
        .and_then(|(_, v)| v.parse().ok());
    let limit = 100;
    let lines = match state
        .vigil
        .my_access_log(&Principal::User(view.caller.clone()), before, limit)
        .await
    {
        Ok(l) => l,
        Err(e) => return pages::app_error_page(&view, "Who accessed my record", &e),
    };
    let rows: String = lines.iter().map(access_row).collect();
    let empty = if lines.is_empty() {
        "<p id=\"access-log-empty\">No accesses are recorded.</p>"
    } else {
        ""
    };
    let older = match lines.iter().map(|l| l.index).min() {
        Some(min) if lines.len() >= limit && min > 0 => format!(
            "<p><a id=\"access-log-older\" href=\"/account/access-log?before={min}\">Older entries</a></p>"
        ),
        _ => String::new(),
    };
    let body = format!(
        "<section class=\"card\">\n<h2 id=\"access-log-title\">Who accessed my record</h2>\n\
<p>Every time someone opened, searched or changed your record, newest first, including you and the apps you allowed. \
Emergency access (break the glass) is marked, and each access says why it happened when privacy monitoring has explained it; ask the privacy office about any access you do not expect.</p>\n\
<p><a id=\"download-my-record\" class=\"button secondary\" href=\"/account/my-record\">Download my record</a> \
(a FHIR Bundle of everything in your record; the download is listed here too)</p>\n{empty}\
<table id=\"access-log\">\n<thead><tr><th>When</th><th>Who</th><th>What</th><th>Why</th></tr></thead>\n<tbody>\n{rows}</tbody>\n</table>\n{older}</section>"
    );
    page(&view, "Who accessed my record", &body)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn p(q: &str) -> Vec<(String, String)> {
        app::parse_query_string(q)
    }

    #[test]
    fn search_parameters_are_parsed_or_refused() {
        let f = filter_of(&p("patient=Patient/p1&agent=urn:vigil:account|a1&action=R&outcome=0&date=ge2025-01-01&date=lt2025-02-01&_count=10")).map_err(|e| e.0).unwrap();
        assert_eq!(f.patient.as_deref(), Some("p1"));
        assert_eq!(f.agent.as_deref(), Some("a1"));
        assert_eq!(f.limit, 10);
        assert_eq!(f.from, day("2025-01-01"));
        assert_eq!(f.to, day("2025-02-01"));
        let le = filter_of(&p("date=le2025-01-01")).map_err(|e| e.0).unwrap();
        assert_eq!(le.to, day("2025-01-02"));
        assert!(filter_of(&p("name=Smith")).is_err());
        assert!(filter_of(&p("action=X")).is_err());
        assert!(filter_of(&p("date=ge2025-13-01")).is_err());
        assert!(filter_of(&p("_count=0")).is_err());
        assert!(filter_of(&p("patient=a&patient=b")).is_err());
    }
}
