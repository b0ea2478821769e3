//! The hand-written access-policy corpus (`corpus/policy/*.toml`) and its
//! loader.
//!
//! Every case was written by hand from `docs/access-policy.md`; none was
//! produced by running an evaluator. A case describes one request at a fixed
//! [`NOW`], with every time written relative to it, and the decision the doc
//! calls for.
//!
//! # Format
//!
//! ```toml
//! [[case]]
//! name = "nurse on the care team reads an observation"
//! role = "nurse"                 # a policy::Role, snake_case
//! action = "read"                # a policy::Action
//! type = "Observation"           # a FHIR type name
//! labels = ["PSY"]               # meta.security codes (V = R); default none
//! purpose = "TREAT"              # declared purpose; default none
//! care_team = [{ member_period = ["-10d", "+10d"] }]
//! expect = "allow"               # or "deny"
//! rule = "P4"                    # the doc's rule id that decides
//! reason = "…"                   # why, in the doc's words
//! masks = []                     # elements masked on an allow; default none
//! note = "…"                     # optional: an interpretation of the doc
//! ```
//!
//! Times are `"now"` or signed terms added together: `"-72h"`, `"+14d"`,
//! `"-14d-1s"`, `"+1h+30m"` (units `w`, `d`, `h`, `m`, `s`). A period is a
//! pair `["-10d", "+10d"]` where `"open"` leaves that end out.
//!
//! The principal is account `me`. A workforce account's Practitioner is
//! `me` (unless `linked = false`) and its Organization `org-1` (override with
//! `organization`); a patient account is linked to Patient `p1` (override with
//! `principal_patient`, `""` for none). The resource is in Patient `p1`'s
//! compartment (override with `resource_patient`, `""` for none); directory
//! types have no compartment. `mfa` and `training` default to true.
//!
//! Facts (every field but the times optional; people default to `me`, the
//! patient to `p1`, statuses to the usual live one):
//! - `care_team = [{ status, period, member, member_period }]`
//! - `encounters = [{ status, period, participant }]`
//! - `appointments = [{ status, start, end, participant }]`
//! - `consultations = [{ period, practitioner }]`
//! - `grants = [{ start, expires, revoked, account, patient }]`
//! - `consents = [{ id, status, period, base, provisions = [{ effect,
//!   actors = ["Practitioner/x", "Organization/y"], purposes, labels,
//!   classes, data_period, period }] }]`
//!
//! `participant = ""` leaves an Encounter or Appointment without the
//! principal's Practitioner (another clinician's visit).

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use model::{ResourceType, Timestamp};
use policy::{
    Action, Actor, AppointmentFact, CareTeamFact, ConsentFact, ConsultationFact, Effect,
    EncounterFact, Facts, GrantFact, Label, Member, Period, Principal, Provision, Purpose, Request,
    Resource, Role,
};
use serde::Deserialize;

/// The fixed "now" of every case: 2026-06-01T12:00:00Z.
pub const NOW: Timestamp = Timestamp(1_780_315_200 * 1_000_000);

/// The principal's account id and Practitioner id.
pub const ME: &str = "me";
/// The patient whose data the cases are about, by default.
pub const PATIENT: &str = "p1";
/// The principal's Organization, by default.
pub const ORGANIZATION: &str = "org-1";

/// One case, with owned inputs ready to build a [`Request`].
#[derive(Debug, Clone)]
pub struct Case {
    /// `file.toml: name`.
    pub name: String,
    pub principal: Principal,
    pub action: Action,
    pub resource: Resource,
    pub purpose: Option<Purpose>,
    pub now: Timestamp,
    pub facts: Facts,
    pub expect: Expected,
    pub reason: String,
    /// An interpretation of the doc the expectation rests on, if any.
    pub note: Option<String>,
}

impl Case {
    pub fn request(&self) -> Request<'_> {
        Request {
            principal: &self.principal,
            action: self.action,
            resource: &self.resource,
            purpose: self.purpose,
            now: self.now,
            facts: &self.facts,
        }
    }
}

