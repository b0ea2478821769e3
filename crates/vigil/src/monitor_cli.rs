//! `vigil monitor`: privacy monitoring from the command line, with no server,
//! configuration or database.
//!
//! - `scan` reads a hospital's export (six CSV files or FHIR Bulk Data
//!   NDJSON), explains every access and writes the alerts, highest score
//!   first;
//! - `simulate` writes a synthetic hospital with labelled incidents
//!   (`docs/monitor-simulator.md`);
//! - `eval` scores alerts against those labels, or with `--seeds` runs the
//!   simulator, the engine and the naive baseline in memory and checks the
//!   figures issue 6 asks for.
//!
//! `vigil monitor import` (the same input, into the running server's store)
//! belongs beside these verbs; it is not here yet.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use jiff::tz::TimeZone;
use monitor::engine::{self, Config, Strength};
use monitor::eval::{Metrics, evaluate, read_alerts, read_incidents};
use monitor::input::{self, BadRow, InputError, Loaded, ReadOptions};
use monitor::sim::{self, SimConfig};
use monitor::{AlertRecord, Kind, World};
use serde::Serialize;

#[derive(Subcommand, Debug)]
pub enum MonitorCommand {
    /// Explains every access of an export and writes the alerts (one JSON
    /// object per line, highest score first). No server is needed.
    Scan {
        /// The export: the six CSV files of issue 6 (staff.csv, patients.csv,
        /// encounters.csv, care_team.csv, orders.csv, access_log.csv) or FHIR
        /// Bulk Data NDJSON. Other files (such as a simulation's
        /// incidents.ndjson beside the CSV files) are never read.
        #[arg(long)]
        input: PathBuf,
        /// Where to write the alerts. Written whole or not at all.
        #[arg(long)]
        out: PathBuf,
        /// The organisation's time zone (IANA name), for hours and days.
        #[arg(long, default_value = "UTC")]
        timezone: String,
        /// Skips malformed rows (each is reported) instead of refusing the input.
        #[arg(long)]
        skip_bad_rows: bool,
        /// Also writes each access's explanation, one JSON object per line.
        #[arg(long)]
        explanations: Option<PathBuf>,
    },
    /// Writes a synthetic hospital (the six CSV files) with labelled
    /// insider incidents, as docs/monitor-simulator.md specifies.
    Simulate {
        /// The directory for the six CSV files (created if missing).
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Approximate number of staff accounts.
        #[arg(long, default_value_t = SimConfig::default().staff)]
        staff: usize,
        /// Patient records in the registry.
        #[arg(long, default_value_t = SimConfig::default().patients)]
        patients: usize,
        /// Length of the period.
        #[arg(long, default_value_t = SimConfig::default().days)]
        days: u32,
        /// Approximate number of legitimate access rows.
        #[arg(long, default_value_t = SimConfig::default().target_accesses)]
        accesses: usize,
        /// The hospital's time zone (IANA name): shifts and nights are local.
        #[arg(long, default_value = "UTC")]
        timezone: String,
        /// Where to write the labelled incidents (default <out>/incidents.ndjson).
        /// `monitor scan` never reads them: it reads only the six CSV files.
        #[arg(long)]
        labels: Option<PathBuf>,
    },
    /// Scores alerts against labelled incidents (precision, recall, recall
    /// within a review budget of twice the incidents, pair precision,
    /// alerts per 10,000 accesses). Without --alerts: simulates each of
    /// --seeds in memory and prints the engine beside the naive baseline.
    Eval {
        /// Alerts as `monitor scan` writes them.
        #[arg(long, requires = "labels", conflicts_with = "seeds")]
        alerts: Option<PathBuf>,
        /// The simulator's incidents.ndjson.
        #[arg(long, requires = "alerts", conflicts_with = "seeds")]
        labels: Option<PathBuf>,
        /// With --alerts: the export the alerts came from, to count its
        /// access rows (default: the directory of --labels when it holds
        /// staff.csv).
        #[arg(long, requires = "alerts", conflicts_with = "accesses")]
        input: Option<PathBuf>,
        /// With --alerts: the number of access rows scanned. With --seeds:
        /// the simulated hospital's target access rows (staff and patients
        /// scale with it); the thresholds are checked only at the
        /// default scale.
        #[arg(long)]
        accesses: Option<usize>,
        /// Simulator seeds to evaluate on (1–3 were used for tuning; report on 101–105).
        #[arg(long, value_delimiter = ',', default_value = "101,102,103,104,105")]
        seeds: Vec<u64>,
    },
    /// Imports an export into this server's store: its alerts become cases
    /// in the privacy officer's queue (with each alert's accesses and their
    /// explanations). Malformed rows refuse the whole input unless
    /// --skip-bad-rows; importing the same export again adds nothing.
    Import {
        /// The export directory (CSV or FHIR NDJSON, as for `scan`).
        dir: PathBuf,
        /// The organisation's time zone (IANA name), for hours and days.
        #[arg(long, default_value = "UTC")]
        timezone: String,
        /// Skips malformed rows (each is reported) instead of refusing the input.
        #[arg(long)]
        skip_bad_rows: bool,
        #[command(flatten)]
        common: crate::Common,
    },
}

