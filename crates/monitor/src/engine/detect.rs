//! The detectors, and how their signals become ranked alerts.

use crate::alert::Kind;
use crate::model::{Action, DeptIx, PatientIx, RoleIx, Time, UserIx};

use super::index::{FastMap, PatientCtx, UserCtx, pair};
use super::learn::{Learned, group_key};
use super::{Because, Config, DAY, Explainer, Explanation, Prepared, RelKind, Strength};

/// One alert: a user, the patients and accesses it concerns, its leading
/// kind and every kind that fired, a score and a reason.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    pub user: UserIx,
    pub patients: Vec<PatientIx>,
    /// Indexes into the world's accesses, in time order.
    pub events: Vec<u32>,
    pub kind: Kind,
    pub kinds: Vec<Kind>,
    pub score: f64,
    pub reason: String,
    pub first: Time,
    pub last: Time,
}

/// An officer's confirmation that a pattern is legitimate: alerts that
/// match every field given are not emitted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Suppress {
    pub user: Option<UserIx>,
    pub patient: Option<PatientIx>,
    pub kind: Option<Kind>,
    pub department: Option<DeptIx>,
    pub role: Option<RoleIx>,
}

/// What a run produces: an explanation per access (indexed like the
/// world's accesses) and the alerts, highest score first.
#[derive(Clone, Debug)]
pub struct Output {
    pub explanations: Vec<Explanation>,
    pub alerts: Vec<Alert>,
}

/// The weight of each kind: how much a privacy officer should care about
/// it before anything else is known.
pub fn weight(k: Kind) -> f64 {
    match k {
        Kind::Terminated => 0.95,
        Kind::SelfAccess => 0.9,
        Kind::Family => 0.88,
        Kind::Vip => 0.82,
        Kind::Coworker => 0.8,
        Kind::Volume => 0.78,
        Kind::Deceased => 0.74,
        Kind::BreakGlass => 0.7,
        Kind::Neighbour => 0.68,
        Kind::OutsideConsult => 0.62,
        Kind::AfterHours => 0.56,
        Kind::Unexplained => 0.4,
    }
}

fn bit(k: Kind) -> u16 {
    1 << (k as u16)
}

fn kinds_of(bits: u16) -> Vec<Kind> {
    Kind::ALL
        .into_iter()
        .filter(|k| bits & bit(*k) != 0)
        .collect()
}

/// Family links between a user and a patient, strongest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FamilyLink {
    Address,
    Contact,
    SurnameZip,
}

fn family(u: &UserCtx, p: &PatientCtx) -> Option<FamilyLink> {
    if u.addr.is_some() && u.addr == p.addr {
        return Some(FamilyLink::Address);
    }
    if u.name.is_some_and(|n| p.contact_names.contains(&n))
        || u.addr.is_some_and(|a| p.contact_addrs.contains(&a))
    {
        return Some(FamilyLink::Contact);
    }
    if u.surname_zip.is_some() && u.surname_zip == p.surname_zip {
        return Some(FamilyLink::SurnameZip);
    }
    None
}

/// Signals of one access given its explanation.
struct Signals {
    bits: u16,
    family: Option<FamilyLink>,
    same_department: bool,
}

