//! Integration tests for the fhir crate (one binary: see STYLE.md).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] functions may fail loudly"
)]

mod bindings;
mod examples;
mod invalid;
mod props;
mod query;
