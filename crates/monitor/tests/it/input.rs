//! The input parsers: a small CSV hospital parsed to the expected world,
//! RFC 4180 details, bad rows (refused by default, skipped on request,
//! never quoting a value), the FHIR Bulk Data path, and properties: any
//! bytes give a world or a clean error, and written rows read back.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use monitor::input::{
    BadRow, CsvSources, InputError, Loaded, ReadOptions, read_csv_dir, read_csv_sources, read_dir,
    read_fhir_dir, read_fhir_sources,
};
use monitor::model::{
    Access, Action, Address, CareTeamMember, Contact, DeptIx, Encounter, EncounterClass,
    EncounterIx, Order, Patient, PatientIx, RoleIx, User, UserIx, World,
};
use proptest::prelude::*;

const STAFF: &str = "\
staff_id,given_name,family_name,role,department,address,city,zip,hire_date,termination_date
S1,Ada,Lovelace,physician,cardiology,\"1 Main St, Apt \"\"B\"\"\",Springfield,12345,2020-01-01,
S2,Bob,Stone,nurse,cardiology,2 Elm St,Springfield,12345,2019-05-01T08:00:00Z,2024-03-01
S3,Cy,Registrar,clerk,,,,,,
";
const PATIENTS: &str = "\
patient_id,mrn,given_name,family_name,birth_date,address,city,zip,vip,deceased_date,employee_staff_id
P1,M001,Eve,Stone,1980-02-29,2 Elm St,Springfield,12345,false,,
P2,M002,Famous,Person,,\"Hill\nHouse\",Capital,99999,true,,
P3,M003,Bob,Stone,1975-07-04,2 Elm St,Springfield,12345,,2023-12-31T23:00:00-02:00,S2
";
const ENCOUNTERS: &str = "\
encounter_id,patient_id,department,class,start,end,attending_staff_id
E1,P1,cardiology,IMP,2024-01-10T09:00:00Z,2024-01-12T10:00:00Z,S1
E2,P2,emergency,emer,2024-01-11T01:30:00+01:00,,
";
const CARE_TEAM: &str = "\
patient_id,staff_id,encounter_id,role,start,end
P1,S2,E1,nurse,2024-01-10T09:00:00Z,
P2,S1,,consultant,,
";
const ORDERS: &str = "\
order_id,encounter_id,patient_id,service_department,ordered_by_staff_id,ordered_at
O1,E1,P1,radiology,S1,2024-01-10T10:00:00Z
O2,,P2,lab,,2024-01-11T02:00:00Z
";
const ACCESS_LOG: &str = "\
event_id,timestamp,staff_id,patient_id,action,resource_type,workstation,record_count
A1,2024-01-10T09:05:00Z,S1,P1,view,Observation,WS-1,
A2,2024-01-10T09:06:00.5Z,S2,P1,modify,,,3
A3,2024-01-11T03:00:00Z,S3,P2,search,Patient,WS-9,1
A3,2024-01-11T03:00:00Z,S3,P3,search,Patient,WS-9,1
";

fn sources() -> CsvSources<'static> {
    CsvSources {
        staff: STAFF.as_bytes(),
        patients: PATIENTS.as_bytes(),
        encounters: ENCOUNTERS.as_bytes(),
        care_team: CARE_TEAM.as_bytes(),
        orders: ORDERS.as_bytes(),
        access_log: ACCESS_LOG.as_bytes(),
    }
}

fn strict() -> ReadOptions {
    ReadOptions::default()
}

fn skipping() -> ReadOptions {
    ReadOptions {
        skip_bad_rows: true,
    }
}

