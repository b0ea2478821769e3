//! The access-policy decision point: relationship facts in, a [`Decision`]
//! with its reasons out. Policies are Cedar, validated in strict mode; the
//! default is deny and any error denies.
//!
//! This crate knows nothing about HTTP, SQL or FHIR JSON: the application
//! reduces records to [`Facts`] and asks.

#![forbid(unsafe_code)]

mod types;

pub use types::*;
