//! Reducing FHIR R4 resources to the facts the access policy decides over
//! (the types of the `policy` crate; the rules are `docs/access-policy.md`).
//!
//! Pure functions: no IO, no clock. Every reducer reads a `serde_json::Value`
//! that may be malformed (a wrong type anywhere) and never panics on one.
//!
//! Which way a doubt goes depends on what the fact does:
//! - A relationship fact (CareTeam, Encounter, Appointment) only ever grants
//!   access, so whatever cannot be read makes it grant less: an unreadable
//!   date drops the fact (or the participant it belongs to), and only
//!   relative `Practitioner/<id>` references name a participant.
//! - A consent can only ever take access away (a consent "permit" just lifts
//!   its own denials), so a doubt about a `deny` provision keeps it applying
//!   (an unreadable period bound is open) while a doubt about a `permit`
//!   provision drops it.
//!
//! Dates: FHIR `date`, `dateTime` and `instant` values may be partial
//! (`2026`, `2026-03`, `2026-03-01`) and cover a range. A period's start is
//! the earliest instant its value covers and its end the latest
//! (`"end": "2026-03"` is `2026-03-31T23:59:59.999999Z`), so both written
//! bounds are included. A `dateTime` with a time but no offset (which R4
//! forbids) is read as UTC; one without seconds is not read at all.
//!
//! INVARIANT: the facts returned are never broader than the resource grants
//! (relationships) and a consent's denials never narrower than written,
//! except where noted on [`consent`].

use std::collections::BTreeSet;

use fhir::{DateForm, Precision, RefTarget, parse_date, parse_reference};
use model::{ResourceType, Timestamp};
use policy::{
    Actor, AppointmentFact, CareTeamFact, ConsentFact, Effect, EncounterFact, Label, Member,
    Period, Provision,
};
use serde_json::{Map, Value};

/// The code system of `Consent.scope`.
const CONSENT_SCOPE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/consentscope";
/// The security label that says data was removed from a resource.
const REDACTED_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue";
const REDACTED_CODE: &str = "REDACTED";
/// How deep nested consent provisions are read (see [`consent`]).
const MAX_PROVISION_DEPTH: usize = 16;

/// A CareTeam reduced to its status, period and Practitioner members.
///
/// `None` when `r` is not a CareTeam or its `period` cannot be read.
/// A participant counts when its `member.reference` is a relative
/// `Practitioner/<id>` (a version suffix `/_history/<v>` is allowed):
/// absolute URLs are not matched, since they may name another server's
/// Practitioner with the same id. A participant whose own `period` cannot be
/// read is left out. A missing status (R4 allows it) reads as `""`, which is
/// never `active`.
pub(crate) fn care_team(id: &str, r: &Value) -> Option<CareTeamFact> {
    if !is_type(r, "CareTeam") {
        return None;
    }
    let status = match r.get("status") {
        None | Some(Value::Null) => String::new(),
        Some(v) => v.as_str()?.to_owned(),
    };
    let period = strict(read_period(r.get("period")))?;
    let members = array(r.get("participant"))
        .filter_map(|p| {
            let practitioner = practitioner(p.get("member"))?;
            let period = strict(read_period(p.get("period")))?;
            Some(Member {
                practitioner,
                period,
            })
        })
        .collect();
    Some(CareTeamFact {
        id: id.to_owned(),
        status,
        period,
        members,
    })
}

/// An Encounter reduced to its status, period and Practitioner participants
/// (`participant[].individual`, with each participant's `period`).
///
/// `None` when `r` is not an Encounter, has no status (R4 requires one) or
/// its `period` cannot be read. Participants as in [`care_team`].
pub(crate) fn encounter(id: &str, r: &Value) -> Option<EncounterFact> {
    if !is_type(r, "Encounter") {
        return None;
    }
    let status = r.get("status")?.as_str()?.to_owned();
    let period = strict(read_period(r.get("period")))?;
    let participants = array(r.get("participant"))
        .filter_map(|p| {
            let practitioner = practitioner(p.get("individual"))?;
            let period = strict(read_period(p.get("period")))?;
            Some(Member {
                practitioner,
                period,
            })
        })
        .collect();
    Some(EncounterFact {
        id: id.to_owned(),
        status,
        period,
        participants,
    })
}

/// An Appointment reduced to its status, start, end and the Practitioner
/// actors among its participants (each id once, in order).
///
/// `None` when `r` is not an Appointment, has no status (R4 requires one),
/// or has a `start` or `end` that cannot be read. The start is the earliest
/// instant its value covers and the end the latest. Participants are matched
/// as in [`care_team`], whatever their participation status.
pub(crate) fn appointment(id: &str, r: &Value) -> Option<AppointmentFact> {
    if !is_type(r, "Appointment") {
        return None;
    }
    let status = r.get("status")?.as_str()?.to_owned();
    let start = strict_bound(r.get("start"), earliest)?;
    let end = strict_bound(r.get("end"), latest)?;
    if let (Some(s), Some(e)) = (start, end)
        && s > e
    {
        return None;
    }
    let mut participants: Vec<String> = Vec::new();
    for p in array(r.get("participant")) {
        if let Some(pr) = practitioner(p.get("actor"))
            && !participants.contains(&pr)
        {
            participants.push(pr);
        }
    }
    Some(AppointmentFact {
        id: id.to_owned(),
        status,
        start,
        end,
        participants,
    })
}

/// A patient-privacy Consent reduced to its status, base provision and
/// nested provisions.
///
/// `None` when `r` is not a Consent, has no status (R4 requires one, so the
/// write path never stores such a Consent), or its `scope` has no coding
/// `patient-privacy` (system `consentscope`, or no system: reading more
/// consents can only take access away).
///
/// The base `provision.type` defaults to `permit`; an unknown type, or a
/// `provision` that is not an object, reads as `deny`. The base period's
/// unreadable bounds are open (the consent keeps applying). Conditions on
/// the base provision itself (`actor`, `purpose`, …) are not read: under a
/// `deny` base this denies more than written, under a `permit` base they
/// change nothing.
///
/// Each nested provision (`provision.provision[]`) becomes a [`Provision`]:
/// - type `permit` or `deny`; absent or unknown reads as `deny`.
/// - `actor[].reference`: relative `Practitioner/<id>` and
///   `Organization/<id>` become [`Actor`]s. `Patient` and `RelatedPerson`
///   actors are nobody a workforce rule serves (and consent never applies to
///   the patient's own access), so they are left out. Every other actor
///   (PractitionerRole, CareTeam, Group, Device, absolute or contained
///   references, an actor without a reference) cannot be matched here.
///   A `deny` naming one of those applies to everyone (it must not vanish,
///   and its actor may be anyone of the workforce); a `permit` keeps only
///   the actors it can match. A provision whose actors were all left out is
///   dropped: it names actors, so it must not become "everyone".
/// - `purpose[]`, `securityLabel[]`, `class[]`: each `Coding.code` as
///   written (systems are not checked). A coding without a code reads as
///   `""`, which matches nothing, so the provision is not widened to "any".
/// - `dataPeriod` and `period`: on a `deny`, unreadable bounds are open; a
///   `permit` with an unreadable one is dropped.
///
/// Deeper provisions (exceptions to exceptions) are not read as such:
/// every `deny` below the first level is lifted to the first level with the
/// conditions it does not name taken from its ancestors, so a denial never
/// vanishes; `permit`s below the first level are ignored, so a denial may
/// cover more than written. Below [`MAX_PROVISION_DEPTH`] levels, and for a
/// nested list that is not an array, a `deny` with the parent's conditions
/// stands in for what could not be read.
pub(crate) fn consent(id: &str, r: &Value) -> Option<ConsentFact> {
    if !is_type(r, "Consent") || !is_patient_privacy(r) {
        return None;
    }
    let status = r.get("status")?.as_str()?.to_owned();
    let base_provision = r.get("provision").filter(|v| !v.is_null());
    let (base, period, nested) = match base_provision {
        None => (Effect::Permit, None, None),
        Some(p) if !p.is_object() => (Effect::Deny, None, None),
        Some(p) => {
            let base = match p.get("type") {
                None | Some(Value::Null) => Effect::Permit,
                Some(t) => effect(t),
            };
            (base, open(read_period(p.get("period"))), p.get("provision"))
        }
    };
    let mut provisions = Vec::new();
    let top = Node::everything(Effect::Deny);
    read_provisions(nested, &top, 1, &mut provisions);
    Some(ConsentFact {
        id: id.to_owned(),
        status,
        period,
        base,
        provisions,
    })
}

