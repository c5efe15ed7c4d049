//! The console's way to the platform: every read and change goes through the HTTP API's own
//! router, in process, with the signed-in person's token. So a page can never show or do
//! more than that person's API token could: the permission checks, validation, audit and
//! rate limits are the API's, not a second copy.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt as _;

/// Largest API answer a page reads.
const MAX_REPLY_BYTES: usize = 8 * 1024 * 1024;

/// The API router (with its middleware), called without a socket.
#[derive(Clone)]
pub struct InProcessApi {
    router: Router,
}

/// What the API answered.
#[derive(Debug, Clone)]
pub struct ApiReply {
    pub status: StatusCode,
    pub body: Value,
    /// `Retry-After`, in seconds.
    pub retry_after: Option<u64>,
}

impl ApiReply {
    pub fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// The problem's stable code, for an error.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    /// The problem's human-readable detail, for an error.
    pub fn detail(&self) -> String {
        match self.body["detail"].as_str() {
            Some(detail) => detail.to_owned(),
            None => self.status.canonical_reason().unwrap_or("the request failed").to_owned(),
        }
    }

    /// The message for each body field at fault (`errors` of an `invalid-field` problem), and
    /// what no field claims.
    pub fn field_errors(&self) -> FieldErrors {
        let mut errors = FieldErrors::default();
        if self.ok() {
            return errors;
        }
        let listed = self.body["errors"].as_array().cloned().unwrap_or_default();
        for error in &listed {
            let field = error["field"].as_str().unwrap_or("");
            let message = error["message"].as_str().unwrap_or("is not valid").to_owned();
            if field.is_empty() {
                errors.general.push(message);
            } else {
                // Schema violations name nested fields as paths (`/items/0`); a form field is
                // the first segment.
                let top = field.trim_start_matches('/').split('/').next().unwrap_or(field).to_owned();
                errors.fields.push((top, message));
            }
        }
        if listed.is_empty() {
            errors.general.push(self.detail());
        }
        errors
    }
}

/// Validation messages sorted by the form field they belong to.
#[derive(Debug, Clone, Default)]
pub struct FieldErrors {
    pub fields: Vec<(String, String)>,
    /// Messages about the form as a whole.
    pub general: Vec<String>,
}

impl FieldErrors {
    pub fn for_field(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(field, _)| field == name).map(|(_, message)| message.as_str())
    }
}

/// What stays as it is in a path segment: RFC 3986's unreserved characters, except '.'
/// (so `..` cannot be a segment).
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'~');

/// One path segment, percent-encoded: ids from a form or a URL cannot change the path.
pub fn segment(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, SEGMENT).to_string()
}

impl InProcessApi {
    pub fn new(router: Router) -> Self {
        InProcessApi { router }
    }

    /// Calls the API as the holder of `token` (none: anonymously). The request id ties the
    /// API's log lines and audit entries to the page request that caused them.
    pub async fn call(
        &self,
        token: Option<&str>,
        request_id: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> ApiReply {
        let mut request = Request::builder().method(method).uri(path).header("x-request-id", request_id);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(serde_json::to_vec(body).expect("a JSON value serializes"))),
            None => request.body(Body::empty()),
        };
        self.send(path, request).await
    }

    /// Calls the API with a body of another type (an uploaded artifact), and extra headers.
    pub async fn call_raw(
        &self,
        token: &str,
        request_id: &str,
        method: Method,
        path: &str,
        content_type: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> ApiReply {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("x-request-id", request_id)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, content_type);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(path, request.body(Body::from(body))).await
    }

    async fn send(&self, path: &str, request: Result<Request<Body>, axum::http::Error>) -> ApiReply {
        let request = match request {
            Ok(request) => request,
            Err(e) => {
                tracing::error!(error = %e, path, "the console built a malformed API request");
                return ApiReply {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    body: serde_json::json!({ "code": "internal", "detail": "the console built a malformed request" }),
                    retry_after: None,
                };
            }
        };
        let response = match self.router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let status = response.status();
        let retry_after =
            response.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        let body = match axum::body::to_bytes(response.into_body(), MAX_REPLY_BYTES).await {
            Ok(bytes) if bytes.is_empty() => Value::Null,
            // A text answer (the metrics) is kept as a string.
            Ok(bytes) => serde_json::from_slice(&bytes)
                .or_else(|_| String::from_utf8(bytes.to_vec()).map(Value::String))
                .unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        ApiReply { status, body, retry_after }
    }
}