fn expected_world() -> World {
    let addr = |line: &str, city: &str, zip: &str| Address {
        line: line.into(),
        city: city.into(),
        zip: zip.into(),
    };
    let user = |id: &str, given: &str, family: &str, role, dept, address, hire, termination| User {
        id: id.into(),
        given: given.into(),
        family: family.into(),
        role: RoleIx(role),
        department: DeptIx(dept),
        address,
        hire,
        termination,
        patient: None,
    };
    let elm = addr("2 Elm St", "Springfield", "12345");
    World {
        departments: ["cardiology", "unknown", "emergency", "radiology", "lab"]
            .map(String::from)
            .to_vec(),
        roles: ["physician", "nurse", "clerk"].map(String::from).to_vec(),
        users: vec![
            user(
                "S1",
                "Ada",
                "Lovelace",
                0,
                0,
                addr("1 Main St, Apt \"B\"", "Springfield", "12345"),
                Some(1_577_836_800),
                None,
            ),
            user(
                "S2",
                "Bob",
                "Stone",
                1,
                0,
                elm.clone(),
                Some(1_556_697_600),
                Some(1_709_251_200),
            ),
            user(
                "S3",
                "Cy",
                "Registrar",
                2,
                1,
                Address::default(),
                None,
                None,
            ),
        ],
        patients: vec![
            Patient {
                id: "P1".into(),
                mrn: "M001".into(),
                given: "Eve".into(),
                family: "Stone".into(),
                birth_date: Some("1980-02-29".into()),
                address: elm.clone(),
                vip: false,
                deceased: None,
                employee: None,
                contacts: vec![],
            },
            Patient {
                id: "P2".into(),
                mrn: "M002".into(),
                given: "Famous".into(),
                family: "Person".into(),
                birth_date: None,
                address: addr("Hill\nHouse", "Capital", "99999"),
                vip: true,
                deceased: None,
                employee: None,
                contacts: vec![],
            },
            Patient {
                id: "P3".into(),
                mrn: "M003".into(),
                given: "Bob".into(),
                family: "Stone".into(),
                birth_date: Some("1975-07-04".into()),
                address: elm,
                vip: false,
                // 2024-01-01T01:00:00Z
                deceased: Some(1_704_070_800),
                employee: Some(UserIx(1)),
                contacts: vec![],
            },
        ],
        encounters: vec![
            Encounter {
                id: "E1".into(),
                patient: PatientIx(0),
                department: DeptIx(0),
                class: EncounterClass::Inpatient,
                start: 1_704_877_200,
                end: Some(1_705_053_600),
                attending: Some(UserIx(0)),
            },
            Encounter {
                id: "E2".into(),
                patient: PatientIx(1),
                department: DeptIx(2),
                class: EncounterClass::Emergency,
                start: 1_704_933_000,
                end: None,
                attending: None,
            },
        ],
        care_team: vec![
            CareTeamMember {
                patient: PatientIx(0),
                user: UserIx(1),
                encounter: Some(EncounterIx(0)),
                role: "nurse".into(),
                start: Some(1_704_877_200),
                end: None,
            },
            CareTeamMember {
                patient: PatientIx(1),
                user: UserIx(0),
                encounter: None,
                role: "consultant".into(),
                start: None,
                end: None,
            },
        ],
        orders: vec![
            Order {
                id: "O1".into(),
                encounter: Some(EncounterIx(0)),
                patient: PatientIx(0),
                service_department: DeptIx(3),
                ordered_by: Some(UserIx(0)),
                at: 1_704_880_800,
            },
            Order {
                id: "O2".into(),
                encounter: None,
                patient: PatientIx(1),
                service_department: DeptIx(4),
                ordered_by: None,
                at: 1_704_938_400,
            },
        ],
        grants: vec![],
        accesses: vec![
            access(
                "A1",
                1_704_877_500,
                0,
                0,
                Action::View,
                "Observation",
                "WS-1",
                1,
            ),
            access("A2", 1_704_877_560, 1, 0, Action::Modify, "", "", 3),
            access(
                "A3",
                1_704_942_000,
                2,
                1,
                Action::Search,
                "Patient",
                "WS-9",
                1,
            ),
            access(
                "A3",
                1_704_942_000,
                2,
                2,
                Action::Search,
                "Patient",
                "WS-9",
                1,
            ),
        ],
    }
}

#[expect(clippy::too_many_arguments, reason = "a row of the expected table")]
fn access(
    id: &str,
    time: i64,
    user: u32,
    patient: u32,
    action: Action,
    resource_type: &str,
    workstation: &str,
    record_count: u32,
) -> Access {
    Access {
        event_id: id.into(),
        time,
        user: UserIx(user),
        patient: PatientIx(patient),
        action,
        resource_type: resource_type.into(),
        workstation: workstation.into(),
        record_count,
        emergency: false,
        refused: false,
    }
}

/// A fresh directory under the system's temporary directory.
fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!(
        "vigil-input-{name}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_csv_dir(name: &str, s: &CsvSources<'_>) -> PathBuf {
    let dir = temp_dir(name);
    for (file, bytes) in [
        ("staff.csv", s.staff),
        ("patients.csv", s.patients),
        ("encounters.csv", s.encounters),
        ("care_team.csv", s.care_team),
        ("orders.csv", s.orders),
        ("access_log.csv", s.access_log),
    ] {
        std::fs::write(dir.join(file), bytes).unwrap();
    }
    dir
}

fn no_progress() -> impl FnMut(u64, u64) {
    |_, _| {}
}

#[test]
fn a_small_hospital_parses_to_the_expected_world() {
    let dir = write_csv_dir("small", &sources());
    let mut calls = Vec::new();
    let loaded = read_csv_dir(&dir, &strict(), &mut |done, total| {
        calls.push((done, total))
    })
    .unwrap();
    let total: usize = [STAFF, PATIENTS, ENCOUNTERS, CARE_TEAM, ORDERS, ACCESS_LOG]
        .iter()
        .map(|s| s.len())
        .sum();
    assert_eq!(loaded.world, expected_world());
    assert_eq!(loaded.world.check(), Ok(()));
    assert!(loaded.skipped.is_empty());
    assert_eq!(loaded.bytes, total as u64);
    assert_eq!(loaded.rows, 3 + 3 + 2 + 2 + 2 + 4);
    assert_eq!(calls.last(), Some(&(total as u64, total as u64)));
    // read_dir sees the CSV layout; from memory gives the same.
    let again = read_dir(&dir, &strict(), &mut no_progress()).unwrap();
    assert_eq!(again.world, expected_world());
    let mem = read_csv_sources(&sources(), &strict(), &mut no_progress()).unwrap();
    assert_eq!(mem, loaded);
    std::fs::remove_dir_all(dir).unwrap();
}

/// The fixture with a byte order mark and CRLF line endings everywhere,
/// including inside quoted fields (where they are data).
#[test]
fn bom_and_crlf() {
    let crlf = |s: &str| format!("\u{feff}{}", s.replace('\n', "\r\n")).into_bytes();
    let files = [STAFF, PATIENTS, ENCOUNTERS, CARE_TEAM, ORDERS, ACCESS_LOG].map(crlf);
    let [staff, patients, encounters, care_team, orders, access_log] = &files;
    let s = CsvSources {
        staff,
        patients,
        encounters,
        care_team,
        orders,
        access_log,
    };
    let loaded = read_csv_sources(&s, &strict(), &mut no_progress()).unwrap();
    let mut want = expected_world();
    want.patients[1].address.line = "Hill\r\nHouse".into();
    assert_eq!(loaded.world, want);
}

