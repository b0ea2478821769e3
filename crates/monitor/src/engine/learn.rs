//! What the engine learns from history: the routine patterns of peer groups
//! (department and role) towards patients' encounters, each user's working
//! hours, and daily volumes per user and per group.
//!
//! Learning is unsupervised and uses only the access log and its context;
//! a pattern is routine only when several users of a group share it, so a
//! single user's misuse, however repeated, never becomes "routine".

use crate::model::{DeptIx, RoleIx, Time};

use super::index::{FastMap, Index};
use super::{Config, Prepared};

/// How a patient's encounter relates in time to an access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// During the encounter (from a few days before to a few days after).
    Active,
    /// Within weeks after the encounter ended.
    Recent,
}

/// A peer group: users of one department in one role.
pub type Group = (DeptIx, RoleIx);

/// A learned pattern: users of a group routinely open records of patients
/// with an encounter of this phase in this department.
pub type Template = (Group, Phase, DeptIx);

/// Stands for every department in a template learned across departments.
pub const ANY: DeptIx = DeptIx(u32::MAX >> 2);

/// Stands for "the user's own department" in a template learned for a
/// role across departments.
pub const SAME: DeptIx = DeptIx((u32::MAX >> 2) - 1);

/// The learned model.
#[derive(Clone, Debug, Default)]
pub struct Learned {
    /// Routine templates.
    pub templates: FastMap<u64, Routine>,
    /// Each user's accesses per local hour (24 bins), when the user has
    /// enough history to have a pattern.
    pub hours: Vec<Option<[u32; 24]>>,
    /// Each user's median distinct patients per active day.
    pub daily_median: Vec<u32>,
    /// Each group's 95th percentile of distinct patients per user-day,
    /// for groups of at least five users (a smaller group has too few
    /// peers for their days to say what is usual).
    pub group_daily_p95: FastMap<u64, u32>,
    /// Each group's 95th percentile of records per print or export, for
    /// groups with at least twenty of them.
    pub group_records_p95: FastMap<u64, u32>,
}

/// How strongly a template is routine.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Routine {
    pub users: u32,
    pub group_users: u32,
    pub accesses: u32,
}

pub fn group_key(g: Group) -> u64 {
    (u64::from(g.0.0) << 32) | u64::from(g.1.0)
}

/// Set in the keys of templates learned for a role across departments.
const ROLE_WIDE: u64 = 1 << 63;

pub fn template_key(t: Template) -> u64 {
    let ((d, r), phase, e) = t;
    let ph = match phase {
        Phase::Active => 0u64,
        Phase::Recent => 1,
    };
    if d == ANY {
        // Role-wide: department bits left out.
        return ROLE_WIDE | (u64::from(r.0) << 32) | (u64::from(e.0 & 0x7fff_ffff) << 1) | ph;
    }
    ((u64::from(d.0) & 0xf_ffff) << 42)
        | ((u64::from(r.0) & 0x3_ffff) << 24)
        | ((u64::from(e.0) & 0x7f_ffff) << 1)
        | ph
}

/// Visits every (phase, department) a patient's encounters put an access at
/// `t` in.
pub fn phases(
    ix: &Index,
    patient: &super::index::PatientCtx,
    t: Time,
    cfg: &Config,
    mut f: impl FnMut(Phase, DeptIx),
) {
    for e in ix.encounters_of(patient) {
        if e.start > t.saturating_add(cfg.active_before) {
            break;
        }
        if t <= e.end {
            f(Phase::Active, e.department);
        } else if e.end != Time::MAX && t <= e.end.saturating_add(cfg.recent_after) {
            f(Phase::Recent, e.department);
        }
    }
}

fn percentile(v: &mut [u32], q: f64) -> u32 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v.get(i).copied().unwrap_or(0)
}

