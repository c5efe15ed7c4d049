//! Reading the audit log. There are no routes to change it.

use super::AppState;
use super::auth::AdminPrincipal;
use super::auth::TenantAdmin;
use super::problem::ApiError;
use crate::audit::AuditEntry;
use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(tenant_audit)).routes(routes!(platform_audit))
}

/// A page of one tenant's log.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only entries after this id (the `next_after` of the previous page).
    #[serde(default)]
    after: i64,
    /// 1 to 1000; default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Only this action, e.g. `document.put`.
    action: Option<String>,
}

/// A page of the platform's log, or of one tenant's.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PlatformAuditQuery {
    /// Only entries after this id (the `next_after` of the previous page).
    #[serde(default)]
    after: i64,
    /// 1 to 1000; default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Only this action, e.g. `document.put`.
    action: Option<String>,
    /// Only this tenant's entries.
    tenant: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    /// Pass as `after` for the next page; absent at the end.
    pub next_after: Option<i64>,
}

async fn page(state: &AppState, tenant: Option<&str>, q: &AuditQuery) -> Result<Json<AuditPage>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::unprocessable("invalid-limit", "`limit` must be 1 to 1000"));
    }
    let items = state.audit.query(tenant, q.action.as_deref(), q.after, limit).await.map_err(|e| {
        tracing::error!(error = %e, "audit query failed");
        ApiError::internal("audit query failed")
    })?;
    let next_after = (items.len() == limit as usize).then(|| items.last().map(|e| e.id)).flatten();
    Ok(Json(AuditPage { items, next_after }))
}

/// This tenant's audit log: admin actions and every plugin storage write, oldest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/audit", tag = "tenants",
    params(("tenant" = String, Path), AuditQuery), responses((status = 200, body = AuditPage)), security(("bearer" = [])))]
async fn tenant_audit(
    State(state): State<AppState>,
    _admin: TenantAdmin,
    Path(tenant): Path<String>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    page(&state, Some(&tenant), &q).await
}

/// The whole audit log, or one tenant's with `tenant=`.
#[utoipa::path(get, path = "/v1/admin/audit", tag = "tenants",
    params(PlatformAuditQuery), responses((status = 200, body = AuditPage)), security(("bearer" = [])))]
async fn platform_audit(
    State(state): State<AppState>,
    _admin: AdminPrincipal,
    Query(q): Query<PlatformAuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let PlatformAuditQuery { after, limit, action, tenant } = q;
    page(&state, tenant.as_deref(), &AuditQuery { after, limit, action }).await
}
