//! The FHIR export: Bulk Data NDJSON files (any `*.ndjson` in a directory,
//! read in name order), one resource per line, of which Practitioner,
//! PractitionerRole, Patient, Encounter, CareTeam, ServiceRequest and
//! AuditEvent are read; other resource types are not about who accessed
//! whom and are passed over, as are resources whose status is
//! `entered-in-error` (they never happened).
//!
//! Resources can refer to resources in files read later, so reading has two
//! passes: every line is first parsed into a raw resource (references kept
//! as `Type/id`), then references are resolved in dependency order. A line
//! that is not JSON, lacks a required element, or refers to a resource that
//! is not in the export is a [`BadRow`](super::BadRow) of that line.
//!
//! Choices where FHIR leaves room:
//! - A Practitioner with several PractitionerRoles gets the role and
//!   department of the first current one (no `period.end`, not
//!   `active: false`; else the first), is hired at the earliest
//!   `period.start`, and is terminated only when every role has ended: at the
//!   latest `period.end`, or, for an inactive role without one, at its
//!   `meta.lastUpdated` (unknown if neither is given).
//! - `deceasedBoolean: true` dates the death at the Patient's
//!   `meta.lastUpdated` (when the record said so; accesses after it are
//!   after death), or leaves it unknown without one: a guessed earlier date
//!   would raise false alerts.
//! - A Patient `identifier` of type `EI` whose value is not a Practitioner
//!   id is an employee number of some other system, not an error.
//! - Encounter participants other than the attending (`ATND`) who are
//!   practitioners become care-team members for that encounter.
//! - An AuditEvent without a Patient entity is not an access to a patient's
//!   record (a login, a query of the schedule) and is passed over. A
//!   requestor that is the Patient themselves becomes a user with role and
//!   department `patient` ([`User::patient`](crate::model::User) set).
//! - FHIR partial dates (`2024`, `2024-03`) stand for their first instant.

use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead};
use std::path::Path;

use serde_json::Value;

use super::time;
use super::{BAD_ROW_INDEX, Bad, InputError, Loaded, Progress, ReadOptions, RowError, next_index};
use crate::model::{
    Access, Action, Address, CareTeamMember, Contact, DeptIx, Encounter, EncounterClass,
    EncounterIx, Order, Patient, PatientIx, RoleIx, Time, User, UserIx, World,
};