impl Learned {
    /// Learns from every access in `prep` (the history).
    pub fn fit(prep: &Prepared<'_>, cfg: &Config) -> Learned {
        let ix = prep.index;
        let world = prep.world;
        let nusers = ix.users.len();

        // Group sizes.
        let mut group_users: FastMap<u64, u32> = FastMap::default();
        for u in &ix.users {
            *group_users
                .entry(group_key((u.department, u.role)))
                .or_default() += 1;
        }

        // Templates: distinct users and accesses per template.
        let mut seen: FastMap<(u64, u32), ()> = FastMap::default();
        let mut counts: FastMap<u64, (u32, u32)> = FastMap::default();
        let mut hours = vec![[0u32; 24]; nusers];
        let mut per_user_day: FastMap<(u32, i32), FastMap<u32, ()>> = FastMap::default();
        let mut records: FastMap<u64, Vec<u32>> = FastMap::default();
        // Patterns are learned from the residual: accesses that no record
        // explains (explanation-based auditing). Accesses a record explains
        // say nothing about what else a group routinely does, and search
        // rows list patients without opening them.
        let records_only = Learned::default();
        let explainer = super::Explainer::new(ix, &records_only, cfg);
        for &i in &prep.order {
            let Some(a) = world.accesses.get(i as usize) else {
                continue;
            };
            let (Some(u), Some(p)) = (ix.users.get(a.user.ix()), ix.patients.get(a.patient.ix()))
            else {
                continue;
            };
            let g = (u.department, u.role);
            if a.action != crate::model::Action::Search
                && explainer.explain_by_records(a) == super::Because::Unexplained
            {
                // Count the access under its most telling phase only: a
                // patient treated now whose earlier stay ended last month is
                // "active" here, not "recent".
                let mut active = false;
                phases(ix, p, a.time, cfg, |phase, _| {
                    active |= phase == Phase::Active
                });
                let mut counted_any = false;
                let mut counted_same = false;
                phases(ix, p, a.time, cfg, |phase, dept| {
                    if active && phase == Phase::Recent {
                        return;
                    }
                    let mut count = |k: u64| {
                        let c = counts.entry(k).or_default();
                        c.1 += 1;
                        if seen.insert((k, a.user.0), ()).is_none() {
                            c.0 += 1;
                        }
                    };
                    count(template_key((g, phase, dept)));
                    // The same pattern for any department, once per access.
                    if !counted_any {
                        counted_any = true;
                        count(template_key((g, phase, ANY)));
                    }
                    // The role's pattern towards its own department's
                    // current patients (night coverage), across departments.
                    if dept == u.department && phase == Phase::Active && !counted_same {
                        counted_same = true;
                        count(template_key(((ANY, u.role), phase, SAME)));
                    }
                });
            }
            let local = prep.local.get(i as usize).copied().unwrap_or_default();
            if let Some(h) = hours
                .get_mut(a.user.ix())
                .and_then(|h| h.get_mut(local.hour as usize))
            {
                *h += 1;
            }
            per_user_day
                .entry((a.user.0, local.day))
                .or_default()
                .insert(a.patient.0, ());
            if matches!(
                a.action,
                crate::model::Action::Print | crate::model::Action::Export
            ) {
                records
                    .entry(group_key(g))
                    .or_default()
                    .push(a.record_count);
            }
        }
        let mut templates = FastMap::default();
        for (k, (users, accesses)) in counts {
            templates.insert(
                k,
                Routine {
                    users,
                    group_users: 0,
                    accesses,
                },
            );
        }
        // Each template belongs to one group: take its size from any user.
        for ((k, u), ()) in &seen {
            if let Some(user) = ix.users.get(*u as usize) {
                let role_wide = *k & ROLE_WIDE != 0;
                let dept = if role_wide { ANY } else { user.department };
                let size = group_users
                    .get(&group_key((dept, user.role)))
                    .copied()
                    .unwrap_or(1);
                if let Some(t) = templates.get_mut(k) {
                    t.group_users = size;
                }
            }
        }
        templates.retain(|_, r: &mut Routine| {
            let needed = (f64::from(r.group_users) * cfg.routine_share).ceil() as u32;
            r.users >= cfg.routine_min_users.max(needed) && r.accesses >= cfg.routine_min_accesses
        });

        let hours = hours
            .into_iter()
            .map(|h| {
                let total: u32 = h.iter().sum();
                (total >= cfg.hours_min_history).then_some(h)
            })
            .collect();

        let mut user_days: Vec<Vec<u32>> = vec![Vec::new(); nusers];
        let mut group_days: FastMap<u64, Vec<u32>> = FastMap::default();
        for ((u, _day), pats) in &per_user_day {
            let n = u32::try_from(pats.len()).unwrap_or(u32::MAX);
            if let Some(d) = user_days.get_mut(*u as usize) {
                d.push(n);
            }
            if let Some(user) = ix.users.get(*u as usize) {
                group_days
                    .entry(group_key((user.department, user.role)))
                    .or_default()
                    .push(n);
            }
        }
        let daily_median = user_days.iter_mut().map(|d| percentile(d, 0.5)).collect();
        let group_daily_p95 = group_days
            .into_iter()
            .filter(|(g, _)| group_users.get(g).copied().unwrap_or(0) >= 5)
            .map(|(g, mut d)| (g, percentile(&mut d, 0.95)))
            .collect();
        let group_records_p95 = records
            .into_iter()
            .filter(|(_, d)| d.len() >= 20)
            .map(|(g, mut d)| (g, percentile(&mut d, 0.95)))
            .collect();
        Learned {
            templates,
            hours,
            daily_median,
            group_daily_p95,
            group_records_p95,
        }
    }

    /// Whether a template is routine.
    pub fn routine(&self, t: Template) -> bool {
        self.templates.contains_key(&template_key(t))
    }
}
