//! Every HTTP error is one shape: an RFC 9457 `application/problem+json` body with a stable
//! machine-readable `code`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// `https://keel.dev/problems/<code>`
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// Stable, machine-readable; match on this.
    pub code: String,
    pub detail: String,
    /// The plugin involved, for errors raised around a plugin call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// An error on its way to becoming a problem response.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub plugin: Option<String>,
    pub request_id: Option<String>,
    pub allow: Option<String>,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
    /// Members added to the problem object (RFC 9457 extensions), e.g. an import's `problems`.
    pub extensions: Option<serde_json::Map<String, serde_json::Value>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            detail: detail.into(),
            plugin: None,
            request_id: None,
            allow: None,
            retry_after: None,
            extensions: None,
        }
    }
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }
    pub fn not_found(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, detail)
    }
    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }
    pub fn unprocessable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    }
    /// 422 `invalid-field` naming the body field at fault (see [`ApiError::at_field`]).
    pub fn invalid_field(field: &str, detail: impl Into<String>) -> Self {
        Self::unprocessable("invalid-field", detail).at_field("body", field)
    }

    /// Names the field at fault (`in` is `body`, `path` or `query`), in the shape
    /// route-schema violations have (`field`, and `errors` of `{in, field, message}`), so a
    /// form can show the message beside its field. The code and status stay as they are.
    pub fn at_field(mut self, place: &str, field: &str) -> Self {
        let extensions = self.extensions.get_or_insert_with(serde_json::Map::new);
        extensions.insert("field".into(), field.into());
        extensions
            .insert("errors".into(), serde_json::json!([{ "in": place, "field": field, "message": self.detail }]));
        self
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
    }
    /// A 503: worth asking again shortly (`Retry-After: 1` unless the caller sets another).
    pub fn unavailable(code: &'static str, detail: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, code, detail);
        e.retry_after = Some(1);
        e
    }
    pub fn with_plugin(mut self, plugin: &str) -> Self {
        self.plugin = Some(plugin.to_owned());
        self
    }
    pub fn with_request_id(mut self, request_id: &str) -> Self {
        self.request_id = Some(request_id.to_owned());
        self
    }
}

/// The one answer to a database failure: 503 with Retry-After while the database is away
/// (the request changed nothing and may be sent again), 500 otherwise.
impl From<crate::backend::BackendError> for ApiError {
    fn from(e: crate::backend::BackendError) -> Self {
        match e {
            crate::backend::BackendError::Unavailable(reason) => {
                tracing::warn!(%reason, "database unavailable");
                let mut e =
                    ApiError::unavailable("database-unavailable", "the database is not answering; try again shortly");
                e.retry_after = Some(1);
                e
            }
            crate::backend::BackendError::Internal(reason) => {
                tracing::error!(%reason, "database failure");
                ApiError::internal("database failure")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Problem {
            kind: format!("https://keel.dev/problems/{}", self.code),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            code: self.code.to_owned(),
            detail: self.detail,
            plugin: self.plugin,
            request_id: self.request_id,
        };
        let mut value = serde_json::to_value(&body).unwrap_or_default();
        if let (Some(extensions), Some(object)) = (self.extensions, value.as_object_mut()) {
            for (name, member) in extensions {
                // The standard members stay what they are.
                object.entry(name).or_insert(member);
            }
        }
        let mut response = (self.status, serde_json::to_vec(&value).unwrap_or_default()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"keel\""));
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(allow) = self.allow.and_then(|a| HeaderValue::from_str(&a).ok()) {
            headers.insert(header::ALLOW, allow);
        }
        response
    }
}

/// Reads a whole body up to `limit` bytes, or a 413 problem.
pub async fn read_body(body: axum::body::Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            format!("the request body exceeds {limit} bytes"),
        )
    })
}
