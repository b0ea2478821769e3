//! A realistic demo clinic: an organisation with departments, practitioners
//! with roles, patients with encounters, appointments, care teams,
//! observations, conditions, medication requests and clinical notes.
//!
//! Deterministic for a given seed, so benchmarks and screenshots repeat.

use base64::Engine;
use model::{ResourceId, ResourceType, Timestamp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::{AppError, Principal, Vigil};

pub const MRN_SYSTEM: &str = "urn:oid:2.16.840.1.113883.3.9999.1";
pub const ORG_ID: &str = "org-riverside";

const FAMILY: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Torres",
    "Nguyen",
    "Hill",
    "Flores",
    "Green",
    "Adams",
    "Nelson",
    "Baker",
    "Hall",
    "Rivera",
    "Campbell",
    "Mitchell",
    "Carter",
    "Roberts",
    "Müller",
    "Dubois",
    "Kowalski",
    "Okafor",
    "Haddad",
];
const GIVEN_F: &[&str] = &[
    "Mary",
    "Patricia",
    "Jennifer",
    "Linda",
    "Elizabeth",
    "Barbara",
    "Susan",
    "Jessica",
    "Sarah",
    "Karen",
    "Lisa",
    "Nancy",
    "Betty",
    "Sandra",
    "Margaret",
    "Ashley",
    "Emily",
    "Amara",
    "Chloé",
    "Fatima",
    "Ingrid",
    "Yuki",
];
const GIVEN_M: &[&str] = &[
    "James", "Robert", "John", "Michael", "David", "William", "Richard", "Joseph", "Thomas",
    "Charles", "Daniel", "Matthew", "Anthony", "Mark", "Steven", "Paul", "Andrew", "Kwame", "José",
    "Lars", "Omar", "Hiroshi",
];
const STREETS: &[&str] = &[
    "Oak Street",
    "Maple Avenue",
    "River Road",
    "Elm Street",
    "Hill Lane",
    "Station Road",
    "Mill Way",
    "Park Drive",
];
const DEPARTMENTS: &[(&str, &str)] = &[
    ("dept-general", "General Practice"),
    ("dept-cardiology", "Cardiology"),
    ("dept-mental-health", "Mental Health"),
    ("dept-pediatrics", "Pediatrics"),
];
const STAFF: &[(&str, &str, &str, &str, &str)] = &[
    // id, given, family, role code (http://terminology.hl7.org/CodeSystem/practitioner-role), department
    ("pr-adams", "Helen", "Adams", "doctor", "dept-general"),
    ("pr-baker", "Samuel", "Baker", "doctor", "dept-general"),
    ("pr-chen", "Li", "Chen", "doctor", "dept-cardiology"),
    (
        "pr-diallo",
        "Aminata",
        "Diallo",
        "doctor",
        "dept-cardiology",
    ),
    ("pr-evans", "Rhys", "Evans", "doctor", "dept-mental-health"),
    ("pr-fischer", "Anna", "Fischer", "doctor", "dept-pediatrics"),
    ("pr-garcia", "Lucia", "Garcia", "nurse", "dept-general"),
    ("pr-hughes", "Owen", "Hughes", "nurse", "dept-cardiology"),
    (
        "pr-ivanova",
        "Daria",
        "Ivanova",
        "nurse",
        "dept-mental-health",
    ),
    ("pr-jensen", "Mads", "Jensen", "nurse", "dept-pediatrics"),
    ("pr-kaur", "Priya", "Kaur", "nurse", "dept-general"),
    ("pr-lopez", "Mateo", "Lopez", "doctor", "dept-general"),
];
const CONDITIONS: &[(&str, &str, Option<&str>)] = &[
    ("38341003", "Hypertensive disorder", None),
    ("44054006", "Diabetes mellitus type 2", None),
    ("195967001", "Asthma", None),
    ("35489007", "Depressive disorder", Some("PSY")),
    ("13645005", "Chronic obstructive lung disease", None),
    ("235595009", "Gastroesophageal reflux disease", None),
];
const MEDS: &[(&str, &str)] = &[
    ("314076", "lisinopril 10 MG Oral Tablet"),
    ("860975", "metformin hydrochloride 500 MG Oral Tablet"),
    ("745679", "albuterol 0.09 MG/ACTUAT Metered Dose Inhaler"),
    ("312938", "sertraline 50 MG Oral Tablet"),
    ("197361", "amlodipine 5 MG Oral Tablet"),
];

/// What the seeder wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DemoSummary {
    pub resources: usize,
    pub patients: usize,
    pub practitioners: usize,
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> Option<&'a T> {
    if items.is_empty() {
        None
    } else {
        items.get(rng.gen_range(0..items.len()))
    }
}

