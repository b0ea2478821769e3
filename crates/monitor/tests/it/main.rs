//! The monitor crate's integration tests.

mod engine;
mod input;
mod sim;
