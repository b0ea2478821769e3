//! FHIR R4 domain logic: validation against the R4 base definitions, references and
//! the patient compartment, and search parameters.
//!
//! Architecture invariant: this crate does no IO beyond reading its embedded schema,
//! and no diagnostic it produces contains a value taken from a resource or a query.

mod datetime;
mod issue;
mod name;
mod path;
mod primitive;
mod reference;
mod schema;
pub mod search;
mod validate;
mod walk;

pub use datetime::{
    DateRange, FhirDateTime, Form as DateForm, Precision, day_key, day_numbers, format_instant,
    parse as parse_date,
};
pub use issue::{Issue, IssueCode, Severity, operation_outcome};
pub use name::human_name;
pub use reference::{
    FoundReference, RefTarget, parse_reference, patient_compartment, references, rewrite_references,
};
pub use schema::resource_type_names;
pub use validate::{Limits, validate};
