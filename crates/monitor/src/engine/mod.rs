//! Explain every access, detect the suspicious ones, and group and rank
//! them as alerts.
//!
//! An access is explained, strongest first, by:
//! - **direct** relationships in the records: the patient themself, care
//!   team, attending, consultation participant (its window plus a grace
//!   period), appointment, break-the-glass grant, the user's own order;
//! - **workflow**: an order to the user's department, registration around a
//!   visit, billing, coding and record completion after discharge;
//! - **learned** patterns: what the user's peer group (department and role)
//!   routinely opens, and continuity with an earlier explained access.
//!
//! Detectors then look at what the explanation leaves open. Each alert
//! names its leading kind, a score (higher is riskier) and a reason in
//! plain language that holds no values from records.

mod detect;
mod index;
mod learn;

use jiff::tz::TimeZone;

pub use detect::{Alert, Output, Suppress, detect};
pub use index::{FastMap, Index, RelKind};
pub use learn::{ANY, Learned, Phase, SAME, template_key};

use crate::model::{Access, DeptIx, PatientIx, Time, UserIx, World};

const HOUR: Time = 3_600;
const DAY: Time = 86_400;

/// The engine's settings. The defaults are what a hospital would start
/// with; the windows are documented in `docs/monitoring.md`.
#[derive(Clone, Debug)]
pub struct Config {
    /// The organisation's time zone, for hours and days.
    pub timezone: TimeZone,
    /// How long after a care relationship ends it still explains access.
    pub follow_up: Time,
    /// How long after a consultation's window its participants may still
    /// open the record.
    pub consult_grace: Time,
    /// Workflow windows.
    pub order_before: Time,
    pub order_after: Time,
    pub registration_before: Time,
    pub registration_after: Time,
    pub billing_after: Time,
    /// Role or department words (lower case) that mark registration and
    /// billing/coding/record-completion staff.
    pub registration_words: Vec<String>,
    pub billing_words: Vec<String>,
    /// Learned patterns: an encounter is "active" from `active_before`
    /// before its start to its end, "recent" from then to `recent_after`
    /// after its end.
    pub active_before: Time,
    pub recent_after: Time,
    /// A template is routine when at least this many users of the group,
    /// and this share of the group, used it, at least this often.
    pub routine_min_users: u32,
    pub routine_share: f64,
    pub routine_min_accesses: u32,
    /// Continuity: an explained relationship explains repeat access this
    /// long after its last explained access.
    pub continuity: Time,
    /// Hours: a user needs this much history to have a pattern; an hour
    /// (with its neighbours) below this share of their accesses is out of
    /// pattern.
    pub hours_min_history: u32,
    pub hours_rare_share: f32,
    /// Volume: a day is unusual above this many distinct patients and this
    /// multiple of the user's median and of the group's 95th percentile.
    pub volume_min_patients: u32,
    pub volume_own_factor: f64,
    pub volume_group_factor: f64,
    /// A day with at least this many patients that nothing explains is a
    /// volume incident whatever the usual workload.
    pub volume_min_unexplained: u32,
    /// A print or export of more records than this (and than the group's
    /// 99th percentile) is unusual.
    pub bulk_records: u32,
    /// Break-the-glass needs a clinical event within this window.
    pub emergency_window: Time,
    /// Accesses of one user to one patient within this gap form one alert.
    pub incident_gap: Time,
    /// Emit `unexplained` alerts (no other signal) only for users whose
    /// share of unexplained distinct patients is at most this (a user who
    /// is routinely unexplained is a modelling gap, not snooping), and at
    /// most this many per user.
    pub unexplained_max_share: f64,
    pub unexplained_max_per_user: usize,
}

