//! Crash test of the audit trail: `kill -9` the server during concurrent
//! writes and reads; after a restart every acknowledged request's entry is
//! present (at the index its receipt named, for that request and patient),
//! every acknowledged write is durable, the log verifies and the server
//! keeps appending. On SQLite and on PostgreSQL.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::harness::{PgDb, Scratch, Server, run};

/// Concurrent client tasks.
const CLIENTS: usize = 32;
/// Load before the kill.
const LOAD: Duration = Duration::from_secs(2);
/// Acknowledged patients read back after the restart, at most.
const SAMPLE: usize = 300;

type Http = Client<HttpConnector, Full<Bytes>>;

/// A request the server acknowledged: a 2xx response with an audit receipt.
#[derive(Debug, Clone)]
struct Acked {
    request: String,
    method: &'static str,
    patient: String,
    indexes: Vec<u64>,
    size: u64,
    /// The version a write's response returned.
    version: Option<u64>,
}

#[derive(Debug, Default)]
struct Tally {
    acked: Vec<Acked>,
    /// Connection errors and timeouts: unacknowledged.
    failed: usize,
    /// Responses that were not 2xx, by status.
    refused: BTreeMap<u16, usize>,
}

struct Reply {
    status: u16,
    receipt: Option<String>,
    body: Value,
}

async fn send(
    http: &Http,
    base: &str,
    token: &str,
    method: &str,
    path: &str,
    request_id: &str,
    body: Option<&Value>,
) -> Result<Reply, String> {
    let mut b = hyper::Request::builder()
        .method(method)
        .uri(format!("{base}{path}"))
        .header("authorization", format!("Bearer {token}"))
        .header("x-request-id", request_id);
    let bytes = match body {
        Some(v) => {
            b = b.header("content-type", "application/fhir+json");
            serde_json::to_vec(v).unwrap()
        }
        None => Vec::new(),
    };
    let req = b.body(Full::new(Bytes::from(bytes))).unwrap();
    let fut = async {
        let resp = http.request(req).await.map_err(|e| format!("{e:?}"))?;
        let status = resp.status().as_u16();
        let receipt = resp
            .headers()
            .get("vigil-audit-receipt")
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{e:?}"))?
            .to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Reply {
            status,
            receipt,
            body,
        })
    };
    tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .map_err(|_| "timed out".to_owned())?
}

/// `index=<i>[,<j>...]; size=<n>; checkpoint=<base64url>` → (indexes, size).
fn parse_receipt(h: &str) -> (Vec<u64>, u64) {
    let mut indexes = None;
    let mut size = None;
    let mut checkpoint = false;
    for part in h.split(';').map(str::trim) {
        if let Some(v) = part.strip_prefix("index=") {
            indexes = Some(
                v.split(',')
                    .map(|i| i.parse::<u64>().unwrap())
                    .collect::<Vec<_>>(),
            );
        } else if let Some(v) = part.strip_prefix("size=") {
            size = Some(v.parse::<u64>().unwrap());
        } else if let Some(v) = part.strip_prefix("checkpoint=") {
            checkpoint = !v.is_empty();
        }
    }
    let (indexes, size) = (indexes.unwrap(), size.unwrap());
    assert!(checkpoint, "a receipt without a checkpoint: {h}");
    assert!(!indexes.is_empty(), "a receipt without an index: {h}");
    assert!(
        indexes.iter().all(|i| *i < size),
        "a receipt index beyond its checkpoint's size: {h}"
    );
    (indexes, size)
}

fn patient(id: &str, task: usize, n: u64) -> Value {
    json!({
        "resourceType": "Patient",
        "id": id,
        "name": [{"family": "Crashtest", "given": [format!("T{task}"), format!("N{n}")]}],
        "birthDate": "1970-01-01"
    })
}

fn version_of(body: &Value) -> Option<u64> {
    body["meta"]["versionId"].as_str()?.parse().ok()
}

