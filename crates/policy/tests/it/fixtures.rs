//! Requests built from a role, an action, a resource type and the
//! relationships wanted; `summary` renders a decision for `check`.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use model::{ResourceType, Timestamp};
use policy::{
    AppointmentFact, CareTeamFact, ConsentFact, ConsultationFact, Decision, Effect, EncounterFact,
    Engine, Facts, GrantFact, Label, Member, Period, Principal, Purpose, Relationship, Request,
    Resource, Role, Windows,
};

pub const S: i64 = 1_000_000;
pub const H: i64 = 3600 * S;
pub const D: i64 = 24 * H;
pub const NOW: Timestamp = Timestamp(1_700_000_000 * S);

pub fn at(offset: i64) -> Timestamp {
    Timestamp(NOW.0 + offset)
}

pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| match Engine::shipped(Windows::default()) {
        Ok(e) => e,
        Err(e) => unreachable!("the shipped policies do not load: {e}"),
    })
}

pub fn principal(role: Role) -> Principal {
    Principal {
        id: "acct-1".to_owned(),
        role,
        practitioner: role.is_workforce().then(|| "pr-1".to_owned()),
        patient: (role == Role::Patient).then(|| "pat-1".to_owned()),
        organization: Some("org-1".to_owned()),
        department: None,
        mfa: true,
        training_current: true,
    }
}

pub fn resource(rtype: ResourceType, labels: &[Label]) -> Resource {
    let directory = policy::Category::of(rtype) == policy::Category::Directory;
    Resource {
        rtype,
        id: Some("r1".to_owned()),
        patient: (!directory).then(|| "pat-1".to_owned()),
        labels: labels.iter().copied().collect(),
        date: None,
    }
}

/// Facts from which `rels` (and only the relationships they imply) derive
/// for [`principal`] and patient `pat-1` at [`NOW`].
pub fn facts(rels: &[Relationship]) -> Facts {
    let mut f = Facts::default();
    let open = Period::default();
    for rel in rels {
        match rel {
            Relationship::CareTeam => f.care_teams.push(CareTeamFact {
                id: "ct1".to_owned(),
                status: "active".to_owned(),
                period: open,
                members: vec![Member {
                    practitioner: "pr-1".to_owned(),
                    period: open,
                }],
            }),
            Relationship::Encounter => f.encounters.push(EncounterFact {
                id: "e1".to_owned(),
                status: "in-progress".to_owned(),
                period: Period {
                    start: Some(at(-H)),
                    end: None,
                },
                participants: vec![Member {
                    practitioner: "pr-1".to_owned(),
                    period: open,
                }],
            }),
            Relationship::Consultation => f.consultations.push(ConsultationFact {
                id: "v1".to_owned(),
                practitioner: "pr-1".to_owned(),
                period: Period {
                    start: Some(at(-H)),
                    end: None,
                },
            }),
            Relationship::Appointment => f.appointments.push(AppointmentFact {
                id: "a1".to_owned(),
                // Fulfilled: not a scheduled visit as well.
                status: "fulfilled".to_owned(),
                start: Some(at(H)),
                end: Some(at(2 * H)),
                participants: vec!["pr-1".to_owned()],
            }),
            Relationship::ScheduledVisit => f.appointments.push(AppointmentFact {
                id: "a2".to_owned(),
                status: "booked".to_owned(),
                start: Some(at(5 * D)),
                end: Some(at(5 * D + H)),
                participants: vec!["pr-9".to_owned()],
            }),
            Relationship::RecentEncounter => f.encounters.push(EncounterFact {
                id: "e2".to_owned(),
                status: "finished".to_owned(),
                period: Period {
                    start: Some(at(-3 * D)),
                    end: Some(at(-2 * D)),
                },
                participants: vec![Member {
                    practitioner: "pr-9".to_owned(),
                    period: open,
                }],
            }),
            Relationship::Emergency => f.grants.push(GrantFact {
                id: "g1".to_owned(),
                account: "acct-1".to_owned(),
                patient: "pat-1".to_owned(),
                start: at(-10 * 60 * S),
                expires: at(50 * 60 * S),
                revoked: false,
            }),
            Relationship::SelfAccess => {}
        }
    }
    f
}

/// A consent of `pat-1` denying everything to everyone.
pub fn consent_denying_all() -> ConsentFact {
    ConsentFact {
        id: "cons-1".to_owned(),
        status: "active".to_owned(),
        period: None,
        base: Effect::Deny,
        provisions: vec![],
    }
}

/// One line: `allow P4 [masks]` or `deny F3 L-SENSITIVE`.
pub fn summary(d: &Decision) -> String {
    let mut s = format!(
        "{} {}",
        if d.allow { "allow" } else { "deny" },
        d.policies.join(",")
    );
    if let Some(l) = d.lesson {
        s.push(' ');
        s.push_str(l.as_str());
    }
    if !d.masks.is_empty() {
        s.push_str(&format!(" [{}]", d.masks.join(",")));
    }
    s
}

/// A case: who, what, on which resource, with which relationships.
pub struct Case {
    pub principal: Principal,
    pub action: policy::Action,
    pub resource: Resource,
    pub purpose: Option<Purpose>,
    pub facts: Facts,
}

impl Case {
    pub fn new(role: Role, action: policy::Action, rtype: ResourceType) -> Case {
        Case {
            principal: principal(role),
            action,
            resource: resource(rtype, &[]),
            purpose: None,
            facts: Facts::default(),
        }
    }
    pub fn rels(mut self, rels: &[Relationship]) -> Case {
        self.facts = facts(rels);
        self
    }
    pub fn labels(mut self, labels: &[Label]) -> Case {
        self.resource.labels = labels.iter().copied().collect::<BTreeSet<_>>();
        self
    }
    pub fn purpose(mut self, p: Purpose) -> Case {
        self.purpose = Some(p);
        self
    }
    pub fn request(&self) -> Request<'_> {
        Request {
            principal: &self.principal,
            action: self.action,
            resource: &self.resource,
            purpose: self.purpose,
            now: NOW,
            facts: &self.facts,
        }
    }
    pub fn decide(&self) -> Decision {
        engine().decide(&self.request())
    }
    /// Decided by Cedar afresh, without the memo.
    pub fn decide_fresh(&self) -> Decision {
        engine().decide_fresh(&self.request())
    }
    #[track_caller]
    pub fn check(&self, expect: &str) -> Decision {
        let d = self.decide();
        assert_eq!(summary(&d), expect, "{d:#?}");
        d
    }
}
