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
    // Care relationships (and break-the-glass) are a clinician's: another
    // role's account linked to a Practitioner gains nothing from them.
    let me = principal
        .practitioner
        .as_deref()
        .filter(|_| principal.role.is_clinician());
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
            && e.period.start.is_some_and(|s| s <= now)
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
        principal.role.is_clinician()
            && g.account == principal.id
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
/// An appointment without both times (FHIR allows that only while it is
/// proposed or cancelled) has no window: it grants nothing.
fn within(a: &AppointmentFact, now: Timestamp, before: i64, after: i64) -> bool {
    let (Some(start), Some(end)) = (a.start, a.end) else {
        return false;
    };
    plus(start, before.saturating_neg()) <= now && now <= plus(end, after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CareTeamFact, ConsultationFact, EncounterFact, GrantFact, Member, Period};

    const S: i64 = MICROS;
    const H: i64 = 3600 * S;
    const D: i64 = 24 * H;
    const T0: i64 = 1_700_000_000 * S;

    fn at(offset: i64) -> Timestamp {
        Timestamp(T0 + offset)
    }

    fn me() -> Principal {
        Principal {
            id: "acct-1".to_owned(),
            role: Role::Physician,
            practitioner: Some("pr-1".to_owned()),
            patient: None,
            organization: Some("org-1".to_owned()),
            department: None,
            mfa: true,
            training_current: true,
        }
    }

    fn period(start: Option<i64>, end: Option<i64>) -> Period {
        Period {
            start: start.map(at),
            end: end.map(at),
        }
    }

    fn holds(facts: &Facts, now: i64, rel: Relationship) -> bool {
        derive(&me(), "pat-1", facts, at(now), &Windows::default())
            .0
            .contains(&rel)
    }

    fn encounter(status: &str, start: Option<i64>, end: Option<i64>, who: &str) -> Facts {
        Facts {
            encounters: vec![EncounterFact {
                id: "e1".to_owned(),
                status: status.to_owned(),
                period: period(start, end),
                participants: vec![Member {
                    practitioner: who.to_owned(),
                    period: Period::default(),
                }],
            }],
            ..Facts::default()
        }
    }

    fn appointment(status: &str, who: &str) -> Facts {
        Facts {
            appointments: vec![AppointmentFact {
                id: "a1".to_owned(),
                status: status.to_owned(),
                start: Some(at(0)),
                end: Some(at(H)),
                participants: vec![who.to_owned()],
            }],
            ..Facts::default()
        }
    }

    /// `rel` holds at `first` and `last` and not one second outside them.
    fn edges(facts: &Facts, rel: Relationship, first: i64, last: i64) {
        assert!(!holds(facts, first - S, rel), "{rel:?} before {first}");
        assert!(holds(facts, first, rel), "{rel:?} at {first}");
        assert!(holds(facts, last, rel), "{rel:?} at {last}");
        assert!(!holds(facts, last + S, rel), "{rel:?} after {last}");
    }

    #[test]
    fn care_team_windows() {
        let team = |status: &str, team: Period, member: Period, who: &str| Facts {
            care_teams: vec![CareTeamFact {
                id: "ct".to_owned(),
                status: status.to_owned(),
                period: team,
                members: vec![Member {
                    practitioner: who.to_owned(),
                    period: member,
                }],
            }],
            ..Facts::default()
        };
        let f = team(
            "active",
            period(Some(0), Some(10 * D)),
            period(Some(D), Some(20 * D)),
            "pr-1",
        );
        edges(&f, Relationship::CareTeam, D, 10 * D);
        let open = team("active", Period::default(), Period::default(), "pr-1");
        assert!(holds(&open, 100 * D, Relationship::CareTeam));
        assert!(!holds(
            &team("proposed", Period::default(), Period::default(), "pr-1"),
            0,
            Relationship::CareTeam
        ));
        assert!(!holds(
            &team("active", Period::default(), Period::default(), "pr-2"),
            0,
            Relationship::CareTeam
        ));
    }

    #[test]
    fn encounter_windows() {
        let f = encounter("finished", Some(0), Some(D), "pr-1");
        edges(&f, Relationship::Encounter, 0, D + 14 * D);
        for status in ENCOUNTER_OPEN {
            let f = encounter(status, Some(0), None, "pr-1");
            assert!(holds(&f, 1000 * D, Relationship::Encounter), "{status}");
            assert!(!holds(&f, -S, Relationship::Encounter), "{status}");
        }
        for status in ["finished", "unknown", "cancelled"] {
            assert!(!holds(
                &encounter(status, Some(0), None, "pr-1"),
                D,
                Relationship::Encounter
            ));
        }
        for status in ENCOUNTER_VOID {
            assert!(!holds(
                &encounter(status, Some(0), Some(D), "pr-1"),
                D,
                Relationship::Encounter
            ));
        }
        assert!(!holds(
            &encounter("in-progress", Some(0), None, "pr-2"),
            D,
            Relationship::Encounter
        ));
    }

    #[test]
    fn consultation_windows() {
        let f = |end| Facts {
            consultations: vec![ConsultationFact {
                id: "c1".to_owned(),
                practitioner: "pr-1".to_owned(),
                period: period(Some(0), end),
            }],
            ..Facts::default()
        };
        edges(&f(Some(H)), Relationship::Consultation, 0, H);
        assert!(holds(&f(None), 100 * D, Relationship::Consultation));
    }

    #[test]
    fn appointment_windows() {
        for status in APPOINTMENT_LIVE {
            edges(
                &appointment(status, "pr-1"),
                Relationship::Appointment,
                -72 * H,
                H + 24 * H,
            );
        }
        assert!(!holds(
            &appointment("cancelled", "pr-1"),
            0,
            Relationship::Appointment
        ));
        assert!(!holds(
            &appointment("booked", "pr-2"),
            0,
            Relationship::Appointment
        ));
    }

    #[test]
    fn scheduled_visit_windows() {
        // With anyone: the visit is the patient's, not the account's.
        for status in VISIT_LIVE {
            edges(
                &appointment(status, "pr-2"),
                Relationship::ScheduledVisit,
                -30 * D,
                H + D,
            );
        }
        assert!(!holds(
            &appointment("fulfilled", "pr-2"),
            0,
            Relationship::ScheduledVisit
        ));
        assert!(!holds(
            &appointment("noshow", "pr-2"),
            0,
            Relationship::ScheduledVisit
        ));
    }

    #[test]
    fn appointment_without_both_times_grants_nothing() {
        let mut f = appointment("booked", "pr-1");
        if let Some(a) = f.appointments.first_mut() {
            a.end = None;
        }
        assert!(!holds(&f, 0, Relationship::Appointment));
        assert!(!holds(&f, 0, Relationship::ScheduledVisit));
        if let Some(a) = f.appointments.first_mut() {
            a.start = None;
        }
        assert!(!holds(&f, 0, Relationship::Appointment));
    }

    #[test]
    fn recent_encounter_windows() {
        let f = encounter("finished", Some(-D), Some(0), "pr-2");
        edges(&f, Relationship::RecentEncounter, 0, 30 * D);
        assert!(!holds(
            &encounter("in-progress", Some(-D), Some(0), "pr-2"),
            D,
            Relationship::RecentEncounter
        ));
        assert!(!holds(
            &encounter("finished", Some(-D), None, "pr-2"),
            D,
            Relationship::RecentEncounter
        ));
    }

    #[test]
    fn grants() {
        let grant = |account: &str, patient: &str, revoked| GrantFact {
            id: "g1".to_owned(),
            account: account.to_owned(),
            patient: patient.to_owned(),
            start: at(0),
            expires: at(H),
            revoked,
        };
        let f = Facts {
            grants: vec![grant("acct-1", "pat-1", false)],
            ..Facts::default()
        };
        edges(&f, Relationship::Emergency, 0, H);
        let (_, id) = derive(&me(), "pat-1", &f, at(0), &Windows::default());
        assert_eq!(id.as_deref(), Some("g1"));
        for g in [
            grant("acct-2", "pat-1", false),
            grant("acct-1", "pat-2", false),
            grant("acct-1", "pat-1", true),
        ] {
            let f = Facts {
                grants: vec![g],
                ..Facts::default()
            };
            assert_eq!(
                derive(&me(), "pat-1", &f, at(0), &Windows::default()),
                (BTreeSet::new(), None)
            );
        }
    }

    #[test]
    fn self_access() {
        let mut p = me();
        p.role = Role::Patient;
        p.practitioner = None;
        p.patient = Some("pat-1".to_owned());
        let w = Windows::default();
        assert!(
            derive(&p, "pat-1", &Facts::default(), at(0), &w)
                .0
                .contains(&Relationship::SelfAccess)
        );
        assert!(
            derive(&p, "pat-2", &Facts::default(), at(0), &w)
                .0
                .is_empty()
        );
        // A workforce account linked to a patient id is not that patient.
        let mut w_acct = p.clone();
        w_acct.role = Role::Nurse;
        assert!(
            derive(&w_acct, "pat-1", &Facts::default(), at(0), &w)
                .0
                .is_empty()
        );
    }

    #[test]
    fn configured_windows_apply() {
        let w = Windows {
            encounter_after: 60,
            ..Windows::default()
        };
        let f = encounter("finished", Some(0), Some(0), "pr-1");
        assert!(
            derive(&me(), "pat-1", &f, at(60 * S), &w)
                .0
                .contains(&Relationship::Encounter)
        );
        assert!(
            !derive(&me(), "pat-1", &f, at(61 * S), &w)
                .0
                .contains(&Relationship::Encounter)
        );
    }
}
