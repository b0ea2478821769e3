//! Telehealth consultations, the pure part: rooms and their participants as
//! a state machine (no sockets), signed invite links with identity checks,
//! WebRTC signaling messages and who may receive them, short-lived TURN
//! credentials, and consult-aware data-loss prevention.
//!
//! This crate knows nothing about HTTP, WebSockets, SQL or keys' storage:
//! time, randomness and secrets are parameters, and the caller stores the
//! states this crate returns.

#![forbid(unsafe_code)]

pub mod dlp;
pub mod files;
pub mod invite;
pub mod room;
pub mod signal;
pub mod turn;
