//! `vigil monitor` and `vigil bench monitor` on the real binary: simulate a
//! small hospital, scan it, evaluate the alerts; a malformed row refuses the
//! input (nothing written, the row named by file and line, never its value)
//! unless `--skip-bad-rows`; unknown time zones are refused; `eval --seeds`
//! prints the engine beside the baseline; the benchmark prints its figures.
//! Sizes are small: these run unoptimised on two cores.

use std::path::Path;

use serde_json::Value;

use crate::harness::{Scratch, run};

/// A small hospital: the six CSV files and `incidents.ndjson` in `dir`.
fn simulate(dir: &Path) {
    let d = dir.to_str().unwrap();
    let (ok, _, err) = run(
        &[
            "monitor",
            "simulate",
            "--out",
            d,
            "--seed",
            "2",
            "--staff",
            "200",
            "--patients",
            "3000",
            "--accesses",
            "20000",
            "--days",
            "14",
        ],
        &[],
    );
    assert!(ok, "simulate failed: {err}");
    for f in [
        "staff.csv",
        "patients.csv",
        "encounters.csv",
        "care_team.csv",
        "orders.csv",
        "access_log.csv",
        "incidents.ndjson",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn simulate_scan_and_evaluate() {
    let dir = Scratch::new("monitor");
    let world = dir.0.join("world");
    simulate(&world);
    let alerts = dir.0.join("alerts.ndjson");
    let explanations = dir.0.join("explanations.ndjson");
    let (ok, _, err) = run(
        &[
            "monitor",
            "scan",
            "--input",
            world.to_str().unwrap(),
            "--out",
            alerts.to_str().unwrap(),
            "--timezone",
            "America/New_York",
            "--explanations",
            explanations.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "scan failed: {err}");
    for what in [
        "accesses",
        "explained direct",
        "explained workflow",
        "explained learned",
        "explained none",
        "alerts",
        "parse",
        "explain+detect",
    ] {
        assert!(err.contains(what), "the summary lacks {what:?}: {err}");
    }

    let records = lines(&alerts);
    assert!(!records.is_empty(), "a simulated hospital has incidents");
    let kinds = [
        "self",
        "family",
        "coworker",
        "neighbour",
        "vip",
        "deceased",
        "volume",
        "after_hours",
        "terminated",
        "break_glass",
        "outside_consult",
        "unexplained",
    ];
    let mut last = f64::INFINITY;
    for r in &records {
        for key in [
            "alert_id",
            "staff_id",
            "patient_ids",
            "event_ids",
            "kind",
            "score",
            "reason",
        ] {
            assert!(r.get(key).is_some(), "{key} missing in {r}");
        }
        assert!(kinds.contains(&r["kind"].as_str().unwrap()), "{r}");
        let score = r["score"].as_f64().unwrap();
        assert!(score <= last, "alerts are written highest score first");
        last = score;
    }

    let explained = lines(&explanations);
    let access_rows = std::fs::read_to_string(world.join("access_log.csv"))
        .unwrap()
        .lines()
        .count()
        - 1;
    assert_eq!(explained.len(), access_rows, "one explanation per access");
    for key in ["event_id", "staff_id", "patient_id", "explanation", "text"] {
        assert!(explained[0].get(key).is_some(), "{key} missing");
    }

    // The labels' directory holds the export: eval counts its accesses.
    let labels = world.join("incidents.ndjson");
    let (ok, out, err) = run(
        &[
            "monitor",
            "eval",
            "--alerts",
            alerts.to_str().unwrap(),
            "--labels",
            labels.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "eval failed: {err}");
    for what in [
        "precision",
        "recall in budget",
        "pair precision",
        "per 10k accesses",
    ] {
        assert!(out.contains(what), "eval lacks {what:?}: {out}");
    }
    let counted = out
        .lines()
        .find_map(|l| l.strip_prefix("accesses"))
        .map(|v| v.trim().parse::<usize>().unwrap());
    assert_eq!(counted, Some(access_rows), "eval counts the access rows");
}

#[test]
fn a_malformed_row_refuses_the_input_unless_skipped() {
    let dir = Scratch::new("monitor-bad");
    let world = dir.0.join("world");
    simulate(&world);
    let log = world.join("access_log.csv");
    let text = std::fs::read_to_string(&log).unwrap();
    let mut rows: Vec<String> = text.lines().map(str::to_owned).collect();
    // Line 5 of the file (the header is line 1): a value that must never be echoed.
    let mut fields: Vec<&str> = rows[4].split(',').collect();
    assert_eq!(fields.len(), 8, "{}", rows[4]);
    fields[4] = "peek-SECRETVALUE";
    rows[4] = fields.join(",");
    assert!(rows[4].contains("SECRETVALUE"));
    std::fs::write(&log, rows.join("\n") + "\n").unwrap();

    let out_dir = dir.0.join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let alerts = out_dir.join("alerts.ndjson");
    let args = [
        "monitor",
        "scan",
        "--input",
        world.to_str().unwrap(),
        "--out",
        alerts.to_str().unwrap(),
    ];
    let (ok, _, err) = run(&args, &[]);
    assert!(!ok, "a malformed row refuses the input");
    assert!(err.contains("access_log.csv:5: action"), "{err}");
    assert!(err.contains("1 malformed row"), "{err}");
    assert!(
        !err.contains("SECRETVALUE"),
        "values are never echoed: {err}"
    );
    assert!(!alerts.exists(), "nothing is written");
    assert_eq!(
        std::fs::read_dir(&out_dir).unwrap().count(),
        0,
        "no temporary file is left behind"
    );

    let mut skip = args.to_vec();
    skip.push("--skip-bad-rows");
    let (ok, _, err) = run(&skip, &[]);
    assert!(ok, "--skip-bad-rows goes on: {err}");
    assert!(err.contains("skipped access_log.csv:5: action"), "{err}");
    assert!(err.contains("1 malformed row skipped"), "{err}");
    assert!(!err.contains("SECRETVALUE"), "{err}");
    assert!(!lines(&alerts).is_empty());
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 1);
}

#[test]
fn import_stores_cases_once_and_refuses_a_malformed_export_whole() {
    let dir = Scratch::new("monitor-import");
    let world = dir.0.join("world");
    simulate(&world);
    let data = dir.0.join("data");
    let d = data.to_str().unwrap();
    let w = world.to_str().unwrap();

    // A copy with one malformed row: refused, nothing stored.
    let bad = dir.0.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    for f in [
        "staff.csv",
        "patients.csv",
        "encounters.csv",
        "care_team.csv",
        "orders.csv",
    ] {
        std::fs::copy(world.join(f), bad.join(f)).unwrap();
    }
    let text = std::fs::read_to_string(world.join("access_log.csv")).unwrap();
    let mut rows: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut fields: Vec<&str> = rows[2].split(',').collect();
    fields[1] = "yesterday";
    rows[2] = fields.join(",");
    std::fs::write(bad.join("access_log.csv"), rows.join("\n") + "\n").unwrap();
    let (ok, out, err) = run(
        &["monitor", "import", bad.to_str().unwrap(), "--data-dir", d],
        &[],
    );
    assert!(!ok, "{out}{err}");
    assert!(err.contains("access_log.csv:3: timestamp"), "{err}");

    // Into a running server's store.
    let server = crate::harness::Server::start(&["--data-dir", d], &[], &dir.0);
    let (ok, out, err) = run(&["monitor", "import", w, "--data-dir", d], &[]);
    assert!(ok, "{err}");
    let new_alerts = |out: &str| -> usize {
        out.split(": ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no alert count in {out:?}"))
    };
    let first = new_alerts(&out);
    assert!(
        first > 0,
        "the refused import stored nothing, so all are new: {out}"
    );
    assert!(out.contains(" case"), "{out}");

    // The same export again adds nothing.
    let (ok, out, err) = run(&["monitor", "import", w, "--data-dir", d], &[]);
    assert!(ok, "{err}");
    assert_eq!(new_alerts(&out), 0, "{out}");
    assert!(
        out.contains(&format!("({first} already imported before)")),
        "{out}"
    );
    drop(server);
}

#[test]
fn an_unknown_time_zone_is_a_clear_error() {
    let dir = Scratch::new("monitor-tz");
    let alerts = dir.0.join("alerts.ndjson");
    for args in [
        vec![
            "monitor",
            "scan",
            "--input",
            dir.0.to_str().unwrap(),
            "--out",
            alerts.to_str().unwrap(),
            "--timezone",
            "Mars/Olympus_Mons",
        ],
        vec![
            "monitor",
            "simulate",
            "--out",
            dir.0.to_str().unwrap(),
            "--timezone",
            "Mars/Olympus_Mons",
        ],
    ] {
        let (ok, _, err) = run(&args, &[]);
        assert!(!ok);
        assert!(
            err.contains("unknown time zone \"Mars/Olympus_Mons\""),
            "{err}"
        );
    }
    assert!(!alerts.exists());
}

#[test]
fn eval_on_seeds_prints_the_engine_beside_the_baseline() {
    // A tuning seed at a small scale: quick, and not the check.
    let (ok, out, err) = run(
        &["monitor", "eval", "--seeds", "1", "--accesses", "20000"],
        &[],
    );
    assert!(ok, "{err}");
    assert!(out.contains("seed 1 (a tuning seed)"), "{out}");
    for what in [
        "precision",
        "recall",
        "in budget",
        "pair prec",
        "alerts/10k",
    ] {
        assert!(out.contains(what), "{what} missing: {out}");
    }
    let row = |label: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no {label} row: {out}"))
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse::<f64>().unwrap())
            .collect::<Vec<f64>>()
    };
    assert_eq!(row("engine").len(), 6);
    assert_eq!(row("baseline").len(), 6);
    assert!(out.contains("not checked"), "{out}");
}

#[test]
fn bench_monitor_prints_throughput_and_peak_memory() {
    let (ok, out, err) = run(
        &["bench", "monitor", "--accesses", "50000", "--rounds", "1"],
        &[],
    );
    assert!(ok, "{err}");
    for what in [
        "index build",
        "learn",
        "explain + detect",
        "accesses/s",
        "one used",
        "peak memory",
        "CSV parsing",
        "MB/s",
        "rows/s",
    ] {
        assert!(out.contains(what), "{what} missing: {out}");
    }
    // The target is printed beside the figure, unless a busy machine made
    // the difference too small to time.
    assert!(
        out.contains("target ≥ 1,000,000 accesses/s per core")
            || out.contains("not measurable by difference"),
        "{out}"
    );
}
