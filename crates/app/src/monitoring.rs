//! Privacy monitoring in the running server: the audit trail feeds the
//! monitor crate's engine continuously; every access gets a stored
//! explanation, and suspicious ones become alerts grouped into cases that
//! the privacy officer triages.
//!
//! A pass (`Vigil::monitor_step`) reads the entries after the stored cursor,
//! turns accesses to patient data into the engine's `Access`es, runs the
//! engine over a window of recent history plus the new accesses (so peer
//! patterns, hours and volumes are learned from this organisation's own
//! trail), and stores, in one transaction that moves the cursor, the new
//! accesses' explanations and the alerts that concern new accesses, each
//! attached to the user's open case. Several nodes may run passes: the
//! cursor's compare-and-set lets exactly one store each pass.
//!
//! The context (who is who, care teams, encounters, orders, appointments,
//! break-the-glass grants) is read from the records and rebuilt every few
//! seconds. What the store keeps (explanations, alert and case contents,
//! notes, suppressions) is sealed with the audit key, bound to its id: the
//! database never sees who looked at whom.
//!
//! Operator actions (the CLI on the server's machine, demo seeding) and
//! backend services acting without a person are in the trail but are not
//! monitored as people: they are not decided by relationships either, and
//! household, colleague and hour signals mean nothing for them.

use std::collections::{BTreeSet, HashMap};

use model::{ResourceType, Timestamp};
use monitor::engine::{self, Because, Strength};
use monitor::{Access, GrantKind, PatientIx, UserIx, World};
use serde::{Deserialize, Serialize};
use store::{
    AccessExplanation, AccountId, CaseQuery, MonitorAlert, MonitorBatch, MonitorCase, Role,
    StoreError, Suppression,
};

use crate::trail::{Action, Category, Entry, Event};
use crate::{AppError, Principal, Vigil};

/// Most audit entries one pass reads.
const PASS_ENTRIES: usize = 5_000;
/// How long the context read from the records is reused.
const CONTEXT_TTL_MICROS: i64 = 5_000_000;
/// History the engine learns from: this far back, at most this many
/// accesses.
const HISTORY_MICROS: i64 = 90 * 86_400 * 1_000_000;
const HISTORY_MAX: usize = 1_000_000;
/// Most cases one listing returns.
pub const MAX_CASES: u32 = 500;
/// Longest note an officer may write.
pub const MAX_NOTE: usize = 4_000;

/// The case statuses an officer can set.
pub const STATUSES: [&str; 4] = ["open", "follow_up", "appropriate", "inappropriate"];

/// One access as remembered between passes (ids, not indexes: the context
/// is rebuilt and its indexes change).
#[derive(Debug, Clone)]
struct Seen {
    index: u64,
    time: i64,
    user: String,
    patient: String,
    action: monitor::Action,
    emergency: bool,
    refused: bool,
}

/// The monitor's memory in this process.
#[derive(Default)]
pub(crate) struct Live {
    context: Option<(Timestamp, World)>,
    /// How long reading the context last took (micros): large
    /// organisations re-read it less often.
    context_cost: i64,
    history: Vec<Seen>,
    /// The audit index up to which `history` holds the trail: history
    /// before the cursor is read at the first pass, and what other nodes'
    /// passes processed is read before this node's next one.
    seen_to: u64,
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonitorReport {
    /// Audit entries read.
    pub entries: usize,
    /// Accesses (entry × patient) explained.
    pub accesses: usize,
    /// Alerts stored.
    pub alerts: usize,
    /// The cursor after the pass.
    pub cursor: u64,
}

/// How one access to one patient is explained.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Explained {
    pub patient: String,
    /// `care_team`, `attending`, `peer_pattern`, `unexplained`, …
    pub code: String,
    /// `direct`, `workflow`, `learned` or `none`.
    pub strength: String,
    pub text: String,
}

/// An alert's sealed content.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct AlertBody {
    user: String,
    patients: Vec<String>,
    /// Audit indexes.
    events: Vec<u64>,
    kind: String,
    kinds: Vec<String>,
    reason: String,
    /// For an alert imported from another EHR's access log: its accesses
    /// (no audit entries of Vigil's own record them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    external: Vec<ExternalAccess>,
}

/// An access from an imported log, as a case's timeline shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct ExternalAccess {
    event_id: String,
    /// Unix seconds.
    time: i64,
    patient: String,
    patient_name: Option<String>,
    action: String,
    alerted: bool,
    explanation: Explained,
}

/// A case's sealed summary.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct CaseBody {
    user: String,
    kinds: BTreeSet<String>,
    patients: BTreeSet<String>,
    first: i64,
    last: i64,
    /// For imported cases: the staff member's name and role as the
    /// import gave them (they have no account here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user_role: Option<String>,
}

/// A suppression's sealed pattern: the fields given must all match.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Pattern {
    user: Option<String>,
    patient: Option<String>,
    kind: Option<String>,
    /// Why the officer confirmed it.
    note: String,
}

/// A case in the queue.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseSummary {
    pub id: String,
    pub status: String,
    pub score: f64,
    pub assignee: Option<String>,
    pub opened: Timestamp,
    pub updated: Timestamp,
    pub alerts: u32,
    /// The monitored user's account id, and their name and role as shown.
    pub user: String,
    pub user_name: String,
    pub user_role: Option<String>,
    pub kinds: Vec<String>,
    pub patients: usize,
}

/// An alert of a case.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertView {
    pub id: String,
    pub kind: String,
    pub kinds: Vec<String>,
    pub score: f64,
    pub created: Timestamp,
    pub reason: String,
    pub patients: Vec<String>,
    pub events: Vec<u64>,
}

/// One access on a case's timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineItem {
    pub index: u64,
    pub when: Timestamp,
    pub patient: String,
    pub patient_name: Option<String>,
    pub what: String,
    pub succeeded: bool,
    pub explanation: Option<Explained>,
    /// Named by one of the case's alerts.
    pub alerted: bool,
}

/// A note on a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteView {
    pub seq: u64,
    pub author: String,
    pub at: Timestamp,
    pub text: String,
}

