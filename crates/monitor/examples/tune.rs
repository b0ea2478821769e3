#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "a development tool"
)]
//! Runs the simulator, the engine and the naive baseline on the given seeds
//! and prints the evaluation: `cargo run --release -p monitor --example tune -- 1 2 3`.
//! Seeds 1-3 are for tuning; the reporting seeds (101-105) are printed by
//! `vigil monitor eval`.

use monitor::engine::{self, Config};
use monitor::eval::evaluate;
use monitor::sim::{SimConfig, generate};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seeds: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .collect();
    for seed in seeds {
        let t = std::time::Instant::now();
        let sim = generate(&SimConfig {
            seed,
            ..SimConfig::default()
        })?;
        let gen_t = t.elapsed();
        let t = std::time::Instant::now();
        let out = engine::run(&sim.world, &Config::default(), &[]);
        let run_t = t.elapsed();
        let records = engine::records(&sim.world, &out.alerts);
        let m = evaluate(&records, &sim.incidents, sim.world.accesses.len());
        println!("seed {seed}: generated in {gen_t:?}, engine in {run_t:?}\n{m}");
        let naive = engine::records(
            &sim.world,
            &engine::baseline(&sim.world, &Config::default()),
        );
        let b = evaluate(&naive, &sim.incidents, sim.world.accesses.len());
        println!(
            "baseline: alerts {} precision {:.3} recall {:.3} in budget {:.3} pair precision {:.3}\n",
            b.alerts, b.precision, b.recall, b.recall_in_budget, b.pair_precision
        );
        if std::env::var_os("TEMPLATES").is_some() {
            dump_templates(&sim.world);
        }
        if std::env::var_os("SHOW").is_some() {
            let inc: std::collections::HashSet<(&str, &str)> = sim
                .incidents
                .iter()
                .flat_map(|i| {
                    i.event_ids
                        .iter()
                        .map(move |e| (i.staff_id.as_str(), e.as_str()))
                })
                .collect();
            for r in &records {
                let hit = r
                    .event_ids
                    .iter()
                    .any(|e| inc.contains(&(r.staff_id.as_str(), e.as_str())));
                if !hit {
                    let u = sim.world.users.iter().find(|u| u.id == r.staff_id);
                    let (role, dept) = u
                        .map(|u| {
                            (
                                sim.world.roles[u.role.ix()].clone(),
                                sim.world.departments[u.department.ix()].clone(),
                            )
                        })
                        .unwrap_or_default();
                    let ev = sim
                        .world
                        .accesses
                        .iter()
                        .position(|a| Some(&a.event_id) == r.event_ids.first())
                        .unwrap_or(0);
                    let a = &sim.world.accesses[ev];
                    let p = &sim.world.patients[a.patient.ix()];
                    let encs: Vec<String> = sim
                        .world
                        .encounters
                        .iter()
                        .filter(|e| e.patient == a.patient)
                        .map(|e| {
                            format!(
                                "{}:{:?}:{}..{:?}",
                                sim.world.departments[e.department.ix()],
                                e.class,
                                (e.start - a.time) / 3600,
                                e.end.map(|x| (x - a.time) / 3600)
                            )
                        })
                        .collect();
                    println!(
                        "FP {:?} {:.3} {} [{role}/{dept}] {:?} {} pats={} ev={} dec={:?} encs={encs:?}",
                        r.kind,
                        r.score,
                        r.staff_id,
                        out.explanations[ev].because,
                        r.reason,
                        r.patient_ids.len(),
                        r.event_ids.len(),
                        p.deceased.map(|d| (d - a.time) / 3600)
                    );
                }
            }
            let by_ev: std::collections::HashMap<(&str, &str), String> = sim
                .incidents
                .iter()
                .flat_map(|i| {
                    i.event_ids
                        .iter()
                        .map(move |e| ((i.staff_id.as_str(), e.as_str()), format!("{:?}", i.kind)))
                })
                .collect();
            let mut tally: std::collections::BTreeMap<String, usize> = Default::default();
            for (rank, r) in records.iter().enumerate() {
                let k = r
                    .event_ids
                    .iter()
                    .find_map(|e| by_ev.get(&(r.staff_id.as_str(), e.as_str())))
                    .cloned()
                    .unwrap_or_else(|| "FALSE".into());
                *tally
                    .entry(format!(
                        "{}{:?} <- {}",
                        if rank < 2 * sim.incidents.len() {
                            "in  "
                        } else {
                            "out "
                        },
                        r.kind,
                        k
                    ))
                    .or_default() += 1;
            }
            for (k, n) in tally {
                println!("TALLY {n:4} {k}");
            }
            let hit: std::collections::HashSet<&str> = records
                .iter()
                .flat_map(|r| r.event_ids.iter().map(|e| e.as_str()))
                .collect();
            for i in &sim.incidents {
                if !i.event_ids.iter().any(|e| hit.contains(e.as_str())) {
                    let u = sim.world.users.iter().find(|u| u.id == i.staff_id).unwrap();
                    let why: Vec<String> = i
                        .event_ids
                        .iter()
                        .filter_map(|e| {
                            sim.world.accesses.iter().position(|a| {
                                &a.event_id == e && sim.world.users[a.user.ix()].id == i.staff_id
                            })
                        })
                        .map(|x| format!("{:?}", out.explanations[x].because))
                        .collect();
                    println!(
                        "MISS {:?} {} [{}/{}] pats={} ev={} {:?}",
                        i.kind,
                        i.staff_id,
                        sim.world.roles[u.role.ix()],
                        sim.world.departments[u.department.ix()],
                        i.patient_ids.len(),
                        i.event_ids.len(),
                        why
                    );
                }
            }
        }
    }
    Ok(())
}

#[allow(dead_code)]
fn dump_templates(world: &monitor::World) {
    use monitor::engine::{Index, Learned, Phase, Prepared};
    let cfg = Config::default();
    let index = Index::build(world, &cfg);
    let prep = Prepared::new(world, &index, &cfg);
    let learned = Learned::fit(&prep, &cfg);
    for (d, dn) in world.departments.iter().enumerate() {
        for (r, rn) in world.roles.iter().enumerate() {
            for ph in [Phase::Active, Phase::Recent] {
                for (e, en) in world
                    .departments
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (monitor::DeptIx(i as u32), n.clone()))
                    .chain([(monitor::engine::ANY, "ANY".to_string())])
                {
                    let t = (
                        (monitor::DeptIx(d as u32), monitor::RoleIx(r as u32)),
                        ph,
                        e,
                    );
                    if let Some(x) = learned.templates.get(&monitor::engine::template_key(t)) {
                        println!("TEMPLATE {dn}/{rn} {ph:?} {en}: {x:?}");
                    }
                }
            }
        }
    }
}