pub fn run(action: MonitorCommand) -> anyhow::Result<()> {
    match action {
        MonitorCommand::Import { .. } => {
            bail!("`monitor import` runs against the server's store (see `import`)")
        }
        MonitorCommand::Scan {
            input,
            out,
            timezone,
            skip_bad_rows,
            explanations,
        } => scan(&ScanOptions {
            input,
            out,
            timezone,
            skip_bad_rows,
            explanations,
        }),
        MonitorCommand::Simulate {
            out,
            seed,
            staff,
            patients,
            days,
            accesses,
            timezone,
            labels,
        } => simulate(
            &SimConfig {
                seed,
                staff,
                patients,
                days,
                target_accesses: accesses,
                timezone,
                ..SimConfig::default()
            },
            &out,
            labels.as_deref(),
        ),
        MonitorCommand::Eval {
            alerts: Some(alerts),
            labels: Some(labels),
            input,
            accesses,
            seeds: _,
        } => eval_files(&alerts, &labels, input.as_deref(), accesses),
        MonitorCommand::Eval {
            accesses, seeds, ..
        } => eval_seeds(&seeds, accesses),
    }
}

/// Parses an IANA time zone name, with a message that says what is wanted.
pub fn timezone(name: &str) -> anyhow::Result<TimeZone> {
    if name == "UTC" {
        return Ok(TimeZone::UTC);
    }
    TimeZone::get(name).with_context(|| {
        format!("unknown time zone {name:?} (an IANA name such as UTC or Europe/Paris is expected)")
    })
}