fn signals(
    prep: &Prepared<'_>,
    learned: &Learned,
    cfg: &Config,
    i: u32,
    e: &Explanation,
) -> Signals {
    let none = Signals {
        bits: 0,
        family: None,
        same_department: false,
    };
    let ix = prep.index;
    let Some(a) = prep.world.accesses.get(i as usize) else {
        return none;
    };
    let (Some(u), Some(p)) = (ix.users.get(a.user.ix()), ix.patients.get(a.patient.ix())) else {
        return none;
    };
    if e.because == Because::PatientSelf {
        return none;
    }
    let strength = e.because.strength();
    let strong = strength >= Strength::Workflow;
    let nothing = strength == Strength::None;
    let mut bits = 0u16;
    if u.termination.is_some_and(|end| a.time > end) {
        bits |= bit(Kind::Terminated);
    }
    // A search lists patients without opening their records (the
    // registrar who searches a family name sees namesakes): its rows raise
    // only the account-level signal above. Opening a listed record is a
    // separate access.
    if a.action == Action::Search {
        return Signals {
            bits,
            family: None,
            same_department: false,
        };
    }
    let direct = strength == Strength::Direct;
    // Opening one's own record in the course of one's work (a registrar
    // registering their own visit) is explained; a peer routine is not
    // enough.
    if p.employee == Some(a.user) && !strong {
        bits |= bit(Kind::SelfAccess);
    }
    // A household link counts unless a record (care relationship, order,
    // workflow) explains the access; a peer routine is not enough. A shared
    // surname and postcode is weaker and counts only when nothing explains
    // the access.
    let fam = match family(u, p) {
        _ if p.employee == Some(a.user) => None,
        Some(FamilyLink::SurnameZip) if !nothing => None,
        _ if strong => None,
        f => f,
    };
    if fam.is_some() {
        bits |= bit(Kind::Family);
    }
    let mut same_department = false;
    if let Some(v) = p.employee.filter(|v| *v != a.user) {
        same_department = ix
            .users
            .get(v.ix())
            .is_some_and(|v| v.department == u.department);
        if nothing {
            bits |= bit(Kind::Coworker);
        }
    }
    if nothing && u.street.is_some() && u.street == p.street && u.addr != p.addr {
        bits |= bit(Kind::Neighbour);
    }
    if p.vip && nothing {
        bits |= bit(Kind::Vip);
    }
    if nothing && p.deceased.is_some_and(|d| a.time > d) {
        bits |= bit(Kind::Deceased);
    }
    let emergency = a.emergency
        || matches!(
            e.because,
            Because::Relationship {
                kind: RelKind::BreakGlass,
                ..
            } | Because::Emergency
        );
    if emergency {
        let w = cfg.emergency_window;
        let event = ix
            .encounters_of(p)
            .iter()
            .any(|en| en.start - w <= a.time && a.time <= en.end.saturating_add(w));
        if !event {
            bits |= bit(Kind::BreakGlass);
        }
    }
    if e.consult_expired && !strong {
        bits |= bit(Kind::OutsideConsult);
    }
    if nothing {
        bits |= bit(Kind::Unexplained);
    }
    // Out-of-pattern hours: with nothing to explain it, any hour at which
    // the user almost never works; with only a workflow or a peer routine
    // to explain it, such an hour at night (22:00-06:00); a direct
    // relationship (the on-call physician's own inpatient) explains any
    // hour.
    let local = prep.local.get(i as usize).copied().unwrap_or_default();
    let night = local.hour >= 22 || local.hour < 6;
    if let Some(h) = learned
        .hours
        .get(a.user.ix())
        .copied()
        .flatten()
        .filter(|_| nothing || (!direct && night))
    {
        let at = |d: i32| {
            let k = (i32::from(local.hour) + d).rem_euclid(24) as usize;
            h.get(k).copied().unwrap_or(0)
        };
        let total: u32 = h.iter().sum();
        // The access itself is part of the history: a handful at this
        // hour (and the next and previous) is still out of pattern.
        // Work that a workflow explains may run past a shift's end, so
        // it is judged over two hours either side.
        let rare = (f64::from(total) * f64::from(cfg.hours_rare_share)).max(2.0);
        let near = at(-1) + at(0) + at(1) + if nothing { 0 } else { at(-2) + at(2) };
        if f64::from(near) <= rare {
            bits |= bit(Kind::AfterHours);
        }
    }
    Signals {
        bits,
        family: fam,
        same_department,
    }
}

/// An alert being assembled.
struct Group {
    user: UserIx,
    patient: PatientIx,
    bits: u16,
    family: Option<FamilyLink>,
    same_department: bool,
    events: Vec<u32>,
    first: Time,
    last: Time,
    hour: u8,
}