/// The decision a case expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub allow: bool,
    /// The rule that decides (it must be among the deciding policies).
    pub rule: String,
    pub masks: BTreeSet<String>,
}

/// Why the corpus could not be loaded.
#[derive(Debug)]
pub enum CorpusError {
    Io(PathBuf, std::io::Error),
    Toml(PathBuf, toml::de::Error),
    Case {
        file: PathBuf,
        case: String,
        message: String,
    },
}

impl fmt::Display for CorpusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorpusError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            CorpusError::Toml(p, e) => write!(f, "{}: {e}", p.display()),
            CorpusError::Case {
                file,
                case,
                message,
            } => write!(f, "{}: case {case:?}: {message}", file.display()),
        }
    }
}

impl std::error::Error for CorpusError {}

/// The corpus directory of this crate.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/policy")
}

/// Loads every `*.toml` file of `dir`, in file-name order.
pub fn load_corpus(dir: &Path) -> Result<Vec<Case>, CorpusError> {
    let entries = std::fs::read_dir(dir).map_err(|e| CorpusError::Io(dir.to_owned(), e))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| CorpusError::Io(dir.to_owned(), e))?
            .path();
        if path.extension().is_some_and(|x| x == "toml") {
            files.push(path);
        }
    }
    files.sort();
    let mut cases = Vec::new();
    for file in files {
        cases.extend(load_file(&file)?);
    }
    Ok(cases)
}