/// The sensitivity labels of `meta.security` (codes [`Label::parse`]
/// knows; systems are not checked, so a label is never missed).
pub(crate) fn labels(r: &Value) -> BTreeSet<Label> {
    array(r.get("meta").and_then(|m| m.get("security")))
        .filter_map(|c| c.get("code")?.as_str())
        .filter_map(Label::parse)
        .collect()
}

/// The clinical date of a resource (what a consent's `dataPeriod` is
/// compared with): the earliest instant of the first of its date elements
/// that is present, or `None` when that one cannot be read or none is
/// present.
///
/// Observation: `effectiveDateTime`, `effectivePeriod.start`,
/// `effectiveInstant`, `issued`. Condition: `recordedDate`,
/// `onsetDateTime`. MedicationRequest and ServiceRequest: `authoredOn`.
/// Encounter: `period.start`. Appointment: `start`. DocumentReference:
/// `date`. Communication: `sent`. CareTeam: `period.start`. Other types have
/// none.
pub(crate) fn clinical_date(rtype: ResourceType, r: &Value) -> Option<Timestamp> {
    let paths: &[&[&str]] = match rtype {
        ResourceType::Observation => &[
            &["effectiveDateTime"],
            &["effectivePeriod", "start"],
            &["effectiveInstant"],
            &["issued"],
        ],
        ResourceType::Condition => &[&["recordedDate"], &["onsetDateTime"]],
        ResourceType::MedicationRequest | ResourceType::ServiceRequest => &[&["authoredOn"]],
        ResourceType::Encounter | ResourceType::CareTeam => &[&["period", "start"]],
        ResourceType::Appointment => &[&["start"]],
        ResourceType::DocumentReference => &[&["date"]],
        ResourceType::Communication => &[&["sent"]],
        ResourceType::Patient
        | ResourceType::RelatedPerson
        | ResourceType::Practitioner
        | ResourceType::PractitionerRole
        | ResourceType::Organization
        | ResourceType::Consent => &[],
    };
    let value = paths.iter().find_map(|path| {
        path.iter()
            .try_fold(r, |v, key| v.get(*key))
            .filter(|v| !v.is_null())
    })?;
    earliest(value)
}

/// Removes each named top-level element and, when anything was removed,
/// marks the resource with the `REDACTED` security label (once).
///
/// Element order is kept. A `meta` or `meta.security` of the wrong type is
/// replaced, so the mark is never missing from a masked resource.
pub(crate) fn mask(r: &mut Value, masks: &[String]) {
    let Some(obj) = r.as_object_mut() else {
        return;
    };
    let mut removed = false;
    for m in masks {
        removed |= obj.shift_remove(m.as_str()).is_some();
    }
    if !removed {
        return;
    }
    let meta = obj
        .entry("meta")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    let security = meta
        .entry("security")
        .or_insert_with(|| Value::Array(Vec::new()));
    if !security.is_array() {
        *security = Value::Array(Vec::new());
    }
    let Some(security) = security.as_array_mut() else {
        return;
    };
    let marked = security.iter().any(|c| {
        c.get("system").and_then(Value::as_str) == Some(REDACTED_SYSTEM)
            && c.get("code").and_then(Value::as_str) == Some(REDACTED_CODE)
    });
    if !marked {
        let mut coding = Map::new();
        coding.insert("system".to_owned(), Value::from(REDACTED_SYSTEM));
        coding.insert("code".to_owned(), Value::from(REDACTED_CODE));
        security.push(Value::Object(coding));
    }
}

// ---- Resources and references ----------------------------------------------

fn is_type(r: &Value, name: &str) -> bool {
    r.get("resourceType").and_then(Value::as_str) == Some(name)
}

/// The elements of an array (nothing for anything else).
fn array(v: Option<&Value>) -> impl Iterator<Item = &Value> {
    v.and_then(Value::as_array).into_iter().flatten()
}

/// The Practitioner id of a relative reference in `reference.reference`.
fn practitioner(reference: Option<&Value>) -> Option<String> {
    let s = reference?.get("reference")?.as_str()?;
    match parse_reference(s) {
        RefTarget::Local { rtype, id, .. } if rtype == "Practitioner" => Some(id),
        _ => None,
    }
}

fn is_patient_privacy(r: &Value) -> bool {
    array(r.get("scope").and_then(|s| s.get("coding"))).any(|c| {
        c.get("code").and_then(Value::as_str) == Some("patient-privacy")
            && match c.get("system") {
                None | Some(Value::Null) => true,
                Some(s) => s.as_str() == Some(CONSENT_SCOPE_SYSTEM),
            }
    })
}

fn effect(v: &Value) -> Effect {
    match v.as_str() {
        Some("permit") => Effect::Permit,
        // `deny`, and whatever cannot be read: fail closed.
        _ => Effect::Deny,
    }
}

// ---- Consent provisions ----------------------------------------------------

/// Who a provision names, before the fail-safe choice of [`Node::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Actors {
    /// No `actor` element: everyone.
    Absent,
    Listed {
        /// The actors the rules can match.
        usable: Vec<Actor>,
        /// Some actor could be anyone of the workforce.
        unresolved: bool,
    },
}

/// One provision as read, with the doubts kept for [`Node::finish`].
#[derive(Debug, Clone)]
struct Node {
    effect: Effect,
    actors: Actors,
    purposes: Vec<String>,
    labels: Vec<String>,
    classes: Vec<String>,
    data_period: PeriodRead,
    period: PeriodRead,
}

impl Node {
    /// A provision naming nothing (it applies to everyone and everything).
    fn everything(effect: Effect) -> Node {
        Node {
            effect,
            actors: Actors::Absent,
            purposes: Vec::new(),
            labels: Vec::new(),
            classes: Vec::new(),
            data_period: PeriodRead::Absent,
            period: PeriodRead::Absent,
        }
    }

    /// Reads one provision; one that is not an object is a `deny` of
    /// everything (fail closed).
    fn read(p: &Value) -> Node {
        if !p.is_object() {
            return Node::everything(Effect::Deny);
        }
        let effect = match p.get("type") {
            None | Some(Value::Null) => Effect::Deny,
            Some(t) => effect(t),
        };
        let actors = match list(p.get("actor")) {
            List::Absent => Actors::Absent,
            List::Malformed => Actors::Listed {
                usable: Vec::new(),
                unresolved: true,
            },
            List::Items(items) => {
                let (mut usable, mut unresolved) = (Vec::new(), false);
                for a in items {
                    match actor(a) {
                        ActorRead::Usable(x) => usable.push(x),
                        ActorRead::NotWorkforce => {}
                        ActorRead::Unresolved => unresolved = true,
                    }
                }
                Actors::Listed { usable, unresolved }
            }
        };
        Node {
            effect,
            actors,
            purposes: codes(p.get("purpose")),
            labels: codes(p.get("securityLabel")),
            classes: codes(p.get("class")),
            data_period: read_period(p.get("dataPeriod")),
            period: read_period(p.get("period")),
        }
    }

