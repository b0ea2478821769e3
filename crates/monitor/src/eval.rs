//! Scoring alerts against the simulator's labelled incidents, with the
//! definitions of `docs/monitor-simulator.md` ("Evaluation").

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::BufRead;

use crate::alert::{AlertRecord, Kind};
use crate::sim::Incident;

/// Why labels or alerts could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("cannot read line {line}")]
    Io {
        line: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("line {line} is not a valid {what}")]
    Json {
        line: usize,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// Reads incidents, one JSON object per line (blank lines are skipped).
pub fn read_incidents(r: impl BufRead) -> Result<Vec<Incident>, EvalError> {
    read_ndjson(r, "incident")
}

/// Reads alerts as `vigil monitor scan` writes them, one per line.
pub fn read_alerts(r: impl BufRead) -> Result<Vec<AlertRecord>, EvalError> {
    read_ndjson(r, "alert")
}

fn read_ndjson<T: serde::de::DeserializeOwned>(
    r: impl BufRead,
    what: &'static str,
) -> Result<Vec<T>, EvalError> {
    let mut out = Vec::new();
    for (i, line) in r.lines().enumerate() {
        let line = line.map_err(|source| EvalError::Io {
            line: i + 1,
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let item = serde_json::from_str(&line).map_err(|source| EvalError::Json {
            line: i + 1,
            what,
            source,
        })?;
        out.push(item);
    }
    Ok(out)
}

/// One incident kind's row of the evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct KindRow {
    pub kind: Kind,
    pub incidents: usize,
    pub detected: usize,
    pub detected_in_budget: usize,
}

/// The figures of one evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Metrics {
    pub accesses: usize,
    pub alerts: usize,
    pub incidents: usize,
    pub true_alerts: usize,
    pub detected: usize,
    /// The review budget: twice the number of incidents.
    pub budget: usize,
    pub detected_in_budget: usize,
    pub precision: f64,
    pub recall: f64,
    pub recall_in_budget: f64,
    pub pair_precision: f64,
    pub alerts_per_10k: f64,
    /// Per incident kind present in the labels, in [`Kind::ALL`] order.
    pub by_kind: Vec<KindRow>,
}

/// `num / den`, or 1 when there is nothing to count.
fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        1.0
    } else {
        num as f64 / den as f64
    }
}

/// Scores `alerts` against `incidents` over a log of `accesses` rows.
/// Alerts are ranked here by score, highest first (ties keep their input
/// order; a NaN score ranks last).
pub fn evaluate(alerts: &[AlertRecord], incidents: &[Incident], accesses: usize) -> Metrics {
    let mut ranked: Vec<&AlertRecord> = alerts.iter().collect();
    let key = |a: &AlertRecord| {
        if a.score.is_nan() {
            f64::NEG_INFINITY
        } else {
            a.score
        }
    };
    ranked.sort_by(|a, b| key(b).total_cmp(&key(a)));

    // event id -> incidents holding it.
    let mut by_event: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, inc) in incidents.iter().enumerate() {
        for e in &inc.event_ids {
            by_event.entry(e.as_str()).or_default().push(i);
        }
    }
    let budget = 2 * incidents.len();
    let mut detected = vec![false; incidents.len()];
    let mut in_budget = vec![false; incidents.len()];
    let mut true_alerts = 0;
    for (rank, a) in ranked.iter().enumerate() {
        let mut matched = false;
        for e in &a.event_ids {
            for &i in by_event.get(e.as_str()).map_or(&[][..], Vec::as_slice) {
                let Some(inc) = incidents.get(i) else {
                    continue;
                };
                if inc.staff_id == a.staff_id {
                    matched = true;
                    if let Some(d) = detected.get_mut(i) {
                        *d = true;
                    }
                    if rank < budget
                        && let Some(d) = in_budget.get_mut(i)
                    {
                        *d = true;
                    }
                }
            }
        }
        if matched {
            true_alerts += 1;
        }
    }

    let incident_pairs: HashSet<(&str, &str)> = incidents
        .iter()
        .flat_map(|i| {
            i.patient_ids
                .iter()
                .map(move |p| (i.staff_id.as_str(), p.as_str()))
        })
        .collect();
    let alerted_pairs: HashSet<(&str, &str)> = alerts
        .iter()
        .flat_map(|a| {
            a.patient_ids
                .iter()
                .map(move |p| (a.staff_id.as_str(), p.as_str()))
        })
        .collect();
    let hit_pairs = alerted_pairs.intersection(&incident_pairs).count();

    let by_kind = Kind::ALL
        .into_iter()
        .filter_map(|kind| {
            let ix: Vec<usize> = (0..incidents.len())
                .filter(|&i| incidents.get(i).is_some_and(|inc| inc.kind == kind))
                .collect();
            (!ix.is_empty()).then(|| KindRow {
                kind,
                incidents: ix.len(),
                detected: ix
                    .iter()
                    .filter(|&&i| detected.get(i) == Some(&true))
                    .count(),
                detected_in_budget: ix
                    .iter()
                    .filter(|&&i| in_budget.get(i) == Some(&true))
                    .count(),
            })
        })
        .collect();

    let n_detected = detected.iter().filter(|&&d| d).count();
    let n_in_budget = in_budget.iter().filter(|&&d| d).count();
    Metrics {
        accesses,
        alerts: alerts.len(),
        incidents: incidents.len(),
        true_alerts,
        detected: n_detected,
        budget,
        detected_in_budget: n_in_budget,
        precision: ratio(true_alerts, alerts.len()),
        recall: ratio(n_detected, incidents.len()),
        recall_in_budget: ratio(n_in_budget, incidents.len()),
        pair_precision: ratio(hit_pairs, alerted_pairs.len()),
        alerts_per_10k: if accesses == 0 {
            0.0
        } else {
            alerts.len() as f64 * 10_000.0 / accesses as f64
        },
        by_kind,
    }
}