#[test]
fn blank_lines_and_a_missing_final_newline_are_fine() {
    let staff = format!("{}\n\r\n", STAFF.replace("S2,", "\nS2,"));
    let access = ACCESS_LOG.trim_end();
    let s = CsvSources {
        staff: staff.as_bytes(),
        access_log: access.as_bytes(),
        ..sources()
    };
    let loaded = read_csv_sources(&s, &strict(), &mut no_progress()).unwrap();
    assert_eq!(loaded.world, expected_world());
}

#[test]
fn header_only_access_log_is_fine() {
    let s = CsvSources {
        access_log: ACCESS_LOG.lines().next().unwrap().as_bytes(),
        ..sources()
    };
    let loaded = read_csv_sources(&s, &strict(), &mut no_progress()).unwrap();
    assert!(loaded.world.accesses.is_empty());
    assert_eq!(loaded.world.users.len(), 3);
}

#[test]
fn a_wrong_header_is_refused_without_showing_data() {
    let staff = STAFF.replacen("family_name", "surname", 1);
    let s = CsvSources {
        staff: staff.as_bytes(),
        ..sources()
    };
    match read_csv_sources(&s, &strict(), &mut no_progress()) {
        Err(InputError::Header {
            file,
            expected,
            found,
        }) => {
            assert_eq!(file, "staff.csv");
            assert_eq!(expected, STAFF.lines().next().unwrap());
            assert_eq!(
                found,
                "staff_id,given_name,?,role,department,address,city,zip,hire_date,termination_date"
            );
        }
        other => panic!("{other:?}"),
    }
    // A file without a header: its first row must not be echoed.
    let headless = STAFF.lines().skip(1).collect::<Vec<_>>().join("\n");
    let s = CsvSources {
        staff: headless.as_bytes(),
        ..sources()
    };
    let err = read_csv_sources(&s, &strict(), &mut no_progress()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, InputError::Header { .. }), "{err:?}");
    assert!(
        !text.contains("Lovelace") && !text.contains("Ada"),
        "{text}"
    );
    // An empty file has no header either.
    let s = CsvSources {
        orders: b"",
        ..sources()
    };
    let err = read_csv_sources(&s, &strict(), &mut no_progress()).unwrap_err();
    assert!(matches!(err, InputError::Header { ref file, .. } if file == "orders.csv"));
}

#[test]
fn a_missing_file_is_named() {
    let dir = write_csv_dir("missing", &sources());
    std::fs::remove_file(dir.join("orders.csv")).unwrap();
    let err = read_csv_dir(&dir, &strict(), &mut no_progress()).unwrap_err();
    assert!(
        matches!(err, InputError::MissingFile { ref file } if file == "orders.csv"),
        "{err:?}"
    );
    let empty = temp_dir("empty");
    let err = read_dir(&empty, &strict(), &mut no_progress()).unwrap_err();
    assert!(matches!(err, InputError::UnknownLayout { .. }), "{err:?}");
    std::fs::remove_dir_all(dir).unwrap();
    std::fs::remove_dir_all(empty).unwrap();
}

/// One malformed row: which file, the row that replaces a good one (or is
/// added), the line it is reported on, the column named, and a value that
/// must not appear in the message.
struct Case {
    file: &'static str,
    replace: &'static str,
    with: &'static str,
    line: u64,
    column: &'static str,
    secret: &'static str,
}

const CASES: &[Case] = &[
    Case {
        file: "access_log.csv",
        replace: "A1,2024-01-10T09:05:00Z,",
        with: "A1,10/01/2024 9:05 Lovelace,",
        line: 2,
        column: "timestamp: not an RFC 3339 timestamp",
        secret: "Lovelace",
    },
    Case {
        file: "access_log.csv",
        replace: ",S2,P1,modify,",
        with: ",S2,P1,peekatneighbour,",
        line: 3,
        column: "action:",
        secret: "peekatneighbour",
    },
    Case {
        file: "access_log.csv",
        replace: ",S1,P1,view,",
        with: ",S1,,view,",
        line: 2,
        column: "patient_id: missing",
        secret: "A1",
    },
    Case {
        file: "access_log.csv",
        replace: ",Observation,WS-1,\n",
        with: ",Observation,WS-1,many4242\n",
        line: 2,
        column: "record_count:",
        secret: "many4242",
    },
    Case {
        file: "patients.csv",
        replace: ",false,,\n",
        with: ",yesVIP,,\n",
        line: 2,
        column: "vip: not true or false",
        secret: "yesVIP",
    },
    Case {
        file: "care_team.csv",
        replace: "P2,S1,,",
        with: "P2,S9Ghost,,",
        line: 3,
        column: "staff_id: unknown staff id",
        secret: "S9Ghost",
    },
    Case {
        file: "orders.csv",
        replace: "O2,,P2,",
        with: "O1,,P2,",
        line: 3,
        column: "order_id: duplicate id",
        secret: "O1",
    },
    Case {
        file: "encounters.csv",
        replace: "E2,P2,emergency,emer,2024-01-11T01:30:00+01:00,,\n",
        with: "E2,P2,emergency,emer,2024-01-11T01:30:00+01:00,,,Extra99\n",
        line: 3,
        column: "row has 8 fields, expected 7",
        secret: "Extra99",
    },
    Case {
        file: "encounters.csv",
        replace: "2024-01-12T10:00:00Z,S1",
        with: "2024-01-09T10:00:00Z,S1",
        line: 2,
        column: "end: before start",
        secret: "2024-01-09",
    },
    Case {
        file: "staff.csv",
        replace: "S3,Cy,Registrar,",
        with: "S3,Cy,Regi\"strar,",
        line: 4,
        column: "family_name: a quote",
        secret: "Regi",
    },
    Case {
        file: "patients.csv",
        replace: "P3,M003,Bob,Stone,1975-07-04,",
        with: "P3,M003,Bob,Stone,04/07/1975,",
        line: 5,
        column: "birth_date: not a date",
        secret: "04/07/1975",
    },
];

