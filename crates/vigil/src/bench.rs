//! `vigil bench fhir`: an HTTP load generator against a real Vigil server
//! (in this process, on loopback), on SQLite and PostgreSQL, at several sizes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use model::SystemClock;
use serde_json::json;

use crate::serve::bar;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub sizes: Vec<usize>,
    pub backends: Vec<Backend>,
    pub connections: usize,
    pub duration: Duration,
    pub pg_admin_url: String,
    /// SQLite reader connections (the server's default when `None`).
    pub sqlite_readers: Option<u32>,
}

/// One measured workload.
#[derive(Debug, Clone)]
pub struct Figures {
    pub requests: u64,
    pub errors: u64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

struct Fresh {
    store: Arc<dyn store::Store>,
    cleanup: Cleanup,
}

enum Cleanup {
    Dir(std::path::PathBuf),
    Database { admin: String, name: String },
}

async fn fresh_store(backend: Backend, admin: &str, readers: Option<u32>) -> anyhow::Result<Fresh> {
    let suffix: String = (0..6)
        .map(|_| format!("{:x}", rand::random::<u8>() % 16))
        .collect();
    match backend {
        Backend::Sqlite => {
            let dir = std::env::temp_dir().join(format!("vigil-bench-{suffix}"));
            std::fs::create_dir_all(&dir)?;
            let mut opts = store_sqlite::SqliteOptions::default();
            if let Some(n) = readers {
                opts.max_readers = n;
            }
            let s = store_sqlite::SqliteStore::open(&dir.join("vigil.db"), opts).await?;
            Ok(Fresh {
                store: Arc::new(s),
                cleanup: Cleanup::Dir(dir),
            })
        }
        Backend::Postgres => {
            let name = format!("vigil_bench_{suffix}");
            crate::pgadmin::create_database(admin, &name)
                .await
                .context("creating the benchmark database")?;
            let url = crate::pgadmin::database_url(admin, &name);
            let s = store_postgres::PgStore::connect(&url, store_postgres::PgOptions::default())
                .await?;
            Ok(Fresh {
                store: Arc::new(s),
                cleanup: Cleanup::Database {
                    admin: admin.to_owned(),
                    name,
                },
            })
        }
    }
}

async fn cleanup(c: Cleanup) {
    match c {
        Cleanup::Dir(d) => {
            let _ = std::fs::remove_dir_all(d);
        }
        Cleanup::Database { admin, name } => {
            let _ = crate::pgadmin::drop_database(&admin, &name).await;
        }
    }
}

fn bench_patient(n: usize) -> Vec<serde_json::Value> {
    let id = format!("b{n:07}");
    vec![
        json!({
            "resourceType": "Patient", "id": id,
            "identifier": [{"system": app::demo::MRN_SYSTEM, "value": format!("MRN{:07}", n)}],
            "name": [{"family": format!("Family{}", n % 5000), "given": [format!("Given{}", n % 977)]}],
            "gender": if n.is_multiple_of(2) { "female" } else { "male" },
            "birthDate": format!("19{:02}-{:02}-{:02}", 30 + n % 70, 1 + n % 12, 1 + n % 28)
        }),
        json!({
            "resourceType": "Observation", "id": format!("o{n:07}"), "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": format!("Patient/{id}")},
            "effectiveDateTime": format!("2025-{:02}-{:02}T10:00:00Z", 1 + n % 12, 1 + n % 28),
            "valueQuantity": {"value": 60 + n % 40, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}
        }),
    ]
}

/// Builds the request path for the i-th patient.
type PathFn = dyn Fn(usize) -> String + Send + Sync;