/// Explains every access of `prep` in time order and turns the signals
/// into alerts.
pub fn detect(
    prep: &Prepared<'_>,
    learned: &Learned,
    cfg: &Config,
    suppress: &[Suppress],
) -> Output {
    let world = prep.world;
    let ix = prep.index;
    let mut explainer = Explainer::new(ix, learned, cfg);
    let mut explanations = vec![
        Explanation {
            because: Because::Unexplained,
            consult_expired: false,
        };
        world.accesses.len()
    ];
    let mut groups: Vec<Group> = Vec::new();
    let mut open: FastMap<u64, usize> = FastMap::default();
    // Per user and local day: distinct patients, and the accesses not
    // explained by records.
    let mut days: FastMap<(u32, i32), Day> = FastMap::default();
    // Per user: distinct patients, and those with nothing to explain them.
    let mut user_patients: FastMap<u64, bool> = FastMap::default();
    let mut bulk: Vec<u32> = Vec::new();

    for &i in &prep.order {
        let Some(a) = world.accesses.get(i as usize) else {
            continue;
        };
        let e = explainer.explain(a);
        if let Some(slot) = explanations.get_mut(i as usize) {
            *slot = e;
        }
        let s = signals(prep, learned, cfg, i, &e);
        let local = prep.local.get(i as usize).copied().unwrap_or_default();
        let strong = e.because.strength() >= Strength::Workflow;
        let key = pair(a.user, a.patient);
        let unexplained = e.because == Because::Unexplained;
        let seen = user_patients.entry(key).or_insert(unexplained);
        *seen = *seen && unexplained;

        let day = days.entry((a.user.0, local.day)).or_default();
        if day.patients.insert(a.patient.0, ()).is_none() && !strong {
            day.unexplained.push(i);
            if e.because == Because::Unexplained && a.action != Action::Search {
                day.nothing += 1;
            }
        }
        if let Some(u) = ix.users.get(a.user.ix()).filter(|_| {
            matches!(a.action, Action::Print | Action::Export) && a.record_count > cfg.bulk_records
        }) {
            let p95 = learned
                .group_records_p95
                .get(&group_key((u.department, u.role)))
                .copied()
                .unwrap_or(0);
            if f64::from(a.record_count) > 3.0 * f64::from(p95) {
                bulk.push(i);
            }
        }

        if s.bits == 0 {
            continue;
        }
        let slot = open.get(&key).copied().filter(|&g| {
            groups
                .get(g)
                .is_some_and(|g| a.time - g.last <= cfg.incident_gap)
        });
        match slot.and_then(|g| groups.get_mut(g)) {
            Some(g) => {
                g.bits |= s.bits;
                g.family = g.family.or(s.family);
                g.same_department |= s.same_department;
                g.events.push(i);
                g.last = a.time;
            }
            None => {
                open.insert(key, groups.len());
                groups.push(Group {
                    user: a.user,
                    patient: a.patient,
                    bits: s.bits,
                    family: s.family,
                    same_department: s.same_department,
                    events: vec![i],
                    first: a.time,
                    last: a.time,
                    hour: local.hour,
                });
            }
        }
    }

    // Volume: unusual days.
    let mut alerts: Vec<Alert> = Vec::new();
    let mut in_volume: FastMap<u32, ()> = FastMap::default();
    let mut day_keys: Vec<(u32, i32)> = days.keys().copied().collect();
    day_keys.sort_unstable();
    for k in day_keys {
        let Some(d) = days.get(&k) else { continue };
        let (user, _day) = k;
        let Some(u) = ix.users.get(user as usize) else {
            continue;
        };
        let n = d.patients.len() as f64;
        let own = f64::from(
            learned
                .daily_median
                .get(user as usize)
                .copied()
                .unwrap_or(0),
        );
        let peers = f64::from(
            learned
                .group_daily_p95
                .get(&group_key((u.department, u.role)))
                .copied()
                .unwrap_or(0),
        );
        let threshold = f64::from(cfg.volume_min_patients)
            .max(cfg.volume_own_factor * own)
            .max(cfg.volume_group_factor * peers);
        // The unexplained part must itself be large: a busy day of
        // explained work is not a volume incident.
        let odd = d.unexplained.len() as f64;
        let busy = n > threshold && odd >= f64::from(cfg.volume_min_patients) / 2.0;
        // Many records that nothing at all explains, on one day, is a
        // volume incident whatever the user's usual workload.
        let browsing = d.nothing >= cfg.volume_min_unexplained;
        if !busy && !browsing {
            continue;
        }
        let events = d.unexplained.clone();
        for e in &events {
            in_volume.insert(*e, ());
        }
        let (first, last) = span(world, &events);
        alerts.push(Alert {
            user: UserIx(user),
            patients: patients_of(world, &events),
            score: weight(Kind::Volume) + 0.1 * ((n / threshold).ln()).min(1.0),
            reason: format!(
                "opened {n} patients' records in one day, {odd} of them with no care relationship, order or workflow and {} that nothing explains, against a usual {own} (own median) and {peers} (peers' 95th percentile)",
                d.nothing
            ),
            events,
            kind: Kind::Volume,
            kinds: vec![Kind::Volume],
            first,
            last,
        });
    }
    for i in bulk {
        let Some(a) = world.accesses.get(i as usize) else {
            continue;
        };
        in_volume.insert(i, ());
        alerts.push(Alert {
            user: a.user,
            patients: vec![a.patient],
            events: vec![i],
            kind: Kind::Volume,
            kinds: vec![Kind::Volume],
            score: weight(Kind::Volume),
            reason: format!(
                "a {} of {} records, far above what the user's peers print or export",
                a.action.as_str(),
                a.record_count
            ),
            first: a.time,
            last: a.time,
        });
    }

    // Unexplained-only groups: kept only for users whose unexplained
    // accesses are rare, and only a few per user.
    let mut per_user: FastMap<u32, (u32, u32)> = FastMap::default();
    for (k, unexplained) in &user_patients {
        let e = per_user.entry((k >> 32) as u32).or_default();
        e.0 += 1;
        e.1 += u32::from(*unexplained);
    }
    let mut unexplained_used: FastMap<u32, usize> = FastMap::default();
    let only_unexplained = bit(Kind::Unexplained);

    // Terminated accounts: one alert per user.
    let mut terminated: FastMap<u32, usize> = FastMap::default();

    for g in groups {
        let mut bits = g.bits;
        if bits & bit(Kind::Terminated) != 0 {
            match terminated.get(&g.user.0).and_then(|&j| alerts.get_mut(j)) {
                Some(al) => {
                    al.events.extend(&g.events);
                    if !al.patients.contains(&g.patient) {
                        al.patients.push(g.patient);
                    }
                    al.first = al.first.min(g.first);
                    al.last = al.last.max(g.last);
                    al.score = (al.score + 0.01).min(weight(Kind::Terminated) + 0.2);
                    continue;
                }
                None => {
                    terminated.insert(g.user.0, alerts.len());
                }
            }
        }
        if bits == only_unexplained {
            if g.events.iter().all(|e| in_volume.contains_key(e)) {
                continue;
            }
            let (total, odd) = per_user.get(&g.user.0).copied().unwrap_or((1, 1));
            let share = f64::from(odd) / f64::from(total.max(1));
            let used = unexplained_used.entry(g.user.0).or_default();
            if share > cfg.unexplained_max_share || *used >= cfg.unexplained_max_per_user {
                continue;
            }
            *used += 1;
        }
        // After-hours only counts with nothing else explaining.
        if bits & bit(Kind::AfterHours) != 0 {
            bits &= !bit(Kind::Unexplained);
        }
        let kinds = kinds_of(bits);
        let Some(kind) = kinds
            .iter()
            .copied()
            .max_by(|a, b| weight(*a).total_cmp(&weight(*b)))
        else {
            continue;
        };
        let n = g.events.len();
        let extra = kinds
            .iter()
            .filter(|k| **k != kind && **k != Kind::Unexplained)
            .count();
        let score = weight(kind)
            + 0.04 * extra as f64
            + 0.01 * (n.min(10) as f64)
            + if kind == Kind::Coworker && g.same_department {
                0.04
            } else {
                0.0
            };
        alerts.push(Alert {
            user: g.user,
            patients: vec![g.patient],
            reason: reason(kind, &g, n),
            events: g.events,
            kind,
            kinds,
            score,
            first: g.first,
            last: g.last,
        });
    }

    // Suppressions confirmed by the privacy officer.
    alerts.retain(|a| !suppress.iter().any(|s| suppressed(s, a, ix)));

    // Repeat offenders: several alerts for one user raise each of them.
    let mut count: FastMap<u32, u32> = FastMap::default();
    for a in &alerts {
        *count.entry(a.user.0).or_default() += 1;
    }
    for a in &mut alerts {
        let n = count.get(&a.user.0).copied().unwrap_or(1);
        if n > 1 {
            a.score += 0.03 * f64::from(n - 1).ln_1p();
            a.reason
                .push_str(&format!("; this user has {n} alerts in this period"));
        }
    }
    alerts.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.events.len().cmp(&a.events.len()))
            .then(a.first.cmp(&b.first))
    });
    Output {
        explanations,
        alerts,
    }
}