    /// Takes what this provision does not name from its parent.
    fn inherit(mut self, parent: &Node) -> Node {
        if self.actors == Actors::Absent {
            self.actors = parent.actors.clone();
        }
        for (mine, theirs) in [
            (&mut self.purposes, &parent.purposes),
            (&mut self.labels, &parent.labels),
            (&mut self.classes, &parent.classes),
        ] {
            if mine.is_empty() {
                mine.clone_from(theirs);
            }
        }
        if self.data_period == PeriodRead::Absent {
            self.data_period = parent.data_period;
        }
        if self.period == PeriodRead::Absent {
            self.period = parent.period;
        }
        self
    }

    /// The provision the rules get, or `None` when it applies to nobody the
    /// rules serve (or is a `permit` with a doubt).
    fn finish(&self) -> Option<Provision> {
        let deny = self.effect == Effect::Deny;
        let actors = match &self.actors {
            Actors::Absent => Vec::new(),
            Actors::Listed { unresolved, .. } if deny && *unresolved => Vec::new(),
            Actors::Listed { usable, .. } if usable.is_empty() => return None,
            Actors::Listed { usable, .. } => usable.clone(),
        };
        let (data_period, period) = if deny {
            (open(self.data_period), open(self.period))
        } else {
            (strict_opt(self.data_period)?, strict_opt(self.period)?)
        };
        Some(Provision {
            effect: self.effect,
            actors,
            purposes: self.purposes.clone(),
            labels: self.labels.clone(),
            classes: self.classes.clone(),
            data_period,
            period,
        })
    }
}

/// Reads the provisions of `nested` (children of `parent`) at `depth`: at
/// the first level every one, below only the denials (see [`consent`]).
fn read_provisions(nested: Option<&Value>, parent: &Node, depth: usize, out: &mut Vec<Provision>) {
    let stand_in = |out: &mut Vec<Provision>| {
        let mut p = parent.clone();
        p.effect = Effect::Deny;
        out.extend(p.finish());
    };
    match list(nested) {
        List::Absent => {}
        List::Malformed => stand_in(out),
        List::Items(_) if depth > MAX_PROVISION_DEPTH => stand_in(out),
        List::Items(items) => {
            for p in items {
                let node = Node::read(p).inherit(parent);
                if depth == 1 || node.effect == Effect::Deny {
                    out.extend(node.finish());
                }
                read_provisions(p.get("provision"), &node, depth + 1, out);
            }
        }
    }
}

enum ActorRead {
    Usable(Actor),
    /// Patient or RelatedPerson: no workforce account is one.
    NotWorkforce,
    Unresolved,
}

/// Reads `actor[i].reference.reference`.
fn actor(a: &Value) -> ActorRead {
    let Some(s) = a
        .get("reference")
        .and_then(|r| r.get("reference"))
        .and_then(Value::as_str)
    else {
        return ActorRead::Unresolved;
    };
    match parse_reference(s) {
        RefTarget::Local { rtype, id, .. } => match rtype.as_str() {
            "Practitioner" => ActorRead::Usable(Actor::Practitioner(id)),
            "Organization" => ActorRead::Usable(Actor::Organization(id)),
            "Patient" | "RelatedPerson" => ActorRead::NotWorkforce,
            _ => ActorRead::Unresolved,
        },
        _ => ActorRead::Unresolved,
    }
}

enum List<'a> {
    Absent,
    Items(&'a [Value]),
    Malformed,
}

/// An element that should be an array; `null` and `[]` are absent.
fn list(v: Option<&Value>) -> List<'_> {
    match v {
        None | Some(Value::Null) => List::Absent,
        Some(Value::Array(a)) if a.is_empty() => List::Absent,
        Some(Value::Array(a)) => List::Items(a),
        Some(_) => List::Malformed,
    }
}