/// A progress bar over bytes, on standard error (hidden when it is not a
/// terminal).
pub fn bytes_bar(what: &str) -> ProgressBar {
    let pb = ProgressBar::new(0);
    let style = ProgressStyle::with_template(
        "{msg:>12} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb.set_message(what.to_owned());
    pb
}

/// Reads an export with a progress bar, printing every bad row (`file:line:
/// message`, never a value) to standard error. Refused input is an error
/// naming how many rows were bad.
pub fn load(dir: &Path, opts: &ReadOptions) -> anyhow::Result<Loaded> {
    if !dir.is_dir() {
        bail!("{}: not a directory", dir.display());
    }
    let pb = bytes_bar("reading");
    let result = input::read_dir(dir, opts, &mut |done, total| {
        pb.set_length(total);
        pb.set_position(done);
    });
    pb.finish_and_clear();
    match result {
        Ok(loaded) => {
            if !loaded.skipped.is_empty() {
                for row in &loaded.skipped {
                    eprintln!("skipped {row}");
                }
                eprintln!(
                    "{} malformed row{} skipped (--skip-bad-rows)",
                    loaded.skipped.len(),
                    plural(loaded.skipped.len())
                );
            }
            Ok(loaded)
        }
        Err(InputError::BadRows { rows, total }) => {
            report_bad_rows(&rows, total);
            bail!(
                "{total} malformed row{} in {}: the input was refused and nothing was written (--skip-bad-rows skips them)",
                plural(usize::try_from(total).unwrap_or(usize::MAX)),
                dir.display()
            )
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
    }
}

fn report_bad_rows(rows: &[BadRow], total: u64) {
    for row in rows {
        eprintln!("{row}");
    }
    let shown = rows.len() as u64;
    if total > shown {
        eprintln!("… and {} more", total - shown);
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// What `monitor scan` does.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    pub input: PathBuf,
    pub out: PathBuf,
    pub timezone: String,
    pub skip_bad_rows: bool,
    pub explanations: Option<PathBuf>,
}

/// One line of `--explanations`.
#[derive(Serialize)]
struct ExplanationLine<'a> {
    event_id: &'a str,
    staff_id: &'a str,
    patient_id: &'a str,
    explanation: &'static str,
    text: String,
}

pub fn scan(opts: &ScanOptions) -> anyhow::Result<()> {
    let cfg = Config {
        timezone: timezone(&opts.timezone)?,
        ..Config::default()
    };
    let started = Instant::now();
    let loaded = load(
        &opts.input,
        &ReadOptions {
            skip_bad_rows: opts.skip_bad_rows,
        },
    )?;
    let parse_t = started.elapsed();
    let world = &loaded.world;

    let started = Instant::now();
    let output = engine::run(world, &cfg, &[]);
    let records = engine::records(world, &output.alerts);
    let engine_t = started.elapsed();

    // Both files are complete in temporary files before either is renamed
    // into place: a failure leaves neither behind.
    let mut pending = Vec::new();
    if let Some(path) = &opts.explanations {
        let tmp = write_temp(path, |w| {
            for (a, e) in world.accesses.iter().zip(&output.explanations) {
                let line = ExplanationLine {
                    event_id: &a.event_id,
                    staff_id: world.users.get(a.user.ix()).map_or("", |u| u.id.as_str()),
                    patient_id: world
                        .patients
                        .get(a.patient.ix())
                        .map_or("", |p| p.id.as_str()),
                    explanation: e.because.code(),
                    text: e.because.describe(world),
                };
                serde_json::to_writer(&mut *w, &line)?;
                w.write_all(b"\n")?;
            }
            Ok(())
        })?;
        pending.push(tmp);
    }
    let tmp = write_temp(&opts.out, |w| write_alerts(&records, w))?;
    pending.push(tmp);
    commit(pending)?;

    print_scan_summary(&loaded, &output, &records, parse_t, engine_t);
    eprintln!(
        "wrote {} alert{} to {} (highest score first){}",
        records.len(),
        plural(records.len()),
        opts.out.display(),
        opts.explanations
            .as_ref()
            .map(|p| format!(
                " and {} explanations to {}",
                world.accesses.len(),
                p.display()
            ))
            .unwrap_or_default()
    );
    Ok(())
}

fn write_alerts(records: &[AlertRecord], w: &mut dyn Write) -> anyhow::Result<()> {
    for r in records {
        serde_json::to_writer(&mut *w, r)?;
        w.write_all(b"\n")?;
    }
    Ok(())
}

/// A file written beside its destination, renamed into place by
/// [`commit`], removed if dropped before.
struct Pending {
    tmp: PathBuf,
    dest: PathBuf,
    done: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `dest`'s future contents to a temporary file in the same
/// directory (so that the rename is atomic).
fn write_temp(
    dest: &Path,
    f: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
) -> anyhow::Result<Pending> {
    let name = dest
        .file_name()
        .with_context(|| format!("{}: not a file name", dest.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dest.with_file_name(tmp_name);
    let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let pending = Pending {
        tmp,
        dest: dest.to_owned(),
        done: false,
    };
    let mut w = BufWriter::new(file);
    f(&mut w).with_context(|| format!("writing {}", pending.tmp.display()))?;
    let file = w
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("writing {}", pending.tmp.display()))?;
    file.sync_all()
        .with_context(|| format!("writing {}", pending.tmp.display()))?;
    Ok(pending)
}

fn commit(pending: Vec<Pending>) -> anyhow::Result<()> {
    for mut p in pending {
        std::fs::rename(&p.tmp, &p.dest)
            .with_context(|| format!("renaming {} to {}", p.tmp.display(), p.dest.display()))?;
        p.done = true;
    }
    Ok(())
}

fn print_scan_summary(
    loaded: &Loaded,
    output: &engine::Output,
    records: &[AlertRecord],
    parse_t: Duration,
    engine_t: Duration,
) {
    let n = loaded.world.accesses.len();
    eprintln!(
        "read {} ({} rows) in {:.2} s",
        megabytes(loaded.bytes),
        thousands(loaded.rows),
        parse_t.as_secs_f64()
    );
    eprintln!("accesses {:>12}", thousands(n as u64));
    let mut by_strength = [0usize; 4];
    for e in &output.explanations {
        let slot = match e.because.strength() {
            Strength::Direct => 0,
            Strength::Workflow => 1,
            Strength::Learned => 2,
            Strength::None => 3,
        };
        if let Some(c) = by_strength.get_mut(slot) {
            *c += 1;
        }
    }
    for (label, count) in ["direct", "workflow", "learned", "none"]
        .iter()
        .zip(by_strength)
    {
        eprintln!(
            "  explained {label:<9} {:>6.2}%  ({})",
            percent(count, n),
            thousands(count as u64)
        );
    }
    let mut by_kind: BTreeMap<Kind, usize> = BTreeMap::new();
    for r in records {
        *by_kind.entry(r.kind).or_default() += 1;
    }
    let kinds: Vec<String> = by_kind
        .iter()
        .map(|(k, c)| format!("{} {c}", k.as_str()))
        .collect();
    eprintln!(
        "alerts {:>14}{}{}",
        thousands(records.len() as u64),
        if kinds.is_empty() { "" } else { "  " },
        kinds.join(", ")
    );
    eprintln!(
        "timings: parse {:.2} s, explain+detect {:.2} s (index, learn, explain, detect, rank; one thread)",
        parse_t.as_secs_f64(),
        engine_t.as_secs_f64()
    );
}

/// The simulator's configuration for `seed` at about `accesses` access rows:
/// staff and patients scale with the default's proportions.
pub fn scaled_sim(seed: u64, accesses: usize) -> SimConfig {
    let d = SimConfig::default();
    if accesses == d.target_accesses {
        return SimConfig { seed, ..d };
    }
    let scale = |n: usize, floor: usize| {
        let v = (n as f64) * (accesses as f64) / (d.target_accesses as f64);
        // Rounded and floored: the simulator needs a few of each role.
        (v.round() as usize).max(floor)
    };
    SimConfig {
        seed,
        staff: scale(d.staff, 100),
        patients: scale(d.patients, 1_000),
        target_accesses: accesses,
        ..d
    }
}

pub fn simulate(cfg: &SimConfig, out: &Path, labels: Option<&Path>) -> anyhow::Result<()> {
    // A clear error before any work.
    timezone(&cfg.timezone)?;
    let started = Instant::now();
    let sim = sim::generate(cfg).context("simulating")?;
    let gen_t = started.elapsed();
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    sim::write_csv(&sim.world, out).with_context(|| format!("writing into {}", out.display()))?;
    let labels = labels.map_or_else(|| out.join("incidents.ndjson"), Path::to_owned);
    let file = File::create(&labels).with_context(|| format!("creating {}", labels.display()))?;
    sim::write_incidents(&sim.incidents, file)
        .with_context(|| format!("writing {}", labels.display()))?;
    let w = &sim.world;
    eprintln!(
        "simulated seed {} in {:.2} s: {} staff, {} patients, {} encounters, {} accesses over {} days, {} labelled incidents",
        cfg.seed,
        gen_t.as_secs_f64(),
        thousands(w.users.len() as u64),
        thousands(w.patients.len() as u64),
        thousands(w.encounters.len() as u64),
        thousands(w.accesses.len() as u64),
        cfg.days,
        sim.incidents.len()
    );
    eprintln!(
        "wrote the six CSV files into {} and the labels to {} (scan never reads the labels)",
        out.display(),
        labels.display()
    );
    Ok(())
}

pub fn eval_files(
    alerts: &Path,
    labels: &Path,
    input: Option<&Path>,
    accesses: Option<usize>,
) -> anyhow::Result<()> {
    let open = |p: &Path| {
        File::open(p)
            .map(BufReader::new)
            .with_context(|| format!("opening {}", p.display()))
    };
    let records =
        read_alerts(open(alerts)?).with_context(|| format!("reading {}", alerts.display()))?;
    let incidents =
        read_incidents(open(labels)?).with_context(|| format!("reading {}", labels.display()))?;
    let accesses = match (accesses, input) {
        (Some(n), _) => n,
        (None, Some(dir)) => count_accesses(dir)?,
        (None, None) => {
            let dir = labels.parent().filter(|d| d.join("staff.csv").is_file());
            match dir {
                Some(d) => count_accesses(d)?,
                None => bail!(
                    "give --accesses N or --input DIR (the export scanned) to count the access rows"
                ),
            }
        }
    };
    let m = evaluate(&records, &incidents, accesses);
    print!("{m}");
    Ok(())
}

fn count_accesses(dir: &Path) -> anyhow::Result<usize> {
    Ok(load(dir, &ReadOptions::default())?.world.accesses.len())
}

/// The thresholds issue 6 sets on each reporting seed at default scale.
pub const MIN_RECALL_IN_BUDGET: f64 = 0.95;
pub const MIN_PRECISION: f64 = 0.8;
pub const MIN_PAIR_PRECISION: f64 = 0.8;

/// Seeds the detectors were tuned on (`docs/monitor-simulator.md`).
pub const TUNING_SEEDS: [u64; 3] = [1, 2, 3];

/// What the engine misses of the thresholds, if anything.
pub fn shortfalls(m: &Metrics) -> Vec<String> {
    let mut out = Vec::new();
    if m.recall_in_budget < MIN_RECALL_IN_BUDGET {
        out.push(format!(
            "recall in budget {:.3} < {MIN_RECALL_IN_BUDGET}",
            m.recall_in_budget
        ));
    }
    if m.precision < MIN_PRECISION {
        out.push(format!("precision {:.3} < {MIN_PRECISION}", m.precision));
    }
    if m.pair_precision < MIN_PAIR_PRECISION {
        out.push(format!(
            "pair precision {:.3} < {MIN_PAIR_PRECISION}",
            m.pair_precision
        ));
    }
    out
}

pub fn eval_seeds(seeds: &[u64], accesses: Option<usize>) -> anyhow::Result<()> {
    if seeds.is_empty() {
        bail!("no seeds given");
    }
    let default_scale = SimConfig::default().target_accesses;
    let target = accesses.unwrap_or(default_scale);
    let checked = target == default_scale;
    let cfg = Config::default();
    let mut failed: Vec<u64> = Vec::new();
    for &seed in seeds {
        let sim_cfg = scaled_sim(seed, target);
        let t = Instant::now();
        let sim = sim::generate(&sim_cfg).with_context(|| format!("simulating seed {seed}"))?;
        let gen_t = t.elapsed();
        let world: &World = &sim.world;
        let n = world.accesses.len();
        let t = Instant::now();
        let output = engine::run(world, &cfg, &[]);
        let engine_t = t.elapsed();
        let ours = evaluate(&engine::records(world, &output.alerts), &sim.incidents, n);
        let naive = evaluate(
            &engine::records(world, &engine::baseline(world, &cfg)),
            &sim.incidents,
            n,
        );
        println!(
            "seed {seed}{}: {} accesses, {} staff, {} patients, {} incidents (review budget {}); simulated in {:.2} s, engine {:.2} s",
            if TUNING_SEEDS.contains(&seed) {
                " (a tuning seed)"
            } else {
                ""
            },
            thousands(n as u64),
            thousands(world.users.len() as u64),
            thousands(world.patients.len() as u64),
            ours.incidents,
            ours.budget,
            gen_t.as_secs_f64(),
            engine_t.as_secs_f64()
        );
        println!(
            "  {:<10} {:>8} {:>10} {:>8} {:>10} {:>10} {:>11}",
            "", "alerts", "precision", "recall", "in budget", "pair prec", "alerts/10k"
        );
        for (label, m) in [("engine", &ours), ("baseline", &naive)] {
            println!(
                "  {label:<10} {:>8} {:>10.3} {:>8.3} {:>10.3} {:>10.3} {:>11.2}",
                m.alerts,
                m.precision,
                m.recall,
                m.recall_in_budget,
                m.pair_precision,
                m.alerts_per_10k
            );
        }
        let missed: Vec<String> = ours
            .by_kind
            .iter()
            .filter(|k| k.detected_in_budget < k.incidents)
            .map(|k| format!("{} {}", k.kind.as_str(), k.incidents - k.detected_in_budget))
            .collect();
        if !missed.is_empty() {
            println!("  missed within the budget: {}", missed.join(", "));
        }
        let short = shortfalls(&ours);
        if !checked {
            println!("  (not checked: the thresholds apply at the default scale)");
        } else if short.is_empty() {
            println!(
                "  pass: recall in budget ≥ {MIN_RECALL_IN_BUDGET}, precision ≥ {MIN_PRECISION}, pair precision ≥ {MIN_PAIR_PRECISION}"
            );
        } else {
            println!("  FAIL: {}", short.join(", "));
            failed.push(seed);
        }
        println!();
    }
    if !failed.is_empty() {
        let list: Vec<String> = failed.iter().map(u64::to_string).collect();
        bail!(
            "seed{} {} missed issue 6's thresholds",
            plural(failed.len()),
            list.join(", ")
        );
    }
    Ok(())
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// `vigil monitor import`: reads the export first (refusing it whole on a
/// bad row unless told to skip, before the server's store is touched), then
/// stores its alerts as cases through the app, as the operator (recorded in
/// the audit trail). `open` opens the server's Vigil.
pub async fn import<F, Fut>(
    open: F,
    dir: &Path,
    timezone_name: &str,
    skip_bad_rows: bool,
) -> anyhow::Result<()>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<std::sync::Arc<app::Vigil>>>,
{
    let tz = timezone(timezone_name)?;
    let loaded = load(dir, &ReadOptions { skip_bad_rows })?;
    let vigil = open().await?;
    let cfg = monitor::engine::Config {
        timezone: tz,
        ..monitor::engine::Config::default()
    };
    let pb = indicatif::ProgressBar::new_spinner();
    pb.set_message("explaining and storing alerts");
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    let report = vigil
        .monitor_import(&app::Principal::Operator, &loaded.world, &cfg)
        .await
        .context("importing into the store")?;
    pb.finish_and_clear();
    println!(
        "imported {} accesses: {} new alert{} in {} case{}{}",
        thousands(report.accesses as u64),
        report.alerts,
        plural(report.alerts),
        report.cases,
        plural(report.cases),
        if report.already > 0 {
            format!(" ({} already imported before)", report.already)
        } else {
            String::new()
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn the_default_scale_is_the_simulators_default() {
        let d = SimConfig::default();
        assert_eq!(scaled_sim(7, d.target_accesses), SimConfig { seed: 7, ..d });
        let small = scaled_sim(7, 16_000);
        assert_eq!((small.staff, small.patients), (150, 2_500));
    }

    #[test]
    fn unknown_zones_are_refused() {
        assert!(timezone("UTC").is_ok());
        assert!(timezone("Mars/Olympus_Mons").is_err());
    }
}