#[derive(Default)]
struct Day {
    patients: FastMap<u32, ()>,
    /// First accesses of the day to patients no record explains.
    unexplained: Vec<u32>,
    /// How many of those nothing explains at all (not searches).
    nothing: u32,
}

fn span(world: &crate::model::World, events: &[u32]) -> (Time, Time) {
    let times = events
        .iter()
        .filter_map(|e| world.accesses.get(*e as usize).map(|a| a.time));
    let first = times.clone().min().unwrap_or(0);
    let last = times.max().unwrap_or(0);
    (first, last)
}

fn patients_of(world: &crate::model::World, events: &[u32]) -> Vec<PatientIx> {
    let mut seen: FastMap<u32, ()> = FastMap::default();
    let mut out = Vec::new();
    for e in events {
        if let Some(a) = world.accesses.get(*e as usize)
            && seen.insert(a.patient.0, ()).is_none()
        {
            out.push(a.patient);
        }
    }
    out
}

fn suppressed(s: &Suppress, a: &Alert, ix: &super::Index) -> bool {
    let user = ix.users.get(a.user.ix());
    s.user.is_none_or(|u| u == a.user)
        && s.patient.is_none_or(|p| a.patients.contains(&p))
        && s.kind.is_none_or(|k| k == a.kind)
        && s.department
            .is_none_or(|d| user.is_some_and(|u| u.department == d))
        && s.role.is_none_or(|r| user.is_some_and(|u| u.role == r))
}