/// One client task: a mix of creates (PUT with a new id), updates of its own
/// patients and reads of them, until `stop`.
async fn client(task: usize, base: String, token: String, stop: Arc<AtomicBool>) -> Tally {
    let http: Http = Client::builder(TokioExecutor::new()).build_http();
    let mut tally = Tally::default();
    let mut mine: Vec<String> = Vec::new();
    let mut k: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        k += 1;
        let request = format!("crash-req-{task}-{k}");
        let (method, id, body) = if mine.is_empty() || k.is_multiple_of(4) {
            let id = format!("crash-{task}-{k}");
            let b = patient(&id, task, k);
            ("PUT", id, Some(b))
        } else if k % 4 == 1 {
            let id = mine[(k as usize / 4) % mine.len()].clone();
            let b = patient(&id, task, k);
            ("PUT", id, Some(b))
        } else {
            let id = mine[(k as usize) % mine.len()].clone();
            ("GET", id, None)
        };
        let path = format!("/fhir/Patient/{id}");
        match send(&http, &base, &token, method, &path, &request, body.as_ref()).await {
            Ok(r) if (200..300).contains(&r.status) => {
                let h = r
                    .receipt
                    .unwrap_or_else(|| panic!("{method} {path} → {} without a receipt", r.status));
                let (indexes, size) = parse_receipt(&h);
                let version = if method == "PUT" {
                    let v = version_of(&r.body);
                    assert!(
                        v.is_some(),
                        "a write's response without a version: {}",
                        r.body
                    );
                    if !mine.contains(&id) {
                        mine.push(id.clone());
                    }
                    v
                } else {
                    assert_eq!(r.body["id"], id.as_str(), "{}", r.body);
                    None
                };
                tally.acked.push(Acked {
                    request,
                    method,
                    patient: id,
                    indexes,
                    size,
                    version,
                });
            }
            Ok(r) => *tally.refused.entry(r.status).or_default() += 1,
            Err(_) => {
                tally.failed += 1;
                // The server is gone; do not spin on refused connections.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    tally
}

/// The entry count `vigil audit verify` reports; asserts it exits 0.
fn verify(common: &[&str], envs: &[(&str, &str)], when: &str) -> u64 {
    let mut args = vec!["audit", "verify"];
    args.extend_from_slice(common);
    let started = Instant::now();
    let (ok, out, err) = run(&args, envs);
    eprintln!(
        "audit verify {when}: {:?}: {}",
        started.elapsed(),
        out.trim()
    );
    assert!(ok, "audit verify {when} failed: {out}{err}");
    let n = out
        .split("verified ")
        .nth(1)
        .and_then(|r| r.split(" entries").next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no entry count in {out}"));
    assert!(out.contains(" checkpoints, root "), "{out}");
    n
}

/// The exported (OCSF) entries, by index.
fn export(common: &[&str], envs: &[(&str, &str)]) -> HashMap<u64, Value> {
    let mut args = vec!["audit", "export"];
    args.extend_from_slice(common);
    let (ok, out, err) = run(&args, envs);
    assert!(ok, "audit export failed: {err}");
    out.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["metadata"]["sequence"].as_u64().unwrap(), v)
        })
        .collect()
}

