//! Writing a simulated (or any) [`World`] as the six CSV files of issue 6,
//! and incidents as NDJSON.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use crate::model::{Action, EncounterClass, Time, World};

use super::Incident;

/// The headers, exactly as issue 6 fixes them.
pub const STAFF_HEADER: &str =
    "staff_id,given_name,family_name,role,department,address,city,zip,hire_date,termination_date";
pub const PATIENTS_HEADER: &str = "patient_id,mrn,given_name,family_name,birth_date,address,city,zip,vip,deceased_date,employee_staff_id";
pub const ENCOUNTERS_HEADER: &str =
    "encounter_id,patient_id,department,class,start,end,attending_staff_id";
pub const CARE_TEAM_HEADER: &str = "patient_id,staff_id,encounter_id,role,start,end";
pub const ORDERS_HEADER: &str =
    "order_id,encounter_id,patient_id,service_department,ordered_by_staff_id,ordered_at";
pub const ACCESS_LOG_HEADER: &str =
    "event_id,timestamp,staff_id,patient_id,action,resource_type,workstation,record_count";

/// Writes `staff.csv`, `patients.csv`, `encounters.csv`, `care_team.csv`,
/// `orders.csv` and `access_log.csv` into `dir` (which must exist).
/// References that point nowhere are written as empty fields.
pub fn write_csv(world: &World, dir: &Path) -> io::Result<()> {
    let dept = |d: crate::model::DeptIx| world.departments.get(d.ix()).map_or("", String::as_str);
    let role = |r: crate::model::RoleIx| world.roles.get(r.ix()).map_or("", String::as_str);
    let user = |u: crate::model::UserIx| world.users.get(u.ix()).map_or("", |u| u.id.as_str());
    let patient =
        |p: crate::model::PatientIx| world.patients.get(p.ix()).map_or("", |p| p.id.as_str());
    let encounter =
        |e: crate::model::EncounterIx| world.encounters.get(e.ix()).map_or("", |e| e.id.as_str());

    let mut out = Csv::create(&dir.join("staff.csv"), STAFF_HEADER)?;
    for u in &world.users {
        out.row(&[
            &u.id,
            &u.given,
            &u.family,
            role(u.role),
            dept(u.department),
            &u.address.line,
            &u.address.city,
            &u.address.zip,
            &time(u.hire),
            &time(u.termination),
        ])?;
    }
    out.finish()?;

    let mut out = Csv::create(&dir.join("patients.csv"), PATIENTS_HEADER)?;
    for p in &world.patients {
        out.row(&[
            &p.id,
            &p.mrn,
            &p.given,
            &p.family,
            p.birth_date.as_deref().unwrap_or(""),
            &p.address.line,
            &p.address.city,
            &p.address.zip,
            if p.vip { "true" } else { "false" },
            &time(p.deceased),
            p.employee.map_or("", user),
        ])?;
    }
    out.finish()?;

    let mut out = Csv::create(&dir.join("encounters.csv"), ENCOUNTERS_HEADER)?;
    for e in &world.encounters {
        out.row(&[
            &e.id,
            patient(e.patient),
            dept(e.department),
            class(e.class),
            &time(Some(e.start)),
            &time(e.end),
            e.attending.map_or("", user),
        ])?;
    }
    out.finish()?;

    let mut out = Csv::create(&dir.join("care_team.csv"), CARE_TEAM_HEADER)?;
    for c in &world.care_team {
        out.row(&[
            patient(c.patient),
            user(c.user),
            c.encounter.map_or("", encounter),
            &c.role,
            &time(c.start),
            &time(c.end),
        ])?;
    }
    out.finish()?;

    let mut out = Csv::create(&dir.join("orders.csv"), ORDERS_HEADER)?;
    for o in &world.orders {
        out.row(&[
            &o.id,
            o.encounter.map_or("", encounter),
            patient(o.patient),
            dept(o.service_department),
            o.ordered_by.map_or("", user),
            &time(Some(o.at)),
        ])?;
    }
    out.finish()?;

    let mut out = Csv::create(&dir.join("access_log.csv"), ACCESS_LOG_HEADER)?;
    for a in &world.accesses {
        out.row(&[
            &a.event_id,
            &time(Some(a.time)),
            user(a.user),
            patient(a.patient),
            action(a.action),
            &a.resource_type,
            &a.workstation,
            &a.record_count.to_string(),
        ])?;
    }
    out.finish()
}

/// Writes one incident per line as JSON.
pub fn write_incidents(incidents: &[Incident], w: impl Write) -> io::Result<()> {
    let mut w = BufWriter::new(w);
    for i in incidents {
        serde_json::to_writer(&mut w, i)?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

/// RFC 3339 in UTC with whole seconds (`2026-01-05T08:30:00Z`); empty for
/// none or a time jiff cannot represent.
fn time(t: Option<Time>) -> String {
    t.and_then(|t| jiff::Timestamp::from_second(t).ok())
        .map_or_else(String::new, |t| t.to_string())
}

fn class(c: EncounterClass) -> &'static str {
    match c {
        EncounterClass::Inpatient => "IMP",
        EncounterClass::Ambulatory => "AMB",
        EncounterClass::Emergency => "EMER",
        EncounterClass::Virtual => "VR",
        EncounterClass::Other => "OTH",
    }
}

fn action(a: Action) -> &'static str {
    a.as_str()
}

/// A CSV file being written: RFC 4180 quoting, `\n` line ends.
struct Csv {
    out: BufWriter<File>,
    line: String,
}

impl Csv {
    fn create(path: &Path, header: &str) -> io::Result<Csv> {
        let mut out = BufWriter::with_capacity(1 << 16, File::create(path)?);
        out.write_all(header.as_bytes())?;
        out.write_all(b"\n")?;
        Ok(Csv {
            out,
            line: String::with_capacity(256),
        })
    }

    fn row(&mut self, fields: &[&str]) -> io::Result<()> {
        self.line.clear();
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                self.line.push(',');
            }
            push_field(&mut self.line, f);
        }
        self.line.push('\n');
        self.out.write_all(self.line.as_bytes())
    }

    fn finish(mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Appends one field, quoted (with doubled quotes) when it holds a comma, a
/// quote or a line break.
pub(crate) fn push_field(line: &mut String, f: &str) {
    if f.contains([',', '"', '\n', '\r']) {
        line.push('"');
        for c in f.chars() {
            if c == '"' {
                line.push('"');
            }
            line.push(c);
        }
        line.push('"');
    } else {
        let _ = write!(line, "{f}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_when_needed() {
        let mut s = String::new();
        push_field(&mut s, "plain");
        s.push('|');
        push_field(&mut s, "a,b");
        s.push('|');
        push_field(&mut s, "say \"hi\"");
        assert_eq!(s, "plain|\"a,b\"|\"say \"\"hi\"\"\"");
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(time(Some(1_767_601_800)), "2026-01-05T08:30:00Z");
        assert_eq!(time(None), "");
    }
}