/// A case with everything its page shows.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseView {
    pub summary: CaseSummary,
    pub alerts: Vec<AlertView>,
    pub timeline: Vec<TimelineItem>,
    pub notes: Vec<NoteView>,
}

/// An officer's decision on a case.
#[derive(Debug, Clone)]
pub struct Disposition {
    /// The case's `updated` as the officer saw it (optimistic concurrency).
    pub expected_updated: Timestamp,
    pub status: String,
    /// An account id to assign the case to; an empty string unassigns it;
    /// `None` leaves the assignment as it is.
    pub assignee: Option<String>,
    pub note: Option<String>,
    /// With `appropriate`: confirm the pattern, so future alerts of the same
    /// kind for the same user and patient are not raised.
    pub suppress: bool,
}

fn strength_name(s: Strength) -> &'static str {
    match s {
        Strength::Direct => "direct",
        Strength::Workflow => "workflow",
        Strength::Learned => "learned",
        Strength::None => "none",
    }
}

fn invalid(msg: impl Into<String>) -> AppError {
    AppError::bad_request(fhir::IssueCode::Invalid, msg)
}

fn seal_err(what: &str) -> AppError {
    AppError::Integrity(format!("monitoring {what}"))
}

impl Vigil {
    fn require_officer(&self, who: &Principal) -> Result<Option<AccountId>, AppError> {
        match who {
            Principal::Operator => Ok(None),
            Principal::User(c) if matches!(c.role, Some(Role::PrivacyOfficer)) => {
                Ok(c.account.clone())
            }
            _ => Err(AppError::Forbidden(
                "privacy monitoring is for privacy officers".into(),
            )),
        }
    }

    fn seal_monitor<T: Serialize>(
        &self,
        purpose: &str,
        id: &str,
        v: &T,
    ) -> Result<Vec<u8>, AppError> {
        let json = serde_json::to_vec(v).map_err(|_| seal_err(purpose))?;
        self.audit
            .seal_blob(&format!("vigil-monitor|{purpose}|{id}"), &json)
    }

    fn open_monitor<T: for<'de> Deserialize<'de>>(
        &self,
        purpose: &str,
        id: &str,
        bytes: &[u8],
    ) -> Result<T, AppError> {
        let json = self
            .audit
            .open_blob(&format!("vigil-monitor|{purpose}|{id}"), bytes)?;
        serde_json::from_slice(&json).map_err(|_| seal_err(purpose))
    }

    fn subject_term(&self, user: &str) -> Vec<u8> {
        self.audit_term("monitor-subject", user)
    }

    /// One monitoring pass: explains the accesses recorded since the last
    /// pass and stores alerts. Returns what it did; another node's pass in
    /// between makes this one store nothing (and the next starts after it).
    pub async fn monitor_step(&self) -> Result<MonitorReport, AppError> {
        let mut live = self.monitor.lock().await;
        let cursor = self.store.monitor_cursor().await?;
        let size = self.store.audit_head().await?.size;
        if live.seen_to < cursor {
            let from = live.seen_to.max(cursor.saturating_sub(HISTORY_MAX as u64));
            let more = self.monitor_history(from, cursor).await?;
            live.history.extend(more);
            live.seen_to = cursor;
        }
        if cursor >= size {
            return Ok(MonitorReport {
                cursor,
                ..MonitorReport::default()
            });
        }
        let want = usize::try_from(size - cursor)
            .unwrap_or(PASS_ENTRIES)
            .min(PASS_ENTRIES);
        let rows = self.store.audit_entries(cursor, want).await?;
        let mut next = cursor;
        let mut fresh: Vec<Seen> = Vec::new();
        for (index, bytes) in &rows {
            if *index != next {
                return Err(AppError::Integrity(format!(
                    "audit entry {next} is missing"
                )));
            }
            next = index + 1;
            fresh.extend(seen_of(*index, &self.audit.open(bytes)?));
        }
        let entries = rows.len();

        let now = self.clock.now();
        // The context is re-read every few seconds, or every ten times what
        // reading it costs, whichever is longer (a large organisation's
        // records are not decrypted again every few seconds; new users and
        // patients still trigger a read at once, below).
        let ttl = CONTEXT_TTL_MICROS.max(10 * live.context_cost);
        let stale = live
            .context
            .as_ref()
            .is_none_or(|(at, _)| now.0 - at.0 > ttl);
        if stale {
            let started = std::time::Instant::now();
            let world = self.monitor_context().await?;
            live.context_cost = i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX);
            live.context = Some((now, world));
        }
        let Some((_, context)) = live.context.as_ref() else {
            return Err(seal_err("context"));
        };
        // A user or patient created after the context was read: read again.
        let unknown = {
            let users: std::collections::HashSet<&str> =
                context.users.iter().map(|u| u.id.as_str()).collect();
            let patients: std::collections::HashSet<&str> =
                context.patients.iter().map(|p| p.id.as_str()).collect();
            fresh
                .iter()
                .any(|s| !users.contains(s.user.as_str()) || !patients.contains(s.patient.as_str()))
        };
        if !stale && unknown {
            let world = self.monitor_context().await?;
            live.context = Some((now, world));
        }
        let Some((_, context)) = live.context.as_ref() else {
            return Err(seal_err("context"));
        };

