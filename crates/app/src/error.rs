use fhir::{Issue, IssueCode, Severity};
use store::StoreError;

/// What went wrong with a request, in terms the web layer turns into a status
/// code and an `OperationOutcome`. Messages never contain PHI.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// 400: the request is malformed or uses something unsupported.
    #[error("bad request")]
    BadRequest(Vec<Issue>),
    /// 401: no or wrong credentials.
    #[error("authentication required")]
    Unauthenticated,
    /// 403: authenticated, but this is beyond the caller's scopes or role.
    #[error("forbidden")]
    Forbidden(String),
    /// 403: the access policy denied it; the decision says which rule, why,
    /// what is missing and the way forward.
    #[error("denied by the access policy")]
    Denied(Box<policy::Decision>),
    /// 500: the access policy could not be used (fails closed).
    #[error("access policy failure: {0}")]
    Policy(String),
    /// 405: the interaction is not supported on this URL.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 406: the client accepts no format we serve.
    #[error("not acceptable")]
    NotAcceptable,
    /// 415: the body is not FHIR JSON.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// 404.
    #[error("not found")]
    NotFound(String),
    /// 410: deleted (or erased).
    #[error("gone")]
    Gone(String),
    /// 409: a version conflict or an id already taken.
    #[error("conflict")]
    Conflict(String),
    /// 412: If-Match did not hold.
    #[error("precondition failed")]
    PreconditionFailed(String),
    /// 413: a body or bundle over its limit.
    #[error("too large")]
    TooLarge(String),
    /// 422: valid FHIR that breaks a rule of this server (e.g. a dangling reference).
    #[error("unprocessable")]
    Unprocessable(Vec<Issue>),
    /// 500: stored bytes failed their integrity check. Never garbage, never a panic.
    #[error("stored data failed its integrity check")]
    Integrity(String),
    /// 500/503: the database failed; nothing was returned or written.
    #[error("storage failure")]
    Store(#[from] StoreError),
    /// 503: the audit entry could not be written, so nothing was done or returned.
    #[error("audit trail unavailable: {0}")]
    Audit(String),
    /// 500: the key file or key service failed.
    #[error("key failure: {0}")]
    Keys(String),
}

impl AppError {
    pub fn bad_request(code: IssueCode, msg: impl Into<String>) -> AppError {
        AppError::BadRequest(vec![issue(code, msg)])
    }

    pub fn unprocessable(code: IssueCode, msg: impl Into<String>) -> AppError {
        AppError::Unprocessable(vec![issue(code, msg)])
    }

    /// HTTP status code for this error.
    pub fn status(&self) -> u16 {
        match self {
            AppError::BadRequest(_) => 400,
            AppError::Unauthenticated => 401,
            AppError::Forbidden(_) | AppError::Denied(_) => 403,
            AppError::NotFound(_) => 404,
            AppError::MethodNotAllowed => 405,
            AppError::NotAcceptable => 406,
            AppError::UnsupportedMediaType => 415,
            AppError::Gone(_) => 410,
            AppError::Conflict(_) => 409,
            AppError::PreconditionFailed(_) => 412,
            AppError::TooLarge(_) => 413,
            AppError::Unprocessable(_) => 422,
            AppError::Integrity(_) | AppError::Keys(_) | AppError::Policy(_) => 500,
            AppError::Audit(_) => 503,
            AppError::Store(StoreError::Conflict { .. } | StoreError::KeyExists) => 409,
            AppError::Store(_) => 503,
        }
    }

    /// The issues to report to the client. Internal details (database messages)
    /// are not included; the caller logs them.
    pub fn issues(&self) -> Vec<Issue> {
        match self {
            AppError::BadRequest(i) | AppError::Unprocessable(i) => i.clone(),
            AppError::Unauthenticated => {
                vec![issue(IssueCode::Login, "a valid bearer token is required")]
            }
            AppError::Forbidden(m) => vec![issue(IssueCode::Forbidden, m.clone())],
            AppError::Denied(d) => denial_issues(d),
            AppError::Policy(_) => vec![issue(
                IssueCode::Exception,
                "the access policy could not decide, so nothing was returned",
            )],
            AppError::NotFound(m) => vec![issue(IssueCode::NotFound, m.clone())],
            AppError::MethodNotAllowed => vec![issue(
                IssueCode::NotSupported,
                "this interaction is not supported on this URL",
            )],
            AppError::NotAcceptable => vec![issue(
                IssueCode::NotSupported,
                "only application/fhir+json is served",
            )],
            AppError::UnsupportedMediaType => {
                vec![issue(
                    IssueCode::NotSupported,
                    "the body must be application/fhir+json",
                )]
            }
            AppError::Gone(m) => vec![issue(IssueCode::Deleted, m.clone())],
            AppError::Conflict(m) => vec![issue(IssueCode::Conflict, m.clone())],
            AppError::PreconditionFailed(m) => vec![issue(IssueCode::Conflict, m.clone())],
            AppError::TooLarge(m) => vec![issue(IssueCode::TooLong, m.clone())],
            AppError::Integrity(_) => vec![issue(
                IssueCode::Exception,
                "stored data failed its integrity check; nothing was returned and the event was logged",
            )],
            AppError::Store(StoreError::Conflict { reason, .. }) => {
                vec![issue(
                    IssueCode::Conflict,
                    format!("write conflict: {reason}"),
                )]
            }
            AppError::Store(StoreError::KeyExists) => vec![issue(
                IssueCode::Conflict,
                "a concurrent write created the same data key; retry",
            )],
            AppError::Store(_) => vec![issue(
                IssueCode::Transient,
                "the database is unavailable; nothing was read or written",
            )],
            AppError::Audit(_) => vec![issue(
                IssueCode::Transient,
                "the audit trail could not record this request, so nothing was done or returned; retry",
            )],
            AppError::Keys(_) => vec![issue(
                IssueCode::Exception,
                "a key could not be used; nothing was returned",
            )],
        }
    }
}

/// A denial as issues: the rule and reason (error), then what is missing,
/// the way forward and the lesson (information).
fn denial_issues(d: &policy::Decision) -> Vec<Issue> {
    let rules = d.policies.join(", ");
    let mut out = vec![issue(
        IssueCode::Forbidden,
        format!("denied by rule {rules}: {}", d.reason),
    )];
    let mut info = |text: String| {
        out.push(Issue {
            severity: Severity::Information,
            code: IssueCode::Informational,
            diagnostics: text,
            expression: Vec::new(),
        });
    };
    if let Some(m) = &d.missing {
        info(format!("missing: {m}"));
    }
    if let Some(w) = &d.way_forward {
        info(format!("way forward: {w}"));
    }
    if let Some(l) = d.lesson {
        info(format!("lesson: {}", l.as_str()));
    }
    out
}

pub(crate) fn issue(code: IssueCode, msg: impl Into<String>) -> Issue {
    Issue {
        severity: Severity::Error,
        code,
        diagnostics: msg.into(),
        expression: Vec::new(),
    }
}
