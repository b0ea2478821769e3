//! The context a `World` gives, indexed for constant-time questions per
//! access: who is related to whom and when, which encounters and orders a
//! patient has, and the normalised keys (address, street, surname) that
//! detectors compare as integers.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::model::{
    Address, DeptIx, EncounterClass, GrantKind, PatientIx, RoleIx, Time, UserIx, World,
};

use super::Config;

/// A small, fast, non-cryptographic hasher (the multiply-rotate scheme
/// compilers use for integer keys). Keys here are indexes we built, never
/// attacker-chosen strings, so flooding is not a concern.
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.add(u64::from(*b));
        }
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
}

impl FastHasher {
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(SEED);
    }
}

/// A `HashMap` with [`FastHasher`].
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// Why a user has a direct relationship with a patient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RelKind {
    CareTeam,
    Attending,
    /// A participant of a telehealth consultation (a virtual encounter or
    /// a consultation grant): valid for its window and a grace period only.
    Consultation,
    Appointment,
    BreakGlass,
    /// The user ordered something for the patient.
    Orderer,
}

/// A direct relationship and the window in which it explains access.
#[derive(Clone, Copy, Debug)]
pub struct Rel {
    pub kind: RelKind,
    pub from: Time,
    pub to: Time,
    /// The encounter it came from, if any.
    pub encounter: Option<u32>,
}

/// A user, reduced to what explanations and detectors compare.
#[derive(Clone, Debug)]
pub struct UserCtx {
    pub role: RoleIx,
    pub department: DeptIx,
    pub addr: Option<u32>,
    pub street: Option<u32>,
    pub surname_zip: Option<u32>,
    pub name: Option<u32>,
    pub hire: Option<Time>,
    pub termination: Option<Time>,
    pub patient: Option<PatientIx>,
    pub registration: bool,
    pub billing: bool,
}

/// A patient, reduced the same way.
#[derive(Clone, Debug)]
pub struct PatientCtx {
    pub addr: Option<u32>,
    pub street: Option<u32>,
    pub surname_zip: Option<u32>,
    pub vip: bool,
    pub deceased: Option<Time>,
    pub employee: Option<UserIx>,
    pub contact_names: Vec<u32>,
    pub contact_addrs: Vec<u32>,
    /// Range into `Index::encounters` (sorted by start).
    pub encounters: (u32, u32),
    /// Range into `Index::orders` (sorted by time).
    pub orders: (u32, u32),
}

/// An encounter, reduced.
#[derive(Clone, Copy, Debug)]
pub struct EncCtx {
    pub ix: u32,
    pub department: DeptIx,
    pub class: EncounterClass,
    pub start: Time,
    /// `Time::MAX` while open.
    pub end: Time,
}

/// An order, reduced.
#[derive(Clone, Copy, Debug)]
pub struct OrderCtx {
    pub ix: u32,
    pub department: DeptIx,
    pub at: Time,
}

/// The indexed context.
pub struct Index {
    pub users: Vec<UserCtx>,
    pub patients: Vec<PatientCtx>,
    pub encounters: Vec<EncCtx>,
    pub orders: Vec<OrderCtx>,
    rels: Vec<Rel>,
    pair_rels: FastMap<u64, (u32, u32)>,
}

pub fn pair(u: UserIx, p: PatientIx) -> u64 {
    (u64::from(u.0) << 32) | u64::from(p.0)
}

const DAY: Time = 86_400;
const HOUR: Time = 3_600;

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Interns normalised strings as integers.
#[derive(Default)]
struct Keys(HashMap<String, u32>);

impl Keys {
    fn key(&mut self, s: String) -> Option<u32> {
        if s.is_empty() {
            return None;
        }
        let n = to_u32(self.0.len());
        Some(*self.0.entry(s).or_insert(n))
    }
}

