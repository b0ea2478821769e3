//! The CSV export: six files with fixed headers, read in dependency order
//! (staff, patients, encounters, care team, orders, access log) so that
//! every reference points to a row already read.
//!
//! The reader is a byte-level RFC 4180 state machine over a `BufRead`:
//! quoted fields, doubled quotes, CRLF or LF, newlines inside quotes, a
//! UTF-8 byte order mark at the start. Blank lines carry no data and are
//! passed over. Fields are bounded ([`MAX_FIELD`]) and so is the number of
//! fields kept per record, so a malformed file (an unterminated quote in a
//! gigabyte file) costs no memory.
//!
//! Choices where the format leaves room:
//! - An empty `role`, `department` or `service_department` is interned as
//!   `unknown` (as the FHIR path does for a practitioner without a role).
//! - `birth_date` must be a date (`YYYY-MM-DD`) and is kept as written;
//!   `hire_date`, `termination_date` and `deceased_date` take a date
//!   (midnight UTC) or a timestamp; every other time takes a timestamp.
//! - Required beyond the ids, `timestamp` and `action`: a row's references
//!   that the model cannot leave empty (an encounter's and an order's
//!   patient, a care-team row's patient and staff, an access's staff and
//!   patient), `encounters.start` and `orders.ordered_at`.
//! - An access event that touched several patients is one row per patient
//!   with the same `event_id` (as [`Access`] says): in `access_log.csv` the
//!   pair (`event_id`, `patient_id`) is what must be unique.
//! - An `encounter_id` in `care_team.csv` or `orders.csv` must be an
//!   encounter of the row's patient, and an `end` may not precede its
//!   `start`: either would explain accesses that nothing explains.
//! - A wrong header names the file and both headers, with any name that is
//!   no column of any of the six files shown as `?` (a file without its
//!   header would otherwise put a row of PHI into the error).

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasher, Hash, Hasher};
use std::io::{self, BufRead, Cursor, Read};
use std::path::Path;

use super::time;
use super::{
    BAD_ROW_INDEX, Bad, FastMap, InputError, Loaded, Progress, ReadOptions, RowError, next_index,
};
use crate::model::{
    Access, Action, Address, CareTeamMember, DeptIx, Encounter, EncounterClass, EncounterIx, Order,
    Patient, PatientIx, RoleIx, User, UserIx, World,
};

/// The longest field accepted, in bytes.
pub const MAX_FIELD: usize = 4096;

/// The six files' contents, for parsing from memory (tests, fuzzing).
#[derive(Clone, Copy, Debug, Default)]
pub struct CsvSources<'a> {
    pub staff: &'a [u8],
    pub patients: &'a [u8],
    pub encounters: &'a [u8],
    pub care_team: &'a [u8],
    pub orders: &'a [u8],
    pub access_log: &'a [u8],
}

/// A file of the export: its name and exact header.
struct Spec {
    name: &'static str,
    header: &'static [&'static str],
    kind: Kind,
}

#[derive(Clone, Copy)]
enum Kind {
    Staff,
    Patients,
    Encounters,
    CareTeam,
    Orders,
    AccessLog,
}

const STAFF: Spec = Spec {
    name: "staff.csv",
    kind: Kind::Staff,
    header: &[
        "staff_id",
        "given_name",
        "family_name",
        "role",
        "department",
        "address",
        "city",
        "zip",
        "hire_date",
        "termination_date",
    ],
};
const PATIENTS: Spec = Spec {
    name: "patients.csv",
    kind: Kind::Patients,
    header: &[
        "patient_id",
        "mrn",
        "given_name",
        "family_name",
        "birth_date",
        "address",
        "city",
        "zip",
        "vip",
        "deceased_date",
        "employee_staff_id",
    ],
};
const ENCOUNTERS: Spec = Spec {
    name: "encounters.csv",
    kind: Kind::Encounters,
    header: &[
        "encounter_id",
        "patient_id",
        "department",
        "class",
        "start",
        "end",
        "attending_staff_id",
    ],
};
const CARE_TEAM: Spec = Spec {
    name: "care_team.csv",
    kind: Kind::CareTeam,
    header: &[
        "patient_id",
        "staff_id",
        "encounter_id",
        "role",
        "start",
        "end",
    ],
};
const ORDERS: Spec = Spec {
    name: "orders.csv",
    kind: Kind::Orders,
    header: &[
        "order_id",
        "encounter_id",
        "patient_id",
        "service_department",
        "ordered_by_staff_id",
        "ordered_at",
    ],
};
const ACCESS_LOG: Spec = Spec {
    name: "access_log.csv",
    kind: Kind::AccessLog,
    header: &[
        "event_id",
        "timestamp",
        "staff_id",
        "patient_id",
        "action",
        "resource_type",
        "workstation",
        "record_count",
    ],
};
const FILES: [&Spec; 6] = [
    &STAFF,
    &PATIENTS,
    &ENCOUNTERS,
    &CARE_TEAM,
    &ORDERS,
    &ACCESS_LOG,
];

