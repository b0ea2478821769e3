//! Integration tests for the fhir crate.
