//! The generative process of `docs/monitor-simulator.md`.
//!
//! Internally every time is *local seconds*: seconds since the first day's
//! local midnight, so that shifts and nights are plain arithmetic. They are
//! converted to UTC through the hospital's time zone only when the world is
//! built.

// The generator indexes only its own vectors, with indexes it created from
// their lengths; an out-of-range index here is a simulator bug, never input.
#![expect(
    clippy::indexing_slicing,
    reason = "indexes into the simulator's own vectors, created in range by the same code"
)]

use std::collections::{HashMap, HashSet};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Incident, SimConfig, SimError, Simulation, names};
use crate::alert::Kind;
use crate::model::{
    Access, Action, Address, CareTeamMember, DeptIx, Encounter, EncounterClass, EncounterIx, Order,
    Patient, PatientIx, RoleIx, User, UserIx, World,
};

const MIN: i64 = 60;
const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;
/// Encounters start this many days before the period.
const WARMUP_DAYS: i64 = 7;
/// Legitimate rows per day at scale 1 (calibrates the encounter volumes).
const ROWS_PER_DAY: f64 = 10_600.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Dept {
    Emergency,
    InternalMedicine,
    Cardiology,
    Oncology,
    Pediatrics,
    Surgery,
    Obstetrics,
    Psychiatry,
    Orthopedics,
    Neurology,
    Radiology,
    Laboratory,
    Pharmacy,
    Registration,
    Billing,
    Him,
    Quality,
    FloatPool,
}

use Dept::*;

const DEPTS: [(Dept, &str, &str); 18] = [
    (Emergency, "Emergency", "ED"),
    (InternalMedicine, "Internal Medicine", "IM"),
    (Cardiology, "Cardiology", "CAR"),
    (Oncology, "Oncology", "ONC"),
    (Pediatrics, "Pediatrics", "PED"),
    (Surgery, "Surgery", "SUR"),
    (Obstetrics, "Obstetrics", "OB"),
    (Psychiatry, "Psychiatry", "PSY"),
    (Orthopedics, "Orthopedics", "ORT"),
    (Neurology, "Neurology", "NEU"),
    (Radiology, "Radiology", "RAD"),
    (Laboratory, "Laboratory", "LAB"),
    (Pharmacy, "Pharmacy", "PHA"),
    (Registration, "Registration", "REG"),
    (Billing, "Billing", "BIL"),
    (Him, "Health Information Management", "HIM"),
    (Quality, "Quality", "QUA"),
    (FloatPool, "Float Pool", "FLT"),
];

/// Clinical departments and their staffing weights.
const CLINICAL: [(Dept, u32); 10] = [
    (Emergency, 12),
    (InternalMedicine, 18),
    (Cardiology, 10),
    (Oncology, 8),
    (Pediatrics, 9),
    (Surgery, 12),
    (Obstetrics, 7),
    (Psychiatry, 7),
    (Orthopedics, 8),
    (Neurology, 9),
];

/// Inpatient departments and their direct-admission weights.
const INPATIENT: [(Dept, u32); 9] = [
    (InternalMedicine, 30),
    (Cardiology, 12),
    (Oncology, 8),
    (Pediatrics, 8),
    (Surgery, 15),
    (Obstetrics, 10),
    (Psychiatry, 5),
    (Orthopedics, 7),
    (Neurology, 5),
];

/// Where emergency admissions go.
const ADMIT_FROM_ED: [(Dept, u32); 5] = [
    (InternalMedicine, 50),
    (Cardiology, 15),
    (Surgery, 15),
    (Neurology, 10),
    (Orthopedics, 10),
];

/// Consults without orders: (consulting department, encounter department,
/// encounter class, probability per encounter).
const CONSULTS: [(Dept, Dept, EncounterClass, f64); 13] = [
    (
        Cardiology,
        InternalMedicine,
        EncounterClass::Inpatient,
        0.12,
    ),
    (Cardiology, Emergency, EncounterClass::Emergency, 0.04),
    (Cardiology, Surgery, EncounterClass::Inpatient, 0.03),
    (Neurology, Emergency, EncounterClass::Emergency, 0.05),
    (Neurology, InternalMedicine, EncounterClass::Inpatient, 0.04),
    (Psychiatry, Emergency, EncounterClass::Emergency, 0.03),
    (
        Psychiatry,
        InternalMedicine,
        EncounterClass::Inpatient,
        0.03,
    ),
    (Oncology, InternalMedicine, EncounterClass::Inpatient, 0.03),
    (Oncology, Surgery, EncounterClass::Inpatient, 0.03),
    (Surgery, Emergency, EncounterClass::Emergency, 0.05),
    (Orthopedics, Emergency, EncounterClass::Emergency, 0.04),
    (Pediatrics, Obstetrics, EncounterClass::Inpatient, 0.10),
    // Placeholder row keeps the table's length fixed; never matches.
    (FloatPool, FloatPool, EncounterClass::Other, 0.0),
];

