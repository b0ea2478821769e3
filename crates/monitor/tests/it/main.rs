//! The monitor crate's integration tests: each detector with its positive
//! case and its nearest legitimate look-alike, the input parsers, the
//! simulator and the evaluation.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap is a failed test"
)]

mod engine;
mod input;
mod sim;
