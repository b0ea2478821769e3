//! `vigil bench policy`: the access policy's cost in a deployment of
//! about 5,000 staff and 100,000 patients.
//!
//! 1. Decision latency: for sampled (clinician, resource) pairs, the request
//!    slice is built from the records (the relationship lookup, timed on its
//!    own), then the Cedar decision over that slice is timed.
//! 2. The headline: FHIR reads by id over HTTP with identity, policy,
//!    decryption and a durable audit entry all on, clinicians reading their
//!    own patients' records, beside the record store's figure for the same
//!    reads by a backend service (identity, decryption and audit on; no
//!    relationship rules).

use std::sync::Arc;
use std::time::{Duration, Instant};

use model::{ResourceId, ResourceType, SystemClock};
use serde_json::{Value, json};

use crate::bench::{Figures, bench_token, load};
use crate::serve::bar;

/// How long each HTTP workload runs before it is measured.
const WARM_UP: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
pub struct PolicyBenchOptions {
    pub patients: usize,
    pub staff: usize,
    pub decisions: usize,
    pub connections: usize,
    pub duration: Duration,
}

/// Doctors are the first half of the staff, nurses the second.
fn doctor_of(n: usize, staff: usize) -> usize {
    n % (staff / 2).max(1)
}

fn nurse_of(n: usize, staff: usize) -> usize {
    (staff / 2) + n % (staff - staff / 2).max(1)
}

fn practitioner(i: usize) -> Value {
    json!({
        "resourceType": "Practitioner", "id": format!("s{i:05}"), "active": true,
        "name": [{"family": format!("Staff{i}"), "given": ["Sam"]}]
    })
}

/// A patient's record: the Patient (1 % VIP), a care team (their doctor and
/// nurse), a finished encounter with the doctor, and two Observations (one
/// in twenty labelled PSY); one patient in a hundred has a consent denying
/// PSY data to everyone.
fn patient(n: usize, staff: usize, now: i64) -> Vec<Value> {
    let id = format!("p{n:06}");
    let pref = format!("Patient/{id}");
    let dr = format!("Practitioner/s{:05}", doctor_of(n, staff));
    let nurse = format!("Practitioner/s{:05}", nurse_of(n, staff));
    let mut p = json!({
        "resourceType": "Patient", "id": id,
        "identifier": [{"system": app::demo::MRN_SYSTEM, "value": format!("MRN{n:07}")}],
        "name": [{"family": format!("Family{}", n % 5000), "given": [format!("Given{}", n % 977)]}],
        "gender": if n.is_multiple_of(2) { "female" } else { "male" },
        "birthDate": format!("19{:02}-{:02}-{:02}", 30 + n % 70, 1 + n % 12, 1 + n % 28)
    });
    if n.is_multiple_of(100) {
        label(&mut p, "VIP");
    }
    let day = 86_400_000_000i64;
    let start = model::Timestamp(now - (1 + (n % 300) as i64) * day).to_fhir_instant();
    let end =
        model::Timestamp(now - (1 + (n % 300) as i64) * day + 1_800_000_000).to_fhir_instant();
    let mut out = vec![
        p,
        json!({
            "resourceType": "CareTeam", "id": format!("ct{n:06}"), "status": "active",
            "subject": {"reference": pref},
            "participant": [{"member": {"reference": dr}}, {"member": {"reference": nurse}}]
        }),
        json!({
            "resourceType": "Encounter", "id": format!("en{n:06}"), "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": pref},
            "participant": [{"individual": {"reference": dr}}],
            "period": {"start": start, "end": end}
        }),
    ];
    for k in 0..2 {
        let mut o = json!({
            "resourceType": "Observation", "id": format!("ob{n:06}{k}"), "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": pref},
            "effectiveDateTime": start,
            "valueQuantity": {"value": 60 + n % 40, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}
        });
        if k == 1 && n.is_multiple_of(20) {
            label(&mut o, "PSY");
        }
        out.push(o);
    }
    if n.is_multiple_of(100) {
        out.push(json!({
            "resourceType": "Consent", "id": format!("cn{n:06}"), "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": pref},
            "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
            "provision": {"type": "permit", "provision": [{"type": "deny",
                "securityLabel": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}]}]}
        }));
    }
    out
}

fn label(r: &mut Value, code: &str) {
    if let Some(obj) = r.as_object_mut() {
        obj.insert(
            "meta".into(),
            json!({"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": code}]}),
        );
    }
}