fn reason(kind: Kind, g: &Group, n: usize) -> String {
    let what = match kind {
        Kind::SelfAccess => "opened their own patient record".to_owned(),
        Kind::Family => match g.family {
            Some(FamilyLink::Address) => {
                "opened the record of a patient who lives at the user's home address".to_owned()
            }
            Some(FamilyLink::Contact) => {
                "opened the record of a patient who lists the user, or the user's address, as a contact".to_owned()
            }
            _ => "opened the record of a patient with the user's surname and postcode".to_owned(),
        },
        Kind::Coworker if g.same_department => {
            "opened the record of a co-worker from the same department".to_owned()
        }
        Kind::Coworker => "opened the record of an employee of the organisation".to_owned(),
        Kind::Neighbour => "opened the record of a patient living on the user's street".to_owned(),
        Kind::Vip => "opened a VIP or restricted record".to_owned(),
        Kind::Deceased => "opened the record of a deceased patient".to_owned(),
        Kind::Volume => "opened an unusual number of records".to_owned(),
        Kind::AfterHours => format!(
            "opened a record at {:02}:00, an hour at which this user almost never works",
            g.hour
        ),
        Kind::Terminated => "used the account after it was terminated".to_owned(),
        Kind::BreakGlass => {
            "used break-the-glass with no clinical event for the patient around that time".to_owned()
        }
        Kind::OutsideConsult => {
            "re-opened the record after the consultation that related the user to the patient had ended".to_owned()
        }
        Kind::Unexplained => {
            "opened a record that no care relationship, order, workflow or peer routine explains".to_owned()
        }
    };
    let why = if matches!(
        kind,
        Kind::Terminated
            | Kind::SelfAccess
            | Kind::BreakGlass
            | Kind::OutsideConsult
            | Kind::Unexplained
            | Kind::AfterHours
    ) {
        String::new()
    } else {
        ", with no care relationship, order or workflow that explains it".to_owned()
    };
    let days = (g.last - g.first) / DAY;
    let accesses = if n == 1 {
        "1 access".to_owned()
    } else if days >= 1 {
        format!("{n} accesses over {} days", days + 1)
    } else {
        format!("{n} accesses")
    };
    format!("{what}{why} ({accesses})")
}