impl Default for Config {
    fn default() -> Config {
        let words = |w: &[&str]| w.iter().map(|s| (*s).to_owned()).collect();
        Config {
            timezone: TimeZone::UTC,
            follow_up: 30 * DAY,
            consult_grace: 36 * HOUR,
            order_before: DAY,
            order_after: 3 * DAY,
            registration_before: 3 * DAY,
            registration_after: DAY,
            billing_after: 30 * DAY,
            registration_words: words(&["regist", "admission", "front desk", "scheduling"]),
            billing_words: words(&["billing", "coder", "coding", "medical records"]),
            active_before: 3 * DAY,
            recent_after: 60 * DAY,
            routine_min_users: 3,
            routine_share: 0.1,
            routine_min_accesses: 5,
            continuity: 90 * DAY,
            hours_min_history: 40,
            hours_rare_share: 0.01,
            volume_min_patients: 30,
            volume_own_factor: 3.0,
            volume_group_factor: 1.5,
            volume_min_unexplained: 12,
            bulk_records: 200,
            emergency_window: 24 * HOUR,
            incident_gap: 14 * DAY,
            unexplained_max_share: 0.5,
            unexplained_max_per_user: 3,
        }
    }
}

/// An access's local time in the organisation's zone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Local {
    pub hour: u8,
    /// Days since the Unix epoch in local time.
    pub day: i32,
}

/// A world with its context indexed, its accesses in time order and their
/// local times.
pub struct Prepared<'w> {
    pub world: &'w World,
    pub index: &'w Index,
    /// Access indexes sorted by time (stable).
    pub order: Vec<u32>,
    pub local: Vec<Local>,
}

impl<'w> Prepared<'w> {
    /// Sorts and localises the accesses of `world`.
    pub fn new(world: &'w World, index: &'w Index, cfg: &Config) -> Prepared<'w> {
        let mut order: Vec<u32> =
            (0..u32::try_from(world.accesses.len()).unwrap_or(u32::MAX)).collect();
        order.sort_by_key(|&i| world.accesses.get(i as usize).map_or(0, |a| a.time));
        let local = localise(&world.accesses, &cfg.timezone);
        Prepared {
            world,
            index,
            order,
            local,
        }
    }
}

/// Local hour and day of each access. Offsets are looked up once per UTC
/// hour seen (zones change offset on hour boundaries).
fn localise(accesses: &[Access], tz: &TimeZone) -> Vec<Local> {
    let mut cache: FastMap<i64, i64> = FastMap::default();
    accesses
        .iter()
        .map(|a| {
            let hour_start = a.time.div_euclid(HOUR);
            let offset = *cache.entry(hour_start).or_insert_with(|| {
                jiff::Timestamp::from_second(hour_start * HOUR)
                    .map(|ts| i64::from(tz.to_offset(ts).seconds()))
                    .unwrap_or(0)
            });
            let local = a.time + offset;
            Local {
                hour: u8::try_from(local.rem_euclid(DAY) / HOUR).unwrap_or(0),
                day: i32::try_from(local.div_euclid(DAY)).unwrap_or(0),
            }
        })
        .collect()
}

/// How strongly an access is explained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Strength {
    None,
    Learned,
    Workflow,
    Direct,
}

/// Why an access happened, as far as the records and history show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Because {
    /// The patient opened their own record.
    PatientSelf,
    /// A direct relationship, possibly through an encounter.
    Relationship {
        kind: RelKind,
        encounter: Option<u32>,
    },
    /// An emergency access (break-the-glass) with no grant on record.
    Emergency,
    /// An order for the patient to the user's department.
    DepartmentOrder { order: u32 },
    /// Registration around a visit.
    Registration { encounter: u32 },
    /// Billing, coding or record completion after an encounter.
    Billing { encounter: u32 },
    /// The user's peer group routinely opens such records.
    PeerPattern { phase: Phase, department: DeptIx },
    /// Repeat access within an explained relationship.
    Continuity { since: Time },
    /// Nothing explains it.
    Unexplained,
}

impl Because {
    /// How strong this explanation is.
    pub fn strength(self) -> Strength {
        match self {
            Because::PatientSelf | Because::Relationship { .. } | Because::Emergency => {
                Strength::Direct
            }
            Because::DepartmentOrder { .. }
            | Because::Registration { .. }
            | Because::Billing { .. } => Strength::Workflow,
            Because::PeerPattern { .. } | Because::Continuity { .. } => Strength::Learned,
            Because::Unexplained => Strength::None,
        }
    }

