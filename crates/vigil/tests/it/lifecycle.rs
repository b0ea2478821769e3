//! Key rotation while running, crypto-shredding, backup/restore on both
//! backends (and across them), and the durability check.

use serde_json::{Value, json};
use sqlx::Connection;

use crate::harness::{PgDb, Scratch, Server, files_under, find_plaintext, run, run_bounded};

fn keks(key_file: &str) -> usize {
    key_file.lines().filter(|l| l.trim() == "[[kek]]").count()
}

fn patient(family: &str) -> Value {
    json!({"resourceType": "Patient", "name": [{"family": family, "given": ["Test"]}], "birthDate": "1961-02-03"})
}

/// Creates `n` patients with an observation each; returns (patient id, patient json) pairs.
async fn populate(s: &Server, prefix: &str, n: usize) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for i in 0..n {
        let (st, p) = s
            .call(
                "POST",
                "/fhir/Patient",
                Some(&patient(&format!("{prefix}{i}"))),
            )
            .await;
        assert_eq!(st, 201, "{p}");
        let id = p["id"].as_str().unwrap().to_owned();
        let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": format!("Patient/{id}")}});
        let (st, o) = s.call("POST", "/fhir/Observation", Some(&obs)).await;
        assert_eq!(st, 201, "{o}");
        out.push((id, p));
    }
    out
}

async fn all_readable(s: &Server, pats: &[(String, Value)]) {
    for (id, p) in pats {
        let (st, got) = s.call("GET", &format!("/fhir/Patient/{id}"), None).await;
        assert_eq!(st, 200, "{got}");
        assert_eq!(&got, p);
    }
}

#[tokio::test]
async fn key_rotation_while_running_keeps_everything_readable() {
    let dir = Scratch::new("rotate");
    let data = dir.0.join("data");
    let d = data.to_str().unwrap();
    let s = Server::start(&["--data-dir", d], &[], &dir.0);
    let pats = populate(&s, "Rotate", 5).await;
    let before = std::fs::read_to_string(data.join("vigil-keys.toml")).unwrap();
    let (ok, out, err) = run(&["keys", "rotate", "--data-dir", d], &[]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("data keys re-wrapped"), "{out}");
    let after = std::fs::read_to_string(data.join("vigil-keys.toml")).unwrap();
    assert_eq!(
        after.matches("[[kek]]").count(),
        before.matches("[[kek]]").count() + 1
    );
    // The running server reads old and new data, and writes new patients under the new KEK.
    all_readable(&s, &pats).await;
    let more = populate(&s, "After", 2).await;
    s.stop();
    // Retire the old KEK with the server stopped; everything stays readable after a restart.
    let (ok, out, err) = run(&["keys", "rotate", "--retire-old", "--data-dir", d], &[]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("older keys retired"), "{out}");
    let retired = std::fs::read_to_string(data.join("vigil-keys.toml")).unwrap();
    assert_eq!(keks(&retired), 1);
    let s = Server::start(&["--data-dir", d], &[], &dir.0);
    all_readable(&s, &pats).await;
    all_readable(&s, &more).await;
    s.stop();
}

