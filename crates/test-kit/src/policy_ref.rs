//! A small reference evaluator of the access policy, written in plain Rust
//! straight from `docs/access-policy.md` (no Cedar).
//!
//! It exists to be obviously correct, not fast: one function per rule, and
//! the relationship table as code that follows the doc's table row by row.
//! The hand-written corpus (`corpus/policy/*.toml`) is checked against it,
//! and the real engine in `crates/policy` is compared with both.
//!
//! Where several forbid rules apply, [`decide`] reports the first in the
//! order G1, G2, F4, F1, F2, F3 (the account's own state first, then the
//! compartment, then the patient's wishes, then the data's labels). Where
//! several permit rules apply, it reports the first in the order P1 … P11.
//! The real engine may report all of them; the corpus only asks that the
//! expected rule be among the deciding policies.
//!
//! Interpretations of the doc this evaluator makes (each also listed in the
//! corpus notes):
//! - Windows include both ends (also the encounter's "before end + 14 days"
//!   and a grant's expiry).
//! - The clinician relationships (`care_team`, `encounter`, `consultation`,
//!   `appointment`, `emergency`) are derived for clinician accounts only;
//!   `self` for patient accounts only; `scheduled_visit` and
//!   `recent_encounter` for every account. So "a direct relationship" in F2
//!   and F3 is always one the role can use.
//! - An Encounter without a period start has not started; an Appointment
//!   needs both a start and an end to place its window. An Encounter
//!   participant's own period is not consulted.
//! - "Break-the-glass" (the exception in F1, F2 and F3) means a clinician
//!   with an `emergency` relationship deciding under purpose `ETREAT`.
//! - "Front desk under P9" (and billing under P10, the privacy officer under
//!   P11) in F2 means that rule allows this very request.
//! - A purpose mismatch is reported as `default-deny` (G3 is not a forbid).
//! - P1 and P2 name no purpose, so any declared purpose passes them.
//! - F1 … F4 only concern resources outside the directory; G1 and G2 concern
//!   every resource outside the directory, with or without a compartment.

use std::collections::BTreeSet;

use model::Timestamp;
use policy::{
    Action, Actor, AppointmentFact, CareTeamFact, Category, ConsentFact, ConsultationFact, Effect,
    EncounterFact, Facts, GrantFact, Label, Principal, Provision, Purpose, Relationship, Request,
    Resource, Role, Windows,
};

/// What the reference decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefDecision {
    pub allow: bool,
    /// The deciding rule: a permit (`P1` … `P11`), a forbid (`G1`, `G2`,
    /// `F1` … `F4`) or `default-deny`.
    pub rule: String,
    /// Element names to remove before the resource is returned.
    pub masks: BTreeSet<String>,
    /// The purpose the request was decided under.
    pub purpose: Purpose,
}

const MICROS_PER_SECOND: i64 = 1_000_000;

fn plus_seconds(t: Timestamp, seconds: i64) -> Timestamp {
    Timestamp(t.0.saturating_add(seconds.saturating_mul(MICROS_PER_SECOND)))
}

fn within(now: Timestamp, from: Timestamp, to: Timestamp) -> bool {
    from <= now && now <= to
}

// ---------------------------------------------------------------------------
// Relationships: the doc's table, one function per row.
// ---------------------------------------------------------------------------

/// The relationships between `principal` and `patient` that hold at `now`.
pub fn relationships(
    principal: &Principal,
    patient: &str,
    facts: &Facts,
    now: Timestamp,
    windows: &Windows,
) -> BTreeSet<Relationship> {
    let mut out = BTreeSet::new();
    // The clinician's own rows: they need the clinician's Practitioner.
    if principal.role.is_clinician() {
        if let Some(me) = principal.practitioner.as_deref() {
            if facts.care_teams.iter().any(|t| care_team(t, me, now)) {
                out.insert(Relationship::CareTeam);
            }
            if facts
                .encounters
                .iter()
                .any(|e| encounter(e, me, now, windows))
            {
                out.insert(Relationship::Encounter);
            }
            if facts.consultations.iter().any(|c| consultation(c, me, now)) {
                out.insert(Relationship::Consultation);
            }
            if facts
                .appointments
                .iter()
                .any(|a| appointment(a, me, now, windows))
            {
                out.insert(Relationship::Appointment);
            }
        }
        if facts
            .grants
            .iter()
            .any(|g| emergency(g, &principal.id, patient, now))
        {
            out.insert(Relationship::Emergency);
        }
    }
    if self_access(principal, patient) {
        out.insert(Relationship::SelfAccess);
    }
    // Workflow rows: derived for every account.
    if facts
        .appointments
        .iter()
        .any(|a| scheduled_visit(a, now, windows))
    {
        out.insert(Relationship::ScheduledVisit);
    }
    if facts
        .encounters
        .iter()
        .any(|e| recent_encounter(e, now, windows))
    {
        out.insert(Relationship::RecentEncounter);
    }
    out
}