/// Lower-case letters and digits, words separated by one space; common
/// street-type and unit words abbreviated so spellings compare equal.
pub fn normalise(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let w = word.to_lowercase();
        let w = match w.as_str() {
            "street" => "st",
            "avenue" => "ave",
            "road" => "rd",
            "drive" => "dr",
            "lane" => "ln",
            "boulevard" => "blvd",
            "court" => "ct",
            "place" => "pl",
            "apartment" | "apt" | "unit" | "suite" | "ste" => "#",
            other => other,
        }
        .to_owned();
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&w);
    }
    out
}

fn zip5(zip: &str) -> String {
    zip.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(5)
        .collect::<String>()
        .to_lowercase()
}

/// The household key: the whole normalised line and the zip.
fn addr_key(a: &Address) -> String {
    let line = normalise(&a.line);
    let zip = zip5(&a.zip);
    if line.is_empty() || zip.is_empty() {
        return String::new();
    }
    format!("{line}|{zip}")
}

/// The street key: the line without its house number (and unit), and zip.
fn street_key(a: &Address) -> String {
    let line = normalise(&a.line);
    let zip = zip5(&a.zip);
    let words: Vec<&str> = line
        .split(' ')
        .filter(|w| !w.is_empty())
        .take_while(|w| *w != "#")
        .filter(|w| {
            !w.chars().any(|c| c.is_ascii_digit())
                || w.ends_with("th")
                || w.ends_with("st")
                || w.ends_with("nd")
                || w.ends_with("rd")
        })
        .collect();
    // A street needs a name; a line that was only a number has none.
    if words.is_empty() || zip.is_empty() {
        return String::new();
    }
    format!("{}|{zip}", words.join(" "))
}

fn surname_zip(family: &str, a: &Address) -> String {
    let f = normalise(family);
    let zip = zip5(&a.zip);
    if f.is_empty() || zip.is_empty() {
        return String::new();
    }
    format!("{f}|{zip}")
}

fn name_key(given: &str, family: &str) -> String {
    let g = normalise(given);
    let f = normalise(family);
    if g.is_empty() || f.is_empty() {
        return String::new();
    }
    format!("{f}|{g}")
}

fn has_word(haystack: &str, words: &[String]) -> bool {
    let h = haystack.to_lowercase();
    words.iter().any(|w| h.contains(w.as_str()))
}

