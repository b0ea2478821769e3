//! `vigil audit` on a real server's data: verify passes, then fails naming
//! the index after the SQLite file is tampered with (flipped byte, deleted,
//! swapped and truncated entries, a forged checkpoint); proofs verify;
//! export gives OCSF lines and syslog over TCP.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{Value, json};
use sqlx::Connection as _;

use crate::harness::{Scratch, Server, run};

/// A copy of the data directory, for one tampering.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

async fn db(dir: &Path) -> sqlx::SqliteConnection {
    // An attacker with the file ignores foreign keys (the terms rows).
    let mut c =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}", dir.join("vigil.db").display()))
            .await
            .unwrap();
    sqlx::query("PRAGMA foreign_keys = OFF")
        .execute(&mut c)
        .await
        .unwrap();
    c
}

async fn entry(c: &mut sqlx::SqliteConnection, idx: i64) -> Vec<u8> {
    sqlx::query_scalar("SELECT bytes FROM audit_entries WHERE idx = ?")
        .bind(idx)
        .fetch_one(c)
        .await
        .unwrap()
}

async fn set_entry(c: &mut sqlx::SqliteConnection, idx: i64, bytes: &[u8]) {
    sqlx::query("UPDATE audit_entries SET bytes = ? WHERE idx = ?")
        .bind(bytes)
        .bind(idx)
        .execute(c)
        .await
        .unwrap();
}

fn verify(dir: &Path) -> (bool, String, String) {
    run(
        &["audit", "verify", "--data-dir", dir.to_str().unwrap()],
        &[],
    )
}

fn unb64(v: &Value) -> [u8; 32] {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

/// A server's data directory with some audited traffic, stopped.
async fn with_traffic(scratch: &Scratch) -> PathBuf {
    let data = scratch.0.join("data");
    let s = Server::start(&["--data-dir", data.to_str().unwrap()], &[], &scratch.0);
    let (status, p) = s
        .call(
            "POST",
            "/fhir/Patient",
            Some(&json!({"resourceType": "Patient", "name": [{"family": "Tamper"}]})),
        )
        .await;
    assert_eq!(status, 201, "{p}");
    let id = p["id"].as_str().unwrap().to_owned();
    for _ in 0..12 {
        let (status, _) = s.call("GET", &format!("/fhir/Patient/{id}"), None).await;
        assert_eq!(status, 200);
    }
    s.stop();
    data
}

#[tokio::test]
async fn verify_passes_and_names_what_was_tampered_with() {
    let scratch = Scratch::new("audit");
    let data = with_traffic(&scratch).await;
    let (ok, out, err) = verify(&data);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("verified ") && out.contains(" checkpoints, root "),
        "{out}"
    );

    // A flipped byte in entry 5.
    let d = scratch.0.join("flip");
    copy_dir(&data, &d);
    let mut c = db(&d).await;
    let mut b = entry(&mut c, 5).await;
    b[10] ^= 1;
    set_entry(&mut c, 5, &b).await;
    c.close().await.unwrap();
    let (ok, out, err) = verify(&d);
    assert!(!ok, "{out}");
    assert!(err.contains("first bad entry at index 5"), "{err}");

    // Entry 5 deleted.
    let d = scratch.0.join("delete");
    copy_dir(&data, &d);
    let mut c = db(&d).await;
    sqlx::query("DELETE FROM audit_entries WHERE idx = 5")
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    let (ok, _, err) = verify(&d);
    assert!(!ok);
    assert!(err.contains("entry 5 is missing"), "{err}");

    // Entries 4 and 6 swapped.
    let d = scratch.0.join("swap");
    copy_dir(&data, &d);
    let mut c = db(&d).await;
    let (four, six) = (entry(&mut c, 4).await, entry(&mut c, 6).await);
    set_entry(&mut c, 4, &six).await;
    set_entry(&mut c, 6, &four).await;
    c.close().await.unwrap();
    let (ok, _, err) = verify(&d);
    assert!(!ok);
    assert!(err.contains("first bad entry at index 4"), "{err}");

    // Truncated after entry 6.
    let d = scratch.0.join("truncate");
    copy_dir(&data, &d);
    let mut c = db(&d).await;
    sqlx::query("DELETE FROM audit_entries WHERE idx >= 7")
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    let (ok, _, err) = verify(&d);
    assert!(!ok);
    assert!(err.contains("first missing entry at index 7"), "{err}");

    // A forged checkpoint: the head's root replaced, the signature kept.
    let d = scratch.0.join("forge");
    copy_dir(&data, &d);
    let mut c = db(&d).await;
    let (size, note): (i64, String) =
        sqlx::query_as("SELECT size, checkpoint FROM audit_head WHERE id = 1")
            .fetch_one(&mut c)
            .await
            .unwrap();
    let mut lines: Vec<String> = note.lines().map(str::to_owned).collect();
    lines[2] = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let forged = format!("{}\n", lines.join("\n"));
    sqlx::query("UPDATE audit_head SET checkpoint = ? WHERE id = 1")
        .bind(&forged)
        .execute(&mut c)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_checkpoints SET note = ? WHERE size = ?")
        .bind(&forged)
        .bind(size)
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    let (ok, _, err) = verify(&d);
    assert!(!ok);
    assert!(err.contains("checkpoint"), "{err}");
}