fn with_case(case: &Case) -> Vec<Vec<u8>> {
    let names = [
        "staff.csv",
        "patients.csv",
        "encounters.csv",
        "care_team.csv",
        "orders.csv",
        "access_log.csv",
    ];
    names
        .iter()
        .zip([STAFF, PATIENTS, ENCOUNTERS, CARE_TEAM, ORDERS, ACCESS_LOG])
        .map(|(name, text)| {
            if *name == case.file {
                assert!(text.contains(case.replace), "{}", case.replace);
                text.replacen(case.replace, case.with, 1).into_bytes()
            } else {
                text.as_bytes().to_vec()
            }
        })
        .collect()
}

fn as_sources(files: &[Vec<u8>]) -> CsvSources<'_> {
    CsvSources {
        staff: &files[0],
        patients: &files[1],
        encounters: &files[2],
        care_team: &files[3],
        orders: &files[4],
        access_log: &files[5],
    }
}

#[test]
fn malformed_rows_are_refused_by_default_and_named_without_their_values() {
    for case in CASES {
        let files = with_case(case);
        let err = read_csv_sources(&as_sources(&files), &strict(), &mut no_progress()).unwrap_err();
        let InputError::BadRows { rows, total } = &err else {
            panic!("{}: {err:?}", case.with);
        };
        assert_eq!(*total, 1, "{}: {rows:?}", case.with);
        let row = &rows[0];
        assert_eq!(
            (row.file.as_str(), row.line),
            (case.file, case.line),
            "{row}"
        );
        assert!(row.message.contains(case.column), "{row}");
        assert!(!row.to_string().contains(case.secret), "{row}");
        assert!(!err.to_string().contains(case.secret), "{err}");
    }
}

#[test]
fn malformed_rows_are_skipped_and_reported_on_request() {
    for case in CASES {
        let files = with_case(case);
        let loaded = read_csv_sources(&as_sources(&files), &skipping(), &mut no_progress())
            .unwrap_or_else(|e| panic!("{}: {e:?}", case.with));
        assert_eq!(loaded.world.check(), Ok(()));
        let lines: Vec<_> = loaded
            .skipped
            .iter()
            .map(|b| (b.file.as_str(), b.line))
            .collect();
        assert!(
            lines.contains(&(case.file, case.line)),
            "{}: {lines:?}",
            case.with
        );
        for b in &loaded.skipped {
            assert!(!b.message.contains(case.secret), "{b}");
        }
    }
}

#[test]
fn skipping_a_row_makes_rows_that_refer_to_it_bad_too() {
    // P1's birth date is bad: by default only that row is reported…
    let patients = PATIENTS.replacen("1980-02-29", "1980-02-30", 1);
    let s = CsvSources {
        patients: patients.as_bytes(),
        ..sources()
    };
    let err = read_csv_sources(&s, &strict(), &mut no_progress()).unwrap_err();
    let InputError::BadRows { rows, total } = err else {
        panic!()
    };
    assert_eq!(total, 1);
    assert_eq!(
        rows[0].to_string(),
        "patients.csv:2: birth_date: not a date (YYYY-MM-DD)"
    );
    // …but skipping it leaves E1, its care team, O1, A1 and A2 dangling:
    // each is reported, none is dropped silently.
    let loaded = read_csv_sources(&s, &skipping(), &mut no_progress()).unwrap();
    let shown: Vec<String> = loaded.skipped.iter().map(BadRow::to_string).collect();
    assert_eq!(
        shown,
        [
            "patients.csv:2: birth_date: not a date (YYYY-MM-DD)",
            "encounters.csv:2: patient_id: unknown patient id",
            "care_team.csv:2: patient_id: unknown patient id",
            "orders.csv:2: patient_id: unknown patient id",
            "access_log.csv:2: patient_id: unknown patient id",
            "access_log.csv:3: patient_id: unknown patient id",
        ]
    );
    assert_eq!(loaded.world.check(), Ok(()));
    assert_eq!(loaded.world.patients.len(), 2);
    assert_eq!(loaded.world.accesses.len(), 2);
}

#[test]
fn lines_are_counted_through_quoted_newlines() {
    // P2's address spans lines 3-4, so P3 starts on line 5.
    let patients = PATIENTS.replacen(",S2\n", ",S404\n", 1);
    let s = CsvSources {
        patients: patients.as_bytes(),
        ..sources()
    };
    let err = read_csv_sources(&s, &strict(), &mut no_progress()).unwrap_err();
    let InputError::BadRows { rows, .. } = err else {
        panic!()
    };
    assert_eq!(
        rows[0].to_string(),
        "patients.csv:5: employee_staff_id: unknown staff id"
    );
}