impl Index {
    /// Indexes the context of `world` (everything but its accesses).
    pub fn build(world: &World, cfg: &Config) -> Index {
        let mut addr = Keys::default();
        let mut street = Keys::default();
        let mut surname = Keys::default();
        let mut names = Keys::default();
        let users = world
            .users
            .iter()
            .map(|u| {
                let role = world.roles.get(u.role.ix()).map_or("", String::as_str);
                let dept = world
                    .departments
                    .get(u.department.ix())
                    .map_or("", String::as_str);
                UserCtx {
                    role: u.role,
                    department: u.department,
                    addr: addr.key(addr_key(&u.address)),
                    street: street.key(street_key(&u.address)),
                    surname_zip: surname.key(surname_zip(&u.family, &u.address)),
                    name: names.key(name_key(&u.given, &u.family)),
                    hire: u.hire,
                    termination: u.termination,
                    patient: u.patient,
                    registration: has_word(role, &cfg.registration_words)
                        || has_word(dept, &cfg.registration_words),
                    billing: has_word(role, &cfg.billing_words)
                        || has_word(dept, &cfg.billing_words),
                }
            })
            .collect();

        // Encounters and orders grouped by patient, sorted by time.
        let mut enc_order: Vec<usize> = (0..world.encounters.len()).collect();
        enc_order.sort_by_key(|&i| {
            world
                .encounters
                .get(i)
                .map_or((u32::MAX, 0), |e| (e.patient.0, e.start))
        });
        let encounters: Vec<EncCtx> = enc_order
            .iter()
            .filter_map(|&i| {
                world.encounters.get(i).map(|e| EncCtx {
                    ix: to_u32(i),
                    department: e.department,
                    class: e.class,
                    start: e.start,
                    end: e.end.unwrap_or(Time::MAX),
                })
            })
            .collect();
        let mut ord_order: Vec<usize> = (0..world.orders.len()).collect();
        ord_order.sort_by_key(|&i| {
            world
                .orders
                .get(i)
                .map_or((u32::MAX, 0), |o| (o.patient.0, o.at))
        });
        let orders: Vec<OrderCtx> = ord_order
            .iter()
            .filter_map(|&i| {
                world.orders.get(i).map(|o| OrderCtx {
                    ix: to_u32(i),
                    department: o.service_department,
                    at: o.at,
                })
            })
            .collect();
        let ranges = |keys: Vec<u32>, n: usize| -> Vec<(u32, u32)> {
            let mut out = vec![(0u32, 0u32); n];
            let mut i = 0usize;
            while i < keys.len() {
                let p = keys.get(i).copied().unwrap_or(u32::MAX);
                let mut j = i;
                while keys.get(j) == Some(&p) {
                    j += 1;
                }
                if let Some(slot) = out.get_mut(p as usize) {
                    *slot = (to_u32(i), to_u32(j));
                }
                i = j;
            }
            out
        };
        let enc_keys: Vec<u32> = enc_order
            .iter()
            .filter_map(|&i| world.encounters.get(i).map(|e| e.patient.0))
            .collect();
        let ord_keys: Vec<u32> = ord_order
            .iter()
            .filter_map(|&i| world.orders.get(i).map(|o| o.patient.0))
            .collect();
        let enc_ranges = ranges(enc_keys, world.patients.len());
        let ord_ranges = ranges(ord_keys, world.patients.len());

        let patients = world
            .patients
            .iter()
            .enumerate()
            .map(|(i, p)| PatientCtx {
                addr: addr.key(addr_key(&p.address)),
                street: street.key(street_key(&p.address)),
                surname_zip: surname.key(surname_zip(&p.family, &p.address)),
                vip: p.vip,
                deceased: p.deceased,
                employee: p.employee,
                contact_names: p
                    .contacts
                    .iter()
                    .filter_map(|c| names.key(name_key(&c.given, &c.family)))
                    .collect(),
                contact_addrs: p
                    .contacts
                    .iter()
                    .filter_map(|c| addr.key(addr_key(&c.address)))
                    .collect(),
                encounters: enc_ranges.get(i).copied().unwrap_or((0, 0)),
                orders: ord_ranges.get(i).copied().unwrap_or((0, 0)),
            })
            .collect();

        // Direct relationships with their windows.
        let grace = cfg.consult_grace;
        let follow = cfg.follow_up;
        let mut pairs: Vec<(u64, Rel)> = Vec::new();
        let window = |class: EncounterClass, start: Time, end: Time| -> (RelKind, Time, Time) {
            if class == EncounterClass::Virtual {
                (
                    RelKind::Consultation,
                    start - HOUR,
                    end.saturating_add(grace),
                )
            } else {
                (RelKind::CareTeam, start - DAY, end.saturating_add(follow))
            }
        };
        for (i, e) in world.encounters.iter().enumerate() {
            if let Some(a) = e.attending {
                let (k, from, to) = window(e.class, e.start, e.end.unwrap_or(Time::MAX));
                let kind = if k == RelKind::CareTeam {
                    RelKind::Attending
                } else {
                    k
                };
                pairs.push((
                    pair(a, e.patient),
                    Rel {
                        kind,
                        from,
                        to,
                        encounter: Some(to_u32(i)),
                    },
                ));
            }
        }
        for c in &world.care_team {
            let enc = c.encounter.and_then(|e| world.encounters.get(e.ix()));
            let class = enc.map_or(EncounterClass::Other, |e| e.class);
            let start = c.start.or(enc.map(|e| e.start)).unwrap_or(Time::MIN / 2);
            let end = c.end.or(enc.and_then(|e| e.end)).unwrap_or(Time::MAX / 2);
            let (kind, from, to) = window(class, start, end);
            pairs.push((
                pair(c.user, c.patient),
                Rel {
                    kind,
                    from,
                    to,
                    encounter: c.encounter.map(|e| e.0),
                },
            ));
        }
        for o in &world.orders {
            if let Some(by) = o.ordered_by {
                // An order placed in a consultation lasts as the
                // consultation does.
                let consult = o
                    .encounter
                    .and_then(|e| world.encounters.get(e.ix()))
                    .filter(|e| e.class == EncounterClass::Virtual);
                let (kind, from, to) = match consult {
                    Some(e) => (
                        RelKind::Consultation,
                        e.start - HOUR,
                        e.end.unwrap_or(o.at).saturating_add(grace),
                    ),
                    None => (RelKind::Orderer, o.at - DAY, o.at.saturating_add(follow)),
                };
                pairs.push((
                    pair(by, o.patient),
                    Rel {
                        kind,
                        from,
                        to,
                        encounter: o.encounter.map(|e| e.0),
                    },
                ));
            }
        }
        for g in &world.grants {
            let kind = match g.kind {
                GrantKind::BreakGlass => RelKind::BreakGlass,
                GrantKind::Appointment => RelKind::Appointment,
                GrantKind::Consultation => RelKind::Consultation,
            };
            let (from, to) = match g.kind {
                GrantKind::Appointment => (g.start - DAY, g.end.saturating_add(follow)),
                _ => (g.start, g.end),
            };
            pairs.push((
                pair(g.user, g.patient),
                Rel {
                    kind,
                    from,
                    to,
                    encounter: None,
                },
            ));
        }
        pairs.sort_by_key(|(k, _)| *k);
        let mut pair_rels: FastMap<u64, (u32, u32)> = FastMap::default();
        let mut rels = Vec::with_capacity(pairs.len());
        let mut i = 0usize;
        while let Some(&(k, _)) = pairs.get(i) {
            let start = rels.len();
            while let Some((k2, r)) = pairs.get(i) {
                if *k2 != k {
                    break;
                }
                rels.push(*r);
                i += 1;
            }
            pair_rels.insert(k, (to_u32(start), to_u32(rels.len())));
        }

        Index {
            users,
            patients,
            encounters,
            orders,
            rels,
            pair_rels,
        }
    }

