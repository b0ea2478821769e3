//! End-to-end tests of the real `vigil` binary: plaintext never at rest or in
//! logs, key rotation while running, crypto-shredding, backup and restore across
//! backends, and the durability check. PostgreSQL tests run for real against
//! `VIGIL_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! and fail, never skip, when it is unreachable.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test support code: a panic is a test failure with a message"
)]

mod audit;
mod crash;
mod harness;
mod lifecycle;
mod mail;
mod monitor_cli;
mod monitor_live;
mod plaintext;
mod tls;
mod users;