pub async fn run(opts: BenchOptions) -> anyhow::Result<()> {
    println!(
        "vigil bench fhir: {} connections, {:?} per workload, {} worker threads",
        opts.connections,
        opts.duration,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!(
        "{:<9} {:>8} {:<22} {:>9} {:>7} {:>10} {:>9} {:>9}",
        "backend", "patients", "workload", "requests", "errors", "req/s", "p50 ms", "p99 ms"
    );
    for &backend in &opts.backends {
        for &size in &opts.sizes {
            let fresh = fresh_store(backend, &opts.pg_admin_url, opts.sqlite_readers).await?;
            let result = run_one(backend, size, &opts, Arc::clone(&fresh.store)).await;
            drop(fresh.store);
            cleanup(fresh.cleanup).await;
            result?;
        }
    }
    Ok(())
}

async fn run_one(
    backend: Backend,
    size: usize,
    opts: &BenchOptions,
    store: Arc<dyn store::Store>,
) -> anyhow::Result<()> {
    store.migrate().await?;
    let kf = crypto::KeyFile::generate();
    let source = crypto::KeyFileSource::Inline(kf.to_toml()?);
    let vigil = Arc::new(
        app::Vigil::open(
            store,
            &kf,
            source,
            Arc::new(SystemClock),
            app::Config::default(),
        )
        .await?,
    );
    let pb = bar(size as u64, "seeding");
    let started = Instant::now();
    let mut batch = Vec::new();
    for n in 0..size {
        batch.extend(bench_patient(n));
        if batch.len() >= 2000 || n + 1 == size {
            vigil
                .put_many(&app::Principal::Operator, std::mem::take(&mut batch))
                .await?;
            pb.set_position(n as u64 + 1);
        }
    }
    pb.finish_and_clear();
    vigil.store().refresh_statistics().await?;
    let name = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    eprintln!(
        "{name}: seeded {size} patients + {size} observations in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = web::router(web::WebState {
        vigil: Arc::clone(&vigil),
        public_base: None,
        proxies: Default::default(),
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await;
    });
    let base = format!("http://{addr}/fhir");
    let token = bench_token(&vigil, &format!("http://{addr}"), &base).await?;
    let workloads: [(&str, Box<PathFn>); 3] = [
        (
            "read Patient by id",
            Box::new(|i| format!("/Patient/b{i:07}")),
        ),
        (
            "search Patient?identifier",
            Box::new(|i| format!("/Patient?identifier={}%7CMRN{i:07}", app::demo::MRN_SYSTEM)),
        ),
        (
            "search Observation?patient",
            Box::new(|i| format!("/Observation?patient=Patient/b{i:07}")),
        ),
    ];
    for (label, path) in workloads {
        let paths: Vec<String> = (0..size.clamp(1, 100_000)).map(path).collect();
        let f = load(
            &base,
            &[(token.clone(), paths)],
            opts.connections,
            opts.duration,
        )
        .await?;
        println!(
            "{:<9} {:>8} {:<22} {:>9} {:>7} {:>10.0} {:>9.2} {:>9.2}",
            name, size, label, f.requests, f.errors, f.per_second, f.p50_ms, f.p99_ms
        );
    }
    let _ = stop_tx.send(());
    let _ = server.await;
    Ok(())
}

