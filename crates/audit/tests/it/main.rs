//! The audit log through its public API: known answers from RFC 6962's reference tests,
//! a cross-check against the independent `ct-merkle` crate, and property tests.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests fail loudly"
)]

mod checkpoint;
mod merkle;
mod tiles;
mod verify;