/// `care_team`: an active CareTeam listing me; the team's and my period
/// (if any) both contain now.
fn care_team(team: &CareTeamFact, me: &str, now: Timestamp) -> bool {
    team.status == "active"
        && team.period.contains(now)
        && team
            .members
            .iter()
            .any(|m| m.practitioner == me && m.period.contains(now))
}

/// `encounter`: an Encounter listing me, not cancelled or entered in error,
/// started, and now is no later than end + 14 days (an open end holds while
/// the status is one of the ongoing ones).
fn encounter(e: &EncounterFact, me: &str, now: Timestamp, windows: &Windows) -> bool {
    const ONGOING: [&str; 5] = ["planned", "arrived", "triaged", "in-progress", "onleave"];
    if !e.participants.iter().any(|p| p.practitioner == me) {
        return false;
    }
    if e.status == "cancelled" || e.status == "entered-in-error" {
        return false;
    }
    let started = e.period.start.is_some_and(|s| s <= now);
    if !started {
        return false;
    }
    match e.period.end {
        Some(end) => now <= plus_seconds(end, windows.encounter_after),
        None => ONGOING.contains(&e.status.as_str()),
    }
}

/// `consultation`: a video consultation with me, from its start to its end.
fn consultation(c: &ConsultationFact, me: &str, now: Timestamp) -> bool {
    c.practitioner == me && c.period.contains(now)
}

/// `appointment`: an Appointment listing me, in a live status, and now is
/// within [start − 72 h, end + 24 h].
fn appointment(a: &AppointmentFact, me: &str, now: Timestamp, windows: &Windows) -> bool {
    const STATUSES: [&str; 6] = [
        "proposed",
        "pending",
        "booked",
        "arrived",
        "fulfilled",
        "checked-in",
    ];
    a.participants.iter().any(|p| p == me)
        && STATUSES.contains(&a.status.as_str())
        && appointment_window(
            a,
            now,
            windows.appointment_before,
            windows.appointment_after,
        )
}

/// `self`: a patient account linked to this patient.
fn self_access(principal: &Principal, patient: &str) -> bool {
    principal.role == Role::Patient && principal.patient.as_deref() == Some(patient)
}

/// `scheduled_visit`: any Appointment of the patient, in a status still to
/// come (not `fulfilled`), and now is within [start − 30 d, end + 1 d].
fn scheduled_visit(a: &AppointmentFact, now: Timestamp, windows: &Windows) -> bool {
    const STATUSES: [&str; 5] = ["proposed", "pending", "booked", "arrived", "checked-in"];
    STATUSES.contains(&a.status.as_str())
        && appointment_window(
            a,
            now,
            windows.scheduled_visit_before,
            windows.scheduled_visit_after,
        )
}

/// `recent_encounter`: any finished Encounter with an end, and now is within
/// [end, end + 30 d].
fn recent_encounter(e: &EncounterFact, now: Timestamp, windows: &Windows) -> bool {
    e.status == "finished"
        && e.period
            .end
            .is_some_and(|end| within(now, end, plus_seconds(end, windows.recent_encounter)))
}

/// `emergency`: an unrevoked grant of mine for this patient, from its start
/// to its expiry.
fn emergency(g: &GrantFact, account: &str, patient: &str, now: Timestamp) -> bool {
    g.account == account && g.patient == patient && !g.revoked && within(now, g.start, g.expires)
}