        let horizon = now.0 - HISTORY_MICROS;
        let keep_from = live
            .history
            .iter()
            .position(|s| s.time >= horizon)
            .unwrap_or(live.history.len())
            .max(live.history.len().saturating_sub(HISTORY_MAX));
        let history = live.history.get(keep_from..).unwrap_or(&[]);
        let (mut world, mut new_positions) = assemble(context, history, &fresh);
        let cfg = engine::Config::default();
        let mut suppress = self.monitor_suppressions(&world).await?;
        let mut out = engine::run(&world, &cfg, &suppress);
        // A relationship recorded just before an access (a clinician joins
        // the care team, then opens the chart) may be newer than the
        // context: when the context was read before the newest access and
        // leaves one of the new accesses unexplained, it is read again and
        // the pass judged on it, so no explanation or alert is stored from
        // a stale context.
        let read_at = live.context.as_ref().map_or(now.0, |(at, _)| at.0);
        let newest = fresh.iter().map(|s| s.time).max().unwrap_or(i64::MIN);
        let unexplained = new_positions.keys().any(|p| {
            out.explanations
                .get(*p as usize)
                .is_some_and(|e| e.because == Because::Unexplained)
        });
        if unexplained && read_at <= newest && !stale {
            let started = std::time::Instant::now();
            let fresh_context = self.monitor_context().await?;
            live.context_cost = i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX);
            live.context = Some((self.clock.now(), fresh_context));
            let Some((_, context)) = live.context.as_ref() else {
                return Err(seal_err("context"));
            };
            let history = live.history.get(keep_from..).unwrap_or(&[]);
            (world, new_positions) = assemble(context, history, &fresh);
            suppress = self.monitor_suppressions(&world).await?;
            out = engine::run(&world, &cfg, &suppress);
        }

        // Explanations of the new accesses, per audit entry.
        let mut by_entry: HashMap<u64, Vec<Explained>> = HashMap::new();
        for (&pos, &index) in &new_positions {
            let (Some(a), Some(e)) = (
                world.accesses.get(pos as usize),
                out.explanations.get(pos as usize),
            ) else {
                continue;
            };
            let patient = world
                .patients
                .get(a.patient.ix())
                .map(|p| p.id.clone())
                .unwrap_or_default();
            by_entry.entry(index).or_default().push(Explained {
                patient,
                code: e.because.code().to_owned(),
                strength: strength_name(e.because.strength()).to_owned(),
                text: e.because.describe(&world),
            });
        }
        let mut explanations = Vec::with_capacity(by_entry.len());
        for (index, list) in &by_entry {
            explanations.push(AccessExplanation {
                index: *index,
                sealed: self.seal_monitor("explanation", &index.to_string(), list)?,
            });
        }

        // Alerts that concern new accesses, attached to the user's case.
        let mut alerts = Vec::new();
        let mut cases: HashMap<String, (MonitorCase, CaseBody)> = HashMap::new();
        // Alert ids the users' open cases hold already, and the cases this
        // pass adds alerts to.
        let mut stored_ids: BTreeSet<String> = BTreeSet::new();
        let mut touched: BTreeSet<String> = BTreeSet::new();
        for al in &out.alerts {
            let events: Vec<u64> = al
                .events
                .iter()
                .filter_map(|p| new_positions.get(p).copied())
                .collect();
            let Some(&first) = events.first() else {
                continue;
            };
            let Some(user) = world.users.get(al.user.ix()).map(|u| u.id.clone()) else {
                continue;
            };
            let pats: Vec<String> = al
                .patients
                .iter()
                .filter_map(|p| world.patients.get(p.ix()).map(|p| p.id.clone()))
                .collect();
            let case = match cases.get_mut(&user) {
                Some(c) => c,
                None => {
                    let fresh = CaseBody {
                        user: user.clone(),
                        first: i64::MAX,
                        ..CaseBody::default()
                    };
                    let (mut case, body, ids, new) = self.case_of(&user, now, fresh).await?;
                    stored_ids.extend(ids);
                    if new {
                        // Repeat offenders start higher.
                        let repeat = self.prior_inappropriate(&case.subject).await?;
                        case.score = 0.1 * f64::from(repeat.min(5));
                    }
                    cases.entry(user.clone()).or_insert((case, body))
                }
            };
            let (c, body) = case;
            // A volume alert is one per user, day and case, however many
            // passes see the day grow; other alerts are one per pass.
            let day = al.first.div_euclid(86_400);
            let key = if al.kind == monitor::Kind::Volume {
                format!("{user}|volume|{day}|{}", c.id)
            } else {
                format!(
                    "{user}|{}|{first}|{}",
                    al.kind.as_str(),
                    pats.first().map_or("", String::as_str)
                )
            };
            let id = format!("al-{}", &hex_of(&crypto::token_hash(&key))[..24]);
            if stored_ids.contains(&id) || alerts.iter().any(|a: &MonitorAlert| a.id == id) {
                continue;
            }
            let times = al
                .events
                .iter()
                .filter_map(|p| world.accesses.get(*p as usize).map(|a| a.time));
            body.first = body.first.min(times.clone().min().unwrap_or(body.first));
            body.last = body.last.max(times.max().unwrap_or(body.last));
            body.kinds.insert(al.kind.as_str().to_owned());
            body.patients.extend(pats.iter().cloned());
            // A case ranks by its strongest alert, raised by each further one.
            c.score = c.score.max(al.score) + if c.alerts > 0 { 0.02 } else { 0.0 };
            c.alerts += 1;
            c.updated = now;
            let body_alert = AlertBody {
                user: user.clone(),
                patients: pats,
                events,
                kind: al.kind.as_str().to_owned(),
                kinds: al.kinds.iter().map(|k| k.as_str().to_owned()).collect(),
                reason: al.reason.clone(),
                external: Vec::new(),
            };
            touched.insert(c.id.clone());
            alerts.push(MonitorAlert {
                sealed: self.seal_monitor("alert", &id, &body_alert)?,
                id,
                case_id: c.id.clone(),
                kind: al.kind.as_str().to_owned(),
                score: (al.score * 1e6).round() / 1e6,
                created: now,
            });
        }
        let mut case_rows = Vec::with_capacity(cases.len());
        for (_, (mut c, body)) in cases {
            if !touched.contains(&c.id) {
                continue;
            }
            c.sealed = self.seal_monitor("case", &c.id, &body)?;
            case_rows.push(c);
        }
        let stored = alerts.len();
        let accesses = new_positions.len();
        match self
            .store
            .commit_monitor_batch(MonitorBatch {
                from: cursor,
                to: next,
                explanations,
                alerts,
                cases: case_rows,
            })
            .await
        {
            Ok(()) => {}
            // Another node stored this stretch first; the next pass reads
            // on from where it got.
            Err(StoreError::MonitorCursor) => {
                return Ok(MonitorReport {
                    cursor,
                    ..MonitorReport::default()
                });
            }
            Err(e) => return Err(e.into()),
        }
        live.history.drain(..keep_from);
        live.history.extend(fresh);
        live.seen_to = next;
        if stored > 0 {
            tracing::info!(alerts = stored, entries, "monitoring raised alerts");
        }
        Ok(MonitorReport {
            entries,
            accesses,
            alerts: stored,
            cursor: next,
        })
    }

    /// The user's open (or follow-up) case with its summary and the ids of
    /// the alerts it holds; or, when there is none, a new open case (score
    /// 0, not stored yet) with the summary `fresh`, and `true`.
    async fn case_of(
        &self,
        user: &str,
        now: Timestamp,
        fresh: CaseBody,
    ) -> Result<(MonitorCase, CaseBody, BTreeSet<String>, bool), AppError> {
        let subject = self.subject_term(user);
        if let Some(c) = self.store.open_case_for(&subject).await? {
            let body: CaseBody = self.open_monitor("case", &c.id, &c.sealed)?;
            let ids = self
                .store
                .case_alerts(&c.id)
                .await?
                .into_iter()
                .map(|a| a.id)
                .collect();
            return Ok((c, body, ids, false));
        }
        let case = MonitorCase {
            id: format!("case-{}", &crypto::random_token()[..16]),
            subject,
            status: "open".into(),
            score: 0.0,
            assignee: None,
            opened: now,
            updated: now,
            alerts: 0,
            sealed: Vec::new(),
        };
        Ok((case, fresh, BTreeSet::new(), true))
    }

    /// How many closed cases of this subject were judged inappropriate
    /// (repeat offenders rank higher).
    async fn prior_inappropriate(&self, subject: &[u8]) -> Result<u32, AppError> {
        let q = CaseQuery {
            status: Some("inappropriate".into()),
            assignee: None,
            limit: MAX_CASES,
        };
        let n = self
            .store
            .monitor_cases(&q)
            .await?
            .iter()
            .filter(|c| c.subject == subject)
            .count();
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// The accesses in `start..cursor` that the engine learns from.
    async fn monitor_history(&self, start: u64, cursor: u64) -> Result<Vec<Seen>, AppError> {
        let mut out = Vec::new();
        let mut from = start;
        while from < cursor {
            let want = usize::try_from(cursor - from)
                .unwrap_or(PASS_ENTRIES)
                .min(PASS_ENTRIES);
            let rows = self.store.audit_entries(from, want).await?;
            let Some((last, _)) = rows.last() else { break };
            from = last + 1;
            for (index, bytes) in &rows {
                out.extend(seen_of(*index, &self.audit.open(bytes)?));
            }
        }
        Ok(out)
    }

    /// The officer's confirmed patterns, as the engine's suppressions.
    async fn monitor_suppressions(&self, world: &World) -> Result<Vec<engine::Suppress>, AppError> {
        let mut out = Vec::new();
        for s in self.store.suppressions().await? {
            if s.revoked.is_some() {
                continue;
            }
            let p: Pattern = self.open_monitor("suppression", &s.id, &s.sealed)?;
            let user = match &p.user {
                Some(u) => match world.users.iter().position(|x| &x.id == u) {
                    Some(i) => Some(UserIx(u32::try_from(i).unwrap_or(u32::MAX))),
                    None => continue,
                },
                None => None,
            };
            let patient = match &p.patient {
                Some(id) => match world.patients.iter().position(|x| &x.id == id) {
                    Some(i) => Some(PatientIx(u32::try_from(i).unwrap_or(u32::MAX))),
                    None => continue,
                },
                None => None,
            };
            out.push(engine::Suppress {
                user,
                patient,
                kind: p.kind.as_deref().and_then(monitor::Kind::parse),
                department: None,
                role: None,
            });
        }
        Ok(out)
    }

    /// Reads the context from the records: accounts as users, and the
    /// Practitioner, PractitionerRole, Patient, Encounter, CareTeam and
    /// ServiceRequest resources through the monitor's FHIR reader, with
    /// appointments and break-the-glass grants as time-boxed grants.
    async fn monitor_context(&self) -> Result<World, AppError> {
        let types = [
            ResourceType::Practitioner,
            ResourceType::PractitionerRole,
            ResourceType::Patient,
            ResourceType::Encounter,
            ResourceType::CareTeam,
            ResourceType::ServiceRequest,
        ];
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        let mut appointments = Vec::new();
        for rtype in types.iter().copied().chain([ResourceType::Appointment]) {
            let mut lines = Vec::new();
            let mut after = None;
            loop {
                let batch = self.store.scan(rtype, after.as_ref(), 1000).await?;
                let Some(last) = batch.last() else { break };
                after = Some(last.id.clone());
                for sv in &batch {
                    if let Some(res) = self.open_version(sv).await?.resource {
                        if rtype == ResourceType::Appointment {
                            appointments.push(res);
                        } else {
                            serde_json::to_writer(&mut lines, &res)
                                .map_err(|_| seal_err("context"))?;
                            lines.push(b'\n');
                        }
                    }
                }
            }
            if rtype != ResourceType::Appointment {
                files.push((format!("{rtype}.ndjson"), lines));
            }
        }
        let sources: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        let loaded = monitor::input::read_fhir_sources(
            &sources,
            &monitor::input::ReadOptions {
                skip_bad_rows: true,
            },
            &mut |_, _| {},
        )
        .map_err(|e| AppError::Integrity(format!("monitoring context: {e}")))?;
        let mut world = loaded.world;

        let practitioners: HashMap<String, usize> = world
            .users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.id.clone(), i))
            .collect();
        let patient_index: HashMap<String, usize> = world
            .patients
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id.clone(), i))
            .collect();
        // Accounts are the users. A workforce account linked to a
        // Practitioner takes that user's place (its relationships name the
        // Practitioner); the others are added. On the way: which
        // Practitioner ids became account ids, and the break-the-glass
        // grants (only workforce accounts can hold them).
        let mut practitioner_account: HashMap<String, String> = HashMap::new();
        let mut grants = Vec::new();
        let mut after: Option<AccountId> = None;
        loop {
            let batch = self.store.accounts(after.as_ref(), 500).await?;
            let Some(last) = batch.last() else { break };
            after = Some(last.id.clone());
            for acc in batch {
                if let Some(p) = &acc.practitioner {
                    practitioner_account.insert(p.as_str().to_owned(), acc.id.as_str().to_owned());
                }
                if matches!(
                    acc.role,
                    Role::Physician | Role::Nurse | Role::OtherClinical
                ) {
                    grants.extend(self.store.grants_for_account(&acc.id, None).await?);
                }
                let role = world.role(acc.role.as_str());
                let termination = acc.deactivated.map(|t| t.0 / 1_000_000);
                let linked = acc
                    .practitioner
                    .as_ref()
                    .and_then(|p| practitioners.get(p.as_str()).copied());
                match linked {
                    Some(i) => {
                        if let Some(u) = world.users.get_mut(i) {
                            u.id = acc.id.as_str().to_owned();
                            u.role = role;
                            u.termination = termination.or(u.termination);
                        }
                    }
                    None => {
                        let (given, family) = match self.display_name(&acc).await? {
                            Some(n) => split_name(&n),
                            None => (String::new(), String::new()),
                        };
                        let department = world.department(match acc.role {
                            Role::Patient => "patient",
                            _ => "General",
                        });
                        let patient = acc.patient.as_ref().and_then(|p| {
                            patient_index
                                .get(p.as_str())
                                .map(|&i| PatientIx(u32::try_from(i).unwrap_or(u32::MAX)))
                        });
                        world.users.push(monitor::User {
                            id: acc.id.as_str().to_owned(),
                            given,
                            family,
                            role,
                            department,
                            address: monitor::Address::default(),
                            hire: Some(acc.created.0 / 1_000_000),
                            termination,
                            patient,
                        });
                    }
                }
            }
        }
        let (users, patients) = id_maps(&world);
        for g in grants {
            if let (Some(&u), Some(&p)) = (
                users.get(g.account.as_str()),
                patients.get(g.patient.as_str()),
            ) {
                let end = g.revoked.unwrap_or(g.expires).min(g.expires);
                world.grants.push(monitor::Grant {
                    user: u,
                    patient: p,
                    kind: GrantKind::BreakGlass,
                    start: g.start.0 / 1_000_000,
                    end: end.0 / 1_000_000,
                });
            }
        }
        for appt in &appointments {
            let (Some(start), Some(end)) = (
                appt.get("start").and_then(|v| v.as_str()).and_then(rfc3339),
                appt.get("end").and_then(|v| v.as_str()).and_then(rfc3339),
            ) else {
                continue;
            };
            let actors: Vec<&str> = appt
                .get("participant")
                .and_then(|v| v.as_array())
                .map(|ps| {
                    ps.iter()
                        .filter_map(|p| p.pointer("/actor/reference").and_then(|r| r.as_str()))
                        .collect()
                })
                .unwrap_or_default();
            let pats: Vec<PatientIx> = actors
                .iter()
                .filter_map(|r| r.strip_prefix("Patient/"))
                .filter_map(|id| patients.get(id).copied())
                .collect();
            let staff: Vec<UserIx> = actors
                .iter()
                .filter_map(|r| r.strip_prefix("Practitioner/"))
                .filter_map(|id| {
                    let id = practitioner_account.get(id).map_or(id, String::as_str);
                    users.get(id).copied()
                })
                .collect();
            for &p in &pats {
                for &u in &staff {
                    world.grants.push(monitor::Grant {
                        user: u,
                        patient: p,
                        kind: GrantKind::Appointment,
                        start,
                        end,
                    });
                }
            }
        }
        world
            .check()
            .map_err(|e| AppError::Integrity(format!("monitoring context: {e}")))?;
        Ok(world)
    }

    /// The explanations of accesses by audit index (for access logs).
    pub async fn access_explanations(
        &self,
        indexes: &[u64],
    ) -> Result<HashMap<u64, Vec<Explained>>, AppError> {
        let mut out = HashMap::new();
        for chunk in indexes.chunks(store::EXPLANATIONS_PER_QUERY) {
            for e in self.store.explanations(chunk).await? {
                let list: Vec<Explained> =
                    self.open_monitor("explanation", &e.index.to_string(), &e.sealed)?;
                out.insert(e.index, list);
            }
        }
        Ok(out)
    }

    async fn case_summary(&self, c: &MonitorCase) -> Result<CaseSummary, AppError> {
        let body: CaseBody = self.open_monitor("case", &c.id, &c.sealed)?;
        let imported = body.user_name.clone().map(|n| (n, body.user_role.clone()));
        let (user_name, user_role) = match (imported, AccountId::new(body.user.clone())) {
            (Some(shown), _) => shown,
            (None, Some(id)) => match self.store.account(&id).await? {
                Some(acc) => (
                    self.display_name(&acc).await?.unwrap_or(acc.username),
                    Some(acc.role.as_str().to_owned()),
                ),
                None => ("a former account".to_owned(), None),
            },
            (None, None) => (body.user.clone(), None),
        };
        Ok(CaseSummary {
            id: c.id.clone(),
            status: c.status.clone(),
            score: c.score,
            assignee: c.assignee.as_ref().map(|a| a.as_str().to_owned()),
            opened: c.opened,
            updated: c.updated,
            alerts: c.alerts,
            user: body.user,
            user_name,
            user_role,
            kinds: body.kinds.into_iter().collect(),
            patients: body.patients.len(),
        })
    }

    /// The case queue, highest risk first (privacy officers).
    pub async fn monitor_cases(
        &self,
        who: &Principal,
        status: Option<&str>,
        limit: u32,
    ) -> Result<Vec<CaseSummary>, AppError> {
        self.require_officer(who)?;
        if let Some(s) = status
            && !STATUSES.contains(&s)
        {
            return Err(invalid(format!("unknown case status {s:?}")));
        }
        let q = CaseQuery {
            status: status.map(str::to_owned),
            assignee: None,
            limit: limit.clamp(1, MAX_CASES),
        };
        let mut out = Vec::new();
        for c in self.store.monitor_cases(&q).await? {
            out.push(self.case_summary(&c).await?);
        }
        self.audit(
            who,
            Event::new(Category::Administration, "monitor-queue", Action::R),
        )
        .await?;
        Ok(out)
    }

    /// One case: its alerts, the timeline of the user's accesses to the
    /// patients concerned with their explanations, and the notes. Viewing
    /// it is recorded (it names the patients).
    pub async fn monitor_case(&self, who: &Principal, id: &str) -> Result<CaseView, AppError> {
        self.require_officer(who)?;
        let c = self
            .store
            .monitor_case(id)
            .await?
            .ok_or_else(|| AppError::NotFound("case".into()))?;
        let summary = self.case_summary(&c).await?;
        let mut alerts = Vec::new();
        let mut alerted = BTreeSet::new();
        let mut patients = BTreeSet::new();
        let mut timeline = Vec::new();
        for a in self.store.case_alerts(&c.id).await? {
            let b: AlertBody = self.open_monitor("alert", &a.id, &a.sealed)?;
            alerted.extend(b.events.iter().copied());
            patients.extend(b.patients.iter().cloned());
            // An imported alert carries its accesses (no audit entries of
            // this server record them).
            for x in b.external {
                timeline.push(TimelineItem {
                    index: 0,
                    when: Timestamp(x.time.saturating_mul(1_000_000)),
                    patient: x.patient,
                    patient_name: x.patient_name,
                    what: format!("{} (imported event {})", x.action, x.event_id),
                    succeeded: true,
                    explanation: Some(x.explanation),
                    alerted: x.alerted,
                });
            }
            alerts.push(AlertView {
                id: a.id,
                kind: a.kind,
                kinds: b.kinds,
                score: a.score,
                created: a.created,
                reason: b.reason,
                patients: b.patients,
                events: b.events,
            });
        }
        // The timeline: the user's accesses to these patients.
        let mut indexes = BTreeSet::new();
        for p in patients.iter().take(50) {
            let q = store::AuditQuery {
                clauses: vec![
                    (
                        "agent".into(),
                        vec![self.audit_term("agent", &summary.user)],
                    ),
                    ("patient".into(), vec![self.audit_term("patient", p)]),
                ],
                limit: 200,
                ..store::AuditQuery::default()
            };
            indexes.extend(self.store.find_audit(&q).await?);
        }
        indexes.extend(alerted.iter().copied());
        let indexes: Vec<u64> = indexes.into_iter().rev().take(500).collect();
        let explained = self.access_explanations(&indexes).await?;
        let mut names: HashMap<String, Option<String>> = HashMap::new();
        for &i in indexes.iter().rev() {
            let rows = self.store.audit_entries(i, 1).await?;
            let Some((_, bytes)) = rows.into_iter().next().filter(|(x, _)| *x == i) else {
                continue;
            };
            let e = self.audit.open(&bytes)?;
            for p in e.patients.iter().filter(|p| patients.contains(*p)) {
                if !names.contains_key(p) {
                    names.insert(p.clone(), self.patient_display_name(p).await?);
                }
                timeline.push(TimelineItem {
                    index: i,
                    when: Timestamp(e.recorded),
                    patient: p.clone(),
                    patient_name: names.get(p).cloned().flatten(),
                    what: crate::trail_views::describe(&e),
                    succeeded: e.outcome == 0,
                    explanation: explained
                        .get(&i)
                        .and_then(|l| l.iter().find(|x| &x.patient == p).cloned()),
                    alerted: alerted.contains(&i),
                });
            }
        }
        let mut notes = Vec::new();
        for n in self.store.case_notes(&c.id).await? {
            let text: String =
                self.open_monitor("note", &format!("{}|{}", c.id, n.seq), &n.sealed)?;
            notes.push(NoteView {
                seq: n.seq,
                author: n.author.as_str().to_owned(),
                at: n.at,
                text,
            });
        }
        let mut ev = Event::new(Category::Administration, "monitor-case", Action::R);
        ev.patients = patients.iter().cloned().collect();
        ev.account = Some(summary.user.clone());
        ev.resources = vec![format!("case/{}", c.id)];
        self.audit(who, ev).await?;
        timeline.sort_by_key(|t| t.when);
        Ok(CaseView {
            summary,
            alerts,
            timeline,
            notes,
        })
    }

    /// The active privacy officers a case can be assigned to: account id and
    /// name as shown, by name (privacy officers).
    pub async fn monitor_officers(
        &self,
        who: &Principal,
    ) -> Result<Vec<(String, String)>, AppError> {
        self.require_officer(who)?;
        let mut out = Vec::new();
        let mut after: Option<AccountId> = None;
        loop {
            let batch = self.store.accounts(after.as_ref(), 500).await?;
            let Some(last) = batch.last() else { break };
            after = Some(last.id.clone());
            for acc in batch {
                if acc.role == Role::PrivacyOfficer && acc.active {
                    let name = self
                        .display_name(&acc)
                        .await?
                        .unwrap_or_else(|| acc.username.clone());
                    out.push((acc.id.as_str().to_owned(), name));
                }
            }
        }
        out.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(out)
    }

    /// Records an officer's disposition, assignment and note on a case.
    pub async fn monitor_decide(
        &self,
        who: &Principal,
        id: &str,
        d: &Disposition,
    ) -> Result<(), AppError> {
        let author = self.require_officer(who)?;
        if !STATUSES.contains(&d.status.as_str()) {
            return Err(invalid(format!("unknown case status {:?}", d.status)));
        }
        if d.note
            .as_ref()
            .is_some_and(|n| n.chars().count() > MAX_NOTE)
        {
            return Err(invalid(format!(
                "a note holds at most {MAX_NOTE} characters"
            )));
        }
        if d.suppress && d.status != "appropriate" {
            return Err(invalid("only an appropriate case can confirm its pattern"));
        }
        let assignee = match &d.assignee {
            Some(a) if !a.is_empty() => {
                let id = AccountId::new(a.clone()).ok_or_else(|| invalid("unknown assignee"))?;
                match self.store.account(&id).await? {
                    Some(acc) if acc.role == Role::PrivacyOfficer && acc.active => Some(id),
                    _ => {
                        return Err(invalid("cases are assigned to active privacy officers"));
                    }
                }
            }
            _ => None,
        };
        let c = self
            .store
            .monitor_case(id)
            .await?
            .ok_or_else(|| AppError::NotFound("case".into()))?;
        let assignee = match &d.assignee {
            None => c.assignee.clone(),
            Some(_) => assignee,
        };
        let now = self.clock.now();
        let note = match d.note.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
            None => None,
            Some(text) => {
                let Some(a) = author.clone() else {
                    return Err(invalid(
                        "notes are written by a privacy officer's account, not by an operator",
                    ));
                };
                // The note's seal is bound to the sequence number the store
                // will give it: the next after the last.
                let seq = self
                    .store
                    .case_notes(&c.id)
                    .await?
                    .last()
                    .map_or(1, |n| n.seq + 1);
                Some((
                    a,
                    self.seal_monitor("note", &format!("{}|{seq}", c.id), &text)?,
                ))
            }
        };
        let result = self
            .store
            .update_case(
                &c.id,
                d.expected_updated,
                &d.status,
                assignee.as_ref(),
                now,
                note,
            )
            .await;
        match result {
            Ok(_) => {}
            Err(StoreError::MonitorCaseChanged) => {
                return Err(AppError::Conflict(
                    "the case changed since it was shown; reload it".into(),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        let body: CaseBody = self.open_monitor("case", &c.id, &c.sealed)?;
        if d.suppress
            && let Some(a) = author.clone()
        {
            for al in self.store.case_alerts(&c.id).await? {
                let b: AlertBody = self.open_monitor("alert", &al.id, &al.sealed)?;
                for p in &b.patients {
                    let sid = format!("sup-{}", &crypto::random_token()[..16]);
                    let pattern = Pattern {
                        user: Some(b.user.clone()),
                        patient: Some(p.clone()),
                        kind: Some(b.kind.clone()),
                        note: d.note.clone().unwrap_or_default(),
                    };
                    self.store
                        .add_suppression(&Suppression {
                            sealed: self.seal_monitor("suppression", &sid, &pattern)?,
                            id: sid,
                            author: a.clone(),
                            created: now,
                            revoked: None,
                        })
                        .await?;
                }
            }
        }
        let mut ev = Event::new(Category::Administration, "monitor-disposition", Action::U);
        ev.patients = body.patients.iter().cloned().collect();
        ev.account = Some(body.user);
        ev.resources = vec![format!("case/{}", c.id)];
        self.audit(who, ev).await?;
        Ok(())
    }

    async fn patient_display_name(&self, id: &str) -> Result<Option<String>, AppError> {
        let Ok(rid) = model::ResourceId::new(id.to_owned()) else {
            return Ok(None);
        };
        let Some(sv) = self.store.current(ResourceType::Patient, &rid).await? else {
            return Ok(None);
        };
        let Some(res) = self.open_version(&sv).await?.resource else {
            return Ok(None);
        };
        let name = res.pointer("/name/0");
        let given = name
            .and_then(|n| n.get("given"))
            .and_then(|g| g.as_array())
            .map(|g| {
                g.iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let family = name
            .and_then(|n| n.get("family"))
            .and_then(|f| f.as_str())
            .unwrap_or_default();
        let full = format!("{given} {family}").trim().to_owned();
        Ok((!full.is_empty()).then_some(full))
    }
}

/// What an import stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub accesses: usize,
    pub alerts: usize,
    /// Alerts of an earlier import of the same log, not stored again.
    pub already: usize,
    pub cases: usize,
}

impl Vigil {
    /// Imports another EHR's access log (parsed by `monitor::input`): runs
    /// the engine over it and stores its alerts in cases, as live passes do,
    /// with each alert's accesses and their explanations (no audit entries
    /// of Vigil's record them). Staff and patients keep their ids in the
    /// source system, prefixed `ext:`. Importing the same log again stores
    /// nothing new. Operators and privacy officers only; recorded.
    pub async fn monitor_import(
        &self,
        who: &Principal,
        world: &World,
        cfg: &engine::Config,
    ) -> Result<ImportReport, AppError> {
        self.require_officer(who)?;
        world
            .check()
            .map_err(|e| invalid(format!("the import is inconsistent: {e}")))?;
        let out = engine::run(world, cfg, &[]);
        let now = self.clock.now();
        let name = |given: &str, family: &str| format!("{given} {family}").trim().to_owned();
        let mut alerts = Vec::new();
        let mut cases: HashMap<String, (MonitorCase, CaseBody)> = HashMap::new();
        let mut already = 0usize;
        let mut known: HashMap<String, BTreeSet<String>> = HashMap::new();
        for al in &out.alerts {
            let Some(u) = world.users.get(al.user.ix()) else {
                continue;
            };
            let user = format!("ext:{}", u.id);
            let first = al
                .events
                .first()
                .and_then(|e| world.accesses.get(*e as usize))
                .map_or("", |a| a.event_id.as_str());
            let pats: Vec<String> = al
                .patients
                .iter()
                .filter_map(|p| world.patients.get(p.ix()).map(|p| format!("ext:{}", p.id)))
                .collect();
            let id = format!(
                "al-{}",
                &hex_of(&crypto::token_hash(&format!(
                    "{user}|{}|ext:{first}|{}",
                    al.kind.as_str(),
                    pats.first().map_or("", String::as_str)
                )))[..24]
            );
            if alerts.iter().any(|a: &MonitorAlert| a.id == id) {
                continue;
            }
            if !cases.contains_key(&user) {
                let fresh = CaseBody {
                    user: user.clone(),
                    first: i64::MAX,
                    user_name: Some(name(&u.given, &u.family)),
                    user_role: world.roles.get(u.role.ix()).cloned(),
                    ..CaseBody::default()
                };
                let (case, body, ids, _) = self.case_of(&user, now, fresh).await?;
                known.insert(user.clone(), ids);
                cases.insert(user.clone(), (case, body));
            }
            if known.get(&user).is_some_and(|ids| ids.contains(&id)) {
                already += 1;
                continue;
            }
            let Some((c, body)) = cases.get_mut(&user) else {
                continue;
            };
            // The timeline: this user's accesses to the alert's patients.
            let alerted: BTreeSet<u32> = al.events.iter().copied().collect();
            let mut external = Vec::new();
            for (i, a) in world.accesses.iter().enumerate() {
                if a.user != al.user || !al.patients.contains(&a.patient) || external.len() >= 200 {
                    continue;
                }
                let Some(p) = world.patients.get(a.patient.ix()) else {
                    continue;
                };
                let because = out
                    .explanations
                    .get(i)
                    .map_or(Because::Unexplained, |e| e.because);
                external.push(ExternalAccess {
                    event_id: a.event_id.clone(),
                    time: a.time,
                    patient: format!("ext:{}", p.id),
                    patient_name: Some(name(&p.given, &p.family)),
                    action: a.action.as_str().to_owned(),
                    alerted: alerted.contains(&u32::try_from(i).unwrap_or(u32::MAX)),
                    explanation: Explained {
                        patient: format!("ext:{}", p.id),
                        code: because.code().to_owned(),
                        strength: strength_name(because.strength()).to_owned(),
                        text: because.describe(world),
                    },
                });
            }
            body.first = body.first.min(al.first);
            body.last = body.last.max(al.last);
            body.kinds.insert(al.kind.as_str().to_owned());
            body.patients.extend(pats.iter().cloned());
            c.score = c.score.max(al.score) + if c.alerts > 0 { 0.02 } else { 0.0 };
            c.alerts += 1;
            c.updated = now;
            let b = AlertBody {
                user: user.clone(),
                patients: pats,
                events: Vec::new(),
                kind: al.kind.as_str().to_owned(),
                kinds: al.kinds.iter().map(|k| k.as_str().to_owned()).collect(),
                reason: al.reason.clone(),
                external,
            };
            alerts.push(MonitorAlert {
                sealed: self.seal_monitor("alert", &id, &b)?,
                id,
                case_id: c.id.clone(),
                kind: al.kind.as_str().to_owned(),
                score: (al.score * 1e6).round() / 1e6,
                created: now,
            });
        }
        let mut case_rows = Vec::new();
        for (_, (mut c, body)) in cases {
            if c.alerts == 0 {
                continue;
            }
            c.sealed = self.seal_monitor("case", &c.id, &body)?;
            case_rows.push(c);
        }
        let report = ImportReport {
            accesses: world.accesses.len(),
            alerts: alerts.len(),
            already,
            cases: case_rows.len(),
        };
        // The cursor stays where it is; a live pass moving it meanwhile
        // only means trying again.
        let mut attempt = 0;
        loop {
            let cursor = self.store.monitor_cursor().await?;
            let batch = MonitorBatch {
                from: cursor,
                to: cursor,
                explanations: Vec::new(),
                alerts: alerts.clone(),
                cases: case_rows.clone(),
            };
            match self.store.commit_monitor_batch(batch).await {
                Ok(()) => break,
                Err(StoreError::MonitorCursor) if attempt < 20 => attempt += 1,
                Err(e) => return Err(e.into()),
            }
        }
        let mut ev = Event::new(Category::Administration, "monitor-import", Action::C);
        ev.resources = case_rows.iter().map(|c| format!("case/{}", c.id)).collect();
        self.audit(who, ev).await?;
        Ok(report)
    }
}

/// The accesses an audit entry records: one per patient, for record
/// operations by people (apps acting for a person included; not operators
/// or backend services).
fn seen_of(index: u64, e: &Entry) -> Vec<Seen> {
    if e.category != Category::Rest || e.patients.is_empty() {
        return Vec::new();
    }
    // People are monitored; backend services acting without a person
    // (client credentials, system scopes) are, like operators, not decided
    // by relationships and have no household, colleagues or hours: their
    // accesses stay in the trail and its search, not in monitoring.
    let Some(user) = e.agent.account.clone() else {
        return Vec::new();
    };
    let action = match (e.action, e.subtype.as_str()) {
        (_, "export") => monitor::Action::Export,
        (_, s) if s.starts_with("search") => monitor::Action::Search,
        (Action::R, _) => monitor::Action::View,
        (Action::E, _) => monitor::Action::Search,
        _ => monitor::Action::Modify,
    };
    let emergency = e.policy.as_ref().is_some_and(|p| !p.grants.is_empty());
    e.patients
        .iter()
        .map(|p| Seen {
            index,
            time: e.recorded,
            user: user.clone(),
            patient: p.clone(),
            action,
            emergency,
            refused: e.outcome != 0,
        })
        .collect()
}

/// The world a pass judges: the context, then the history and the new
/// accesses (those whose user or patient the context does not know are
/// left out); with the positions of the new ones and their audit indexes.
fn assemble(context: &World, history: &[Seen], fresh: &[Seen]) -> (World, HashMap<u32, u64>) {
    let mut world = context.clone();
    let (users, patients) = id_maps(context);
    let mut new_positions = HashMap::new();
    for (is_new, s) in history
        .iter()
        .map(|s| (false, s))
        .chain(fresh.iter().map(|s| (true, s)))
    {
        let (Some(&user), Some(&patient)) =
            (users.get(s.user.as_str()), patients.get(s.patient.as_str()))
        else {
            continue;
        };
        if is_new {
            new_positions.insert(
                u32::try_from(world.accesses.len()).unwrap_or(u32::MAX),
                s.index,
            );
        }
        world.accesses.push(Access {
            event_id: s.index.to_string(),
            time: s.time / 1_000_000,
            user,
            patient,
            action: s.action,
            resource_type: String::new(),
            workstation: String::new(),
            record_count: 1,
            emergency: s.emergency,
            refused: s.refused,
        });
    }
    (world, new_positions)
}

/// The users' and patients' ids in a world, to their indexes.
fn id_maps(w: &World) -> (HashMap<String, UserIx>, HashMap<String, PatientIx>) {
    let ix = |i: usize| u32::try_from(i).unwrap_or(u32::MAX);
    (
        w.users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.id.clone(), UserIx(ix(i))))
            .collect(),
        w.patients
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id.clone(), PatientIx(ix(i))))
            .collect(),
    )
}

fn split_name(n: &str) -> (String, String) {
    match n.trim().rsplit_once(' ') {
        Some((g, f)) => (g.to_owned(), f.to_owned()),
        None => (String::new(), n.trim().to_owned()),
    }
}

fn rfc3339(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