fn pick_str(rng: &mut StdRng, items: &[&'static str]) -> &'static str {
    pick(rng, items).copied().unwrap_or("")
}

fn day(ts: i64) -> String {
    Timestamp(ts)
        .to_fhir_instant()
        .get(..10)
        .unwrap_or("2020-01-01")
        .to_owned()
}

fn instant(ts: i64) -> String {
    Timestamp(ts).to_fhir_instant()
}

const DAY_US: i64 = 86_400_000_000;

/// The organisation, departments, practitioners and roles.
pub fn organisation() -> Vec<Value> {
    let mut out = vec![json!({
        "resourceType": "Organization", "id": ORG_ID, "active": true,
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.3.9999.0", "value": "RCC-001"}],
        "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": "prov", "display": "Healthcare Provider"}]}],
        "name": "Riverside Community Clinic",
        "telecom": [{"system": "phone", "value": "+1-555-0100", "use": "work"}],
        "address": [{"line": ["1 Riverside Plaza"], "city": "Springfield", "postalCode": "01101", "country": "US"}]
    })];
    for (id, name) in DEPARTMENTS {
        out.push(json!({
            "resourceType": "Organization", "id": id, "active": true,
            "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": "dept", "display": "Hospital Department"}]}],
            "name": name, "partOf": {"reference": format!("Organization/{ORG_ID}")}
        }));
    }
    for (n, (id, given, family, role, dept)) in STAFF.iter().enumerate() {
        out.push(json!({
            "resourceType": "Practitioner", "id": id, "active": true,
            "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": format!("19{:08}", 4_200_000 + n)}],
            "name": [{"use": "official", "family": family, "given": [given], "prefix": [if *role == "doctor" {"Dr."} else {"Nurse"}]}],
            "telecom": [{"system": "email", "value": format!("{}@riverside.example", id.trim_start_matches("pr-")), "use": "work"}]
        }));
        out.push(json!({
            "resourceType": "PractitionerRole", "id": format!("role-{}", id.trim_start_matches("pr-")), "active": true,
            "practitioner": {"reference": format!("Practitioner/{id}")},
            "organization": {"reference": format!("Organization/{dept}")},
            "code": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/practitioner-role", "code": role}]}]
        }));
    }
    out
}