    /// A short machine name (`care_team`, `attending`, `peer_pattern`, …).
    pub fn code(self) -> &'static str {
        match self {
            Because::PatientSelf => "patient_self",
            Because::Relationship { kind, .. } => match kind {
                RelKind::CareTeam => "care_team",
                RelKind::Attending => "attending",
                RelKind::Consultation => "consultation",
                RelKind::Appointment => "appointment",
                RelKind::BreakGlass => "break_glass",
                RelKind::Orderer => "orderer",
            },
            Because::Emergency => "emergency",
            Because::DepartmentOrder { .. } => "department_order",
            Because::Registration { .. } => "registration",
            Because::Billing { .. } => "billing",
            Because::PeerPattern { .. } => "peer_pattern",
            Because::Continuity { .. } => "continuity",
            Because::Unexplained => "unexplained",
        }
    }

    /// The explanation in plain language, naming departments and
    /// encounter ids (never values from records).
    pub fn describe(self, world: &World) -> String {
        let dept = |d: DeptIx| {
            world
                .departments
                .get(d.ix())
                .cloned()
                .unwrap_or_else(|| "another department".to_owned())
        };
        let enc = |e: u32| {
            world
                .encounters
                .get(e as usize)
                .map(|e| format!("encounter {} ({})", e.id, dept(e.department)))
                .unwrap_or_else(|| "an encounter".to_owned())
        };
        match self {
            Because::PatientSelf => "the patient opened their own record".to_owned(),
            Because::Relationship { kind, encounter } => {
                let what = match kind {
                    RelKind::CareTeam => "on the patient's care team",
                    RelKind::Attending => "the attending clinician",
                    RelKind::Consultation => "a participant of the patient's consultation",
                    RelKind::Appointment => "a participant of the patient's appointment",
                    RelKind::BreakGlass => "under a break-the-glass grant",
                    RelKind::Orderer => "ordered care for the patient",
                };
                match encounter {
                    Some(e) => format!("{what} ({})", enc(e)),
                    None => what.to_owned(),
                }
            }
            Because::Emergency => "emergency access (break-the-glass)".to_owned(),
            Because::DepartmentOrder { order } => match world.orders.get(order as usize) {
                Some(o) => format!(
                    "an order {} for the patient to {}",
                    o.id,
                    dept(o.service_department)
                ),
                None => "an order to the user's department".to_owned(),
            },
            Because::Registration { encounter } => {
                format!("registration around a visit ({})", enc(encounter))
            }
            Because::Billing { encounter } => {
                format!("billing, coding or records work after {}", enc(encounter))
            }
            Because::PeerPattern { phase, department } => format!(
                "users of the same department and role routinely open records of patients {} {}",
                match phase {
                    Phase::Active => "currently treated in",
                    Phase::Recent => "recently discharged from",
                },
                dept(department)
            ),
            Because::Continuity { since } => format!(
                "follow-up of an explained relationship (last explained {} days before)",
                since / DAY
            ),
            Because::Unexplained => "nothing in the records explains this access".to_owned(),
        }
    }
}

/// The explanation of one access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Explanation {
    pub because: Because,
    /// Set when the user's only relationships with the patient came from
    /// consultations that had ended (with their grace period) before.
    pub consult_expired: bool,
}

/// Explains accesses one at a time, in time order, keeping the state that
/// continuity needs.
pub struct Explainer<'a> {
    index: &'a Index,
    learned: &'a Learned,
    cfg: &'a Config,
    /// The last strongly explained (not consultation) access per pair.
    last_explained: FastMap<u64, Time>,
}

