//! The monitor's input: a hospital's context (staff, patients, encounters,
//! care teams, orders, grants) and its access log, with every reference
//! already resolved to a dense index.
//!
//! Everything here is plain data. Parsers (`input`), the simulator (`sim`)
//! and the server (through `app`) build a [`World`]; the engine reads it.
//! Times are Unix seconds (UTC).

use serde::{Deserialize, Serialize};

/// Unix seconds, UTC.
pub type Time = i64;

macro_rules! index {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub u32);

        impl $name {
            /// The index as a `usize`, for slicing.
            pub fn ix(self) -> usize {
                self.0 as usize
            }
        }
    };
}

index!(
    /// A user of the record system: a member of staff, or a patient using
    /// their own account (`User::patient` is then set).
    UserIx
);
index!(
    /// A patient.
    PatientIx
);
index!(
    /// A department (interned name).
    DeptIx
);
index!(
    /// A role (interned name).
    RoleIx
);
index!(
    /// An encounter.
    EncounterIx
);

/// A postal address as written; the engine normalises it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub line: String,
    pub city: String,
    pub zip: String,
}

/// A user of the record system.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The id in the source system (`staff_id`, or Vigil's account id).
    pub id: String,
    pub given: String,
    pub family: String,
    pub role: RoleIx,
    pub department: DeptIx,
    pub address: Address,
    pub hire: Option<Time>,
    /// When the account ended (termination or deactivation).
    pub termination: Option<Time>,
    /// Set when this user is a patient using their own account: their
    /// accesses to this patient are the patient's own.
    pub patient: Option<PatientIx>,
}

/// A person related to a patient (FHIR `Patient.contact`, `RelatedPerson`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub given: String,
    pub family: String,
    pub address: Address,
}

/// A patient.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Patient {
    pub id: String,
    pub mrn: String,
    pub given: String,
    pub family: String,
    /// `YYYY-MM-DD` as written, if known.
    pub birth_date: Option<String>,
    pub address: Address,
    /// A VIP or otherwise restricted record.
    pub vip: bool,
    pub deceased: Option<Time>,
    /// The user this patient is, when the patient is an employee.
    pub employee: Option<UserIx>,
    pub contacts: Vec<Contact>,
}

/// The class of an encounter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EncounterClass {
    Inpatient,
    Ambulatory,
    Emergency,
    /// A telehealth consultation (FHIR `VR`): relationships it creates last
    /// only for its window and a grace period.
    Virtual,
    Other,
}

impl EncounterClass {
    /// Parses a class as written in CSV or FHIR (`IMP`, `AMB`, `EMER`, `VR`
    /// and their names, case-insensitive). Anything else is `Other`.
    pub fn parse(s: &str) -> EncounterClass {
        match s.trim().to_ascii_lowercase().as_str() {
            "imp" | "inpatient" | "acute" | "nonac" | "ss" | "obsenc" | "prenc" => {
                EncounterClass::Inpatient
            }
            "amb" | "ambulatory" | "outpatient" | "hh" | "fld" => EncounterClass::Ambulatory,
            "emer" | "emergency" => EncounterClass::Emergency,
            "vr" | "virtual" | "telehealth" => EncounterClass::Virtual,
            _ => EncounterClass::Other,
        }
    }
}

/// An encounter (visit, stay, consultation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encounter {
    pub id: String,
    pub patient: PatientIx,
    pub department: DeptIx,
    pub class: EncounterClass,
    pub start: Time,
    /// `None` while the encounter is open.
    pub end: Option<Time>,
    pub attending: Option<UserIx>,
}

/// A care-team membership.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CareTeamMember {
    pub patient: PatientIx,
    pub user: UserIx,
    pub encounter: Option<EncounterIx>,
    pub role: String,
    pub start: Option<Time>,
    pub end: Option<Time>,
}

/// An order (FHIR `ServiceRequest`) to a service department.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub encounter: Option<EncounterIx>,
    pub patient: PatientIx,
    pub service_department: DeptIx,
    pub ordered_by: Option<UserIx>,
    pub at: Time,
}

/// What a time-boxed grant is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GrantKind {
    /// Break-the-glass (emergency access).
    BreakGlass,
    /// A participant of an appointment.
    Appointment,
    /// An admitted participant of a telehealth consultation.
    Consultation,
}

/// A time-boxed relationship that the record system itself granted
/// (Vigil's break-the-glass grants, appointments and consultations).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub user: UserIx,
    pub patient: PatientIx,
    pub kind: GrantKind,
    pub start: Time,
    pub end: Time,
}

/// What an access did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Action {
    View,
    Modify,
    Print,
    Export,
    Search,
}