#[test]
fn long_fields_and_unterminated_quotes_are_bad_rows() {
    let long = "x".repeat(5000);
    let access = format!(
        "{ACCESS_LOG}A4,2024-01-10T09:05:00Z,S1,P1,view,{long},,\nA5,2024-01-10T09:05:00Z,S1,P1,view,\"open,,\n"
    );
    let s = CsvSources {
        access_log: access.as_bytes(),
        ..sources()
    };
    let loaded = read_csv_sources(&s, &skipping(), &mut no_progress()).unwrap();
    let shown: Vec<String> = loaded.skipped.iter().map(BadRow::to_string).collect();
    assert_eq!(
        shown,
        [
            "access_log.csv:6: resource_type: field longer than 4096 bytes",
            "access_log.csv:7: unterminated quoted field",
        ]
    );
    assert_eq!(loaded.world.accesses.len(), 4);
}

#[test]
fn many_bad_rows_are_capped_and_counted() {
    let mut access = ACCESS_LOG.to_owned();
    for i in 0..1500 {
        access.push_str(&format!("B{i},never,S1,P1,view,,,\n"));
    }
    let s = CsvSources {
        access_log: access.as_bytes(),
        ..sources()
    };
    let err = read_csv_sources(&s, &strict(), &mut no_progress()).unwrap_err();
    let InputError::BadRows { rows, total } = err else {
        panic!()
    };
    assert_eq!((rows.len(), total), (1000, 1500));
    let loaded = read_csv_sources(&s, &skipping(), &mut no_progress()).unwrap();
    assert_eq!(loaded.skipped.len(), 1500);
    assert_eq!(loaded.rows, 16 + 1500);
}

// ---------------------------------------------------------------------------
// FHIR.

const PRACTITIONERS: &str = r#"{"resourceType":"Practitioner","id":"pr1","name":[{"family":"Lovelace","given":["Ada","K"]}],"address":[{"line":["1 Main St","Apt B"],"city":"Springfield","postalCode":"12345"}]}
{"resourceType":"Practitioner","id":"pr2","name":[{"family":"Stone","given":["Bob"]}]}
{"resourceType":"Practitioner","id":"pr3"}
{"resourceType":"PractitionerRole","id":"role1","practitioner":{"reference":"Practitioner/pr1"},"code":[{"coding":[{"code":"physician"}]}],"specialty":[{"coding":[{"code":"394579002","display":"cardiology"}]}],"period":{"start":"2020-01-01"}}
{"resourceType":"PractitionerRole","id":"role2","practitioner":{"reference":"Practitioner/pr2"},"active":false,"code":[{"text":"nurse"}],"specialty":[{"text":"cardiology"}],"period":{"start":"2019-05-01T08:00:00Z","end":"2024-03-01"}}
"#;

const FHIR_PATIENTS: &str = r#"{"resourceType":"Patient","id":"pa1","meta":{"lastUpdated":"2024-02-01T00:00:00Z"},"identifier":[{"type":{"coding":[{"code":"MR"}]},"value":"M001"}],"name":[{"family":"Stone","given":["Eve"]}],"birthDate":"1980-02-29","address":[{"line":["2 Elm St"],"city":"Springfield","postalCode":"12345"}],"contact":[{"name":{"family":"Stone","given":["Bob"]},"address":{"line":["2 Elm St"],"city":"Springfield"}}]}
{"resourceType":"Patient","id":"pa2","meta":{"security":[{"system":"http://terminology.hl7.org/CodeSystem/v3-Confidentiality","code":"R"}],"lastUpdated":"2024-02-01T00:00:00Z"},"deceasedBoolean":true}
{"resourceType":"Patient","id":"pa3","identifier":[{"type":{"coding":[{"code":"EI"}]},"value":"pr2"}],"deceasedDateTime":"2023-12-31T23:00:00-02:00"}
this is not json {"name": "Secret Person"}
{"resourceType":"Observation","id":"ob1","subject":{"reference":"Patient/nobody"}}
"#;

const CLINICAL: &str = r#"{"resourceType":"Encounter","id":"en1","subject":{"reference":"Patient/pa1"},"class":{"code":"IMP"},"period":{"start":"2024-01-10T09:00:00Z","end":"2024-01-12T10:00:00Z"},"serviceType":{"coding":[{"display":"cardiology"}]},"participant":[{"type":[{"coding":[{"code":"ATND"}]}],"individual":{"reference":"Practitioner/pr1"}},{"type":[{"coding":[{"code":"PART"}]}],"individual":{"reference":"PractitionerRole/role2"}}]}
{"resourceType":"Encounter","id":"en2","subject":{"reference":"Patient/pa2"},"class":{"code":"VR"},"period":{"start":"2024-01-11T00:30:00Z"}}
{"resourceType":"Encounter","id":"en3","subject":{"reference":"Patient/pa9"},"period":{"start":"2024-01-11T00:30:00Z"}}
{"resourceType":"CareTeam","id":"ct1","subject":{"reference":"Patient/pa2"},"encounter":{"reference":"Encounter/en2"},"period":{"start":"2024-01-11T00:30:00Z"},"participant":[{"member":{"reference":"Practitioner/pr1"},"role":[{"text":"consultant"}]},{"member":{"reference":"RelatedPerson/rp1"}}]}
{"resourceType":"ServiceRequest","id":"sr1","subject":{"reference":"Patient/pa1"},"encounter":{"reference":"Encounter/en1"},"performerType":{"coding":[{"display":"radiology"}]},"requester":{"reference":"Practitioner/pr1"},"authoredOn":"2024-01-10T10:00:00Z"}
{"resourceType":"ServiceRequest","id":"sr2","subject":{"reference":"Patient/pa1"},"performer":[{"display":"lab"}]}
"#;