/// Reads the six CSV files of `dir`.
pub fn read_csv_dir(
    dir: &Path,
    opts: &ReadOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Loaded, InputError> {
    // Open them all first: a missing file is reported before any work.
    let mut files = Vec::with_capacity(FILES.len());
    let mut total = 0u64;
    for spec in FILES {
        let (reader, len) = super::open(dir, spec.name)?;
        total = total.saturating_add(len);
        files.push(reader);
    }
    let mut loader = Loader::new(opts, Progress::new(progress, total));
    for (spec, reader) in FILES.iter().zip(files) {
        loader.file(spec, reader)?;
    }
    loader.finish()
}

/// Parses the six files from memory.
pub fn read_csv_sources(
    files: &CsvSources<'_>,
    opts: &ReadOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Loaded, InputError> {
    let sources = [
        files.staff,
        files.patients,
        files.encounters,
        files.care_team,
        files.orders,
        files.access_log,
    ];
    let total = sources.iter().map(|s| s.len() as u64).sum();
    let mut loader = Loader::new(opts, Progress::new(progress, total));
    for (spec, bytes) in FILES.iter().zip(sources) {
        loader.file(spec, bytes)?;
    }
    loader.finish()
}

// ---------------------------------------------------------------------------
// RFC 4180 records.

/// One record: its fields' bytes end to end, where each field ends, the line
/// it starts on, and what is wrong with it, if anything.
#[derive(Debug, Default)]
pub(crate) struct Record {
    buf: Vec<u8>,
    ends: Vec<usize>,
    /// Fields seen, including those beyond the kept maximum.
    count: usize,
    pub(crate) line: u64,
    pub(crate) problem: Option<Problem>,
}

/// A record-level defect found while splitting fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Problem {
    Unterminated,
    /// A quote inside an unquoted field, or text after a closing quote
    /// (0-based field).
    StrayQuote(usize),
    /// A field longer than [`MAX_FIELD`] (0-based field).
    TooLong(usize),
}

impl Record {
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// The bytes of field `i` (empty past the last field kept).
    pub(crate) fn field(&self, i: usize) -> &[u8] {
        self.buf.get(self.span(i)).unwrap_or_default()
    }

    /// Where field `i` is in `buf`.
    fn span(&self, i: usize) -> std::ops::Range<usize> {
        let start = match i.checked_sub(1) {
            None => 0,
            Some(p) => self.ends.get(p).copied().unwrap_or(0),
        };
        let end = self.ends.get(i).copied().unwrap_or(start);
        start..end
    }

    fn clear(&mut self, line: u64) {
        self.buf.clear();
        self.ends.clear();
        self.count = 0;
        self.line = line;
        self.problem = None;
    }

    fn flag(&mut self, p: Problem) {
        if self.problem.is_none() {
            self.problem = Some(p);
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    /// At the start of a field.
    Start,
    Unquoted,
    Quoted,
    /// A quote inside a quoted field: the end of it, or the first of two.
    QuoteInQuoted,
    /// A carriage return after a closing quote.
    CrAfterQuote,
}

/// Splits a byte stream into records.
pub(crate) struct Records<R> {
    inner: R,
    /// The line of the next byte (1-based).
    line: u64,
    /// Bytes consumed from `inner`, the byte order mark included.
    pub(crate) bytes: u64,
    fields: FieldState,
}

/// The field being read (apart from the reader, which is borrowed while a
/// buffer is scanned).
struct FieldState {
    /// Fields kept per record; more are counted, not stored.
    max_fields: usize,
    /// The current field's length so far, stored or not.
    len: usize,
}

impl<R: BufRead> Records<Chain3<R>> {
    /// A reader that passes over a byte order mark at the start.
    pub(crate) fn new(mut inner: R, max_fields: usize) -> io::Result<Self> {
        let mut head = [0u8; 3];
        let mut n = 0;
        while n < head.len() {
            let k = match inner.read(head.get_mut(n..).unwrap_or_default()) {
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if k == 0 {
                break;
            }
            n += k;
        }
        let bom = n == 3 && head == [0xEF, 0xBB, 0xBF];
        let keep = if bom { 0 } else { n };
        let prefix = Cursor::new(head.get(..keep).unwrap_or_default().to_vec());
        Ok(Records {
            inner: prefix.chain(inner),
            line: 1,
            bytes: if bom { 3 } else { 0 },
            fields: FieldState { max_fields, len: 0 },
        })
    }
}

type Chain3<R> = io::Chain<Cursor<Vec<u8>>, R>;

impl<R: BufRead> Records<R> {
    /// Reads the next non-blank record into `rec`; `false` at the end.
    pub(crate) fn next(&mut self, rec: &mut Record) -> io::Result<bool> {
        rec.clear(self.line);
        self.fields.len = 0;
        let mut state = State::Start;
        loop {
            let buf = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                // End of input.
                return Ok(match state {
                    State::Start if rec.count == 0 => false,
                    State::Quoted => {
                        rec.flag(Problem::Unterminated);
                        self.fields.end(rec);
                        true
                    }
                    _ => {
                        self.fields.end(rec);
                        true
                    }
                });
            }
            let mut i = 0;
            let mut done = false;
            while let Some(&b) = buf.get(i) {
                match state {
                    State::Start => match b {
                        b'"' => {
                            state = State::Quoted;
                            i += 1;
                        }
                        b',' => {
                            self.fields.end(rec);
                            i += 1;
                        }
                        b'\n' => {
                            i += 1;
                            self.line += 1;
                            if rec.count == 0 {
                                // A blank line: no record; start again after it.
                                rec.line = self.line;
                            } else {
                                self.fields.end(rec);
                                done = true;
                                break;
                            }
                        }
                        _ => state = State::Unquoted,
                    },
                    State::Unquoted => {
                        let rest = buf.get(i..).unwrap_or_default();
                        let n = rest
                            .iter()
                            .position(|&c| c == b',' || c == b'\n' || c == b'"')
                            .unwrap_or(rest.len());
                        self.fields.push(rec, rest.get(..n).unwrap_or_default());
                        i += n;
                        match buf.get(i) {
                            Some(b',') => {
                                self.fields.end(rec);
                                state = State::Start;
                                i += 1;
                            }
                            Some(b'\n') => {
                                i += 1;
                                self.line += 1;
                                // CRLF: the CR is the line ending, not data.
                                if self.fields.len > 0 && rec.buf.last() == Some(&b'\r') {
                                    rec.buf.pop();
                                    self.fields.len -= 1;
                                }
                                if rec.count == 0 && self.fields.len == 0 && rec.problem.is_none() {
                                    // A line holding only a CR is blank too.
                                    rec.line = self.line;
                                    state = State::Start;
                                    continue;
                                }
                                self.fields.end(rec);
                                done = true;
                                break;
                            }
                            Some(_) => {
                                rec.flag(Problem::StrayQuote(rec.count));
                                self.fields.push(rec, b"\"");
                                i += 1;
                            }
                            None => {}
                        }
                    }
                    State::Quoted => {
                        let rest = buf.get(i..).unwrap_or_default();
                        let n = rest
                            .iter()
                            .position(|&c| c == b'"' || c == b'\n')
                            .unwrap_or(rest.len());
                        self.fields.push(rec, rest.get(..n).unwrap_or_default());
                        i += n;
                        match buf.get(i) {
                            Some(b'"') => {
                                state = State::QuoteInQuoted;
                                i += 1;
                            }
                            Some(_) => {
                                self.line += 1;
                                self.fields.push(rec, b"\n");
                                i += 1;
                            }
                            None => {}
                        }
                    }
                    State::QuoteInQuoted => match b {
                        b'"' => {
                            self.fields.push(rec, b"\"");
                            state = State::Quoted;
                            i += 1;
                        }
                        b',' => {
                            self.fields.end(rec);
                            state = State::Start;
                            i += 1;
                        }
                        b'\n' => {
                            i += 1;
                            self.line += 1;
                            self.fields.end(rec);
                            done = true;
                            break;
                        }
                        b'\r' => {
                            state = State::CrAfterQuote;
                            i += 1;
                        }
                        _ => {
                            rec.flag(Problem::StrayQuote(rec.count));
                            state = State::Unquoted;
                        }
                    },
                    State::CrAfterQuote => {
                        if b == b'\n' {
                            i += 1;
                            self.line += 1;
                            self.fields.end(rec);
                            done = true;
                            break;
                        }
                        rec.flag(Problem::StrayQuote(rec.count));
                        self.fields.push(rec, b"\r");
                        state = State::Unquoted;
                    }
                }
            }
            self.inner.consume(i);
            self.bytes += i as u64;
            if done {
                return Ok(true);
            }
        }
    }
}

impl FieldState {
    #[inline]
    fn push(&mut self, rec: &mut Record, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.len = self.len.saturating_add(bytes.len());
        if self.len > MAX_FIELD {
            rec.flag(Problem::TooLong(rec.count));
        } else if rec.count < self.max_fields {
            rec.buf.extend_from_slice(bytes);
        }
    }

    #[inline]
    fn end(&mut self, rec: &mut Record) {
        if rec.count < self.max_fields {
            rec.ends.push(rec.buf.len());
        }
        rec.count += 1;
        self.len = 0;
    }
}

// ---------------------------------------------------------------------------
// From records to a world.

/// Ids seen in one file, with the index each became.
type Ids = FastMap<IdKey, u32>;

/// An id as a hash-table key: short ids (nearly all) are stored in the
/// table itself, so a lookup touches one cache line instead of also
/// chasing a pointer to the key (that miss was a third of the parse time
/// on a 200,000-patient export).
#[derive(Clone, Debug)]
enum IdKey {
    Inline { len: u8, bytes: [u8; IdKey::INLINE] },
    Heap(Box<[u8]>),
}

impl IdKey {
    const INLINE: usize = 22;

    fn new(id: &str) -> Self {
        let b = id.as_bytes();
        let mut bytes = [0u8; Self::INLINE];
        match (bytes.get_mut(..b.len()), u8::try_from(b.len())) {
            (Some(dst), Ok(len)) => {
                dst.copy_from_slice(b);
                IdKey::Inline { len, bytes }
            }
            _ => IdKey::Heap(b.into()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            IdKey::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            IdKey::Heap(b) => b,
        }
    }
}

impl std::borrow::Borrow<[u8]> for IdKey {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

// Hash and Eq as the bytes, so that lookups by `&[u8]` agree (`Borrow`).
impl Hash for IdKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl PartialEq for IdKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for IdKey {}

struct Loader<'p> {
    skip: bool,
    world: World,
    bad: Bad,
    progress: Progress<'p>,
    /// Bytes of the files already read completely.
    base: u64,
    rows: u64,
    staff: Ids,
    patients: Ids,
    encounters: Ids,
    orders: Ids,
    /// Access rows by a hash of (event id, patient): a duplicate is the same
    /// event touching the same patient twice. A hash collision between
    /// different keys falls back to `access_overflow`, so the check is exact.
    access_keys: FastMap<u64, u32>,
    access_overflow: FastMap<(Box<str>, u32), ()>,
    departments: FastMap<Box<str>, DeptIx>,
    roles: FastMap<Box<str>, RoleIx>,
}

impl<'p> Loader<'p> {
    fn new(opts: &ReadOptions, progress: Progress<'p>) -> Self {
        Loader {
            skip: opts.skip_bad_rows,
            world: World::default(),
            bad: Bad::new(opts),
            progress,
            base: 0,
            rows: 0,
            staff: Ids::default(),
            patients: Ids::default(),
            encounters: Ids::default(),
            orders: Ids::default(),
            access_keys: FastMap::default(),
            access_overflow: FastMap::default(),
            departments: FastMap::default(),
            roles: FastMap::default(),
        }
    }

    fn finish(mut self) -> Result<Loaded, InputError> {
        self.progress.finish(self.base);
        self.bad.finish(self.world, self.base, self.rows)
    }

    fn file<R: BufRead>(&mut self, spec: &Spec, reader: R) -> Result<(), InputError> {
        let io_err = |source| InputError::Io {
            file: spec.name.to_owned(),
            source,
        };
        let width = spec.header.len();
        // One more field than expected is kept so that the count is right;
        // the rest are only counted.
        let mut records = Records::new(reader, width + 1).map_err(io_err)?;
        let mut rec = Record::default();
        let has_header = records.next(&mut rec).map_err(io_err)?;
        check_header(spec, has_header.then_some(&rec))?;
        while records.next(&mut rec).map_err(io_err)? {
            self.rows += 1;
            let result = if let Some(p) = rec.problem {
                Err(problem_error(spec, p))
            } else if rec.len() != width {
                Err(RowError::new(
                    "",
                    format!("row has {} fields, expected {width}", rec.len()),
                ))
            } else {
                let f = Fields {
                    rec: &rec,
                    spec,
                    utf8: std::str::from_utf8(&rec.buf).ok(),
                };
                match spec.kind {
                    Kind::Staff => self.staff_row(&f),
                    Kind::Patients => self.patient_row(&f),
                    Kind::Encounters => self.encounter_row(&f),
                    Kind::CareTeam => self.care_team_row(&f),
                    Kind::Orders => self.order_row(&f),
                    Kind::AccessLog => self.access_row(&f),
                }
            };
            if let Err(e) = result {
                if !self.skip && (rec.problem.is_some() || rec.len() != width) {
                    self.hold_id(spec.kind, &rec);
                }
                self.bad.push(spec.name, rec.line, e.to_string());
            }
            self.progress.at(self.base + records.bytes);
        }
        self.base += records.bytes;
        Ok(())
    }

    /// Holds the id of a row that could not be split into its fields, when
    /// bad rows refuse the input (see [`BAD_ROW_INDEX`]).
    fn hold_id(&mut self, kind: Kind, rec: &Record) {
        let ids = match kind {
            Kind::Staff => &mut self.staff,
            Kind::Patients => &mut self.patients,
            Kind::Encounters => &mut self.encounters,
            Kind::Orders => &mut self.orders,
            Kind::CareTeam | Kind::AccessLog => return,
        };
        // A defect in the id itself leaves no id to hold.
        if matches!(
            rec.problem,
            Some(Problem::TooLong(0) | Problem::StrayQuote(0))
        ) {
            return;
        }
        if let Ok(id) = std::str::from_utf8(rec.field(0))
            && !id.is_empty()
            && !ids.contains_key(id.as_bytes())
        {
            ids.insert(IdKey::new(id), BAD_ROW_INDEX);
        }
    }

    /// Claims a row's id: an error if another row of the file has it.
    fn claim<'f>(ids: &Ids, column: &'static str, id: &'f str) -> Result<&'f str, RowError> {
        if ids.contains_key(id.as_bytes()) {
            return Err(RowError::new(column, "duplicate id"));
        }
        Ok(id)
    }

    /// Records a row's id: the index it became, or, when bad rows refuse the
    /// input, [`BAD_ROW_INDEX`] for a bad row so that rows referring to it
    /// are not reported again.
    fn settle<T>(
        &mut self,
        which: fn(&mut Self) -> &mut Ids,
        id: &str,
        result: Result<(T, u32), RowError>,
        push: fn(&mut World, T),
    ) -> Result<(), RowError> {
        match result {
            Ok((value, ix)) => {
                which(self).insert(IdKey::new(id), ix);
                push(&mut self.world, value);
                Ok(())
            }
            Err(e) => {
                if !self.skip {
                    which(self).insert(IdKey::new(id), BAD_ROW_INDEX);
                }
                Err(e)
            }
        }
    }

    fn department(&mut self, name: &str) -> DeptIx {
        let name = if name.is_empty() { "unknown" } else { name };
        if let Some(&d) = self.departments.get(name) {
            return d;
        }
        let d = self.world.department(name);
        self.departments.insert(name.into(), d);
        d
    }

    fn role(&mut self, name: &str) -> RoleIx {
        let name = if name.is_empty() { "unknown" } else { name };
        if let Some(&r) = self.roles.get(name) {
            return r;
        }
        let r = self.world.role(name);
        self.roles.insert(name.into(), r);
        r
    }

    fn staff_row(&mut self, f: &Fields<'_>) -> Result<(), RowError> {
        let id = Self::claim(&self.staff, "staff_id", f.id(0)?)?;
        let result = (|| {
            let user = User {
                id: id.to_owned(),
                given: f.text(1)?.to_owned(),
                family: f.text(2)?.to_owned(),
                role: self.role(f.text(3)?),
                department: self.department(f.text(4)?),
                address: f.address(5)?,
                hire: f.opt(
                    8,
                    time::timestamp_or_date,
                    "not an RFC 3339 timestamp or date",
                )?,
                termination: f.opt(
                    9,
                    time::timestamp_or_date,
                    "not an RFC 3339 timestamp or date",
                )?,
                patient: None,
            };
            Ok((user, next_index(&self.world.users)))
        })();
        self.settle(|l| &mut l.staff, id, result, |w, u| w.users.push(u))
    }

    fn patient_row(&mut self, f: &Fields<'_>) -> Result<(), RowError> {
        let id = Self::claim(&self.patients, "patient_id", f.id(0)?)?;
        let result = (|| {
            let birth_date = f.opt(4, time::date, "not a date (YYYY-MM-DD)")?;
            let patient = Patient {
                id: id.to_owned(),
                mrn: f.text(1)?.to_owned(),
                given: f.text(2)?.to_owned(),
                family: f.text(3)?.to_owned(),
                birth_date: birth_date
                    .map(|_| f.text(4))
                    .transpose()?
                    .map(str::to_owned),
                address: f.address(5)?,
                vip: f.boolean(8)?,
                deceased: f.opt(
                    9,
                    time::timestamp_or_date,
                    "not an RFC 3339 timestamp or date",
                )?,
                employee: f.reference(10, &self.staff, "staff")?.map(UserIx),
                contacts: Vec::new(),
            };
            Ok((patient, next_index(&self.world.patients)))
        })();
        self.settle(|l| &mut l.patients, id, result, |w, p| w.patients.push(p))
    }

    fn encounter_row(&mut self, f: &Fields<'_>) -> Result<(), RowError> {
        let id = Self::claim(&self.encounters, "encounter_id", f.id(0)?)?;
        let result = (|| {
            let patient = f.required_reference(1, &self.patients, "patient")?;
            let class = EncounterClass::parse(f.text(3)?);
            let start = f.required(4, time::timestamp, "not an RFC 3339 timestamp")?;
            let end = f.opt(5, time::timestamp, "not an RFC 3339 timestamp")?;
            if end.is_some_and(|e| e < start) {
                return Err(RowError::new("end", "before start"));
            }
            let attending = f.reference(6, &self.staff, "staff")?.map(UserIx);
            let encounter = Encounter {
                id: id.to_owned(),
                patient: PatientIx(patient),
                department: self.department(f.text(2)?),
                class,
                start,
                end,
                attending,
            };
            Ok((encounter, next_index(&self.world.encounters)))
        })();
        self.settle(
            |l| &mut l.encounters,
            id,
            result,
            |w, e| w.encounters.push(e),
        )
    }

    /// An encounter that must belong to `patient`.
    fn encounter_of(
        &self,
        f: &Fields<'_>,
        i: usize,
        patient: u32,
    ) -> Result<Option<EncounterIx>, RowError> {
        let Some(e) = f.reference(i, &self.encounters, "encounter")? else {
            return Ok(None);
        };
        if let Some(enc) = self.world.encounters.get(e as usize)
            && patient != BAD_ROW_INDEX
            && enc.patient.0 != patient
        {
            return Err(RowError::new(
                f.spec.header.get(i).copied().unwrap_or(""),
                "the encounter is another patient's",
            ));
        }
        Ok(Some(EncounterIx(e)))
    }

    fn care_team_row(&mut self, f: &Fields<'_>) -> Result<(), RowError> {
        let patient = f.required_reference(0, &self.patients, "patient")?;
        let user = f.required_reference(1, &self.staff, "staff")?;
        let encounter = self.encounter_of(f, 2, patient)?;
        let start = f.opt(4, time::timestamp, "not an RFC 3339 timestamp")?;
        let end = f.opt(5, time::timestamp, "not an RFC 3339 timestamp")?;
        if let (Some(s), Some(e)) = (start, end)
            && e < s
        {
            return Err(RowError::new("end", "before start"));
        }
        self.world.care_team.push(CareTeamMember {
            patient: PatientIx(patient),
            user: UserIx(user),
            encounter,
            role: f.text(3)?.to_owned(),
            start,
            end,
        });
        Ok(())
    }

    fn order_row(&mut self, f: &Fields<'_>) -> Result<(), RowError> {
        let id = Self::claim(&self.orders, "order_id", f.id(0)?)?;
        let result = (|| {
            let patient = f.required_reference(2, &self.patients, "patient")?;
            let encounter = self.encounter_of(f, 1, patient)?;
            let ordered_by = f.reference(4, &self.staff, "staff")?.map(UserIx);
            let at = f.required(5, time::timestamp, "not an RFC 3339 timestamp")?;
            let order = Order {
                id: id.to_owned(),
                encounter,
                patient: PatientIx(patient),
                service_department: self.department(f.text(3)?),
                ordered_by,
                at,
            };
            Ok((order, next_index(&self.world.orders)))
        })();
        self.settle(|l| &mut l.orders, id, result, |w, o| w.orders.push(o))
    }

    fn access_row(&mut self, f: &Fields<'_>) -> Result<(), RowError> {
        let event_id = f.id(0)?;
        let time = f.required(1, time::timestamp, "not an RFC 3339 timestamp")?;
        let user = f.required_reference(2, &self.staff, "staff")?;
        let patient = f.required_reference(3, &self.patients, "patient")?;
        let action = match f.text(4)? {
            "" => return Err(RowError::new("action", "missing")),
            a => Action::parse(a).ok_or_else(|| {
                RowError::new("action", "not one of view, modify, print, export, search")
            })?,
        };
        let record_count = match f.text(7)? {
            "" => 1,
            n => parse_u32(n)
                .ok_or_else(|| RowError::new("record_count", "not an unsigned 32-bit integer"))?,
        };
        self.unique_access(event_id, patient)?;
        self.world.accesses.push(Access {
            event_id: event_id.to_owned(),
            time,
            user: UserIx(user),
            patient: PatientIx(patient),
            action,
            resource_type: f.text(5)?.to_owned(),
            workstation: f.text(6)?.to_owned(),
            record_count,
            emergency: false,
            refused: false,
        });
        Ok(())
    }

    /// Checks that no earlier row is the same event for the same patient
    /// (an event touching several patients has a row for each).
    fn unique_access(&mut self, event_id: &str, patient: u32) -> Result<(), RowError> {
        let dup = || RowError::new("event_id", "duplicate id for this patient");
        let mut h = self.access_keys.hasher().build_hasher();
        event_id.hash(&mut h);
        patient.hash(&mut h);
        let ix = next_index(&self.world.accesses);
        match self.access_keys.entry(h.finish()) {
            Entry::Vacant(v) => {
                v.insert(ix);
                Ok(())
            }
            Entry::Occupied(o) => {
                let same = self
                    .world
                    .accesses
                    .get(*o.get() as usize)
                    .is_some_and(|a| a.event_id == event_id && a.patient.0 == patient);
                if same
                    || self
                        .access_overflow
                        .insert((event_id.into(), patient), ())
                        .is_some()
                {
                    return Err(dup());
                }
                Ok(())
            }
        }
    }
}

fn parse_u32(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn problem_error(spec: &Spec, p: Problem) -> RowError {
    let column = |i: usize| spec.header.get(i).copied().unwrap_or("");
    match p {
        Problem::Unterminated => RowError::new("", "unterminated quoted field"),
        Problem::StrayQuote(i) if i < spec.header.len() => RowError::new(
            column(i),
            "a quote inside an unquoted field or after a closing quote",
        ),
        Problem::TooLong(i) if i < spec.header.len() => RowError::new(
            column(i),
            Cow::Owned(format!("field longer than {MAX_FIELD} bytes")),
        ),
        Problem::StrayQuote(_) | Problem::TooLong(_) => RowError::new(
            "",
            format!("row has more than {} fields", spec.header.len()),
        ),
    }
}

/// Every column name of the six files: only these are shown from a wrong
/// header (anything else could be a row of data).
fn is_known_column(name: &str) -> bool {
    FILES
        .iter()
        .any(|s| s.header.iter().any(|h| h.eq_ignore_ascii_case(name.trim())))
}

fn check_header(spec: &Spec, rec: Option<&Record>) -> Result<(), InputError> {
    let ok = rec.is_some_and(|r| {
        r.problem.is_none()
            && r.len() == spec.header.len()
            && spec
                .header
                .iter()
                .enumerate()
                .all(|(i, h)| r.field(i) == h.as_bytes())
    });
    if ok {
        return Ok(());
    }
    let found = rec.map_or_else(String::new, |r| {
        (0..r.len().min(spec.header.len() + 1))
            .map(|i| match std::str::from_utf8(r.field(i)) {
                Ok(name) if is_known_column(name) => name,
                _ => "?",
            })
            .collect::<Vec<_>>()
            .join(",")
    });
    Err(InputError::Header {
        file: spec.name.to_owned(),
        expected: spec.header.join(","),
        found,
    })
}

/// A record's fields, with the file's column names for messages.
struct Fields<'a> {
    rec: &'a Record,
    spec: &'a Spec,
    /// The whole record's text when it is valid UTF-8 (one check per row
    /// instead of one per field).
    utf8: Option<&'a str>,
}

impl<'a> Fields<'a> {
    fn column(&self, i: usize) -> &'static str {
        self.spec.header.get(i).copied().unwrap_or("")
    }

    fn text(&self, i: usize) -> Result<&'a str, RowError> {
        // `get` also refuses a field that splits a character.
        let fast = self.utf8.and_then(|text| text.get(self.rec.span(i)));
        match fast {
            Some(t) => Ok(t),
            None => std::str::from_utf8(self.rec.field(i))
                .map_err(|_| RowError::new(self.column(i), "not valid UTF-8")),
        }
    }

    fn id(&self, i: usize) -> Result<&'a str, RowError> {
        match self.text(i)? {
            "" => Err(RowError::new(self.column(i), "missing")),
            s => Ok(s),
        }
    }

    fn required(
        &self,
        i: usize,
        parse: fn(&str) -> Option<i64>,
        problem: &'static str,
    ) -> Result<i64, RowError> {
        self.opt(i, parse, problem)?
            .ok_or_else(|| RowError::new(self.column(i), "missing"))
    }

    fn opt(
        &self,
        i: usize,
        parse: fn(&str) -> Option<i64>,
        problem: &'static str,
    ) -> Result<Option<i64>, RowError> {
        match self.text(i)? {
            "" => Ok(None),
            s => parse(s)
                .map(Some)
                .ok_or_else(|| RowError::new(self.column(i), problem)),
        }
    }

    fn boolean(&self, i: usize) -> Result<bool, RowError> {
        match self.text(i)? {
            "" | "false" => Ok(false),
            "true" => Ok(true),
            _ => Err(RowError::new(self.column(i), "not true or false")),
        }
    }

    fn address(&self, i: usize) -> Result<Address, RowError> {
        Ok(Address {
            line: self.text(i)?.to_owned(),
            city: self.text(i + 1)?.to_owned(),
            zip: self.text(i + 2)?.to_owned(),
        })
    }

    /// An optional reference to a row of another file.
    fn reference(&self, i: usize, ids: &Ids, what: &'static str) -> Result<Option<u32>, RowError> {
        match self.text(i)? {
            "" => Ok(None),
            s => ids.get(s.as_bytes()).copied().map(Some).ok_or_else(|| {
                RowError::new(self.column(i), Cow::Owned(format!("unknown {what} id")))
            }),
        }
    }

    fn required_reference(&self, i: usize, ids: &Ids, what: &'static str) -> Result<u32, RowError> {
        self.reference(i, ids, what)?
            .ok_or_else(|| RowError::new(self.column(i), "missing"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(input: &[u8]) -> Vec<(u64, Vec<String>, Option<Problem>)> {
        let mut r = Records::new(input, 4).unwrap();
        let mut rec = Record::default();
        let mut out = Vec::new();
        while r.next(&mut rec).unwrap() {
            let fields = (0..rec.len().min(4))
                .map(|i| String::from_utf8_lossy(rec.field(i)).into_owned())
                .collect();
            out.push((rec.line, fields, rec.problem));
        }
        assert_eq!(r.bytes, input.len() as u64);
        out
    }

    fn f(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn splits_rfc4180() {
        assert_eq!(
            records(b"a,b\n\"c,\"\"d\"\"\",\"e\r\nf\"\r\n\n,\n"),
            vec![
                (1, f(&["a", "b"]), None),
                (2, f(&["c,\"d\"", "e\r\nf"]), None),
                (5, f(&["", ""]), None),
            ]
        );
        assert_eq!(records(b"\xEF\xBB\xBFa,b"), vec![(1, f(&["a", "b"]), None)]);
        assert_eq!(records(b""), vec![]);
        assert_eq!(records(b"\r\n\r\nx\r\n"), vec![(3, f(&["x"]), None)]);
        assert_eq!(records(b"\"\"\n"), vec![(1, f(&[""]), None)]);
        assert_eq!(
            records(b"a\"b,c\n\"x\"y\n\"open\nz"),
            vec![
                (1, f(&["a\"b", "c"]), Some(Problem::StrayQuote(0))),
                (2, f(&["xy"]), Some(Problem::StrayQuote(0))),
                (3, f(&["open\nz"]), Some(Problem::Unterminated)),
            ]
        );
    }

    /// Two different (event, patient) keys with the same 64-bit hash are
    /// told apart; a true duplicate is still caught after a collision.
    #[test]
    fn access_uniqueness_survives_hash_collisions() {
        let mut noop = |_: u64, _: u64| {};
        let mut l = Loader::new(&ReadOptions::default(), Progress::new(&mut noop, 0));
        assert!(l.unique_access("e1", 0).is_ok());
        l.world.accesses.push(Access {
            event_id: "e1".into(),
            time: 0,
            user: UserIx(0),
            patient: PatientIx(0),
            action: Action::View,
            resource_type: String::new(),
            workstation: String::new(),
            record_count: 1,
            emergency: false,
            refused: false,
        });
        assert!(l.unique_access("e1", 0).is_err());
        // Make ("e2", 0) collide with ("e1", 0).
        let mut h = l.access_keys.hasher().build_hasher();
        "e2".hash(&mut h);
        0u32.hash(&mut h);
        l.access_keys.insert(h.finish(), 0);
        assert!(l.unique_access("e2", 0).is_ok());
        assert!(l.unique_access("e2", 0).is_err());
        assert!(l.unique_access("e1", 1).is_ok());
    }

    #[test]
    fn bounds_fields() {
        let long = format!("x,{}\ny\n", "a".repeat(MAX_FIELD + 1));
        let got = records(long.as_bytes());
        assert_eq!(got[0].2, Some(Problem::TooLong(1)));
        assert_eq!(got[1], (2, f(&["y"]), None));
        let wide = records(b"1,2,3,4,5,6\n");
        assert_eq!(wide[0].1, f(&["1", "2", "3", "4"]));
        let mut r = Records::new(&b"1,2,3,4,5,6\n"[..], 4).unwrap();
        let mut rec = Record::default();
        assert!(r.next(&mut rec).unwrap());
        assert_eq!(rec.len(), 6);
    }
}
