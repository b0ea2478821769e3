//! The access-policy decision point: relationship facts in, a [`Decision`]
//! with its reasons out. Policies are Cedar, validated in strict mode; the
//! default is deny and any error denies.
//!
//! This crate knows nothing about HTTP, SQL or FHIR JSON: the application
//! reduces records to [`Facts`] and asks.

#![forbid(unsafe_code)]

mod compile;
mod consent;
mod engine;
mod explain;
mod relationships;
mod types;

pub use consent::consent_denies;
pub use engine::{
    DEFAULT_DENY, DEFAULT_POLICIES, EVALUATION_ERROR, Engine, PolicyError, Rule, SCHEMA,
};
pub use types::*;
