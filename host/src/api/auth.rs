//! The authenticated caller as an axum extractor: handlers that take a [`Principal`] (or an
//! [`AdminPrincipal`], or a [`TenantAdmin`]) cannot run for an unauthenticated request, and
//! those taking a `TenantAdmin` cannot run for anyone who may not administer the route's
//! tenant: the check is the extraction, so a tenant route cannot forget it.

use super::problem::ApiError;
use super::{AppState, RequestId};
use crate::audit::AdminAction;
use crate::identity::{AuthError, Principal};
use crate::tenancy::Tenant;
use axum::extract::{FromRequestParts, RawPathParams};
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

/// A caller who may administer the tenant named by the route's `{tenant}` segment: a
/// platform admin, or that tenant's admin. Anyone else gets 403 for their own tenant (they
/// are not its admin) and 404 for another (its existence is not revealed).
pub struct TenantAdmin {
    pub principal: Principal,
    pub tenant: Tenant,
    request_id: String,
}

impl FromRequestParts<AppState> for TenantAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let principal = Principal::from_request_parts(parts, state).await?;
        // A segment that is not UTF-8 once percent-decoded is the client's mistake.
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid-path", e.body_text()))?;
        let Some((_, tenant)) = params.iter().find(|(name, _)| *name == "tenant") else {
            tracing::error!(path = %parts.uri.path(), "a tenant-admin route without a {{tenant}} segment");
            return Err(ApiError::internal("this route names no tenant"));
        };
        let tenant = super::tenants::administered(state, &principal, tenant).await?;
        let request_id = parts.extensions.get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
        Ok(TenantAdmin { principal, tenant, request_id })
    }
}

impl TenantAdmin {
    /// The tenant's id.
    pub fn id(&self) -> &str {
        &self.tenant.id
    }

    /// The request's id, for audit entries.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// Logs and audits a change this admin made in the tenant. `detail` is recorded as given:
    /// never put a secret in it.
    pub async fn record(
        &self,
        state: &AppState,
        action: &'static str,
        plugin: Option<&str>,
        detail: serde_json::Value,
    ) {
        tracing::info!(actor = %self.principal.name, tenant = %self.tenant.id, action, plugin, %detail, "tenant change");
        let entry = AdminAction { tenant: Some(&self.tenant.id), action, plugin, detail };
        state.audit.admin(&self.principal, &self.request_id, entry).await;
    }
}