/// One patient and their record.
pub fn patient_record(rng: &mut StdRng, id: &str, n: usize, now: i64) -> Vec<Value> {
    let female = rng.gen_bool(0.5);
    let given = if female {
        pick_str(rng, GIVEN_F)
    } else {
        pick_str(rng, GIVEN_M)
    };
    let pool = if female { GIVEN_F } else { GIVEN_M };
    let others: Vec<&'static str> = pool.iter().copied().filter(|g| *g != given).collect();
    let middle = pick_str(rng, &others);
    let family = pick_str(rng, FAMILY);
    let birth = now - rng.gen_range(1..95i64) * 365 * DAY_US - rng.gen_range(0..365i64) * DAY_US;
    let doctors: Vec<&'static str> = STAFF
        .iter()
        .filter(|s| s.3 == "doctor")
        .map(|s| s.0)
        .collect();
    let gp = pick_str(rng, &doctors);
    let nurse = STAFF
        .iter()
        .filter(|s| s.3 == "nurse")
        .nth(n % 5)
        .map(|s| s.0)
        .unwrap_or("pr-garcia");
    let pref = format!("Patient/{id}");
    let mut out = vec![json!({
        "resourceType": "Patient", "id": id, "active": true,
        "identifier": [{"use": "usual", "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}, "system": MRN_SYSTEM, "value": format!("MRN{:07}", 1_000_000 + n)}],
        "name": [{"use": "official", "family": family, "given": [given, middle]}],
        "telecom": [{"system": "phone", "value": format!("+1-555-{:04}", rng.gen_range(0..10_000)), "use": "mobile"}],
        "gender": if female {"female"} else {"male"},
        "birthDate": day(birth),
        "address": [{"use": "home", "line": [format!("{} {}", rng.gen_range(1..200), pick_str(rng, STREETS))], "city": "Springfield", "postalCode": format!("011{:02}", rng.gen_range(0..100)), "country": "US"}],
        "generalPractitioner": [{"reference": format!("Practitioner/{gp}")}],
        "managingOrganization": {"reference": format!("Organization/{ORG_ID}")}
    })];
    out.push(json!({
        "resourceType": "CareTeam", "id": format!("ct-{id}"), "status": "active",
        "name": "Primary care team",
        "subject": {"reference": pref},
        "participant": [
            {"member": {"reference": format!("Practitioner/{gp}")}},
            {"member": {"reference": format!("Practitioner/{nurse}")}}
        ],
        "managingOrganization": [{"reference": "Organization/dept-general"}]
    }));
    let visits = rng.gen_range(1..=3);
    for v in 0..visits {
        let start =
            now - rng.gen_range(1..720i64) * DAY_US - rng.gen_range(8..17i64) * 3_600_000_000;
        let enc = format!("enc-{id}-{v}");
        out.push(json!({
            "resourceType": "Encounter", "id": enc, "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": if v == 0 {"VR"} else {"AMB"}, "display": if v == 0 {"virtual"} else {"ambulatory"}},
            "subject": {"reference": pref},
            "participant": [{"individual": {"reference": format!("Practitioner/{gp}")}}],
            "period": {"start": instant(start), "end": instant(start + 1_800_000_000)},
            "serviceProvider": {"reference": "Organization/dept-general"}
        }));
        let vitals: [(&str, &str, f64, &str); 3] = [
            ("8867-4", "Heart rate", rng.gen_range(55.0..100.0), "/min"),
            (
                "8480-6",
                "Systolic blood pressure",
                rng.gen_range(100.0..160.0),
                "mm[Hg]",
            ),
            ("29463-7", "Body weight", rng.gen_range(20.0..120.0), "kg"),
        ];
        for (k, (code, display, value, unit)) in vitals.iter().enumerate() {
            out.push(json!({
                "resourceType": "Observation", "id": format!("obs-{id}-{v}-{k}"), "status": "final",
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
                "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]},
                "subject": {"reference": pref},
                "encounter": {"reference": format!("Encounter/{enc}")},
                "effectiveDateTime": instant(start + 600_000_000),
                "valueQuantity": {"value": (value * 10.0).round() / 10.0, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}
            }));
        }
        let note = format!(
            "Progress note. Patient seen for follow-up. Vitals reviewed. Plan: continue current treatment, review in {} weeks.",
            rng.gen_range(2..12)
        );
        out.push(json!({
            "resourceType": "DocumentReference", "id": format!("note-{id}-{v}"), "status": "current",
            "type": {"coding": [{"system": "http://loinc.org", "code": "11506-3", "display": "Progress note"}]},
            "subject": {"reference": pref},
            "date": instant(start + 1_800_000_000),
            "author": [{"reference": format!("Practitioner/{gp}")}],
            "content": [{"attachment": {"contentType": "text/plain", "data": base64::engine::general_purpose::STANDARD.encode(note)}}],
            "context": {"encounter": [{"reference": format!("Encounter/{enc}")}]}
        }));
    }
    for c in 0..rng.gen_range(0..=2) {
        let Some((code, display, label)) = pick(rng, CONDITIONS) else {
            continue;
        };
        let mut cond = json!({
            "resourceType": "Condition", "id": format!("cond-{id}-{c}"),
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
            "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}]},
            "subject": {"reference": pref},
            "recordedDate": day(now - rng.gen_range(30..2000i64) * DAY_US)
        });
        if let (Some(l), Some(obj)) = (label, cond.as_object_mut()) {
            obj.insert("meta".into(), json!({"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": l}]}));
        }
        out.push(cond);
        if let Some((rx, name)) =
            MEDS.get(CONDITIONS.iter().position(|x| x.0 == *code).unwrap_or(0) % MEDS.len())
        {
            out.push(json!({
                "resourceType": "MedicationRequest", "id": format!("rx-{id}-{c}"), "status": "active", "intent": "order",
                "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": rx, "display": name}]},
                "subject": {"reference": pref},
                "authoredOn": day(now - rng.gen_range(1..300i64) * DAY_US),
                "requester": {"reference": format!("Practitioner/{gp}")},
                "dosageInstruction": [{"text": "once daily"}]
            }));
        }
    }
    let start = now + rng.gen_range(1..60i64) * DAY_US + rng.gen_range(8..17i64) * 3_600_000_000;
    // The first patient has a video visit with dr.adams in ten minutes
    // (booked by the clinic, so the room opens; see docs/telehealth.md).
    let (start, gp) = if n == 0 {
        (now + 600_000_000, "pr-adams")
    } else {
        (start, gp)
    };
    out.push(json!({
        "resourceType": "Appointment", "id": format!("appt-{id}"), "status": "booked",
        "serviceType": [{"coding": [{"system": "http://snomed.info/sct", "code": "394814009", "display": "General practice"}]}],
        "start": instant(start), "end": instant(start + 1_200_000_000),
        "participant": [
            {"actor": {"reference": pref}, "status": "accepted"},
            {"actor": {"reference": format!("Practitioner/{gp}")}, "status": "accepted"}
        ]
    }));
    out
}