/// The longest NDJSON line accepted, in bytes.
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// The `*.ndjson` files of a directory, by name.
pub(crate) fn ndjson_files(dir: &Path) -> Result<Vec<String>, InputError> {
    let io_err = |source| InputError::Io {
        file: dir.display().to_string(),
        source,
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".ndjson") && entry.path().is_file() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Reads every `*.ndjson` file of `dir`.
pub fn read_fhir_dir(
    dir: &Path,
    opts: &ReadOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Loaded, InputError> {
    let names = ndjson_files(dir)?;
    let mut files = Vec::with_capacity(names.len());
    let mut total = 0u64;
    for name in &names {
        let (reader, len) = super::open(dir, name)?;
        total = total.saturating_add(len);
        files.push(reader);
    }
    let mut reader = Reader::new(opts, Progress::new(progress, total));
    for (name, file) in names.iter().zip(files) {
        reader.file(name, file)?;
    }
    reader.finish()
}

/// Parses NDJSON files from memory: (file name, contents).
pub fn read_fhir_sources(
    files: &[(&str, &[u8])],
    opts: &ReadOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Loaded, InputError> {
    let total = files.iter().map(|(_, b)| b.len() as u64).sum();
    let mut reader = Reader::new(opts, Progress::new(progress, total));
    for (name, bytes) in files {
        reader.file(name, *bytes)?;
    }
    reader.finish()
}

// ---------------------------------------------------------------------------
// First pass: lines to raw resources.

/// Where a resource was read.
#[derive(Clone, Copy, Debug)]
struct Loc {
    file: usize,
    line: u64,
}

/// A reference: resource type (empty for `urn:uuid:` references) and id.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Ref {
    ty: String,
    id: String,
}

struct RawPractitioner {
    loc: Loc,
    id: String,
    given: String,
    family: String,
    address: Address,
}

struct RawRole {
    loc: Loc,
    id: Option<String>,
    practitioner: Ref,
    role: Option<String>,
    department: Option<String>,
    start: Option<Time>,
    end: Option<Time>,
    active: bool,
    last_updated: Option<Time>,
}

struct RawPatient {
    loc: Loc,
    id: String,
    mrn: String,
    given: String,
    family: String,
    birth_date: Option<String>,
    address: Address,
    vip: bool,
    deceased: Option<Time>,
    employee: Vec<String>,
    contacts: Vec<Contact>,
}

/// A practitioner taking part: reference, role, period.
struct Member {
    who: Ref,
    role: String,
    start: Option<Time>,
    end: Option<Time>,
}

struct RawEncounter {
    loc: Loc,
    id: String,
    subject: Ref,
    class: EncounterClass,
    start: Time,
    end: Option<Time>,
    department: Option<String>,
    attending: Option<Ref>,
    others: Vec<Member>,
}

struct RawCareTeam {
    loc: Loc,
    subject: Ref,
    encounter: Option<Ref>,
    members: Vec<Member>,
}

struct RawOrder {
    loc: Loc,
    id: String,
    subject: Ref,
    encounter: Option<Ref>,
    department: Option<String>,
    requester: Option<Ref>,
    at: Time,
}

struct RawAudit {
    loc: Loc,
    id: String,
    recorded: Time,
    requestor: Ref,
    patients: Vec<Ref>,
    action: Action,
    resource_type: String,
    workstation: String,
    emergency: bool,
    refused: bool,
}

#[derive(Default)]
struct Raw {
    practitioners: Vec<RawPractitioner>,
    roles: Vec<RawRole>,
    patients: Vec<RawPatient>,
    encounters: Vec<RawEncounter>,
    care_teams: Vec<RawCareTeam>,
    orders: Vec<RawOrder>,
    audits: Vec<RawAudit>,
    /// Ids of resources whose line was bad (type, id): when bad rows refuse
    /// the input, references to them resolve, so each problem is reported
    /// once.
    bad_ids: HashSet<(&'static str, String)>,
}

struct Reader<'p> {
    skip: bool,
    files: Vec<String>,
    raw: Raw,
    bad: Bad,
    progress: Progress<'p>,
    base: u64,
    rows: u64,
}

impl<'p> Reader<'p> {
    fn new(opts: &ReadOptions, progress: Progress<'p>) -> Self {
        Reader {
            skip: opts.skip_bad_rows,
            files: Vec::new(),
            raw: Raw::default(),
            bad: Bad::new(opts),
            progress,
            base: 0,
            rows: 0,
        }
    }

    fn file<R: BufRead>(&mut self, name: &str, mut reader: R) -> Result<(), InputError> {
        let io_err = |source| InputError::Io {
            file: name.to_owned(),
            source,
        };
        let file = self.files.len();
        self.files.push(name.to_owned());
        let mut buf = Vec::new();
        let mut line = 0u64;
        let mut bytes = 0u64;
        while let Some((n, too_long)) = read_line(&mut reader, &mut buf).map_err(io_err)? {
            line += 1;
            bytes += n as u64;
            let mut text = buf.as_slice();
            if line == 1 {
                text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
            }
            if text.iter().all(u8::is_ascii_whitespace) && !too_long {
                continue;
            }
            self.rows += 1;
            let loc = Loc { file, line };
            let result = if too_long {
                Err(RowError::new(
                    "",
                    format!("line longer than {MAX_LINE} bytes"),
                ))
            } else {
                self.resource(loc, text)
            };
            if let Err(e) = result {
                self.bad.push(name, line, e.to_string());
            }
            self.progress.at(self.base + bytes);
        }
        self.base += bytes;
        Ok(())
    }

    fn resource(&mut self, loc: Loc, text: &[u8]) -> Result<(), RowError> {
        let v: Value = serde_json::from_slice(text)
            .map_err(|e| RowError::new("", format!("not valid JSON (at column {})", e.column())))?;
        if !v.is_object() {
            return Err(RowError::new("", "not a JSON object"));
        }
        let ty = str_of(&v, "resourceType").ok_or_else(|| missing("resourceType"))?;
        let kind: &'static str = match ty {
            "Practitioner" => "Practitioner",
            "PractitionerRole" => "PractitionerRole",
            "Patient" => "Patient",
            "Encounter" => "Encounter",
            "CareTeam" => "CareTeam",
            "ServiceRequest" => "ServiceRequest",
            "AuditEvent" => "AuditEvent",
            _ => return Ok(()),
        };
        if str_of(&v, "status") == Some("entered-in-error") {
            return Ok(());
        }
        let id = str_of(&v, "id").filter(|s| !s.is_empty());
        let result = match kind {
            "Practitioner" => practitioner(loc, &v).map(|r| self.raw.practitioners.push(r)),
            "PractitionerRole" => role(loc, &v).map(|r| self.raw.roles.push(r)),
            "Patient" => patient(loc, &v).map(|r| self.raw.patients.push(r)),
            "Encounter" => encounter(loc, &v).map(|r| self.raw.encounters.push(r)),
            "CareTeam" => care_team(loc, &v).map(|r| self.raw.care_teams.push(r)),
            "ServiceRequest" => order(loc, &v).map(|r| self.raw.orders.push(r)),
            _ => audit(loc, &v).map(|r| self.raw.audits.push(r)),
        };
        if result.is_err()
            && !self.skip
            && let Some(id) = id
        {
            self.raw.bad_ids.insert((kind, id.to_owned()));
        }
        result
    }

    fn finish(mut self) -> Result<Loaded, InputError> {
        self.progress.finish(self.base);
        let raw = std::mem::take(&mut self.raw);
        let mut r = Resolver {
            skip: self.skip,
            files: &self.files,
            bad: &mut self.bad,
            world: World::default(),
            bad_ids: &raw.bad_ids,
            practitioners: HashMap::new(),
            roles: HashMap::new(),
            patients: HashMap::new(),
            encounters: HashMap::new(),
            patient_users: HashMap::new(),
            departments: HashMap::new(),
        };
        r.users(raw.practitioners, raw.roles);
        r.patients(raw.patients);
        r.encounters(raw.encounters);
        r.care_teams(raw.care_teams);
        r.orders(raw.orders);
        r.audits(raw.audits);
        let world = r.world;
        // Bad rows were found in two passes: list them in file order.
        self.bad.rows.sort_by(|a, b| {
            let file = |f: &str| self.files.iter().position(|n| n == f);
            (file(&a.file), a.line).cmp(&(file(&b.file), b.line))
        });
        self.bad.finish(world, self.base, self.rows)
    }
}

/// Reads one line (without its `\n` or `\r\n`) into `buf`, keeping at most
/// [`MAX_LINE`] bytes: `(bytes consumed, too long)`, or `None` at the end.
fn read_line<R: BufRead>(r: &mut R, buf: &mut Vec<u8>) -> io::Result<Option<(usize, bool)>> {
    buf.clear();
    let mut consumed = 0usize;
    let mut too_long = false;
    loop {
        let chunk = match r.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            if consumed == 0 {
                return Ok(None);
            }
            break;
        }
        let (part, end) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (chunk.get(..i).unwrap_or_default(), Some(i + 1)),
            None => (chunk, None),
        };
        if buf.len() + part.len() > MAX_LINE {
            too_long = true;
        } else if !too_long {
            buf.extend_from_slice(part);
        }
        let n = end.unwrap_or(chunk.len());
        r.consume(n);
        consumed += n;
        if end.is_some() {
            break;
        }
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Some((consumed, too_long)))
}

