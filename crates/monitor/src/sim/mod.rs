//! A synthetic hospital with labelled insider incidents, as specified in
//! `docs/monitor-simulator.md` (which this code implements and must keep
//! matching).
//!
//! [`generate`] draws a [`World`] (staff, patients, encounters, care teams,
//! orders and a month of accesses) and the [`Incident`]s hidden in its
//! access log. The labels live only in [`Simulation::incidents`]; nothing
//! in the world marks them, and event ids are numbered in time order after
//! every row is drawn.

mod hospital;
mod names;
mod write;

use serde::{Deserialize, Serialize};

use crate::alert::Kind;
use crate::model::{self, World};

pub use write::{
    ACCESS_LOG_HEADER, CARE_TEAM_HEADER, ENCOUNTERS_HEADER, ORDERS_HEADER, PATIENTS_HEADER,
    STAFF_HEADER, write_csv, write_incidents,
};

/// What to simulate.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    pub seed: u64,
    /// Approximate number of staff accounts.
    pub staff: usize,
    /// Patient records in the registry.
    pub patients: usize,
    /// Length of the period.
    pub days: u32,
    /// Approximate number of legitimate access rows.
    pub target_accesses: usize,
    /// Labelled incidents per 10,000 target accesses.
    pub incidents_per_10k: f64,
    /// The first day's midnight in the hospital's time zone.
    pub start: model::Time,
    /// IANA name of the hospital's time zone.
    pub timezone: String,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            seed: 1,
            staff: 1500,
            patients: 25_000,
            days: 28,
            target_accesses: 160_000,
            incidents_per_10k: 4.0,
            // 2026-01-05T00:00:00Z, a Monday.
            start: 1_767_571_200,
            timezone: "UTC".to_owned(),
        }
    }
}

/// One labelled incident: which accesses of which user were inappropriate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    pub incident_id: String,
    pub kind: Kind,
    pub staff_id: String,
    pub patient_ids: Vec<String>,
    pub event_ids: Vec<String>,
}

/// A simulated hospital and the incidents hidden in its access log.
#[derive(Clone, Debug)]
pub struct Simulation {
    pub world: World,
    pub incidents: Vec<Incident>,
}

/// Why a simulation could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("unknown time zone {name:?}")]
    TimeZone {
        name: String,
        #[source]
        source: jiff::Error,
    },
    #[error("invalid simulator configuration: {0}")]
    Config(&'static str),
    #[error("a simulated time is out of range")]
    Time(#[source] jiff::Error),
}

/// Generates the hospital described by `cfg`; the same configuration always
/// gives the same simulation.
pub fn generate(cfg: &SimConfig) -> Result<Simulation, SimError> {
    hospital::generate(cfg)
}