impl Action {
    /// Parses the CSV spelling (`view`, `modify`, `print`, `export`,
    /// `search`).
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "view" => Action::View,
            "modify" => Action::Modify,
            "print" => Action::Print,
            "export" => Action::Export,
            "search" => Action::Search,
            _ => return None,
        })
    }

    /// The CSV spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::View => "view",
            Action::Modify => "modify",
            Action::Print => "print",
            Action::Export => "export",
            Action::Search => "search",
        }
    }
}

/// One access by one user to one patient's record. An event that touched
/// several patients (a search) is one `Access` per patient with the same
/// `event_id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    pub event_id: String,
    pub time: Time,
    pub user: UserIx,
    pub patient: PatientIx,
    pub action: Action,
    pub resource_type: String,
    pub workstation: String,
    /// How many records the event touched (prints and exports can be many).
    pub record_count: u32,
    /// Made under an emergency purpose (break-the-glass).
    pub emergency: bool,
    /// The access was refused by the access policy (an attempt).
    pub refused: bool,
}

/// A hospital's context and access log. References between the vectors are
/// indexes into them; the constructor of a `World` guarantees they are in
/// range (`World::check`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct World {
    pub departments: Vec<String>,
    pub roles: Vec<String>,
    pub users: Vec<User>,
    pub patients: Vec<Patient>,
    pub encounters: Vec<Encounter>,
    pub care_team: Vec<CareTeamMember>,
    pub orders: Vec<Order>,
    pub grants: Vec<Grant>,
    /// In the order read; the engine sorts by time itself.
    pub accesses: Vec<Access>,
}

/// A reference in a [`World`] that points nowhere.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {index} refers to a missing {target}")]
pub struct Dangling {
    pub what: &'static str,
    pub index: usize,
    pub target: &'static str,
}

impl World {
    /// Interns a department name, returning its index.
    pub fn department(&mut self, name: &str) -> DeptIx {
        intern(&mut self.departments, name, DeptIx)
    }

    /// Interns a role name, returning its index.
    pub fn role(&mut self, name: &str) -> RoleIx {
        intern(&mut self.roles, name, RoleIx)
    }

    /// Checks that every index points into its vector.
    pub fn check(&self) -> Result<(), Dangling> {
        let users = self.users.len();
        let patients = self.patients.len();
        let depts = self.departments.len();
        let encounters = self.encounters.len();
        let bad = |what, index, target| {
            Err(Dangling {
                what,
                index,
                target,
            })
        };
        for (i, u) in self.users.iter().enumerate() {
            if u.role.ix() >= self.roles.len() {
                return bad("user", i, "role");
            }
            if u.department.ix() >= depts {
                return bad("user", i, "department");
            }
            if u.patient.is_some_and(|p| p.ix() >= patients) {
                return bad("user", i, "patient");
            }
        }
        for (i, p) in self.patients.iter().enumerate() {
            if p.employee.is_some_and(|u| u.ix() >= users) {
                return bad("patient", i, "user");
            }
        }
        for (i, e) in self.encounters.iter().enumerate() {
            if e.patient.ix() >= patients {
                return bad("encounter", i, "patient");
            }
            if e.department.ix() >= depts {
                return bad("encounter", i, "department");
            }
            if e.attending.is_some_and(|u| u.ix() >= users) {
                return bad("encounter", i, "user");
            }
        }
        for (i, c) in self.care_team.iter().enumerate() {
            if c.patient.ix() >= patients {
                return bad("care team member", i, "patient");
            }
            if c.user.ix() >= users {
                return bad("care team member", i, "user");
            }
            if c.encounter.is_some_and(|e| e.ix() >= encounters) {
                return bad("care team member", i, "encounter");
            }
        }
        for (i, o) in self.orders.iter().enumerate() {
            if o.patient.ix() >= patients {
                return bad("order", i, "patient");
            }
            if o.service_department.ix() >= depts {
                return bad("order", i, "department");
            }
            if o.ordered_by.is_some_and(|u| u.ix() >= users) {
                return bad("order", i, "user");
            }
            if o.encounter.is_some_and(|e| e.ix() >= encounters) {
                return bad("order", i, "encounter");
            }
        }
        for (i, g) in self.grants.iter().enumerate() {
            if g.patient.ix() >= patients {
                return bad("grant", i, "patient");
            }
            if g.user.ix() >= users {
                return bad("grant", i, "user");
            }
        }
        for (i, a) in self.accesses.iter().enumerate() {
            if a.patient.ix() >= patients {
                return bad("access", i, "patient");
            }
            if a.user.ix() >= users {
                return bad("access", i, "user");
            }
        }
        Ok(())
    }
}

fn intern<T>(names: &mut Vec<String>, name: &str, make: impl Fn(u32) -> T) -> T {
    let i = match names.iter().position(|n| n == name) {
        Some(i) => i,
        None => {
            names.push(name.to_owned());
            names.len() - 1
        }
    };
    make(u32::try_from(i).unwrap_or(u32::MAX))
}
