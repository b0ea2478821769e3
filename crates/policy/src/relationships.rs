//! Relationships between an account and a patient, derived from the records
//! with their time windows (the table in `docs/access-policy.md`).

use std::collections::BTreeSet;

use model::Timestamp;

use crate::{AppointmentFact, Facts, Principal, Relationship, Role, Windows};

/// Microseconds in a second: [`Timestamp`] counts microseconds, [`Windows`]
/// seconds.
const MICROS: i64 = 1_000_000;

/// Encounter statuses under which an open period end holds.
const ENCOUNTER_OPEN: [&str; 5] = ["planned", "arrived", "triaged", "in-progress", "onleave"];
/// Encounter statuses that never give a relationship.
const ENCOUNTER_VOID: [&str; 2] = ["cancelled", "entered-in-error"];
/// Appointment statuses that give the `appointment` relationship.
const APPOINTMENT_LIVE: [&str; 6] = [
    "proposed",
    "pending",
    "booked",
    "arrived",
    "fulfilled",
    "checked-in",
];
/// Appointment statuses that give the `scheduled_visit` relationship
/// (a fulfilled visit is no longer to be prepared).
const VISIT_LIVE: [&str; 5] = ["proposed", "pending", "booked", "arrived", "checked-in"];

/// The relationships that hold at `now` between `principal` and `patient`,
/// and the break-the-glass grant behind `emergency` (the first matching grant
/// in `facts.grants`), if one holds.
///
/// Every relationship is derived for every account from the facts; the rules
/// decide which roles may use which. Relationships through a Practitioner
/// (`care_team`, `encounter`, `consultation`, `appointment`) need the account
/// to be linked to one.
pub fn derive(
    principal: &Principal,
    patient: &str,
    facts: &Facts,
    now: Timestamp,
    windows: &Windows,
) -> (BTreeSet<Relationship>, Option<String>) {
    let mut out = BTreeSet::new();
    let me = principal.practitioner.as_deref();
    let is_me = |p: &str| me == Some(p);

    let care_team = facts.care_teams.iter().any(|t| {
        t.status == "active"
            && t.period.contains(now)
            && t.members
                .iter()
                .any(|m| is_me(&m.practitioner) && m.period.contains(now))
    });
    if care_team {
        out.insert(Relationship::CareTeam);
    }

    let encounter = facts.encounters.iter().any(|e| {
        !ENCOUNTER_VOID.contains(&e.status.as_str())
            && e.participants.iter().any(|m| is_me(&m.practitioner))
            && e.period.start.is_none_or(|s| s <= now)
            && match e.period.end {
                Some(end) => now <= plus(end, windows.encounter_after),
                None => ENCOUNTER_OPEN.contains(&e.status.as_str()),
            }
    });
    if encounter {
        out.insert(Relationship::Encounter);
    }

    if facts
        .consultations
        .iter()
        .any(|c| is_me(&c.practitioner) && c.period.contains(now))
    {
        out.insert(Relationship::Consultation);
    }

    let appointment = facts.appointments.iter().any(|a| {
        APPOINTMENT_LIVE.contains(&a.status.as_str())
            && a.participants.iter().any(|p| is_me(p))
            && within(
                a,
                now,
                windows.appointment_before,
                windows.appointment_after,
            )
    });
    if appointment {
        out.insert(Relationship::Appointment);
    }

    if principal.role == Role::Patient && principal.patient.as_deref() == Some(patient) {
        out.insert(Relationship::SelfAccess);
    }

    let visit = facts.appointments.iter().any(|a| {
        VISIT_LIVE.contains(&a.status.as_str())
            && within(
                a,
                now,
                windows.scheduled_visit_before,
                windows.scheduled_visit_after,
            )
    });
    if visit {
        out.insert(Relationship::ScheduledVisit);
    }

    let recent = facts.encounters.iter().any(|e| {
        e.status == "finished"
            && e.period
                .end
                .is_some_and(|end| end <= now && now <= plus(end, windows.recent_encounter))
    });
    if recent {
        out.insert(Relationship::RecentEncounter);
    }

    let grant = facts.grants.iter().find(|g| {
        g.account == principal.id
            && g.patient == patient
            && !g.revoked
            && g.start <= now
            && now <= g.expires
    });
    if grant.is_some() {
        out.insert(Relationship::Emergency);
    }

    (out, grant.map(|g| g.id.clone()))
}

/// `t` plus `seconds` (saturating).
fn plus(t: Timestamp, seconds: i64) -> Timestamp {
    Timestamp(t.0.saturating_add(seconds.saturating_mul(MICROS)))
}

/// Whether `now` is within [start − before, end + after] of an appointment.
/// An appointment with only one of its times uses it for both ends; one
/// with neither has no window.
fn within(a: &AppointmentFact, now: Timestamp, before: i64, after: i64) -> bool {
    let (Some(start), Some(end)) = (a.start.or(a.end), a.end.or(a.start)) else {
        return false;
    };
    plus(start, before.saturating_neg()) <= now && now <= plus(end, after)
}
