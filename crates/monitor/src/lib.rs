//! Privacy monitoring: explain every access to a patient's record, detect
//! the suspicious ones (self, family, co-worker, neighbour, VIP, deceased,
//! volume, out-of-pattern hours, terminated accounts, break-the-glass
//! without a clinical event, access outside a consultation, unexplained),
//! and rank them as alerts for a privacy officer.
//!
//! This crate knows nothing about HTTP, SQL, keys or Vigil's stores: a
//! [`World`] (context and access log, already parsed) goes in, explanations
//! and alerts come out. `input` parses hospitals' CSV and FHIR NDJSON
//! exports into a `World`; `sim` generates a synthetic hospital with
//! labelled incidents, and `eval` scores alerts against those labels.

#![forbid(unsafe_code)]

pub mod alert;
pub mod engine;
pub mod eval;
pub mod input;
pub mod model;
pub mod sim;

pub use alert::{AlertRecord, Kind};
pub use model::*;