/// The `code` of each Coding of a list; one without a code (or a list that
/// is not an array) gives `""`, which matches nothing.
fn codes(v: Option<&Value>) -> Vec<String> {
    match list(v) {
        List::Absent => Vec::new(),
        List::Malformed => vec![String::new()],
        List::Items(items) => items
            .iter()
            .map(|c| {
                c.get("code")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect(),
    }
}

// ---- Dates and periods -----------------------------------------------------

/// The first and last microsecond a FHIR date, dateTime or instant covers.
fn range(s: &str) -> Option<(i64, i64)> {
    // The search form also reads a time without an offset (as UTC); a time
    // without seconds, which only search values may have, is refused.
    let d = parse_date(s, DateForm::Search)?;
    if d.precision == Precision::Minute || d.range.end <= d.range.start {
        return None;
    }
    Some((d.range.start, d.range.end.checked_sub(1)?))
}

/// The earliest instant a date value covers.
fn earliest(v: &Value) -> Option<Timestamp> {
    range(v.as_str()?).map(|(s, _)| Timestamp(s))
}

/// The latest instant a date value covers.
fn latest(v: &Value) -> Option<Timestamp> {
    range(v.as_str()?).map(|(_, e)| Timestamp(e))
}

/// A period as read: absent, read, or with a doubt (keeping the bounds
/// that could be read; none when the bounds were in the wrong order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeriodRead {
    Absent,
    Read(Period),
    Doubtful(Period),
}

fn read_period(v: Option<&Value>) -> PeriodRead {
    let v = match v {
        None | Some(Value::Null) => return PeriodRead::Absent,
        Some(v) if !v.is_object() => return PeriodRead::Doubtful(Period::default()),
        Some(v) => v,
    };
    let mut doubt = false;
    let mut bound = |key: &str, read: fn(&Value) -> Option<Timestamp>| match v.get(key) {
        None | Some(Value::Null) => None,
        Some(b) => {
            let t = read(b);
            doubt |= t.is_none();
            t
        }
    };
    let period = Period {
        start: bound("start", earliest),
        end: bound("end", latest),
    };
    if let (Some(s), Some(e)) = (period.start, period.end)
        && s > e
    {
        return PeriodRead::Doubtful(Period::default());
    }
    if doubt {
        PeriodRead::Doubtful(period)
    } else {
        PeriodRead::Read(period)
    }
}

/// For facts that grant: a doubt drops the fact (`None`).
fn strict(p: PeriodRead) -> Option<Period> {
    match p {
        PeriodRead::Absent => Some(Period::default()),
        PeriodRead::Read(p) => Some(p),
        PeriodRead::Doubtful(_) => None,
    }
}

/// For a `permit` provision: a doubt drops it (outer `None`).
fn strict_opt(p: PeriodRead) -> Option<Option<Period>> {
    match p {
        PeriodRead::Absent => Some(None),
        PeriodRead::Read(p) => Some(Some(p)),
        PeriodRead::Doubtful(_) => None,
    }
}

/// For what denies: a doubtful bound is open.
fn open(p: PeriodRead) -> Option<Period> {
    match p {
        PeriodRead::Absent => None,
        PeriodRead::Read(p) | PeriodRead::Doubtful(p) => Some(p),
    }
}

/// A lone bound of a fact that grants: absent is `Some(None)`, unreadable
/// is `None`.
fn strict_bound(
    v: Option<&Value>,
    read: fn(&Value) -> Option<Timestamp>,
) -> Option<Option<Timestamp>> {
    match v {
        None | Some(Value::Null) => Some(None),
        Some(v) => read(v).map(Some),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]

    use serde_json::json;

    use super::*;

    /// A timestamp from an RFC 3339 instant.
    fn ts(s: &str) -> Timestamp {
        let t =
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap();
        Timestamp::from_offset_datetime(t)
    }

    fn period(start: Option<&str>, end: Option<&str>) -> Period {
        Period {
            start: start.map(ts),
            end: end.map(ts),
        }
    }

    // ---- dates ----

    #[test]
    fn partial_dates_cover_ranges() {
        let check = |s: &str, first: &str, last: &str| {
            let v = json!(s);
            assert_eq!(earliest(&v), Some(ts(first)), "earliest {s}");
            assert_eq!(latest(&v), Some(ts(last)), "latest {s}");
        };
        check(
            "2026",
            "2026-01-01T00:00:00Z",
            "2026-12-31T23:59:59.999999Z",
        );
        check(
            "2026-03",
            "2026-03-01T00:00:00Z",
            "2026-03-31T23:59:59.999999Z",
        );
        check(
            "2024-02",
            "2024-02-01T00:00:00Z",
            "2024-02-29T23:59:59.999999Z",
        );
        check(
            "2026-02",
            "2026-02-01T00:00:00Z",
            "2026-02-28T23:59:59.999999Z",
        );
        check(
            "2026-12",
            "2026-12-01T00:00:00Z",
            "2026-12-31T23:59:59.999999Z",
        );
        check(
            "2026-03-01",
            "2026-03-01T00:00:00Z",
            "2026-03-01T23:59:59.999999Z",
        );
        check(
            "2026-03-01T10:00:00Z",
            "2026-03-01T10:00:00Z",
            "2026-03-01T10:00:00.999999Z",
        );
        check(
            "2026-03-01T10:00:00+02:00",
            "2026-03-01T08:00:00Z",
            "2026-03-01T08:00:00.999999Z",
        );
        check(
            "2026-03-01T00:30:00-05:30",
            "2026-03-01T06:00:00Z",
            "2026-03-01T06:00:00.999999Z",
        );
        check(
            "2026-03-01T10:00:00.25Z",
            "2026-03-01T10:00:00.25Z",
            "2026-03-01T10:00:00.259999Z",
        );
        check(
            "2026-03-01T10:00:00.123456Z",
            "2026-03-01T10:00:00.123456Z",
            "2026-03-01T10:00:00.123456Z",
        );
        check(
            "2026-03-01T10:00:00.1234567Z",
            "2026-03-01T10:00:00.123456Z",
            "2026-03-01T10:00:00.123456Z",
        );
        // No offset: read as UTC.
        check(
            "2026-03-01T10:00:00",
            "2026-03-01T10:00:00Z",
            "2026-03-01T10:00:00.999999Z",
        );
        check(
            "1969-12-31",
            "1969-12-31T00:00:00Z",
            "1969-12-31T23:59:59.999999Z",
        );
    }

    #[test]
    fn bad_dates_are_not_read() {
        for v in [
            json!(""),
            json!("2026-3"),
            json!("2026-13"),
            json!("2026-02-29"),
            json!("2026-03-01T10:00"),
            json!("2026-03-01T10:00Z"),
            json!("2026-03-01T25:00:00Z"),
            json!("2026-03-01 10:00:00Z"),
            json!("0000"),
            json!("yesterday"),
            json!(20260301),
            json!(null),
            json!({"start": "2026"}),
            json!(["2026"]),
            json!(true),
        ] {
            assert_eq!(earliest(&v), None, "{v}");
            assert_eq!(latest(&v), None, "{v}");
        }
    }

    #[test]
    fn every_day_of_a_range_of_years_reads() {
        // Exhaustive over days: the earliest and latest instants of a day
        // are one day apart minus a microsecond, and days follow each other.
        let mut expected = ts("2023-01-01T00:00:00Z").0;
        let mut d = time::Date::from_calendar_date(2023, time::Month::January, 1).unwrap();
        while d.year() < 2029 {
            let s = format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day());
            let (first, last) = range(&s).unwrap();
            assert_eq!(first, expected, "{s}");
            assert_eq!(last, first + 86_400_000_000 - 1, "{s}");
            expected += 86_400_000_000;
            d = d.next_day().unwrap();
        }
    }

    #[test]
    fn months_end_where_the_next_begins() {
        for y in [1999, 2000, 2024, 2025, 2100] {
            for m in 1..=12 {
                let (_, last) = range(&format!("{y:04}-{m:02}")).unwrap();
                let next = if m == 12 {
                    format!("{:04}-01", y + 1)
                } else {
                    format!("{y:04}-{:02}", m + 1)
                };
                let (first_next, _) = range(&next).unwrap();
                assert_eq!(last + 1, first_next, "{y}-{m}");
            }
        }
    }

    #[test]
    fn periods() {
        assert_eq!(read_period(None), PeriodRead::Absent);
        assert_eq!(read_period(Some(&json!(null))), PeriodRead::Absent);
        assert_eq!(
            read_period(Some(&json!({}))),
            PeriodRead::Read(Period::default())
        );
        assert_eq!(
            read_period(Some(&json!({"start": "2026-03", "end": "2026-03"}))),
            PeriodRead::Read(period(
                Some("2026-03-01T00:00:00Z"),
                Some("2026-03-31T23:59:59.999999Z")
            ))
        );
        assert_eq!(
            read_period(Some(&json!({"start": "2026-03", "end": "soon"}))),
            PeriodRead::Doubtful(period(Some("2026-03-01T00:00:00Z"), None))
        );
        assert_eq!(
            read_period(Some(&json!({"start": 5, "end": "2026"}))),
            PeriodRead::Doubtful(period(None, Some("2026-12-31T23:59:59.999999Z")))
        );
        assert_eq!(
            read_period(Some(&json!({"start": "2027", "end": "2026"}))),
            PeriodRead::Doubtful(Period::default())
        );
        assert_eq!(
            read_period(Some(&json!("2026"))),
            PeriodRead::Doubtful(Period::default())
        );
        // A day-precision period of one day is not inverted.
        assert!(matches!(
            read_period(Some(&json!({"start": "2026-03-01", "end": "2026-03-01"}))),
            PeriodRead::Read(_)
        ));
    }

    // ---- CareTeam ----

    fn team(extra: Value) -> Value {
        let mut t = json!({
            "resourceType": "CareTeam",
            "id": "t1",
            "status": "active",
            "subject": {"reference": "Patient/p1"},
            "period": {"start": "2026-01"},
            "participant": [
                {"member": {"reference": "Practitioner/d1"}, "period": {"start": "2026-02-01", "end": "2026-03"}},
                {"member": {"reference": "Practitioner/d2/_history/3"}},
                {"member": {"reference": "Organization/o1"}},
                {"member": {"reference": "https://elsewhere.example/fhir/Practitioner/d3"}},
                {"member": {"reference": "Practitioner/d4"}, "period": {"end": "never"}},
                {"member": {"display": "Dr No Reference"}},
                {"member": "Practitioner/d5"},
                {"member": {"reference": "Practitioner/bad id"}},
                "junk"
            ]
        });
        if let (Some(t), Some(extra)) = (t.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                t.insert(k.clone(), v.clone());
            }
        }
        t
    }

    #[test]
    fn care_team_keeps_relative_practitioner_members() {
        let f = care_team("t1", &team(json!({}))).unwrap();
        assert_eq!(f.id, "t1");
        assert_eq!(f.status, "active");
        assert_eq!(f.period, period(Some("2026-01-01T00:00:00Z"), None));
        assert_eq!(
            f.members,
            vec![
                Member {
                    practitioner: "d1".into(),
                    period: period(
                        Some("2026-02-01T00:00:00Z"),
                        Some("2026-03-31T23:59:59.999999Z")
                    ),
                },
                Member {
                    practitioner: "d2".into(),
                    period: Period::default(),
                },
            ]
        );
    }

    #[test]
    fn care_team_with_doubtful_dates_or_wrong_type_gives_nothing() {
        assert_eq!(
            care_team("t1", &team(json!({"period": {"start": "Jan"}}))),
            None
        );
        assert_eq!(
            care_team(
                "t1",
                &team(json!({"period": {"start": "2026-03", "end": "2026-02"}}))
            ),
            None
        );
        assert_eq!(
            care_team("t1", &team(json!({"resourceType": "Encounter"}))),
            None
        );
        assert_eq!(care_team("t1", &json!({"status": "active"})), None);
        assert_eq!(care_team("t1", &json!([])), None);
        assert_eq!(care_team("t1", &json!(null)), None);
        assert_eq!(care_team("t1", &team(json!({"status": 1}))), None);
    }

    #[test]
    fn care_team_status_may_be_absent() {
        let mut t = team(json!({}));
        t.as_object_mut().unwrap().remove("status");
        let f = care_team("t1", &t).unwrap();
        assert_eq!(f.status, "");
        let f = care_team("t1", &team(json!({"participant": {"member": {}}}))).unwrap();
        assert!(f.members.is_empty());
    }

    // ---- Encounter ----

    #[test]
    fn encounter_reduces_participants_with_their_periods() {
        let e = json!({
            "resourceType": "Encounter",
            "status": "finished",
            "period": {"start": "2026-03-01T09:00:00+01:00", "end": "2026-03-01"},
            "participant": [
                {"type": [{"coding": [{"code": "ATND"}]}], "individual": {"reference": "Practitioner/d1"}},
                {"individual": {"reference": "Practitioner/d2"}, "period": {"start": "2026-03-01T08:30:00Z"}},
                {"individual": {"reference": "RelatedPerson/r1"}},
                {"individual": {"reference": "Practitioner/d3"}, "period": {"start": "later"}},
                {"period": {"start": "2026"}}
            ]
        });
        let f = encounter("e1", &e).unwrap();
        assert_eq!(f.id, "e1");
        assert_eq!(f.status, "finished");
        assert_eq!(
            f.period,
            period(
                Some("2026-03-01T08:00:00Z"),
                Some("2026-03-01T23:59:59.999999Z")
            )
        );
        assert_eq!(
            f.participants,
            vec![
                Member {
                    practitioner: "d1".into(),
                    period: Period::default()
                },
                Member {
                    practitioner: "d2".into(),
                    period: period(Some("2026-03-01T08:30:00Z"), None)
                },
            ]
        );
    }

    #[test]
    fn encounter_needs_status_and_readable_period() {
        let ok = json!({"resourceType": "Encounter", "status": "in-progress"});
        let f = encounter("e1", &ok).unwrap();
        assert_eq!(f.period, Period::default());
        assert!(f.participants.is_empty());
        for bad in [
            json!({"resourceType": "Encounter"}),
            json!({"resourceType": "Encounter", "status": null}),
            json!({"resourceType": "Encounter", "status": ["finished"]}),
            json!({"resourceType": "Encounter", "status": "finished", "period": {"end": "2026-02-30"}}),
            json!({"resourceType": "Encounter", "status": "finished", "period": "2026"}),
            json!({"resourceType": "Appointment", "status": "finished"}),
        ] {
            assert_eq!(encounter("e1", &bad), None, "{bad}");
        }
    }

    // ---- Appointment ----

    #[test]
    fn appointment_reduces_practitioner_actors_once() {
        let a = json!({
            "resourceType": "Appointment",
            "status": "booked",
            "start": "2026-03-02T09:00:00Z",
            "end": "2026-03-02T09:30:00Z",
            "participant": [
                {"actor": {"reference": "Patient/p1"}, "status": "accepted"},
                {"actor": {"reference": "Practitioner/d1"}, "status": "accepted"},
                {"actor": {"reference": "Practitioner/d1"}, "status": "accepted"},
                {"actor": {"reference": "PractitionerRole/r1"}, "status": "accepted"},
                {"actor": {"reference": "Practitioner/d2"}, "status": "tentative"},
                {"status": "needs-action"}
            ]
        });
        let f = appointment("a1", &a).unwrap();
        assert_eq!(f.id, "a1");
        assert_eq!(f.status, "booked");
        assert_eq!(f.start, Some(ts("2026-03-02T09:00:00Z")));
        assert_eq!(f.end, Some(ts("2026-03-02T09:30:00.999999Z")));
        assert_eq!(f.participants, vec!["d1".to_owned(), "d2".to_owned()]);
    }

    #[test]
    fn appointment_times_may_be_absent_but_not_unreadable() {
        let f = appointment(
            "a1",
            &json!({"resourceType": "Appointment", "status": "proposed"}),
        )
        .unwrap();
        assert_eq!((f.start, f.end), (None, None));
        for bad in [
            json!({"resourceType": "Appointment", "status": "booked", "start": "tomorrow"}),
            json!({"resourceType": "Appointment", "status": "booked", "end": 1}),
            json!({"resourceType": "Appointment", "status": "booked", "start": "2026-03-02T10:00:00Z", "end": "2026-03-02T09:00:00Z"}),
            json!({"resourceType": "Appointment", "start": "2026-03-02T10:00:00Z"}),
            json!({"resourceType": "Encounter", "status": "booked"}),
        ] {
            assert_eq!(appointment("a1", &bad), None, "{bad}");
        }
    }

    // ---- Consent ----

    fn privacy(provision: Value) -> Value {
        json!({
            "resourceType": "Consent",
            "id": "c1",
            "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": "Patient/p1"},
            "provision": provision
        })
    }

    fn nested(children: Value) -> Value {
        privacy(json!({"type": "permit", "provision": children}))
    }

    fn provisions(r: &Value) -> Vec<Provision> {
        consent("c1", r).unwrap().provisions
    }

    fn deny_all() -> Provision {
        Provision {
            effect: Effect::Deny,
            actors: vec![],
            purposes: vec![],
            labels: vec![],
            classes: vec![],
            data_period: None,
            period: None,
        }
    }

    #[test]
    fn consent_reads_a_full_provision() {
        let c = privacy(json!({
            "type": "deny",
            "period": {"start": "2026-01-01", "end": "2026-12"},
            "provision": [{
                "type": "permit",
                "actor": [
                    {"role": {"coding": [{"code": "PRCP"}]}, "reference": {"reference": "Practitioner/d1"}},
                    {"reference": {"reference": "Organization/o1"}}
                ],
                "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}],
                "securityLabel": [{"code": "PSY"}, {"code": "V"}],
                "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "Observation"}],
                "dataPeriod": {"start": "2025", "end": "2025-06"},
                "period": {"end": "2026-06-30"}
            }]
        }));
        let f = consent("c1", &c).unwrap();
        assert_eq!(
            f,
            ConsentFact {
                id: "c1".into(),
                status: "active".into(),
                period: Some(period(
                    Some("2026-01-01T00:00:00Z"),
                    Some("2026-12-31T23:59:59.999999Z")
                )),
                base: Effect::Deny,
                provisions: vec![Provision {
                    effect: Effect::Permit,
                    actors: vec![
                        Actor::Practitioner("d1".into()),
                        Actor::Organization("o1".into())
                    ],
                    purposes: vec!["TREAT".into()],
                    labels: vec!["PSY".into(), "V".into()],
                    classes: vec!["Observation".into()],
                    data_period: Some(period(
                        Some("2025-01-01T00:00:00Z"),
                        Some("2025-06-30T23:59:59.999999Z")
                    )),
                    period: Some(period(None, Some("2026-06-30T23:59:59.999999Z"))),
                }],
            }
        );
    }

    #[test]
    fn consent_base_defaults_and_fails_closed() {
        let base = |p: Value| consent("c1", &privacy(p)).unwrap().base;
        assert_eq!(base(json!({})), Effect::Permit);
        assert_eq!(base(json!(null)), Effect::Permit);
        assert_eq!(base(json!({"type": null})), Effect::Permit);
        assert_eq!(base(json!({"type": "permit"})), Effect::Permit);
        assert_eq!(base(json!({"type": "deny"})), Effect::Deny);
        assert_eq!(base(json!({"type": "Deny"})), Effect::Deny);
        assert_eq!(base(json!({"type": 7})), Effect::Deny);
        assert_eq!(base(json!([{"type": "permit"}])), Effect::Deny);
        assert_eq!(base(json!("permit")), Effect::Deny);
        let mut c = privacy(json!({}));
        c.as_object_mut().unwrap().remove("provision");
        let f = consent("c1", &c).unwrap();
        assert_eq!(
            (f.base, f.period, f.provisions),
            (Effect::Permit, None, vec![])
        );
    }

    #[test]
    fn consent_base_period_doubt_keeps_it_applying() {
        let p = |period: Value| {
            consent("c1", &privacy(json!({"type": "deny", "period": period})))
                .unwrap()
                .period
        };
        assert_eq!(
            p(json!({"start": "2026-02", "end": "soon"})),
            Some(period(Some("2026-02-01T00:00:00Z"), None))
        );
        assert_eq!(
            p(json!({"start": "2027", "end": "2026"})),
            Some(Period::default())
        );
        assert_eq!(p(json!("2026")), Some(Period::default()));
        assert_eq!(p(json!(null)), None);
    }

    #[test]
    fn only_patient_privacy_consents_of_known_status() {
        let mut c = privacy(json!({}));
        c["scope"] = json!({"coding": [{"code": "patient-privacy"}]});
        assert!(consent("c1", &c).is_some(), "no system is accepted");
        for scope in [
            json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "research"}]}),
            json!({"coding": [{"system": "http://example.org/other", "code": "patient-privacy"}]}),
            json!({"coding": [{"system": 5, "code": "patient-privacy"}]}),
            json!({"text": "patient-privacy"}),
            json!("patient-privacy"),
            json!(null),
        ] {
            c["scope"] = scope.clone();
            assert_eq!(consent("c1", &c), None, "{scope}");
        }
        let mut c = privacy(json!({}));
        c["status"] = json!("draft");
        assert_eq!(consent("c1", &c).unwrap().status, "draft");
        c["status"] = json!(null);
        assert_eq!(consent("c1", &c), None);
        c["status"] = json!("active");
        c["resourceType"] = json!("Contract");
        assert_eq!(consent("c1", &c), None);
    }

    #[test]
    fn unmatchable_actors_never_widen_a_provision() {
        let actors = |t: &str, refs: &[&str]| {
            let actor: Vec<Value> = refs
                .iter()
                .map(|r| json!({"reference": {"reference": r}}))
                .collect();
            provisions(&nested(json!([{"type": t, "actor": actor}])))
        };
        // Only actors no workforce account can be: the provision is dropped,
        // whichever its type.
        assert_eq!(actors("deny", &["RelatedPerson/r1"]), vec![]);
        assert_eq!(
            actors("permit", &["Patient/p1", "RelatedPerson/r1"]),
            vec![]
        );
        // A workforce actor we cannot match: a deny covers everyone, a
        // permit keeps only whom it can match (or nothing).
        assert_eq!(actors("deny", &["PractitionerRole/pr1"]), vec![deny_all()]);
        assert_eq!(
            actors("deny", &["Practitioner/d1", "CareTeam/t1"]),
            vec![deny_all()]
        );
        assert_eq!(
            actors("deny", &["https://x.example/Practitioner/d1"]),
            vec![deny_all()]
        );
        assert_eq!(actors("permit", &["PractitionerRole/pr1"]), vec![]);
        assert_eq!(
            actors("permit", &["Practitioner/d1", "Group/g1"])[0].actors,
            vec![Actor::Practitioner("d1".into())]
        );
        assert_eq!(
            actors("deny", &["Practitioner/d1", "RelatedPerson/r1"])[0].actors,
            vec![Actor::Practitioner("d1".into())]
        );
        // An actor without a reference could be anyone.
        let p = provisions(&nested(json!([
            {"type": "deny", "actor": [{"role": {"text": "x"}}]},
            {"type": "deny", "actor": {"reference": {"reference": "Practitioner/d1"}}},
            {"type": "permit", "actor": [{"reference": "Practitioner/d1"}]}
        ])));
        assert_eq!(p, vec![deny_all(), deny_all()]);
        // No actor element, or an empty one: everyone.
        assert_eq!(
            provisions(&nested(json!([{"type": "permit", "actor": []}])))[0].actors,
            vec![]
        );
    }

    #[test]
    fn nested_provision_type_defaults_to_deny() {
        let p = provisions(&nested(
            json!([{}, {"type": "permit"}, {"type": "maybe"}, 3]),
        ));
        let effects: Vec<Effect> = p.iter().map(|p| p.effect).collect();
        assert_eq!(
            effects,
            vec![Effect::Deny, Effect::Permit, Effect::Deny, Effect::Deny]
        );
        assert_eq!(p[3], deny_all());
    }

    #[test]
    fn codings_without_codes_match_nothing() {
        let p = provisions(&nested(json!([{
            "type": "deny",
            "purpose": [{"system": "x"}, {"code": "HPAYMT"}],
            "securityLabel": {"code": "HIV"},
            "class": [{"code": 5}]
        }])));
        assert_eq!(p[0].purposes, vec!["".to_owned(), "HPAYMT".to_owned()]);
        assert_eq!(p[0].labels, vec!["".to_owned()]);
        assert_eq!(p[0].classes, vec!["".to_owned()]);
        let p = provisions(&nested(
            json!([{"type": "deny", "purpose": [], "class": null}]),
        ));
        assert_eq!(p, vec![deny_all()]);
    }

    #[test]
    fn provision_period_doubts_keep_denials_and_drop_permits() {
        let p = provisions(&nested(json!([
            {"type": "deny", "period": {"start": "2026-02", "end": "?"}, "dataPeriod": {"start": "x"}},
            {"type": "deny", "dataPeriod": {"start": "2026", "end": "2025"}},
            {"type": "permit", "period": {"start": "2026-13"}},
            {"type": "permit", "dataPeriod": "2026"},
            {"type": "permit", "period": {"start": "2026-02"}}
        ])));
        assert_eq!(p.len(), 3, "{p:?}");
        assert_eq!(
            p[0].period,
            Some(period(Some("2026-02-01T00:00:00Z"), None))
        );
        assert_eq!(p[0].data_period, Some(Period::default()));
        assert_eq!(p[1].data_period, Some(Period::default()));
        assert_eq!(p[2].effect, Effect::Permit);
        assert_eq!(
            p[2].period,
            Some(period(Some("2026-02-01T00:00:00Z"), None))
        );
    }

    #[test]
    fn deeper_denials_are_lifted_with_their_ancestors_conditions() {
        let p = provisions(&nested(json!([{
            "type": "permit",
            "actor": [{"reference": {"reference": "Organization/o1"}}],
            "purpose": [{"code": "TREAT"}],
            "provision": [
                {"type": "deny", "securityLabel": [{"code": "HIV"}],
                 "provision": [{"type": "permit", "provision": [{"type": "deny", "class": [{"code": "Observation"}]}]}]},
                {"type": "permit", "actor": [{"reference": {"reference": "Practitioner/d9"}}]},
                {"type": "deny", "actor": [{"reference": {"reference": "Practitioner/d2"}}], "purpose": [{"code": "HPAYMT"}]}
            ]
        }])));
        let org = vec![Actor::Organization("o1".into())];
        assert_eq!(
            p,
            vec![
                Provision {
                    effect: Effect::Permit,
                    actors: org.clone(),
                    purposes: vec!["TREAT".into()],
                    ..deny_all()
                },
                Provision {
                    actors: org.clone(),
                    purposes: vec!["TREAT".into()],
                    labels: vec!["HIV".into()],
                    ..deny_all()
                },
                Provision {
                    actors: org.clone(),
                    purposes: vec!["TREAT".into()],
                    labels: vec!["HIV".into()],
                    classes: vec!["Observation".into()],
                    ..deny_all()
                },
                Provision {
                    actors: vec![Actor::Practitioner("d2".into())],
                    purposes: vec!["HPAYMT".into()],
                    ..deny_all()
                },
            ]
        );
    }

    #[test]
    fn unreadable_nested_lists_stand_in_as_denials() {
        // First level: a deny of everything.
        assert_eq!(
            provisions(&nested(json!({"type": "permit"}))),
            vec![deny_all()]
        );
        // Deeper: a deny with the parent's conditions.
        let p = provisions(&nested(json!([{
            "type": "permit",
            "purpose": [{"code": "TREAT"}],
            "provision": "deny"
        }])));
        assert_eq!(
            p[1],
            Provision {
                purposes: vec!["TREAT".into()],
                ..deny_all()
            }
        );
    }

    #[test]
    fn very_deep_provisions_stand_in_as_denials() {
        let mut inner = json!([{"type": "deny", "class": [{"code": "Observation"}]}]);
        for _ in 0..(MAX_PROVISION_DEPTH + 4) {
            inner = json!([{"type": "permit", "provision": inner}]);
        }
        let p = provisions(&nested(inner));
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[1], deny_all());
    }

    #[test]
    fn reduced_consents_deny_as_written() {
        use policy::{Facts, Principal, Purpose, Resource, Role};
        let doctor = |practitioner: &str, organization: &str| Principal {
            id: "acct".into(),
            role: Role::Physician,
            practitioner: Some(practitioner.into()),
            patient: None,
            organization: Some(organization.into()),
            department: None,
            mfa: true,
            training_current: true,
        };
        let observation = |labels: &[Label], date: &str| Resource {
            rtype: ResourceType::Observation,
            id: Some("o1".into()),
            patient: Some("p1".into()),
            labels: labels.iter().copied().collect(),
            date: Some(ts(date)),
        };
        let now = ts("2026-03-15T12:00:00Z");
        let denies = |c: &Value, who: &Principal, what: &Resource| {
            let facts = Facts {
                consents: consent("c1", c).into_iter().collect(),
                ..Facts::default()
            };
            policy::consent_denies(who, Purpose::Treat, what, &facts, now).is_some()
        };
        // "Deny Dr d1 my psychiatric data from 2025 on, until the end of March."
        let c = nested(json!([{
            "type": "deny",
            "actor": [{"reference": {"reference": "Practitioner/d1"}}],
            "securityLabel": [{"code": "PSY"}],
            "dataPeriod": {"start": "2025"},
            "period": {"end": "2026-03"}
        }]));
        let psy = observation(&[Label::Psy], "2025-06-01T00:00:00Z");
        assert!(denies(&c, &doctor("d1", "o1"), &psy));
        assert!(!denies(&c, &doctor("d2", "o1"), &psy));
        assert!(!denies(
            &c,
            &doctor("d1", "o1"),
            &observation(&[], "2025-06-01T00:00:00Z")
        ));
        assert!(!denies(
            &c,
            &doctor("d1", "o1"),
            &observation(&[Label::Psy], "2024-12-31T23:59:59Z")
        ));
        // A deny naming a PractitionerRole denies everyone; one naming only a
        // RelatedPerson denies nobody.
        let role = nested(
            json!([{"type": "deny", "actor": [{"reference": {"reference": "PractitionerRole/r1"}}]}]),
        );
        assert!(denies(&role, &doctor("d2", "o2"), &psy));
        let related = nested(
            json!([{"type": "deny", "actor": [{"reference": {"reference": "RelatedPerson/r1"}}]}]),
        );
        assert!(!denies(&related, &doctor("d2", "o2"), &psy));
        // Opt-out with an exception for organisation o1 (not a PractitionerRole).
        let opt_out = privacy(json!({
            "type": "deny",
            "provision": [
                {"type": "permit", "actor": [{"reference": {"reference": "Organization/o1"}}]},
                {"type": "permit", "actor": [{"reference": {"reference": "PractitionerRole/r1"}}]}
            ]
        }));
        assert!(!denies(&opt_out, &doctor("d1", "o1"), &psy));
        assert!(denies(&opt_out, &doctor("d1", "o2"), &psy));
    }

    /// Every element of some realistic resources replaced, one at a time,
    /// by values of the wrong type: no reducer panics.
    #[test]
    fn wrong_types_anywhere_never_panic() {
        fn paths(v: &Value, here: &mut Vec<PathStep>, out: &mut Vec<Vec<PathStep>>) {
            out.push(here.clone());
            match v {
                Value::Object(m) => {
                    for (k, c) in m {
                        here.push(PathStep::Key(k.clone()));
                        paths(c, here, out);
                        here.pop();
                    }
                }
                Value::Array(a) => {
                    for (i, c) in a.iter().enumerate() {
                        here.push(PathStep::Index(i));
                        paths(c, here, out);
                        here.pop();
                    }
                }
                _ => {}
            }
        }
        fn at<'a>(v: &'a mut Value, path: &[PathStep]) -> &'a mut Value {
            path.iter().fold(v, |v, s| match s {
                PathStep::Key(k) => &mut v[k.as_str()],
                PathStep::Index(i) => &mut v[*i],
            })
        }
        let samples = [
            team(json!({})),
            json!({"resourceType": "Encounter", "status": "finished",
                   "period": {"start": "2026-03-01", "end": "2026-03-02"},
                   "participant": [{"individual": {"reference": "Practitioner/d1"}, "period": {"start": "2026"}}]}),
            json!({"resourceType": "Appointment", "status": "booked", "start": "2026-03-02T09:00:00Z",
                   "end": "2026-03-02T09:30:00Z", "participant": [{"actor": {"reference": "Practitioner/d1"}}]}),
            privacy(
                json!({"type": "deny", "period": {"start": "2026"}, "provision": [{
                "type": "permit", "actor": [{"reference": {"reference": "Practitioner/d1"}}],
                "purpose": [{"code": "TREAT"}], "securityLabel": [{"code": "PSY"}],
                "class": [{"code": "Observation"}], "dataPeriod": {"end": "2026"},
                "period": {"start": "2026"}, "provision": [{"type": "deny"}]}]}),
            ),
            json!({"resourceType": "Observation", "meta": {"security": [{"code": "PSY"}]},
                   "effectivePeriod": {"start": "2026"}, "issued": "2026-01-01T00:00:00Z", "note": [{"text": "x"}]}),
        ];
        let junk = [
            json!(null),
            json!(0),
            json!(-1.5e300),
            json!(true),
            json!(""),
            json!("2026"),
            json!("Practitioner/d1"),
            json!([]),
            json!([null]),
            json!({}),
            json!({"reference": 5}),
        ];
        for sample in &samples {
            let mut all = Vec::new();
            paths(sample, &mut Vec::new(), &mut all);
            for path in &all {
                for j in &junk {
                    let mut r = sample.clone();
                    *at(&mut r, path) = j.clone();
                    let _ = care_team("x", &r);
                    let _ = encounter("x", &r);
                    let _ = appointment("x", &r);
                    let _ = consent("x", &r);
                    let _ = labels(&r);
                    for t in ResourceType::ALL {
                        let _ = clinical_date(t, &r);
                    }
                    mask(&mut r, &masks(&["note", "text", "meta", "participant"]));
                }
            }
        }
    }

    #[derive(Debug, Clone)]
    enum PathStep {
        Key(String),
        Index(usize),
    }

    // ---- labels ----

    #[test]
    fn labels_from_meta_security() {
        let r = json!({"meta": {"security": [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "V"},
            {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"},
            {"code": "HIV"},
            {"code": "VIP"},
            {"code": "N"},
            {"code": "psy"},
            {"code": 1},
            "R"
        ]}});
        assert_eq!(
            labels(&r),
            BTreeSet::from([Label::Restricted, Label::Psy, Label::Hiv, Label::Vip])
        );
        for r in [
            json!({}),
            json!({"meta": null}),
            json!({"meta": {"security": {"code": "R"}}}),
            json!({"meta": []}),
            json!("meta"),
        ] {
            assert!(labels(&r).is_empty(), "{r}");
        }
    }

    // ---- clinical dates ----

    #[test]
    fn clinical_dates_per_type() {
        let check = |t: ResourceType, r: Value, expect: Option<&str>| {
            assert_eq!(clinical_date(t, &r), expect.map(ts), "{t} {r}");
        };
        use ResourceType as T;
        check(
            T::Observation,
            json!({"effectiveDateTime": "2025-06", "issued": "2026-01-01T00:00:00Z"}),
            Some("2025-06-01T00:00:00Z"),
        );
        check(
            T::Observation,
            json!({"effectivePeriod": {"start": "2025-06-02", "end": "2025-07"}}),
            Some("2025-06-02T00:00:00Z"),
        );
        check(
            T::Observation,
            json!({"effectivePeriod": {"end": "2025-07"}, "effectiveInstant": "2025-05-01T10:00:00Z"}),
            Some("2025-05-01T10:00:00Z"),
        );
        check(
            T::Observation,
            json!({"issued": "2025-05-01T10:00:00.5+01:00"}),
            Some("2025-05-01T09:00:00.5Z"),
        );
        check(
            T::Observation,
            json!({"effectiveDateTime": "bad", "issued": "2025-05-01T10:00:00Z"}),
            None,
        );
        check(
            T::Observation,
            json!({"effectiveDateTime": null, "issued": "2025-05-01T10:00:00Z"}),
            Some("2025-05-01T10:00:00Z"),
        );
        check(T::Observation, json!({"effectivePeriod": "2025"}), None);
        check(
            T::Condition,
            json!({"recordedDate": "2024", "onsetDateTime": "2020"}),
            Some("2024-01-01T00:00:00Z"),
        );
        check(
            T::Condition,
            json!({"onsetDateTime": "2020-02-03"}),
            Some("2020-02-03T00:00:00Z"),
        );
        check(
            T::MedicationRequest,
            json!({"authoredOn": "2024-02-29"}),
            Some("2024-02-29T00:00:00Z"),
        );
        check(
            T::ServiceRequest,
            json!({"authoredOn": "2024-02-29T12:00:00Z"}),
            Some("2024-02-29T12:00:00Z"),
        );
        check(
            T::Encounter,
            json!({"period": {"start": "2024-03"}}),
            Some("2024-03-01T00:00:00Z"),
        );
        check(
            T::Appointment,
            json!({"start": "2024-03-01T09:00:00Z"}),
            Some("2024-03-01T09:00:00Z"),
        );
        check(
            T::DocumentReference,
            json!({"date": "2024-03-01T09:00:00-01:00"}),
            Some("2024-03-01T10:00:00Z"),
        );
        check(
            T::Communication,
            json!({"sent": "2024-03-01T09:00:00Z"}),
            Some("2024-03-01T09:00:00Z"),
        );
        check(
            T::CareTeam,
            json!({"period": {"start": "2024"}}),
            Some("2024-01-01T00:00:00Z"),
        );
        for t in [
            T::Patient,
            T::RelatedPerson,
            T::Practitioner,
            T::PractitionerRole,
            T::Organization,
            T::Consent,
        ] {
            check(
                t,
                json!({"date": "2024", "period": {"start": "2024"}, "dateTime": "2024"}),
                None,
            );
        }
        check(T::Observation, json!([]), None);
        check(T::Observation, json!(null), None);
        check(T::Encounter, json!({"period": []}), None);
    }

    // ---- mask ----

    fn masks(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn mask_removes_elements_and_marks_once() {
        let mut r = json!({
            "resourceType": "Encounter",
            "id": "e1",
            "meta": {"versionId": "2", "security": [{"code": "PSY"}]},
            "status": "finished",
            "reasonCode": [{"text": "x"}],
            "diagnosis": [],
            "subject": {"reference": "Patient/p1"}
        });
        mask(
            &mut r,
            &masks(&["reasonCode", "reasonReference", "diagnosis"]),
        );
        let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            vec!["resourceType", "id", "meta", "status", "subject"]
        );
        let marker = json!({"system": REDACTED_SYSTEM, "code": "REDACTED"});
        assert_eq!(
            r["meta"]["security"],
            json!([{"code": "PSY"}, marker.clone()])
        );
        assert_eq!(r["meta"]["versionId"], json!("2"));
        // Masking again (or with something already gone) adds nothing.
        r["text"] = json!({"div": "<div/>"});
        mask(&mut r, &masks(&["text"]));
        mask(&mut r, &masks(&["reasonCode"]));
        assert_eq!(r["meta"]["security"], json!([{"code": "PSY"}, marker]));
        assert!(r.get("text").is_none());
    }

    #[test]
    fn mask_without_removal_changes_nothing() {
        let original = json!({"resourceType": "Condition", "code": {"text": "x"}});
        let mut r = original.clone();
        mask(&mut r, &masks(&["note", "text"]));
        assert_eq!(r, original);
        mask(&mut r, &[]);
        assert_eq!(r, original);
        let mut s = json!("not a resource");
        mask(&mut s, &masks(&["text"]));
        assert_eq!(s, json!("not a resource"));
    }

    #[test]
    fn mask_creates_or_repairs_meta() {
        let marker = json!([{"system": REDACTED_SYSTEM, "code": "REDACTED"}]);
        for meta in [
            None,
            Some(json!(null)),
            Some(json!("x")),
            Some(json!({"security": {"code": "R"}})),
        ] {
            let mut r = json!({"resourceType": "Condition", "note": [{"text": "x"}]});
            if let Some(m) = meta.clone() {
                r["meta"] = m;
            }
            mask(&mut r, &masks(&["note"]));
            assert!(r.get("note").is_none());
            assert_eq!(r["meta"]["security"], marker, "{meta:?}");
        }
    }
}