/// Emergency arrivals by local hour (relative weights).
const ED_HOURS: [u32; 24] = [
    2, 2, 1, 1, 1, 1, 2, 3, 4, 5, 5, 5, 5, 6, 6, 6, 6, 6, 6, 5, 5, 4, 3, 3,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Role {
    Physician,
    Resident,
    Nurse,
    Registrar,
    Coder,
    BillingClerk,
    Technologist,
    Pharmacist,
    HimReviewer,
    QualityReviewer,
}

const ROLES: [(Role, &str); 10] = [
    (Role::Physician, "physician"),
    (Role::Resident, "resident"),
    (Role::Nurse, "nurse"),
    (Role::Registrar, "registrar"),
    (Role::Coder, "coder"),
    (Role::BillingClerk, "billing clerk"),
    (Role::Technologist, "technologist"),
    (Role::Pharmacist, "pharmacist"),
    (Role::HimReviewer, "HIM reviewer"),
    (Role::QualityReviewer, "quality reviewer"),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Shift {
    Day,
    Evening,
    Night,
}

const SHIFTS: [Shift; 3] = [Shift::Day, Shift::Evening, Shift::Night];

/// The shift a local hour belongs to, for rostered staff.
fn shift_at(t: i64) -> Shift {
    match t.rem_euclid(DAY) / HOUR {
        7..=14 => Shift::Day,
        15..=22 => Shift::Evening,
        _ => Shift::Night,
    }
}

fn day_of(t: i64) -> i64 {
    t.div_euclid(DAY)
}

fn hour_of(t: i64) -> i64 {
    t.rem_euclid(DAY) / HOUR
}

struct Staff {
    role: Role,
    dept: Dept,
    shift: Shift,
    given: usize,
    family: usize,
    household: usize,
    relatives: Option<usize>,
    hire: i64,
    term: Option<i64>,
    workstations: [String; 2],
    /// The staff member's own patient record.
    patient: Option<usize>,
}

impl Staff {
    /// The local window of this user's shift on a day, in seconds from
    /// midnight (night shifts end the next morning, past 24 h).
    fn window(&self) -> (i64, i64) {
        match self.shift {
            Shift::Night => (23 * HOUR, 31 * HOUR),
            Shift::Evening => (15 * HOUR, 23 * HOUR),
            Shift::Day => match self.role {
                Role::Physician if self.dept != Emergency => (7 * HOUR, 19 * HOUR),
                Role::Resident => (6 * HOUR, 18 * HOUR),
                Role::Coder | Role::BillingClerk | Role::HimReviewer | Role::QualityReviewer => {
                    (8 * HOUR, 17 * HOUR)
                }
                _ => (7 * HOUR, 15 * HOUR),
            },
        }
    }

    fn active(&self, t: i64) -> bool {
        self.hire <= t && self.term.is_none_or(|end| t < end)
    }
}

struct Household {
    street: usize,
    house: u32,
    family: usize,
}

struct Person {
    given: usize,
    family: usize,
    household: usize,
    age: i64,
    birth: String,
    vip: bool,
    employee: Option<usize>,
    deceased: Option<i64>,
}

struct Enc {
    patient: usize,
    dept: Dept,
    class: EncounterClass,
    start: i64,
    end: i64,
    attending: Option<usize>,
    /// A virtual follow-up of an earlier ambulatory visit with the same
    /// physician.
    followup: bool,
    /// An inpatient stay that began with an emergency visit.
    from_ed: bool,
    died: bool,
}

struct Care {
    patient: usize,
    user: usize,
    enc: usize,
    role: &'static str,
}

struct Ord {
    enc: usize,
    patient: usize,
    svc: Dept,
    by: Option<usize>,
    at: i64,
}

struct Row {
    t: i64,
    user: usize,
    patient: usize,
    action: Action,
    rtype: &'static str,
    count: u32,
    group: u32,
}

/// Relationship flags of a (user, patient) pair.
const REL_VIRTUAL: u8 = 1;
const REL_OTHER: u8 = 2;

struct PendingIncident {
    kind: Kind,
    user: usize,
    patients: Vec<usize>,
    groups: Vec<u32>,
}

struct Clock {
    tz: jiff::tz::TimeZone,
    date0: jiff::civil::Date,
}

impl Clock {
    fn utc(&self, local: i64) -> Result<i64, SimError> {
        let day = day_of(local);
        let sec = local.rem_euclid(DAY);
        let date = self
            .date0
            .checked_add(jiff::Span::new().days(day))
            .map_err(SimError::Time)?;
        let h = i8::try_from(sec / HOUR).unwrap_or(0);
        let m = i8::try_from(sec % HOUR / MIN).unwrap_or(0);
        let s = i8::try_from(sec % MIN).unwrap_or(0);
        let ts = self
            .tz
            .to_ambiguous_timestamp(date.at(h, m, s, 0))
            .compatible()
            .map_err(SimError::Time)?;
        Ok(ts.as_second())
    }
}

struct Gen<'a> {
    cfg: &'a SimConfig,
    rng: ChaCha8Rng,
    period_end: i64,
    /// Encounter volumes relative to the specification's table.
    scale: f64,
    streets_zip: Vec<usize>,
    zips: Vec<(String, usize)>,
    households: Vec<Household>,
    household_members: Vec<Vec<usize>>,
    staff: Vec<Staff>,
    people: Vec<Person>,
    by_family: Vec<Vec<usize>>,
    by_street: Vec<Vec<usize>>,
    employees: Vec<usize>,
    vips: Vec<usize>,
    pools: HashMap<(Role, Dept, Shift), Vec<usize>>,
    encs: Vec<Enc>,
    care: Vec<Care>,
    orders: Vec<Ord>,
    rows: Vec<Row>,
    groups: u32,
    pairs: HashMap<u64, u8>,
    billed: HashMap<(usize, i64), Vec<usize>>,
    reviewed: HashMap<usize, Vec<(i64, usize)>>,
    incidents: Vec<PendingIncident>,
}

pub(super) fn generate(cfg: &SimConfig) -> Result<Simulation, SimError> {
    if cfg.days < 3 {
        return Err(SimError::Config("days must be at least 3"));
    }
    if cfg.staff < 20 {
        return Err(SimError::Config("staff must be at least 20"));
    }
    if cfg.patients < 100 {
        return Err(SimError::Config("patients must be at least 100"));
    }
    if !(cfg.incidents_per_10k.is_finite() && cfg.incidents_per_10k >= 0.0) {
        return Err(SimError::Config(
            "incidents_per_10k must be a non-negative number",
        ));
    }
    let tz = if cfg.timezone.is_empty() || cfg.timezone == "UTC" {
        jiff::tz::TimeZone::UTC
    } else {
        jiff::tz::TimeZone::get(&cfg.timezone).map_err(|source| SimError::TimeZone {
            name: cfg.timezone.clone(),
            source,
        })?
    };
    let start = jiff::Timestamp::from_second(cfg.start).map_err(SimError::Time)?;
    let date0 = tz.to_datetime(start).date();
    let clock = Clock { tz, date0 };

    let mut g = Gen {
        cfg,
        rng: ChaCha8Rng::seed_from_u64(cfg.seed),
        period_end: i64::from(cfg.days) * DAY,
        scale: cfg.target_accesses as f64 / (f64::from(cfg.days) * ROWS_PER_DAY),
        streets_zip: Vec::new(),
        zips: Vec::new(),
        households: Vec::new(),
        household_members: Vec::new(),
        staff: Vec::new(),
        people: Vec::new(),
        by_family: Vec::new(),
        by_street: Vec::new(),
        employees: Vec::new(),
        vips: Vec::new(),
        pools: HashMap::new(),
        encs: Vec::new(),
        care: Vec::new(),
        orders: Vec::new(),
        rows: Vec::with_capacity(cfg.target_accesses + cfg.target_accesses / 8),
        groups: 0,
        pairs: HashMap::new(),
        billed: HashMap::new(),
        reviewed: HashMap::new(),
        incidents: Vec::new(),
    };
    g.town();
    g.people_and_staff(i64::from(date0.year()));
    g.encounters();
    g.encounter_accesses();
    g.float_and_night();
    g.exports();
    g.incidents();
    g.build(&clock)
}

/// A weighted draw over `(item, weight)`.
fn weighted<T: Copy>(rng: &mut ChaCha8Rng, items: &[(T, u32)]) -> Option<T> {
    let total: u32 = items.iter().map(|(_, w)| w).sum();
    if total == 0 {
        return None;
    }
    let mut x = rng.gen_range(0..total);
    for &(item, w) in items {
        if x < w {
            return Some(item);
        }
        x -= w;
    }
    None
}

fn pick<T: Copy>(rng: &mut ChaCha8Rng, items: &[T]) -> Option<T> {
    items.choose(rng).copied()
}

/// A Poisson draw (Knuth below 30, a rounded normal above).
fn poisson(rng: &mut ChaCha8Rng, lambda: f64) -> u32 {
    if lambda <= 0.0 {
        return 0;
    }
    if lambda < 30.0 {
        let limit = (-lambda).exp();
        let mut k = 0;
        let mut p = 1.0;
        loop {
            p *= rng.r#gen::<f64>();
            if p <= limit {
                return k;
            }
            k += 1;
        }
    }
    // Box–Muller.
    let u1: f64 = rng.r#gen::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.r#gen();
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    (lambda + z * lambda.sqrt()).round().max(0.0) as u32
}

fn pair_key(user: usize, patient: usize) -> u64 {
    ((user as u64) << 32) | patient as u64
}

fn rtypes(role: Role) -> &'static [&'static str] {
    match role {
        Role::Nurse => &["Observation", "MedicationAdministration", "Patient"],
        Role::Technologist => &["DiagnosticReport", "ImagingStudy", "ServiceRequest"],
        Role::Pharmacist => &["MedicationRequest", "MedicationRequest", "Patient"],
        Role::Coder | Role::BillingClerk => &["Encounter", "Claim"],
        Role::Registrar => &["Patient", "Encounter"],
        _ => &[
            "Patient",
            "Condition",
            "DocumentReference",
            "Encounter",
            "Observation",
        ],
    }
}

