//! The integration tests of `test-kit`: the access-policy corpus and the
//! reference evaluator's properties.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a panic is a failure with a message"
)]

mod policy_corpus;
mod policy_differential;
mod policy_ref_props;