/// Starts a server on `common` (store and key flags), loads it with
/// concurrent clients, kills it with SIGKILL, restarts it and checks the
/// acknowledged requests against the log.
async fn crash_and_recover(label: &str, common: &[&str], logs: &Path) {
    let envs: &[(&str, &str)] = &[];
    let s = Server::start(common, envs, logs);

    // Load, then SIGKILL while it is running.
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|t| {
            tokio::spawn(client(
                t,
                s.base.clone(),
                s.token.clone(),
                Arc::clone(&stop),
            ))
        })
        .collect();
    tokio::time::sleep(LOAD).await;
    s.kill9();
    let killed_after = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut tally = Tally::default();
    for t in tasks {
        let one = t.await.unwrap();
        tally.acked.extend(one.acked);
        tally.failed += one.failed;
        for (st, n) in one.refused {
            *tally.refused.entry(st).or_default() += n;
        }
    }
    let acked = &tally.acked;
    let writes = acked.iter().filter(|a| a.method == "PUT").count();
    eprintln!(
        "[{label}] load: {CLIENTS} clients, SIGKILL after {killed_after:?}; acknowledged {} requests ({writes} writes, {} reads), {} unacknowledged (connection errors), non-2xx {:?}",
        acked.len(),
        acked.len() - writes,
        tally.failed,
        tally.refused
    );
    assert!(
        writes > 0 && acked.len() > writes,
        "no load got through: {tally:?}"
    );
    // Each index acknowledged once, to one request.
    let mut seen = HashSet::new();
    for a in acked {
        for i in &a.indexes {
            assert!(seen.insert(*i), "index {i} acknowledged twice");
        }
    }
    let max_acked = acked.iter().flat_map(|a| a.indexes.iter()).max().copied();
    let max_acked = max_acked.unwrap();
    let old_size = acked.iter().map(|a| a.size).max().unwrap();

    // The log as the crash left it verifies, before any restart.
    let n = verify(common, envs, "after the crash, before the restart");
    assert!(n > max_acked, "{n} entries, acknowledged index {max_acked}");

    // Restart on the same data.
    let t = Instant::now();
    let s = Server::start(common, envs, logs);
    eprintln!("[{label}] restart (with token issue): {:?}", t.elapsed());
    let http: Http = Client::builder(TokioExecutor::new()).build_http();

    // The server keeps appending: the next request's entry comes after the old size.
    let first = &acked.iter().find(|a| a.method == "PUT").unwrap().patient;
    let r = send(
        &http,
        &s.base,
        &s.token,
        "GET",
        &format!("/fhir/Patient/{first}"),
        "crash-after-restart",
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let (indexes, size) = parse_receipt(&r.receipt.unwrap());
    assert!(
        indexes.iter().all(|i| *i >= old_size),
        "after the restart index {indexes:?}, before it size {old_size}"
    );
    eprintln!(
        "[{label}] after the restart: index {indexes:?}, size {size} (largest acknowledged size before the crash {old_size}, largest acknowledged index {max_acked})"
    );

    // Every acknowledged write is durable: its patient reads back at that version or later.
    let t = Instant::now();
    let mut latest: BTreeMap<&str, u64> = BTreeMap::new();
    for a in acked.iter().filter(|a| a.method == "PUT") {
        let v = latest.entry(a.patient.as_str()).or_default();
        *v = (*v).max(a.version.unwrap());
    }
    let step = latest.len().div_ceil(SAMPLE).max(1);
    let mut checked = 0;
    for (id, version) in latest.iter().step_by(step) {
        let r = send(
            &http,
            &s.base,
            &s.token,
            "GET",
            &format!("/fhir/Patient/{id}"),
            &format!("crash-check-{checked}"),
            None,
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "acknowledged {id} is gone: {}", r.body);
        let got = version_of(&r.body).unwrap();
        assert!(
            got >= *version,
            "{id}: version {version} acknowledged, {got} after the restart"
        );
        checked += 1;
    }
    eprintln!(
        "[{label}] read back {checked} of {} acknowledged patients: {:?}",
        latest.len(),
        t.elapsed()
    );
    s.stop();

    // The log verifies and holds every acknowledged entry, for its request.
    let n = verify(common, envs, "after the restart");
    assert!(
        n > max_acked && n > indexes.iter().copied().max().unwrap(),
        "{n} entries, acknowledged index {max_acked}"
    );
    let t = Instant::now();
    let entries = export(common, envs);
    assert_eq!(entries.len() as u64, n);
    for a in acked {
        let on_request: Vec<&Value> = a
            .indexes
            .iter()
            .map(|i| {
                entries
                    .get(i)
                    .unwrap_or_else(|| panic!("acknowledged entry {i} is missing"))
            })
            .collect();
        let reference = format!("Patient/{}", a.patient);
        let mine = on_request
            .iter()
            .filter(|e| e["api"]["request"]["uid"] == a.request.as_str())
            .collect::<Vec<_>>();
        assert!(
            !mine.is_empty(),
            "{} {}: no entry at {:?} for its request: {on_request:?}",
            a.method,
            a.request,
            a.indexes
        );
        let ops: Vec<&str> = mine
            .iter()
            .filter(|e| {
                e["resources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r["uid"] == reference.as_str())
            })
            .filter_map(|e| e["api"]["operation"].as_str())
            .collect();
        let want: &[&str] = if a.method == "PUT" {
            &["create", "update"]
        } else {
            &["read"]
        };
        assert!(
            ops.iter().any(|o| want.contains(o)),
            "{} {} at {:?}: no {want:?} of {reference}: {mine:?}",
            a.method,
            a.request,
            a.indexes
        );
    }
    eprintln!(
        "[{label}] every acknowledged request's entry matched in the export of {n} entries: {:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_during_concurrent_writes_loses_no_acknowledged_entry_on_sqlite() {
    let dir = Scratch::new("crash-sqlite");
    let data = dir.0.join("data");
    crash_and_recover("sqlite", &["--data-dir", data.to_str().unwrap()], &dir.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_during_concurrent_writes_loses_no_acknowledged_entry_on_postgres() {
    let db = PgDb::new().await;
    let dir = Scratch::new("crash-pg");
    let k = dir.0.join("keys.toml");
    crash_and_recover(
        "postgres",
        &["--database-url", &db.url, "--key-file", k.to_str().unwrap()],
        &dir.0,
    )
    .await;
}