fn missing(element: &'static str) -> RowError {
    RowError::new(element, "missing")
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)?.as_str()
}

fn first<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key)?.as_array()?.first()
}

fn array<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn id_of(v: &Value) -> Result<String, RowError> {
    match str_of(v, "id") {
        Some(id) if !id.is_empty() => Ok(id.to_owned()),
        _ => Err(missing("id")),
    }
}

/// A reference element (`{"reference": "Patient/1"}`): relative, absolute
/// (`http://…/Patient/1/_history/2`) or `urn:uuid:…`.
fn reference(v: Option<&Value>, element: &'static str) -> Result<Option<Ref>, RowError> {
    let Some(v) = v else { return Ok(None) };
    let Some(text) = str_of(v, "reference") else {
        return Ok(None);
    };
    parse_ref(text)
        .map(Some)
        .ok_or_else(|| RowError::new(element, "not a reference of the form Type/id"))
}

fn parse_ref(text: &str) -> Option<Ref> {
    if let Some(uuid) = text.strip_prefix("urn:uuid:") {
        return (!uuid.is_empty()).then(|| Ref {
            ty: String::new(),
            id: uuid.to_owned(),
        });
    }
    let text = match text.find("/_history/") {
        Some(i) => text.get(..i)?,
        None => text,
    };
    let mut parts = text.rsplit('/');
    let id = parts.next()?;
    let ty = parts.next()?;
    let is_type = ty.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && ty.chars().all(|c| c.is_ascii_alphabetic());
    (is_type && !id.is_empty()).then(|| Ref {
        ty: ty.to_owned(),
        id: id.to_owned(),
    })
}

fn required_ref(v: &Value, key: &'static str) -> Result<Ref, RowError> {
    reference(v.get(key), key)?.ok_or_else(|| missing(key))
}

fn instant(v: &Value, key: &'static str) -> Result<Option<Time>, RowError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_str()
            .and_then(time::fhir_date_time)
            .map(Some)
            .ok_or_else(|| RowError::new(key, "not a FHIR dateTime")),
    }
}

/// `period.start` and `period.end` of `v` (either may be absent).
fn period(v: &Value) -> Result<(Option<Time>, Option<Time>), RowError> {
    let Some(p) = v.get("period") else {
        return Ok((None, None));
    };
    let start =
        instant(p, "start").map_err(|_| RowError::new("period.start", "not a FHIR dateTime"))?;
    let end = instant(p, "end").map_err(|_| RowError::new("period.end", "not a FHIR dateTime"))?;
    if let (Some(s), Some(e)) = (start, end)
        && e < s
    {
        return Err(RowError::new("period.end", "before start"));
    }
    Ok((start, end))
}