fn appointment_window(a: &AppointmentFact, now: Timestamp, before: i64, after: i64) -> bool {
    match (a.start, a.end) {
        (Some(start), Some(end)) => {
            within(now, plus_seconds(start, -before), plus_seconds(end, after))
        }
        // Without both ends there is no window to be in.
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// Consent.
// ---------------------------------------------------------------------------

/// The id of the first active consent that denies this access, if any.
/// `purpose` is the purpose the request is decided under.
pub fn consent_denies(
    principal: &Principal,
    resource: &Resource,
    purpose: Purpose,
    facts: &Facts,
    now: Timestamp,
) -> Option<String> {
    facts
        .consents
        .iter()
        .find(|c| consent_denies_one(c, principal, resource, purpose, now))
        .map(|c| c.id.clone())
}

fn consent_denies_one(
    consent: &ConsentFact,
    principal: &Principal,
    resource: &Resource,
    purpose: Purpose,
    now: Timestamp,
) -> bool {
    if consent.status != "active" {
        return false;
    }
    if consent.period.is_some_and(|p| !p.contains(now)) {
        return false;
    }
    let matching: Vec<&Provision> = consent
        .provisions
        .iter()
        .filter(|p| provision_matches(p, principal, resource, purpose, now))
        .collect();
    if matching.iter().any(|p| p.effect == Effect::Deny) {
        return true;
    }
    if matching.iter().any(|p| p.effect == Effect::Permit) {
        return false;
    }
    consent.base == Effect::Deny
}

/// A nested provision matches when every element it names matches.
fn provision_matches(
    p: &Provision,
    principal: &Principal,
    resource: &Resource,
    purpose: Purpose,
    now: Timestamp,
) -> bool {
    let actor = p.actors.is_empty() || p.actors.iter().any(|a| actor_matches(a, principal));
    let purpose_ok = p.purposes.is_empty() || p.purposes.iter().any(|c| c == purpose.as_str());
    let label = p.labels.is_empty()
        || p.labels
            .iter()
            .filter_map(|code| Label::parse(code))
            .any(|l| resource.labels.contains(&l));
    let class = p.classes.is_empty() || p.classes.iter().any(|c| c == resource.rtype.as_str());
    let data = p
        .data_period
        .is_none_or(|dp| resource.date.is_some_and(|d| dp.contains(d)));
    let when = p.period.is_none_or(|pp| pp.contains(now));
    actor && purpose_ok && label && class && data && when
}

fn actor_matches(actor: &Actor, principal: &Principal) -> bool {
    match actor {
        Actor::Practitioner(id) => principal.practitioner.as_deref() == Some(id.as_str()),
        Actor::Organization(id) => principal.organization.as_deref() == Some(id.as_str()),
    }
}

// ---------------------------------------------------------------------------
// The decision.
// ---------------------------------------------------------------------------

/// Everything a rule looks at, computed once.
struct Ctx<'r, 'a> {
    req: &'r Request<'a>,
    role: Role,
    action: Action,
    category: Category,
    purpose: Purpose,
    rels: BTreeSet<Relationship>,
}

impl Ctx<'_, '_> {
    fn has(&self, r: Relationship) -> bool {
        self.rels.contains(&r)
    }

    fn direct(&self) -> bool {
        self.rels.iter().any(|r| r.is_direct())
    }

    /// The clinician direct relationships of P4, P5 and P6 (not `self`).
    fn clinical_direct(&self) -> bool {
        self.role.is_clinician()
            && (self.has(Relationship::CareTeam)
                || self.has(Relationship::Encounter)
                || self.has(Relationship::Consultation))
    }

    /// Break-the-glass: a clinician's `emergency` relationship, under ETREAT.
    fn break_glass(&self) -> bool {
        self.role.is_clinician()
            && self.has(Relationship::Emergency)
            && self.purpose == Purpose::Etreat
    }

    fn in_directory(&self) -> bool {
        self.category == Category::Directory
    }

    fn is(&self, actions: &[Action]) -> bool {
        actions.contains(&self.action)
    }
}

/// A rule's condition: whether it applies (forbid) or allows (permit).
type Rule = fn(&Ctx) -> bool;

/// Decides `req` by the rules of `docs/access-policy.md`.
pub fn decide(req: &Request<'_>, windows: &Windows) -> RefDecision {
    let category = Category::of(req.resource.rtype);
    let rels = match (&req.resource.patient, category) {
        (Some(patient), c) if c != Category::Directory => {
            relationships(req.principal, patient, req.facts, req.now, windows)
        }
        _ => BTreeSet::new(),
    };
    let purpose = req
        .purpose
        .unwrap_or_else(|| default_purpose(req.principal.role, &rels));
    let first = decide_under(req, category, purpose, rels.clone());
    // No purpose declared, the usual one denied, and a live grant: the
    // request is decided again under the grant, as ETREAT.
    if !first.allow
        && req.purpose.is_none()
        && purpose != Purpose::Etreat
        && req.principal.role.is_clinician()
        && rels.contains(&Relationship::Emergency)
    {
        let again = decide_under(req, category, Purpose::Etreat, rels);
        if again.allow {
            return again;
        }
    }
    first
}

fn decide_under(
    req: &Request<'_>,
    category: Category,
    purpose: Purpose,
    rels: BTreeSet<Relationship>,
) -> RefDecision {
    let c = Ctx {
        req,
        role: req.principal.role,
        action: req.action,
        category,
        purpose,
        rels,
    };

    let deny = |rule: &str| RefDecision {
        allow: false,
        rule: rule.to_owned(),
        masks: BTreeSet::new(),
        purpose,
    };

    // Forbid rules first: any that applies wins over every permit.
    let forbids: [(&str, Rule); 6] = [
        ("G1", g1_mfa),
        ("G2", g2_training),
        ("F4", f4_other_patient),
        ("F1", f1_consent),
        ("F2", f2_vip),
        ("F3", f3_restricted),
    ];
    if let Some((rule, _)) = forbids.iter().find(|(_, applies)| applies(&c)) {
        return deny(rule);
    }

    let permits: [(&str, Rule); 12] = [
        ("P1", p1_directory_read),
        ("P2", p2_directory_upkeep),
        ("P3", p3_own_record),
        ("P4", p4_care),
        ("P5", p5_delete),
        ("P6", p6_export_share),
        ("P7", p7_visit_preparation),
        ("P8", p8_break_glass),
        ("P9", p9_front_desk),
        ("P10", p10_billing),
        ("P11", p11_consents),
        ("P12", p12_registration),
    ];
    match permits.iter().find(|(_, allows)| allows(&c)) {
        Some((rule, _)) => RefDecision {
            allow: true,
            rule: (*rule).to_owned(),
            masks: masks(rule, &c),
            purpose,
        },
        None => deny("default-deny"),
    }
}

/// The purpose of a request that declares none: the role's usual one (a
/// denial under it is decided again as ETREAT when a grant holds, in
/// [`decide`]).
fn default_purpose(role: Role, _rels: &BTreeSet<Relationship>) -> Purpose {
    role.default_purpose()
}

// --- Forbid rules. ---

/// G1: a workforce account without a second factor reaches no patient data.
fn g1_mfa(c: &Ctx) -> bool {
    c.role.is_workforce() && !c.in_directory() && !c.req.principal.mfa
}

/// G2: a workforce account whose privacy training is not current reaches no
/// patient data.
fn g2_training(c: &Ctx) -> bool {
    c.role.is_workforce() && !c.in_directory() && !c.req.principal.training_current
}

/// F4: a patient account reaches no compartment but its own (and no
/// non-directory resource without a compartment).
fn f4_other_patient(c: &Ctx) -> bool {
    c.role == Role::Patient
        && !c.in_directory()
        && (c.req.principal.patient.is_none() || c.req.principal.patient != c.req.resource.patient)
}

/// F1: the patient's consent denies this access; not for the patient's own
/// access, nor under break-the-glass.
fn f1_consent(c: &Ctx) -> bool {
    !c.in_directory()
        && !c.has(Relationship::SelfAccess)
        && !c.break_glass()
        && consent_denies(
            c.req.principal,
            c.req.resource,
            c.purpose,
            c.req.facts,
            c.req.now,
        )
        .is_some()
}

/// F2: a VIP patient's data needs a direct relationship, except front desk
/// with a scheduled visit, billing with a recent encounter, the privacy
/// officer and break-the-glass (what those may see is up to their permits).
fn f2_vip(c: &Ctx) -> bool {
    let exempt = (c.role == Role::FrontDesk && c.has(Relationship::ScheduledVisit))
        || (c.role == Role::Billing && c.has(Relationship::RecentEncounter))
        || c.role == Role::PrivacyOfficer
        || c.break_glass();
    !c.in_directory() && c.req.resource.labels.contains(&Label::Vip) && !c.direct() && !exempt
}

/// F3: data with a restricted label needs a direct relationship, except
/// break-the-glass.
fn f3_restricted(c: &Ctx) -> bool {
    !c.in_directory()
        && c.req.resource.labels.iter().any(|l| l.is_restricted())
        && !c.direct()
        && !c.break_glass()
}

// --- Permit rules. ---

/// P1: everyone may read and search the directory (no purpose named).
fn p1_directory_read(c: &Ctx) -> bool {
    c.in_directory() && c.is(&[Action::Read, Action::Search])
}

/// P2: administrators keep the directory up to date (no purpose named).
fn p2_directory_upkeep(c: &Ctx) -> bool {
    c.in_directory()
        && c.role == Role::Administrator
        && c.is(&[Action::Create, Action::Update, Action::Delete])
}

/// P3: a patient reads, searches and exports their own record, PATRQT.
fn p3_own_record(c: &Ctx) -> bool {
    c.role == Role::Patient
        && !c.in_directory()
        && c.has(Relationship::SelfAccess)
        && c.is(&[Action::Read, Action::Search, Action::Export])
        && c.purpose == Purpose::Patrqt
}

/// P4: a clinician with a direct relationship reads and writes, TREAT.
fn p4_care(c: &Ctx) -> bool {
    c.clinical_direct()
        && !c.in_directory()
        && c.is(&[Action::Read, Action::Search, Action::Create, Action::Update])
        && c.purpose == Purpose::Treat
}

/// P5: a physician with a direct relationship deletes, TREAT.
fn p5_delete(c: &Ctx) -> bool {
    c.role == Role::Physician
        && c.clinical_direct()
        && !c.in_directory()
        && c.action == Action::Delete
        && c.purpose == Purpose::Treat
}

/// P6: a clinician with a direct relationship exports and shares, TREAT.
fn p6_export_share(c: &Ctx) -> bool {
    c.clinical_direct()
        && !c.in_directory()
        && c.is(&[Action::Export, Action::Share])
        && c.purpose == Purpose::Treat
}

/// P7: a clinician with an appointment reads and searches demographics,
/// scheduling, clinical and consent data, TREAT (labelled data is F3's).
fn p7_visit_preparation(c: &Ctx) -> bool {
    c.role.is_clinician()
        && c.has(Relationship::Appointment)
        && c.is(&[Action::Read, Action::Search])
        && matches!(
            c.category,
            Category::Demographics | Category::Scheduling | Category::Clinical | Category::Consent
        )
        && c.purpose == Purpose::Treat
}

/// P8: a clinician with an emergency grant reads and writes, ETREAT.
fn p8_break_glass(c: &Ctx) -> bool {
    c.role.is_clinician()
        && c.has(Relationship::Emergency)
        && !c.in_directory()
        && c.is(&[Action::Read, Action::Search, Action::Create, Action::Update])
        && c.purpose == Purpose::Etreat
}

/// P9: front desk with a scheduled visit reads demographics and scheduling
/// and writes Appointments, HOPERAT.
fn p9_front_desk(c: &Ctx) -> bool {
    let reads = c.is(&[Action::Read, Action::Search])
        && matches!(c.category, Category::Demographics | Category::Scheduling);
    let writes = c.is(&[Action::Create, Action::Update])
        && c.req.resource.rtype == model::ResourceType::Appointment;
    c.role == Role::FrontDesk
        && c.has(Relationship::ScheduledVisit)
        && (reads || writes)
        && c.purpose == Purpose::Hoperat
}

/// P12: front desk creates Patients, RelatedPersons and Appointments for
/// anyone (registration and booking), HOPERAT.
fn p12_registration(c: &Ctx) -> bool {
    c.role == Role::FrontDesk
        && c.is(&[Action::Create])
        && (c.category == Category::Demographics
            || c.req.resource.rtype == model::ResourceType::Appointment)
        && c.purpose == Purpose::Hoperat
}

/// P10: billing with a recent encounter reads the five billing types, HPAYMT.
fn p10_billing(c: &Ctx) -> bool {
    use model::ResourceType as T;
    c.role == Role::Billing
        && c.has(Relationship::RecentEncounter)
        && c.is(&[Action::Read, Action::Search])
        && matches!(
            c.req.resource.rtype,
            T::Patient | T::Encounter | T::Condition | T::ServiceRequest | T::MedicationRequest
        )
        && c.purpose == Purpose::Hpaymt
}

/// P11: the privacy officer manages Consents and finds Patients, HOPERAT.
fn p11_consents(c: &Ctx) -> bool {
    use model::ResourceType as T;
    let consent = c.req.resource.rtype == T::Consent
        && c.is(&[Action::Read, Action::Search, Action::Create, Action::Update]);
    let patient = c.req.resource.rtype == T::Patient && c.is(&[Action::Read, Action::Search]);
    c.role == Role::PrivacyOfficer && (consent || patient) && c.purpose == Purpose::Hoperat
}

/// The masks of the permit that allowed.
fn masks(rule: &str, c: &Ctx) -> BTreeSet<String> {
    use model::ResourceType as T;
    let names: &[&str] = match (rule, c.req.resource.rtype) {
        ("P9", T::Encounter) if c.is(&[Action::Read, Action::Search]) => {
            &["reasonCode", "reasonReference", "diagnosis"]
        }
        ("P10", T::Patient | T::Encounter) => &["text"],
        ("P10", T::Condition | T::ServiceRequest | T::MedicationRequest) => &["note", "text"],
        _ => &[],
    };
    names.iter().map(|n| (*n).to_owned()).collect()
}
