//! FHIR R4 search: the supported parameters, index terms, query parsing, lookups and
//! in-memory matching.
//!
//! The storage layer keeps, per resource, the [`Term`]s from [`index_terms`]; a query
//! is parsed into [`Clause`]s ([`parse_query`]); [`lookup`] turns a clause into terms to
//! fetch candidates with, and [`matches`] gives the exact answer on a candidate.
//!
//! Architecture invariant: if `matches(t, c, r)` then `index_terms(t, r)` contains a
//! term with the param and one of the values of `lookup(t, c)` (or one of them as a
//! prefix when `prefix` is set). The property tests in `tests/it` check it.

mod eval;
mod params;
mod parse;
mod text;

use model::{ResourceId, ResourceType};

use crate::datetime::DateRange;

pub use eval::{index_terms, lookup, matches, reference_values, sort_value};
pub use params::{param, params_for, primary_date_param};
pub use parse::{param_names, parse_query};
pub use text::{fold, normalize_telecom};

/// The FHIR search parameter types we serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamKind {
    Token,
    String,
    Date,
    Reference,
    Number,
    Quantity,
    Uri,
}

/// How the storage layer indexes a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Strategy {
    /// Terms are stored as keyed blind-index hashes; lookups are exact.
    Blind,
    /// Terms are UTC days `YYYY-MM-DD` (or `wide`), stored blind.
    DayBucket,
    /// Terms are normalised strings matched in memory (prefix lookups).
    Memory,
    /// Not indexed: only [`matches`] on candidates found otherwise.
    FilterOnly,
}

/// A supported search parameter of one resource type.
#[derive(Debug, PartialEq, Eq)]
pub struct ParamDef {
    pub name: &'static str,
    pub kind: ParamKind,
    pub strategy: Strategy,
    /// For references: the served types the parameter may point at.
    pub targets: &'static [ResourceType],
    pub doc: &'static str,
    /// Where the values are, relative to the resource (see `path.rs` for the syntax).
    pub paths: &'static [&'static str],
}

/// One normalised index term of a resource.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Term {
    pub param: &'static str,
    pub strategy: Strategy,
    pub value: String,
}

/// Whether the total count is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TotalMode {
    #[default]
    None,
    /// Also used for `_total=estimate`: an accurate count is a valid estimate.
    Accurate,
}

/// A date search prefix (R4 search, 3.1.1.4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Sa,
    Eb,
    Ap,
}

/// A date search value: a prefix and the range the written date covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateBound {
    pub prefix: Prefix,
    pub range: DateRange,
}

/// A parsed search value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchValue {
    /// `code`, `system|code`, `|code` or `system|` (`system: None` when no `|`).
    Token {
        system: Option<String>,
        code: String,
    },
    String(String),
    Date(DateBound),
    /// A local reference; `rtype` is `None` for a bare id (any of the targets).
    Reference {
        rtype: Option<ResourceType>,
        id: ResourceId,
    },
    /// An absolute reference URL.
    Url(String),
}

/// The name used in the original interface sketch.
pub type Value_ = SearchValue;

/// Supported search modifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modifier {
    /// `:exact` on string parameters.
    Exact,
    /// `:Type` on reference parameters.
    Type(ResourceType),
}

/// One AND-ed condition of a search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Clause {
    /// `_id` (OR of ids); resolved by the caller.
    Id(Vec<ResourceId>),
    /// `_lastUpdated` (OR of bounds); resolved by the caller, or by [`matches`] on `meta.lastUpdated`.
    LastUpdated(Vec<DateBound>),
    /// A parameter with OR-ed values.
    Param {
        def: &'static ParamDef,
        modifier: Option<Modifier>,
        values: Vec<SearchValue>,
    },
    /// `ref.param=value`: resources whose `def` reference points at a `target` matching `inner`.
    Chain {
        def: &'static ParamDef,
        target: ResourceType,
        inner: Box<Clause>,
    },
    /// `_has:source:ref_param:param=value`: resources referenced by a `source` matching `inner`.
    Has {
        source: ResourceType,
        ref_param: &'static ParamDef,
        inner: Box<Clause>,
    },
}

/// A `_sort` key: `date` (the type's primary date), `birthdate` or `_lastUpdated`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    pub param: &'static str,
    pub descending: bool,
}

/// `_include=source:param[:target]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Include {
    pub source: ResourceType,
    pub param: &'static ParamDef,
    pub target: Option<ResourceType>,
}

/// `_revinclude=source:param[:target]` (the target being the searched type).
pub type RevInclude = Include;

/// A parsed search.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SearchRequest {
    pub clauses: Vec<Clause>,
    pub count: Option<usize>,
    pub offset: usize,
    pub total: TotalMode,
    pub sort: Vec<SortKey>,
    pub include: Vec<Include>,
    pub revinclude: Vec<RevInclude>,
    /// `_summary=count`.
    pub summary_count: bool,
}

/// How to find candidates for a clause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Terms {
        param: &'static str,
        strategy: Strategy,
        values: Vec<String>,
        prefix: bool,
    },
    /// No finite set of terms: scan (or use other clauses) and filter with [`matches`].
    Unindexed,
}