fn last_updated(v: &Value) -> Option<Time> {
    v.get("meta")
        .and_then(|m| str_of(m, "lastUpdated"))
        .and_then(time::timestamp)
}

/// `name[0]`: (given names joined by spaces, family).
fn human_name(name: Option<&Value>) -> (String, String) {
    let Some(n) = name else {
        return (String::new(), String::new());
    };
    let given = array(n, "given")
        .iter()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join(" ");
    let family = str_of(n, "family").unwrap_or_default().to_owned();
    (given, family)
}

fn address(a: Option<&Value>) -> Address {
    let Some(a) = a else {
        return Address::default();
    };
    Address {
        line: array(a, "line")
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", "),
        city: str_of(a, "city").unwrap_or_default().to_owned(),
        zip: str_of(a, "postalCode").unwrap_or_default().to_owned(),
    }
}

/// The codes of a CodeableConcept's codings.
fn codes(cc: &Value) -> impl Iterator<Item = &str> {
    array(cc, "coding").iter().filter_map(|c| str_of(c, "code"))
}

/// A CodeableConcept as a name: `coding[0].display`, its code, or `text`,
/// in the order `prefer_display` says.
fn concept_name(cc: Option<&Value>, prefer_display: bool) -> Option<String> {
    let cc = cc?;
    let coding = first(cc, "coding");
    let display = coding.and_then(|c| str_of(c, "display"));
    let code = coding.and_then(|c| str_of(c, "code"));
    let text = str_of(cc, "text");
    let ordered = if prefer_display {
        [display, code, text]
    } else {
        [code, text, display]
    };
    ordered
        .into_iter()
        .flatten()
        .find(|s| !s.is_empty())
        .map(str::to_owned)
}

fn practitioner(loc: Loc, v: &Value) -> Result<RawPractitioner, RowError> {
    let (given, family) = human_name(first(v, "name"));
    Ok(RawPractitioner {
        loc,
        id: id_of(v)?,
        given,
        family,
        address: address(first(v, "address")),
    })
}

fn role(loc: Loc, v: &Value) -> Result<RawRole, RowError> {
    let practitioner = required_ref(v, "practitioner")?;
    let (start, end) = period(v)?;
    Ok(RawRole {
        loc,
        id: str_of(v, "id").filter(|s| !s.is_empty()).map(str::to_owned),
        practitioner,
        role: concept_name(first(v, "code"), false),
        department: concept_name(first(v, "specialty"), true),
        start,
        end,
        active: v.get("active").and_then(Value::as_bool) != Some(false),
        last_updated: last_updated(v),
    })
}

fn patient(loc: Loc, v: &Value) -> Result<RawPatient, RowError> {
    let id = id_of(v)?;
    let mut mrn = String::new();
    let mut employee = Vec::new();
    for ident in array(v, "identifier") {
        let Some(value) = str_of(ident, "value") else {
            continue;
        };
        let ty = ident.get("type");
        if ty.is_some_and(|t| codes(t).any(|c| c == "MR")) && mrn.is_empty() {
            value.clone_into(&mut mrn);
        }
        if ty.is_some_and(|t| codes(t).any(|c| c == "EI")) {
            let value = value.strip_prefix("Practitioner/").unwrap_or(value);
            employee.push(value.to_owned());
        }
    }
    let (given, family) = human_name(first(v, "name"));
    let birth_date = match v.get("birthDate") {
        None | Some(Value::Null) => None,
        Some(b) => {
            let b = b
                .as_str()
                .filter(|b| time::fhir_date_time(b).is_some())
                .ok_or_else(|| RowError::new("birthDate", "not a FHIR date"))?;
            Some(b.to_owned())
        }
    };
    let vip = v
        .get("meta")
        .map(|m| array(m, "security"))
        .unwrap_or_default()
        .iter()
        .any(|s| matches!(str_of(s, "code"), Some("VIP" | "R")));
    let deceased = match (v.get("deceasedDateTime"), v.get("deceasedBoolean")) {
        (Some(_), _) => instant(v, "deceasedDateTime")?,
        (None, Some(Value::Bool(true))) => last_updated(v),
        (None, Some(Value::Bool(false)) | None) => None,
        (None, Some(_)) => return Err(RowError::new("deceasedBoolean", "not a boolean")),
    };
    let contacts = array(v, "contact")
        .iter()
        .map(|c| {
            let (given, family) = human_name(c.get("name"));
            Contact {
                given,
                family,
                address: address(c.get("address")),
            }
        })
        .collect();
    Ok(RawPatient {
        loc,
        id,
        mrn,
        given,
        family,
        birth_date,
        address: address(first(v, "address")),
        vip,
        deceased,
        employee,
        contacts,
    })
}