/// Runs `connections` concurrent keep-alive clients for `duration` (after a
/// one-second warm-up) and measures every request. Connection `c` acts as
/// `people[c % people.len()]`: a token and the paths it picks from at random.
pub async fn load(
    base: &str,
    people: &[(String, Vec<String>)],
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Figures> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(connections)
        .build_http();
    let warmup = Duration::from_secs(1);
    // Pre-compute request URIs so the generator does little work per request.
    let mut prepared = Vec::with_capacity(people.len());
    for (token, paths) in people {
        let uris: Vec<hyper::Uri> = paths
            .iter()
            .map(|p| format!("{base}{p}").parse::<hyper::Uri>())
            .collect::<Result<_, _>>()?;
        prepared.push((format!("Bearer {token}"), Arc::new(uris)));
    }
    anyhow::ensure!(!prepared.is_empty(), "nobody to make requests as");
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut tasks = Vec::with_capacity(connections);
    for c in 0..connections {
        let client = client.clone();
        let Some((auth, uris)) = prepared.get(c % prepared.len()) else {
            continue;
        };
        let auth = auth.clone();
        let uris = Arc::clone(uris);
        tasks.push(tokio::spawn(async move {
            let mut lat: Vec<u32> = Vec::with_capacity(100_000);
            let mut errors = 0u64;
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ (c as u64 + 1);
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x % uris.len().max(1) as u64) as usize;
                let Some(uri) = uris.get(i).cloned() else {
                    continue;
                };
                let req = hyper::Request::get(uri)
                    .header("authorization", &auth)
                    .header("accept", "application/fhir+json")
                    .body(Empty::<Bytes>::new());
                let Ok(req) = req else {
                    errors += 1;
                    continue;
                };
                let t0 = Instant::now();
                let ok = match client.request(req).await {
                    Ok(resp) => {
                        let status = resp.status();
                        resp.into_body().collect().await.is_ok() && status.is_success()
                    }
                    Err(_) => false,
                };
                let t1 = Instant::now();
                if t0 >= measure_from {
                    if ok {
                        lat.push(u32::try_from((t1 - t0).as_micros()).unwrap_or(u32::MAX));
                    } else {
                        errors += 1;
                    }
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await?;
        all.extend(lat);
        errors += e;
    }
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        let idx = ((all.len() as f64 - 1.0) * p).round() as usize;
        f64::from(all.get(idx).copied().unwrap_or(0)) / 1000.0
    };
    Ok(Figures {
        requests: all.len() as u64,
        errors,
        per_second: all.len() as f64 / duration.as_secs_f64(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    })
}

/// The record store's load generator acts as a backend service: identity,
/// decryption and the audit entry are on, the relationship rules are not
/// (`vigil bench policy` measures them).
pub(crate) async fn bench_token(
    vigil: &app::Vigil,
    issuer: &str,
    audience: &str,
) -> anyhow::Result<String> {
    Ok(vigil
        .issue_service_token("system/*.rs", 3600, issuer, audience)
        .await?)
}

/// The `qs` quantiles of a sample of durations, in microseconds.
fn quantiles<const N: usize>(mut v: Vec<Duration>, qs: [f64; N]) -> [f64; N] {
    v.sort();
    qs.map(|q| {
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
    })
}

/// The mean, p50 and p99 of a sample of durations, in microseconds.
fn micros(v: Vec<Duration>) -> (f64, f64, f64) {
    let mean = v.iter().map(Duration::as_secs_f64).sum::<f64>() / v.len().max(1) as f64 * 1e6;
    let [p50, p99] = quantiles(v, [0.5, 0.99]);
    (mean, p50, p99)
}

/// One row of `bench audit`'s table: `writers` made the appends that took
/// `times` over `secs`, beside the raw fsync p99; then the run's group
/// commits: mean entries per commit, the p50, p99 and maximum of a
/// commit's time in the store (µs), and how much of the run the log's one
/// writer spent committing.
fn audit_row(
    writers: usize,
    times: Vec<Duration>,
    secs: f64,
    fsync_p99: f64,
    batches: Vec<app::trail::Batch>,
    note: &str,
) {
    let n = times.len();
    let [p50, p90, p99] = quantiles(times, [0.5, 0.9, 0.99]);
    let entries: usize = batches.iter().map(|x| x.entries).sum();
    let per_batch = entries as f64 / batches.len().max(1) as f64;
    let busy = batches.iter().map(|x| x.took.as_secs_f64()).sum::<f64>() / secs.max(1e-9);
    let [c50, c99, cmax] = quantiles(
        batches.into_iter().map(|x| x.took).collect(),
        [0.5, 0.99, 1.0],
    );
    println!(
        "{:>8} {:>10} {:>10.0} {:>8.0} {:>8.0} {:>8.0} {:>+12.0} {:>7.1} {:>11.0} {:>11.0} {:>11.0} {:>5.0}%{note}",
        writers,
        n,
        n as f64 / secs,
        p50,
        p90,
        p99,
        p99 - fsync_p99,
        per_batch,
        c50,
        c99,
        cmax,
        busy * 100.0
    );
}

/// `vigil bench auth`: what identity costs. Sign-in latency is dominated by
/// Argon2id at the configured cost; every API request pays a token or
/// session check.
pub async fn run_auth(sign_ins: usize, checks: usize) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("vigil-bench-auth-{}", crypto::random_token()));
    std::fs::create_dir_all(&dir)?;
    let store: Arc<dyn store::Store> = Arc::new(
        store_sqlite::SqliteStore::open(
            &dir.join("vigil.db"),
            store_sqlite::SqliteOptions::default(),
        )
        .await?,
    );
    store.migrate().await?;
    let kf = crypto::KeyFile::generate();
    let source = crypto::KeyFileSource::Inline(kf.to_toml()?);
    let vigil = app::Vigil::open(
        store,
        &kf,
        source,
        Arc::new(SystemClock),
        app::Config::default(),
    )
    .await?;
    let cfg = vigil.identity_config().cloned().unwrap_or_default();
    let password = "a long enough passphrase for benchmarks";
    vigil
        .create_account(
            &app::Principal::Operator,
            app::NewAccount {
                username: "bench.patient".into(),
                role: store::Role::Patient,
                practitioner: None,
                patient: None,
                display_name: None,
                email: None,
            },
            None,
        )
        .await
        .err();
    // A patient account needs a linked Patient; a billing account has no
    // such link, and with MFA off in this bench its password alone signs in.
    let mut vigil = vigil;
    vigil.configure_identity(
        &kf,
        app::IdentityConfig {
            workforce_mfa: false,
            ..cfg.clone()
        },
    )?;
    vigil
        .create_account(
            &app::Principal::Operator,
            app::NewAccount {
                username: "bench.billing".into(),
                role: store::Role::Billing,
                practitioner: None,
                patient: None,
                display_name: None,
                email: None,
            },
            Some(password),
        )
        .await?;
    println!(
        "Argon2id m={} KiB, t={}, p={}; SQLite; {} sign-ins, {} checks each",
        cfg.argon2_memory_kib, cfg.argon2_iterations, cfg.argon2_lanes, sign_ins, checks
    );
    let mut times = Vec::with_capacity(sign_ins);
    let mut session = None;
    let pb = bar(sign_ins as u64, "sign-ins");
    for i in 0..sign_ins {
        let t = Instant::now();
        let step = vigil
            .sign_in_password(
                "bench.billing",
                password,
                &format!("10.9.{}.{}", i / 250, i % 250),
            )
            .await?;
        times.push(t.elapsed());
        if let app::SignInStep::Done(s) = step {
            session = Some(s);
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    let (mean, p50, p99) = micros(times);
    println!(
        "{:<44} mean {:>9.0} µs  p50 {:>9.0} µs  p99 {:>9.0} µs",
        "sign-in (password, Argon2id verify + session)", mean, p50, p99
    );
    let session = session.ok_or_else(|| anyhow::anyhow!("no session was created"))?;

    let audience = "http://bench.local/fhir";
    let token = vigil
        .issue_operator_token(
            "bench.billing",
            "user/*.rs",
            3600,
            "http://bench.local",
            audience,
        )
        .await?;
    let key_file_keys = kf
        .identity()
        .ok_or_else(|| anyhow::anyhow!("no identity keys"))?;
    let key = auth::token::TokenKey::from_bytes(*key_file_keys.token.expose());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let mut times = Vec::with_capacity(checks);
    for _ in 0..checks {
        let t = Instant::now();
        let c = auth::token::verify(&token, &key, audience, now);
        times.push(t.elapsed());
        anyhow::ensure!(c.is_ok(), "token verification failed");
    }
    let (mean, p50, p99) = micros(times);
    println!(
        "{:<44} mean {:>9.2} µs  p50 {:>9.2} µs  p99 {:>9.2} µs",
        "token: signature and claims (no IO)", mean, p50, p99
    );
    let mut times = Vec::with_capacity(checks);
    for _ in 0..checks {
        let t = Instant::now();
        let p = vigil.authenticate_bearer(&token, audience).await;
        times.push(t.elapsed());
        anyhow::ensure!(p.is_ok(), "token refused");
    }
    let (mean, p50, p99) = micros(times);
    println!(
        "{:<44} mean {:>9.2} µs  p50 {:>9.2} µs  p99 {:>9.2} µs",
        "token: full check (+ liveness, account role)", mean, p50, p99
    );
    let mut times = Vec::with_capacity(checks);
    for _ in 0..checks {
        let t = Instant::now();
        let s = vigil.session(&session.cookie).await;
        times.push(t.elapsed());
        anyhow::ensure!(s.is_ok(), "session refused");
    }
    let (mean, p50, p99) = micros(times);
    println!(
        "{:<44} mean {:>9.2} µs  p50 {:>9.2} µs  p99 {:>9.2} µs",
        "session: cookie check (session + account)", mean, p50, p99
    );
    drop(vigil);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The raw cost of a durable write on this disk: 4 KiB then `fdatasync`, in
/// the directory the database lives in.
fn fsync_baseline(dir: &std::path::Path, n: usize) -> anyhow::Result<Vec<Duration>> {
    use std::io::Write as _;
    let path = dir.join("fsync-baseline");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)?;
    let block = [0x5au8; 4096];
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f.write_all(&block)?;
        f.sync_data()?;
        times.push(t.elapsed());
    }
    drop(f);
    let _ = std::fs::remove_file(path);
    Ok(times)
}

/// [`fsync_baseline`] while another thread does what a WAL checkpoint does
/// to the database file under audit load: 128 KiB written and synced every
/// 5 ms. The disk's own tail when one sync waits behind another's data.
fn fsync_beside_copies(dir: &std::path::Path, n: usize) -> anyhow::Result<Vec<Duration>> {
    use std::io::{Seek as _, SeekFrom, Write as _};
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let path = dir.join("fsync-beside");
    let copier = {
        let stop = Arc::clone(&stop);
        let path = path.clone();
        std::thread::spawn(move || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&path)?;
            let chunk = vec![0xa5u8; 128 * 1024];
            let mut at = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                f.seek(SeekFrom::Start(at))?;
                f.write_all(&chunk)?;
                f.sync_data()?;
                // Cycle over 16 MiB, as a database file's pages are rewritten.
                at = (at + chunk.len() as u64) % (16 << 20);
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(())
        })
    };
    let times = fsync_baseline(dir, n);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let copied = copier
        .join()
        .map_err(|_| anyhow::anyhow!("the copying thread panicked"))?;
    let _ = std::fs::remove_file(path);
    copied?;
    times
}