impl Gen<'_> {
    fn chance(&mut self, p: f64) -> bool {
        self.rng.gen_bool(p.clamp(0.0, 1.0))
    }

    fn between(&mut self, a: i64, b: i64) -> i64 {
        if b <= a { a } else { self.rng.gen_range(a..=b) }
    }

    fn zipf_family(&mut self) -> usize {
        // Weights 1/(rank+1); draw by inversion over the running sum.
        let n = names::FAMILY_COUNT;
        let total: f64 = (1..=n).map(|k| 1.0 / k as f64).sum();
        let mut x = self.rng.r#gen::<f64>() * total;
        for k in 0..n {
            x -= 1.0 / (k + 1) as f64;
            if x <= 0.0 {
                return k;
            }
        }
        n - 1
    }

    fn town(&mut self) {
        for city in 0..names::CITIES.len() {
            let n = self.rng.gen_range(2..=4);
            for k in 0..n {
                self.zips
                    .push((format!("{}{:02}", 40 + city, 10 + k * 7), city));
            }
        }
        let zips = self.zips.len();
        self.streets_zip = (0..names::STREET_COUNT)
            .map(|_| self.rng.gen_range(0..zips))
            .collect();
        self.by_street = vec![Vec::new(); names::STREET_COUNT];
    }

    fn household(
        &mut self,
        used: &mut HashSet<(usize, u32)>,
        family: usize,
        zip: Option<usize>,
    ) -> usize {
        let streets: Vec<usize> = match zip {
            Some(z) => (0..self.streets_zip.len())
                .filter(|&s| self.streets_zip[s] == z)
                .collect(),
            None => Vec::new(),
        };
        let mut street = 0;
        let mut house = 1;
        for _ in 0..50 {
            street = match pick(&mut self.rng, &streets) {
                Some(s) => s,
                None => self.rng.gen_range(0..self.streets_zip.len()),
            };
            house = self.rng.gen_range(1..=400);
            if used.insert((street, house)) {
                break;
            }
        }
        self.households.push(Household {
            street,
            house,
            family,
        });
        self.household_members.push(Vec::new());
        self.households.len() - 1
    }

    fn person(&mut self, household: usize, family: usize, year0: i64, adult: bool) -> usize {
        let age = if adult {
            self.rng.gen_range(20..=70)
        } else if self.chance(0.2) {
            self.rng.gen_range(0..18)
        } else {
            self.rng.gen_range(18..=95)
        };
        let y = year0 - age - i64::from(self.chance(0.5));
        let birth = format!(
            "{y:04}-{:02}-{:02}",
            self.rng.gen_range(1..=12),
            self.rng.gen_range(1..=28)
        );
        let given = self.rng.gen_range(0..names::GIVEN_COUNT);
        self.people.push(Person {
            given,
            family,
            household,
            age,
            birth,
            vip: false,
            employee: None,
            deceased: None,
        });
        self.people.len() - 1
    }

    fn household_size(&mut self) -> usize {
        weighted(
            &mut self.rng,
            &[(1, 25), (2, 30), (3, 20), (4, 15), (5, 10)],
        )
        .unwrap_or(1)
    }

    /// Fills a household with `n` patients; 80% share its family name.
    fn members(&mut self, household: usize, n: usize, year0: i64, p_patient: f64) {
        let family = self.households[household].family;
        for _ in 0..n {
            if self.people.len() >= self.cfg.patients || !self.chance(p_patient) {
                continue;
            }
            let f = if self.chance(0.8) {
                family
            } else {
                self.zipf_family()
            };
            let p = self.person(household, f, year0, false);
            self.household_members[household].push(p);
        }
    }

    fn people_and_staff(&mut self, year0: i64) {
        let n = self.cfg.staff as f64;
        let mut plan: Vec<(Role, Dept)> = Vec::new();
        let clinical_total: u32 = CLINICAL.iter().map(|(_, w)| w).sum();
        let mut add = |role: Role, dept: Dept, share: f64| {
            let k = (n * share).round().max(1.0) as usize;
            plan.extend(std::iter::repeat_n((role, dept), k));
        };
        for (dept, w) in CLINICAL {
            let f = f64::from(w) / f64::from(clinical_total);
            add(Role::Physician, dept, 0.12 * f);
            add(Role::Resident, dept, 0.06 * f);
            add(Role::Nurse, dept, 0.56 * f);
        }
        add(Role::Nurse, FloatPool, 0.05);
        add(Role::Technologist, Radiology, 0.05);
        add(Role::Technologist, Laboratory, 0.04);
        add(Role::Pharmacist, Pharmacy, 0.03);
        add(Role::Registrar, Registration, 0.04);
        add(Role::Coder, Him, 0.005);
        add(Role::HimReviewer, Him, 0.01);
        add(Role::BillingClerk, Billing, 0.025);
        add(Role::QualityReviewer, Quality, 0.01);

        let mut used = HashSet::new();
        let mut ws_counter: HashMap<Dept, u32> = HashMap::new();
        for (role, dept) in plan {
            let shift = self.draw_shift(role, dept);
            let family = self.zipf_family();
            let household = self.household(&mut used, family, None);
            let zip = self.streets_zip[self.households[household].street];
            let hire = if self.chance(0.01) {
                self.rng
                    .gen_range(1..=i64::from(self.cfg.days).saturating_sub(7).max(1))
                    * DAY
            } else {
                -self.rng.gen_range(30..=25 * 365) * DAY
            };
            let c = ws_counter.entry(dept).or_insert(0);
            let code = DEPTS.iter().find(|d| d.0 == dept).map_or("X", |d| d.2);
            let workstations = [
                format!("WS-{code}-{:03}", *c + 1),
                format!("WS-{code}-{:03}", *c + 2),
            ];
            *c += 2;
            let given = self.rng.gen_range(0..names::GIVEN_COUNT);
            self.staff.push(Staff {
                role,
                dept,
                shift,
                given,
                family,
                household,
                relatives: None,
                hire,
                term: None,
                workstations,
                patient: None,
            });
            let s = self.staff.len() - 1;
            // Household members (the staff member is one of the household).
            let size = self.household_size();
            self.members(household, size - 1, year0, 0.8);
            if self.chance(0.3) {
                let r = self.household(&mut used, family, Some(zip));
                let size = self.household_size();
                self.members(r, size, year0, 0.8);
                self.staff[s].relatives = Some(r);
            }
            if self.chance(0.12) && self.people.len() < self.cfg.patients {
                let p = self.person(household, family, year0, true);
                self.people[p].given = given;
                self.people[p].employee = Some(s);
                self.staff[s].patient = Some(p);
            }
        }
        // Terminations: 1% of staff, at least 3, hired before the period.
        let n_term = (self.staff.len() / 100).max(3);
        let candidates: Vec<usize> = (0..self.staff.len())
            .filter(|&s| self.staff[s].hire < 0)
            .collect();
        let last = i64::from(self.cfg.days) - 3;
        for s in candidates
            .choose_multiple(&mut self.rng, n_term)
            .copied()
            .collect::<Vec<_>>()
        {
            let d = self.rng.gen_range(2..=last.max(2));
            self.staff[s].term = Some(d * DAY);
        }
        // Strangers fill the registry.
        while self.people.len() < self.cfg.patients {
            let family = self.zipf_family();
            let h = self.household(&mut used, family, None);
            let size = self.household_size();
            self.members(h, size, year0, 1.0);
        }
        // Shuffle so that record order says nothing about staff households.
        let mut order: Vec<usize> = (0..self.people.len()).collect();
        order.shuffle(&mut self.rng);
        let mut new_ix = vec![0; order.len()];
        for (new, &old) in order.iter().enumerate() {
            new_ix[old] = new;
        }
        let mut old_people = std::mem::take(&mut self.people);
        let mut slots: Vec<Option<Person>> = old_people.drain(..).map(Some).collect();
        self.people = order.iter().filter_map(|&old| slots[old].take()).collect();
        for s in &mut self.staff {
            s.patient = s.patient.map(|p| new_ix[p]);
        }
        for m in &mut self.household_members {
            for p in m.iter_mut() {
                *p = new_ix[*p];
            }
        }
        for m in self.household_members.iter_mut() {
            m.sort_unstable();
        }
        // Employee patients live in their own household too.
        for s in 0..self.staff.len() {
            if let Some(p) = self.staff[s].patient {
                let h = self.staff[s].household;
                self.household_members[h].push(p);
            }
        }
        // VIPs and earlier deaths.
        let np = self.people.len();
        let n_vip = (np / 200).max(1);
        for p in rand::seq::index::sample(&mut self.rng, np, n_vip) {
            self.people[p].vip = true;
        }
        let n_dead = (np / 100).max(1);
        for p in rand::seq::index::sample(&mut self.rng, np, n_dead) {
            if self.people[p].employee.is_none() {
                let t = -self.rng.gen_range(1..=730) * DAY + self.rng.gen_range(0..DAY);
                self.people[p].deceased = Some(t);
            }
        }
        self.by_family = vec![Vec::new(); names::FAMILY_COUNT];
        for (p, person) in self.people.iter().enumerate() {
            self.by_family[person.family].push(p);
            self.by_street[self.households[person.household].street].push(p);
            if person.employee.is_some() {
                self.employees.push(p);
            }
            if person.vip {
                self.vips.push(p);
            }
        }
        for (s, st) in self.staff.iter().enumerate() {
            self.pools
                .entry((st.role, st.dept, st.shift))
                .or_default()
                .push(s);
        }
    }

    fn draw_shift(&mut self, role: Role, dept: Dept) -> Shift {
        let w: [(Shift, u32); 3] = match role {
            Role::Physician if dept == Emergency => {
                [(Shift::Day, 50), (Shift::Evening, 25), (Shift::Night, 25)]
            }
            Role::Physician => [(Shift::Day, 1), (Shift::Evening, 0), (Shift::Night, 0)],
            Role::Resident => [(Shift::Day, 70), (Shift::Evening, 0), (Shift::Night, 30)],
            Role::Nurse => [(Shift::Day, 45), (Shift::Evening, 30), (Shift::Night, 25)],
            Role::Technologist | Role::Pharmacist | Role::Registrar => {
                [(Shift::Day, 60), (Shift::Evening, 25), (Shift::Night, 15)]
            }
            _ => [(Shift::Day, 1), (Shift::Evening, 0), (Shift::Night, 0)],
        };
        weighted(&mut self.rng, &w).unwrap_or(Shift::Day)
    }

    /// A member of staff of this role and department on this shift (or, if
    /// there is none, on any shift) who is active at `at`.
    fn on_shift(&mut self, role: Role, dept: Dept, shift: Shift, at: i64) -> Option<usize> {
        for sh in std::iter::once(shift).chain(SHIFTS) {
            let Some(pool) = self.pools.get(&(role, dept, sh)) else {
                continue;
            };
            if pool.is_empty() {
                continue;
            }
            for _ in 0..8 {
                let s = pool[self.rng.gen_range(0..pool.len())];
                if self.staff[s].active(at) {
                    return Some(s);
                }
            }
        }
        None
    }

    fn eligible(&self, p: usize, dept: Dept, at: i64) -> bool {
        let person = &self.people[p];
        if person.deceased.is_some_and(|d| d <= at) {
            return false;
        }
        match dept {
            Pediatrics => person.age < 18,
            Obstetrics => (18..=45).contains(&person.age),
            _ => true,
        }
    }

    fn pick_patient(&mut self, dept: Dept, at: i64) -> Option<usize> {
        for _ in 0..30 {
            let r: f64 = self.rng.r#gen();
            let p = if r < 0.04 && !self.employees.is_empty() {
                self.employees[self.rng.gen_range(0..self.employees.len())]
            } else if r < 0.05 && !self.vips.is_empty() {
                self.vips[self.rng.gen_range(0..self.vips.len())]
            } else {
                self.rng.gen_range(0..self.people.len())
            };
            if self.eligible(p, dept, at) {
                return Some(p);
            }
        }
        None
    }

    /// 20% of an employee-patient's encounters are in their own department.
    fn own_department(&mut self, p: usize, dept: Dept, class: EncounterClass) -> Dept {
        let Some(s) = self.people[p].employee else {
            return dept;
        };
        let own = self.staff[s].dept;
        let fits = match class {
            EncounterClass::Inpatient => INPATIENT.iter().any(|d| d.0 == own),
            EncounterClass::Ambulatory | EncounterClass::Virtual => {
                CLINICAL.iter().any(|d| d.0 == own) && own != Emergency
            }
            _ => false,
        };
        if fits && self.eligible(p, own, 0) && self.chance(0.2) {
            own
        } else {
            dept
        }
    }

    fn ambulatory_dept(&mut self) -> Dept {
        let w: Vec<(Dept, u32)> = CLINICAL
            .iter()
            .copied()
            .filter(|d| d.0 != Emergency)
            .collect();
        weighted(&mut self.rng, &w).unwrap_or(InternalMedicine)
    }

    fn stay_end(&mut self, start: i64) -> i64 {
        let mut los = 1;
        while los < 10 && self.chance(0.72) {
            los += 1;
        }
        // Geometric with p = 0.28, capped: a mean of about 3.5 nights.
        (day_of(start) + los) * DAY + self.rng.gen_range(10 * HOUR..16 * HOUR)
    }

    fn push_enc(&mut self, enc: Enc) -> usize {
        self.encs.push(enc);
        self.encs.len() - 1
    }

    fn inpatient(
        &mut self,
        patient: usize,
        dept: Dept,
        start: i64,
        from_ed: bool,
        nurse: Option<usize>,
    ) {
        let end = self.stay_end(start);
        let attending = self.on_shift(Role::Physician, dept, Shift::Day, start);
        let died = self.chance(0.03) && self.people[patient].employee.is_none();
        if died {
            self.people[patient].deceased = Some(end);
        }
        let e = self.push_enc(Enc {
            patient,
            dept,
            class: EncounterClass::Inpatient,
            start,
            end,
            attending,
            followup: false,
            from_ed,
            died,
        });
        for shift in SHIFTS {
            let n = match nurse {
                Some(n) if self.staff[n].shift == shift => Some(n),
                _ => self.on_shift(Role::Nurse, dept, shift, start),
            };
            if let Some(user) = n {
                self.care.push(Care {
                    patient,
                    user,
                    enc: e,
                    role: "nurse",
                });
            }
        }
        if self.chance(0.7)
            && let Some(user) = self.on_shift(Role::Resident, dept, Shift::Day, start)
            && self.staff[user].shift == Shift::Day
        {
            self.care.push(Care {
                patient,
                user,
                enc: e,
                role: "resident",
            });
        }
    }

    fn encounters(&mut self) {
        let s = self.scale;
        let mut ambulatory: Vec<usize> = Vec::new();
        for day in -WARMUP_DAYS..i64::from(self.cfg.days) {
            let base = day * DAY;
            // Emergency visits, some admitted.
            for _ in 0..poisson(&mut self.rng, 110.0 * s) {
                let hour: Vec<(i64, u32)> = ED_HOURS
                    .iter()
                    .enumerate()
                    .map(|(h, &w)| (h as i64, w))
                    .collect();
                let h = weighted(&mut self.rng, &hour).unwrap_or(12);
                let start = base + h * HOUR + self.rng.gen_range(0..HOUR);
                let end = start + self.rng.gen_range(2 * HOUR..=8 * HOUR);
                let Some(patient) = self.pick_patient(Emergency, start) else {
                    continue;
                };
                let shift = shift_at(start);
                let attending = self.on_shift(Role::Physician, Emergency, shift, start);
                let e = self.push_enc(Enc {
                    patient,
                    dept: Emergency,
                    class: EncounterClass::Emergency,
                    start,
                    end,
                    attending,
                    followup: false,
                    from_ed: false,
                    died: false,
                });
                if let Some(user) = self.on_shift(Role::Nurse, Emergency, shift, start) {
                    self.care.push(Care {
                        patient,
                        user,
                        enc: e,
                        role: "nurse",
                    });
                }
                if self.chance(0.2) {
                    let dept = weighted(&mut self.rng, &ADMIT_FROM_ED).unwrap_or(InternalMedicine);
                    self.inpatient(patient, dept, end, true, None);
                }
            }
            // Direct admissions.
            for _ in 0..poisson(&mut self.rng, 25.0 * s) {
                let dept = weighted(&mut self.rng, &INPATIENT).unwrap_or(InternalMedicine);
                let start = base + self.rng.gen_range(8 * HOUR..18 * HOUR);
                let Some(patient) = self.pick_patient(dept, start) else {
                    continue;
                };
                let dept = self.own_department(patient, dept, EncounterClass::Inpatient);
                self.inpatient(patient, dept, start, false, None);
            }
            // Ambulatory visits.
            for _ in 0..poisson(&mut self.rng, 330.0 * s) {
                let dept = self.ambulatory_dept();
                let start = base + self.rng.gen_range(8 * HOUR..17 * HOUR);
                let Some(patient) = self.pick_patient(dept, start) else {
                    continue;
                };
                let dept = self.own_department(patient, dept, EncounterClass::Ambulatory);
                let e = self.ambulatory(patient, dept, start, None);
                ambulatory.push(e);
            }
            // Virtual encounters, 30% of them follow-ups.
            for _ in 0..poisson(&mut self.rng, 60.0 * s) {
                let start = base + self.rng.gen_range(8 * HOUR..18 * HOUR);
                let end = start + self.rng.gen_range(20 * MIN..=40 * MIN);
                let earlier = if self.chance(0.3) {
                    pick(&mut self.rng, &ambulatory).filter(|&a| self.encs[a].end < start)
                } else {
                    None
                };
                let (patient, dept, attending, followup) = match earlier {
                    Some(a) => {
                        let e = &self.encs[a];
                        (e.patient, e.dept, e.attending, true)
                    }
                    None => {
                        let dept = self.ambulatory_dept();
                        let Some(patient) = self.pick_patient(dept, start) else {
                            continue;
                        };
                        let dept = self.own_department(patient, dept, EncounterClass::Virtual);
                        let attending = self.on_shift(Role::Physician, dept, Shift::Day, start);
                        (patient, dept, attending, false)
                    }
                };
                if !self.eligible(patient, dept, start) {
                    continue;
                }
                self.push_enc(Enc {
                    patient,
                    dept,
                    class: EncounterClass::Virtual,
                    start,
                    end,
                    attending,
                    followup,
                    from_ed: false,
                    died: false,
                });
            }
        }
        // Staff who treat a member of their own household.
        for s in 0..self.staff.len() {
            let st = &self.staff[s];
            if !matches!(st.role, Role::Physician | Role::Nurse) || st.dept == FloatPool {
                continue;
            }
            let family: Vec<usize> = self.household_members[st.household]
                .iter()
                .copied()
                .filter(|&p| Some(p) != st.patient)
                .collect();
            let (role, dept, hire, term) = (st.role, st.dept, st.hire, st.term);
            if family.is_empty() || !self.chance(0.03) {
                continue;
            }
            let Some(p) = pick(&mut self.rng, &family) else {
                continue;
            };
            let day = self.rng.gen_range(0..i64::from(self.cfg.days) - 2);
            let start = day * DAY + self.rng.gen_range(9 * HOUR..13 * HOUR);
            if start < hire
                || term.is_some_and(|t| start + 3 * DAY >= t)
                || !self.eligible(p, dept, start)
            {
                continue;
            }
            match role {
                Role::Physician if dept != Emergency => {
                    self.ambulatory(p, dept, start, Some(s));
                }
                Role::Nurse if INPATIENT.iter().any(|d| d.0 == dept) => {
                    self.inpatient(p, dept, start, false, Some(s));
                }
                _ => {}
            }
        }
    }

    fn ambulatory(
        &mut self,
        patient: usize,
        dept: Dept,
        start: i64,
        attending: Option<usize>,
    ) -> usize {
        let end = start + self.rng.gen_range(20 * MIN..=60 * MIN);
        let attending =
            attending.or_else(|| self.on_shift(Role::Physician, dept, Shift::Day, start));
        let e = self.push_enc(Enc {
            patient,
            dept,
            class: EncounterClass::Ambulatory,
            start,
            end,
            attending,
            followup: false,
            from_ed: false,
            died: false,
        });
        if self.chance(0.5)
            && let Some(user) = self.on_shift(Role::Nurse, dept, Shift::Day, start)
        {
            self.care.push(Care {
                patient,
                user,
                enc: e,
                role: "nurse",
            });
        }
        e
    }

    fn relate(&mut self, user: usize, patient: usize, flag: u8) {
        *self.pairs.entry(pair_key(user, patient)).or_insert(0) |= flag;
    }

    fn new_group(&mut self) -> u32 {
        self.groups += 1;
        self.groups
    }

    /// Adds one legitimate row if it falls inside the period and the user's
    /// employment; returns whether it did.
    fn emit(
        &mut self,
        user: usize,
        patient: usize,
        t: i64,
        action: Action,
        count: u32,
        flag: u8,
    ) -> bool {
        let group = self.new_group();
        self.emit_in(user, patient, t, action, count, flag, group)
    }

    #[expect(clippy::too_many_arguments, reason = "one row's fields")]
    fn emit_in(
        &mut self,
        user: usize,
        patient: usize,
        t: i64,
        action: Action,
        count: u32,
        flag: u8,
        group: u32,
    ) -> bool {
        if t < 0 || t >= self.period_end || !self.staff[user].active(t) {
            return false;
        }
        let types = rtypes(self.staff[user].role);
        let rtype = types[self.rng.gen_range(0..types.len())];
        self.rows.push(Row {
            t,
            user,
            patient,
            action,
            rtype,
            count,
            group,
        });
        self.relate(user, patient, flag);
        true
    }

    fn care_action(&mut self) -> Action {
        weighted(
            &mut self.rng,
            &[(Action::View, 70), (Action::Modify, 25), (Action::Print, 5)],
        )
        .unwrap_or(Action::View)
    }

    /// A time in the user's shift on a local day; day-shift users chart late
    /// (up to 3 h, never past 22:00) in 5% of rows.
    fn in_shift(&mut self, user: usize, day: i64) -> i64 {
        let (a, b) = self.staff[user].window();
        let mut t = day * DAY + self.rng.gen_range(a..b);
        if self.staff[user].shift == Shift::Day && self.chance(0.05) {
            t = day * DAY + self.between(b, (b + 3 * HOUR).min(22 * HOUR - 1));
        }
        t
    }

    /// A time in `[a, b]`, kept out of 22:00–06:00 for day-shift users.
    fn during(&mut self, user: usize, a: i64, b: i64) -> i64 {
        let t = self.between(a, b);
        if self.staff[user].shift == Shift::Day && !(6..22).contains(&hour_of(t)) {
            let (ws, we) = self.staff[user].window();
            let d = day_of(t) + i64::from(hour_of(t) >= 22);
            return d * DAY + self.rng.gen_range(ws..we);
        }
        t
    }

    fn rows_for(&mut self, user: usize, patient: usize, n: u32, a: i64, b: i64, flag: u8) {
        for _ in 0..n {
            let t = self.during(user, a, b);
            let act = self.care_action();
            self.emit(user, patient, t, act, 1, flag);
        }
    }

    fn encounter_accesses(&mut self) {
        let care_by_enc = {
            let mut m: HashMap<usize, Vec<(usize, &'static str)>> = HashMap::new();
            for c in &self.care {
                m.entry(c.enc).or_default().push((c.user, c.role));
            }
            m
        };
        for c in 0..self.care.len() {
            let (u, p) = (self.care[c].user, self.care[c].patient);
            self.relate(u, p, REL_OTHER);
        }
        for e in 0..self.encs.len() {
            let Enc {
                patient: p,
                dept,
                class,
                start,
                end,
                attending,
                followup,
                from_ed,
                died,
            } = self.encs[e];
            let flag = if class == EncounterClass::Virtual {
                REL_VIRTUAL
            } else {
                REL_OTHER
            };
            if let Some(a) = attending {
                self.relate(a, p, flag);
            }
            let team = care_by_enc.get(&e).cloned().unwrap_or_default();
            let (d0, d1) = (day_of(start), day_of(end));
            match class {
                EncounterClass::Inpatient => {
                    for d in d0..=d1 {
                        if let Some(a) = attending {
                            let n = self.rng.gen_range(1..=3) + if d == d0 { 2 } else { 0 };
                            for _ in 0..n {
                                let t = self.in_shift(a, d);
                                if (start..=end).contains(&t) {
                                    let act = self.care_action();
                                    self.emit(a, p, t, act, 1, REL_OTHER);
                                }
                            }
                            if self.chance(0.02) {
                                let t = d * DAY + self.rng.gen_range(0..5 * HOUR);
                                if (start..=end).contains(&t) {
                                    self.emit(a, p, t, Action::View, 1, REL_OTHER);
                                }
                            }
                            // Orders, 1–3 per day.
                            for _ in 0..self.rng.gen_range(1..=3) {
                                let t = self.in_shift(a, d);
                                if (start..=end).contains(&t) {
                                    self.order(e, p, Some(a), t, None);
                                }
                            }
                        }
                        for &(u, role) in &team {
                            let n = if role == "nurse" {
                                self.rng.gen_range(2..=4)
                            } else {
                                self.rng.gen_range(1..=2)
                            };
                            // Night shifts that end on day d began the day before.
                            for dd in [d - 1, d] {
                                for _ in 0..n {
                                    let t = self.in_shift(u, dd);
                                    if (start..=end).contains(&t) && day_of(t) == d {
                                        let act = self.care_action();
                                        self.emit(u, p, t, act, 1, REL_OTHER);
                                    }
                                }
                            }
                        }
                    }
                    if let Some(a) = attending {
                        let t = self.during(a, end - 2 * HOUR, end);
                        let count = self.rng.gen_range(1..=5);
                        self.emit(a, p, t, Action::Print, count, REL_OTHER);
                    }
                }
                EncounterClass::Emergency => {
                    if let Some(a) = attending {
                        let n = self.rng.gen_range(2..=5);
                        self.rows_for(a, p, n, start, end, REL_OTHER);
                    }
                    for &(u, _) in &team {
                        let n = self.rng.gen_range(2..=4);
                        self.rows_for(u, p, n, start, end, REL_OTHER);
                    }
                    if let Some(a) = attending {
                        for _ in 0..self.rng.gen_range(1..=3) {
                            let t = self.between(start, end);
                            self.order(e, p, Some(a), t, None);
                        }
                    }
                }
                EncounterClass::Ambulatory => {
                    if let Some(a) = attending {
                        let n = self.rng.gen_range(2..=4);
                        self.rows_for(a, p, n, start - 10 * MIN, end + 2 * HOUR, REL_OTHER);
                        if self.chance(0.4) {
                            let t = self.between(start, end);
                            self.order(e, p, Some(a), t, None);
                        }
                    }
                    for &(u, _) in &team {
                        let n = self.rng.gen_range(1..=2);
                        self.rows_for(u, p, n, start - 10 * MIN, end, REL_OTHER);
                    }
                }
                EncounterClass::Virtual | EncounterClass::Other => {
                    if let Some(a) = attending {
                        let n = self.rng.gen_range(1..=3);
                        self.rows_for(a, p, n, start - 15 * MIN, end + HOUR, REL_VIRTUAL);
                        if self.chance(0.2) {
                            let t = self.between(start, end);
                            self.order(e, p, Some(a), t, Some(Pharmacy));
                        }
                    }
                }
            }
            self.workflow(e, p, class, start, end, from_ed, died, followup, attending);
            self.consults(p, dept, class, start, end);
        }
    }

    fn order(&mut self, enc: usize, patient: usize, by: Option<usize>, at: i64, svc: Option<Dept>) {
        let svc = svc.unwrap_or_else(|| {
            weighted(
                &mut self.rng,
                &[(Laboratory, 50), (Radiology, 25), (Pharmacy, 25)],
            )
            .unwrap_or(Laboratory)
        });
        self.orders.push(Ord {
            enc,
            patient,
            svc,
            by,
            at,
        });
        let (role, delay) = if svc == Pharmacy {
            (Role::Pharmacist, 2 * HOUR)
        } else {
            (Role::Technologist, 4 * HOUR)
        };
        let shift = shift_at(at);
        if let Some(u) = self.on_shift(role, svc, shift, at) {
            for _ in 0..self.rng.gen_range(1..=2) {
                let t = at + self.rng.gen_range(2 * MIN..delay);
                self.emit(u, patient, t, Action::View, 1, REL_OTHER);
            }
        }
    }

    #[expect(clippy::too_many_arguments, reason = "the encounter's fields")]
    fn workflow(
        &mut self,
        e: usize,
        p: usize,
        class: EncounterClass,
        start: i64,
        end: i64,
        from_ed: bool,
        died: bool,
        followup: bool,
        attending: Option<usize>,
    ) {
        let _ = e;
        let end_day = day_of(end);
        // Registration.
        let registers = match class {
            EncounterClass::Inpatient => !from_ed,
            EncounterClass::Virtual => self.chance(0.5),
            _ => true,
        };
        if registers {
            let (a, b, shift) = if class == EncounterClass::Virtual {
                (start - 24 * HOUR, start, Shift::Day)
            } else {
                (start - 60 * MIN, start + 30 * MIN, shift_at(start))
            };
            if let Some(r) = self.on_shift(Role::Registrar, Registration, shift, start) {
                let first = self.during(r, a, b);
                if self.chance(0.25) {
                    let group = self.new_group();
                    let t = first - MIN;
                    self.emit_in(r, p, t, Action::Search, 1, REL_OTHER, group);
                    let fam = self.people[p].family;
                    let k = self.rng.gen_range(1..=5);
                    let others: Vec<usize> = self.by_family[fam]
                        .choose_multiple(&mut self.rng, k + 1)
                        .copied()
                        .filter(|&o| o != p)
                        .take(k)
                        .collect();
                    for o in others {
                        self.emit_in(r, o, t, Action::Search, 1, REL_OTHER, group);
                    }
                }
                let n = self.rng.gen_range(1..=3);
                let act = self.care_action();
                self.emit(r, p, first, act, 1, REL_OTHER);
                for _ in 1..n {
                    let t = self.during(r, a, b);
                    self.emit(r, p, t, Action::View, 1, REL_OTHER);
                }
            }
        }
        // Coding.
        let coded = match class {
            EncounterClass::Inpatient | EncounterClass::Emergency => true,
            EncounterClass::Ambulatory => self.chance(0.5),
            _ => self.chance(0.3),
        };
        if coded {
            let d = end_day + self.rng.gen_range(1..=5);
            if let Some(c) = self.on_shift(Role::Coder, Him, Shift::Day, d * DAY) {
                for _ in 0..self.rng.gen_range(2..=5) {
                    let t = self.in_shift(c, d);
                    let act = if self.chance(0.3) {
                        Action::Modify
                    } else {
                        Action::View
                    };
                    self.emit(c, p, t, act, 1, REL_OTHER);
                }
            }
        }
        // Billing.
        if class != EncounterClass::Virtual {
            let d = end_day + self.rng.gen_range(2..=10);
            if let Some(c) = self.on_shift(Role::BillingClerk, Billing, Shift::Day, d * DAY) {
                let mut any = false;
                for _ in 0..self.rng.gen_range(1..=2) {
                    let t = self.in_shift(c, d);
                    any |= self.emit(c, p, t, Action::View, 1, REL_OTHER);
                }
                if any {
                    self.billed.entry((c, d)).or_default().push(p);
                }
            }
        }
        // HIM reviews, some with a release-of-information print.
        if matches!(class, EncounterClass::Inpatient | EncounterClass::Emergency)
            && self.chance(0.1)
        {
            let d = end_day + self.rng.gen_range(1..=10);
            if let Some(r) = self.on_shift(Role::HimReviewer, Him, Shift::Day, d * DAY) {
                for _ in 0..self.rng.gen_range(1..=3) {
                    let t = self.in_shift(r, d);
                    self.emit(r, p, t, Action::View, 1, REL_OTHER);
                }
                if self.chance(0.2) {
                    let t = self.in_shift(r, d);
                    let count = self.rng.gen_range(20..=300);
                    self.emit(r, p, t, Action::Print, count, REL_OTHER);
                }
            }
        }
        // Quality reviews: every death, 5% of other stays.
        if class == EncounterClass::Inpatient && (died || self.chance(0.05)) {
            let d = end_day + self.rng.gen_range(2..=14);
            if let Some(r) = self.on_shift(Role::QualityReviewer, Quality, Shift::Day, d * DAY) {
                let mut any = false;
                for _ in 0..self.rng.gen_range(1..=4) {
                    let t = self.in_shift(r, d);
                    any |= self.emit(r, p, t, Action::View, 1, REL_OTHER);
                }
                if any {
                    self.reviewed.entry(r).or_default().push((d, p));
                }
            }
        }
        // Continuity and the virtual grace period.
        let Some(a) = attending else { return };
        let continues = match class {
            EncounterClass::Virtual => followup,
            _ => true,
        };
        if continues && self.chance(0.15) {
            let d = end_day + self.rng.gen_range(1..=21);
            for _ in 0..self.rng.gen_range(1..=2) {
                let t = self.in_shift(a, d);
                let flag = if class == EncounterClass::Virtual {
                    REL_VIRTUAL
                } else {
                    REL_OTHER
                };
                self.emit(a, p, t, Action::View, 1, flag);
            }
        }
        if class == EncounterClass::Virtual && self.chance(0.2) {
            let mut t = end + self.rng.gen_range(2 * HOUR..=20 * HOUR);
            if !(6..22).contains(&hour_of(t)) {
                let d = day_of(t) + i64::from(hour_of(t) >= 22);
                t = d * DAY + self.rng.gen_range(7 * HOUR..9 * HOUR);
            }
            self.emit(a, p, t, Action::View, 1, REL_VIRTUAL);
        }
    }

    fn consults(&mut self, p: usize, dept: Dept, class: EncounterClass, start: i64, end: i64) {
        let mut consulting: Vec<Dept> = CONSULTS
            .iter()
            .filter(|c| c.1 == dept && c.2 == class)
            .map(|c| (c.0, c.3))
            .collect::<Vec<_>>()
            .into_iter()
            .filter(|&(_, prob)| self.chance(prob))
            .map(|(d, _)| d)
            .collect();
        if matches!(class, EncounterClass::Inpatient | EncounterClass::Emergency)
            && self.chance(0.005)
        {
            let others: Vec<Dept> = CLINICAL
                .iter()
                .map(|c| c.0)
                .filter(|&d| d != dept && d != Emergency)
                .collect();
            if let Some(d) = pick(&mut self.rng, &others) {
                consulting.push(d);
            }
        }
        for cd in consulting {
            let (a, b) = if class == EncounterClass::Inpatient {
                let d = self.between(day_of(start), day_of(end));
                (start.max(d * DAY + 7 * HOUR), end.min(d * DAY + 19 * HOUR))
            } else {
                let d = day_of(start);
                (start.max(d * DAY + 7 * HOUR), end.min(d * DAY + 19 * HOUR))
            };
            if a >= b {
                continue;
            }
            let Some(u) = self.on_shift(Role::Physician, cd, Shift::Day, a) else {
                continue;
            };
            if self.staff[u].shift != Shift::Day {
                continue;
            }
            let t0 = self.between(a, b);
            for _ in 0..self.rng.gen_range(1..=3) {
                let t = self.between(t0, (t0 + HOUR).min(b.max(t0)));
                let act = if self.chance(0.3) {
                    Action::Modify
                } else {
                    Action::View
                };
                self.emit(u, p, t, act, 1, REL_OTHER);
            }
        }
    }

    fn float_and_night(&mut self) {
        let days = i64::from(self.cfg.days);
        let mut inpatients: Vec<Vec<usize>> = vec![Vec::new(); self.cfg.days as usize + 1];
        let mut emergency: Vec<Vec<usize>> = vec![Vec::new(); self.cfg.days as usize + 1];
        for (e, enc) in self.encs.iter().enumerate() {
            let list = match enc.class {
                EncounterClass::Inpatient => &mut inpatients,
                EncounterClass::Emergency => &mut emergency,
                _ => continue,
            };
            for d in day_of(enc.start).max(0)..=day_of(enc.end).min(days) {
                list[d as usize].push(e);
            }
        }
        for u in 0..self.staff.len() {
            let (role, dept, shift) = (self.staff[u].role, self.staff[u].dept, self.staff[u].shift);
            let float = role == Role::Nurse && dept == FloatPool;
            let night = role == Role::Resident && shift == Shift::Night;
            if !float && !night {
                continue;
            }
            let (ws, we) = self.staff[u].window();
            for d in 0..days {
                let (a, b) = (d * DAY + ws, d * DAY + we);
                if !self.staff[u].active(a) {
                    continue;
                }
                let (pool, ward, k) = if float {
                    if self.chance(0.05) {
                        (&emergency, Emergency, self.rng.gen_range(3..=8))
                    } else {
                        let Some(&any) = inpatients[d as usize].choose(&mut self.rng) else {
                            continue;
                        };
                        (&inpatients, self.encs[any].dept, self.rng.gen_range(3..=8))
                    }
                } else if dept == Emergency {
                    (&emergency, Emergency, self.rng.gen_range(3..=8))
                } else {
                    (&inpatients, dept, self.rng.gen_range(3..=8))
                };
                let mut candidates: Vec<usize> = Vec::new();
                for &ix in [d as usize, d as usize + 1]
                    .iter()
                    .filter_map(|&i| pool.get(i))
                    .flatten()
                {
                    let enc = &self.encs[ix];
                    if enc.dept == ward && enc.start < b && enc.end > a && !candidates.contains(&ix)
                    {
                        candidates.push(ix);
                    }
                }
                let chosen: Vec<usize> = candidates
                    .choose_multiple(&mut self.rng, k)
                    .copied()
                    .collect();
                for ix in chosen {
                    let (p, s, e) = (
                        self.encs[ix].patient,
                        self.encs[ix].start,
                        self.encs[ix].end,
                    );
                    let n = if float {
                        self.rng.gen_range(1..=3)
                    } else {
                        self.rng.gen_range(1..=2)
                    };
                    for _ in 0..n {
                        let t = self.between(a.max(s), b.min(e));
                        let act = self.care_action();
                        self.emit(u, p, t, act, 1, REL_OTHER);
                    }
                }
            }
        }
    }

    fn exports(&mut self) {
        let mut batches: Vec<((usize, i64), Vec<usize>)> = self.billed.drain().collect();
        batches.sort_unstable_by_key(|b| b.0);
        for ((clerk, d), mut pats) in batches {
            pats.sort_unstable();
            pats.dedup();
            if pats.len() >= 5 {
                self.export(clerk, d, &pats);
            }
        }
        let mut reviewers: Vec<(usize, Vec<(i64, usize)>)> = self.reviewed.drain().collect();
        reviewers.sort_unstable_by_key(|r| r.0);
        for (r, list) in reviewers {
            for d in (0..i64::from(self.cfg.days)).filter(|d| d % 7 == 6) {
                let mut pats: Vec<usize> = list
                    .iter()
                    .filter(|(rd, _)| (d - 6..=d).contains(rd))
                    .map(|&(_, p)| p)
                    .collect();
                pats.sort_unstable();
                pats.dedup();
                if pats.len() >= 3 {
                    self.export(r, d, &pats);
                }
            }
        }
    }

    fn export(&mut self, user: usize, day: i64, patients: &[usize]) {
        let t = day * DAY + self.rng.gen_range(15 * HOUR..(16 * HOUR + 45 * MIN));
        let group = self.new_group();
        let n = u32::try_from(patients.len()).unwrap_or(u32::MAX);
        for &p in patients {
            self.emit_in(user, p, t, Action::Export, n, REL_OTHER, group);
        }
    }

    // ----- incidents -----

    /// No legitimate relationship and no personal link that another kind of
    /// incident is about.
    fn unrelated(&self, u: usize, p: usize, at: i64) -> bool {
        let st = &self.staff[u];
        let person = &self.people[p];
        let home = &self.households[st.household];
        let there = &self.households[person.household];
        !self.pairs.contains_key(&pair_key(u, p))
            && person.employee.is_none()
            && !person.vip
            && person.deceased.is_none_or(|d| d > at + 30 * DAY)
            && Some(person.household) != Some(st.household)
            && Some(person.household) != st.relatives
            && there.street != home.street
            && !(person.family == st.family
                && self.streets_zip[there.street] == self.streets_zip[home.street])
    }

    fn random_unrelated(&mut self, u: usize, at: i64, taken: &[usize]) -> Option<usize> {
        for _ in 0..200 {
            let p = self.rng.gen_range(0..self.people.len());
            if self.unrelated(u, p, at) && !taken.contains(&p) {
                return Some(p);
            }
        }
        None
    }

    /// An active member of staff (for the whole incident) matching `want`.
    fn snooper(&mut self, from: i64, to: i64, want: impl Fn(&Staff) -> bool) -> Option<usize> {
        for _ in 0..500 {
            let u = self.rng.gen_range(0..self.staff.len());
            let st = &self.staff[u];
            if st.active(from) && st.active(to) && want(st) {
                return Some(u);
            }
        }
        None
    }

    fn incident_days(&mut self, d0: i64) -> Vec<i64> {
        let mut days = vec![d0];
        if self.chance(0.25) {
            for k in 1..=self.rng.gen_range(1..=2) {
                if d0 + k < i64::from(self.cfg.days) {
                    days.push(d0 + k);
                }
            }
        }
        days
    }

    fn incident_size(&mut self) -> usize {
        match self.rng.gen_range(0..100) {
            0..30 => 1,
            30..55 => 2,
            55..75 => 3,
            _ => self.rng.gen_range(4..=6),
        }
    }

    fn incidents(&mut self) {
        let n = (self.cfg.target_accesses as f64 * self.cfg.incidents_per_10k / 10_000.0).round()
            as usize;
        let mut kinds = vec![
            Kind::SelfAccess,
            Kind::Family,
            Kind::Coworker,
            Kind::Neighbour,
            Kind::Vip,
            Kind::Deceased,
            Kind::Volume,
            Kind::Terminated,
            Kind::AfterHours,
            Kind::OutsideConsult,
            Kind::Unexplained,
        ];
        kinds.shuffle(&mut self.rng);
        for i in 0..n {
            let kind = kinds[i % kinds.len()];
            for _ in 0..50 {
                if self.incident(kind) {
                    break;
                }
            }
        }
    }

    /// Tries to draw one incident of `kind`; false when this attempt found
    /// no suitable snooper or patient.
    fn incident(&mut self, kind: Kind) -> bool {
        let days = i64::from(self.cfg.days);
        let mut d0 = self.rng.gen_range(1..days);
        let mut span = self.incident_days(d0);
        let mut size = self.incident_size();
        let (first, last) = (d0 * DAY, (span.last().copied().unwrap_or(d0) + 1) * DAY);
        let (user, patients): (usize, Vec<usize>) = match kind {
            Kind::SelfAccess => {
                let Some(u) = self.snooper(first, last, |s| s.patient.is_some()) else {
                    return false;
                };
                let Some(p) = self.staff[u].patient else {
                    return false;
                };
                if self.pairs.contains_key(&pair_key(u, p)) || self.people[p].deceased.is_some() {
                    return false;
                }
                (u, vec![p])
            }
            Kind::Family => {
                let Some(u) = self.snooper(first, last, |_| true) else {
                    return false;
                };
                let st = &self.staff[u];
                let own = st.patient;
                let house: Vec<usize> = self.household_members[st.household]
                    .iter()
                    .copied()
                    .filter(|&p| Some(p) != own)
                    .collect();
                let rel: Vec<usize> = st
                    .relatives
                    .map(|r| self.household_members[r].clone())
                    .unwrap_or_default();
                let ok = |g: &Gen<'_>, p: usize| {
                    !g.pairs.contains_key(&pair_key(u, p))
                        && g.people[p].deceased.is_none()
                        && !g.people[p].vip
                        && g.people[p].employee.is_none()
                };
                let house: Vec<usize> = house.into_iter().filter(|&p| ok(self, p)).collect();
                // Relatives elsewhere are family only through the shared name.
                let fam = self.staff[u].family;
                let rel: Vec<usize> = rel
                    .into_iter()
                    .filter(|&p| ok(self, p) && self.people[p].family == fam)
                    .collect();
                let from = if (self.chance(0.7) || rel.is_empty()) && !house.is_empty() {
                    house
                } else {
                    rel
                };
                if from.is_empty() {
                    return false;
                }
                let k = if self.chance(0.2) { 2 } else { 1 };
                (u, from.choose_multiple(&mut self.rng, k).copied().collect())
            }
            Kind::Coworker => {
                let Some(u) = self.snooper(first, last, |_| true) else {
                    return false;
                };
                let same = self.chance(0.6);
                let dept = self.staff[u].dept;
                let cands: Vec<usize> = self
                    .employees
                    .iter()
                    .copied()
                    .filter(|&p| {
                        let person = &self.people[p];
                        let colleague = person.employee.map(|s| self.staff[s].dept);
                        person.employee != Some(u)
                            && (!same || colleague == Some(dept))
                            && !self.pairs.contains_key(&pair_key(u, p))
                            && person.household != self.staff[u].household
                            && Some(person.household) != self.staff[u].relatives
                            && self.households[person.household].street
                                != self.households[self.staff[u].household].street
                            && person.family != self.staff[u].family
                            && !person.vip
                    })
                    .collect();
                let Some(p) = pick(&mut self.rng, &cands) else {
                    return false;
                };
                (u, vec![p])
            }
            Kind::Neighbour => {
                let Some(u) = self.snooper(first, last, |_| true) else {
                    return false;
                };
                let st = &self.staff[u];
                let home = &self.households[st.household];
                let cands: Vec<usize> = self.by_street[home.street]
                    .iter()
                    .copied()
                    .filter(|&p| {
                        let person = &self.people[p];
                        let h = &self.households[person.household];
                        h.house != home.house
                            && Some(person.household) != st.relatives
                            && person.family != st.family
                            && person.employee.is_none()
                            && !person.vip
                            && person.deceased.is_none()
                            && !self.pairs.contains_key(&pair_key(u, p))
                    })
                    .collect();
                let Some(p) = pick(&mut self.rng, &cands) else {
                    return false;
                };
                (u, vec![p])
            }
            Kind::Vip => {
                let Some(u) = self.snooper(first, last, |_| true) else {
                    return false;
                };
                let cands: Vec<usize> = self
                    .vips
                    .iter()
                    .copied()
                    .filter(|&p| {
                        let mut g_ok =
                            self.people[p].deceased.is_none() && self.people[p].employee.is_none();
                        g_ok &= !self.pairs.contains_key(&pair_key(u, p));
                        let home = &self.households[self.staff[u].household];
                        let there = &self.households[self.people[p].household];
                        g_ok && there.street != home.street
                            && self.people[p].family != self.staff[u].family
                    })
                    .collect();
                let Some(p) = pick(&mut self.rng, &cands) else {
                    return false;
                };
                (u, vec![p])
            }
            Kind::Deceased => {
                let Some(u) = self.snooper(first, last, |_| true) else {
                    return false;
                };
                let cands: Vec<usize> = (0..self.people.len())
                    .filter(|&p| {
                        let person = &self.people[p];
                        person.deceased.is_some_and(|d| d < first)
                            && !person.vip
                            && person.employee.is_none()
                            && !self.pairs.contains_key(&pair_key(u, p))
                            && self.households[person.household].street
                                != self.households[self.staff[u].household].street
                            && person.family != self.staff[u].family
                    })
                    .collect();
                let Some(p) = pick(&mut self.rng, &cands) else {
                    return false;
                };
                (u, vec![p])
            }
            Kind::Volume => {
                span = vec![d0];
                let Some(u) = self.snooper(first, first + DAY, |s| {
                    matches!(
                        s.role,
                        Role::Physician | Role::Nurse | Role::Registrar | Role::BillingClerk
                    )
                }) else {
                    return false;
                };
                let k = self.rng.gen_range(30..=150);
                let mut ps = Vec::with_capacity(k);
                for _ in 0..k {
                    if let Some(p) = self.random_unrelated(u, first, &ps) {
                        ps.push(p);
                    }
                }
                size = ps.len();
                (u, ps)
            }
            Kind::Terminated => {
                let ts: Vec<usize> = (0..self.staff.len())
                    .filter(|&s| {
                        self.staff[s]
                            .term
                            .is_some_and(|t| t < self.period_end - DAY)
                    })
                    .collect();
                let Some(u) = pick(&mut self.rng, &ts) else {
                    return false;
                };
                let Some(term) = self.staff[u].term else {
                    return false;
                };
                let td = day_of(term);
                d0 = td + self.rng.gen_range(0..=9.min(days - 1 - td).max(0));
                span = self.incident_days(d0);
                let treated: Vec<usize> = self
                    .care
                    .iter()
                    .filter(|c| c.user == u)
                    .map(|c| c.patient)
                    .chain(
                        self.encs
                            .iter()
                            .filter(|e| e.attending == Some(u))
                            .map(|e| e.patient),
                    )
                    .filter(|&p| self.people[p].deceased.is_none() && !self.people[p].vip)
                    .collect();
                let p = match pick(&mut self.rng, &treated) {
                    Some(p) if self.chance(0.5) => p,
                    _ => match self.random_unrelated(u, d0 * DAY, &[]) {
                        Some(p) => p,
                        None => return false,
                    },
                };
                (u, vec![p])
            }
            Kind::AfterHours => {
                let Some(u) = self.snooper(first, last, |s| s.shift == Shift::Day) else {
                    return false;
                };
                let Some(p) = self.random_unrelated(u, first, &[]) else {
                    return false;
                };
                (u, vec![p])
            }
            Kind::OutsideConsult => {
                let cands: Vec<usize> = (0..self.encs.len())
                    .filter(|&e| {
                        let enc = &self.encs[e];
                        enc.class == EncounterClass::Virtual
                            && !enc.followup
                            && enc.end >= 0
                            && day_of(enc.end) + 2 < days
                            && enc.attending.is_some_and(|a| {
                                self.pairs.get(&pair_key(a, enc.patient)) == Some(&REL_VIRTUAL)
                                    && self.staff[a].shift == Shift::Day
                            })
                            && self.people[enc.patient].deceased.is_none()
                            && self.people[enc.patient].employee.is_none()
                            && !self.people[enc.patient].vip
                    })
                    .collect();
                let Some(e) = pick(&mut self.rng, &cands) else {
                    return false;
                };
                let Some(u) = self.encs[e].attending else {
                    return false;
                };
                let ed = day_of(self.encs[e].end);
                d0 = ed + self.rng.gen_range(2..=10.min(days - 1 - ed).max(2));
                if d0 >= days {
                    return false;
                }
                span = self.incident_days(d0);
                let p = self.encs[e].patient;
                if !self.staff[u].active(d0 * DAY) {
                    return false;
                }
                let (home, there) = (
                    &self.households[self.staff[u].household],
                    &self.households[self.people[p].household],
                );
                if home.street == there.street || self.people[p].family == self.staff[u].family {
                    return false;
                }
                (u, vec![p])
            }
            Kind::Unexplained | Kind::BreakGlass => {
                let Some(u) = self.snooper(first, last, |s| {
                    matches!(
                        s.role,
                        Role::Physician
                            | Role::Nurse
                            | Role::Resident
                            | Role::Technologist
                            | Role::Registrar
                    )
                }) else {
                    return false;
                };
                let k = if self.chance(0.15) {
                    self.rng.gen_range(2..=3)
                } else {
                    1
                };
                let mut ps = Vec::new();
                for _ in 0..k {
                    if let Some(p) = self.random_unrelated(u, first, &ps) {
                        ps.push(p);
                    }
                }
                if ps.is_empty() {
                    return false;
                }
                (u, ps)
            }
        };
        if patients.is_empty() {
            return false;
        }
        let size = size.max(patients.len());
        // The rows.
        let export = kind == Kind::Volume && self.chance(0.5);
        let export_group = self.new_group();
        let export_t = self.in_window(user, d0);
        let mut groups = Vec::new();
        for i in 0..size {
            let d = span[(i * span.len() / size).min(span.len() - 1)];
            let p = patients[i % patients.len()];
            let (t, action, count, group) = if export {
                let n = u32::try_from(patients.len()).unwrap_or(u32::MAX);
                (export_t, Action::Export, n, export_group)
            } else {
                let t = if kind == Kind::AfterHours {
                    d * DAY + self.rng.gen_range(HOUR..4 * HOUR)
                } else {
                    self.in_window(user, d)
                };
                let act = if kind != Kind::Volume && self.chance(0.1) {
                    Action::Print
                } else {
                    Action::View
                };
                (t, act, 1, self.new_group())
            };
            if t < 0 || t >= self.period_end {
                continue;
            }
            if kind != Kind::Terminated && !self.staff[user].active(t) {
                continue;
            }
            let types = rtypes(self.staff[user].role);
            let rtype = types[self.rng.gen_range(0..types.len())];
            self.rows.push(Row {
                t,
                user,
                patient: p,
                action,
                rtype,
                count,
                group,
            });
            if !groups.contains(&group) {
                groups.push(group);
            }
        }
        if groups.is_empty() {
            return false;
        }
        for &p in &patients {
            self.relate(user, p, REL_OTHER);
        }
        self.incidents.push(PendingIncident {
            kind,
            user,
            patients,
            groups,
        });
        true
    }

    /// A plain time in the user's shift window on a day (no late charting).
    fn in_window(&mut self, user: usize, day: i64) -> i64 {
        let (a, b) = self.staff[user].window();
        day * DAY + self.rng.gen_range(a..b)
    }

    // ----- output -----

    fn build(mut self, clock: &Clock) -> Result<Simulation, SimError> {
        let mut world = World::default();
        for (_, name, _) in DEPTS {
            world.department(name);
        }
        for (_, name) in ROLES {
            world.role(name);
        }
        let dept_ix = |d: Dept| DeptIx(DEPTS.iter().position(|x| x.0 == d).unwrap_or(0) as u32);
        let role_ix = |r: Role| RoleIx(ROLES.iter().position(|x| x.0 == r).unwrap_or(0) as u32);
        let address = |g: &Gen<'_>, h: usize| {
            let hh = &g.households[h];
            let zip = g.streets_zip[hh.street];
            let (code, city) = g.zips.get(zip).cloned().unwrap_or_default();
            Address {
                line: format!("{} {}", hh.house, names::street(hh.street)),
                city: names::city(city).to_owned(),
                zip: code,
            }
        };
        for (s, st) in self.staff.iter().enumerate() {
            world.users.push(User {
                id: format!("S{:05}", s + 1),
                given: names::given(st.given),
                family: names::family(st.family),
                role: role_ix(st.role),
                department: dept_ix(st.dept),
                address: address(&self, st.household),
                hire: Some(clock.utc(st.hire)?),
                termination: st.term.map(|t| clock.utc(t)).transpose()?,
                patient: None,
            });
        }
        for (p, person) in self.people.iter().enumerate() {
            world.patients.push(Patient {
                id: format!("P{:06}", p + 1),
                mrn: format!("MRN{:07}", (p * 7_919 + 104_729) % 10_000_000),
                given: names::given(person.given),
                family: names::family(person.family),
                birth_date: Some(person.birth.clone()),
                address: address(&self, person.household),
                vip: person.vip,
                deceased: person.deceased.map(|t| clock.utc(t)).transpose()?,
                employee: person.employee.map(|s| UserIx(s as u32)),
                contacts: Vec::new(),
            });
        }
        for (e, enc) in self.encs.iter().enumerate() {
            world.encounters.push(Encounter {
                id: format!("E{:07}", e + 1),
                patient: PatientIx(enc.patient as u32),
                department: dept_ix(enc.dept),
                class: enc.class,
                start: clock.utc(enc.start)?,
                end: if enc.end < self.period_end {
                    Some(clock.utc(enc.end)?)
                } else {
                    None
                },
                attending: enc.attending.map(|a| UserIx(a as u32)),
            });
        }
        for c in &self.care {
            let enc = &self.encs[c.enc];
            world.care_team.push(CareTeamMember {
                patient: PatientIx(c.patient as u32),
                user: UserIx(c.user as u32),
                encounter: Some(EncounterIx(c.enc as u32)),
                role: c.role.to_owned(),
                start: Some(clock.utc(enc.start)?),
                end: if enc.end < self.period_end {
                    Some(clock.utc(enc.end)?)
                } else {
                    None
                },
            });
        }
        for (i, o) in self.orders.iter().enumerate() {
            world.orders.push(Order {
                id: format!("O{:07}", i + 1),
                encounter: Some(EncounterIx(o.enc as u32)),
                patient: PatientIx(o.patient as u32),
                service_department: dept_ix(o.svc),
                ordered_by: o.by.map(|u| UserIx(u as u32)),
                at: clock.utc(o.at)?,
            });
        }
        // Time order, then a seeded shuffle of events within a second, so
        // that neither position nor event id says when a row was drawn.
        let salt = self.cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mix = |g: u32| {
            (u64::from(g) ^ salt)
                .wrapping_mul(0xBF58_476D_1CE4_E5B9)
                .rotate_left(31)
        };
        self.rows.sort_by_key(|r| (r.t, mix(r.group), r.group));
        let mut event_of: HashMap<u32, String> = HashMap::new();
        let mut next = 0u32;
        world.accesses.reserve(self.rows.len());
        let mut cached_hour = i64::MIN;
        let mut cached_offset = 0;
        for r in &self.rows {
            let id = event_of.entry(r.group).or_insert_with(|| {
                next += 1;
                format!("EV{next:08}")
            });
            // One time-zone lookup per local day and hour is enough for
            // whole-hour offsets; recompute when the hour's offset differs.
            let key = r.t.div_euclid(HOUR);
            if key != cached_hour {
                cached_hour = key;
                cached_offset = clock.utc(key * HOUR)? - key * HOUR;
            }
            let ws = &self.staff[r.user].workstations;
            let workstation = if r.group % 5 == 0 { &ws[1] } else { &ws[0] };
            world.accesses.push(Access {
                event_id: id.clone(),
                time: r.t + cached_offset,
                user: UserIx(r.user as u32),
                patient: PatientIx(r.patient as u32),
                action: r.action,
                resource_type: r.rtype.to_owned(),
                workstation: workstation.clone(),
                record_count: r.count,
                emergency: false,
                refused: false,
            });
        }
        let mut incidents = Vec::with_capacity(self.incidents.len());
        for (i, inc) in self.incidents.iter().enumerate() {
            let mut event_ids: Vec<String> = inc
                .groups
                .iter()
                .filter_map(|g| event_of.get(g).cloned())
                .collect();
            event_ids.sort();
            event_ids.dedup();
            let mut patient_ids: Vec<String> = Vec::new();
            for &p in &inc.patients {
                let id = format!("P{:06}", p + 1);
                if !patient_ids.contains(&id) {
                    patient_ids.push(id);
                }
            }
            incidents.push(Incident {
                incident_id: format!("INC{:04}", i + 1),
                kind: inc.kind,
                staff_id: format!("S{:05}", inc.user + 1),
                patient_ids,
                event_ids,
            });
        }
        Ok(Simulation { world, incidents })
    }
}