const AUDIT: &str = r#"{"resourceType":"AuditEvent","id":"ae1","action":"R","recorded":"2024-01-10T09:05:00Z","outcome":"0","agent":[{"requestor":true,"who":{"reference":"Practitioner/pr1"},"network":{"address":"WS-1"}}],"entity":[{"what":{"reference":"Patient/pa1"}},{"what":{"reference":"Observation/ob1"}}]}
{"resourceType":"AuditEvent","id":"ae2","action":"E","subtype":[{"code":"export"}],"recorded":"2024-01-11T03:00:00+01:00","outcome":"4","purposeOfEvent":[{"coding":[{"code":"BTG"}]}],"agent":[{"requestor":false,"who":{"reference":"Device/d1"}},{"requestor":true,"who":{"reference":"http://ehr.example/fhir/Practitioner/pr2/_history/3"}}],"entity":[{"what":{"reference":"Patient/pa2"}},{"what":{"reference":"Patient/pa3"}},{"what":{"reference":"Patient/pa2"}}]}
{"resourceType":"AuditEvent","id":"ae3","type":{"code":"110114"},"action":"E","recorded":"2024-01-11T03:00:00Z","agent":[{"requestor":true,"who":{"reference":"Practitioner/pr3"}}]}
{"resourceType":"AuditEvent","id":"ae4","action":"R","recorded":"2024-01-12T03:00:00Z","agent":[{"requestor":true,"who":{"reference":"Patient/pa1"}}],"entity":[{"what":{"reference":"Patient/pa1"}}]}
{"resourceType":"AuditEvent","id":"ae5","action":"R","recorded":"2024-01-12T03:00:00Z","agent":[{"requestor":true,"who":{"reference":"Practitioner/ghost"}}],"entity":[{"what":{"reference":"Patient/pa1"}}]}
"#;

fn fhir_files() -> [(&'static str, &'static [u8]); 4] {
    [
        ("AuditEvent.ndjson", AUDIT.as_bytes()),
        ("Clinical.ndjson", CLINICAL.as_bytes()),
        ("Patient.ndjson", FHIR_PATIENTS.as_bytes()),
        ("Practitioner.ndjson", PRACTITIONERS.as_bytes()),
    ]
}

