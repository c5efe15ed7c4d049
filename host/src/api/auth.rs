//! The authenticated caller as an axum extractor: handlers that take a [`Principal`] (or an
//! [`AdminPrincipal`]) cannot run for an unauthenticated request.

use super::AppState;
use super::problem::ApiError;
use crate::identity::{AuthError, Principal};
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = match parts.headers.get(axum::http::header::AUTHORIZATION) {
            None => None,
            Some(v) => Some(v.to_str().map_err(|_| unauthorized(AuthError::Malformed))?),
        };
        let principal = state.tokens.authenticate(header).await.map_err(|e| match e {
            AuthError::Suspended => ApiError::new(StatusCode::FORBIDDEN, "tenant-suspended", e.to_string()),
            AuthError::Unavailable(m) => {
                tracing::error!(error = %m, "token lookup failed");
                ApiError::unavailable("auth-unavailable", "authentication is temporarily unavailable")
            }
            other => unauthorized(other),
        })?;
        if let Err(wait) = state.rate_limiter.check(&principal.token_id) {
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "too many requests for this token; slow down",
            );
            // Whole seconds, rounded up: retrying at the advertised time must succeed.
            error.retry_after = Some(wait.as_millis().div_ceil(1000).max(1) as u64);
            return Err(error);
        }
        Ok(principal)
    }
}

fn unauthorized(e: AuthError) -> ApiError {
    let code = match e {
        AuthError::Missing => "missing-token",
        AuthError::Malformed => "malformed-token",
        _ => "invalid-token",
    };
    ApiError::new(StatusCode::UNAUTHORIZED, code, e.to_string())
}

/// A principal allowed to administer the platform (install and manage plugins).
pub struct AdminPrincipal(pub Principal);

impl FromRequestParts<AppState> for AdminPrincipal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let principal = Principal::from_request_parts(parts, state).await?;
        if !principal.is_platform_admin() {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "this needs a platform-admin token"));
        }
        Ok(AdminPrincipal(principal))
    }
}
