//! The error a handler returns, rendered as an RFC 9457 problem body.

use crate::bindings::keel::platform::types::Error as WitError;
use crate::http::Response;
use serde_json::json;
use std::fmt;

/// The class of a failure; decides the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400: the request could not be read (malformed JSON, a missing parameter).
    BadRequest,
    /// 422: the request was read but breaks a rule.
    Invalid,
    /// 403: the caller may not do this.
    Forbidden,
    /// 404: no such thing (for this caller).
    NotFound,
    /// 409: the current state does not allow it (stale version, forbidden transition).
    Conflict,
    /// 503: a dependency cannot serve the call now.
    Unavailable,
    /// 500: a bug or an unexpected failure.
    Internal,
}

impl ErrorKind {
    /// The HTTP status for this kind.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::Invalid => 422,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::Unavailable => 503,
            ErrorKind::Internal => 500,
        }
    }

    fn title(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "Bad request",
            ErrorKind::Invalid => "Invalid input",
            ErrorKind::Forbidden => "Forbidden",
            ErrorKind::NotFound => "Not found",
            ErrorKind::Conflict => "Conflict",
            ErrorKind::Unavailable => "Unavailable",
            ErrorKind::Internal => "Internal error",
        }
    }
}

/// A failed request: a kind (the HTTP status), a stable machine-readable `code` clients can
/// match on, and a human-readable `detail`.
///
/// ```
/// use keel_sdk::{Error, ErrorKind};
/// let e = Error::conflict("invalid-transition", "a closed ticket cannot move to pending");
/// assert_eq!(e.kind(), ErrorKind::Conflict);
/// assert_eq!(e.code(), "invalid-transition");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    code: String,
    detail: String,
    field: Option<String>,
}

impl Error {
    /// An error of any kind.
    pub fn new(kind: ErrorKind, code: impl Into<String>, detail: impl Into<String>) -> Self {
        Error { kind, code: code.into(), detail: detail.into(), field: None }
    }
    /// The same error, naming the input field at fault (`"title"`, `"lines[2].qty"`): the
    /// problem body carries it as `field`, so a form can point at the right box.
    ///
    /// ```
    /// use keel_sdk::Error;
    /// let e = Error::invalid("title-required", "a ticket needs a title").at_field("title");
    /// assert_eq!(e.field(), Some("title"));
    /// assert_eq!(e.into_response("req_1").body_json()["field"], "title");
    /// ```
    pub fn at_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
    /// 400: the request could not be read.
    pub fn bad_request(code: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, code, detail)
    }
    /// 422: the input breaks a rule.
    pub fn invalid(code: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, code, detail)
    }
    /// 403: not allowed.
    pub fn forbidden(code: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, code, detail)
    }
    /// 404: no such thing.
    pub fn not_found(code: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, code, detail)
    }
    /// 409: the current state does not allow it.
    pub fn conflict(code: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, code, detail)
    }
    /// 503: try again later.
    pub fn unavailable(code: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, code, detail)
    }
    /// 500: unexpected failure.
    pub fn internal(code: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, code, detail)
    }

    /// The class of the failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    /// The stable machine-readable code.
    pub fn code(&self) -> &str {
        &self.code
    }
    /// The human-readable explanation.
    pub fn detail(&self) -> &str {
        &self.detail
    }
    /// The input field at fault, if the error names one.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// Renders the error as an `application/problem+json` response.
    pub fn into_response(self, request_id: &str) -> Response {
        let status = self.kind.status();
        let mut body = json!({
            "type": format!("https://keel.dev/problems/{}", self.code),
            "title": self.kind.title(),
            "status": status,
            "code": self.code,
            "detail": self.detail,
            "request_id": request_id,
        });
        if let Some(field) = self.field {
            body["field"] = field.into();
        }
        Response::raw(status, "application/problem+json", body.to_string().into_bytes())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.kind.status(), self.detail)
    }
}

impl std::error::Error for Error {}

impl Error {
    /// The WIT error a background handler returns: the class kept, code and detail in the text.
    pub(crate) fn into_wit(self) -> WitError {
        let text = format!("{}: {}", self.code, self.detail);
        match self.kind {
            ErrorKind::NotFound => WitError::NotFound(text),
            ErrorKind::Conflict => WitError::Conflict(text),
            ErrorKind::BadRequest | ErrorKind::Invalid => WitError::Invalid(text),
            ErrorKind::Forbidden => WitError::Forbidden(text),
            ErrorKind::Unavailable => WitError::Unavailable(text),
            ErrorKind::Internal => WitError::Internal(text),
        }
    }
}

/// Host errors keep their class; their code says they came from storage.
impl From<WitError> for Error {
    fn from(error: WitError) -> Self {
        match error {
            WitError::NotFound(m) => Error::not_found("not-found", m),
            WitError::Conflict(m) => Error::conflict("version-conflict", m),
            WitError::Invalid(m) => Error::invalid("invalid", m),
            WitError::Forbidden(m) => Error::forbidden("forbidden", m),
            WitError::Unavailable(m) => Error::unavailable("unavailable", m),
            WitError::Internal(m) => Error::internal("internal", m),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(error: serde_json::Error) -> Self {
        Error::internal("serialization", error.to_string())
    }
}