impl Vigil {
    /// Writes resources with their own ids (update-as-create) in one atomic
    /// commit, checking each against R4 and references among them.
    pub async fn put_many(
        &self,
        who: &Principal,
        resources: Vec<Value>,
    ) -> Result<usize, AppError> {
        // A bulk load bypasses the per-resource decisions: operators only.
        if !matches!(who, Principal::Operator) {
            return Err(AppError::Forbidden(
                "bulk loading is an operator task".into(),
            ));
        }
        let now = self.now();
        let mut pending = std::collections::BTreeSet::new();
        let mut parsed = Vec::with_capacity(resources.len());
        for r in resources {
            let rtype = r
                .get("resourceType")
                .and_then(Value::as_str)
                .and_then(ResourceType::parse)
                .ok_or_else(|| {
                    AppError::bad_request(fhir::IssueCode::NotSupported, "resource type not served")
                })?;
            let id = r
                .get("id")
                .and_then(Value::as_str)
                .and_then(|s| ResourceId::new(s).ok())
                .ok_or_else(|| {
                    AppError::bad_request(fhir::IssueCode::Required, "resource needs a valid id")
                })?;
            pending.insert((rtype, id.clone()));
            parsed.push((rtype, id, r));
        }
        for (rtype, _, r) in &parsed {
            self.check_body(*rtype, r)?;
            self.check_references(r, &pending).await?;
        }
        crate::records::retry_key_race(|| async {
            let mut unit = crate::keys::NewKeys::default();
            let mut prepared = Vec::with_capacity(parsed.len());
            for (rtype, id, r) in &parsed {
                let (version, pre, _) = self.next_version(*rtype, id, None).await?;
                prepared.push(
                    self.prepare(*rtype, id.clone(), version, pre, r.clone(), now, &mut unit)
                        .await?,
                );
            }
            let n = prepared.len();
            self.commit_prepared(
                crate::audited::WriteAudit {
                    who,
                    subtype: "import",
                    per_batch: true,
                    policy: None,
                },
                prepared,
                unit,
            )
            .await?;
            Ok(n)
        })
        .await
    }

    /// Seeds the demo clinic with `patients` patients unless already seeded.
    /// Returns `None` when the demo data was already there.
    pub async fn seed_demo(
        &self,
        patients: usize,
        seed: u64,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<Option<DemoSummary>, AppError> {
        if self.store.get_setting("demo_seeded").await?.is_some() {
            return Ok(None);
        }
        let who = Principal::Operator;
        let mut rng = StdRng::seed_from_u64(seed);
        let now = self.now().0;
        let mut total = self.put_many(&who, organisation()).await?;
        let mut batch = Vec::new();
        for n in 0..patients {
            let id = format!("pat-{n:05}");
            batch.extend(patient_record(&mut rng, &id, n, now));
            if batch.len() >= 400 || n + 1 == patients {
                total += self.put_many(&who, std::mem::take(&mut batch)).await?;
            }
            progress(n as u64 + 1, patients as u64);
        }
        self.store.put_setting("demo_seeded", b"1").await?;
        self.store.refresh_statistics().await?;
        Ok(Some(DemoSummary {
            resources: total,
            patients,
            practitioners: STAFF.len(),
        }))
    }
}

/// The accounts of the demo clinic: one per role, sharing one password that
/// is printed once. Workforce accounts enrol a second factor at first sign-in.
pub const DEMO_ACCOUNTS: &[(&str, store::Role, Option<&str>, Option<&str>)] = &[
    // username, role, practitioner, patient
    ("admin", store::Role::Administrator, None, None),
    ("privacy", store::Role::PrivacyOfficer, None, None),
    ("dr.adams", store::Role::Physician, Some("pr-adams"), None),
    ("nurse.evans", store::Role::Nurse, None, None),
    ("frontdesk", store::Role::FrontDesk, None, None),
    ("billing", store::Role::Billing, None, None),
    ("patient", store::Role::Patient, None, Some("pat-00000")),
];

impl Vigil {
    /// Creates the demo accounts (first start only) with `password`; returns
    /// whether they were created.
    pub async fn seed_demo_accounts(&self, password: &str) -> Result<bool, AppError> {
        if self.store.account_by_username("admin").await?.is_some() {
            return Ok(false);
        }
        for (username, role, practitioner, patient) in DEMO_ACCOUNTS {
            let practitioner = match practitioner {
                Some(p)
                    if self
                        .read(
                            &Principal::Operator,
                            ResourceType::Practitioner,
                            &ResourceId::new(*p).map_err(|_| AppError::Keys("demo id".into()))?,
                        )
                        .await
                        .is_ok() =>
                {
                    ResourceId::new(*p).ok()
                }
                _ => None,
            };
            let patient = match patient {
                Some(p) => Some(ResourceId::new(*p).map_err(|_| AppError::Keys("demo id".into()))?),
                None => None,
            };
            self.create_account(
                &Principal::Operator,
                crate::NewAccount {
                    username: (*username).to_owned(),
                    role: *role,
                    practitioner,
                    patient,
                    display_name: None,
                    email: Some(format!("{username}@riverside.example")),
                },
                Some(password),
            )
            .await?;
        }
        Ok(true)
    }
}