/// `vigil bench audit`: durable appends/s through the group-commit writer at
/// 1, 8, 64 and 256 concurrent writers beside the disk's raw fsync, proof
/// generation, and verification of the whole log (at least 1,000,000 entries).
pub async fn run_audit(
    writers: &[usize],
    rates: &[u64],
    duration: Duration,
    verify_entries: u64,
) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("vigil-bench-audit-{}", crypto::random_token()));
    std::fs::create_dir_all(&dir)?;
    let base = fsync_baseline(&dir, 500)?;
    let (fs_mean, fs_p50, fs_p99) = micros(base);
    println!(
        "raw fsync (4 KiB + fdatasync): {:>8.0} /s  p50 {:>8.0} µs  p99 {:>8.0} µs",
        1e6 / fs_mean.max(1.0),
        fs_p50,
        fs_p99
    );
    let busy = fsync_beside_copies(&dir, 500)?;
    let (_, busy_p50, busy_p99) = micros(busy);
    println!(
        "raw fsync beside a 128 KiB copy + fdatasync of another file every 5 ms (a WAL checkpoint's pattern): p50 {busy_p50:>6.0} µs  p99 {busy_p99:>6.0} µs"
    );
    let store: Arc<dyn store::Store> = Arc::new(
        store_sqlite::SqliteStore::open(
            &dir.join("vigil.db"),
            store_sqlite::SqliteOptions::default(),
        )
        .await?,
    );
    store.migrate().await?;
    let kf = crypto::KeyFile::generate();
    let source = crypto::KeyFileSource::Inline(kf.to_toml()?);
    let vigil = Arc::new(
        app::Vigil::open(
            Arc::clone(&store),
            &kf,
            source,
            Arc::new(SystemClock),
            app::Config::default(),
        )
        .await?,
    );
    println!(
        "{:>8} {:>10} {:>10} {:>8} {:>8} {:>8} {:>12} {:>7} {:>11} {:>11} {:>11} {:>6}",
        "writers",
        "appends",
        "per second",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "p99 - fsync",
        "batch",
        "commit p50",
        "commit p99",
        "commit max",
        "busy"
    );
    for &w in writers {
        vigil.audit_batches();
        let stop = Instant::now() + duration;
        let mut tasks = Vec::with_capacity(w);
        for _ in 0..w {
            let vigil = Arc::clone(&vigil);
            tasks.push(tokio::spawn(async move {
                let mut times = Vec::new();
                while Instant::now() < stop {
                    let t = Instant::now();
                    vigil
                        .audit_event(
                            &app::Principal::Operator,
                            app::trail::Category::Rest,
                            "read",
                            app::trail::Action::R,
                            None,
                            None,
                        )
                        .await?;
                    times.push(t.elapsed());
                }
                Ok::<_, app::AppError>(times)
            }));
        }
        let started = Instant::now();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await??);
        }
        let secs = started.elapsed().as_secs_f64();
        audit_row(w, all, secs, fs_p99, vigil.audit_batches(), "");
    }
    // Open loop: 256 writers sharing a fixed total rate (the target
    // 50,000/s), each on its own schedule.
    for &rate in rates.iter().filter(|&&r| r > 0) {
        vigil.audit_batches();
        let w = 256usize;
        let per_writer = Duration::from_secs_f64(w as f64 / rate as f64);
        let start = tokio::time::Instant::now() + Duration::from_millis(50);
        let stop = start + duration;
        let mut tasks = Vec::with_capacity(w);
        for k in 0..w {
            let vigil = Arc::clone(&vigil);
            tasks.push(tokio::spawn(async move {
                let mut times = Vec::new();
                // Spread the writers' phases over one period.
                let mut next = start + per_writer.mul_f64(k as f64 / w as f64);
                while next < stop {
                    tokio::time::sleep_until(next).await;
                    // Timed from the actual start: tokio's timer wakes on
                    // millisecond ticks, which would otherwise be charged
                    // to the append.
                    let began = tokio::time::Instant::now();
                    vigil
                        .audit_event(
                            &app::Principal::Operator,
                            app::trail::Category::Rest,
                            "read",
                            app::trail::Action::R,
                            None,
                            None,
                        )
                        .await?;
                    times.push(began.elapsed());
                    next += per_writer;
                }
                Ok::<_, app::AppError>(times)
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await??);
        }
        let secs = duration.as_secs_f64();
        let note = format!("   (open loop at {rate}/s)");
        audit_row(w, all, secs, fs_p99, vigil.audit_batches(), &note);
    }
    // Fill to the verification size with the widest writer count.
    let size = current_size(&vigil).await?;
    if size < verify_entries {
        let pb = bar(verify_entries - size, "filling log");
        let remaining = Arc::new(std::sync::atomic::AtomicU64::new(verify_entries - size));
        let mut tasks = Vec::new();
        for _ in 0..256 {
            let vigil = Arc::clone(&vigil);
            let remaining = Arc::clone(&remaining);
            let pb = pb.clone();
            tasks.push(tokio::spawn(async move {
                while remaining
                    .fetch_update(
                        std::sync::atomic::Ordering::SeqCst,
                        std::sync::atomic::Ordering::SeqCst,
                        |r| r.checked_sub(1),
                    )
                    .is_ok()
                {
                    vigil
                        .audit_event(
                            &app::Principal::Operator,
                            app::trail::Category::Rest,
                            "read",
                            app::trail::Action::R,
                            None,
                            None,
                        )
                        .await?;
                    pb.inc(1);
                }
                Ok::<_, app::AppError>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        pb.finish_and_clear();
    }
    let size = current_size(&vigil).await?;
    // Proofs: in this server, whose tile cache holds the tiles its writer
    // wrote (pyramids built by the first proof that needs each); then in a
    // freshly opened one, every tile read from SQLite on first use.
    prove(&vigil, size, "in the writing server").await?;
    let fresh = app::Vigil::open(
        Arc::clone(&store),
        &kf,
        crypto::KeyFileSource::Inline(kf.to_toml()?),
        Arc::new(SystemClock),
        app::Config::default(),
    )
    .await?;
    prove(&fresh, size, "freshly opened, tiles from SQLite").await?;
    drop(fresh);
    // Verification: read every entry and checkpoint, recompute, check signatures.
    let t = Instant::now();
    let mut entries: Vec<Vec<u8>> = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    let mut from = 0u64;
    loop {
        let page = vigil.audit_raw_entries(from, 10_000).await?;
        let Some((last, _)) = page.last() else { break };
        from = last + 1;
        entries.extend(page.into_iter().map(|(_, b)| b));
    }
    let mut checkpoints = Vec::new();
    let mut cfrom = 0u64;
    loop {
        let page = vigil.audit_checkpoints(cfrom, 10_000).await?;
        let Some((last, _)) = page.last() else { break };
        cfrom = last + 1;
        checkpoints.extend(page);
    }
    let read = t.elapsed();
    let verifiers: Vec<audit::VerifierKey> = vigil
        .audit_verifier_keys()
        .iter()
        .filter_map(|k| k.parse().ok())
        .collect();
    let t = Instant::now();
    let report = audit::verify_log(entries.iter().map(Vec::as_slice), &checkpoints, &verifiers)
        .map_err(|e| anyhow::anyhow!("verification failed: {e}"))?;
    let verify = t.elapsed();
    let bytes: usize = entries.iter().map(Vec::len).sum();
    println!(
        "verify {} entries ({:.0} MB, {} checkpoints): {:.2} s end to end (target ≤ 2 s): reading them from SQLite {:.2} s, recompute + signatures {:.2} s",
        report.entries,
        bytes as f64 / 1e6,
        report.checkpoints,
        (read + verify).as_secs_f64(),
        read.as_secs_f64(),
        verify.as_secs_f64(),
    );
    drop(entries);
    // The same through `vigil audit verify`'s own code, which also checks
    // every stored tile against the recomputed tree.
    let t = Instant::now();
    crate::audit_cli::verify(&vigil).await?;
    println!(
        "vigil audit verify (the CLI's code, tiles checked too): {:.2} s end to end",
        t.elapsed().as_secs_f64()
    );
    drop(vigil);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// 200 inclusion and 200 consistency proofs spread over a log of `size`
/// entries, timed; `what` says which server made them.
async fn prove(vigil: &app::Vigil, size: u64, what: &str) -> anyhow::Result<()> {
    if size == 0 {
        return Ok(());
    }
    let mut inc = Vec::new();
    let mut cons = Vec::new();
    for k in 0..200u64 {
        let i = (k * 7919) % size;
        let t = Instant::now();
        let _ = vigil.audit_inclusion_proof(i, size).await?;
        inc.push(t.elapsed());
        let old = 1 + (k * 104_729) % (size - 1).max(1);
        let t = Instant::now();
        let _ = vigil.audit_consistency_proof(old, size).await?;
        cons.push(t.elapsed());
    }
    let (m, p50, p99) = micros(inc);
    println!(
        "inclusion proof, log of {size}, {what}: mean {m:.0} µs  p50 {p50:.0} µs  p99 {p99:.0} µs"
    );
    let (m, p50, p99) = micros(cons);
    println!(
        "consistency proof, log of {size}, {what}: mean {m:.0} µs  p50 {p50:.0} µs  p99 {p99:.0} µs"
    );
    Ok(())
}

async fn current_size(vigil: &app::Vigil) -> anyhow::Result<u64> {
    Ok(vigil
        .audit_checkpoint()
        .await?
        .and_then(|c| c.lines().nth(1).and_then(|l| l.parse().ok()))
        .unwrap_or(0))
}
