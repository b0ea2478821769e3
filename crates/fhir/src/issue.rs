//! Validation and search issues, and their R4 OperationOutcome form.
//!
//! Diagnostics never contain values taken from a resource or a query (they may be PHI):
//! they name paths and parameters only.

use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    Fatal,
    Error,
    Warning,
    Information,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Fatal => "fatal",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Information => "information",
        }
    }
}

impl serde::Serialize for Severity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// R4 `IssueType` codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IssueCode {
    Invalid,
    Structure,
    Required,
    Value,
    Invariant,
    /// A code outside the value set its element is bound to (required binding).
    CodeInvalid,
    NotSupported,
    NotFound,
    Conflict,
    TooLong,
    TooCostly,
    Processing,
    Security,
    Login,
    /// Authenticated but not allowed (403).
    Forbidden,
    Exception,
    Duplicate,
    BusinessRule,
    Incomplete,
    /// The resource was deleted (410).
    Deleted,
    /// A transient failure (database unavailable); the request may be retried.
    Transient,
    /// Added: used for the "all OK" issue of an otherwise empty OperationOutcome.
    Informational,
}

impl IssueCode {
    pub fn as_str(self) -> &'static str {
        match self {
            IssueCode::Invalid => "invalid",
            IssueCode::Structure => "structure",
            IssueCode::Required => "required",
            IssueCode::Value => "value",
            IssueCode::Invariant => "invariant",
            IssueCode::CodeInvalid => "code-invalid",
            IssueCode::NotSupported => "not-supported",
            IssueCode::NotFound => "not-found",
            IssueCode::Conflict => "conflict",
            IssueCode::TooLong => "too-long",
            IssueCode::TooCostly => "too-costly",
            IssueCode::Processing => "processing",
            IssueCode::Security => "security",
            IssueCode::Login => "login",
            IssueCode::Forbidden => "forbidden",
            IssueCode::Exception => "exception",
            IssueCode::Duplicate => "duplicate",
            IssueCode::BusinessRule => "business-rule",
            IssueCode::Incomplete => "incomplete",
            IssueCode::Deleted => "deleted",
            IssueCode::Transient => "transient",
            IssueCode::Informational => "informational",
        }
    }
}

impl serde::Serialize for IssueCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One problem found in a resource or a request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Issue {
    pub severity: Severity,
    pub code: IssueCode,
    /// Free of resource values: names paths, elements and parameters only.
    pub diagnostics: String,
    /// FHIRPath-like locations, e.g. `Patient.name[0].given[1]`.
    pub expression: Vec<String>,
}

impl Issue {
    pub fn error(
        code: IssueCode,
        diagnostics: impl Into<String>,
        expression: impl Into<String>,
    ) -> Issue {
        Issue {
            severity: Severity::Error,
            code,
            diagnostics: diagnostics.into(),
            expression: vec![expression.into()],
        }
    }

    /// An error about a request, not located in a resource.
    pub fn request(code: IssueCode, diagnostics: impl Into<String>) -> Issue {
        Issue {
            severity: Severity::Error,
            code,
            diagnostics: diagnostics.into(),
            expression: Vec::new(),
        }
    }
}

/// An R4 OperationOutcome carrying the issues (or a single "all ok" issue when empty).
pub fn operation_outcome(issues: &[Issue]) -> Value {
    let list: Vec<Value> = if issues.is_empty() {
        vec![json!({"severity": "information", "code": "informational", "diagnostics": "all ok"})]
    } else {
        issues
            .iter()
            .map(|i| {
                let mut o = json!({"severity": i.severity.as_str(), "code": i.code.as_str()});
                if let Some(m) = o.as_object_mut() {
                    if !i.diagnostics.is_empty() {
                        m.insert("diagnostics".into(), Value::String(i.diagnostics.clone()));
                    }
                    if !i.expression.is_empty() {
                        m.insert("expression".into(), json!(i.expression));
                    }
                }
                o
            })
            .collect()
    };
    json!({"resourceType": "OperationOutcome", "issue": list})
}