fn is_practitioner(r: &Ref) -> bool {
    matches!(r.ty.as_str(), "Practitioner" | "PractitionerRole" | "")
}

fn encounter(loc: Loc, v: &Value) -> Result<RawEncounter, RowError> {
    let id = id_of(v)?;
    let subject = required_ref(v, "subject")?;
    // R4: a Coding; R5: a list of CodeableConcepts.
    let class = match v.get("class") {
        Some(Value::Array(a)) => a
            .first()
            .and_then(|c| first(c, "coding"))
            .and_then(|c| str_of(c, "code")),
        Some(c) => str_of(c, "code"),
        None => None,
    }
    .map_or(EncounterClass::Other, EncounterClass::parse);
    let (start, end) = period(v)?;
    let start = start.ok_or_else(|| missing("period.start"))?;
    let department = concept_name(v.get("serviceType").filter(|s| s.is_object()), true);
    let mut attending = None;
    let mut others = Vec::new();
    for p in array(v, "participant") {
        let who = match p.get("individual").or_else(|| p.get("actor")) {
            Some(w) => reference(Some(w), "participant.individual")?,
            None => None,
        };
        let Some(who) = who.filter(is_practitioner) else {
            continue;
        };
        let types = array(p, "type");
        let atnd = types.iter().any(|t| codes(t).any(|c| c == "ATND"));
        if atnd && attending.is_none() {
            attending = Some(who);
            continue;
        }
        let (p_start, p_end) = period(p)?;
        let role = types
            .first()
            .and_then(|t| concept_name(Some(t), false))
            .unwrap_or_else(|| "participant".to_owned());
        others.push(Member {
            who,
            role,
            start: p_start.or(Some(start)),
            end: p_end.or(end),
        });
    }
    Ok(RawEncounter {
        loc,
        id,
        subject,
        class,
        start,
        end,
        department,
        attending,
        others,
    })
}

fn care_team(loc: Loc, v: &Value) -> Result<RawCareTeam, RowError> {
    let subject = required_ref(v, "subject")?;
    let encounter = reference(v.get("encounter"), "encounter")?;
    let (start, end) = period(v)?;
    let mut members = Vec::new();
    for p in array(v, "participant") {
        let Some(who) = reference(p.get("member"), "participant.member")? else {
            continue;
        };
        if !is_practitioner(&who) {
            continue;
        }
        let (p_start, p_end) = period(p)?;
        members.push(Member {
            who,
            role: concept_name(first(p, "role"), false).unwrap_or_default(),
            start: p_start.or(start),
            end: p_end.or(end),
        });
    }
    Ok(RawCareTeam {
        loc,
        subject,
        encounter,
        members,
    })
}

fn order(loc: Loc, v: &Value) -> Result<RawOrder, RowError> {
    let id = id_of(v)?;
    let subject = required_ref(v, "subject")?;
    let encounter = reference(v.get("encounter"), "encounter")?;
    let department = first(v, "performer")
        .and_then(|p| str_of(p, "display"))
        .filter(|d| !d.is_empty())
        .map(str::to_owned)
        .or_else(|| concept_name(v.get("performerType"), true));
    let requester =
        reference(v.get("requester"), "requester")?.filter(|r| r.ty.starts_with("Practitioner"));
    let at = match instant(v, "authoredOn")? {
        Some(t) => t,
        None => instant(v, "occurrenceDateTime")?.ok_or_else(|| missing("authoredOn"))?,
    };
    Ok(RawOrder {
        loc,
        id,
        subject,
        encounter,
        department,
        requester,
        at,
    })
}