impl<'a> Explainer<'a> {
    pub fn new(index: &'a Index, learned: &'a Learned, cfg: &'a Config) -> Explainer<'a> {
        Explainer {
            index,
            learned,
            cfg,
            last_explained: FastMap::default(),
        }
    }

    /// Explains one access. Accesses must come in time order.
    pub fn explain(&mut self, a: &Access) -> Explanation {
        let e = self.explain_at(a.user, a.patient, a.time, a.emergency);
        let key = index::pair(a.user, a.patient);
        let consult = matches!(
            e.because,
            Because::Relationship {
                kind: RelKind::Consultation | RelKind::BreakGlass,
                ..
            } | Because::Emergency
        );
        if e.because.strength() >= Strength::Workflow && !consult {
            self.last_explained.insert(key, a.time);
        }
        e
    }

    fn explain_at(&self, u: UserIx, p: PatientIx, t: Time, emergency: bool) -> Explanation {
        let ix = self.index;
        let cfg = self.cfg;
        let (Some(user), Some(patient)) = (ix.users.get(u.ix()), ix.patients.get(p.ix())) else {
            return Explanation {
                because: Because::Unexplained,
                consult_expired: false,
            };
        };
        if user.patient == Some(p) {
            return explained(Because::PatientSelf);
        }
        // Direct relationships: prefer lasting ones over consultations.
        let rels = ix.rels(u, p);
        let mut consult_expired = !rels.is_empty();
        let mut best: Option<Because> = None;
        for r in rels {
            if r.kind != RelKind::Consultation || r.to >= t {
                consult_expired = false;
            }
            if r.from <= t && t <= r.to {
                let b = Because::Relationship {
                    kind: r.kind,
                    encounter: r.encounter,
                };
                if best.is_none() || r.kind != RelKind::Consultation {
                    best = Some(b);
                }
                if r.kind != RelKind::Consultation && r.kind != RelKind::BreakGlass {
                    break;
                }
            }
        }
        if let Some(b) = best {
            return Explanation {
                because: b,
                consult_expired: false,
            };
        }
        if emergency {
            return Explanation {
                because: Because::Emergency,
                consult_expired,
            };
        }
        // Workflow.
        for o in ix.orders_of(patient) {
            if o.at > t + cfg.order_before {
                break;
            }
            if o.department == user.department && t <= o.at + cfg.order_after {
                return Explanation {
                    because: Because::DepartmentOrder { order: o.ix },
                    consult_expired,
                };
            }
        }
        if user.registration || user.billing {
            for e in ix.encounters_of(patient) {
                if e.start > t + cfg.registration_before {
                    break;
                }
                if user.registration
                    && e.start - cfg.registration_before <= t
                    && t <= e
                        .start
                        .saturating_add(cfg.registration_after)
                        .min(e.end.saturating_add(cfg.registration_after))
                {
                    return Explanation {
                        because: Because::Registration { encounter: e.ix },
                        consult_expired,
                    };
                }
                if user.billing
                    && e.end != Time::MAX
                    && e.start <= t
                    && t <= e.end.saturating_add(cfg.billing_after)
                {
                    return Explanation {
                        because: Because::Billing { encounter: e.ix },
                        consult_expired,
                    };
                }
            }
        }
        // Learned: continuity, then peer patterns.
        if !consult_expired
            && let Some(&last) = self.last_explained.get(&index::pair(u, p))
            && t - last <= cfg.continuity
        {
            return Explanation {
                because: Because::Continuity { since: t - last },
                consult_expired,
            };
        }
        let group = (user.department, user.role);
        let mut found = None;
        learn::phases(ix, patient, t, cfg, |phase, dept| {
            if found.is_none()
                && (self.learned.routine((group, phase, dept))
                    || self.learned.routine((group, phase, learn::ANY))
                    || (dept == user.department
                        && phase == Phase::Active
                        && self
                            .learned
                            .routine(((learn::ANY, user.role), phase, learn::SAME))))
            {
                found = Some(Because::PeerPattern {
                    phase,
                    department: dept,
                });
            }
        });
        Explanation {
            because: found.unwrap_or(Because::Unexplained),
            consult_expired,
        }
    }

    /// The direct and workflow explanation only (no learned patterns):
    /// what a rule-based auditor without history would see.
    pub fn explain_by_records(&self, a: &Access) -> Because {
        let e = self.explain_at(a.user, a.patient, a.time, a.emergency);
        if e.because.strength() >= Strength::Workflow {
            e.because
        } else {
            Because::Unexplained
        }
    }
}

fn explained(because: Because) -> Explanation {
    Explanation {
        because,
        consult_expired: false,
    }
}

/// Explains and detects over a whole world: learns from its accesses, then
/// explains each and emits alerts, highest score first.
pub fn run(world: &World, cfg: &Config, suppress: &[Suppress]) -> Output {
    let index = Index::build(world, cfg);
    let prep = Prepared::new(world, &index, cfg);
    let learned = Learned::fit(&prep, cfg);
    detect::detect(&prep, &learned, cfg, suppress)
}

/// The naive baseline: every (user, patient) pair with an access that no
/// direct relationship or workflow explains is one `unexplained` alert
/// (accesses of the pair within the incident gap grouped), scored by its
/// number of accesses.
pub fn baseline(world: &World, cfg: &Config) -> Vec<Alert> {
    let index = Index::build(world, cfg);
    let prep = Prepared::new(world, &index, cfg);
    let learned = Learned::default();
    let ex = Explainer::new(&index, &learned, cfg);
    let mut open: FastMap<u64, usize> = FastMap::default();
    let mut alerts: Vec<Alert> = Vec::new();
    for &i in &prep.order {
        let Some(a) = world.accesses.get(i as usize) else {
            continue;
        };
        if ex.explain_by_records(a) != Because::Unexplained {
            continue;
        }
        let key = index::pair(a.user, a.patient);
        let slot = open.get(&key).copied().filter(|&j| {
            alerts
                .get(j)
                .is_some_and(|al: &Alert| a.time - al.last <= cfg.incident_gap)
        });
        match slot.and_then(|j| alerts.get_mut(j)) {
            Some(al) => {
                al.events.push(i);
                al.last = a.time;
                al.score += 1.0;
            }
            None => {
                open.insert(key, alerts.len());
                alerts.push(Alert {
                    user: a.user,
                    patients: vec![a.patient],
                    events: vec![i],
                    kind: crate::Kind::Unexplained,
                    kinds: vec![crate::Kind::Unexplained],
                    score: 1.0,
                    reason: "no care relationship, order or workflow explains this access"
                        .to_owned(),
                    first: a.time,
                    last: a.time,
                });
            }
        }
    }
    alerts.sort_by(|a, b| b.score.total_cmp(&a.score));
    alerts
}

/// Alerts as records with the input's ids, in the order given. Alert ids
/// are `A` and the first event's id, unique within a run.
pub fn records(world: &World, alerts: &[Alert]) -> Vec<crate::AlertRecord> {
    let mut used: FastMap<u64, u32> = FastMap::default();
    alerts
        .iter()
        .map(|a| {
            let first = a
                .events
                .first()
                .and_then(|e| world.accesses.get(*e as usize))
                .map_or("", |x| x.event_id.as_str());
            let n = used
                .entry(u64::from(a.events.first().copied().unwrap_or(0)))
                .or_default();
            *n += 1;
            let alert_id = if *n == 1 {
                format!("A-{first}")
            } else {
                format!("A-{first}-{n}")
            };
            let mut event_ids: Vec<String> = Vec::with_capacity(a.events.len());
            for e in &a.events {
                if let Some(x) = world.accesses.get(*e as usize)
                    && event_ids.last() != Some(&x.event_id)
                {
                    event_ids.push(x.event_id.clone());
                }
            }
            crate::AlertRecord {
                alert_id,
                staff_id: world
                    .users
                    .get(a.user.ix())
                    .map_or_else(String::new, |u| u.id.clone()),
                patient_ids: a
                    .patients
                    .iter()
                    .filter_map(|p| world.patients.get(p.ix()).map(|p| p.id.clone()))
                    .collect(),
                event_ids,
                kind: a.kind,
                score: (a.score * 1e6).round() / 1e6,
                reason: a.reason.clone(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_time_follows_the_zone() {
        let a = |time| Access {
            event_id: "e".into(),
            time,
            user: UserIx(0),
            patient: PatientIx(0),
            action: crate::model::Action::View,
            resource_type: String::new(),
            workstation: String::new(),
            record_count: 1,
            emergency: false,
            refused: false,
        };
        // 2026-01-15T03:30:00Z is 22:30 the day before in New York (UTC-5),
        // and 2026-07-15T03:30:00Z is 23:30 (UTC-4).
        let tz = TimeZone::get("America/New_York").unwrap_or(TimeZone::UTC);
        let l = localise(&[a(1_768_447_800), a(1_784_086_200)], &tz);
        assert_eq!(l.first().map(|l| l.hour), Some(22));
        assert_eq!(l.get(1).map(|l| l.hour), Some(23));
        let utc = localise(&[a(1_768_447_800)], &TimeZone::UTC);
        assert_eq!(utc.first().map(|l| l.hour), Some(3));
        assert_eq!(
            utc.first().map(|l| l.day),
            l.first().map(|l| l.day + 1),
            "the local day is the day before"
        );
    }
}
