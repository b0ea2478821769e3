//! `vigil bench monitor`: the monitoring engine's throughput on one thread,
//! phase by phase, over accesses already parsed into memory; then CSV
//! parsing apart; with the peak resident memory of each phase (Linux:
//! `VmHWM`, reset between phases through `/proc/self/clear_refs`).
//!
//! Issue 6's target is 1,000,000 accesses/s per core for explain + detect
//! (`engine::detect`: explain every access in time order, detect, group,
//! rank), timed directly over an index, a prepared log and a learned model
//! built before it; the explainer alone is measured beside it, and the
//! whole `engine::run` (index, prepare, learn, explain and detect) after.
//! Every phase runs `rounds` times and the fastest round is reported, as
//! usual for a benchmark on a machine that also does other work.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use monitor::World;
use monitor::engine::{self, Config, Explainer, Index, Learned, Prepared, Strength};
use monitor::input::ReadOptions;
use monitor::sim;

use crate::monitor_cli::{megabytes, scaled_sim, thousands, timezone};

/// Issue 6's target for explain + detect, per core.
pub const TARGET_PER_SECOND: f64 = 1_000_000.0;

#[derive(Args, Debug, Clone)]
pub struct MonitorBenchArgs {
    /// Simulated access rows (staff and patients scale with them).
    #[arg(long, default_value_t = 1_000_000, conflicts_with = "input")]
    pub accesses: usize,
    /// The simulator's seed.
    #[arg(long, default_value_t = 1, conflicts_with = "input")]
    pub seed: u64,
    /// Benchmarks a given export (CSV or FHIR NDJSON) instead of a simulation.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// The organisation's time zone (IANA name).
    #[arg(long, default_value = "UTC")]
    pub timezone: String,
    /// Runs of each phase; the fastest is reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
}

pub fn run(args: &MonitorBenchArgs) -> anyhow::Result<()> {
    let cfg = Config {
        timezone: timezone(&args.timezone)?,
        ..Config::default()
    };
    let rounds = args.rounds.max(1);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    match &args.input {
        Some(dir) => {
            let (world, parse) = parse(dir, rounds)?;
            describe_world(&world, &format!("the export in {}", dir.display()), None);
            engine_phases(&world, &cfg, rounds, cores);
            print_parse("parsing the export", &parse);
        }
        None => {
            let sim_cfg = sim::SimConfig {
                timezone: args.timezone.clone(),
                ..scaled_sim(args.seed, args.accesses)
            };
            let t = Instant::now();
            let simulation = sim::generate(&sim_cfg).context("simulating")?;
            let gen_t = t.elapsed();
            let world = simulation.world;
            describe_world(
                &world,
                &format!("a simulated hospital, seed {}", args.seed),
                Some(gen_t),
            );
            engine_phases(&world, &cfg, rounds, cores);
            let dir = Scratch::new()?;
            let t = Instant::now();
            sim::write_csv(&world, &dir.0)
                .with_context(|| format!("writing CSV into {}", dir.0.display()))?;
            println!(
                "wrote the world as CSV in {:.2} s (to parse it back)",
                t.elapsed().as_secs_f64()
            );
            // Only the parsed world is held while parsing.
            drop(world);
            let (_, parse) = parse(&dir.0, rounds)?;
            print_parse("CSV parsing", &parse);
        }
    }
    Ok(())
}

fn describe_world(world: &World, what: &str, generated: Option<Duration>) {
    println!(
        "world: {what}: {} accesses, {} staff, {} patients, {} encounters, {} orders{}",
        thousands(world.accesses.len() as u64),
        thousands(world.users.len() as u64),
        thousands(world.patients.len() as u64),
        thousands(world.encounters.len() as u64),
        thousands(world.orders.len() as u64),
        generated
            .map(|d| format!(" (generated in {:.2} s)", d.as_secs_f64()))
            .unwrap_or_default()
    );
    println!(
        "memory: {} resident with the world loaded, {} at the peak of loading",
        memory("VmRSS:"),
        memory("VmHWM:")
    );
}

/// The fastest of `rounds` runs of `f` (at least one), and the last
/// result. Each round's result is dropped before the next round runs, so
/// that the peak memory is one round's.
fn best<T>(rounds: u32, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut timed = || {
        let t = Instant::now();
        let v = black_box(f());
        (t.elapsed(), v)
    };
    let (mut best, mut v) = timed();
    for _ in 1..rounds {
        drop(v);
        let (d, next) = timed();
        best = best.min(d);
        v = next;
    }
    (best, v)
}