fn audit(loc: Loc, v: &Value) -> Result<RawAudit, RowError> {
    let id = id_of(v)?;
    let recorded = match str_of(v, "recorded") {
        None => return Err(missing("recorded")),
        Some(r) => {
            time::timestamp(r).ok_or_else(|| RowError::new("recorded", "not a FHIR instant"))?
        }
    };
    let mut patients: Vec<Ref> = Vec::new();
    let mut resource_type = None;
    for e in array(v, "entity") {
        let Some(what) = reference(e.get("what"), "entity.what")? else {
            continue;
        };
        if what.ty == "Patient" {
            if !patients.contains(&what) {
                patients.push(what);
            }
        } else if resource_type.is_none() && !what.ty.is_empty() {
            resource_type = Some(what.ty);
        }
    }
    let agents = array(v, "agent");
    let requestor = agents
        .iter()
        .find(|a| a.get("requestor").and_then(Value::as_bool) == Some(true));
    let emergency_code = |c: &str| c == "ETREAT" || c == "BTG";
    let emergency = array(v, "purposeOfEvent")
        .iter()
        .chain(agents.iter().flat_map(|a| array(a, "purposeOfUse")))
        .any(|p| codes(p).any(emergency_code));
    let subtypes: Vec<&str> = array(v, "subtype")
        .iter()
        .filter_map(|s| str_of(s, "code"))
        .collect();
    let action = if subtypes.contains(&"export") {
        Action::Export
    } else if subtypes.contains(&"print") {
        Action::Print
    } else {
        match str_of(v, "action") {
            Some("C" | "U" | "D") => Action::Modify,
            Some("R") => Action::View,
            Some("E") => Action::Search,
            Some(_) => return Err(RowError::new("action", "not one of C, R, U, D, E")),
            None => return Err(missing("action")),
        }
    };
    let refused = match v.get("outcome") {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => s != "0",
        // R5: outcome.code is a Coding.
        Some(o) => o
            .get("code")
            .and_then(|c| str_of(c, "code"))
            .is_some_and(|c| c != "0"),
    };
    // Accesses come from the requestor; an event without a patient is not
    // an access to a record, whoever made it.
    let requestor = if patients.is_empty() {
        Ref {
            ty: String::new(),
            id: String::new(),
        }
    } else {
        let who = requestor.ok_or_else(|| RowError::new("agent", "no requestor"))?;
        reference(who.get("who"), "agent.who")?
            .ok_or_else(|| RowError::new("agent.who", "missing"))?
    };
    let workstation = requestor_network(agents).unwrap_or_default();
    Ok(RawAudit {
        loc,
        id,
        recorded,
        requestor,
        patients,
        action,
        resource_type: resource_type.unwrap_or_else(|| "Patient".to_owned()),
        workstation,
        emergency,
        refused,
    })
}

fn requestor_network(agents: &[Value]) -> Option<String> {
    agents
        .iter()
        .find(|a| a.get("requestor").and_then(Value::as_bool) == Some(true))
        .and_then(|a| a.get("network"))
        .and_then(|n| str_of(n, "address"))
        .map(str::to_owned)
}

// ---------------------------------------------------------------------------
// Second pass: references to indexes.

/// Who made an access: a member of staff, or a patient themselves.
enum Who {
    Staff(u32),
    Patient(u32),
}

struct Resolver<'a> {
    skip: bool,
    files: &'a [String],
    bad: &'a mut Bad,
    world: World,
    bad_ids: &'a HashSet<(&'static str, String)>,
    /// Practitioner id → user.
    practitioners: HashMap<String, u32>,
    /// PractitionerRole id → user.
    roles: HashMap<String, u32>,
    patients: HashMap<String, u32>,
    encounters: HashMap<String, u32>,
    /// Patient → the user that is the patient themselves.
    patient_users: HashMap<u32, u32>,
    departments: HashMap<String, DeptIx>,
}