    /// The direct relationships of a user with a patient.
    pub fn rels(&self, u: UserIx, p: PatientIx) -> &[Rel] {
        match self.pair_rels.get(&pair(u, p)) {
            Some(&(a, b)) => self.rels.get(a as usize..b as usize).unwrap_or(&[]),
            None => &[],
        }
    }

    /// A patient's encounters, sorted by start.
    pub fn encounters_of(&self, p: &PatientCtx) -> &[EncCtx] {
        self.encounters
            .get(p.encounters.0 as usize..p.encounters.1 as usize)
            .unwrap_or(&[])
    }

    /// A patient's orders, sorted by time.
    pub fn orders_of(&self, p: &PatientCtx) -> &[OrderCtx] {
        self.orders
            .get(p.orders.0 as usize..p.orders.1 as usize)
            .unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(line: &str, zip: &str) -> Address {
        Address {
            line: line.into(),
            city: "Springfield".into(),
            zip: zip.into(),
        }
    }

    #[test]
    fn addresses_normalise_spellings() {
        assert_eq!(
            addr_key(&a("12 Oak Street", "12345")),
            addr_key(&a("12  oak st.", "12345-6789"))
        );
        assert_ne!(
            addr_key(&a("12 Oak Street", "12345")),
            addr_key(&a("14 Oak Street", "12345"))
        );
        assert_eq!(
            street_key(&a("12 Oak Street", "12345")),
            street_key(&a("14 Oak St", "12345"))
        );
        assert_ne!(
            street_key(&a("12 Oak Street", "12345")),
            street_key(&a("12 Elm Street", "12345"))
        );
        assert_eq!(
            street_key(&a("12 Oak Street Apt 4", "12345")),
            street_key(&a("3 Oak St", "12345"))
        );
        // Numbered streets keep their name.
        assert_ne!(
            street_key(&a("5 5th Ave", "12345")),
            street_key(&a("5 6th Ave", "12345"))
        );
        assert_eq!(street_key(&a("", "12345")), "");
        assert_eq!(addr_key(&a("12 Oak St", "")), "");
    }
}