fn engine_phases(world: &World, cfg: &Config, rounds: u32, cores: usize) {
    let n = world.accesses.len();
    println!(
        "engine on one thread (the engine is single-threaded; {cores} core{} available, one used), fastest of {rounds} round{}:",
        if cores == 1 { "" } else { "s" },
        if rounds == 1 { "" } else { "s" },
    );
    let resets = reset_peak();
    println!(
        "  {:<34} {:>9} {:>14}   {}",
        "phase",
        "seconds",
        "accesses/s",
        if resets {
            "peak memory in the phase (world included)"
        } else {
            "peak memory of the process so far"
        }
    );
    let row = |label: &str, d: Duration, peak: &str, note: &str| {
        println!(
            "  {label:<34} {:>9.3} {:>14}   {peak}{note}",
            d.as_secs_f64(),
            per_second(n, d),
        );
    };

    let (index_t, index) = best(rounds, || Index::build(world, cfg));
    row("index build", index_t, &phase_peak(), "");
    let (prepare_t, prep) = best(rounds, || Prepared::new(world, &index, cfg));
    row(
        "prepare (time order, local hours)",
        prepare_t,
        &phase_peak(),
        "",
    );
    let (learn_t, learned) = best(rounds, || Learned::fit(&prep, cfg));
    row("learn (peer patterns, hours)", learn_t, &phase_peak(), "");
    let (explain_t, unexplained) = best(rounds, || explain_only(&prep, &index, &learned, cfg));
    row("explain only", explain_t, &phase_peak(), "");
    let (detect_t, output) = best(rounds, || engine::detect(&prep, &learned, cfg, &[]));
    let rate = rate(n, detect_t);
    row(
        "explain + detect",
        detect_t,
        &phase_peak(),
        &format!(
            "  target ≥ {} accesses/s per core: {}",
            thousands(TARGET_PER_SECOND as u64),
            if rate >= TARGET_PER_SECOND {
                "met"
            } else {
                "NOT met"
            }
        ),
    );
    // The whole run builds its own: one copy at a time in memory.
    drop(learned);
    drop(prep);
    drop(index);
    reset_peak();
    let (run_t, _) = best(rounds, || engine::run(world, cfg, &[]));
    row("whole engine (engine::run)", run_t, &phase_peak(), "");
    println!(
        "  ({} alerts; {} accesses unexplained)",
        thousands(output.alerts.len() as u64),
        thousands(unexplained as u64)
    );
}

/// Explains every access in time order; returns how many nothing explains.
fn explain_only(prep: &Prepared<'_>, index: &Index, learned: &Learned, cfg: &Config) -> usize {
    let mut ex = Explainer::new(index, learned, cfg);
    let mut none = 0;
    for &i in &prep.order {
        if let Some(a) = prep.world.accesses.get(i as usize)
            && ex.explain(a).because.strength() == Strength::None
        {
            none += 1;
        }
    }
    none
}

struct Parse {
    bytes: u64,
    rows: u64,
    time: Duration,
    peak: String,
}

fn parse(dir: &Path, rounds: u32) -> anyhow::Result<(World, Parse)> {
    let mut best_t = Duration::MAX;
    let mut loaded = None;
    reset_peak();
    for _ in 0..rounds {
        // The previous round's world is dropped first: one world at a time.
        drop(loaded.take());
        let t = Instant::now();
        let l = monitor::input::read_dir(dir, &ReadOptions::default(), &mut |_, _| {})
            .with_context(|| format!("reading {}", dir.display()))?;
        best_t = best_t.min(t.elapsed());
        loaded = Some(l);
    }
    let l = loaded.context("no parsing round ran")?;
    let parse = Parse {
        bytes: l.bytes,
        rows: l.rows,
        time: best_t,
        peak: memory("VmHWM:"),
    };
    Ok((l.world, parse))
}

fn print_parse(what: &str, p: &Parse) {
    let secs = p.time.as_secs_f64().max(1e-9);
    println!(
        "{what} (one thread, fastest round): {} and {} rows in {:.3} s: {:.1} MB/s, {} rows/s; peak memory {}",
        megabytes(p.bytes),
        thousands(p.rows),
        secs,
        p.bytes as f64 / 1e6 / secs,
        thousands((p.rows as f64 / secs) as u64),
        p.peak
    );
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn per_second(n: usize, d: Duration) -> String {
    thousands(rate(n, d) as u64)
}

/// A memory figure of this process from `/proc/self/status` (`VmHWM:`,
/// the peak resident set, or `VmRSS:`, the current one), or `n/a` where it
/// is not available.
pub fn memory(field: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or_else(|| "n/a".to_owned(), |kb| format!("{} MB", kb / 1024))
}

/// The peak resident memory since the last reset, and a reset.
fn phase_peak() -> String {
    let peak = memory("VmHWM:");
    reset_peak();
    peak
}

/// Resets the peak resident set to the current one (Linux 4.0 and later),
/// so that the next `VmHWM` reading is the peak since now. False where
/// that is not possible: readings are then the process's peak so far.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> anyhow::Result<Scratch> {
        let dir = std::env::temp_dir().join(format!(
            "vigil-bench-monitor-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