impl fmt::Display for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "accesses            {:>9}", self.accesses)?;
        writeln!(
            f,
            "alerts              {:>9}  ({:.2} per 10k accesses)",
            self.alerts, self.alerts_per_10k
        )?;
        writeln!(f, "incidents           {:>9}", self.incidents)?;
        writeln!(
            f,
            "precision           {:>9.3}  ({} true alerts)",
            self.precision, self.true_alerts
        )?;
        writeln!(
            f,
            "recall              {:>9.3}  ({} detected)",
            self.recall, self.detected
        )?;
        writeln!(
            f,
            "recall in budget    {:>9.3}  ({} detected in the top {} alerts)",
            self.recall_in_budget, self.detected_in_budget, self.budget
        )?;
        writeln!(f, "pair precision      {:>9.3}", self.pair_precision)?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<16} {:>9} {:>9} {:>10}",
            "kind", "incidents", "detected", "in budget"
        )?;
        for row in &self.by_kind {
            writeln!(
                f,
                "{:<16} {:>9} {:>9} {:>10}",
                row.kind.as_str(),
                row.incidents,
                row.detected,
                row.detected_in_budget
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incident(id: &str, kind: Kind, staff: &str, patients: &[&str], events: &[&str]) -> Incident {
        Incident {
            incident_id: id.to_owned(),
            kind,
            staff_id: staff.to_owned(),
            patient_ids: patients.iter().map(|s| (*s).to_owned()).collect(),
            event_ids: events.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn alert(staff: &str, patients: &[&str], events: &[&str], score: f64) -> AlertRecord {
        AlertRecord {
            alert_id: format!("A-{staff}-{score}"),
            staff_id: staff.to_owned(),
            patient_ids: patients.iter().map(|s| (*s).to_owned()).collect(),
            event_ids: events.iter().map(|s| (*s).to_owned()).collect(),
            kind: Kind::Unexplained,
            score,
            reason: "test".to_owned(),
        }
    }

    #[test]
    fn nan_scores_rank_last() {
        let incs = [incident("I1", Kind::Vip, "S1", &["P1"], &["E1"])];
        let alerts = [
            alert("S9", &["P9"], &["E9"], f64::NAN),
            alert("S8", &["P8"], &["E8"], 1.0),
            alert("S1", &["P1"], &["E1"], 0.5),
        ];
        // Budget 2: S8 then S1; the NaN alert is third.
        let m = evaluate(&alerts, &incs, 100);
        assert_eq!(m.detected_in_budget, 1);
    }

    #[test]
    fn reads_ndjson_with_line_numbers() {
        let text = "{\"incident_id\":\"I1\",\"kind\":\"self\",\"staff_id\":\"S1\",\"patient_ids\":[\"P1\"],\"event_ids\":[\"E1\"]}\n\nnot json\n";
        let err = read_incidents(text.as_bytes()).err();
        assert!(
            matches!(err, Some(EvalError::Json { line: 3, .. })),
            "{err:?}"
        );
        let ok = read_incidents(text.lines().next().unwrap_or("").as_bytes()).unwrap();
        assert_eq!(ok[0].kind, Kind::SelfAccess);
    }
}
