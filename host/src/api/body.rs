//! `JsonBody<T>`: how the platform API reads a JSON request body. Unlike `axum::Json`, it
//! reads at most the host's body limit (413), and takes only a JSON object: serde would
//! otherwise read a struct from an array (`[null, null]`), which no client means.

use super::AppState;
use super::problem::{ApiError, read_body};
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let essence = content_type.and_then(|v| v.split(';').next()).map(|v| v.trim().to_ascii_lowercase());
        let json = essence.as_deref().is_some_and(|e| e == "application/json" || e.ends_with("+json"));
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Expected request with `Content-Type: application/json`",
            ));
        }
        let bytes = read_body(request.into_body(), state.limits.max_body_bytes).await?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::bad_request("bad-request", format!("Failed to parse the request body as JSON: {e}"))
        })?;
        if !value.is_object() {
            return Err(ApiError::unprocessable("invalid-request", "the request body must be a JSON object"));
        }
        serde_json::from_value(value).map(JsonBody).map_err(|e| {
            ApiError::unprocessable(
                "invalid-request",
                format!("Failed to deserialize the JSON body into the target type: {e}"),
            )
        })
    }
}