/// Loads one corpus file.
pub fn load_file(file: &Path) -> Result<Vec<Case>, CorpusError> {
    let text = std::fs::read_to_string(file).map_err(|e| CorpusError::Io(file.to_owned(), e))?;
    let raw: RawFile = toml::from_str(&text).map_err(|e| CorpusError::Toml(file.to_owned(), e))?;
    let stem = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    raw.case
        .into_iter()
        .map(|c| {
            let name = c.name.clone();
            c.build(&stem).map_err(|message| CorpusError::Case {
                file: file.to_owned(),
                case: name,
                message,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Times.
// ---------------------------------------------------------------------------

/// Parses a relative time (`"now"`, `"-72h"`, `"-14d-1s"`) into an instant.
pub fn parse_time(s: &str) -> Result<Timestamp, String> {
    Ok(Timestamp(NOW.0 + parse_offset(s)? * 1_000_000))
}

/// Parses a relative time into seconds from [`NOW`].
pub fn parse_offset(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if s == "now" || s == "0" {
        return Ok(0);
    }
    let bad = || format!("bad time {s:?} (expected e.g. \"-72h\", \"+14d-1s\", \"now\")");
    let mut total: i64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let sign = match rest.chars().next() {
            Some('+') => 1,
            Some('-') => -1,
            _ => return Err(bad()),
        };
        rest = rest.get(1..).ok_or_else(bad)?;
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let (n, tail) = rest.split_at(digits);
        let n: i64 = n.parse().map_err(|_| bad())?;
        let mut chars = tail.chars();
        let unit = match chars.next() {
            Some('w') => 7 * 86_400,
            Some('d') => 86_400,
            Some('h') => 3_600,
            Some('m') => 60,
            Some('s') => 1,
            _ => return Err(bad()),
        };
        total += sign * n * unit;
        rest = chars.as_str();
    }
    Ok(total)
}

fn parse_period(p: &[String]) -> Result<Period, String> {
    let [start, end] = p else {
        return Err(format!("a period is [start, end], got {p:?}"));
    };
    let end_of = |s: &str| -> Result<Option<Timestamp>, String> {
        if s == "open" {
            Ok(None)
        } else {
            parse_time(s).map(Some)
        }
    };
    Ok(Period {
        start: end_of(start)?,
        end: end_of(end)?,
    })
}

fn opt_period(p: &Option<Vec<String>>) -> Result<Option<Period>, String> {
    p.as_deref().map(parse_period).transpose()
}

fn opt_time(t: &Option<String>) -> Result<Option<Timestamp>, String> {
    t.as_deref().map(parse_time).transpose()
}

// ---------------------------------------------------------------------------
// The TOML shape.
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    case: Vec<RawCase>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    role: Role,
    action: Action,
    #[serde(rename = "type")]
    rtype: String,
    #[serde(default)]
    labels: Vec<String>,
    purpose: Option<Purpose>,
    #[serde(default = "yes")]
    mfa: bool,
    #[serde(default = "yes")]
    training: bool,
    #[serde(default = "yes")]
    linked: bool,
    organization: Option<String>,
    principal_patient: Option<String>,
    resource_patient: Option<String>,
    date: Option<String>,
    #[serde(default)]
    care_team: Vec<RawCareTeam>,
    #[serde(default)]
    encounters: Vec<RawEncounter>,
    #[serde(default)]
    appointments: Vec<RawAppointment>,
    #[serde(default)]
    consultations: Vec<RawConsultation>,
    #[serde(default)]
    grants: Vec<RawGrant>,
    #[serde(default)]
    consents: Vec<RawConsent>,
    expect: RawExpect,
    rule: String,
    reason: String,
    #[serde(default)]
    masks: Vec<String>,
    note: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum RawExpect {
    Allow,
    Deny,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCareTeam {
    #[serde(default = "active")]
    status: String,
    period: Option<Vec<String>>,
    #[serde(default = "me")]
    member: String,
    member_period: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEncounter {
    #[serde(default = "in_progress")]
    status: String,
    period: Vec<String>,
    #[serde(default = "me")]
    participant: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAppointment {
    #[serde(default = "booked")]
    status: String,
    start: Option<String>,
    end: Option<String>,
    #[serde(default = "me")]
    participant: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsultation {
    period: Vec<String>,
    #[serde(default = "me")]
    practitioner: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrant {
    start: String,
    expires: String,
    #[serde(default)]
    revoked: bool,
    #[serde(default = "me")]
    account: String,
    #[serde(default = "p1")]
    patient: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsent {
    id: Option<String>,
    #[serde(default = "active")]
    status: String,
    period: Option<Vec<String>>,
    #[serde(default = "permit")]
    base: Effect,
    #[serde(default)]
    provisions: Vec<RawProvision>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvision {
    effect: Effect,
    #[serde(default)]
    actors: Vec<String>,
    #[serde(default)]
    purposes: Vec<String>,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    classes: Vec<String>,
    data_period: Option<Vec<String>>,
    period: Option<Vec<String>>,
}

fn active() -> String {
    "active".to_owned()
}
fn me() -> String {
    ME.to_owned()
}
fn p1() -> String {
    PATIENT.to_owned()
}
fn in_progress() -> String {
    "in-progress".to_owned()
}
fn booked() -> String {
    "booked".to_owned()
}
fn permit() -> Effect {
    Effect::Permit
}

/// `""` means none.
fn some_unless_empty(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

impl RawCase {
    fn build(self, file: &str) -> Result<Case, String> {
        let rtype = ResourceType::parse(&self.rtype)
            .ok_or_else(|| format!("unknown resource type {:?}", self.rtype))?;
        let directory = policy::Category::of(rtype) == policy::Category::Directory;
        let workforce = self.role.is_workforce();

        let principal = Principal {
            id: ME.to_owned(),
            role: self.role,
            practitioner: (workforce && self.linked).then(|| ME.to_owned()),
            patient: if workforce {
                None
            } else {
                some_unless_empty(self.principal_patient.unwrap_or_else(p1))
            },
            organization: if workforce {
                some_unless_empty(self.organization.unwrap_or_else(|| ORGANIZATION.to_owned()))
            } else {
                None
            },
            department: None,
            mfa: self.mfa,
            training_current: self.training,
        };

        let mut labels = BTreeSet::new();
        for code in &self.labels {
            labels.insert(Label::parse(code).ok_or_else(|| format!("unknown label {code:?}"))?);
        }
        let resource = Resource {
            rtype,
            id: Some("r1".to_owned()),
            patient: if directory {
                None
            } else {
                some_unless_empty(self.resource_patient.unwrap_or_else(p1))
            },
            labels,
            date: opt_time(&self.date)?,
        };

        let facts = Facts {
            care_teams: self
                .care_team
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    Ok(CareTeamFact {
                        id: format!("ct-{i}"),
                        status: t.status.clone(),
                        period: opt_period(&t.period)?.unwrap_or_default(),
                        members: vec![Member {
                            practitioner: t.member.clone(),
                            period: opt_period(&t.member_period)?.unwrap_or_default(),
                        }],
                    })
                })
                .collect::<Result<_, String>>()?,
            encounters: self
                .encounters
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    Ok(EncounterFact {
                        id: format!("enc-{i}"),
                        status: e.status.clone(),
                        period: parse_period(&e.period)?,
                        participants: some_unless_empty(e.participant.clone())
                            .map(|p| Member {
                                practitioner: p,
                                period: Period::default(),
                            })
                            .into_iter()
                            .collect(),
                    })
                })
                .collect::<Result<_, String>>()?,
            appointments: self
                .appointments
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    Ok(AppointmentFact {
                        id: format!("appt-{i}"),
                        status: a.status.clone(),
                        start: opt_time(&a.start)?,
                        end: opt_time(&a.end)?,
                        participants: some_unless_empty(a.participant.clone())
                            .into_iter()
                            .collect(),
                    })
                })
                .collect::<Result<_, String>>()?,
            consultations: self
                .consultations
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    Ok(ConsultationFact {
                        id: format!("consult-{i}"),
                        practitioner: c.practitioner.clone(),
                        period: parse_period(&c.period)?,
                    })
                })
                .collect::<Result<_, String>>()?,
            grants: self
                .grants
                .iter()
                .enumerate()
                .map(|(i, g)| {
                    Ok(GrantFact {
                        id: format!("grant-{i}"),
                        account: g.account.clone(),
                        patient: g.patient.clone(),
                        start: parse_time(&g.start)?,
                        expires: parse_time(&g.expires)?,
                        revoked: g.revoked,
                    })
                })
                .collect::<Result<_, String>>()?,
            consents: self
                .consents
                .iter()
                .enumerate()
                .map(|(i, c)| c.build(i))
                .collect::<Result<_, String>>()?,
        };

        Ok(Case {
            name: format!("{file}: {}", self.name),
            principal,
            action: self.action,
            resource,
            purpose: self.purpose,
            now: NOW,
            facts,
            expect: Expected {
                allow: self.expect == RawExpect::Allow,
                rule: self.rule,
                masks: self.masks.into_iter().collect(),
            },
            reason: self.reason,
            note: self.note,
        })
    }
}

impl RawConsent {
    fn build(&self, i: usize) -> Result<ConsentFact, String> {
        Ok(ConsentFact {
            id: self.id.clone().unwrap_or_else(|| format!("consent-{i}")),
            status: self.status.clone(),
            period: opt_period(&self.period)?,
            base: self.base,
            provisions: self
                .provisions
                .iter()
                .map(|p| {
                    Ok(Provision {
                        effect: p.effect,
                        actors: p
                            .actors
                            .iter()
                            .map(|a| parse_actor(a))
                            .collect::<Result<_, String>>()?,
                        purposes: p.purposes.clone(),
                        labels: p.labels.clone(),
                        classes: p.classes.clone(),
                        data_period: opt_period(&p.data_period)?,
                        period: opt_period(&p.period)?,
                    })
                })
                .collect::<Result<_, String>>()?,
        })
    }
}

fn parse_actor(s: &str) -> Result<Actor, String> {
    if let Some(id) = s.strip_prefix("Practitioner/") {
        Ok(Actor::Practitioner(id.to_owned()))
    } else if let Some(id) = s.strip_prefix("Organization/") {
        Ok(Actor::Organization(id.to_owned()))
    } else {
        Err(format!(
            "bad actor {s:?} (Practitioner/id or Organization/id)"
        ))
    }
}