#[tokio::test]
async fn proofs_verify_and_exports_parse() {
    let scratch = Scratch::new("audit-proof");
    let data = with_traffic(&scratch).await;
    let dd = data.to_str().unwrap();

    let (ok, out, err) = run(&["audit", "proof", "3", "--data-dir", dd], &[]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let keys: Vec<app::audit::VerifierKey> = v["verifier_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| app::audit::VerifierKey::parse(k.as_str().unwrap()).unwrap())
        .collect();
    let cp = app::audit::open_checkpoint(v["checkpoint"].as_str().unwrap(), &keys).unwrap();
    assert_eq!(cp.size, v["size"].as_u64().unwrap());
    let proof: Vec<[u8; 32]> = v["proof"].as_array().unwrap().iter().map(unb64).collect();
    app::audit::verify_inclusion(&unb64(&v["leaf_hash"]), 3, cp.size, &proof, &cp.root).unwrap();

    // OCSF lines on standard output.
    let (ok, out, err) = run(&["audit", "export", "--since", "2", "--data-dir", dd], &[]);
    assert!(ok, "{err}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, cp.size - 2);
    for l in &lines {
        assert_eq!(l["class_uid"], 6003);
        assert_eq!(l["category_uid"], 6);
    }
    assert_eq!(lines[0]["metadata"]["sequence"], 2);
    assert!(
        lines.iter().any(|l| l["activity_id"] == 2),
        "reads are API Activity: Read"
    );
    assert!(!out.contains("Tamper"), "no names in the export");

    // Syslog over TCP with octet counting.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let to = format!("tcp://{}", listener.local_addr().unwrap());
    let reader = tokio::spawn(async move {
        use tokio::io::AsyncReadExt as _;
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut all = Vec::new();
        sock.read_to_end(&mut all).await.unwrap();
        all
    });
    let (ok, _, err) = run(
        &[
            "audit",
            "export",
            "--format",
            "syslog",
            "--to",
            &to,
            "--data-dir",
            dd,
        ],
        &[],
    );
    assert!(ok, "{err}");
    let all = reader.await.unwrap();
    let mut rest = all.as_slice();
    let mut messages = Vec::new();
    while !rest.is_empty() {
        let sp = rest.iter().position(|b| *b == b' ').unwrap();
        let len: usize = std::str::from_utf8(&rest[..sp]).unwrap().parse().unwrap();
        let msg = std::str::from_utf8(&rest[sp + 1..sp + 1 + len])
            .unwrap()
            .to_owned();
        rest = &rest[sp + 1 + len..];
        messages.push(msg);
    }
    assert_eq!(messages.len() as u64, cp.size);
    for (i, m) in messages.iter().enumerate() {
        assert!(m.starts_with("<110>1 ") || m.starts_with("<108>1 "), "{m}");
        assert!(m.contains(&format!("[vigil@32473 index=\"{i}\"")), "{m}");
        let json = &m[m.find("] {").unwrap() + 2..];
        let v: Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["class_uid"], 6003);
    }
}
