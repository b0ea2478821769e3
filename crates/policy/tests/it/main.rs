//! The policy crate's integration tests: every rule of
//! `docs/access-policy.md` with an allowed case and a neighbouring denied
//! case, strict validation, and properties over arbitrary requests.

mod fixtures;
mod props;
mod rules;
mod validation;