fn fhir_bad_rows() -> Vec<String> {
    [
        "AuditEvent.ndjson:5: agent.who: refers to a Practitioner or PractitionerRole not in the export",
        "Clinical.ndjson:3: subject: refers to a Patient not in the export",
        "Clinical.ndjson:6: authoredOn: missing",
        "Patient.ndjson:4: not valid JSON (at column 2)",
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn fhir_bad_lines_refuse_the_input_by_default() {
    let err = read_fhir_sources(&fhir_files(), &strict(), &mut no_progress()).unwrap_err();
    let InputError::BadRows { rows, total } = err else {
        panic!("{err:?}")
    };
    let shown: Vec<String> = rows.iter().map(BadRow::to_string).collect();
    assert_eq!(shown, fhir_bad_rows());
    assert_eq!(total, 4);
    assert!(
        shown
            .iter()
            .all(|s| !s.contains("Secret") && !s.contains("ghost"))
    );
}

#[test]
fn fhir_resources_map_to_the_world() {
    let dir = temp_dir("fhir");
    for (name, bytes) in fhir_files() {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    std::fs::write(dir.join("notes.txt"), "not read").unwrap();
    let loaded = read_dir(&dir, &skipping(), &mut no_progress()).unwrap();
    assert_eq!(
        loaded,
        read_fhir_dir(&dir, &skipping(), &mut no_progress()).unwrap()
    );
    std::fs::remove_dir_all(&dir).unwrap();
    let shown: Vec<String> = loaded.skipped.iter().map(BadRow::to_string).collect();
    assert_eq!(shown, fhir_bad_rows());
    let w = &loaded.world;
    assert_eq!(w.check(), Ok(()));

    // Users: the three practitioners, then pa1 using their own account.
    let ids: Vec<&str> = w.users.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids, ["pr1", "pr2", "pr3", "Patient/pa1"]);
    let role = |u: &User| w.roles[u.role.ix()].as_str();
    let dept = |d: DeptIx| w.departments[d.ix()].as_str();
    let (ada, bob, nobody, pa1) = (&w.users[0], &w.users[1], &w.users[2], &w.users[3]);
    assert_eq!(
        (ada.given.as_str(), ada.family.as_str()),
        ("Ada K", "Lovelace")
    );
    assert_eq!(ada.address.line, "1 Main St, Apt B");
    assert_eq!(
        (role(ada), dept(ada.department)),
        ("physician", "cardiology")
    );
    assert_eq!((ada.hire, ada.termination), (Some(1_577_836_800), None));
    assert_eq!((role(bob), dept(bob.department)), ("nurse", "cardiology"));
    assert_eq!(
        (bob.hire, bob.termination),
        (Some(1_556_697_600), Some(1_709_251_200))
    );
    assert_eq!(
        (role(nobody), dept(nobody.department)),
        ("unknown", "unknown")
    );
    assert_eq!((role(pa1), pa1.patient), ("patient", Some(PatientIx(0))));

    // Patients.
    let p = &w.patients;
    assert_eq!(p.len(), 3);
    assert_eq!(
        (p[0].mrn.as_str(), p[0].birth_date.as_deref()),
        ("M001", Some("1980-02-29"))
    );
    assert_eq!(
        p[0].contacts,
        [Contact {
            given: "Bob".into(),
            family: "Stone".into(),
            address: Address {
                line: "2 Elm St".into(),
                city: "Springfield".into(),
                zip: String::new(),
            },
        }]
    );
    assert!(!p[0].vip && p[1].vip);
    assert_eq!(
        p[1].deceased,
        Some(1_706_745_600),
        "deceasedBoolean: lastUpdated"
    );
    assert_eq!(
        (p[2].deceased, p[2].employee),
        (Some(1_704_070_800), Some(UserIx(1)))
    );

    // Encounters, with the non-attending participant as care team.
    assert_eq!(w.encounters.len(), 2);
    let en1 = &w.encounters[0];
    assert_eq!(
        (en1.class, dept(en1.department), en1.attending),
        (EncounterClass::Inpatient, "cardiology", Some(UserIx(0)))
    );
    let en2 = &w.encounters[1];
    assert_eq!(
        (en2.class, dept(en2.department), en2.end),
        (EncounterClass::Virtual, "unknown", None)
    );
    assert_eq!(
        w.care_team,
        [
            CareTeamMember {
                patient: PatientIx(0),
                user: UserIx(1),
                encounter: Some(EncounterIx(0)),
                role: "PART".into(),
                start: Some(1_704_877_200),
                end: Some(1_705_053_600),
            },
            CareTeamMember {
                patient: PatientIx(1),
                user: UserIx(0),
                encounter: Some(EncounterIx(1)),
                role: "consultant".into(),
                start: Some(1_704_933_000),
                end: None,
            },
        ]
    );
    assert_eq!(w.orders.len(), 1);
    assert_eq!(
        (
            dept(w.orders[0].service_department),
            w.orders[0].ordered_by,
            w.orders[0].encounter
        ),
        ("radiology", Some(UserIx(0)), Some(EncounterIx(0)))
    );

    // Accesses: one per patient entity; the login (no patient) is not one.
    let a: Vec<_> = w
        .accesses
        .iter()
        .map(|a| {
            (
                a.event_id.as_str(),
                a.user.0,
                a.patient.0,
                a.action,
                a.emergency,
                a.refused,
            )
        })
        .collect();
    assert_eq!(
        a,
        [
            ("ae1", 0, 0, Action::View, false, false),
            ("ae2", 1, 1, Action::Export, true, true),
            ("ae2", 1, 2, Action::Export, true, true),
            ("ae4", 3, 0, Action::View, false, false),
        ]
    );
    assert_eq!(
        (
            w.accesses[0].resource_type.as_str(),
            w.accesses[0].workstation.as_str()
        ),
        ("Observation", "WS-1")
    );
    assert_eq!(w.accesses[1].time, 1_704_938_400);
}

// ---------------------------------------------------------------------------
// Properties.

fn quote(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

fn csv(header: &str, rows: &[Vec<String>]) -> String {
    let mut out = format!("{header}\r\n");
    for row in rows {
        let fields: Vec<String> = row.iter().map(|f| quote(f)).collect();
        out.push_str(&fields.join(","));
        out.push_str("\r\n");
    }
    out
}

fn header(text: &str) -> &str {
    text.lines().next().unwrap()
}

/// Any text a field can hold: quotes, separators, line breaks, non-ASCII.
fn text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-zA-Z0-9 ,\"\r\n'é€-]{0,12}").unwrap()
}

fn nonempty() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-zA-Z0-9 ,\"\r\n'é€-]{1,12}").unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Arbitrary bytes in any one file never panic: they give a world that
    /// passes `World::check`, or a clean error.
    #[test]
    fn arbitrary_bytes_never_panic(
        which in 0usize..6,
        junk in proptest::collection::vec(any::<u8>(), 0..400),
        keep_header in any::<bool>(),
        skip in any::<bool>(),
    ) {
        let mut files: Vec<Vec<u8>> = [STAFF, PATIENTS, ENCOUNTERS, CARE_TEAM, ORDERS, ACCESS_LOG]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        let file = &mut files[which];
        if keep_header {
            file.extend_from_slice(&junk);
        } else {
            *file = junk;
        }
        let opts = ReadOptions { skip_bad_rows: skip };
        match read_csv_sources(&as_sources(&files), &opts, &mut no_progress()) {
            Ok(Loaded { world, .. }) => prop_assert_eq!(world.check(), Ok(())),
            Err(InputError::Header { .. } | InputError::BadRows { .. }) => {}
            Err(e) => prop_assert!(false, "unexpected error {e:?}"),
        }
    }

    /// Arbitrary bytes as NDJSON never panic either.
    #[test]
    fn arbitrary_ndjson_never_panics(
        junk in proptest::collection::vec(any::<u8>(), 0..400),
        at in 0usize..4,
        skip in any::<bool>(),
    ) {
        let mut files = fhir_files().map(|(n, b)| (n, b.to_vec()));
        files[at].1.extend_from_slice(&junk);
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
        let opts = ReadOptions { skip_bad_rows: skip };
        if let Ok(loaded) = read_fhir_sources(&refs, &opts, &mut no_progress()) {
            prop_assert_eq!(loaded.world.check(), Ok(()));
        }
    }

    /// Rows written with RFC 4180 quoting read back as they were written.
    #[test]
    fn written_rows_read_back(
        staff in proptest::collection::vec(
            (nonempty(), text(), text(), nonempty(), nonempty(), text(), text(), text(),
             proptest::option::of(0i64..4_000_000_000)),
            1..6),
        patients in proptest::collection::vec(
            (nonempty(), text(), text(), text(), any::<bool>(), proptest::option::of(any::<usize>())),
            1..6),
        accesses in proptest::collection::vec(
            (nonempty(), 0i64..4_000_000_000, any::<usize>(), any::<usize>(), 0usize..5, text(), text(), any::<u32>()),
            0..12),
    ) {
        let mut seen = std::collections::HashSet::new();
        let staff: Vec<_> = staff.into_iter().filter(|s| seen.insert(s.0.clone())).collect();
        let mut seen = std::collections::HashSet::new();
        let patients: Vec<_> = patients.into_iter().filter(|p| seen.insert(p.0.clone())).collect();
        let mut seen = std::collections::HashSet::new();
        let accesses: Vec<_> = accesses
            .into_iter()
            .filter(|a| seen.insert((a.0.clone(), a.3 % patients.len())))
            .collect();
        let stamp = |t: i64| jiff::Timestamp::from_second(t).unwrap().to_string();

        let mut want = World::default();
        let staff_rows: Vec<Vec<String>> = staff
            .iter()
            .map(|(id, given, family, role, dept, line, city, zip, hire)| {
                let (role_ix, dept_ix) = (want.role(role), want.department(dept));
                want.users.push(User {
                    id: id.clone(),
                    given: given.clone(),
                    family: family.clone(),
                    role: role_ix,
                    department: dept_ix,
                    address: Address { line: line.clone(), city: city.clone(), zip: zip.clone() },
                    hire: *hire,
                    termination: None,
                    patient: None,
                });
                vec![id.clone(), given.clone(), family.clone(), role.clone(), dept.clone(),
                     line.clone(), city.clone(), zip.clone(),
                     hire.map(stamp).unwrap_or_default(), String::new()]
            })
            .collect();
        let patient_rows: Vec<Vec<String>> = patients
            .iter()
            .map(|(id, mrn, given, family, vip, employee)| {
                let employee = employee.map(|e| e % staff.len());
                want.patients.push(Patient {
                    id: id.clone(),
                    mrn: mrn.clone(),
                    given: given.clone(),
                    family: family.clone(),
                    birth_date: None,
                    address: Address::default(),
                    vip: *vip,
                    deceased: None,
                    employee: employee.map(|e| UserIx(e as u32)),
                    contacts: vec![],
                });
                vec![id.clone(), mrn.clone(), given.clone(), family.clone(), String::new(),
                     String::new(), String::new(), String::new(), vip.to_string(), String::new(),
                     employee.map(|e| staff[e].0.clone()).unwrap_or_default()]
            })
            .collect();
        let actions = [Action::View, Action::Modify, Action::Print, Action::Export, Action::Search];
        let access_rows: Vec<Vec<String>> = accesses
            .iter()
            .map(|(id, t, user, patient, action, rtype, ws, count)| {
                let (user, patient) = (user % staff.len(), patient % patients.len());
                want.accesses.push(access(id, *t, user as u32, patient as u32, actions[*action], rtype, ws, *count));
                vec![id.clone(), stamp(*t), staff[user].0.clone(), patients[patient].0.clone(),
                     actions[*action].as_str().to_owned(), rtype.clone(), ws.clone(), count.to_string()]
            })
            .collect();

        let files = [
            csv(header(STAFF), &staff_rows),
            csv(header(PATIENTS), &patient_rows),
            csv(header(ENCOUNTERS), &[]),
            csv(header(CARE_TEAM), &[]),
            csv(header(ORDERS), &[]),
            csv(header(ACCESS_LOG), &access_rows),
        ]
        .map(String::into_bytes);
        let loaded = read_csv_sources(&as_sources(&files), &strict(), &mut no_progress());
        let loaded = loaded.map_err(|e| format!("{e:?}"));
        prop_assert_eq!(loaded.map(|l| l.world), Ok(want));
    }
}

#[test]
fn progress_is_reported_every_64_kib_and_at_the_end() {
    let mut access = ACCESS_LOG.to_owned();
    for i in 0..20_000 {
        access.push_str(&format!(
            "X{i},2024-01-10T09:05:00Z,S1,P1,view,Observation,WS-1,1\n"
        ));
    }
    let s = CsvSources {
        access_log: access.as_bytes(),
        ..sources()
    };
    let mut calls = Vec::new();
    let loaded =
        read_csv_sources(&s, &strict(), &mut |done, total| calls.push((done, total))).unwrap();
    assert_eq!(loaded.world.accesses.len(), 20_004);
    let total = loaded.bytes;
    assert!(total > 1_000_000);
    assert!(
        calls.len() as u64 <= total / 65_536 + 2,
        "{} calls",
        calls.len()
    );
    assert!(calls.len() >= 10);
    assert!(
        calls
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[1].0 - w[0].0 >= 65_536 || w[1].0 == total)
    );
    assert!(calls.iter().all(|&(_, t)| t == total));
    assert_eq!(calls.last(), Some(&(total, total)));
}