/// Percentiles (p50, p99) of microsecond samples.
fn pcts(mut v: Vec<f64>) -> (f64, f64, usize) {
    v.sort_by(f64::total_cmp);
    let at = |p: f64| {
        if v.is_empty() {
            return 0.0;
        }
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v.get(i).copied().unwrap_or(0.0)
    };
    (at(0.5), at(0.99), v.len())
}

fn clinician(i: usize) -> policy::Principal {
    policy::Principal {
        id: format!("acct-s{i:05}"),
        role: policy::Role::Physician,
        practitioner: Some(format!("s{i:05}")),
        patient: None,
        organization: None,
        department: None,
        mfa: true,
        training_current: true,
    }
}

pub async fn run(opts: PolicyBenchOptions) -> anyhow::Result<()> {
    anyhow::ensure!(opts.staff >= 4, "--staff must be at least 4");
    anyhow::ensure!(opts.patients >= 1, "--patients must be at least 1");
    let dir =
        std::env::temp_dir().join(format!("vigil-bench-policy-{:08x}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir)?;
    let result = run_in(&dir, &opts).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(dir: &std::path::Path, opts: &PolicyBenchOptions) -> anyhow::Result<()> {
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
            store,
            &kf,
            source,
            Arc::new(SystemClock),
            app::Config::default(),
        )
        .await?,
    );
    let now = model::Timestamp::from_offset_datetime(time::OffsetDateTime::now_utc()).0;

    // Seed the deployment through the normal write path.
    let started = Instant::now();
    let pb = bar((opts.staff + opts.patients) as u64, "seeding");
    let mut batch = Vec::new();
    for i in 0..opts.staff {
        batch.push(practitioner(i));
        if batch.len() >= 2000 || i + 1 == opts.staff {
            vigil
                .put_many(&app::Principal::Operator, std::mem::take(&mut batch))
                .await?;
            pb.set_position(i as u64 + 1);
        }
    }
    for n in 0..opts.patients {
        batch.extend(patient(n, opts.staff, now));
        if batch.len() >= 2000 || n + 1 == opts.patients {
            vigil
                .put_many(&app::Principal::Operator, std::mem::take(&mut batch))
                .await?;
            pb.set_position((opts.staff + n) as u64 + 1);
        }
    }
    pb.finish_and_clear();
    vigil.store().refresh_statistics().await?;
    println!(
        "vigil bench policy: SQLite, {} staff, {} patients ({} resources) seeded in {:.1}s",
        opts.staff,
        opts.patients,
        opts.staff + opts.patients * 5 + opts.patients / 100,
        started.elapsed().as_secs_f64()
    );

    decisions(&vigil, opts).await?;
    headline(&vigil, opts).await
}

/// Decision latency per request slice, and the relationship lookup apart.
async fn decisions(vigil: &app::Vigil, opts: &PolicyBenchOptions) -> anyhow::Result<()> {
    let engine = vigil.policy_engine()?;
    let doctors = (opts.staff / 2).max(1);
    let mut lookup = Vec::with_capacity(opts.decisions);
    let mut allowed = Vec::with_capacity(opts.decisions);
    let mut denied = Vec::with_capacity(opts.decisions);
    let mut fresh_allowed = Vec::with_capacity(opts.decisions);
    let mut fresh_denied = Vec::with_capacity(opts.decisions);
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let pb = bar(opts.decisions as u64, "deciding");
    let now = model::Timestamp::from_offset_datetime(time::OffsetDateTime::now_utc());
    for k in 0..opts.decisions {
        // Half the requests are a doctor reading one of their patients'
        // Observations, half a doctor reading anyone's.
        let n = (next() % opts.patients as u64) as usize;
        let who = if k % 2 == 0 {
            doctor_of(n, opts.staff)
        } else {
            (next() % doctors as u64) as usize
        };
        let obs = ResourceId::new(format!("ob{n:06}{}", k % 2))
            .map_err(|e| anyhow::anyhow!("resource id: {e}"))?;
        let t0 = Instant::now();
        let slice = vigil
            .decision_slice(&app::Principal::Operator, ResourceType::Observation, &obs)
            .await?;
        lookup.push(t0.elapsed().as_secs_f64() * 1e6);
        let principal = clinician(who);
        let req = policy::Request {
            principal: &principal,
            action: policy::Action::Read,
            resource: &slice.resource,
            purpose: None,
            now,
            facts: &slice.facts,
        };
        // Cedar asked afresh (no memo), then the decision point as requests
        // meet it (its memo answers questions of a kind already asked).
        let t1 = Instant::now();
        let fresh = engine.decide_fresh(&req);
        let fresh_us = t1.elapsed().as_secs_f64() * 1e6;
        let t2 = Instant::now();
        let d = engine.decide(&req);
        let us = t2.elapsed().as_secs_f64() * 1e6;
        anyhow::ensure!(fresh == d, "the memo changed a decision: {fresh:?} / {d:?}");
        if d.allow {
            allowed.push(us);
            fresh_allowed.push(fresh_us);
        } else {
            denied.push(us);
            fresh_denied.push(fresh_us);
        }
        if k % 256 == 0 {
            pb.set_position(k as u64);
        }
    }
    pb.finish_and_clear();
    let all: Vec<f64> = allowed.iter().chain(denied.iter()).copied().collect();
    let fresh_all: Vec<f64> = fresh_allowed
        .iter()
        .chain(fresh_denied.iter())
        .copied()
        .collect();
    println!(
        "{:<52} {:>8} {:>10} {:>10}",
        "measure", "samples", "p50 µs", "p99 µs"
    );
    for (label, v) in [
        ("relationship lookup (records, no cache)", lookup),
        ("Cedar evaluation afresh, all", fresh_all),
        ("Cedar evaluation afresh, allowed", fresh_allowed),
        (
            "Cedar evaluation afresh, denied (+ explanation)",
            fresh_denied,
        ),
        ("decision point (memo), all", all),
        ("decision point (memo), allowed", allowed),
        ("decision point (memo), denied (+ explanation)", denied),
    ] {
        let (p50, p99, n) = pcts(v);
        println!("{label:<52} {n:>8} {p50:>10.1} {p99:>10.1}");
    }
    println!(
        "(the memo holds Cedar's answers by the attributes and context they depend on: {} kinds of question here)",
        engine.memo_len()
    );
    Ok(())
}

/// Reads by id over HTTP: a backend service (the record store's figure) and
/// clinicians reading their own patients (everything on).
async fn headline(vigil: &Arc<app::Vigil>, opts: &PolicyBenchOptions) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = web::router(web::WebState {
        vigil: Arc::clone(vigil),
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
    let site = format!("http://{addr}");
    let base = format!("{site}/fhir");

    // One clinician account per connection, each linked to its Practitioner.
    let doctors = (opts.staff / 2).max(1);
    let mut people = Vec::new();
    for c in 0..opts.connections.min(doctors) {
        let username = format!("bench.dr{c}");
        vigil
            .create_account(
                &app::Principal::Operator,
                app::NewAccount {
                    username: username.clone(),
                    role: store::Role::Physician,
                    practitioner: Some(
                        ResourceId::new(format!("s{c:05}"))
                            .map_err(|e| anyhow::anyhow!("practitioner id: {e}"))?,
                    ),
                    patient: None,
                    display_name: None,
                    email: None,
                },
                None,
            )
            .await?;
        let token = vigil
            .issue_operator_token(&username, "user/*.rs", 3600, &site, &base)
            .await?;
        let mine: Vec<String> = (c..opts.patients)
            .step_by(doctors)
            .map(|n| format!("/Patient/p{n:06}"))
            .collect();
        people.push((token, mine));
    }
    let service = bench_token(vigil, &site, &base).await?;
    let everyone: Vec<String> = (0..opts.patients.min(100_000))
        .map(|n| format!("/Patient/p{n:06}"))
        .collect();

    println!(
        "(each workload after a {} s warm-up that is not counted)",
        WARM_UP.as_secs()
    );
    println!(
        "{:<50} {:>9} {:>7} {:>10} {:>9} {:>9}",
        format!("FHIR read by id, {} connections", opts.connections),
        "requests",
        "errors",
        "req/s",
        "p50 ms",
        "p99 ms"
    );
    let show = |label: &str, f: &Figures| {
        println!(
            "{label:<50} {:>9} {:>7} {:>10.0} {:>9.2} {:>9.2}",
            f.requests, f.errors, f.per_second, f.p50_ms, f.p99_ms
        );
    };
    // Each workload runs WARM_UP first, not counted: the steady state is
    // measured (caches filled: SQLite's pages, data keys, relationship facts).
    let service = [(service, everyone)];
    load(&base, &service, opts.connections, WARM_UP).await?;
    let store_only = load(&base, &service, opts.connections, opts.duration).await?;
    show(
        "record store (service: identity, decrypt, audit)",
        &store_only,
    );
    load(&base, &people, opts.connections, WARM_UP).await?;
    let everything = load(&base, &people, opts.connections, opts.duration).await?;
    show("clinicians (identity, policy, decrypt, audit)", &everything);
    let _ = stop_tx.send(());
    let _ = server.await;
    Ok(())
}