impl Resolver<'_> {
    fn report(&mut self, loc: Loc, e: &RowError) {
        let file = self.files.get(loc.file).map_or("", String::as_str);
        self.bad.push(file, loc.line, e.to_string());
    }

    fn department(&mut self, name: Option<&str>) -> DeptIx {
        let name = name.filter(|n| !n.is_empty()).unwrap_or("unknown");
        if let Some(&d) = self.departments.get(name) {
            return d;
        }
        let d = self.world.department(name);
        self.departments.insert(name.to_owned(), d);
        d
    }

    /// Resolves a reference against `map` (a resource type's ids), or
    /// against a bad line's id when bad lines refuse the input.
    fn lookup(
        &self,
        r: &Ref,
        types: &[&'static str],
        map: &HashMap<String, u32>,
        element: &'static str,
    ) -> Result<u32, RowError> {
        if !r.ty.is_empty() && !types.contains(&r.ty.as_str()) {
            return Err(RowError::new(
                element,
                format!("must refer to a {}", types.join(" or ")),
            ));
        }
        if let Some(&ix) = map.get(&r.id)
            && (r.ty.is_empty() || r.ty == types.first().copied().unwrap_or_default())
        {
            return Ok(ix);
        }
        for ty in types {
            if (r.ty.is_empty() || r.ty == *ty)
                && !self.skip
                && self.bad_ids.contains(&(*ty, r.id.clone()))
            {
                return Ok(BAD_ROW_INDEX);
            }
        }
        Err(RowError::new(
            element,
            format!("refers to a {} not in the export", types.join(" or ")),
        ))
    }

    /// A practitioner reference (to a Practitioner or a PractitionerRole).
    fn user(&self, r: &Ref, element: &'static str) -> Result<u32, RowError> {
        if r.ty == "PractitionerRole" {
            return self.lookup(r, &["PractitionerRole"], &self.roles, element);
        }
        if r.ty.is_empty()
            && !self.practitioners.contains_key(&r.id)
            && let Some(&u) = self.roles.get(&r.id)
        {
            return Ok(u);
        }
        self.lookup(
            r,
            &["Practitioner", "PractitionerRole"],
            &self.practitioners,
            element,
        )
    }

    fn patient(&self, r: &Ref, element: &'static str) -> Result<u32, RowError> {
        self.lookup(r, &["Patient"], &self.patients, element)
    }

    /// An encounter that must be `patient`'s.
    fn encounter_of(&self, r: &Ref, patient: u32) -> Result<u32, RowError> {
        let e = self.lookup(r, &["Encounter"], &self.encounters, "encounter")?;
        if let Some(enc) = self.world.encounters.get(e as usize)
            && patient != BAD_ROW_INDEX
            && enc.patient.0 != patient
        {
            return Err(RowError::new(
                "encounter",
                "the encounter is another patient's",
            ));
        }
        Ok(e)
    }

    fn users(&mut self, practitioners: Vec<RawPractitioner>, roles: Vec<RawRole>) {
        // Practitioners first, so that roles can find them.
        let mut kept = Vec::with_capacity(practitioners.len());
        for p in practitioners {
            if self.practitioners.contains_key(&p.id) {
                self.report(p.loc, &RowError::new("id", "duplicate Practitioner id"));
                continue;
            }
            let ix = next_index(&kept);
            self.practitioners.insert(p.id.clone(), ix);
            kept.push((p, Vec::<RawRole>::new()));
        }
        for r in roles {
            let user = self.lookup(
                &r.practitioner,
                &["Practitioner"],
                &self.practitioners,
                "practitioner",
            );
            let user = match user {
                Ok(u) => u,
                Err(e) => {
                    self.report(r.loc, &e);
                    continue;
                }
            };
            if let Some(id) = &r.id {
                if self.roles.contains_key(id) {
                    self.report(r.loc, &RowError::new("id", "duplicate PractitionerRole id"));
                    continue;
                }
                self.roles.insert(id.clone(), user);
            }
            if let Some((_, rs)) = kept.get_mut(user as usize) {
                rs.push(r);
            }
        }
        for (p, rs) in kept {
            let current = |r: &&RawRole| r.end.is_none() && r.active;
            let chosen = rs.iter().find(current).or_else(|| rs.first());
            let role_name = chosen.and_then(|r| r.role.as_deref()).unwrap_or("unknown");
            let role: RoleIx = self.world.role(role_name);
            let department = self.department(chosen.and_then(|r| r.department.as_deref()));
            let hire = rs.iter().filter_map(|r| r.start).min();
            let termination = if rs.is_empty() || rs.iter().any(|r| current(&r)) {
                None
            } else {
                rs.iter()
                    .filter_map(|r| r.end.or(if r.active { None } else { r.last_updated }))
                    .max()
            };
            self.world.users.push(User {
                id: p.id,
                given: p.given,
                family: p.family,
                role,
                department,
                address: p.address,
                hire,
                termination,
                patient: None,
            });
        }
    }

    fn patients(&mut self, patients: Vec<RawPatient>) {
        for p in patients {
            if self.patients.contains_key(&p.id) {
                self.report(p.loc, &RowError::new("id", "duplicate Patient id"));
                continue;
            }
            let employee = p
                .employee
                .iter()
                .find_map(|e| self.practitioners.get(e).copied())
                .map(UserIx);
            let ix = next_index(&self.world.patients);
            self.patients.insert(p.id.clone(), ix);
            self.world.patients.push(Patient {
                id: p.id,
                mrn: p.mrn,
                given: p.given,
                family: p.family,
                birth_date: p.birth_date,
                address: p.address,
                vip: p.vip,
                deceased: p.deceased,
                employee,
                contacts: p.contacts,
            });
        }
    }

    fn encounters(&mut self, encounters: Vec<RawEncounter>) {
        for e in encounters {
            if self.encounters.contains_key(&e.id) {
                self.report(e.loc, &RowError::new("id", "duplicate Encounter id"));
                continue;
            }
            let resolved = (|| {
                let patient = self.patient(&e.subject, "subject")?;
                let attending = e
                    .attending
                    .as_ref()
                    .map(|a| self.user(a, "participant.individual"))
                    .transpose()?;
                let others = e
                    .others
                    .iter()
                    .map(|m| self.user(&m.who, "participant.individual"))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok::<_, RowError>((patient, attending, others))
            })();
            let (patient, attending, others) = match resolved {
                Ok(r) => r,
                Err(err) => {
                    if !self.skip {
                        self.encounters.insert(e.id, BAD_ROW_INDEX);
                    }
                    self.report(e.loc, &err);
                    continue;
                }
            };
            let ix = next_index(&self.world.encounters);
            self.encounters.insert(e.id.clone(), ix);
            let department = self.department(e.department.as_deref());
            for (m, user) in e.others.into_iter().zip(others) {
                self.world.care_team.push(CareTeamMember {
                    patient: PatientIx(patient),
                    user: UserIx(user),
                    encounter: Some(EncounterIx(ix)),
                    role: m.role,
                    start: m.start,
                    end: m.end,
                });
            }
            self.world.encounters.push(Encounter {
                id: e.id,
                patient: PatientIx(patient),
                department,
                class: e.class,
                start: e.start,
                end: e.end,
                attending: attending.map(UserIx),
            });
        }
    }

    fn care_teams(&mut self, teams: Vec<RawCareTeam>) {
        for t in teams {
            let resolved = (|| {
                let patient = self.patient(&t.subject, "subject")?;
                let encounter = t
                    .encounter
                    .as_ref()
                    .map(|e| self.encounter_of(e, patient))
                    .transpose()?;
                let users = t
                    .members
                    .iter()
                    .map(|m| self.user(&m.who, "participant.member"))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok::<_, RowError>((patient, encounter, users))
            })();
            let (patient, encounter, users) = match resolved {
                Ok(r) => r,
                Err(err) => {
                    self.report(t.loc, &err);
                    continue;
                }
            };
            for (m, user) in t.members.into_iter().zip(users) {
                self.world.care_team.push(CareTeamMember {
                    patient: PatientIx(patient),
                    user: UserIx(user),
                    encounter: encounter.map(EncounterIx),
                    role: m.role,
                    start: m.start,
                    end: m.end,
                });
            }
        }
    }

    fn orders(&mut self, orders: Vec<RawOrder>) {
        let mut seen = HashSet::new();
        for o in orders {
            if !seen.insert(o.id.clone()) {
                self.report(o.loc, &RowError::new("id", "duplicate ServiceRequest id"));
                continue;
            }
            let resolved = (|| {
                let patient = self.patient(&o.subject, "subject")?;
                let encounter = o
                    .encounter
                    .as_ref()
                    .map(|e| self.encounter_of(e, patient))
                    .transpose()?;
                let by = o
                    .requester
                    .as_ref()
                    .map(|r| self.user(r, "requester"))
                    .transpose()?;
                Ok::<_, RowError>((patient, encounter, by))
            })();
            let (patient, encounter, ordered_by) = match resolved {
                Ok(r) => r,
                Err(err) => {
                    self.report(o.loc, &err);
                    continue;
                }
            };
            let service_department = self.department(o.department.as_deref());
            self.world.orders.push(Order {
                id: o.id,
                encounter: encounter.map(EncounterIx),
                patient: PatientIx(patient),
                service_department,
                ordered_by: ordered_by.map(UserIx),
                at: o.at,
            });
        }
    }

    /// The user that is patient `patient` using their own account.
    fn patient_user(&mut self, patient: u32) -> u32 {
        if let Some(&u) = self.patient_users.get(&patient) {
            return u;
        }
        let role = self.world.role("patient");
        let department = self.department(Some("patient"));
        let ix = next_index(&self.world.users);
        let p = self.world.patients.get(patient as usize);
        self.world.users.push(User {
            id: p.map(|p| format!("Patient/{}", p.id)).unwrap_or_default(),
            given: p.map(|p| p.given.clone()).unwrap_or_default(),
            family: p.map(|p| p.family.clone()).unwrap_or_default(),
            role,
            department,
            address: p.map(|p| p.address.clone()).unwrap_or_default(),
            hire: None,
            termination: None,
            patient: Some(PatientIx(patient)),
        });
        self.patient_users.insert(patient, ix);
        ix
    }

    fn audits(&mut self, audits: Vec<RawAudit>) {
        let mut seen = HashSet::new();
        for a in audits {
            if a.patients.is_empty() {
                continue;
            }
            if !seen.insert(a.id.clone()) {
                self.report(a.loc, &RowError::new("id", "duplicate AuditEvent id"));
                continue;
            }
            let resolved = (|| {
                let user = if a.requestor.ty == "Patient" {
                    Who::Patient(self.patient(&a.requestor, "agent.who")?)
                } else {
                    Who::Staff(self.user(&a.requestor, "agent.who")?)
                };
                let patients = a
                    .patients
                    .iter()
                    .map(|p| self.patient(p, "entity.what"))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok::<_, RowError>((user, patients))
            })();
            let (user, patients) = match resolved {
                Ok(r) => r,
                Err(err) => {
                    self.report(a.loc, &err);
                    continue;
                }
            };
            let user = match user {
                Who::Staff(u) => u,
                Who::Patient(BAD_ROW_INDEX) => BAD_ROW_INDEX,
                Who::Patient(p) => self.patient_user(p),
            };
            for patient in patients {
                self.world.accesses.push(Access {
                    event_id: a.id.clone(),
                    time: a.recorded,
                    user: UserIx(user),
                    patient: PatientIx(patient),
                    action: a.action,
                    resource_type: a.resource_type.clone(),
                    workstation: a.workstation.clone(),
                    record_count: 1,
                    emergency: a.emergency,
                    refused: a.refused,
                });
            }
        }
    }
}