#[tokio::test]
async fn erasing_a_patient_shreds_them_and_keeps_others() {
    let dir = Scratch::new("erase");
    let data = dir.0.join("data");
    let d = data.to_str().unwrap();
    let s = Server::start(&["--data-dir", d], &[], &dir.0);
    let pats = populate(&s, "Shredmeplease", 2).await;
    let (victim, _) = &pats[0];
    let (st, obs) = s
        .call(
            "GET",
            &format!("/fhir/Observation?subject=Patient/{victim}"),
            None,
        )
        .await;
    assert_eq!(st, 200);
    let obs_id = obs["entry"][0]["resource"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (ok, out, err) = run(&["patient", "erase", victim, "--data-dir", d], &[]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("data key destroyed: true"), "{out}");
    let (st, _) = s
        .call("GET", &format!("/fhir/Patient/{victim}"), None)
        .await;
    assert_eq!(st, 404);
    let (st, _) = s
        .call("GET", &format!("/fhir/Observation/{obs_id}"), None)
        .await;
    assert_eq!(st, 404);
    let (st, b) = s
        .call("GET", &format!("/fhir/Patient/{victim}/_history"), None)
        .await;
    assert_eq!(st, 404, "{b}");
    let (st, b) = s
        .call("GET", "/fhir/Patient?family=shredmeplease0", None)
        .await;
    assert_eq!(st, 200);
    assert!(b.get("entry").is_none(), "{b}");
    // The other patient is intact.
    all_readable(&s, &pats[1..]).await;
    // The running server drops what it derived from the erased patient (cached
    // key, in-memory name terms) within seconds; its log says so.
    let started = std::time::Instant::now();
    loop {
        let log = std::fs::read_to_string(&s.stderr).unwrap_or_default();
        if log.contains("erasure by another process") {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "server did not notice the erasure"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    eprintln!("server noticed the erasure after {:?}", started.elapsed());
    s.stop();
    // Erasing an unknown patient is not an error but reports no key destroyed.
    let (ok, out, _) = run(&["patient", "erase", "nobody", "--data-dir", d], &[]);
    assert!(ok);
    assert!(out.contains("data key destroyed: false"), "{out}");
    // The victim's id is gone from the database files (ids are in clear, so this shows deletion).
    let hits = find_plaintext(&files_under(&data), &[victim.as_str()]);
    assert!(hits.is_empty(), "{hits:?}");
}

#[tokio::test]
async fn backup_and_restore_round_trip_on_both_backends_and_across() {
    let dir = Scratch::new("backup");
    let keys = dir.0.join("keys.toml");
    let k = keys.to_str().unwrap();
    // SQLite → backup (while running).
    let sqlite_a = dir.0.join("a");
    let s = Server::start(
        &["--data-dir", sqlite_a.to_str().unwrap(), "--key-file", k],
        &[],
        &dir.0,
    );
    let pats = populate(&s, "Backup", 4).await;
    let file1 = dir.0.join("one.vigil-backup");
    let (ok, out, err) = run(
        &[
            "backup",
            "--out",
            file1.to_str().unwrap(),
            "--data-dir",
            sqlite_a.to_str().unwrap(),
            "--key-file",
            k,
        ],
        &[],
    );
    assert!(ok, "{out}{err}");
    s.stop();
    let text = std::fs::read(&file1).unwrap();
    assert!(find_plaintext(std::slice::from_ref(&file1), &["Backup0", "1961-02-03"]).is_empty());
    assert!(
        !String::from_utf8_lossy(&text).contains("[[kek]]"),
        "the key file must not be in a backup"
    );

    // → restore into PostgreSQL, serve from it.
    let db = PgDb::new().await;
    let (ok, out, err) = run(
        &[
            "restore",
            file1.to_str().unwrap(),
            "--database-url",
            &db.url,
            "--key-file",
            k,
        ],
        &[],
    );
    assert!(ok, "{out}{err}");
    let s = Server::start(&["--database-url", &db.url, "--key-file", k], &[], &dir.0);
    all_readable(&s, &pats).await;
    let more = populate(&s, "Pgonly", 1).await;
    // PostgreSQL → backup → restore into a fresh SQLite.
    let file2 = dir.0.join("two.vigil-backup");
    let (ok, out, err) = run(
        &[
            "backup",
            "--out",
            file2.to_str().unwrap(),
            "--database-url",
            &db.url,
            "--key-file",
            k,
        ],
        &[],
    );
    assert!(ok, "{out}{err}");
    s.stop();
    let sqlite_b = dir.0.join("b");
    let (ok, out, err) = run(
        &[
            "restore",
            file2.to_str().unwrap(),
            "--data-dir",
            sqlite_b.to_str().unwrap(),
            "--key-file",
            k,
        ],
        &[],
    );
    assert!(ok, "{out}{err}");
    let s = Server::start(
        &["--data-dir", sqlite_b.to_str().unwrap(), "--key-file", k],
        &[],
        &dir.0,
    );
    all_readable(&s, &pats).await;
    all_readable(&s, &more).await;
    // Search works after a restore (blind index rows and the in-memory name index).
    let (st, b) = s.call("GET", "/fhir/Patient?family=backup2", None).await;
    assert_eq!(st, 200);
    assert_eq!(b["entry"].as_array().map(Vec::len), Some(1), "{b}");
    s.stop();

    // Restoring into a non-empty store is refused and changes nothing.
    let (ok, _, err) = run(
        &[
            "restore",
            file1.to_str().unwrap(),
            "--data-dir",
            sqlite_b.to_str().unwrap(),
            "--key-file",
            k,
        ],
        &[],
    );
    assert!(!ok);
    assert!(
        err.to_lowercase().contains("empty")
            || err.to_lowercase().contains("not empty")
            || err.contains("holds"),
        "{err}"
    );
    // A damaged backup is refused before anything is written.
    let mut damaged = std::fs::read(&file1).unwrap();
    let mid = damaged.len() / 2;
    damaged[mid] ^= 0x20;
    let file3 = dir.0.join("damaged.vigil-backup");
    std::fs::write(&file3, damaged).unwrap();
    let sqlite_c = dir.0.join("c");
    let (ok, _, err) = run(
        &[
            "restore",
            file3.to_str().unwrap(),
            "--data-dir",
            sqlite_c.to_str().unwrap(),
            "--key-file",
            k,
        ],
        &[],
    );
    assert!(!ok);
    assert!(
        err.contains("damaged") || err.contains("not valid"),
        "{err}"
    );
    // Without the key file a restored backup is unreadable: a fresh key file cannot open it.
    let sqlite_d = dir.0.join("d");
    let other_keys = dir.0.join("other-keys.toml");
    let (ok, _, _) = run(
        &[
            "restore",
            file1.to_str().unwrap(),
            "--data-dir",
            sqlite_d.to_str().unwrap(),
            "--key-file",
            other_keys.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok);
    // Serving it with the wrong key file fails closed: the server refuses to start.
    let (ok, err) = run_bounded(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            sqlite_d.to_str().unwrap(),
            "--key-file",
            other_keys.to_str().unwrap(),
        ],
        &[("VIGIL_BOOTSTRAP_TOKEN", "0123456789abcdef0123")],
        60,
    );
    assert!(!ok, "served a backup with the wrong key file");
    assert!(err.contains("not in the key file"), "{err}");
    assert!(!err.contains("Backup0"));
}

#[tokio::test]
async fn durability_check_refuses_a_misconfigured_database() {
    let db = PgDb::new().await;
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query(&format!(
        "ALTER DATABASE {} SET synchronous_commit = off",
        db.name
    ))
    .execute(&mut c)
    .await
    .unwrap();
    c.close().await.unwrap();
    let dir = Scratch::new("durability");
    let k = dir.0.join("keys.toml");
    let (ok, err) = run_bounded(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &db.url,
            "--key-file",
            k.to_str().unwrap(),
        ],
        &[("VIGIL_BOOTSTRAP_TOKEN", "0123456789abcdef0123")],
        60,
    );
    assert!(
        !ok,
        "serve started on a database without synchronous_commit"
    );
    assert!(err.contains("synchronous_commit"), "{err}");
}

#[tokio::test]
async fn two_nodes_on_one_postgres_database_see_each_others_writes() {
    let db = PgDb::new().await;
    let dir = Scratch::new("two-nodes");
    let k = dir.0.join("keys.toml");
    let args = [
        "--database-url",
        db.url.as_str(),
        "--key-file",
        k.to_str().unwrap(),
    ];
    let a = Server::start(&args, &[], &dir.0);
    let b = Server::start(&args, &[], &dir.0);
    let pats = populate(&a, "Nodeshared", 2).await;
    // Reads by id see the write at once; prefix search on names (an
    // in-memory index per node) sees it within the sync period.
    all_readable(&b, &pats).await;
    let started = std::time::Instant::now();
    loop {
        let (st, body) = b
            .call(
                "GET",
                "/fhir/Patient?family=nodeshared&_total=accurate",
                None,
            )
            .await;
        assert_eq!(st, 200, "{body}");
        if body["total"] == 2 {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "node b never saw node a's names: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    eprintln!(
        "node b indexed node a's names after {:?}",
        started.elapsed()
    );
    // An update on b is seen by a's name search too.
    let (id, p) = &pats[0];
    let mut renamed = p.clone();
    renamed["name"][0]["family"] = json!("Renamednode");
    let (st, _) = b
        .call("PUT", &format!("/fhir/Patient/{id}"), Some(&renamed))
        .await;
    assert_eq!(st, 200);
    let started = std::time::Instant::now();
    loop {
        let (_, body) = a
            .call(
                "GET",
                "/fhir/Patient?family=renamednode&_total=accurate",
                None,
            )
            .await;
        if body["total"] == 1 {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "node a never saw the rename: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let (_, body) = a
        .call(
            "GET",
            "/fhir/Patient?family=nodeshared&_total=accurate",
            None,
        )
        .await;
    assert_eq!(body["total"], 1, "{body}");
    a.stop();
    b.stop();
}
