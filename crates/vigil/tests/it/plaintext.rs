//! Done-means 2: after creating a patient with a unique name, MRN, birth date,
//! phone and a note, none of those strings appears in any letter case in the
//! database files (SQLite main/WAL/shm; PostgreSQL tables and WAL after a
//! CHECKPOINT) nor in Vigil's logs.

use serde_json::json;
use sqlx::Connection;

use crate::harness::{PgDb, Scratch, Server, files_under, find_plaintext};

const FAMILY: &str = "Zyxwquorthy";
const GIVEN: &str = "Qelbarnise";
const MRN: &str = "MRN-84726193";
const BIRTH: &str = "1937-08-19";
const PHONE: &str = "+1-555-739-2846";
const NOTE: &str = "Vexmarplotine dosage reviewed with daughter";

fn needles() -> Vec<&'static str> {
    vec![FAMILY, GIVEN, MRN, BIRTH, PHONE, NOTE, "Vexmarplotine"]
}

async fn write_and_search(s: &Server) {
    let p = json!({
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:1.2.3", "value": MRN}],
        "name": [{"family": FAMILY, "given": [GIVEN]}],
        "telecom": [{"system": "phone", "value": PHONE}],
        "birthDate": BIRTH
    });
    let (st, body) = s.call("POST", "/fhir/Patient", Some(&p)).await;
    assert_eq!(st, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let obs = json!({
        "resourceType": "Observation", "status": "final", "code": {"text": "medication review"},
        "subject": {"reference": format!("Patient/{id}")},
        "note": [{"text": NOTE}]
    });
    let (st, body) = s.call("POST", "/fhir/Observation", Some(&obs)).await;
    assert_eq!(st, 201, "{body}");
    let doc = json!({
        "resourceType": "DocumentReference", "status": "current",
        "subject": {"reference": format!("Patient/{id}")},
        "description": NOTE,
        "content": [{"attachment": {"contentType": "text/plain", "title": NOTE}}]
    });
    let (st, body) = s.call("POST", "/fhir/DocumentReference", Some(&doc)).await;
    assert_eq!(st, 201, "{body}");
    // Searches and failed requests carry the values in URLs and bodies: they must not reach the logs either.
    for q in [
        format!("/fhir/Patient?family={FAMILY}"),
        format!("/fhir/Patient?identifier={MRN}"),
        format!("/fhir/Patient?birthdate={BIRTH}"),
        format!("/fhir/Patient?telecom={}", PHONE.replace('+', "%2B")),
        format!("/fhir/Patient?name={GIVEN}&_total=accurate"),
    ] {
        let (st, b) = s.call("GET", &q, None).await;
        assert_eq!(st, 200, "{q}: {b}");
        assert_eq!(b["entry"].as_array().map(Vec::len), Some(1), "{q}: {b}");
    }
    let (st, _) = s
        .call("GET", &format!("/fhir/Patient?{FAMILY}=1"), None)
        .await;
    assert_eq!(st, 400);
    let bad = json!({"resourceType": "Patient", "name": [{"family": FAMILY}], "birthDate": format!("{BIRTH}x")});
    let (st, b) = s.call("POST", "/fhir/Patient", Some(&bad)).await;
    assert_eq!(st, 400);
    assert!(!b.to_string().contains(FAMILY), "error echoed a value: {b}");
    let (st, _) = s.call("GET", &format!("/fhir/Patient/{id}"), None).await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn no_plaintext_in_sqlite_files_or_logs() {
    let dir = Scratch::new("plain-sqlite");
    let data = dir.0.join("data");
    let s = Server::start(&["--data-dir", data.to_str().unwrap()], &[], &dir.0);
    write_and_search(&s).await;
    // While running (WAL and shm present) ...
    let files = files_under(&data);
    assert!(
        files.iter().any(|f| f.to_string_lossy().ends_with("-wal")),
        "expected a WAL file: {files:?}"
    );
    let hits = find_plaintext(&files, &needles());
    assert!(hits.is_empty(), "plaintext at rest: {hits:?}");
    // ... and after a graceful stop.
    let (out, err) = s.stop();
    let mut files = files_under(&data);
    files.push(out);
    files.push(err.clone());
    let hits = find_plaintext(&files, &needles());
    assert!(hits.is_empty(), "plaintext at rest or in logs: {hits:?}");
    // The log is not empty: it did record the requests (by route, not by value).
    let log = std::fs::read_to_string(err).unwrap();
    assert!(
        log.contains("/fhir/{rtype}"),
        "expected request logs by route"
    );
}

#[tokio::test]
async fn no_plaintext_in_postgres_data_directory_or_logs() {
    let db = PgDb::new().await;
    let dir = Scratch::new("plain-pg");
    let s = Server::start(
        &["--database-url", &db.url],
        &[("VIGIL_KEY_FILE", dir.0.join("keys.toml").to_str().unwrap())],
        &dir.0,
    );
    write_and_search(&s).await;
    let (out, err) = s.stop();
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("CHECKPOINT").execute(&mut c).await.unwrap();
    let (data_dir,): (String,) = sqlx::query_as("SHOW data_directory")
        .fetch_one(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    let mut files = files_under(std::path::Path::new(&data_dir));
    assert!(
        files.len() > 10,
        "cannot read PostgreSQL's data directory {data_dir} (run as the postgres owner or root)"
    );
    files.push(out);
    files.push(err);
    let hits = find_plaintext(&files, &needles());
    assert!(
        hits.is_empty(),
        "plaintext in PostgreSQL files or logs: {hits:?}"
    );
}
